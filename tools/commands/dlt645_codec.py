"""`vpp decode dlt645 HEX...` and `vpp encode dlt645 JSON`: DL/T 645-2007 frames for engineers.

decode prints each frame as one JSON line: the control code bits (direction, abnormal, follow-up,
function), every field of the request or answer by name, the data item's name, description and
value with its unit, the named errors of an abnormal answer - or the typed decode error with the
byte offset where decoding failed. Arguments: one frame per argument (spaces inside a quoted
frame are fine; several frames back to back in one argument are decoded in turn), a frame split
into one byte per argument, or `-` to read one frame per line from stdin.

encode builds a frame from a JSON object (or a list of them) in the form decode prints, e.g.
  {"type": "read_data", "address": "000000000001", "di": "02010100"}
  {"type": "read_data", "address": "AAAAAAAAAAAA", "di": "forward_active_energy"}
  {"type": "write_data", "address": "000000000001", "di": "demand_period", "value": 15,
   "password": {"level": 2, "code": "000000"}, "operator": "00000000"}
  {"type": "time_sync", "address": "999999999999", "time": "now"}
  {"type": "remote_control", "address": "000000000001", "action": "trip",
   "valid_until": "2025-01-01 12:00:00", "password": "02000000"}
with "preamble": 4 to prefix FE wake-up bytes (default: none).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from tools.commands._codec_cli import hex_bytes, hex_inputs, protocols

__all__ = ["decode_hex", "encode_json", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `decode dlt645` and `encode dlt645`."""
    dec = protocols(sub, "decode", "decode field-protocol frames (hex) to JSON")
    p = dec.add_parser("dlt645", help="DL/T 645-2007 frames")
    p.add_argument("hex", nargs="+", help="frame(s) in hex, or - to read hex lines from stdin")
    p.set_defaults(func=_decode)
    enc = protocols(sub, "encode", "build field-protocol request frames from JSON")
    p = enc.add_parser("dlt645", help="DL/T 645-2007 frame from a JSON description")
    p.add_argument("json", help="JSON object (or list of objects), or - to read it from stdin")
    p.set_defaults(func=_encode)


def decode_hex(inputs: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """The JSON form of every frame in the hex inputs, and whether all decoded cleanly."""
    from gateway.codecs.dlt645 import DecodeError, parse_frame
    from gateway.codecs.dlt645.jsonform import event_to_json
    from gateway.codecs.dlt645.messages import to_event

    out: list[dict[str, Any]] = []
    ok = True
    for n, text in enumerate(inputs):
        try:
            raw = hex_bytes(text)
        except ValueError as e:
            out.append({"input": n, "error": f"not hex: {e}", "what": "hex", "offset": None})
            ok = False
            continue
        pos = 0
        while pos < len(raw) or pos == 0:
            try:
                frame, used = parse_frame(raw[pos:], base=pos)
                end = pos + used
                event = to_event(frame, end - 2 - len(frame.data))
            except DecodeError as e:
                out.append({"input": n, "error": str(e), "what": e.what, "offset": e.offset})
                ok = False
                break
            out.append({"input": n, "offset": pos, **event_to_json(event, frame),
                        "hex": raw[pos:end].hex(" ").upper()})  # fmt: skip
            pos = end
    return out, ok


def _now_for(obj: dict[str, Any]) -> dict[str, Any]:
    """'now' (meter local time, UTC+8 unless "utc_offset_h" says otherwise) and '+SECONDS'."""
    obj = dict(obj)
    offset = float(obj.pop("utc_offset_h", 8.0))
    now = datetime.now(timezone(timedelta(hours=offset))).replace(tzinfo=None, microsecond=0)
    for key in ("time", "valid_until"):
        v = obj.get(key)
        if v == "now":
            obj[key] = now.isoformat(sep=" ")
        elif isinstance(v, str) and v.startswith("+") and v[1:].isdigit():
            obj[key] = (now + timedelta(seconds=int(v[1:]))).isoformat(sep=" ")
    return obj


def encode_json(text: str) -> list[str]:
    """Hex frames (uppercase, spaced) for a JSON object or list; LocalProtocolError if invalid."""
    from gateway.codecs.dlt645 import LocalProtocolError, encode
    from gateway.codecs.dlt645.jsonform import event_from_json

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise LocalProtocolError(f"not JSON: {e}") from None
    objs = doc if isinstance(doc, list) else [doc]
    out = []
    for obj in objs:
        if not isinstance(obj, dict):
            raise LocalProtocolError(f"each frame is a JSON object, not {obj!r}")
        obj = _now_for(obj)
        preamble = int(obj.pop("preamble", 0))
        for key in ("input", "offset", "hex"):
            obj.pop(key, None)
        out.append(encode(event_from_json(obj), preamble).hex(" ").upper())
    return out


def _decode(args: argparse.Namespace) -> int:
    frames, ok = decode_hex(hex_inputs(args.hex))
    for f in frames:
        print(json.dumps(f, ensure_ascii=False))
    return 0 if ok else 1


def _encode(args: argparse.Namespace) -> int:
    from gateway.codecs.dlt645 import DLT645Error

    text = sys.stdin.read() if args.json == "-" else args.json
    try:
        frames = encode_json(text)
    except DLT645Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for f in frames:
        print(f)
    return 0
