"""Benchmarks: each measures ours against a baseline in the same run and reports the ratio."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["BENCHMARKS", "run_benchmarks"]

# Every benchmark `vpp bench` offers (each a module here with run() -> dict).
BENCHMARKS = (
    "twin", "history", "iec104", "iec104_server", "opcua", "mms", "iec101", "dlt645", "dlt698",
    "cgmes", "crypto", "secure_channel",
)  # fmt: skip


def _suite(quick: bool) -> dict[str, Callable[[], dict[str, Any]]]:
    from tools.bench import (
        cgmes,
        crypto,
        dlt645,
        dlt698,
        history,
        iec101,
        iec104,
        iec104_server,
        mms,
        opcua,
        secure_channel,
        twin,
    )

    full: dict[str, Callable[[], dict[str, Any]]] = {
        "twin": twin.run,
        "history": history.run,
        "iec104": iec104.run,
        "iec104_server": iec104_server.run,
        "opcua": opcua.run,
        "mms": mms.run,
        "iec101": iec101.run,
        "dlt645": dlt645.run,
        "dlt698": dlt698.run,
        "cgmes": cgmes.run,
        "crypto": crypto.run,
        "secure_channel": secure_channel.run,
    }
    if not quick:
        return full
    small: dict[str, Callable[[], dict[str, Any]]] = {
        "twin": lambda: twin.run(points=20_000, rounds=3, memory_points=100_000),
        "history": lambda: history.run(rows=100_000),
        "iec104": lambda: iec104.run(points=200, seconds=2.0, rates=(2000, 10000)),
        "iec104_server": lambda: iec104_server.run(
            points=200, seconds=2.0, rates=(5_000, 10_000), commands=50
        ),
        "opcua": lambda: opcua.run(variables=200, rates=(2000, 10000), seconds=2.0),
        "mms": lambda: mms.run(resources=10, points=100, rounds=2),
        "iec101": lambda: iec101.run(exchanges=2000, rounds=3),
        "dlt645": lambda: dlt645.run(meters=4, frames=10_000),
        "cgmes": lambda: cgmes.run(rounds=1),
    }
    return {**full, **small}


def run_benchmarks(which: str, *, as_json: bool = False, quick: bool = False) -> int:
    """Run one benchmark or all; print text (with progress) or JSON. Exit 0."""
    suite = _suite(quick)
    names = list(suite) if which == "all" else [which]
    results = []
    for name in names:
        if not as_json:
            print(f"running {name} benchmark...", flush=True)
        r = suite[name]()
        results.append(r)
        if not as_json:
            for k, v in r.items():
                print(f"  {k:28} {v}")
    if as_json:
        print(json.dumps(results if which == "all" else results[0], indent=2))
    return 0
