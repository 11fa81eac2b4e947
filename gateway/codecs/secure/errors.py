"""Errors of the secure channel codec: local misuse, remote protocol violations, handshake refusals."""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "HandshakeError",
    "HandshakeFailure",
    "LocalProtocolError",
    "PeerRefusedHandshake",
    "RecordFormatError",
    "RemoteProtocolError",
    "SecureChannelError",
    "TooManyRefused",
]


class HandshakeFailure(IntEnum):
    """Why a handshake failed; also the alert code sent to the peer."""

    BAD_MESSAGE = 1
    UNSUPPORTED_VERSION = 2
    UNKNOWN_CA = 3
    CERT_REVOKED = 4
    CERT_EXPIRED = 5
    CERT_NOT_YET_VALID = 6
    BAD_CERTIFICATE = 7
    WRONG_ROLE = 8
    PEER_NAME_MISMATCH = 9
    KEY_CONFIRMATION_FAILED = 10
    BAD_FINISHED = 11
    STALE_HELLO = 12
    INTERNAL_ERROR = 13


class SecureChannelError(Exception):
    """Base of every error the secure channel codec raises."""


class LocalProtocolError(SecureChannelError):
    """We asked the codec for something it cannot do now (send before the handshake, after close)."""


class RemoteProtocolError(SecureChannelError):
    """The peer's bytes broke the protocol so that the connection cannot go on (fatal)."""


class RecordFormatError(RemoteProtocolError):
    """Bytes that are not a record: unknown version or a body longer than the limit."""


class TooManyRefused(RemoteProtocolError):
    """More records were refused than the connection's `max_refused` allows."""


class HandshakeError(RemoteProtocolError):
    """The handshake failed; `reason` names why, `detail` says more."""

    def __init__(self, reason: HandshakeFailure, detail: str) -> None:
        super().__init__(f"handshake failed ({reason.name.lower()}): {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[type[HandshakeError], tuple[HandshakeFailure, str]]:
        return (type(self), (self.reason, self.detail))


class PeerRefusedHandshake(HandshakeError):
    """The peer refused the handshake with an alert naming why (e.g. our certificate is revoked)."""
