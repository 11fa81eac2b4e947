"""`vpp audit verify` (run as a command) on a real database holding the command log and the
SM2-signed audit log, with the platform certificate from a real CA directory: intact, then one
byte flipped, a record removed, a record inserted, a signature forged."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from model.command import Command, CommandState
from security.audit import AuditKind, AuditLog, load_platform_signer, record_hash
from security.identity import CertificateAuthority
from security.identity import Role as CertRole
from twin.command_store import CommandStore
from twin.commands import CommandBook

ROOT = Path(__file__).resolve().parents[2]
SET = "VPP1.BAT01/DRCC1.WSpt.setMag.f"


def _vpp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def site(tmp_path: Path) -> tuple[str, Path, Engine]:
    """A history database with 4 commands (in both logs) and 20 other audit records, signed
    every 8 records, by the platform key of a CA in tmp_path/pki."""
    pki = tmp_path / "pki"
    ca = CertificateAuthority.create("site-ca", directory=pki)
    ca.issue_new_key("vpp-platform", role=CertRole.PLATFORM)
    url = f"sqlite:///{tmp_path / 'history.db'}"
    engine = create_engine(url)
    commands = CommandStore(engine).open()
    audit = AuditLog(engine, signer=load_platform_signer(pki), checkpoint_every=8).open()
    book = CommandBook()
    commands.attach(book)
    audit.attach(book)
    for i in range(4):
        book.accept(Command(SET, float(i), "rest", id=f"c{i}"))
        book.transition(f"c{i}", CommandState.SENT, "written")
    for i in range(20):
        audit.record(AuditKind.LOGIN, actor=f"user{i}", source="rest 127.0.0.1", subject=f"user{i}")
    commands.flush()
    audit.close()
    return url, pki, engine


def _verify(url: str, pki: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _vpp("audit", "verify", "--history-url", url, "--pki", str(pki), *extra)


def test_intact_logs_and_signatures(site: tuple[str, Path, Engine]) -> None:
    url, pki, _ = site
    out = _verify(url, pki)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "command log: OK: 8 record(s), hash chain intact"
    # 8 command transitions + 20 logins = 28 records, a checkpoint after every 8, one at close.
    assert lines[1] == (
        "audit log: OK: 32 record(s), hash chain intact; 4 SM2-signed checkpoint(s) verified, "
        "signed through record 32"
    )
    js = json.loads(_verify(url, pki, "--json").stdout)
    assert js["audit_log"]["ok"] and js["audit_log"]["unsigned_tail"] == 0
    # Without the platform certificate the chain is checked, the signatures are not.
    out = _vpp("audit", "verify", "--history-url", url)
    assert out.returncode == 0
    assert "signatures NOT checked" in out.stdout
    out = _vpp("audit", "verify", "--history-url", url, "--require-signed")
    assert out.returncode == 1 and "NOT PROVEN" in out.stdout


def test_flipped_byte_is_named(site: tuple[str, Path, Engine]) -> None:
    url, pki, engine = site
    with engine.begin() as c:  # one byte of record 13 (the login of user3): user3 -> user2
        old = c.execute(text("SELECT subject FROM audit_log WHERE seq = 13")).scalar_one()
        assert old == "user3"
        new = old[:-1] + chr(ord(old[-1]) ^ 1)
        c.execute(text("UPDATE audit_log SET subject = :v WHERE seq = 13"), {"v": new})
    engine.dispose()
    out = _verify(url, pki)
    assert out.returncode == 1
    assert "audit log: BROKEN: record 13 does not match its hash: altered" in out.stdout
    assert "command log: OK" in out.stdout


def test_removed_and_inserted_records_are_named(site: tuple[str, Path, Engine]) -> None:
    url, pki, engine = site
    with engine.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq = 20"))
    engine.dispose()
    out = _verify(url, pki)
    assert out.returncode == 1
    assert "record 20 is missing (the next stored record is 21): removed" in out.stdout
    with engine.begin() as c:  # put a different record in its place, well hashed
        prev = c.execute(text("SELECT hash FROM audit_log WHERE seq = 19")).scalar_one()
        h = record_hash(20, 1.0, "login", "mallory", "", "mallory", "{}", prev)
        c.execute(
            text(
                "INSERT INTO audit_log VALUES (20, 1.0, 'login', 'mallory', '', 'mallory', '{}', "
                ":p, :h)"
            ),
            {"p": prev, "h": h},
        )
    engine.dispose()
    out = _verify(url, pki)
    assert out.returncode == 1
    assert "record 21 does not link to record 20" in out.stdout


def test_forged_signature_is_named(site: tuple[str, Path, Engine], tmp_path: Path) -> None:
    url, pki, engine = site
    with engine.begin() as c:
        row = c.execute(text("SELECT * FROM audit_log WHERE seq = 18")).mappings().one()
        assert row["kind"] == "checkpoint"
        detail = json.loads(row["detail"])
        sig = bytearray(base64.b64decode(detail["signature"]))
        sig[10] ^= 0x40
        detail["signature"] = base64.b64encode(bytes(sig)).decode()
        d = json.dumps(detail, sort_keys=True, separators=(",", ":"))
        # The forger keeps the chain consistent: only the signature can give it away.
        rows = c.execute(text("SELECT * FROM audit_log WHERE seq >= 18 ORDER BY seq")).mappings()
        prev = row["prev_hash"]
        for r in list(rows):
            det = d if r["seq"] == 18 else r["detail"]
            h = record_hash(
                r["seq"], r["ts"], r["kind"], r["actor"], r["source"], r["subject"], det, prev
            )
            c.execute(
                text("UPDATE audit_log SET detail = :d, prev_hash = :p, hash = :h WHERE seq = :s"),
                {"d": det, "p": prev, "h": h, "s": r["seq"]},
            )
            prev = h
    engine.dispose()
    out = _verify(url, pki)
    assert out.returncode == 1
    assert "audit log: BROKEN: checkpoint 18: SM2 signature does not verify" in out.stdout
    assert "records 10..17 are not proven" in out.stdout
    # Trusting another platform certificate only: the signer is unknown.
    other = CertificateAuthority.create("other-ca", directory=tmp_path / "other")
    other.issue_new_key("vpp-platform", role=CertRole.PLATFORM)
    cert = tmp_path / "other" / "issued" / "vpp-platform.cert.pem"
    out = _vpp("audit", "verify", "--history-url", url, "--cert", str(cert))
    assert out.returncode == 1 and "checkpoint 9: signed by an unknown certificate" in out.stdout


def test_bad_input_is_exit_2(tmp_path: Path) -> None:
    out = _vpp("audit", "verify", "--history-url", f"sqlite:///{tmp_path}/empty.db")
    assert out.returncode == 2 and "no command log or audit log" in out.stderr
    out = _vpp(
        "audit",
        "verify",
        "--history-url",
        f"sqlite:///{tmp_path}/e.db",
        "--pki",
        str(tmp_path / "nowhere"),
    )
    assert out.returncode == 2 and "cannot read certificate" in out.stderr


def test_user_changes_from_the_cli_are_audited(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    users = str(tmp_path / "users.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VPP_NEW_PASSWORD": "long enough pass"}

    def vpp(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tools.cli", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    for args in (
        ("users", "add", "olga", "--role", "viewer"),
        ("users", "roles", "olga", "--role", "operator", "--role", "viewer"),
        ("users", "remove", "olga"),
    ):
        out = vpp(*args, "--file", users, "--audit-url", url)
        assert out.returncode == 0, out.stderr
        assert "recorded in the audit log" in out.stdout
    out = vpp("users", "roles", "nobody", "--role", "viewer", "--file", users)
    assert out.returncode == 2 and "no user 'nobody'" in out.stderr
    engine = create_engine(url)
    rows = AuditLog(engine).rows()
    engine.dispose()
    assert [(r.kind, r.subject) for r in rows] == [
        ("user_add", "olga"),
        ("role_change", "olga"),
        ("user_remove", "olga"),
    ]
    assert rows[1].details["before"] == ["viewer"]
    assert rows[1].details["after"] == ["operator", "viewer"]
    assert rows[0].actor.startswith("cli:")
    out = _vpp("audit", "verify", "--history-url", url)
    assert out.returncode == 0 and "audit log: OK: 3 record(s)" in out.stdout
