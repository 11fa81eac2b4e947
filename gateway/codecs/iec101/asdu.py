"""ASDUs of IEC 60870-5-101 (clause 7): data unit identifier and information objects.

    type identification    1 octet
    variable structure     1 octet   SQ (bit 8) and number of objects/elements (bits 1..7)
    cause of transmission  1 or 2    T (bit 8), P/N (bit 7), cause (bits 1..6) [, originator]
    common address         1 or 2    (0xFF / 0xFFFF broadcast)
    information objects              IOA (1, 2 or 3 octets) + elements [+ time tag]
                                     SQ = 1: one IOA, then N elements at IOA, IOA+1, ...

The sizes of COT, common address and IOA are system parameters (`AsduParams`); IEC 60870-5-104
fixes them at 2, 2 and 3, which `AsduParams.iec104()` gives. Multi-octet fields are least
significant octet first (IEC 60870-5-4 mode 1).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.codecs.iec101.errors import ASDUError, LocalProtocolError
from gateway.codecs.iec101.types import (
    Bitstring,
    BitstringCommand,
    Cause,
    ClockSync,
    CounterInterrogation,
    CP16Time2a,
    CP24Time2a,
    CP56Time2a,
    DelayAcquisition,
    DoubleCommand,
    DoublePoint,
    EndOfInitialisation,
    InformationObject,
    IntegratedTotal,
    Interrogation,
    Normalized,
    ReadCommand,
    RegulatingStep,
    ResetProcess,
    Scaled,
    SetpointFloat,
    SetpointNormalized,
    SetpointScaled,
    ShortFloat,
    SingleCommand,
    SinglePoint,
    StepPosition,
    TestCommand,
    TypeID,
)

__all__ = [
    "ASDU",
    "AsduParams",
    "TypeSpec",
    "decode_asdu",
    "encode_asdu",
    "header_size",
    "max_objects",
    "type_spec",
]

_QDS_MASK = 0xF1  # IV NT SB BL OV (bits 2..4 reserved; EI is for protection events only)
_SIQ_MASK = 0xF0  # IV NT SB BL

_H = struct.Struct("<h")
_HB = struct.Struct("<hB")
_FB = struct.Struct("<fB")
_IB = struct.Struct("<IB")
_iB = struct.Struct("<iB")
_I = struct.Struct("<I")
_f = struct.Struct("<f")
_UH = struct.Struct("<H")
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True, slots=True)
class AsduParams:
    """Field sizes of the data unit identifier and the IOA (system parameters, clause 7.1)."""

    cot_size: int = 1
    ca_size: int = 1
    ioa_size: int = 2

    def __post_init__(self) -> None:
        if self.cot_size not in (1, 2):
            raise LocalProtocolError(f"cause of transmission is 1 or 2 octets, not {self.cot_size}")
        if self.ca_size not in (1, 2):
            raise LocalProtocolError(f"common address is 1 or 2 octets, not {self.ca_size}")
        if self.ioa_size not in (1, 2, 3):
            raise LocalProtocolError(
                f"information object address is 1, 2 or 3 octets, not {self.ioa_size}"
            )

    @classmethod
    def iec104(cls) -> AsduParams:
        """The fixed sizes of IEC 60870-5-104: COT 2, common address 2, IOA 3."""
        return cls(2, 2, 3)


@dataclass(frozen=True, slots=True)
class ASDU:
    """An application service data unit."""

    type_id: TypeID
    cot: int  # cause of transmission 0..63 (a Cause where the standard names it)
    common_address: int
    objects: tuple[InformationObject, ...]
    sequence: bool = False  # SQ: one IOA, the objects at consecutive addresses
    negative: bool = False  # P/N: negative confirmation
    test: bool = False  # T: test frame
    originator: int = 0  # originator address (2-octet COT only)


def header_size(params: AsduParams) -> int:
    """Octets before the first information object."""
    return 2 + params.cot_size + params.ca_size


# --- time tags --------------------------------------------------------------------------------


def _check(what: str, v: int, lo: int, hi: int) -> int:
    if not lo <= v <= hi:
        raise LocalProtocolError(f"{what} {v} is outside {lo}..{hi}")
    return v


def _enc_cp56(t: CP56Time2a) -> bytes:
    _check("CP56Time2a milliseconds", t.millisecond, 0, 0xFFFF)
    _check("CP56Time2a minute", t.minute, 0, 63)
    _check("CP56Time2a hour", t.hour, 0, 31)
    _check("CP56Time2a day", t.day, 0, 31)
    _check("CP56Time2a day of week", t.day_of_week, 0, 7)
    _check("CP56Time2a month", t.month, 0, 15)
    _check("CP56Time2a year", t.year, 0, 127)
    return bytes(
        (
            t.millisecond & 0xFF,
            t.millisecond >> 8,
            t.minute | (0x80 if t.invalid else 0),
            t.hour | (0x80 if t.summer_time else 0),
            t.day | t.day_of_week << 5,
            t.month,
            t.year,
        )
    )


def _dec_cp56(b: bytes | bytearray | memoryview, o: int) -> CP56Time2a:
    # Reserved bits (RES1..RES4) are dropped.
    return CP56Time2a(
        year=b[o + 6] & 0x7F,
        month=b[o + 5] & 0x0F,
        day=b[o + 4] & 0x1F,
        hour=b[o + 3] & 0x1F,
        minute=b[o + 2] & 0x3F,
        millisecond=b[o] | b[o + 1] << 8,
        day_of_week=b[o + 4] >> 5,
        summer_time=bool(b[o + 3] & 0x80),
        invalid=bool(b[o + 2] & 0x80),
    )


def _enc_cp24(t: CP24Time2a) -> bytes:
    _check("CP24Time2a milliseconds", t.millisecond, 0, 0xFFFF)
    _check("CP24Time2a minute", t.minute, 0, 63)
    return bytes((t.millisecond & 0xFF, t.millisecond >> 8, t.minute | (0x80 if t.invalid else 0)))


def _dec_cp24(b: bytes | bytearray | memoryview, o: int) -> CP24Time2a:
    return CP24Time2a(b[o + 2] & 0x3F, b[o] | b[o + 1] << 8, bool(b[o + 2] & 0x80))


# --- information elements ---------------------------------------------------------------------

_Buf = bytes | bytearray | memoryview
# Element encoder: object -> element octets (without IOA and time tag).
_Enc = Callable[[Any], bytes]
# Element decoder: (buffer, offset, ioa, time) -> object.
_Dec = Callable[[_Buf, int, int, Any], InformationObject]


def _nva(value: float, what: str) -> int:
    """A normalized value as its 16-bit two's complement integer (7.2.6.6: -1 .. 1-2^-15)."""
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise LocalProtocolError(f"{what}: normalized value {value!r} is outside -1..1")
    return min(round(value * 32768.0), 32767)


def _sva(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalProtocolError(f"{what}: scaled value {value!r} is not an integer")
    return _check(f"{what}: scaled value", value, -32768, 32767)


def _r32(value: float, what: str) -> float:
    if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
        raise LocalProtocolError(f"{what}: {value!r} does not fit a short floating point number")
    return value


def _q(quality: int, mask: int, what: str) -> int:
    if quality & ~mask & 0xFF or not 0 <= quality <= 0xFF:
        raise LocalProtocolError(f"{what}: quality bits 0x{quality:02X} outside 0x{mask:02X}")
    return quality


def _enc_siq(o: SinglePoint) -> bytes:
    return bytes(((1 if o.value else 0) | _q(o.quality, _SIQ_MASK, "SIQ"),))


def _dec_siq(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v = b[i]
    return SinglePoint(ioa, bool(v & 1), v & _SIQ_MASK, t)


def _enc_diq(o: DoublePoint) -> bytes:
    return bytes((_check("DPI", o.value, 0, 3) | _q(o.quality, _SIQ_MASK, "DIQ"),))


def _dec_diq(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v = b[i]
    return DoublePoint(ioa, v & 3, v & _SIQ_MASK, t)


def _enc_vti(o: StepPosition) -> bytes:
    v = _check("VTI value", o.value, -64, 63) & 0x7F
    return bytes((v | (0x80 if o.transient else 0), _q(o.quality, _QDS_MASK, "QDS")))


def _dec_vti(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v = b[i] & 0x7F
    return StepPosition(ioa, v - 128 if v & 0x40 else v, bool(b[i] & 0x80), b[i + 1] & _QDS_MASK, t)


def _enc_bsi_qds(o: Bitstring) -> bytes:
    return _IB.pack(_check("BSI", o.value, 0, 0xFFFFFFFF), _q(o.quality, _QDS_MASK, "QDS"))


def _dec_bsi_qds(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v, q = _IB.unpack_from(b, i)
    return Bitstring(ioa, v, q & _QDS_MASK, t)


def _enc_nva_qds(o: Normalized) -> bytes:
    return _HB.pack(_nva(o.value, "NVA"), _q(o.quality, _QDS_MASK, "QDS"))


def _dec_nva_qds(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v, q = _HB.unpack_from(b, i)
    return Normalized(ioa, v / 32768.0, q & _QDS_MASK, t)


def _enc_nva(o: Normalized) -> bytes:
    if o.quality:
        raise LocalProtocolError("M_ME_ND_1 has no quality descriptor: quality must be 0")
    return _H.pack(_nva(o.value, "NVA"))


def _dec_nva(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    return Normalized(ioa, _H.unpack_from(b, i)[0] / 32768.0, 0, t)


def _enc_sva_qds(o: Scaled) -> bytes:
    return _HB.pack(_sva(o.value, "SVA"), _q(o.quality, _QDS_MASK, "QDS"))


def _dec_sva_qds(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v, q = _HB.unpack_from(b, i)
    return Scaled(ioa, v, q & _QDS_MASK, t)


def _enc_r32_qds(o: ShortFloat) -> bytes:
    return _FB.pack(_r32(o.value, "R32"), _q(o.quality, _QDS_MASK, "QDS"))


def _dec_r32_qds(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v, q = _FB.unpack_from(b, i)
    return ShortFloat(ioa, v, q & _QDS_MASK, t)


def _enc_bcr(o: IntegratedTotal) -> bytes:
    flags = (
        _check("BCR sequence number", o.sequence, 0, 31)
        | (0x20 if o.carry else 0)
        | (0x40 if o.adjusted else 0)
        | (0x80 if o.invalid else 0)
    )
    return _iB.pack(_check("BCR counter", o.value, -(2**31), 2**31 - 1), flags)


def _dec_bcr(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v, f = _iB.unpack_from(b, i)
    return IntegratedTotal(ioa, v, f & 0x1F, bool(f & 0x20), bool(f & 0x40), bool(f & 0x80), t)


def _enc_coi(o: EndOfInitialisation) -> bytes:
    return bytes((_check("COI cause", o.cause, 0, 127) | (0x80 if o.after_change else 0),))


def _dec_coi(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    return EndOfInitialisation(ioa, b[i] & 0x7F, bool(b[i] & 0x80))


def _se(select: bool, qualifier: int, qmax: int, shift: int) -> int:
    return (_check("command qualifier", qualifier, 0, qmax) << shift) | (0x80 if select else 0)


def _enc_sco(o: SingleCommand) -> bytes:
    return bytes(((1 if o.value else 0) | _se(o.select, o.qualifier, 31, 2),))


def _dec_sco(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v = b[i]
    return SingleCommand(ioa, bool(v & 1), bool(v & 0x80), (v >> 2) & 0x1F, t)


def _enc_dco(o: DoubleCommand | RegulatingStep) -> bytes:
    return bytes((_check("DCS/RCS", o.value, 0, 3) | _se(o.select, o.qualifier, 31, 2),))


def _dec_dco(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v = b[i]
    return DoubleCommand(ioa, v & 3, bool(v & 0x80), (v >> 2) & 0x1F, t)


def _dec_rco(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v = b[i]
    return RegulatingStep(ioa, v & 3, bool(v & 0x80), (v >> 2) & 0x1F, t)


def _enc_se_nva(o: SetpointNormalized) -> bytes:
    return _HB.pack(_nva(o.value, "set-point NVA"), _se(o.select, o.qualifier, 127, 0))


def _dec_se_nva(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v, q = _HB.unpack_from(b, i)
    return SetpointNormalized(ioa, v / 32768.0, bool(q & 0x80), q & 0x7F, t)


def _enc_se_sva(o: SetpointScaled) -> bytes:
    return _HB.pack(_sva(o.value, "set-point SVA"), _se(o.select, o.qualifier, 127, 0))


def _dec_se_sva(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v, q = _HB.unpack_from(b, i)
    return SetpointScaled(ioa, v, bool(q & 0x80), q & 0x7F, t)


def _enc_se_r32(o: SetpointFloat) -> bytes:
    return _FB.pack(_r32(o.value, "set-point R32"), _se(o.select, o.qualifier, 127, 0))


def _dec_se_r32(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    v, q = _FB.unpack_from(b, i)
    return SetpointFloat(ioa, v, bool(q & 0x80), q & 0x7F, t)


def _enc_bsi(o: BitstringCommand) -> bytes:
    return _I.pack(_check("BSI", o.value, 0, 0xFFFFFFFF))


def _dec_bsi(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    return BitstringCommand(ioa, _I.unpack_from(b, i)[0], t)


def _enc_qoi(o: Interrogation) -> bytes:
    return bytes((_check("QOI", o.qualifier, 0, 255),))


def _dec_qoi(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    return Interrogation(ioa, b[i])


def _enc_qcc(o: CounterInterrogation) -> bytes:
    return bytes(
        (_check("QCC request", o.request, 0, 63) | _check("QCC freeze", o.freeze, 0, 3) << 6,)
    )


def _dec_qcc(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    return CounterInterrogation(ioa, b[i] & 0x3F, b[i] >> 6)


def _enc_none(o: ReadCommand) -> bytes:
    return b""


def _dec_read(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    return ReadCommand(ioa)


def _enc_cs(o: ClockSync) -> bytes:
    return _enc_cp56(o.clock)


def _dec_cs(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    return ClockSync(ioa, _dec_cp56(b, i))


def _enc_fbp(o: TestCommand) -> bytes:
    return _UH.pack(_check("FBP", o.pattern, 0, 0xFFFF))


def _dec_fbp(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    return TestCommand(ioa, _UH.unpack_from(b, i)[0])


def _enc_qrp(o: ResetProcess) -> bytes:
    return bytes((_check("QRP", o.qualifier, 0, 255),))


def _dec_qrp(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    return ResetProcess(ioa, b[i])


def _enc_cp16(o: DelayAcquisition) -> bytes:
    return _UH.pack(_check("CP16Time2a milliseconds", o.delay.millisecond, 0, 0xFFFF))


def _dec_cp16(b: _Buf, i: int, ioa: int, t: Any) -> InformationObject:
    return DelayAcquisition(ioa, CP16Time2a(_UH.unpack_from(b, i)[0]))


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """How one type identification is laid out."""

    type_id: TypeID
    cls: type  # the information object class
    size: int  # octets of the element(s), without IOA and time tag
    time: int  # octets of the time tag: 0, 3 (CP24Time2a) or 7 (CP56Time2a)
    enc: _Enc
    dec: _Dec

    @property
    def object_size(self) -> int:
        """Octets of one object without its IOA."""
        return self.size + self.time


_T = TypeID
_SPECS: dict[int, TypeSpec] = {}


def _add(t: TypeID, cls: type, size: int, time: int, enc: _Enc, dec: _Dec) -> None:
    _SPECS[t] = TypeSpec(t, cls, size, time, enc, dec)


for _tid, _time in ((_T.M_SP_NA_1, 0), (_T.M_SP_TA_1, 3), (_T.M_SP_TB_1, 7)):
    _add(_tid, SinglePoint, 1, _time, _enc_siq, _dec_siq)
for _tid, _time in ((_T.M_DP_NA_1, 0), (_T.M_DP_TA_1, 3), (_T.M_DP_TB_1, 7)):
    _add(_tid, DoublePoint, 1, _time, _enc_diq, _dec_diq)
for _tid, _time in ((_T.M_ST_NA_1, 0), (_T.M_ST_TA_1, 3), (_T.M_ST_TB_1, 7)):
    _add(_tid, StepPosition, 2, _time, _enc_vti, _dec_vti)
for _tid, _time in ((_T.M_BO_NA_1, 0), (_T.M_BO_TA_1, 3), (_T.M_BO_TB_1, 7)):
    _add(_tid, Bitstring, 5, _time, _enc_bsi_qds, _dec_bsi_qds)
for _tid, _time in ((_T.M_ME_NA_1, 0), (_T.M_ME_TA_1, 3), (_T.M_ME_TD_1, 7)):
    _add(_tid, Normalized, 3, _time, _enc_nva_qds, _dec_nva_qds)
_add(_T.M_ME_ND_1, Normalized, 2, 0, _enc_nva, _dec_nva)
for _tid, _time in ((_T.M_ME_NB_1, 0), (_T.M_ME_TB_1, 3), (_T.M_ME_TE_1, 7)):
    _add(_tid, Scaled, 3, _time, _enc_sva_qds, _dec_sva_qds)
for _tid, _time in ((_T.M_ME_NC_1, 0), (_T.M_ME_TC_1, 3), (_T.M_ME_TF_1, 7)):
    _add(_tid, ShortFloat, 5, _time, _enc_r32_qds, _dec_r32_qds)
for _tid, _time in ((_T.M_IT_NA_1, 0), (_T.M_IT_TA_1, 3), (_T.M_IT_TB_1, 7)):
    _add(_tid, IntegratedTotal, 5, _time, _enc_bcr, _dec_bcr)
_add(_T.M_EI_NA_1, EndOfInitialisation, 1, 0, _enc_coi, _dec_coi)
for _tid, _time in ((_T.C_SC_NA_1, 0), (_T.C_SC_TA_1, 7)):
    _add(_tid, SingleCommand, 1, _time, _enc_sco, _dec_sco)
for _tid, _time in ((_T.C_DC_NA_1, 0), (_T.C_DC_TA_1, 7)):
    _add(_tid, DoubleCommand, 1, _time, _enc_dco, _dec_dco)
for _tid, _time in ((_T.C_RC_NA_1, 0), (_T.C_RC_TA_1, 7)):
    _add(_tid, RegulatingStep, 1, _time, _enc_dco, _dec_rco)
for _tid, _time in ((_T.C_SE_NA_1, 0), (_T.C_SE_TA_1, 7)):
    _add(_tid, SetpointNormalized, 3, _time, _enc_se_nva, _dec_se_nva)
for _tid, _time in ((_T.C_SE_NB_1, 0), (_T.C_SE_TB_1, 7)):
    _add(_tid, SetpointScaled, 3, _time, _enc_se_sva, _dec_se_sva)
for _tid, _time in ((_T.C_SE_NC_1, 0), (_T.C_SE_TC_1, 7)):
    _add(_tid, SetpointFloat, 5, _time, _enc_se_r32, _dec_se_r32)
for _tid, _time in ((_T.C_BO_NA_1, 0), (_T.C_BO_TA_1, 7)):
    _add(_tid, BitstringCommand, 4, _time, _enc_bsi, _dec_bsi)
_add(_T.C_IC_NA_1, Interrogation, 1, 0, _enc_qoi, _dec_qoi)
_add(_T.C_CI_NA_1, CounterInterrogation, 1, 0, _enc_qcc, _dec_qcc)
_add(_T.C_RD_NA_1, ReadCommand, 0, 0, _enc_none, _dec_read)
_add(_T.C_CS_NA_1, ClockSync, 7, 0, _enc_cs, _dec_cs)
_add(_T.C_TS_NA_1, TestCommand, 2, 0, _enc_fbp, _dec_fbp)
_add(_T.C_RP_NA_1, ResetProcess, 1, 0, _enc_qrp, _dec_qrp)
_add(_T.C_CD_NA_1, DelayAcquisition, 2, 0, _enc_cp16, _dec_cp16)


def _cause(c: int) -> int:
    try:
        return Cause(c)
    except ValueError:
        return c


_CAUSES: tuple[int, ...] = tuple(_cause(c) for c in range(64))


def _fast_rows() -> dict[tuple[int, int], tuple[struct.Struct, type, bool]]:
    out: dict[tuple[int, int], tuple[struct.Struct, type, bool]] = {}
    for tid, spec in _SPECS.items():
        if spec.cls not in (ShortFloat, Scaled, Normalized) or tid == TypeID.M_ME_ND_1:
            continue
        elem = "fB" if spec.cls is ShortFloat else "hB"
        tail = {0: "", 3: "3s", 7: "7s"}[spec.time]
        for ioa_size, ioa_fmt in ((1, "B"), (2, "H"), (3, "HB")):
            st = struct.Struct("<" + ioa_fmt + elem + tail)
            out[(tid, ioa_size)] = (st, spec.cls, spec.cls is Normalized)
    return out


_FAST = _fast_rows()
_SLOT_SETTERS: dict[type, tuple[Callable[[Any, Any], None], ...]] = {
    cls: tuple(vars(cls)[f].__set__ for f in ("ioa", "value", "quality", "time"))
    for cls in (ShortFloat, Scaled, Normalized)
}


def type_spec(type_id: int) -> TypeSpec:
    """The layout of a type identification; KeyError if this codec does not know it."""
    return _SPECS[type_id]


def max_objects(type_id: int, params: AsduParams, max_length: int, sequence: bool = False) -> int:
    """How many objects of a type fit an ASDU of at most max_length octets (at most 127)."""
    spec = _SPECS[type_id]
    room = max_length - header_size(params)
    if sequence:
        room -= params.ioa_size
        per = spec.object_size
    else:
        per = params.ioa_size + spec.object_size
    return max(0, min(127, room // per if per else 127))


# --- ASDU -------------------------------------------------------------------------------------


def encode_asdu(asdu: ASDU, params: AsduParams) -> bytes:
    """The octets of an ASDU; LocalProtocolError naming the first field that cannot be sent."""
    spec = _SPECS.get(asdu.type_id)
    if spec is None:
        raise LocalProtocolError(f"type identification {asdu.type_id} is not supported")
    name = TypeID(asdu.type_id).name
    objs = asdu.objects
    n = len(objs)
    if n > 127:
        raise LocalProtocolError(f"{n} information objects: an ASDU holds at most 127")
    _check("cause of transmission", asdu.cot, 0, 63)
    cot = asdu.cot | (0x40 if asdu.negative else 0) | (0x80 if asdu.test else 0)
    out = bytearray((asdu.type_id, n | (0x80 if asdu.sequence else 0), cot))
    if params.cot_size == 2:
        out.append(_check("originator address", asdu.originator, 0, 255))
    elif asdu.originator:
        raise LocalProtocolError("an originator address needs a 2-octet cause of transmission")
    ca_max = (1 << (8 * params.ca_size)) - 1
    out += _check("common address", asdu.common_address, 0, ca_max).to_bytes(
        params.ca_size, "little"
    )
    ioa_size = params.ioa_size
    ioa_max = (1 << (8 * ioa_size)) - 1
    time_cls: type | None = {0: None, 3: CP24Time2a, 7: CP56Time2a}[spec.time]
    for k, o in enumerate(objs):
        if type(o) is not spec.cls:
            raise LocalProtocolError(
                f"{name} carries {spec.cls.__name__} objects, objects[{k}] is {type(o).__name__}"
            )
        if asdu.sequence and o.ioa != objs[0].ioa + k:
            raise LocalProtocolError(
                f"SQ=1 needs consecutive IOAs: objects[{k}] has {o.ioa}, expected {objs[0].ioa + k}"
            )
        if not asdu.sequence or k == 0:
            out += _check("information object address", o.ioa, 0, ioa_max).to_bytes(
                ioa_size, "little"
            )
        out += spec.enc(o)
        t = getattr(o, "time", None)
        if spec.time == 0 or time_cls is None:
            if t is not None:
                raise LocalProtocolError(f"{name} has no time tag, objects[{k}] carries one")
        elif type(t) is not time_cls:
            raise LocalProtocolError(
                f"{name} needs a {time_cls.__name__} time tag on objects[{k}], not {type(t).__name__}"
            )
        elif spec.time == 7:
            out += _enc_cp56(t)  # type: ignore[arg-type]
        else:
            out += _enc_cp24(t)  # type: ignore[arg-type]
    return bytes(out)


def decode_asdu(data: bytes | bytearray | memoryview, params: AsduParams) -> ASDU:
    """The ASDU in data (all of it); ASDUError naming what was wrong and its offset."""
    n_data = len(data)
    hsz = 2 + params.cot_size + params.ca_size
    if n_data < hsz:
        raise ASDUError(f"ASDU of {n_data} octet(s) is shorter than its {hsz}-octet header", n_data)
    tid = data[0]
    spec = _SPECS.get(tid)
    if spec is None:
        raise ASDUError(f"type identification {tid} is not supported", 0)
    vsq = data[1]
    sq = vsq & 0x80 != 0
    n = vsq & 0x7F
    c = data[2]
    o = 3
    originator = 0
    if params.cot_size == 2:
        originator = data[3]
        o = 4
    ca = data[o] if params.ca_size == 1 else data[o] | data[o + 1] << 8
    ioa_size = params.ioa_size
    osz = spec.size + spec.time
    expected = (ioa_size if n else 0) + n * osz if sq else n * (ioa_size + osz)
    have = n_data - hsz
    if have != expected:
        what = f"{spec.type_id.name} with {n} object(s){' (SQ=1)' if sq else ''} needs {expected} octet(s) of objects, has {have}"
        raise ASDUError(what, n_data if have < expected else hsz + expected)
    dec = spec.dec
    size = spec.size
    tsize = spec.time
    objects: list[InformationObject] = []
    p = hsz
    fast = _FAST.get((tid, ioa_size)) if not sq else None
    if fast is not None:
        # Hot path for measured values: one struct unpack per object, IOA included.
        row_struct, cls, normalized = fast
        k = 2 if ioa_size == 3 else 1
        tdec = _dec_cp56 if tsize == 7 else _dec_cp24
        append = objects.append
        new = object.__new__
        # Frozen dataclasses refuse setattr; their slot descriptors set the fields directly,
        # at a fraction of the generated __init__'s cost (same result, compared in the tests).
        set_ioa, set_value, set_quality, set_time = _SLOT_SETTERS[cls]
        for row in row_struct.iter_unpack(data[hsz:]):
            obj: Any = new(cls)
            set_ioa(obj, row[0] if k == 1 else row[0] | row[1] << 16)
            set_value(obj, row[k] / 32768.0 if normalized else row[k])
            set_quality(obj, row[k + 1] & _QDS_MASK)
            set_time(obj, tdec(row[k + 2], 0) if tsize else None)
            append(obj)
    elif sq and n:
        base = int.from_bytes(data[p : p + ioa_size], "little")
        p += ioa_size
        for k in range(n):
            t = (
                None
                if not tsize
                else (_dec_cp56(data, p + size) if tsize == 7 else _dec_cp24(data, p + size))
            )
            objects.append(dec(data, p, base + k, t))
            p += osz
    else:
        for _ in range(n):
            ioa = int.from_bytes(data[p : p + ioa_size], "little")
            p += ioa_size
            t = (
                None
                if not tsize
                else (_dec_cp56(data, p + size) if tsize == 7 else _dec_cp24(data, p + size))
            )
            objects.append(dec(data, p, ioa, t))
            p += osz
    return ASDU(
        spec.type_id,
        _CAUSES[c & 0x3F],
        ca,
        tuple(objects),
        sq,
        bool(c & 0x40),
        bool(c & 0x80),
        originator,
    )
