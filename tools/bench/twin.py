"""Twin ingest benchmark: Samples applied per second against a bare dict update, and bytes per point."""

from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any

from model.sample import Sample
from twin.twin import Twin

__all__ = ["run"]


def _refs(n: int) -> list[str]:
    return [f"VPP1.R{i // 10:06d}/MMXU{i % 10 + 1}.TotW.mag.f" for i in range(n)]


def _memory(points: int) -> float:
    """Bytes per point held by a twin of `points` points with a value in each (ref strings included)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    refs = _refs(points)
    tw = Twin(refs=refs)
    del refs
    tw.apply([Sample(r, float(i) + 0.5, 1.7e9, 0) for i, r in enumerate(tw.refs())])
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del tw
    gc.collect()
    return used / points


def run(
    points: int = 200_000, rounds: int = 10, batch: int = 10_000, memory_points: int = 1_000_000
) -> dict[str, Any]:
    """Measure ingest (ours vs bare dict) and memory; return figures and ratios."""
    refs = _refs(points)
    tw = Twin(refs=refs)
    sub = tw.subscribe("bench", maxsize=points // batch * rounds + 10)
    # Every round changes every value, so every sample lands in a change set.
    data = [
        [[Sample(r, float(k * 7 + j), 1.7e9 + k, 0) for j, r in enumerate(refs[b : b + batch])]
         for b in range(0, points, batch)]
        for k in range(rounds)
    ]  # fmt: skip
    total = points * rounds
    delivered = 0
    gc.collect()
    t0 = time.perf_counter()
    for rnd in data:
        for b in rnd:
            tw.apply(b)
            for cs in sub.drain():
                delivered += len(cs.changes)
    ours = time.perf_counter() - t0
    bare: dict[str, object] = {}
    t0 = time.perf_counter()
    for rnd in data:
        for b in rnd:
            for s in b:
                bare[s.point] = s.value
    baseline = time.perf_counter() - t0
    bpp = _memory(memory_points)
    ours_rate = total / ours
    return {
        "name": "twin",
        "points": points,
        "updates": total,
        "batch": batch,
        "changes_delivered": delivered,
        "dropped": sub.dropped,
        "ours_updates_per_s": round(ours_rate),
        "baseline_updates_per_s": round(total / baseline),
        "ratio": round(ours_rate / (total / baseline), 3),
        "goal_ratio": 0.1,
        "goal_updates_per_s": 1_000_000,
        "memory_points": memory_points,
        "bytes_per_point": round(bpp, 1),
        "goal_bytes_per_point": 400,
        "ok": ours_rate >= 1_000_000 and ours_rate / (total / baseline) >= 0.1 and bpp <= 400,
    }
