"""The IEC 61850 MMS server against an independent MMS client (pyiec61850's IedConnection).

The client runs in a child process (this file run as a script: `client HOST PORT`), so that it
shares nothing with the server it tests, not even the GIL: pyiec61850 holds the GIL while a call
blocks, and a client and a server with Python handlers in one process can wait on each other. The
child takes JSON commands on stdin: browse, read, subscribe to a report block, operate (with or
without select-before-operate), and answers on stdout. Its blocking control calls go through
ctypes (which releases the GIL) for the same reason: its own report thread needs the GIL.

The field side is the command path with our Modbus simulator and Modbus driver, as in
tests/gateway/test_command_path.py, so an operated set-point really reaches the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.commands import CommandPath
from gateway.north.mms_server import MmsServer, MmsServerError, mms_reference
from gateway.south.modbus import ModbusDriver
from model.command import CommandState
from model.drivers import PollGroup
from model.north_mms import MmsControlConfig, MmsReportConfig, MmsServerConfig
from model.quality import GOOD
from model.resources import ExtraPoint
from model.sample import Sample
from model.site import SiteConfig
from tools.sim.modbus import ModbusSimulator
from twin.twin import Twin

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0
BAT_SET = "VPP1.BAT02/DRCC1.WSpt.setMag.f"
BAT_P = "VPP1.BAT02/MMXU1.TotW.mag.f"
LOAD_SET = "VPP1.LOAD01/DRCC1.WSpt.setMag.f"
LOAD_P = "VPP1.LOAD01/MMXU1.TotW.mag.f"
PV1_P = "VPP1.PV01/MMXU1.TotW.mag.f"
PV1_SET = "VPP1.PV01/DRCC1.WSpt.setMag.f"
# libiec61850 Quality numbering (IEC 61850-8-1 bit string as an integer).
LIB_INVALID, LIB_QUESTIONABLE, LIB_OLD_DATA = 2, 3, 128
ADD_CAUSE_NOT_SUPPORTED, ADD_CAUSE_BLOCKED_BY_PROCESS, ADD_CAUSE_BLOCKED_BY_INTERLOCKING = 1, 9, 10


# --- the independent client (child process) ---------------------------------------------------


def _client(host: str, port: int, warmup: str) -> None:  # pragma: no cover - child process
    import pyiec61850.pyiec61850 as iec

    with open("/proc/self/maps", encoding="utf-8") as maps:
        lib = ctypes.CDLL(next(ln.rsplit(" ", 1)[-1].strip() for ln in maps if "libiec61850" in ln))

    class LastApplError(ctypes.Structure):
        _fields_ = [("ctlNum", ctypes.c_int), ("error", ctypes.c_int), ("addCause", ctypes.c_int)]

    vp = ctypes.c_void_p
    lib.ControlObjectClient_operate.argtypes = [vp, vp, ctypes.c_uint64]
    lib.ControlObjectClient_operate.restype = ctypes.c_bool
    lib.ControlObjectClient_select.argtypes = [vp]
    lib.ControlObjectClient_select.restype = ctypes.c_bool
    lib.ControlObjectClient_selectWithValue.argtypes = [vp, vp]
    lib.ControlObjectClient_selectWithValue.restype = ctypes.c_bool
    lib.ControlObjectClient_getLastApplError.argtypes = [vp]
    lib.ControlObjectClient_getLastApplError.restype = LastApplError
    lib.IedConnection_close.argtypes = [vp]
    lib.IedConnection_destroy.argtypes = [vp]

    def names(lst: Any) -> list[str]:
        out: list[str] = []
        if lst is None:
            return out
        e = iec.LinkedList_getNext(lst)
        while e:
            out.append(iec.toCharP(e.data))
            e = iec.LinkedList_getNext(e)
        iec.LinkedList_destroy(lst)
        return out

    def py(v: Any) -> Any:
        t = iec.MmsValue_getType(v)
        if t in (iec.MMS_STRUCTURE, iec.MMS_ARRAY):
            return [py(iec.MmsValue_getElement(v, i)) for i in range(iec.MmsValue_getArraySize(v))]
        if t == iec.MMS_FLOAT:
            return iec.MmsValue_toDouble(v)
        if t in (iec.MMS_INTEGER, iec.MMS_UNSIGNED):
            return iec.MmsValue_toInt64(v)
        if t == iec.MMS_BOOLEAN:
            return bool(iec.MmsValue_getBoolean(v))
        if t == iec.MMS_BIT_STRING:
            return iec.MmsValue_getBitStringAsInteger(v)
        if t == iec.MMS_UTC_TIME:
            return iec.MmsValue_getUtcTimeInMs(v)
        if t == iec.MMS_VISIBLE_STRING:
            return iec.MmsValue_toString(v)
        return None

    reports: list[dict[str, Any]] = []

    class Handler(iec.RCBHandler):
        def trigger(self) -> None:
            try:
                rep = self._client_report
                values = iec.ClientReport_getDataSetValues(rep)
                entries = {}
                for i in range(iec.MmsValue_getArraySize(values)):
                    reason = iec.ClientReport_getReasonForInclusion(rep, i)
                    if reason != iec.IEC61850_REASON_NOT_INCLUDED:
                        entries[i] = {
                            "reason": reason,
                            "value": py(iec.MmsValue_getElement(values, i)),
                        }
                reports.append({"rcb": iec.ClientReport_getRcbReference(rep), "entries": entries})
            except Exception as e:
                reports.append({"error": repr(e)})

    # libiec61850 1.6.1 sometimes loses a fresh association on its first request (seen with a
    # plain pyiec61850 server too, ~1 in 10-20, never under strace): warm up, reconnect if lost.
    for _attempt in range(5):
        con = iec.IedConnection_create()
        iec.IedConnection_setRequestTimeout(con, 5000)
        err = iec.IedConnection_connect(con, host, port)
        err = err[1] if isinstance(err, tuple) else err
        if err == iec.IED_ERROR_OK:
            v, err = iec.pyWrap_IedConnection_readObject(con, f"{warmup}", iec.IEC61850_FC_MX)
            if v is not None:
                iec.MmsValue_delete(v)
            if err == iec.IED_ERROR_OK:
                break
        lib.IedConnection_destroy(int(con))
        time.sleep(0.2)
    print(json.dumps({"ready": err == iec.IED_ERROR_OK, "error": err}), flush=True)
    subs: list[Any] = []
    controls: dict[str, Any] = {}
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        reply: dict[str, Any] = {}
        if cmd == "browse":
            lds, e = iec.IedConnection_getLogicalDeviceList(con)
            reply["lds"] = names(lds)
            reply["error"] = e
            ld = msg["ld"]
            lns, _ = iec.IedConnection_getLogicalDeviceDirectory(con, ld)
            reply["lns"] = names(lns)
            for cls, key in ((iec.ACSI_CLASS_DATA_SET, "datasets"), (iec.ACSI_CLASS_URCB, "urcbs"),
                             (iec.ACSI_CLASS_BRCB, "brcbs")):  # fmt: skip
                lst, _ = iec.IedConnection_getLogicalNodeDirectory(con, f"{ld}/LLN0", cls)
                reply[key] = names(lst)
            ds, _ = iec.IedConnection_getDataSetDirectory(con, f"{ld}/LLN0.{msg['dataset']}", None)
            reply["members"] = names(ds)
            do, _ = iec.IedConnection_getDataDirectory(con, msg["do"])
            reply["do"] = names(do)
        elif cmd == "read":
            v, e = iec.pyWrap_IedConnection_readObject(
                con, msg["ref"], getattr(iec, f"IEC61850_FC_{msg['fc']}")
            )
            reply["error"] = e
            if v is not None:
                reply["value"] = py(v)
                iec.MmsValue_delete(v)
        elif cmd == "subscribe":
            # Every handler is installed before any block is enabled: installing one takes the
            # connection's report-handler mutex, which the report thread holds while it waits
            # for the GIL in a handler (a deadlock when a block is already reporting).
            reply["blocks"] = {}
            enable = []
            for ref in msg["rcbs"]:
                blank = iec.ClientReportControlBlock_create(ref)
                rcb, e = iec.pyWrap_IedConnection_getRCBValues(con, ref, blank)
                got = reply["blocks"][ref] = {"error": e}
                if e != iec.IED_ERROR_OK:
                    continue
                got["dataset"] = iec.ClientReportControlBlock_getDataSetReference(rcb)
                handler = Handler()
                sub = iec.RCBSubscriber()
                sub.setIedConnection(con)
                sub.setRcbReference(ref)
                sub.setRcbRptId(iec.ClientReportControlBlock_getRptId(rcb))
                sub.setEventHandler(handler)
                handler.__disown__()  # the subscriber deletes it
                got["subscribed"] = sub.subscribe()
                subs.append((sub, rcb))
                enable.append((ref, rcb))
            for ref, rcb in enable:
                iec.ClientReportControlBlock_setRptEna(rcb, True)
                iec.ClientReportControlBlock_setGI(rcb, True)
                _, e = iec.pyWrap_IedConnection_setRCBValues(
                    con, rcb, iec.RCB_ELEMENT_RPT_ENA | iec.RCB_ELEMENT_GI, True
                )
                reply["blocks"][ref]["enable_error"] = e
        elif cmd == "reports":
            reply["reports"] = reports[msg.get("since", 0) :]
            reply["count"] = len(reports)
        elif cmd == "operate":
            ref = msg["ref"]
            co = controls.get(ref)
            if co is None:
                co = controls[ref] = iec.ControlObjectClient_create(ref, con)
                iec.ControlObjectClient_setOrigin(co, "test-client", 3)
            reply["model"] = iec.ControlObjectClient_getControlModel(co)
            iec.ControlObjectClient_setInterlockCheck(co, bool(msg.get("interlock", False)))
            if isinstance(msg["value"], bool):
                value = iec.MmsValue_newBoolean(msg["value"])
            else:
                value = iec.MmsValue_newFloat(float(msg["value"]))
            ok = True
            if msg.get("sbo"):
                if reply["model"] == 4:
                    ok = lib.ControlObjectClient_selectWithValue(int(co), int(value))
                else:
                    ok = lib.ControlObjectClient_select(int(co))
                reply["selected"] = bool(ok)
            if ok:
                ok = lib.ControlObjectClient_operate(int(co), int(value), 0)
            iec.MmsValue_delete(value)
            reply["ok"] = bool(ok)
            lae = lib.ControlObjectClient_getLastApplError(int(co))
            reply["add_cause"] = lae.addCause
            reply["last_error"] = iec.ControlObjectClient_getLastError(co)
        elif cmd == "close":
            break
        print(json.dumps(reply), flush=True)
    lib.IedConnection_close(int(con))  # ctypes: the report thread may be waiting for the GIL
    for co in controls.values():
        iec.ControlObjectClient_destroy(co)
    for _sub, rcb in subs:
        iec.ClientReportControlBlock_destroy(rcb)
    lib.IedConnection_destroy(int(con))
    for sub, _ in subs:
        iec._pyiec61850.delete_RCBSubscriber(sub)
    print(json.dumps({"closed": True}), flush=True)


class Client:
    """The child-process MMS client, driven over stdin/stdout."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Client:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "client", "127.0.0.1", str(self.port), "VPP1PLANT/MMXU1.TotW.mag.f",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        hello = await self._reply()
        assert hello["ready"], hello
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                await self.send(cmd="close")
            try:
                await asyncio.wait_for(self.proc.wait(), WAIT)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        assert self.proc.returncode == 0, f"the MMS client exited with {self.proc.returncode}"

    async def _reply(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
            if not line:
                raise AssertionError("the MMS client exited")
            if line.startswith(b"{"):
                return dict(json.loads(line))

    async def send(self, **msg: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._reply()

    async def read(self, point: str, fc: str | None = None) -> Any:
        ref, guessed = mms_reference(point)
        reply = await self.send(cmd="read", ref=ref, fc=fc or guessed)
        assert reply["error"] == 0, reply
        return reply["value"]

    async def reports_until(
        self, pred: Any, since: int = 0, timeout: float = WAIT
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = (await self.send(cmd="reports", since=since))["reports"]
            if pred(got):
                return got
            await asyncio.sleep(0.05)
        pytest.fail("timed out waiting for reports")


# --- the rig --------------------------------------------------------------------------------------


async def _until(pred: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def _with_port(site: SiteConfig, port: int, slow: frozenset[str] = frozenset()) -> SiteConfig:
    """The demo site with mb1 on `port`, polled every 0.2 s except the `slow` points (30 s)."""
    drivers = []
    for d in site.drivers:
        if d.id == "mb1":
            poll = [g.model_copy(update={"period_s": 0.2}) for g in d.poll_groups]
            poll.append(PollGroup(name="rare", period_s=30.0))
            regs = [
                r.model_copy(update={"group": "rare"}) if r.point in slow else r
                for r in d.registers
            ]
            d = d.model_copy(update={"port": port, "poll_groups": poll, "registers": regs})
        drivers.append(d)
    return site.model_copy(update={"drivers": drivers})


class Rig:
    """Modbus simulator + Modbus driver + command path + twin + the MMS server on loopback."""

    def __init__(self, site: SiteConfig, config: MmsServerConfig) -> None:
        self.sim = ModbusSimulator(site, "mb1", tick_s=0.1)
        self.twin = Twin.from_site(site)
        cfg = next(d for d in site.drivers if d.id == "mb1")
        self.driver = ModbusDriver(cfg, self.twin)  # type: ignore[arg-type]
        self.path = CommandPath(self.twin, [self.driver])
        self.server = MmsServer(config, site, self.twin, self.path)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Rig:
        self._task = asyncio.create_task(self.sim.serve(self._stop))
        await _until(lambda: self.sim.running, "simulator")
        await self.driver.start()
        await _until(lambda: self.twin.get(BAT_P) is not None, "first poll")
        await self.server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()
        await self.path.close()
        await self.driver.stop()
        self._stop.set()
        assert self._task is not None
        await self._task


@pytest.fixture
def site(demo_site: SiteConfig, port: int) -> SiteConfig:
    return _with_port(demo_site, port)


@pytest.fixture
def config(new_port: Any) -> MmsServerConfig:
    return MmsServerConfig(
        port=new_port(),
        reports=[
            MmsReportConfig(name="urcbMeas", buffered=False, instances=2),
            MmsReportConfig(name="brcbMeas", buffered=True, instances=1),
        ],
        controls=[MmsControlConfig(point=LOAD_SET, control_model="sbo-with-enhanced-security")],
    )


# --- the tests --------------------------------------------------------------------------------------


async def test_browse_and_read(site: SiteConfig, config: MmsServerConfig) -> None:
    started = time.time()
    async with Rig(site, config) as rig, Client(config.port) as client:
        got = await client.send(
            cmd="browse", ld="VPP1BAT02", dataset="Measurements", do="VPP1BAT02/DRCC1.WSpt"
        )
        assert got["error"] == 0, got
        assert set(got["lds"]) == {"VPP1PV01", "VPP1BAT01", "VPP1HVAC01", "VPP1PV02", "VPP1BAT02",
                                   "VPP1LOAD01", "VPP1PLANT"}  # fmt: skip
        assert set(got["lns"]) == {"LLN0", "MMXU1", "DRCC1", "ZBAT1", "DRCT1"}
        assert got["datasets"] == ["Measurements"]
        assert sorted(got["urcbs"]) == ["urcbMeas01", "urcbMeas02"]
        assert got["brcbs"] == ["brcbMeas01"]
        assert "VPP1BAT02/MMXU1.TotW[MX]" in got["members"]
        assert "VPP1BAT02/DRCC1.WSpt[MX]" in got["members"]  # the APC's mxVal, q, t
        assert {"Oper", "ctlModel", "mxVal", "setMag", "q", "t"} <= set(got["do"])
        # Values and quality as the twin holds them.
        await _until(lambda: rig.twin.get(BAT_P) is not None, "a value")
        await asyncio.sleep(0.3)
        twin_p = rig.twin.get(BAT_P)
        assert await client.read(BAT_P) == pytest.approx(twin_p.value, abs=1e-3)
        assert await client.read(BAT_P.replace("mag.f", "q"), "MX") == 0  # good
        # t is the time of the last change (change sets carry changes; the twin's ts moves with
        # every poll even when the value stays): not after the twin's, not before the rig started.
        t_ms = await client.read(BAT_P.replace("mag.f", "t"), "MX")
        assert started - 1.0 < t_ms / 1000 <= rig.twin.get(BAT_P).ts + 0.001
        # The resources behind the IEC 104 outstation (not running here) have no value: invalid.
        assert await client.read(PV1_P.replace("mag.f", "q"), "MX") == LIB_INVALID
        # The control model is the configured one.
        ctl = await client.send(cmd="read", ref="VPP1LOAD01/DRCC1.WSpt.ctlModel", fc="CF")
        assert ctl["value"] == 4  # sbo-with-enhanced-security
        assert rig.server.stats()["connections"] == 1


async def test_reports_follow_the_twin(site: SiteConfig, config: MmsServerConfig) -> None:
    async with Rig(site, config) as rig, Client(config.port) as client:
        # Browse first: the client's directory calls keep the GIL while they block, and from
        # the moment reports flow its report thread needs the GIL.
        members = (await client.send(cmd="browse", ld="VPP1PV01", dataset="Measurements",
                                     do="VPP1PV01/MMXU1.TotW"))["members"]  # fmt: skip
        idx = str(members.index("VPP1PV01/MMXU1.TotW[MX]"))
        rcbs = ["VPP1PV01/LLN0.RP.urcbMeas01", "VPP1PV01/LLN0.BR.brcbMeas01"]
        sub = await client.send(cmd="subscribe", rcbs=rcbs)
        for ref in rcbs:
            got = sub["blocks"][ref]
            assert got["error"] == 0 and got["subscribed"] and got["enable_error"] == 0, sub
        base = (await client.send(cmd="reports"))["count"]
        ts = time.time()
        rig.twin.apply([Sample(PV1_P, 55.5, ts, GOOD, "test")])

        def has_value(reports: list[dict[str, Any]]) -> bool:
            return any(
                idx in r.get("entries", {})
                and r["entries"][idx]["value"][0][0] == pytest.approx(55.5)
                for r in reports
            )

        got = await client.reports_until(has_value, since=base)
        rcbs = {r["rcb"] for r in got if has_value([r])}
        # Both the unbuffered and the buffered block report the change.
        assert rcbs == {"VPP1PV01/LLN0.RP.urcbMeas01", "VPP1PV01/LLN0.BR.brcbMeas01"}
        entry = next(r["entries"][idx] for r in got if has_value([r]))
        _mag, q, t = entry["value"]
        assert q == 0 and abs(t / 1000 - ts) < 0.002
        # Link loss upstream: the twin marks the point not topical; the report carries it.
        base = (await client.send(cmd="reports"))["count"]
        rig.twin.mark_not_topical([PV1_P], "test")
        expected = LIB_QUESTIONABLE | LIB_OLD_DATA

        def has_quality(reports: list[dict[str, Any]]) -> bool:
            return any(
                idx in r.get("entries", {}) and r["entries"][idx]["value"][1] == expected
                for r in reports
            )

        await client.reports_until(has_quality, since=base)
        assert rig.server.stats()["updates"] >= 2


async def test_operate_direct_and_with_select(site: SiteConfig, config: MmsServerConfig) -> None:
    async with Rig(site, config) as rig, Client(config.port) as client:
        # Direct operate with enhanced security (the default model): the battery follows.
        got = await client.send(cmd="operate", ref="VPP1BAT02/DRCC1.WSpt", value=-15.0)
        assert got["model"] == 3 and got["ok"], got
        await _until(
            lambda: any(r.command.target == BAT_SET for r in rig.twin.commands.records()),
            "the command",
        )
        rec = next(r for r in rig.twin.commands.records() if r.command.target == BAT_SET)
        assert rec.command.origin == "mms"
        await _until(lambda: rec.done, "confirmation")
        assert rec.state == CommandState.CONFIRMED
        await _until(lambda: abs(rig.twin.get(BAT_P).value + 15.0) < 0.1, "the battery to follow")
        assert rig.sim.writes == 1
        # The served set-point shows the new value.
        await _until(lambda: rig.twin.get(BAT_SET).value == pytest.approx(-15.0), "read-back")
        await asyncio.sleep(0.2)
        assert await client.read(BAT_SET) == pytest.approx(-15.0)
        # Select before operate with enhanced security: the load follows.
        got = await client.send(cmd="operate", ref="VPP1LOAD01/DRCC1.WSpt", value=-20.0, sbo=True)
        assert got["model"] == 4 and got["selected"] and got["ok"], got
        await _until(lambda: abs(rig.twin.get(LOAD_P).value + 20.0) < 0.1, "the load to follow")
        load = [r for r in rig.twin.commands.records() if r.command.target == LOAD_SET]
        assert len(load) == 1 and load[0].command.origin == "mms"
        assert rig.sim.writes == 2
        assert rig.server.stats()["executed"] == 2


async def test_refused_controls_get_their_add_cause(
    demo_site: SiteConfig, port: int, config: MmsServerConfig
) -> None:
    # BAT02's power is read every 30 s here, so that marking it not topical sticks.
    site = _with_port(demo_site, port, slow=frozenset({BAT_P}))
    async with Rig(site, config) as rig, Client(config.port) as client:
        before = len(rig.twin.commands.records())
        # Out of the battery's limits (-30..30 kW): refused before execution, nothing sent.
        got = await client.send(cmd="operate", ref="VPP1BAT02/DRCC1.WSpt", value=31.0)
        assert not got["ok"] and got["add_cause"] == ADD_CAUSE_BLOCKED_BY_INTERLOCKING, got
        # The same at select: SBOw carries the value, the check runs before anything is selected.
        got = await client.send(cmd="operate", ref="VPP1LOAD01/DRCC1.WSpt", value=5.0, sbo=True)
        assert not got["selected"] and got["add_cause"] == ADD_CAUSE_BLOCKED_BY_INTERLOCKING, got
        # No driver of this rig writes PV01's set-point: not supported.
        got = await client.send(cmd="operate", ref="VPP1PV01/DRCC1.WSpt", value=10.0)
        assert not got["ok"] and got["add_cause"] == ADD_CAUSE_NOT_SUPPORTED, got
        # Interlock check asked for: refused unless the resource's power is good.
        rig.twin.mark_not_topical([BAT_P], "test")
        got = await client.send(
            cmd="operate", ref="VPP1BAT02/DRCC1.WSpt", value=5.0, interlock=True
        )
        assert not got["ok"] and got["add_cause"] == ADD_CAUSE_BLOCKED_BY_INTERLOCKING, got
        # The device link is down: blocked by the process.
        await rig.sim.stop()
        await _until(lambda: not rig.driver.connected, "the link loss")
        got = await client.send(cmd="operate", ref="VPP1BAT02/DRCC1.WSpt", value=5.0)
        assert not got["ok"] and got["add_cause"] == ADD_CAUSE_BLOCKED_BY_PROCESS, got
        await asyncio.sleep(0.3)
        assert rig.sim.writes == 0
        assert len(rig.twin.commands.records()) == before
        stats = rig.server.stats()
        assert stats["refused"] == 5 and stats["operates"] == 0
        assert stats["refusals"] == {
            "blocked-by-interlocking": 3,
            "not-supported": 1,
            "blocked-by-process": 1,
        }


async def test_switches_are_spc_and_dpc(demo_site: SiteConfig, port: int, new_port: Any) -> None:
    # Boolean set-points become SPC, or DPC where configured; no driver writes them here, so a
    # well-decoded boolean ends in a not-supported refusal (a float would be a type refusal).
    site = _with_port(demo_site, port)
    vpp = site.vpps[0]
    agg = vpp.aggregators[1]
    bat = next(r for r in agg.resources if r.id == "BAT02")
    extra = [
        ExtraPoint(path="GGIO1.SPCSO1.stVal", dtype="bool", access="rw"),
        ExtraPoint(path="CSWI1.Pos.stVal", dtype="bool", access="rw"),
    ]
    bat = bat.model_copy(update={"points": extra})
    agg = agg.model_copy(
        update={"resources": [bat if r.id == "BAT02" else r for r in agg.resources]}
    )
    vpp = vpp.model_copy(update={"aggregators": [vpp.aggregators[0], agg]})
    site = site.model_copy(update={"vpps": [vpp]})
    config = MmsServerConfig(
        port=new_port(),
        controls=[
            MmsControlConfig(
                point="VPP1.BAT02/CSWI1.Pos.stVal",
                control_model="sbo-with-normal-security",
                cdc="DPC",
            )
        ],
    )
    async with Rig(site, config) as rig, Client(config.port) as client:
        refs = rig.server.control_references()
        assert refs["VPP1BAT02/GGIO1.SPCSO1"] == "VPP1.BAT02/GGIO1.SPCSO1.stVal"
        got = await client.send(cmd="operate", ref="VPP1BAT02/GGIO1.SPCSO1", value=True)
        assert got["model"] == 3 and not got["ok"], got
        assert got["add_cause"] == ADD_CAUSE_NOT_SUPPORTED
        # The DPC selects with SBO (normal security: no value at select, route checked).
        got = await client.send(cmd="operate", ref="VPP1BAT02/CSWI1.Pos", value=True, sbo=True)
        assert got["model"] == 2 and not got["selected"], got
        stats = rig.server.stats()
        assert stats["refusals"] == {"not-supported": 2}
        # The DPC's stVal is a Dbpos (bit string) and the SPC's a boolean.
        dpc = await client.send(cmd="read", ref="VPP1BAT02/CSWI1.Pos.stVal", fc="ST")
        spc = await client.send(cmd="read", ref="VPP1BAT02/GGIO1.SPCSO1.stVal", fc="ST")
        assert dpc["error"] == 0 and spc["error"] == 0
        assert isinstance(spc["value"], bool)
        # The twin drives both: the DPC shows on/off as a double point (Dbpos), the SPC as a bool.
        seen = []
        for on in (True, False):
            rig.twin.apply(
                [
                    Sample("VPP1.BAT02/CSWI1.Pos.stVal", on, time.time(), GOOD, "test"),
                    Sample("VPP1.BAT02/GGIO1.SPCSO1.stVal", on, time.time(), GOOD, "test"),
                ]
            )
            await asyncio.sleep(0.3)
            dpc = await client.send(cmd="read", ref="VPP1BAT02/CSWI1.Pos.stVal", fc="ST")
            spc = await client.send(cmd="read", ref="VPP1BAT02/GGIO1.SPCSO1.stVal", fc="ST")
            assert spc["value"] is on
            seen.append(dpc["value"])
        assert sorted(seen) == [1, 2]  # off and on: the two valid double-point states


async def test_a_second_server_for_the_same_objects_is_refused(
    site: SiteConfig, config: MmsServerConfig, new_port: Any
) -> None:
    async with Rig(site, config) as rig:
        other = MmsServer(config.model_copy(update={"port": new_port()}), site, rig.twin, rig.path)
        with pytest.raises(MmsServerError, match="already served"):
            await other.start()
        assert not other.running


if __name__ == "__main__":  # pragma: no cover - the client's entry point
    if len(sys.argv) == 5 and sys.argv[1] == "client":
        _client(sys.argv[2], int(sys.argv[3]), sys.argv[4])
