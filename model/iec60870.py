"""IEC 60870-5-101/104 type names and the information-object map both drivers use."""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, model_validator

from model.points import PointRef, StrictModel

__all__ = [
    "IEC101_COMMAND_TYPES",
    "IEC101_MONITOR_TYPES",
    "IEC104_COMMAND_TYPES",
    "IEC104_MONITOR_TYPES",
    "InfoObjectMap",
]

# Type identifications as the standard spells them.
IEC104_MONITOR_TYPES = frozenset(
    {
        "M_SP_NA_1", "M_SP_TB_1", "M_DP_NA_1", "M_DP_TB_1", "M_ST_NA_1", "M_ST_TB_1",
        "M_BO_NA_1", "M_BO_TB_1", "M_ME_NA_1", "M_ME_TD_1", "M_ME_NB_1", "M_ME_TE_1",
        "M_ME_NC_1", "M_ME_TF_1", "M_IT_NA_1", "M_IT_TB_1",
    }
)  # fmt: skip
IEC104_COMMAND_TYPES = frozenset(
    {
        "C_SC_NA_1", "C_SC_TA_1", "C_DC_NA_1", "C_DC_TA_1", "C_RC_NA_1", "C_RC_TA_1",
        "C_SE_NA_1", "C_SE_TA_1", "C_SE_NB_1", "C_SE_TB_1", "C_SE_NC_1", "C_SE_TC_1",
        "C_BO_NA_1", "C_BO_TA_1",
    }
)  # fmt: skip
# IEC 101 has IEC 104's monitor types plus the CP24Time2a variants (*_TA_1) and M_ME_ND_1; its
# commands carry no time tag (the CP56Time2a commands, types 58..64, are IEC 104's).
IEC101_MONITOR_TYPES = IEC104_MONITOR_TYPES | frozenset(
    {"M_SP_TA_1", "M_DP_TA_1", "M_ST_TA_1", "M_BO_TA_1", "M_ME_TA_1", "M_ME_ND_1", "M_ME_TB_1",
     "M_ME_TC_1", "M_IT_TA_1"}
)  # fmt: skip
IEC101_COMMAND_TYPES = frozenset(
    {"C_SC_NA_1", "C_DC_NA_1", "C_RC_NA_1", "C_SE_NA_1", "C_SE_NB_1", "C_SE_NC_1", "C_BO_NA_1"}
)


class InfoObjectMap(StrictModel):
    """One information object bound to a model point: value = raw * scale + offset."""

    MONITOR_TYPES: ClassVar[frozenset[str]] = IEC104_MONITOR_TYPES
    COMMAND_TYPES: ClassVar[frozenset[str]] = IEC104_COMMAND_TYPES
    STANDARD: ClassVar[str] = "IEC 104"
    EXAMPLES: ClassVar[str] = "M_ME_NC_1, C_SE_NC_1"

    ioa: int = Field(ge=1, le=16_777_215)
    type: str
    point: PointRef
    scale: float = 1.0
    offset: float = 0.0
    select_before_operate: bool = False

    @model_validator(mode="after")
    def _known_type(self) -> Self:
        if self.type not in self.MONITOR_TYPES | self.COMMAND_TYPES:
            raise ValueError(
                f"unknown {self.STANDARD} type {self.type!r} (expected e.g. {self.EXAMPLES})"
            )
        if self.select_before_operate and self.type not in self.COMMAND_TYPES:
            raise ValueError("select_before_operate applies to command types only")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self

    @property
    def is_command(self) -> bool:
        """True for a control-direction type."""
        return self.type in self.COMMAND_TYPES
