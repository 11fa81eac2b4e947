"""The audit log: SM3 chain, SM2-signed checkpoints, tampering of every kind named by verify(),
several writers, command transitions, configuration changes, and the REST side (paging, verify,
user and role changes audited with who did them)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from model.command import Command, CommandState
from model.site import SiteConfig
from security.audit import (
    AuditError,
    AuditKind,
    AuditLog,
    AuditSigner,
    load_platform_signer,
    record_hash,
)
from security.identity import CertificateAuthority
from security.identity import Role as CertRole
from tests.north.test_rest import API, PASSWORD, PV01_SET, Env, FakeClock, make_env, make_security
from twin.commands import CommandBook


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create("test-ca")


@pytest.fixture(scope="module")
def signer(ca: CertificateAuthority) -> AuditSigner:
    key, cert = ca.issue_new_key("vpp-platform", role=CertRole.PLATFORM)
    return AuditSigner(key, cert)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return create_engine(f"sqlite:///{tmp_path / 'audit.db'}")


def _fill(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.record(
            AuditKind.LOGIN,
            actor=f"user{i}",
            source="rest 127.0.0.1",
            subject=f"user{i}",
            detail={"i": i, "roles": ["viewer"]},
        )


def _rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(text("SELECT * FROM audit_log ORDER BY seq"))]


def _rehash_from(engine: Engine, start: int) -> None:
    """What someone without the key can do: recompute every hash from record `start` on."""
    rows = _rows(engine)
    prev = rows[start - 2]["hash"] if start > 1 else "0" * 64
    with engine.begin() as c:
        for r in rows[start - 1 :]:
            h = record_hash(
                r["seq"],
                r["ts"],
                r["kind"],
                r["actor"],
                r["source"],
                r["subject"],
                r["detail"],
                prev,
            )
            c.execute(
                text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s"),
                {"p": prev, "h": h, "s": r["seq"]},
            )
            prev = h


def test_chain_and_checkpoints(engine: Engine, signer: AuditSigner) -> None:
    clock = FakeClock()
    log = AuditLog(engine, signer=signer, checkpoint_every=5, clock=clock).open()
    _fill(log, 12)
    assert log.pending == 12
    assert log.flush() == 14  # 12 records, checkpoints after records 5 and 11 (5 + checkpoint)
    kinds = [r.kind for r in log.rows()]
    assert [i + 1 for i, k in enumerate(kinds) if k == "checkpoint"] == [6, 12]
    v = log.verify()
    assert v.ok and v.signatures_checked
    assert (v.records, v.checkpoints, v.signed_through, v.unsigned_tail) == (14, 2, 12, 2)
    assert log.stats() == {
        "pending": 0, "written": 14, "checkpoints": 2, "unsigned": 2, "signing": True
    }  # fmt: skip
    # The interval passes: the next flush signs the tail even with nothing queued.
    clock.advance(10)
    assert log.flush() == 1
    v = log.verify()
    assert (v.records, v.checkpoints, v.unsigned_tail) == (15, 3, 0)
    ck = log.rows()[-1]
    assert ck.kind == "checkpoint" and ck.details["through"] == 14
    assert ck.details["cert"] == signer.certificate.fingerprint.hex()
    # Nothing new: nothing written, no empty checkpoint.
    clock.advance(100)
    assert log.flush() == 0 and log.close() == 0


def test_without_certificates_signatures_are_not_checked(
    engine: Engine, signer: AuditSigner
) -> None:
    log = AuditLog(engine, signer=signer, checkpoint_every=3).open()
    _fill(log, 7)
    log.close()
    v = AuditLog(engine).verify()  # a reader with no trusted certificate
    assert v.ok and not v.signatures_checked and v.signed_through == 0
    assert v.checkpoints == 3  # after 3, after 6, and the closing one


def test_flipped_byte_is_named(engine: Engine, signer: AuditSigner) -> None:
    log = AuditLog(engine, signer=signer, checkpoint_every=4).open()
    _fill(log, 10)
    log.close()
    for seq, column in [(3, "detail"), (7, "actor"), (1, "subject"), (9, "source")]:
        with engine.begin() as c:
            old = c.execute(text(f"SELECT {column} FROM audit_log WHERE seq = {seq}")).scalar_one()
            flipped = old[:1] + chr(ord(old[1]) ^ 1) + old[2:]
            c.execute(text(f"UPDATE audit_log SET {column} = :v WHERE seq = {seq}"), {"v": flipped})
        v = log.verify()
        assert (v.ok, v.first_broken) == (False, seq)
        assert v.reason == f"record {seq} does not match its hash: altered"
        with engine.begin() as c:
            c.execute(text(f"UPDATE audit_log SET {column} = :v WHERE seq = {seq}"), {"v": old})
        assert log.verify().ok
    with engine.begin() as c:  # the time of a record
        c.execute(text("UPDATE audit_log SET ts = ts + 1 WHERE seq = 2"))
    assert log.verify().first_broken == 2


def test_removed_record_is_named(engine: Engine, signer: AuditSigner) -> None:
    log = AuditLog(engine, signer=signer, checkpoint_every=4).open()
    _fill(log, 10)
    log.close()
    with engine.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq = 4"))
    v = log.verify()
    assert v.first_broken == 4
    assert v.reason == "record 4 is missing (the next stored record is 5): removed"


def test_inserted_record_is_named(engine: Engine, signer: AuditSigner) -> None:
    log = AuditLog(engine, signer=signer, checkpoint_every=4).open()
    _fill(log, 10)
    log.close()
    rows = _rows(engine)
    with engine.begin() as c:  # make room at 3, insert a well-formed record that links to 2
        for r in reversed(rows[2:]):
            c.execute(text("UPDATE audit_log SET seq = seq + 1 WHERE seq = :s"), {"s": r["seq"]})
        detail = json.dumps({"i": 99})
        h = record_hash(3, 1.0, "login", "mallory", "", "mallory", detail, rows[1]["hash"])
        c.execute(
            text(
                "INSERT INTO audit_log VALUES (3, 1.0, 'login', 'mallory', '', 'mallory', :d, "
                ":p, :h)"
            ),
            {"d": detail, "p": rows[1]["hash"], "h": h},
        )
    v = log.verify()
    assert v.first_broken == 4  # the old record 3 no longer links to what is before it
    assert "does not link to record 3" in (v.reason or "")
    # Rehashing the rest (no key needed for that) is caught by the next signed checkpoint.
    _rehash_from(engine, 4)
    v = log.verify()
    assert v.first_broken == 6 and v.reason is not None
    assert v.reason.startswith("checkpoint 6: covers record 4")


def test_rewritten_chain_is_caught_by_the_signature(engine: Engine, signer: AuditSigner) -> None:
    log = AuditLog(engine, signer=signer, checkpoint_every=4).open()
    _fill(log, 10)
    log.close()
    rows = _rows(engine)
    ck = rows[4]  # the checkpoint after records 1..4
    assert ck["kind"] == "checkpoint"
    with engine.begin() as c:
        c.execute(text("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2"))
        # The forger fixes the checkpoint's head too; the signature cannot follow.
        detail = json.loads(ck["detail"])
        c.execute(
            text("UPDATE audit_log SET detail = :d WHERE seq = 5"),
            {"d": json.dumps(detail, sort_keys=True, separators=(",", ":"))},
        )
    _rehash_from(engine, 2)
    rows = _rows(engine)
    detail["head"] = rows[3]["hash"]
    with engine.begin() as c:
        c.execute(
            text("UPDATE audit_log SET detail = :d WHERE seq = 5"),
            {"d": json.dumps(detail, sort_keys=True, separators=(",", ":"))},
        )
    _rehash_from(engine, 5)
    v = log.verify()
    assert v.first_broken == 5
    assert v.reason is not None and "SM2 signature does not verify" in v.reason
    assert "records 1..4 are not proven" in v.reason


def test_forged_signature_and_unknown_signer(
    engine: Engine, signer: AuditSigner, ca: CertificateAuthority
) -> None:
    log = AuditLog(engine, signer=signer, checkpoint_every=4).open()
    _fill(log, 4)
    log.close()
    rows = _rows(engine)
    detail = json.loads(rows[4]["detail"])
    sig = bytearray(base64.b64decode(detail["signature"]))
    sig[-1] ^= 1
    detail["signature"] = base64.b64encode(bytes(sig)).decode()
    with engine.begin() as c:
        c.execute(
            text("UPDATE audit_log SET detail = :d WHERE seq = 5"),
            {"d": json.dumps(detail, sort_keys=True, separators=(",", ":"))},
        )
    _rehash_from(engine, 5)
    v = log.verify()
    assert v.first_broken == 5 and "SM2 signature does not verify" in (v.reason or "")

    # A whole log signed by someone else's platform key: valid chain, unknown certificate.
    rogue_ca = CertificateAuthority.create("rogue-ca")
    rogue = AuditSigner(*rogue_ca.issue_new_key("vpp-platform", role=CertRole.PLATFORM))
    other = create_engine("sqlite://")
    fake = AuditLog(other, signer=rogue, checkpoint_every=2).open()
    _fill(fake, 3)
    fake.close()
    assert fake.verify().ok  # by its own certificate
    v = AuditLog(other).verify([signer.certificate])
    assert v.first_broken == 3 and "unknown certificate" in (v.reason or "")


def test_signer_must_be_a_platform_certificate(ca: CertificateAuthority) -> None:
    key, cert = ca.issue_new_key("edge-1", role=CertRole.EDGE)
    with pytest.raises(AuditError, match="platform certificate"):
        AuditSigner(key, cert)
    other_key, _ = ca.issue_new_key("vpp-platform-2", role=CertRole.PLATFORM)
    with pytest.raises(AuditError, match="does not match"):
        AuditSigner(other_key, cert)


def test_load_platform_signer_from_a_ca_directory(tmp_path: Path) -> None:
    ca = CertificateAuthority.create("site-ca", directory=tmp_path / "pki")
    ca.issue_new_key("vpp-platform", role=CertRole.PLATFORM)
    s = load_platform_signer(tmp_path / "pki")
    assert s.certificate.name == "vpp-platform"
    with pytest.raises(AuditError, match="vpp keys issue --name nobody"):
        load_platform_signer(tmp_path / "pki", "nobody")


def test_two_writers_share_one_chain(engine: Engine, signer: AuditSigner) -> None:
    a = AuditLog(engine, signer=signer, checkpoint_every=1000).open()
    b = AuditLog(engine).open()  # e.g. a CLI without the key, appending to the same log
    for i in range(5):
        a.record(AuditKind.LOGIN, actor="a", detail={"i": i})
        b.record(AuditKind.USER_ADD, actor="cli", subject=f"u{i}")
        a.flush()
        b.flush()
    a.close()
    v = a.verify()
    assert v.ok and v.records == 11 and v.unsigned_tail == 0
    assert [r.actor for r in a.rows()][:4] == ["a", "cli", "a", "cli"]


def test_command_transitions_are_recorded(engine: Engine) -> None:
    log = AuditLog(engine).open()
    book = CommandBook()
    log.attach(book)
    book.accept(Command(PV01_SET, 42.5, "iec104", id="c1", deadline=2e9))
    book.transition("c1", CommandState.SENT, "written by mb1")
    book.transition("c1", CommandState.CONFIRMED, "read back")
    log.flush()
    rows = log.rows(kind="command")
    assert [(r.subject, r.details["state"]) for r in rows] == [
        ("c1", "accepted"),
        ("c1", "sent"),
        ("c1", "confirmed"),
    ]
    assert rows[0].actor == "iec104"
    assert rows[0].details == {
        "state": "accepted",
        "reason": "",
        "point": PV01_SET,
        "value": 42.5,
        "origin": "iec104",
        "deadline": 2e9,
    }
    assert rows[1].details["reason"] == "written by mb1"
    assert rows[0].ts == book.get("c1").history[0].ts


def test_config_changes_are_recorded_once_per_change(engine: Engine) -> None:
    log = AuditLog(engine).open()
    assert log.note_config("site.yaml", b"site: {id: A}\n")
    assert not log.note_config("site.yaml", b"site: {id: A}\n")  # still queued: same
    log.flush()
    fresh = AuditLog(engine).open()  # after a restart
    assert not fresh.note_config("site.yaml", b"site: {id: A}\n")
    assert fresh.note_config("site.yaml", b"site: {id: B}\n")
    assert fresh.note_config("users.yaml", b"users: []\n")
    fresh.flush()
    changes = fresh.rows(kind="config_change")
    assert [r.subject for r in changes] == ["site.yaml", "site.yaml", "users.yaml"]
    assert changes[1].details["previous"] == changes[0].details["sm3"]


def test_a_failed_write_keeps_the_records_in_order(engine: Engine) -> None:
    log = AuditLog(engine).open()
    _fill(log, 3)
    with engine.begin() as c:
        c.execute(text("ALTER TABLE audit_log RENAME TO audit_log_away"))
    with pytest.raises(AuditError, match="cannot write audit records"):
        log.flush()
    assert log.pending == 3
    log.record(AuditKind.LOGOUT, actor="user9")
    with engine.begin() as c:
        c.execute(text("ALTER TABLE audit_log_away RENAME TO audit_log"))
    assert log.flush() == 4
    assert [r.actor for r in log.rows()] == ["user0", "user1", "user2", "user9"]
    assert log.verify().ok


def test_bad_records_are_refused(engine: Engine) -> None:
    log = AuditLog(engine).open()
    with pytest.raises(ValueError):
        log.record("nonsense", actor="x")
    with pytest.raises(AuditError, match="written by the log itself"):
        log.record(AuditKind.CHECKPOINT, actor="x")
    with pytest.raises(AuditError, match="not JSON"):
        log.record(AuditKind.LOGIN, actor="x", detail={"v": float("nan")})
    log.record(AuditKind.LOGIN, actor="x" * 1000)
    log.flush()
    assert len(log.rows()[0].actor) == 256


# --- over HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
async def env(demo_site: SiteConfig, signer: AuditSigner) -> AsyncIterator[Env]:
    from tests.north.test_rest import memory_audit

    audit = memory_audit(signer=signer, checkpoint_every=50)
    e = await make_env(demo_site, None, sec=make_security(audit=audit))
    yield e
    await e.client.close()
    await e.path.close()


async def test_user_and_role_changes_are_audited_with_their_actor(env: Env) -> None:
    admin = env.token_for("security_admin")
    new, _ = await env.call(
        "POST",
        f"{API}/users",
        201,
        token=admin,
        json={"name": "nina", "password": PASSWORD, "roles": ["viewer"]},
    )
    assert new == {"name": "nina", "roles": ["viewer"], "disabled": False}
    await env.call(
        "POST",
        f"{API}/users",
        409,
        token=admin,
        json={"name": "nina", "password": PASSWORD, "roles": []},
    )
    err, _ = await env.call(
        "POST",
        f"{API}/users",
        400,
        token=admin,
        json={"name": "x", "password": "short", "roles": ["viewer"]},
    )
    assert "at least 8" in err["error"]["message"]
    err, _ = await env.call(
        "POST",
        f"{API}/users",
        400,
        token=admin,
        json={"name": "y", "password": PASSWORD, "roles": ["god"]},
    )
    assert err["error"]["details"][0]["field"] == "roles"
    body, _ = await env.call(
        "PUT", f"{API}/users/nina/roles", 200, token=admin, json={"roles": ["operator", "viewer"]}
    )
    assert body["roles"] == ["operator", "viewer"]
    await env.call("PUT", f"{API}/users/nobody/roles", 404, token=admin, json={"roles": []})
    await env.call("DELETE", f"{API}/users/nina", 200, token=admin)
    await env.call("DELETE", f"{API}/users/nina", 404, token=admin)
    # The last security administrator can neither be removed nor demoted.
    err, _ = await env.call("DELETE", f"{API}/users/security_admin", 409, token=admin)
    assert err["error"]["code"] == "last_security_admin"
    await env.call(
        "PUT", f"{API}/users/security_admin/roles", 409, token=admin, json={"roles": ["viewer"]}
    )
    listed = await env.get(f"{API}/users", token=admin)
    assert "nina" not in {u["name"] for u in listed} and "security_admin" in {
        u["name"] for u in listed
    }

    page = await env.get(f"{API}/audit", token=env.token_for("auditor"), params={"limit": "1000"})
    changes = [
        (r["kind"], r["actor"], r["subject"], r["detail"])
        for r in page["records"]
        if r["kind"] in ("user_add", "role_change", "user_remove")
    ]
    assert changes == [
        ("user_add", "security_admin", "nina", {"roles": ["viewer"]}),
        (
            "role_change",
            "security_admin",
            "nina",
            {"before": ["viewer"], "after": ["operator", "viewer"]},
        ),
        ("user_remove", "security_admin", "nina", {"roles": ["operator", "viewer"]}),
    ]


async def test_audit_pages_and_verify_over_http(env: Env) -> None:
    auditor = env.token_for("auditor")
    for v in (10, 20, 30):
        await env.post(f"{API}/commands", 202, json={"point": PV01_SET, "value": v})
    await env.post(f"{API}/commands", 422, json={"point": PV01_SET, "value": 999})
    await env.post(
        f"{API}/commands", 403, token=env.token_for("viewer"), json={"point": PV01_SET, "value": 1}
    )
    first = await env.get(f"{API}/audit", token=auditor, params={"limit": "2"})
    assert [r["seq"] for r in first["records"]] == [1, 2] and first["next_after"] == 2
    seen = first["records"]
    after = first["next_after"]
    while after is not None:
        page = await env.get(
            f"{API}/audit", token=auditor, params={"after": str(after), "limit": "2"}
        )
        seen += page["records"]
        after = page["next_after"]
    assert [r["seq"] for r in seen] == list(range(1, len(seen) + 1))
    assert seen[-1]["hash"] == page["head"]["hash"]
    requests = [r for r in seen if r["kind"] == "command_request"]
    assert [(r["actor"], r["detail"]["outcome"]) for r in requests] == [
        ("operator", "accepted"),
        ("operator", "accepted"),
        ("operator", "accepted"),
        ("operator", "rejected"),
    ]
    assert requests[-1]["detail"]["code"] == "out_of_limits"
    denied = await env.get(f"{API}/audit", token=auditor, params={"kind": "access_denied"})
    assert [(r["actor"], r["subject"]) for r in denied["records"]] == [
        ("viewer", "POST /api/v1/commands")
    ]
    commands = await env.get(f"{API}/audit", token=auditor, params={"kind": "command"})
    assert {r["detail"]["state"] for r in commands["records"]} >= {"accepted", "sent"}
    for bad in ({"kind": "bogus"}, {"after": "-1"}, {"limit": "1001"}, {"x": "1"}):
        await env.get(f"{API}/audit", 400, token=auditor, params=bad)

    verdict = await env.get(f"{API}/audit/verify", token=auditor)
    assert verdict["ok"] and verdict["signatures_checked"]
    assert verdict["first_broken"] is None
    assert env.sec.audit is not None
    env.sec.audit.request_checkpoint()
    verdict = await env.get(f"{API}/audit/verify", token=auditor)
    assert verdict["unsigned_tail"] == 0 and verdict["checkpoints"] >= 1
    # Someone edits the database behind the API's back.
    with env.sec.audit.engine.begin() as c:
        c.execute(text("UPDATE audit_log SET actor = 'nobody' WHERE seq = 3"))
    verdict = await env.get(f"{API}/audit/verify", token=auditor)
    assert verdict["ok"] is False and verdict["first_broken"] == 3


async def test_no_audit_log_is_503(demo_site: SiteConfig) -> None:
    from gateway.north.rest import ApiSecurity

    sec = make_security()
    sec = ApiSecurity(sec.users, sec.tokens, None)
    e = await make_env(demo_site, None, sec=sec)
    try:
        err = await e.get(f"{API}/audit", 503, token=e.token_for("auditor"))
        assert err["error"]["code"] == "audit_unavailable"
        await e.get(f"{API}/audit/verify", 503, token=e.token_for("auditor"))
    finally:
        await e.client.close()
