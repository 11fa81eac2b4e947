"""`vpp keys` end to end: init (encrypted CA key), issue with a generated key and from a CSR, revoke, list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from security.identity import (
    Certificate,
    CertificateAuthority,
    CertificateRequest,
    CertificateRevoked,
    Role,
    TrustStore,
)
from security.keystore import load_private_key_file
from security.sm2 import SM2PrivateKey

ROOT = Path(__file__).resolve().parents[2]


def _vpp(*args: str | Path, passphrase: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("VPP_CA_PASSPHRASE", None)
    if passphrase is not None:
        env["VPP_CA_PASSPHRASE"] = passphrase
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "keys", *map(str, args)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_help() -> None:
    for sub in ("", "init", "issue", "revoke", "list"):
        r = _vpp(*([sub] if sub else []), "--help")
        assert r.returncode == 0 and "usage: vpp keys" in r.stdout, r.stderr


def test_init_issue_revoke_list(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pw = tmp_path / "pw.txt"
    pw.write_text("a long CA passphrase\n")
    r = _vpp("init", "--dir", pki, "--passphrase-file", pw, "--name", "site-ca")
    assert r.returncode == 0 and "created CA 'site-ca'" in r.stdout and "encrypted" in r.stdout
    assert (pki / "ca.key.pem").stat().st_mode & 0o077 == 0
    assert b"ENCRYPTED PRIVATE KEY" in (pki / "ca.key.pem").read_bytes()
    r = _vpp("init", "--dir", pki)
    assert r.returncode == 2 and "already holds a CA" in r.stderr

    # Issue with a generated key; the passphrase can come from the environment.
    r = _vpp("issue", "--dir", pki, "--name", "edge-01", passphrase="a long CA passphrase")
    assert r.returncode == 0 and "issued edge certificate for 'edge-01'" in r.stdout, r.stderr
    key = load_private_key_file(pki / "issued" / "edge-01.key.pem")
    cert = Certificate.load_file(pki / "issued" / "edge-01.cert.pem")
    assert cert.public_key == key.public_key and cert.role is Role.EDGE
    # Without or with a wrong passphrase: a clear refusal, nothing written.
    r = _vpp("issue", "--dir", pki, "--name", "edge-02")
    assert r.returncode == 2 and "passphrase is needed" in r.stderr
    r = _vpp("issue", "--dir", pki, "--name", "edge-02", passphrase="wrong")
    assert r.returncode == 2 and "wrong passphrase" in r.stderr
    assert not (pki / "issued" / "edge-02.cert.pem").exists()
    r = _vpp("issue", "--dir", pki, "--name", "edge-01", "--passphrase-file", pw)
    assert r.returncode == 2 and "already has a valid certificate" in r.stderr

    # From a CSR: the device keeps its key.
    dev = SM2PrivateKey.generate()
    csr = tmp_path / "agent.csr"
    csr.write_bytes(CertificateRequest.create(dev, "agent-07").pem)
    r = _vpp("issue", "--dir", pki, "--name", "agent-07", "--role", "der-agent", "--csr", csr,
             "--days", "90", "--passphrase-file", pw)  # fmt: skip
    assert r.returncode == 0, r.stderr
    agent = Certificate.load_file(pki / "issued" / "agent-07.cert.pem")
    assert agent.public_key == dev.public_key and agent.role is Role.DER_AGENT
    assert not (pki / "issued" / "agent-07.key.pem").exists()
    csr.write_bytes(
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    )
    r = _vpp("issue", "--dir", pki, "--name", "agent-08", "--csr", csr, "--passphrase-file", pw)
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr

    # Revoke by name: the CRL on disk makes every TrustStore refuse it.
    r = _vpp(
        "revoke", "--dir", pki, "edge-01", "--reason", "key_compromise", "--passphrase-file", pw
    )
    assert r.returncode == 0 and "revoked 'edge-01'" in r.stdout, r.stderr
    trust = TrustStore.from_files(pki / "ca.cert.pem", pki / "crl.pem")
    try:
        trust.validate(cert)
    except CertificateRevoked as e:
        assert "key_compromise" in str(e)
    else:
        raise AssertionError("a revoked certificate validated")
    trust.validate(agent, [Role.DER_AGENT])
    r = _vpp("revoke", "--dir", pki, "edge-01", "--passphrase-file", pw)
    assert r.returncode == 2 and "already revoked" in r.stderr
    r = _vpp("revoke", "--dir", pki, "nobody", "--passphrase-file", pw)
    assert r.returncode == 2 and "no certificate named" in r.stderr
    # Revoke by serial (hex).
    r = _vpp("revoke", "--dir", pki, f"{agent.serial:x}", "--passphrase-file", pw)
    assert r.returncode == 0, r.stderr

    # List: no passphrase needed.
    r = _vpp("list", "--dir", pki)
    assert r.returncode == 0 and "edge-01" in r.stdout and "revoked" in r.stdout, r.stderr
    doc = json.loads(_vpp("list", "--dir", pki, "--json").stdout)
    assert doc["crl_number"] == 2
    assert {(e["name"], e["status"]) for e in doc["issued"]} == {
        ("edge-01", "revoked"),
        ("agent-07", "revoked"),
    }
    # A renewed certificate for the revoked name is allowed.
    r = _vpp("issue", "--dir", pki, "--name", "edge-01", "--passphrase-file", pw)
    assert r.returncode == 0, r.stderr
    ca = CertificateAuthority.open(pki, b"a long CA passphrase")
    assert len(ca.entries) == 3


def test_errors_without_a_ca(tmp_path: Path) -> None:
    r = _vpp("list", "--dir", tmp_path / "none")
    assert r.returncode == 2 and "vpp keys init" in r.stderr
    r = _vpp("issue", "--dir", tmp_path / "none", "--name", "x")
    assert r.returncode == 2 and "vpp keys init" in r.stderr
    r = _vpp("init", "--dir", tmp_path / "p", "--name", "bad name!")
    assert r.returncode == 2 and "bad name" in r.stderr
