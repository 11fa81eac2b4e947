"""Declarative driver configurations: which field address feeds or commands which model point."""

from __future__ import annotations

from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from model.binding import Binding
from model.drivers_dlt645 import DLT645DriverConfig
from model.drivers_dlt698 import DLT698DriverConfig
from model.drivers_iec101 import IEC101DriverConfig
from model.drivers_iec61850 import IEC61850ClientDriverConfig
from model.edge import EdgeLinkDriverConfig
from model.iec60870 import IEC104_COMMAND_TYPES, IEC104_MONITOR_TYPES, InfoObjectMap
from model.points import PointRef, StrictModel

__all__ = [
    "IEC104_COMMAND_TYPES",
    "IEC104_MONITOR_TYPES",
    "PROTOCOLS",
    "Binding",
    "DriverConfig",
    "IEC104DriverConfig",
    "IEC104PointMap",
    "ModbusDriverConfig",
    "ModbusMapConfig",
    "ModbusRegisterMap",
    "ModbusRtuDriverConfig",
    "ModbusTable",
    "OpcUaClientDriverConfig",
    "OpcUaPointMap",
    "PollGroup",
    "RegisterType",
    "WordOrder",
]


class IEC104PointMap(InfoObjectMap):
    """One information object of an IEC 104 outstation bound to a model point."""


class _TcpDriver(StrictModel):
    id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]
    host: str = "127.0.0.1"
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    enabled: bool = True


class IEC104DriverConfig(_TcpDriver):
    """An IEC 60870-5-104 outstation polled by our c104 client."""

    protocol: Literal["iec104"]
    port: int = Field(default=2404, ge=1, le=65535)
    common_address: int = Field(default=1, ge=1, le=65534)
    originator_address: int = Field(default=0, ge=0, le=255)
    command_timeout_ms: int = Field(default=5000, ge=100)
    interrogation_period_s: float = Field(
        default=0.0, ge=0, description="periodic general interrogation (0: only on connect)"
    )
    clock_sync: bool = True
    points: list[IEC104PointMap] = []

    def bindings(self) -> list[Binding]:
        """(list key, index, point, is_command) of every entry binding a model point."""
        return [("points", i, p.point, p.is_command) for i, p in enumerate(self.points)]

    @model_validator(mode="after")
    def _unique_ioa(self) -> Self:
        seen: dict[int, int] = {}
        for i, p in enumerate(self.points):
            if p.ioa in seen:
                raise ValueError(
                    f"points[{i}]: ioa {p.ioa} is already used by points[{seen[p.ioa]}]"
                )
            seen[p.ioa] = i
        return self


class ModbusTable(StrEnum):
    """The four Modbus data tables."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    HOLDING = "holding"
    INPUT = "input"


class RegisterType(StrEnum):
    """How register words are read as a value."""

    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"


class WordOrder(StrEnum):
    """Order of 16-bit words in 32-bit values: big = most significant word first."""

    BIG = "big"
    LITTLE = "little"


REGISTER_WORDS = {
    RegisterType.BOOL: 1,
    RegisterType.INT16: 1,
    RegisterType.UINT16: 1,
    RegisterType.INT32: 2,
    RegisterType.UINT32: 2,
    RegisterType.FLOAT32: 2,
}


class PollGroup(StrictModel):
    """Registers read together at their own period."""

    name: str
    period_s: float = Field(gt=0)


class ModbusRegisterMap(StrictModel):
    """One Modbus value bound to a model point: value = raw * scale + offset."""

    point: PointRef
    table: ModbusTable
    address: int = Field(ge=0, le=65535)
    dtype: RegisterType = RegisterType.UINT16
    word_order: WordOrder = WordOrder.BIG
    scale: float = 1.0
    offset: float = 0.0
    group: str = "default"
    writable: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        bit_table = self.table in (ModbusTable.COIL, ModbusTable.DISCRETE_INPUT)
        if bit_table and self.dtype != RegisterType.BOOL:
            raise ValueError(
                f"{self.table.value} holds bits: dtype must be bool, not {self.dtype.value}"
            )
        if not bit_table and self.dtype == RegisterType.BOOL:
            raise ValueError(f"{self.table.value} registers hold words: dtype bool is for coils")
        if self.end > 65535:
            raise ValueError(
                f"address {self.address} with {self.dtype.value} ends at {self.end}, beyond 65535"
            )
        if self.writable and self.table not in (ModbusTable.COIL, ModbusTable.HOLDING):
            raise ValueError(f"{self.table.value} is read-only in Modbus: writable must be false")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self

    @property
    def words(self) -> int:
        """Registers (or bits) the value occupies."""
        return REGISTER_WORDS[self.dtype]

    @property
    def end(self) -> int:
        """Last address occupied."""
        return self.address + self.words - 1


class ModbusMapConfig(StrictModel):
    """What Modbus TCP and Modbus RTU share: the device, its register map and poll groups."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]
    enabled: bool = True
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    device_id: int = Field(default=1, ge=0, le=247)
    timeout_s: float = Field(default=2.0, gt=0)
    max_registers_per_read: int = Field(default=125, ge=1, le=125)
    max_bits_per_read: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=8, ge=0, description="unused addresses a merged block may span")
    poll_groups: list[PollGroup] = [PollGroup(name="default", period_s=1.0)]
    registers: list[ModbusRegisterMap] = []

    def bindings(self) -> list[Binding]:
        """(list key, index, point, is_command); a writable register is also read back (monitored)."""
        out: list[Binding] = [
            ("registers", i, r.point, r.writable) for i, r in enumerate(self.registers)
        ]
        out += [
            ("registers", i, r.point, False) for i, r in enumerate(self.registers) if r.writable
        ]
        return out

    @model_validator(mode="after")
    def _check_map(self) -> Self:
        groups = {g.name for g in self.poll_groups}
        if len(groups) != len(self.poll_groups):
            raise ValueError("poll_groups: group names must be unique")
        by_table: dict[ModbusTable, list[tuple[int, int, int]]] = {}
        for i, r in enumerate(self.registers):
            if r.group not in groups:
                raise ValueError(f"registers[{i}]: poll group {r.group!r} is not defined")
            by_table.setdefault(r.table, []).append((r.address, r.end, i))
        for table, spans in by_table.items():
            spans.sort()
            for (a0, e0, i0), (a1, _e1, i1) in pairwise(spans):
                if a1 <= e0:
                    raise ValueError(
                        f"registers[{i1}] ({table.value} {a1}) overlaps registers[{i0}] "
                        f"({table.value} {a0}..{e0})"
                    )
        return self


class ModbusDriverConfig(ModbusMapConfig):
    """A Modbus TCP device polled by our pymodbus client."""

    protocol: Literal["modbus"]
    host: str = "127.0.0.1"
    port: int = Field(default=502, ge=1, le=65535)

    @property
    def where(self) -> str:
        """The device's address, for messages."""
        return f"{self.host}:{self.port}"


class ModbusRtuDriverConfig(ModbusMapConfig):
    """A Modbus RTU device on a serial line (RS-485 bus or RS-232), same register maps as TCP."""

    protocol: Literal["modbus_rtu"]
    link: str = Field(
        description="serial URL, e.g. serial:///dev/ttyUSB0?baudrate=9600&parity=E&stopbits=1"
    )

    @model_validator(mode="after")
    def _serial_link(self) -> Self:
        if not self.link.startswith("serial://"):
            raise ValueError(f"link {self.link!r}: Modbus RTU needs a serial:// link")
        return self

    @property
    def where(self) -> str:
        """The device's address, for messages."""
        return f"{self.link} unit {self.device_id}"


class OpcUaPointMap(StrictModel):
    """One variable of a device's OPC UA server bound to a model point: value = raw * scale + offset."""

    node: str = Field(
        description="NodeId ('ns=2;s=Inverter.P', 'i=2258') or browse path from Objects "
        "('2:Inverter/2:P')"
    )
    point: PointRef
    scale: float = 1.0
    offset: float = 0.0
    writable: bool = False

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if not self.node.strip():
            raise ValueError("node must name a NodeId or a browse path")
        return self


class OpcUaClientDriverConfig(StrictModel):
    """A device's OPC UA server, subscribed to by our asyncua client."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]
    protocol: Literal["opcua"]
    enabled: bool = True
    endpoint: str = Field(pattern=r"^opc\.tcp://", description="e.g. opc.tcp://127.0.0.1:4841")
    username: str | None = None
    password: str | None = None
    security: str | None = Field(
        default=None,
        description="asyncua security string, e.g. 'Basic256Sha256,SignAndEncrypt,cert.pem,key.pem'",
    )
    publishing_interval_ms: int = Field(default=500, ge=10)
    timeout_s: float = Field(default=5.0, gt=0)
    watchdog_s: float = Field(default=1.0, gt=0, description="session liveness check period")
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    points: list[OpcUaPointMap] = []

    def bindings(self) -> list[Binding]:
        """(list key, index, point, is_command); a writable variable is also subscribed to."""
        out: list[Binding] = [("points", i, p.point, False) for i, p in enumerate(self.points)]
        out += [("points", i, p.point, True) for i, p in enumerate(self.points) if p.writable]
        return out

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: dict[str, int] = {}
        for i, p in enumerate(self.points):
            if p.node in seen:
                raise ValueError(
                    f"points[{i}]: node {p.node!r} is already used by points[{seen[p.node]}]"
                )
            seen[p.node] = i
        if self.password is not None and self.username is None:
            raise ValueError("password given without username")
        return self


# Every protocol's config has `id`, `protocol`, `enabled` and `bindings()`; add new ones here.
DriverConfig = Annotated[
    IEC104DriverConfig
    | ModbusDriverConfig
    | ModbusRtuDriverConfig
    | OpcUaClientDriverConfig
    | IEC101DriverConfig
    | DLT698DriverConfig
    | DLT645DriverConfig
    | EdgeLinkDriverConfig
    | IEC61850ClientDriverConfig,
    Field(discriminator="protocol"),
]
PROTOCOLS = frozenset(
    {"iec104", "modbus", "modbus_rtu", "opcua", "iec101", "dlt698", "dlt645", "edge", "iec61850"}
)
