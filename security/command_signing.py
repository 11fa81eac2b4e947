"""Signed control commands: one SM2 signature per dispatch batch, a Merkle proof per command.

A dispatch touching 10,000 DERs must not cost 10,000 SM2 signatures (~4,000/s here). The platform
puts the batch's commands as leaves of an SM3 Merkle tree shaped as RFC 9162 (Certificate
Transparency 2.0) section 2.1 defines it, with its domain separation:

    leaf  = SM3(0x00 || canonical command bytes)
    node  = SM3(0x01 || left || right)

and signs once, with its `platform` certificate's key, the batch root record
`"VPP-DISPATCH-ROOT\\x01" || batch id (16) || size (u32) || root (32) || issued (u64 ms) ||
signer certificate SM3 fingerprint (32)`. Each command travels with its inclusion proof
(log2(size) hashes) and the signed root, so each command stays individually provable: anyone
holding the platform certificate can check, years later, that the platform ordered exactly this
command (`verify()`), without the other 9,999.

`CommandVerifier` is what an edge terminal runs before acting: deadline, proof, signer
(certificate trusted, `platform` role, not revoked), root signature (one SM2 verify per batch,
then cached), and no command id accepted twice. The edge then checks the command against its own
point limits (`security.policy.check_command`) before executing it.

Canonical command bytes (big endian): version 1 (u8) | id (u8 length + UTF-8) | target (u16
length + UTF-8) | origin (u8 length + UTF-8) | value: b"b" + u8, b"i" + i64 or b"f" + f64 |
deadline f64 | created f64 | select-before-operate u8.
"""

from __future__ import annotations

import math
import os
import struct
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from model.command import Command
from security.errors import BadSignature, CryptoError, SecurityError
from security.identity import Certificate, Clock, IdentityError, Role, TrustStore
from security.sm2 import SM2PrivateKey
from security.sm3 import sm3

__all__ = [
    "BadInclusionProof",
    "BadRootSignature",
    "BatchRoot",
    "CommandExpired",
    "CommandReplayed",
    "CommandSignatureError",
    "CommandVerifier",
    "InclusionProof",
    "MalformedSignedCommand",
    "RootSignature",
    "SignedBatch",
    "SignedCommand",
    "UntrustedSigner",
    "decode_command",
    "encode_command",
    "leaf_hash",
    "merkle_tree",
    "sign_batch",
    "verify",
    "verify_inclusion",
]

_ROOT_MAGIC = b"VPP-DISPATCH-ROOT\x01"
_MAX_PATH = 40  # a batch of up to 2^32 leaves needs at most 32 hashes
_F64 = struct.Struct(">d")
_I64 = struct.Struct(">q")
_ROOT = struct.Struct(">16sI32sQ32s")


class CommandSignatureError(SecurityError):
    """A signed command was refused; `code` is a short machine-readable reason."""

    code = "bad_command"


class MalformedSignedCommand(CommandSignatureError):
    """The bytes are not a signed command (truncated, bad field, unknown version)."""

    code = "malformed_command"


class BadInclusionProof(CommandSignatureError):
    """The command is not a leaf of the signed batch root (missing or wrong proof)."""

    code = "bad_proof"


class BadRootSignature(CommandSignatureError):
    """The batch root's SM2 signature does not verify under the platform certificate."""

    code = "bad_signature"


class UntrustedSigner(CommandSignatureError):
    """The batch was signed by a certificate that is not a trusted, valid platform certificate."""

    code = "untrusted_signer"


class CommandExpired(CommandSignatureError):
    """The command's deadline has passed."""

    code = "expired_command"


class CommandReplayed(CommandSignatureError):
    """A command with this id was already accepted."""

    code = "replayed_command"


# ------------------------------------------------------------------------------ canonical form


def _str(v: str, width: int, what: str) -> bytes:
    b = v.encode()
    if len(b) >= 1 << (8 * width):
        raise CryptoError(f"command {what} is {len(b)} bytes, too long to sign")
    return len(b).to_bytes(width, "big") + b


def encode_command(cmd: Command) -> bytes:
    """The canonical bytes of a command (what its Merkle leaf hashes)."""
    v = cmd.value
    if isinstance(v, bool):
        value = b"b" + bytes([v])
    elif isinstance(v, int):
        if not -(1 << 63) <= v < 1 << 63:
            raise CryptoError(f"command value {v} does not fit in 64 bits")
        value = b"i" + _I64.pack(v)
    elif isinstance(v, float):
        value = b"f" + _F64.pack(v)
    else:
        raise CryptoError(f"command value {v!r} is not a bool, int or float")
    return b"".join(
        (
            b"\x01",
            _str(cmd.id, 1, "id"),
            _str(cmd.target, 2, "target"),
            _str(cmd.origin, 1, "origin"),
            value,
            _F64.pack(cmd.deadline),
            _F64.pack(cmd.created),
            bytes([cmd.select_before_operate]),
        )
    )


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise MalformedSignedCommand(f"signed command truncated in {what}")
        b = self.data[self.pos : end]
        self.pos = end
        return b

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def text(self, width: int, what: str) -> str:
        try:
            return self.take(self.uint(width, what), what).decode()
        except UnicodeDecodeError:
            raise MalformedSignedCommand(f"command {what} is not UTF-8") from None


def _read_command(r: _Reader) -> Command:
    if r.take(1, "version") != b"\x01":
        raise MalformedSignedCommand("unknown command encoding version")
    cid = r.text(1, "id")
    target = r.text(2, "target")
    origin = r.text(1, "origin")
    tag = r.take(1, "value type")
    value: bool | int | float
    if tag == b"b":
        b = r.take(1, "value")[0]
        if b > 1:
            raise MalformedSignedCommand("command bool value is neither 0 nor 1")
        value = bool(b)
    elif tag == b"i":
        value = _I64.unpack(r.take(8, "value"))[0]
    elif tag == b"f":
        value = _F64.unpack(r.take(8, "value"))[0]
    else:
        raise MalformedSignedCommand(f"unknown command value type {tag!r}")
    deadline = _F64.unpack(r.take(8, "deadline"))[0]
    created = _F64.unpack(r.take(8, "created"))[0]
    sbo = r.take(1, "select-before-operate")[0]
    if sbo > 1:
        raise MalformedSignedCommand("select-before-operate flag is neither 0 nor 1")
    if not (math.isfinite(deadline) and math.isfinite(created)):
        raise MalformedSignedCommand("command deadline or creation time is not finite")
    return Command(target, value, origin, cid, deadline, created, bool(sbo))


def decode_command(data: bytes) -> Command:
    """Inverse of encode_command; MalformedSignedCommand for anything else."""
    r = _Reader(bytes(data))
    cmd = _read_command(r)
    if r.pos != len(r.data):
        raise MalformedSignedCommand(f"{len(r.data) - r.pos} bytes after the command")
    return cmd


# ------------------------------------------------------------------------------------- Merkle


def leaf_hash(encoded_command: bytes) -> bytes:
    """RFC 9162 2.1.1: MTH({d(0)}) = HASH(0x00 || d(0)), with SM3."""
    return sm3(b"\x00" + encoded_command)


def _node(left: bytes, right: bytes) -> bytes:
    return sm3(b"\x01" + left + right)


def merkle_tree(leaves: Sequence[bytes]) -> tuple[bytes, list[tuple[bytes, ...]]]:
    """(root, inclusion path of every leaf) of leaf hashes, RFC 9162 2.1.1 / 2.1.3.1."""
    n = len(leaves)
    if n == 0:
        raise CryptoError("a dispatch batch needs at least one command")
    paths: list[list[bytes]] = [[] for _ in range(n)]

    def build(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaves[lo]
        # "k is the largest power of two smaller than n"
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        left, right = build(lo, lo + k), build(lo + k, hi)
        for i in range(lo, lo + k):
            paths[i].append(right)
        for i in range(lo + k, hi):
            paths[i].append(left)
        return _node(left, right)

    root = build(0, n)
    return root, [tuple(p) for p in paths]


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: True if `leaf` is at `index` of the tree of `size` with `root`."""
    if not 0 <= index < size or len(path) > _MAX_PATH:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# ---------------------------------------------------------------------------------- structures


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Where a command sits in its batch and the sibling hashes up to the root."""

    index: int
    path: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class BatchRoot:
    """What the platform signs for one dispatch batch."""

    batch_id: bytes
    size: int
    root: bytes
    issued_ms: int
    signer: bytes
    """SM3 fingerprint of the signing platform certificate."""

    def signed_bytes(self) -> bytes:
        """The exact bytes the SM2 signature covers."""
        return _ROOT_MAGIC + _ROOT.pack(
            self.batch_id, self.size, self.root, self.issued_ms, self.signer
        )


@dataclass(frozen=True, slots=True)
class RootSignature:
    """A batch root and the platform's SM2 signature (DER) over it."""

    root: BatchRoot
    signature: bytes

    def encode(self) -> bytes:
        """root record || u8 signature length || signature."""
        return self.root.signed_bytes() + bytes([len(self.signature)]) + self.signature


@dataclass(frozen=True, slots=True)
class SignedCommand:
    """A command with its inclusion proof and its batch's signed root: provable on its own."""

    command: Command
    proof: InclusionProof
    root_signature: RootSignature

    def encode(self) -> bytes:
        """Wire form: u16 length + command | u32 index | u8 n + n hashes | signed root."""
        cmd = encode_command(self.command)
        p = self.proof
        return b"".join(
            (
                len(cmd).to_bytes(2, "big"),
                cmd,
                p.index.to_bytes(4, "big"),
                bytes([len(p.path)]),
                *p.path,
                self.root_signature.encode(),
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedCommand:
        """Inverse of encode; MalformedSignedCommand naming what was wrong."""
        r = _Reader(bytes(data))
        cmd_len = r.uint(2, "command length")
        start = r.pos
        cmd = _read_command(r)
        if r.pos - start != cmd_len:
            raise MalformedSignedCommand("command length does not match its contents")
        index = r.uint(4, "proof index")
        n = r.uint(1, "proof length")
        if n > _MAX_PATH:
            raise MalformedSignedCommand(f"inclusion proof of {n} hashes is too long")
        path = tuple(r.take(32, "proof hash") for _ in range(n))
        if r.take(len(_ROOT_MAGIC), "root magic") != _ROOT_MAGIC:
            raise MalformedSignedCommand("not a signed dispatch root")
        bid, size, root, issued, signer = _ROOT.unpack(r.take(_ROOT.size, "root"))
        sig = r.take(r.uint(1, "signature length"), "signature")
        if r.pos != len(r.data):
            raise MalformedSignedCommand(f"{len(r.data) - r.pos} bytes after the signed command")
        return cls(
            cmd,
            InclusionProof(index, path),
            RootSignature(BatchRoot(bid, size, root, issued, signer), sig),
        )


@dataclass(frozen=True, slots=True)
class SignedBatch:
    """A signed dispatch batch: one root signature, one SignedCommand per command."""

    root_signature: RootSignature
    commands: tuple[SignedCommand, ...]


def sign_batch(
    commands: Sequence[Command],
    key: SM2PrivateKey,
    certificate: Certificate,
    *,
    clock: Clock = time.time,
    batch_id: bytes | None = None,
) -> SignedBatch:
    """Sign a dispatch batch once (SM2 over its SM3 Merkle root); each command gets its proof."""
    if certificate.public_key != key.public_key:
        raise CryptoError("the signing key does not match the platform certificate")
    if certificate.role is not Role.PLATFORM:
        raise CryptoError(
            f"commands are signed with a platform certificate, not {certificate.describe()}"
        )
    if len(commands) >= 1 << 32:
        raise CryptoError("a dispatch batch holds fewer than 2^32 commands")
    leaves = [leaf_hash(encode_command(c)) for c in commands]
    root, paths = merkle_tree(leaves)
    br = BatchRoot(
        batch_id or os.urandom(16), len(leaves), root, int(clock() * 1000), certificate.fingerprint
    )
    rs = RootSignature(br, key.sign(br.signed_bytes()))
    return SignedBatch(
        rs,
        tuple(
            SignedCommand(c, InclusionProof(i, p), rs)
            for i, (c, p) in enumerate(zip(commands, paths, strict=True))
        ),
    )


def _check_proof(command: Command, proof: InclusionProof, root: BatchRoot) -> None:
    leaf = leaf_hash(encode_command(command))
    if not verify_inclusion(leaf, proof.index, root.size, proof.path, root.root):
        raise BadInclusionProof(
            f"command {command.id} is not in the signed batch {root.batch_id.hex()} "
            "(missing or wrong inclusion proof)"
        )


def _check_signer(cert: Certificate, root: BatchRoot, trust: TrustStore | None) -> None:
    if root.signer != cert.fingerprint:
        raise UntrustedSigner(
            f"batch {root.batch_id.hex()} was signed by another certificate than {cert.describe()}"
        )
    if trust is not None:
        try:
            trust.validate(cert, [Role.PLATFORM])
        except IdentityError as e:
            raise UntrustedSigner(f"signer not trusted: {e}") from e
    elif cert.role is not Role.PLATFORM:
        raise UntrustedSigner(f"{cert.describe()} is not a platform certificate")


def verify(
    command: Command,
    proof: InclusionProof,
    root_signature: RootSignature,
    platform_cert: Certificate,
    *,
    trust: TrustStore | None = None,
) -> None:
    """Prove `platform_cert`'s holder ordered `command`; raise a CommandSignatureError if not."""
    root = root_signature.root
    _check_proof(command, proof, root)
    _check_signer(platform_cert, root, trust)
    try:
        platform_cert.public_key.verify(root_signature.signature, root.signed_bytes())
    except (BadSignature, CryptoError):
        raise BadRootSignature(
            f"the root signature of batch {root.batch_id.hex()} does not verify"
        ) from None


class CommandVerifier:
    """The edge's gate: accepts a SignedCommand only if fresh, proven, signed and never seen."""

    def __init__(
        self,
        platform_certs: Certificate | Iterable[Certificate],
        *,
        trust: TrustStore | None = None,
        clock: Clock = time.time,
        cache_size: int = 4096,
        max_seen: int = 1_000_000,
    ) -> None:
        certs = (
            [platform_certs] if isinstance(platform_certs, Certificate) else list(platform_certs)
        )
        self._certs = {c.fingerprint: c for c in certs}
        self.trust = trust
        self.clock = clock
        self._roots: OrderedDict[bytes, bool] = OrderedDict()
        self._cache_size = cache_size
        self._seen: dict[str, float] = {}
        self._max_seen = max_seen
        self.signature_checks = 0
        """SM2 verifications done (one per distinct batch root and signature)."""

    def verify(self, signed: SignedCommand) -> Command:
        """The command if it may be acted on; a CommandSignatureError naming why not."""
        cmd = signed.command
        now = self.clock()
        if cmd.deadline <= now:
            raise CommandExpired(f"command {cmd.id} is past its deadline")
        if cmd.id in self._seen:
            raise CommandReplayed(f"command {cmd.id} was already accepted")
        rs = signed.root_signature
        _check_proof(cmd, signed.proof, rs.root)
        cert = self._certs.get(rs.root.signer)
        if cert is None:
            raise UntrustedSigner(
                f"batch {rs.root.batch_id.hex()} is signed by an unknown certificate "
                f"{rs.root.signer.hex()[:16]}..."
            )
        _check_signer(cert, rs.root, self.trust)
        key = rs.encode()
        ok = self._roots.get(key)
        if ok is None:
            self.signature_checks += 1
            try:
                cert.public_key.verify(rs.signature, rs.root.signed_bytes())
                ok = True
            except (BadSignature, CryptoError):
                ok = False
            self._roots[key] = ok
            if len(self._roots) > self._cache_size:
                self._roots.popitem(last=False)
        else:
            self._roots.move_to_end(key)
        if not ok:
            raise BadRootSignature(
                f"the root signature of batch {rs.root.batch_id.hex()} does not verify"
            )
        self._remember(cmd, now)
        return cmd

    def _remember(self, cmd: Command, now: float) -> None:
        if len(self._seen) >= self._max_seen:
            self._seen = {k: d for k, d in self._seen.items() if d > now}
            if len(self._seen) >= self._max_seen:
                raise CommandReplayed("too many live commands remembered; refusing more")
        self._seen[cmd.id] = cmd.deadline
