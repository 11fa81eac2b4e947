"""The IEC 61850 MMS client driver against a libiec61850 server (pyiec61850's server API).

The test IED runs in a child process (this file run as a script: `serve PORT`): its control
handlers are Python, and pyiec61850 holds the GIL while a call blocks, so a server and a client
with Python callbacks in one process can wait on each other (DEPENDENCIES.md). The child builds a
small dynamic model (MMXU, DRCC with an APC operated directly and one selected before operate,
DRCT, an ASG set-point, LLN0 with a data set and report blocks) and takes JSON commands on stdin.
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
from gateway.south.iec61850 import IEC61850Driver, quality_from_mms, quality_to_mms
from model.command import Command, CommandState
from model.drivers_iec61850 import IEC61850ClientDriverConfig
from model.quality import FAILURE, GOOD, OLD_DATA, VALIDITY_MASK, Validity, with_validity
from model.site import parse_site
from twin.twin import Twin

ROOT = Path(__file__).resolve().parents[2]
LD = "TESTBAT"  # IED "TEST", LD inst "BAT"
P = "VPP1.BAT01/MMXU1.TotW.mag.f"
Q = "VPP1.BAT01/MMXU1.TotVAr.mag.f"
PSET = "VPP1.BAT01/DRCC1.WSpt.setMag.f"
QSET = "VPP1.BAT01/DRCC1.VArSpt.setMag.f"
STATE = "VPP1.BAT01/DRCT1.DERSt.stVal"
WMAX = "VPP1.BAT01/DRCC1.WMax.setMag.f"
WAIT = 10.0

SITE = """
site: {id: T}
vpps:
  - id: VPP1
    resources:
      - id: BAT01
        mrid: 6f1c2a3e-0b1d-4c5e-9a10-00000000a001
        kind: storage
        limits: {p_min_kw: -100, p_max_kw: 100, q_min_kvar: -50, q_max_kvar: 50}
        points:
          - {path: DRCC1.WMax.setMag.f, unit: kW, access: rw, min: 0, max: 200}
"""


# --- the test IED (child process) ----------------------------------------------------------------


def _serve(port: int) -> None:  # pragma: no cover - runs in the child process
    """A libiec61850 server: the battery follows its set-points; JSON commands on stdin."""
    import pyiec61850.pyiec61850 as iec

    # The libiec61850 pyiec61850 loaded: lock and stop through ctypes, which releases the GIL
    # (a Python control handler runs with the model locked and needs the GIL).
    with open("/proc/self/maps", encoding="utf-8") as maps:
        lib_path = next(ln.rsplit(" ", 1)[-1].strip() for ln in maps if "libiec61850" in ln)
    lib = ctypes.CDLL(lib_path)
    for name in ("IedServer_lockDataModel", "IedServer_unlockDataModel", "IedServer_stop"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = None

    model = iec.IedModel_create("TEST")
    ld = iec.LogicalDevice_create("BAT", model)
    lln0 = iec.LogicalNode_create("LLN0", ld)
    mmxu = iec.LogicalNode_create("MMXU1", ld)
    drcc = iec.LogicalNode_create("DRCC1", ld)
    drct = iec.LogicalNode_create("DRCT1", ld)
    keep: list[Any] = [ld, lln0, mmxu, drcc, drct]
    keep.append(iec.CDC_MV_create("TotW", iec.toModelNode(mmxu), 0, False))
    keep.append(iec.CDC_MV_create("TotVAr", iec.toModelNode(mmxu), 0, False))
    keep.append(
        iec.CDC_APC_create(
            "WSpt", iec.toModelNode(drcc), 0, iec.CDC_CTL_MODEL_DIRECT_ENHANCED, False
        )
    )
    keep.append(
        iec.CDC_APC_create(
            "VArSpt",
            iec.toModelNode(drcc),
            0,
            iec.CDC_CTL_MODEL_SBO_ENHANCED | iec.CDC_CTL_MODEL_HAS_CANCEL,
            False,
        )
    )
    keep.append(iec.CDC_ASG_create("WMax", iec.toModelNode(drcc), 0, False))
    keep.append(iec.CDC_INS_create("DERSt", iec.toModelNode(drct), 0))
    ds = iec.DataSet_create("Meas", lln0)
    for entry in ("MMXU1$MX$TotW", "MMXU1$MX$TotVAr", "DRCC1$MX$WSpt", "DRCC1$MX$VArSpt",
                  "DRCT1$ST$DERSt"):  # fmt: skip
        keep.append(iec.DataSetEntry_create(ds, entry, -1, None))
    opts = (
        iec.RPT_OPT_SEQ_NUM | iec.RPT_OPT_TIME_STAMP | iec.RPT_OPT_REASON_FOR_INCLUSION
        | iec.RPT_OPT_DATA_SET | iec.RPT_OPT_ENTRY_ID
    )  # fmt: skip
    trg = iec.TRG_OPT_DATA_CHANGED | iec.TRG_OPT_QUALITY_CHANGED | iec.TRG_OPT_GI
    keep.append(
        iec.ReportControlBlock_create(
            "urcbMeas01", lln0, "urcbMeas01", False, "Meas", 1, trg, opts, 0, 0
        )
    )
    keep.append(
        iec.ReportControlBlock_create(
            "brcbMeas01", lln0, "brcbMeas01", True, "Meas", 1, trg, opts, 0, 0
        )
    )

    def da(ref: str) -> Any:
        node = iec.IedModel_getModelNodeByObjectReference(model, f"{LD}/{ref}")
        if node is None:
            raise KeyError(ref)
        return iec.toDataAttribute(node)

    server = iec.IedServer_create(model)
    iec.IedServer_setWriteAccessPolicy(server, iec.IEC61850_FC_SP, iec.ACCESS_POLICY_ALLOW)
    state = {"operates": 0, "refusals": 0, "writes": 0}

    def update(ref: str, value: Any, q: int | None = None, t_ms: int | None = None) -> None:
        lib.IedServer_lockDataModel(int(server))
        try:
            attr = da(ref)
            if isinstance(value, bool):
                iec.IedServer_updateBooleanAttributeValue(server, attr, value)
            elif isinstance(value, int):
                iec.IedServer_updateInt32AttributeValue(server, attr, value)
            else:
                iec.IedServer_updateFloatAttributeValue(server, attr, float(value))
            do = ref.split(".")[0] + "." + ref.split(".")[1]
            if q is not None:
                iec.IedServer_updateQuality(server, da(f"{do}.q"), q)
            iec.IedServer_updateUTCTimeAttributeValue(
                server, da(f"{do}.t"), t_ms if t_ms is not None else int(time.time() * 1000)
            )
        finally:
            lib.IedServer_unlockDataModel(int(server))

    class Check(iec.CheckHandlerForPython):
        def trigger(self) -> None:
            try:
                v = self._libiec61850_mms_value
                value = (
                    iec.MmsValue_toFloat(iec.MmsValue_getElement(v, 0)) if v is not None else 0.0
                )
                if abs(value) > 80_000:  # the inverter's own limit, tighter than the gateway's
                    iec.ControlAction_setAddCause(
                        self._libiec61850_control_action, iec.ADD_CAUSE_BLOCKED_BY_INTERLOCKING
                    )
                    state["refusals"] += 1
                    self._libiec61850_check_handler_result = iec.CONTROL_VALUE_INVALID
                else:
                    self._libiec61850_check_handler_result = iec.CONTROL_ACCEPTED
            except Exception:
                self._libiec61850_check_handler_result = iec.CONTROL_HARDWARE_FAULT

    class Control(iec.ControlHandlerForPython):
        def __init__(self, do: str, follows: str) -> None:
            super().__init__()
            self.do, self.follows = do, follows

        def trigger(self) -> None:
            try:
                v = self._libiec61850_mms_value
                value = iec.MmsValue_toFloat(iec.MmsValue_getElement(v, 0))
                # Called with the data model locked: update without locking again.
                now = int(time.time() * 1000)
                iec.IedServer_updateFloatAttributeValue(server, da(f"{self.do}.mxVal.f"), value)
                iec.IedServer_updateUTCTimeAttributeValue(server, da(f"{self.do}.t"), now)
                iec.IedServer_updateFloatAttributeValue(server, da(f"{self.follows}.mag.f"), value)
                iec.IedServer_updateUTCTimeAttributeValue(server, da(f"{self.follows}.t"), now)
                state["operates"] += 1
                self._libiec61850_control_handler_result = iec.CONTROL_RESULT_OK
            except Exception:
                self._libiec61850_control_handler_result = iec.CONTROL_RESULT_FAILED

    subs = []
    for do, follows in (("DRCC1.WSpt", "MMXU1.TotW"), ("DRCC1.VArSpt", "MMXU1.TotVAr")):
        sub = iec.ControlSubscriberForPython()
        sub.setIedServer(server)
        sub.setControlObject(
            iec.toDataObject(iec.IedModel_getModelNodeByObjectReference(model, f"{LD}/{do}"))
        )
        check, control = Check(), Control(do, follows)
        sub.setCheckHandler(check)
        sub.setControlHandler(control)
        check.__disown__()  # the subscriber deletes its handlers: C++ must own them
        control.__disown__()
        assert sub.subscribe()
        subs.append(sub)
    update("MMXU1.TotW.mag.f", 12_000.0)
    update("MMXU1.TotVAr.mag.f", -3_000.0)
    update("DRCT1.DERSt.stVal", 2)
    iec.IedServer_setLocalIpAddress(server, "127.0.0.1")
    iec.IedServer_start(server, port)
    if not iec.IedServer_isRunning(server):
        print(json.dumps({"error": f"cannot listen on {port}"}), flush=True)
        return
    print(json.dumps({"ready": port}), flush=True)
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        reply: dict[str, Any] = {"ok": True}
        if cmd == "set":
            update(msg["ref"], msg["value"], msg.get("q"), msg.get("t_ms"))
        elif cmd == "get":
            node = da(msg["ref"])
            reply["value"] = iec.MmsValue_toFloat(iec.IedServer_getAttributeValue(server, node))
        elif cmd == "state":
            reply.update(state, connections=iec.IedServer_getNumberOfOpenConnections(server))
        elif cmd == "stop":
            break
        print(json.dumps(reply), flush=True)
    lib.IedServer_stop(int(server))  # ctypes: releases the GIL while the server thread ends
    for sub in subs:
        iec._pyiec61850.delete_ControlSubscriberForPython(sub)
    subs.clear()
    iec.IedServer_destroy(server)
    iec.IedModel_destroy(model)
    print(json.dumps({"stopped": True}), flush=True)


class Ied:
    """The child-process IED, driven over its stdin/stdout."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Ied:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "serve", str(self.port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        reply = await self._reply()
        assert reply.get("ready") == self.port, reply
        return self

    async def _reply(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), WAIT)
            if not line:
                raise AssertionError("the test IED exited")
            if line.startswith(b"{"):
                return dict(json.loads(line))

    async def send(self, **msg: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._reply()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.send(cmd="stop")
        try:
            await asyncio.wait_for(self.proc.wait(), WAIT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        assert self.proc.returncode == 0, f"test IED exited with {self.proc.returncode}"


# --- the tests --------------------------------------------------------------------------------------


async def _until(pred: Any, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def _config(port: int, **over: Any) -> IEC61850ClientDriverConfig:
    data: dict[str, Any] = {
        "id": "ied1",
        "protocol": "iec61850",
        "host": "127.0.0.1",
        "port": port,
        "ied_name": "TEST",
        "reports": [f"{LD}/LLN0.RP.urcbMeas01"],
        "poll_interval_s": 60.0,
        "watchdog_s": 0.1,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 0.5,
        "timeout_s": 2.0,
        "connect_timeout_s": 2.0,
        "points": [
            {"ref": f"{LD}/MMXU1.TotW.mag.f", "point": P, "scale": 0.001},
            {"ref": f"{LD}/MMXU1.TotVAr.mag.f", "point": Q, "scale": 0.001},
            {"ref": f"{LD}/DRCC1.WSpt.mxVal.f", "point": PSET, "scale": 0.001,
             "command": "operate"},
            {"ref": f"{LD}/DRCC1.VArSpt.mxVal.f", "point": QSET, "scale": 0.001,
             "command": "operate"},
            {"ref": f"{LD}/DRCT1.DERSt.stVal", "fc": "ST", "point": STATE},
            {"ref": f"{LD}/DRCC1.WMax.setMag.f", "fc": "SP", "point": WMAX, "scale": 0.001,
             "command": "write"},
        ],
    }  # fmt: skip
    data.update(over)
    return IEC61850ClientDriverConfig.model_validate(data)


@pytest.fixture
def twin() -> Twin:
    return Twin.from_site(parse_site(SITE))


@pytest.fixture
async def ied(port: int):
    server = await Ied(port).start()
    yield server
    await server.stop()


@pytest.fixture
async def driver(twin: Twin, port: int, ied: Ied):
    d = IEC61850Driver(_config(port), twin)
    await d.start()
    await _until(lambda: d.connected, "the association")
    yield d
    await d.stop()


def test_quality_mapping_is_lossless_for_detail_bits() -> None:
    # libiec61850 numbers validity invalid 2 / reserved 1; the model numbers them 1 / 2.
    invalid = with_validity(FAILURE, Validity.INVALID)
    assert quality_to_mms(invalid) == 2 | 64
    assert quality_from_mms(2 | 64) == invalid
    assert quality_from_mms(3) == Validity.QUESTIONABLE
    for q in range(0, 1 << 13):
        assert quality_from_mms(quality_to_mms(q)) == q
    assert quality_from_mms(8192) == GOOD  # 'derived' has no model bit


async def test_values_arrive_with_quality_and_time(
    ied: Ied, driver: IEC61850Driver, twin: Twin
) -> None:
    # The refresh after connect read every point once.
    await _until(lambda: twin.get(STATE) is not None, "the first read")
    assert twin.get(P).value == pytest.approx(12.0)
    assert twin.get(Q).value == pytest.approx(-3.0)
    assert twin.get(STATE).value == 2 and isinstance(twin.get(STATE).value, int)
    assert twin.get(P).quality == GOOD
    # A change reaches the twin by report (polling is every 60 s here) with the IED's time.
    t_ms = int(time.time() * 1000) - 1500
    await ied.send(cmd="set", ref="MMXU1.TotW.mag.f", value=34_500.0, q=0, t_ms=t_ms)
    await _until(lambda: twin.get(P).value == pytest.approx(34.5), "the report")
    assert twin.get(P).ts == pytest.approx(t_ms / 1000, abs=0.002)
    assert twin.get(P).quality == GOOD
    # A quality change alone is reported too: invalid + failure in 61850-8-1 numbering.
    await ied.send(cmd="set", ref="MMXU1.TotW.mag.f", value=34_500.0, q=2 | 64)
    await _until(lambda: twin.get(P).quality != GOOD, "the quality report")
    assert twin.get(P).quality == with_validity(FAILURE, Validity.INVALID)
    assert driver.stats()["reports_enabled"] == [f"{LD}/LLN0.RP.urcbMeas01"]
    assert driver.counters["reports"] >= 2


async def test_controls_operate_directly_and_with_select(
    ied: Ied, driver: IEC61850Driver, twin: Twin
) -> None:
    path = CommandPath(twin, [driver])
    try:
        # Direct operate with enhanced security: SENT, then confirmed by the reported read-back.
        rec = await path.submit(Command(PSET, 45.0, "test", deadline=time.time() + WAIT))
        await _until(lambda: rec.done, "confirmation")
        assert [t.state for t in rec.history] == [
            CommandState.ACCEPTED,
            CommandState.SENT,
            CommandState.CONFIRMED,
        ]
        await _until(lambda: twin.get(P).value == pytest.approx(45.0), "the battery to follow")
        # Select before operate (the IED's ctlModel says sbo-with-enhanced-security).
        rec = await path.submit(Command(QSET, -20.0, "test", deadline=time.time() + WAIT))
        await _until(lambda: rec.done, "confirmation")
        assert [t.state for t in rec.history] == [
            CommandState.ACCEPTED,
            CommandState.SELECTED,
            CommandState.SENT,
            CommandState.CONFIRMED,
        ]
        await _until(lambda: twin.get(Q).value == pytest.approx(-20.0), "the battery to follow")
        # The IED refuses what its own limit does not allow: the AddCause is in the reason.
        rec = await path.submit(Command(PSET, 90.0, "test", deadline=time.time() + WAIT))
        await _until(lambda: rec.done, "refusal")
        assert rec.state == CommandState.FAILED
        assert "AddCause 10 blocked-by-interlocking" in rec.history[-1].reason
        # A plain write of an ASG set-point (FC SP).
        rec = await path.submit(Command(WMAX, 150.0, "test", deadline=time.time() + WAIT))
        await _until(lambda: rec.state in (CommandState.SENT, CommandState.FAILED), "the write")
        assert rec.state == CommandState.SENT, rec.history
        reply = await ied.send(cmd="get", ref="DRCC1.WMax.setMag.f")
        assert reply["value"] == pytest.approx(150_000.0)
        state = await ied.send(cmd="state")
        assert state["operates"] == 2 and state["refusals"] == 1
    finally:
        await path.close()


async def test_server_stop_makes_points_not_topical_and_restart_refreshes(
    twin: Twin, port: int
) -> None:
    ied = await Ied(port).start()
    d = IEC61850Driver(_config(port), twin)
    await d.start()
    try:
        await _until(lambda: d.connected and twin.get(P) is not None, "the association")
        await ied.stop()
        await _until(lambda: not d.connected, "the link loss")
        for ref in (P, Q, STATE):
            assert twin.get(ref).quality & OLD_DATA, ref
            assert twin.get(ref).quality & VALIDITY_MASK == Validity.QUESTIONABLE
        assert twin.get(P).value == pytest.approx(12.0)  # the last value stays
        ied = await Ied(port).start()
        await ied.send(cmd="set", ref="MMXU1.TotW.mag.f", value=7_000.0)
        await _until(lambda: d.connected, "the reconnect", timeout=15)
        await _until(lambda: twin.get(P).quality == GOOD, "the refresh")
        assert twin.get(P).value == pytest.approx(7.0)
        assert twin.get(STATE).quality == GOOD
        assert d.counters["reconnects"] >= 1
        # Reports work again on the new association.
        await ied.send(cmd="set", ref="MMXU1.TotW.mag.f", value=8_000.0)
        await _until(lambda: twin.get(P).value == pytest.approx(8.0), "a report after reconnect")
    finally:
        await d.stop()
        await ied.stop()


async def test_unreachable_ied_does_not_block_the_loop(twin: Twin, new_port: Any) -> None:
    # Nothing listens: connect fails in the worker thread while the loop keeps running.
    d = IEC61850Driver(_config(new_port()), twin)
    await d.start()
    ticks = 0
    t_end = time.monotonic() + 1.0
    while time.monotonic() < t_end:
        await asyncio.sleep(0.01)
        ticks += 1
    await d.stop()
    assert not d.connected
    assert ticks > 50
    assert "cannot connect" in d.last_error


async def test_refusal_of_unknown_or_readonly_points(driver: IEC61850Driver, twin: Twin) -> None:
    with pytest.raises(Exception) as ei:
        await driver.execute(Command(P, 1.0, "t"), lambda *_: None)
    assert getattr(ei.value, "code", "") == "no_route"


if __name__ == "__main__":  # pragma: no cover - the test IED's entry point
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        _serve(int(sys.argv[2]))
