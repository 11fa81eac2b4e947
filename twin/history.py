"""History: a SQLAlchemy Core store of samples (SQLite WAL or PostgreSQL) and its batch writer.

Schema (names carry an optional `table_prefix`)::

    points  (id INTEGER PRIMARY KEY, ref TEXT UNIQUE NOT NULL)
    samples (point_id INTEGER NOT NULL, ts BIGINT NOT NULL,   -- UTC microseconds
             value DOUBLE, quality INTEGER NOT NULL)
    INDEX ix_<prefix>samples_point_ts ON samples (point_id, ts)   -- not unique

Why this index, and why not a key: every read is "one point over a time range", so a
(point_id, ts) index is what makes raw() and resample() cost O(rows returned) rather than a scan
of the whole table. It is also most of the write cost: on SQLite, WAL, synchronous=NORMAL,
batches of 10k, 1,000 points, bare sqlite3 executemany of 1M rows went from 1.4M rows/s without
it to 0.23M rows/s with it (0.44M rows/s for the first 200k rows: it falls as the table grows).
We keep it, and the benchmark measures our write path against a bare sqlite3 executemany into
the same indexed schema, so the ratio shows our overhead, not the index's. It is not a primary
key (nor a WITHOUT ROWID table) because (point_id, ts) is not unique: the twin legitimately
publishes the same point and ts twice, e.g. when it marks a value not topical it re-publishes the
last value and ts with a new quality, and history keeps both rows rather than upserting. There is
no foreign key from samples to points: PostgreSQL would check it on every inserted row. If the
index ever becomes the bottleneck the next step is time-partitioned tables (an index per closed
partition), not dropping the index.

Write path: one transaction per batch; new point refs are registered inside it (INSERT ... ON
CONFLICT DO NOTHING, then SELECT their ids) and the samples go in through the DBAPI's own
executemany with plain tuples via `Connection.exec_driver_sql`, placeholders chosen from the
dialect's paramstyle, which avoids SQLAlchemy's per-row parameter processing (SQLite: ~1.1M vs
~0.28M rows/s for Core insert() with dicts, DEPENDENCIES.md). On PostgreSQL with psycopg 3 the
samples go in with COPY on the same connection and transaction instead (measured ~0.55M vs
~0.14M rows/s for executemany). Dialects with a named paramstyle fall back to Core insert() with
dicts. Either the whole batch is committed or nothing is; the in-memory point-id cache is
updated only after the commit.

Values are stored as doubles (bool as 0/1, int as float); reads give floats back (SQLite stores
NaN as NULL, which raw() gives back as NaN and resample() skips). Timestamps are stored as
integer UTC microseconds and come back exact to the microsecond. The store's methods are
blocking: call them from a worker thread (`asyncio.to_thread`) when on the event loop, as
HistoryWriter does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    and_,
    create_engine,
    event,
    func,
    insert,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from model.errors import UnknownPointError
from model.sample import Sample
from twin.errors import HistoryError
from twin.subscription import Subscription

__all__ = ["AGGREGATES", "DEFAULT_URL", "INTERVALS", "HistoryStore", "HistoryWriter"]

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///var/history.db"

#: resample() bucket sizes, in seconds.
INTERVALS: dict[str, int] = {
    "5s": 5,
    "1min": 60,
    "5min": 300,
    "10min": 600,
    "15min": 900,
    "20min": 1200,
    "30min": 1800,
    "60min": 3600,
}
AGGREGATES = ("mean", "min", "max", "last")

_US = 1_000_000
_INT32 = 2**31


def _us(ts: float) -> int:
    """Epoch seconds to integer microseconds, rounded to the nearest."""
    return round(ts * _US)


def _trunc_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, as SQLite and PostgreSQL do for integers."""
    return -(-a // b) if a < 0 else a // b


def _placeholders(paramstyle: str, n: int) -> str | None:
    """DBAPI placeholders for n positional parameters; None for named styles."""
    if paramstyle == "qmark":
        return ", ".join(["?"] * n)
    if paramstyle in ("format", "pyformat"):
        return ", ".join(["%s"] * n)
    if paramstyle == "numeric":
        return ", ".join(f":{i + 1}" for i in range(n))
    if paramstyle == "numeric_dollar":
        return ", ".join(f"${i + 1}" for i in range(n))
    return None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    try:
        cur.execute("PRAGMA journal_mode=WAL")
        cur.fetchall()
        cur.execute("PRAGMA synchronous=NORMAL")
    finally:
        cur.close()


class HistoryStore:
    """Samples of points over time in any SQLAlchemy database (SQLite WAL by default)."""

    def __init__(self, url: str = DEFAULT_URL, *, table_prefix: str = "") -> None:
        if table_prefix and not table_prefix.replace("_", "").isalnum():
            raise HistoryError(
                f"table_prefix {table_prefix!r}: only letters, digits and '_' are allowed"
            )
        self.url = url
        self.table_prefix = table_prefix
        self.metadata = MetaData()
        self.points_table = Table(
            f"{table_prefix}points",
            self.metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("ref", Text, nullable=False, unique=True),
        )
        self.samples_table = Table(
            f"{table_prefix}samples",
            self.metadata,
            Column("point_id", Integer, nullable=False),
            Column("ts", BigInteger, nullable=False),
            Column("value", Double),
            Column("quality", Integer, nullable=False),
            Index(f"ix_{table_prefix}samples_point_ts", "point_id", "ts"),
        )
        self._engine: Engine | None = None
        self._ids: dict[str, int] = {}
        self._insert_sql = ""
        self._copy_sql = ""
        self._mark = ""
        self._points_insert_sql = ""
        self._points_select_sql = ""
        self._driver_many = False
        self._dbapi_error: type[Exception] = SQLAlchemyError
        self._lock: threading.Lock | contextlib.nullcontext[None] = contextlib.nullcontext()

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine; HistoryError when the store is not open."""
        if self._engine is None:
            raise HistoryError(f"history store {self._safe_url()} is not open")
        return self._engine

    @property
    def is_open(self) -> bool:
        """True between open() and close()."""
        return self._engine is not None

    def _safe_url(self) -> str:
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<bad url>"

    def open(self) -> HistoryStore:
        """Connect, create the tables if missing and load the known points; returns self."""
        if self._engine is not None:
            return self
        try:
            url = make_url(self.url)
        except Exception as e:
            raise HistoryError(f"history url {self.url!r} is not a database URL: {e}") from e
        kwargs: dict[str, Any] = {}
        is_sqlite = url.get_backend_name() == "sqlite"
        if is_sqlite:
            db = url.database or ""
            memory = db in ("", ":memory:") or url.query.get("mode") == "memory"
            if memory:
                # One shared connection, else each thread would see its own empty database.
                kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
                self._lock = threading.Lock()
            elif not db.startswith("file:"):
                Path(db).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True  # a server restart costs no failed batch
        try:
            engine = create_engine(url, **kwargs)
            if is_sqlite:
                event.listen(engine, "connect", _sqlite_pragmas)
            with self._lock:
                self.metadata.create_all(engine)
                with engine.connect() as conn:
                    rows = conn.execute(select(self.points_table.c.ref, self.points_table.c.id))
                    self._ids = {r: i for r, i in rows}
        except SQLAlchemyError as e:
            raise HistoryError(f"cannot open history store {self._safe_url()}: {e}") from e
        t = self.samples_table
        dialect = engine.dialect
        ph = _placeholders(dialect.paramstyle, 4)
        self._driver_many = ph is not None
        q = dialect.identifier_preparer
        cols = ", ".join(q.quote(c) for c in ("point_id", "ts", "value", "quality"))
        if ph is not None:
            self._insert_sql = f"INSERT INTO {q.format_table(t)} ({cols}) VALUES ({ph})"
        self._mark = ""
        if dialect.name in ("sqlite", "postgresql") and dialect.paramstyle in (
            "qmark",
            "format",
            "pyformat",
        ):
            # INSERT ... ON CONFLICT (col) DO NOTHING: the same text on SQLite >= 3.24 and PG.
            self._mark = "?" if dialect.paramstyle == "qmark" else "%s"
            pt, ref, pid = q.format_table(self.points_table), q.quote("ref"), q.quote("id")
            self._points_insert_sql = (
                f"INSERT INTO {pt} ({ref}) VALUES ({self._mark}) ON CONFLICT ({ref}) DO NOTHING"
            )
            self._points_select_sql = f"SELECT {ref}, {pid} FROM {pt} WHERE {ref} IN"
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            self._copy_sql = f"COPY {q.format_table(t)} ({cols}) FROM STDIN"
        self._dbapi_error = getattr(dialect.dbapi, "Error", SQLAlchemyError)
        self._engine = engine
        return self

    def close(self) -> None:
        """Release every connection; the store can be opened again."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> HistoryStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing -----------------------------------------------------------------------------

    def _register(self, conn: Connection, refs: set[str]) -> dict[str, int]:
        """Ids of refs not in the cache, inserting the missing ones (in conn's transaction)."""
        p = self.points_table
        ordered = sorted(refs)
        if self._mark:
            # Driver level, like the samples: SQLAlchemy's expanding IN costs ~3 ms per 1,000 refs.
            conn.exec_driver_sql(self._points_insert_sql, [(r,) for r in ordered])
            out: dict[str, int] = {}
            for k in range(0, len(ordered), 500):
                chunk = ordered[k : k + 500]
                sql = f"{self._points_select_sql} ({', '.join([self._mark] * len(chunk))})"
                out.update((r, i) for r, i in conn.exec_driver_sql(sql, tuple(chunk)))
            return out
        name = conn.dialect.name
        values = [{"ref": r} for r in ordered]
        if name == "sqlite":
            conn.execute(sqlite_insert(p).on_conflict_do_nothing(index_elements=["ref"]), values)
        elif name == "postgresql":
            conn.execute(pg_insert(p).on_conflict_do_nothing(index_elements=["ref"]), values)
        else:
            have = set(conn.execute(select(p.c.ref).where(p.c.ref.in_(ordered))).scalars())
            missing = [v for v in values if v["ref"] not in have]
            if missing:
                conn.execute(insert(p), missing)
        return {r: i for r, i in conn.execute(select(p.c.ref, p.c.id).where(p.c.ref.in_(ordered)))}

    def write(self, samples: Sequence[Sample]) -> int:
        """Insert a batch in one transaction (all or nothing); returns the rows written.

        Samples whose value is None are skipped. HistoryError when the batch cannot be stored.
        """
        engine = self.engine
        ids = self._ids
        fresh: dict[str, int] = {}
        try:
            with self._lock, engine.begin() as conn:
                try:
                    rows = [
                        (ids[s[0]], round(s[2] * 1e6), float(s[1]), s[3])
                        for s in samples
                        if s[1] is not None
                    ]
                except KeyError:
                    fresh = self._register(conn, {s[0] for s in samples if s[0] not in ids})
                    known = {**ids, **fresh}
                    rows = [
                        (known[s[0]], round(s[2] * 1e6), float(s[1]), s[3])
                        for s in samples
                        if s[1] is not None
                    ]
                if not rows:
                    return 0
                if self._copy_sql:
                    # psycopg COPY, in this transaction: ~4x executemany on PostgreSQL.
                    dbc: Any = conn.connection.driver_connection
                    with dbc.cursor() as cur, cur.copy(self._copy_sql) as cp:
                        for r in rows:
                            cp.write_row(r)
                elif self._driver_many:
                    conn.exec_driver_sql(self._insert_sql, rows)
                else:
                    keys = ("point_id", "ts", "value", "quality")
                    conn.execute(
                        insert(self.samples_table), [dict(zip(keys, r, strict=True)) for r in rows]
                    )
        except HistoryError:
            raise
        except (SQLAlchemyError, self._dbapi_error, TypeError, ValueError, OverflowError) as e:
            raise HistoryError(
                f"history write of {len(samples)} samples to {self._safe_url()} failed, "
                f"nothing written: {e}"
            ) from e
        if fresh:
            ids.update(fresh)
        return len(rows)

    # --- reading -----------------------------------------------------------------------------

    def _pid(self, conn: Connection, ref: str) -> int:
        pid = self._ids.get(ref)
        if pid is None:
            # Another process (or another store on the same database) may have added it.
            p = self.points_table
            pid = conn.execute(select(p.c.id).where(p.c.ref == ref)).scalar()
            if pid is None:
                raise UnknownPointError(ref)
            self._ids[ref] = pid
        return pid

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        engine = self.engine
        try:
            with self._lock, engine.connect() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise HistoryError(f"history query on {self._safe_url()} failed: {e}") from e

    def _where(
        self, pid: int, start: float | None, end: float | None, ts: Any = None
    ) -> ColumnElement[bool]:
        if start is not None and end is not None and start > end:
            raise HistoryError(f"start ({start}) is after end ({end})")
        t = self.samples_table
        ts = t.c.ts if ts is None else ts
        cond = t.c.point_id == pid
        if start is not None:
            cond = and_(cond, ts >= _us(start))
        if end is not None:
            cond = and_(cond, ts < _us(end))
        return cond

    def raw(
        self, ref: str, start: float | None = None, end: float | None = None, limit: int = 10000
    ) -> list[Sample]:
        """Stored samples of ref with start <= ts < end (epoch seconds), oldest first."""
        if limit < 0:
            raise HistoryError(f"limit ({limit}) must be >= 0")
        t = self.samples_table
        with self._reading() as conn:
            pid = self._pid(conn, ref)
            q = (
                select(t.c.ts, t.c.value, t.c.quality)
                .where(self._where(pid, start, end))
                .order_by(t.c.ts)
                .limit(limit)
            )
            rows = conn.execute(q).all()
        nan = float("nan")
        return [Sample(ref, nan if v is None else v, ts / _US, q) for ts, v, q in rows]

    def resample(
        self,
        ref: str,
        start: float | None,
        end: float | None,
        interval: str,
        agg: str,
        *,
        max_buckets: int = 100_000,
    ) -> list[tuple[float, float | None, int]]:
        """(bucket start, value, sample count) per interval bucket over [start, end).

        Buckets are aligned on the epoch. Empty buckets between the first and the last (or the
        given start and end) come back as (ts, None, 0). agg 'last' is the value at the latest ts
        in the bucket (the largest of them if several samples share that ts).
        """
        size = INTERVALS.get(interval)
        if size is None:
            raise HistoryError(
                f"interval {interval!r} is not supported; allowed: {', '.join(INTERVALS)}"
            )
        if agg not in AGGREGATES:
            raise HistoryError(f"agg {agg!r} is not supported; allowed: {', '.join(AGGREGATES)}")
        b_us = size * _US
        t = self.samples_table
        with self._reading() as conn:
            pid = self._pid(conn, ref)
            where = self._where(pid, start, end)
            bucket = t.c.ts // literal_column(str(b_us), BigInteger)
            if agg == "last":
                inner = (
                    select(
                        bucket.label("b"),
                        func.max(t.c.ts).label("mts"),
                        func.count().label("n"),
                    )
                    .where(where)
                    .group_by(bucket)
                    .subquery("buckets")
                )
                s2 = t.alias("s2")
                q = (
                    select(inner.c.b, func.max(s2.c.value), inner.c.n)
                    .join_from(inner, s2, and_(s2.c.point_id == pid, s2.c.ts == inner.c.mts))
                    .group_by(inner.c.b, inner.c.n)
                    .order_by(inner.c.b)
                )
            else:
                v = t.c.value
                col = func.avg(v) if agg == "mean" else func.min(v) if agg == "min" else func.max(v)
                q = select(bucket, col, func.count()).where(where).group_by(bucket).order_by(bucket)
            rows = conn.execute(q).all()
        found = {int(b): (None if v is None else float(v), int(n)) for b, v, n in rows}
        if not found and (start is None or end is None):
            return []
        lo = _trunc_div(_us(start), b_us) if start is not None else min(found)
        hi = _trunc_div(_us(end) - 1, b_us) if end is not None else max(found)
        if hi - lo + 1 > max_buckets:
            raise HistoryError(
                f"interval {interval!r} gives {hi - lo + 1} buckets over this range, more than "
                f"{max_buckets}; choose a longer interval or a shorter range"
            )
        empty: tuple[float | None, int] = (None, 0)
        return [(float(b * size), *found.get(b, empty)) for b in range(lo, hi + 1)]

    def points(self) -> list[str]:
        """Every point reference that history knows, sorted."""
        p = self.points_table
        with self._reading() as conn:
            return list(conn.execute(select(p.c.ref).order_by(p.c.ref)).scalars())

    def count(self, ref: str | None = None) -> int:
        """Number of stored samples, of one point or of all."""
        t = self.samples_table
        with self._reading() as conn:
            q = select(func.count()).select_from(t)
            if ref is not None:
                q = q.where(t.c.point_id == self._pid(conn, ref))
            return int(conn.execute(q).scalar_one())


class HistoryWriter:
    """Takes the twin's change sets from a subscription and writes them to a HistoryStore in batches.

    Theory of operation: run() collects the samples of incoming change sets in `pending` and
    writes the oldest batch_size of them in a worker thread when there are batch_size of them or
    the oldest has waited flush_interval_s. A failed write keeps its batch at the head of
    pending and is retried after a back-off (retry_interval_s doubling up to max_retry_s) while
    collection goes on; beyond max_pending the oldest samples are dropped and counted. stop()
    makes run() take what is still queued, flush everything (one attempt per batch) and return.
    """

    def __init__(
        self,
        sub: Subscription,
        store: HistoryStore,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        max_pending: int = 1_000_000,
        retry_interval_s: float = 1.0,
        max_retry_s: float = 30.0,
    ) -> None:
        if batch_size < 1 or max_pending < batch_size or flush_interval_s <= 0:
            raise ValueError(
                "need batch_size >= 1, max_pending >= batch_size, flush_interval_s > 0"
            )
        self.sub = sub
        self.store = store
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.retry_interval_s = retry_interval_s
        self.max_retry_s = max_retry_s
        self.rows_written = 0
        self.batches = 0
        self.write_errors = 0
        self.last_error: str | None = None
        self.dropped = 0  # samples dropped because pending was full or the final flush failed
        self.skipped = 0  # samples with no value, or nothing a database can store
        self.last_seq = 0
        self._pending: list[Sample] = []
        self._first_at = 0.0
        self._retry_at = 0.0
        self._backoff = retry_interval_s
        self._stop = asyncio.Event()
        self._running = False
        self._done = asyncio.Event()

    @property
    def pending(self) -> int:
        """Samples waiting to be written."""
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        """Counters for health and the API."""
        return {
            "rows_written": self.rows_written,
            "batches": self.batches,
            "write_errors": self.write_errors,
            "last_error": self.last_error,
            "pending": len(self._pending),
            "dropped": self.dropped,
            "skipped": self.skipped,
            "subscription_dropped": self.sub.dropped,
        }

    def _take(self, changes: Sequence[Sample]) -> None:
        pend = self._pending
        if not pend:
            self._first_at = time.monotonic()
        n0 = len(pend)
        pend.extend(
            s
            for s in changes
            if type(s[1]) in (float, int, bool) and type(s[3]) is int and -_INT32 <= s[3] < _INT32
        )
        self.skipped += len(changes) - (len(pend) - n0)
        excess = len(pend) - self.max_pending
        if excess > 0:
            del pend[:excess]
            self.dropped += excess
            log.warning("history: %d pending samples dropped (limit %d)", excess, self.max_pending)

    async def _flush(self, final: bool = False) -> bool:
        """Write pending batches that are due; False after a failed write."""
        pend = self._pending
        while pend and (
            final
            or len(pend) >= self.batch_size
            or time.monotonic() - self._first_at >= self.flush_interval_s
        ):
            batch = pend[: self.batch_size]
            try:
                n = await asyncio.to_thread(self.store.write, batch)
            except Exception as e:
                self.write_errors += 1
                self.last_error = str(e)
                log.error("history: write of %d samples failed: %s", len(batch), e)
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self.max_retry_s)
                return False
            del pend[: len(batch)]
            self.rows_written += n
            self.batches += 1
            self._backoff = self.retry_interval_s
            self._retry_at = 0.0
            if pend:
                self._first_at = time.monotonic()
        return True

    def _timeout(self) -> float | None:
        if not self._pending:
            return None
        now = time.monotonic()
        if self._retry_at > now:
            return self._retry_at - now
        return max(0.0, self._first_at + self.flush_interval_s - now)

    def _drain(self) -> None:
        for cs in self.sub.drain():
            self.last_seq = cs.seq
            self._take(cs.changes)

    async def run(self) -> None:
        """Write change sets until stop(); never raises on database errors."""
        self._running = True
        self._done.clear()
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                getter = asyncio.ensure_future(self.sub.get(self._timeout()))
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    cs = getter.result()
                    if cs is not None:
                        self.last_seq = cs.seq
                        self._take(cs.changes)
                    elif self.sub.closed and not len(self.sub):
                        break
                else:
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                self._drain()
                if time.monotonic() >= self._retry_at:
                    await self._flush()
            await self._final_flush()
        finally:
            stopper.cancel()
            self._running = False
            self._done.set()

    async def _final_flush(self) -> None:
        self._drain()
        if not await self._flush(final=True):
            lost = len(self._pending)
            self.dropped += lost
            self._pending.clear()
            log.error("history: %d samples not written at stop: %s", lost, self.last_error)

    async def stop(self) -> None:
        """Flush what is pending (and queued) and return once run() has finished."""
        self._stop.set()
        if self._running:
            await self._done.wait()
        else:
            await self._final_flush()
