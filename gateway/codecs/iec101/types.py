"""Application-layer values of IEC 60870-5-101: type identifications, causes, time tags, objects.

Every information object is a frozen dataclass holding its IOA and the decoded information
elements (IEC 60870-5-101 clause 7.3). Monitor objects carry `quality` as the raw quality
descriptor bits (SIQ/DIQ/QDS: IV 0x80, NT 0x40, SB 0x20, BL 0x10, OV 0x01) and an optional time
tag; which time tag (none, CP24Time2a, CP56Time2a) is allowed is fixed by the ASDU's type
identification, checked when encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

__all__ = [
    "BL",
    "IV",
    "NT",
    "OV",
    "SB",
    "Bitstring",
    "BitstringCommand",
    "CP16Time2a",
    "CP24Time2a",
    "CP56Time2a",
    "Cause",
    "ClockSync",
    "CounterInterrogation",
    "DelayAcquisition",
    "DoubleCommand",
    "DoublePoint",
    "EndOfInitialisation",
    "InformationObject",
    "IntegratedTotal",
    "Interrogation",
    "Normalized",
    "ReadCommand",
    "RegulatingStep",
    "ResetProcess",
    "Scaled",
    "SetpointFloat",
    "SetpointNormalized",
    "SetpointScaled",
    "ShortFloat",
    "SingleCommand",
    "SinglePoint",
    "StepPosition",
    "TestCommand",
    "TimeTag",
    "TypeID",
]

# Quality descriptor bits (7.2.6.1 SIQ, 7.2.6.2 DIQ, 7.2.6.3 QDS).
OV = 0x01  # overflow (QDS only)
BL = 0x10  # blocked
SB = 0x20  # substituted
NT = 0x40  # not topical
IV = 0x80  # invalid


class TypeID(IntEnum):
    """Type identifications this codec encodes and decodes (IEC 60870-5-101 clause 7.2.1)."""

    # Process information in monitor direction.
    M_SP_NA_1 = 1  # single-point information
    M_SP_TA_1 = 2  # ... with CP24Time2a
    M_DP_NA_1 = 3  # double-point information
    M_DP_TA_1 = 4
    M_ST_NA_1 = 5  # step position
    M_ST_TA_1 = 6
    M_BO_NA_1 = 7  # bitstring of 32 bit
    M_BO_TA_1 = 8
    M_ME_NA_1 = 9  # measured value, normalized
    M_ME_TA_1 = 10
    M_ME_NB_1 = 11  # measured value, scaled
    M_ME_TB_1 = 12
    M_ME_NC_1 = 13  # measured value, short floating point
    M_ME_TC_1 = 14
    M_IT_NA_1 = 15  # integrated totals
    M_IT_TA_1 = 16
    M_ME_ND_1 = 21  # normalized without quality descriptor
    M_SP_TB_1 = 30  # ... with CP56Time2a
    M_DP_TB_1 = 31
    M_ST_TB_1 = 32
    M_BO_TB_1 = 33
    M_ME_TD_1 = 34
    M_ME_TE_1 = 35
    M_ME_TF_1 = 36
    M_IT_TB_1 = 37
    # Process information in control direction.
    C_SC_NA_1 = 45  # single command
    C_DC_NA_1 = 46  # double command
    C_RC_NA_1 = 47  # regulating step command
    C_SE_NA_1 = 48  # set-point, normalized
    C_SE_NB_1 = 49  # set-point, scaled
    C_SE_NC_1 = 50  # set-point, short floating point
    C_BO_NA_1 = 51  # bitstring of 32 bit
    # With CP56Time2a (defined by IEC 60870-5-104; some 101 stations accept them too).
    C_SC_TA_1 = 58
    C_DC_TA_1 = 59
    C_RC_TA_1 = 60
    C_SE_TA_1 = 61
    C_SE_TB_1 = 62
    C_SE_TC_1 = 63
    C_BO_TA_1 = 64
    # System information in monitor direction.
    M_EI_NA_1 = 70  # end of initialization
    # System information in control direction.
    C_IC_NA_1 = 100  # (general) interrogation command
    C_CI_NA_1 = 101  # counter interrogation command
    C_RD_NA_1 = 102  # read command
    C_CS_NA_1 = 103  # clock synchronization command
    C_TS_NA_1 = 104  # test command
    C_RP_NA_1 = 105  # reset process command
    C_CD_NA_1 = 106  # delay acquisition command


class Cause(IntEnum):
    """Causes of transmission (IEC 60870-5-101 clause 7.2.3); 0..63 travel, named or not."""

    PERIODIC = 1
    BACKGROUND = 2
    SPONTANEOUS = 3
    INITIALIZED = 4
    REQUEST = 5
    ACTIVATION = 6
    ACTIVATION_CON = 7
    DEACTIVATION = 8
    DEACTIVATION_CON = 9
    ACTIVATION_TERMINATION = 10
    RETURN_REMOTE = 11
    RETURN_LOCAL = 12
    FILE_TRANSFER = 13
    INTERROGATED_STATION = 20
    INTERROGATED_GROUP_1 = 21
    INTERROGATED_GROUP_2 = 22
    INTERROGATED_GROUP_3 = 23
    INTERROGATED_GROUP_4 = 24
    INTERROGATED_GROUP_5 = 25
    INTERROGATED_GROUP_6 = 26
    INTERROGATED_GROUP_7 = 27
    INTERROGATED_GROUP_8 = 28
    INTERROGATED_GROUP_9 = 29
    INTERROGATED_GROUP_10 = 30
    INTERROGATED_GROUP_11 = 31
    INTERROGATED_GROUP_12 = 32
    INTERROGATED_GROUP_13 = 33
    INTERROGATED_GROUP_14 = 34
    INTERROGATED_GROUP_15 = 35
    INTERROGATED_GROUP_16 = 36
    REQUESTED_COUNTERS = 37
    REQUESTED_COUNTER_GROUP_1 = 38
    REQUESTED_COUNTER_GROUP_2 = 39
    REQUESTED_COUNTER_GROUP_3 = 40
    REQUESTED_COUNTER_GROUP_4 = 41
    UNKNOWN_TYPE = 44
    UNKNOWN_CAUSE = 45
    UNKNOWN_COMMON_ADDRESS = 46
    UNKNOWN_IOA = 47


# --- time tags (IEC 60870-5-4 clause 6.8, binary time) ------------------------------------------


@dataclass(frozen=True, slots=True)
class CP56Time2a:
    """Seven-octet binary time: milliseconds of the minute .. year of the century.

    Fields keep what the wire carries (each within its bit width), so any received tag
    round-trips; to_datetime() checks that it is a real date.
    """

    year: int  # 0..99 (century implied: 2000 + year)
    month: int  # 1..12
    day: int  # 1..31
    hour: int  # 0..23
    minute: int  # 0..59
    millisecond: int  # 0..59999: seconds * 1000 + milliseconds
    day_of_week: int = 0  # 1 = Monday .. 7 = Sunday, 0 = not used
    summer_time: bool = False  # SU
    invalid: bool = False  # IV

    def to_datetime(self) -> datetime:
        """The UTC datetime; ValueError if the fields are not a date."""
        sec, ms = divmod(self.millisecond, 1000)
        return datetime(
            2000 + self.year, self.month, self.day, self.hour, self.minute, sec, ms * 1000, UTC
        )

    def to_epoch(self) -> float:
        """UTC epoch seconds; ValueError if the fields are not a date."""
        return self.to_datetime().timestamp()

    @classmethod
    def from_datetime(cls, dt: datetime, *, invalid: bool = False) -> CP56Time2a:
        """From an aware datetime (naive is taken as UTC), in UTC; years 2000..2099."""
        if dt.tzinfo is not None:
            dt = dt.astimezone(UTC)
        if not 2000 <= dt.year <= 2099:
            raise ValueError(f"year {dt.year} is outside 2000..2099 (CP56Time2a holds 0..99)")
        return cls(
            year=dt.year - 2000,
            month=dt.month,
            day=dt.day,
            hour=dt.hour,
            minute=dt.minute,
            millisecond=dt.second * 1000 + dt.microsecond // 1000,
            day_of_week=dt.isoweekday(),
            invalid=invalid,
        )

    @classmethod
    def from_epoch(cls, ts: float, *, invalid: bool = False) -> CP56Time2a:
        """From UTC epoch seconds (millisecond resolution, truncated)."""
        ms_total = math.floor(ts * 1000.0)
        return cls.from_datetime(datetime.fromtimestamp(ms_total / 1000.0, tz=UTC), invalid=invalid)


@dataclass(frozen=True, slots=True)
class CP24Time2a:
    """Three-octet binary time: milliseconds and minutes of the hour (101 types *_TA_1)."""

    minute: int  # 0..59
    millisecond: int  # 0..59999
    invalid: bool = False

    def resolve(self, now: float) -> float:
        """The UTC epoch time nearest to `now` whose minute and milliseconds match this tag."""
        hour_start = math.floor(now / 3600.0) * 3600.0
        t = hour_start + self.minute * 60 + self.millisecond / 1000.0
        # The tag names a moment within the hour; pick the hour that puts it closest to now.
        if t - now > 1800.0:
            t -= 3600.0
        elif now - t > 1800.0:
            t += 3600.0
        return t

    @classmethod
    def from_epoch(cls, ts: float, *, invalid: bool = False) -> CP24Time2a:
        """From UTC epoch seconds."""
        ms_total = math.floor(ts * 1000.0)
        ms_of_hour = ms_total % 3_600_000
        return cls(ms_of_hour // 60_000, ms_of_hour % 60_000, invalid)


@dataclass(frozen=True, slots=True)
class CP16Time2a:
    """Two-octet binary time: milliseconds 0..59999 (delay acquisition)."""

    millisecond: int


TimeTag = CP24Time2a | CP56Time2a


# --- monitor direction ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SinglePoint:
    """Single-point information (SIQ): M_SP_NA_1 / TA_1 / TB_1."""

    ioa: int
    value: bool
    quality: int = 0  # IV NT SB BL
    time: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class DoublePoint:
    """Double-point information (DIQ): 0 indeterminate, 1 off, 2 on, 3 indeterminate."""

    ioa: int
    value: int
    quality: int = 0
    time: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class StepPosition:
    """Step position (VTI + QDS): value -64..63, transient = equipment in transient state."""

    ioa: int
    value: int
    transient: bool = False
    quality: int = 0
    time: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class Bitstring:
    """Bitstring of 32 bit (BSI + QDS), as an unsigned int (first octet least significant)."""

    ioa: int
    value: int
    quality: int = 0
    time: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class Normalized:
    """Normalized measured value (NVA): -1 .. 1 - 2^-15, a multiple of 2^-15."""

    ioa: int
    value: float
    quality: int = 0  # always 0 for M_ME_ND_1 (no quality descriptor)
    time: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class Scaled:
    """Scaled measured value (SVA): a 16-bit signed integer."""

    ioa: int
    value: int
    quality: int = 0
    time: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class ShortFloat:
    """Short floating point measured value (IEEE 754 single precision)."""

    ioa: int
    value: float
    quality: int = 0
    time: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class IntegratedTotal:
    """Binary counter reading (BCR): a signed 32-bit count with sequence number and flags."""

    ioa: int
    value: int
    sequence: int = 0  # 0..31
    carry: bool = False  # CY: counter overflow in the integration period
    adjusted: bool = False  # CA: counter was adjusted
    invalid: bool = False  # IV
    time: TimeTag | None = None


@dataclass(frozen=True, slots=True)
class EndOfInitialisation:
    """End of initialization (COI): cause 0 local power on, 1 local reset, 2 remote reset."""

    ioa: int
    cause: int = 0  # 0..127
    after_change: bool = False  # BS: initialised after a change of local parameters


# --- control direction ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SingleCommand:
    """Single command (SCO): select = S/E bit (1 select, 0 execute), qualifier QU 0..31."""

    ioa: int
    value: bool
    select: bool = False
    qualifier: int = 0
    time: CP56Time2a | None = None


@dataclass(frozen=True, slots=True)
class DoubleCommand:
    """Double command (DCO): value 1 off, 2 on (0 and 3 not permitted but transported)."""

    ioa: int
    value: int
    select: bool = False
    qualifier: int = 0
    time: CP56Time2a | None = None


@dataclass(frozen=True, slots=True)
class RegulatingStep:
    """Regulating step command (RCO): value 1 next step lower, 2 next step higher."""

    ioa: int
    value: int
    select: bool = False
    qualifier: int = 0
    time: CP56Time2a | None = None


@dataclass(frozen=True, slots=True)
class SetpointNormalized:
    """Set-point command, normalized value (NVA + QOS: select and qualifier QL 0..127)."""

    ioa: int
    value: float
    select: bool = False
    qualifier: int = 0
    time: CP56Time2a | None = None


@dataclass(frozen=True, slots=True)
class SetpointScaled:
    """Set-point command, scaled value (SVA + QOS)."""

    ioa: int
    value: int
    select: bool = False
    qualifier: int = 0
    time: CP56Time2a | None = None


@dataclass(frozen=True, slots=True)
class SetpointFloat:
    """Set-point command, short floating point value (R32 + QOS)."""

    ioa: int
    value: float
    select: bool = False
    qualifier: int = 0
    time: CP56Time2a | None = None


@dataclass(frozen=True, slots=True)
class BitstringCommand:
    """Bitstring of 32 bit command (BSI)."""

    ioa: int
    value: int
    time: CP56Time2a | None = None


@dataclass(frozen=True, slots=True)
class Interrogation:
    """Interrogation command (QOI): 20 station interrogation, 21..36 group 1..16."""

    ioa: int = 0
    qualifier: int = 20


@dataclass(frozen=True, slots=True)
class CounterInterrogation:
    """Counter interrogation (QCC): request RQT (5 general) and freeze FRZ (0 read only)."""

    ioa: int = 0
    request: int = 5  # 0..63
    freeze: int = 0  # 0 read, 1 freeze without reset, 2 freeze with reset, 3 reset


@dataclass(frozen=True, slots=True)
class ReadCommand:
    """Read command: no information element, the IOA names what to read."""

    ioa: int


@dataclass(frozen=True, slots=True)
class ClockSync:
    """Clock synchronization command: the time to set (CP56Time2a)."""

    ioa: int
    clock: CP56Time2a


@dataclass(frozen=True, slots=True)
class TestCommand:
    """Test command: fixed test bit pattern FBP, 0x55AA."""

    ioa: int = 0
    pattern: int = 0x55AA


@dataclass(frozen=True, slots=True)
class ResetProcess:
    """Reset process command (QRP): 1 general reset, 2 reset pending time-tagged events."""

    ioa: int = 0
    qualifier: int = 1


@dataclass(frozen=True, slots=True)
class DelayAcquisition:
    """Delay acquisition command: transmission delay in milliseconds (CP16Time2a)."""

    ioa: int
    delay: CP16Time2a


InformationObject = (
    SinglePoint
    | DoublePoint
    | StepPosition
    | Bitstring
    | Normalized
    | Scaled
    | ShortFloat
    | IntegratedTotal
    | EndOfInitialisation
    | SingleCommand
    | DoubleCommand
    | RegulatingStep
    | SetpointNormalized
    | SetpointScaled
    | SetpointFloat
    | BitstringCommand
    | Interrogation
    | CounterInterrogation
    | ReadCommand
    | ClockSync
    | TestCommand
    | ResetProcess
    | DelayAcquisition
)
