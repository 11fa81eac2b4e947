"""History write benchmark: HistoryStore.write vs a bare sqlite3 executemany, same schema, same run.

Both sides write the same rows (1,000 points, one sample each per second) in batches of `batch`,
one transaction per batch, into a fresh SQLite file in a temp dir with the same pragmas (WAL,
synchronous=NORMAL) and the same tables and (point_id, ts) index (created by HistoryStore for both).
The baseline gets ready-made (point_id, ts_us, value, quality) tuples; ours gets Samples and pays
for point-id lookup and ts conversion. Each side runs `rounds` times alternately and the best
round counts, so both see the same machine state.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from model.sample import Sample
from twin.history import HistoryStore

__all__ = ["run"]

POINTS = 1000
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _samples(rows: int) -> list[Sample]:
    refs = [f"VPP1.DER{i:04d}/MMXU1.TotW.mag.f" for i in range(POINTS)]
    return [
        Sample(refs[i % POINTS], float(i % 997) * 0.5, T0 + (i // POINTS) + 0.000123, 0)
        for i in range(rows)
    ]


def _ours(path: Path, samples: list[Sample], batch: int) -> float:
    store = HistoryStore(f"sqlite:///{path}").open()
    try:
        t = time.perf_counter()
        for k in range(0, len(samples), batch):
            store.write(samples[k : k + batch])
        dt = time.perf_counter() - t
        if store.count() != len(samples):
            raise RuntimeError("history bench: HistoryStore wrote the wrong number of rows")
    finally:
        store.close()
    return len(samples) / dt


def _baseline(path: Path, rows: list[tuple[int, int, float, int]], batch: int) -> float:
    HistoryStore(f"sqlite:///{path}").open().close()  # the same tables and index
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=NORMAL")
        sql = "INSERT INTO samples (point_id, ts, value, quality) VALUES (?, ?, ?, ?)"
        t = time.perf_counter()
        for k in range(0, len(rows), batch):
            with conn:
                conn.executemany(sql, rows[k : k + batch])
        dt = time.perf_counter() - t
        (n,) = conn.execute("SELECT count(*) FROM samples").fetchone()
        if n != len(rows):
            raise RuntimeError("history bench: baseline wrote the wrong number of rows")
    finally:
        conn.close()
    return len(rows) / dt


def run(rows: int = 200_000, batch: int = 10_000, rounds: int = 3) -> dict[str, Any]:
    """Rows/s through HistoryStore.write and through bare sqlite3 executemany, and their ratio."""
    samples = _samples(rows)
    # Point ids as HistoryStore assigns them on a fresh database: in order of first sight, from 1.
    pid = {f"VPP1.DER{i:04d}/MMXU1.TotW.mag.f": i + 1 for i in range(POINTS)}
    tuples = [(pid[s.point], round(s.ts * 1e6), float(s.value), s.quality) for s in samples]
    ours = base = 0.0
    with tempfile.TemporaryDirectory(prefix="vpp-bench-history-") as d:
        for r in range(rounds):
            ours = max(ours, _ours(Path(d) / f"ours{r}.db", samples, batch))
            base = max(base, _baseline(Path(d) / f"base{r}.db", tuples, batch))
    return {
        "name": "history",
        "rows": rows,
        "batch": batch,
        "ours_rows_per_s": round(ours),
        "baseline_rows_per_s": round(base),
        "ratio": round(ours / base, 3),
        "goal": 0.7,
    }


def main(argv: list[str] | None = None) -> None:
    """CLI: print the figures (or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    res = run(args.rows, args.batch, args.rounds)
    if args.json:
        print(json.dumps(res))
        return
    print(
        f"history write, SQLite WAL, {res['rows']} rows in batches of {res['batch']}:\n"
        f"  HistoryStore.write     {res['ours_rows_per_s']:>10,} rows/s\n"
        f"  sqlite3 executemany    {res['baseline_rows_per_s']:>10,} rows/s\n"
        f"  ratio {res['ratio']:.3f} (goal >= {res['goal']})"
    )


if __name__ == "__main__":
    main()
