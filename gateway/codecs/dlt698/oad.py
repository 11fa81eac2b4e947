"""Object identifiers of DL/T 698.45: OI, OAD, OMD, ROAD, and the table of objects we know.

DL/T 698.45-2017 clause 7.2 / appendix: an object is named by its 16-bit OI; an OAD adds the
attribute (bits 0-4 of the attribute byte, bits 5-7 being the attribute feature) and an element
index (0 = the whole attribute, n = the n-th element of an array or structure); an OMD names a
method and its operating mode. The table below gives, for the attribute 2 ("value") of the
objects a gateway reads, its A-XDR type, the scaler (value = raw x 10^scaler) and the unit code of
appendix B (the units enumeration), as listed in appendix E.1-E.5 of the standard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.codecs.dlt698.errors import EncodeError

__all__ = [
    "OAD",
    "OBJECTS",
    "OMD",
    "ROAD",
    "UNITS",
    "ObjectDef",
    "element_names",
    "lookup",
    "oad_from_bytes",
    "parse_oad",
    "parse_omd",
    "unit_symbol",
]


@dataclass(frozen=True, slots=True, order=True)
class OAD:
    """Object attribute descriptor: OI, attribute id (1-31), attribute feature (0-7), index."""

    oi: int
    attribute: int = 2
    index: int = 0
    feature: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.oi <= 0xFFFF:
            raise EncodeError(f"OAD: OI {self.oi} is not 16-bit")
        if not 0 <= self.attribute <= 31:
            raise EncodeError(f"OAD: attribute {self.attribute} is not 0..31")
        if not 0 <= self.feature <= 7:
            raise EncodeError(f"OAD: attribute feature {self.feature} is not 0..7")
        if not 0 <= self.index <= 255:
            raise EncodeError(f"OAD: element index {self.index} is not 0..255")

    @property
    def attribute_byte(self) -> int:
        """The attribute byte on the wire: feature in bits 5-7, attribute id in bits 0-4."""
        return self.feature << 5 | self.attribute

    def to_bytes(self) -> bytes:
        """The four bytes on the wire."""
        return bytes((self.oi >> 8, self.oi & 0xFF, self.attribute_byte, self.index))

    @classmethod
    def from_bytes(cls, b: bytes) -> OAD:
        """Build from four wire bytes."""
        return cls(b[0] << 8 | b[1], b[2] & 0x1F, b[3], b[2] >> 5)

    def whole(self) -> OAD:
        """The same attribute with index 0 (the whole array)."""
        return OAD(self.oi, self.attribute, 0, self.feature)

    def __str__(self) -> str:
        return self.to_bytes().hex().upper()


_OAD_CACHE: dict[bytes, OAD] = {}


def oad_from_bytes(b: bytes) -> OAD:
    """An OAD from four wire bytes, shared: a meter sends the same few OADs again and again."""
    o = _OAD_CACHE.get(b)
    if o is None:
        if len(_OAD_CACHE) >= 4096:  # bounded: garbage cannot grow it
            _OAD_CACHE.clear()
        o = _OAD_CACHE[b] = OAD.from_bytes(b)
    return o


@dataclass(frozen=True, slots=True, order=True)
class OMD:
    """Object method descriptor: OI, method id, operating mode (0 by default)."""

    oi: int
    method: int
    mode: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.oi <= 0xFFFF:
            raise EncodeError(f"OMD: OI {self.oi} is not 16-bit")
        if not 0 <= self.method <= 255 or not 0 <= self.mode <= 255:
            raise EncodeError(f"OMD: method {self.method} / mode {self.mode} is not one byte")

    def to_bytes(self) -> bytes:
        """The four bytes on the wire."""
        return bytes((self.oi >> 8, self.oi & 0xFF, self.method, self.mode))

    @classmethod
    def from_bytes(cls, b: bytes) -> OMD:
        """Build from four wire bytes."""
        return cls(b[0] << 8 | b[1], b[2], b[3])

    def __str__(self) -> str:
        return self.to_bytes().hex().upper()


@dataclass(frozen=True, slots=True)
class ROAD:
    """Record object attribute descriptor: an OAD and the OADs associated with it."""

    oad: OAD
    associated: tuple[OAD, ...] = ()


# Appendix B of DL/T 698.45: the unit enumeration used by Scaler_Unit.
UNITS: dict[int, str] = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C",
    10: "currency", 11: "m", 12: "m/s", 13: "m³", 14: "m³", 15: "m³/h", 16: "m³/h",
    17: "m³/d", 18: "m³/d", 19: "l", 20: "kg", 21: "N", 22: "Nm", 23: "Pa", 24: "bar",
    25: "J", 26: "J/h", 27: "W", 28: "kW", 29: "VA", 30: "kVA", 31: "var", 32: "kvar",
    33: "kWh", 34: "kVAh", 35: "kvarh", 36: "A", 37: "C", 38: "V", 39: "V/m", 40: "F",
    41: "Ω", 42: "Ωm²/m", 43: "Wb", 44: "T", 45: "A/m", 46: "H", 47: "Hz", 48: "1/(Wh)",
    49: "1/(varh)", 50: "1/(VAh)", 51: "%", 52: "byte", 53: "dBm", 54: "元/kWh", 55: "Ah",
    56: "ms", 254: "other", 255: "",
}  # fmt: skip


def unit_symbol(code: int) -> str:
    """The symbol of a unit code ("" for 255, no unit; "unit N" for codes not in appendix B)."""
    return UNITS.get(code, f"unit {code}")


@dataclass(frozen=True, slots=True)
class ObjectDef:
    """What attribute 2 of an object holds: A-XDR type, element type of arrays, scaler, unit."""

    oi: int
    name: str
    class_id: int
    dtype: str  # A-XDR type name of attribute 2 (see axdr.Tag)
    element: str | None = None  # element type when dtype is array
    scaler: int = 0
    unit: int = 255
    elements: str = ""  # element layout: "phases" (A,B,C), "total_phases", "tariffs", ""

    @property
    def value_type(self) -> str:
        """Type of one value: the element type for arrays, else the attribute type."""
        return self.element or self.dtype


_TARIFFS = "tariffs"
_OBJECTS: list[ObjectDef] = []


def _energy(oi: int, name: str, signed: bool, unit: int) -> None:
    # Appendix E.1: attribute 2 "总及费率电能量数组", scaler -2; combined and reactive energies
    # are signed (double-long), the others unsigned (double-long-unsigned).
    element = "double-long" if signed else "double-long-unsigned"
    _OBJECTS.append(ObjectDef(oi, name, 1, "array", element, -2, unit, _TARIFFS))


for _base, _name, _signed, _unit in (
    (0x0000, "combined_active_energy", True, 33),
    (0x0010, "forward_active_energy", False, 33),
    (0x0020, "reverse_active_energy", False, 33),
    (0x0030, "combined_reactive_energy_1", True, 35),
    (0x0040, "combined_reactive_energy_2", True, 35),
    (0x0050, "quadrant1_reactive_energy", False, 35),
    (0x0060, "quadrant2_reactive_energy", False, 35),
    (0x0070, "quadrant3_reactive_energy", False, 35),
    (0x0080, "quadrant4_reactive_energy", False, 35),
    (0x0090, "forward_apparent_energy", False, 34),
    (0x00A0, "reverse_apparent_energy", False, 34),
):
    _energy(_base, _name, _signed, _unit)
    if _base:  # the combined active energy has no per-phase objects
        for _n, _ph in ((1, "a"), (2, "b"), (3, "c")):
            _energy(_base + _n, f"{_name}_{_ph}", _signed, _unit)

_OBJECTS += [
    # Appendix E.3 (variables, classes 3, 4 and 6).
    ObjectDef(0x2000, "voltage", 3, "array", "long-unsigned", -1, 38, "phases"),
    ObjectDef(0x2001, "current", 3, "array", "double-long", -3, 36, "phases"),
    ObjectDef(0x2002, "voltage_angle", 3, "array", "long-unsigned", -1, 8, "phases"),
    ObjectDef(0x2003, "voltage_current_angle", 3, "array", "long-unsigned", -1, 8, "phases"),
    ObjectDef(0x2004, "active_power", 4, "array", "double-long", -1, 27, "total_phases"),
    ObjectDef(0x2005, "reactive_power", 4, "array", "double-long", -1, 31, "total_phases"),
    ObjectDef(0x2006, "apparent_power", 4, "array", "double-long", -1, 29, "total_phases"),
    ObjectDef(0x2007, "avg_active_power_1min", 4, "array", "double-long", -1, 27, "total_phases"),
    ObjectDef(0x2008, "avg_reactive_power_1min", 4, "array", "double-long", -1, 31, "total_phases"),
    ObjectDef(0x2009, "avg_apparent_power_1min", 4, "array", "double-long", -1, 29, "total_phases"),
    ObjectDef(0x200A, "power_factor", 4, "array", "long", -3, 255, "total_phases"),
    ObjectDef(0x200B, "voltage_thd", 3, "array", "long", -2, 51, "phases"),
    ObjectDef(0x200C, "current_thd", 3, "array", "long", -2, 51, "phases"),
    ObjectDef(0x200F, "frequency", 6, "long-unsigned", None, -2, 47),
    ObjectDef(0x2010, "meter_temperature", 6, "long", None, -1, 9),
    ObjectDef(0x2011, "clock_battery_voltage", 6, "long-unsigned", None, -2, 38),
    ObjectDef(0x2017, "active_demand", 6, "double-long", None, -4, 28),
    ObjectDef(0x2018, "reactive_demand", 6, "double-long", None, -4, 32),
    ObjectDef(0x2019, "apparent_demand", 6, "double-long", None, -4, 30),
    ObjectDef(0x2026, "voltage_unbalance", 6, "long-unsigned", None, -2, 51),
    ObjectDef(0x2027, "current_unbalance", 6, "long-unsigned", None, -2, 51),
    # Appendix E.5 (parameters, class 8).
    ObjectDef(0x4000, "date_time", 8, "date_time_s"),
    ObjectDef(0x4001, "communication_address", 8, "octet-string"),
    ObjectDef(0x4002, "meter_number", 8, "octet-string"),
    ObjectDef(0x4003, "customer_number", 8, "octet-string"),
    # Control interfaces (class 8 as well): 8000 remote control, 8001 power protection.
    ObjectDef(0x8000, "remote_control", 8, "structure"),
    ObjectDef(0x8001, "power_protection", 8, "enum"),
]

OBJECTS: dict[int, ObjectDef] = {o.oi: o for o in _OBJECTS}
_BY_NAME: dict[str, ObjectDef] = {o.name: o for o in _OBJECTS}

_ELEMENT_NAMES = {
    "phases": ("A", "B", "C"),
    "total_phases": ("total", "A", "B", "C"),
    _TARIFFS: ("total", "T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8"),
}


def element_names(obj: ObjectDef) -> tuple[str, ...]:
    """Names of the elements of an array attribute, index 1 first (empty if not an array)."""
    return _ELEMENT_NAMES.get(obj.elements, ())


def lookup(oi: int) -> ObjectDef | None:
    """The table entry of an OI, if we know it."""
    return OBJECTS.get(oi)


_HEX8 = re.compile(r"^[0-9A-Fa-f]{8}$")
_NAMED = re.compile(r"^([a-z][a-z0-9_]*)(?:\.(\d{1,3}))?$")


def parse_oad(text: str) -> OAD:
    """An OAD from 8 hex digits ("20000200") or a table name with optional index ("voltage.1")."""
    text = text.strip()
    if _HEX8.match(text):
        return OAD.from_bytes(bytes.fromhex(text))
    m = _NAMED.match(text)
    if m and m.group(1) in _BY_NAME:
        return OAD(_BY_NAME[m.group(1)].oi, 2, int(m.group(2) or 0))
    raise EncodeError(
        f"{text!r} is not an OAD: give 8 hex digits (e.g. 20000200) or a known object name "
        f"(e.g. voltage, forward_active_energy.1)"
    )


def parse_omd(text: str) -> OMD:
    """An OMD from 8 hex digits, e.g. "80008100" (8000 remote control, method 129 trip)."""
    text = text.strip()
    if not _HEX8.match(text):
        raise EncodeError(f"{text!r} is not an OMD: give 8 hex digits (e.g. 80008100)")
    return OMD.from_bytes(bytes.fromhex(text))
