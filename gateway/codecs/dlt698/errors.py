"""Errors of the DL/T 698.45 codec: what the peer sent wrong (decode), what we asked (encode).

Like h11's RemoteProtocolError / LocalProtocolError: a DecodeError names what was wrong in the
received bytes and the byte offset where decoding failed; an EncodeError names the field of a
frame or APDU we were asked to build that cannot be put on the wire.
"""

from __future__ import annotations

__all__ = [
    "ApduDecodeError",
    "DLT698Error",
    "DecodeError",
    "EncodeError",
    "FrameDecodeError",
    "ReassemblyError",
]


class DLT698Error(Exception):
    """Base of every DL/T 698.45 codec error."""


class DecodeError(DLT698Error):
    """Received bytes are not a valid DL/T 698.45 frame or APDU (a remote protocol error)."""

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(f"{what} (at byte {offset})")
        self.what = what
        self.offset = offset

    def shifted(self, by: int) -> DecodeError:
        """The same error with its offset moved by `by` (an APDU error inside a frame)."""
        err = type(self)(self.what, self.offset + by)
        err.__cause__ = self.__cause__
        return err


class FrameDecodeError(DecodeError):
    """The link layer is wrong: start or end byte, length, HCS/FCS, address or control field."""


class ApduDecodeError(DecodeError):
    """The application layer is wrong: an APDU, A-XDR datum or identifier that does not parse."""


class ReassemblyError(DecodeError):
    """Link-layer fragments that do not join into one APDU (order, type, or size bound)."""


class EncodeError(DLT698Error, ValueError):
    """A frame or APDU we were asked to build cannot be encoded (a local protocol error)."""
