"""DL/T 698.45 application layer: the APDUs a client and a server exchange (clause 7.4).

    698-APDU ::= CHOICE { LINK-Request [1], LINK-Response [129], Client-APDU, Server-APDU,
                          SECURITY-Request [16], SECURITY-Response [144] }
    Client-APDU ::= SEQUENCE { CHOICE { CONNECT-Request [2], RELEASE-Request [3],
        GET-Request [5], SET-Request [6], ACTION-Request [7], REPORT-Response [8],
        ERROR-Response [110] }, TimeTag OPTIONAL }
    Server-APDU ::= SEQUENCE { CHOICE { CONNECT-Response [130], RELEASE-Response [131],
        RELEASE-Notification [132], GET-Response [133], SET-Response [134],
        ACTION-Response [135], REPORT-Notification [136], ERROR-Response [238] },
        FollowReport OPTIONAL, TimeTag OPTIONAL }

Each APDU is a frozen dataclass (a closed set: `Apdu`); `encode_apdu` and `decode_apdu` convert
between them and bytes. PIID bytes are kept raw (bit 7 priority, bits 0-5 the invoke number; in
PIID-ACD bit 6 asks for follow-up reports). Not implemented (decoding them raises a typed
ApduDecodeError naming the choice): PROXY, GET RecordList, Next and MD5, SetThenGet,
ActionThenGet, REPORT TransData. The SECURITY APDUs are decoded with their plaintext APDU and
MAC; ciphertext (SM4 with the meter's ESAM keys) is carried, not decrypted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, TypeAlias, cast

from gateway.codecs.dlt698.axdr import (
    CSD,
    SID,
    TI,
    Data,
    DateTime,
    DateTimeS,
    Reader,
    SidMac,
    put_csd,
    put_data,
    put_length,
    put_rsd,
    read_csd,
    read_data,
    read_rsd,
)
from gateway.codecs.dlt698.axdr import RSD as RSDType
from gateway.codecs.dlt698.errors import ApduDecodeError, EncodeError
from gateway.codecs.dlt698.oad import OAD, OMD

__all__ = [
    "DAR_NAMES",
    "AResultNormal",
    "AResultRecord",
    "ActionRequest",
    "ActionRequestList",
    "ActionResponse",
    "ActionResponseList",
    "Apdu",
    "ConnectMechanism",
    "ConnectRequest",
    "ConnectResponse",
    "Dar",
    "ErrorResponse",
    "FactoryVersion",
    "FollowReport",
    "GetRequestNormal",
    "GetRequestNormalList",
    "GetRequestRecord",
    "GetResponseNormal",
    "GetResponseNormalList",
    "GetResponseRecord",
    "LinkRequest",
    "LinkResponse",
    "ReleaseNotification",
    "ReleaseRequest",
    "ReleaseResponse",
    "ReportNotificationList",
    "ReportNotificationRecordList",
    "ReportResponseList",
    "ReportResponseRecordList",
    "RnMac",
    "SecurityRequest",
    "SecurityResponse",
    "SetRequestNormal",
    "SetRequestNormalList",
    "SetResponseNormal",
    "SetResponseNormalList",
    "TimeTag",
    "decode_apdu",
    "encode_apdu",
    "is_server_apdu",
    "piid",
]

# DAR (Data Access Result), DL/T 698.45-2017 clause 7.3 "DAR ∷= ENUMERATED".
DAR_NAMES: dict[int, str] = {
    0: "success",
    1: "hardware-failure",
    2: "temporary-failure",
    3: "read-write-denied",
    4: "object-undefined",
    5: "interface-class-mismatch",
    6: "object-nonexistent",
    7: "type-mismatch",
    8: "out-of-range",
    9: "data-block-unavailable",
    10: "fragment-transfer-cancelled",
    11: "not-in-fragment-transfer",
    12: "block-write-cancelled",
    13: "no-block-write-state",
    14: "invalid-block-number",
    15: "password-error-or-unauthorized",
    16: "baud-rate-unchangeable",
    17: "year-time-zones-exceeded",
    18: "day-periods-exceeded",
    19: "tariffs-exceeded",
    20: "security-authentication-mismatch",
    21: "duplicate-recharge",
    22: "esam-verification-failed",
    23: "security-authentication-failed",
    24: "customer-number-mismatch",
    25: "recharge-count-error",
    26: "purchase-exceeds-hoarding-limit",
    27: "address-abnormal",
    28: "symmetric-decryption-error",
    29: "asymmetric-decryption-error",
    30: "signature-error",
    31: "meter-suspended",
    32: "time-tag-invalid",
    33: "request-timeout",
    34: "esam-p1p2-error",
    35: "esam-lc-error",
    255: "other",
}


@dataclass(frozen=True, slots=True)
class Dar:
    """A data access result code."""

    code: int

    @property
    def name(self) -> str:
        """The standard's meaning, e.g. "object-undefined" ("dar-N" for unlisted codes)."""
        return DAR_NAMES.get(self.code, f"dar-{self.code}")

    @property
    def ok(self) -> bool:
        """True for success (0)."""
        return self.code == 0

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


SUCCESS = Dar(0)


def piid(invoke: int, high_priority: bool = False) -> int:
    """A PIID byte from an invoke number (0-63) and the priority flag."""
    return (0x80 if high_priority else 0) | (invoke & 0x3F)


@dataclass(frozen=True, slots=True)
class TimeTag:
    """TimeTag: when the request was sent and how late it may still be executed."""

    send_time: DateTimeS
    allowed_delay: TI


@dataclass(frozen=True, slots=True)
class AResultNormal:
    """A-ResultNormal: an OAD and its Get-Result (a Data, or the DAR of a failed access)."""

    oad: OAD
    result: Data | Dar


@dataclass(frozen=True, slots=True)
class AResultRecord:
    """A-ResultRecord: an OAD, the record columns (RCSD) and rows of Data, or a DAR."""

    oad: OAD
    rcsd: tuple[CSD, ...]
    result: tuple[tuple[Data, ...], ...] | Dar


@dataclass(frozen=True, slots=True)
class FollowReport:
    """FollowReport: kind 1 carries A-ResultNormal, kind 2 A-ResultRecord."""

    kind: int
    results: tuple[AResultNormal, ...] | tuple[AResultRecord, ...] = ()


# --- link management ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """LINK-Request (terminal to station): kind 0 login, 1 heartbeat, 2 logout."""

    piid_acd: int
    kind: int
    heartbeat_s: int
    time: DateTime


@dataclass(frozen=True, slots=True)
class LinkResponse:
    """LINK-Response: result byte (bit 7 clock trustworthy, bits 0-2 result) and times."""

    piid: int
    result: int
    request_time: DateTime
    received_time: DateTime
    response_time: DateTime


# --- connection ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectMechanism:
    """ConnectMechanismInfo: 0 public, 1 password, 2 symmetric, 3 signature."""

    kind: int = 0
    password: str = ""
    ciphertext: bytes = b""
    signature: bytes = b""


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """CONNECT-Request: the client's protocol version, conformance blocks and sizes."""

    piid: int
    version: int = 0x0016
    protocol_conformance: bytes = b"\xff" * 8
    function_conformance: bytes = b"\xff" * 16
    send_max: int = 1024
    recv_max: int = 1024
    recv_window: int = 1
    apdu_max: int = 4096
    timeout_s: int = 7200
    mechanism: ConnectMechanism = ConnectMechanism()
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class FactoryVersion:
    """FactoryVersion: fixed-size visible strings, kept as their bytes (4,4,6,4,6,8)."""

    vendor: bytes = b"VPPG"
    software: bytes = b"0001"
    software_date: bytes = b"250101"
    hardware: bytes = b"0001"
    hardware_date: bytes = b"250101"
    extra: bytes = b"\x00" * 8


_FACTORY_SIZES = (4, 4, 6, 4, 6, 8)


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    """CONNECT-Response: the negotiated parameters and the connect result (0 = accepted)."""

    piid_acd: int
    factory: FactoryVersion = FactoryVersion()
    version: int = 0x0016
    protocol_conformance: bytes = b"\xff" * 8
    function_conformance: bytes = b"\xff" * 16
    send_max: int = 1024
    recv_max: int = 1024
    recv_window: int = 1
    apdu_max: int = 4096
    timeout_s: int = 7200
    result: int = 0
    security: tuple[bytes, bytes] | None = None  # (server random number, signature)
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


CONNECT_RESULTS = {
    0: "accepted",
    1: "password-error",
    2: "symmetric-decryption-error",
    3: "asymmetric-decryption-error",
    4: "signature-error",
    5: "protocol-version-mismatch",
    255: "other-error",
}


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """RELEASE-Request."""

    piid: int
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ReleaseResponse:
    """RELEASE-Response (result 0 = success)."""

    piid_acd: int
    result: int = 0
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ReleaseNotification:
    """RELEASE-Notification: the server ends the connection (timed out)."""

    piid_acd: int
    connected_at: DateTimeS
    now: DateTimeS
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


# --- GET ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetRequestNormal:
    """GetRequestNormal: read one attribute."""

    piid: int
    oad: OAD
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class GetRequestNormalList:
    """GetRequestNormalList: read several attributes."""

    piid: int
    oads: tuple[OAD, ...]
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class GetRequestRecord:
    """GetRequestRecord: read records of a record-type attribute (OAD, RSD, RCSD)."""

    piid: int
    oad: OAD
    rsd: RSDType
    rcsd: tuple[CSD, ...]
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class GetResponseNormal:
    """GetResponseNormal."""

    piid_acd: int
    result: AResultNormal
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class GetResponseNormalList:
    """GetResponseNormalList."""

    piid_acd: int
    results: tuple[AResultNormal, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class GetResponseRecord:
    """GetResponseRecord."""

    piid_acd: int
    result: AResultRecord
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


# --- SET / ACTION -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetRequestNormal:
    """SetRequestNormal: write one attribute."""

    piid: int
    oad: OAD
    value: Data
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class SetRequestNormalList:
    """SetRequestNormalList: write several attributes."""

    piid: int
    items: tuple[tuple[OAD, Data], ...]
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class SetResponseNormal:
    """SetResponseNormal: the DAR of one write."""

    piid_acd: int
    oad: OAD
    dar: Dar
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class SetResponseNormalList:
    """SetResponseNormalList: the DAR of each write."""

    piid_acd: int
    results: tuple[tuple[OAD, Dar], ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """ActionRequest: invoke one method with its parameter."""

    piid: int
    omd: OMD
    parameter: Data
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ActionRequestList:
    """ActionRequestList: invoke several methods."""

    piid: int
    items: tuple[tuple[OMD, Data], ...]
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ActionResponse:
    """ActionResponseNormal: the DAR of one method and its optional return data."""

    piid_acd: int
    omd: OMD
    dar: Dar
    data: Data | None = None
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ActionResponseList:
    """ActionResponseNormalList."""

    piid_acd: int
    results: tuple[tuple[OMD, Dar, Data | None], ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


# --- REPORT -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportNotificationList:
    """ReportNotificationList: the server reports attributes on its own initiative."""

    piid_acd: int
    results: tuple[AResultNormal, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ReportNotificationRecordList:
    """ReportNotificationRecordList: the server reports records (e.g. events)."""

    piid_acd: int
    results: tuple[AResultRecord, ...]
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ReportResponseList:
    """ReportResponseList: the client acknowledges reported attributes."""

    piid: int
    oads: tuple[OAD, ...]
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ReportResponseRecordList:
    """ReportResponseRecordList: the client acknowledges reported records."""

    piid: int
    oads: tuple[OAD, ...]
    time_tag: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """ERROR-Response (110 from a client, 238 from a server): 1 undecodable, 2 unsupported."""

    piid_acd: int
    kind: int
    from_server: bool = True
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None


# --- security -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RnMac:
    """RN_MAC: a random number and a MAC."""

    rn: bytes
    mac: bytes


@dataclass(frozen=True, slots=True)
class SecurityRequest:
    """SECURITY-Request: an APDU in plaintext (or ciphertext) and its verification data.

    verify is a SidMac (choice 0), bytes = a random number RN (1), RnMac (2) or SID (3).
    """

    data: bytes
    verify: SidMac | bytes | RnMac | SID
    ciphered: bool = False

    def inner(self) -> Apdu:
        """The plaintext APDU inside (ApduDecodeError when it is ciphered or undecodable)."""
        if self.ciphered:
            raise ApduDecodeError("SECURITY-Request: the APDU is ciphered (SM4 not supported)", 2)
        return decode_apdu(self.data)


@dataclass(frozen=True, slots=True)
class SecurityResponse:
    """SECURITY-Response: plaintext/ciphertext APDU or a DAR, and an optional MAC."""

    data: bytes | Dar
    mac: bytes | None = None
    ciphered: bool = False

    def inner(self) -> Apdu:
        """The plaintext APDU inside (ApduDecodeError for a DAR or ciphertext)."""
        if isinstance(self.data, Dar):
            raise ApduDecodeError(f"SECURITY-Response: error {self.data}", 2)
        if self.ciphered:
            raise ApduDecodeError("SECURITY-Response: the APDU is ciphered (SM4 not supported)", 2)
        return decode_apdu(self.data)


Apdu: TypeAlias = (
    LinkRequest | LinkResponse | ConnectRequest | ConnectResponse | ReleaseRequest
    | ReleaseResponse | ReleaseNotification | GetRequestNormal | GetRequestNormalList
    | GetRequestRecord | GetResponseNormal | GetResponseNormalList | GetResponseRecord
    | SetRequestNormal | SetRequestNormalList | SetResponseNormal | SetResponseNormalList
    | ActionRequest | ActionRequestList | ActionResponse | ActionResponseList
    | ReportNotificationList | ReportNotificationRecordList | ReportResponseList
    | ReportResponseRecordList | ErrorResponse | SecurityRequest | SecurityResponse
)  # fmt: skip

_SERVER_TYPES = (
    LinkRequest, ConnectResponse, ReleaseResponse, ReleaseNotification, GetResponseNormal,
    GetResponseNormalList, GetResponseRecord, SetResponseNormal, SetResponseNormalList,
    ActionResponse, ActionResponseList, ReportNotificationList, ReportNotificationRecordList,
    SecurityResponse,
)  # fmt: skip


def is_server_apdu(a: Apdu) -> bool:
    """True for APDUs a server sends (responses, reports, LINK-Request)."""
    if isinstance(a, ErrorResponse):
        return a.from_server
    return isinstance(a, _SERVER_TYPES)


# --- encoding -----------------------------------------------------------------------------


def _u8(v: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
        raise EncodeError(f"{what}: {v!r} is not 0..255")
    return v


def _uint(v: int, size: int, what: str) -> bytes:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << (8 * size):
        raise EncodeError(f"{what}: {v!r} does not fit {size} bytes")
    return v.to_bytes(size, "big")


def _fixed(b: bytes, size: int, what: str) -> bytes:
    if not isinstance(b, bytes) or len(b) != size:
        raise EncodeError(f"{what}: needs exactly {size} bytes")
    return b


def _octets(out: bytearray, b: bytes, what: str) -> None:
    if not isinstance(b, bytes):
        raise EncodeError(f"{what}: expected bytes, got {type(b).__name__}")
    put_length(out, len(b))
    out += b


def _dts(out: bytearray, t: DateTimeS) -> None:
    put_data_fields = (t.month, t.day, t.hour, t.minute, t.second)
    out += _uint(t.year, 2, "date_time_s year")
    for f in put_data_fields:
        out.append(_u8(f, "date_time_s field"))


def _dt(out: bytearray, t: DateTime) -> None:
    out += _uint(t.year, 2, "date_time year")
    for f in (t.month, t.day, t.weekday, t.hour, t.minute, t.second):
        out.append(_u8(f, "date_time field"))
    out += _uint(t.milliseconds, 2, "date_time milliseconds")


def _time_tag(out: bytearray, tt: TimeTag | None) -> None:
    if tt is None:
        out.append(0)
        return
    out.append(1)
    _dts(out, tt.send_time)
    out.append(_u8(tt.allowed_delay.unit, "TI unit"))
    out += _uint(tt.allowed_delay.interval, 2, "TI interval")


def _result(out: bytearray, r: Data | Dar) -> None:
    if isinstance(r, Dar):
        out.append(0)
        out.append(_u8(r.code, "DAR"))
    else:
        out.append(1)
        put_data(out, r)


def _a_result_normal(out: bytearray, r: AResultNormal) -> None:
    out += r.oad.to_bytes()
    _result(out, r.result)


def _a_result_record(out: bytearray, r: AResultRecord) -> None:
    out += r.oad.to_bytes()
    put_length(out, len(r.rcsd))
    for c in r.rcsd:
        put_csd(out, c)
    if isinstance(r.result, Dar):
        out.append(0)
        out.append(_u8(r.result.code, "DAR"))
        return
    if r.result and not r.rcsd:
        raise EncodeError("record rows need at least one column (RCSD is empty)")
    out.append(1)
    put_length(out, len(r.result))
    for row in r.result:
        if len(row) != len(r.rcsd):
            raise EncodeError(f"record row has {len(row)} columns, RCSD has {len(r.rcsd)}")
        for d in row:
            put_data(out, d)


def _follow(out: bytearray, fr: FollowReport | None) -> None:
    if fr is None:
        out.append(0)
        return
    out.append(1)
    if fr.kind == 1 and all(isinstance(r, AResultNormal) for r in fr.results):
        out.append(1)
        put_length(out, len(fr.results))
        for r in fr.results:
            _a_result_normal(out, r)  # type: ignore[arg-type]
    elif fr.kind == 2 and all(isinstance(r, AResultRecord) for r in fr.results):
        out.append(2)
        put_length(out, len(fr.results))
        for r in fr.results:
            _a_result_record(out, r)  # type: ignore[arg-type]
    else:
        raise EncodeError(f"FollowReport kind {fr.kind} with the wrong result type")


def _server_tail(out: bytearray, a: Apdu) -> None:
    _follow(out, getattr(a, "follow_report", None))
    _time_tag(out, getattr(a, "time_tag", None))


def _oads(out: bytearray, oads: tuple[OAD, ...]) -> None:
    put_length(out, len(oads))
    for o in oads:
        out += o.to_bytes()


def encode_apdu(a: Apdu) -> bytes:
    """The bytes of an APDU."""
    out = bytearray()
    if isinstance(a, GetRequestNormal):
        out += bytes((5, 1, _u8(a.piid, "PIID")))
        out += a.oad.to_bytes()
    elif isinstance(a, GetRequestNormalList):
        out += bytes((5, 2, _u8(a.piid, "PIID")))
        _oads(out, a.oads)
    elif isinstance(a, GetRequestRecord):
        out += bytes((5, 3, _u8(a.piid, "PIID")))
        out += a.oad.to_bytes()
        put_rsd(out, a.rsd)
        put_length(out, len(a.rcsd))
        for c in a.rcsd:
            put_csd(out, c)
    elif isinstance(a, SetRequestNormal):
        out += bytes((6, 1, _u8(a.piid, "PIID")))
        out += a.oad.to_bytes()
        put_data(out, a.value)
    elif isinstance(a, SetRequestNormalList):
        out += bytes((6, 2, _u8(a.piid, "PIID")))
        put_length(out, len(a.items))
        for oad, d in a.items:
            out += oad.to_bytes()
            put_data(out, d)
    elif isinstance(a, ActionRequest):
        out += bytes((7, 1, _u8(a.piid, "PIID")))
        out += a.omd.to_bytes()
        put_data(out, a.parameter)
    elif isinstance(a, ActionRequestList):
        out += bytes((7, 2, _u8(a.piid, "PIID")))
        put_length(out, len(a.items))
        for omd, d in a.items:
            out += omd.to_bytes()
            put_data(out, d)
    elif isinstance(a, ReportResponseList | ReportResponseRecordList):
        kind = 1 if isinstance(a, ReportResponseList) else 2
        out += bytes((8, kind, _u8(a.piid, "PIID")))
        _oads(out, a.oads)
    elif isinstance(a, ConnectRequest):
        out += bytes((2, _u8(a.piid, "PIID")))
        out += _uint(a.version, 2, "protocol version")
        out += _fixed(a.protocol_conformance, 8, "protocol conformance")
        out += _fixed(a.function_conformance, 16, "function conformance")
        out += _uint(a.send_max, 2, "send frame max")
        out += _uint(a.recv_max, 2, "receive frame max")
        out.append(_u8(a.recv_window, "receive window"))
        out += _uint(a.apdu_max, 2, "APDU max")
        out += _uint(a.timeout_s, 4, "connection timeout")
        m = a.mechanism
        out.append(_u8(m.kind, "connect mechanism"))
        if m.kind == 1:
            try:
                _octets(out, m.password.encode("ascii"), "password")
            except UnicodeEncodeError:
                raise EncodeError("password must be ASCII (visible-string)") from None
        elif m.kind in (2, 3):
            _octets(out, m.ciphertext, "connect ciphertext")
            _octets(out, m.signature, "connect signature")
        elif m.kind != 0:
            raise EncodeError(f"connect mechanism {m.kind} is not 0..3")
    elif isinstance(a, ReleaseRequest):
        out += bytes((3, _u8(a.piid, "PIID")))
    elif isinstance(a, ErrorResponse) and not a.from_server:
        out += bytes((110, _u8(a.piid_acd, "PIID"), _u8(a.kind, "error kind")))
    elif isinstance(a, ConnectResponse):
        out += bytes((130, _u8(a.piid_acd, "PIID-ACD")))
        f = a.factory
        for v, size, name in zip(
            (f.vendor, f.software, f.software_date, f.hardware, f.hardware_date, f.extra),
            _FACTORY_SIZES,
            ("vendor", "software", "software date", "hardware", "hardware date", "extra"),
            strict=True,
        ):
            out += _fixed(v, size, f"factory {name}")
        out += _uint(a.version, 2, "protocol version")
        out += _fixed(a.protocol_conformance, 8, "protocol conformance")
        out += _fixed(a.function_conformance, 16, "function conformance")
        out += _uint(a.send_max, 2, "send frame max")
        out += _uint(a.recv_max, 2, "receive frame max")
        out.append(_u8(a.recv_window, "receive window"))
        out += _uint(a.apdu_max, 2, "APDU max")
        out += _uint(a.timeout_s, 4, "connection timeout")
        out.append(_u8(a.result, "connect result"))
        if a.security is None:
            out.append(0)
        else:
            out.append(1)
            _octets(out, a.security[0], "server random number")
            _octets(out, a.security[1], "server signature")
    elif isinstance(a, ReleaseResponse):
        out += bytes((131, _u8(a.piid_acd, "PIID-ACD"), _u8(a.result, "release result")))
    elif isinstance(a, ReleaseNotification):
        out += bytes((132, _u8(a.piid_acd, "PIID-ACD")))
        _dts(out, a.connected_at)
        _dts(out, a.now)
    elif isinstance(a, GetResponseNormal):
        out += bytes((133, 1, _u8(a.piid_acd, "PIID-ACD")))
        _a_result_normal(out, a.result)
    elif isinstance(a, GetResponseNormalList | ReportNotificationList):
        out += bytes(
            (
                133 if isinstance(a, GetResponseNormalList) else 136,
                2 if isinstance(a, GetResponseNormalList) else 1,
            )
        )
        out.append(_u8(a.piid_acd, "PIID-ACD"))
        put_length(out, len(a.results))
        for r in a.results:
            _a_result_normal(out, r)
    elif isinstance(a, GetResponseRecord):
        out += bytes((133, 3, _u8(a.piid_acd, "PIID-ACD")))
        _a_result_record(out, a.result)
    elif isinstance(a, ReportNotificationRecordList):
        out += bytes((136, 2, _u8(a.piid_acd, "PIID-ACD")))
        put_length(out, len(a.results))
        for rr in a.results:
            _a_result_record(out, rr)
    elif isinstance(a, SetResponseNormal):
        out += bytes((134, 1, _u8(a.piid_acd, "PIID-ACD")))
        out += a.oad.to_bytes()
        out.append(_u8(a.dar.code, "DAR"))
    elif isinstance(a, SetResponseNormalList):
        out += bytes((134, 2, _u8(a.piid_acd, "PIID-ACD")))
        put_length(out, len(a.results))
        for oad, dar in a.results:
            out += oad.to_bytes()
            out.append(_u8(dar.code, "DAR"))
    elif isinstance(a, ActionResponse):
        out += bytes((135, 1, _u8(a.piid_acd, "PIID-ACD")))
        _action_result(out, a.omd, a.dar, a.data)
    elif isinstance(a, ActionResponseList):
        out += bytes((135, 2, _u8(a.piid_acd, "PIID-ACD")))
        put_length(out, len(a.results))
        for omd, dar, ret in a.results:
            _action_result(out, omd, dar, ret)
    elif isinstance(a, ErrorResponse):
        out += bytes((238, _u8(a.piid_acd, "PIID-ACD"), _u8(a.kind, "error kind")))
    elif isinstance(a, LinkRequest):
        out += bytes((1, _u8(a.piid_acd, "PIID-ACD"), _u8(a.kind, "link request kind")))
        out += _uint(a.heartbeat_s, 2, "heartbeat period")
        _dt(out, a.time)
        return bytes(out)
    elif isinstance(a, LinkResponse):
        out += bytes((129, _u8(a.piid, "PIID"), _u8(a.result, "link result")))
        _dt(out, a.request_time)
        _dt(out, a.received_time)
        _dt(out, a.response_time)
        return bytes(out)
    elif isinstance(a, SecurityRequest):
        out.append(16)
        out.append(1 if a.ciphered else 0)
        _octets(out, a.data, "security APDU")
        ver = a.verify
        if isinstance(ver, SidMac):
            out.append(0)
            out += _uint(ver.sid.ident, 4, "SID identifier")
            _octets(out, ver.sid.extra, "SID additional data")
            _octets(out, ver.mac, "MAC")
        elif isinstance(ver, bytes):
            out.append(1)
            _octets(out, ver, "RN")
        elif isinstance(ver, RnMac):
            out.append(2)
            _octets(out, ver.rn, "RN")
            _octets(out, ver.mac, "MAC")
        elif isinstance(ver, SID):
            out.append(3)
            out += _uint(ver.ident, 4, "SID identifier")
            _octets(out, ver.extra, "SID additional data")
        else:
            raise EncodeError(f"SECURITY-Request verification {type(ver).__name__}")
        return bytes(out)
    elif isinstance(a, SecurityResponse):
        out.append(144)
        if isinstance(a.data, Dar):
            out.append(2)
            out.append(_u8(a.data.code, "DAR"))
        else:
            out.append(1 if a.ciphered else 0)
            _octets(out, a.data, "security APDU")
        if a.mac is None:
            out.append(0)
        else:
            out += b"\x01\x00"
            _octets(out, a.mac, "MAC")
        return bytes(out)
    else:
        raise EncodeError(f"not an APDU: {type(a).__name__}")
    if is_server_apdu(a):
        _server_tail(out, a)
    else:
        _time_tag(out, getattr(a, "time_tag", None))
    return bytes(out)


def _action_result(out: bytearray, omd: OMD, dar: Dar, d: Data | None) -> None:
    out += omd.to_bytes()
    out.append(_u8(dar.code, "DAR"))
    if d is None:
        out.append(0)
    else:
        out.append(1)
        put_data(out, d)


# --- decoding -----------------------------------------------------------------------------


def _r_dts(r: Reader, what: str) -> DateTimeS:
    return r.date_time_s(what)


def _r_dt(r: Reader, what: str) -> DateTime:
    b = r.take(10, what)
    return DateTime(b[0] << 8 | b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8] << 8 | b[9])


def _optional(r: Reader, what: str) -> bool:
    at = r.pos
    flag = r.u8(what)
    if flag > 1:
        r.fail(f"{what}: OPTIONAL flag {flag} is neither 0 nor 1", at)
    return flag == 1


def _r_time_tag(r: Reader) -> TimeTag | None:
    if not _optional(r, "TimeTag"):
        return None
    return TimeTag(_r_dts(r, "TimeTag send time"), r.ti("TimeTag delay"))


def _r_result(r: Reader) -> Data | Dar:
    at = r.pos
    choice = r.u8("Get-Result choice")
    if choice == 0:
        return Dar(r.u8("DAR"))
    if choice == 1:
        return read_data(r)
    r.fail(f"Get-Result: unknown choice {choice}", at)


def _r_a_result_normal(r: Reader) -> AResultNormal:
    return AResultNormal(r.oad("A-ResultNormal OAD"), _r_result(r))


def _r_a_result_record(r: Reader) -> AResultRecord:
    oad = r.oad("A-ResultRecord OAD")
    n = r.count("RCSD")
    rcsd = tuple(read_csd(r) for _ in range(n))
    at = r.pos
    choice = r.u8("A-ResultRecord choice")
    if choice == 0:
        return AResultRecord(oad, rcsd, Dar(r.u8("DAR")))
    if choice != 1:
        r.fail(f"A-ResultRecord: unknown choice {choice}", at)
    rows = r.count("record rows")
    return AResultRecord(
        oad, rcsd, tuple(tuple(read_data(r) for _ in range(n)) for _ in range(rows))
    )


def _r_follow(r: Reader) -> FollowReport | None:
    if not _optional(r, "FollowReport"):
        return None
    at = r.pos
    kind = r.u8("FollowReport choice")
    n = r.count("FollowReport results")
    if kind == 1:
        return FollowReport(1, tuple(_r_a_result_normal(r) for _ in range(n)))
    if kind == 2:
        return FollowReport(2, tuple(_r_a_result_record(r) for _ in range(n)))
    r.fail(f"FollowReport: unknown choice {kind}", at)


def _r_oads(r: Reader, what: str) -> tuple[OAD, ...]:
    n = r.count(what)
    return tuple(r.oad(what) for _ in range(n))


def _r_action_result(r: Reader) -> tuple[OMD, Dar, Data | None]:
    omd = r.omd("ActionResponse OMD")
    dar = Dar(r.u8("DAR"))
    data = read_data(r) if _optional(r, "ActionResponse data") else None
    return omd, dar, data


def _choice_error(r: Reader, service: str, choice: int, at: int) -> ApduDecodeError:
    return ApduDecodeError(f"{service}: choice {choice} is not supported", r.base + at)


def _decode_client(r: Reader, tag: int) -> Apdu:
    if tag == 2:
        p = r.u8("PIID")
        version = r.u16("protocol version")
        pc = r.take(8, "protocol conformance")
        fc = r.take(16, "function conformance")
        send_max = r.u16("send frame max")
        recv_max = r.u16("receive frame max")
        window = r.u8("receive window")
        apdu_max = r.u16("APDU max")
        timeout = r.u32("connection timeout")
        at = r.pos
        kind = r.u8("connect mechanism")
        if kind == 0:
            mech = ConnectMechanism()
        elif kind == 1:
            pw = r.octets("password")
            try:
                mech = ConnectMechanism(1, password=pw.decode("ascii"))
            except UnicodeDecodeError:
                r.fail("password: not ASCII", at + 1)
        elif kind in (2, 3):
            mech = ConnectMechanism(
                kind, ciphertext=r.octets("ciphertext"), signature=r.octets("signature")
            )
        else:
            r.fail(f"connect mechanism: unknown choice {kind}", at)
        return ConnectRequest(
            p, version, pc, fc, send_max, recv_max, window, apdu_max, timeout, mech, _r_time_tag(r)
        )
    if tag == 3:
        return ReleaseRequest(r.u8("PIID"), _r_time_tag(r))
    if tag == 110:
        return ErrorResponse(
            r.u8("PIID"), r.u8("error kind"), from_server=False, time_tag=_r_time_tag(r)
        )
    at = r.pos
    choice = r.u8("service choice")
    p = r.u8("PIID")
    if tag == 5:
        if choice == 1:
            return GetRequestNormal(p, r.oad(), _r_time_tag(r))
        if choice == 2:
            return GetRequestNormalList(p, _r_oads(r, "GetRequestNormalList OADs"), _r_time_tag(r))
        if choice == 3:
            oad = r.oad()
            rsd = read_rsd(r)
            n = r.count("RCSD")
            rcsd = tuple(read_csd(r) for _ in range(n))
            return GetRequestRecord(p, oad, rsd, rcsd, _r_time_tag(r))
        raise _choice_error(r, "GET-Request", choice, at)
    if tag == 6:
        if choice == 1:
            return SetRequestNormal(p, r.oad(), read_data(r), _r_time_tag(r))
        if choice == 2:
            n = r.count("SetRequestNormalList items")
            items = tuple((r.oad(), read_data(r)) for _ in range(n))
            return SetRequestNormalList(p, items, _r_time_tag(r))
        raise _choice_error(r, "SET-Request", choice, at)
    if tag == 7:
        if choice == 1:
            return ActionRequest(p, r.omd(), read_data(r), _r_time_tag(r))
        if choice == 2:
            n = r.count("ActionRequestList items")
            acts = tuple((r.omd(), read_data(r)) for _ in range(n))
            return ActionRequestList(p, acts, _r_time_tag(r))
        raise _choice_error(r, "ACTION-Request", choice, at)
    # tag == 8
    if choice == 1:
        return ReportResponseList(p, _r_oads(r, "ReportResponseList OADs"), _r_time_tag(r))
    if choice == 2:
        return ReportResponseRecordList(
            p, _r_oads(r, "ReportResponseRecordList OADs"), _r_time_tag(r)
        )
    raise _choice_error(r, "REPORT-Response", choice, at)


def _decode_server(r: Reader, tag: int) -> Apdu:
    a: Apdu
    if tag == 130:
        p = r.u8("PIID-ACD")
        factory = FactoryVersion(*(r.take(n, "factory version") for n in _FACTORY_SIZES))
        version = r.u16("protocol version")
        pc = r.take(8, "protocol conformance")
        fc = r.take(16, "function conformance")
        send_max = r.u16("send frame max")
        recv_max = r.u16("receive frame max")
        window = r.u8("receive window")
        apdu_max = r.u16("APDU max")
        timeout = r.u32("connection timeout")
        result = r.u8("connect result")
        sec = None
        if _optional(r, "SecurityData"):
            sec = (r.octets("server random number"), r.octets("server signature"))
        a = ConnectResponse(p, factory, version, pc, fc, send_max, recv_max, window, apdu_max,
                            timeout, result, sec)  # fmt: skip
    elif tag == 131:
        a = ReleaseResponse(r.u8("PIID-ACD"), r.u8("release result"))
    elif tag == 132:
        a = ReleaseNotification(r.u8("PIID-ACD"), _r_dts(r, "connected at"), _r_dts(r, "now"))
    elif tag == 238:
        a = ErrorResponse(r.u8("PIID-ACD"), r.u8("error kind"))
    else:
        at = r.pos
        choice = r.u8("service choice")
        p = r.u8("PIID-ACD")
        if tag == 133 and choice == 1:
            a = GetResponseNormal(p, _r_a_result_normal(r))
        elif tag == 133 and choice == 2:
            n = r.count("GetResponseNormalList results")
            a = GetResponseNormalList(p, tuple(_r_a_result_normal(r) for _ in range(n)))
        elif tag == 133 and choice == 3:
            a = GetResponseRecord(p, _r_a_result_record(r))
        elif tag == 134 and choice == 1:
            a = SetResponseNormal(p, r.oad(), Dar(r.u8("DAR")))
        elif tag == 134 and choice == 2:
            n = r.count("SetResponseNormalList results")
            a = SetResponseNormalList(p, tuple((r.oad(), Dar(r.u8("DAR"))) for _ in range(n)))
        elif tag == 135 and choice == 1:
            omd, dar, d = _r_action_result(r)
            a = ActionResponse(p, omd, dar, d)
        elif tag == 135 and choice == 2:
            n = r.count("ActionResponseNormalList results")
            a = ActionResponseList(p, tuple(_r_action_result(r) for _ in range(n)))
        elif tag == 136 and choice == 1:
            n = r.count("ReportNotificationList results")
            a = ReportNotificationList(p, tuple(_r_a_result_normal(r) for _ in range(n)))
        elif tag == 136 and choice == 2:
            n = r.count("ReportNotificationRecordList results")
            a = ReportNotificationRecordList(p, tuple(_r_a_result_record(r) for _ in range(n)))
        else:
            names = {133: "GET-Response", 134: "SET-Response", 135: "ACTION-Response",
                     136: "REPORT-Notification"}  # fmt: skip
            raise _choice_error(r, names[tag], choice, at)
    follow = _r_follow(r)
    tt = _r_time_tag(r)
    if follow is None and tt is None:
        return a
    return _with_tail(a, follow, tt)


def _with_tail(a: Apdu, follow: FollowReport | None, tt: TimeTag | None) -> Apdu:
    out: Apdu = replace(cast(Any, a), follow_report=follow, time_tag=tt)
    return out


def _decode_security(r: Reader, tag: int) -> Apdu:
    at = r.pos
    choice = r.u8("security data choice")
    if tag == 16:
        if choice > 1:
            r.fail(f"SECURITY-Request: unknown data choice {choice}", at)
        data = r.octets("security APDU")
        at = r.pos
        v = r.u8("verification choice")
        verify: SidMac | bytes | RnMac | SID
        if v == 0:
            sid = SID(r.u32("SID identifier"), r.octets("SID additional data"))
            verify = SidMac(sid, r.octets("MAC"))
        elif v == 1:
            verify = r.octets("RN")
        elif v == 2:
            verify = RnMac(r.octets("RN"), r.octets("MAC"))
        elif v == 3:
            verify = SID(r.u32("SID identifier"), r.octets("SID additional data"))
        else:
            r.fail(f"SECURITY-Request: unknown verification choice {v}", at)
        return SecurityRequest(data, verify, ciphered=choice == 1)
    if choice > 2:
        r.fail(f"SECURITY-Response: unknown data choice {choice}", at)
    body: bytes | Dar = Dar(r.u8("DAR")) if choice == 2 else r.octets("security APDU")
    mac = None
    if _optional(r, "SECURITY-Response MAC"):
        at = r.pos
        m = r.u8("MAC choice")
        if m != 0:
            r.fail(f"SECURITY-Response: unknown verification choice {m}", at)
        mac = r.octets("MAC")
    return SecurityResponse(body, mac, ciphered=choice == 1)


def decode_apdu(buf: bytes, base: int = 0) -> Apdu:
    """Exactly one APDU filling buf; ApduDecodeError (offset + base) otherwise."""
    r = Reader(bytes(buf), base=base)
    tag = r.u8("APDU tag")
    a: Apdu
    if tag in (2, 3, 5, 6, 7, 8, 110):
        a = _decode_client(r, tag)
    elif tag in (130, 131, 132, 133, 134, 135, 136, 238):
        a = _decode_server(r, tag)
    elif tag in (16, 144):
        a = _decode_security(r, tag)
    elif tag == 1:
        a = LinkRequest(r.u8("PIID-ACD"), r.u8("link request kind"), r.u16("heartbeat period"),
                        _r_dt(r, "request time"))  # fmt: skip
    elif tag == 129:
        a = LinkResponse(r.u8("PIID"), r.u8("link result"), _r_dt(r, "request time"),
                         _r_dt(r, "received time"), _r_dt(r, "response time"))  # fmt: skip
    elif tag in (9, 137):
        r.fail(f"APDU tag {tag} (PROXY) is not supported", 0)
    else:
        r.fail(f"unknown APDU tag {tag}", 0)
    r.done(type(a).__name__)
    return a
