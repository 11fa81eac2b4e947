"""CGMES import: our importer (cimpy + lxml index + mapping + site validation) against cimpy's
own import of the same files, both timed in the same run on the largest data set here."""

from __future__ import annotations

import io
import logging
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]

DATA = Path(
    os.environ.get(
        "VPP_SHARED_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"
    )
)


def _largest() -> tuple[str, list[Path]]:
    sets = (
        [d for d in (DATA / "cgmes").iterdir() if d.is_dir()] if (DATA / "cgmes").is_dir() else []
    )
    if not sets:
        raise FileNotFoundError(f"no CGMES data sets under {DATA / 'cgmes'}")
    best = max(sets, key=lambda d: sum(f.stat().st_size for f in d.glob("*.xml")))
    return best.name, sorted(best.glob("*.xml"))


def run(rounds: int = 3) -> dict[str, Any]:
    """Best-of-rounds import time, ours vs bare cimpy, on the largest CGMES set."""
    import cimpy

    from cim.cgmes_import import import_cgmes

    name, files = _largest()
    blobs = [(f.name, f.read_bytes()) for f in files]
    boundary = [f for f in files if "_BD_" in f.name]
    model = [f for f in files if f not in boundary]
    logging.getLogger("cimpy").setLevel(logging.CRITICAL)  # it logs every unresolved reference

    def bare() -> int:
        streams = []
        for n, data in blobs:
            s = io.BytesIO(data)
            s.name = n
            streams.append(s)
        result = cimpy.cim_import(streams, "cgmes_v2_4_15")
        return len(result["topology"])

    def ours() -> int:
        return len(import_cgmes(model, boundary).site.resources())

    base_t, ours_t = [], []
    objects = resources = 0
    for _ in range(rounds):  # alternate, so load on the machine hits both alike
        t0 = time.perf_counter()
        objects = bare()
        base_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        resources = ours()
        ours_t.append(time.perf_counter() - t0)
    b, o = min(base_t), min(ours_t)
    return {
        "name": "cgmes",
        "data_set": name,
        "files": len(files),
        "bytes": sum(len(d) for _, d in blobs),
        "cimpy_objects": objects,
        "resources_imported": resources,
        "cimpy_s": round(b, 3),
        "ours_s": round(o, 3),
        "ratio": round(b / o, 3),  # > 1: faster than cimpy alone
    }
