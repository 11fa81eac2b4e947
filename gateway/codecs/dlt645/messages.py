"""DL/T 645-2007 application frames as a closed set of frozen events, with encode() and decode().

Each request a master (the gateway, 主站) sends and each answer a meter (从站) gives is one
frozen dataclass. `to_frame`/`to_event` map them to link Frames (frame.py); `encode`/`decode`
go all the way to and from wire bytes. DL/T 645-2007 clause 7 (application layer), as laid out
here ("DATA" after removing 33H; multi-byte fields least significant byte first):

| C    | request (主站)                                   | normal answer (从站)           |
|------|--------------------------------------------------|-------------------------------|
| 08   | time sync: ssmmhhDDMMYY, broadcast, no answer    | -                             |
| 11   | read data: DI0..DI3 [+ N / N + mmhhDDMMYY]       | 91/B1: DI + data              |
| 12   | read follow-up: DI + SEQ                         | 92/B2: DI + data + SEQ        |
| 13   | read address (address field AA..AA), L = 0       | 93: A0..A5                    |
| 14   | write data: DI + PA P0P1P2 + C0..C3 + data       | 94, L = 0                     |
| 15   | write address: A0..A5                            | 95, L = 0                     |
| 16   | freeze: mmhhDDMM (99 = every)                    | 96, L = 0                     |
| 17   | change baud rate: Z                              | 97: Z                         |
| 18   | change password: DI + old PA+P + new PA+P        | 98: new PA+P                  |
| 19   | clear maximum demand: PA+P + C0..C3              | 99, L = 0                     |
| 1A   | clear meter: PA+P + C0..C3                       | 9A, L = 0                     |
| 1B   | clear events: PA+P + C0..C3 + DI                 | 9B, L = 0                     |
| 1C   | remote control: PA+P + C + N1 N2 N3..N8          | 9C, L = 0                     |

An abnormal answer has D6 set (C = C0H | function) and carries the error word ERR. Frames with
function codes or direction/flag combinations we do not model decode to OtherFrame, so a
vendor's extension is shown rather than refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import ClassVar

from gateway.codecs.dlt645.bcd import (
    WILDCARD,
    bcd_digits,
    decode_address,
    digits_to_bcd,
    encode_address,
)
from gateway.codecs.dlt645.errors import DecodeError, LocalProtocolError
from gateway.codecs.dlt645.frame import (
    ABNORMAL,
    DIR_UP,
    HEADER,
    MORE,
    Frame,
    encode_frame,
    parse_frame,
)

__all__ = [
    "BAUD_RATES",
    "ERROR_BITS",
    "ChangeBaudRate",
    "ChangeBaudRateAck",
    "ChangePassword",
    "ChangePasswordAck",
    "ClearDemand",
    "ClearDemandAck",
    "ClearEvents",
    "ClearEventsAck",
    "ClearMeter",
    "ClearMeterAck",
    "ControlAction",
    "ErrorResponse",
    "Event",
    "Freeze",
    "FreezeAck",
    "Function",
    "OtherFrame",
    "Password",
    "ReadAddress",
    "ReadAddressResponse",
    "ReadData",
    "ReadDataResponse",
    "ReadFollowUp",
    "ReadFollowUpResponse",
    "RemoteControl",
    "RemoteControlAck",
    "Request",
    "Response",
    "TimeSync",
    "WriteAddress",
    "WriteAddressAck",
    "WriteData",
    "WriteDataAck",
    "decode",
    "encode",
    "error_names",
    "event_function",
    "to_event",
    "to_frame",
]


class Function(IntEnum):
    """Function codes D4..D0 of the control code (DL/T 645-2007 4.3.3)."""

    TIME_SYNC = 0x08
    READ_DATA = 0x11
    READ_FOLLOW_UP = 0x12
    READ_ADDRESS = 0x13
    WRITE_DATA = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD_RATE = 0x17
    CHANGE_PASSWORD = 0x18
    CLEAR_DEMAND = 0x19
    CLEAR_METER = 0x1A
    CLEAR_EVENTS = 0x1B
    REMOTE_CONTROL = 0x1C


class ControlAction(IntEnum):
    """N1 of the remote control command (1C): 跳闸, 合闸允许, 直接合闸, 报警, 保电 and releases."""

    TRIP = 0x1A
    CLOSE_ALLOWED = 0x1B
    CLOSE = 0x1C
    ALARM = 0x2A
    ALARM_RELEASE = 0x2B
    KEEP_POWER = 0x3A
    KEEP_POWER_RELEASE = 0x3B


# Error word ERR of an abnormal answer (DL/T 645-2007 table, "错误信息字 ERR"):
# bit0 其他错误, bit1 无请求数据, bit2 密码错/未授权, bit3 通信速率不能更改, bit4 年时区数超,
# bit5 日时段数超, bit6 费率数超, bit7 保留.
ERROR_BITS: dict[int, str] = {
    0: "other_error",
    1: "no_requested_data",
    2: "password_error_or_unauthorized",
    3: "baud_rate_not_changeable",
    4: "year_time_zones_exceeded",
    5: "daily_time_slots_exceeded",
    6: "tariffs_exceeded",
    7: "reserved",
}

# Baud rate characteristic word Z (DL/T 645-2007 "通信速率特征字"): one bit per rate.
BAUD_RATES: dict[int, int] = {
    600: 0x02,
    1200: 0x04,
    2400: 0x08,
    4800: 0x10,
    9600: 0x20,
    19200: 0x40,
}
_BAUD_OF_Z = {z: b for b, z in BAUD_RATES.items()}
_HEX = re.compile(r"^[0-9A-F]*$")


def error_names(error: int, size: int = 1) -> tuple[str, ...]:
    """Names of the bits set in an error word (bits beyond the table as 'bitN')."""
    return tuple(ERROR_BITS.get(bit, f"bit{bit}") for bit in range(size * 8) if error & (1 << bit))


@dataclass(frozen=True, slots=True)
class Password:
    """A password with its authority level: PA then P0 P1 P2 on the wire; code is 'P2P1P0' in hex."""

    level: int = 2
    code: str = "000000"


# --- requests (master -> meter) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadData:
    """11H: read the data item DI; params carry N (and a start time) for load records."""

    function: ClassVar[Function] = Function.READ_DATA
    address: str
    di: int
    params: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadFollowUp:
    """12H: read follow-up frame SEQ (1, 2, ...) of a long data item."""

    function: ClassVar[Function] = Function.READ_FOLLOW_UP
    address: str
    di: int
    seq: int


@dataclass(frozen=True, slots=True)
class ReadAddress:
    """13H: read the communication address (point to point, address field all AAH)."""

    function: ClassVar[Function] = Function.READ_ADDRESS
    address: str = WILDCARD


@dataclass(frozen=True, slots=True)
class WriteData:
    """14H: write `data` (the item's bytes) to DI with a password and the operator code."""

    function: ClassVar[Function] = Function.WRITE_DATA
    address: str
    di: int
    data: bytes
    password: Password = Password()
    operator: str = "00000000"


@dataclass(frozen=True, slots=True)
class WriteAddress:
    """15H: set the communication address (address field all AAH)."""

    function: ClassVar[Function] = Function.WRITE_ADDRESS
    address: str
    new_address: str


@dataclass(frozen=True, slots=True)
class TimeSync:
    """08H: broadcast time sync to the meters' local time (no answer)."""

    function: ClassVar[Function] = Function.TIME_SYNC
    address: str
    time: datetime


@dataclass(frozen=True, slots=True)
class Freeze:
    """16H: freeze at `when` = 'MMDDhhmm' (99 in a field: every; '99999999': freeze now)."""

    function: ClassVar[Function] = Function.FREEZE
    address: str
    when: str = "99999999"


@dataclass(frozen=True, slots=True)
class ChangeBaudRate:
    """17H: change the communication baud rate."""

    function: ClassVar[Function] = Function.CHANGE_BAUD_RATE
    address: str
    baud: int


@dataclass(frozen=True, slots=True)
class ChangePassword:
    """18H: change the password of the level DI (04000C01..0A) from old to new."""

    function: ClassVar[Function] = Function.CHANGE_PASSWORD
    address: str
    di: int
    old: Password
    new: Password


@dataclass(frozen=True, slots=True)
class ClearDemand:
    """19H: clear maximum demand."""

    function: ClassVar[Function] = Function.CLEAR_DEMAND
    address: str
    password: Password = Password()
    operator: str = "00000000"


@dataclass(frozen=True, slots=True)
class ClearMeter:
    """1AH: clear the meter (energy, demand, events)."""

    function: ClassVar[Function] = Function.CLEAR_METER
    address: str
    password: Password = Password()
    operator: str = "00000000"


@dataclass(frozen=True, slots=True)
class ClearEvents:
    """1BH: clear the event records named by DI (FFFFFFFF: all)."""

    function: ClassVar[Function] = Function.CLEAR_EVENTS
    address: str
    password: Password = Password()
    operator: str = "00000000"
    di: int = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class RemoteControl:
    """1CH: trip or close the relay (or alarm, keep power), valid until a meter-local time."""

    function: ClassVar[Function] = Function.REMOTE_CONTROL
    address: str
    action: ControlAction
    valid_until: datetime
    password: Password = Password()
    operator: str = "00000000"
    reserved: int = 0  # N2


# --- answers (meter -> master) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadDataResponse:
    """91H (B1H with follow-up frames): the data of DI."""

    function: ClassVar[Function] = Function.READ_DATA
    address: str
    di: int
    data: bytes
    more: bool = False


@dataclass(frozen=True, slots=True)
class ReadFollowUpResponse:
    """92H (B2H with further frames): follow-up frame SEQ of DI."""

    function: ClassVar[Function] = Function.READ_FOLLOW_UP
    address: str
    di: int
    data: bytes
    seq: int
    more: bool = False


@dataclass(frozen=True, slots=True)
class ReadAddressResponse:
    """93H: the meter's communication address."""

    function: ClassVar[Function] = Function.READ_ADDRESS
    address: str


@dataclass(frozen=True, slots=True)
class WriteDataAck:
    """94H: data written."""

    function: ClassVar[Function] = Function.WRITE_DATA
    address: str


@dataclass(frozen=True, slots=True)
class WriteAddressAck:
    """95H: address written."""

    function: ClassVar[Function] = Function.WRITE_ADDRESS
    address: str


@dataclass(frozen=True, slots=True)
class FreezeAck:
    """96H: freeze done."""

    function: ClassVar[Function] = Function.FREEZE
    address: str


@dataclass(frozen=True, slots=True)
class ChangeBaudRateAck:
    """97H: the baud rate the meter switches to after this answer."""

    function: ClassVar[Function] = Function.CHANGE_BAUD_RATE
    address: str
    baud: int


@dataclass(frozen=True, slots=True)
class ChangePasswordAck:
    """98H: the new password."""

    function: ClassVar[Function] = Function.CHANGE_PASSWORD
    address: str
    new: Password


@dataclass(frozen=True, slots=True)
class ClearDemandAck:
    """99H: maximum demand cleared."""

    function: ClassVar[Function] = Function.CLEAR_DEMAND
    address: str


@dataclass(frozen=True, slots=True)
class ClearMeterAck:
    """9AH: meter cleared."""

    function: ClassVar[Function] = Function.CLEAR_METER
    address: str


@dataclass(frozen=True, slots=True)
class ClearEventsAck:
    """9BH: events cleared."""

    function: ClassVar[Function] = Function.CLEAR_EVENTS
    address: str


@dataclass(frozen=True, slots=True)
class RemoteControlAck:
    """9CH: remote control command accepted."""

    function: ClassVar[Function] = Function.REMOTE_CONTROL
    address: str


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Abnormal answer (D6 set) to `function`, with its error word (1 byte; 2 in some variants)."""

    address: str
    function: int
    error: int
    size: int = 1

    @property
    def errors(self) -> tuple[str, ...]:
        """The named errors set in the error word."""
        return error_names(self.error, self.size)


@dataclass(frozen=True, slots=True)
class OtherFrame:
    """A well-formed frame whose control code we do not model (vendor extensions, 03H, 1DH...)."""

    address: str
    control: int
    data: bytes = b""


Request = (
    ReadData | ReadFollowUp | ReadAddress | WriteData | WriteAddress | TimeSync | Freeze
    | ChangeBaudRate | ChangePassword | ClearDemand | ClearMeter | ClearEvents | RemoteControl
)  # fmt: skip
Response = (
    ReadDataResponse | ReadFollowUpResponse | ReadAddressResponse | WriteDataAck
    | WriteAddressAck | FreezeAck | ChangeBaudRateAck | ChangePasswordAck | ClearDemandAck
    | ClearMeterAck | ClearEventsAck | RemoteControlAck | ErrorResponse
)  # fmt: skip
Event = Request | Response | OtherFrame

REQUEST_TYPES: tuple[type, ...] = (
    ReadData, ReadFollowUp, ReadAddress, WriteData, WriteAddress, TimeSync, Freeze,
    ChangeBaudRate, ChangePassword, ClearDemand, ClearMeter, ClearEvents, RemoteControl,
)  # fmt: skip
RESPONSE_TYPES: tuple[type, ...] = (
    ReadDataResponse, ReadFollowUpResponse, ReadAddressResponse, WriteDataAck, WriteAddressAck,
    FreezeAck, ChangeBaudRateAck, ChangePasswordAck, ClearDemandAck, ClearMeterAck,
    ClearEventsAck, RemoteControlAck, ErrorResponse,
)  # fmt: skip
_EMPTY_ACKS: dict[int, type] = {
    Function.WRITE_DATA: WriteDataAck,
    Function.WRITE_ADDRESS: WriteAddressAck,
    Function.FREEZE: FreezeAck,
    Function.CLEAR_DEMAND: ClearDemandAck,
    Function.CLEAR_METER: ClearMeterAck,
    Function.CLEAR_EVENTS: ClearEventsAck,
    Function.REMOTE_CONTROL: RemoteControlAck,
}
_ACK_FUNCTION: dict[type, int] = {cls: fn for fn, cls in _EMPTY_ACKS.items()}
_KNOWN = frozenset(int(f) for f in Function)


def event_function(event: Event) -> int | None:
    """The function code an event belongs to (None for OtherFrame)."""
    if isinstance(event, OtherFrame):
        return None
    return int(event.function)


# --- field helpers --------------------------------------------------------------------------


def _hex_le(code: str, nbytes: int, what: str) -> bytes:
    if len(code) != 2 * nbytes or not _HEX.match(code.upper()):
        raise LocalProtocolError(f"{what} {code!r} must be {2 * nbytes} hex digits")
    return bytes.fromhex(code)[::-1]


def _password(p: Password) -> bytes:
    if not 0 <= p.level <= 0xFF:
        raise LocalProtocolError(f"password level {p.level} does not fit one byte")
    return bytes((p.level,)) + _hex_le(p.code, 3, "password")


def _password_of(data: bytes) -> Password:
    return Password(data[0], data[1:4][::-1].hex().upper())


def _di(di: int) -> bytes:
    if not 0 <= di <= 0xFFFFFFFF:
        raise LocalProtocolError(f"data identifier {di} does not fit 4 bytes")
    return di.to_bytes(4, "little")


def _byte(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFF:
        raise LocalProtocolError(f"{what} {value} does not fit one byte")
    return bytes((value,))


def _time(t: datetime, what: str) -> bytes:
    """ssmmhhDDMMYY (6 BCD bytes, seconds first) of a naive meter-local time."""
    if t.tzinfo is not None:
        raise LocalProtocolError(f"{what}: give the meter's local time as a naive datetime")
    if not 2000 <= t.year <= 2099:
        raise LocalProtocolError(f"{what}: year {t.year} cannot be sent (YY: 2000..2099)")
    return digits_to_bcd(t.strftime("%y%m%d%H%M%S"))


def _time_of(data: bytes, offset: int, what: str) -> datetime:
    d = bcd_digits(data, offset, what)
    try:
        return datetime(2000 + int(d[0:2]), int(d[2:4]), int(d[4:6]), int(d[6:8]), int(d[8:10]),
                        int(d[10:12]))  # fmt: skip
    except ValueError as e:
        raise DecodeError(f"{what}: {d} (YYMMDDhhmmss) is not a valid time: {e}", offset) from e


def _freeze_when(when: str) -> bytes:
    if len(when) != 8 or not when.isdigit():
        raise LocalProtocolError(f"freeze time {when!r} must be 8 digits MMDDhhmm (99 = every)")
    return digits_to_bcd(when)


# --- events <-> frames ----------------------------------------------------------------------


def to_frame(event: Event) -> Frame:
    """The link frame of an event; LocalProtocolError if a field cannot be carried."""
    a = event.address
    encode_address(a)  # validates
    up = DIR_UP
    match event:
        case ReadData():
            return Frame(a, 0x11, _di(event.di) + event.params)
        case ReadFollowUp():
            return Frame(a, 0x12, _di(event.di) + _byte(event.seq, "SEQ"))
        case ReadAddress():
            return Frame(a, 0x13)
        case WriteData():
            data = _di(event.di) + _password(event.password)
            data += _hex_le(event.operator, 4, "operator code") + event.data
            return Frame(a, 0x14, data)
        case WriteAddress():
            return Frame(a, 0x15, encode_address(_no_wildcard(event.new_address)))
        case TimeSync():
            return Frame(a, 0x08, _time(event.time, "time sync"))
        case Freeze():
            return Frame(a, 0x16, _freeze_when(event.when))
        case ChangeBaudRate():
            return Frame(a, 0x17, bytes((_z(event.baud),)))
        case ChangePassword():
            return Frame(a, 0x18, _di(event.di) + _password(event.old) + _password(event.new))
        case ClearDemand() | ClearMeter():
            data = _password(event.password) + _hex_le(event.operator, 4, "operator code")
            return Frame(a, int(event.function), data)
        case ClearEvents():
            data = _password(event.password) + _hex_le(event.operator, 4, "operator code")
            return Frame(a, 0x1B, data + _di(event.di))
        case RemoteControl():
            data = _password(event.password) + _hex_le(event.operator, 4, "operator code")
            data += bytes((int(event.action),)) + _byte(event.reserved, "N2")
            return Frame(a, 0x1C, data + _time(event.valid_until, "valid until"))
        case ReadDataResponse():
            return Frame(a, up | 0x11 | (MORE if event.more else 0), _di(event.di) + event.data)
        case ReadFollowUpResponse():
            data = _di(event.di) + event.data + _byte(event.seq, "SEQ")
            return Frame(a, up | 0x12 | (MORE if event.more else 0), data)
        case ReadAddressResponse():
            return Frame(a, up | 0x13, encode_address(_no_wildcard(a)))
        case ChangeBaudRateAck():
            return Frame(a, up | 0x17, bytes((_z(event.baud),)))
        case ChangePasswordAck():
            return Frame(a, up | 0x18, _password(event.new))
        case ErrorResponse():
            if event.function not in _KNOWN:
                raise LocalProtocolError(
                    f"abnormal answer to unknown function 0x{event.function:02X}"
                )
            if event.size not in (1, 2) or not 0 <= event.error < 1 << (8 * event.size):
                raise LocalProtocolError(
                    f"error word {event.error} does not fit {event.size} byte(s)"
                )
            return Frame(
                a, up | ABNORMAL | event.function, event.error.to_bytes(event.size, "little")
            )
        case OtherFrame():
            return Frame(a, _byte(event.control, "control code")[0], event.data)
    fn = _ACK_FUNCTION.get(type(event))
    if fn is None:
        raise LocalProtocolError(f"not a DL/T 645 event: {event!r}")
    return Frame(a, up | fn)


def _no_wildcard(address: str) -> str:
    if "A" in address:
        raise LocalProtocolError(f"address {address!r}: a meter's own address has no wildcard")
    return address


def _z(baud: int) -> int:
    z = BAUD_RATES.get(baud)
    if z is None:
        raise LocalProtocolError(f"baud rate {baud} (allowed: {', '.join(map(str, BAUD_RATES))})")
    return z


def _need(frame: Frame, at: int, sizes: tuple[int, ...] | int, what: str) -> None:
    n = len(frame.data)
    ok = n >= sizes if isinstance(sizes, int) else n in sizes
    if not ok:
        want = f"at least {sizes}" if isinstance(sizes, int) else " or ".join(map(str, sizes))
        raise DecodeError(f"{what}: data length L={n}, expected {want}", at - 1)


def to_event(frame: Frame, data_offset: int = HEADER) -> Event:
    """The event a frame carries; DecodeError (offsets from data_offset) if its data do not fit."""
    c, d, a, at = frame.control, frame.data, frame.address, data_offset
    fn = c & 0x1F
    if fn not in _KNOWN:
        return OtherFrame(a, c, d)
    if not c & DIR_UP:
        if c & (ABNORMAL | MORE):
            return OtherFrame(a, c, d)
        return _request(a, fn, d, at, frame)
    if c & ABNORMAL:
        if c & MORE:
            return OtherFrame(a, c, d)
        _need(frame, at, (1, 2), "abnormal answer")
        return ErrorResponse(a, fn, int.from_bytes(d, "little"), len(d))
    if fn == Function.READ_DATA:
        _need(frame, at, 4, "read answer")
        return ReadDataResponse(a, int.from_bytes(d[:4], "little"), d[4:], bool(c & MORE))
    if fn == Function.READ_FOLLOW_UP:
        _need(frame, at, 5, "follow-up answer")
        di = int.from_bytes(d[:4], "little")
        return ReadFollowUpResponse(a, di, d[4:-1], d[-1], bool(c & MORE))
    if c & MORE:
        return OtherFrame(a, c, d)
    if fn == Function.READ_ADDRESS:
        _need(frame, at, (6,), "read-address answer")
        own = decode_address(d, at)
        if own != a:
            raise DecodeError(f"read-address answer carries {own} but is sent from {a}", at)
        return ReadAddressResponse(a)
    if fn == Function.CHANGE_BAUD_RATE:
        _need(frame, at, (1,), "baud rate answer")
        return ChangeBaudRateAck(a, _baud_of(d[0], at))
    if fn == Function.CHANGE_PASSWORD:
        _need(frame, at, (4,), "password answer")
        return ChangePasswordAck(a, _password_of(d))
    ack = _EMPTY_ACKS.get(fn)
    if ack is None:
        return OtherFrame(a, c, d)  # e.g. an answer to the broadcast time sync
    _need(frame, at, (0,), f"{Function(fn).name.lower()} answer")
    result: Event = ack(a)
    return result


def _baud_of(z: int, at: int) -> int:
    baud = _BAUD_OF_Z.get(z)
    if baud is None:
        raise DecodeError(f"baud rate word Z=0x{z:02X} is not one of the defined rates", at)
    return baud


def _request(a: str, fn: int, d: bytes, at: int, frame: Frame) -> Event:
    if fn == Function.READ_DATA:
        _need(frame, at, 4, "read request")
        return ReadData(a, int.from_bytes(d[:4], "little"), d[4:])
    if fn == Function.READ_FOLLOW_UP:
        _need(frame, at, (5,), "follow-up request")
        return ReadFollowUp(a, int.from_bytes(d[:4], "little"), d[4])
    if fn == Function.READ_ADDRESS:
        _need(frame, at, (0,), "read-address request")
        return ReadAddress(a)
    if fn == Function.WRITE_DATA:
        _need(frame, at, 12, "write request")
        op = d[8:12][::-1].hex().upper()
        return WriteData(a, int.from_bytes(d[:4], "little"), d[12:], _password_of(d[4:8]), op)
    if fn == Function.WRITE_ADDRESS:
        _need(frame, at, (6,), "write-address request")
        return WriteAddress(a, decode_address(d, at))
    if fn == Function.TIME_SYNC:
        _need(frame, at, (6,), "time sync")
        return TimeSync(a, _time_of(d, at, "time sync"))
    if fn == Function.FREEZE:
        _need(frame, at, (4,), "freeze request")
        return Freeze(a, bcd_digits(d, at, "freeze time"))
    if fn == Function.CHANGE_BAUD_RATE:
        _need(frame, at, (1,), "baud rate request")
        return ChangeBaudRate(a, _baud_of(d[0], at))
    if fn == Function.CHANGE_PASSWORD:
        _need(frame, at, (12,), "password request")
        return ChangePassword(a, int.from_bytes(d[:4], "little"), _password_of(d[4:8]),
                              _password_of(d[8:12]))  # fmt: skip
    if fn in (Function.CLEAR_DEMAND, Function.CLEAR_METER):
        _need(frame, at, (8,), "clear request")
        cls = ClearDemand if fn == Function.CLEAR_DEMAND else ClearMeter
        return cls(a, _password_of(d[:4]), d[4:8][::-1].hex().upper())
    if fn == Function.CLEAR_EVENTS:
        _need(frame, at, (12,), "event clear request")
        return ClearEvents(a, _password_of(d[:4]), d[4:8][::-1].hex().upper(),
                           int.from_bytes(d[8:12], "little"))  # fmt: skip
    # Function.REMOTE_CONTROL
    _need(frame, at, (16,), "remote control request")
    try:
        action = ControlAction(d[8])
    except ValueError:
        raise DecodeError(
            f"remote control N1=0x{d[8]:02X} is not a defined command", at + 8
        ) from None
    return RemoteControl(a, action, _time_of(d[10:16], at + 10, "valid until"),
                         _password_of(d[:4]), d[4:8][::-1].hex().upper(), d[9])  # fmt: skip


def encode(event: Event, preamble: int = 0) -> bytes:
    """Wire bytes of an event, optionally preceded by `preamble` FE wake-up bytes."""
    f = to_frame(event)
    return encode_frame(f.address, f.control, f.data, preamble)


def decode(data: bytes) -> Event:
    """The one event in data (FE preamble allowed); DecodeError if it is not exactly one frame."""
    frame, used = parse_frame(data)
    if used != len(data):
        raise DecodeError(f"{len(data) - used} byte(s) after the end of the frame", used)
    return to_event(frame, used - 2 - len(frame.data))
