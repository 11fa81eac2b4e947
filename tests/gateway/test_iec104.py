"""IEC 104 south driver and outstation simulator against real c104 peers on loopback.

No ``from __future__ import annotations``: the c104 server callbacks defined here are checked
by c104 against their exact signature, type hints included.
"""

import asyncio
import datetime
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import c104
import pytest

from gateway.errors import DeviceError, DriverError, LinkDown
from gateway.south.iec104 import IEC104Driver, SetpointRangeError, to_wire
from model.command import Command, CommandState
from model.drivers import IEC104DriverConfig, IEC104PointMap
from model.quality import GOOD, OLD_DATA, OVERFLOW, Quality, Validity, from_iec104
from model.sample import Sample
from model.site import SiteConfig
from tools.sim.iec104 import IEC104Simulator
from twin.twin import Twin

DEMO_DRIVER = "ied104"
T_RECORDED = 1_600_000_000.125  # a CP56Time2a time tag the outstation sends (UTC epoch)


async def until(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll pred until it holds; fail naming what was awaited after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class RecordingSink:
    """A SampleSink that keeps everything and notes which thread called it."""

    def __init__(self) -> None:
        self.batches: list[list[Sample]] = []
        self.latest: dict[str, Sample] = {}
        self.not_topical: list[tuple[set[str], str]] = []
        self.threads: set[int] = set()

    def apply(self, samples: list[Sample]) -> None:
        self.threads.add(threading.get_ident())
        self.batches.append(list(samples))
        for s in samples:
            self.latest[s.point] = s

    def mark_not_topical(self, refs: Iterable[str], source: str = "") -> None:
        self.threads.add(threading.get_ident())
        self.not_topical.append((set(refs), source))


def ref(name: str) -> str:
    return f"T1.DEV/GGIO1.{name}.mag.f"


# --- a plain c104 outstation (not our simulator) -----------------------------------------------


@dataclass
class Outstation:
    """A c104.Server built by hand, with the points the driver config below maps."""

    server: c104.Server
    points: dict[int, c104.Point]
    commands: list[tuple[int, Any]] = field(default_factory=list)

    def set(self, ioa: int, info: c104.Information, transmit: bool = True) -> None:
        p = self.points[ioa]
        p.info = info
        if transmit:
            assert p.transmit(cause=c104.Cot.SPONTANEOUS)


def build_outstation(port: int) -> Outstation:
    server = c104.Server(ip="127.0.0.1", port=port, tick_rate_ms=50, select_timeout_ms=2000)
    st = server.add_station(common_address=7)
    assert st is not None
    pts: dict[int, c104.Point] = {}

    def add(ioa: int, t: c104.Type, **kw: Any) -> c104.Point:
        p = st.add_point(io_address=ioa, type=t, **kw)
        assert p is not None
        pts[ioa] = p
        return p

    add(101, c104.Type.M_ME_NC_1).value = 12.5
    add(102, c104.Type.M_ME_NB_1).value = c104.Int16(-1234)
    add(103, c104.Type.M_ME_NA_1).value = c104.NormalizedFloat(0.5)
    add(104, c104.Type.M_SP_NA_1).value = True
    add(105, c104.Type.M_DP_NA_1).value = c104.Double.ON
    add(106, c104.Type.M_ME_NB_1).value = c104.Int16(7)
    # c104 takes naive datetimes as local time and puts them on the wire as UTC.
    tag = datetime.datetime.fromtimestamp(T_RECORDED)
    add(107, c104.Type.M_ME_TF_1).info = c104.ShortInfo(
        actual=3.25, quality=c104.Quality.Invalid, recorded_at=tag
    )
    add(108, c104.Type.M_ME_NC_1).info = c104.ShortInfo(
        actual=-1.0, quality=c104.Quality.NonTopical
    )
    # (c104 2.2.1 only accepts this constructor with quality given explicitly.)
    add(109, c104.Type.M_IT_NA_1).info = c104.BinaryCounterInfo(
        counter=123456, sequence=c104.UInt5(1), quality=c104.BinaryCounterQuality()
    )
    # Configured M_ME_NC_1 in the driver, sent time-tagged: same information, other type id.
    add(110, c104.Type.M_ME_TF_1).info = c104.ShortInfo(actual=4.0, recorded_at=tag)
    add(150, c104.Type.M_ME_NC_1).value = 99.0  # not in the driver's map
    out = Outstation(server, pts)

    def accept(
        point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        out.commands.append((point.io_address, point.value))
        return c104.ResponseState.SUCCESS

    def refuse(
        point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        out.commands.append((point.io_address, point.value))
        return c104.ResponseState.FAILURE

    add(201, c104.Type.C_SE_NC_1).on_receive(callable=accept)
    add(202, c104.Type.C_SE_NC_1).on_receive(callable=refuse)
    sbo = c104.CommandMode.SELECT_AND_EXECUTE
    add(203, c104.Type.C_SE_NC_1, command_mode=sbo).on_receive(callable=accept)
    add(204, c104.Type.C_SE_NB_1).on_receive(callable=accept)
    add(205, c104.Type.C_SC_NA_1).on_receive(callable=accept)
    add(206, c104.Type.C_DC_NA_1, command_mode=sbo).on_receive(callable=accept)
    return out


def plain_config(port: int, **kw: Any) -> IEC104DriverConfig:
    pm = IEC104PointMap
    points = [
        pm(ioa=101, type="M_ME_NC_1", point=ref("A"), scale=2.0, offset=1.0),
        pm(ioa=102, type="M_ME_NB_1", point=ref("B"), scale=0.1),
        pm(ioa=103, type="M_ME_NA_1", point=ref("C"), scale=100.0),
        pm(ioa=104, type="M_SP_NA_1", point=ref("D")),
        pm(ioa=105, type="M_DP_NA_1", point=ref("E")),
        pm(ioa=106, type="M_ME_NB_1", point=ref("F")),
        pm(ioa=107, type="M_ME_TF_1", point=ref("G")),
        pm(ioa=108, type="M_ME_NC_1", point=ref("H")),
        pm(ioa=109, type="M_IT_NA_1", point=ref("I")),
        pm(ioa=110, type="M_ME_NC_1", point=ref("J")),
        pm(ioa=201, type="C_SE_NC_1", point=ref("SP1"), scale=10.0, offset=5.0),
        pm(ioa=202, type="C_SE_NC_1", point=ref("SP2")),
        pm(ioa=203, type="C_SE_NC_1", point=ref("SP3"), select_before_operate=True),
        pm(ioa=204, type="C_SE_NB_1", point=ref("SP4"), scale=0.01),
        pm(ioa=205, type="C_SC_NA_1", point=ref("SC")),
        # The outstation demands select-before-operate here, the map does not.
        pm(ioa=206, type="C_DC_NA_1", point=ref("DC")),
    ]
    base: dict[str, Any] = {
        "id": "plain",
        "protocol": "iec104",
        "host": "127.0.0.1",
        "port": port,
        "common_address": 7,
        "command_timeout_ms": 1000,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.4,
        "points": points,
    }
    base.update(kw)
    return IEC104DriverConfig.model_validate(base)


@pytest.fixture
def outstation(port: int) -> Iterator[Outstation]:
    o = build_outstation(port)
    o.server.start()
    try:
        yield o
    finally:
        o.server.stop()


@pytest.fixture
async def plain(
    outstation: Outstation, port: int
) -> AsyncIterator[tuple[IEC104Driver, RecordingSink]]:
    sink = RecordingSink()
    drv = IEC104Driver(plain_config(port), sink)
    await drv.start()
    try:
        await until(lambda: drv.connected and drv.stats()["interrogations"] >= 1, "connect + GI")
        yield drv, sink
    finally:
        await drv.stop()


async def test_interrogation_delivers_every_point_scaled_with_quality_and_time(
    plain: tuple[IEC104Driver, RecordingSink],
) -> None:
    drv, sink = plain
    monitored = drv.monitored_points()
    assert monitored == {ref(c) for c in "ABCDEFGHIJ"}
    assert drv.command_points() == {ref(c) for c in ("SP1", "SP2", "SP3", "SP4", "SC", "DC")}
    await until(lambda: monitored <= sink.latest.keys(), "a sample of every monitored point")
    got = sink.latest
    t_recv = time.time()

    assert got[ref("A")].value == 26.0  # 12.5 * 2 + 1
    assert got[ref("B")].value == pytest.approx(-123.4)  # scaled -1234 * 0.1
    assert got[ref("C")].value == pytest.approx(50.0, abs=0.01)  # normalised 0.5 * 100
    assert got[ref("D")].value is True
    assert got[ref("E")].value == 2 and type(got[ref("E")].value) is int  # double point ON
    assert got[ref("F")].value == 7 and type(got[ref("F")].value) is int  # unscaled stays int
    assert got[ref("I")].value == 123456 and type(got[ref("I")].value) is int  # counter (CI)
    assert got[ref("J")].value == 4.0  # sent as M_ME_TF_1, mapped as M_ME_NC_1: accepted

    for c in "ABCDEFIJ":
        assert got[ref(c)].quality == GOOD, c
        assert got[ref(c)].source == "iec104:plain"
    # IV from the outstation -> invalid; NT -> oldData (questionable).
    assert Quality(got[ref("G")].quality).validity == Validity.INVALID
    assert got[ref("H")].quality & OLD_DATA
    assert Quality(got[ref("H")].quality).validity == Validity.QUESTIONABLE

    # CP56Time2a time tags are used as the sample time; untagged values get the receive time.
    assert got[ref("G")].ts == pytest.approx(T_RECORDED, abs=0.001)
    assert got[ref("J")].ts == pytest.approx(T_RECORDED, abs=0.001)
    assert abs(got[ref("A")].ts - t_recv) < 5.0

    # (Counted on ACT_TERM, which follows the values it terminates.)
    await until(lambda: drv.stats()["counter_interrogations"] == 1, "counter interrogation")
    st = drv.stats()
    assert st["connected"] is True and st["state"] == "OPEN"
    assert st["interrogations"] == 1
    assert st["clock_syncs"] == 1
    assert st["samples"] >= len(monitored)
    assert st["unknown_ioa"] >= 1  # IOA 150 is not in the map: counted, not a crash
    # The sink is only ever called from the event loop's thread.
    assert sink.threads == {threading.get_ident()}


async def test_spontaneous_changes_arrive_with_quality_and_time(
    plain: tuple[IEC104Driver, RecordingSink], outstation: Outstation
) -> None:
    _, sink = plain
    await until(lambda: ref("A") in sink.latest, "first value")

    outstation.set(101, c104.ShortInfo(actual=20.0))
    await until(lambda: sink.latest[ref("A")].value == 41.0, "spontaneous 20.0 -> 41.0")
    assert sink.latest[ref("A")].quality == GOOD

    outstation.set(101, c104.ShortInfo(actual=21.0, quality=c104.Quality.Invalid))
    await until(lambda: sink.latest[ref("A")].value == 43.0, "invalid value")
    assert Quality(sink.latest[ref("A")].quality).validity == Validity.INVALID

    outstation.set(102, c104.ScaledInfo(actual=c104.Int16(5), quality=c104.Quality.Overflow))
    await until(lambda: sink.latest[ref("B")].value == pytest.approx(0.5), "overflow value")
    assert sink.latest[ref("B")].quality & OVERFLOW

    tag = T_RECORDED + 3600.5
    outstation.set(
        107, c104.ShortInfo(actual=8.5, recorded_at=datetime.datetime.fromtimestamp(tag))
    )
    await until(lambda: sink.latest[ref("G")].value == 8.5, "time-tagged value")
    assert sink.latest[ref("G")].ts == pytest.approx(tag, abs=0.001)
    assert sink.latest[ref("G")].quality == GOOD

    outstation.set(105, c104.DoubleInfo(state=c104.Double.OFF))
    await until(lambda: sink.latest[ref("E")].value == 1, "double point OFF")
    assert sink.threads == {threading.get_ident()}


async def test_commands_against_plain_outstation(
    plain: tuple[IEC104Driver, RecordingSink], outstation: Outstation
) -> None:
    drv, _ = plain
    reports: list[tuple[CommandState, str]] = []

    def report(state: CommandState, reason: str) -> None:
        reports.append((state, reason))

    # Direct set-point: raw = (value - offset) / scale = (105 - 5) / 10.
    await drv.execute(Command(ref("SP1"), 105.0, "test"), report)
    assert outstation.commands[-1] == (201, 10.0)
    assert [s for s, _ in reports] == [CommandState.SENT]

    # Select-before-operate from the point map.
    reports.clear()
    await drv.execute(Command(ref("SP3"), 7.5, "test"), report)
    assert [s for s, _ in reports] == [CommandState.SELECTED, CommandState.SENT]
    assert outstation.commands[-1] == (203, 7.5)

    # Scaled set-point: 12.34 / 0.01 -> 1234 on the wire.
    await drv.execute(Command(ref("SP4"), 12.34, "test"), report)
    ioa, v = outstation.commands[-1]
    assert ioa == 204 and int(v) == 1234

    await drv.execute(Command(ref("SC"), True, "test"), report)
    assert outstation.commands[-1] == (205, True)

    # The outstation's callback answers FAILURE: negative confirmation -> DeviceError.
    reports.clear()
    with pytest.raises(DeviceError, match="negative execute confirmation"):
        await drv.execute(Command(ref("SP2"), 1.0, "test"), report)
    assert reports == []

    # The outstation demands select-before-operate; a direct execute is refused by c104.
    with pytest.raises(DeviceError, match="negative"):
        await drv.execute(Command(ref("DC"), True, "test"), report)
    # ... and works when the command asks for select-before-operate itself.
    reports.clear()
    await drv.execute(Command(ref("DC"), True, "test", select_before_operate=True), report)
    assert [s for s, _ in reports] == [CommandState.SELECTED, CommandState.SENT]
    assert outstation.commands[-1] == (206, c104.Double.ON)

    # Out of range for a scaled set-point: a typed error, nothing sent.
    n = len(outstation.commands)
    with pytest.raises(SetpointRangeError, match=r"-32768\.\.32767"):
        await drv.execute(Command(ref("SP4"), 400.0, "test"), report)
    assert len(outstation.commands) == n

    with pytest.raises(DriverError, match="not one of its command points"):
        await drv.execute(Command(ref("A"), 1.0, "test"), report)

    st = drv.stats()
    assert st["commands"] == 7 and st["commands_failed"] == 2


async def test_periodic_interrogation(outstation: Outstation, port: int) -> None:
    sink = RecordingSink()
    drv = IEC104Driver(plain_config(port, interrogation_period_s=0.2, clock_sync=False), sink)
    await drv.start()
    try:
        await until(
            lambda: drv.stats()["counter_interrogations"] >= 3, "three interrogations (GI + CI)"
        )
        assert drv.stats()["interrogations"] >= 3
        assert drv.stats()["clock_syncs"] == 0
        assert drv.stats()["errors"] == 0
    finally:
        await drv.stop()


async def test_command_while_disconnected_raises_link_down(port: int) -> None:
    sink = RecordingSink()
    drv = IEC104Driver(plain_config(port, reconnect_min_s=0.1, reconnect_max_s=0.2), sink)
    await drv.start()  # nobody listens on port
    try:
        assert not drv.connected
        with pytest.raises(LinkDown, match=r"link to 127\.0\.0\.1"):
            await drv.execute(Command(ref("SP1"), 1.0, "test"), lambda s, r: None)
        # Reconnect attempts follow our backoff (0.1, 0.2, 0.2 ...), not c104's own 1 s redial.
        await asyncio.sleep(1.2)
        attempts = drv.stats()["connect_failures"]
        assert 4 <= attempts <= 12, attempts
        assert sink.batches == []
    finally:
        await drv.stop()


def test_command_value_conversion_and_ranges() -> None:
    pm = IEC104PointMap
    na = pm(ioa=1, type="C_SE_NA_1", point=ref("X"), scale=100.0)
    assert float(to_wire(na, 50.0)) == pytest.approx(0.5, abs=1e-4)
    with pytest.raises(SetpointRangeError, match=r"outside -1\.\.1"):
        to_wire(na, 150.0)
    nb = pm(ioa=2, type="C_SE_NB_1", point=ref("X"), scale=0.1, offset=-10.0)
    assert int(to_wire(nb, 2.0)) == 120  # (2 - -10) / 0.1
    with pytest.raises(SetpointRangeError):
        to_wire(nb, 4000.0)
    nc = pm(ioa=3, type="C_SE_NC_1", point=ref("X"))
    assert to_wire(nc, 1.25) == 1.25
    with pytest.raises(SetpointRangeError, match="finite"):
        to_wire(nc, math.nan)
    dc = pm(ioa=4, type="C_DC_NA_1", point=ref("X"))
    assert to_wire(dc, False) == c104.Double.OFF
    assert to_wire(dc, 2) == c104.Double.ON
    with pytest.raises(SetpointRangeError, match="1 \\(off\\) or 2 \\(on\\)"):
        to_wire(dc, 3)
    # The range error is both a DeviceError (driver error hierarchy) and a ValueError.
    assert issubclass(SetpointRangeError, DeviceError) and issubclass(
        SetpointRangeError, ValueError
    )


# --- against our simulator ---------------------------------------------------------------------


def demo_on(site: SiteConfig, port: int, **kw: Any) -> tuple[SiteConfig, IEC104DriverConfig]:
    """The demo site with its IEC 104 driver moved to port (and other settings changed)."""
    drivers = []
    cfg: IEC104DriverConfig | None = None
    for d in site.drivers:
        if d.id == DEMO_DRIVER:
            assert isinstance(d, IEC104DriverConfig)
            d = cfg = d.model_copy(update={"port": port, **kw})
        drivers.append(d)
    assert cfg is not None
    return site.model_copy(update={"drivers": drivers}), cfg


def good(twin: Twin, refs: Iterable[str]) -> bool:
    return all((s := twin.get(r)) is not None and s.quality == GOOD for r in refs)


async def test_outstation_loss_marks_not_topical_and_reconnect_refreshes(
    demo_site: SiteConfig, port: int
) -> None:
    site, cfg = demo_on(demo_site, port, reconnect_min_s=0.1, reconnect_max_s=0.3)
    twin = Twin.from_site(site)
    sim = IEC104Simulator(site, DEMO_DRIVER)
    sim.start()
    drv = IEC104Driver(cfg, twin)
    monitored = drv.monitored_points()
    assert len(monitored) == 15
    await drv.start()
    try:
        await until(lambda: good(twin, monitored), "every point good")
        pv_lim = "VPP1.PV01/DRCC1.WSpt.setMag.f"
        assert twin.get(pv_lim).value == 120.0  # type: ignore[union-attr]

        # Kill the outstation mid-stream.
        sim.step(1.0)
        sim.stop()
        await until(
            lambda: all(twin.get(r).quality & OLD_DATA for r in monitored),  # type: ignore[union-attr]
            "every point not topical",
        )
        assert not drv.connected
        assert Quality(twin.get(pv_lim).quality).validity == Validity.QUESTIONABLE  # type: ignore[union-attr]
        assert twin.get(pv_lim).value == 120.0  # last value kept  # type: ignore[union-attr]
        assert drv.stats()["link_losses"] == 1
        with pytest.raises(LinkDown):
            await drv.execute(Command(pv_lim, 10.0, "test"), lambda s, r: None)

        # A new outstation on the same port, with a different state.
        sim = IEC104Simulator(site, DEMO_DRIVER)
        sim.binding.write(pv_lim, 33.0)
        sim.step(1.0)
        sim.start()
        await until(lambda: good(twin, monitored), "every point good again", timeout=8.0)
        assert twin.get(pv_lim).value == 33.0  # type: ignore[union-attr]
        await until(lambda: drv.stats()["interrogations"] == 2, "second interrogation")
        assert drv.stats()["reconnects"] == 1
    finally:
        await drv.stop()
        sim.stop()


async def test_setpoints_against_simulator_read_back_in_twin(
    demo_site: SiteConfig, port: int
) -> None:
    site, cfg = demo_on(demo_site, port)
    twin = Twin.from_site(site)
    sim = IEC104Simulator(site, DEMO_DRIVER)
    sim.start()
    drv = IEC104Driver(cfg, twin)
    await drv.start()
    try:
        await until(lambda: good(twin, drv.monitored_points()), "every point good")
        reports: list[CommandState] = []

        # Direct C_SE_NC_1: PV curtailment limit.
        pv_lim = "VPP1.PV01/DRCC1.WSpt.setMag.f"
        await drv.execute(Command(pv_lim, 50.0, "test"), lambda s, r: reports.append(s))
        assert reports == [CommandState.SENT]
        assert sim.binding.read(pv_lim) == 50.0  # the simulated DER changed
        await until(lambda: twin.get(pv_lim).value == 50.0, "PV limit read-back")  # type: ignore[union-attr]

        # Select-before-operate C_SE_NC_1 (the map says so for BAT01's P set-point).
        reports.clear()
        bat_set, bat_p = "VPP1.BAT01/DRCC1.WSpt.setMag.f", "VPP1.BAT01/MMXU1.TotW.mag.f"
        cmd = Command(bat_set, -20.0, "test")
        twin.accept_command(cmd)

        def to_book(state: CommandState, reason: str) -> None:
            reports.append(state)
            twin.commands.transition(cmd.id, state, reason)

        await drv.execute(cmd, to_book)
        assert reports == [CommandState.SELECTED, CommandState.SENT]
        assert sim.commands_received == 2
        await until(lambda: twin.get(bat_set).value == -20.0, "set-point read-back")  # type: ignore[union-attr]
        # The read-back came after SENT (as on the wire), so the twin confirmed the command.
        history = [t.state for t in twin.commands.get(cmd.id).history]
        assert history == [
            CommandState.ACCEPTED,
            CommandState.SELECTED,
            CommandState.SENT,
            CommandState.CONFIRMED,
        ]
        # The battery follows on the next steps (ramp 600 kW/min) and acquisition shows it.
        sim.step(1.0)
        sim.step(1.0)
        await until(lambda: twin.get(bat_p).value == pytest.approx(-20.0), "battery power")  # type: ignore[union-attr]

        # Clamped by the DER model: the read-back shows what the device really did.
        await drv.execute(Command(bat_set, 500.0, "test"), lambda s, r: None)
        await until(lambda: twin.get(bat_set).value == 60.0, "clamped read-back")  # type: ignore[union-attr]
    finally:
        await drv.stop()
        sim.stop()


async def test_demo_site_end_to_end(demo_site: SiteConfig, port: int) -> None:
    site, cfg = demo_on(demo_site, port)
    twin = Twin.from_site(site)
    sim = IEC104Simulator(site, DEMO_DRIVER, tick_s=0.1, day_length_s=60.0)
    assert sim.port == port
    stop = asyncio.Event()
    serving = asyncio.create_task(sim.serve(stop))
    drv = IEC104Driver(cfg, twin)
    await drv.start()
    try:
        monitored = drv.monitored_points()
        await until(lambda: good(twin, monitored), "every point good")
        state = twin.get("VPP1.HVAC01/DRCT1.DERSt.stVal")
        assert state is not None and state.value == 1 and type(state.value) is int
        soc = twin.get("VPP1.BAT01/ZBAT1.SoC.mag.f")
        assert soc is not None and 10.0 <= float(soc.value) <= 95.0
        # The simulator keeps ticking: spontaneous updates keep arriving.
        n = drv.stats()["samples"]
        await until(lambda: drv.stats()["samples"] > n + 5, "spontaneous updates")
        temp = "VPP1.HVAC01/STMP1.Tmp.mag.f"
        await until(
            lambda: twin.get(temp).value == pytest.approx(sim.binding.read(temp), abs=0.05),  # type: ignore[union-attr]
            "HVAC temperature follows the simulation",
        )
        hvac_set = "VPP1.HVAC01/DRCC1.WSpt.setMag.f"
        await drv.execute(Command(hvac_set, -40.0, "test"), lambda s, r: None)
        await until(lambda: twin.get(hvac_set).value == -40.0, "HVAC set-point read-back")  # type: ignore[union-attr]
        st = drv.stats()
        assert st["errors"] == 0 and st["unknown_ioa"] == 0 and st["type_mismatches"] == 0
    finally:
        await drv.stop()
        stop.set()
        await asyncio.wait_for(serving, 5.0)
    assert not sim.has_clients


# --- every monitor type, type mismatches, a stream (values are decoded from the raw frames) ----

T_TAG = 1_700_000_000.25
_Q: Any = c104.Quality  # (c104's stubs lack the flag operators)
_BCQ: Any = c104.BinaryCounterQuality

# (IOA, type, what the outstation holds, expected value, expected IEC 104 flags, time-tagged)
EVERY_TYPE: list[tuple[int, str, Callable[[], c104.Information], Any, int, bool]] = [
    (1, "M_SP_NA_1", lambda: c104.SingleInfo(on=True, quality=_Q.Blocked), True, 0x10, False),
    (2, "M_SP_TB_1", lambda: c104.SingleInfo(on=False, quality=_Q.Invalid, recorded_at=tag()),
     False, 0x80, True),
    (3, "M_DP_NA_1", lambda: c104.DoubleInfo(state=c104.Double.INTERMEDIATE), 0, 0, False),
    (4, "M_DP_TB_1", lambda: c104.DoubleInfo(
        state=c104.Double.OFF, quality=_Q.Substituted, recorded_at=tag()), 1, 0x20, True),
    (5, "M_ST_NA_1", lambda: c104.StepInfo(
        c104.Int7(-5), True, _Q.Overflow), -5, 0x01, False),
    (6, "M_ST_TB_1", lambda: c104.StepInfo(c104.Int7(63), False, _Q(), tag()), 63, 0, True),
    (7, "M_BO_NA_1", lambda: c104.BinaryInfo(blob=c104.Byte32(bytes.fromhex("78563412"))),
     0x12345678, 0, False),
    (8, "M_BO_TB_1", lambda: c104.BinaryInfo(
        blob=c104.Byte32(bytes.fromhex("ff000080")), recorded_at=tag()), 0x800000FF, 0, True),
    (9, "M_ME_NA_1", lambda: c104.NormalizedInfo(actual=c104.NormalizedFloat(-0.25)),
     -0.25, 0, False),
    (10, "M_ME_TD_1", lambda: c104.NormalizedInfo(
        actual=c104.NormalizedFloat(0.75), recorded_at=tag()), 0.75, 0, True),
    (11, "M_ME_NB_1", lambda: c104.ScaledInfo(actual=c104.Int16(-32768)), -32768, 0, False),
    (12, "M_ME_TE_1", lambda: c104.ScaledInfo(
        actual=c104.Int16(32767), quality=_Q.Substituted, recorded_at=tag()), 32767, 0x20, True),
    (13, "M_ME_NC_1", lambda: c104.ShortInfo(actual=1.5, quality=_Q.NonTopical | _Q.Blocked),
     1.5, 0x50, False),
    (14, "M_ME_TF_1", lambda: c104.ShortInfo(actual=-2.5, recorded_at=tag()), -2.5, 0, True),
    # BCR (7.2.6.9): CY (carry) -> overflow, IV -> invalid, CA (adjusted) has no 61850 meaning.
    (15, "M_IT_NA_1", lambda: c104.BinaryCounterInfo(
        counter=-7, sequence=c104.UInt5(3), quality=_BCQ.Carry), -7, 0x01, False),
    (16, "M_IT_TB_1", lambda: c104.BinaryCounterInfo(
        counter=2**31 - 1, sequence=c104.UInt5(31), quality=_BCQ.Invalid | _BCQ.Adjusted,
        recorded_at=tag()), 2**31 - 1, 0x80, True),
]  # fmt: skip


def tag() -> datetime.datetime:
    # c104 takes naive datetimes as local time and puts them on the wire as UTC.
    return datetime.datetime.fromtimestamp(T_TAG)


def every_type_ref(ioa: int) -> str:
    return ref(f"T{ioa}")


async def test_every_monitor_type_arrives_with_value_quality_and_time_tag(port: int) -> None:
    server = c104.Server(ip="127.0.0.1", port=port, tick_rate_ms=50)
    st = server.add_station(common_address=3)
    assert st is not None
    points: dict[int, c104.Point] = {}
    for ioa, type_name, info, *_ in EVERY_TYPE:
        p = st.add_point(io_address=ioa, type=getattr(c104.Type, type_name))
        assert p is not None
        p.info = info()
        points[ioa] = p
    server.start()
    sink = RecordingSink()
    cfg = plain_config(
        port,
        common_address=3,
        points=[IEC104PointMap(ioa=i, type=t, point=every_type_ref(i)) for i, t, *_ in EVERY_TYPE],
    )
    drv = IEC104Driver(cfg, sink)
    await drv.start()
    try:
        refs = {every_type_ref(i) for i, *_ in EVERY_TYPE}
        await until(lambda: refs <= sink.latest.keys(), "every type in the interrogation")
        await until(lambda: drv.stats()["counter_interrogations"] == 1, "counter interrogation")
        for phase in ("interrogation", "spontaneous"):
            if phase == "spontaneous":
                sink.latest.clear()
                t_sent = time.time()
                for p in points.values():
                    assert p.transmit(cause=c104.Cot.SPONTANEOUS)
                await until(lambda: refs <= sink.latest.keys(), "every type spontaneously")
            t_recv = time.time()
            for ioa, type_name, _, value, flags, timed in EVERY_TYPE:
                s = sink.latest[every_type_ref(ioa)]
                what = f"{type_name} ({phase})"
                assert s.value == value and type(s.value) is type(value), what
                assert s.quality == from_iec104(flags), what
                if timed:
                    assert s.ts == pytest.approx(T_TAG, abs=0.001), what
                else:
                    assert abs(s.ts - t_recv) < 5.0, what
                    if phase == "spontaneous":
                        assert s.ts >= t_sent - 0.001, what
        st_ = drv.stats()
        assert st_["errors"] == 0 and st_["type_mismatches"] == 0
        assert sink.threads == {threading.get_ident()}
    finally:
        await drv.stop()
        server.stop()


async def test_other_kind_of_information_is_counted_and_ignored(
    outstation: Outstation, port: int
) -> None:
    pm = IEC104PointMap
    # The outstation sends IOA 104 as M_SP_NA_1 (single point) and IOA 105 as M_DP_NA_1: mapped
    # here as a measured value and as a command point, both are another kind of information.
    points = [
        pm(ioa=101, type="M_ME_NC_1", point=ref("A")),
        pm(ioa=104, type="M_ME_NC_1", point=ref("D")),
        pm(ioa=105, type="C_DC_NA_1", point=ref("E")),
    ]
    sink = RecordingSink()
    drv = IEC104Driver(plain_config(port, points=points), sink)
    await drv.start()
    try:
        await until(lambda: drv.stats()["interrogations"] >= 1, "connect + GI")
        await until(lambda: drv.stats()["type_mismatches"] >= 2, "two type mismatches")
        assert sink.latest[ref("A")].value == 12.5
        assert ref("D") not in sink.latest and ref("E") not in sink.latest
        assert drv.stats()["errors"] >= 2
    finally:
        await drv.stop()


async def test_a_stream_arrives_complete_and_in_order(port: int) -> None:
    n_points, total, rate = 90, 3000, 5000.0
    server = c104.Server(ip="127.0.0.1", port=port, tick_rate_ms=50)
    st = server.add_station(common_address=1)
    assert st is not None
    pts = []
    for i in range(n_points):
        p = st.add_point(io_address=i + 1, type=c104.Type.M_ME_NC_1)
        assert p is not None
        pts.append(p)
    server.start()
    sink = RecordingSink()
    cfg = plain_config(
        port,
        common_address=1,
        points=[
            IEC104PointMap(ioa=i + 1, type="M_ME_NC_1", point=ref(f"S{i}")) for i in range(n_points)
        ],
    )
    drv = IEC104Driver(cfg, sink)
    await drv.start()
    try:
        await until(lambda: drv.stats()["interrogations"] >= 1, "connect + GI")
        # Unique values 1..total, 30 per message (c104 batches), paced at `rate` values/s.
        t0 = time.perf_counter()
        for k in range(0, total, 30):
            batch = []
            for j in range(k, k + 30):
                p = pts[j % n_points]
                p.value = float(j + 1)
                batch.append(p)
            assert server.transmit_batch(c104.Batch(cause=c104.Cot.SPONTANEOUS, points=batch))
            await asyncio.sleep(max(0.0, t0 + (k + 30) / rate - time.perf_counter()))

        def streamed() -> list[float]:
            return [float(s.value) for b in sink.batches for s in b if s.value >= 1]

        await until(lambda: len(streamed()) >= total, f"{total} streamed values", timeout=10.0)
        got = streamed()
        assert got == [float(v) for v in range(1, total + 1)]  # none lost, none twice, in order
        assert sink.threads == {threading.get_ident()}
    finally:
        await drv.stop()
        server.stop()
