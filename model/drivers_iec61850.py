"""Driver configuration of an IEC 61850 IED read over MMS (the libiec61850 client, via pyiec61850).

A point is one leaf data attribute of the IED, named by its object reference as the IED spells it
(`<LD name>/<LN>.<DO>[.<SDO>].<DA>[.<BDA>]`, the LD name being the IED name plus the LDevice inst
unless the SCL gives an ldName) and its functional constraint. Quality and time come from the
data object's `q` and `t` with the same FC unless given. Writable points are either operated as a
controllable object (APC, SPC, DPC, INC: `command: operate`, by default on the point's data
object) or written directly (`command: write`, e.g. an ASG's setMag.f with FC SP).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from model.drivers import Binding
from model.points import PointRef, StrictModel

__all__ = [
    "FUNCTIONAL_CONSTRAINTS",
    "MMS_REF_PATTERN",
    "RCB_REF_PATTERN",
    "FunctionalConstraint",
    "IEC61850ClientDriverConfig",
    "IEC61850PointMap",
]

FunctionalConstraint = Literal[
    "ST", "MX", "SP", "SV", "CF", "DC", "SG", "SE", "SR", "OR", "BL", "EX", "CO"
]  # fmt: skip
FUNCTIONAL_CONSTRAINTS = frozenset(FunctionalConstraint.__args__)  # type: ignore[attr-defined]

# LDName/LN.DO[.SDO...].DA[...]: MMS identifiers (IEC 61850-8-1: letters, digits, underscore).
MMS_REF_PATTERN = re.compile(
    r"^[A-Za-z0-9_]{1,64}/[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)+$"
)
# LDName/LN.RP.name (unbuffered) or LDName/LN.BR.name (buffered).
RCB_REF_PATTERN = re.compile(r"^[A-Za-z0-9_]{1,64}/[A-Za-z][A-Za-z0-9_]*\.(RP|BR)\.[A-Za-z0-9_]+$")

MmsRef = Annotated[str, Field(pattern=MMS_REF_PATTERN.pattern, max_length=129)]


class IEC61850PointMap(StrictModel):
    """One data attribute of an IED bound to a model point: value = raw * scale + offset."""

    ref: MmsRef = Field(description="leaf attribute, e.g. 'INV1LD0/MMXU1.TotW.mag.f'")
    fc: FunctionalConstraint = "MX"
    point: PointRef
    scale: float = 1.0
    offset: float = 0.0
    quality_ref: MmsRef | None = Field(
        default=None, description="quality attribute (default: the data object's q, same FC)"
    )
    time_ref: MmsRef | None = Field(
        default=None, description="timestamp attribute (default: the data object's t, same FC)"
    )
    command: Literal["operate", "write"] | None = Field(
        default=None, description="how the point is commanded; absent: read-only"
    )
    control: MmsRef | None = Field(
        default=None,
        description="controllable data object operated for command=operate (default: the "
        "point's data object, e.g. 'INV1LD0/DRCC1.WSpt')",
    )
    select_before_operate: bool | None = Field(
        default=None,
        description="force select-before-operate on or off (default: the IED's ctlModel)",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.command != "operate" and (
            self.control is not None or self.select_before_operate is not None
        ):
            raise ValueError("control and select_before_operate apply to command: operate only")
        return self

    @property
    def writable(self) -> bool:
        """True when commands may target the point."""
        return self.command is not None

    @property
    def data_object(self) -> str:
        """'LD/LN.DO' of the point's attribute (the first name after the LN)."""
        ld, _, rest = self.ref.partition("/")
        parts = rest.split(".")
        return f"{ld}/{parts[0]}.{parts[1]}"

    @property
    def control_ref(self) -> str:
        """The controllable object operated for this point."""
        return self.control or self.data_object

    @property
    def q_ref(self) -> str:
        """The quality attribute of the point."""
        return self.quality_ref or f"{self.data_object}.q"

    @property
    def t_ref(self) -> str:
        """The timestamp attribute of the point."""
        return self.time_ref or f"{self.data_object}.t"


class IEC61850ClientDriverConfig(StrictModel):
    """An IEC 61850 IED (server) read by reports and polls, commanded by controls and writes."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]
    protocol: Literal["iec61850"]
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=102, ge=1, le=65535)
    ied_name: str | None = Field(default=None, description="the IED's name in its SCL file")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=5.0, gt=0, description="MMS request timeout")
    reports: list[Annotated[str, Field(pattern=RCB_REF_PATTERN.pattern)]] = Field(
        default=[],
        description="report control blocks to enable, e.g. 'INV1LD0/LLN0.RP.urcbMeas01' or "
        "'INV1LD0/LLN0.BR.brcbMeas01'",
    )
    general_interrogation: bool = Field(
        default=True, description="ask each enabled report for a general interrogation"
    )
    integrity_period_ms: int = Field(
        default=0, ge=0, description="IntgPd written to each report block (0: leave as is)"
    )
    poll_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="points no enabled report carries are read this often (0: at connect only)",
    )
    watchdog_s: float = Field(default=0.5, gt=0, description="connection state check period")
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    originator: str = Field(default="vpp-gateway", max_length=64, description="orIdent of controls")
    originator_category: int = Field(
        default=3, ge=0, le=8, description="orCat of controls (3: remote control)"
    )
    points: list[IEC61850PointMap] = []

    def bindings(self) -> list[Binding]:
        """(list key, index, point, is_command); a writable attribute is also acquired."""
        out: list[Binding] = [("points", i, p.point, False) for i, p in enumerate(self.points)]
        out += [("points", i, p.point, True) for i, p in enumerate(self.points) if p.writable]
        return out

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: dict[tuple[str, str], int] = {}
        for i, p in enumerate(self.points):
            key = (p.ref, p.fc)
            if key in seen:
                raise ValueError(
                    f"points[{i}]: {p.ref} [{p.fc}] is already mapped by points[{seen[key]}]"
                )
            seen[key] = i
        if len(set(self.reports)) != len(self.reports):
            raise ValueError("reports lists a report control block twice")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s is above reconnect_max_s")
        return self

    @property
    def where(self) -> str:
        """The IED's address, for messages."""
        return f"{self.ied_name + ' at ' if self.ied_name else ''}{self.host}:{self.port}"
