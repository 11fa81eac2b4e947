"""The DL/T 645 driver against our bus simulator, over a real pty pair and over TCP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.codecs.dlt645 import (
    BROADCAST,
    NEED_DATA,
    ChangeBaudRate,
    ChangeBaudRateAck,
    ChangePassword,
    ChangePasswordAck,
    ClearEvents,
    ClearEventsAck,
    Connection,
    ErrorResponse,
    Freeze,
    FreezeAck,
    Password,
    ReadAddress,
    ReadAddressResponse,
    ReadData,
    ReadDataResponse,
    Role,
    TimeSync,
    WriteData,
    WriteDataAck,
    decode_item,
    encode_item,
    lookup_di,
)
from gateway.commands import CommandPath
from gateway.errors import CommandRejected, DeviceError, LinkDown
from gateway.south.dlt645 import DLT645DeviceError, DLT645Driver
from gateway.transports.pty import PtyPair, open_pty
from gateway.transports.stream import ByteStream, open_stream
from model.command import Command, CommandState
from model.drivers_dlt645 import DLT645DriverConfig
from model.points import Access, DType, PointSpec
from model.quality import BAD_REFERENCE, GOOD, OLD_DATA, VALIDITY_MASK, Validity
from model.sample import Sample
from tools.sim.dlt645 import DLT645Simulator
from twin.twin import Twin

WAIT_S = 8.0

P1 = "T1.M1/MMXU1.TotW.mag.f"
U1C = "T1.M1/MMXU1.PhV.phsC.f"
E1 = "T1.M1/MMTR1.TotWh.actVal"
E2 = "T1.M2/MMTR1.TotWh.actVal"
E2T1 = "T1.M2/MMTR1.T1Wh.actVal"
F2 = "T1.M2/MMXU1.Hz.mag.f"
I3 = "T1.M3/MMXU1.A.phsA.f"
OPEN3 = "T1.M3/XCBR1.Open.stVal"
RELAY3 = "T1.M3/CSWI1.Pos.ctlVal"
CLOCK2 = "T1.M2/MMTR1.Temp.mag.f"
ITEMS = [P1, U1C, E1, E2, E2T1, F2, I3, OPEN3, CLOCK2]
ALL = [*ITEMS, RELAY3]


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
    """Poll cond until true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def config(link: str, **over: Any) -> DLT645DriverConfig:
    """Three meters on one bus, items of every kind, one relay control."""
    cfg: dict[str, Any] = {
        "id": "bus1",
        "protocol": "dlt645",
        "link": link,
        "poll_period_s": 0.1,
        "timeout_s": 0.3,
        "retries": 1,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        "meters": [
            {"name": "m1", "address": "000000000001"},
            {"name": "m2", "address": "000000000002"},
            {"name": "m3", "address": "000000000003"},
        ],
        "items": [
            {"meter": "m1", "di": "active_power", "point": P1},
            {"meter": "m1", "di": "0201FF00", "index": 2, "point": U1C},
            {"meter": "m1", "di": "forward_active_energy", "point": E1, "scale": 1000},
            {"meter": "m2", "di": "00010000", "point": E2},
            {"meter": "m2", "di": "forward_active_energy_block", "index": 1, "point": E2T1},
            {"meter": "m2", "di": "frequency", "point": F2},
            {"meter": "m2", "di": "meter_temperature", "point": CLOCK2},
            {"meter": "m3", "di": "current_a", "point": I3},
            {"meter": "m3", "di": "status_word3", "bit": 4, "point": OPEN3},
        ],
        "controls": [{"meter": "m3", "point": RELAY3}],
    }
    cfg.update(over)
    return DLT645DriverConfig.model_validate(cfg)


def make_twin() -> Twin:
    specs = [PointSpec(ref=p) for p in ITEMS if p != OPEN3]
    specs.append(PointSpec(ref=OPEN3, dtype=DType.BOOL))
    specs.append(PointSpec(ref=RELAY3, dtype=DType.BOOL, access=Access.RW))
    return Twin(specs)


def val(twin: Twin, ref: str) -> Any:
    s = twin.get(ref)
    return None if s is None else s.value


def qual(twin: Twin, ref: str) -> int | None:
    s = twin.get(ref)
    return None if s is None else s.quality


def all_good(twin: Twin, refs: Iterable[str] = ALL) -> bool:
    return all(qual(twin, r) == GOOD for r in refs)


class Bus:
    """Simulator + driver over a pty pair (serial) or TCP, with a twin behind the driver."""

    def __init__(self, kind: str, port: int, sim_kw: dict[str, Any], **cfg_over: Any) -> None:
        self.kind = kind
        self.port = port
        self.pair: PtyPair | None = None
        if kind == "pty":
            self.pair = open_pty()
            link = f"serial://{self.pair.slave_path}?baudrate=9600"
        else:
            link = f"tcp://127.0.0.1:{port}"
        self.cfg = config(link, **cfg_over)
        self.sim_kw = sim_kw
        self.sim = self._new_sim()
        self.twin = make_twin()
        self.sink = Recorder(self.twin)
        self.driver = DLT645Driver(self.cfg, self.sink)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _new_sim(self) -> DLT645Simulator:
        fd = self.pair.master_fd if self.pair is not None else None
        kw = {"tick_s": 0.05, "speedup": 3600.0, **self.sim_kw}  # an hour of energy a second
        return DLT645Simulator(self.cfg, port=self.port, pty_fd=fd, **kw)

    async def start_sim(self, fresh: bool = False) -> None:
        if fresh:
            old = self.sim
            self.sim = self._new_sim()
            self.sim.meters = old.meters  # the same meters come back
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.sim.serve(self._stop))
        if self.kind == "tcp":
            await wait_until(lambda: self.sim._server is not None, "simulator listening")

    async def stop_sim(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def close(self) -> None:
        await self.driver.stop()
        await self.stop_sim()
        if self.pair is not None:
            self.pair.close()


@contextlib.asynccontextmanager
async def bus(
    kind: str, port: int, sim_kw: dict[str, Any] | None = None, **over: Any
) -> AsyncIterator[Bus]:
    b = Bus(kind, port, sim_kw or {}, **over)
    try:
        await b.start_sim()
        await b.driver.start()
        yield b
    finally:
        await b.close()


KINDS = ["pty", "tcp"]


# --- configuration -----------------------------------------------------------------------------


def test_config_validation_names_the_entry() -> None:
    base = config("tcp://127.0.0.1:8899").model_dump()

    def bad(update: Callable[[dict[str, Any]], None], match: str) -> None:
        d = config("tcp://127.0.0.1:8899").model_dump()
        update(d)
        with pytest.raises(ValidationError, match=match):
            DLT645DriverConfig.model_validate(d)

    bad(
        lambda d: d["items"][1].update(di="02990100"),
        r"items\.1(.|\n)*unknown data identifier 02990100",
    )
    bad(lambda d: d["items"][1].update(di="voltage_x"), r"items\.1(.|\n)*neither eight hex digits")
    bad(lambda d: d["items"][3].update(meter="m9"), r"items\[3\]: meter 'm9' is not defined")
    bad(lambda d: d["meters"][1].update(address="12345"), r"meters\.1(.|\n)*12 decimal digits")
    bad(lambda d: d["meters"][1].update(address="999999999999"), "broadcast")
    bad(
        lambda d: d["meters"][2].update(address="000000000001"),
        r"meters\[2\]: address .* meters\[0\]",
    )
    bad(lambda d: d["items"][2].update(point=P1), r"items\[2\]: point .* items\[0\]")
    bad(lambda d: d["items"][0].update(index=1), "index applies to block items")
    bad(lambda d: d["items"][0].update(bit=1), "bit applies to status words")
    bad(lambda d: d["items"][0].update(di="date"), "not a number")
    bad(lambda d: d["items"][0].update(di="password_level2"), "write-only")
    bad(lambda d: d.update(link="udp://x:1"), "tcp:// or serial://")
    bad(lambda d: d.update(meters=[]), "at least 1")
    assert base["link"] == "tcp://127.0.0.1:8899"
    serial = config("serial:///dev/ttyUSB0")
    assert serial.link == "serial:///dev/ttyUSB0?baudrate=2400&parity=E&bytesize=8&stopbits=1"
    assert config("serial:///dev/ttyS1?baudrate=9600").link.startswith(
        "serial:///dev/ttyS1?baudrate=9600&parity=E"
    )


def test_bindings() -> None:
    cfg = config("tcp://127.0.0.1:8899")
    b = cfg.bindings()
    assert ("items", 0, P1, False) in b
    assert ("controls", 0, RELAY3, True) in b
    assert ("controls", 0, RELAY3, False) in b
    assert len(b) == len(cfg.items) + 2
    driver = DLT645Driver(cfg, Recorder(make_twin()))
    assert driver.monitored_points() == set(ALL)
    assert driver.command_points() == {RELAY3}


# --- acquisition -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_values_reach_the_twin(kind: str, port: int) -> None:
    async with bus(kind, port) as b:
        await wait_until(lambda: all_good(b.twin), "every point good")
        m1 = b.sim.meter("m1")
        assert val(b.twin, P1) == pytest.approx(m1.p_kw, abs=0.5)
        assert 215.0 < val(b.twin, U1C) < 225.0
        assert 49.9 < val(b.twin, F2) < 50.1
        assert val(b.twin, CLOCK2) == 31.5
        assert val(b.twin, OPEN3) is False
        assert val(b.twin, RELAY3) is True
        # energy integrates the power: it grows from poll to poll
        e0 = val(b.twin, E2)
        await wait_until(lambda: val(b.twin, E2) > e0, "energy to grow")
        await wait_until(lambda: val(b.twin, E1) > 1000.0, "m1 energy in Wh (scale 1000)")
        assert (
            val(b.twin, E1) <= b.sim.meter("m1").energy[1][0] * 1000 + 10.0
        )  # 0.01 kWh resolution
        assert b.driver.connected
        st = b.driver.stats()
        assert st["timeouts"] == 0 and st["bad_frames"] == 0 and st["lost_meters"] == []


async def test_follow_up_frames_complete_long_data(port: int) -> None:
    # With 12-byte frames, the 20-byte energy block of m2 needs follow-up frames (B1, 12H, 92).
    async with bus("pty", port, {"max_data": 12}) as b:
        # The simulated meter runs tariff 1 from 00:00 to 06:00 meter time: be there, whatever
        # the hour of the test run.
        b.sim.meter("m2").set_clock(datetime(2026, 1, 1, 2, 0))
        await wait_until(lambda: all_good(b.twin), "every point good")
        await wait_until(lambda: val(b.twin, E2T1) > 0, "tariff energy")
        assert b.driver.follow_ups > 0
        b.sim.speedup = 0.0  # freeze the registers, then compare with the next poll
        ts = b.twin.get(E2T1).ts  # type: ignore[union-attr]
        await wait_until(lambda: b.twin.get(E2T1).ts > ts + 0.2, "a later poll")  # type: ignore[union-attr]
        m2 = b.sim.meter("m2")
        assert val(b.twin, E2T1) == pytest.approx(m2.energy[1][1], abs=0.006)
        assert val(b.twin, E2) == pytest.approx(m2.energy[1][0], abs=0.006)


async def test_abnormal_answer_makes_the_points_invalid(port: int) -> None:
    async with bus("tcp", port) as b:
        await wait_until(lambda: all_good(b.twin), "every point good")
        b.sim.meter("m2").errors[0x02800002] = 0x02  # no requested data for the frequency
        b.sim.meter("m1").errors[0x02030000] = 0x01  # other error for the power
        await wait_until(lambda: (qual(b.twin, F2) or 0) & VALIDITY_MASK == Validity.INVALID,
                         "frequency invalid")  # fmt: skip
        await wait_until(lambda: (qual(b.twin, P1) or 0) & VALIDITY_MASK == Validity.INVALID,
                         "power invalid")  # fmt: skip
        assert qual(b.twin, F2) == (BAD_REFERENCE | Validity.INVALID)
        assert (qual(b.twin, P1) or 0) & BAD_REFERENCE == 0
        assert val(b.twin, F2) > 49  # the last value stays
        assert b.driver.stats()["abnormal"] == {
            "m1": {"02030000": ["other_error"]},
            "m2": {"02800002": ["no_requested_data"]},
        }
        assert qual(b.twin, E2) == GOOD  # the meter's other items go on
        del b.sim.meter("m2").errors[0x02800002]
        await wait_until(lambda: qual(b.twin, F2) == GOOD, "frequency good again")
        assert "m2" not in b.driver.stats()["abnormal"] or not b.driver.stats()["abnormal"]["m2"]


@pytest.mark.parametrize("kind", KINDS)
async def test_meter_loss_and_return(kind: str, port: int) -> None:
    async with bus(kind, port) as b:
        await wait_until(lambda: all_good(b.twin), "every point good")
        m2_points = {E2, E2T1, F2, CLOCK2}
        b.sim.meter("m2").silent = True
        await wait_until(lambda: all((qual(b.twin, p) or 0) & OLD_DATA for p in m2_points),
                         "m2 points not topical")  # fmt: skip
        assert m2_points in b.sink.not_topical
        assert b.driver.stats()["lost_meters"] == ["m2"]
        assert b.driver.connected  # the others answer
        ts = {p: b.twin.get(P1).ts for p in [P1]}  # type: ignore[union-attr]
        await wait_until(lambda: b.twin.get(P1).ts > ts[P1], "m1 still polled")  # type: ignore[union-attr]
        assert qual(b.twin, P1) == GOOD
        b.sim.meter("m2").silent = False
        await wait_until(lambda: all_good(b.twin), "m2 refreshed")
        assert b.driver.stats()["lost_meters"] == []


async def test_silent_bus_over_pty_marks_everything_and_recovers(port: int) -> None:
    async with bus("pty", port) as b:
        await wait_until(lambda: all_good(b.twin), "every point good")
        await b.stop_sim()  # nobody answers on the line any more
        await wait_until(lambda: all((qual(b.twin, p) or 0) & OLD_DATA for p in ALL),
                         "every point not topical")  # fmt: skip
        assert not b.driver.connected
        before = {p: b.twin.get(p).ts for p in ALL}  # type: ignore[union-attr]
        await b.start_sim(fresh=True)
        await wait_until(lambda: all_good(b.twin), "every point refreshed")
        assert all(b.twin.get(p).ts > before[p] for p in ALL)  # type: ignore[union-attr]


async def test_tcp_link_loss_marks_not_topical_and_reconnect_refreshes(port: int) -> None:
    async with bus("tcp", port) as b:
        await wait_until(lambda: all_good(b.twin), "every point good")
        await b.stop_sim()
        await wait_until(lambda: all((qual(b.twin, p) or 0) & OLD_DATA for p in ALL),
                         "every point not topical")  # fmt: skip
        assert set(ALL) in b.sink.not_topical
        await wait_until(lambda: not b.driver.connected, "driver disconnected")
        before = {p: b.twin.get(p).ts for p in ALL}  # type: ignore[union-attr]
        await b.start_sim(fresh=True)
        await wait_until(lambda: all_good(b.twin), "every point refreshed")
        assert all(b.twin.get(p).ts > before[p] for p in ALL)  # type: ignore[union-attr]
        assert b.driver.stats()["reconnects"] >= 1


async def test_link_down_before_any_connection(port: int) -> None:
    cfg = config(f"tcp://127.0.0.1:{port}")
    sink = Recorder(make_twin())
    driver = DLT645Driver(cfg, sink)
    await driver.start()
    try:
        await wait_until(lambda: len(sink.not_topical) == 1, "points marked not topical")
        assert not driver.connected
        with pytest.raises(LinkDown):
            await driver.execute(Command(RELAY3, False, "test"), lambda s, r: None)
        with pytest.raises(LinkDown):
            await driver.sync_time()
    finally:
        await driver.stop()
    assert sink.not_topical == [set(ALL)]


# --- commands ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_trip_and_close_through_the_command_path(kind: str, port: int) -> None:
    async with bus(kind, port) as b:
        await wait_until(lambda: all_good(b.twin), "every point good")
        path = CommandPath(b.twin, [b.driver])
        try:
            rec = await path.submit(Command(RELAY3, False, "test", deadline=time.time() + 10))
            await wait_until(lambda: rec.done, "trip confirmed")
            assert [t.state for t in rec.history] == [
                CommandState.ACCEPTED,
                CommandState.SENT,
                CommandState.CONFIRMED,
            ]
            m3 = b.sim.meter("m3")
            assert not m3.relay_closed  # the meter followed
            await wait_until(lambda: val(b.twin, OPEN3) is True, "status word 3 shows open")
            await wait_until(lambda: val(b.twin, I3) == 0.0, "no current through an open relay")
            rec = await path.submit(Command(RELAY3, True, "test", deadline=time.time() + 10))
            await wait_until(lambda: rec.done, "close confirmed")
            assert rec.state == CommandState.CONFIRMED
            assert m3.relay_closed
            assert b.sim.controls == 2
        finally:
            await path.close()


async def test_refused_command_is_a_device_error(port: int) -> None:
    async with bus("tcp", port, password="123456") as b:
        b.sim.meter("m3").password = Password(2, "654321")  # the meter has another password
        await wait_until(lambda: all_good(b.twin), "every point good")
        reports: list[tuple[CommandState, str]] = []
        with pytest.raises(DLT645DeviceError, match="password_error_or_unauthorized") as e:
            await b.driver.execute(
                Command(RELAY3, False, "test"), lambda s, r: reports.append((s, r))
            )
        assert isinstance(e.value, DeviceError)
        assert e.value.errors == ("password_error_or_unauthorized",)
        assert reports == []
        assert b.sim.meter("m3").relay_closed
        path = CommandPath(b.twin, [b.driver])
        try:
            rec = await path.submit(Command(RELAY3, False, "test", deadline=time.time() + 10))
            await wait_until(lambda: rec.done, "command failed")
            assert rec.state == CommandState.FAILED
        finally:
            await path.close()
        with pytest.raises(CommandRejected):
            await b.driver.execute(Command(P1, 1.0, "test"), lambda s, r: None)


async def test_broadcast_time_sync_sets_the_meter_clocks(port: int) -> None:
    async with bus("pty", port, time_sync_period_s=0.3) as b:
        for m in b.sim.meters:
            m.clock_offset_s = -3600.0  # an hour slow
        await wait_until(lambda: all(abs(m.clock_offset_s) < 5 for m in b.sim.meters),
                         "clocks set by the broadcast")  # fmt: skip
        assert b.driver.stats()["time_syncs"] >= 1
        assert b.sim.time_syncs >= 1
        await wait_until(lambda: all_good(b.twin), "polling goes on")
        m1 = b.sim.meter("m1")
        assert m1.counters["time_sync"] >= 1
        assert abs((m1.now() - b.driver.meter_time()).total_seconds()) < 5


# --- the simulator speaks the protocol ----------------------------------------------------------


async def _exchange(stream: ByteStream, conn: Connection, request: Any) -> Any:
    await stream.write(conn.send(request, preamble=2))
    while True:
        ev = conn.next_event()
        if ev is not NEED_DATA:
            return ev
        conn.receive_data(await stream.read(4096, timeout=2))


async def test_simulator_answers_the_functions(port: int) -> None:
    cfg = config(f"tcp://127.0.0.1:{port}")
    sim = DLT645Simulator(cfg, port=port, tick_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(sim.serve(stop))
    await wait_until(lambda: sim._server is not None, "simulator listening")
    stream = await open_stream(f"tcp://127.0.0.1:{port}")
    conn = Connection(Role.MASTER)
    a1 = "000000000001"
    pw = Password(2, "000000")
    try:
        # read address of a lone meter answers with the first meter on the bus
        assert await _exchange(stream, conn, ReadAddress()) == ReadAddressResponse(a1)
        # read data, and an unknown item answers "no requested data"
        volts = lookup_di(0x02010100)
        assert volts is not None
        ans = await _exchange(stream, conn, ReadData(a1, volts.di))
        assert isinstance(ans, ReadDataResponse)
        assert 215 < float(decode_item(volts, ans.data)) < 225  # type: ignore[arg-type]
        ans = await _exchange(stream, conn, ReadData(a1, 0x12345678))
        assert ans == ErrorResponse(a1, 0x11, 0x02)
        # write data: the demand period, read back; a wrong password is refused
        item = lookup_di(0x04000103)
        assert item is not None
        assert await _exchange(
            stream, conn, WriteData(a1, item.di, encode_item(item, 30), pw)
        ) == WriteDataAck(a1)
        ans = await _exchange(stream, conn, ReadData(a1, item.di))
        assert decode_item(item, ans.data) == 30
        bad = WriteData(a1, item.di, encode_item(item, 5), Password(2, "111111"))
        assert await _exchange(stream, conn, bad) == ErrorResponse(a1, 0x14, 0x04)
        # write the clock, read the clock-setting event back
        m1 = sim.meter(a1)
        t = m1.now() - timedelta(days=1)
        dt_item = lookup_di(0x0400010C)
        assert dt_item is not None
        assert await _exchange(
            stream, conn, WriteData(a1, dt_item.di, encode_item(dt_item, t), pw)
        ) == WriteDataAck(a1)
        assert abs((m1.now() - t).total_seconds()) < 5
        ans = await _exchange(stream, conn, ReadData(a1, 0x03300400))
        assert decode_item(lookup_di(0x03300400), ans.data) == 1  # type: ignore[arg-type]
        # broadcast time sync: no answer, every clock follows
        now = m1.now() + timedelta(days=1)
        await stream.write(conn.send(TimeSync(BROADCAST, now)))
        await wait_until(lambda: all(abs((m.now() - now).total_seconds()) < 5 for m in sim.meters),
                         "clocks synced")  # fmt: skip
        # instant freeze, read the frozen energy back
        assert await _exchange(stream, conn, Freeze(a1)) == FreezeAck(a1)
        ans = await _exchange(stream, conn, ReadData(a1, 0x05010101))
        assert isinstance(ans, ReadDataResponse) and len(ans.data) == 20
        # change baud rate, change password, clear events
        assert await _exchange(stream, conn, ChangeBaudRate(a1, 9600)) == ChangeBaudRateAck(
            a1, 9600
        )
        assert await _exchange(stream, conn, ChangeBaudRate(a1, 19200)) == ErrorResponse(
            a1, 0x17, 0x08
        )
        new = Password(2, "123456")
        assert await _exchange(
            stream, conn, ChangePassword(a1, 0x04000C03, pw, new)
        ) == ChangePasswordAck(a1, new)
        assert await _exchange(stream, conn, ClearEvents(a1, new)) == ClearEventsAck(a1)
        ans = await _exchange(stream, conn, ReadData(a1, 0x03300300))
        assert decode_item(lookup_di(0x03300300), ans.data) == 1  # type: ignore[arg-type]
    finally:
        await stream.close()
        stop.set()
        await task


async def test_simulator_paces_answers_at_the_baud_rate(port: int) -> None:
    """With a baud rate, an answer costs the wire time of request + answer (11 bits a byte)."""
    pair = open_pty()
    cfg = config(f"serial://{pair.slave_path}")
    sim = DLT645Simulator(cfg, pty_fd=pair.master_fd, baudrate=1200)
    stop = asyncio.Event()
    task = asyncio.create_task(sim.serve(stop))
    stream = await open_stream(cfg.link)
    conn = Connection(Role.MASTER)
    try:
        t0 = time.perf_counter()
        ans = await _exchange(stream, conn, ReadData("000000000001", 0x02010100))
        took = time.perf_counter() - t0
        assert isinstance(ans, ReadDataResponse)
        wire = (2 + 16) + 18  # request with 2 FE, answer with a 2-byte value
        assert took >= wire * 11 / 1200 * 0.95
        assert took < wire * 11 / 1200 + 0.5
    finally:
        await stream.close()
        stop.set()
        await task
        pair.close()
