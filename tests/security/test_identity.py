"""Platform CA: issue, validate, revoke, expiry (injected clock), CSRs, key files, OpenSSL reading them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from security.identity import (
    SM2_WITH_SM3_OID,
    BadCertificate,
    BadRequest,
    BadRevocationList,
    CAError,
    Certificate,
    CertificateAuthority,
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRequest,
    CertificateRevoked,
    RevocationList,
    Role,
    TrustStore,
    UnknownIssuer,
    WrongRole,
)
from security.keystore import (
    KeyFileUnprotected,
    WrongPassphrase,
    decrypt_private_key,
    encrypt_private_key,
    load_private_key_file,
    save_private_key,
)
from security.sm2 import SM2PrivateKey

OPENSSL = shutil.which("openssl")
DAY = 86400.0
T0 = 1_800_000_000.0  # 2027-01-15


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ca(clock: FakeClock) -> CertificateAuthority:
    return CertificateAuthority.create("test-ca", clock=clock)


def test_issue_and_validate(ca: CertificateAuthority, clock: FakeClock) -> None:
    key, cert = ca.issue_new_key("edge-01", role=Role.EDGE, validity_days=30)
    assert cert.name == "edge-01" and cert.role is Role.EDGE and not cert.is_ca
    assert cert.public_key == key.public_key
    assert cert.issuer == "test-ca" and cert.organization == "vpp-gateway"
    assert cert.not_before == T0 and cert.not_after == T0 + 30 * DAY
    assert ca.certificate.is_ca and ca.certificate.role is Role.CA
    trust = ca.trust_store()
    assert trust.validate(cert, [Role.EDGE, Role.DER_AGENT]) is cert
    # Round trip through PEM and DER gives the same certificate.
    assert Certificate.load(cert.pem) == cert == Certificate.load(cert.der)
    assert SM2_WITH_SM3_OID == "1.2.156.10197.1.501"


def test_wrong_role_refused(ca: CertificateAuthority) -> None:
    _, cert = ca.issue_new_key("agent-7", role=Role.DER_AGENT)
    with pytest.raises(WrongRole, match="der-agent"):
        ca.trust_store().validate(cert, [Role.PLATFORM])
    with pytest.raises(WrongRole):  # the CA certificate is no end entity
        ca.trust_store().validate(ca.certificate, [Role.CA])
    with pytest.raises(CAError, match="CA certificates"):
        ca.issue_new_key("sub-ca", role=Role.CA)


def test_expiry_and_not_yet_valid(ca: CertificateAuthority, clock: FakeClock) -> None:
    clock.advance(DAY)
    _, cert = ca.issue_new_key("edge-02", role=Role.EDGE, validity_days=10)
    trust = ca.trust_store()
    clock.advance(10 * DAY)
    trust.validate(cert)  # the last second of validity still counts
    clock.advance(1)
    with pytest.raises(CertificateExpired, match=r"edge-02.*expired"):
        trust.validate(cert)
    clock.now = T0 + DAY - 1
    with pytest.raises(CertificateNotYetValid, match=r"edge-02.*not valid before"):
        trust.validate(cert)
    clock.now = T0 - 1
    with pytest.raises(CertificateNotYetValid, match="CA certificate"):
        trust.validate(cert)
    # A certificate never outlives its CA.
    short = CertificateAuthority.create("short-ca", clock=clock, validity_days=5)
    _, c2 = short.issue_new_key("edge-03", role=Role.EDGE, validity_days=365)
    assert c2.not_after == short.certificate.not_after
    clock.now = short.certificate.not_after + 1
    with pytest.raises(CertificateExpired):
        short.trust_store().validate(c2)


def test_revoke_by_name_and_serial(ca: CertificateAuthority, clock: FakeClock) -> None:
    _, c1 = ca.issue_new_key("edge-04", role=Role.EDGE)
    _, c2 = ca.issue_new_key("edge-05", role=Role.EDGE)
    clock.advance(60)
    done = ca.revoke("edge-04", "key_compromise")
    assert [e.serial for e in done] == [c1.serial]
    ca.revoke(f"{c2.serial:x}")
    trust = ca.trust_store()
    with pytest.raises(CertificateRevoked, match=r"edge-04.*revoked.*key_compromise"):
        trust.validate(c1)
    with pytest.raises(CertificateRevoked, match="unspecified"):
        trust.validate(c2)
    crl = ca.revocation_list()
    assert crl.number == 2 and set(crl.entries) == {c1.serial, c2.serial}
    assert crl.entries[c1.serial].revoked_at == T0 + 60
    # The CRL survives DER and is checked against the CA's key.
    assert RevocationList.load(crl.pem, ca.certificate).entries == crl.entries
    other = CertificateAuthority.create("other-ca", clock=clock)
    with pytest.raises(BadRevocationList, match="not signed by the CA"):
        RevocationList.load(other.revocation_list().der, ca.certificate)
    with pytest.raises(CAError, match="already revoked"):
        ca.revoke("edge-04")
    with pytest.raises(CAError, match="no certificate named"):
        ca.revoke("nobody")
    with pytest.raises(CAError, match="unknown revocation reason"):
        ca.revoke("edge-05", "bored")


def test_older_crl_refused(ca: CertificateAuthority) -> None:
    old = ca.revocation_list()
    ca.issue_new_key("edge-06", role=Role.EDGE)
    ca.revoke("edge-06")
    trust = ca.trust_store()
    with pytest.raises(BadRevocationList, match="older"):
        trust.update_crl(old)


def test_unknown_ca_and_tampering(ca: CertificateAuthority, clock: FakeClock) -> None:
    rogue = CertificateAuthority.create("test-ca", clock=clock)  # same name, other key
    _, foreign = rogue.issue_new_key("edge-07", role=Role.EDGE)
    with pytest.raises(UnknownIssuer, match="not issued by the CA 'test-ca'"):
        ca.trust_store().validate(foreign)
    _, cert = ca.issue_new_key("edge-07", role=Role.EDGE)
    der = bytearray(cert.der)
    der[-5] ^= 0x01  # inside the signature
    try:
        tampered = Certificate.load(bytes(der))
    except BadCertificate:
        pass  # the flip broke the DER integer: refused as malformed, also fine
    else:
        with pytest.raises(UnknownIssuer):
            ca.trust_store().validate(tampered)
    with pytest.raises(BadCertificate, match="malformed"):
        Certificate.load(b"\x30\x03\x02\x01\x01")
    with pytest.raises(BadCertificate):
        Certificate.load(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_duplicate_name_and_renew(ca: CertificateAuthority) -> None:
    _, c1 = ca.issue_new_key("edge-08", role=Role.EDGE)
    with pytest.raises(CAError, match="already has a valid certificate"):
        ca.issue_new_key("edge-08", role=Role.EDGE)
    _, c2 = ca.issue_new_key("edge-08", role=Role.EDGE, renew=True)
    assert c2.serial != c1.serial
    with pytest.raises(CAError, match="bad name"):
        ca.issue_new_key("../etc/passwd", role=Role.EDGE)


def test_csr(ca: CertificateAuthority) -> None:
    key = SM2PrivateKey.generate()
    req = CertificateRequest.load(CertificateRequest.create(key, "der-11", Role.DER_AGENT).pem)
    assert req.name == "der-11" and req.role_text == "der-agent"
    cert = ca.issue(req, role=Role.DER_AGENT)
    assert cert.public_key == key.public_key and cert.name == "der-11"
    with pytest.raises(CAError, match="the request names 'der-11'"):
        ca.issue(req, role=Role.DER_AGENT, name="der-12")
    der = bytearray(req.der)
    der[20] ^= 0x01  # inside the subject: the self-signature no longer covers it
    with pytest.raises(BadRequest):
        CertificateRequest.load(bytes(der))


def test_ca_directory_and_file_protection(tmp_path: Path, clock: FakeClock) -> None:
    d = tmp_path / "pki"
    ca = CertificateAuthority.create(
        directory=d, passphrase=b"correct horse", iterations=1000, clock=clock
    )
    _, cert = ca.issue_new_key("edge-09", role=Role.EDGE)
    assert os.stat(d).st_mode & 0o777 == 0o700
    assert os.stat(d / "ca.key.pem").st_mode & 0o777 == 0o600
    assert os.stat(d / "issued" / "edge-09.key.pem").st_mode & 0o777 == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (d / "ca.key.pem").read_bytes()
    assert Certificate.load_file(d / "issued" / "edge-09.cert.pem") == cert
    assert Certificate.load_file(d / "certs" / f"{cert.serial:x}.cert.pem") == cert
    with pytest.raises(CAError, match="wrong passphrase"):
        CertificateAuthority.open(d, b"wrong", clock=clock)
    with pytest.raises(CAError, match="passphrase is needed"):
        CertificateAuthority.open(d, None, clock=clock)
    with pytest.raises(CAError, match="already holds a CA"):
        CertificateAuthority.create(directory=d, clock=clock)
    again = CertificateAuthority.open(d, b"correct horse", clock=clock)
    again.revoke("edge-09")
    trust = TrustStore.from_files(d / "ca.cert.pem", d / "crl.pem", clock=clock)
    with pytest.raises(CertificateRevoked):
        trust.validate(cert)
    # The first handle sees the revocation too: the index is re-read under the lock.
    ca.issue_new_key("edge-10", role=Role.EDGE)
    entries, number = CertificateAuthority.read_index(d)
    assert number == 1 and {e.name for e in entries} == {"edge-09", "edge-10"}
    assert [e.status(clock()) for e in entries if e.name == "edge-09"] == ["revoked"]


def test_keystore(tmp_path: Path) -> None:
    key = SM2PrivateKey.generate()
    blob = encrypt_private_key(key, b"s3cret", iterations=2000)
    assert decrypt_private_key(blob, b"s3cret").to_bytes() == key.to_bytes()
    with pytest.raises(WrongPassphrase):
        decrypt_private_key(blob, b"s3cres")
    p = tmp_path / "k.pem"
    save_private_key(p, key)
    assert load_private_key_file(p).to_bytes() == key.to_bytes()
    os.chmod(p, 0o644)
    with pytest.raises(KeyFileUnprotected, match="chmod 600"):
        load_private_key_file(p)


@pytest.mark.skipif(OPENSSL is None, reason="no openssl command line here")
def test_openssl_reads_our_certificates(tmp_path: Path, clock: FakeClock) -> None:
    import time

    ca = CertificateAuthority.create("interop-ca", directory=tmp_path / "pki")
    ca.issue_new_key("edge-20", role=Role.EDGE)
    d = tmp_path / "pki"
    text = subprocess.run(
        [OPENSSL, "x509", "-in", d / "issued" / "edge-20.cert.pem", "-noout", "-text"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if "SM2" not in text.stdout:
        pytest.skip("this openssl does not know SM2")
    assert "SM2-with-SM3" in text.stdout and "CN = edge-20" in text.stdout
    # OpenSSL 3 verifies SM2 certificate signatures with an empty signer ID unless told the
    # standard one (the same distid caveat as for plain signatures).
    r = subprocess.run(
        [OPENSSL, "verify", "-vfyopt", "distid:1234567812345678", "-CAfile", d / "ca.cert.pem",
         d / "issued" / "edge-20.cert.pem"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
    # And a CSR made by `openssl req` (signed with the empty ID) is accepted.
    subprocess.run(
        [OPENSSL, "genpkey", "-algorithm", "SM2", "-out", tmp_path / "dev.key"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    subprocess.run(
        [OPENSSL, "req", "-new", "-key", tmp_path / "dev.key", "-subj", "/CN=der-21",
         "-out", tmp_path / "dev.csr"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    req = CertificateRequest.load((tmp_path / "dev.csr").read_bytes())
    cert = ca.issue(req, role=Role.DER_AGENT)
    assert cert.name == "der-21" and cert.not_before <= time.time()
