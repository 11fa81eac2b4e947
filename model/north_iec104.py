"""The IEC 104 server for dispatch: its configuration and the point table built from the site.

Every VPP is one station (common address) that looks like a plant to the dispatch centre.
IOAs follow the address ranges of DL/T 634.5104 (the Chinese profile of IEC 60870-5-104 that
D5000 uses), so the table is deterministic from the site file alone:

=================  ================  ==================================================
range              kind              content
=================  ================  ==================================================
0x0001 ...         indications       available, AGC on, AVC on, DR active
0x4001 ...         measurands        P, Q, up/down capacity and energy, ramp, targets,
                                     resources online
0x4101 + 8 k + j   measurands        resource k (order in the site file), role slot j
0x6001 ...         commands          AGC on/off, AVC on/off, DR start/stop
0x6201 + slot      set-points        AGC (P target), one IOA per set-point type
0x6209 + slot      set-points        AVC (Q target), one IOA per set-point type
0x6401 ...         integrated total  delivered and absorbed energy (kWh counters)
0x6411 + k         integrated total  resource k's energy counter (meters)
=================  ================  ==================================================

`overrides` move a generated entry (IOA, type, scale, deadband, limits) or remove it;
`extra_points` add entries for any twin point (commands only on writable points).
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from model.errors import ModelError
from model.natures import NATURES, ResourceKind, Role
from model.points import Access, DType, PointRef, PointSpec, StrictModel
from model.resources import VPPConfig, plant_ref

if TYPE_CHECKING:  # model.site may import this module (its `north` section): no cycle at run time
    from model.site import SiteConfig

__all__ = [
    "MAX_POINTS_PER_CA",
    "SETPOINT_TYPES",
    "DispatchClient",
    "IEC104ExtraPoint",
    "IEC104PointOverride",
    "IEC104ServerConfig",
    "IEC104TLSConfig",
    "IEC104TableEntry",
    "IEC104Timing",
    "IEC104VPPOverride",
    "PointFunction",
    "PointTableError",
    "build_point_table",
]

# c104 answers a general interrogation through a queue of ~100 messages: only ~5,400 float
# points per common address arrived out of 10,000 (DEPENDENCIES.md). Stay well below.
MAX_POINTS_PER_CA = 4000

SETPOINT_TYPES = ("C_SE_NA_1", "C_SE_NB_1", "C_SE_NC_1", "C_SE_TA_1", "C_SE_TB_1", "C_SE_TC_1")
SWITCH_TYPES = ("C_SC_NA_1", "C_SC_TA_1", "C_DC_NA_1", "C_DC_TA_1")
MEASURAND_TYPES = ("M_ME_NA_1", "M_ME_NB_1", "M_ME_NC_1", "M_ME_TD_1", "M_ME_TE_1", "M_ME_TF_1")
INDICATION_TYPES = ("M_SP_NA_1", "M_SP_TB_1", "M_DP_NA_1", "M_DP_TB_1")
COUNTER_TYPES = ("M_IT_NA_1", "M_IT_TB_1")
TIME_TAGGED = frozenset(t for t in SETPOINT_TYPES + SWITCH_TYPES if t[5] == "T")

_SP_BASE = 0x0001
_ME_BASE = 0x4001
_RES_ME_BASE = 0x4101
_RES_SLOTS = 8
_SC_BASE = 0x6001
_AGC_BASE = 0x6201
_AVC_BASE = 0x6209
_IT_BASE = 0x6401
_RES_IT_BASE = 0x6411
# Resource telemetry slots (j in 0x4101 + 8 k + j), fixed per role so that IOAs stay put when a
# nature gains or loses a point.
_RES_ROLES = (Role.P, Role.Q, Role.P_SET, Role.Q_SET, Role.SOC, Role.TEMP, Role.STATE)

Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)]


class PointFunction(StrEnum):
    """What an entry of the point table carries or does."""

    # plant aggregates held by the twin
    P = "p"
    Q = "q"
    UP_W = "up_w"
    DOWN_W = "down_w"
    UP_WH = "up_wh"
    DOWN_WH = "down_wh"
    ONLINE = "online"
    # kept by the server itself
    RAMP = "ramp"
    P_TARGET = "p_target"
    Q_TARGET = "q_target"
    AVAILABLE = "available"
    AGC_ON = "agc_on"
    AVC_ON = "avc_on"
    DR_ACTIVE = "dr_active"
    E_SUP = "e_sup"
    E_DMD = "e_dmd"
    # a twin point (resource telemetry, extra points)
    TWIN = "twin"
    # control direction
    AGC_P = "agc_p"
    AVC_Q = "avc_q"
    AGC_MODE = "agc_mode"
    AVC_MODE = "avc_mode"
    DR = "dr"
    DIRECT = "direct"


COMMAND_FUNCTIONS = frozenset(
    {
        PointFunction.AGC_P,
        PointFunction.AVC_Q,
        PointFunction.AGC_MODE,
        PointFunction.AVC_MODE,
        PointFunction.DR,
        PointFunction.DIRECT,
    }
)


class IEC104Timing(StrictModel):
    """IEC 60870-5-104 link parameters (clause 5.5 and 9.6 of the standard); defaults as there."""

    k: int = Field(default=12, ge=1, le=32767, description="unacknowledged I-frames sent")
    w: int = Field(default=8, ge=1, le=32767, description="I-frames received before acknowledging")
    t0_s: int = Field(default=30, ge=1, le=255, description="connection establishment time-out")
    t1_s: int = Field(default=15, ge=1, le=255, description="send or test APDU time-out")
    t2_s: int = Field(default=10, ge=1, le=255, description="acknowledge time-out without data")
    t3_s: int = Field(default=20, ge=1, le=172_800, description="idle time before a test frame")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        # IEC 60870-5-104, 5.5: "t2 < t1".
        if self.t2_s >= self.t1_s:
            raise ValueError(f"t2_s ({self.t2_s}) must be below t1_s ({self.t1_s})")
        return self


class IEC104TLSConfig(StrictModel):
    """TLS per IEC 62351-3: server certificate, client CA, pinned clients and revocations.

    c104 2.2.1 cannot check a CRL during the handshake, so revocation is enforced by pinning:
    with `client_certs` only those certificates are accepted, and the server leaves out at
    start every one the CRL revokes, that has expired or that the CA did not sign.
    """

    cert: str
    key: str
    passphrase: str = ""
    ca: str
    client_certs: list[str] = []
    crl: str | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"

    @model_validator(mode="after")
    def _crl_needs_pins(self) -> Self:
        if self.crl is not None and not self.client_certs:
            raise ValueError(
                "crl needs client_certs: c104 cannot check revocation during the handshake, so "
                "revoked certificates are refused by pinning the allowed client certificates"
            )
        return self


class DispatchClient(StrictModel):
    """A dispatch or load-control master allowed to connect (main, backup...)."""

    name: str
    host: str = Field(description="IP address the client connects from")
    role: Literal["viewer", "operator", "engineer"] = Field(
        default="operator",
        description="IEC 62351-8 role (security.rbac decides what it may command); viewer: "
        "monitoring only",
    )


class IEC104VPPOverride(StrictModel):
    """Per-VPP settings: its common address."""

    vpp: Ident
    common_address: int = Field(ge=1, le=65534)


class IEC104PointOverride(StrictModel):
    """Changes one generated entry, found by its point (and for commands, by its type)."""

    point: PointRef
    command: bool | None = Field(
        default=None, description="pick the command (true) or monitor (false) entry of the point"
    )
    type: str | None = Field(
        default=None,
        description="monitor entries: the new type; command entries: which variant to change",
    )
    ioa: int | None = Field(default=None, ge=1, le=16_777_215)
    scale: float | None = None
    deadband: float | None = Field(default=None, ge=0)
    min: float | None = None
    max: float | None = None
    select_before_operate: bool | None = None
    enabled: bool = True
    description: str | None = None

    @model_validator(mode="after")
    def _scale(self) -> Self:
        if self.scale is not None and (self.scale == 0 or not math.isfinite(self.scale)):
            raise ValueError("scale must be a finite number other than 0")
        return self


class IEC104ExtraPoint(StrictModel):
    """An entry beyond the generated table, bound to a twin point of a VPP."""

    point: PointRef
    ioa: int = Field(ge=1, le=16_777_215)
    type: str
    scale: float = 1.0
    deadband: float = Field(default=0.0, ge=0)
    min: float | None = None
    max: float | None = None
    select_before_operate: bool = False
    description: str = ""

    @model_validator(mode="after")
    def _known_type(self) -> Self:
        allowed = MEASURAND_TYPES + INDICATION_TYPES + COUNTER_TYPES + SETPOINT_TYPES + SWITCH_TYPES
        if self.type not in allowed:
            raise ValueError(f"type {self.type!r} is not one of {', '.join(allowed)}")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError("scale must be a finite number other than 0")
        return self


class IEC104ServerConfig(StrictModel):
    """The IEC 104 server the dispatch centre and load-control systems connect to."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=2404, ge=1, le=65535)
    max_connections: int = Field(default=4, ge=0, description="0: no limit")
    clients: list[DispatchClient] = Field(
        default=[], description="allowed masters by IP; empty: any"
    )
    common_address_base: int = Field(default=1, ge=1, le=65534)
    vpps: list[IEC104VPPOverride] = []
    resource_telemetry: bool = False
    setpoint_types: list[str] = Field(
        default=list(SETPOINT_TYPES), description="set-point types offered for AGC and AVC"
    )
    select_before_operate_setpoints: bool = False
    select_before_operate_commands: bool = True
    select_timeout_ms: int = Field(default=5000, ge=100)
    command_max_age_s: float = Field(
        default=10.0, gt=0, description="time-tagged commands older than this are refused"
    )
    command_timeout_s: float = Field(
        default=10.0, gt=0, description="deadline of the resource commands a dispatch order makes"
    )
    initial_agc: bool = True
    initial_avc: bool = True
    counter_scale_kwh: float = Field(default=1.0, gt=0, description="kWh per counter step")
    deadbands: dict[str, float] = Field(
        default={"kW": 0.1, "kvar": 0.1, "kWh": 0.1, "kW/min": 1.0, "%": 0.1, "degC": 0.1},
        description="absolute deadband per unit for spontaneous transmission",
    )
    periodic_s: float = Field(default=0.0, ge=0, description="cyclic measurands (0: off)")
    background_s: float = Field(default=60.0, ge=0, description="background scan (0: off)")
    send_interval_ms: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=30, ge=1, le=60)
    max_queued_messages: int = Field(
        default=60, ge=1, le=90, description="messages in c104's ~100-message queue, at most"
    )
    protocol: IEC104Timing = IEC104Timing()
    tls: IEC104TLSConfig | None = None
    overrides: list[IEC104PointOverride] = []
    extra_points: list[IEC104ExtraPoint] = []

    @model_validator(mode="after")
    def _check(self) -> Self:
        bad = [t for t in self.setpoint_types if t not in SETPOINT_TYPES]
        if bad:
            raise ValueError(f"setpoint_types: {bad} are not set-point types {SETPOINT_TYPES}")
        if len(set(self.setpoint_types)) != len(self.setpoint_types):
            raise ValueError("setpoint_types: a type is listed twice")
        cas = [v.common_address for v in self.vpps]
        if len(set(cas)) != len(cas):
            raise ValueError("vpps: two VPPs have the same common address")
        return self


class IEC104TableEntry(StrictModel):
    """One information object of the server: where it is, what it carries, how it is scaled."""

    common_address: int
    ioa: int
    type: str
    point: str
    function: PointFunction
    vpp: str
    description: str = ""
    unit: str = ""
    scale: float = 1.0
    deadband: float = 0.0
    min: float | None = None
    max: float | None = None
    select_before_operate: bool = False

    @property
    def is_command(self) -> bool:
        """True for a control-direction entry."""
        return self.type.startswith("C_")

    @property
    def time_tagged(self) -> bool:
        """True for a type carrying a CP56Time2a time tag."""
        return self.type[5] == "T"


class PointTableError(ModelError, ValueError):
    """A point table that cannot be built; `problems` names each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("IEC 104 point table: " + "; ".join(problems))


# --- server points of each VPP: reference, function, type, unit, description --------------------


def _server_ref(vpp: str, path: str) -> str:
    return f"{vpp}.PLANT/{path}"


P_TARGET_PATH = "DRCC1.WSpt.setMag.f"
Q_TARGET_PATH = "DRCC1.VArSpt.setMag.f"
AGC_PATH = "DRCC1.AGCEna.stVal"
AVC_PATH = "DRCC1.AVCEna.stVal"
DR_PATH = "DRCC1.DRAct.stVal"

# (function, path or plant key, type, unit, description); order fixes the IOAs.
_INDICATIONS = (
    (PointFunction.AVAILABLE, "DCAP1.Avl.stVal", "M_SP_NA_1", "", "plant available (resources online)"),
    (PointFunction.AGC_ON, AGC_PATH, "M_SP_NA_1", "", "AGC on: active-power set-points accepted"),
    (PointFunction.AVC_ON, AVC_PATH, "M_SP_NA_1", "", "AVC on: reactive-power set-points accepted"),
    (PointFunction.DR_ACTIVE, DR_PATH, "M_DP_NA_1", "", "demand response active"),
)  # fmt: skip
_MEASURANDS = (
    (PointFunction.P, "p"),
    (PointFunction.Q, "q"),
    (PointFunction.UP_W, "up_w"),
    (PointFunction.DOWN_W, "down_w"),
    (PointFunction.UP_WH, "up_wh"),
    (PointFunction.DOWN_WH, "down_wh"),
    (PointFunction.RAMP, "DCAP1.RampW.mag.f"),
    (PointFunction.P_TARGET, P_TARGET_PATH),
    (PointFunction.Q_TARGET, Q_TARGET_PATH),
    (PointFunction.ONLINE, "online"),
)
_SERVER_MEASURANDS = {
    PointFunction.RAMP: ("kW/min", "ramp rate available from online controllable resources"),
    PointFunction.P_TARGET: ("kW", "active-power target in force (AGC)"),
    PointFunction.Q_TARGET: ("kvar", "reactive-power target in force (AVC)"),
}
_COUNTERS = (
    (PointFunction.E_SUP, "MMTR1.SupWh.actVal", "energy delivered to the grid"),
    (PointFunction.E_DMD, "MMTR1.DmdWh.actVal", "energy taken from the grid"),
)
_SWITCHES = (
    (PointFunction.AGC_MODE, AGC_PATH, "C_SC_NA_1", "AGC on (1) / off (0)"),
    (PointFunction.AVC_MODE, AVC_PATH, "C_SC_NA_1", "AVC on (1) / off (0)"),
    (PointFunction.DR, DR_PATH, "C_DC_NA_1", "demand response start (ON) / stop (OFF)"),
)


def _type_ok(function: PointFunction, type_name: str, dtype: DType | None) -> bool:
    if function in (PointFunction.AGC_P, PointFunction.AVC_Q):
        return type_name in SETPOINT_TYPES
    if function in (PointFunction.AGC_MODE, PointFunction.AVC_MODE, PointFunction.DR):
        return type_name in SWITCH_TYPES
    if function == PointFunction.DIRECT:
        return type_name in (SWITCH_TYPES if dtype == DType.BOOL else SETPOINT_TYPES)
    if function in (PointFunction.AVAILABLE, PointFunction.AGC_ON, PointFunction.AVC_ON):
        return type_name in INDICATION_TYPES
    if function == PointFunction.DR_ACTIVE:
        return type_name in INDICATION_TYPES
    if function in (PointFunction.E_SUP, PointFunction.E_DMD):
        return type_name in COUNTER_TYPES
    if function == PointFunction.TWIN and dtype == DType.BOOL:
        return type_name in INDICATION_TYPES
    return type_name in MEASURAND_TYPES + COUNTER_TYPES


def setpoint_scale(type_name: str, lo: float, hi: float) -> float:
    """Default scale of a set-point type for a target range [lo, hi] (value = raw * scale)."""
    full = max(abs(lo), abs(hi), 1.0)
    if type_name in ("C_SE_NA_1", "C_SE_TA_1", "M_ME_NA_1", "M_ME_TD_1"):
        return full  # normalised: -1..1 spans the range
    if type_name in ("C_SE_NB_1", "C_SE_TB_1", "M_ME_NB_1", "M_ME_TE_1"):
        # Scaled: a 16-bit integer; the finest power of ten (down to 0.001) that fits the range.
        scale = 0.001
        while full / scale > 32767:
            scale *= 10.0
        return round(scale, 3)
    return 1.0


def _vpp_ranges(vpp: VPPConfig) -> tuple[tuple[float, float], tuple[float, float]]:
    """([sum p_min, sum p_max], [sum q_min, sum q_max]) of a VPP's non-meter resources."""
    res = [r for r in vpp.all_resources() if r.kind != ResourceKind.METER]
    p = (sum(r.limits.p_min_kw for r in res), sum(r.limits.p_max_kw for r in res))
    q = (sum(r.limits.q_min_kvar for r in res), sum(r.limits.q_max_kvar for r in res))
    return p, q


def build_point_table(config: IEC104ServerConfig, site: SiteConfig) -> list[IEC104TableEntry]:
    """The server's point table, deterministic from the config and the site; PointTableError."""
    problems: list[str] = []
    specs: dict[str, PointSpec] = {s.ref: s for s in site.point_specs()}
    vpp_ids = {v.id for v in site.vpps}
    cas = {o.vpp: o.common_address for o in config.vpps}
    for o in config.vpps:
        if o.vpp not in vpp_ids:
            problems.append(f"vpps: no VPP {o.vpp!r} in the site")
    out: list[IEC104TableEntry] = []
    used_cas: dict[int, str] = {}
    for i, v in enumerate(site.vpps):
        ca = cas.get(v.id, config.common_address_base + i)
        if ca in used_cas:
            problems.append(f"VPP {v.id}: common address {ca} is also {used_cas[ca]}'s")
        used_cas[ca] = v.id
        out.extend(_vpp_entries(config, v, ca, specs))
    ca_of: dict[str, int] = {}
    for e in out:
        ca_of.setdefault(e.vpp, e.common_address)
    out = _apply_overrides(config, out, problems)
    for x in config.extra_points:
        spec = specs.get(x.point)
        vpp = x.point.split(".", 1)[0]
        if spec is None or vpp not in ca_of:
            problems.append(f"extra_points: {x.point!r} is not a point of the site")
            continue
        command = x.type.startswith("C_")
        fn = PointFunction.DIRECT if command else PointFunction.TWIN
        if command and spec.access != Access.RW:
            problems.append(f"extra_points: {x.point!r} is read-only: it cannot take {x.type}")
            continue
        if not _type_ok(fn, x.type, spec.dtype):
            problems.append(f"extra_points: {x.type} does not fit {x.point!r} ({spec.dtype})")
            continue
        out.append(
            IEC104TableEntry(
                common_address=ca_of[vpp],
                ioa=x.ioa,
                type=x.type,
                point=x.point,
                function=fn,
                vpp=vpp,
                description=x.description or spec.description,
                unit=spec.unit,
                scale=x.scale,
                deadband=x.deadband,
                min=x.min if x.min is not None else spec.min,
                max=x.max if x.max is not None else spec.max,
                select_before_operate=x.select_before_operate,
            )
        )
    seen: dict[tuple[int, int], str] = {}
    per_ca: dict[int, int] = {}
    for e in out:
        key = (e.common_address, e.ioa)
        if key in seen:
            problems.append(
                f"common address {e.common_address} IOA {e.ioa}: {e.point} ({e.type}) collides "
                f"with {seen[key]}"
            )
        seen[key] = f"{e.point} ({e.type})"
        per_ca[e.common_address] = per_ca.get(e.common_address, 0) + 1
    for ca, n in per_ca.items():
        if n > MAX_POINTS_PER_CA:
            problems.append(
                f"common address {ca} has {n} points: c104 loses interrogation answers above "
                f"~5,000 per address; keep at most {MAX_POINTS_PER_CA} (split the VPP or turn "
                "resource_telemetry off)"
            )
    if problems:
        raise PointTableError(problems)
    return sorted(out, key=lambda e: (e.common_address, e.ioa))


def _vpp_entries(
    config: IEC104ServerConfig, v: VPPConfig, ca: int, specs: dict[str, PointSpec]
) -> list[IEC104TableEntry]:
    out: list[IEC104TableEntry] = []
    name = v.name or v.id
    db = config.deadbands

    def add(
        ioa: int,
        type_name: str,
        point: str,
        fn: PointFunction,
        desc: str,
        unit: str = "",
        **kw: float | bool | None,
    ) -> None:
        out.append(
            IEC104TableEntry(
                common_address=ca,
                ioa=ioa,
                type=type_name,
                point=point,
                function=fn,
                vpp=v.id,
                description=f"{name}: {desc}",
                unit=unit,
                # Counters go out on counter interrogation, commands never: no deadband.
                deadband=0.0 if type_name.startswith(("C_", "M_IT")) else db.get(unit, 0.0),
                **kw,  # type: ignore[arg-type]
            )
        )

    for i, (fn, path, t, unit, desc) in enumerate(_INDICATIONS):
        add(_SP_BASE + i, t, _server_ref(v.id, path), fn, desc, unit)
    for i, (fn, key) in enumerate(_MEASURANDS):
        if fn in _SERVER_MEASURANDS:
            unit, desc = _SERVER_MEASURANDS[fn]
            ref = _server_ref(v.id, key)
        else:
            ref = plant_ref(v.id, key)
            spec = specs[ref]
            unit, desc = spec.unit, spec.description.split(": ", 1)[-1]
        t = "M_ME_NB_1" if fn == PointFunction.ONLINE else "M_ME_NC_1"
        add(_ME_BASE + i, t, ref, fn, desc, unit)
    for i, (fn, path, desc) in enumerate(_COUNTERS):
        add(
            _IT_BASE + i,
            "M_IT_NA_1",
            _server_ref(v.id, path),
            fn,
            desc,
            "kWh",
            scale=config.counter_scale_kwh,
        )
    sbo_c = config.select_before_operate_commands
    for i, (fn, path, t, desc) in enumerate(_SWITCHES):
        add(_SC_BASE + i, t, _server_ref(v.id, path), fn, desc, select_before_operate=sbo_c)
    (plo, phi), (qlo, qhi) = _vpp_ranges(v)
    sbo_s = config.select_before_operate_setpoints
    for fn, base, path, lo, hi, unit, what in (
        (PointFunction.AGC_P, _AGC_BASE, P_TARGET_PATH, plo, phi, "kW", "active-power target (AGC)"),
        (PointFunction.AVC_Q, _AVC_BASE, Q_TARGET_PATH, qlo, qhi, "kvar", "reactive-power target (AVC)"),
    ):  # fmt: skip
        for t in config.setpoint_types:
            add(
                base + SETPOINT_TYPES.index(t),
                t,
                _server_ref(v.id, path),
                fn,
                what,
                unit,
                scale=setpoint_scale(t, lo, hi),
                min=lo,
                max=hi,
                select_before_operate=sbo_s,
            )
    if config.resource_telemetry:
        for k, r in enumerate(v.all_resources()):
            for tpl in NATURES[r.kind].points:
                ref = f"{v.id}.{r.id}/{tpl.path}"
                spec = specs[ref]
                if tpl.role == Role.ENERGY:
                    add(
                        _RES_IT_BASE + k,
                        "M_IT_NA_1",
                        ref,
                        PointFunction.TWIN,
                        spec.description,
                        spec.unit,
                        scale=config.counter_scale_kwh,
                    )
                elif tpl.role in _RES_ROLES:
                    ioa = _RES_ME_BASE + _RES_SLOTS * k + _RES_ROLES.index(tpl.role)
                    typ = "M_ME_NB_1" if spec.dtype == DType.INT else "M_ME_NC_1"
                    add(ioa, typ, ref, PointFunction.TWIN, spec.description, spec.unit)
    return out


def _apply_overrides(
    config: IEC104ServerConfig, entries: list[IEC104TableEntry], problems: list[str]
) -> list[IEC104TableEntry]:
    out = list(entries)
    for n, o in enumerate(config.overrides):
        where = f"overrides[{n}] ({o.point})"
        cands = [i for i, e in enumerate(out) if e.point == o.point]
        if o.command is not None:
            cands = [i for i in cands if out[i].is_command == o.command]
        cmd_types = {out[i].type for i in cands if out[i].is_command}
        if o.type is not None and o.type in cmd_types:
            cands = [i for i in cands if out[i].type == o.type]
        elif o.type is not None and o.type.startswith("C_"):
            problems.append(f"{where}: the point has no {o.type} entry")
            continue
        elif o.type is not None:
            cands = [i for i in cands if not out[i].is_command]
        if not cands:
            problems.append(f"{where}: no generated entry has this point")
            continue
        if len(cands) > 1:
            kinds = ", ".join(sorted(out[i].type for i in cands))
            problems.append(f"{where}: matches several entries ({kinds}); give command and type")
            continue
        i = cands[0]
        e = out[i]
        if not o.enabled:
            out[i] = e.model_copy(update={"ioa": -1})
            continue
        upd: dict[str, object] = {}
        if o.type is not None and not e.is_command:
            if not _type_ok(e.function, o.type, None):
                problems.append(f"{where}: type {o.type} does not fit {e.function.value}")
                continue
            upd["type"] = o.type
        for field in ("ioa", "scale", "deadband", "min", "max", "select_before_operate"):
            val = getattr(o, field)
            if val is not None:
                upd[field] = val
        if o.description is not None:
            upd["description"] = o.description
        out[i] = e.model_copy(update=upd)
    return [e for e in out if e.ioa != -1]
