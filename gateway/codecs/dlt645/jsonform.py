"""Events as JSON-friendly dicts (every field named, data values with units) and back.

Used by `vpp decode dlt645` / `vpp encode dlt645`; pure like the rest of the codec.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import Any

from gateway.codecs.dlt645 import messages as m
from gateway.codecs.dlt645.data_ids import decode_item, encode_item, lookup_di, parse_di
from gateway.codecs.dlt645.errors import DLT645Error, LocalProtocolError
from gateway.codecs.dlt645.frame import Frame

__all__ = ["EVENT_TYPES", "event_from_json", "event_to_json", "type_name"]

EVENT_TYPES: dict[str, type] = {}
for _cls in (*m.REQUEST_TYPES, *m.RESPONSE_TYPES, m.OtherFrame):
    EVENT_TYPES[re.sub(r"(?<!^)(?=[A-Z])", "_", _cls.__name__).lower()] = _cls
_NAME_OF = {cls: name for name, cls in EVENT_TYPES.items()}

_DI_FIELDS = {"di"}
_DATA_EVENTS = (m.ReadDataResponse, m.ReadFollowUpResponse, m.WriteData)


def type_name(event: m.Event) -> str:
    """The snake_case type name of an event ('read_data_response')."""
    return _NAME_OF[type(event)]


def _hex(b: bytes) -> str:
    return b.hex(" ").upper()


def _function_name(fn: int) -> str:
    try:
        return m.Function(fn).name.lower()
    except ValueError:
        return f"0x{fn:02X}"


def event_to_json(event: m.Event, frame: Frame | None = None) -> dict[str, Any]:
    """Every field of an event, the control code bits, and the decoded value of data items."""
    f = frame if frame is not None else m.to_frame(event)
    out: dict[str, Any] = {
        "type": type_name(event),
        "direction": "meter->master" if f.from_meter else "master->meter",
        "address": event.address,
        "control": f"{f.control:02X}",
        "function": _function_name(f.function),
        "abnormal": f.abnormal,
        "more": f.more,
        "length": len(f.data),
    }
    for fld in dataclasses.fields(event):
        name = fld.name
        if name == "address":
            continue
        v = getattr(event, name)
        if name in _DI_FIELDS:
            out[name] = f"{v:08X}"
            item = lookup_di(v)
            if item is not None:
                out["item"] = item.name
                out["description"] = item.description
        elif isinstance(v, bytes):
            out[name] = _hex(v)
        elif isinstance(v, datetime):
            out[name] = v.isoformat(sep=" ")
        elif isinstance(v, m.Password):
            out[name] = {"level": v.level, "code": v.code}
        elif isinstance(v, m.ControlAction):
            out[name] = v.name.lower()
        elif name == "function":
            out[name] = _function_name(v)
        elif name == "error":
            out[name] = f"0x{v:02X}"
        elif name == "control":
            out[name] = f"{v:02X}"
        else:
            out[name] = v
    if isinstance(event, m.ErrorResponse):
        out["errors"] = list(event.errors)
    if isinstance(event, _DATA_EVENTS):
        item = lookup_di(event.di)
        if item is not None and not (
            isinstance(event, m.ReadFollowUpResponse) or event_more(event)
        ):
            try:
                out["value"] = decode_item(item, event.data)
            except DLT645Error as e:
                out["value_error"] = str(e)
            units = {x.name: x.unit for x in item.fields if x.unit}
            if units:
                out["unit"] = units.get("value", units) if len(units) == 1 else units
    return out


def event_more(event: m.Event) -> bool:
    """True for a read answer that announces follow-up frames (its data is only a part)."""
    return isinstance(event, m.ReadDataResponse | m.ReadFollowUpResponse) and event.more


def _bytes(v: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(str(v).replace(" ", ""))
    except ValueError:
        raise LocalProtocolError(f"{what}: {v!r} is not hex") from None


def _password(v: Any) -> m.Password:
    if isinstance(v, dict):
        return m.Password(int(v.get("level", 2)), str(v.get("code", "000000")).upper())
    text = str(v)
    if re.fullmatch(r"[0-9A-Fa-f]{8}", text):  # 'PAP2P1P0' as one string, e.g. '02000000'
        return m.Password(int(text[:2], 16), text[2:].upper())
    raise LocalProtocolError(f"password {v!r}: give {{'level': 2, 'code': '000000'}} or 'PAP2P1P0'")


def _time(v: Any, what: str) -> datetime:
    try:
        return datetime.fromisoformat(str(v))
    except ValueError:
        raise LocalProtocolError(
            f"{what}: {v!r} is not an ISO time like 2024-01-31 12:30:00"
        ) from None


def event_from_json(obj: dict[str, Any]) -> m.Event:
    """Build an event from a dict like event_to_json's; LocalProtocolError naming what is wrong."""
    if not isinstance(obj, dict) or "type" not in obj:
        raise LocalProtocolError(f"need an object with 'type' (one of {', '.join(EVENT_TYPES)})")
    cls = EVENT_TYPES.get(str(obj["type"]))
    if cls is None:
        raise LocalProtocolError(f"unknown type {obj['type']!r} (one of {', '.join(EVENT_TYPES)})")
    kwargs: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    known = names | {"type", "value", "direction", "control", "function", "abnormal", "more",
                     "length", "item", "description", "unit", "errors", "value_error"}  # fmt: skip
    unknown = set(obj) - known
    if unknown:
        raise LocalProtocolError(f"{obj['type']}: unknown key(s) {', '.join(sorted(unknown))}")
    for name in names:
        if name not in obj:
            continue
        v = obj[name]
        if name == "di":
            try:
                kwargs[name] = parse_di(str(v))
            except ValueError as e:
                raise LocalProtocolError(str(e)) from None
        elif name in ("data", "params"):
            kwargs[name] = _bytes(v, name)
        elif name in ("password", "old", "new"):
            kwargs[name] = _password(v)
        elif name in ("time", "valid_until"):
            kwargs[name] = _time(v, name)
        elif name == "action":
            try:
                kwargs[name] = m.ControlAction[str(v).upper()]
            except KeyError:
                names_ = ", ".join(a.name.lower() for a in m.ControlAction)
                raise LocalProtocolError(f"action {v!r} (one of {names_})") from None
        elif name in ("function", "control", "error"):
            kwargs[name] = _int_or_name(v, name)
        elif name in ("operator", "address", "new_address", "when", "code"):
            kwargs[name] = str(v).upper()
        else:
            kwargs[name] = v
    for more_key in ("more",):
        if more_key in names and more_key in obj:
            kwargs[more_key] = bool(obj[more_key])
    if "value" in obj and "data" in names and "data" not in obj and "di" in kwargs:
        item = lookup_di(kwargs["di"])
        if item is None:
            raise LocalProtocolError(
                f"DI {kwargs['di']:08X} is not in the table: give 'data' as hex"
            )
        kwargs["data"] = encode_item(item, obj["value"])
    try:
        event: m.Event = cls(**kwargs)
    except TypeError as e:
        raise LocalProtocolError(f"{obj['type']}: {e}") from None
    m.to_frame(event)  # validate now, naming the field
    return event


def _int_or_name(v: Any, what: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    text = str(v)
    if what == "function":
        try:
            return int(m.Function[text.upper()])
        except KeyError:
            pass
    try:
        return int(text, 16) if not text.lower().startswith("0x") else int(text, 0)
    except ValueError:
        raise LocalProtocolError(f"{what}: {v!r} is neither a number nor a known name") from None
