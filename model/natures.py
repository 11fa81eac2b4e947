"""Natures: what each kind of resource looks like as IEC 61850-7-420 logical nodes and points.

Sign convention, written once here and followed by every driver: active and reactive power are
positive when the resource delivers to the grid (generation, battery discharge) and negative when
it takes from the grid (load, battery charge, EV charging). Power in kW, reactive power in kvar,
energy in kWh, state of charge in percent, temperature in degrees Celsius.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from model.points import Access, DType

__all__ = [
    "NATURES",
    "PLANT_LD",
    "PLANT_POINTS",
    "SIGN_CONVENTION",
    "Nature",
    "PointTemplate",
    "ResourceKind",
    "Role",
]

SIGN_CONVENTION = "generator: P and Q > 0 deliver to the grid, < 0 take from it"


class ResourceKind(StrEnum):
    """Kinds of distributed energy resource."""

    PV = "pv"
    WIND = "wind"
    STORAGE = "storage"
    LOAD = "load"
    HVAC = "hvac"
    EV_CHARGER = "ev_charger"
    CHP = "chp"
    METER = "meter"


class Role(StrEnum):
    """What the twin and control use a point for."""

    P = "p"
    Q = "q"
    SOC = "soc"
    P_SET = "p_set"
    Q_SET = "q_set"
    TEMP = "temp"
    TEMP_SET = "temp_set"
    ENERGY = "energy"
    STATE = "state"


@dataclass(frozen=True, slots=True)
class PointTemplate:
    """A point every resource of a nature has, relative to the resource's logical device."""

    path: str  # LN.DO.DA, e.g. MMXU1.TotW.mag.f
    role: Role
    dtype: DType
    unit: str
    access: Access
    description: str


@dataclass(frozen=True, slots=True)
class Nature:
    """Logical nodes and points of one resource kind, with its sign convention."""

    kind: ResourceKind
    logical_nodes: tuple[str, ...]
    points: tuple[PointTemplate, ...]
    generates: bool
    consumes: bool
    sign_convention: str = SIGN_CONVENTION


_P = PointTemplate("MMXU1.TotW.mag.f", Role.P, DType.FLOAT, "kW", Access.RO, "active power")
_Q = PointTemplate("MMXU1.TotVAr.mag.f", Role.Q, DType.FLOAT, "kvar", Access.RO, "reactive power")
_PSET = PointTemplate(
    "DRCC1.WSpt.setMag.f", Role.P_SET, DType.FLOAT, "kW", Access.RW, "active power set-point"
)
_PLIM = PointTemplate(
    "DRCC1.WSpt.setMag.f",
    Role.P_SET,
    DType.FLOAT,
    "kW",
    Access.RW,
    "active power limit (curtailment)",
)
_QSET = PointTemplate(
    "DRCC1.VArSpt.setMag.f", Role.Q_SET, DType.FLOAT, "kvar", Access.RW, "reactive power set-point"
)
_STATE = PointTemplate("DRCT1.DERSt.stVal", Role.STATE, DType.INT, "", Access.RO, "operating state")
_SOC = PointTemplate("ZBAT1.SoC.mag.f", Role.SOC, DType.FLOAT, "%", Access.RO, "state of charge")
_TEMP = PointTemplate(
    "STMP1.Tmp.mag.f", Role.TEMP, DType.FLOAT, "degC", Access.RO, "room temperature"
)
_ENERGY = PointTemplate(
    "MMTR1.TotWh.actVal", Role.ENERGY, DType.FLOAT, "kWh", Access.RO, "energy counter"
)


def _nature(kind: ResourceKind, gen: bool, cons: bool, *pts: PointTemplate) -> Nature:
    lns = tuple(dict.fromkeys(p.path.split(".", 1)[0] for p in pts))
    return Nature(kind, lns, pts, gen, cons)


NATURES: dict[ResourceKind, Nature] = {
    ResourceKind.PV: _nature(ResourceKind.PV, True, False, _P, _Q, _PLIM, _STATE),
    ResourceKind.WIND: _nature(ResourceKind.WIND, True, False, _P, _Q, _PLIM, _STATE),
    ResourceKind.STORAGE: _nature(
        ResourceKind.STORAGE, True, True, _P, _Q, _PSET, _QSET, _SOC, _STATE
    ),
    ResourceKind.LOAD: _nature(ResourceKind.LOAD, False, True, _P, _Q, _PSET, _STATE),
    ResourceKind.HVAC: _nature(ResourceKind.HVAC, False, True, _P, _Q, _PSET, _TEMP, _STATE),
    ResourceKind.EV_CHARGER: _nature(ResourceKind.EV_CHARGER, False, True, _P, _Q, _PSET, _STATE),
    ResourceKind.CHP: _nature(ResourceKind.CHP, True, False, _P, _Q, _PSET, _STATE),
    ResourceKind.METER: _nature(ResourceKind.METER, False, False, _P, _Q, _ENERGY),
}

# The VPP as one plant: aggregate points under the logical device '<VPP id>.PLANT'.
PLANT_LD = "PLANT"
PLANT_POINTS: dict[str, PointTemplate] = {
    "p": PointTemplate(
        "MMXU1.TotW.mag.f", Role.P, DType.FLOAT, "kW", Access.RO, "total active power"
    ),
    "q": PointTemplate(
        "MMXU1.TotVAr.mag.f", Role.Q, DType.FLOAT, "kvar", Access.RO, "total reactive power"
    ),
    "up_w": PointTemplate(
        "DCAP1.AvUpW.mag.f", Role.P, DType.FLOAT, "kW", Access.RO, "available upward capacity"
    ),
    "down_w": PointTemplate(
        "DCAP1.AvDnW.mag.f", Role.P, DType.FLOAT, "kW", Access.RO, "available downward capacity"
    ),
    "up_wh": PointTemplate(
        "DCAP1.AvUpWh.mag.f",
        Role.ENERGY,
        DType.FLOAT,
        "kWh",
        Access.RO,
        "energy available to deliver (storage above its minimum SoC)",
    ),
    "down_wh": PointTemplate(
        "DCAP1.AvDnWh.mag.f",
        Role.ENERGY,
        DType.FLOAT,
        "kWh",
        Access.RO,
        "energy available to absorb (storage below its maximum SoC)",
    ),
    "online": PointTemplate(
        "DCAP1.OnlCnt.stVal",
        Role.STATE,
        DType.INT,
        "",
        Access.RO,
        "resources whose power is known and good",
    ),
}
