"""A-XDR data of DL/T 698.45 (clause 7.3 "数据类型定义"): the Data CHOICE and its member types.

Every value on the wire is a type tag followed by its encoding: integers big-endian, strings and
arrays prefixed by an A-XDR length (one byte below 128, else 0x80|n followed by n length bytes),
bit-strings by their length in bits. `Data(tag, value)` keeps the tag, so a long (16) and a
long-unsigned (18) holding the same number stay different and decode(encode(d)) == d holds.

Decoding is bounded: nesting depth is limited, and an array or string may not announce more
elements than bytes remain, so garbage cannot make the decoder allocate or recurse without end.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import NoReturn, TypeAlias

from gateway.codecs.dlt698.errors import ApduDecodeError, EncodeError
from gateway.codecs.dlt698.oad import OAD, OMD, ROAD, oad_from_bytes

__all__ = [
    "COMDCB",
    "CSD",
    "MAX_DEPTH",
    "MS",
    "RSD",
    "SID",
    "TI",
    "BitString",
    "Data",
    "Date",
    "DateTime",
    "DateTimeS",
    "Reader",
    "Region",
    "ScalerUnit",
    "Selector1",
    "Selector2",
    "SelectorLast",
    "SelectorSpan",
    "SelectorTimeMS",
    "SidMac",
    "Tag",
    "Time",
    "decode_data",
    "encode_data",
    "put_csd",
    "put_data",
    "put_length",
    "put_ms",
    "put_rsd",
    "read_csd",
    "read_data",
    "read_ms",
    "read_rsd",
    "tag_by_name",
    "to_number",
]

MAX_DEPTH = 16  # nesting of arrays/structures accepted on decode


class Tag(IntEnum):
    """The type tags of the Data CHOICE (DL/T 698.45-2017 table 5)."""

    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOL = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DATE_TIME_S = 28
    OI = 80
    OAD = 81
    ROAD = 82
    OMD = 83
    TI = 84
    TSA = 85
    MAC = 86
    RN = 87
    REGION = 88
    SCALER_UNIT = 89
    RSD = 90
    CSD = 91
    MS = 92
    SID = 93
    SID_MAC = 94
    COMDCB = 95
    RCSD = 96

    @property
    def type_name(self) -> str:
        """The name the standard uses, e.g. "long-unsigned", "date_time_s", "OAD"."""
        return _NAMES[self]


_NAMES: dict[Tag, str] = {t: t.name.lower().replace("_", "-") for t in Tag}
_NAMES.update(
    {
        Tag.UTF8_STRING: "UTF8-string",
        Tag.DATE_TIME: "date_time",
        Tag.DATE_TIME_S: "date_time_s",
        Tag.OI: "OI",
        Tag.OAD: "OAD",
        Tag.ROAD: "ROAD",
        Tag.OMD: "OMD",
        Tag.TI: "TI",
        Tag.TSA: "TSA",
        Tag.MAC: "MAC",
        Tag.RN: "RN",
        Tag.REGION: "Region",
        Tag.SCALER_UNIT: "Scaler_Unit",
        Tag.RSD: "RSD",
        Tag.CSD: "CSD",
        Tag.MS: "MS",
        Tag.SID: "SID",
        Tag.SID_MAC: "SID_MAC",
        Tag.COMDCB: "COMDCB",
        Tag.RCSD: "RCSD",
    }
)
_BY_NAME = {v.lower(): k for k, v in _NAMES.items()}


def tag_by_name(name: str) -> Tag:
    """The tag for a type name ("long-unsigned", "date_time_s", "OAD" ...), case-insensitive."""
    try:
        return _BY_NAME[name.strip().lower().replace("_", "-")]
    except KeyError:
        pass
    try:
        return _BY_NAME[name.strip().lower()]
    except KeyError:
        raise EncodeError(f"unknown A-XDR type {name!r}") from None


# --- value classes ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BitString:
    """A bit-string: `bits` bits, the first in the most significant bit of data[0]."""

    bits: int
    data: bytes

    def bit(self, n: int) -> bool:
        """Bit n (0 = the first bit on the wire)."""
        return bool(self.data[n // 8] >> (7 - n % 8) & 1)

    @classmethod
    def from_bits(cls, bits: list[bool] | tuple[bool, ...]) -> BitString:
        """Build from a list of booleans, first bit first."""
        out = bytearray((len(bits) + 7) // 8)
        for i, b in enumerate(bits):
            if b:
                out[i // 8] |= 0x80 >> (i % 8)
        return cls(len(bits), bytes(out))


@dataclass(frozen=True, slots=True)
class DateTimeS:
    """date_time_s: year, month, day, hour, minute, second (0xFF/0xFFFF = not given)."""

    year: int
    month: int
    day: int
    hour: int = 0
    minute: int = 0
    second: int = 0

    def to_datetime(self) -> datetime | None:
        """As an aware UTC datetime, None if a field is unspecified or out of range."""
        try:
            return datetime(
                self.year, self.month, self.day, self.hour, self.minute, self.second, tzinfo=UTC
            )
        except ValueError:
            return None

    @classmethod
    def from_datetime(cls, dt: datetime) -> DateTimeS:
        """From a datetime (its wall-clock fields are taken as they are)."""
        return cls(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)


@dataclass(frozen=True, slots=True)
class DateTime:
    """date_time: year, month, day, day of week, hour, minute, second, milliseconds."""

    year: int
    month: int
    day: int
    weekday: int
    hour: int
    minute: int
    second: int
    milliseconds: int


@dataclass(frozen=True, slots=True)
class Date:
    """date: year, month, day, day of week."""

    year: int
    month: int
    day: int
    weekday: int


@dataclass(frozen=True, slots=True)
class Time:
    """time: hour, minute, second."""

    hour: int
    minute: int
    second: int


@dataclass(frozen=True, slots=True)
class TI:
    """Time interval: unit (0 s, 1 min, 2 h, 3 d, 4 month, 5 year) and a count."""

    unit: int
    interval: int


@dataclass(frozen=True, slots=True)
class ScalerUnit:
    """Scaler_Unit: value = raw x 10^scaler, in the unit of appendix B."""

    scaler: int
    unit: int


@dataclass(frozen=True, slots=True)
class Region:
    """Region: kind (0 [a,b), 1 (a,b], 2 [a,b], 3 (a,b)) and its two ends."""

    kind: int
    start: Data
    end: Data


@dataclass(frozen=True, slots=True)
class SID:
    """Security identifier: a 32-bit identifier and additional data."""

    ident: int
    extra: bytes


@dataclass(frozen=True, slots=True)
class SidMac:
    """A security identifier with a MAC."""

    sid: SID
    mac: bytes


@dataclass(frozen=True, slots=True)
class COMDCB:
    """Serial port parameters: baud rate, parity, data bits, stop bits, flow control (enums)."""

    baud: int
    parity: int
    data_bits: int
    stop_bits: int
    flow: int


# MS (meter set) choices: 0 none, 1 all, 2 user types (unsigned), 3 addresses (TSA),
# 4 configuration numbers (long-unsigned), 5..7 the same as regions.


@dataclass(frozen=True, slots=True)
class MS:
    """A set of meters (MS CHOICE): `choice` and its items (see the comment above)."""

    choice: int
    items: tuple[int | bytes | Region, ...] = ()


@dataclass(frozen=True, slots=True)
class Selector1:
    """RSD selector 1: records whose column `oad` equals `value`."""

    oad: OAD
    value: Data


@dataclass(frozen=True, slots=True)
class Selector2:
    """RSD selector 2: records whose column `oad` runs from start to end in steps."""

    oad: OAD
    start: Data
    end: Data
    step: Data


@dataclass(frozen=True, slots=True)
class SelectorTimeMS:
    """RSD selectors 4 and 5: a collection start/store time and a meter set."""

    time: DateTimeS
    ms: MS


@dataclass(frozen=True, slots=True)
class SelectorSpan:
    """RSD selectors 6, 7 and 8: a time range, an interval and a meter set."""

    start: DateTimeS
    end: DateTimeS
    interval: TI
    ms: MS


@dataclass(frozen=True, slots=True)
class SelectorLast:
    """RSD selector 10: the last n records of a meter set."""

    n: int
    ms: MS


@dataclass(frozen=True, slots=True)
class RSD:
    """Row selection descriptor: selector number (0-10) and its value."""

    selector: int
    value: (
        Selector1 | Selector2 | tuple[Selector2, ...] | SelectorTimeMS | SelectorSpan | int
        | SelectorLast | None
    ) = None  # fmt: skip


CSD: TypeAlias = OAD | ROAD


@dataclass(frozen=True, slots=True)
class Data:
    """One A-XDR datum: its type tag and value (see the module docstring for value types)."""

    tag: Tag
    value: (
        bool | int | float | str | bytes | tuple[Data, ...] | BitString | DateTime | Date | Time
        | DateTimeS | OAD | ROAD | OMD | TI | Region | ScalerUnit | RSD | MS | SID | SidMac
        | COMDCB | tuple[OAD | ROAD, ...] | None
    ) = None  # fmt: skip

    @property
    def type_name(self) -> str:
        """The standard's name of the type."""
        return self.tag.type_name


NULL = Data(Tag.NULL)

# --- reading ------------------------------------------------------------------------------

_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_F32 = struct.Struct(">f")
_F64 = struct.Struct(">d")


class Reader:
    """A cursor over received bytes; every failure names what and the absolute byte offset."""

    __slots__ = ("base", "buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None, base: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end
        self.base = base  # offset of buf[0] in the frame, for error messages

    def fail(self, what: str, at: int | None = None) -> NoReturn:
        """Raise an ApduDecodeError at the current (or given) position."""
        raise ApduDecodeError(what, self.base + (self.pos if at is None else at))

    @property
    def remaining(self) -> int:
        """Bytes left."""
        return self.end - self.pos

    def take(self, n: int, what: str) -> bytes:
        """The next n bytes."""
        p = self.pos
        if n > self.end - p:
            self.fail(f"{what}: {n} bytes needed, {self.end - p} left")
        self.pos = p + n
        return self.buf[p : p + n]

    def u8(self, what: str) -> int:
        """One unsigned byte."""
        p = self.pos
        if p >= self.end:
            self.fail(f"{what}: end of data")
        self.pos = p + 1
        return self.buf[p]

    def _unpack(self, s: struct.Struct, what: str) -> int | float:
        p = self.pos
        if s.size > self.end - p:
            self.fail(f"{what}: {s.size} bytes needed, {self.end - p} left")
        self.pos = p + s.size
        v: int | float = s.unpack_from(self.buf, p)[0]
        return v

    def u16(self, what: str) -> int:
        """Big-endian unsigned 16-bit."""
        return int(self._unpack(_U16, what))

    def u32(self, what: str) -> int:
        """Big-endian unsigned 32-bit."""
        return int(self._unpack(_U32, what))

    def length(self, what: str) -> int:
        """An A-XDR length: one byte below 0x80, else 0x80|n then n big-endian bytes."""
        at = self.pos
        first = self.u8(what)
        if first < 0x80:
            return first
        n = first & 0x7F
        if n == 0 or n > 4:
            self.fail(f"{what}: length of {n} length bytes is not supported", at)
        return int.from_bytes(self.take(n, what), "big")

    def count(self, what: str) -> int:
        """An element count, which cannot exceed the bytes left (each element takes >= 1)."""
        at = self.pos
        n = self.length(what)
        if n > self.remaining:
            self.fail(f"{what}: {n} elements announced, only {self.remaining} bytes left", at)
        return n

    def octets(self, what: str) -> bytes:
        """A length-prefixed octet-string."""
        return self.take(self.length(what), what)

    def oad(self, what: str = "OAD") -> OAD:
        """An OAD (4 bytes)."""
        return oad_from_bytes(self.take(4, what))

    def omd(self, what: str = "OMD") -> OMD:
        """An OMD (4 bytes)."""
        return OMD.from_bytes(self.take(4, what))

    def date_time_s(self, what: str = "date_time_s") -> DateTimeS:
        """A date_time_s (7 bytes)."""
        b = self.take(7, what)
        return DateTimeS(b[0] << 8 | b[1], b[2], b[3], b[4], b[5], b[6])

    def ti(self, what: str = "TI") -> TI:
        """A TI (3 bytes)."""
        return TI(self.u8(what), self.u16(what))

    def road(self, what: str = "ROAD") -> ROAD:
        """A ROAD: an OAD and a sequence of OADs."""
        oad = self.oad(what)
        n = self.count(f"{what} associated OADs")
        return ROAD(oad, tuple(self.oad(what) for _ in range(n)))

    def done(self, what: str) -> None:
        """Fail unless every byte was consumed."""
        if self.pos != self.end:
            self.fail(f"{what}: {self.end - self.pos} unexpected trailing bytes")


def read_csd(r: Reader) -> OAD | ROAD:
    """A CSD: 0 OAD, 1 ROAD."""
    at = r.pos
    choice = r.u8("CSD choice")
    if choice == 0:
        return r.oad("CSD OAD")
    if choice == 1:
        return r.road("CSD ROAD")
    r.fail(f"CSD: unknown choice {choice}", at)


def _read_region(r: Reader, depth: int) -> Region:
    kind = r.u8("Region unit")
    return Region(kind, read_data(r, depth + 1), read_data(r, depth + 1))


def read_ms(r: Reader, depth: int = 0) -> MS:
    """An MS (meter set)."""
    at = r.pos
    choice = r.u8("MS choice")
    if choice in (0, 1):
        return MS(choice)
    if choice > 7:
        r.fail(f"MS: unknown choice {choice}", at)
    n = r.count("MS items")
    items: list[int | bytes | Region] = []
    for _ in range(n):
        if choice == 2:
            items.append(r.u8("MS user type"))
        elif choice == 3:
            items.append(r.octets("MS TSA"))
        elif choice == 4:
            items.append(r.u16("MS configuration number"))
        else:
            items.append(_read_region(r, depth))
    return MS(choice, tuple(items))


def _read_selector2(r: Reader, depth: int) -> Selector2:
    oad = r.oad("Selector2 OAD")
    return Selector2(oad, read_data(r, depth + 1), read_data(r, depth + 1), read_data(r, depth + 1))


def read_rsd(r: Reader, depth: int = 0) -> RSD:
    """An RSD (row selection descriptor)."""
    at = r.pos
    sel = r.u8("RSD selector")
    if sel == 0:
        return RSD(0)
    if sel == 1:
        oad = r.oad("Selector1 OAD")
        return RSD(1, Selector1(oad, read_data(r, depth + 1)))
    if sel == 2:
        return RSD(2, _read_selector2(r, depth))
    if sel == 3:
        n = r.count("Selector3 items")
        return RSD(3, tuple(_read_selector2(r, depth) for _ in range(n)))
    if sel in (4, 5):
        return RSD(sel, SelectorTimeMS(r.date_time_s(), read_ms(r, depth)))
    if sel in (6, 7, 8):
        return RSD(sel, SelectorSpan(r.date_time_s(), r.date_time_s(), r.ti(), read_ms(r, depth)))
    if sel == 9:
        return RSD(9, r.u8("Selector9 n"))
    if sel == 10:
        return RSD(10, SelectorLast(r.u8("Selector10 n"), read_ms(r, depth)))
    r.fail(f"RSD: unknown selector {sel}", at)


def _fixed(size: int, conv: Callable[[bytes], object]) -> Callable[[Reader, int, str], object]:
    def f(r: Reader, depth: int, what: str) -> object:
        return conv(r.take(size, what))

    return f


def _rd_seq(r: Reader, depth: int, what: str) -> object:
    if depth >= MAX_DEPTH:
        r.fail(f"{what}: nesting deeper than {MAX_DEPTH}")
    n = r.count(f"{what} element count")
    return tuple(read_data(r, depth + 1) for _ in range(n))


def _rd_bool(r: Reader, depth: int, what: str) -> object:
    at = r.pos
    b = r.u8(what)
    if b > 1:
        r.fail(f"bool: value {b} is neither 0 nor 1", at)
    return bool(b)


def _rd_bits(r: Reader, depth: int, what: str) -> object:
    bits = r.length(what)
    return BitString(bits, r.take((bits + 7) // 8, what))


def _rd_visible(r: Reader, depth: int, what: str) -> object:
    raw = r.octets(what)
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        r.fail(f"{what}: not ASCII", r.pos - len(raw))


def _rd_utf8(r: Reader, depth: int, what: str) -> object:
    raw = r.octets(what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        r.fail(f"{what}: not UTF-8", r.pos - len(raw))


def _rd_struct(s: struct.Struct) -> Callable[[Reader, int, str], object]:
    def f(r: Reader, depth: int, what: str) -> object:
        return r._unpack(s, what)

    return f


def _rd_i8(r: Reader, depth: int, what: str) -> object:
    v = r.u8(what)
    return v - 256 if v > 127 else v


def _rd_region(r: Reader, depth: int, what: str) -> object:
    if depth >= MAX_DEPTH:
        r.fail(f"{what}: nesting deeper than {MAX_DEPTH}")
    return _read_region(r, depth)


def _rd_scaler_unit(r: Reader, depth: int, what: str) -> object:
    s = r.u8(what)
    return ScalerUnit(s - 256 if s > 127 else s, r.u8(what))


def _rd_rsd(r: Reader, depth: int, what: str) -> object:
    if depth >= MAX_DEPTH:
        r.fail(f"{what}: nesting deeper than {MAX_DEPTH}")
    return read_rsd(r, depth)


def _rd_ms(r: Reader, depth: int, what: str) -> object:
    if depth >= MAX_DEPTH:
        r.fail(f"{what}: nesting deeper than {MAX_DEPTH}")
    return read_ms(r, depth)


def _rd_sid(r: Reader, depth: int, what: str) -> object:
    return SID(r.u32(what), r.octets(what))


def _rd_sid_mac(r: Reader, depth: int, what: str) -> object:
    sid = SID(r.u32(what), r.octets(what))
    return SidMac(sid, r.octets(what))


def _rd_rcsd(r: Reader, depth: int, what: str) -> object:
    n = r.count(what)
    return tuple(read_csd(r) for _ in range(n))


def _dt(b: bytes) -> object:
    return DateTime(b[0] << 8 | b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8] << 8 | b[9])


_READERS: dict[int, Callable[[Reader, int, str], object]] = {
    Tag.NULL: lambda r, d, w: None,
    Tag.ARRAY: _rd_seq,
    Tag.STRUCTURE: _rd_seq,
    Tag.BOOL: _rd_bool,
    Tag.BIT_STRING: _rd_bits,
    Tag.DOUBLE_LONG: _rd_struct(_I32),
    Tag.DOUBLE_LONG_UNSIGNED: _rd_struct(_U32),
    Tag.OCTET_STRING: lambda r, d, w: r.octets(w),
    Tag.VISIBLE_STRING: _rd_visible,
    Tag.UTF8_STRING: _rd_utf8,
    Tag.INTEGER: _rd_i8,
    Tag.LONG: _rd_struct(_I16),
    Tag.UNSIGNED: lambda r, d, w: r.u8(w),
    Tag.LONG_UNSIGNED: _rd_struct(_U16),
    Tag.LONG64: _rd_struct(_I64),
    Tag.LONG64_UNSIGNED: _rd_struct(_U64),
    Tag.ENUM: lambda r, d, w: r.u8(w),
    Tag.FLOAT32: _rd_struct(_F32),
    Tag.FLOAT64: _rd_struct(_F64),
    Tag.DATE_TIME: _fixed(10, _dt),
    Tag.DATE: _fixed(5, lambda b: Date(b[0] << 8 | b[1], b[2], b[3], b[4])),
    Tag.TIME: _fixed(3, lambda b: Time(b[0], b[1], b[2])),
    Tag.DATE_TIME_S: lambda r, d, w: r.date_time_s(w),
    Tag.OI: _rd_struct(_U16),
    Tag.OAD: lambda r, d, w: r.oad(w),
    Tag.ROAD: lambda r, d, w: r.road(w),
    Tag.OMD: lambda r, d, w: r.omd(w),
    Tag.TI: lambda r, d, w: r.ti(w),
    Tag.TSA: lambda r, d, w: r.octets(w),
    Tag.MAC: lambda r, d, w: r.octets(w),
    Tag.RN: lambda r, d, w: r.octets(w),
    Tag.REGION: _rd_region,
    Tag.SCALER_UNIT: _rd_scaler_unit,
    Tag.RSD: _rd_rsd,
    Tag.CSD: lambda r, d, w: read_csd(r),
    Tag.MS: _rd_ms,
    Tag.SID: _rd_sid,
    Tag.SID_MAC: _rd_sid_mac,
    Tag.COMDCB: _fixed(5, lambda b: COMDCB(b[0], b[1], b[2], b[3], b[4])),
    Tag.RCSD: _rd_rcsd,
}
_TAGS = {int(t): t for t in Tag}


# Fast path of the fixed-size integer types (most values a meter sends): tag -> (Tag, struct).
_FIXED_INTS: dict[int, tuple[Tag, struct.Struct]] = {
    Tag.DOUBLE_LONG: (Tag.DOUBLE_LONG, _I32),
    Tag.DOUBLE_LONG_UNSIGNED: (Tag.DOUBLE_LONG_UNSIGNED, _U32),
    Tag.INTEGER: (Tag.INTEGER, struct.Struct(">b")),
    Tag.LONG: (Tag.LONG, _I16),
    Tag.UNSIGNED: (Tag.UNSIGNED, struct.Struct(">B")),
    Tag.LONG_UNSIGNED: (Tag.LONG_UNSIGNED, _U16),
    Tag.LONG64: (Tag.LONG64, _I64),
    Tag.LONG64_UNSIGNED: (Tag.LONG64_UNSIGNED, _U64),
    Tag.ENUM: (Tag.ENUM, struct.Struct(">B")),
    Tag.OI: (Tag.OI, _U16),
}


def read_data(r: Reader, depth: int = 0) -> Data:
    """One Data at the reader's position."""
    at = r.pos
    if at >= r.end:
        r.fail("Data type tag: end of data")
    t = r.buf[at]
    fixed = _FIXED_INTS.get(t)
    if fixed is not None:
        tag, s = fixed
        nxt = at + 1 + s.size
        if nxt > r.end:
            r.fail(f"{tag.type_name}: {s.size} bytes needed, {r.end - at - 1} left", at + 1)
        r.pos = nxt
        return Data(tag, s.unpack_from(r.buf, at + 1)[0])
    r.pos = at + 1
    if t == 1 or t == 2:  # array, structure
        if depth >= MAX_DEPTH:
            r.fail(f"{_NAMES[Tag(t)]}: nesting deeper than {MAX_DEPTH}")
        n = r.count("element count")
        return Data(Tag(t), tuple([read_data(r, depth + 1) for _ in range(n)]))
    other = _TAGS.get(t)
    if other is None:
        r.fail(f"Data: unknown or unsupported type tag {t}", at)
    value = _READERS[other](r, depth, _NAMES[other])
    return Data(other, value)  # type: ignore[arg-type]


def decode_data(buf: bytes, base: int = 0) -> Data:
    """Exactly one Data filling buf; ApduDecodeError otherwise."""
    r = Reader(bytes(buf), base=base)
    d = read_data(r)
    r.done("Data")
    return d


# --- writing ------------------------------------------------------------------------------


def put_length(out: bytearray, n: int) -> None:
    """Append an A-XDR length."""
    if n < 0:
        raise EncodeError(f"negative length {n}")
    if n < 0x80:
        out.append(n)
        return
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    if len(raw) > 4:
        raise EncodeError(f"length {n} does not fit 4 length bytes")
    out.append(0x80 | len(raw))
    out += raw


def _put_octets(out: bytearray, b: bytes, what: str) -> None:
    if not isinstance(b, bytes | bytearray):
        raise EncodeError(f"{what}: expected bytes, got {type(b).__name__}")
    put_length(out, len(b))
    out += b


def _int_range(v: object, lo: int, hi: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise EncodeError(f"{what}: expected an integer, got {v!r}")
    if not lo <= v <= hi:
        raise EncodeError(f"{what}: {v} is outside {lo}..{hi}")
    return v


def _u8(v: object, what: str) -> int:
    return _int_range(v, 0, 255, what)


def _u16(v: object, what: str) -> bytes:
    return _int_range(v, 0, 0xFFFF, what).to_bytes(2, "big")


def put_ms(out: bytearray, ms: MS) -> None:
    """Append an MS."""
    c = _int_range(ms.choice, 0, 7, "MS choice")
    out.append(c)
    if c in (0, 1):
        if ms.items:
            raise EncodeError(f"MS choice {c} carries no items")
        return
    put_length(out, len(ms.items))
    for it in ms.items:
        if c == 2:
            out.append(_u8(it, "MS user type"))
        elif c == 3:
            _put_octets(out, it, "MS TSA")  # type: ignore[arg-type]
        elif c == 4:
            out += _u16(it, "MS configuration number")
        else:
            if not isinstance(it, Region):
                raise EncodeError(f"MS choice {c} items must be Region")
            _put_region(out, it)


def _put_region(out: bytearray, reg: Region) -> None:
    out.append(_u8(reg.kind, "Region unit"))
    put_data(out, reg.start)
    put_data(out, reg.end)


def _put_dts(out: bytearray, t: object) -> None:
    if not isinstance(t, DateTimeS):
        raise EncodeError(f"date_time_s: expected DateTimeS, got {type(t).__name__}")
    out += _u16(t.year, "date_time_s year")
    for f in (t.month, t.day, t.hour, t.minute, t.second):
        out.append(_u8(f, "date_time_s field"))


def _put_ti(out: bytearray, t: object) -> None:
    if not isinstance(t, TI):
        raise EncodeError(f"TI: expected TI, got {type(t).__name__}")
    out.append(_u8(t.unit, "TI unit"))
    out += _u16(t.interval, "TI interval")


def _put_selector2(out: bytearray, s: Selector2) -> None:
    out += s.oad.to_bytes()
    put_data(out, s.start)
    put_data(out, s.end)
    put_data(out, s.step)


def put_rsd(out: bytearray, rsd: RSD) -> None:
    """Append an RSD."""
    sel, v = rsd.selector, rsd.value
    out.append(_int_range(sel, 0, 10, "RSD selector"))
    if sel == 0 and v is None:
        return
    if sel == 1 and isinstance(v, Selector1):
        out += v.oad.to_bytes()
        put_data(out, v.value)
    elif sel == 2 and isinstance(v, Selector2):
        _put_selector2(out, v)
    elif sel == 3 and isinstance(v, tuple):
        put_length(out, len(v))
        for s in v:
            _put_selector2(out, s)
    elif sel in (4, 5) and isinstance(v, SelectorTimeMS):
        _put_dts(out, v.time)
        put_ms(out, v.ms)
    elif sel in (6, 7, 8) and isinstance(v, SelectorSpan):
        _put_dts(out, v.start)
        _put_dts(out, v.end)
        _put_ti(out, v.interval)
        put_ms(out, v.ms)
    elif sel == 9 and isinstance(v, int) and not isinstance(v, bool):
        out.append(_u8(v, "Selector9 n"))
    elif sel == 10 and isinstance(v, SelectorLast):
        out.append(_u8(v.n, "Selector10 n"))
        put_ms(out, v.ms)
    else:
        raise EncodeError(f"RSD selector {sel} does not take {type(v).__name__}")


def put_csd(out: bytearray, csd: OAD | ROAD) -> None:
    """Append a CSD."""
    if isinstance(csd, OAD):
        out.append(0)
        out += csd.to_bytes()
    elif isinstance(csd, ROAD):
        out.append(1)
        _put_road(out, csd)
    else:
        raise EncodeError(f"CSD: expected OAD or ROAD, got {type(csd).__name__}")


def _put_road(out: bytearray, road: ROAD) -> None:
    out += road.oad.to_bytes()
    put_length(out, len(road.associated))
    for o in road.associated:
        out += o.to_bytes()


def _want(v: object, cls: type, tag: Tag) -> None:
    if not isinstance(v, cls) or (cls is int and isinstance(v, bool)):
        raise EncodeError(f"{tag.type_name}: expected {cls.__name__}, got {v!r}")


_INT_RANGES: dict[Tag, tuple[int, int, int]] = {
    Tag.DOUBLE_LONG: (-(2**31), 2**31 - 1, 4),
    Tag.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1, 4),
    Tag.INTEGER: (-128, 127, 1),
    Tag.LONG: (-32768, 32767, 2),
    Tag.UNSIGNED: (0, 255, 1),
    Tag.LONG_UNSIGNED: (0, 65535, 2),
    Tag.LONG64: (-(2**63), 2**63 - 1, 8),
    Tag.LONG64_UNSIGNED: (0, 2**64 - 1, 8),
    Tag.ENUM: (0, 255, 1),
    Tag.OI: (0, 65535, 2),
}


def put_data(out: bytearray, d: Data, depth: int = 0) -> None:
    """Append the encoding of d (tag and value)."""
    if not isinstance(d, Data):
        raise EncodeError(f"expected Data, got {type(d).__name__}")
    tag, v = d.tag, d.value
    out.append(int(tag))
    rng = _INT_RANGES.get(tag)
    if rng is not None:
        lo, hi, size = rng
        out += _int_range(v, lo, hi, tag.type_name).to_bytes(size, "big", signed=lo < 0)
        return
    if tag == Tag.NULL:
        if v is not None:
            raise EncodeError(f"null carries no value, got {v!r}")
    elif tag in (Tag.ARRAY, Tag.STRUCTURE):
        if depth >= MAX_DEPTH:
            raise EncodeError(f"{tag.type_name}: nesting deeper than {MAX_DEPTH}")
        _want(v, tuple, tag)
        assert isinstance(v, tuple)
        put_length(out, len(v))
        for e in v:
            put_data(out, e, depth + 1)  # type: ignore[arg-type]
    elif tag == Tag.BOOL:
        _want(v, bool, tag)
        out.append(1 if v else 0)
    elif tag == Tag.BIT_STRING:
        _want(v, BitString, tag)
        assert isinstance(v, BitString)
        if len(v.data) != (v.bits + 7) // 8:
            raise EncodeError(f"bit-string: {v.bits} bits need {(v.bits + 7) // 8} bytes")
        put_length(out, v.bits)
        out += v.data
    elif tag in (Tag.OCTET_STRING, Tag.TSA, Tag.MAC, Tag.RN):
        _put_octets(out, v, tag.type_name)  # type: ignore[arg-type]
    elif tag in (Tag.VISIBLE_STRING, Tag.UTF8_STRING):
        _want(v, str, tag)
        assert isinstance(v, str)
        try:
            raw = v.encode("ascii" if tag == Tag.VISIBLE_STRING else "utf-8")
        except UnicodeEncodeError:
            raise EncodeError(f"visible-string: {v!r} is not ASCII") from None
        _put_octets(out, raw, tag.type_name)
    elif tag in (Tag.FLOAT32, Tag.FLOAT64):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise EncodeError(f"{tag.type_name}: expected a number, got {v!r}")
        try:
            out += (_F32 if tag == Tag.FLOAT32 else _F64).pack(float(v))
        except (OverflowError, struct.error) as e:
            raise EncodeError(f"{tag.type_name}: {v!r} does not fit: {e}") from None
    elif tag == Tag.DATE_TIME:
        _want(v, DateTime, tag)
        assert isinstance(v, DateTime)
        out += _u16(v.year, "date_time year")
        for f in (v.month, v.day, v.weekday, v.hour, v.minute, v.second):
            out.append(_u8(f, "date_time field"))
        out += _u16(v.milliseconds, "date_time milliseconds")
    elif tag == Tag.DATE:
        _want(v, Date, tag)
        assert isinstance(v, Date)
        out += _u16(v.year, "date year")
        for f in (v.month, v.day, v.weekday):
            out.append(_u8(f, "date field"))
    elif tag == Tag.TIME:
        _want(v, Time, tag)
        assert isinstance(v, Time)
        for f in (v.hour, v.minute, v.second):
            out.append(_u8(f, "time field"))
    elif tag == Tag.DATE_TIME_S:
        _put_dts(out, v)
    elif tag == Tag.OAD:
        _want(v, OAD, tag)
        assert isinstance(v, OAD)
        out += v.to_bytes()
    elif tag == Tag.ROAD:
        _want(v, ROAD, tag)
        assert isinstance(v, ROAD)
        _put_road(out, v)
    elif tag == Tag.OMD:
        _want(v, OMD, tag)
        assert isinstance(v, OMD)
        out += v.to_bytes()
    elif tag == Tag.TI:
        _put_ti(out, v)
    elif tag == Tag.REGION:
        _want(v, Region, tag)
        assert isinstance(v, Region)
        _put_region(out, v)
    elif tag == Tag.SCALER_UNIT:
        _want(v, ScalerUnit, tag)
        assert isinstance(v, ScalerUnit)
        out += _int_range(v.scaler, -128, 127, "Scaler_Unit scaler").to_bytes(1, "big", signed=True)
        out.append(_u8(v.unit, "Scaler_Unit unit"))
    elif tag == Tag.RSD:
        _want(v, RSD, tag)
        assert isinstance(v, RSD)
        put_rsd(out, v)
    elif tag == Tag.CSD:
        put_csd(out, v)  # type: ignore[arg-type]
    elif tag == Tag.MS:
        _want(v, MS, tag)
        assert isinstance(v, MS)
        put_ms(out, v)
    elif tag in (Tag.SID, Tag.SID_MAC):
        sid = v.sid if isinstance(v, SidMac) else v
        if not isinstance(sid, SID) or (tag == Tag.SID_MAC) != isinstance(v, SidMac):
            raise EncodeError(f"{tag.type_name}: wrong value type {type(v).__name__}")
        out += _int_range(sid.ident, 0, 2**32 - 1, "SID identifier").to_bytes(4, "big")
        _put_octets(out, sid.extra, "SID additional data")
        if isinstance(v, SidMac):
            _put_octets(out, v.mac, "SID_MAC MAC")
    elif tag == Tag.COMDCB:
        _want(v, COMDCB, tag)
        assert isinstance(v, COMDCB)
        for f in (v.baud, v.parity, v.data_bits, v.stop_bits, v.flow):
            out.append(_u8(f, "COMDCB field"))
    elif tag == Tag.RCSD:
        _want(v, tuple, tag)
        assert isinstance(v, tuple)
        put_length(out, len(v))
        for c in v:
            put_csd(out, c)  # type: ignore[arg-type]
    else:  # pragma: no cover - every Tag is handled above
        raise EncodeError(f"cannot encode {tag.type_name}")


def encode_data(d: Data) -> bytes:
    """The encoding of one Data."""
    out = bytearray()
    put_data(out, d)
    return bytes(out)


def to_number(d: Data) -> int | float | bool | None:
    """The plain number a Data holds (bool, integer types, enum, float), None otherwise.

    date_time_s gives UTC epoch seconds (None when a field is unspecified); a one-element
    bit-string gives its bit as a bool.
    """
    v = d.value
    if d.tag == Tag.BOOL:
        return bool(v)
    if d.tag in _INT_RANGES:
        return int(v)  # type: ignore[arg-type]
    if d.tag in (Tag.FLOAT32, Tag.FLOAT64):
        return float(v)  # type: ignore[arg-type]
    if d.tag == Tag.DATE_TIME_S and isinstance(v, DateTimeS):
        dt = v.to_datetime()
        return None if dt is None else dt.timestamp()
    return None
