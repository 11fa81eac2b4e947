"""The edge terminal's bounded on-disk sample buffer (SQLite, WAL), command evidence and reports.

Theory of operation: every sample the edge acquires is appended here before it is sent up; it
gets the next sequence number of the buffer's *stream* (a random id made when the file is
created; SQLite AUTOINCREMENT never reuses a number, even after every row was deleted). Rows
leave only two ways: the platform acknowledged them (`ack(seq)` deletes seq and everything
older), or the buffer is full (`max_rows`): then the oldest rows are deleted to make room, and
counted in `dropped`, which is kept in the file with the rows in the same transaction. Since
rows only ever leave from the oldest end, the buffer always holds one contiguous run of
sequence numbers, and the platform sees a drop as a gap.

Each append, ack and drop is one transaction; with `durable` (the default) each commit is
fsynced (synchronous=FULL), so what was appended survives a power cut, not only a crash of the
process. The methods block: call them from a worker thread (`asyncio.to_thread`) on the event
loop. One lock serialises them.

The same file keeps the edge's command evidence: every signed command that reached the edge,
accepted or refused, with its full SignedCommand encoding (command, inclusion proof, signed
batch root) so that it can be proven later who ordered it, and the ids of accepted commands, so
that a command id is never accepted twice, across restarts too.

And the command reports waiting to go up (`queue_reports`): a FIFO like the samples' (numbered
by the table's AUTOINCREMENT key, which never goes back, not even after every row was deleted;
removed through an id once the platform acknowledged them; bounded by `max_reports`, the oldest
dropped and counted in `reports_dropped`, kept in the file). In the same transaction each
queued report sets its command's *last reported state* (`command_reported`): once a report is
queued here it goes up after any restart, so that state is the platform's to know.
`unreported()` lists the accepted commands, within the evidence window, whose last reported
state is not final: those an edge restarted mid-command still owes a report. At open, markers
of commands past their deadline (or with no evidence) are deleted: nothing looks at them again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.edge.messages import CommandReport
from gateway.errors import GatewayError
from model.command import TERMINAL_STATES, CommandState
from model.sample import Sample, Value

__all__ = ["EdgeBufferError", "EvidenceRow", "SampleBuffer"]

log = logging.getLogger(__name__)

_FLOAT, _INT, _BOOL = 0, 1, 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS points (id INTEGER PRIMARY KEY, ref TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    point_id INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    value,
    ts REAL NOT NULL,
    quality INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS command_evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cmd_id TEXT NOT NULL,
    received REAL NOT NULL,
    deadline REAL NOT NULL,
    verdict TEXT NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    signed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_command_evidence_cmd ON command_evidence (cmd_id);
CREATE TABLE IF NOT EXISTS command_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cmd_id TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    code TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS command_reported (cmd_id TEXT PRIMARY KEY, state TEXT NOT NULL);
"""


class EdgeBufferError(GatewayError):
    """The buffer file cannot be opened, read or written (the message names the file)."""


EvidenceRow = dict[str, Any]


class SampleBuffer:
    """A bounded, durable FIFO of samples waiting for the platform's acknowledgement."""

    def __init__(
        self,
        path: str | Path,
        max_rows: int = 1_000_000,
        *,
        durable: bool = True,
        max_reports: int = 10_000,
    ) -> None:
        if max_rows < 1 or max_reports < 1:
            raise ValueError("max_rows and max_reports must be >= 1")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_reports = max_reports
        self.durable = durable
        self.stream = ""
        self.dropped = 0
        """Samples dropped because the buffer was full, over the life of the file."""
        self.appended = 0
        self.acked = 0
        self.reports_dropped = 0
        """Command reports dropped because the report queue was full, over the life of the file."""
        self._reports = 0
        self._report_last = 0
        self._rows = 0
        self._first = 0
        self._last = 0
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._refs: dict[int, str] = {}
        self._dropping = False

    # --- lifecycle ---------------------------------------------------------------------------

    def open(self) -> SampleBuffer:
        """Open or create the file; load the stream id, counters and point table."""
        if self._conn is not None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
        except (OSError, sqlite3.Error) as e:
            raise EdgeBufferError(f"cannot open the edge buffer {self.path}: {e}") from e
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            conn.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            conn.executescript(_SCHEMA)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if "stream" not in meta:
                meta["stream"] = os.urandom(16).hex()
                conn.execute("INSERT INTO meta VALUES ('stream', ?)", (meta["stream"],))
            self.stream = meta["stream"]
            self.dropped = int(meta.get("dropped", 0))
            self.reports_dropped = int(meta.get("reports_dropped", 0))
            self._reports = int(conn.execute("SELECT count(*) FROM command_reports").fetchone()[0])
            row = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name='command_reports'"
            ).fetchone()
            self._report_last = int(row[0]) if row else 0
            # A command past its deadline is never looked at again (see unreported()).
            conn.execute(
                "DELETE FROM command_reported WHERE cmd_id NOT IN "
                "(SELECT cmd_id FROM command_evidence WHERE deadline > ?)",
                (time.time(),),
            )
            self._ids = {r: i for i, r in conn.execute("SELECT id, ref FROM points")}
            self._refs = {i: r for r, i in self._ids.items()}
            n, lo, hi = conn.execute("SELECT count(*), min(seq), max(seq) FROM samples").fetchone()
            self._rows, self._first, self._last = int(n), int(lo or 0), int(hi or 0)
            if not n:
                row = conn.execute(
                    "SELECT seq FROM sqlite_sequence WHERE name='samples'"
                ).fetchone()
                self._last = int(row[0]) if row else 0
        except (sqlite3.Error, ValueError) as e:
            conn.close()
            raise EdgeBufferError(f"the edge buffer {self.path} is unreadable: {e}") from e
        self._conn = conn
        return self

    def close(self) -> None:
        """Close the file; idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> SampleBuffer:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise EdgeBufferError(f"the edge buffer {self.path} is not open")
        return self._conn

    def __len__(self) -> int:
        return self._rows

    @property
    def first_seq(self) -> int:
        """Sequence number of the oldest buffered sample (0 when empty)."""
        return self._first if self._rows else 0

    @property
    def last_seq(self) -> int:
        """The last sequence number given out (it may have been acknowledged since)."""
        return self._last

    @property
    def full(self) -> bool:
        """True when the next append drops the oldest samples."""
        return self._rows >= self.max_rows

    # --- samples -----------------------------------------------------------------------------

    def _point_id(self, conn: sqlite3.Connection, ref: str) -> int:
        i = self._ids.get(ref)
        if i is None:
            cur = conn.execute("INSERT INTO points (ref) VALUES (?)", (ref,))
            i = int(cur.lastrowid or 0)
            self._ids[ref] = i
            self._refs[i] = ref
        return i

    def append(self, samples: Sequence[Sample]) -> int:
        """Append samples in order, in one transaction; the number of old samples dropped."""
        if not samples:
            return 0
        with self._lock:
            conn = self._c()
            ids_before = dict(self._ids)
            try:
                conn.execute("BEGIN IMMEDIATE")
                rows = []
                for s in samples:
                    v = s[1]
                    kind = _BOOL if isinstance(v, bool) else _INT if isinstance(v, int) else _FLOAT
                    rows.append((self._point_id(conn, s[0]), kind, v, float(s[2]), int(s[3])))
                conn.executemany(
                    "INSERT INTO samples (point_id, kind, value, ts, quality) VALUES (?,?,?,?,?)",
                    rows,
                )
                last = int(conn.execute("SELECT max(seq) FROM samples").fetchone()[0])
                total = self._rows + len(rows)
                excess = max(0, total - self.max_rows)
                if excess:  # rows are one contiguous run of seq numbers
                    _drop_oldest(conn, "samples", "seq", excess, "dropped", self.dropped + excess)
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                self._ids = ids_before
                self._refs = {i: r for r, i in ids_before.items()}
                raise EdgeBufferError(
                    f"cannot append {len(samples)} samples to the edge buffer {self.path}: {e}"
                ) from e
            if not self._rows:
                self._first = last - len(rows) + 1
            self._rows = total - excess
            self._first += excess
            self._last = last
            self.appended += len(rows)
            if excess:
                self.dropped += excess
                if not self._dropping:
                    log.warning(
                        "edge buffer %s is full (%d samples): dropping the oldest",
                        self.path, self.max_rows,
                    )  # fmt: skip
                self._dropping = True
            return excess

    def _run(self, what: str, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """One statement (the caller holds the lock); EdgeBufferError saying what failed."""
        try:
            return self._c().execute(sql, params)
        except sqlite3.Error as e:
            raise EdgeBufferError(f"cannot {what} in the edge buffer {self.path}: {e}") from e

    def _fetch(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of one query (the caller holds the lock): rows can fail while fetched too."""
        try:
            return self._run(what, sql, params).fetchall()
        except sqlite3.Error as e:
            raise EdgeBufferError(f"cannot {what} in the edge buffer {self.path}: {e}") from e

    def read(self, after: int = 0, limit: int = 500) -> list[tuple[int, Sample]]:
        """Up to `limit` buffered samples with seq > after, oldest first, as (seq, sample)."""
        with self._lock:
            rows = self._fetch(
                "read samples",
                "SELECT seq, point_id, kind, value, ts, quality FROM samples "
                "WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, limit),
            )
            refs = self._refs
        out = []
        for seq, pid, kind, value, ts, q in rows:
            v: Value
            if kind == _BOOL:
                v = bool(value)
            elif kind == _INT:
                v = int(value)
            else:
                v = math.nan if value is None else float(value)  # SQLite stores NaN as NULL
            out.append((int(seq), Sample(refs[pid], v, ts, q, "")))
        return out

    def ack(self, through: int) -> int:
        """Delete every sample with seq <= through (the platform holds them); rows deleted."""
        with self._lock:
            if not self._rows or through < self._first:
                return 0
            n = self._run("trim samples", "DELETE FROM samples WHERE seq <= ?", (through,)).rowcount
            self._rows -= n
            self._first = through + 1
            self.acked += n
            if self._dropping and not self.full:
                self._dropping = False
                log.info("edge buffer %s has room again", self.path)
            return int(n)

    def new_stream(self) -> str:
        """Start a new stream id (its numbering is the platform's business from zero again)."""
        with self._lock:
            stream = os.urandom(16).hex()
            self._run("renew the stream", _SET_META, ("stream", stream))
            self.stream = stream
            return stream

    def stats(self) -> dict[str, Any]:
        """Rows held, capacity, drops (say so when full), sequence range, queued reports."""
        return {
            "path": str(self.path),
            "stream": self.stream,
            "rows": self._rows,
            "max_rows": self.max_rows,
            "full": self.full,
            "dropped": self.dropped,
            "appended": self.appended,
            "acked": self.acked,
            "first_seq": self.first_seq,
            "last_seq": self._last,
            "reports_queued": self._reports,
            "reports_dropped": self.reports_dropped,
        }

    # --- command evidence --------------------------------------------------------------------

    def record_command(
        self,
        cmd_id: str,
        deadline: float,
        signed: bytes,
        verdict: str,
        code: str = "",
        reason: str = "",
        received: float | None = None,
    ) -> None:
        """Keep a signed command that reached the edge: verdict 'accepted' or 'refused'."""
        with self._lock:
            self._run(
                f"record command {cmd_id}",
                "INSERT INTO command_evidence "
                "(cmd_id, received, deadline, verdict, code, reason, signed) "
                "VALUES (?,?,?,?,?,?,?)",
                (cmd_id, time.time() if received is None else received, deadline, verdict,
                 code, reason, signed),
            )  # fmt: skip

    def accepted_ids(self, since_deadline: float = 0.0) -> set[str]:
        """Ids of accepted commands whose deadline is after `since_deadline`."""
        with self._lock:
            conn = self._c()
            rows = conn.execute(
                "SELECT cmd_id FROM command_evidence WHERE verdict = 'accepted' AND deadline > ?",
                (since_deadline,),
            ).fetchall()
        return {r[0] for r in rows}

    def evidence(self, cmd_id: str | None = None) -> list[EvidenceRow]:
        """Recorded commands (of one id, or all), oldest first."""
        with self._lock:
            conn = self._c()
            q = "SELECT cmd_id, received, deadline, verdict, code, reason, signed FROM command_evidence"
            args: tuple[Any, ...] = ()
            if cmd_id is not None:
                q += " WHERE cmd_id = ?"
                args = (cmd_id,)
            rows = conn.execute(q + " ORDER BY id", args).fetchall()
        keys = ("cmd_id", "received", "deadline", "verdict", "code", "reason", "signed")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # --- command reports ---------------------------------------------------------------------

    @property
    def reports_queued(self) -> int:
        """Command reports waiting for the platform's acknowledgement."""
        return self._reports

    @property
    def last_report_id(self) -> int:
        """The last report id given out (0: none); ids never go back for the life of the file."""
        return self._report_last

    def queue_reports(self, reports: Sequence[CommandReport]) -> int:
        """Queue reports in order, in one transaction; the number of old reports dropped."""
        if not reports:
            return 0
        with self._lock:
            conn = self._c()
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "INSERT INTO command_reports (cmd_id, state, reason, code, ts) "
                    "VALUES (?,?,?,?,?)",
                    [(r.id, r.state.value, r.reason, r.code, r.ts) for r in reports],
                )
                # In order: a command's latest report in this batch is the one that stays.
                conn.executemany(
                    "INSERT INTO command_reported VALUES (?, ?) "
                    "ON CONFLICT (cmd_id) DO UPDATE SET state = excluded.state",
                    [(r.id, r.state.value) for r in reports],
                )
                last = int(conn.execute("SELECT max(id) FROM command_reports").fetchone()[0])
                excess = max(0, self._reports + len(reports) - self.max_reports)
                if excess:
                    _drop_oldest(
                        conn, "command_reports", "id", excess, "reports_dropped",
                        self.reports_dropped + excess,
                    )  # fmt: skip
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise EdgeBufferError(
                    f"cannot queue {len(reports)} command reports in the edge buffer "
                    f"{self.path}: {e}"
                ) from e
            self._reports += len(reports) - excess
            self._report_last = last
            if excess:
                self.reports_dropped += excess
                log.warning(
                    "edge buffer %s: report queue full (%d): %d oldest command reports dropped",
                    self.path, self.max_reports, excess,
                )  # fmt: skip
            return excess

    def queued_reports(self, limit: int = 100, after: int = 0) -> list[tuple[int, CommandReport]]:
        """Up to `limit` queued reports with id > after, oldest first, as (id, report)."""
        with self._lock:
            rows = self._fetch(
                "read command reports",
                "SELECT id, cmd_id, state, reason, code, ts FROM command_reports "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            )
        return [
            (int(i), CommandReport(cid, CommandState(st), reason, code, float(ts), int(i)))
            for i, cid, st, reason, code, ts in rows
        ]

    def remove_reports(self, through: int) -> int:
        """Delete queued reports with id <= through (the platform handled them); rows deleted."""
        with self._lock:
            n = self._run(
                "remove command reports", "DELETE FROM command_reports WHERE id <= ?", (through,)
            ).rowcount
            self._reports -= n
            return int(n)

    def reported_state(self, cmd_id: str) -> CommandState | None:
        """The last state queued for the platform about a command (None: nothing yet)."""
        with self._lock:
            row = (
                self._c()
                .execute("SELECT state FROM command_reported WHERE cmd_id = ?", (cmd_id,))
                .fetchone()
            )
        return None if row is None else CommandState(row[0])

    def unreported(self, since_deadline: float = 0.0) -> list[tuple[str, CommandState | None]]:
        """Accepted commands (deadline after since_deadline) whose final state was not reported.

        Each as (id, last state reported or None), in the order they were accepted.
        """
        with self._lock:
            rows = self._fetch(
                "read accepted commands",
                "SELECT e.cmd_id, r.state FROM command_evidence e "
                "LEFT JOIN command_reported r ON r.cmd_id = e.cmd_id "
                "WHERE e.verdict = 'accepted' AND e.deadline > ? ORDER BY e.id",
                (since_deadline,),
            )
        out: dict[str, CommandState | None] = {}
        for cid, st in rows:
            state = None if st is None else CommandState(st)
            if state not in TERMINAL_STATES:
                out.setdefault(cid, state)
        return list(out.items())


_SET_META = "INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


def _drop_oldest(
    conn: sqlite3.Connection, table: str, key: str, n: int, counter: str, total: int
) -> None:
    """Delete the n oldest rows of a bounded queue table; keep its running drop count in meta."""
    # table and key are this module's own names, never input.
    conn.execute(
        f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} ORDER BY {key} LIMIT ?)",
        (n,),
    )
    conn.execute(_SET_META, (counter, str(total)))
