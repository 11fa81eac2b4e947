"""What `vpp decode` / `vpp encode` share across protocols: the parser and reading hex input."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["hex_bytes", "hex_inputs", "protocols"]


def protocols(sub: Any, verb: str, help: str) -> Any:
    """The sub-subparsers of `vpp <verb>`, created by the first protocol module to ask."""
    p = sub.choices.get(verb)
    if p is None:
        p = sub.add_parser(verb, help=help)
        p._vpp_protocols = p.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    return p._vpp_protocols


def hex_inputs(args: list[str]) -> list[str]:
    """One input per frame argument; a run of one-byte arguments is one input; `-` reads stdin lines."""
    if args == ["-"]:
        return [line for line in sys.stdin.read().splitlines() if line.strip()]
    out: list[str] = []
    run: list[str] = []
    for a in args:
        if len(a.strip()) == 2:
            run.append(a)
            continue
        if run:
            out.append(" ".join(run))
            run = []
        out.append(a)
    if run:
        out.append(" ".join(run))
    return out


def hex_bytes(text: str) -> bytes:
    """Bytes of hex text with 0x prefixes and space, tab, colon, comma or dash separators."""
    t = text.replace("0x", "").replace("0X", "")
    for sep in " \t:,-":
        t = t.replace(sep, "")
    return bytes.fromhex(t)
