"""Driver configuration of an IEC 60870-5-101 (DL/T 634.5101) outstation on a serial line or TCP tunnel."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from model.binding import Binding
from model.iec60870 import IEC101_COMMAND_TYPES, IEC101_MONITOR_TYPES, InfoObjectMap
from model.points import StrictModel

__all__ = [
    "IEC101_COMMAND_TYPES",
    "IEC101_MONITOR_TYPES",
    "IEC101DriverConfig",
    "IEC101PointMap",
]


class IEC101PointMap(InfoObjectMap):
    """One information object of an IEC 101 outstation bound to a model point: value = raw * scale + offset."""

    MONITOR_TYPES: ClassVar[frozenset[str]] = IEC101_MONITOR_TYPES
    COMMAND_TYPES: ClassVar[frozenset[str]] = IEC101_COMMAND_TYPES
    STANDARD: ClassVar[str] = "IEC 101"
    EXAMPLES: ClassVar[str] = "M_ME_NC_1, M_ME_TC_1, C_SE_NC_1"


class IEC101DriverConfig(StrictModel):
    """An IEC 101 outstation acquired by our primary station over a serial line or a TCP tunnel."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]
    protocol: Literal["iec101"]
    enabled: bool = True
    link: str = Field(
        description="serial:///dev/ttyS0?baudrate=9600&parity=E or tcp://host:port (serial server)"
    )
    mode: Literal["unbalanced", "balanced"] = "unbalanced"
    link_address: int = Field(default=1, ge=0, le=65535)
    link_address_size: Literal[0, 1, 2] = Field(default=1, description="0 only in balanced mode")
    cot_size: Literal[1, 2] = 1
    originator_address: int = Field(default=0, ge=0, le=255, description="with cot_size 2 only")
    ca_size: Literal[1, 2] = 1
    ioa_size: Literal[1, 2, 3] = 2
    common_address: int = Field(default=1, ge=1, le=65534)
    class1_poll_s: float = Field(
        default=0.0, ge=0, description="periodic class 1 request (0: only when ACD is set)"
    )
    class2_poll_s: float = Field(default=0.5, gt=0, description="class 2 request period")
    response_timeout_ms: int = Field(default=1000, ge=10, description="link-layer answer timeout")
    retries: int = Field(default=2, ge=0, le=10, description="repeats of a request (same FCB)")
    test_interval_s: float = Field(default=0.0, ge=0, description="balanced: link test when idle")
    command_timeout_ms: int = Field(default=5000, ge=100)
    interrogation_period_s: float = Field(
        default=0.0, ge=0, description="periodic general interrogation (0: only on link up)"
    )
    clock_sync: bool = True
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    points: list[IEC101PointMap] = []

    @field_validator("link")
    @classmethod
    def _link_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme == "tcp":
            if not parts.hostname or parts.port is None:
                raise ValueError(f"{v!r}: a tcp link needs host and port, e.g. tcp://10.0.0.5:4001")
        elif parts.scheme == "serial":
            if not (parts.path or parts.netloc):
                raise ValueError(f"{v!r}: a serial link needs a device, e.g. serial:///dev/ttyS0")
        else:
            raise ValueError(f"{v!r}: link must start with serial:// or tcp://")
        return v

    def bindings(self) -> list[Binding]:
        """(list key, index, point, is_command) of every entry binding a model point."""
        return [("points", i, p.point, p.is_command) for i, p in enumerate(self.points)]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.link_address_size == 0 and self.mode != "balanced":
            raise ValueError("link_address_size 0 is allowed in balanced mode only")
        if self.link_address_size and self.link_address >= (1 << (8 * self.link_address_size)) - 1:
            top = (1 << (8 * self.link_address_size)) - 2
            raise ValueError(
                f"link_address {self.link_address} does not fit {self.link_address_size} octet(s) "
                f"(0..{top}; {top + 1} is the broadcast address)"
            )
        if self.link_address_size == 0 and self.link_address:
            raise ValueError("link_address must be 0 when link_address_size is 0")
        if self.common_address >= (1 << (8 * self.ca_size)) - 1:
            top = (1 << (8 * self.ca_size)) - 2
            raise ValueError(
                f"common_address {self.common_address} does not fit {self.ca_size} octet(s) (1..{top})"
            )
        if self.originator_address and self.cot_size != 2:
            raise ValueError("originator_address needs cot_size 2")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s is above reconnect_max_s")
        ioa_max = (1 << (8 * self.ioa_size)) - 1
        seen: dict[int, int] = {}
        for i, p in enumerate(self.points):
            if p.ioa > ioa_max:
                raise ValueError(
                    f"points[{i}]: ioa {p.ioa} does not fit {self.ioa_size} octet(s) (1..{ioa_max})"
                )
            if p.ioa in seen:
                raise ValueError(
                    f"points[{i}]: ioa {p.ioa} is already used by points[{seen[p.ioa]}]"
                )
            seen[p.ioa] = i
        return self
