"""The DL/T 698.45 codec: golden frames, round trips, fuzz invariant, streams, fragments, CLI."""

from __future__ import annotations

import contextlib
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.codecs.dlt698 import (
    MAX_FRAME,
    MS,
    NEED_DATA,
    OAD,
    OBJECTS,
    OMD,
    ROAD,
    RSD,
    TI,
    ActionRequest,
    ActionRequestList,
    ActionResponse,
    ActionResponseList,
    AddressType,
    ApduDecodeError,
    ApduReceived,
    ApduRejected,
    AResultNormal,
    AResultRecord,
    BadFrame,
    BitString,
    ConnectMechanism,
    ConnectRequest,
    ConnectResponse,
    Dar,
    Data,
    DateTimeS,
    DecodeError,
    Direction,
    EncodeError,
    ErrorResponse,
    FactoryVersion,
    FollowReport,
    Fragment,
    FragmentAcked,
    FragmentReceived,
    FragmentType,
    Frame,
    FrameDecodeError,
    FrameDecoder,
    GetRequestNormal,
    GetRequestNormalList,
    GetRequestRecord,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    Link,
    LinkRequest,
    LinkResponse,
    Reassembler,
    ReassemblyError,
    ReleaseNotification,
    ReleaseRequest,
    ReleaseResponse,
    ReportNotificationList,
    ReportNotificationRecordList,
    ReportResponseList,
    ReportResponseRecordList,
    RnMac,
    ScalerUnit,
    SecurityRequest,
    SecurityResponse,
    ServerAddress,
    SetRequestNormal,
    SetRequestNormalList,
    SetResponseNormal,
    SetResponseNormalList,
    Tag,
    TimeTag,
    crc16,
    decode_apdu,
    decode_data,
    decode_frame,
    encode_apdu,
    encode_data,
    encode_frame,
    frames_for,
    parse_oad,
    to_number,
)
from gateway.codecs.dlt698.axdr import (
    COMDCB,
    SID,
    Date,
    DateTime,
    Region,
    Selector1,
    Selector2,
    SelectorLast,
    SelectorSpan,
    SelectorTimeMS,
    SidMac,
    Time,
)
from gateway.codecs.dlt698.crc import GOOD_RESIDUE
from gateway.codecs.dlt698.jsonform import apdu_from_json, apdu_to_json, scaled_values
from model.drivers_dlt698 import DLT698_OAD_NAMES, resolve_oad
from tools.commands.dlt698_codec import decode_hex, encode_json

ROOT = Path(__file__).resolve().parents[2]


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- CRC -------------------------------------------------------------------------------------


def test_crc16_x25_check_value_and_residue() -> None:
    # CRC-16/X.25 (poly 0x1021 reflected, init/xorout 0xFFFF): check value of "123456789".
    assert crc16(b"123456789") == 0x906E
    assert crc16(b"") == 0x0000
    # RFC 1662: the register over data + its FCS (LSB first) ends at the "good" residue.
    msg = b"\x17\x00\x43\x05\x01\x00\x00\x00\x00\x00\x10"
    fcs = crc16(msg).to_bytes(2, "little")
    assert crc16(msg + fcs) ^ 0xFFFF == GOOD_RESIDUE


def _crc_reference(data: bytes) -> int:
    """CRC-16/X.25 bit by bit, as RFC 1662 appendix C describes it."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


@given(st.binary(max_size=300), st.binary(max_size=50))
def test_crc16_matches_a_bitwise_reference(a: bytes, b: bytes) -> None:
    assert crc16(a) == _crc_reference(a)
    # A running register continues over more data.
    assert crc16(b, crc16(a) ^ 0xFFFF) == crc16(a + b)


# --- golden frames ---------------------------------------------------------------------------

# (frame hex, source, expected APDU). Every frame's HCS and FCS are checked by decode_frame and
# its bytes re-created exactly by encode_frame(decode_frame(x)) and encode_apdu(decode_apdu(...)).
RD_ADDR = OAD(0x4001, 2, 0)
GOLDEN: list[tuple[str, str, Any]] = [
    (
        # The vector: GET-Request Normal of 4001 (communication address) to the
        # wildcard server address AAAAAAAAAAAA, client 10H, PIID 0.
        "68 17 00 43 45 AA AA AA AA AA AA 10 DA 5F 05 01 00 40 01 02 00 00 ED 03 16",
        "issue 5 part 3 (a widely used 'read address' frame)",
        GetRequestNormal(0, RD_ADDR),
    ),
    (
        # DL/T 698.45 (draft 2021-09-10) appendix H.3, quoted in hlqqlm/split698
        # app/src/dlt698/p2_process_client_apdu.cc: the station asks the address ...
        "68 17 00 43 45 AA AA AA AA AA AA 00 5B 4F 05 01 25 40 01 02 00 00 0A 92 16",
        "DL/T 698.45 appendix H.3 via hlqqlm/split698",
        GetRequestNormal(0x25, RD_ADDR),
    ),
    (
        # ... and the meter 000039200933 answers with its address as an octet-string.
        "68 21 00 C3 05 33 09 20 39 00 00 00 4A 55 85 01 25 40 01 02 00 01 09 06 00 00 39 20 09 "
        "33 00 00 B2 D8 16",
        "DL/T 698.45 appendix H.3 via hlqqlm/split698",
        GetResponseNormal(0x25, AResultNormal(RD_ADDR, Data(Tag.OCTET_STRING, h("000039200933")))),
    ),
    (
        # chitandahua/dlt698_rs src/frame.rs test_frame_from_bytes: GET F1010200, PIID 15H.
        "68 17 00 43 05 02 00 00 00 00 00 10 48 5E 05 01 15 F1 01 02 00 00 1A 00 16",
        "chitandahua/dlt698_rs src/frame.rs",
        GetRequestNormal(0x15, OAD(0xF101, 2, 0)),
    ),
    (
        # CONNECT-Request (public connection, version 0010H, all conformance bits, 1024-byte
        # frames, window 1, APDU 1024, timeout 100 s): a public DL/T 698 test tool
        # (View698.cpp, found by code search), the same APDU as the HslCommunication DLT698
        # CreateConnectApdu().
        "68 38 00 43 05 01 00 00 00 00 00 10 E0 08 02 00 00 10 FF FF FF FF FF FF FF FF FF FF FF "
        "FF FF FF FF FF FF FF FF FF FF FF FF FF 04 00 04 00 01 04 00 00 00 00 64 00 00 DB 79 16",
        "public test tool View698.cpp; HslCommunication DLT698 CreateConnectApdu",
        ConnectRequest(0, 0x0010, b"\xff" * 8, b"\xff" * 16, 1024, 1024, 1, 1024, 100),
    ),
    (
        # SECURITY-Request, plaintext GET 4001 + SID_MAC: the "§3.10 明文+MAC" example of a
        # vendor protocol document, quoted in public meter firmware (JudgeDlt698_45_HCS_FCS).
        "68 2B 00 43 05 01 00 29 01 16 20 0A FC 65 10 00 08 05 01 01 40 01 02 00 00 00 85 01 02 "
        "03 06 12 34 56 78 90 12 04 12 34 56 78 31 CC 16",
        "public DL/T 698 test tool View698.cpp / meter firmware comment",
        SecurityRequest(
            h("0501014001020000"), SidMac(SID(0x85010203, h("123456789012")), h("12345678"))
        ),
    ),
    (
        # SECURITY-Request, plaintext GET 00100201 (forward active energy, total) + RN: the
        # reference frame of a public Python meter-reading tool (_build_dlt698_read_energy_frame).
        "68 2C 00 43 05 25 01 00 00 03 02 00 7B E3 10 00 08 05 01 7D 00 10 02 01 00 01 10 00 01 "
        "02 03 04 05 06 07 08 09 0A 0B 0C 0D 0E 0F 84 66 16",
        "public meter-reading tool reference frame",
        SecurityRequest(h("05017D0010020100"), bytes(range(16))),
    ),
    (
        # ACTION-Request Normal 0010 method 1 (reset), parameter integer 0 (View698.cpp).
        "68 19 00 81 05 07 09 19 05 16 20 00 86 90 07 01 05 00 10 01 00 0F 00 00 84 7D 16",
        "public DL/T 698 test tool View698.cpp",
        ActionRequest(5, OMD(0x0010, 1), Data(Tag.INTEGER, 0)),
    ),
    (
        # ACTION-Request NormalList, two methods (View698.cpp).
        "68 20 00 81 05 07 09 19 05 16 20 00 72 EA 07 02 05 02 00 10 01 00 0F 00 00 10 02 00 0F "
        "01 00 2F 51 16",
        "public DL/T 698 test tool View698.cpp",
        ActionRequestList(
            5,
            (
                (OMD(0x0010, 1), Data(Tag.INTEGER, 0)),
                (OMD(0x0010, 2), Data(Tag.INTEGER, 1)),
            ),
        ),
    ),
    (
        # GET-Request Record: daily freeze 5004, selector 1 on 20210200 (freeze time), columns
        # 20210200 and 00100200 (View698.cpp; its date is written in BCD, decoded as is).
        "68 2F 00 81 05 07 09 19 05 16 20 00 3E F6 05 03 03 50 04 02 00 01 20 21 02 00 1C 20 16 "
        "01 20 00 00 00 02 00 20 21 02 00 00 00 10 02 00 00 2E E5 16",
        "public DL/T 698 test tool View698.cpp",
        GetRequestRecord(
            3,
            OAD(0x5004, 2),
            RSD(1, Selector1(OAD(0x2021, 2), Data(Tag.DATE_TIME_S, DateTimeS(0x2016, 1, 0x20)))),
            (OAD(0x2021, 2), OAD(0x0010, 2)),
        ),
    ),
    (
        # ACTION-Response: 6000 method 128 (add a meter to the archive) succeeded; from a public
        # DL/T 698 master tool (Frame698 "增加终端后的回复报文").
        "68 1A 00 C3 05 11 11 11 11 11 11 00 52 55 87 01 00 60 00 80 00 00 00 00 00 92 07 16",
        "public DL/T 698 master tool (Java) reply frame",
        ActionResponse(0, OMD(0x6000, 128), Dar(0)),
    ),
    (
        # ACTION-Response NormalList: two 6000 method 131 results (same tool, "删除终端").
        "68 21 00 C3 05 11 11 11 11 11 11 00 84 84 87 02 00 02 60 00 83 00 00 00 60 00 83 00 00 "
        "00 00 00 62 31 16",
        "public DL/T 698 master tool (Java) reply frame",
        ActionResponseList(0, ((OMD(0x6000, 131), Dar(0), None), (OMD(0x6000, 131), Dar(0), None))),
    ),
    (
        # GET-Response of 4103 (asset code, visible-string) from the 600888/dlt698 library's
        # documentation (device-info page): SA 000000000000, CA 0.
        "68 2B 00 C3 05 00 00 00 00 00 00 00 95 CC 85 01 00 41 03 02 00 01 0A 10 47 44 5A 4D 2D "
        "32 30 32 36 2D 30 30 30 31 32 33 00 00 42 EF 16",
        "600888/dlt698 documentation (device information)",
        GetResponseNormal(
            0, AResultNormal(OAD(0x4103, 2), Data(Tag.VISIBLE_STRING, "GDZM-2026-000123"))
        ),
    ),
]


@pytest.mark.parametrize(
    ("hexs", "source", "expected"), GOLDEN, ids=[g[1][:30] + str(i) for i, g in enumerate(GOLDEN)]
)
def test_golden_frames(hexs: str, source: str, expected: Any) -> None:
    raw = h(hexs)
    frame = decode_frame(raw)
    assert encode_frame(frame) == raw, source
    apdu = decode_apdu(frame.payload)
    assert apdu == expected, source
    assert encode_apdu(apdu) == frame.payload
    # Every golden frame is also found in a stream with garbage around it.
    dec = FrameDecoder()
    dec.receive_data(b"\xfe\xfe\x00\x68\x12" + raw + b"\x16\x68")
    assert dec.next_event() == frame
    assert dec.next_event() is NEED_DATA


def test_golden_link_fields() -> None:
    f = decode_frame(h(GOLDEN[0][0]))
    assert (f.control, f.direction, f.prm, f.function, f.role) == (
        0x43,
        Direction.CLIENT,
        1,
        3,
        "request",
    )
    assert f.server == ServerAddress(b"\xaa" * 6, AddressType.WILDCARD, 0)
    assert f.client == 0x10 and f.fragment is None and not f.scrambled
    # HCS DA 5F and FCS ED 03 of the vector are CRC-16/X.25 as computed here.
    assert crc16(h("17 00 43 45 AA AA AA AA AA AA 10")) == 0x5FDA
    assert crc16(h(GOLDEN[0][0])[1:-3]) == 0x03ED
    r = decode_frame(h(GOLDEN[2][0]))
    assert r.role == "response" and r.server.text == "000039200933"
    # The meter's address in its 4001 answer is the SA, most significant byte first.
    answer = decode_apdu(r.payload)
    assert isinstance(answer, GetResponseNormal)
    assert answer.result.result == Data(Tag.OCTET_STRING, r.server.address[::-1])
    assert ServerAddress.from_text("000039200933") == r.server


def test_wildcard_and_broadcast_matching() -> None:
    meter = ServerAddress.from_text("201601290001").address
    assert ServerAddress.from_text("AAAAAAAAAAAA", AddressType.WILDCARD).matches(meter)
    assert ServerAddress.from_text("2016012900AA", AddressType.WILDCARD).matches(meter)
    assert not ServerAddress.from_text("2016012900AB", AddressType.WILDCARD).matches(meter)
    assert ServerAddress(b"\xaa", AddressType.BROADCAST).matches(meter)
    assert ServerAddress.from_text("201601290001").matches(meter)
    assert not ServerAddress.from_text("201601290002").matches(meter)


# --- typed decode errors with offsets --------------------------------------------------------


def _corrupt(raw: bytes, at: int, value: int) -> bytes:
    b = bytearray(raw)
    b[at] = value
    return bytes(b)


def test_decode_errors_name_what_and_where() -> None:
    raw = h(GOLDEN[2][0])  # 35 bytes, SA 6 bytes: HCS at 12, APDU at 14, FCS at 32
    cases = [
        (_corrupt(raw, 0, 0x69), "start byte", 0),
        (raw[:-1] + b"\x17", "end byte", 34),
        (_corrupt(raw, 12, raw[12] ^ 1), "HCS", 12),
        (_corrupt(raw, 20, raw[20] ^ 1), "FCS", 32),
        (raw[:-2], "length field says 35 bytes, frame has 33", 1),
    ]
    for bad, what, offset in cases:
        with pytest.raises(FrameDecodeError) as ei:
            decode_frame(bad)
        assert what in ei.value.what and ei.value.offset == offset, (what, ei.value)
    # Reserved bits of L and C.
    hdr = bytearray(raw)
    hdr[2] |= 0x80
    with pytest.raises(FrameDecodeError, match="reserved bit 15"):
        decode_frame(bytes(hdr))
    # APDU errors carry the offset inside the APDU.
    with pytest.raises(ApduDecodeError) as ei:
        decode_apdu(h("85 01 25 40 01 02 00 01 09 06 00 00 39"))  # octet-string cut short
    assert ei.value.offset == 10 and "octet-string" in ei.value.what
    with pytest.raises(ApduDecodeError, match="unknown APDU tag 99") as ei:
        decode_apdu(b"\x63")
    assert ei.value.offset == 0
    with pytest.raises(ApduDecodeError, match="trailing") as ei:
        decode_apdu(h("05 01 00 40 01 02 00 00 00"))
    assert ei.value.offset == 8
    with pytest.raises(ApduDecodeError, match="unknown or unsupported type tag 7"):
        decode_data(b"\x07\x00")
    with pytest.raises(ApduDecodeError, match="bool: value 2"):
        decode_data(b"\x03\x02")
    with pytest.raises(ApduDecodeError, match="elements announced"):
        decode_data(b"\x01\x81\xff\x00")  # an array of 255 elements in 1 byte
    deep = b"\x01\x01" * 40 + b"\x00"
    with pytest.raises(ApduDecodeError, match="nesting deeper"):
        decode_data(deep)
    with pytest.raises(ApduDecodeError, match="PROXY"):
        decode_apdu(b"\x09\x01\x00")


def test_encode_errors_are_local() -> None:
    with pytest.raises(EncodeError, match="long-unsigned: 70000"):
        encode_data(Data(Tag.LONG_UNSIGNED, 70000))
    with pytest.raises(EncodeError, match="not ASCII"):
        encode_data(Data(Tag.VISIBLE_STRING, "电能表"))
    with pytest.raises(EncodeError, match=r"1\.\.16 bytes"):
        ServerAddress(b"")
    with pytest.raises(EncodeError, match="exceeds the 14-bit length"):
        encode_frame(Frame(ServerAddress(b"\x01"), 0, b"\x00" * 17000))
    with pytest.raises(EncodeError, match="3 columns, RCSD has 1"):
        encode_apdu(
            GetResponseRecord(
                0, AResultRecord(OAD(0x5004, 2), (OAD(0x2021, 2),), ((Data(Tag.NULL),) * 3,))
            )
        )
    with pytest.raises(EncodeError, match="not an OAD"):
        parse_oad("voltagex")


# --- OAD table, scaler-unit ------------------------------------------------------------------


def test_object_table_and_scaler_unit() -> None:
    # DL/T 698.45 appendix E: type, scaler and unit of attribute 2.
    expect = {
        0x0010: ("double-long-unsigned", -2, 33),  # forward active energy, kWh
        0x0000: ("double-long", -2, 33),  # combined active energy (signed)
        0x2000: ("long-unsigned", -1, 38),  # voltage, V
        0x2001: ("double-long", -3, 36),  # current, A
        0x2004: ("double-long", -1, 27),  # active power, W
        0x2005: ("double-long", -1, 31),  # reactive power, var
        0x200A: ("long", -3, 255),  # power factor
        0x200F: ("long-unsigned", -2, 47),  # frequency, Hz
    }
    for oi, (t, scaler, unit) in expect.items():
        o = OBJECTS[oi]
        assert (o.value_type, o.scaler, o.unit) == (t, scaler, unit), hex(oi)
    assert OBJECTS[0x4000].dtype == "date_time_s" and OBJECTS[0x4001].dtype == "octet-string"
    assert OBJECTS[0x8000].name == "remote_control"
    v = Data(Tag.ARRAY, tuple(Data(Tag.LONG_UNSIGNED, n) for n in (2301, 2299, 2310)))
    assert scaled_values(OAD(0x2000, 2), v) == ([230.1, 229.9, 231.0], "V")
    f = Data(Tag.LONG_UNSIGNED, 4998)
    assert scaled_values(OAD(0x200F, 2), f) == ([49.98], "Hz")
    assert decode_data(h("59 FE 21")) == Data(Tag.SCALER_UNIT, ScalerUnit(-2, 33))
    assert to_number(Data(Tag.DATE_TIME_S, DateTimeS(2025, 1, 1))) == 1735689600.0
    assert to_number(Data(Tag.OCTET_STRING, b"")) is None
    # The names the site file accepts are the codec's table names.
    for name, hexoad in DLT698_OAD_NAMES.items():
        assert str(parse_oad(name)) == hexoad, name
        assert resolve_oad(name + ".2") == str(parse_oad(name + ".2"))


# --- hypothesis strategies -------------------------------------------------------------------

u8 = st.integers(0, 255)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 2**32 - 1)
piids = u8
oads = st.builds(OAD, u16, st.integers(0, 31), u8, st.integers(0, 7))
omds = st.builds(OMD, u16, u8, u8)
roads = st.builds(ROAD, oads, st.lists(oads, max_size=3).map(tuple))
csds = st.one_of(oads, roads)
dts = st.builds(DateTimeS, u16, u8, u8, u8, u8, u8)
tis = st.builds(TI, u8, u16)
small_bytes = st.binary(max_size=20)


def _of(tag: Tag, values: st.SearchStrategy[Any]) -> st.SearchStrategy[Data]:
    return values.map(lambda v: Data(tag, v))


ascii_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=10)
SCALARS: dict[Tag, st.SearchStrategy[Data]] = {
    Tag.NULL: st.just(Data(Tag.NULL)),
    Tag.BOOL: _of(Tag.BOOL, st.booleans()),
    Tag.BIT_STRING: _of(
        Tag.BIT_STRING, st.lists(st.booleans(), max_size=20).map(BitString.from_bits)
    ),
    Tag.DOUBLE_LONG: _of(Tag.DOUBLE_LONG, st.integers(-(2**31), 2**31 - 1)),
    Tag.DOUBLE_LONG_UNSIGNED: _of(Tag.DOUBLE_LONG_UNSIGNED, u32),
    Tag.OCTET_STRING: _of(Tag.OCTET_STRING, small_bytes),
    Tag.VISIBLE_STRING: _of(Tag.VISIBLE_STRING, ascii_text),
    Tag.UTF8_STRING: _of(Tag.UTF8_STRING, st.text(max_size=5)),
    Tag.INTEGER: _of(Tag.INTEGER, st.integers(-128, 127)),
    Tag.LONG: _of(Tag.LONG, st.integers(-32768, 32767)),
    Tag.UNSIGNED: _of(Tag.UNSIGNED, u8),
    Tag.LONG_UNSIGNED: _of(Tag.LONG_UNSIGNED, u16),
    Tag.LONG64: _of(Tag.LONG64, st.integers(-(2**63), 2**63 - 1)),
    Tag.LONG64_UNSIGNED: _of(Tag.LONG64_UNSIGNED, st.integers(0, 2**64 - 1)),
    Tag.ENUM: _of(Tag.ENUM, u8),
    Tag.FLOAT32: _of(Tag.FLOAT32, st.floats(width=32, allow_nan=False)),
    Tag.FLOAT64: _of(Tag.FLOAT64, st.floats(allow_nan=False)),
    Tag.DATE_TIME: _of(Tag.DATE_TIME, st.builds(DateTime, u16, u8, u8, u8, u8, u8, u8, u16)),
    Tag.DATE: _of(Tag.DATE, st.builds(Date, u16, u8, u8, u8)),
    Tag.TIME: _of(Tag.TIME, st.builds(Time, u8, u8, u8)),
    Tag.DATE_TIME_S: _of(Tag.DATE_TIME_S, dts),
    Tag.OI: _of(Tag.OI, u16),
    Tag.OAD: _of(Tag.OAD, oads),
    Tag.ROAD: _of(Tag.ROAD, roads),
    Tag.OMD: _of(Tag.OMD, omds),
    Tag.TI: _of(Tag.TI, tis),
    Tag.TSA: _of(Tag.TSA, small_bytes),
    Tag.MAC: _of(Tag.MAC, small_bytes),
    Tag.RN: _of(Tag.RN, small_bytes),
    Tag.SCALER_UNIT: _of(Tag.SCALER_UNIT, st.builds(ScalerUnit, st.integers(-128, 127), u8)),
    Tag.CSD: _of(Tag.CSD, csds),
    Tag.SID: _of(Tag.SID, st.builds(SID, u32, small_bytes)),
    Tag.SID_MAC: _of(Tag.SID_MAC, st.builds(SidMac, st.builds(SID, u32, small_bytes), small_bytes)),
    Tag.COMDCB: _of(Tag.COMDCB, st.builds(COMDCB, u8, u8, u8, u8, u8)),
    Tag.RCSD: _of(Tag.RCSD, st.lists(csds, max_size=3).map(tuple)),
}
scalar_data = st.one_of(*SCALARS.values())
regions = st.builds(Region, u8, scalar_data, scalar_data)
ms = st.one_of(
    st.builds(MS, st.sampled_from([0, 1])),
    st.lists(u8, max_size=3).map(lambda v: MS(2, tuple(v))),
    st.lists(small_bytes, max_size=3).map(lambda v: MS(3, tuple(v))),
    st.lists(u16, max_size=3).map(lambda v: MS(4, tuple(v))),
    st.tuples(st.sampled_from([5, 6, 7]), st.lists(regions, max_size=2)).map(
        lambda t: MS(t[0], tuple(t[1]))
    ),
)
sel2 = st.builds(Selector2, oads, scalar_data, scalar_data, scalar_data)
rsds = st.one_of(
    st.just(RSD(0)),
    st.builds(Selector1, oads, scalar_data).map(lambda v: RSD(1, v)),
    sel2.map(lambda v: RSD(2, v)),
    st.lists(sel2, max_size=2).map(lambda v: RSD(3, tuple(v))),
    st.tuples(st.sampled_from([4, 5]), st.builds(SelectorTimeMS, dts, ms)).map(lambda t: RSD(*t)),
    st.tuples(st.sampled_from([6, 7, 8]), st.builds(SelectorSpan, dts, dts, tis, ms)).map(
        lambda t: RSD(*t)
    ),
    u8.map(lambda v: RSD(9, v)),
    st.builds(SelectorLast, u8, ms).map(lambda v: RSD(10, v)),
)
data = st.recursive(
    st.one_of(
        scalar_data,
        regions.map(lambda v: Data(Tag.REGION, v)),
        ms.map(lambda v: Data(Tag.MS, v)),
        rsds.map(lambda v: Data(Tag.RSD, v)),
    ),
    lambda inner: st.tuples(
        st.sampled_from([Tag.ARRAY, Tag.STRUCTURE]), st.lists(inner, max_size=4)
    ).map(lambda t: Data(t[0], tuple(t[1]))),
    max_leaves=12,
)
dars = st.one_of(st.sampled_from([0, 1, 3, 4, 6, 7, 8, 255]), u8).map(Dar)
results = st.one_of(data, dars)
time_tags = st.none() | st.builds(TimeTag, dts, tis)
a_normal = st.builds(AResultNormal, oads, results)


@st.composite
def a_records(draw: st.DrawFn) -> AResultRecord:
    rcsd = tuple(draw(st.lists(csds, max_size=3)))
    if not rcsd or draw(st.booleans()):
        return AResultRecord(draw(oads), rcsd, draw(dars))
    rows = draw(
        st.lists(st.lists(data, min_size=len(rcsd), max_size=len(rcsd)).map(tuple), max_size=3)
    )
    return AResultRecord(draw(oads), rcsd, tuple(rows))


follows = st.none() | st.one_of(
    st.lists(a_normal, max_size=2).map(lambda v: FollowReport(1, tuple(v))),
    st.lists(a_records(), max_size=2).map(lambda v: FollowReport(2, tuple(v))),
)
mechs = st.one_of(
    st.just(ConnectMechanism()),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8).map(
        lambda p: ConnectMechanism(1, password=p)
    ),
    st.tuples(st.sampled_from([2, 3]), small_bytes, small_bytes).map(
        lambda t: ConnectMechanism(t[0], ciphertext=t[1], signature=t[2])
    ),
)
datetimes = st.builds(DateTime, u16, u8, u8, u8, u8, u8, u8, u16)
factories = st.builds(
    FactoryVersion, *(st.binary(min_size=n, max_size=n) for n in (4, 4, 6, 4, 6, 8))
)
tuples_of = lambda s: st.lists(s, max_size=3).map(tuple)  # noqa: E731

APDU_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "LinkRequest": st.builds(LinkRequest, piids, u8, u16, datetimes),
    "LinkResponse": st.builds(LinkResponse, piids, u8, datetimes, datetimes, datetimes),
    "ConnectRequest": st.builds(
        ConnectRequest,
        piids,
        u16,
        st.binary(min_size=8, max_size=8),
        st.binary(min_size=16, max_size=16),
        u16,
        u16,
        u8,
        u16,
        u32,
        mechs,
        time_tags,
    ),
    "ConnectResponse": st.builds(
        ConnectResponse,
        piids,
        factories,
        u16,
        st.binary(min_size=8, max_size=8),
        st.binary(min_size=16, max_size=16),
        u16,
        u16,
        u8,
        u16,
        u32,
        u8,
        st.none() | st.tuples(small_bytes, small_bytes),
        follows,
        time_tags,
    ),
    "ReleaseRequest": st.builds(ReleaseRequest, piids, time_tags),
    "ReleaseResponse": st.builds(ReleaseResponse, piids, u8, follows, time_tags),
    "ReleaseNotification": st.builds(ReleaseNotification, piids, dts, dts, follows, time_tags),
    "GetRequestNormal": st.builds(GetRequestNormal, piids, oads, time_tags),
    "GetRequestNormalList": st.builds(GetRequestNormalList, piids, tuples_of(oads), time_tags),
    "GetRequestRecord": st.builds(GetRequestRecord, piids, oads, rsds, tuples_of(csds), time_tags),
    "GetResponseNormal": st.builds(GetResponseNormal, piids, a_normal, follows, time_tags),
    "GetResponseNormalList": st.builds(
        GetResponseNormalList, piids, tuples_of(a_normal), follows, time_tags
    ),
    "GetResponseRecord": st.builds(GetResponseRecord, piids, a_records(), follows, time_tags),
    "SetRequestNormal": st.builds(SetRequestNormal, piids, oads, data, time_tags),
    "SetRequestNormalList": st.builds(
        SetRequestNormalList, piids, tuples_of(st.tuples(oads, data)), time_tags
    ),
    "SetResponseNormal": st.builds(SetResponseNormal, piids, oads, dars, follows, time_tags),
    "SetResponseNormalList": st.builds(
        SetResponseNormalList, piids, tuples_of(st.tuples(oads, dars)), follows, time_tags
    ),
    "ActionRequest": st.builds(ActionRequest, piids, omds, data, time_tags),
    "ActionRequestList": st.builds(
        ActionRequestList, piids, tuples_of(st.tuples(omds, data)), time_tags
    ),
    "ActionResponse": st.builds(
        ActionResponse, piids, omds, dars, st.none() | data, follows, time_tags
    ),
    "ActionResponseList": st.builds(
        ActionResponseList,
        piids,
        tuples_of(st.tuples(omds, dars, st.none() | data)),
        follows,
        time_tags,
    ),
    "ReportNotificationList": st.builds(
        ReportNotificationList, piids, tuples_of(a_normal), follows, time_tags
    ),
    "ReportNotificationRecordList": st.builds(
        ReportNotificationRecordList, piids, tuples_of(a_records()), follows, time_tags
    ),
    "ReportResponseList": st.builds(ReportResponseList, piids, tuples_of(oads), time_tags),
    "ReportResponseRecordList": st.builds(
        ReportResponseRecordList, piids, tuples_of(oads), time_tags
    ),
    "ErrorResponse": st.builds(ErrorResponse, piids, u8, st.just(True), follows, time_tags),
    "ErrorResponse(client)": st.builds(
        ErrorResponse, piids, u8, st.just(False), st.none(), time_tags
    ),
    "SecurityRequest": st.builds(
        SecurityRequest,
        small_bytes,
        st.one_of(
            small_bytes,
            st.builds(RnMac, small_bytes, small_bytes),
            st.builds(SID, u32, small_bytes),
            st.builds(SidMac, st.builds(SID, u32, small_bytes), small_bytes),
        ),
        st.booleans(),
    ),
    "SecurityResponse": st.builds(
        SecurityResponse, st.one_of(small_bytes, dars), st.none() | small_bytes, st.booleans()
    ).filter(lambda s: not (isinstance(s.data, Dar) and s.ciphered)),
}
APDUS = st.one_of(*APDU_STRATEGIES.values())

servers = st.builds(
    ServerAddress,
    st.binary(min_size=1, max_size=16),
    st.sampled_from(list(AddressType)),
    st.integers(0, 3),
)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    frag = draw(
        st.none() | st.builds(Fragment, st.integers(0, 4095), st.sampled_from(list(FragmentType)))
    )
    if frag is not None and frag.type == FragmentType.ACK:
        payload = b""
    else:
        payload = draw(st.binary(min_size=1, max_size=40))
    return Frame(
        draw(servers),
        draw(u8),
        payload,
        draw(st.sampled_from(list(Direction))),
        draw(st.integers(0, 1)),
        draw(st.sampled_from([1, 3])),
        draw(st.booleans()),
        frag,
    )


# --- round trips -----------------------------------------------------------------------------


@given(data)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_data_round_trip(d: Data) -> None:
    assert decode_data(encode_data(d)) == d


@pytest.mark.parametrize("tag", [t for t in Tag], ids=lambda t: t.type_name)
def test_every_data_type_round_trips(tag: Tag) -> None:
    @given(
        data.filter(lambda d: d.tag == tag)
        if tag in (Tag.ARRAY, Tag.STRUCTURE)
        else _scalar_for(tag)
    )
    @settings(
        max_examples=30, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
    )
    def check(d: Data) -> None:
        assert d.tag == tag
        assert decode_data(encode_data(d)) == d

    check()


def _scalar_for(tag: Tag) -> st.SearchStrategy[Data]:
    if tag == Tag.REGION:
        return regions.map(lambda v: Data(Tag.REGION, v))
    if tag == Tag.MS:
        return ms.map(lambda v: Data(Tag.MS, v))
    if tag == Tag.RSD:
        return rsds.map(lambda v: Data(Tag.RSD, v))
    return SCALARS[tag]


@given(APDUS)
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_apdu_round_trip(a: Any) -> None:
    assert decode_apdu(encode_apdu(a)) == a


@pytest.mark.parametrize("name", sorted(APDU_STRATEGIES))
def test_every_apdu_type_round_trips(name: str) -> None:
    @given(APDU_STRATEGIES[name])
    @settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
    def check(a: Any) -> None:
        assert decode_apdu(encode_apdu(a)) == a
        js = json.loads(json.dumps(apdu_to_json(a)))
        assert apdu_from_json(js) == a

    check()


@given(frames())
@settings(max_examples=300)
def test_frame_round_trip(f: Frame) -> None:
    raw = encode_frame(f)
    assert decode_frame(raw) == f
    dec = FrameDecoder()
    for i in range(len(raw)):
        dec.receive_data(raw[i : i + 1])
    assert dec.next_event() == f


def test_scrambled_user_data() -> None:
    f = Frame(
        ServerAddress.from_text("000000000001"),
        0x10,
        encode_apdu(GetRequestNormal(1, RD_ADDR)),
        scrambled=True,
    )
    raw = encode_frame(f)
    assert raw[3] & 0x08
    # DL/T 698.45-2017 5.3: with SC set each user data byte is sent +33H.
    assert raw[14:-3] == bytes((b + 0x33) & 0xFF for b in f.payload)
    assert decode_frame(raw) == f


# --- the fuzz invariant ----------------------------------------------------------------------


@given(st.binary(max_size=300))
@settings(max_examples=1500)
def test_fuzz_random_bytes_give_frames_or_typed_errors(blob: bytes) -> None:
    for fn in (decode_frame, decode_apdu, decode_data):
        with contextlib.suppress(DecodeError):
            fn(blob)
    for chunks in ([blob], [blob[i : i + 1] for i in range(len(blob))]):
        link = Link(max_frame=512, max_apdu=1024)
        for c in chunks:
            link.receive_data(c)
            while (ev := link.next_event()) is not NEED_DATA:
                assert isinstance(
                    ev, ApduReceived | ApduRejected | BadFrame | FragmentReceived | FragmentAcked
                )
            assert link.decoder.buffered <= 512 + len(c)


@given(
    st.sampled_from([g[0] for g in GOLDEN]),
    st.integers(0, 200),
    st.integers(0, 255),
    st.binary(max_size=30),
)
@settings(max_examples=800)
def test_fuzz_mutated_frames(hexs: str, at: int, value: int, junk: bytes) -> None:
    raw = bytearray(h(hexs))
    raw[at % len(raw)] = value
    for blob in (bytes(raw), bytes(raw) + junk, junk + bytes(raw)):
        try:
            f = decode_frame(blob)
            decode_apdu(f.payload)
        except DecodeError:
            pass
        dec = FrameDecoder()
        for i in range(len(blob)):
            dec.receive_data(blob[i : i + 1])
            while (ev := dec.next_event()) is not NEED_DATA:
                assert isinstance(ev, Frame | BadFrame)
                if isinstance(ev, BadFrame):
                    assert isinstance(ev.error, FrameDecodeError)


def test_stream_resynchronises_counts_and_stays_bounded() -> None:
    good1, good2 = h(GOLDEN[0][0]), h(GOLDEN[2][0])
    bad = bytearray(good2)
    bad[20] ^= 0xFF  # FCS failure, header intact
    garbage = os.urandom(5000).replace(b"\x68", b"\x00").replace(b"\xfe", b"\x00")
    stream = garbage + good1 + b"\x68\x68\x68" + bytes(bad) + good2 + garbage + good1
    for chunk in (len(stream), 1, 7):
        dec = FrameDecoder()
        got: list[Frame | BadFrame] = []
        peak = 0
        for i in range(0, len(stream), chunk):
            dec.receive_data(stream[i : i + chunk])
            peak = max(peak, dec.buffered)
            while (ev := dec.next_event()) is not NEED_DATA:
                got.append(ev)  # type: ignore[arg-type]
        frames_ = [e for e in got if isinstance(e, Frame)]
        assert frames_ == [decode_frame(good1), decode_frame(good2), decode_frame(good1)]
        assert [type(e) for e in got].count(BadFrame) == 1 and dec.bad_frames == 1
        assert "FCS" in str(dec.last_error)
        assert dec.garbage_bytes >= 2 * len(garbage)
        if chunk < 10:
            assert peak <= len(good2) + chunk
    # Pure garbage is never buffered.
    dec = FrameDecoder()
    dec.receive_data(b"\x00" * 100_000)
    assert dec.buffered == 0 and dec.next_event() is NEED_DATA


def test_large_length_waits_bounded() -> None:
    # A header claiming 16 kB is awaited only up to max_frame; one beyond it is garbage.
    dec = FrameDecoder(max_frame=1000)
    f = Frame(ServerAddress(b"\x01"), 1, b"\x05" * 2000)
    dec.receive_data(encode_frame(f))
    assert dec.next_event() is NEED_DATA
    assert dec.buffered == 0 and dec.garbage_bytes > 2000


# --- fragmentation ---------------------------------------------------------------------------


def _big_response(n: int = 40) -> GetResponseNormalList:
    return GetResponseNormalList(
        7,
        tuple(
            AResultNormal(
                OAD(0x2000 + i, 2),
                Data(Tag.ARRAY, tuple(Data(Tag.DOUBLE_LONG, i * k) for k in range(4))),
            )
            for i in range(n)
        ),
    )


def test_fragments_reassemble_with_confirmations() -> None:
    resp = _big_response()
    server = ServerAddress.from_text("000000000001")
    frames_ = frames_for(resp, server, 0x10, direction=Direction.SERVER, max_frame=100)
    assert len(frames_) > 5 and all(len(f) <= 100 for f in frames_)
    first = decode_frame(frames_[0])
    assert first.control == 0xE3 and first.fragment == Fragment(0, FragmentType.FIRST)
    assert decode_frame(frames_[-1]).fragment.type == FragmentType.LAST  # type: ignore[union-attr]
    client, server_side = Link(), Link()
    got = None
    for i, raw in enumerate(frames_):
        client.receive_data(raw)
        ev = client.next_event()
        if i < len(frames_) - 1:
            assert isinstance(ev, FragmentReceived)
            ack = decode_frame(ev.ack)
            # The receiver confirms each fragment (DL/T 698.45-2017 5.4) by its sequence number.
            assert (
                ack.fragment == Fragment(i, FragmentType.ACK) and ack.direction == Direction.CLIENT
            )
            server_side.receive_data(ev.ack)
            acked = server_side.next_event()
            assert isinstance(acked, FragmentAcked)
            assert acked.frame.fragment == Fragment(i, FragmentType.ACK)
        else:
            assert isinstance(ev, ApduReceived)
            got = ev.apdu
    assert got == resp


def test_reassembly_is_bounded_and_ordered() -> None:
    payload = encode_apdu(_big_response())
    server = ServerAddress(b"\x01")
    parts = [
        Frame(server, 0, p, Direction.SERVER, fragment=f)
        for f, p in __import__("gateway.codecs.dlt698.frame", fromlist=["split_apdu"]).split_apdu(
            payload, 50
        )
    ]
    ra = Reassembler(max_apdu=200)
    with pytest.raises(ReassemblyError, match="exceeds 200"):
        for p in parts:
            ra.feed(p)
    assert not ra.active
    ra = Reassembler()
    with pytest.raises(ReassemblyError, match="without a first"):
        ra.feed(parts[1])
    ra.feed(parts[0])
    with pytest.raises(ReassemblyError, match="out of order"):
        ra.feed(parts[2])
    link = Link(max_apdu=200)
    rejected = []
    for p in parts:
        link.receive_data(encode_frame(p))
        ev = link.next_event()
        if isinstance(ev, ApduRejected):
            rejected.append(ev)
    assert rejected and isinstance(rejected[0].error, ReassemblyError)


# --- JSON and the CLI ------------------------------------------------------------------------


def test_decode_cli_names_fields_units_and_errors() -> None:
    resp = GetResponseNormalList(
        1,
        (
            AResultNormal(
                OAD(0x2000, 2),
                Data(Tag.ARRAY, tuple(Data(Tag.LONG_UNSIGNED, v) for v in (2301, 2299, 2310))),
            ),
            AResultNormal(OAD(0x200F, 2), Dar(4)),
        ),
    )
    raw = frames_for(
        resp, ServerAddress.from_text("000000000001"), 0x10, direction=Direction.SERVER
    )[0]
    entries, ok = decode_hex([raw.hex(" ")])
    assert ok
    a = entries[0]["apdu"]
    assert a["type"] == "GetResponseNormalList"
    assert (
        a["results"][0]["values"] == {"A": 230.1, "B": 229.9, "C": 231.0}
        and a["results"][0]["unit"] == "V"
    )
    assert a["results"][1]["result"] == {"dar": 4, "name": "object-undefined"}
    assert entries[0]["frame"]["role"] == "response"
    # A bad FCS: the typed error and its byte offset.
    bad = bytearray(raw)
    bad[-3] ^= 1
    entries, ok = decode_hex([bad.hex()])
    assert (
        not ok
        and entries[0]["error"] == "FrameDecodeError"
        and entries[0]["offset"] == len(raw) - 3
    )
    # A good frame with a broken APDU: the offset is counted from the frame's first byte.
    f = Frame(ServerAddress(b"\x01"), 0, h("85 01 25 40 01 02 00 01 09 06 00"))
    entries, ok = decode_hex([encode_frame(f).hex()])
    assert (
        not ok and entries[0]["error"] == "ApduDecodeError" and entries[0]["offset"] == 9 + 10
    )  # APDU at byte 9


def test_encode_cli_shorthands_and_round_trip() -> None:
    (raw,) = encode_json(
        {"get": "40010200", "server": {"address": "AAAAAAAAAAAA", "type": "wildcard"}, "piid": 0}
    )
    assert raw == h(GOLDEN[0][0])
    (raw,) = encode_json(
        {
            "connect": {"version": 16, "apdu_max": 1024, "timeout_s": 100},
            "server": "000000000001",
            "piid": 0,
        }
    )
    assert raw == h(GOLDEN[4][0])
    for hexs, _, _ in GOLDEN:
        entries, ok = decode_hex([hexs])
        assert ok
        assert encode_json(json.loads(json.dumps(entries[0]))) == [h(hexs)]
    frames_ = encode_json(
        {
            "get": ["voltage", "current", "active_power", "frequency"],
            "server": "000000000001",
            "max_frame": 30,
        }
    )
    assert len(frames_) > 1
    entries, ok = decode_hex([f.hex() for f in frames_])
    assert ok and entries[-1]["apdu"]["oads"] == ["20000200", "20010200", "20040200", "200F0200"]
    with pytest.raises(EncodeError, match="give one of"):
        encode_json({"nothing": 1})


def _vpp(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, input=stdin,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def test_vpp_decode_and_encode_commands() -> None:
    out = _vpp("decode", "dlt698", GOLDEN[2][0])
    assert out.returncode == 0, out.stderr
    js = json.loads(out.stdout)
    assert js["apdu"]["result"]["result"] == {"type": "octet-string", "value": "000039200933"}
    out = _vpp("decode", "dlt698", *GOLDEN[0][0].split())  # one byte per argument
    assert out.returncode == 0 and json.loads(out.stdout)["apdu"]["oad"] == "40010200"
    out = _vpp("decode", "dlt698", "-", stdin=GOLDEN[0][0] + "\n" + GOLDEN[2][0][:-2] + "17\n")
    lines = out.stdout.splitlines()
    assert (
        out.returncode == 1
        and len(lines) == 2
        and "end byte is 17H" in json.loads(lines[1])["what"]
    )
    out = _vpp(
        "encode",
        "dlt698",
        '{"get": "40010200", "piid": 0, "server": {"address": "AAAAAAAAAAAA", "type": "wildcard"}}',
    )
    assert out.returncode == 0 and out.stdout.strip() == GOLDEN[0][0]
    out = _vpp("encode", "dlt698", '{"set": {"oad": "voltage", "value": {"type": "oops"}}}')
    assert out.returncode == 2 and "unknown A-XDR type" in out.stderr


def test_decode_and_encode_verbs_are_shared_with_other_protocols() -> None:
    import argparse

    from tools.commands._codec_cli import protocols as _protocols
    from tools.commands.dlt698_codec import register

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    # Another protocol's module registered first, with the same pattern.
    _protocols(sub, "decode", "decode frames").add_parser("iec101").set_defaults(func="iec101")
    register(sub)
    _protocols(sub, "encode", "encode frames").add_parser("dlt645").set_defaults(func="dlt645")
    assert parser.parse_args(["decode", "iec101"]).func == "iec101"
    assert parser.parse_args(["encode", "dlt645"]).func == "dlt645"
    ns = parser.parse_args(["decode", "dlt698", "68", "17"])
    assert ns.protocol == "dlt698" and ns.hex == ["68", "17"] and callable(ns.func)
    assert callable(parser.parse_args(["encode", "dlt698", "{}"]).func)


def test_float_encoding_is_ieee_big_endian() -> None:
    assert encode_data(Data(Tag.FLOAT32, 1.5)) == b"\x17" + struct.pack(">f", 1.5)
    assert encode_data(Data(Tag.LONG, -2)) == h("10 FF FE")
    assert encode_data(Data(Tag.OCTET_STRING, b"\x00" * 200))[:3] == h("09 81 C8")
    assert MAX_FRAME == 16385
