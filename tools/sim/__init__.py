"""Device simulators, one per protocol, built from a site file's driver section."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any, Protocol

from model.site import SiteConfig

__all__ = ["SIMULATORS", "Simulator", "create_simulator"]

# protocol -> "module:Class"; each class takes (site, driver_id, **options) and serves until stopped.
SIMULATORS = {
    "iec104": "tools.sim.iec104:IEC104Simulator",
    "modbus": "tools.sim.modbus:ModbusSimulator",
    "modbus_rtu": "tools.sim.modbus:ModbusSimulator",
    "iec101": "tools.sim.iec101:site_simulator",
    "dlt698": "tools.sim:dlt698_simulator",
    "dlt645": "tools.sim:dlt645_simulator",
}


class Simulator(Protocol):
    """What `vpp sim` and the demo need of a simulator."""

    async def serve(self, stop: asyncio.Event) -> None:
        """Run until stop is set."""


def dlt698_simulator(
    site: SiteConfig,
    driver_id: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    tick_s: float = 1.0,
    day_length_s: float = 86400.0,
) -> Simulator:
    """DL/T 698.45 meters of one driver, with reports and DER dynamics; a pty for serial links."""
    from gateway.transports.pty import open_pty
    from tools.sim.dlt698 import DLT698Simulator

    d = next(x for x in site.drivers if x.id == driver_id)
    kw: dict[str, Any] = {"tick_s": tick_s, "day_length_s": day_length_s, "reports": True,
                          "dynamics": True}  # fmt: skip
    pair = None
    if str(getattr(d, "link", "")).startswith("serial://") and port is None:
        pair = open_pty()  # the meters answer on a pty; the driver opens its slave side
        kw["pty_fd"] = pair.master_fd
    else:
        kw.update(host=host, port=port)
    sim = DLT698Simulator.from_site(site, driver_id, **kw)
    if pair is not None:
        sim.serial_port = pair.slave_path  # type: ignore[attr-defined]
    return sim


def dlt645_simulator(
    site: SiteConfig,
    driver_id: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    tick_s: float = 1.0,
    day_length_s: float = 86400.0,
) -> Simulator:
    """DL/T 645-2007 meters of one driver on one bus; a pty for serial links."""
    from gateway.transports.pty import open_pty
    from tools.sim.dlt645 import DLT645Simulator

    d = next(x for x in site.drivers if x.id == driver_id)
    kw: dict[str, Any] = {"tick_s": tick_s, "day_length_s": day_length_s}
    pair = None
    if str(getattr(d, "link", "")).startswith("serial://") and port is None:
        pair = open_pty()  # the meters answer on a pty; the driver opens its slave side
        kw["pty_fd"] = pair.master_fd
    else:
        kw.update(host=host, port=port)
    sim = DLT645Simulator(site, driver_id, **kw)
    if pair is not None:
        sim.serial_port = pair.slave_path  # type: ignore[attr-defined]
    return sim


def create_simulator(site: SiteConfig, driver_id: str, **options: Any) -> Simulator:
    """The simulator for one driver of a site; options it does not take are left out."""
    import inspect

    d = next(x for x in site.drivers if x.id == driver_id)
    module, _, name = SIMULATORS[d.protocol].partition(":")
    cls = getattr(importlib.import_module(module), name)
    accepted = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in options.items() if k in accepted and v is not None}
    sim: Simulator = cls(site, driver_id, **kwargs)
    return sim
