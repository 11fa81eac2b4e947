"""The edge <-> platform application messages carried in the secure channel's DATA records. Pure.

Hand-written (no standard fits a buffered, acknowledged sample stream inside our own channel).
Commands do not appear here: they travel as the channel's own COMMAND records (SM2-signed batch
root + inclusion proof, see security.command_signing); this is everything else.

Each DATA record holds one message: a UTF-8 JSON object whose `t` names its type.

    edge -> hub   {"t":"hello","v":1,"edge":NAME,"stream":HEX32,"buffered":N,"dropped":N}
    hub -> edge   {"t":"welcome","v":1,"stream":HEX32,"acked":SEQ}
    edge -> hub   {"t":"samples","p":[REF,...],"s":[[SEQ,P,VALUE,TS,QUALITY],...]}
    hub -> edge   {"t":"ack","seq":SEQ}
    edge -> hub   {"t":"cmd","id":ID,"state":STATE,"reason":TEXT,"code":CODE,"ts":TS,"n":N}
    hub -> edge   {"t":"cmdack","n":N}
    hub -> edge   {"t":"crl","der":BASE64}
    either        {"t":"ping","ts":TS} / {"t":"pong","ts":TS}

`stream` names the edge's buffer (random, created with it); SEQ numbers its samples, strictly
increasing for the life of the stream, never reused. In `samples`, P indexes the message's `p`
list of point references (each named once per message), VALUE is a JSON true/false, integer or
float (kept apart: 1 vs 1.0; NaN and Infinity as Python's json writes them), TS is UTC epoch
seconds, QUALITY the IEC 61850 quality integer. `ack` is cumulative: every sample of the
stream with seq <= SEQ is in the platform's twin and need not be sent again. `welcome.acked`
is the same watermark, given when the edge connects. `cmd` reports a command's lifecycle
state at the edge (model.command.CommandState values); `code` is a machine-readable reason for a
refusal (the verifier's or the policy's code), empty otherwise; N numbers the edge's queued
reports (the key of its report queue: strictly increasing, never reused for the life of the
buffer file). `cmdack` is cumulative like `ack`: the hub has handled (applied, or ignored as
repeated or stale) every report of this connection with n <= N, and the edge may forget them. A
`cmd` without `n` (an edge older than `cmdack`) is handled and never acknowledged. `crl` carries
the platform CA's current revocation list (DER, base64): sent after `welcome` and whenever the
platform takes a newer one; the edge checks the CA's signature and the CRL number before it uses
or stores it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import GatewayError
from model.command import CommandState
from model.sample import Sample, Value

__all__ = [
    "MAX_BATCH",
    "PROTOCOL_VERSION",
    "Ack",
    "CommandAck",
    "CommandReport",
    "CrlUpdate",
    "EdgeProtocolError",
    "Hello",
    "Message",
    "Ping",
    "Pong",
    "SampleBatch",
    "Welcome",
    "decode",
    "encode",
]

PROTOCOL_VERSION = 1
MAX_BATCH = 20_000
"""Most samples one message may carry (keeps a record well under the channel's 1 MiB body)."""

_STREAM = re.compile(r"^[0-9a-f]{32}$")
_INT32 = 1 << 31
_MAX_TEXT = 4096
_MAX_CRL = 512 * 1024  # DER bytes; a CRL of ~15,000 revoked serials


class EdgeProtocolError(GatewayError):
    """Bytes that are not a valid edge message; the message names what was wrong."""


@dataclass(frozen=True, slots=True)
class Hello:
    """The edge introduces its buffer stream after the handshake."""

    edge: str
    stream: str
    buffered: int = 0
    dropped: int = 0
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Welcome:
    """The hub's answer: how far it already holds this stream."""

    stream: str
    acked: int
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Buffered samples with their stream sequence numbers, strictly increasing."""

    items: tuple[tuple[int, Sample], ...]

    @property
    def first(self) -> int:
        """Sequence number of the first sample."""
        return self.items[0][0]

    @property
    def last(self) -> int:
        """Sequence number of the last sample."""
        return self.items[-1][0]


@dataclass(frozen=True, slots=True)
class Ack:
    """Cumulative acknowledgement: every sample with seq <= `seq` is held by the platform."""

    seq: int


@dataclass(frozen=True, slots=True)
class CommandReport:
    """A command's lifecycle state at the edge (and why)."""

    id: str
    state: CommandState
    reason: str = ""
    code: str = ""
    ts: float = 0.0
    n: int | None = None
    """The edge's sequence number of the report (None: not numbered, never acknowledged)."""


@dataclass(frozen=True, slots=True)
class CommandAck:
    """Cumulative acknowledgement: every command report with n <= `n` was handled by the hub."""

    n: int


@dataclass(frozen=True, slots=True)
class CrlUpdate:
    """The platform CA's revocation list (DER), for the edge to check and keep."""

    der: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """Keep-alive; answered by Pong."""

    ts: float


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to Ping."""

    ts: float


Message = Hello | Welcome | SampleBatch | Ack | CommandReport | CommandAck | CrlUpdate | Ping | Pong


# ------------------------------------------------------------------------------------ encoding


def _batch_json(items: Sequence[tuple[int, Sample]]) -> dict[str, Any]:
    index: dict[str, int] = {}
    rows: list[list[Any]] = []
    for seq, s in items:
        i = index.get(s[0])
        if i is None:
            i = index[s[0]] = len(index)
        rows.append([seq, i, s[1], s[2], s[3]])
    return {"t": "samples", "p": list(index), "s": rows}


def encode(msg: Message) -> bytes:
    """The message's wire form (one DATA record's payload)."""
    d: dict[str, Any]
    if isinstance(msg, SampleBatch):
        if not msg.items or len(msg.items) > MAX_BATCH:
            raise EdgeProtocolError(f"a sample batch holds 1..{MAX_BATCH} samples")
        d = _batch_json(msg.items)
    elif isinstance(msg, Ack):
        d = {"t": "ack", "seq": msg.seq}
    elif isinstance(msg, CommandReport):
        d = {"t": "cmd", "id": msg.id, "state": msg.state.value, "reason": msg.reason[:_MAX_TEXT],
             "code": msg.code, "ts": msg.ts}  # fmt: skip
        if msg.n is not None:
            d["n"] = _seq(msg.n, "cmd.n")
    elif isinstance(msg, CommandAck):
        d = {"t": "cmdack", "n": _seq(msg.n, "cmdack.n")}
    elif isinstance(msg, Hello):
        d = {"t": "hello", "v": msg.version, "edge": msg.edge, "stream": msg.stream,
             "buffered": msg.buffered, "dropped": msg.dropped}  # fmt: skip
    elif isinstance(msg, Welcome):
        d = {"t": "welcome", "v": msg.version, "stream": msg.stream, "acked": msg.acked}
    elif isinstance(msg, CrlUpdate):
        if not 0 < len(msg.der) <= _MAX_CRL:
            raise EdgeProtocolError(f"a CRL is 1..{_MAX_CRL} bytes, not {len(msg.der)}")
        d = {"t": "crl", "der": base64.b64encode(msg.der).decode("ascii")}
    elif isinstance(msg, Ping):
        d = {"t": "ping", "ts": msg.ts}
    elif isinstance(msg, Pong):
        d = {"t": "pong", "ts": msg.ts}
    else:
        raise EdgeProtocolError(f"not an edge message: {type(msg).__name__}")
    return json.dumps(d, separators=(",", ":")).encode()


# ------------------------------------------------------------------------------------ decoding


def _field(d: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str) -> Any:
    if key not in d:
        raise EdgeProtocolError(f"{what} message has no {key!r}")
    v = d[key]
    if isinstance(v, bool) and kind is not bool:
        raise EdgeProtocolError(f"{what}.{key} is a boolean, not {_kind_name(kind)}")
    if not isinstance(v, kind):
        raise EdgeProtocolError(f"{what}.{key} is {type(v).__name__}, not {_kind_name(kind)}")
    return v


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def _seq(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 63:
        raise EdgeProtocolError(f"{what} is not a sequence number (0..2^63-1): {v!r}")
    return v


def _time(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise EdgeProtocolError(f"{what} is not a finite time: {v!r}")
    return float(v)


def _text(d: dict[str, Any], key: str, what: str, *, empty: bool = True) -> str:
    v = _field(d, key, str, what)
    if len(v) > _MAX_TEXT or (not empty and not v):
        raise EdgeProtocolError(f"{what}.{key} must be 1..{_MAX_TEXT} characters")
    return str(v)


def _stream(d: dict[str, Any], what: str) -> str:
    v = _field(d, "stream", str, what)
    if not _STREAM.match(v):
        raise EdgeProtocolError(f"{what}.stream is not 32 lowercase hex digits: {v[:40]!r}")
    return str(v)


def _version(d: dict[str, Any], what: str) -> int:
    v = _field(d, "v", int, what)
    if v != PROTOCOL_VERSION:
        raise EdgeProtocolError(
            f"{what}: protocol version {v}, this side speaks {PROTOCOL_VERSION}"
        )
    return int(v)


def _samples(d: dict[str, Any]) -> SampleBatch:
    refs = _field(d, "p", list, "samples")
    rows = _field(d, "s", list, "samples")
    if not rows or len(rows) > MAX_BATCH:
        raise EdgeProtocolError(f"samples: 1..{MAX_BATCH} rows expected, got {len(rows)}")
    if not all(isinstance(r, str) and 0 < len(r) <= _MAX_TEXT for r in refs):
        raise EdgeProtocolError("samples.p must list point references (non-empty strings)")
    items: list[tuple[int, Sample]] = []
    prev = -1
    for k, row in enumerate(rows):
        where = f"samples.s[{k}]"
        if not isinstance(row, list) or len(row) != 5:
            raise EdgeProtocolError(f"{where} is not [seq, point, value, ts, quality]")
        seq_v, pi, value, ts, q = row
        seq = _seq(seq_v, f"{where} seq")
        if seq <= prev:
            raise EdgeProtocolError(f"{where}: seq {seq} does not increase (previous {prev})")
        prev = seq
        if isinstance(pi, bool) or not isinstance(pi, int) or not 0 <= pi < len(refs):
            raise EdgeProtocolError(f"{where}: point index {pi!r} is outside samples.p")
        if not isinstance(value, bool | int | float):
            raise EdgeProtocolError(f"{where}: value {value!r} is not a bool or a number")
        if isinstance(q, bool) or not isinstance(q, int) or not -_INT32 <= q < _INT32:
            raise EdgeProtocolError(f"{where}: quality {q!r} is not a 32-bit integer")
        v: Value = value
        items.append((seq, Sample(refs[pi], v, _time(ts, f"{where} ts"), q, "")))
    return SampleBatch(tuple(items))


def decode(data: bytes) -> Message:
    """Parse one message; EdgeProtocolError naming what was wrong."""
    try:
        d = json.loads(bytes(data))
    except (UnicodeDecodeError, ValueError) as e:
        raise EdgeProtocolError(f"not a JSON message: {e}") from None
    if not isinstance(d, dict):
        raise EdgeProtocolError("a message must be a JSON object")
    t = d.get("t")
    if t == "samples":
        return _samples(d)
    if t == "ack":
        return Ack(_seq(d.get("seq"), "ack.seq"))
    if t == "cmd":
        state = _text(d, "state", "cmd", empty=False)
        try:
            st = CommandState(state)
        except ValueError:
            raise EdgeProtocolError(f"cmd.state {state!r} is not a command state") from None
        return CommandReport(
            _text(d, "id", "cmd", empty=False),
            st,
            _text(d, "reason", "cmd"),
            _text(d, "code", "cmd"),
            _time(d.get("ts"), "cmd.ts"),
            None if "n" not in d else _seq(d["n"], "cmd.n"),
        )
    if t == "cmdack":
        return CommandAck(_seq(d.get("n"), "cmdack.n"))
    if t == "hello":
        _version(d, "hello")
        return Hello(
            _text(d, "edge", "hello", empty=False),
            _stream(d, "hello"),
            _seq(d.get("buffered"), "hello.buffered"),
            _seq(d.get("dropped"), "hello.dropped"),
        )
    if t == "welcome":
        _version(d, "welcome")
        return Welcome(_stream(d, "welcome"), _seq(d.get("acked"), "welcome.acked"))
    if t == "crl":
        text = _field(d, "der", str, "crl")
        if not 0 < len(text) <= (_MAX_CRL + 2) // 3 * 4:
            raise EdgeProtocolError(f"crl.der must be 1..{_MAX_CRL} bytes in base64")
        try:
            return CrlUpdate(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise EdgeProtocolError("crl.der is not valid base64") from None
    if t == "ping":
        return Ping(_time(d.get("ts"), "ping.ts"))
    if t == "pong":
        return Pong(_time(d.get("ts"), "pong.ts"))
    raise EdgeProtocolError(f"unknown message type {t!r}")
