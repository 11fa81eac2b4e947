"""Signed dispatch batches: one SM2 signature per batch, each command provable on its own."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.command import Command
from security.command_signing import (
    BadInclusionProof,
    BadRootSignature,
    CommandExpired,
    CommandReplayed,
    CommandVerifier,
    InclusionProof,
    MalformedSignedCommand,
    SignedCommand,
    UntrustedSigner,
    decode_command,
    encode_command,
    merkle_tree,
    sign_batch,
    verify,
    verify_inclusion,
)
from security.errors import CryptoError
from security.identity import Certificate, CertificateAuthority, Role
from security.sm2 import SM2PrivateKey
from security.sm3 import sm3

PKI = tuple[CertificateAuthority, SM2PrivateKey, Certificate, SM2PrivateKey, Certificate]


@pytest.fixture(scope="module")
def pki() -> PKI:
    ca = CertificateAuthority.create("cmd-ca")
    pk, pc = ca.issue_new_key("platform", role=Role.PLATFORM)
    ek, ec = ca.issue_new_key("edge-1", role=Role.EDGE)
    return ca, pk, pc, ek, ec


def _cmds(n: int, deadline: float | None = None) -> list[Command]:
    d = time.time() + 600 if deadline is None else deadline
    return [
        Command(f"VPP1.DER{i:05d}/DRCT1.WSet.mag.f", float(i) * 0.5, "dispatch", deadline=d)
        for i in range(n)
    ]


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1 written as the recursion it states (the reference for merkle_tree)."""
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return sm3(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:]))


values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1),
    st.floats(allow_nan=False),
)
commands = st.builds(
    Command,
    target=st.text(max_size=200),
    value=values,
    origin=st.text(max_size=50),
    id=st.text(max_size=64),
    deadline=st.floats(allow_nan=False, allow_infinity=False),
    created=st.floats(allow_nan=False, allow_infinity=False),
    select_before_operate=st.booleans(),
)


@given(commands)
def test_command_encoding_round_trip(cmd: Command) -> None:
    back = decode_command(encode_command(cmd))
    assert back == cmd and type(back.value) is type(cmd.value)


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_signed_command_decode_fuzz(data: bytes) -> None:
    with contextlib.suppress(MalformedSignedCommand):
        SignedCommand.decode(data)


def test_merkle_tree_matches_rfc9162_and_proofs_verify() -> None:
    for n in [*range(1, 70), 1000, 1025]:
        leaves = [sm3(i.to_bytes(4, "big")) for i in range(n)]
        root, paths = merkle_tree(leaves)
        assert root == _mth(leaves), n
        for i in range(n):
            assert verify_inclusion(leaves[i], i, n, paths[i], root)
            assert len(paths[i]) <= (n - 1).bit_length()
        if n > 1:
            assert not verify_inclusion(leaves[0], 1, n, paths[0], root)
            assert not verify_inclusion(leaves[0], 0, n, paths[0][:-1], root)
            assert not verify_inclusion(leaves[n - 1], n, n, paths[n - 1], root)
            assert not verify_inclusion(leaves[1], 0, n, paths[0], root)


def test_one_signature_for_ten_thousand_commands(pki: PKI) -> None:
    ca, pk, pc, _, _ = pki
    cmds = _cmds(10_000)
    t0 = time.perf_counter()
    batch = sign_batch(cmds, pk, pc)
    signing = time.perf_counter() - t0
    assert len({id(c.root_signature) for c in batch.commands}) == 1
    v = CommandVerifier(pc, trust=ca.trust_store())
    for sc in batch.commands:
        assert v.verify(SignedCommand.decode(sc.encode())) == sc.command
    assert v.signature_checks == 1, "the root is verified once per batch, not per command"
    assert max(len(sc.proof.path) for sc in batch.commands) == 14  # ceil(log2(10,000))
    assert signing < 5.0


def test_each_command_provable_alone(pki: PKI) -> None:
    ca, pk, pc, ek, ec = pki
    batch = sign_batch(_cmds(37), pk, pc)
    sc = batch.commands[17]
    verify(sc.command, sc.proof, sc.root_signature, pc, trust=ca.trust_store())
    # A changed value, another command's proof, a missing proof: not in the signed batch.
    with pytest.raises(BadInclusionProof):
        verify(replace(sc.command, value=9999.0), sc.proof, sc.root_signature, pc)
    with pytest.raises(BadInclusionProof):
        verify(sc.command, batch.commands[3].proof, sc.root_signature, pc)
    with pytest.raises(BadInclusionProof):
        verify(sc.command, InclusionProof(17, ()), sc.root_signature, pc)
    # A signature by another key over the same root.
    forged = replace(sc.root_signature, signature=ek.sign(sc.root_signature.root.signed_bytes()))
    with pytest.raises(BadRootSignature):
        verify(sc.command, sc.proof, forged, pc)
    # Checked against another certificate than the one that signed.
    with pytest.raises(UntrustedSigner):
        verify(sc.command, sc.proof, sc.root_signature, ec)


def test_only_platform_certificates_sign(pki: PKI) -> None:
    _, _, _, ek, ec = pki
    with pytest.raises(CryptoError, match="platform certificate"):
        sign_batch(_cmds(2), ek, ec)


def test_revoked_platform_certificate(pki: PKI) -> None:
    ca = CertificateAuthority.create("rev-ca")
    pk, pc = ca.issue_new_key("platform", role=Role.PLATFORM)
    batch = sign_batch(_cmds(4), pk, pc)
    ca.revoke("platform", "key_compromise")
    sc = batch.commands[0]
    with pytest.raises(UntrustedSigner, match="revoked"):
        verify(sc.command, sc.proof, sc.root_signature, pc, trust=ca.trust_store())
    with pytest.raises(UntrustedSigner, match="revoked"):
        CommandVerifier(pc, trust=ca.trust_store()).verify(sc)


def test_verifier_refuses_expired_and_replayed(pki: PKI) -> None:
    ca, pk, pc, _, _ = pki
    now = [time.time()]
    v = CommandVerifier(pc, trust=ca.trust_store(), clock=lambda: now[0])
    batch = sign_batch(_cmds(3, deadline=now[0] + 10), pk, pc)
    assert v.verify(batch.commands[0]) == batch.commands[0].command
    with pytest.raises(CommandReplayed):
        v.verify(batch.commands[0])
    now[0] += 11
    with pytest.raises(CommandExpired):
        v.verify(batch.commands[1])
    # A bad signature is verified once, then refused from the cache.
    sc = batch.commands[2]
    bad = replace(sc, root_signature=replace(sc.root_signature, signature=b"\x30\x00"))
    now[0] -= 11
    checks = v.signature_checks
    for _ in range(5):
        with pytest.raises(BadRootSignature):
            v.verify(bad)
    assert v.signature_checks == checks + 1
