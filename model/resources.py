"""The hierarchy: VPP -> aggregator (virtual unit) -> resource, each resource with limits and points."""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import Field, StringConstraints, model_validator

from model.natures import NATURES, PLANT_LD, PLANT_POINTS, ResourceKind, Role
from model.points import Access, PointSpec, StrictModel

__all__ = ["Aggregator", "Limits", "Resource", "VPPConfig", "plant_ref"]

Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)]
_MRID = re.compile(r"^_?[0-9A-Za-z][0-9A-Za-z\-_.]{0,79}$")


class Limits(StrictModel):
    """Operating limits of a resource (generator sign convention: P > 0 delivers to the grid)."""

    p_min_kw: float = 0.0
    p_max_kw: float = 0.0
    q_min_kvar: float = 0.0
    q_max_kvar: float = 0.0
    ramp_kw_per_min: float | None = Field(default=None, gt=0)
    energy_capacity_kwh: float | None = Field(default=None, gt=0)
    soc_min_pct: float = Field(default=0.0, ge=0, le=100)
    soc_max_pct: float = Field(default=100.0, ge=0, le=100)
    comfort_min_c: float | None = None
    comfort_max_c: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.p_min_kw > self.p_max_kw:
            raise ValueError(f"p_min_kw {self.p_min_kw} is above p_max_kw {self.p_max_kw}")
        if self.q_min_kvar > self.q_max_kvar:
            raise ValueError(f"q_min_kvar {self.q_min_kvar} is above q_max_kvar {self.q_max_kvar}")
        if self.soc_min_pct > self.soc_max_pct:
            raise ValueError(
                f"soc_min_pct {self.soc_min_pct} is above soc_max_pct {self.soc_max_pct}"
            )
        if (
            self.comfort_min_c is not None
            and self.comfort_max_c is not None
            and self.comfort_min_c > self.comfort_max_c
        ):
            raise ValueError("comfort_min_c is above comfort_max_c")
        return self


class ExtraPoint(StrictModel):
    """A point beyond the nature's own, given relative to the resource (LN.DO.DA)."""

    path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]\w*(\.[A-Za-z]\w*)+$")]
    dtype: str = "float"
    unit: str = ""
    access: Access = Access.RO
    min: float | None = None
    max: float | None = None
    role: str | None = None
    description: str = ""


class Resource(StrictModel):
    """One distributed energy resource with its CIM mRID, limits and points."""

    id: Ident
    mrid: str
    name: str = ""
    kind: ResourceKind
    limits: Limits = Limits()
    stale_after_s: float | None = Field(default=None, gt=0)
    points: list[ExtraPoint] = []

    @model_validator(mode="after")
    def _check_mrid(self) -> Self:
        if not _MRID.match(self.mrid):
            raise ValueError(f"mrid {self.mrid!r} is not a CIM mRID (UUID or rdf:ID)")
        return self

    def point_specs(self, vpp_id: str) -> list[PointSpec]:
        """Points of this resource: its nature's, with limits applied, then its extra points."""
        ld = f"{vpp_id}.{self.id}"
        out: list[PointSpec] = []
        lim = self.limits
        for t in NATURES[self.kind].points:
            lo = hi = None
            if t.role in (Role.P_SET,):
                lo, hi = lim.p_min_kw, lim.p_max_kw
            elif t.role == Role.Q_SET:
                lo, hi = lim.q_min_kvar, lim.q_max_kvar
            elif t.role == Role.SOC:
                lo, hi = 0.0, 100.0
            out.append(
                PointSpec(
                    ref=f"{ld}/{t.path}",
                    dtype=t.dtype,
                    unit=t.unit,
                    access=t.access,
                    min=lo,
                    max=hi,
                    role=t.role.value,
                    description=f"{self.name or self.id}: {t.description}",
                    stale_after_s=self.stale_after_s,
                )
            )
        for e in self.points:
            out.append(
                PointSpec(
                    ref=f"{ld}/{e.path}",
                    dtype=e.dtype,  # type: ignore[arg-type]
                    unit=e.unit,
                    access=e.access,
                    min=e.min,
                    max=e.max,
                    role=e.role,
                    description=e.description,
                    stale_after_s=self.stale_after_s,
                )
            )
        return out

    def ref(self, vpp_id: str, role: Role) -> str | None:
        """Reference of this resource's point with the given role, if its nature has one."""
        for t in NATURES[self.kind].points:
            if t.role == role:
                return f"{vpp_id}.{self.id}/{t.path}"
        return None


class Aggregator(StrictModel):
    """An aggregator or virtual unit grouping resources inside a VPP."""

    id: Ident
    name: str = ""
    resources: list[Resource] = []


class VPPConfig(StrictModel):
    """A virtual power plant: aggregators and resources acting as one plant toward the grid."""

    id: Ident
    name: str = ""
    mrid: str | None = None
    aggregators: list[Aggregator] = []
    resources: list[Resource] = []

    def all_resources(self) -> list[Resource]:
        """Resources directly under the VPP and under its aggregators."""
        out = list(self.resources)
        for a in self.aggregators:
            out.extend(a.resources)
        return out

    def plant_specs(self) -> list[PointSpec]:
        """The VPP's aggregate points (the plant as dispatch sees it)."""
        return [
            PointSpec(
                ref=plant_ref(self.id, key),
                dtype=t.dtype,
                unit=t.unit,
                access=t.access,
                role=f"plant.{key}",
                description=f"{self.name or self.id}: {t.description}",
            )
            for key, t in PLANT_POINTS.items()
        ]


def plant_ref(vpp_id: str, key: str) -> str:
    """Reference of a VPP aggregate point, key one of PLANT_POINTS."""
    return f"{vpp_id}.{PLANT_LD}/{PLANT_POINTS[key].path}"
