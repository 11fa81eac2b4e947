"""The closed set of events a SecureConnection yields, and the NEED_DATA sentinel."""

from __future__ import annotations

from dataclasses import dataclass

from model.command import Command
from security.command_signing import SignedCommand
from security.identity import Certificate

__all__ = [
    "NEED_DATA",
    "CommandReceived",
    "ConnectionClosed",
    "DataReceived",
    "Event",
    "HandshakeComplete",
    "KeyUpdated",
    "NeedData",
]


class NeedData:
    """Sentinel: no complete event yet, feed more bytes."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = NeedData()


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """Both sides are authenticated; `peer` is the peer's validated certificate."""

    peer: Certificate


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Authenticated, decrypted, fresh application bytes."""

    data: bytes
    sequence: int


@dataclass(frozen=True, slots=True)
class CommandReceived:
    """A command that passed the channel and the CommandVerifier (signature, proof, freshness)."""

    command: Command
    signed: SignedCommand
    sequence: int


@dataclass(frozen=True, slots=True)
class KeyUpdated:
    """The peer moved its sending keys to `epoch` (periodic re-keying)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed: `clean` if it said so (close alert), not if the stream just ended."""

    clean: bool
    reason: str = ""


Event = HandshakeComplete | DataReceived | CommandReceived | KeyUpdated | ConnectionClosed
