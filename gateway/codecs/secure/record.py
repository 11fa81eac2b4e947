"""The record layer's framing: a 24-byte header (also the AEAD's additional data) and a body.

    offset size field
    0      1    version (1)
    1      1    content type (ContentType)
    2      2    key epoch (0: handshake, plaintext)
    4      8    sequence number (per direction, never reset)
    12     8    timestamp: sender's clock, milliseconds since the Unix epoch (UTC)
    20     4    body length
    24     n    body: plaintext (epoch 0) or SM4-GCM ciphertext || 16-byte tag

All integers are big endian. The framing itself is not authenticated (nothing can be before the
keys exist), but every field of a protected record's header is in the AEAD's additional data.
A version other than 1 or a body over the limit cannot be framed past: RecordFormatError, fatal.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from gateway.codecs.secure.errors import RecordFormatError

__all__ = [
    "DEFAULT_MAX_BODY",
    "HEADER_SIZE",
    "VERSION",
    "ContentType",
    "Record",
    "RecordDecoder",
    "encode_record",
    "pack_header",
]

VERSION = 1
HEADER_SIZE = 24
DEFAULT_MAX_BODY = (1 << 20) + 16
_HEADER = struct.Struct(">BBHQQI")


class ContentType(IntEnum):
    """What a record carries."""

    HANDSHAKE = 1
    ALERT = 2
    DATA = 3
    COMMAND = 4
    KEY_UPDATE = 5


@dataclass(frozen=True, slots=True)
class Record:
    """One record: header fields and body bytes (`type` is the raw byte; see ContentType)."""

    type: int
    epoch: int
    seq: int
    timestamp_ms: int
    body: bytes
    version: int = VERSION

    def header(self) -> bytes:
        """The 24 header bytes (the AEAD additional data of a protected record)."""
        return _HEADER.pack(
            self.version, self.type, self.epoch, self.seq, self.timestamp_ms, len(self.body)
        )


def pack_header(ctype: int, epoch: int, seq: int, timestamp_ms: int, length: int) -> bytes:
    """The 24 header bytes of a version-1 record."""
    return _HEADER.pack(VERSION, ctype, epoch, seq, timestamp_ms, length)


def encode_record(record: Record) -> bytes:
    """Header || body."""
    return record.header() + record.body


class RecordDecoder:
    """Bytes in (any split), records out; RecordFormatError when the stream cannot be framed."""

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self.offset = 0
        """Stream offset of the first byte not yet consumed (for error messages)."""

    def receive_data(self, data: bytes) -> None:
        """Add received bytes."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed."""
        return len(self._buf)

    def next_record(self) -> Record | None:
        """The next whole record, or None if more bytes are needed."""
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            return None
        version, ctype, epoch, seq, ts, length = _HEADER.unpack_from(buf)
        if version != VERSION:
            raise RecordFormatError(
                f"record version {version} at stream offset {self.offset}; expected {VERSION}"
            )
        if length > self.max_body:
            raise RecordFormatError(
                f"record body of {length} bytes at stream offset {self.offset} exceeds the "
                f"limit of {self.max_body}"
            )
        end = HEADER_SIZE + length
        if len(buf) < end:
            return None
        body = bytes(buf[HEADER_SIZE:end])
        del buf[:end]
        self.offset += end
        return Record(ctype, epoch, seq, ts, body, version)
