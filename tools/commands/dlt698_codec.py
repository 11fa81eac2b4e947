"""`vpp decode dlt698 HEX...` and `vpp encode dlt698 JSON`: DL/T 698.45 frames for engineers.

decode prints each frame as JSON (link fields, the APDU with every field named, values of known
objects scaled with their unit) or the typed decode error with the byte offset where decoding
failed. Arguments: one frame per argument (spaces inside a quoted frame are fine), or a frame
split into one byte per argument, or `-` to read one frame per line from stdin. Fragments given
in order are reassembled and their APDU decoded at the last one.

encode builds frame(s) from JSON: either the form decode prints ({"frame": {...}, "apdu":
{...}}), or a shorthand request:
  {"get": ["20000200", "voltage"], "server": "000000000001", "client": 16, "piid": 1}
  {"set": {"oad": "40000200", "value": {"type": "date_time_s", "value": "2025-01-01 00:00:00"}}}
  {"action": {"omd": "80008100", "parameter": {"type": "null"}}}
  {"connect": {}}, {"release": {}}, {"report_response": ["20000200"]}
with "security": true to wrap the request in a SECURITY-Request (plaintext + random number),
and "max_frame" to split it into link-layer fragments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from tools.commands._codec_cli import hex_bytes, hex_inputs, protocols

__all__ = ["decode_hex", "encode_json", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `decode dlt698` and `encode dlt698`."""
    dec = protocols(sub, "decode", "decode field-protocol frames (hex) to JSON")
    p = dec.add_parser("dlt698", help="DL/T 698.45 frames")
    p.add_argument("hex", nargs="+", help="frame(s) in hex, or - to read hex lines from stdin")
    p.set_defaults(func=_decode)
    enc = protocols(sub, "encode", "build field-protocol request frames from JSON")
    p = enc.add_parser("dlt698", help="DL/T 698.45 request frame from a JSON description")
    p.add_argument("json", help="JSON description, or - to read it from stdin")
    p.set_defaults(func=_encode)


def decode_hex(inputs: list[str]) -> tuple[list[dict[str, Any]], bool]:
    """The JSON form of every frame in the hex inputs, and whether all decoded cleanly."""
    from gateway.codecs.dlt698 import (
        DecodeError,
        Reassembler,
        decode_apdu,
        decode_frame,
    )
    from gateway.codecs.dlt698.jsonform import apdu_to_json, frame_to_json

    out: list[dict[str, Any]] = []
    ok = True
    reassembly = Reassembler()

    def error(e: Exception, offset: int, raw: str) -> dict[str, Any]:
        nonlocal ok
        ok = False
        what = getattr(e, "what", str(e))
        at = getattr(e, "offset", 0) + offset
        return {"input": raw, "error": type(e).__name__, "what": what, "offset": at}

    for raw in inputs:
        try:
            buf = hex_bytes(raw)
        except ValueError as e:
            out.append(error(e, 0, raw))
            continue
        pos = 0
        while pos < len(buf) and buf[pos] == 0xFE:  # wake-up preamble
            pos += 1
        while pos < len(buf):
            start = pos
            if buf[pos] != 0x68:
                out.append(
                    error(DecodeError(f"start byte is {buf[pos]:02X}H, not 68H", 0), pos, raw)
                )
                break
            if len(buf) - pos < 3:
                out.append(
                    error(
                        DecodeError("truncated before the length field", len(buf) - pos), pos, raw
                    )
                )
                break
            total = ((buf[pos + 1] | buf[pos + 2] << 8) & 0x3FFF) + 2
            chunk = buf[pos : pos + total]
            pos += total
            try:
                f = decode_frame(chunk)
            except DecodeError as e:
                out.append(error(e, start, raw))
                break
            entry: dict[str, Any] = {"hex": chunk.hex(" ").upper(), "frame": frame_to_json(f)}
            payload = f.payload
            header = len(chunk) - 3 - len(payload)
            if f.fragment is not None:
                entry["fragment_data"] = payload.hex(" ").upper()
                if f.fragment.type.name == "ACK":
                    out.append(entry)
                    continue
                try:
                    whole = reassembly.feed(f)
                except DecodeError as e:
                    entry.update(error(e, start + header, raw))
                    out.append(entry)
                    continue
                if whole is None:
                    out.append(entry)
                    continue
                payload, header = whole, 0
                entry["reassembled"] = whole.hex(" ").upper()
            try:
                entry["apdu"] = apdu_to_json(decode_apdu(payload))
            except DecodeError as e:
                entry.update(error(e, start + header if header else 0, raw))
                entry["apdu_hex"] = payload.hex(" ").upper()
            out.append(entry)
    return out, ok


def encode_json(js: dict[str, Any]) -> list[bytes]:
    """The frame(s) a JSON description asks for (see the module docstring)."""
    from gateway.codecs.dlt698 import (
        ActionRequest,
        ConnectRequest,
        EncodeError,
        GetRequestNormal,
        GetRequestNormalList,
        ReleaseRequest,
        ReportResponseList,
        SecurityRequest,
        SetRequestNormal,
        encode_apdu,
        encode_frame,
        frames_for,
        parse_oad,
        parse_omd,
    )
    from gateway.codecs.dlt698.jsonform import (
        _from,
        apdu_from_json,
        data_from_json,
        frame_from_json,
        server_from_json,
    )

    if not isinstance(js, dict):
        raise EncodeError("expected a JSON object")
    if "frame" in js and "apdu" in js:
        apdu = apdu_from_json(js["apdu"])
        return [encode_frame(frame_from_json(js["frame"], encode_apdu(apdu)))]
    piid = int(js.get("piid", 1))
    if "apdu" in js:
        apdu = apdu_from_json(js["apdu"])
    elif "get" in js:
        oads = [
            parse_oad(str(o)) for o in (js["get"] if isinstance(js["get"], list) else [js["get"]])
        ]
        apdu = (
            GetRequestNormal(piid, oads[0])
            if len(oads) == 1
            else GetRequestNormalList(piid, tuple(oads))
        )
    elif "set" in js:
        s = js["set"]
        apdu = SetRequestNormal(piid, parse_oad(str(s["oad"])), data_from_json(s["value"]))
    elif "action" in js:
        a = js["action"]
        param = data_from_json(a.get("parameter", {"type": "null"}))
        apdu = ActionRequest(piid, parse_omd(str(a["omd"])), param)
    elif "connect" in js:
        fields = dict(js["connect"] or {})
        fields.setdefault("piid", piid)
        apdu = _from(ConnectRequest, fields, "connect")
    elif "release" in js:
        apdu = ReleaseRequest(piid)
    elif "report_response" in js:
        apdu = ReportResponseList(piid, tuple(parse_oad(str(o)) for o in js["report_response"]))
    else:
        raise EncodeError(
            "give one of: frame+apdu, apdu, get, set, action, connect, release, report_response"
        )
    payload = encode_apdu(apdu)
    if js.get("security"):
        payload = encode_apdu(SecurityRequest(payload, os.urandom(16)))
    return frames_for(
        payload,
        server_from_json(
            js.get("server", "AAAAAAAAAAAA")
            if "server" in js
            else {"address": "AAAAAAAAAAAA", "type": "wildcard"}
        ),
        int(js.get("client", 0x10)),
        max_frame=int(js.get("max_frame", 16385)),
    )


def _decode(args: argparse.Namespace) -> int:
    entries, ok = decode_hex(hex_inputs(args.hex))
    for e in entries:
        print(json.dumps(e, ensure_ascii=False))
    return 0 if ok else 1


def _encode(args: argparse.Namespace) -> int:
    from gateway.codecs.dlt698 import DLT698Error

    text = sys.stdin.read() if args.json == "-" else args.json
    try:
        js = json.loads(text)
        frames = encode_json(js)
    except (json.JSONDecodeError, DLT698Error, KeyError, TypeError, ValueError) as e:
        print(f"vpp encode dlt698: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    for f in frames:
        print(f.hex(" ").upper())
    return 0
