"""DL/T 645-2007 driver configuration and the data-identifier vocabulary it is validated against.

The vocabulary (which DI3..DI0 exist, their names, data formats, units and sign handling) lives
here rather than in the codec because the site file is validated in `model`, which imports
nothing of ours; the sans-IO codec (gateway.codecs.dlt645.data_ids) builds its value decoding on
this table, so there is one source of truth.

Formats are written as the standard writes them (DL/T 645-2007 appendix A): `XXXXXX.XX` is eight
BCD digits with two decimals (4 bytes, least significant byte first on the wire); date/time
patterns are made of the two-digit tokens YY MM DD WW hh mm ss; `N12` is a 12-digit BCD number
(an address or meter number); `bits16` a 16-bit binary status word; `hex4` an opaque 4-byte code
(operator code); `DI` a 4-byte data identifier. `signed` marks values whose most significant bit
is the sign ("最高位表示方向, 0 正 1 负": currents, powers, power factors, combined energies).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Annotated, Literal, Self
from urllib.parse import parse_qs, urlencode, urlsplit

from pydantic import Field, field_validator, model_validator

from model.points import PointRef, StrictModel

__all__ = [
    "ADDRESS_PATTERN",
    "BROADCAST_ADDRESS",
    "STATUS_WORD_3",
    "DIField",
    "DLT645Control",
    "DLT645DriverConfig",
    "DLT645Item",
    "DLT645Meter",
    "DataItem",
    "data_items",
    "di_by_name",
    "lookup_di",
    "parse_di",
]

ADDRESS_PATTERN = re.compile(r"^[0-9]{12}$")
BROADCAST_ADDRESS = "999999999999"
STATUS_WORD_3 = 0x04000503  # 电表运行状态字3: bit4 relay state (0 closed, 1 open)

_NUMBER = re.compile(r"^(X+)(?:\.(X+))?$")
_DATE_TOKENS = ("YY", "MM", "DD", "WW", "hh", "mm", "ss")
_SPECIAL_SIZES = {"bits8": 1, "bits16": 2, "bits32": 4, "N12": 6, "hex4": 4, "DI": 4}


@dataclass(frozen=True, slots=True)
class DIField:
    """One field of a data item: its format, unit and whether the top bit is a sign."""

    name: str
    fmt: str
    unit: str = ""
    signed: bool = False
    # Derived from fmt once (decoding reads them for every value).
    size: int = field(init=False, repr=False, compare=False)
    decimals: int = field(init=False, repr=False, compare=False)
    kind: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        fmt = self.fmt
        m = _NUMBER.match(fmt)
        if fmt.startswith("bits"):
            kind = "bits"
        elif fmt == "N12":
            kind = "digits"
        elif fmt == "hex4":
            kind = "hex"
        elif fmt == "DI":
            kind = "di"
        elif m:
            kind = "number"
        else:
            kind = "datetime"
        special = _SPECIAL_SIZES.get(fmt)
        if special is not None:
            size = special
        elif m:
            size = (len(m.group(1)) + len(m.group(2) or "")) // 2
        else:
            size = len(fmt) // 2
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "decimals", len(m.group(2) or "") if m else 0)
        object.__setattr__(self, "kind", kind)

    @property
    def numeric(self) -> bool:
        """True for BCD numbers and bit strings (a point can take their value)."""
        return self.kind in ("number", "bits")


@dataclass(frozen=True, slots=True)
class DataItem:
    """A data identifier DI3..DI0: name, layout of its data and access.

    A `block` item is a run of elements each laid out as `fields` (e.g. total and every tariff,
    or phases A, B, C); its element count follows from the data length.
    """

    di: int
    name: str
    description: str
    fields: tuple[DIField, ...]
    block: bool = False
    access: Literal["r", "rw", "w"] = "r"

    @property
    def hex(self) -> str:
        """The identifier as eight hex digits, DI3 first (e.g. '02010100')."""
        return f"{self.di:08X}"

    @property
    def element_size(self) -> int:
        """Bytes of one element (the whole item unless it is a block)."""
        return sum(f.size for f in self.fields)

    def numeric_field(self, name: str | None = None) -> DIField | None:
        """The field a point takes its value from: `name`, else the first numeric field."""
        for f in self.fields:
            if (name is None and f.numeric) or f.name == name:
                return f
        return None


# --- the table ------------------------------------------------------------------------------

# DI2 of energy (DI3 = 00) and demand (DI3 = 01): name, description, unit, signed.
_ENERGY_KINDS: dict[int, tuple[str, str, str, bool]] = {
    0x00: ("combined_active", "combined active", "kWh", True),
    0x01: ("forward_active", "forward active", "kWh", False),
    0x02: ("reverse_active", "reverse active", "kWh", False),
    0x03: ("combined_reactive1", "combined reactive 1", "kvarh", True),
    0x04: ("combined_reactive2", "combined reactive 2", "kvarh", True),
    0x05: ("q1_reactive", "quadrant I reactive", "kvarh", False),
    0x06: ("q2_reactive", "quadrant II reactive", "kvarh", False),
    0x07: ("q3_reactive", "quadrant III reactive", "kvarh", False),
    0x08: ("q4_reactive", "quadrant IV reactive", "kvarh", False),
    0x09: ("forward_apparent", "forward apparent", "kVAh", False),
    0x0A: ("reverse_apparent", "reverse apparent", "kVAh", False),
}
# Per-phase energies: DI2 = phase base + offset into this list (A 15.., B 29.., C 3D..).
_PHASE_ENERGY = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A)
_PHASES = {"a": 0x15, "b": 0x29, "c": 0x3D}
_DEMAND_UNITS = {"kWh": "kW", "kvarh": "kvar", "kVAh": "kVA"}


def _suffix(tariff: int, settlement: int) -> tuple[str, str]:
    name = "" if tariff == 0 else "_block" if tariff == 0xFF else f"_t{tariff}"
    desc = "total" if tariff == 0 else "total and tariffs" if tariff == 0xFF else f"tariff {tariff}"
    if settlement:
        name += f"_last{settlement}"
        desc += f", settlement day -{settlement}"
    return name, desc


def _energy_item(di: int) -> DataItem | None:
    """Energy (DI3 00, table A.1) or maximum demand (DI3 01, table A.2), computed from the DI."""
    di3, di2, di1, di0 = di >> 24, (di >> 16) & 0xFF, (di >> 8) & 0xFF, di & 0xFF
    if di3 not in (0x00, 0x01) or di0 > 0x0C:
        return None
    phase = ""
    if di2 in _ENERGY_KINDS and (di1 < 0x40 or di1 == 0xFF):
        kind = di2
    else:
        # Per-phase items exist for the total only: DI2 = phase base + offset, DI1 = 00.
        for ph, base in _PHASES.items():
            if base <= di2 < base + len(_PHASE_ENERGY) and di1 == 0:
                phase, kind = ph, _PHASE_ENERGY[di2 - base]
                break
        else:
            return None
    name, desc, unit, signed = _ENERGY_KINDS[kind]
    sfx, sdesc = _suffix(di1, di0)
    if phase:
        name, desc = f"{phase}_{name}", f"phase {phase.upper()} {desc}"
    if di3 == 0x00:
        return DataItem(
            di,
            f"{name}_energy{sfx}",
            f"{desc} energy, {sdesc}",
            (DIField("value", "XXXXXX.XX", unit, signed),),
            block=di1 == 0xFF,
        )
    if kind == 0x00:
        return None  # no maximum demand of the combined active energy
    return DataItem(
        di,
        f"{name}_max_demand{sfx}",
        f"{desc} maximum demand and its time, {sdesc}",
        (DIField("value", "XX.XXXX", _DEMAND_UNITS[unit], signed), DIField("time", "YYMMDDhhmm")),
        block=di1 == 0xFF,
    )


_FAMILY_NAME = re.compile(
    r"^(?:(?P<phase>[abc])_)?(?P<kind>[a-z0-9_]+?)_(?P<what>energy|max_demand)"
    r"(?:_t(?P<tariff>[0-9]+)|(?P<block>_block))?(?:_last(?P<last>[0-9]+))?$"
)


def _energy_di(name: str) -> int | None:
    """Inverse of _energy_item's naming: 'forward_active_energy_t2_last1' -> 0x00010201."""
    m = _FAMILY_NAME.match(name)
    if not m:
        return None
    kinds = {v[0]: k for k, v in _ENERGY_KINDS.items()}
    kind = kinds.get(m["kind"])
    if kind is None:
        return None
    di2 = kind
    if m["phase"]:
        if kind not in _PHASE_ENERGY:
            return None
        di2 = _PHASES[m["phase"]] + _PHASE_ENERGY.index(kind)
    di1 = 0xFF if m["block"] else int(m["tariff"] or 0)
    di0 = int(m["last"] or 0)
    if not 0 < di1 < 0x40 and m["tariff"] is not None:
        return None
    di = (0x01 if m["what"] == "max_demand" else 0x00) << 24 | di2 << 16 | di1 << 8 | di0
    item = _energy_item(di)
    return di if item is not None and item.name == name else None


def _variables(out: list[DataItem]) -> None:
    # Table A.3: instantaneous values. (DI2, name, description, fmt, unit, signed, has total)
    per_phase = [
        (0x01, "voltage", "voltage", "XXX.X", "V", False, False),
        (0x02, "current", "current", "XXX.XXX", "A", True, False),
        (0x03, "active_power", "active power", "XX.XXXX", "kW", True, True),
        (0x04, "reactive_power", "reactive power", "XX.XXXX", "kvar", True, True),
        (0x05, "apparent_power", "apparent power", "XX.XXXX", "kVA", True, True),
        (0x06, "power_factor", "power factor", "X.XXX", "", True, True),
        (0x07, "phase_angle", "phase angle", "XXX.X", "deg", False, False),
        (0x08, "voltage_thd", "voltage waveform distortion", "XX.XX", "%", False, False),
        (0x09, "current_thd", "current waveform distortion", "XX.XX", "%", False, False),
    ]
    for di2, name, desc, fmt, unit, signed, total in per_phase:
        field = (DIField("value", fmt, unit, signed),)
        base = 0x02000000 | (di2 << 16)
        if total:
            out.append(DataItem(base, name, f"total {desc}", field))
        for i, ph in enumerate("abc", start=1):
            out.append(
                DataItem(base | (i << 8), f"{name}_{ph}", f"phase {ph.upper()} {desc}", field)
            )
        what = "total and phases A, B, C" if total else "phases A, B, C"
        out.append(DataItem(base | 0xFF00, f"{name}_block", f"{desc}, {what}", field, block=True))
    single = [
        (0x01, "neutral_current", "neutral (zero line) current", "XXX.XXX", "A", True),
        (0x02, "frequency", "grid frequency", "XX.XX", "Hz", False),
        (0x03, "active_power_avg_1min", "one-minute average total active power", "XX.XXXX", "kW", True),
        (0x04, "active_demand", "current active demand", "XX.XXXX", "kW", True),
        (0x05, "reactive_demand", "current reactive demand", "XX.XXXX", "kvar", True),
        (0x06, "apparent_demand", "current apparent demand", "XX.XXXX", "kVA", True),
        (0x07, "meter_temperature", "meter temperature", "XXX.X", "degC", True),
        (0x08, "clock_battery_voltage", "clock battery voltage (internal)", "XX.XX", "V", False),
        (0x09, "reading_battery_voltage", "meter-reading battery voltage (external)", "XX.XX", "V", False),
        (0x0A, "battery_work_time", "internal battery working time", "XXXXXXXX", "min", False),
    ]  # fmt: skip
    for di0, name, desc, fmt, unit, signed in single:
        out.append(DataItem(0x02800000 | di0, name, desc, (DIField("value", fmt, unit, signed),)))


def _events(out: list[DataItem]) -> None:
    # Table A.4 (a selection): event counters and the records the driver and simulator use.
    ts = "YYMMDDhhmmss"
    counts = [
        (0x03300000, "programming_count", "programming events, total count"),
        (0x03300100, "meter_clear_count", "meter clear events, total count"),
        (0x03300200, "demand_clear_count", "maximum demand clear events, total count"),
        (0x03300300, "event_clear_count", "event clear events, total count"),
        (0x03300400, "time_sync_count", "clock setting events, total count"),
        (0x03300D00, "cover_open_count", "meter cover opening events, total count"),
        (0x03110000, "power_down_count", "power failure events, total count"),
    ]
    for di, name, desc in counts:
        out.append(DataItem(di, name, desc, (DIField("value", "XXXXXX"),)))
    loss = tuple(
        DIField(f"{ph}_{what}", "XXXXXX", unit)
        for ph in "abc"
        for what, unit in (("count", ""), ("minutes", "min"))
    )
    out.append(
        DataItem(
            0x03010000, "voltage_loss_totals", "loss of voltage: count and time per phase", loss
        )
    )
    for n in range(1, 11):
        out.append(DataItem(0x03110000 | n, f"power_down_record_{n}", f"power failure record -{n}",
                            (DIField("start", ts), DIField("end", ts))))  # fmt: skip
        out.append(DataItem(0x03300300 | n, f"event_clear_record_{n}", f"event clear record -{n}",
                            (DIField("time", ts), DIField("operator", "hex4"), DIField("di", "DI"))))  # fmt: skip
        out.append(DataItem(0x03300400 | n, f"time_sync_record_{n}", f"clock setting record -{n}",
                            (DIField("operator", "hex4"), DIField("before", ts), DIField("after", ts))))  # fmt: skip


def _parameters(out: list[DataItem]) -> None:
    # Table A.5 (a selection): clock, demand settings, addresses, constants, status words.
    params = [
        (0x04000101, "date", "date and day of week (0 = Sunday)", "YYMMDDWW", "", "rw"),
        (0x04000102, "time", "time of day", "hhmmss", "", "rw"),
        (0x0400010C, "date_time", "date, day of week and time", "YYMMDDWWhhmmss", "", "rw"),
        (0x04000103, "demand_period", "maximum demand period", "XX", "min", "rw"),
        (0x04000104, "slide_time", "demand sliding time", "XX", "min", "rw"),
        (0x04000401, "comm_address", "communication address", "N12", "", "rw"),
        (0x04000402, "meter_number", "meter number", "N12", "", "rw"),
        (0x04000409, "active_constant", "active meter constant", "XXXXXX", "imp/kWh", "rw"),
        (0x0400040A, "reactive_constant", "reactive meter constant", "XXXXXX", "imp/kvarh", "rw"),
    ]
    for di, name, desc, fmt, unit, access in params:
        out.append(DataItem(di, name, desc, (DIField("value", fmt, unit),), access=access))  # type: ignore[arg-type]
    for n in range(1, 8):
        out.append(DataItem(0x04000500 | n, f"status_word{n}", f"meter running status word {n}",
                            (DIField("value", "bits16"),)))  # fmt: skip
    out.append(DataItem(0x040005FF, "status_words", "meter running status words 1..7",
                        (DIField("value", "bits16"),), block=True))  # fmt: skip
    for level in range(10):
        out.append(DataItem(0x04000C01 + level, f"password_level{level}", f"password of level {level}",
                            (DIField("value", "hex4"),), access="w"))  # fmt: skip


def _freezes(out: list[DataItem]) -> None:
    # Table A.6 (a selection): freeze times and the frozen forward/reverse active energies.
    kinds = [(0x00, "timed", 12), (0x01, "instant", 3), (0x06, "daily", 62)]
    energy = (DIField("value", "XXXXXX.XX", "kWh"),)
    for di2, kind, depth in kinds:
        for n in range(1, depth + 1):
            base = 0x05000000 | (di2 << 16) | n
            out.append(DataItem(base, f"{kind}_freeze_time_{n}", f"{kind} freeze -{n}: time",
                                (DIField("value", "YYMMDDhhmm"),)))  # fmt: skip
            out.append(DataItem(base | 0x0100, f"{kind}_freeze_forward_active_{n}",
                                f"{kind} freeze -{n}: forward active energy, total and tariffs",
                                energy, block=True))  # fmt: skip
            out.append(DataItem(base | 0x0200, f"{kind}_freeze_reverse_active_{n}",
                                f"{kind} freeze -{n}: reverse active energy, total and tariffs",
                                energy, block=True))  # fmt: skip


@cache
def _table() -> tuple[dict[int, DataItem], dict[str, int]]:
    items: list[DataItem] = []
    for build in (_variables, _events, _parameters, _freezes):
        build(items)
    by_di = {i.di: i for i in items}
    by_name = {i.name: i.di for i in items}
    assert len(by_di) == len(items) == len(by_name), "duplicate DI or name in the DL/T 645 table"
    return by_di, by_name


def lookup_di(di: int) -> DataItem | None:
    """The table entry of a data identifier, or None if we do not know it."""
    if di >> 24 in (0x00, 0x01):
        return _energy_item(di)
    return _table()[0].get(di)


def di_by_name(name: str) -> int | None:
    """The identifier of a data item name (e.g. 'voltage_a' -> 0x02010100), or None."""
    di = _table()[1].get(name)
    return di if di is not None else _energy_di(name)


def data_items() -> list[DataItem]:
    """Every entry of the table, in identifier order (energy and demand families enumerated)."""
    out = [
        item
        for di3 in (0x00, 0x01)
        for di2 in range(0x100)
        for di1 in (*range(0x40), 0xFF)
        for di0 in range(0x0D)
        if (item := _energy_item(di3 << 24 | di2 << 16 | di1 << 8 | di0)) is not None
    ]
    return out + sorted(_table()[0].values(), key=lambda i: i.di)


def parse_di(text: str) -> int:
    """A DI given as eight hex digits ('02010100', DI3 first) or as a table name ('voltage_a').

    ValueError naming the text if it is neither a valid identifier nor a known name.
    """
    t = text.strip()
    if re.fullmatch(r"(0x)?[0-9A-Fa-f]{8}", t):
        return int(t.removeprefix("0x"), 16)
    di = di_by_name(t)
    if di is None:
        raise ValueError(
            f"{text!r} is neither eight hex digits (DI3..DI0, e.g. '02010100') "
            "nor a known data item name (e.g. 'voltage_a', 'forward_active_energy')"
        )
    return di


# --- the driver configuration ---------------------------------------------------------------


def _hex_digits(n: int) -> str:
    return rf"^[0-9A-Fa-f]{{{n}}}$"


class DLT645Meter(StrictModel):
    """One meter on the bus: a name the items refer to and its 12-digit BCD address."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")]
    address: Annotated[str, Field(description="12 BCD digits, most significant first")]

    @field_validator("address")
    @classmethod
    def _bcd_address(cls, v: str) -> str:
        if not ADDRESS_PATTERN.match(v):
            raise ValueError(f"address {v!r} must be 12 decimal digits, e.g. '000000000001'")
        if v == BROADCAST_ADDRESS:
            raise ValueError("address 999999999999 is the broadcast address, not a meter's")
        return v


class DLT645Item(StrictModel):
    """One data item of one meter bound to a model point: value = raw * scale + offset.

    Meters count power and energy positive in the forward direction (taken from the grid); the
    model's natures count generation positive, so a consumer meter's power takes scale -1.
    """

    meter: str
    di: str = Field(description="eight hex digits DI3..DI0 (e.g. '02010100') or a name")
    point: PointRef
    scale: float = 1.0
    offset: float = 0.0
    field: str | None = Field(default=None, description="record field (default: first numeric)")
    index: int | None = Field(default=None, ge=0, description="element of a block item")
    bit: int | None = Field(default=None, ge=0, le=31, description="bit of a status word: bool")

    def data_item(self) -> DataItem:
        """The table entry (validated to exist)."""
        item = lookup_di(parse_di(self.di))
        assert item is not None
        return item

    @model_validator(mode="after")
    def _known(self) -> Self:
        di = parse_di(self.di)
        item = lookup_di(di)
        if item is None:
            raise ValueError(f"unknown data identifier {di:08X} (not in the DL/T 645-2007 table)")
        if item.access == "w":
            raise ValueError(f"data item {item.name} ({item.hex}) is write-only")
        f = item.numeric_field(self.field)
        if f is None and self.field is None:
            fmts = ", ".join(x.fmt for x in item.fields)
            raise ValueError(
                f"data item {item.name} ({item.hex}) is {fmts}, not a number: a point cannot take it"
            )
        if f is None:
            have = ", ".join(x.name for x in item.fields)
            raise ValueError(
                f"data item {item.name} ({item.hex}) has no field {self.field!r} (fields: {have})"
            )
        if not f.numeric:
            raise ValueError(
                f"field {f.name!r} of {item.name} ({item.hex}) is {f.fmt}, not a number: "
                "a point cannot take it"
            )
        if self.bit is not None and f.kind != "bits":
            raise ValueError(f"bit applies to status words, not to {item.name} ({f.fmt})")
        if self.bit is not None and self.bit >= f.size * 8:
            raise ValueError(f"bit {self.bit} is beyond the {f.size * 8}-bit {item.name}")
        if self.index is not None and not item.block:
            raise ValueError(f"index applies to block items, not to {item.name} ({item.hex})")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self


class DLT645Control(StrictModel):
    """A meter's relay as a command point: True closes it (合闸), False trips it (跳闸).

    The same point is read back from status word 3 bit 4 (relay state) at every poll.
    """

    meter: str
    point: PointRef
    close: Literal["close", "close_allowed"] = Field(
        default="close",
        description="close directly (1C) or only allow the customer to close (1B)",
    )
    valid_s: int = Field(default=600, ge=1, le=86400, description="command validity window")


class DLT645DriverConfig(StrictModel):
    """Meters on one DL/T 645-2007 bus (RS-485 or a TCP transparent-transmission converter)."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]
    protocol: Literal["dlt645"]
    enabled: bool = True
    link: str = Field(
        description="tcp://host:port or serial:///dev/ttyX (serial defaults: 2400 baud, 8E1)"
    )
    meters: list[DLT645Meter] = Field(min_length=1)
    items: list[DLT645Item] = []
    controls: list[DLT645Control] = []
    poll_period_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=1.0, gt=0, description="request to complete response")
    retries: int = Field(default=1, ge=0, le=5)
    preamble: int = Field(default=4, ge=0, le=8, description="FE wake-up bytes before requests")
    password_level: int = Field(default=2, ge=0, le=0xFF, description="PA of control commands")
    password: str = Field(default="000000", pattern=_hex_digits(6), description="P2P1P0")
    operator: str = Field(default="00000000", pattern=_hex_digits(8), description="C3..C0")
    time_sync_period_s: float = Field(
        default=0.0, ge=0, description="broadcast time sync (08) period; 0: never"
    )
    meter_utc_offset_h: float = Field(
        default=8.0, ge=-14, le=14, description="meters keep local time: UTC+8 in China"
    )
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @field_validator("link")
    @classmethod
    def _link_defaults(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme == "tcp":
            if not parts.hostname or parts.port is None:
                raise ValueError(
                    f"{v!r}: a tcp link needs host and port, e.g. tcp://127.0.0.1:8899"
                )
            return v
        if parts.scheme != "serial":
            raise ValueError(f"{v!r}: link must start with tcp:// or serial://")
        if not (parts.path or parts.netloc):
            raise ValueError(f"{v!r}: a serial link needs a device, e.g. serial:///dev/ttyUSB0")
        # DL/T 645-2007 4.2: default 2400 bit/s, one start bit, 8 data bits, even parity, 1 stop.
        q = {k: vals[-1] for k, vals in parse_qs(parts.query).items()}
        q.setdefault("baudrate", "2400")
        q.setdefault("parity", "E")
        q.setdefault("bytesize", "8")
        q.setdefault("stopbits", "1")
        # urlunsplit would drop the empty authority ("serial:/dev/x"): keep "serial:///dev/x".
        return f"serial://{parts.netloc}{parts.path}?{urlencode(q)}"

    def meter(self, name: str) -> DLT645Meter:
        """A meter by name (KeyError if none)."""
        for m in self.meters:
            if m.name == name:
                return m
        raise KeyError(name)

    def bindings(self) -> list[tuple[str, int, str, bool]]:
        """(list key, index, point, is_command); a control point is also read back (monitored)."""
        out = [("items", i, it.point, False) for i, it in enumerate(self.items)]
        out += [("controls", i, c.point, True) for i, c in enumerate(self.controls)]
        out += [("controls", i, c.point, False) for i, c in enumerate(self.controls)]
        return out

    @model_validator(mode="after")
    def _check_refs(self) -> Self:
        names: dict[str, int] = {}
        addresses: dict[str, int] = {}
        for i, m in enumerate(self.meters):
            if m.name in names:
                raise ValueError(
                    f"meters[{i}]: name {m.name!r} is already used by meters[{names[m.name]}]"
                )
            if m.address in addresses:
                raise ValueError(
                    f"meters[{i}]: address {m.address} is already used by meters[{addresses[m.address]}]"
                )
            names[m.name] = i
            addresses[m.address] = i
        points: dict[str, str] = {}
        entries: list[tuple[str, int, str, str]] = [
            ("items", i, e.meter, e.point) for i, e in enumerate(self.items)
        ]
        entries += [("controls", i, c.meter, c.point) for i, c in enumerate(self.controls)]
        for key, i, meter, point in entries:
            if meter not in names:
                have = ", ".join(names)
                raise ValueError(f"{key}[{i}]: meter {meter!r} is not defined (meters: {have})")
            where = f"{key}[{i}]"
            if point in points:
                raise ValueError(f"{where}: point {point} is already bound by {points[point]}")
            points[point] = where
        controlled = [c.meter for c in self.controls]
        for i, c in enumerate(self.controls):
            if controlled.index(c.meter) != i:
                raise ValueError(f"controls[{i}]: meter {c.meter!r} already has a control point")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self
