"""The Modbus TCP driver against real peers on loopback: a plain pymodbus server and our simulator."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.errors import CommandRejected, DeviceError, LinkDown
from gateway.south.modbus import ModbusDriver
from gateway.south.modbus_plan import RegisterRangeError, plan_polls
from model.command import Command, CommandState
from model.drivers import ModbusDriverConfig, ModbusTable
from model.quality import BAD_REFERENCE, FAILURE, GOOD, OLD_DATA, Validity, with_validity
from model.sample import Sample
from model.site import SiteConfig
from tools.sim.modbus import ModbusSimulator
from twin.twin import Twin

WAIT_S = 5.0


class Recorder:
    """A sink that forwards to a real Twin and keeps every batch and every not-topical call."""

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


def val(twin: Twin, ref: str) -> Any:
    """Current value of a point (None if it has none)."""
    s = twin.get(ref)
    return None if s is None else s.value


def qual(twin: Twin, ref: str) -> int | None:
    """Current quality of a point (None if it has no value)."""
    s = twin.get(ref)
    return None if s is None else s.quality


def words(fmt: str, value: float, little: bool = False) -> list[int]:
    """Register words of a value packed big-endian (word order swapped when little)."""
    data = struct.pack(">" + fmt, value)
    ws = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return ws[::-1] if little else ws


async def start_server(
    port: int, device: SimDevice, trace: Callable[[bool, ModbusPDU], ModbusPDU] | None = None
) -> ModbusTcpServer:
    """Start a plain pymodbus TCP server on loopback."""
    server = ModbusTcpServer(device, address=("127.0.0.1", port), trace_pdu=trace)
    await server.serve_forever(background=True)
    return server


@contextlib.asynccontextmanager
async def pymodbus_server(
    port: int, device: SimDevice, trace: Callable[[bool, ModbusPDU], ModbusPDU] | None = None
) -> AsyncIterator[ModbusTcpServer]:
    """A plain pymodbus TCP server on loopback."""
    server = await start_server(port, device, trace)
    try:
        yield server
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def running(driver: ModbusDriver) -> AsyncIterator[ModbusDriver]:
    await driver.start()
    try:
        yield driver
    finally:
        await driver.stop()


def P(name: str) -> str:
    return f"T1.PLC/{name}.mag.f"


# --- against a plain pymodbus server ---------------------------------------------------------

# (point, register map entry, expected value) for the holding table, values of every dtype.
HOLDING = [
    (P("A01"), {"address": 0, "dtype": "int16", "scale": 0.1, "writable": True}, words("h", -1234), -123.4),
    (P("A02"), {"address": 1, "dtype": "uint16", "offset": -100}, words("H", 65000), 64900.0),
    (P("A03"), {"address": 2, "dtype": "int32"}, words("i", -123456789), -123456789),
    (P("A04"), {"address": 4, "dtype": "int32", "word_order": "little", "scale": 0.01},
     words("i", 123456, little=True), 1234.56),
    (P("A05"), {"address": 6, "dtype": "uint32"}, words("I", 4_000_000_000), 4_000_000_000),
    (P("A06"), {"address": 8, "dtype": "uint32", "word_order": "little", "scale": 0.5, "offset": 10},
     words("I", 3_000_000_001, little=True), 1_500_000_010.5),
    (P("A07"), {"address": 10, "dtype": "float32"}, words("f", 12.5), 12.5),
    (P("A08"), {"address": 12, "dtype": "float32", "word_order": "little", "scale": 2, "offset": 1},
     words("f", -0.75, little=True), -0.5),
]  # fmt: skip
MISSING = P("MISSING")  # mapped, but the device has no such address: exception 2
BROKEN = P("BROKEN")  # the device answers exception 4 (device failure) for it
INPUT_A, INPUT_B = P("IN1"), P("IN2")
COILS = {
    "T1.PLC/CO1.Pos.stVal": (0, True),
    "T1.PLC/CO2.Pos.stVal": (1, False),
    "T1.PLC/CO3.Pos.stVal": (5, True),
}
DIS = {"T1.PLC/DI1.Ind.stVal": (3, True), "T1.PLC/DI2.Ind.stVal": (4, False)}


def plc_config(port: int) -> ModbusDriverConfig:
    regs: list[dict[str, Any]] = [
        {"point": p, "table": "holding", "group": "fast", **m} for p, m, _, _ in HOLDING
    ]
    regs += [
        {"point": MISSING, "table": "holding", "address": 40, "group": "fast"},
        {"point": BROKEN, "table": "holding", "address": 60, "group": "slow"},
        {"point": INPUT_A, "table": "input", "address": 100, "dtype": "float32", "group": "slow"},
        {"point": INPUT_B, "table": "input", "address": 120, "dtype": "int16", "group": "slow"},
    ]
    regs += [
        {
            "point": p,
            "table": "coil",
            "address": a,
            "dtype": "bool",
            "group": "fast",
            "writable": a == 1,
        }
        for p, (a, _) in COILS.items()
    ]
    regs += [
        {"point": p, "table": "discrete_input", "address": a, "dtype": "bool", "group": "slow"}
        for p, (a, _) in DIS.items()
    ]
    return ModbusDriverConfig.model_validate(
        {
            "id": "plc",
            "protocol": "modbus",
            "port": port,
            "max_gap": 4,
            "timeout_s": 1.0,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
            "poll_groups": [{"name": "fast", "period_s": 0.05}, {"name": "slow", "period_s": 0.25}],
            "registers": regs,
        }
    )


def plc_device(input_value: float = 230.5) -> SimDevice:
    holding = [w for _, _, ws, _ in HOLDING for w in ws]

    async def fail_at_60(
        fc: int, start: int, address: int, count: int, regs: list[int], values: Any
    ) -> ExcCodes | None:
        if fc == 3 and address <= 60 < address + count:
            return ExcCodes.DEVICE_FAILURE
        return None

    coils = [False] * 6
    for a, v in COILS.values():
        coils[a] = v
    dis = [False] * 5
    for a, v in DIS.values():
        dis[a] = v
    return SimDevice(
        id=1,
        simdata=(
            [SimData(0, values=coils, datatype=DataType.BITS)],
            [SimData(0, values=dis, datatype=DataType.BITS)],
            [
                SimData(0, values=holding, datatype=DataType.REGISTERS),
                SimData(60, values=[7], datatype=DataType.REGISTERS),
            ],
            [
                SimData(100, values=words("f", input_value), datatype=DataType.REGISTERS),
                SimData(120, values=words("h", -5), datatype=DataType.REGISTERS),
            ],
        ),
        action=fail_at_60,
    )


def all_points(cfg: ModbusDriverConfig) -> list[str]:
    return [r.point for r in cfg.registers]


async def test_driver_reads_a_plain_pymodbus_server(port: int) -> None:
    cfg = plc_config(port)
    plan = plan_polls(cfg)
    # Merging: the eight holding values (14 registers) are one read; the coils at 0, 1 and 5
    # one read (3 unused <= max_gap 4); holding 40 is too far away and stands alone.
    assert [(b.table, b.start, b.count) for b in plan["fast"]] == [
        (ModbusTable.COIL, 0, 6),
        (ModbusTable.HOLDING, 0, 14),
        (ModbusTable.HOLDING, 40, 1),
    ]
    assert [(b.table, b.start, b.count) for b in plan["slow"]] == [
        (ModbusTable.DISCRETE_INPUT, 3, 2),
        (ModbusTable.HOLDING, 60, 1),
        (ModbusTable.INPUT, 100, 2),
        (ModbusTable.INPUT, 120, 1),
    ]
    fc = {
        ModbusTable.COIL: 1,
        ModbusTable.DISCRETE_INPUT: 2,
        ModbusTable.HOLDING: 3,
        ModbusTable.INPUT: 4,
    }
    seen: list[tuple[int, int, int]] = []

    def trace(sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            seen.append((pdu.function_code, pdu.address, pdu.count))
        return pdu

    twin = Twin(refs=all_points(cfg))
    sink = Recorder(twin)
    driver = ModbusDriver(cfg, sink)
    assert driver.monitored_points() == set(all_points(cfg))
    assert driver.command_points() == {P("A01"), "T1.PLC/CO2.Pos.stVal"}
    t0 = time.time()
    async with pymodbus_server(port, plc_device(), trace), running(driver):
        await wait_until(lambda: driver.polls["slow"] >= 5, "five slow polls")
        snap = {p: twin.get(p) for p in all_points(cfg)}
        # Writes to a holding register (one word) and a coil, read back by the polls.
        sent: list[CommandState] = []
        await driver.execute(
            Command(target=P("A01"), value=-50.0, origin="t"), lambda s, _: sent.append(s)
        )
        await driver.execute(
            Command(target="T1.PLC/CO2.Pos.stVal", value=True, origin="t"),
            lambda s, _: sent.append(s),
        )
        assert sent == [CommandState.SENT, CommandState.SENT]
        await wait_until(lambda: val(twin, P("A01")) == pytest.approx(-50.0), "register read-back")
        await wait_until(lambda: val(twin, "T1.PLC/CO2.Pos.stVal") is True, "coil read-back")
        await driver.stop()
        st = driver.stats()
    # Stopping the driver leaves its points not topical.
    assert sink.not_topical == [set(all_points(cfg))]

    # Values of every dtype and word order, with scale and offset.
    for point, _, _, expected in HOLDING:
        s = snap.get(point)
        assert s is not None and s.quality == GOOD, point
        assert s.value == pytest.approx(expected), point
        assert type(s.value) is type(expected), point
    for point, (_, expected_bit) in (COILS | DIS).items():
        s = snap.get(point)
        assert s is not None and s.quality == GOOD and s.value is expected_bit, point
    a, b = snap.get(INPUT_A), snap.get(INPUT_B)
    assert a is not None and a.value == 230.5 and a.quality == GOOD
    assert b is not None and b.value == -5 and b.quality == GOOD
    # Exception responses are quality on those points only, never a crash.
    m, k = snap[MISSING], snap[BROKEN]
    assert m is not None and m.quality == with_validity(BAD_REFERENCE, Validity.INVALID)
    assert k is not None and k.quality == with_validity(FAILURE, Validity.INVALID)
    assert st["exceptions"][2] >= st["polls"]["fast"] and st["exceptions"][4] >= st["polls"]["slow"]
    assert set(st["exceptions"]) == {2, 4}
    # Timestamps are taken at the response.
    assert all(t0 <= s.ts <= time.time() for batch in sink.batches for s in batch)

    # Two groups with their own periods: the fast one (5x the rate) polled far more often.
    fast, slow = st["polls"]["fast"], st["polls"]["slow"]
    assert slow >= 5
    assert fast >= 2 * slow, (fast, slow)
    # One batch per poll, each holding exactly one group's points.
    assert len(sink.batches) == fast + slow
    group_points = {g: {p for blk in blocks for p in blk.points} for g, blocks in plan.items()}
    assert all({s.point for s in batch} in group_points.values() for batch in sink.batches)
    # The server saw exactly the planned requests, each once per poll of its group.
    assert [r[:2] for r in seen if r[0] > 4] == [(6, 0), (5, 1)]  # the two writes
    seen = [r for r in seen if r[0] <= 4]
    planned = {
        (fc[blk.table], blk.start, blk.count): g for g, blocks in plan.items() for blk in blocks
    }
    assert set(seen) == set(planned)
    for key, group in planned.items():
        n = seen.count(key)
        assert st["polls"][group] <= n <= st["polls"][group] + 1, (key, n, st["polls"])
    assert st["requests"] == len(seen)  # reads only
    assert st["reconnects"] == 0 and st["connects"] == 1


async def test_server_stop_marks_not_topical_and_restart_refreshes_everything(port: int) -> None:
    cfg = ModbusDriverConfig.model_validate(
        {
            "id": "plc",
            "protocol": "modbus",
            "port": port,
            "timeout_s": 1.0,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
            # The slow group would not poll again within the test: only a full refresh on
            # reconnect can bring its new values.
            "poll_groups": [{"name": "fast", "period_s": 0.05}, {"name": "slow", "period_s": 600}],
            "registers": [
                {"point": INPUT_A, "table": "input", "address": 100, "dtype": "float32", "group": "fast"},
                {"point": INPUT_B, "table": "input", "address": 120, "dtype": "int16", "group": "slow"},
                {"point": "T1.PLC/CO1.Pos.stVal", "table": "coil", "address": 0, "dtype": "bool", "group": "slow"},
                {"point": "T1.PLC/DI1.Ind.stVal", "table": "discrete_input", "address": 3, "dtype": "bool", "group": "slow"},
            ],
        }
    )  # fmt: skip
    points = all_points(cfg)
    twin = Twin(refs=points)
    sink = Recorder(twin)
    driver = ModbusDriver(cfg, sink)

    def values() -> dict[str, Any]:
        return {p: (s.value, s.quality) if (s := twin.get(p)) else None for p in points}

    first = {INPUT_A: (230.5, GOOD), INPUT_B: (-5, GOOD), "T1.PLC/CO1.Pos.stVal": (True, GOOD),
             "T1.PLC/DI1.Ind.stVal": (True, GOOD)}  # fmt: skip
    server = await start_server(port, plc_device())
    async with running(driver):
        try:
            await wait_until(lambda: values() == first, "first values")
            assert driver.connected
        finally:
            await server.shutdown()  # type: ignore[no-untyped-call]
        # The server is gone: every point keeps its value but turns not topical, once.
        await wait_until(lambda: not driver.connected, "link down")
        await wait_until(
            lambda: all((s := twin.get(p)) is not None and s.quality & OLD_DATA for p in points),
            "points not topical",
        )
        assert [s.value for p in points if (s := twin.get(p))] == [230.5, -5, True, True]
        connects = driver.connects
        await asyncio.sleep(0.5)  # several failed reconnect attempts (backoff 0.05 .. 0.2 s)
        assert sink.not_topical == [set(points)]
        assert driver.connects == connects

        # Same port, new values: the driver reconnects and refreshes every point at once.
        dev = plc_device(input_value=-1.25)
        async with pymodbus_server(port, dev):
            changed = {INPUT_A: (-1.25, GOOD), INPUT_B: (-5, GOOD),
                       "T1.PLC/CO1.Pos.stVal": (True, GOOD), "T1.PLC/DI1.Ind.stVal": (True, GOOD)}  # fmt: skip
            await wait_until(lambda: values() == changed, "refresh after reconnect")
            st = driver.stats()
            assert st["reconnects"] == 1 and st["connects"] == 2 and st["connected"]
            assert st["polls"]["slow"] == 2  # the initial poll and the full refresh
        await wait_until(lambda: not driver.connected, "link down again")
        assert len(sink.not_topical) == 2


async def test_link_down_before_any_connection(port: int) -> None:
    cfg = plc_config(port)  # nothing listens there
    sink = Recorder(Twin(refs=all_points(cfg)))
    driver = ModbusDriver(cfg, sink)
    async with running(driver):
        await wait_until(lambda: len(sink.not_topical) == 1, "points marked not topical")
        assert not driver.connected
        with pytest.raises(LinkDown, match="not connected"):
            await driver.execute(
                Command(target=P("A01"), value=1.0, origin="test"), lambda *_: None
            )
        await asyncio.sleep(0.3)
    assert sink.not_topical == [set(all_points(cfg))]
    assert driver.stats()["connects"] == 0


# --- commands against our simulator ------------------------------------------------------------

BAT_SET = "VPP1.BAT02/DRCC1.WSpt.setMag.f"
BAT_P = "VPP1.BAT02/MMXU1.TotW.mag.f"
REFUSED = "VPP1.PV01/DRCC1.WSpt.setMag.f"  # mapped here at an address the simulator does not have


def mb1_config(site: SiteConfig, port: int) -> ModbusDriverConfig:
    mb1 = next(d for d in site.drivers if d.id == "mb1")
    d = mb1.model_dump(mode="json")
    d.update(
        port=port,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
        timeout_s=1.0,
        poll_groups=[{"name": "fast", "period_s": 0.05}, {"name": "slow", "period_s": 0.3}],
    )
    d["registers"].append(
        {"point": REFUSED, "table": "holding", "address": 100, "dtype": "int32", "scale": 0.1,
         "writable": True, "group": "slow"}
    )  # fmt: skip
    return ModbusDriverConfig.model_validate(d)


async def test_commands_against_the_simulator(demo_site: SiteConfig, port: int) -> None:
    sim = ModbusSimulator(demo_site, "mb1", port=port, tick_s=0.05)
    stop = asyncio.Event()
    sim_task = asyncio.create_task(sim.serve(stop))
    twin = Twin.from_site(demo_site)
    cfg = mb1_config(demo_site, port)
    driver = ModbusDriver(cfg, twin)
    assert BAT_SET in driver.command_points() and BAT_SET in driver.monitored_points()
    try:
        await wait_until(lambda: sim.running, "simulator listening")
        async with running(driver):
            mb1_points = [r.point for r in cfg.registers if r.point != REFUSED]
            await wait_until(
                lambda: all(
                    (s := twin.get(p)) is not None and s.quality == GOOD for p in mb1_points
                ),
                "every mb1 point good",
            )
            assert val(twin, BAT_P) == pytest.approx(0.0)

            # A set-point goes out, is acknowledged (SENT), changes the simulated battery and
            # comes back through acquisition, which confirms the command by read-back.
            cmd = Command(target=BAT_SET, value=20.0, origin="test")
            twin.accept_command(cmd)
            reports: list[tuple[CommandState, str]] = []

            def report(state: CommandState, reason: str) -> None:
                reports.append((state, reason))
                twin.commands.transition(cmd.id, state, reason)

            await driver.execute(cmd, report)
            assert [s for s, _ in reports] == [CommandState.SENT]
            assert sim.binding.read(BAT_SET) == pytest.approx(20.0)
            await wait_until(
                lambda: twin.commands.get(cmd.id).state == CommandState.CONFIRMED, "read-back"
            )
            await wait_until(
                lambda: val(twin, BAT_P) == pytest.approx(20.0),
                "battery power follows",
            )
            assert sim.binding.read(BAT_P) == pytest.approx(20.0)

            # Beyond the battery's limit: the device clamps, and the read-back shows it.
            await driver.execute(
                Command(target=BAT_SET, value=100.0, origin="test"), lambda *_: None
            )
            await wait_until(lambda: val(twin, BAT_SET) == pytest.approx(30.0), "clamped read-back")

            # The device refuses an address it does not have: DeviceError naming the exception.
            with pytest.raises(DeviceError, match=r"ILLEGAL DATA ADDRESS \(2\)") as ei:
                await driver.execute(Command(target=REFUSED, value=5.0, origin="test"), report)
            assert getattr(ei.value, "code", None) == 2
            await wait_until(lambda: twin.get(REFUSED) is not None, "refused point polled")
            assert qual(twin, REFUSED) == with_validity(BAD_REFERENCE, Validity.INVALID)
            assert qual(twin, BAT_P) == GOOD

            # Refused before the wire: not a writable point, or a value the register cannot hold.
            with pytest.raises(CommandRejected):
                await driver.execute(Command(target=BAT_P, value=1.0, origin="test"), report)
            with pytest.raises(RegisterRangeError, match=BAT_SET):
                await driver.execute(Command(target=BAT_SET, value=1e12, origin="test"), report)
            assert len(reports) == 1

            # The device goes away: commands fail with LinkDown.
            stop.set()
            await asyncio.wait_for(sim_task, WAIT_S)
            await wait_until(lambda: not driver.connected, "link down")
            with pytest.raises(LinkDown):
                await driver.execute(Command(target=BAT_SET, value=0.0, origin="test"), report)
            assert (qual(twin, BAT_P) or 0) & OLD_DATA
    finally:
        stop.set()
        await asyncio.wait_for(sim_task, WAIT_S)


async def test_simulator_answers_only_its_map(demo_site: SiteConfig, port: int) -> None:
    sim = ModbusSimulator(demo_site, "mb1", port=port)
    await sim.start()
    client = AsyncModbusTcpClient(
        "127.0.0.1", port=port, timeout=1.0, retries=0, reconnect_delay=1.0
    )
    try:
        assert await client.connect()
        ok = await client.read_input_registers(0, count=25, device_id=1)
        assert not ok.isError()
        assert ok.registers[14] == 5250  # BAT02 SoC 52.5 % at scale 0.01
        for call in (
            client.read_input_registers(25, count=1, device_id=1),  # past the map
            client.read_holding_registers(50, count=1, device_id=1),  # unmapped
            client.read_coils(0, count=1, device_id=1),  # no coils in mb1
            client.write_register(5, 1, device_id=1),  # inside a read block, not writable
            client.write_register(10, 0, device_id=1),  # half of a 32-bit set-point
        ):
            resp = await call
            assert resp.isError() and resp.exception_code == 2
        # A whole set-point reaches the DER model, and reads back.
        resp = await client.write_registers(20, [0xFFFF, 0xFF38], device_id=1)  # -200 -> -20.0 kW
        assert not resp.isError()
        assert sim.binding.read("VPP1.LOAD01/DRCC1.WSpt.setMag.f") == pytest.approx(-20.0)
        sim.step(1.0)
        back = await client.read_holding_registers(20, count=2, device_id=1)
        assert back.registers == [0xFFFF, 0xFF38]
        p = await client.read_input_registers(20, count=2, device_id=1)
        assert struct.unpack(">f", struct.pack(">HH", p.registers[1], p.registers[0]))[
            0
        ] == pytest.approx(-20.0)
    finally:
        client.close()
        await sim.stop()
