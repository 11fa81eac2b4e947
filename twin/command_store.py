"""Commands and every transition of their lifecycle, kept in the database beside history.

The `command_log` table is append-only and hash-chained: each row's hash is SM3 over the previous
row's hash and the row's own fields, so `verify()` names the first record that was altered,
removed or inserted. After a restart, commands are restored from here: a command that was still
in flight when the gateway stopped becomes UNKNOWN (its outcome at the device cannot be known),
and known ids stay known, so a repeated id is never executed twice.

With a FieldSealer (site `at_rest.encrypt_business_data`), what a command asked for and who
asked (`value`, `origin`) are stored SM4-GCM sealed, each bound to its command id; the chained
log holds only ids, states, times and reasons, and is verified without the key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from model.command import TERMINAL_STATES, Command, CommandState
from twin.commands import CommandBook, CommandRecord, Transition
from twin.errors import HistoryError
from twin.sealing import FieldSealer

__all__ = ["CommandStore", "LogRow"]

GENESIS = "0" * 64
RESTART_REASON = "gateway restarted while the command was in progress"


@dataclass(frozen=True, slots=True)
class LogRow:
    """One audit record: a command transition with its place in the hash chain."""

    seq: int
    cmd_id: str
    state: str
    ts: float
    reason: str
    prev_hash: str
    hash: str


def _digest(seq: int, cmd_id: str, state: str, ts: float, reason: str, prev: str) -> str:
    h = hashes.Hash(hashes.SM3())
    h.update(json.dumps([seq, cmd_id, state, repr(ts), reason, prev]).encode())
    return h.finalize().hex()


class CommandStore:
    """Persists commands and their transitions through SQLAlchemy Core (any URL history uses)."""

    def __init__(
        self, engine: Engine, *, table_prefix: str = "", sealer: FieldSealer | None = None
    ) -> None:
        self.engine = engine
        self.sealer = sealer
        md = MetaData()
        self.commands = Table(
            f"{table_prefix}commands", md,
            Column("id", String(64), primary_key=True),
            Column("target", Text, nullable=False),
            Column("value", Text, nullable=False),  # JSON: keeps bool / int / float apart
            Column("origin", Text, nullable=False),  # Text: a sealed origin is ~90 characters
            Column("deadline", Float, nullable=False),
            Column("created", Float, nullable=False),
            Column("sbo", Boolean, nullable=False),
        )  # fmt: skip
        self.log = Table(
            f"{table_prefix}command_log", md,
            Column("seq", Integer, primary_key=True, autoincrement=False),
            Column("cmd_id", String(64), nullable=False, index=True),
            Column("state", String(16), nullable=False),
            Column("ts", Float, nullable=False),
            Column("reason", Text, nullable=False),
            Column("prev_hash", String(64), nullable=False),
            Column("hash", String(64), nullable=False),
        )  # fmt: skip
        self.metadata = md
        self._pending_cmds: list[Command] = []
        self._pending_log: list[tuple[str, Transition]] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._last_hash = GENESIS

    def open(self) -> CommandStore:
        """Create tables if missing and find the end of the chain."""
        try:
            self.metadata.create_all(self.engine)
            with self.engine.connect() as conn:
                row = conn.execute(
                    select(self.log.c.seq, self.log.c.hash).order_by(self.log.c.seq.desc()).limit(1)
                ).first()
        except SQLAlchemyError as e:
            raise HistoryError(f"cannot open the command store: {e}") from e
        if row is not None:
            self._seq, self._last_hash = int(row[0]), str(row[1])
        return self

    # --- recording (loop thread) -------------------------------------------------------------

    def attach(self, book: CommandBook) -> None:
        """Record every new command and transition of book from now on."""
        book.add_listener(self._on_transition)

    def _on_transition(self, rec: CommandRecord, t: Transition) -> None:
        with self._lock:
            if len(rec.history) == 1:
                self._pending_cmds.append(rec.command)
            self._pending_log.append((rec.command.id, t))

    @property
    def pending(self) -> int:
        """Transitions recorded but not yet written."""
        return len(self._pending_log)

    def flush(self) -> int:
        """Write what is pending in one transaction (call from a worker thread); rows written."""
        with self._lock:
            cmds, self._pending_cmds = self._pending_cmds, []
            log, self._pending_log = self._pending_log, []
        if not log and not cmds:
            return 0
        seq, prev = self._seq, self._last_hash
        rows = []
        for cmd_id, t in log:
            seq += 1
            h = _digest(seq, cmd_id, t.state.value, t.ts, t.reason, prev)
            rows.append({"seq": seq, "cmd_id": cmd_id, "state": t.state.value, "ts": t.ts,
                         "reason": t.reason, "prev_hash": prev, "hash": h})  # fmt: skip
            prev = h
        try:
            with self.engine.begin() as conn:
                if cmds:
                    conn.execute(insert(self.commands), [self._cmd_row(c) for c in cmds])
                if rows:
                    conn.execute(insert(self.log), rows)
        except SQLAlchemyError as e:
            with self._lock:  # keep them, in order, for the next attempt
                self._pending_cmds[:0] = cmds
                self._pending_log[:0] = log
            raise HistoryError(f"cannot record command transitions: {e}") from e
        self._seq, self._last_hash = seq, prev
        return len(rows)

    def _cmd_row(self, c: Command) -> dict[str, object]:
        value, origin = json.dumps(c.value), c.origin
        if self.sealer is not None:
            value = self.sealer.seal(value, f"commands.value:{c.id}")
            origin = self.sealer.seal(origin, f"commands.origin:{c.id}")
        return {"id": c.id, "target": c.target, "value": value, "origin": origin,
                "deadline": c.deadline, "created": c.created, "sbo": c.select_before_operate}  # fmt: skip

    def _open(self, cmd_id: str, value: str, origin: str) -> tuple[str, str]:
        if self.sealer is None:
            if value.startswith("enc:"):  # written with sealing on, read without it
                raise HistoryError(
                    f"command {cmd_id} is stored sealed: turn on at_rest.encrypt_business_data "
                    "(with the master key it was written under) to read it"
                )
            return value, origin
        try:
            return (
                self.sealer.open(value, f"commands.value:{cmd_id}"),
                self.sealer.open(origin, f"commands.origin:{cmd_id}"),
            )
        except Exception as e:  # the sealer's own error type lives in security/
            raise HistoryError(f"cannot open stored command {cmd_id}: {e}") from e

    # --- reading -----------------------------------------------------------------------------

    def restore(self, book: CommandBook, limit: int = 10_000) -> list[CommandRecord]:
        """Load the latest `limit` commands into book; in-flight ones become UNKNOWN. Returns them."""
        with self.engine.connect() as conn:
            cmd_rows = conn.execute(
                select(self.commands).order_by(self.commands.c.created.desc()).limit(limit)
            ).all()
            ids = [r.id for r in cmd_rows]
            trans: dict[str, list[Transition]] = {i: [] for i in ids}
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                for r in conn.execute(
                    select(self.log).where(self.log.c.cmd_id.in_(chunk)).order_by(self.log.c.seq)
                ):
                    trans[r.cmd_id].append(Transition(CommandState(r.state), r.ts, r.reason))
        records = []
        for r in reversed(cmd_rows):
            value, origin = self._open(r.id, r.value, r.origin)
            cmd = Command(
                target=r.target, value=json.loads(value), origin=origin, id=r.id,
                deadline=r.deadline, created=r.created, select_before_operate=bool(r.sbo),
            )  # fmt: skip
            rec = CommandRecord(cmd, trans[r.id])
            if not rec.history:
                continue
            book.restore(rec)
            records.append(rec)
        for rec in records:
            if rec.state not in TERMINAL_STATES:
                book.transition(rec.command.id, CommandState.UNKNOWN, RESTART_REASON)
        return records

    def rows(self, after: int = 0, limit: int = 1000) -> list[LogRow]:
        """Audit records with seq > after, oldest first."""
        with self.engine.connect() as conn:
            res = conn.execute(
                select(self.log).where(self.log.c.seq > after).order_by(self.log.c.seq).limit(limit)
            )
            return [
                LogRow(r.seq, r.cmd_id, r.state, r.ts, r.reason, r.prev_hash, r.hash) for r in res
            ]

    def verify(self) -> int | None:
        """Check the hash chain; None if intact, else the seq of the first broken record."""
        prev, expect = GENESIS, 1
        after = 0
        while True:
            batch = self.rows(after, 5000)
            if not batch:
                return None
            for r in batch:
                if r.seq != expect or r.prev_hash != prev:
                    return expect if r.seq != expect else r.seq
                if _digest(r.seq, r.cmd_id, r.state, r.ts, r.reason, prev) != r.hash:
                    return r.seq
                prev, expect = r.hash, expect + 1
            after = batch[-1].seq


def chain(rows: Sequence[LogRow]) -> bool:
    """True if rows (consecutive, from the first) form an intact chain."""
    prev = GENESIS
    for r in rows:
        if r.prev_hash != prev or _digest(r.seq, r.cmd_id, r.state, r.ts, r.reason, prev) != r.hash:
            return False
        prev = r.hash
    return True
