"""Configuration of the IEC 61850 MMS server that serves the twin to SCADA and substation clients.

Every served resource is a logical device named `<VPP id><resource id>` (the IEC 61850 LD name
convention of IED name + LD inst, with the VPP as the IED): the twin point
`VPP1.BAT02/MMXU1.TotW.mag.f` is `VPP1BAT02/MMXU1.TotW.mag.f [MX]` on the wire, and the VPP's
plant points live in `VPP1PLANT`. Each logical device has an LLN0 holding one data set of every
value it serves and the report control blocks configured here (buffered and unbuffered, each with
`instances` copies so several clients can subscribe). Writable points are controllable objects:
APC for float set-points, SPC for booleans (DPC where configured), INC for integers, with the
control model given here.

Cost of report blocks (libiec61850 1.6.1, measured): on every value or quality change the server
looks for the change in the data set of every buffered block (enabled or not: it buffers for a
client to come) and of every enabled unbuffered block, linearly. Serving 10,000 points in 100
logical devices, 10,000 changes took 34 ms with no buffered block, 6.5 s with one per logical
device and 11.9 s with two; with 100 unbuffered blocks enabled by a client, 3.2 s. Keep
`instances` of buffered blocks low on large sites.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from model.points import PointRef, StrictModel

__all__ = [
    "CONTROL_MODELS",
    "ControlModelName",
    "MmsControlConfig",
    "MmsReportConfig",
    "MmsServerConfig",
    "TriggerOption",
    "mms_ld_name",
]

#: IEC 61850-7-2 control models, as SCL spells them (ctlModel enumeration of 7-3).
ControlModelName = Literal[
    "status-only",
    "direct-with-normal-security",
    "sbo-with-normal-security",
    "direct-with-enhanced-security",
    "sbo-with-enhanced-security",
]
CONTROL_MODELS: tuple[str, ...] = ControlModelName.__args__  # type: ignore[attr-defined]

#: Report trigger options (TrgOps of 7-2): data change, quality change, data update,
#: integrity (periodic) and general interrogation.
TriggerOption = Literal["dchg", "qchg", "dupd", "period", "gi"]

Ident = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)]
RcbName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=28)]


def mms_ld_name(ld: str) -> str:
    """The MMS logical device name of a twin LD ('VPP1.BAT02' -> 'VPP1BAT02')."""
    return ld.replace(".", "")


class MmsReportConfig(StrictModel):
    """A report control block put in every served logical device's LLN0."""

    name: RcbName
    buffered: bool = False
    instances: int = Field(
        default=2, ge=1, le=99, description="copies named <name>01, <name>02... (one per client)"
    )
    trigger: list[TriggerOption] = ["dchg", "qchg", "gi"]
    integrity_period_ms: int = Field(
        default=0, ge=0, description="IntgPd (0: no integrity reports)"
    )
    buffer_time_ms: int = Field(default=0, ge=0, description="BufTm: changes gathered per report")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(set(self.trigger)) != len(self.trigger):
            raise ValueError("trigger lists an option twice")
        if "period" in self.trigger and self.integrity_period_ms == 0:
            raise ValueError("trigger 'period' needs integrity_period_ms above 0")
        return self


class MmsControlConfig(StrictModel):
    """How one writable point is served as a controllable object."""

    point: PointRef
    control_model: ControlModelName
    cdc: Literal["APC", "SPC", "DPC", "INC"] | None = Field(
        default=None, description="default: APC for float, SPC for bool, INC for int points"
    )
    sbo_timeout_ms: int = Field(default=30_000, ge=100, le=3_600_000)


class MmsServerConfig(StrictModel):
    """The MMS server: listener, which VPPs, data sets, report blocks and control models."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=102, ge=1, le=65535)
    ied_name: Ident = Field(default="VPPGW", description="name of the served IED model")
    vpps: list[Ident] = Field(default=[], description="VPPs served (empty: every VPP)")
    resources: bool = Field(default=True, description="serve every resource's logical device")
    plant: bool = Field(default=True, description="serve each VPP's plant logical device")
    dataset: Ident = Field(default="Measurements", description="data set of each LLN0")
    reports: list[MmsReportConfig] = [
        MmsReportConfig(name="urcbMeas", buffered=False, instances=2),
        MmsReportConfig(name="brcbMeas", buffered=True, instances=1),
    ]
    control_model: ControlModelName = "direct-with-enhanced-security"
    controls: list[MmsControlConfig] = []
    interlock_needs_good_power: bool = Field(
        default=True,
        description="a control with the interlock-check bit set is refused while the "
        "resource's active power is not good (invalid, questionable or not topical)",
    )
    command_deadline_s: float = Field(default=10.0, gt=0)
    subscriber_queue: int = Field(default=1000, ge=1, description="twin change sets held")

    @model_validator(mode="after")
    def _check(self) -> Self:
        names = [r.name for r in self.reports]
        if len(set(names)) != len(names):
            raise ValueError("reports: names must be unique")
        points = [c.point for c in self.controls]
        if len(set(points)) != len(points):
            raise ValueError("controls: a point is configured twice")
        if len(set(self.vpps)) != len(self.vpps):
            raise ValueError("vpps lists a VPP twice")
        return self

    def control_for(self, point: str) -> MmsControlConfig | None:
        """The explicit control configuration of a point, if any."""
        return next((c for c in self.controls if c.point == point), None)
