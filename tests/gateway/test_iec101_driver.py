"""IEC 101 south driver against our outstation simulator: over a real pty pair and over TCP.

The simulator speaks the real wire format (FT1.2 frames, the 101 link procedures, ASDUs); the
driver reaches it through the real transports (pyserial on the pty slave, asyncio TCP).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.codecs.iec101 import (
    DoubleCommand,
    RegulatingStep,
    SetpointFloat,
    SetpointNormalized,
    SetpointScaled,
    SingleCommand,
)
from gateway.errors import DeviceError, DriverError, LinkDown
from gateway.south.iec101 import IEC101Driver, SetpointRangeError, command_object, family
from gateway.transports.pty import PtyBridge, open_pty
from model.command import Command, CommandState
from model.drivers_iec101 import IEC101DriverConfig, IEC101PointMap
from model.quality import GOOD, OLD_DATA, Quality, Validity
from model.sample import Sample
from model.site import SiteConfig
from tools.sim.iec101 import IEC101Simulator, site_simulator
from twin.twin import Twin


async def until(pred: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
    """Poll pred until it holds; fail naming what was awaited after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class RecordingSink:
    """A SampleSink that keeps everything and notes which thread called it."""

    def __init__(self) -> None:
        self.latest: dict[str, Sample] = {}
        self.batches = 0
        self.not_topical: list[set[str]] = []
        self.threads: set[int] = set()

    def apply(self, samples: list[Sample]) -> None:
        self.threads.add(threading.get_ident())
        self.batches += 1
        for s in samples:
            self.latest[s.point] = s

    def mark_not_topical(self, refs: Iterable[str], source: str = "") -> None:
        self.threads.add(threading.get_ident())
        self.not_topical.append(set(refs))


def ref(name: str) -> str:
    return f"T1.DEV/GGIO1.{name}.mag.f"


PV_P = "VPP1.PV01/MMXU1.TotW.mag.f"
PV_LIM = "VPP1.PV01/DRCC1.WSpt.setMag.f"
PV_ST = "VPP1.PV01/DRCT1.DERSt.stVal"
BAT_P = "VPP1.BAT01/MMXU1.TotW.mag.f"
BAT_SET = "VPP1.BAT01/DRCC1.WSpt.setMag.f"
BAT_SOC = "VPP1.BAT01/ZBAT1.SoC.mag.f"
HVAC_T = "VPP1.HVAC01/STMP1.Tmp.mag.f"
HVAC_SET = "VPP1.HVAC01/DRCC1.WSpt.setMag.f"


def der_config(link: str, **kw: Any) -> IEC101DriverConfig:
    """The demo site's feeder-1 DERs behind one IEC 101 outstation, with a mix of types."""
    pts = [
        {"ioa": 1001, "type": "M_ME_NC_1", "point": PV_P},
        {"ioa": 1003, "type": "M_ME_TF_1", "point": PV_LIM},
        {"ioa": 1004, "type": "M_ME_NB_1", "point": PV_ST},
        {"ioa": 1101, "type": "M_ME_TC_1", "point": BAT_P},
        {"ioa": 1103, "type": "M_ME_NC_1", "point": BAT_SET},
        {"ioa": 1104, "type": "M_ME_NB_1", "point": BAT_SOC, "scale": 0.01},
        {"ioa": 1203, "type": "M_ME_NA_1", "point": HVAC_SET, "scale": 100.0},
        {"ioa": 1204, "type": "M_ME_NC_1", "point": HVAC_T},
        {"ioa": 2001, "type": "C_SE_NC_1", "point": PV_LIM},
        {"ioa": 2101, "type": "C_SE_NC_1", "point": BAT_SET, "select_before_operate": True},
        {"ioa": 2201, "type": "C_SE_NA_1", "point": HVAC_SET, "scale": 100.0},
    ]
    base: dict[str, Any] = {
        "id": "rtu1",
        "protocol": "iec101",
        "link": link,
        "points": pts,
        "class2_poll_s": 0.1,
        "response_timeout_ms": 200,
        "retries": 2,
        "command_timeout_ms": 2000,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.4,
    }
    base.update(kw)
    return IEC101DriverConfig.model_validate(base)


def good(twin: Twin, refs: Iterable[str]) -> bool:
    return all((s := twin.get(r)) is not None and s.quality == GOOD for r in refs)


@dataclass
class Rig:
    sim: IEC101Simulator
    drv: IEC101Driver
    twin: Twin


@pytest.fixture
async def pty_rig(demo_site: SiteConfig) -> AsyncIterator[Rig]:
    pair = open_pty()
    cfg = der_config(f"serial://{pair.slave_path}?baudrate=9600&parity=E")
    sim = IEC101Simulator(cfg, demo_site, pty_fd=pair.master_fd, tick_s=0.2)
    twin = Twin.from_site(demo_site)
    drv = IEC101Driver(cfg, twin)
    await sim.start()
    await drv.start()
    try:
        yield Rig(sim, drv, twin)
    finally:
        await drv.stop()
        await sim.stop()
        pair.close()


async def test_pty_acquisition_commands_link_loss_and_recovery(pty_rig: Rig) -> None:
    sim, drv, twin = pty_rig.sim, pty_rig.drv, pty_rig.twin
    monitored = drv.monitored_points()
    assert monitored == {PV_P, PV_LIM, PV_ST, BAT_P, BAT_SET, BAT_SOC, HVAC_SET, HVAC_T}
    assert drv.command_points() == {PV_LIM, BAT_SET, HVAC_SET}
    await until(lambda: good(twin, monitored), "every point good over the pty")
    st = drv.stats()
    assert st["connected"] is True and st["state"] == "up"
    assert st["interrogations"] == 1 and st["clock_syncs"] == 1
    assert twin.get(PV_LIM).value == 120.0  # type: ignore[union-attr]
    assert twin.get(BAT_SOC).value == pytest.approx(sim.read(BAT_SOC), abs=0.01)  # type: ignore[union-attr]
    st_val = twin.get(PV_ST)
    assert (
        st_val is not None and st_val.value == 1 and type(st_val.value) is int
    )  # scaled, unscaled

    # Direct set-point: the simulated DER follows and the value is read back.
    reports: list[CommandState] = []
    await drv.execute(Command(PV_LIM, 80.0, "test"), lambda s, r: reports.append(s))
    assert reports == [CommandState.SENT]
    assert sim.read(PV_LIM) == 80.0
    await until(lambda: twin.get(PV_LIM).value == 80.0, "PV limit read back")  # type: ignore[union-attr]

    # Normalised set-point (scale 100): -40 kW travels as -0.4.
    await drv.execute(Command(HVAC_SET, -40.0, "test"), lambda s, r: None)
    assert sim.read(HVAC_SET) == pytest.approx(-40.0, abs=0.01)

    # Link loss: the outstation stops answering; after the retries the link is down.
    sim.mute = True
    await until(lambda: not drv.connected, "link down after retries")
    await until(lambda: all(twin.get(r).quality & OLD_DATA for r in monitored), "not topical")  # type: ignore[union-attr]
    assert Quality(twin.get(PV_LIM).quality).validity == Validity.QUESTIONABLE  # type: ignore[union-attr]
    assert twin.get(PV_LIM).value == 80.0  # last value kept  # type: ignore[union-attr]
    assert drv.stats()["link_losses"] == 1
    assert drv.stats()["link_retries"] >= 2  # the same FCB was sent again before giving up
    with pytest.raises(LinkDown):
        await drv.execute(Command(PV_LIM, 10.0, "test"), lambda s, r: None)

    # Recovery: the outstation answers again; the link is reset and everything refreshed.
    sim.write(PV_LIM, 33.0)
    sim.mute = False
    await until(lambda: drv.connected and drv.stats()["interrogations"] == 2, "link up + GI", 10.0)
    await until(lambda: good(twin, monitored), "every point good again")
    assert twin.get(PV_LIM).value == 33.0  # type: ignore[union-attr]
    assert drv.stats()["reconnects"] == 1
    assert drv.stats()["link_bad_frames"] == 0


async def test_pty_select_before_operate_into_the_twin(pty_rig: Rig) -> None:
    sim, drv, twin = pty_rig.sim, pty_rig.drv, pty_rig.twin
    await until(lambda: good(twin, drv.monitored_points()), "every point good")
    cmd = Command(BAT_SET, -20.0, "test")
    twin.accept_command(cmd)
    reports: list[CommandState] = []

    def to_book(state: CommandState, reason: str) -> None:
        reports.append(state)
        twin.commands.transition(cmd.id, state, reason)

    await drv.execute(cmd, to_book)
    assert reports == [CommandState.SELECTED, CommandState.SENT]
    assert sim.counters["commands_received"] == 2  # select, then execute
    assert sim.read(BAT_SET) == -20.0
    await until(lambda: twin.get(BAT_SET).value == -20.0, "set-point read back")  # type: ignore[union-attr]
    # The read-back came after SENT, as on the wire, so the twin confirmed the command.
    history = [t.state for t in twin.commands.get(cmd.id).history]
    assert history == [
        CommandState.ACCEPTED,
        CommandState.SELECTED,
        CommandState.SENT,
        CommandState.CONFIRMED,
    ]
    # The battery follows on the next steps and acquisition shows it (class 2 cyclic data).
    await until(lambda: twin.get(BAT_P).value == pytest.approx(-20.0, abs=0.5), "battery power")  # type: ignore[union-attr]

    # The outstation refuses: negative confirmation -> DeviceError naming the phase.
    sim.refuse.add(2101)
    with pytest.raises(DeviceError, match="negative select confirmation"):
        await drv.execute(Command(BAT_SET, 5.0, "test"), lambda s, r: None)
    sim.refuse.clear()
    # Clamped by the DER model: the read-back shows what the device really did.
    await drv.execute(Command(BAT_SET, 500.0, "test"), lambda s, r: None)
    await until(lambda: twin.get(BAT_SET).value == 60.0, "clamped read-back")  # type: ignore[union-attr]
    assert drv.stats()["commands_failed"] == 1


@pytest.mark.parametrize("mode", ["unbalanced", "balanced"])
async def test_tcp_tunnel_loss_and_reconnect(demo_site: SiteConfig, port: int, mode: str) -> None:
    cfg = der_config(f"tcp://127.0.0.1:{port}", mode=mode, test_interval_s=0.5)
    twin = Twin.from_site(demo_site)
    sim = IEC101Simulator(cfg, demo_site, tick_s=0.1, day_length_s=60.0)
    await sim.start()
    drv = IEC101Driver(cfg, twin)
    monitored = drv.monitored_points()
    await drv.start()
    try:
        await until(lambda: good(twin, monitored), f"every point good ({mode})")
        # The simulator keeps stepping: values keep arriving (class 2 cyclic / balanced sends).
        n = drv.stats()["samples"]
        await until(lambda: drv.stats()["samples"] > n + 3, "cyclic updates")
        await until(
            lambda: twin.get(HVAC_T).value == pytest.approx(sim.read(HVAC_T), abs=0.05),  # type: ignore[union-attr]
            "HVAC temperature follows the simulation",
        )
        reports: list[CommandState] = []
        await drv.execute(Command(BAT_SET, 10.0, "test"), lambda s, r: reports.append(s))
        assert reports == [CommandState.SELECTED, CommandState.SENT]
        await until(lambda: twin.get(BAT_SET).value == 10.0, "read-back")  # type: ignore[union-attr]

        # The tunnel goes away: the TCP connection closes, points become not topical.
        await sim.stop()
        await until(lambda: not drv.connected, "disconnected")
        await until(lambda: all(twin.get(r).quality & OLD_DATA for r in monitored), "not topical")  # type: ignore[union-attr]
        with pytest.raises(LinkDown):
            await drv.execute(Command(PV_LIM, 1.0, "test"), lambda s, r: None)

        # A new outstation on the same port, with another state: reconnect and refresh.
        sim = IEC101Simulator(cfg, demo_site, tick_s=0.1, day_length_s=60.0)
        sim.write(PV_LIM, 44.0)
        await sim.start()
        await until(lambda: drv.connected and drv.stats()["interrogations"] == 2, "reconnect + GI")
        await until(lambda: good(twin, monitored), "every point good again")
        assert twin.get(PV_LIM).value == 44.0  # type: ignore[union-attr]
        st = drv.stats()
        assert st["reconnects"] == 1 and st["errors"] == 0
        assert st["unknown_ioa"] == 0 and st["type_mismatches"] == 0
    finally:
        await drv.stop()
        await sim.stop()


# --- point types, quality, time tags, counters -------------------------------------------------


def plain_config(port: int, **kw: Any) -> IEC101DriverConfig:
    pm = IEC101PointMap
    points = [
        pm(ioa=1, type="M_SP_NA_1", point=ref("SP")),
        pm(ioa=2, type="M_DP_TB_1", point=ref("DP")),
        pm(ioa=3, type="M_ME_NA_1", point=ref("NA"), scale=1000.0),
        pm(ioa=4, type="M_ME_NB_1", point=ref("NB")),
        pm(ioa=5, type="M_ME_TF_1", point=ref("TF")),
        pm(ioa=6, type="M_IT_NA_1", point=ref("IT")),
        pm(ioa=7, type="M_ST_NA_1", point=ref("ST")),
        pm(ioa=8, type="M_ME_NC_1", point=ref("NAN")),
        pm(ioa=9, type="M_ME_NB_1", point=ref("OV"), scale=0.1),
        pm(ioa=70000, type="M_ME_NC_1", point=ref("BIG")),
        pm(ioa=101, type="C_SC_NA_1", point=ref("SC")),
        pm(ioa=102, type="C_DC_NA_1", point=ref("DC"), select_before_operate=True),
        pm(ioa=103, type="C_SE_NB_1", point=ref("SET"), scale=0.1),
    ]
    base: dict[str, Any] = {
        "id": "plain",
        "protocol": "iec101",
        "link": f"tcp://127.0.0.1:{port}",
        "link_address": 300,
        "link_address_size": 2,
        "cot_size": 2,
        "originator_address": 9,
        "ca_size": 2,
        "ioa_size": 3,
        "common_address": 1000,
        "class2_poll_s": 0.1,
        "response_timeout_ms": 300,
        "command_timeout_ms": 2000,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.4,
        "points": points,
    }
    base.update(kw)
    return IEC101DriverConfig.model_validate(base)


async def test_point_types_quality_time_and_counters(port: int) -> None:
    cfg = plain_config(port)
    sim = IEC101Simulator(cfg, tick_s=0.1, single_char_ack=True)
    sim.values.update(
        {ref("SP"): 1.0, ref("DP"): 2.0, ref("NA"): 250.0, ref("NB"): -1234.0, ref("TF"): 3.25,
         ref("IT"): 123456.0, ref("ST"): -5.0, ref("NAN"): math.nan, ref("OV"): 5000.0,
         ref("BIG"): 7.5}
    )  # fmt: skip
    await sim.start()
    sink = RecordingSink()
    drv = IEC101Driver(cfg, sink)
    await drv.start()
    try:
        monitored = drv.monitored_points()
        await until(lambda: monitored <= sink.latest.keys(), "a sample of every point")
        await until(lambda: drv.stats()["counter_interrogations"] == 1, "counter interrogation")
        got = sink.latest
        assert got[ref("SP")].value is True
        assert got[ref("DP")].value == 2 and type(got[ref("DP")].value) is int
        assert got[ref("NA")].value == pytest.approx(250.0, abs=0.05)  # 0.25 * 1000
        assert got[ref("NB")].value == -1234 and type(got[ref("NB")].value) is int
        assert got[ref("TF")].value == 3.25
        assert got[ref("IT")].value == 123456 and type(got[ref("IT")].value) is int
        assert got[ref("ST")].value == -5
        assert got[ref("BIG")].value == 7.5  # a 3-octet IOA
        # NaN in the device: invalid; 5000 / 0.1 does not fit 16 bits: overflow, questionable.
        assert Quality(got[ref("NAN")].quality).validity == Validity.INVALID
        assert Quality(got[ref("OV")].quality).validity == Validity.QUESTIONABLE
        assert got[ref("OV")].value == pytest.approx(3276.7)
        for r in ("SP", "DP", "NA", "NB", "TF", "IT", "ST", "BIG"):
            assert got[ref(r)].quality == GOOD, r
            assert got[ref(r)].source == "iec101:plain"
        # Time tags: the device clock runs an hour behind; CP56Time2a tags carry its time.
        sim.clock_offset = -3600.0
        sim.write(ref("TF"), 8.5)
        await until(lambda: sink.latest[ref("TF")].value == 8.5, "time-tagged value")
        assert sink.latest[ref("TF")].ts == pytest.approx(time.time() - 3600.0, abs=5.0)
        sim.write(ref("NB"), 7.0)
        await until(lambda: sink.latest[ref("NB")].value == 7, "untagged value")
        assert sink.latest[ref("NB")].ts == pytest.approx(time.time(), abs=5.0)

        # Commands on single/double/scaled points, with 2-octet COT/CA and 3-octet IOA.
        reports: list[CommandState] = []
        await drv.execute(Command(ref("SC"), True, "test"), lambda s, r: reports.append(s))
        assert sim.values[ref("SC")] == 1.0 and reports == [CommandState.SENT]
        reports.clear()
        await drv.execute(Command(ref("DC"), True, "test"), lambda s, r: reports.append(s))
        assert sim.values[ref("DC")] == 2.0
        assert reports == [CommandState.SELECTED, CommandState.SENT]
        await drv.execute(Command(ref("SET"), 12.3, "test"), lambda s, r: None)
        assert sim.values[ref("SET")] == pytest.approx(12.3)
        with pytest.raises(SetpointRangeError, match=r"-32768\.\.32767"):
            await drv.execute(Command(ref("SET"), 4000.0, "test"), lambda s, r: None)
        with pytest.raises(DriverError, match="not one of its command points"):
            await drv.execute(Command(ref("SP"), 1.0, "test"), lambda s, r: None)
        # An execute without select where the outstation demands one is refused.
        cfg_direct = cfg.points[11].model_copy(update={"select_before_operate": False})
        drv._cmd[ref("DC")] = cfg_direct
        with pytest.raises(DeviceError, match="negative execute confirmation"):
            await drv.execute(Command(ref("DC"), False, "test"), lambda s, r: None)
        # An IOA the outstation does not know: the negative mirror (COT 47) names it.
        drv._cmd[ref("DC")] = cfg_direct.model_copy(update={"ioa": 4242})
        with pytest.raises(DeviceError, match="unknown ioa"):
            await drv.execute(Command(ref("DC"), False, "test"), lambda s, r: None)
        st = drv.stats()
        assert st["commands"] == 5 and st["commands_failed"] == 2
        assert st["link_repeats"] == 0 and st["bad_asdus"] == 0
        assert sink.threads == {threading.get_ident()}
    finally:
        await drv.stop()
        await sim.stop()


async def test_nothing_listening_backs_off(port: int) -> None:
    sink = RecordingSink()
    drv = IEC101Driver(plain_config(port), sink)
    await drv.start()
    try:
        assert not drv.connected
        with pytest.raises(LinkDown, match="is down"):
            await drv.execute(Command(ref("SC"), True, "test"), lambda s, r: None)
        await asyncio.sleep(1.0)
        fails = drv.stats()["open_failures"]
        assert 3 <= fails <= 10, fails  # 0.1, 0.2, 0.4, 0.4 ... s
        assert sink.latest == {} and sink.not_topical == []
    finally:
        await drv.stop()


async def test_serial_device_missing_is_retried() -> None:
    cfg = der_config("serial:///dev/does-not-exist-iec101")
    drv = IEC101Driver(cfg, RecordingSink())
    await drv.start()
    try:
        await until(lambda: drv.stats()["open_failures"] >= 2, "reopen attempts")
        assert not drv.connected
    finally:
        await drv.stop()


# --- pure parts ---------------------------------------------------------------------------------


def test_command_objects_and_ranges() -> None:
    pm = IEC101PointMap
    assert command_object(pm(ioa=1, type="C_SC_NA_1", point=ref("X")), True) == SingleCommand(
        1, True
    )
    assert command_object(
        pm(ioa=1, type="C_DC_NA_1", point=ref("X")), False, True
    ) == DoubleCommand(1, 1, True)
    assert command_object(pm(ioa=1, type="C_RC_NA_1", point=ref("X")), 2) == RegulatingStep(1, 2)
    na = pm(ioa=2, type="C_SE_NA_1", point=ref("X"), scale=100.0)
    assert command_object(na, 50.0) == SetpointNormalized(2, 0.5)
    with pytest.raises(SetpointRangeError, match=r"outside -1\.\.1"):
        command_object(na, 150.0)
    nb = pm(ioa=3, type="C_SE_NB_1", point=ref("X"), scale=0.1, offset=-10.0)
    assert command_object(nb, 2.0) == SetpointScaled(3, 120)
    nc = pm(ioa=4, type="C_SE_NC_1", point=ref("X"))
    assert command_object(nc, 1.25, True) == SetpointFloat(4, 1.25, True)
    with pytest.raises(SetpointRangeError, match="finite"):
        command_object(nc, math.nan)
    with pytest.raises(SetpointRangeError, match=r"1 \(off\) or 2 \(on\)"):
        command_object(pm(ioa=5, type="C_DC_NA_1", point=ref("X")), 3)
    with pytest.raises(SetpointRangeError, match="select"):
        command_object(pm(ioa=6, type="C_BO_NA_1", point=ref("X")), 5, True)
    assert issubclass(SetpointRangeError, DeviceError) and issubclass(
        SetpointRangeError, ValueError
    )
    assert family("M_ME_TF_1") == family("M_ME_NC_1") == family("M_ME_TC_1") == "ME_NC"
    assert family("M_ME_ND_1") == family("M_ME_TD_1") == "ME_NA"
    assert family("M_SP_TA_1") == "SP"


def test_config_validation_names_the_problem() -> None:
    ok = der_config("tcp://127.0.0.1:4001")
    assert ok.bindings()[0] == ("points", 0, PV_P, False)
    assert ("points", 8, PV_LIM, True) in ok.bindings()
    bad: list[tuple[dict[str, Any], str]] = [
        ({"link": "udp://x:1"}, "serial:// or tcp://"),
        ({"link": "tcp://127.0.0.1"}, "host and port"),
        ({"link_address": 255}, "broadcast"),
        ({"link_address_size": 0}, "balanced mode only"),
        ({"common_address": 255}, "does not fit 1 octet"),
        ({"originator_address": 3}, "cot_size 2"),
        ({"ioa_size": 1}, "does not fit 1 octet"),
        ({"cot_size": 3}, "cot_size"),
        ({"points": [{"ioa": 1, "type": "M_XX_NA_1", "point": PV_P}]}, "unknown IEC 101 type"),
        ({"points": [{"ioa": 1, "type": "C_SE_TC_1", "point": PV_P}]}, "unknown IEC 101 type"),
        ({"points": [{"ioa": 1, "type": "M_ME_NC_1", "point": PV_P, "select_before_operate": True}]}, "command types only"),
        ({"points": [{"ioa": 1, "type": "M_ME_NC_1", "point": PV_P}, {"ioa": 1, "type": "M_ME_NC_1", "point": BAT_P}]}, "already used"),
    ]  # fmt: skip
    for update, match in bad:
        with pytest.raises(ValidationError, match=match):
            kw = dict(update)
            der_config(kw.pop("link", "tcp://127.0.0.1:4001"), **kw)
    balanced = der_config(
        "serial:///dev/ttyS0", mode="balanced", link_address=0, link_address_size=0
    )
    assert balanced.link_address_size == 0


def test_type_names_extend_iec104() -> None:
    from model.drivers import IEC104_COMMAND_TYPES, IEC104_MONITOR_TYPES
    from model.drivers_iec101 import IEC101_COMMAND_TYPES, IEC101_MONITOR_TYPES

    assert IEC104_MONITOR_TYPES < IEC101_MONITOR_TYPES
    assert IEC101_COMMAND_TYPES < IEC104_COMMAND_TYPES
    only_101 = {
        "M_SP_TA_1", "M_DP_TA_1", "M_ST_TA_1", "M_BO_TA_1", "M_ME_TA_1", "M_ME_TB_1",
        "M_ME_TC_1", "M_IT_TA_1", "M_ME_ND_1",
    }  # fmt: skip
    assert only_101 == IEC101_MONITOR_TYPES - IEC104_MONITOR_TYPES


@pytest.mark.parametrize("how", ["own_pty", "null_modem"])
async def test_site_simulator_on_a_serial_line(demo_site: SiteConfig, how: str) -> None:
    # As `vpp sim iec101` builds it (tools.sim.create_simulator passes site and driver id).
    bridge = PtyBridge().start() if how == "null_modem" else None
    try:
        dev = bridge.paths[0] if bridge is not None else None
        cfg = der_config("serial:///dev/placeholder?baudrate=19200&parity=E")
        # (model_copy: the site's DriverConfig union gets iec101 when it is wired in.)
        site = demo_site.model_copy(update={"drivers": [*demo_site.drivers, cfg]})
        sim = site_simulator(site, "rtu1", serial_port=dev, tick_s=0.2)
        path = bridge.paths[1] if bridge is not None else sim.serial_port
        assert path is not None
        drv_cfg = cfg.model_copy(update={"link": f"serial://{path}?baudrate=19200&parity=E"})
        twin = Twin.from_site(demo_site)
        drv = IEC101Driver(drv_cfg, twin)
        await sim.start()
        await drv.start()
        try:
            await until(lambda: good(twin, drv.monitored_points()), f"every point good ({how})")
            await drv.execute(Command(PV_LIM, 90.0, "test"), lambda s, r: None)
            assert sim.read(PV_LIM) == 90.0
        finally:
            await drv.stop()
            await sim.stop()
    finally:
        if bridge is not None:
            bridge.close()
