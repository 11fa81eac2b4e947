"""The data identifier table and the value codec of its formats.

The table (names, formats, units, sign handling) is model.drivers_dlt645's, so the site file is
validated against the same entries the codec decodes with; this module turns an item's bytes
(the data field after its DI, 33H already removed) into values and back:

- BCD numbers `XXXXXX.XX` etc.: least significant byte first; a `signed` field keeps its sign
  in the top bit of the most significant byte (DL/T 645-2007 A.3: "最高位表示方向").
- `bits16`: a binary word, least significant byte first (status words).
- date/time patterns (`YYMMDDhhmm`, `YYMMDDWW`, `hhmmss`...): BCD, shown as '2024-01-31 12:30',
  'w3' for the day of the week (0 = Sunday).
- `N12`: twelve BCD digits ('000000000001'); `hex4`: four bytes as hex ('0000ABCD'); `DI`: a
  data identifier as eight hex digits.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from gateway.codecs.dlt645.bcd import bcd_digits, digits_to_bcd
from gateway.codecs.dlt645.errors import DecodeError, LocalProtocolError, ValueFormatError
from model.drivers_dlt645 import (
    DataItem,
    DIField,
    data_items,
    di_by_name,
    lookup_di,
    parse_di,
)

__all__ = [
    "DIField",
    "DataItem",
    "data_items",
    "decode_field",
    "decode_item",
    "di_by_name",
    "encode_field",
    "encode_item",
    "lookup_di",
    "parse_di",
    "point_value",
]

Scalar = float | int | str


def _tokens(fmt: str) -> list[str]:
    return [fmt[i : i + 2] for i in range(0, len(fmt), 2)]


def decode_field(f: DIField, data: bytes, offset: int = 0) -> Scalar:
    """The value of one field from its bytes; ValueFormatError naming the bad byte."""
    if len(data) != f.size:
        raise ValueFormatError(f"{f.name} ({f.fmt}) needs {f.size} bytes, got {len(data)}", offset)
    kind = f.kind
    if kind == "number":
        neg = False
        if f.signed and data[-1] & 0x80:
            neg = True
            data = data[:-1] + bytes((data[-1] & 0x7F,))
        n = int(_digits(data, offset, f))
        if neg:
            n = -n
        return n / 10**f.decimals if f.decimals else n
    if kind == "bits":
        return int.from_bytes(data, "little")
    if kind == "hex":
        return data[::-1].hex().upper()
    if kind == "di":
        return f"{int.from_bytes(data, 'little'):08X}"
    digits = _digits(data, offset, f)
    if kind == "digits":
        return digits
    parts = dict(zip(_tokens(f.fmt), _tokens(digits), strict=True))
    date = "-".join(
        ("20" + parts[t] if t == "YY" else parts[t]) for t in ("YY", "MM", "DD") if t in parts
    )
    week = f"w{int(parts['WW'])}" if "WW" in parts else ""
    clock = ":".join(parts[t] for t in ("hh", "mm", "ss") if t in parts)
    return " ".join(p for p in (date, week, clock) if p)


def _digits(data: bytes, offset: int, f: DIField) -> str:
    try:
        return bcd_digits(data, offset, f"{f.name} ({f.fmt})")
    except ValueFormatError:
        raise
    except DecodeError as e:
        raise ValueFormatError(e.what, e.offset) from None


def encode_field(f: DIField, value: Any) -> bytes:
    """The bytes of one field; LocalProtocolError if the value does not fit the format."""
    kind = f.kind
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LocalProtocolError(f"{f.name} ({f.fmt}) takes a number, not {value!r}")
        digits = f.size * 2
        scaled = round(abs(value) * 10**f.decimals)
        limit = 8 * 10 ** (digits - 1) if f.signed else 10**digits
        if scaled >= limit:
            raise LocalProtocolError(f"{f.name} = {value} does not fit {f.fmt}")
        if value < 0 and not f.signed:
            raise LocalProtocolError(f"{f.name} ({f.fmt}) is unsigned, cannot hold {value}")
        raw = bytearray(digits_to_bcd(f"{scaled:0{digits}d}"))
        if value < 0 and scaled:
            raw[-1] |= 0x80
        return bytes(raw)
    if kind == "bits":
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value < 1 << (8 * f.size)
        ):
            raise LocalProtocolError(
                f"{f.name} ({f.fmt}) takes 0..{(1 << 8 * f.size) - 1}, not {value!r}"
            )
        return value.to_bytes(f.size, "little")
    if kind in ("hex", "di"):
        text = str(value)
        if not re.fullmatch(r"[0-9A-Fa-f]{8}", text):
            raise LocalProtocolError(f"{f.name} ({f.fmt}) takes eight hex digits, not {value!r}")
        return bytes.fromhex(text)[::-1]
    if kind == "digits":
        text = str(value)
        if not re.fullmatch(r"[0-9]{12}", text):
            raise LocalProtocolError(f"{f.name} ({f.fmt}) takes twelve digits, not {value!r}")
        return digits_to_bcd(text)
    tokens = _tokens(f.fmt)
    if isinstance(value, datetime):
        stamp = {"YY": f"{value.year % 100:02d}", "MM": f"{value.month:02d}",
                 "DD": f"{value.day:02d}", "WW": f"{value.isoweekday() % 7:02d}",
                 "hh": f"{value.hour:02d}", "mm": f"{value.minute:02d}",
                 "ss": f"{value.second:02d}"}  # fmt: skip
        return digits_to_bcd("".join(stamp[t] for t in tokens))
    groups = re.findall(r"\d+", str(value))
    if len(groups) != len(tokens):
        raise LocalProtocolError(f"{f.name}: {value!r} does not match {f.fmt}")
    out = []
    for t, g in zip(tokens, groups, strict=True):
        if t == "YY" and len(g) == 4 and g.startswith("20"):
            g = g[2:]
        if len(g) > 2:
            raise LocalProtocolError(f"{f.name}: {value!r} does not match {f.fmt} ({t} = {g})")
        out.append(g.zfill(2))
    return digits_to_bcd("".join(out))


def _element(item: DataItem, data: bytes, offset: int) -> Scalar | dict[str, Scalar]:
    if len(item.fields) == 1:
        return decode_field(item.fields[0], data, offset)
    out: dict[str, Scalar] = {}
    pos = 0
    for f in item.fields:
        out[f.name] = decode_field(f, data[pos : pos + f.size], offset + pos)
        pos += f.size
    return out


def decode_item(
    item: DataItem, data: bytes, offset: int = 0
) -> Scalar | dict[str, Scalar] | list[Scalar | dict[str, Scalar]]:
    """The value of a data item: a scalar, a dict of its fields, or a list for a block."""
    size = item.element_size
    if item.block:
        if not data or len(data) % size:
            raise ValueFormatError(
                f"{item.name} ({item.hex}) is a block of {size}-byte elements, got {len(data)} bytes",
                offset,
            )
        return [_element(item, data[i : i + size], offset + i) for i in range(0, len(data), size)]
    if len(data) != size:
        raise ValueFormatError(
            f"{item.name} ({item.hex}) needs {size} bytes, got {len(data)}", offset
        )
    return _element(item, data, offset)


def encode_item(item: DataItem, value: Any) -> bytes:
    """The bytes of a data item's value (the inverse of decode_item)."""
    if item.block:
        if not isinstance(value, list | tuple) or not value:
            raise LocalProtocolError(f"{item.name} is a block: give a non-empty list of elements")
        return b"".join(_encode_element(item, v) for v in value)
    return _encode_element(item, value)


def _encode_element(item: DataItem, value: Any) -> bytes:
    if len(item.fields) == 1:
        return encode_field(item.fields[0], value)
    if not isinstance(value, dict):
        names = ", ".join(f.name for f in item.fields)
        raise LocalProtocolError(f"{item.name} is a record: give a dict of {names}")
    missing = [f.name for f in item.fields if f.name not in value]
    if missing:
        raise LocalProtocolError(f"{item.name}: missing field(s) {', '.join(missing)}")
    return b"".join(encode_field(f, value[f.name]) for f in item.fields)


def point_value(
    item: DataItem,
    data: bytes,
    *,
    field: str | None = None,
    index: int | None = None,
    bit: int | None = None,
) -> float | int | bool:
    """The number a point takes from an item's data: a field, a block element, or one bit."""
    fields = item.fields
    if not item.block and len(fields) == 1 and bit is None and field is None:
        f = fields[0]  # the common case: one plain number
        if f.kind == "number" and len(data) == f.size:
            v = decode_field(f, data)
            assert not isinstance(v, str)
            return v
    size = item.element_size
    if item.block:
        k = index or 0
        if (k + 1) * size > len(data):
            raise ValueFormatError(
                f"{item.name} ({item.hex}): element {k} not in a {len(data)}-byte block", 0
            )
        data = data[k * size : (k + 1) * size]
    elif len(data) != size:
        raise ValueFormatError(f"{item.name} ({item.hex}) needs {size} bytes, got {len(data)}", 0)
    pos = 0
    for f in item.fields:
        if (field is None and f.numeric) or f.name == field:
            v = decode_field(f, data[pos : pos + f.size], pos)
            if not isinstance(v, int | float):
                raise LocalProtocolError(f"{item.name}.{f.name} ({f.fmt}) is not a number")
            if bit is not None:
                return bool(int(v) >> bit & 1)
            return v
        pos += f.size
    raise LocalProtocolError(f"{item.name} ({item.hex}) has no field {field!r}")


def item_for(di: int) -> DataItem | None:
    """Alias of lookup_di for readability at call sites."""
    return lookup_di(di)


_ = parse_di, di_by_name, data_items  # re-exported
