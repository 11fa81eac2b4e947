"""`vpp decode iec101 HEX...` and `vpp encode iec101 JSON`: IEC 60870-5-101 frames for engineers.

decode: the HEX arguments are joined (spaces inside and between them are allowed, so both
`vpp decode iec101 10 49 01 4A 16` and `vpp decode iec101 "10 49 01 4A 16" "E5"` work) and
decoded as FT1.2 frames back to back; with `-`, each line of stdin is one such input. Every
frame is printed as JSON with every field named, its user data decoded as an ASDU with the given
COT / common address / IOA sizes; a bad frame prints the typed decode error with the byte offset
where decoding failed (exit status 1).

encode: a JSON object (or a list of them) shaped like decode's output is built into frames and
printed as hex, one frame per line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway.codecs.iec101 import (
    AsduParams,
    DecodeError,
    IEC101Error,
    encode_frame,
    frame_from_dict,
    frame_to_dict,
)
from gateway.codecs.iec101.ft12 import iter_frames
from tools.commands._codec_cli import hex_bytes, protocols

__all__ = ["decode_text", "register"]


def _sizes(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--link-address-size",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="octets of the link address (default 1)",
    )
    p.add_argument(
        "--cot-size",
        type=int,
        choices=(1, 2),
        default=1,
        help="octets of the cause of transmission (default 1)",
    )
    p.add_argument(
        "--ca-size",
        type=int,
        choices=(1, 2),
        default=1,
        help="octets of the common address (default 1)",
    )
    p.add_argument(
        "--ioa-size",
        type=int,
        choices=(1, 2, 3),
        default=2,
        help="octets of the information object address (default 2)",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `decode iec101` and `encode iec101`."""
    dec = protocols(sub, "decode", "decode field-protocol frames (hex) to JSON").add_parser(
        "iec101", help="IEC 60870-5-101 (DL/T 634.5101) FT1.2 frames and ASDUs"
    )
    dec.add_argument(
        "hex", nargs="+", metavar="HEX", help="frame bytes in hex, or - for hex lines on stdin"
    )
    _sizes(dec)
    dec.add_argument("--compact", action="store_true", help="one JSON object per line")
    dec.set_defaults(func=_decode)
    enc = protocols(sub, "encode", "build field-protocol frames from JSON").add_parser(
        "iec101", help="IEC 60870-5-101 frames from a JSON description"
    )
    enc.add_argument("json", metavar="JSON", help="a frame object (or a list), or - for stdin")
    _sizes(enc)
    enc.set_defaults(func=_encode)


def _params(args: argparse.Namespace) -> AsduParams:
    return AsduParams(args.cot_size, args.ca_size, args.ioa_size)


def _inputs(args: argparse.Namespace) -> list[str]:
    if args.hex == ["-"]:
        return [line for line in sys.stdin.read().splitlines() if line.strip()]
    return [" ".join(args.hex)]


def decode_text(text: str, address_size: int, params: AsduParams) -> list[dict[str, Any]]:
    """JSON-ready dicts of the frames in a hex text, ending with an error entry if one is bad."""
    try:
        data = hex_bytes(text)
    except ValueError as e:
        return [{"error": "HexError", "what": f"not hex: {e}", "input": text.strip()}]
    out: list[dict[str, Any]] = []
    try:
        for _, frame in iter_frames(data, address_size):
            out.append(frame_to_dict(frame, address_size, params))
    except DecodeError as e:
        out.append(
            {
                "error": type(e).__name__,
                "what": e.what,
                "offset": e.offset,
                "input": data.hex(" ").upper(),
            }
        )
    return out


def _decode(args: argparse.Namespace) -> int:
    params = _params(args)
    failed = False
    for text in _inputs(args):
        for d in decode_text(text, args.link_address_size, params):
            failed |= "error" in d
            print(json.dumps(d, ensure_ascii=False, indent=None if args.compact else 2))
    return 1 if failed else 0


def _encode(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.json == "-" else args.json
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        print(json.dumps({"error": "JSONDecodeError", "what": str(e)}), file=sys.stderr)
        return 2
    items = doc if isinstance(doc, list) else [doc]
    params = _params(args)
    try:
        frames = [encode_frame(frame_from_dict(d, params), args.link_address_size) for d in items]
    except IEC101Error as e:
        print(json.dumps({"error": type(e).__name__, "what": str(e)}), file=sys.stderr)
        return 1
    for f in frames:
        print(f.hex(" ").upper())
    return 0
