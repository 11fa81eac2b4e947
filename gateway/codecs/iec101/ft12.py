"""FT1.2 frames of IEC 60870-5-101 (IEC 60870-5-1 clause 6.2.4.2, IEC 60870-5-2 clause 5.1).

Three frame formats share one line::

    single character    E5
    fixed length        10  C  A..  CS  16
    variable length     68  L  L  68  C  A..  user data  CS  16

A is the link address, 0, 1 or 2 octets (a system parameter, least significant octet first);
L counts C, A and the user data (at most 255); CS is the arithmetic sum modulo 256 of C, A and
the user data. The control field C (IEC 60870-5-2 clause 5.1.2) carries, from the top bit down:
DIR in balanced transmission (RES, 0, in unbalanced), PRM (1 = from the primary station), then
FCB/FCV from a primary station or ACD/DFC from a secondary station, and a 4-bit function code.

`encode_frame` builds bytes, `decode_frame` takes exactly one frame (engineers' decoder, tests),
`FT12Decoder` takes a byte stream in arbitrary chunks, resynchronises after garbage, counts and
drops bad frames and never buffers more than one frame's worth of bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from gateway.codecs.iec101.errors import FrameError, LocalProtocolError

__all__ = [
    "END",
    "MAX_FRAME",
    "MAX_LENGTH",
    "SINGLE_ACK",
    "START_FIXED",
    "START_VARIABLE",
    "Control",
    "FT12Decoder",
    "FixedFrame",
    "Frame",
    "PrimaryControl",
    "PrimaryFunction",
    "SecondaryControl",
    "SecondaryFunction",
    "SingleCharacter",
    "VariableFrame",
    "decode_control",
    "decode_frame",
    "decode_frames",
    "encode_control",
    "encode_frame",
    "iter_frames",
    "max_user_data",
]

START_FIXED = 0x10
START_VARIABLE = 0x68
SINGLE_ACK = 0xE5
END = 0x16
MAX_LENGTH = 255  # IEC 60870-5-1 FT1.2: the length octet L counts at most 255 octets
MAX_FRAME = 4 + MAX_LENGTH + 2  # 68 L L 68, L octets, CS 16

_PRM = 0x40
_DIR = 0x80
_FCB_ACD = 0x20
_FCV_DFC = 0x10
_FUNCTION = 0x0F


class PrimaryFunction(IntEnum):
    """Function codes of frames from a primary (initiating) station, IEC 60870-5-2 table 1/3."""

    RESET_REMOTE_LINK = 0
    RESET_USER_PROCESS = 1
    TEST_LINK = 2  # balanced transmission only
    USER_DATA_CONFIRMED = 3
    USER_DATA_NO_REPLY = 4
    REQUEST_ACCESS_DEMAND = 8
    REQUEST_LINK_STATUS = 9
    REQUEST_CLASS_1 = 10  # unbalanced transmission only
    REQUEST_CLASS_2 = 11  # unbalanced transmission only


class SecondaryFunction(IntEnum):
    """Function codes of frames from a secondary (responding) station, IEC 60870-5-2 table 2/4."""

    ACK = 0
    NACK_BUSY = 1
    USER_DATA = 8
    NACK_NO_DATA = 9
    LINK_STATUS = 11
    LINK_NOT_FUNCTIONING = 14
    LINK_NOT_IMPLEMENTED = 15


@dataclass(frozen=True, slots=True)
class PrimaryControl:
    """Control field of a frame from a primary station (PRM = 1)."""

    function: int
    fcb: bool = False  # frame count bit: alternates per new SEND/CONFIRM or REQUEST/RESPOND
    fcv: bool = False  # frame count bit valid
    dir: bool = False  # balanced: 1 from the controlling station (A), 0 from B; RES otherwise


@dataclass(frozen=True, slots=True)
class SecondaryControl:
    """Control field of a frame from a secondary station (PRM = 0)."""

    function: int
    acd: bool = False  # access demand: class 1 data is waiting (unbalanced)
    dfc: bool = False  # data flow control: further messages may overflow the station
    dir: bool = False


Control = PrimaryControl | SecondaryControl


@dataclass(frozen=True, slots=True)
class SingleCharacter:
    """The single control character E5: ACK, or NACK (no data) in answer to a request."""


@dataclass(frozen=True, slots=True)
class FixedFrame:
    """A frame of fixed length: control field and link address, no user data."""

    control: Control
    address: int


@dataclass(frozen=True, slots=True)
class VariableFrame:
    """A frame of variable length: control field, link address and user data (an ASDU)."""

    control: Control
    address: int
    data: bytes


Frame = SingleCharacter | FixedFrame | VariableFrame

_SINGLE = SingleCharacter()


def _function(prm: bool, fc: int) -> int:
    enum = PrimaryFunction if prm else SecondaryFunction
    try:
        return enum(fc)
    except ValueError:
        return fc  # reserved codes stay plain ints; the link layer answers "not implemented"


def _control_of(c: int) -> Control:
    prm = bool(c & _PRM)
    fc = _function(prm, c & _FUNCTION)
    if prm:
        return PrimaryControl(fc, bool(c & _FCB_ACD), bool(c & _FCV_DFC), bool(c & _DIR))
    return SecondaryControl(fc, bool(c & _FCB_ACD), bool(c & _FCV_DFC), bool(c & _DIR))


# Control fields are frozen values: decode each of the 256 octets once.
_CONTROLS: tuple[Control, ...] = tuple(_control_of(c) for c in range(256))


def decode_control(c: int) -> Control:
    """The control field of an octet."""
    return _CONTROLS[c & 0xFF]


def encode_control(control: Control) -> int:
    """The octet of a control field; LocalProtocolError for a function code beyond 0..15."""
    fc = int(control.function)
    if not 0 <= fc <= 15:
        raise LocalProtocolError(f"function code {fc} is outside 0..15")
    c = fc | (_DIR if control.dir else 0)
    if isinstance(control, PrimaryControl):
        c |= _PRM | (_FCB_ACD if control.fcb else 0) | (_FCV_DFC if control.fcv else 0)
    else:
        c |= (_FCB_ACD if control.acd else 0) | (_FCV_DFC if control.dfc else 0)
    return c


def _check_address_size(address_size: int) -> None:
    if address_size not in (0, 1, 2):
        raise LocalProtocolError(f"link address size must be 0, 1 or 2 octets, not {address_size}")


def _address_bytes(address: int, address_size: int) -> bytes:
    if not 0 <= address < 1 << (8 * address_size):
        raise LocalProtocolError(
            f"link address {address} does not fit {address_size} octet(s)"
            if address_size
            else f"link address {address} given, but the link address size is 0 octets"
        )
    return address.to_bytes(address_size, "little")


def max_user_data(address_size: int) -> int:
    """Longest user data (ASDU) a variable frame carries with this link address size."""
    return MAX_LENGTH - 1 - address_size


def encode_frame(frame: Frame, address_size: int = 1) -> bytes:
    """The bytes of a frame; LocalProtocolError if it cannot be expressed."""
    _check_address_size(address_size)
    if isinstance(frame, SingleCharacter):
        return b"\xe5"
    body = bytes((encode_control(frame.control),)) + _address_bytes(frame.address, address_size)
    if isinstance(frame, FixedFrame):
        return b"\x10" + body + bytes((sum(body) & 0xFF, END))
    body += frame.data
    n = len(body)
    if n > MAX_LENGTH:
        raise LocalProtocolError(
            f"user data of {len(frame.data)} octets is too long: at most "
            f"{max_user_data(address_size)} fit a frame with {address_size}-octet link address"
        )
    return bytes((START_VARIABLE, n, n, START_VARIABLE)) + body + bytes((sum(body) & 0xFF, END))


# Frozen dataclasses refuse setattr; their slot descriptors set fields at a fraction of the
# generated __init__'s cost. Same objects as FixedFrame(...)/VariableFrame(...) (tests compare).
_new = object.__new__
_SET_FC = vars(FixedFrame)["control"].__set__
_SET_FA = vars(FixedFrame)["address"].__set__
_SET_VC = vars(VariableFrame)["control"].__set__
_SET_VA = vars(VariableFrame)["address"].__set__
_SET_VD = vars(VariableFrame)["data"].__set__


def _fixed(control: Control, address: int) -> FixedFrame:
    f: FixedFrame = _new(FixedFrame)
    _SET_FC(f, control)
    _SET_FA(f, address)
    return f


def _variable(control: Control, address: int, data: bytes) -> VariableFrame:
    f: VariableFrame = _new(VariableFrame)
    _SET_VC(f, control)
    _SET_VA(f, address)
    _SET_VD(f, data)
    return f


def _parse_at(buf: bytes | bytearray, i: int, address_size: int) -> tuple[Frame | None, int]:
    """(frame, end) of the frame starting at buf[i], (None, needed end) if incomplete.

    Raises FrameError with the offset relative to i. buf[i] must be a start octet.
    """
    start = buf[i]
    n = len(buf)
    if start == SINGLE_ACK:
        return _SINGLE, i + 1
    if start == START_FIXED:
        end = i + 4 + address_size
        if n < end:
            return None, end
        cs_at = end - 2
        c = buf[i + 1]
        if address_size == 1:
            address = buf[i + 2]
        elif address_size == 2:
            address = buf[i + 2] | buf[i + 3] << 8
        else:
            address = 0
        cs = (c + (address & 0xFF) + (address >> 8)) & 0xFF
        if buf[cs_at] != cs:
            raise FrameError(
                f"fixed frame checksum 0x{buf[cs_at]:02X} does not match the sum 0x{cs:02X}",
                cs_at - i,
            )
        if buf[end - 1] != END:
            raise FrameError(
                f"fixed frame end byte 0x{buf[end - 1]:02X}, expected 0x16", end - 1 - i
            )
        return _fixed(_CONTROLS[c], address), end
    # Variable length: 68 L L 68 first.
    if n < i + 4:
        return None, i + 4
    length = buf[i + 1]
    if buf[i + 2] != length:
        # FT1.2: the length octet is sent twice and both must agree.
        raise FrameError(f"length octets differ (L={length}, repeated L={buf[i + 2]})", 2)
    if buf[i + 3] != START_VARIABLE:
        raise FrameError(f"second start byte 0x{buf[i + 3]:02X}, expected 0x68", 3)
    if length < 1 + address_size:
        raise FrameError(
            f"length L={length} is shorter than control field and {address_size}-octet address",
            1,
        )
    end = i + 6 + length
    if n < end:
        return None, end
    body_at = i + 4
    cs_at = end - 2
    cs = sum(buf[body_at:cs_at]) & 0xFF
    if buf[cs_at] != cs:
        raise FrameError(
            f"variable frame checksum 0x{buf[cs_at]:02X} does not match the sum 0x{cs:02X}",
            cs_at - i,
        )
    if buf[end - 1] != END:
        raise FrameError(
            f"variable frame end byte 0x{buf[end - 1]:02X}, expected 0x16", end - 1 - i
        )
    data_at = body_at + 1 + address_size
    if address_size == 1:
        address = buf[body_at + 1]
    elif address_size == 2:
        address = buf[body_at + 1] | buf[body_at + 2] << 8
    else:
        address = 0
    return _variable(_CONTROLS[buf[body_at]], address, bytes(buf[data_at:cs_at])), end


def iter_frames(data: bytes | bytearray, address_size: int = 1) -> Iterator[tuple[int, Frame]]:
    """(offset, frame) of each frame of data, back to back; FrameError at the first bad byte."""
    _check_address_size(address_size)
    i, n = 0, len(data)
    while i < n:
        if data[i] not in (START_FIXED, START_VARIABLE, SINGLE_ACK):
            raise FrameError(f"start byte 0x{data[i]:02X} is not 0x10, 0x68 or 0xE5", i)
        try:
            frame, end = _parse_at(data, i, address_size)
        except FrameError as e:
            raise e.shifted(i) from None
        if frame is None:
            raise FrameError(f"truncated frame: {end - i} bytes needed, {n - i} present", n)
        yield i, frame
        i = end


def decode_frames(data: bytes | bytearray, address_size: int = 1) -> list[Frame]:
    """Every frame of data, back to back; FrameError (offset into data) at the first bad byte."""
    return [f for _, f in iter_frames(data, address_size)]


def decode_frame(data: bytes | bytearray, address_size: int = 1) -> Frame:
    """Exactly one frame; FrameError if data holds less, more or something else."""
    frames = decode_frames(data, address_size)
    if not frames:
        raise FrameError("no frame: the input is empty", 0)
    if len(frames) > 1:
        raise FrameError(
            f"{len(frames) - 1} more frame(s) after the first",
            len(encode_frame(frames[0], address_size)),
        )
    return frames[0]


class FT12Decoder:
    """Stream decoder: feed bytes in any chunks, take frames; bad frames are counted and dropped.

    Resynchronisation: at a start octet whose frame turns out bad (checksum, end byte, length
    fields), only that octet is dropped and the search for the next start octet (10, 68, E5)
    goes on from the following byte, so a good frame hidden behind garbage is still found. The
    decision at each position depends only on bytes, never on how they were chunked: fed whole
    or byte by byte, the same frames come out. After next_frame() returns None, at most one
    incomplete frame (< MAX_FRAME bytes) is buffered.
    """

    def __init__(self, address_size: int = 1, *, keep_errors: int = 16) -> None:
        _check_address_size(address_size)
        self.address_size = address_size
        self._buf = bytearray()
        self._pos = 0
        self.frames = 0  # frames decoded
        self.bad_frames = 0  # frames dropped for a FrameError
        self.garbage_bytes = 0  # bytes skipped while searching for a start octet
        self.errors: deque[FrameError] = deque(maxlen=keep_errors)  # the latest FrameErrors

    def receive_data(self, data: bytes | bytearray) -> None:
        """Append received bytes."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return len(self._buf) - self._pos

    def discard(self) -> int:
        """Drop a partial frame (e.g. after an idle line timeout); returns the bytes dropped."""
        n = self.buffered
        self.garbage_bytes += n
        self._buf.clear()
        self._pos = 0
        return n

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive."""
        buf = self._buf
        n = len(buf)
        asz = self.address_size
        while True:
            i = self._pos
            # Find a start octet.
            j = i
            while j < n and buf[j] not in (START_FIXED, START_VARIABLE, SINGLE_ACK):
                j += 1
            if j > i:
                self.garbage_bytes += j - i
                self._pos = i = j
            if i >= n:
                return None
            try:
                frame, end = _parse_at(buf, i, asz)
            except FrameError as e:
                self.bad_frames += 1
                self.errors.append(e)
                self._pos = i + 1  # drop the start octet, search again behind it
                self.garbage_bytes += 1
                continue
            if frame is None:
                return None
            self._pos = end
            self.frames += 1
            return frame

    def __iter__(self) -> FT12Decoder:
        return self

    def __next__(self) -> Frame:
        f = self.next_frame()
        if f is None:
            raise StopIteration
        return f
