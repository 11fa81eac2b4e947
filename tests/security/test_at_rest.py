"""Business data at rest: command values and origins and audit details stored SM4-GCM sealed,
bound to their row, read back with the master key, chains verified without it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from model.command import Command, CommandState
from security.audit import AuditError, AuditKind, AuditLog
from security.errors import DecryptionError
from security.secrets import ColumnCipher, MasterKeyError, is_sealed
from twin.command_store import CommandStore
from twin.commands import CommandBook
from twin.errors import HistoryError

SET = "VPP1.BAT01/DRCC1.WSpt.setMag.f"
KEY = bytes(range(16))


def test_column_cipher_binds_each_value_to_its_context() -> None:
    c = ColumnCipher(KEY)
    sealed = c.seal("-42.5", "commands.value:a")
    assert is_sealed(sealed) and "42" not in sealed
    assert c.open(sealed, "commands.value:a") == "-42.5"
    assert c.seal("-42.5", "commands.value:a") != sealed  # a fresh nonce every time
    with pytest.raises(DecryptionError, match=r"commands\.value:b: .*moved from another row"):
        c.open(sealed, "commands.value:b")
    with pytest.raises(DecryptionError, match="wrong key"):
        ColumnCipher(bytes(16)).open(sealed, "commands.value:a")
    assert c.open('{"plain": 1}', "audit_log.detail:1") == '{"plain": 1}'  # stored before sealing
    with pytest.raises(MasterKeyError, match="16 bytes"):
        ColumnCipher(b"short")


def test_cipher_from_the_master_key(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VPP_MASTER_KEY", raising=False)
    monkeypatch.setenv("VPP_MASTER_KEY_FILE", str(tmp_path / "none.key"))
    with pytest.raises(MasterKeyError, match="no master key"):
        ColumnCipher.from_master_key()
    monkeypatch.setenv("VPP_MASTER_KEY", KEY.hex())
    assert ColumnCipher.from_master_key().open(ColumnCipher(KEY).seal("x", "c"), "c") == "x"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """(URL, table prefix) for SQLite in tmp_path or PostgreSQL from the environment."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/rest.db", ""
        return
    from tests.conftest import service_url

    url, prefix = service_url("VPP_TEST_PG_URL", "PostgreSQL"), f"t{uuid.uuid4().hex[:10]}_"
    yield url, prefix
    e = create_engine(url)
    with e.begin() as c:
        c.execute(text(f"DROP TABLE IF EXISTS {prefix}command_log, {prefix}commands"))
    e.dispose()


def test_command_store_seals_value_and_origin(db) -> None:
    url, prefix = db
    engine = create_engine(url)
    try:
        book, store = CommandBook(), CommandStore(engine, table_prefix=prefix,
                                                  sealer=ColumnCipher(KEY)).open()  # fmt: skip
        store.attach(book)
        cmd = Command(SET, -42.5, "iec104:dispatch-main", id="agc-7", deadline=time.time() + 60)
        book.accept(cmd)
        book.accept(Command(SET, True, "rest:olga", id="flag-1"))
        book.transition("agc-7", CommandState.SENT, "written")
        store.flush()
        with engine.connect() as c:
            rows = c.execute(text(f"SELECT id, target, value, origin FROM {prefix}commands")).all()
        assert {r.id for r in rows} == {"agc-7", "flag-1"}
        for r in rows:
            assert r.target == SET  # the point stays queryable
            assert is_sealed(r.value) and is_sealed(r.origin)
            assert "42.5" not in r.value and "dispatch" not in r.origin and "olga" not in r.origin

        book2 = CommandBook()
        CommandStore(engine, table_prefix=prefix, sealer=ColumnCipher(KEY)).open().restore(book2)
        got = book2.get("agc-7").command
        assert (got.value, got.origin) == (-42.5, "iec104:dispatch-main")
        assert book2.get("flag-1").command.value is True
        assert store.verify() is None  # the chain needs no key
        with pytest.raises(HistoryError, match="is stored sealed"):
            CommandStore(engine, table_prefix=prefix).open().restore(CommandBook())
        with pytest.raises(HistoryError, match="cannot open stored command"):
            CommandStore(
                engine, table_prefix=prefix, sealer=ColumnCipher(bytes(16))
            ).open().restore(CommandBook())
        # A sealed value swapped into another command's row does not open.
        with engine.begin() as c:
            v = c.execute(text(f"SELECT value FROM {prefix}commands WHERE id='flag-1'")).scalar()
            c.execute(text(f"UPDATE {prefix}commands SET value=:v WHERE id='agc-7'"), {"v": v})
        with pytest.raises(HistoryError, match="agc-7"):
            CommandStore(engine, table_prefix=prefix, sealer=ColumnCipher(KEY)).open().restore(
                CommandBook()
            )
    finally:
        engine.dispose()


def test_audit_details_sealed_chain_verified_without_the_key(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    log = AuditLog(engine, cipher=ColumnCipher(KEY)).open()
    log.record(AuditKind.LOGIN, actor="olga", source="rest 10.1.2.3", subject="olga",
               detail={"from": "10.1.2.3", "roles": ["operator"]})  # fmt: skip
    log.record(AuditKind.COMMAND, actor="iec104:main", subject="agc-7",
               detail={"point": SET, "value": -42.5})  # fmt: skip
    log.note_config("site", b"site: {id: DEMO}")
    log.flush()
    with engine.connect() as c:
        stored = dict(c.execute(text("SELECT seq, detail FROM audit_log")).all())
    assert is_sealed(stored[1]) and is_sealed(stored[2])
    assert "10.1.2.3" not in stored[1] and "42.5" not in stored[2]
    assert not is_sealed(stored[3])  # configuration changes stay readable: only fingerprints
    assert [r.details for r in log.rows()][:2] == [
        {"from": "10.1.2.3", "roles": ["operator"]},
        {"point": SET, "value": -42.5},
    ]
    plain = AuditLog(engine).open()  # an auditor without the master key
    assert plain.verify().ok and plain.verify().records == 3
    assert plain.rows()[0].sealed and plain.rows()[0].details is None
    assert plain.note_config("site", b"site: {id: DEMO}") is False  # still knows the last one
    # A sealed detail moved to another record: the chain names it, and it does not open there.
    with engine.begin() as c:
        c.execute(text("UPDATE audit_log SET detail=:d WHERE seq=2"), {"d": stored[1]})
    check = plain.verify()
    assert not check.ok and check.first_broken == 2
    with pytest.raises(AuditError, match=r"audit record 2: .*does not open"):
        log.rows()
    engine.dispose()
