"""IEC 104 server for dispatch: spontaneous values/s and command latency, each against bare c104.

No ``from __future__ import annotations``: c104 checks callback type hints as objects.

Spontaneous. The twin changes N points at a paced offered rate (unique values, cycling over
the points) and our server sends them to a c104 client in its own process, which counts what
arrives (COT spontaneous) - not what was sent: c104 drops silently when its queue is full.
The baseline is a bare c104 server with the same N points, sending the same value stream in
c104 batches of 30 at the same pace to the same client. Ratio: delivered values/s, ours/bare.
Both report whether the last value of every point arrived.

Command latency. A c104 client sends C_SE_NC_1 AGC set-points to our server; the server splits
them over the VPP (one battery behind our IEC 104 outstation simulator), the command path and
our IEC 104 south driver take them to the simulator, and we time until the simulated device
applies the set-point. Baseline in the same run: a bare c104 server's callback receiving the
same C_SE_NC_1 from the same kind of client (the bare c104 command round trip).
"""

import asyncio
import multiprocessing as mp
import socket
import statistics
import threading
import time
from typing import Any

import c104

from gateway.commands import CommandPath
from gateway.north.iec104_server import IEC104Server
from gateway.south.iec104 import IEC104Driver
from model.north_iec104 import IEC104ServerConfig
from model.resources import plant_ref
from model.sample import Sample
from model.site import SiteConfig
from tools.sim.iec104 import IEC104Simulator
from twin.twin import Twin

__all__ = ["run"]

_BATCH = 30
_FIRST_IOA = 0x7001


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- spontaneous throughput ---------------------------------------------------------------------


def _wait_open(con: c104.Connection, timeout: float = 20.0) -> None:
    """Wait for OPEN; a link c104 2.2.1 left muted after STARTDT gets STARTDT again."""
    deadline = time.monotonic() + timeout
    muted_since = None
    while con.state != c104.ConnectionState.OPEN and time.monotonic() < deadline:
        if con.state == c104.ConnectionState.OPEN_MUTED:
            muted_since = muted_since or time.monotonic()
            if time.monotonic() - muted_since > 0.3:
                con.unmute()
                muted_since = None
        time.sleep(0.01)


def _counting_client(port: int, n: int, seconds: float, q: Any) -> None:
    """Child process: count spontaneous values >= 1 per IOA until 1.5 s of silence."""
    client = c104.Client(tick_rate_ms=50)
    con = client.add_connection(ip="127.0.0.1", port=port, init=c104.Init.ALL)
    assert con is not None
    st = con.add_station(common_address=1)
    assert st is not None
    lock = threading.Lock()
    count: list[float] = [0, 0.0, 0.0]  # n, first, last
    last: dict[int, float] = {}

    def on_receive(
        point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        if message.cot == c104.Cot.SPONTANEOUS:
            v = float(point.value)  # type: ignore[arg-type]
            if v >= 1:
                now = time.time()
                with lock:
                    if not count[0]:
                        count[1] = now
                    count[0] += 1
                    count[2] = now
                    last[point.io_address] = v
        return c104.ResponseState.NONE

    for i in range(n):
        p = st.add_point(io_address=_FIRST_IOA + i, type=c104.Type.M_ME_NC_1)
        assert p is not None
        p.on_receive(callable=on_receive)

    def on_state(connection: c104.Connection, state: c104.ConnectionState) -> None:
        pass

    con.on_state_change(callable=on_state)
    client.start()
    _wait_open(con)
    q.put("open")
    end = time.monotonic() + seconds + 30
    seen: float = -1
    quiet_since = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        with lock:
            k = count[0]
        if k != seen:
            seen, quiet_since = k, time.monotonic()
        elif k and time.monotonic() - quiet_since > 1.5:
            break
    client.stop()
    with lock:
        q.put((count[0], count[1], count[2], dict(last)))


def _values(n: int, rate: float, seconds: float) -> list[list[tuple[int, float]]]:
    """The stream per 10 ms tick: (point index, unique value), cycling over the points."""
    total = int(rate * seconds)
    per_tick = max(1, round(rate / 100))
    out, seq = [], 0
    while seq < total:
        tick = []
        for _ in range(min(per_tick, total - seq)):
            seq += 1
            tick.append(((seq - 1) % n, float(seq)))
        out.append(tick)
    return out


def _result(got: Any, offered: int, finals: dict[int, float]) -> dict[str, Any]:
    k, first, last, last_values = got
    k = int(k)
    span = last - first
    all_final = all(last_values.get(_FIRST_IOA + i) == v for i, v in finals.items())
    return {
        "offered": offered,
        "received": k,
        "values_per_s": round(k / span) if span > 0 else 0,
        "last_value_of_every_point": all_final,
    }


def _bare_stream(port: int, n: int, rate: float, seconds: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    srv = c104.Server(ip="127.0.0.1", port=port, tick_rate_ms=50)
    st = srv.add_station(common_address=1)
    assert st is not None
    pts = []
    for i in range(n):
        p = st.add_point(io_address=_FIRST_IOA + i, type=c104.Type.M_ME_NC_1)
        assert p is not None
        pts.append(p)
    srv.start()
    proc = ctx.Process(target=_counting_client, args=(port, n, seconds, q), daemon=True)
    proc.start()
    try:
        assert q.get(True, 30) == "open"
        time.sleep(0.5)
        stream = _values(n, rate, seconds)
        finals: dict[int, float] = {}
        t0 = time.perf_counter()
        for t, tick in enumerate(stream):
            for i in range(0, len(tick), _BATCH):
                chunk = tick[i : i + _BATCH]
                for idx, v in chunk:
                    pts[idx].value = v
                    finals[idx] = v
                srv.transmit_batch(
                    c104.Batch(cause=c104.Cot.SPONTANEOUS, points=[pts[idx] for idx, _ in chunk])
                )
            wait = t0 + (t + 1) * 0.01 - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        got = q.get(True, seconds + 60)
    finally:
        proc.join(10)
        srv.stop()
    return _result(got, sum(len(t) for t in stream), finals)


def _stream_site(n: int) -> SiteConfig:
    """One VPP of n/2 meters: P and Q of each become n M_ME_NC_1 points of the server."""
    meters = [
        {"id": f"M{i:05d}", "mrid": f"bench-meter-{i}", "kind": "meter"} for i in range(n // 2)
    ]
    return SiteConfig.model_validate(
        {"site": {"id": "BENCH"}, "vpps": [{"id": "V", "resources": meters}]}
    )


async def _ours_stream(port: int, n: int, rate: float, seconds: float) -> dict[str, Any]:
    site = _stream_site(n)
    refs = [f"V.M{i // 2:05d}/MMXU1.{'TotW' if i % 2 == 0 else 'TotVAr'}.mag.f" for i in range(n)]
    extra = [
        {"point": ref, "ioa": _FIRST_IOA + i, "type": "M_ME_NC_1"} for i, ref in enumerate(refs)
    ]
    cfg = IEC104ServerConfig.model_validate(
        {"port": port, "extra_points": extra, "deadbands": {}, "background_s": 0}
    )
    twin = Twin.from_site(site)
    server = IEC104Server(cfg, site, twin, CommandPath(twin, []))
    await server.start()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    loop = asyncio.get_running_loop()
    proc = ctx.Process(target=_counting_client, args=(port, n, seconds, q), daemon=True)
    proc.start()
    try:
        assert await loop.run_in_executor(None, q.get, True, 30) == "open"
        await asyncio.sleep(0.5)
        stream = _values(n, rate, seconds)
        finals: dict[int, float] = {}
        t0 = time.perf_counter()
        for t, tick in enumerate(stream):
            now = time.time()
            twin.apply([Sample(refs[idx], v, now) for idx, v in tick])
            for idx, v in tick:
                finals[idx] = v
            wait = t0 + (t + 1) * 0.01 - time.perf_counter()
            await asyncio.sleep(max(wait, 0))
        got = await loop.run_in_executor(None, q.get, True, seconds + 60)
        stats = server.stats()
    finally:
        await loop.run_in_executor(None, proc.join, 10)
        await server.stop()
    out = _result(got, sum(len(t) for t in stream), finals)
    out["coalesced"] = stats["coalesced"]
    out["paced_waits"] = stats["paced_waits"]
    return out


# --- command latency ------------------------------------------------------------------------------


def _latency_site(sim_port: int) -> SiteConfig:
    bat = "V.BAT/"
    return SiteConfig.model_validate(
        {
            "site": {"id": "BENCH"},
            "vpps": [
                {
                    "id": "V",
                    "resources": [
                        {
                            "id": "BAT",
                            "mrid": "bench-bat",
                            "kind": "storage",
                            "limits": {"p_min_kw": -100, "p_max_kw": 100},
                        }
                    ],
                }
            ],
            "drivers": [
                {
                    "id": "ied",
                    "protocol": "iec104",
                    "port": sim_port,
                    "clock_sync": False,
                    "points": [
                        {"ioa": 1001, "type": "M_ME_NC_1", "point": bat + "MMXU1.TotW.mag.f"},
                        {"ioa": 1002, "type": "M_ME_NC_1", "point": bat + "ZBAT1.SoC.mag.f"},
                        {"ioa": 1003, "type": "M_ME_NC_1", "point": bat + "DRCC1.WSpt.setMag.f"},
                        {"ioa": 2001, "type": "C_SE_NC_1", "point": bat + "DRCC1.WSpt.setMag.f"},
                    ],
                }
            ],
        }
    )


def _target(k: int) -> float:
    """A target unlike the last ones: every order moves the battery (the split is relative)."""
    return float((k * 37) % 160 - 80) + 0.001 * k


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _dispatch_client(port: int, ioa: int) -> tuple[c104.Client, c104.Connection, c104.Point]:
    client = c104.Client(tick_rate_ms=50, command_timeout_ms=1000)
    con = client.add_connection(ip="127.0.0.1", port=port, init=c104.Init.ALL)
    assert con is not None
    st = con.add_station(common_address=1)
    assert st is not None
    p = st.add_point(io_address=ioa, type=c104.Type.C_SE_NC_1)
    assert p is not None

    def on_state(connection: c104.Connection, state: c104.ConnectionState) -> None:
        pass

    con.on_state_change(callable=on_state)
    client.start()
    _wait_open(con)
    return client, con, p


def _bare_latency(commands: int) -> dict[str, Any]:
    port = _free_port()
    srv = c104.Server(ip="127.0.0.1", port=port, tick_rate_ms=50)
    st = srv.add_station(common_address=1)
    assert st is not None
    seen: list[float] = []
    got = threading.Event()

    def on_command(
        point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        seen.append(time.perf_counter())
        got.set()
        return c104.ResponseState.SUCCESS

    sp = st.add_point(io_address=0x6203, type=c104.Type.C_SE_NC_1)
    assert sp is not None
    sp.on_receive(callable=on_command)
    srv.start()
    client, _, p = _dispatch_client(port, 0x6203)
    lat, rtt = [], []
    ok = 0
    try:
        for k in range(commands):
            got.clear()
            p.value = _target(k)
            t0 = time.perf_counter()
            ok += bool(p.transmit(cause=c104.Cot.ACTIVATION))
            rtt.append(time.perf_counter() - t0)
            if got.wait(2.0):
                lat.append(seen[-1] - t0)
    finally:
        client.stop()
        srv.stop()
    return {"applied": len(lat), "lat": lat, "rtt": rtt, "confirmed": ok}


async def _ours_latency(commands: int) -> dict[str, Any]:
    sim_port, port = _free_port(), _free_port()
    site = _latency_site(sim_port)
    sim = IEC104Simulator(site, "ied", tick_s=0.05)
    applied: list[float] = []
    write = sim.binding.write

    def timed_write(ref: str, value: float) -> None:
        write(ref, value)
        applied.append(time.perf_counter())

    sim.binding.write = timed_write  # type: ignore[method-assign]
    stop = asyncio.Event()
    sim_task = asyncio.create_task(sim.serve(stop))
    twin = Twin.from_site(site)
    driver = IEC104Driver(site.drivers[0], twin)  # type: ignore[arg-type]
    path = CommandPath(twin, [driver])
    cfg = IEC104ServerConfig(port=port, setpoint_types=["C_SE_NC_1"], background_s=0)
    server = IEC104Server(cfg, site, twin, path)
    await driver.start()
    await server.start()
    deadline = time.monotonic() + 10
    while twin.get(plant_ref("V", "online")) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    client, _, p = await asyncio.to_thread(_dispatch_client, port, 0x6203)
    lat, rtt = [], []
    ok = 0
    try:
        for k in range(commands):
            n = len(applied)
            p.value = _target(k)
            t0 = time.perf_counter()
            ok += bool(await asyncio.to_thread(p.transmit, cause=c104.Cot.ACTIVATION))
            rtt.append(time.perf_counter() - t0)
            end = time.monotonic() + 2.0
            while len(applied) == n and time.monotonic() < end:
                await asyncio.sleep(0.0005)
            if len(applied) > n:
                lat.append(applied[n] - t0)
    finally:
        await asyncio.to_thread(client.stop)
        await server.stop()
        await path.close()
        await driver.stop()
        stop.set()
        await sim_task
    return {"applied": len(lat), "lat": lat, "rtt": rtt, "confirmed": ok}


def _ms(xs: list[float], p: float) -> float:
    return round(_pct(xs, p) * 1000, 3) if xs else float("nan")


def run(
    points: int = 1000,
    seconds: float = 3.0,
    rates: tuple[float, ...] = (5_000, 10_000, 20_000, 30_000),
    commands: int = 200,
) -> dict[str, Any]:
    """Spontaneous values/s and command latency of our server, each against bare c104."""
    runs = []
    for rate in rates:
        bare = _bare_stream(_free_port(), points, rate, seconds)
        ours = asyncio.run(_ours_stream(_free_port(), points, rate, seconds))
        ratio = ours["values_per_s"] / max(bare["values_per_s"], 1)
        runs.append({"offered_per_s": rate, "bare": bare, "ours": ours, "ratio": round(ratio, 3)})
    bare_lat = _bare_latency(commands)
    ours_lat = asyncio.run(_ours_latency(commands))
    # The headline compares at the highest rate the bare server delivers without loss: above
    # it the baseline itself drops values (see runs[...]["bare"]["received"]).
    lossless = [r for r in runs if r["bare"]["received"] == r["bare"]["offered"]]
    top = lossless[-1] if lossless else runs[0]
    lat = {
        "commands": commands,
        "ours_applied": ours_lat["applied"],
        "ours_confirmed": ours_lat["confirmed"],
        "ours_p50_ms": _ms(ours_lat["lat"], 50),
        "ours_p99_ms": _ms(ours_lat["lat"], 99),
        "ours_ack_p50_ms": _ms(ours_lat["rtt"], 50),
        "bare_applied": bare_lat["applied"],
        "bare_confirmed": bare_lat["confirmed"],
        "bare_p50_ms": _ms(bare_lat["lat"], 50),
        "bare_p99_ms": _ms(bare_lat["lat"], 99),
        "bare_ack_p50_ms": _ms(bare_lat["rtt"], 50),
    }
    lat["p50_ratio_bare_over_ours"] = (
        round(statistics.median(bare_lat["lat"]) / statistics.median(ours_lat["lat"]), 4)
        if bare_lat["lat"] and ours_lat["lat"]
        else 0.0
    )
    return {
        "name": "iec104_server",
        "points": points,
        "spontaneous": runs,
        "ratio": top["ratio"],
        "ratio_at_per_s": top["offered_per_s"],
        "ratio_top_rate": runs[-1]["ratio"],
        "goal_ratio": 0.8,
        "ok": top["ratio"] >= 0.8 and all(r["ours"]["last_value_of_every_point"] for r in runs),
        "command_latency": lat,
    }
