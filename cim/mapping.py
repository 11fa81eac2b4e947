"""CIM <-> model mapping: CIM classes to resource kinds, limits and units, measurements to points.

Sign conventions. CGMES state values (`RotatingMachine.p`, `EnergyConsumer.p`,
`EquivalentInjection.p`, `PowerElectronicsConnection.p`, `SvPowerFlow.p`, and their `q`) follow
the load sign convention: "positive sign means flow out from a node" into the equipment. The model
follows the generator convention (model/natures.py: P > 0 delivers to the grid). So every state
value changes sign on the way in and out: P[kW] = -p[MW] * 1000. Capability limits
(`GeneratingUnit.minOperatingP/maxOperatingP`, `SynchronousMachine.minQ/maxQ`,
`EquivalentInjection.minP/maxP/minQ/maxQ`, `PowerElectronicsUnit.minP/maxP`) describe what the
equipment injects and are taken as generator-signed: only the unit changes (MW -> kW).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from model.natures import ResourceKind, Role

__all__ = [
    "CIM16_NAMESPACES",
    "CIM100_NAMESPACE",
    "EQUIVALENT_CLASSES",
    "GENERATING_UNIT_CLASSES",
    "LOAD_CLASSES",
    "MACHINE_CLASSES",
    "MD_NAMESPACE",
    "MEASUREMENT_CLASSES",
    "PEC_CLASS",
    "PE_UNIT_CLASSES",
    "PROFILE_URIS",
    "RDF_NAMESPACE",
    "MeasurementTarget",
    "classify_profile",
    "from_cim_power",
    "kind_for_generating_unit",
    "kind_for_pe_unit",
    "make_ident",
    "measurement_scale",
    "measurement_target",
    "mw_to_kw",
    "pq_attributes",
    "to_cim_power",
    "version_of_namespace",
]

# CGMES 2.4.15 is CIM16 (two namespace spellings are in use); CGMES 3.0 is CIM100.
CIM16_NAMESPACES = (
    "http://iec.ch/TC57/2013/CIM-schema-cim16#",
    "http://iec.ch/TC57/2012/CIM-schema-cim16#",
)
CIM100_NAMESPACE = "http://iec.ch/TC57/CIM100#"
MD_NAMESPACE = "http://iec.ch/TC57/61970-552/ModelDescription/1#"
RDF_NAMESPACE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

# Profile URIs we write on export, per CGMES version.
PROFILE_URIS: dict[str, dict[str, str]] = {
    "2.4.15": {
        "SSH": "http://entsoe.eu/CIM/SteadyStateHypothesis/1/1",
        "SV": "http://entsoe.eu/CIM/StateVariables/4/1",
    },
    "3.0": {
        "SSH": "http://iec.ch/TC57/ns/CIM/SteadyStateHypothesis-EU/3.0",
        "SV": "http://iec.ch/TC57/ns/CIM/StateVariables-EU/3.0",
    },
}

# Keywords of md:Model.profile URIs, most specific first. ENTSO-E 2.4.15 spells them
# http://entsoe.eu/CIM/EquipmentCore/3/1, IEC 2.4.15 http://iec.ch/TC57/61970-452/Equipment/3,
# CGMES 3.0 http://iec.ch/TC57/ns/CIM/CoreEquipment-EU/3.0.
_PROFILE_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("EquipmentBoundary", "EQ_BD"),
    ("TopologyBoundary", "TP_BD"),
    ("Equipment", "EQ"),
    ("Operation", "EQ"),
    ("ShortCircuit", "EQ"),
    ("SteadyStateHypothesis", "SSH"),
    ("StateVariables", "SV"),
    ("Topology", "TP"),
    ("DiagramLayout", "DL"),
    ("GeographicalLocation", "GL"),
    ("Dynamics", "DY"),
)


def classify_profile(uri: str) -> str | None:
    """Short profile name (EQ, EQ_BD, TP, TP_BD, SSH, SV, DL, GL, DY) of a profile URI, or None."""
    tail = uri.rstrip("/").split("/")
    # The keyword is in the path, not the host: look at everything after the scheme and host.
    path = "/".join(tail[3:]) if uri.startswith(("http://", "https://")) else uri
    for key, short in _PROFILE_KEYWORDS:
        if key in path:
            return short
    return None


def version_of_namespace(ns: str | None) -> str | None:
    """CGMES version ('2.4.15' or '3.0') of a CIM namespace URI, or None if unknown."""
    if ns in CIM16_NAMESPACES:
        return "2.4.15"
    if ns == CIM100_NAMESPACE:
        return "3.0"
    return None


# --- classes ----------------------------------------------------------------------------------

MACHINE_CLASSES = frozenset({"SynchronousMachine", "AsynchronousMachine"})
LOAD_CLASSES = frozenset({"EnergyConsumer", "ConformLoad", "NonConformLoad", "StationSupply"})
EQUIVALENT_CLASSES = frozenset({"EquivalentInjection", "ExternalNetworkInjection"})
PEC_CLASS = "PowerElectronicsConnection"
GENERATING_UNIT_CLASSES = frozenset(
    {
        "GeneratingUnit",
        "SolarGeneratingUnit",
        "WindGeneratingUnit",
        "ThermalGeneratingUnit",
        "HydroGeneratingUnit",
        "NuclearGeneratingUnit",
    }
)
PE_UNIT_CLASSES = frozenset({"PhotoVoltaicUnit", "BatteryUnit", "PowerElectronicsWindUnit"})
MEASUREMENT_CLASSES = frozenset({"Analog", "Discrete", "Accumulator", "StringMeasurement"})

_GU_KIND: dict[str, tuple[ResourceKind, str | None]] = {
    "SolarGeneratingUnit": (ResourceKind.PV, None),
    "WindGeneratingUnit": (ResourceKind.WIND, None),
    "ThermalGeneratingUnit": (ResourceKind.CHP, None),
    "HydroGeneratingUnit": (
        ResourceKind.CHP,
        "the model has no hydro kind: mapped to chp (a dispatchable generator)",
    ),
    "NuclearGeneratingUnit": (
        ResourceKind.CHP,
        "the model has no nuclear kind: mapped to chp (a dispatchable generator)",
    ),
    "GeneratingUnit": (
        ResourceKind.CHP,
        "a plain GeneratingUnit does not say its kind: mapped to chp (a dispatchable generator)",
    ),
}

_PEU_KIND: dict[str, ResourceKind] = {
    "PhotoVoltaicUnit": ResourceKind.PV,
    "BatteryUnit": ResourceKind.STORAGE,
    "PowerElectronicsWindUnit": ResourceKind.WIND,
}


def kind_for_generating_unit(cls: str) -> tuple[ResourceKind, str | None]:
    """Resource kind for a GeneratingUnit class, with a note when the mapping is a stand-in."""
    return _GU_KIND.get(cls, _GU_KIND["GeneratingUnit"])


def kind_for_pe_unit(cls: str) -> ResourceKind | None:
    """Resource kind for a CGMES 3.0 PowerElectronicsUnit class (None if not one we map)."""
    return _PEU_KIND.get(cls)


def pq_attributes(cls: str) -> tuple[str, str] | None:
    """Qualified names of the SSH P and Q attributes of an equipment class, e.g. RotatingMachine.p."""
    if cls in MACHINE_CLASSES:
        owner = "RotatingMachine"
    elif cls in LOAD_CLASSES:
        owner = "EnergyConsumer"
    elif cls in EQUIVALENT_CLASSES or cls == PEC_CLASS:
        owner = cls
    else:
        return None
    return f"{owner}.p", f"{owner}.q"


def mw_to_kw(mw: float) -> float:
    """MW (or Mvar, MWh) to kW (kvar, kWh), rounded to 1e-6 so that 79.208187 MW is 79208.187 kW."""
    return round(mw * 1000.0, 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def from_cim_power(mw: float) -> float:
    """CIM state value (MW or Mvar, load sign) to model value (kW or kvar, generator sign)."""
    return mw_to_kw(-mw)


def to_cim_power(kw: float) -> float:
    """Model value (kW or kvar, generator sign) to CIM state value (MW or Mvar, load sign)."""
    return round(-kw / 1000.0, 9) + 0.0  # + 0.0 turns -0.0 into 0.0


# --- measurements -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeasurementTarget:
    """Where a CIM measurement lands on a resource: a nature role, or an extra point."""

    role: Role | None
    path: str | None = None
    dtype: str = "float"
    unit: str = ""


# IEC 61970-301 / CGMES measurementType names -> IEC 61850 MMXU/MMTR/XSWI data objects.
_ANALOG_PATHS: dict[str, tuple[str, str]] = {
    "ThreePhaseApparentPower": ("MMXU1.TotVA.mag.f", "kVA"),
    "LineToLineVoltage": ("MMXU1.PPV.mag.f", "kV"),
    "PhaseVoltage": ("MMXU1.PhV.mag.f", "kV"),
    "LineCurrent": ("MMXU1.A.mag.f", "A"),
    "Frequency": ("MMXU1.Hz.mag.f", "Hz"),
    "ThreePhasePowerFactor": ("MMXU1.TotPF.mag.f", ""),
    "PowerFactor": ("MMXU1.TotPF.mag.f", ""),
    "Temperature": ("STMP1.Tmp.mag.f", "degC"),
}


def measurement_target(cls: str, mtype: str, kind: ResourceKind, n: int) -> MeasurementTarget:
    """Target of a measurement of class cls and measurementType mtype on a resource of kind.

    `n` numbers the generic fallback points (GGIO1.AnIn<n>, GGIO1.IntIn<n>, GGIO1.CntVal<n>).
    """
    if cls == "Analog":
        if mtype == "ThreePhaseActivePower":
            return MeasurementTarget(Role.P)
        if mtype == "ThreePhaseReactivePower":
            return MeasurementTarget(Role.Q)
        if mtype == "StateOfCharge" and kind == ResourceKind.STORAGE:
            return MeasurementTarget(Role.SOC)
        if mtype in _ANALOG_PATHS:
            path, unit = _ANALOG_PATHS[mtype]
            return MeasurementTarget(None, path, "float", unit)
        return MeasurementTarget(None, f"GGIO1.AnIn{n}.mag.f", "float")
    if cls == "Accumulator":
        if kind == ResourceKind.METER and "Energy" in mtype:
            return MeasurementTarget(Role.ENERGY)
        return MeasurementTarget(None, f"GGIO1.CntVal{n}.actVal", "float")
    if cls == "Discrete" and mtype == "SwitchPosition":
        return MeasurementTarget(None, "XSWI1.Pos.stVal", "int")
    return MeasurementTarget(None, f"GGIO1.IntIn{n}.stVal", "int")


_MULTIPLIERS = {"G": 1e9, "M": 1e6, "k": 1e3, "none": 1.0, "": 1.0, "m": 1e-3}


def measurement_scale(
    unit_symbol: str | None, multiplier: str | None, positive_flow_in: bool, role: Role | None
) -> float:
    """Factor from the measurement's own value to the model's (kW/kvar, generator sign) for P/Q.

    `Analog.positiveFlowIn`: "If true then ... a positive value measured at the Terminal means power
    is flowing into the related PowerSystemResource" (load sign): the factor is negated then.
    """
    factor = _MULTIPLIERS.get(multiplier or "", 1.0)
    if role in (Role.P, Role.Q):
        factor /= 1e3  # the model holds kW and kvar
        if positive_flow_in:
            factor = -factor
    return factor


# --- identifiers ------------------------------------------------------------------------------

_NOT_IDENT = re.compile(r"[^A-Za-z0-9_]+")
_RESERVED = frozenset({"PLANT"})  # the VPP's own logical device (model.natures.PLANT_LD)


def make_ident(name: str, prefix: str, taken: set[str], max_len: int = 64) -> str:
    """A model identifier (^[A-Za-z][A-Za-z0-9_]*$) from a CIM name, unique against `taken`.

    Adds the chosen id to `taken`. Names that are empty or start with a digit get `prefix`.
    """
    base = _NOT_IDENT.sub("_", name).strip("_")
    base = re.sub(r"_+", "_", base)
    if not base or not base[0].isalpha():
        base = f"{prefix}_{base}" if base else prefix
    base = base[: max_len - 5]
    ident, n = base, 1
    while ident in taken or ident.upper() in _RESERVED:
        n += 1
        ident = f"{base}_{n}"
    taken.add(ident)
    return ident
