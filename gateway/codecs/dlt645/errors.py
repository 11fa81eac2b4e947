"""Errors of the DL/T 645 codec: remote (bytes from the wire) versus local (our own misuse)."""

from __future__ import annotations

__all__ = ["DLT645Error", "DecodeError", "LocalProtocolError", "ValueFormatError"]


class DLT645Error(Exception):
    """Base of every error the DL/T 645 codec raises."""


class DecodeError(DLT645Error, ValueError):
    """Remote protocol error: bytes that are not a valid frame; names what and the byte offset.

    `offset` counts from the start of the bytes given to the decoder (for a stream decoder, from
    the first byte it ever received), so an engineer can find the byte in a sniffer log.
    """

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(f"{what} (at byte {offset})")
        self.what = what
        self.offset = offset

    def __reduce__(self) -> tuple[type[DecodeError], tuple[str, int]]:
        return (type(self), (self.what, self.offset))


class ValueFormatError(DecodeError):
    """A data field whose bytes do not fit the data item's format (e.g. a non-BCD digit)."""


class LocalProtocolError(DLT645Error, ValueError):
    """We were asked to build something the protocol cannot carry (bad address, value too big)."""
