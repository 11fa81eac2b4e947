"""Handshake messages and alerts: their byte layouts, encode() and decode().

    ClientHello    01 | version u8 | random 32 | time ms u64 | R_A 65 | u16 n | certificate DER n
    ServerHello    02 | version u8 | random 32 | time ms u64 | R_B 65 | u16 n | certificate DER n
                      | S_B 32 | server finished 32
    ClientFinished 03 | S_A 32 | client finished 32
    Alert             code u8 | u16 n | UTF-8 text n     (code 0 = close, else HandshakeFailure)

R_A / R_B are the SM2 key-exchange ephemeral points (04 || x || y); S_B / S_A the key
confirmations of GB/T 32918.3 6.1; the finished values are HMAC-SM3 over the transcript.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.codecs.secure.errors import HandshakeError, HandshakeFailure

__all__ = [
    "CLOSE_NOTIFY",
    "Alert",
    "ClientFinished",
    "ClientHello",
    "HandshakeMessage",
    "ServerHello",
    "decode_alert",
    "decode_handshake",
]

CLOSE_NOTIFY = 0
_POINT = 65
_HASH = 32


@dataclass(frozen=True, slots=True)
class ClientHello:
    """The client's opening: its ephemeral point and certificate."""

    version: int
    random: bytes
    time_ms: int
    ephemeral: bytes
    certificate: bytes

    def encode(self) -> bytes:
        """Wire bytes."""
        return (
            bytes([1, self.version])
            + self.random
            + self.time_ms.to_bytes(8, "big")
            + self.ephemeral
            + len(self.certificate).to_bytes(2, "big")
            + self.certificate
        )


@dataclass(frozen=True, slots=True)
class ServerHello:
    """The server's answer: its point, certificate, key confirmation S_B and finished MAC."""

    version: int
    random: bytes
    time_ms: int
    ephemeral: bytes
    certificate: bytes
    confirmation: bytes
    finished: bytes

    def core(self) -> bytes:
        """The part that enters the transcript hash (everything before S_B)."""
        return (
            bytes([2, self.version])
            + self.random
            + self.time_ms.to_bytes(8, "big")
            + self.ephemeral
            + len(self.certificate).to_bytes(2, "big")
            + self.certificate
        )

    def encode(self) -> bytes:
        """Wire bytes."""
        return self.core() + self.confirmation + self.finished


@dataclass(frozen=True, slots=True)
class ClientFinished:
    """The client's key confirmation S_A and finished MAC."""

    confirmation: bytes
    finished: bytes

    def encode(self) -> bytes:
        """Wire bytes."""
        return b"\x03" + self.confirmation + self.finished


HandshakeMessage = ClientHello | ServerHello | ClientFinished


@dataclass(frozen=True, slots=True)
class Alert:
    """A closing or refusing notice: `code` 0 is a clean close, else a HandshakeFailure value."""

    code: int
    text: str = ""

    def encode(self) -> bytes:
        """Wire bytes."""
        t = self.text.encode()[:1000]
        return bytes([self.code]) + len(t).to_bytes(2, "big") + t


def _bad(what: str) -> HandshakeError:
    return HandshakeError(HandshakeFailure.BAD_MESSAGE, what)


def _hello_fields(data: bytes, name: str) -> tuple[int, bytes, int, bytes, bytes, int]:
    # type(1) version(1) random(32) time(8) point(65) certlen(2)
    head = 2 + 32 + 8 + _POINT + 2
    if len(data) < head:
        raise _bad(f"{name} truncated ({len(data)} bytes)")
    version = data[1]
    random = data[2:34]
    time_ms = int.from_bytes(data[34:42], "big")
    point = data[42 : 42 + _POINT]
    n = int.from_bytes(data[head - 2 : head], "big")
    cert = data[head : head + n]
    if len(cert) != n:
        raise _bad(f"{name} certificate truncated")
    return version, random, time_ms, point, cert, head + n


def decode_handshake(data: bytes) -> HandshakeMessage:
    """One handshake message from a record body; HandshakeError(BAD_MESSAGE) if malformed."""
    data = bytes(data)
    if not data:
        raise _bad("empty handshake message")
    kind = data[0]
    if kind == 1:
        version, random, time_ms, point, cert, end = _hello_fields(data, "ClientHello")
        if end != len(data):
            raise _bad(f"{len(data) - end} bytes after ClientHello")
        return ClientHello(version, random, time_ms, point, cert)
    if kind == 2:
        version, random, time_ms, point, cert, end = _hello_fields(data, "ServerHello")
        if len(data) != end + 2 * _HASH:
            raise _bad("ServerHello confirmation and finished must be 32 bytes each")
        return ServerHello(
            version, random, time_ms, point, cert, data[end : end + _HASH], data[end + _HASH :]
        )
    if kind == 3:
        if len(data) != 1 + 2 * _HASH:
            raise _bad("ClientFinished must be 65 bytes")
        return ClientFinished(data[1 : 1 + _HASH], data[1 + _HASH :])
    raise _bad(f"unknown handshake message type {kind}")


def decode_alert(data: bytes) -> Alert:
    """An alert from a record body; HandshakeError(BAD_MESSAGE) if malformed."""
    data = bytes(data)
    if len(data) < 3:
        raise _bad("alert truncated")
    n = int.from_bytes(data[1:3], "big")
    if len(data) != 3 + n:
        raise _bad("alert length does not match")
    return Alert(data[0], data[3:].decode("utf-8", "replace"))
