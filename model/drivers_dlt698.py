"""Site-file configuration of a DL/T 698.45 driver: a link, the meters on it, what to read and
what commands may do.

One driver owns one link (a serial RS-485 bus or a TCP "transparent transmission" converter or
a meter/terminal on TCP) with one or more meters, each addressed by its server address. Every
poll period the driver reads the items of each meter with GET-Request (NormalList), applies the
object's scaler-unit and the item's scale/offset, and hands Samples to the twin. Items marked
writable are written with SET-Request on command; controls invoke methods with ACTION-Request
(e.g. remote control 8000: trip / close).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from model.binding import Binding
from model.points import PointRef, StrictModel

__all__ = [
    "DLT698_OAD_NAMES",
    "DLT698Control",
    "DLT698DriverConfig",
    "DLT698Item",
    "DLT698Meter",
    "resolve_oad",
]

# Object names accepted in `oad` (attribute 2 of the object), as in the codec's OAD table
# (gateway/codecs/dlt698/oad.py; a test keeps the two in step). "name.N" selects element N.
DLT698_OAD_NAMES: dict[str, str] = {
    "combined_active_energy": "00000200",
    "forward_active_energy": "00100200",
    "forward_active_energy_a": "00110200",
    "forward_active_energy_b": "00120200",
    "forward_active_energy_c": "00130200",
    "reverse_active_energy": "00200200",
    "reverse_active_energy_a": "00210200",
    "reverse_active_energy_b": "00220200",
    "reverse_active_energy_c": "00230200",
    "combined_reactive_energy_1": "00300200",
    "combined_reactive_energy_2": "00400200",
    "quadrant1_reactive_energy": "00500200",
    "quadrant2_reactive_energy": "00600200",
    "quadrant3_reactive_energy": "00700200",
    "quadrant4_reactive_energy": "00800200",
    "forward_apparent_energy": "00900200",
    "reverse_apparent_energy": "00A00200",
    "voltage": "20000200",
    "current": "20010200",
    "active_power": "20040200",
    "reactive_power": "20050200",
    "apparent_power": "20060200",
    "power_factor": "200A0200",
    "frequency": "200F0200",
    "meter_temperature": "20100200",
    "active_demand": "20170200",
    "reactive_demand": "20180200",
    "date_time": "40000200",
    "power_protection": "80010200",
}

_HEX8 = re.compile(r"^[0-9A-Fa-f]{8}$")
_NAMED = re.compile(r"^([a-z][a-z0-9_]*)(?:\.(\d{1,3}))?$")
_ADDRESS = re.compile(r"^[0-9A-Fa-f]{1,32}$")
_ID = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]

# A-XDR types a writable item or a method parameter may be given in (numbers and bool).
ValueType = Literal[
    "bool", "integer", "long", "unsigned", "long-unsigned", "double-long",
    "double-long-unsigned", "long64", "long64-unsigned", "enum", "float32", "float64",
]  # fmt: skip


def _check_oad(text: str, what: str) -> str:
    text = text.strip()
    if _HEX8.match(text):
        return text.upper()
    m = _NAMED.match(text)
    if m and m.group(1) in DLT698_OAD_NAMES:
        return text
    raise ValueError(
        f"{what} {text!r} is neither 8 hex digits (e.g. 20000200) nor a known object name "
        f"({', '.join(sorted(DLT698_OAD_NAMES))})"
    )


def resolve_oad(text: str) -> str:
    """The 8 hex digits of an item's OAD (names resolved, "name.N" sets the element index)."""
    if _HEX8.match(text):
        return text.upper()
    m = _NAMED.match(text)
    if not m or m.group(1) not in DLT698_OAD_NAMES:
        raise ValueError(f"unknown OAD {text!r}")
    base = DLT698_OAD_NAMES[m.group(1)]
    return base[:6] + f"{int(m.group(2) or 0):02X}"


class DLT698Meter(StrictModel):
    """One meter (server) on the link."""

    name: _ID
    address: str = Field(description="server address as printed on the meter, e.g. 000000000001")
    address_type: Literal["single", "wildcard", "group", "broadcast"] = "single"
    logical_address: int = Field(default=0, ge=0, le=3)
    connect: bool = Field(default=False, description="establish an application connection first")
    password: str | None = Field(default=None, description="CONNECT with password security")

    @field_validator("address")
    @classmethod
    def _hex_address(cls, v: str) -> str:
        v = v.replace(" ", "")
        if not _ADDRESS.match(v):
            raise ValueError(f"address {v!r} must be 1..32 hex/BCD digits, e.g. 000000000001")
        return v.upper().zfill(len(v) + len(v) % 2)


class DLT698Item(StrictModel):
    """One value read from a meter into a model point: value = raw x 10^scaler x scale + offset."""

    meter: str
    oad: str = Field(description="8 hex digits (20000200) or an object name (voltage, voltage.1)")
    point: PointRef
    index: int | None = Field(
        default=None, ge=1, le=255, description="element (1 = first) of an array value"
    )
    scale: float = 1.0
    offset: float = 0.0
    scaler: int | None = Field(
        default=None, ge=-128, le=127, description="override the scaler (default: table/meter)"
    )
    bit: int | None = Field(default=None, ge=0, le=255, description="take one bit of a bit-string")
    invert: bool = Field(default=False, description="negate a boolean value (bool or bit)")
    writable: bool = Field(default=False, description="commands to the point use SET-Request")
    dtype: ValueType | None = Field(
        default=None, description="A-XDR type to write (objects not in the table)"
    )

    @field_validator("oad")
    @classmethod
    def _known_oad(cls, v: str) -> str:
        return _check_oad(v, "oad")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.writable and self.bit is not None:
            raise ValueError("a bit of a bit-string cannot be written: use a control instead")
        return self


class DLT698Control(StrictModel):
    """A command point executed with ACTION-Request.

    remote_control (8000): a true value closes the relay (method 130 合闸, "direct close"),
    false trips it (method 129 跳闸). power_protection (8001): true 127 (保电 on), false 128.
    method: invoke `omd` with the command value as the parameter of type `dtype`.
    """

    meter: str
    point: PointRef
    action: Literal["remote_control", "power_protection", "method"] = "remote_control"
    omd: str | None = Field(default=None, description="8 hex digits, for action 'method'")
    relay: str = Field(default="F2050201", description="relay OAD for remote control")
    dtype: ValueType = "long"
    scale: float = 1.0

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.action == "method":
            if self.omd is None or not _HEX8.match(self.omd):
                raise ValueError("action 'method' needs omd as 8 hex digits, e.g. 80008100")
        elif self.omd is not None:
            raise ValueError(f"omd is only for action 'method', not {self.action!r}")
        if not _HEX8.match(self.relay):
            raise ValueError(f"relay {self.relay!r} must be an OAD of 8 hex digits")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self


def _check_link(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise ValueError(f"link {url!r}: a tcp link needs host and port, tcp://host:port")
        return url
    if parts.scheme == "serial" and (parts.path or parts.netloc):
        return url
    raise ValueError(
        f"link {url!r} must be tcp://host:port or serial:///dev/ttyX?baudrate=2400&parity=E"
    )


class DLT698DriverConfig(StrictModel):
    """A DL/T 698.45 link with its meters, polled by our driver."""

    id: _ID
    protocol: Literal["dlt698"]
    enabled: bool = True
    link: str = Field(description="tcp://host:port or serial:///dev/ttyUSB0?baudrate=9600&parity=E")
    client_address: int = Field(default=0x10, ge=0, le=255)
    poll_period_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=2.0, gt=0)
    retries: int = Field(default=1, ge=0, le=5)
    max_oads_per_request: int = Field(default=16, ge=1, le=64)
    max_frame: int = Field(default=2048, ge=64, le=16385)
    max_apdu: int = Field(default=65536, ge=256)
    read_scaler_unit: bool = Field(
        default=True, description="read attribute 3 (scaler-unit) from the meter on connect"
    )
    security: bool = Field(
        default=False, description="wrap requests in SECURITY-Request (plaintext + random number)"
    )
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    meters: list[DLT698Meter] = Field(min_length=1)
    items: list[DLT698Item] = []
    controls: list[DLT698Control] = []

    @field_validator("link")
    @classmethod
    def _link(cls, v: str) -> str:
        return _check_link(v)

    def bindings(self) -> list[Binding]:
        """(list key, index, point, is_command); a writable item is also read back."""
        out: list[Binding] = [("items", i, it.point, False) for i, it in enumerate(self.items)]
        out += [("items", i, it.point, True) for i, it in enumerate(self.items) if it.writable]
        out += [("controls", i, c.point, True) for i, c in enumerate(self.controls)]
        return out

    @model_validator(mode="after")
    def _check(self) -> Self:
        names: dict[str, int] = {}
        addresses: dict[tuple[str, int], int] = {}
        for i, m in enumerate(self.meters):
            if m.name in names:
                raise ValueError(f"meters[{i}]: name {m.name!r} is already meters[{names[m.name]}]")
            names[m.name] = i
            key = (m.address, m.logical_address)
            if m.address_type == "single" and key in addresses:
                raise ValueError(
                    f"meters[{i}]: address {m.address} is already meters[{addresses[key]}]"
                )
            addresses[key] = i
        refs: list[tuple[str, str, str, bool]] = [
            (f"items[{i}]", it.meter, it.point, it.writable) for i, it in enumerate(self.items)
        ]
        refs += [(f"controls[{i}]", c.meter, c.point, True) for i, c in enumerate(self.controls)]
        commands: dict[str, str] = {}
        for where, meter, point, is_command in refs:
            if meter not in names:
                raise ValueError(
                    f"{where}: meter {meter!r} is not defined (have: {', '.join(names)})"
                )
            if is_command:
                if point in commands:
                    raise ValueError(f"{where}: {point} is already commanded by {commands[point]}")
                commands[point] = where
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self
