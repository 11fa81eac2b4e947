"""The DL/T 645-2007 link frame: `68 A0..A5 68 C L DATA CS 16`, and a resynchronising stream decoder.

DL/T 645-2007 4.3 (frame format), as enforced here:
- "帧起始符 68H" twice: before and after the six address bytes.
- "地址域 A0~A5 ... 每字节 2 位 BCD 码 ... 低地址在先": BCD address, A0 first; AAH is a wildcard.
- "控制码 C": D7 direction (1 = from the meter), D6 abnormal answer, D5 follow-up frame exists,
  D4..D0 function code.
- "数据域长度 L ... 读数据时 L≤200, 写数据时 L≤50": one byte; we accept up to 255 on receive.
- "数据域 ... 发送方按字节进行加 33H 处理, 接收方按字节进行减 33H 处理": +0x33 on the wire.
- "校验码 CS: 从第一个帧起始符开始到校验码之前的所有各字节的模 256 的和".
- "结束符 16H".
- 4.2/6: "在发送帧信息之前, 先发送 1~4 个字节 FEH" wake-up preamble, skipped on receive.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.codecs.dlt645.bcd import decode_address, encode_address
from gateway.codecs.dlt645.errors import DecodeError, LocalProtocolError

__all__ = [
    "END",
    "MAX_DATA",
    "MAX_FRAME",
    "PREAMBLE",
    "START",
    "Frame",
    "FrameDecoder",
    "encode_frame",
    "parse_frame",
    "wire_time",
]

START = 0x68
END = 0x16
PREAMBLE = 0xFE
OFFSET = 0x33
HEADER = 10  # 68 A0..A5 68 C L
MAX_DATA = 255
MAX_FRAME = HEADER + MAX_DATA + 2

DIR_UP = 0x80  # D7: sent by the meter (slave)
ABNORMAL = 0x40  # D6: abnormal answer
MORE = 0x20  # D5: follow-up frames exist
FUNCTION = 0x1F  # D4..D0

_ADD33 = bytes((b + OFFSET) & 0xFF for b in range(256))
_SUB33 = bytes((b - OFFSET) & 0xFF for b in range(256))


@dataclass(frozen=True, slots=True)
class Frame:
    """One link frame; `data` is the data field as meant (the +33H already removed)."""

    address: str
    control: int
    data: bytes = b""

    @property
    def from_meter(self) -> bool:
        """D7: the frame is a meter's answer."""
        return bool(self.control & DIR_UP)

    @property
    def abnormal(self) -> bool:
        """D6: the meter answers with an error word."""
        return bool(self.control & ABNORMAL)

    @property
    def more(self) -> bool:
        """D5: follow-up frames exist."""
        return bool(self.control & MORE)

    @property
    def function(self) -> int:
        """D4..D0: the function code."""
        return self.control & FUNCTION


def encode_frame(address: str, control: int, data: bytes = b"", preamble: int = 0) -> bytes:
    """Wire bytes of a frame: optional FE preamble, header, data +33H, checksum, 16H."""
    if not 0 <= control <= 0xFF:
        raise LocalProtocolError(f"control code {control} does not fit one byte")
    if len(data) > MAX_DATA:
        raise LocalProtocolError(f"data field of {len(data)} bytes exceeds {MAX_DATA}")
    if not 0 <= preamble <= 16:
        raise LocalProtocolError(f"preamble of {preamble} FE bytes (0..16 allowed)")
    body = bytearray((START,))
    body += encode_address(address)
    body += bytes((START, control, len(data)))
    body += data.translate(_ADD33)
    body.append(sum(body) & 0xFF)
    body.append(END)
    return bytes((PREAMBLE,)) * preamble + bytes(body)


def parse_frame(buf: bytes, base: int = 0) -> tuple[Frame, int]:
    """Decode one frame at the start of buf (after any FE preamble); (frame, bytes used).

    DecodeError names what was wrong and its offset (base + index into buf).
    """
    i = 0
    n = len(buf)
    while i < n and buf[i] == PREAMBLE:
        i += 1
    if i >= n:
        raise DecodeError("no frame: input is empty or only FE preamble", base + i)
    if buf[i] != START:
        raise DecodeError(f"expected start byte 68H, got 0x{buf[i]:02X}", base + i)
    if n - i < HEADER:
        raise DecodeError(f"truncated header: {n - i} of 10 bytes", base + n)
    if buf[i + 7] != START:
        raise DecodeError(f"expected second start byte 68H, got 0x{buf[i + 7]:02X}", base + i + 7)
    length = buf[i + 9]
    total = HEADER + length + 2
    if n - i < total:
        raise DecodeError(
            f"truncated frame: L={length} needs {total} bytes, have {n - i}", base + n
        )
    return _checked(buf, i, length, base), i + total


def _checked(buf: bytes | bytearray, i: int, length: int, base: int) -> Frame:
    """Verify checksum, end byte and address of the complete frame at buf[i:]."""
    cs_at = i + HEADER + length
    cs = sum(buf[i:cs_at]) & 0xFF
    if buf[cs_at] != cs:
        raise DecodeError(
            f"checksum mismatch: frame says 0x{buf[cs_at]:02X}, bytes sum to 0x{cs:02X}",
            base + cs_at,
        )
    if buf[cs_at + 1] != END:
        raise DecodeError(f"expected end byte 16H, got 0x{buf[cs_at + 1]:02X}", base + cs_at + 1)
    address = decode_address(bytes(buf[i + 1 : i + 7]), base + i + 1)
    data = bytes(buf[i + HEADER : cs_at]).translate(_SUB33)
    return Frame(address, buf[i + 8], data)


def wire_time(n_bytes: int, baudrate: int, bits_per_byte: int = 11) -> float:
    """Seconds n_bytes take on a serial line: start + 8 data + parity + stop = 11 bits (8E1)."""
    return n_bytes * bits_per_byte / baudrate


class FrameDecoder:
    """Bytes in, Frames out; resynchronises after garbage, counts and drops bad frames.

    Theory of operation: the buffer is scanned for 68H. A candidate needs 68H again 7 bytes on
    (otherwise the first byte is garbage and dropped). With the header in, L tells how many
    bytes the frame takes; the decoder waits for them (at most 267), then checks the checksum,
    the end byte and the BCD address. A failing candidate raises DecodeError once and only its
    first byte is dropped, so a real frame that began inside it is still found. FE bytes before
    a frame are the wake-up preamble, not garbage. The buffer never holds more than
    `max_buffer` bytes: the oldest are dropped (counted as discarded) if a caller feeds faster
    than it reads.
    """

    def __init__(self, max_buffer: int = 65536) -> None:
        if max_buffer < MAX_FRAME + 4:
            raise LocalProtocolError(f"max_buffer must hold one whole frame ({MAX_FRAME + 4})")
        self.max_buffer = max_buffer
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]
        self.frames = 0
        self.bad_frames = 0
        self.discarded = 0
        self.preamble_bytes = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded."""
        return len(self._buf)

    @property
    def offset(self) -> int:
        """Stream offset of the next byte to decode."""
        return self._base

    def receive_data(self, data: bytes) -> None:
        """Add received bytes."""
        self._buf += data
        excess = len(self._buf) - self.max_buffer
        if excess > 0:
            del self._buf[:excess]
            self._base += excess
            self.discarded += excess

    def clear(self) -> int:
        """Drop everything buffered (e.g. before a new request on a bus); return the count."""
        n = len(self._buf)
        self._base += n
        self.discarded += n
        self._buf.clear()
        return n

    def _drop(self, n: int, garbage: bool = True) -> None:
        buf = self._buf
        if garbage:
            fe = buf.count(PREAMBLE, 0, n)
            self.preamble_bytes += fe
            self.discarded += n - fe
        del buf[:n]
        self._base += n

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive.

        Raises DecodeError for a bad frame (already counted and dropped); call again to go on.
        """
        buf = self._buf
        while True:
            i = buf.find(START)
            if i < 0:
                self._drop(len(buf))
                return None
            if i:
                self._drop(i)
            if len(buf) < HEADER:
                return None
            if buf[7] != START:
                self._drop(1)
                continue
            length = buf[9]
            total = HEADER + length + 2
            if len(buf) < total:
                return None
            try:
                frame = _checked(buf, 0, length, self._base)
            except DecodeError:
                self.bad_frames += 1
                self._drop(1)
                raise
            self._drop(total, garbage=False)
            self.frames += 1
            return frame
