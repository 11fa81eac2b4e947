"""The DL/T 698.45 link layer: `68 L L C AF SA CA HCS APDU FCS 16`, fragments, stream decoding.

DL/T 698.45-2017 clause 5 (链路层):
- L (2 bytes, least significant first): bits 0-13 the number of bytes from L to FCS inclusive
  (start 68H and end 16H excluded); bit 14 the length unit (1 = kilobytes, refused here), bit 15
  reserved.
- C: bit 7 DIR (0 sent by the client, 1 by the server), bit 6 PRM (with DIR: 01 client request,
  11 server response, 10 server-initiated report, 00 client response to a report), bit 5 the
  fragmentation flag, bit 4 reserved, bit 3 SC (user data scrambled: each byte +33H on the wire),
  bits 0-2 the function code (1 link management, 3 user data).
- AF: bits 6-7 address type (0 single, 1 wildcard, 2 group, 3 broadcast), bits 4-5 the logical
  address, bits 0-3 the address length - 1; then SA (1-16 bytes, least significant first) and
  the client address CA (1 byte).
- HCS: CRC-16/X.25 over L..CA; FCS: CRC-16/X.25 over L..the end of the user data.
- A fragmented frame's user data starts with the fragment format word (2 bytes, least
  significant first): bits 0-11 the fragment sequence number (0-4095, cyclic), bits 14-15 the
  type: 0 first, 1 last, 2 confirmation (acknowledgement), 3 middle.

Theory of operation (FrameDecoder): bytes accumulate in a buffer bounded by the largest frame.
next_event() skips to a 68H, waits for the header, and only trusts a candidate whose length is
plausible and whose HCS matches; anything else is garbage and dropped one byte at a time, so the
decoder resynchronises on the next real frame. A candidate with a good HCS is a frame: it is
awaited in full, then its FCS, end byte and fields are checked; a bad one is counted, reported as
BadFrame and dropped (one byte, since a real frame may start inside it). Nothing is half-applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from gateway.codecs.dlt698.crc import crc16
from gateway.codecs.dlt698.errors import EncodeError, FrameDecodeError, ReassemblyError

__all__ = [
    "BROADCAST",
    "MAX_FRAME",
    "NEED_DATA",
    "AddressType",
    "BadFrame",
    "Direction",
    "Fragment",
    "FragmentType",
    "Frame",
    "FrameDecoder",
    "NeedData",
    "Reassembler",
    "ServerAddress",
    "decode_frame",
    "encode_frame",
    "split_apdu",
]

START: Final = 0x68
END: Final = 0x16
MAX_FRAME: Final = 0x3FFF + 2  # L is 14 bits; the start and end bytes are outside L
FUNC_LINK: Final = 1
FUNC_USER_DATA: Final = 3


class AddressType(IntEnum):
    """Server address types (AF bits 6-7)."""

    SINGLE = 0
    WILDCARD = 1
    GROUP = 2
    BROADCAST = 3


class Direction(IntEnum):
    """Who sent a frame (C bit 7)."""

    CLIENT = 0
    SERVER = 1


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """SA: address bytes as on the wire (least significant first), type, logical address."""

    address: bytes
    type: AddressType = AddressType.SINGLE
    logical: int = 0

    def __post_init__(self) -> None:
        if not 1 <= len(self.address) <= 16:
            raise EncodeError(f"server address must have 1..16 bytes, not {len(self.address)}")
        if not 0 <= self.logical <= 3:
            raise EncodeError(f"logical address {self.logical} is not 0..3")

    @classmethod
    def from_text(
        cls, text: str, type: AddressType = AddressType.SINGLE, logical: int = 0
    ) -> ServerAddress:
        """From the address as printed on a meter (most significant digits first), e.g.
        "000000000001"; wildcard digits are "A"."""
        text = text.replace(" ", "")
        if len(text) % 2:
            text = "0" + text
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise EncodeError(f"{text!r} is not a hex/BCD address") from None
        return cls(raw[::-1], type, logical)

    @property
    def text(self) -> str:
        """The address as printed on a meter, most significant digits first."""
        return self.address[::-1].hex().upper()

    def matches(self, meter: bytes) -> bool:
        """Whether a meter with wire-order address `meter` is addressed by this SA."""
        if self.type == AddressType.BROADCAST:
            return True
        if self.type == AddressType.GROUP or len(meter) != len(self.address):
            return False
        if self.type == AddressType.SINGLE:
            return meter == self.address
        # Wildcard: a nibble AH in the request matches any digit of the meter's address.
        for a, m in zip(self.address, meter, strict=True):
            if (a & 0xF0) != 0xA0 and (a & 0xF0) != (m & 0xF0):
                return False
            if (a & 0x0F) != 0x0A and (a & 0x0F) != (m & 0x0F):
                return False
        return True

    def encode(self) -> bytes:
        """AF and SA bytes."""
        af = int(self.type) << 6 | self.logical << 4 | (len(self.address) - 1)
        return bytes((af,)) + self.address


# The broadcast server address (DL/T 698.45-2017 5.2.2: broadcast address AAH).
BROADCAST = ServerAddress(b"\xaa", AddressType.BROADCAST)


class FragmentType(IntEnum):
    """Fragment format word bits 14-15."""

    FIRST = 0
    LAST = 1
    ACK = 2
    MIDDLE = 3


@dataclass(frozen=True, slots=True)
class Fragment:
    """The fragment format word of a fragmented frame."""

    seq: int
    type: FragmentType

    def __post_init__(self) -> None:
        if not 0 <= self.seq <= 0x0FFF:
            raise EncodeError(f"fragment sequence number {self.seq} is not 0..4095")

    def encode(self) -> bytes:
        """The two bytes of the format word, least significant first."""
        return (int(self.type) << 14 | self.seq).to_bytes(2, "little")


@dataclass(frozen=True, slots=True)
class Frame:
    """One link-layer frame; `payload` is the (unscrambled) APDU or APDU fragment."""

    server: ServerAddress
    client: int
    payload: bytes
    direction: Direction = Direction.CLIENT
    prm: int = 1
    function: int = FUNC_USER_DATA
    scrambled: bool = False
    fragment: Fragment | None = None

    @property
    def control(self) -> int:
        """The C byte."""
        return (
            int(self.direction) << 7
            | (self.prm & 1) << 6
            | (0x20 if self.fragment is not None else 0)
            | (0x08 if self.scrambled else 0)
            | self.function
        )

    @property
    def role(self) -> str:
        """What the frame is by DIR/PRM: request, response, report or report-response."""
        return _ROLES[(int(self.direction), self.prm & 1)]


_ROLES = {(0, 1): "request", (1, 1): "response", (1, 0): "report", (0, 0): "report-response"}


def _le16(b: bytes | bytearray, i: int) -> int:
    return b[i] | b[i + 1] << 8


def encode_frame(f: Frame) -> bytes:
    """The bytes of a frame."""
    if not 0 <= f.client <= 255:
        raise EncodeError(f"client address {f.client} is not 0..255")
    if f.function not in (FUNC_LINK, FUNC_USER_DATA):
        raise EncodeError(f"function code {f.function} is reserved (1 link, 3 user data)")
    if f.prm not in (0, 1):
        raise EncodeError(f"PRM must be 0 or 1, not {f.prm}")
    user = f.payload if f.fragment is None else f.fragment.encode() + f.payload
    if f.fragment is None and not user:
        raise EncodeError("an unfragmented frame needs an APDU")
    if f.scrambled:
        user = bytes((b + 0x33) & 0xFF for b in user)
    head = bytearray(4)
    head[3] = f.control
    head += f.server.encode()
    head.append(f.client)
    length = len(head) - 1 + 2 + len(user) + 2  # L..CA, HCS, user data, FCS
    if length > 0x3FFF:
        raise EncodeError(f"frame of {length + 2} bytes exceeds the 14-bit length field")
    head[0] = START
    head[1:3] = length.to_bytes(2, "little")
    out = head
    out += crc16(head[1:]).to_bytes(2, "little")
    out += user
    out += crc16(out[1:]).to_bytes(2, "little")
    out.append(END)
    return bytes(out)


def decode_frame(buf: bytes, _hcs_checked: bool = False) -> Frame:
    """Exactly one frame filling buf (68H .. 16H); FrameDecodeError naming what and where."""
    n = len(buf)
    if n < 1 or buf[0] != START:
        raise FrameDecodeError(f"start byte is {buf[0]:02X}H, not 68H" if n else "empty", 0)
    if n < 5:
        raise FrameDecodeError(f"truncated header: {n} bytes", n)
    raw_len = _le16(buf, 1)
    if raw_len & 0x8000:
        raise FrameDecodeError("length field: reserved bit 15 is set", 2)
    if raw_len & 0x4000:
        raise FrameDecodeError("length field: kilobyte length unit is not supported", 2)
    if raw_len + 2 != n:
        raise FrameDecodeError(f"length field says {raw_len + 2} bytes, frame has {n}", 1)
    c = buf[3]
    if c & 0x10:
        raise FrameDecodeError(f"control field {c:02X}H: reserved bit 4 is set", 3)
    function = c & 0x07
    if function not in (FUNC_LINK, FUNC_USER_DATA):
        raise FrameDecodeError(f"control field {c:02X}H: function code {function} is reserved", 3)
    af = buf[4]
    sa_len = (af & 0x0F) + 1
    ca_at = 5 + sa_len
    hcs_at = ca_at + 1
    user_at = hcs_at + 2
    if n < user_at + 2 + 1:
        raise FrameDecodeError(f"frame too short for a {sa_len}-byte server address", n)
    if not _hcs_checked:
        hcs = _le16(buf, hcs_at)
        want = crc16(buf[1:hcs_at])
        if hcs != want:
            raise FrameDecodeError(f"HCS is {hcs:04X}H, computed {want:04X}H", hcs_at)
    fcs_at = n - 3
    fcs = _le16(buf, fcs_at)
    want = crc16(buf[1:fcs_at])
    if fcs != want:
        raise FrameDecodeError(f"FCS is {fcs:04X}H, computed {want:04X}H", fcs_at)
    if buf[-1] != END:
        raise FrameDecodeError(f"end byte is {buf[-1]:02X}H, not 16H", n - 1)
    user = bytes(buf[user_at:fcs_at])
    scrambled = bool(c & 0x08)
    if scrambled:
        user = bytes((b - 0x33) & 0xFF for b in user)
    fragment = None
    if c & 0x20:
        if len(user) < 2:
            raise FrameDecodeError("fragmented frame without a fragment format word", user_at)
        word = user[0] | user[1] << 8
        if word & 0x3000:
            raise FrameDecodeError(f"fragment format word {word:04X}H: reserved bits", user_at)
        fragment = Fragment(word & 0x0FFF, FragmentType(word >> 14))
        user = user[2:]
        if fragment.type == FragmentType.ACK and user:
            raise FrameDecodeError("a fragment confirmation carries no data", user_at + 2)
        if fragment.type != FragmentType.ACK and not user:
            raise FrameDecodeError("an empty data fragment", user_at + 2)
    elif not user:
        raise FrameDecodeError("frame without an APDU", user_at)
    return Frame(
        server=_server(bytes(buf[4:ca_at])),
        client=buf[ca_at],
        payload=user,
        direction=Direction(c >> 7),
        prm=(c >> 6) & 1,
        function=function,
        scrambled=scrambled,
        fragment=fragment,
    )


_SERVERS: dict[bytes, ServerAddress] = {}


def _server(af_sa: bytes) -> ServerAddress:
    """The ServerAddress of AF+SA bytes, shared (a bus has few meters; bounded cache)."""
    s = _SERVERS.get(af_sa)
    if s is None:
        if len(_SERVERS) >= 1024:
            _SERVERS.clear()
        af = af_sa[0]
        s = _SERVERS[af_sa] = ServerAddress(af_sa[1:], AddressType(af >> 6), (af >> 4) & 0x03)
    return s


# --- stream decoding ----------------------------------------------------------------------


class NeedData:
    """Sentinel type: next_event() needs more bytes."""

    _instance: NeedData | None = None

    def __new__(cls) -> NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame with a good header whose body failed its checks; it was counted and dropped."""

    error: FrameDecodeError
    raw: bytes  # the first bytes of what was dropped, for logs


# Smallest frame: 68 L L C AF SA(1) CA HCS(2) APDU(1) FCS(2) 16.
_MIN_FRAME = 13


@dataclass
class FrameDecoder:
    """Incremental frame decoder: receive_data(), then next_event() until NEED_DATA."""

    max_frame: int = MAX_FRAME
    frames: int = 0
    bad_frames: int = 0
    garbage_bytes: int = 0
    last_error: FrameDecodeError | None = None
    _buf: bytearray = field(default_factory=bytearray, repr=False)

    def receive_data(self, data: bytes) -> None:
        """Add received bytes (nothing is decoded until next_event())."""
        if not self._buf and START not in data:
            # Pure garbage (or preamble) never needs buffering: memory stays bounded.
            self.garbage_bytes += len(data) - data.count(0xFE)
            return
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held, waiting for the rest of a frame."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget a partial frame (e.g. after a link reconnect)."""
        self._buf.clear()

    def _skip(self, n: int) -> None:
        dropped = self._buf[:n]
        self.garbage_bytes += n - dropped.count(0xFE)  # FEH wake-up preamble is not garbage
        del self._buf[:n]

    def next_event(self) -> Frame | BadFrame | NeedData:
        """The next frame, a BadFrame (counted and dropped), or NEED_DATA."""
        buf = self._buf
        while True:
            i = buf.find(START)
            if i < 0:
                self._skip(len(buf))
                return NEED_DATA
            if i:
                self._skip(i)
            if len(buf) < 5:
                return NEED_DATA
            raw_len = _le16(buf, 1)
            total = (raw_len & 0x3FFF) + 2
            sa_len = (buf[4] & 0x0F) + 1
            hcs_at = 6 + sa_len
            if raw_len & 0xC000 or total > self.max_frame or total < _MIN_FRAME + sa_len - 1:
                self._skip(1)
                continue
            if len(buf) < hcs_at + 2:
                return NEED_DATA
            if _le16(buf, hcs_at) != crc16(buf[1:hcs_at]):
                self._skip(1)
                continue
            if len(buf) < total:
                return NEED_DATA
            raw = bytes(buf[:total])
            try:
                frame = decode_frame(raw, _hcs_checked=True)
            except FrameDecodeError as e:
                self.bad_frames += 1
                self.last_error = e
                del buf[:1]
                return BadFrame(e, raw[:64])
            del buf[:total]
            self.frames += 1
            return frame


# --- fragmentation ------------------------------------------------------------------------


def split_apdu(apdu: bytes, max_fragment: int) -> list[tuple[Fragment, bytes]]:
    """Cut an APDU into fragments of at most max_fragment bytes, sequence numbers from 0."""
    if max_fragment < 1:
        raise EncodeError("fragments must carry at least one byte")
    parts = [apdu[i : i + max_fragment] for i in range(0, len(apdu), max_fragment)]
    if len(parts) < 2:
        raise EncodeError("an APDU that fits one frame is not fragmented")
    out = []
    for n, part in enumerate(parts):
        t = (
            FragmentType.FIRST
            if n == 0
            else FragmentType.LAST
            if n == len(parts) - 1
            else FragmentType.MIDDLE
        )
        out.append((Fragment(n % 4096, t), part))
    return out


@dataclass
class Reassembler:
    """Joins the fragments of one peer into an APDU, refusing more than max_apdu bytes."""

    max_apdu: int = 65536
    _parts: bytearray = field(default_factory=bytearray, repr=False)
    _next: int | None = None  # expected sequence number, None when idle

    @property
    def active(self) -> bool:
        """True between a first fragment and the last."""
        return self._next is not None

    def reset(self) -> None:
        """Drop a partial APDU."""
        self._parts.clear()
        self._next = None

    def feed(self, frame: Frame) -> bytes | None:
        """Take a data fragment; the whole APDU at the last one, else None.

        ReassemblyError (and the partial APDU dropped) on a fragment out of order, a middle or
        last fragment without a first, or an APDU growing past max_apdu.
        """
        frag = frame.fragment
        if frag is None or frag.type == FragmentType.ACK:
            raise ReassemblyError("not a data fragment", 0)
        if frag.type == FragmentType.FIRST:
            if self._next is not None:
                self.reset()  # a new transfer replaces an unfinished one
            self._next = frag.seq
        elif self._next is None:
            raise ReassemblyError(
                f"{frag.type.name.lower()} fragment {frag.seq} without a first", 0
            )
        if frag.seq != self._next:
            want = self._next
            self.reset()
            raise ReassemblyError(f"fragment {frag.seq} out of order (expected {want})", 0)
        if len(self._parts) + len(frame.payload) > self.max_apdu:
            self.reset()
            raise ReassemblyError(f"reassembled APDU exceeds {self.max_apdu} bytes", 0)
        self._parts += frame.payload
        self._next = (frag.seq + 1) % 4096
        if frag.type != FragmentType.LAST:
            return None
        apdu = bytes(self._parts)
        self.reset()
        return apdu
