"""The DL/T 698.45 driver against our meter simulator, over a real pty pair and over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.codecs.dlt698 import OAD, Dar, ScalerUnit, Tag
from gateway.commands import CommandPath
from gateway.errors import CommandRejected, DeviceError, LinkDown
from gateway.south.dlt698 import DLT698Driver, DLT698RefusedError
from gateway.transports.pty import open_pty
from model.command import Command, CommandState
from model.drivers_dlt698 import DLT698DriverConfig
from model.points import Access, DType, PointSpec
from model.quality import BAD_REFERENCE, FAILURE, GOOD, OLD_DATA, Validity, with_validity
from model.sample import Sample
from tools.sim.dlt698 import DLT698Simulator
from twin.twin import Twin

WAIT_S = 10.0

VA = "T1.M1/MMXU1.PhV.phsA"
IB = "T1.M1/MMXU1.A.phsB"
P1 = "T1.M1/MMXU1.TotW.mag.f"
HZ = "T1.M1/MMXU1.Hz.mag.f"
PF = "T1.M1/MMXU1.TotPF.mag.f"
CLOCK = "T1.M1/LPHD1.Clock.t"
RELAY = "T1.M1/CSWI1.Pos.stVal"
SET = "T1.M1/GGIO1.AnOut.setMag.f"
REFUSED = "T1.M1/GGIO2.AnOut.setMag.f"
BROKEN = "T1.M1/GGIO3.AnIn.mag.f"
MISSING = "T1.M1/GGIO4.AnIn.mag.f"
E2 = "T1.M2/MMTR1.SupWh.actVal"
E2R = "T1.M2/MMTR1.DmdWh.actVal"
P2 = "T1.M2/MMXU1.TotW.mag.f"
MONITORED = [VA, IB, P1, HZ, PF, CLOCK, RELAY, SET, REFUSED, BROKEN, MISSING, E2, E2R, P2]


def config(link: str, **over: Any) -> DLT698DriverConfig:
    return DLT698DriverConfig.model_validate(
        {
            "id": "meters",
            "protocol": "dlt698",
            "link": link,
            "poll_period_s": 0.2,
            "timeout_s": 0.4,
            "retries": 0,
            "max_oads_per_request": 4,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
            "meters": [
                {"name": "m1", "address": "000000000001", "connect": True},
                {"name": "m2", "address": "000000000002"},
            ],
            "items": [
                {"meter": "m1", "oad": "voltage", "index": 1, "point": VA},
                {"meter": "m1", "oad": "current", "index": 2, "point": IB},
                {"meter": "m1", "oad": "active_power", "index": 1, "point": P1, "scale": 0.001},
                {"meter": "m1", "oad": "frequency", "point": HZ},
                {"meter": "m1", "oad": "power_factor", "index": 1, "point": PF},
                {"meter": "m1", "oad": "date_time", "point": CLOCK},
                # Relay state (8000 attribute 3): bit 0 set = tripped, so "closed" is inverted.
                {"meter": "m1", "oad": "80000300", "bit": 0, "invert": True, "point": RELAY},
                {"meter": "m1", "oad": "F1000200", "dtype": "long", "scaler": -1,
                 "writable": True, "point": SET},
                {"meter": "m1", "oad": "F1010200", "dtype": "long", "writable": True,
                 "point": REFUSED},
                {"meter": "m1", "oad": "F1020200", "dtype": "double-long", "point": BROKEN},
                {"meter": "m1", "oad": "F1030200", "dtype": "double-long", "point": MISSING},
                {"meter": "m2", "oad": "forward_active_energy", "index": 1, "point": E2},
                {"meter": "m2", "oad": "reverse_active_energy.1", "point": E2R},
                {"meter": "m2", "oad": "active_power", "index": 1, "point": P2, "scale": -0.001},
            ],
            "controls": [{"meter": "m1", "point": RELAY, "action": "remote_control"}],
            **over,
        }
    )  # fmt: skip


def specs() -> list[PointSpec]:
    out = []
    for p in MONITORED:
        if p == RELAY:
            out.append(PointSpec(ref=p, dtype=DType.BOOL, access=Access.RW))
        elif p in (SET, REFUSED):
            out.append(PointSpec(ref=p, access=Access.RW, min=-1000, max=1000))
        else:
            out.append(PointSpec(ref=p))
    return out


class Recorder:
    """A sink that forwards to a real Twin and keeps every not-topical call."""

    def __init__(self, twin: Twin) -> None:
        self.twin = twin
        self.batches: list[list[Sample]] = []
        self.not_topical: list[set[str]] = []

    def apply(self, samples: list[Sample]) -> object:
        self.batches.append(list(samples))
        return self.twin.apply(samples)

    def mark_not_topical(self, refs: Iterable[str], source: str = "") -> object:
        refs = set(refs)
        self.not_topical.append(refs)
        return self.twin.mark_not_topical(refs, source)


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def val(twin: Twin, ref: str) -> Any:
    s = twin.get(ref)
    return None if s is None else s.value


def qual(twin: Twin, ref: str) -> int | None:
    s = twin.get(ref)
    return None if s is None else s.quality


def prepare(sim: DLT698Simulator) -> None:
    """Values the tests expect, a failing object, a missing one, a refused write."""
    sim.set_value("voltage.1", 231.2, meter="m1")
    sim.set_value("current.2", 4.321, meter="m1")
    sim.set_value("active_power.1", 1234.5, meter="m1")
    sim.set_value("frequency", 49.98, meter="m1")
    sim.set_value("power_factor.1", -0.875, meter="m1")
    sim.set_value("forward_active_energy.1", 12345.67, meter="m2")
    sim.set_value("reverse_active_energy.1", 8.5, meter="m2")
    sim.set_value("active_power.1", 2000.0, meter="m2")
    m1 = sim.meter("m1")
    m1.failing[OAD(0xF102, 2)] = Dar(1)  # hardware failure
    del m1.image[(0xF103, 2)]  # object nonexistent
    m1.refusing["F1010200"] = Dar(3)  # read-write denied


@contextlib.asynccontextmanager
async def running(sim: DLT698Simulator, driver: DLT698Driver) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(sim.serve(stop))
    await wait_until(lambda: sim.running, "simulator")
    await driver.start()
    try:
        yield
    finally:
        await driver.stop()
        stop.set()
        await task


def check_first_values(twin: Twin, driver: DLT698Driver) -> None:
    # scaler-unit applied: long-unsigned 2312 x 10^-1 V; double-long 4321 x 10^-3 A; ...
    assert val(twin, VA) == pytest.approx(231.2) and qual(twin, VA) == GOOD
    assert val(twin, IB) == pytest.approx(4.321)
    assert val(twin, P1) == pytest.approx(1.2345)  # W -> kW by the item's scale
    assert val(twin, HZ) == pytest.approx(49.98)
    assert val(twin, PF) == pytest.approx(-0.875)
    assert abs(val(twin, CLOCK) - time.time()) < 5  # date_time_s as epoch seconds
    assert val(twin, RELAY) is True
    assert val(twin, E2) == pytest.approx(12345.67)
    assert val(twin, E2R) == pytest.approx(8.5)
    assert val(twin, P2) == pytest.approx(-2.0)  # sign convention by a negative scale
    # Data access results: invalid, the DAR named in stats.
    assert qual(twin, BROKEN) == with_validity(FAILURE, Validity.INVALID)
    assert qual(twin, MISSING) == with_validity(BAD_REFERENCE, Validity.INVALID)
    dars = driver.stats()["dar_errors"]
    assert dars[BROKEN] == "DAR hardware-failure (1)"
    assert dars[MISSING] == "DAR object-nonexistent (6)"


async def test_driver_over_a_pty_pair() -> None:
    pair = open_pty()
    try:
        cfg = config(f"serial://{pair.slave_path}?baudrate=9600&parity=E")
        # Frames of at most 80 bytes: the NormalList answers come in link-layer fragments.
        sim = DLT698Simulator(cfg, pty_fd=pair.master_fd, max_frame=80)
        prepare(sim)
        twin = Twin(specs())
        sink = Recorder(twin)
        driver = DLT698Driver(cfg, sink)
        path = CommandPath(twin, [driver])
        assert driver.monitored_points() == set(MONITORED)
        assert driver.command_points() == {SET, REFUSED, RELAY}
        async with running(sim, driver):
            await wait_until(lambda: all(twin.get(p) is not None for p in MONITORED), "all values")
            check_first_values(twin, driver)
            assert sim.connects == 1  # CONNECT once, for m1 only
            assert sim.fragments_sent > 0 and driver.stats()["bad_frames"] == 0

            # SET: reported SENT, the meter follows, read-back confirms.
            rec = await path.submit(Command(SET, 12.3, "test", deadline=time.time() + 10))
            await wait_until(lambda: rec.done, "SET confirmation")
            assert [t.state for t in rec.history] == [
                CommandState.ACCEPTED, CommandState.SENT, CommandState.CONFIRMED,
            ]  # fmt: skip
            assert sim.value("F1000200", "m1").value == 123  # type: ignore[union-attr]
            # ACTION remote control: trip, confirmed by the relay state read back.
            rec = await path.submit(Command(RELAY, False, "test", deadline=time.time() + 10))
            await wait_until(lambda: rec.done, "remote control confirmation")
            assert rec.state == CommandState.CONFIRMED and sim.meter("m1").relay_closed is False
            assert val(twin, RELAY) is False
            # A refusal: the DAR named, the command failed.
            rec = await path.submit(Command(REFUSED, 5.0, "test", deadline=time.time() + 10))
            await wait_until(lambda: rec.done, "refusal")
            assert rec.state == CommandState.FAILED
            assert "read-write-denied (3)" in rec.history[-1].reason
            with pytest.raises(DLT698RefusedError) as ei:
                await driver.execute(Command(REFUSED, 5.0, "t"), lambda *_: None)
            assert isinstance(ei.value, DeviceError) and ei.value.dar == Dar(3)
            # A value that cannot fit the wire type is refused before sending.
            with pytest.raises(CommandRejected, match="does not fit long"):
                await driver.execute(Command(SET, 5000.0, "t"), lambda *_: None)

            # The meters fall silent: every point turns not topical, values kept.
            sim.mute = True
            await wait_until(
                lambda: all((qual(twin, p) or 0) & OLD_DATA for p in MONITORED), "not topical"
            )
            assert val(twin, VA) == pytest.approx(231.2)
            opens = driver.opens
            # They answer again: every point refreshed (the serial port stayed open), and m1,
            # which may have restarted, is connected again.
            sim.set_value("voltage.1", 229.9, meter="m1")
            sim.mute = False
            await wait_until(
                lambda: val(twin, VA) == pytest.approx(229.9) and qual(twin, VA) == GOOD,
                "refresh after recovery",
            )
            await wait_until(lambda: qual(twin, E2) == GOOD, "second meter refreshed")
            assert driver.opens == opens and driver.stats()["meters_down"] == []
            assert sim.connects == 2
        assert sim.releases == 1  # the driver released m1's application connection on stop
        await path.close()
    finally:
        pair.close()


async def test_driver_over_tcp_reports_security_and_reconnect(port: int) -> None:
    # A long poll period: only reports (and the refresh on reconnect) can bring new values.
    # Frames of at most 64 bytes: the secured CONNECT-Request goes out in fragments.
    cfg = config(f"tcp://127.0.0.1:{port}", poll_period_s=60.0, security=True, max_frame=64)
    sim = DLT698Simulator(cfg, port=port, reports=True)
    prepare(sim)
    # Meter m2 says its power is in 10^-2 W (attribute 3), not the table's 10^-1 W.
    sim.meter("m2").image[(0x2004, 3)] = (
        sim.meter("m2").image[(0x2004, 3)].__class__(Tag.SCALER_UNIT, ScalerUnit(-2, 27))
    )
    twin = Twin(specs())
    sink = Recorder(twin)
    driver = DLT698Driver(cfg, sink)
    async with running(sim, driver):
        await wait_until(lambda: all(twin.get(p) is not None for p in MONITORED), "all values")
        assert val(twin, P2) == pytest.approx(-0.2)  # raw 20000 x 10^-2 W x -0.001
        assert val(twin, VA) == pytest.approx(231.2)
        st = driver.stats()
        # SECURITY-Request in plaintext; answers in plaintext with a MAC, counted, not verified.
        assert sim.security_requests >= st["requests"] - 1 > 0
        assert st["security_responses"] > 0 and st["unverified_macs"] == st["security_responses"]
        assert sim.fragments_received > 0

        # REPORT-Notification: applied at once and answered with REPORT-Response.
        sim.set_value("voltage.1", 225.5, meter="m1")
        await wait_until(lambda: val(twin, VA) == pytest.approx(225.5), "reported value")
        await wait_until(lambda: sim.reports_acked >= 1, "REPORT-Response")
        assert driver.stats()["reports"] >= 1 and driver.polls == 1

        # The simulator goes away: every point not topical, once.
        await sim.stop()
        await wait_until(lambda: not driver.connected, "link down")
        await wait_until(
            lambda: all((qual(twin, p) or 0) & OLD_DATA for p in MONITORED), "not topical"
        )
        assert sink.not_topical[-1] == set(MONITORED)
        marks = len(sink.not_topical)
        await asyncio.sleep(0.4)  # failed reconnects (backoff 0.05..0.2 s) mark nothing more
        assert len(sink.not_topical) == marks

        # A new simulator on the same port: reconnect, CONNECT again, full refresh.
        sim2 = DLT698Simulator(cfg, port=port, reports=True)
        prepare(sim2)
        sim2.set_value("voltage.1", 219.0, meter="m1")
        stop2 = asyncio.Event()
        task2 = asyncio.create_task(sim2.serve(stop2))
        try:
            await wait_until(
                lambda: val(twin, VA) == pytest.approx(219.0) and qual(twin, VA) == GOOD,
                "refresh after reconnect",
            )
            assert driver.stats()["reconnects"] >= 1 and sim2.connects == 1
            assert val(twin, P2) == pytest.approx(-2.0)  # this meter keeps the table's scaler
        finally:
            stop2.set()
            await task2


async def test_link_down_before_any_connection(port: int) -> None:
    cfg = config(f"tcp://127.0.0.1:{port}")  # nothing listens
    sink = Recorder(Twin(specs()))
    driver = DLT698Driver(cfg, sink)
    await driver.start()
    try:
        await wait_until(lambda: len(sink.not_topical) == 1, "points marked not topical")
        with pytest.raises(LinkDown, match="not open"):
            await driver.execute(Command(SET, 1.0, "t"), lambda *_: None)
        with pytest.raises(CommandRejected, match="not a command point"):
            await driver.execute(Command(VA, 1.0, "t"), lambda *_: None)
        await asyncio.sleep(0.3)
    finally:
        await driver.stop()
    assert sink.not_topical == [set(MONITORED)]
    assert driver.stats()["opens"] == 0


def test_config_bindings_and_errors() -> None:
    cfg = config("tcp://127.0.0.1:9")
    b = cfg.bindings()
    assert ("items", 7, SET, True) in b and ("items", 7, SET, False) in b
    assert ("controls", 0, RELAY, True) in b and ("items", 6, RELAY, False) in b
    assert len([x for x in b if not x[3]]) == len(cfg.items)
    base = config("tcp://127.0.0.1:9").model_dump()
    bad = [
        ({"link": "udp://x:1"}, "tcp://host:port"),
        ({"items": [{**base["items"][0], "oad": "voltag"}]}, "neither 8 hex digits"),
        ({"items": [{**base["items"][0], "meter": "m9"}]}, "meter 'm9' is not defined"),
        ({"meters": [*base["meters"], {**base["meters"][0], "name": "m3"}]}, "already meters"),
        ({"controls": [*base["controls"], {"meter": "m1", "point": SET}]}, "already commanded"),
        ({"controls": [{"meter": "m1", "point": RELAY, "action": "method"}]}, "needs omd"),
        ({"meters": [{"name": "m1", "address": "12G4"}]}, "hex/BCD digits"),
    ]
    for change, msg in bad:
        with pytest.raises(ValidationError, match=msg):
            DLT698DriverConfig.model_validate({**base, **change})


async def test_meter_in_front_of_a_simulated_battery_follows_a_set_point(demo_site, port) -> None:
    # A meter measuring BAT02 (W, 10^-1) and a vendor set-point object F1000200 in 0.1 W,
    # bound to the demo site's DER physics: the battery follows the set-point written by SET.
    bat_p, bat_set = "VPP1.BAT02/MMXU1.TotW.mag.f", "VPP1.BAT02/DRCC1.WSpt.setMag.f"
    cfg = DLT698DriverConfig.model_validate(
        {
            "id": "bat",
            "protocol": "dlt698",
            "link": f"tcp://127.0.0.1:{port}",
            "poll_period_s": 0.1,
            "timeout_s": 1.0,
            "meters": [{"name": "bat", "address": "000000000042"}],
            "items": [
                {"meter": "bat", "oad": "active_power.1", "point": bat_p, "scale": 0.001},
                {"meter": "bat", "oad": "F1000200", "dtype": "double-long", "scaler": -1,
                 "scale": 0.001, "writable": True, "point": bat_set},
            ],
        }
    )  # fmt: skip
    sim = DLT698Simulator(cfg, port=port, tick_s=0.1, site=demo_site)
    twin = Twin.from_site(demo_site)
    driver = DLT698Driver(cfg, twin)
    path = CommandPath(twin, [driver])
    async with running(sim, driver):
        await wait_until(lambda: twin.get(bat_p) is not None, "first poll")
        rec = await path.submit(Command(bat_set, -15.0, "test", deadline=time.time() + 10))
        await wait_until(lambda: rec.done, "confirmation")
        assert rec.state == CommandState.CONFIRMED, rec.history
        assert sim.value("F1000200").value == -150_000  # type: ignore[union-attr]
        await wait_until(lambda: abs(val(twin, bat_p) + 15.0) < 0.1, "battery to follow")
    await path.close()
