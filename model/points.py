"""Point specifications: IEC 61850 object references with type, unit, access and limits."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "REF_PATTERN",
    "Access",
    "DType",
    "PointRef",
    "PointSpec",
    "StrictModel",
    "check_ref",
    "split_ref",
]

# LDName/LNName.DO[.DA...]; our LD names carry the VPP hierarchy: VPP1.PV03/MMXU1.TotW.mag.f
REF_PATTERN = re.compile(
    r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*/[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$"
)


class StrictModel(BaseModel):
    """Base for configuration models: unknown keys are errors, instances are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_ref(ref: str) -> str:
    """Validate an IEC 61850 object reference under the VPP hierarchy."""
    if not REF_PATTERN.match(ref):
        raise ValueError(f"{ref!r} is not an object reference like 'VPP1.PV03/MMXU1.TotW.mag.f'")
    return ref


PointRef = Annotated[str, AfterValidator(check_ref)]


def split_ref(ref: str) -> tuple[str, str]:
    """Split 'VPP1.PV03/MMXU1.TotW.mag.f' into ('VPP1.PV03', 'MMXU1.TotW.mag.f')."""
    ld, _, rest = ref.partition("/")
    return ld, rest


class DType(StrEnum):
    """Value types a point may hold."""

    FLOAT = "float"
    INT = "int"
    BOOL = "bool"


class Access(StrEnum):
    """Whether commands may write the point."""

    RO = "ro"
    RW = "rw"


class PointSpec(StrictModel):
    """One point of the model."""

    ref: PointRef
    dtype: DType = DType.FLOAT
    unit: str = ""
    access: Access = Access.RO
    min: float | None = None
    max: float | None = None
    role: str | None = Field(
        default=None, description="what the twin uses it for: p, q, soc, p_set..."
    )
    description: str = ""
    stale_after_s: float | None = Field(
        default=None, gt=0, description="seconds without an update before the value is not topical"
    )

    def in_limits(self, value: float) -> bool:
        """True when value lies within [min, max] (unset bounds are open)."""
        if self.min is not None and value < self.min:
            return False
        return not (self.max is not None and value > self.max)
