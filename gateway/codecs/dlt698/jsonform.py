"""JSON form of DL/T 698.45 frames, APDUs and Data, for engineers (`vpp decode/encode dlt698`).

to_json() names every field; values of known objects are annotated with the object name, the
scaled value(s) and the unit (from the OAD table, value = raw x 10^scaler). from_json() reads
the same form back (annotations are ignored), so decode | encode reproduces the frame bytes.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Union

from gateway.codecs.dlt698 import apdu as _apdu
from gateway.codecs.dlt698.axdr import (
    COMDCB,
    MS,
    RSD,
    SID,
    TI,
    BitString,
    Data,
    Date,
    DateTime,
    DateTimeS,
    Region,
    ScalerUnit,
    SidMac,
    Tag,
    Time,
    tag_by_name,
    to_number,
)
from gateway.codecs.dlt698.errors import DecodeError, EncodeError
from gateway.codecs.dlt698.frame import (
    AddressType,
    Direction,
    Fragment,
    FragmentType,
    Frame,
    ServerAddress,
)
from gateway.codecs.dlt698.oad import OAD, OMD, ROAD, element_names, lookup, unit_symbol

__all__ = [
    "apdu_from_json",
    "apdu_to_json",
    "data_from_json",
    "data_to_json",
    "frame_to_json",
    "scaled_values",
    "to_json",
]

_HELPERS = {
    "AResultNormal", "AResultRecord", "ConnectMechanism", "Dar", "FactoryVersion",
    "FollowReport", "RnMac", "TimeTag",
}  # fmt: skip
_APDU_TYPES: dict[str, type] = {
    name: obj
    for name in _apdu.__all__
    if isinstance(obj := getattr(_apdu, name), type)
    and dataclasses.is_dataclass(obj)
    and name not in _HELPERS
}

# --- to JSON -------------------------------------------------------------------------------


def _dts(t: DateTimeS) -> str:
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:{t.second:02d}"


def scaled_values(oad: OAD, d: Data) -> tuple[list[float | int | bool | None], str] | None:
    """(values scaled by the table's scaler, unit) of a Data read from a known OAD."""
    obj = lookup(oad.oi)
    if obj is None or oad.attribute != 2:
        return None
    factor = 10.0**obj.scaler
    items = list(d.value) if d.tag == Tag.ARRAY and isinstance(d.value, tuple) else [d]
    out: list[float | int | bool | None] = []
    for e in items:
        if not isinstance(e, Data):
            out.append(None)
            continue
        n = to_number(e)
        if n is None or isinstance(n, bool) or e.tag == Tag.DATE_TIME_S:
            out.append(n)
        else:
            out.append(round(n * factor, 10) if obj.scaler else n)
    return out, unit_symbol(obj.unit)


def _value_json(tag: Tag, v: Any) -> Any:
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        return [data_to_json(e) for e in v]
    if isinstance(v, DateTimeS):
        return _dts(v)
    return to_json(v)


def data_to_json(d: Data) -> dict[str, Any]:
    """{"type": name, "value": ...} for one Data."""
    return {"type": d.tag.type_name, "value": _value_json(d.tag, d.value)}


def to_json(x: Any) -> Any:
    """JSON-friendly form of a codec value (APDU, Data, identifier, bytes ...)."""
    if x is None or isinstance(x, bool | int | float | str):
        return x
    if isinstance(x, bytes):
        return x.hex().upper()
    if isinstance(x, Data):
        return data_to_json(x)
    if isinstance(x, OAD | OMD):
        return str(x)
    if isinstance(x, _apdu.Dar):
        return {"dar": x.code, "name": x.name}
    if isinstance(x, DateTimeS):
        return _dts(x)
    if isinstance(x, tuple | list):
        return [to_json(e) for e in x]
    if isinstance(x, _apdu.AResultNormal):
        out: dict[str, Any] = {"oad": str(x.oad), "result": to_json(x.result)}
        obj = lookup(x.oad.oi)
        if obj is not None:
            out["object"] = obj.name
        if isinstance(x.result, Data):
            sv = scaled_values(x.oad, x.result)
            if sv is not None and any(v is not None for v in sv[0]):
                vals, unit = sv
                names = element_names(obj) if obj and x.oad.index == 0 else ()
                out["values"] = dict(zip(names, vals, strict=False)) if names else vals
                if unit:
                    out["unit"] = unit
        return out
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        out = {}
        if type(x).__name__ in _APDU_TYPES:
            out["type"] = type(x).__name__
        for f in dataclasses.fields(x):
            out[f.name] = to_json(getattr(x, f.name))
        if isinstance(x, ScalerUnit):
            out["symbol"] = unit_symbol(x.unit)
        if isinstance(x, _apdu.SecurityRequest | _apdu.SecurityResponse):
            try:  # the plaintext APDU inside, for reading; from_json ignores it
                out["inner"] = apdu_to_json(x.inner())
            except DecodeError as e:
                out["inner_error"] = str(e)
        return out
    raise TypeError(f"no JSON form for {type(x).__name__}")


def apdu_to_json(a: _apdu.Apdu) -> dict[str, Any]:
    """JSON form of an APDU (with its class name as "type")."""
    out: dict[str, Any] = to_json(a)
    return out


def frame_to_json(f: Frame) -> dict[str, Any]:
    """JSON form of a frame's link-layer fields (the payload as hex)."""
    out: dict[str, Any] = {
        "control": f"{f.control:02X}",
        "direction": f.direction.name.lower(),
        "prm": f.prm,
        "role": f.role,
        "function": {1: "link-management", 3: "user-data"}.get(f.function, f.function),
        "scrambled": f.scrambled,
        "server": {
            "address": f.server.text,
            "type": f.server.type.name.lower(),
            "logical": f.server.logical,
        },
        "client": f.client,
    }
    if f.fragment is not None:
        out["fragment"] = {"seq": f.fragment.seq, "type": f.fragment.type.name.lower()}
    return out


def server_from_json(js: Any) -> ServerAddress:
    """A ServerAddress from {"address": "000000000001", "type": "single", "logical": 0}."""
    if isinstance(js, str):
        return ServerAddress.from_text(js)
    if not isinstance(js, dict):
        raise EncodeError(f"server address: expected text or an object, got {js!r}")
    kind = str(js.get("type", "single")).upper()
    if kind not in AddressType.__members__:
        raise EncodeError(f"server address type {kind.lower()!r} is not one of single, "
                          f"wildcard, group, broadcast")  # fmt: skip
    return ServerAddress.from_text(
        str(js.get("address", "AA")), AddressType[kind], int(js.get("logical", 0))
    )


def frame_from_json(js: dict[str, Any], payload: bytes) -> Frame:
    """A Frame from frame_to_json() fields and a payload."""
    direction = Direction[str(js.get("direction", "client")).upper()]
    frag = js.get("fragment")
    fragment = None
    if frag is not None:
        fragment = Fragment(int(frag["seq"]), FragmentType[str(frag["type"]).upper()])
    return Frame(
        server=server_from_json(js.get("server", "AAAAAAAAAAAA")),
        client=int(js.get("client", 0x10)),
        payload=payload,
        direction=direction,
        prm=int(js.get("prm", 1)),
        function=3 if js.get("function", "user-data") in ("user-data", 3) else 1,
        scrambled=bool(js.get("scrambled", False)),
        fragment=fragment,
    )


# --- from JSON -----------------------------------------------------------------------------

_INTEGER_TAGS = frozenset({
    Tag.DOUBLE_LONG, Tag.DOUBLE_LONG_UNSIGNED, Tag.INTEGER, Tag.LONG, Tag.UNSIGNED,
    Tag.LONG_UNSIGNED, Tag.LONG64, Tag.LONG64_UNSIGNED, Tag.ENUM, Tag.OI,
})  # fmt: skip
_DTS = re.compile(r"^(\d+)-(\d+)-(\d+)[ T](\d+):(\d+):(\d+)$")


def _bytes(js: Any, what: str) -> bytes:
    if not isinstance(js, str):
        raise EncodeError(f"{what}: expected a hex string, got {js!r}")
    try:
        return bytes.fromhex(js.replace(" ", ""))
    except ValueError:
        raise EncodeError(f"{what}: {js!r} is not hex") from None


def _dts_from(js: Any) -> DateTimeS:
    if isinstance(js, dict):
        return DateTimeS(**{k: int(v) for k, v in js.items()})
    m = _DTS.match(str(js).strip())
    if not m:
        raise EncodeError(f"date_time_s: {js!r} is not 'YYYY-MM-DD hh:mm:ss'")
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    return DateTimeS(y, mo, d, h, mi, s)


def _oad_from(js: Any) -> OAD:
    from gateway.codecs.dlt698.oad import parse_oad

    if not isinstance(js, str):
        raise EncodeError(f"OAD: expected 8 hex digits or an object name, got {js!r}")
    return parse_oad(js)


def _omd_from(js: Any) -> OMD:
    from gateway.codecs.dlt698.oad import parse_omd

    return parse_omd(str(js))


def data_from_json(js: Any) -> Data:
    """A Data from {"type": name, "value": ...}."""
    if not isinstance(js, dict) or "type" not in js:
        raise EncodeError(f"Data: expected {{'type': ..., 'value': ...}}, got {js!r}")
    tag = tag_by_name(str(js["type"]))
    v = js.get("value")
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        if not isinstance(v, list):
            raise EncodeError(f"{tag.type_name}: value must be a list of Data")
        return Data(tag, tuple(data_from_json(e) for e in v))
    if tag == Tag.NULL:
        return Data(tag)
    if tag == Tag.BOOL:
        return Data(tag, bool(v))
    if tag in (Tag.FLOAT32, Tag.FLOAT64):
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise EncodeError(f"{tag.type_name}: expected a number, got {v!r}")
        return Data(tag, float(v))
    if tag in (Tag.VISIBLE_STRING, Tag.UTF8_STRING):
        return Data(tag, str(v))
    if tag in (Tag.OCTET_STRING, Tag.TSA, Tag.MAC, Tag.RN):
        return Data(tag, _bytes(v, tag.type_name))
    if tag == Tag.DATE_TIME_S:
        return Data(tag, _dts_from(v))
    if tag == Tag.OAD:
        return Data(tag, _oad_from(v))
    if tag == Tag.OMD:
        return Data(tag, _omd_from(v))
    if tag in _INTEGER_TAGS:
        if isinstance(v, int) and not isinstance(v, bool):
            return Data(tag, v)
        if isinstance(v, str) and re.fullmatch(r"-?\d+", v.strip()):
            return Data(tag, int(v))
        raise EncodeError(f"{tag.type_name}: expected an integer, got {v!r}")
    hint = {
        Tag.BIT_STRING: BitString, Tag.DATE_TIME: DateTime, Tag.DATE: Date,
        Tag.TIME: Time, Tag.ROAD: ROAD, Tag.TI: TI, Tag.REGION: Region,
        Tag.SCALER_UNIT: ScalerUnit, Tag.RSD: RSD, Tag.CSD: OAD | ROAD, Tag.MS: MS,
        Tag.SID: SID, Tag.SID_MAC: SidMac, Tag.COMDCB: COMDCB, Tag.RCSD: tuple[OAD | ROAD, ...],
    }.get(tag)  # fmt: skip
    if hint is None:
        raise EncodeError(f"{tag.type_name}: cannot read value {v!r}")
    return Data(tag, _from(hint, v, tag.type_name))


def _from(tp: Any, js: Any, what: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if js is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _from(a, js, what)
            except (EncodeError, KeyError, TypeError, ValueError) as e:
                errors.append(str(e))
        raise EncodeError(f"{what}: {js!r} matches none of its forms ({'; '.join(errors)})")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(js, list):
            raise EncodeError(f"{what}: expected a list, got {js!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from(args[0], e, what) for e in js)
        if len(args) != len(js):
            raise EncodeError(f"{what}: expected {len(args)} items, got {len(js)}")
        return tuple(_from(a, e, what) for a, e in zip(args, js, strict=True))
    if tp is Any:
        return js
    if tp is bool:
        if not isinstance(js, bool):
            raise EncodeError(f"{what}: expected true/false, got {js!r}")
        return js
    if tp is int:
        if isinstance(js, bool) or not isinstance(js, int):
            raise EncodeError(f"{what}: expected an integer, got {js!r}")
        return js
    if tp is float:
        return float(js)
    if tp is str:
        if not isinstance(js, str):
            raise EncodeError(f"{what}: expected text, got {js!r}")
        return js
    if tp is bytes:
        return _bytes(js, what)
    if tp is Data:
        return data_from_json(js)
    if tp is OAD:
        return _oad_from(js)
    if tp is OMD:
        return _omd_from(js)
    if tp is DateTimeS:
        return _dts_from(js)
    if tp is _apdu.Dar:
        if isinstance(js, dict) and "dar" in js:
            return _apdu.Dar(int(js["dar"]))
        if isinstance(js, int) and not isinstance(js, bool):
            return _apdu.Dar(js)
        raise EncodeError(f"{what}: expected {{'dar': code}}, got {js!r}")
    if tp is _apdu.FollowReport:
        if not isinstance(js, dict) or js.get("kind") not in (1, 2):
            raise EncodeError(f"{what}: expected {{'kind': 1 or 2, 'results': [...]}}")
        items: Any = (
            tuple[_apdu.AResultNormal, ...] if js["kind"] == 1 else tuple[_apdu.AResultRecord, ...]
        )
        return _apdu.FollowReport(js["kind"], _from(items, js.get("results", []), what))
    if tp is _apdu.AResultNormal:
        if not isinstance(js, dict) or "oad" not in js or "result" not in js or "rcsd" in js:
            raise EncodeError(f"{what}: expected {{'oad': ..., 'result': ...}}")
        return _apdu.AResultNormal(
            _oad_from(js["oad"]), _from(Data | _apdu.Dar, js["result"], what)
        )
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(js, dict):
            raise EncodeError(f"{what}: expected an object for {tp.__name__}, got {js!r}")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in js:
                kwargs[f.name] = _from(hints[f.name], js[f.name], f"{tp.__name__}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise EncodeError(f"{tp.__name__}: missing field {f.name!r}")
        return tp(**kwargs)
    raise EncodeError(f"{what}: cannot read {tp!r}")


def apdu_from_json(js: Any) -> _apdu.Apdu:
    """An APDU from its JSON form ({"type": "GetRequestNormal", "piid": 1, "oad": ...})."""
    if not isinstance(js, dict) or "type" not in js:
        raise EncodeError("APDU: expected an object with a 'type' (e.g. GetRequestNormal)")
    cls = _APDU_TYPES.get(str(js["type"]))
    if cls is None:
        raise EncodeError(f"unknown APDU type {js['type']!r} (one of {', '.join(_APDU_TYPES)})")
    a: _apdu.Apdu = _from(cls, js, cls.__name__)
    return a
