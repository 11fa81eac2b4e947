"""Modbus RTU: our driver on one end of a real pty null-modem, the simulator's pymodbus serial server on the other."""

import asyncio
import time

import pytest

from gateway.commands import CommandPath
from gateway.south.modbus import ModbusDriver
from gateway.transports.pty import PtyBridge
from model.command import Command, CommandState
from model.drivers import ModbusRtuDriverConfig
from model.errors import SiteConfigError
from model.quality import OLD_DATA
from model.site import SiteConfig, parse_site
from tools.sim.modbus import ModbusSimulator
from twin.twin import Twin

SET = "VPP1.BAT02/DRCC1.WSpt.setMag.f"
P = "VPP1.BAT02/MMXU1.TotW.mag.f"
SOC = "VPP1.BAT02/ZBAT1.SoC.mag.f"


def _rtu_site(demo_site: SiteConfig, link: str) -> SiteConfig:
    mb = next(d for d in demo_site.drivers if d.id == "mb1")
    data = mb.model_dump(exclude={"protocol", "host", "port"})
    data["poll_groups"] = [{"name": g.name, "period_s": 0.2} for g in mb.poll_groups]
    rtu = ModbusRtuDriverConfig.model_validate(
        {**data, "id": "rtu1", "protocol": "modbus_rtu", "link": link}
    )
    return demo_site.model_copy(update={"drivers": [rtu]})


async def _until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


async def test_rtu_acquisition_command_and_line_loss(demo_site) -> None:
    bridge = PtyBridge().start()
    dev_path, drv_path = bridge.paths
    # 8N1: a Linux pty refuses parity once pyserial switches to non-blocking reads (EINVAL);
    # real RS-485 adapters take the 8E1 most Modbus RTU devices use.
    site = _rtu_site(demo_site, f"serial://{drv_path}?baudrate=19200&parity=N")
    sim = ModbusSimulator(site, "rtu1", serial_port=dev_path)
    twin = Twin.from_site(site)
    driver = ModbusDriver(site.drivers[0], twin)  # type: ignore[arg-type]
    path = CommandPath(twin, [driver])
    await sim.start()
    try:
        await driver.start()
        await _until(lambda: twin.get(SOC) is not None, 10, "first RTU poll")
        soc = twin.get(SOC)
        assert soc.quality == 0 and soc.value == pytest.approx(sim.binding.read(SOC), abs=0.01)
        rec = await path.submit(Command(SET, -12.0, "test", deadline=time.time() + 10))
        await _until(lambda: rec.done, 10, "confirmation over RTU")
        assert rec.state == CommandState.CONFIRMED
        sim.step(1.0)
        await _until(lambda: abs(twin.get(P).value + 12.0) < 0.05, 10, "battery to follow")
        assert sim.writes == 1
        await sim.stop()  # the device goes silent: no answers on the line
        await _until(lambda: twin.get(P).quality & OLD_DATA, 15, "points not topical")
        await sim.start()
        await _until(lambda: twin.get(P).quality == 0, 20, "refresh after the device is back")
    finally:
        await path.close()
        await driver.stop()
        await sim.stop()
        bridge.close()


def test_rtu_config_needs_a_serial_link(demo_site) -> None:
    mb = next(d for d in demo_site.drivers if d.id == "mb1")
    with pytest.raises(ValueError, match="needs a serial:// link"):
        ModbusRtuDriverConfig.model_validate(
            {
                **mb.model_dump(exclude={"protocol", "host", "port"}),
                "protocol": "modbus_rtu",
                "link": "tcp://x:1",
            }
        )
    text = "site: {id: S}\nvpps: [{id: V}]\ndrivers:\n  - {id: r, protocol: modbus_rtu, host: x, link: 'serial:///dev/ttyS0'}\n"
    with pytest.raises(SiteConfigError, match=r"drivers\[0\]\.host: unknown key"):
        parse_site(text)
