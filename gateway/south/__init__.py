"""South drivers, one per protocol, looked up by the site file's `protocol` key."""

from __future__ import annotations

import importlib
from typing import Any

from gateway.south.base import SampleSink, SouthDriver

__all__ = ["DRIVERS", "SampleSink", "SouthDriver", "create_driver"]

# protocol -> "module:Class"; imported on use so a site pays only for the protocols it has.
DRIVERS = {
    "iec104": "gateway.south.iec104:IEC104Driver",
    "modbus": "gateway.south.modbus:ModbusDriver",
    "modbus_rtu": "gateway.south.modbus:ModbusDriver",
    "opcua": "gateway.south.opcua:OpcUaDriver",
    "iec101": "gateway.south.iec101:IEC101Driver",
    "dlt698": "gateway.south.dlt698:DLT698Driver",
    "dlt645": "gateway.south.dlt645:DLT645Driver",
    # An edge terminal is a south driver to the platform: its points come up the secure channel.
    "edge": "gateway.edge.hub:EdgeLinkDriver",
    "iec61850": "gateway.south.iec61850:IEC61850Driver",
}


def create_driver(config: Any, sink: SampleSink) -> SouthDriver:
    """Instantiate the driver for a driver config."""
    module, _, cls = DRIVERS[config.protocol].partition(":")
    driver_cls = getattr(importlib.import_module(module), cls)
    driver: SouthDriver = driver_cls(config, sink)
    return driver
