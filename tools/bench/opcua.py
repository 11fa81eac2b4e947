"""OPC UA data changes: notifications/s reaching one subscribed asyncua client, from our server
following a twin against a bare asyncua server with the same number of variables.

Both servers run in this process with their value source on the same event loop, as in the
gateway; the client runs in its own (spawned) process so that its decoding does not compete with
the server for the loop. It subscribes every variable (sampling interval 0, a monitored-item
queue deep enough that no change is merged at the offered rates, one publishing interval) and
counts data-change notifications over a window after a warm-up.

The same stream is offered to both at rising rates, `batch` fresh values at a time, round-robin
over the variables, every value new (a counter):

- bare: write_attribute_value of each value, yielding to the loop after every batch;
- ours: twin.apply() of each batch as Samples; the server's twin-following task writes them.

Pacing matters: a source that never sleeps starves asyncua's publish cycle, and with queue size
1 the server then merges changes, so a saturating source measures scheduling, not throughput.
`ratio` is our peak delivered notifications/s over the bare server's peak (each the best over
the rates offered); each run also carries its own ratio.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import queue as queue_mod
import socket
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.server.server import Server

from gateway.commands import CommandPath
from gateway.north.opcua_server import FOLDER_LIMIT, OpcUaServer
from model.north_opcua import OpcUaConfig
from model.points import PointSpec
from model.resources import VPPConfig
from model.sample import Sample
from model.site import SiteConfig, SiteInfo
from twin.twin import Twin

__all__ = ["run"]

_NS = "urn:vpp-gateway:bench"


def _ref(i: int) -> str:
    return f"BENCH.R{i // 100:04d}/MMXU1.W{i % 100}.mag.f"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the client (child process) ----------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
        self.n += 1

    def status_change_notification(self, status: Any) -> None:
        pass


async def _client_main(
    url: str,
    ids: list[str],
    publishing_ms: float,
    queue: int,
    warmup: float,
    seconds: float,
    q: Any,
) -> None:
    from asyncua.client.client import Client

    async with Client(url, timeout=30) as client:
        ns = await client.get_namespace_index(_NS)
        counter = _Counter()
        sub = await client.create_subscription(publishing_ms, counter)
        nodes = [client.get_node(ua.NodeId(i, ns)) for i in ids]  # type: ignore[arg-type]
        for k in range(0, len(nodes), 1000):
            await sub.subscribe_data_change(
                nodes[k : k + 1000], queuesize=queue, sampling_interval=ua.Double(0)
            )
        q.put("subscribed")
        await asyncio.sleep(warmup)
        n0, t0 = counter.n, time.perf_counter()
        await asyncio.sleep(seconds)
        n1, t1 = counter.n, time.perf_counter()
        q.put(("counted", n1 - n0, t1 - t0))
        await sub.delete()


def _client_proc(
    url: str,
    ids: list[str],
    publishing_ms: float,
    queue: int,
    warmup: float,
    seconds: float,
    q: Any,
) -> None:
    """Child process: subscribe every node, count notifications over the window, report."""
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    asyncio.run(_client_main(url, ids, publishing_ms, queue, warmup, seconds, q))


# --- the servers -------------------------------------------------------------------------------


async def _bare_server(url: str, n: int) -> tuple[Server, list[ua.NodeId]]:
    server = Server()
    await server.init()
    server.set_endpoint(url)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace(_NS)
    root = await server.nodes.objects.add_folder(ua.NodeId("bench", ns), "bench")  # type: ignore[arg-type]
    ids = []
    folder = root
    for i in range(n):
        if i % FOLDER_LIMIT == 0:  # asyncua: siblings cost grows with their number
            folder = await root.add_folder(ua.NodeId(f"f{i}", ns), f"f{i}")  # type: ignore[arg-type]
        nid = ua.NodeId(_ref(i), ns)  # type: ignore[arg-type]
        await folder.add_variable(nid, f"v{i}", 0.0, ua.VariantType.Double)
        ids.append(nid)
    await server.start()
    return server, ids


def _site() -> SiteConfig:
    return SiteConfig(site=SiteInfo(id="BENCH"), vpps=[VPPConfig(id="BENCH")])


async def _pace(rate: float, batch: int, stop: asyncio.Event, emit: Any) -> int:
    """Call emit(first, count) for `batch` values at a time, paced at `rate` values/s."""
    sent = 0
    t0 = time.perf_counter()
    while not stop.is_set():
        await emit(sent, batch)
        sent += batch
        wait = t0 + sent / rate - time.perf_counter()
        # Always yield at least once per batch: write_attribute_value never does (DEPENDENCIES.md).
        await asyncio.sleep(max(wait, 0))
    return sent


async def _drive_bare(
    server: Server, ids: list[Any], rate: float, batch: int, stop: asyncio.Event
) -> int:
    write = server.write_attribute_value
    good = ua.StatusCode()  # Good
    n = len(ids)

    async def emit(first: int, count: int) -> None:
        now = datetime.now(UTC)
        for k in range(first, first + count):
            dv = ua.DataValue(
                ua.Variant(float(k + 1), ua.VariantType.Double),
                StatusCode=good,
                SourceTimestamp=now,  # type: ignore[arg-type]
                ServerTimestamp=now,  # type: ignore[arg-type]
            )
            await write(ids[k % n], dv)

    return await _pace(rate, batch, stop, emit)


async def _drive_ours(
    twin: Twin, refs: list[str], rate: float, batch: int, stop: asyncio.Event
) -> int:
    n = len(refs)

    async def emit(first: int, count: int) -> None:
        now = time.time()
        twin.apply([Sample(refs[k % n], float(k + 1), now) for k in range(first, first + count)])

    return await _pace(rate, batch, stop, emit)


async def _get(q: Any, proc: Any, timeout: float) -> Any:
    """Next message from the client process; RuntimeError if it died or said nothing in time."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await loop.run_in_executor(None, q.get, True, 0.5)
        except queue_mod.Empty:
            if not proc.is_alive():
                raise RuntimeError(
                    f"the client process ended (exit code {proc.exitcode})"
                ) from None
            if time.monotonic() > deadline:
                raise RuntimeError("the client process did not report in time") from None


async def _one(
    ours: bool,
    n: int,
    rate: float,
    batch: int,
    publishing_ms: float,
    queue: int,
    warmup: float,
    seconds: float,
) -> dict[str, Any]:
    url = f"opc.tcp://127.0.0.1:{_free_port()}"
    refs = [_ref(i) for i in range(n)]
    srv: OpcUaServer | None = None
    bare: Server | None = None
    twin: Twin | None = None
    with tempfile.TemporaryDirectory() as tmp:
        t_build = time.perf_counter()
        if ours:
            twin = Twin([PointSpec(ref=r, unit="kW") for r in refs], queue_size=1000)
            cfg = OpcUaConfig(
                endpoint=url,
                namespace_uri=_NS,
                security_policies=["None"],
                certificate=str(Path(tmp) / "cert.der"),
                private_key=str(Path(tmp) / "key.pem"),
                users_file=str(Path(tmp) / "users.yaml"),
            )
            srv = OpcUaServer(cfg, _site(), twin, CommandPath(twin, []))
            await srv.start()
        else:
            bare, ids = await _bare_server(url, n)
        build_s = time.perf_counter() - t_build
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        args = (url, refs, publishing_ms, queue, warmup, seconds, q)
        proc = ctx.Process(target=_client_proc, args=args, daemon=True)
        proc.start()
        task: asyncio.Task[int] | None = None
        stop = asyncio.Event()
        try:
            msg = await _get(q, proc, 120)
            assert msg == "subscribed", msg
            if twin is not None:
                task = asyncio.create_task(_drive_ours(twin, refs, rate, batch, stop))
            else:
                assert bare is not None
                task = asyncio.create_task(_drive_bare(bare, ids, rate, batch, stop))
            _, count, window = await _get(q, proc, warmup + seconds + 120)
        finally:
            stop.set()
            if task is not None:
                await task
            proc.join(30)
            if proc.is_alive():
                proc.kill()
            if srv is not None:
                await srv.stop()
            if bare is not None:
                await bare.stop()
    per_s = count / window
    return {
        "build_s": round(build_s, 2),
        "notifications_per_s": round(per_s),
        "delivered": round(per_s / rate, 3),
        "resyncs": srv.resyncs if srv is not None else 0,
    }


def run(
    variables: int = 1000,
    rates: tuple[float, ...] = (5000, 10000, 20000, 40000),
    seconds: float = 3.0,
    batch: int = 100,
    publishing_ms: float = 50.0,
    queue: int = 10,
    warmup: float = 1.0,
) -> dict[str, Any]:
    """Notifications/s to one subscribed client at each offered rate, ours against bare."""
    # asyncua logs every session and subscription revision at WARNING, and our server warns
    # that the bench's None-only endpoint takes no logins; keep the output readable.
    # The client deleting its subscription with a publish pending is logged as an ERROR.
    names = {"asyncua": logging.ERROR, "gateway.north.opcua_server": logging.ERROR}
    names["asyncua.server.uaprocessor"] = logging.CRITICAL
    quiet = [logging.getLogger(n) for n in names]
    levels = [q.level for q in quiet]
    for q, level in zip(quiet, names.values(), strict=True):
        q.setLevel(level)
    runs: list[dict[str, Any]] = []
    try:
        for rate in rates:
            common = (variables, rate, batch, publishing_ms, queue, warmup, seconds)
            bare = asyncio.run(_one(False, *common))
            ours = asyncio.run(_one(True, *common))
            r = ours["notifications_per_s"] / max(bare["notifications_per_s"], 1)
            runs.append({"offered_per_s": rate, "bare": bare, "ours": ours, "ratio": round(r, 3)})
    finally:
        for q, level in zip(quiet, levels, strict=True):
            q.setLevel(level)
    bare_peak = max(r["bare"]["notifications_per_s"] for r in runs)
    ours_peak = max(r["ours"]["notifications_per_s"] for r in runs)
    return {
        "name": "opcua",
        "variables": variables,
        "publishing_ms": publishing_ms,
        "queue_size": queue,
        "runs": runs,
        "bare_peak_per_s": bare_peak,
        "ours_peak_per_s": ours_peak,
        "ratio": round(ours_peak / max(bare_peak, 1), 3),
    }


if __name__ == "__main__":
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print(json.dumps(run(variables=n), indent=2))
