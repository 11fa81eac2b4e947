"""IEC 61850 quality as a small int, with a lossless mapping to IEC 60870-5-104 IV/NT/SB/BL/OV."""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "BAD_REFERENCE",
    "FAILURE",
    "GOOD",
    "INACCURATE",
    "INCONSISTENT",
    "OLD_DATA",
    "OPERATOR_BLOCKED",
    "OSCILLATORY",
    "OUT_OF_RANGE",
    "OVERFLOW",
    "SUBSTITUTED",
    "TEST",
    "IEC104Flags",
    "Quality",
    "Validity",
    "from_iec104",
    "not_topical",
    "to_iec104",
]

# Bit layout follows the IEC 61850-8-1 quality bit string (bit 0 first): two validity bits,
# eight detail bits, source, test, operatorBlocked. The hot path keeps quality as a plain int.


class Validity(IntEnum):
    """IEC 61850-7-3 validity."""

    GOOD = 0
    INVALID = 1
    RESERVED = 2
    QUESTIONABLE = 3


VALIDITY_MASK = 0b11
OVERFLOW = 1 << 2
OUT_OF_RANGE = 1 << 3
BAD_REFERENCE = 1 << 4
OSCILLATORY = 1 << 5
FAILURE = 1 << 6
OLD_DATA = 1 << 7
INCONSISTENT = 1 << 8
INACCURATE = 1 << 9
SUBSTITUTED = 1 << 10  # source = substituted (0 = process)
TEST = 1 << 11
OPERATOR_BLOCKED = 1 << 12

GOOD = 0
_DETAIL_NAMES = {
    OVERFLOW: "overflow",
    OUT_OF_RANGE: "outOfRange",
    BAD_REFERENCE: "badReference",
    OSCILLATORY: "oscillatory",
    FAILURE: "failure",
    OLD_DATA: "oldData",
    INCONSISTENT: "inconsistent",
    INACCURATE: "inaccurate",
    SUBSTITUTED: "substituted",
    TEST: "test",
    OPERATOR_BLOCKED: "operatorBlocked",
}


class IEC104Flags:
    """IEC 60870-5-101/104 quality descriptor bits (QDS, 7.2.6.3)."""

    OV = 0x01
    BL = 0x10
    SB = 0x20
    NT = 0x40
    IV = 0x80


def with_validity(q: int, validity: Validity) -> int:
    """Return q with its validity bits replaced."""
    return (q & ~VALIDITY_MASK) | int(validity)


def not_topical(q: int) -> int:
    """Mark a value as not topical: oldData, and questionable unless already invalid."""
    q |= OLD_DATA
    if q & VALIDITY_MASK != Validity.INVALID:
        q = with_validity(q, Validity.QUESTIONABLE)
    return q


def to_iec104(q: int) -> int:
    """Map an IEC 61850 quality to IEC 104 QDS bits (IEC 61850-80-1 direction 61850 -> 104)."""
    flags = 0
    validity = q & VALIDITY_MASK
    if validity == Validity.INVALID:
        flags |= IEC104Flags.IV
    if q & OLD_DATA:
        flags |= IEC104Flags.NT
    if q & SUBSTITUTED:
        flags |= IEC104Flags.SB
    if q & OPERATOR_BLOCKED:
        flags |= IEC104Flags.BL
    if q & OVERFLOW:
        flags |= IEC104Flags.OV
    return flags


def from_iec104(flags: int) -> int:
    """Map IEC 104 QDS bits to an IEC 61850 quality; to_iec104(from_iec104(f)) == f."""
    q = GOOD
    if flags & IEC104Flags.NT:
        q |= OLD_DATA
    if flags & IEC104Flags.OV:
        q |= OVERFLOW
    if flags & IEC104Flags.SB:
        q |= SUBSTITUTED
    if flags & IEC104Flags.BL:
        q |= OPERATOR_BLOCKED
    if flags & IEC104Flags.IV:
        q = with_validity(q, Validity.INVALID)
    elif flags & (IEC104Flags.NT | IEC104Flags.OV):
        # 61850-80-1: not topical / overflow make the value questionable, not invalid.
        q = with_validity(q, Validity.QUESTIONABLE)
    return q


class Quality(int):
    """Read-only view of an IEC 61850 quality int, for the edges (API, logs), not the hot path."""

    __slots__ = ()

    @property
    def validity(self) -> Validity:
        """The validity part."""
        return Validity(self & VALIDITY_MASK)

    @property
    def good(self) -> bool:
        """True when validity is good and no detail bit is set."""
        return int(self) == GOOD

    @property
    def details(self) -> list[str]:
        """Names of the detail, source, test and blocked bits that are set."""
        return [name for bit, name in _DETAIL_NAMES.items() if self & bit]

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "validity": self.validity.name.lower(),
            "details": self.details,
            "raw": int(self),
        }

    def __repr__(self) -> str:
        return f"Quality({self.validity.name.lower()}{''.join('|' + d for d in self.details)})"
