"""Frames and ASDUs as JSON-friendly dicts, and back: what `vpp decode/encode iec101` print and read.

frame_to_dict names every field; frame_from_dict accepts the same shape (extra, descriptive keys
such as "function_name", "cause" or a time tag's "iso" are ignored, names may replace numbers),
so a decoded frame can be edited and encoded again.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from gateway.codecs.iec101.asdu import ASDU, AsduParams, decode_asdu, encode_asdu, type_spec
from gateway.codecs.iec101.errors import DecodeError, LocalProtocolError
from gateway.codecs.iec101.ft12 import (
    Control,
    FixedFrame,
    Frame,
    PrimaryControl,
    PrimaryFunction,
    SecondaryControl,
    SecondaryFunction,
    SingleCharacter,
    VariableFrame,
    encode_control,
    encode_frame,
)
from gateway.codecs.iec101.types import (
    BL,
    IV,
    NT,
    OV,
    SB,
    Cause,
    CP16Time2a,
    CP24Time2a,
    CP56Time2a,
    InformationObject,
    TypeID,
)

__all__ = [
    "asdu_from_dict",
    "asdu_to_dict",
    "frame_from_dict",
    "frame_to_dict",
]

_FLAGS = ((IV, "IV"), (NT, "NT"), (SB, "SB"), (BL, "BL"), (OV, "OV"))
_QUALIFIERS = {20: "station interrogation"} | {
    20 + g: f"group {g} interrogation" for g in range(1, 17)
}


def _name(
    enum: type[PrimaryFunction] | type[SecondaryFunction] | type[Cause], v: int
) -> str | None:
    try:
        return enum(v).name
    except ValueError:
        return None


def _control_to_dict(c: Control) -> dict[str, Any]:
    d: dict[str, Any] = {"octet": f"0x{encode_control(c):02X}"}
    if isinstance(c, PrimaryControl):
        d |= {
            "prm": True,
            "function": int(c.function),
            "function_name": _name(PrimaryFunction, c.function),
            "fcb": c.fcb,
            "fcv": c.fcv,
        }
    else:
        d |= {
            "prm": False,
            "function": int(c.function),
            "function_name": _name(SecondaryFunction, c.function),
            "acd": c.acd,
            "dfc": c.dfc,
        }
    d["dir"] = c.dir
    return d


def _time_to_dict(t: object) -> dict[str, Any] | None:
    if t is None:
        return None
    if isinstance(t, CP56Time2a):
        d: dict[str, Any] = {"kind": "CP56Time2a"} | dataclasses.asdict(t)
        try:
            d["iso"] = t.to_datetime().isoformat(timespec="milliseconds")
        except ValueError:
            d["iso"] = None  # fields that are not a date (e.g. an invalid, zeroed tag)
        return d
    if isinstance(t, CP24Time2a):
        return {"kind": "CP24Time2a"} | dataclasses.asdict(t)
    if isinstance(t, CP16Time2a):
        return {"kind": "CP16Time2a", "millisecond": t.millisecond, "unit": "ms"}
    raise TypeError(f"not a time tag: {t!r}")


def _object_to_dict(o: InformationObject) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for f in dataclasses.fields(o):
        v = getattr(o, f.name)
        if f.name == "quality":
            d["quality"] = {"raw": v, "flags": [n for bit, n in _FLAGS if v & bit]}
        elif f.name in ("time", "clock", "delay"):
            d[f.name] = _time_to_dict(v)
        else:
            d[f.name] = v
    if "qualifier" in d and type(o).__name__ == "Interrogation":
        d["qualifier_name"] = _QUALIFIERS.get(d["qualifier"])
    return d


def asdu_to_dict(asdu: ASDU) -> dict[str, Any]:
    """Every field of an ASDU, named."""
    return {
        "type": TypeID(asdu.type_id).name,
        "type_id": int(asdu.type_id),
        "sequence": asdu.sequence,
        "count": len(asdu.objects),
        "cot": int(asdu.cot),
        "cause": _name(Cause, asdu.cot),
        "negative": asdu.negative,
        "test": asdu.test,
        "originator": asdu.originator,
        "common_address": asdu.common_address,
        "objects": [_object_to_dict(o) for o in asdu.objects],
    }


def frame_to_dict(
    frame: Frame, address_size: int = 1, params: AsduParams | None = None
) -> dict[str, Any]:
    """Every field of a frame, named; the user data decoded as an ASDU when params are given."""
    raw = encode_frame(frame, address_size)
    if isinstance(frame, SingleCharacter):
        return {"format": "single_character", "octet": "0xE5", "meaning": "ACK / NACK (no data)"}
    d: dict[str, Any] = {"format": "fixed" if isinstance(frame, FixedFrame) else "variable"}
    if isinstance(frame, VariableFrame):
        d["length"] = raw[1]
    d["control"] = _control_to_dict(frame.control)
    d["address"] = frame.address
    d["checksum"] = f"0x{raw[-2]:02X}"
    if isinstance(frame, VariableFrame):
        d["user_data"] = frame.data.hex(" ").upper()
        if params is not None:
            try:
                d["asdu"] = asdu_to_dict(decode_asdu(frame.data, params))
            except DecodeError as e:
                # The offset is counted from the start of the frame.
                at = 4 + 1 + address_size + e.offset
                d["asdu_error"] = {"error": type(e).__name__, "what": e.what, "offset": at}
    return d


# --- from dicts -------------------------------------------------------------------------------


def _enum(
    enum: type[PrimaryFunction] | type[SecondaryFunction] | type[Cause] | type[TypeID],
    v: Any,
    what: str,
) -> int:
    if isinstance(v, bool):
        raise LocalProtocolError(f"{what}: {v!r} is not a number or a name")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        key = v.strip().upper().replace(" ", "_").replace("-", "_")
        if key in enum.__members__:
            return int(enum.__members__[key])
        try:
            return int(v, 0)
        except ValueError:
            pass
    names = ", ".join(enum.__members__)
    raise LocalProtocolError(f"{what}: unknown {v!r} (one of {names})")


def _bool(d: dict[str, Any], key: str) -> bool:
    v = d.get(key, False)
    if not isinstance(v, bool):
        raise LocalProtocolError(f"{key}: {v!r} is not true or false")
    return v


def _control_from_dict(d: Any) -> Control:
    if not isinstance(d, dict):
        raise LocalProtocolError(f"control: expected an object, got {d!r}")
    prm = d.get("prm", True)
    if prm:
        fn = _enum(PrimaryFunction, d.get("function", d.get("function_name")), "control.function")
        return PrimaryControl(fn, _bool(d, "fcb"), _bool(d, "fcv"), _bool(d, "dir"))
    fn = _enum(SecondaryFunction, d.get("function", d.get("function_name")), "control.function")
    return SecondaryControl(fn, _bool(d, "acd"), _bool(d, "dfc"), _bool(d, "dir"))


def _time_from_dict(v: Any, kind: str, what: str) -> Any:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise LocalProtocolError(f"{what}: expected a time object, got {v!r}")
    cls = {"CP56Time2a": CP56Time2a, "CP24Time2a": CP24Time2a, "CP16Time2a": CP16Time2a}[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    if kind == "CP56Time2a" and isinstance(v.get("iso"), str) and not names & v.keys():
        return CP56Time2a.from_datetime(datetime.fromisoformat(v["iso"]))
    try:
        return cls(**{k: v[k] for k in names if k in v})
    except TypeError as e:
        raise LocalProtocolError(f"{what}: {e}") from None


def _object_from_dict(tid: TypeID, d: Any, k: int) -> InformationObject:
    spec = type_spec(tid)
    what = f"objects[{k}]"
    if not isinstance(d, dict):
        raise LocalProtocolError(f"{what}: expected an object, got {d!r}")
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(spec.cls):
        if f.name not in d:
            continue
        v = d[f.name]
        if f.name == "quality" and isinstance(v, dict):
            v = v.get("raw", 0)
        elif f.name == "time":
            v = _time_from_dict(
                v,
                {0: "", 3: "CP24Time2a", 7: "CP56Time2a"}[spec.time] or "CP56Time2a",
                f"{what}.time",
            )
        elif f.name == "clock":
            v = _time_from_dict(v, "CP56Time2a", f"{what}.clock")
        elif f.name == "delay":
            v = _time_from_dict(v, "CP16Time2a", f"{what}.delay")
        kw[f.name] = v
    try:
        obj: InformationObject = spec.cls(**kw)
    except TypeError as e:
        raise LocalProtocolError(f"{what} of {tid.name}: {e}") from None
    return obj


def asdu_from_dict(d: Any) -> ASDU:
    """An ASDU from its dict; LocalProtocolError naming what is missing or wrong."""
    if not isinstance(d, dict):
        raise LocalProtocolError(f"asdu: expected an object, got {d!r}")
    tid_v = d.get("type", d.get("type_id"))
    if tid_v is None:
        raise LocalProtocolError("asdu: 'type' (e.g. \"C_IC_NA_1\") is missing")
    tid = TypeID(_enum(TypeID, tid_v, "asdu.type"))
    cot = _enum(Cause, d.get("cot", d.get("cause", "ACTIVATION")), "asdu.cot")
    objs = d.get("objects", [])
    if not isinstance(objs, list):
        raise LocalProtocolError("asdu.objects: expected a list")
    ca = d.get("common_address", 1)
    org = d.get("originator", 0)
    if not isinstance(ca, int) or not isinstance(org, int):
        raise LocalProtocolError("asdu: common_address and originator are integers")
    return ASDU(
        tid,
        cot,
        ca,
        tuple(_object_from_dict(tid, o, k) for k, o in enumerate(objs)),
        sequence=_bool(d, "sequence"),
        negative=_bool(d, "negative"),
        test=_bool(d, "test"),
        originator=org,
    )


def frame_from_dict(d: Any, params: AsduParams | None = None) -> Frame:
    """A frame from its dict: format, control, address and user_data (hex) or asdu."""
    if not isinstance(d, dict):
        raise LocalProtocolError(f"frame: expected an object, got {d!r}")
    fmt = d.get("format", "variable" if ("asdu" in d or "user_data" in d) else "fixed")
    if fmt == "single_character":
        return SingleCharacter()
    control = _control_from_dict(d.get("control", {}))
    address = d.get("address", 0)
    if not isinstance(address, int) or isinstance(address, bool):
        raise LocalProtocolError(f"address: {address!r} is not an integer")
    if fmt == "fixed":
        return FixedFrame(control, address)
    if fmt != "variable":
        raise LocalProtocolError(f"format: {fmt!r} is not single_character, fixed or variable")
    if "asdu" in d:
        data = encode_asdu(asdu_from_dict(d["asdu"]), params or AsduParams())
    else:
        try:
            data = bytes.fromhex(str(d.get("user_data", "")))
        except ValueError as e:
            raise LocalProtocolError(f"user_data: {e}") from None
    return VariableFrame(control, address, data)
