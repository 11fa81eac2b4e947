"""History store and writer against real SQLite files and a real PostgreSQL (VPP_TEST_PG_URL)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from model.errors import UnknownPointError
from model.sample import Sample
from tests.conftest import ROOT, service_url
from twin.errors import HistoryError
from twin.history import DEFAULT_URL, HistoryStore, HistoryWriter
from twin.twin import Twin

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a whole hour
PG_URL_VAR = "VPP_TEST_PG_URL"

StoreFactory = Callable[[], HistoryStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of opened HistoryStores on one fresh database (each call = a 'restart')."""
    if request.param == "sqlite":
        url, prefix = f"sqlite:///{tmp_path / 'var' / 'history.db'}", ""
    else:
        url = service_url(PG_URL_VAR, "PostgreSQL")
        prefix = f"t{uuid.uuid4().hex[:12]}_"  # parallel runs never share tables
    stores: list[HistoryStore] = []

    def make() -> HistoryStore:
        s = HistoryStore(url, table_prefix=prefix).open()
        stores.append(s)
        return s

    yield make
    for s in stores:
        s.close()
    if request.param == "postgresql":
        s = HistoryStore(url, table_prefix=prefix).open()
        s.metadata.drop_all(s.engine)
        s.close()


def sample_set() -> list[Sample]:
    """Samples of several points and value types, with microsecond timestamps, out of order."""
    return [
        Sample("VPP1.PV01/MMXU1.TotW.mag.f", 1234.5, T0 + 0.000001, 0, "test"),
        Sample("VPP1.PV01/MMXU1.TotW.mag.f", -0.25, T0 + 1.123456, 0x40 | 3),
        Sample("VPP1.PV01/MMXU1.TotW.mag.f", 1e300, T0 + 2.999999, 1),
        Sample("VPP1.BESS1/ZBAT1.SoC.mag.f", 57, T0 + 0.5, 0),
        Sample("VPP1.BESS1/XCBR1.Pos.stVal", True, T0 + 0.75, 0),
        Sample("VPP1.BESS1/XCBR1.Pos.stVal", False, T0 + 0.25, 1 << 12),
        Sample("VPP1.PV01/MMXU1.TotW.mag.f", 7.0, T0 - 86400.654321, 0),
    ]


def expected(samples: list[Sample], ref: str) -> list[tuple[float, int, int]]:
    rows = [(float(s.value), round(s.ts * 1e6), s.quality) for s in samples if s.point == ref]
    return sorted(rows, key=lambda r: r[1])


def got(store: HistoryStore, ref: str) -> list[tuple[float, int, int]]:
    return [(float(s.value), round(s.ts * 1e6), s.quality) for s in store.raw(ref)]


# --- store -----------------------------------------------------------------------------------


def test_write_restart_read_back(backend: StoreFactory) -> None:
    samples = sample_set()
    store = backend()
    assert store.write(samples) == len(samples)
    store.close()

    again = backend()  # a new store on the same database: history survives the restart
    refs = sorted({s.point for s in samples})
    assert again.points() == refs
    assert again.count() == len(samples)
    for ref in refs:
        assert got(again, ref) == expected(samples, ref)
        assert again.count(ref) == len(expected(samples, ref))
    back = again.raw("VPP1.PV01/MMXU1.TotW.mag.f")
    # ts comes back as the very same float, to the microsecond
    assert [s.ts for s in back] == sorted(
        s.ts for s in samples if s.point == "VPP1.PV01/MMXU1.TotW.mag.f"
    )
    assert back[0] == Sample("VPP1.PV01/MMXU1.TotW.mag.f", 7.0, T0 - 86400.654321, 0)
    assert [s.value for s in again.raw("VPP1.BESS1/XCBR1.Pos.stVal")] == [0.0, 1.0]
    # point ids were loaded, not re-assigned: writing again adds rows to the same points
    again.write([Sample("VPP1.BESS1/ZBAT1.SoC.mag.f", 58.5, T0 + 10, 0)])
    assert again.points() == refs
    assert got(again, "VPP1.BESS1/ZBAT1.SoC.mag.f")[-1] == (58.5, round((T0 + 10) * 1e6), 0)


def test_none_values_are_skipped(backend: StoreFactory) -> None:
    store = backend()
    batch = [Sample("A", 1.0, T0, 0), Sample("A", None, T0 + 1, 0), Sample("A", 2.0, T0 + 2)]  # type: ignore[arg-type]
    assert store.write(batch) == 2
    assert [s.value for s in store.raw("A")] == [1.0, 2.0]
    assert store.write([]) == 0


def test_raw_range_limit_and_order(backend: StoreFactory) -> None:
    store = backend()
    store.write([Sample("P", float(i), T0 + i, 0) for i in (5, 3, 9, 0, 1, 7, 2, 8, 6, 4)])
    assert [s.value for s in store.raw("P")] == [float(i) for i in range(10)]
    assert [s.value for s in store.raw("P", T0 + 2, T0 + 5)] == [2.0, 3.0, 4.0]  # end exclusive
    assert [s.value for s in store.raw("P", start=T0 + 8)] == [8.0, 9.0]
    assert [s.value for s in store.raw("P", end=T0 + 1.5)] == [0.0, 1.0]
    assert [s.value for s in store.raw("P", limit=3)] == [0.0, 1.0, 2.0]
    assert store.raw("P", T0 + 3, T0 + 3) == []


# Known data for resample: offsets from T0 (seconds) and values; point "B" must not leak in.
RESAMPLE_DATA = [
    (0.0, 1.0),
    (1.5, 3.0),
    (4.999999, 8.0),
    (5.0, -2.0),
    (7.25, 4.0),
    (12.0, 10.0),
    (61.0, 6.0),
    (65.5, 2.0),
    (119.999999, 5.0),
]
# Worked out by hand from RESAMPLE_DATA: (bucket offset, {agg: value}, count).
Expected = list[tuple[int, dict[str, float] | None, int]]
BY_HAND: dict[tuple[str, int | None, int | None], Expected] = {
    # 5s over [T0, T0 + 20): buckets 0 (1, 3, 8), 5 (-2, 4), 10 (10), 15 (empty)
    ("5s", 0, 20): [
        (0, {"mean": 4.0, "min": 1.0, "max": 8.0, "last": 8.0}, 3),
        (5, {"mean": 1.0, "min": -2.0, "max": 4.0, "last": 4.0}, 2),
        (10, {"mean": 10.0, "min": 10.0, "max": 10.0, "last": 10.0}, 1),
        (15, None, 0),
    ],
    # 1min, no bounds: buckets 0 (1, 3, 8, -2, 4, 10) and 60 (6, 2, 5)
    ("1min", None, None): [
        (0, {"mean": 4.0, "min": -2.0, "max": 10.0, "last": 10.0}, 6),
        (60, {"mean": 13 / 3, "min": 2.0, "max": 6.0, "last": 5.0}, 3),
    ],
    # 5min over [T0, T0 + 600): everything in bucket 0, bucket 300 empty
    ("5min", 0, 600): [
        (0, {"mean": 37 / 9, "min": -2.0, "max": 10.0, "last": 5.0}, 9),
        (300, None, 0),
    ],
    # 5s over [T0 + 5, T0 + 10): only the second bucket
    ("5s", 5, 10): [(5, {"mean": 1.0, "min": -2.0, "max": 4.0, "last": 4.0}, 2)],
}


@pytest.mark.parametrize("agg", ["mean", "min", "max", "last"])
def test_resample_by_hand(backend: StoreFactory, agg: str) -> None:
    store = backend()
    data = [Sample("A", v, T0 + off, 0) for off, v in RESAMPLE_DATA]
    noise = [Sample("B", 1000.0 + i, T0 + i, 0) for i in range(0, 130, 3)]
    store.write(data[::2] + noise)  # out of order and in two batches
    store.write(data[1::2])
    for (interval, lo, hi), rows in BY_HAND.items():
        start = None if lo is None else T0 + lo
        end = None if hi is None else T0 + hi
        want = [(T0 + off, None if v is None else v[agg], n) for off, v, n in rows]
        res = store.resample("A", start, end, interval, agg)
        assert [(ts, n) for ts, _, n in res] == [(ts, n) for ts, _, n in want], interval
        assert [v for _, v, _ in res] == pytest.approx([v for _, v, _ in want]), interval
        assert all(isinstance(ts, float) for ts, _, _ in res)


def test_resample_all_intervals_and_last_tie(backend: StoreFactory) -> None:
    store = backend()
    store.write([Sample("A", float(i), T0 + 10 * i, 0) for i in range(720)])  # 2 hours
    for interval, size in [("5s", 5), ("1min", 60), ("5min", 300), ("10min", 600)]:
        res = store.resample("A", T0, T0 + 7200, interval, "max")
        assert len(res) == 7200 // size
        assert sum(n for _, _, n in res) == 720
    for interval, size in [("15min", 900), ("20min", 1200), ("30min", 1800), ("60min", 3600)]:
        res = store.resample("A", None, None, interval, "last")
        assert [ts for ts, _, _ in res] == [T0 + k * size for k in range(7200 // size)]
        assert [v for _, v, _ in res] == [float((k + 1) * size // 10 - 1) for k in range(len(res))]
    # two samples at the same (latest) ts: 'last' is the larger of them, counted twice
    store.write([Sample("C", 1.0, T0 + 1, 0), Sample("C", 3.0, T0 + 2, 0)])
    store.write([Sample("C", 2.0, T0 + 2, 0x40 | 3)])
    assert store.resample("C", None, None, "5s", "last") == [(T0, 3.0, 3)]


def test_query_errors(backend: StoreFactory) -> None:
    store = backend()
    store.write([Sample("A", 1.0, T0, 0)])
    with pytest.raises(UnknownPointError, match="nope"):
        store.raw("nope")
    with pytest.raises(UnknownPointError):
        store.resample("nope", None, None, "5s", "mean")
    with pytest.raises(UnknownPointError):
        store.count("nope")
    with pytest.raises(HistoryError, match=r"interval '7s'.*5s, 1min, 5min.*60min"):
        store.resample("A", None, None, "7s", "mean")
    with pytest.raises(HistoryError, match=r"agg 'avg'.*mean, min, max, last"):
        store.resample("A", None, None, "5s", "avg")
    with pytest.raises(HistoryError, match="start"):
        store.resample("A", T0 + 10, T0, "5s", "mean")
    with pytest.raises(HistoryError, match="start"):
        store.raw("A", T0 + 10, T0)
    with pytest.raises(HistoryError, match="buckets"):
        store.resample("A", T0, T0 + 86400 * 365, "5s", "mean")


def test_failed_batch_writes_nothing(backend: StoreFactory) -> None:
    store = backend()
    assert store.write([Sample("A", 1.0, T0, 0)]) == 1
    # quality 2**70 fits neither SQLite's INTEGER nor PostgreSQL's: the 50th row fails in the
    # database, after 49 rows and a new point were already inserted in the transaction.
    bad = [Sample("NEW", float(i), T0 + i, 0) for i in range(100)]
    bad[49] = Sample("NEW", 49.0, T0 + 49, 2**70)
    bad += [Sample("A", 2.0, T0 + 1, 0)]
    with pytest.raises(HistoryError, match="nothing written"):
        store.write(bad)
    assert store.count() == 1
    assert store.points() == ["A"]
    with pytest.raises(UnknownPointError):
        store.raw("NEW")
    # the store still works and the rolled-back point id was not cached
    bad[49] = Sample("NEW", 49.0, T0 + 49, 0)
    assert store.write(bad) == 101
    assert store.points() == ["A", "NEW"]
    assert got(store, "NEW") == [(float(i), round((T0 + i) * 1e6), 0) for i in range(100)]
    assert backend().count() == 102


def test_closed_store_raises() -> None:
    store = HistoryStore("sqlite://")
    with pytest.raises(HistoryError, match="not open"):
        store.write([Sample("A", 1.0, T0, 0)])
    with pytest.raises(HistoryError, match="table_prefix"):
        HistoryStore("sqlite://", table_prefix="x; drop table points")


def test_bad_url() -> None:
    with pytest.raises(HistoryError, match="not a database URL"):
        HistoryStore("no url at all").open()


def test_sqlite_default_url_creates_var_and_uses_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert DEFAULT_URL == "sqlite:///var/history.db"
    with HistoryStore() as store:
        store.write([Sample("A", 1.0, T0, 0)])
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            idx = conn.exec_driver_sql("PRAGMA index_info(ix_samples_point_ts)").all()
            assert [r[2] for r in idx] == ["point_id", "ts"]
    assert (tmp_path / "var" / "history.db").is_file()


async def test_sqlite_memory_shared_across_threads() -> None:
    with HistoryStore("sqlite://") as store:
        await asyncio.to_thread(store.write, [Sample("A", 1.0, T0, 0)])
        assert store.count("A") == 1


def test_sqlite_restart_in_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with HistoryStore(url) as store:
        store.write([Sample("A", 1.0, T0, 0)])
        code = textwrap.dedent(
            f"""
            from model.sample import Sample
            from twin.history import HistoryStore
            with HistoryStore({url!r}) as s:
                s.write([Sample("A", 2.0, {T0} + 1, 0),
                         Sample("X", 1.5, {T0} + 0.123456, 3),
                         Sample("X", True, {T0} + 1.000001, 0)])
            """
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
        # the open store sees the other process's rows and learns its new point on demand
        assert store.raw("X") == [
            Sample("X", 1.5, T0 + 0.123456, 3),
            Sample("X", 1.0, T0 + 1.000001, 0),
        ]
        assert store.write([Sample("X", 3.0, T0 + 2, 0)]) == 1
    with HistoryStore(url) as again:
        assert again.points() == ["A", "X"]
        assert [s.value for s in again.raw("A")] == [1.0, 2.0]
        assert [s.value for s in again.raw("X")] == [1.5, 1.0, 3.0]


# --- writer ----------------------------------------------------------------------------------


async def test_writer_stores_twin_changes(backend: StoreFactory) -> None:
    store = backend()
    refs = [f"VPP1.DER{i}/MMXU1.TotW.mag.f" for i in range(5)]
    twin = Twin(refs=refs)
    writer = HistoryWriter(
        twin.subscribe("history", 100), store, batch_size=7, flush_interval_s=0.02
    )
    task = asyncio.create_task(writer.run())
    changes: list[Sample] = []
    for k in range(30):
        # every other batch repeats the last values: the twin absorbs those, history must too
        batch = [Sample(r, float(i + (k // 2)), T0 + k + i / 10, 0) for i, r in enumerate(refs)]
        batch.append(Sample("not.a.point", 1.0, T0 + k, 0))
        cs = twin.apply(batch)
        if cs is not None:
            changes.extend(cs.changes)
        if k % 4 == 0:
            await asyncio.sleep(0.01)
    cs = twin.mark_not_topical(refs[:2], "test")  # same value and ts, new quality
    assert cs is not None
    changes.extend(cs.changes)
    await writer.stop()
    await asyncio.wait_for(task, 5)

    assert len(changes) == 5 * 15 + 2
    assert writer.rows_written == store.count() == len(changes)
    assert writer.write_errors == 0 and writer.dropped == 0 and writer.pending == 0
    assert writer.batches >= len(changes) // 7
    assert writer.last_seq == twin.seq
    for r in refs:
        assert sorted(got(store, r)) == sorted(expected(changes, r))
    assert "not.a.point" not in store.points()


async def test_writer_survives_database_down_and_bounds_backlog(backend: StoreFactory) -> None:
    store = backend()
    store.write([Sample("A", 0.0, T0, 0)])  # point known; then the database "goes away"
    store.close()
    twin = Twin(refs=["A"])
    writer = HistoryWriter(
        twin.subscribe("history", 100),
        store,
        batch_size=5,
        flush_interval_s=0.01,
        max_pending=10,
        retry_interval_s=0.01,
        max_retry_s=0.02,
    )
    task = asyncio.create_task(writer.run())
    for i in range(1, 26):
        twin.apply([Sample("A", float(i), T0 + i, 0)])
        await asyncio.sleep(0.005)
    for _ in range(200):
        if writer.write_errors >= 2:
            break
        await asyncio.sleep(0.01)
    assert writer.write_errors >= 2
    assert "not open" in (writer.last_error or "")
    assert not task.done()  # the writer keeps going
    assert writer.pending == 10 and writer.dropped == 15  # oldest dropped, counted
    store.open()  # the database is back: the kept batch is retried
    await writer.stop()
    await asyncio.wait_for(task, 5)
    assert writer.rows_written == 10 and writer.pending == 0
    assert [s.value for s in store.raw("A")] == [0.0, *[float(i) for i in range(16, 26)]]
    stats = writer.stats()
    assert stats["dropped"] == 15 and stats["write_errors"] == writer.write_errors


async def test_writer_stop_without_run_and_skips_unstorable(tmp_path: Path) -> None:
    with HistoryStore(f"sqlite:///{tmp_path / 'h.db'}") as store:
        twin = Twin(refs=["A", "B"])
        writer = HistoryWriter(twin.subscribe("history"), store, batch_size=100)
        twin.apply([Sample("A", 1.0, T0, 0), Sample("B", "text", T0, 0)])  # type: ignore[arg-type]
        await writer.stop()
        assert writer.rows_written == 1 and writer.skipped == 1
        assert store.points() == ["A"]


def test_pg_tables_are_prefixed() -> None:
    url = service_url(PG_URL_VAR, "PostgreSQL")
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    with HistoryStore(url, table_prefix=prefix) as store:
        try:
            with store.engine.connect() as conn:
                names = conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE tablename LIKE :p"),
                    {"p": prefix + "%"},
                ).scalars()
                assert sorted(names) == [prefix + "points", prefix + "samples"]
        finally:
            store.metadata.drop_all(store.engine)
