"""The one command path against a real Modbus device simulator and our Modbus driver on loopback."""

import asyncio
import time

import pytest

from gateway.commands import CommandPath
from gateway.errors import CommandRejected
from gateway.south.modbus import ModbusDriver
from model.command import Command, CommandState
from model.site import SiteConfig
from tools.sim.modbus import ModbusSimulator
from twin.twin import Twin

SET = "VPP1.BAT02/DRCC1.WSpt.setMag.f"
P = "VPP1.BAT02/MMXU1.TotW.mag.f"


def _with_port(site: SiteConfig, port: int, **reg_moves: int) -> SiteConfig:
    drivers = []
    for d in site.drivers:
        if d.id == "mb1":
            regs = [
                r.model_copy(update={"address": reg_moves[r.point]}) if r.point in reg_moves else r
                for r in d.registers
            ]
            poll = [g.model_copy(update={"period_s": 0.2}) for g in d.poll_groups]
            d = d.model_copy(update={"port": port, "registers": regs, "poll_groups": poll})
        drivers.append(d)
    return site.model_copy(update={"drivers": drivers})


async def _until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


class Rig:
    def __init__(self, sim_site: SiteConfig, gw_site: SiteConfig) -> None:
        self.sim = ModbusSimulator(sim_site, "mb1", tick_s=0.1)
        self.twin = Twin.from_site(gw_site)
        cfg = next(d for d in gw_site.drivers if d.id == "mb1")
        self.driver = ModbusDriver(cfg, self.twin)  # type: ignore[arg-type]
        self.path = CommandPath(self.twin, [self.driver])
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> "Rig":
        self._task = asyncio.create_task(self.sim.serve(self._stop))
        await _until(lambda: self.sim.running, 5, "simulator")
        await self.driver.start()
        await _until(lambda: self.twin.get(P) is not None, 10, "first poll")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.path.close()
        await self.driver.stop()
        self._stop.set()
        assert self._task is not None
        await self._task


@pytest.fixture
def site(demo_site, port) -> SiteConfig:
    return _with_port(demo_site, port)


async def test_set_point_is_sent_confirmed_and_followed(site) -> None:
    async with Rig(site, site) as rig:
        rec = await rig.path.submit(Command(SET, -15.0, "test", deadline=time.time() + 10))
        await _until(lambda: rec.done, 10, "confirmation")
        assert [t.state for t in rec.history] == [
            CommandState.ACCEPTED,
            CommandState.SENT,
            CommandState.CONFIRMED,
        ]
        assert rig.twin.get(SET).value == pytest.approx(-15.0)
        await _until(lambda: abs(rig.twin.get(P).value + 15.0) < 0.1, 10, "battery to follow")


async def test_repeated_id_executes_once(site) -> None:
    async with Rig(site, site) as rig:
        cmd = Command(SET, 7.0, "test", id="same", deadline=time.time() + 10)
        first = await rig.path.submit(cmd)
        second = await rig.path.submit(cmd)
        assert first is second
        await _until(lambda: first.done, 10, "confirmation")
        assert rig.sim.writes == 1
        with pytest.raises(CommandRejected) as ei:
            await rig.path.submit(Command(SET, 8.0, "test", id="same", deadline=time.time() + 10))
        assert ei.value.code == "conflict"


async def test_rejections_record_nothing(site) -> None:
    async with Rig(site, site) as rig:
        cases = [
            (Command(SET, 31.0, "t"), "out_of_limits"),
            (Command(P, 1.0, "t"), "read_only"),
            # A valid set-point of a resource behind another driver: no route here.
            (Command("VPP1.BAT01/DRCC1.WSpt.setMag.f", 1.0, "t"), "no_route"),
            (Command(SET, 1.0, "t", deadline=time.time() - 1), "expired"),
        ]
        for cmd, code in cases:
            with pytest.raises(CommandRejected) as ei:
                await rig.path.submit(cmd)
            assert ei.value.code == code
            assert cmd.id not in rig.twin.commands
        assert rig.sim.writes == 0


async def test_device_refusal_fails_the_command(demo_site, port) -> None:
    # The gateway's map puts LOAD01's set-point where the device has nothing: exception 2.
    sim_site = _with_port(demo_site, port)
    gw_site = _with_port(demo_site, port, **{"VPP1.LOAD01/DRCC1.WSpt.setMag.f": 40})
    async with Rig(sim_site, gw_site) as rig:
        rec = await rig.path.submit(Command("VPP1.LOAD01/DRCC1.WSpt.setMag.f", -20.0, "t"))
        await _until(lambda: rec.done, 10, "failure")
        assert rec.state == CommandState.FAILED
        assert "ILLEGAL DATA ADDRESS" in rec.history[-1].reason


async def test_link_down_fails_and_deadline_times_out(site) -> None:
    async with Rig(site, site) as rig:
        # Deadline too short for any read-back: the write goes out, confirmation never comes.
        rec = await rig.path.submit(Command(SET, 3.0, "t", deadline=time.time() + 0.05))
        await _until(lambda: rec.done or rig.twin.commands.sweep() or rec.done, 5, "time-out")
        assert rec.state == CommandState.TIMED_OUT
        await rig.sim.stop()
        await _until(lambda: not rig.driver.connected, 10, "link down")
        rec = await rig.path.submit(Command(SET, 4.0, "t", deadline=time.time() + 10))
        await _until(lambda: rec.done, 5, "failure")
        assert rec.state == CommandState.FAILED
        assert "not connected" in rec.history[-1].reason or "link" in rec.history[-1].reason.lower()
