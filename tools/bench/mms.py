"""MMS server: report entries/s delivered to a client while N points change, ours against a bare
libiec61850 server updating the same attributes (mag.f, q, t) of the same model.

Both servers serve N_RES logical devices of N_PTS MV objects (GGIO1.AnIn<i>) with one data set
and one unbuffered report control block per device; a client in its own process (pyiec61850)
enables every block and counts the data-change entries it receives. Ours: the twin changes every
point and the MMS server follows its change sets. Bare: the same values written with
IedServer_update* under the data-model lock, in the same chunks.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

__all__ = ["run"]

_CLIENT = r"""
import sys, time
import pyiec61850.pyiec61850 as iec
port, rcbs = int(sys.argv[1]), sys.argv[2].split(",")
for _ in range(20):  # a fresh association's first request sometimes fails: retry
    con = iec.IedConnection_create()
    iec.IedConnection_connect(con, "127.0.0.1", port)
    v, e = iec.pyWrap_IedConnection_readObject(
        con, rcbs[0].split("/")[0] + "/GGIO1.AnIn0.mag.f", iec.IEC61850_FC_MX)
    if e == 0:
        break
    time.sleep(0.2)
count = [0]
class H(iec.RCBHandler):
    def trigger(self):
        try:
            rep = self._client_report
            vals = iec.ClientReport_getDataSetValues(rep)
            n = iec.MmsValue_getArraySize(vals)
            count[0] += sum(1 for i in range(n) if iec.ClientReport_getReasonForInclusion(rep, i)
                            & iec.IEC61850_REASON_DATA_CHANGE)
        except Exception:
            pass
subs = []
for ref in rcbs:
    rcb, e = iec.pyWrap_IedConnection_getRCBValues(con, ref, iec.ClientReportControlBlock_create(ref))
    h = H(); s = iec.RCBSubscriber(); s.setIedConnection(con); s.setRcbReference(ref)
    s.setRcbRptId(iec.ClientReportControlBlock_getRptId(rcb)); s.setEventHandler(h); h.__disown__()
    s.subscribe(); subs.append((s, rcb))
for s, rcb in subs:
    iec.ClientReportControlBlock_setRptEna(rcb, True)
    iec.pyWrap_IedConnection_setRCBValues(con, rcb, iec.RCB_ELEMENT_RPT_ENA, True)
print("ready", flush=True)
for line in sys.stdin:
    print(count[0], flush=True)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Bare:
    """A plain libiec61850 server with the same model, written to directly."""

    def __init__(self, n_res: int, n_pts: int, port: int) -> None:
        import pyiec61850.pyiec61850 as iec

        self.iec = iec
        self.keep: list[Any] = []
        model = iec.IedModel_create("VPPGW")
        opts = (iec.RPT_OPT_SEQ_NUM | iec.RPT_OPT_TIME_STAMP | iec.RPT_OPT_REASON_FOR_INCLUSION
                | iec.RPT_OPT_DATA_SET | iec.RPT_OPT_DATA_REFERENCE | iec.RPT_OPT_CONF_REV)  # fmt: skip
        for r in range(n_res):
            name = f"VM{r}"
            dev = iec.LogicalDevice_createEx(name, model, name)
            lln0 = iec.LogicalNode_create("LLN0", dev)
            ggio = iec.LogicalNode_create("GGIO1", dev)
            self.keep += [dev, lln0, ggio]
            for i in range(n_pts):
                self.keep.append(iec.CDC_MV_create(f"AnIn{i}", iec.toModelNode(ggio), 0, False))
            ds = iec.DataSet_create("Measurements", lln0)
            self.keep.append(ds)
            for i in range(n_pts):
                self.keep.append(iec.DataSetEntry_create(ds, f"GGIO1$MX$AnIn{i}", -1, None))
            self.keep.append(iec.ReportControlBlock_create(
                "urcb01", lln0, f"{name}/LLN0.RP.urcb01", False, "Measurements", 1,
                iec.TRG_OPT_DATA_CHANGED, opts, 0, 0))  # fmt: skip
        self.model = model
        self.attrs = []
        for r in range(n_res):
            for i in range(n_pts):
                base = f"VM{r}/GGIO1.AnIn{i}"
                node = iec.IedModel_getModelNodeByObjectReference
                self.attrs.append(tuple(iec.toDataAttribute(node(model, f"{base}.{a}"))
                                        for a in ("mag.f", "q", "t")))  # fmt: skip
        self.srv = iec.IedServer_create(model)
        iec.IedServer_start(self.srv, port)

    def update(self, k: int, chunk: int = 500) -> None:
        iec, srv = self.iec, self.srv
        now_ms = int(time.time() * 1000)
        for start in range(0, len(self.attrs), chunk):
            iec.IedServer_lockDataModel(srv)
            for i, (f, q, t) in enumerate(self.attrs[start : start + chunk], start):
                iec.IedServer_updateFloatAttributeValue(srv, f, float(k + 1) + i * 1e-3)
                iec.IedServer_updateQuality(srv, q, 0)
                iec.IedServer_updateUTCTimeAttributeValue(srv, t, now_ms)
            iec.IedServer_unlockDataModel(srv)

    def close(self) -> None:
        iec = self.iec
        iec.IedServer_stop(self.srv)
        iec.IedServer_destroy(self.srv)


async def _client(port: int, rcbs: str) -> Any:
    p = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, str(port), rcbs,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert p.stdout is not None
    line = await asyncio.wait_for(p.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError(f"MMS bench client did not start: {line!r}")
    return p


async def _count(p: Any) -> int:
    p.stdin.write(b"?\n")
    await p.stdin.drain()
    return int(await p.stdout.readline())


async def _measure(p: Any, rounds: int, n: int, step: Any) -> tuple[int, float]:
    base = await _count(p)
    got = base
    t0 = time.perf_counter()
    deadline = time.monotonic() + 120
    for k in range(rounds):
        await step(k)
        target = base + (k + 1) * n
        while got < target and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
            got = await _count(p)
    return got - base, time.perf_counter() - t0


async def _ours(n_res: int, n_pts: int, rounds: int) -> dict[str, Any]:
    from gateway.commands import CommandPath
    from gateway.north.mms_server import MmsServer
    from model.north_mms import MmsReportConfig, MmsServerConfig
    from model.sample import Sample
    from model.site import parse_site
    from twin.twin import Twin

    lines = ["site: {id: B}", "vpps:", "  - id: V", "    resources:"]
    for r in range(n_res):
        pts = ", ".join(f"{{path: GGIO1.AnIn{i}.mag.f}}" for i in range(n_pts))
        lines.append(f"      - {{id: M{r}, mrid: m-{r:04d}, kind: meter, points: [{pts}]}}")
    site = parse_site("\n".join(lines))
    twin = Twin.from_site(site)
    port = _free_port()
    cfg = MmsServerConfig(
        port=port, plant=False, dataset="Measurements",
        reports=[MmsReportConfig(name="urcb", instances=1)],
    )  # fmt: skip
    srv = MmsServer(cfg, site, twin, CommandPath(twin, []))
    await srv.start()
    p = await _client(port, ",".join(f"VM{r}/LLN0.RP.urcb01" for r in range(n_res)))
    refs = [s.ref for s in site.point_specs() if "AnIn" in s.ref]

    async def step(k: int) -> None:
        now = time.time()
        twin.apply([Sample(r, float(k + 1) + i * 1e-3, now, 0, "b") for i, r in enumerate(refs)])

    try:
        got, dt = await _measure(p, rounds, len(refs), step)
    finally:
        p.stdin.close()
        p.kill()
        await p.wait()
        await srv.stop()
    return {"received": got, "expected": rounds * len(refs), "seconds": round(dt, 3),
            "entries_per_s": round(got / dt)}  # fmt: skip


async def _bare(n_res: int, n_pts: int, rounds: int) -> dict[str, Any]:
    port = _free_port()
    bare = _Bare(n_res, n_pts, port)
    p = await _client(port, ",".join(f"VM{r}/LLN0.RP.urcb01" for r in range(n_res)))

    async def step(k: int) -> None:
        await asyncio.to_thread(bare.update, k)

    try:
        got, dt = await _measure(p, rounds, n_res * n_pts, step)
    finally:
        p.stdin.close()
        p.kill()
        await p.wait()
        bare.close()
    return {"received": got, "expected": rounds * n_res * n_pts, "seconds": round(dt, 3),
            "entries_per_s": round(got / dt)}  # fmt: skip


def run(resources: int = 100, points: int = 100, rounds: int = 5) -> dict[str, Any]:
    """resources x points MV objects (10,000 by default), every one changed `rounds` times."""
    bare = asyncio.run(_bare(resources, points, rounds))
    ours = asyncio.run(_ours(resources, points, rounds))
    return {
        "name": "mms",
        "points": resources * points,
        "rounds": rounds,
        "bare": bare,
        "ours": ours,
        "ratio": round(ours["entries_per_s"] / max(bare["entries_per_s"], 1), 3),
    }


if __name__ == "__main__":
    print(json.dumps(run(*(int(a) for a in sys.argv[1:])), indent=1))
