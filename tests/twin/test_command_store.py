"""Command lifecycle records: persisted, restored after a restart, hash-chained audit log."""

import time
import uuid

import pytest
from sqlalchemy import create_engine, text

from model.command import Command, CommandState
from twin.command_store import RESTART_REASON, CommandStore
from twin.commands import CommandBook

SET = "VPP1.BAT01/DRCC1.WSpt.setMag.f"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    """(engine factory, table prefix) for SQLite in tmp_path or PostgreSQL from the environment."""
    if request.param == "sqlite":
        url, prefix = f"sqlite:///{tmp_path}/cmd.db", ""
    else:
        from tests.conftest import service_url

        url = service_url("VPP_TEST_PG_URL", "PostgreSQL")
        prefix = f"t{uuid.uuid4().hex[:10]}_"
    engines = []

    def make():
        e = create_engine(url)
        engines.append(e)
        return e

    yield make, prefix
    if prefix:
        with engines[0].begin() as c:
            c.execute(text(f"DROP TABLE IF EXISTS {prefix}command_log, {prefix}commands"))
    for e in engines:
        e.dispose()


def _book_and_store(backend) -> tuple[CommandBook, CommandStore]:
    make, prefix = backend
    book = CommandBook()
    store = CommandStore(make(), table_prefix=prefix).open()
    store.attach(book)  # as the gateway does: the UNKNOWN transitions of restore are recorded
    store.restore(book)
    return book, store


def test_restart_restores_and_in_flight_becomes_unknown(backend) -> None:
    book, store = _book_and_store(backend)
    done = Command(SET, -30.0, "rest", id="done", deadline=time.time() + 10)
    flying = Command(SET, 12, "iec104", id="flying", deadline=time.time() + 10)
    flag = Command("VPP1.X/GGIO1.SPCSO1.stVal", True, "opcua", id="flag")
    for c in (done, flying, flag):
        book.accept(c)
    book.transition("done", CommandState.SENT, "written")
    book.transition("done", CommandState.CONFIRMED, "read back -30.0")
    book.transition("flying", CommandState.SENT, "written")
    book.transition("flag", CommandState.FAILED, "device refused")
    assert store.flush() == 7  # three accepted, then sent, confirmed, sent, failed

    # "restart": a new book and a new store on the same database
    book2, store2 = _book_and_store(backend)
    assert [r.command.id for r in book2.records()] == ["done", "flying", "flag"]
    d = book2.get("done")
    assert d.state == CommandState.CONFIRMED and d.command.value == -30.0
    f = book2.get("flying")
    assert f.state == CommandState.UNKNOWN and f.history[-1].reason == RESTART_REASON
    assert isinstance(f.command.value, int) and book2.get("flag").command.value is True
    assert SET not in book2.desired  # the unknown one no longer waits for read-back
    # a repeated id is known after the restart: not accepted (executed) again
    _, new = book2.accept(flying)
    assert new is False
    store2.flush()
    assert store2.verify() is None
    assert [r.state for r in store2.rows() if r.cmd_id == "flying"] == [
        "accepted",
        "sent",
        "unknown",
    ]


def test_audit_chain_names_the_first_altered_record(backend) -> None:
    _, prefix = backend
    book, store = _book_and_store(backend)
    for i in range(5):
        book.accept(Command(SET, float(i), "rest", id=f"c{i}"))
        book.transition(f"c{i}", CommandState.SENT)
    store.flush()
    assert store.verify() is None
    with store.engine.begin() as c:
        c.execute(text(f"UPDATE {prefix}command_log SET reason = 'forged' WHERE seq = 4"))
    assert store.verify() == 4
    with store.engine.begin() as c:
        c.execute(text(f"UPDATE {prefix}command_log SET reason = '' WHERE seq = 4"))
        c.execute(text(f"DELETE FROM {prefix}command_log WHERE seq = 7"))
    assert store.verify() == 7


def test_failed_write_keeps_transitions_for_the_next_attempt(tmp_path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/c.db")
    store = CommandStore(engine).open()
    book = CommandBook()
    store.attach(book)
    book.accept(Command(SET, 1.0, "rest", id="a"))
    with engine.begin() as c:
        c.execute(text("DROP TABLE command_log"))
    with pytest.raises(Exception, match="cannot record"):
        store.flush()
    assert store.pending == 1
    store.metadata.create_all(engine)
    with engine.begin() as c:  # the failed transaction took the command row with it
        assert c.execute(text("SELECT count(*) FROM commands")).scalar() == 0
    assert store.flush() == 1
    assert store.verify() is None
    engine.dispose()
