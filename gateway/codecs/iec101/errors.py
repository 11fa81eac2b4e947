"""Errors of the IEC 60870-5-101 codec: one hierarchy, local (our misuse) vs remote (bad input).

Like h11: a LocalProtocolError means we were asked to build something the standard does not
allow (nothing was produced); a DecodeError means bytes from the wire are not a valid frame or
ASDU, and names what was wrong and the byte offset where decoding failed.
"""

from __future__ import annotations

__all__ = ["ASDUError", "DecodeError", "FrameError", "IEC101Error", "LocalProtocolError"]


class IEC101Error(Exception):
    """Base of every error the IEC 101 codec raises."""


class LocalProtocolError(IEC101Error, ValueError):
    """We asked for something the protocol cannot express (a value out of range, a bad state)."""


class DecodeError(IEC101Error):
    """Bytes from the peer are not valid: `what` was wrong at byte `offset` of the input."""

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(f"{what} (at byte {offset})")
        self.what = what
        self.offset = offset

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.what, self.offset))

    def shifted(self, by: int) -> DecodeError:
        """The same error with its offset moved by `by` (when the input was part of a frame)."""
        return type(self)(self.what, self.offset + by)


class FrameError(DecodeError):
    """An FT1.2 frame is malformed: start/end byte, length fields, checksum, truncation."""


class ASDUError(DecodeError):
    """An ASDU is malformed: unknown type, wrong length for its type and object count."""
