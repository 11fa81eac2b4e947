"""Sans-IO Modbus planning and value coding: which reads a poll makes, and words <-> values.

Theory of operation: a poll group's registers of one table are sorted by address and merged
into read blocks. A register joins the open block when the unused addresses between the block's
end and the register are at most `max_gap` and the block, extended to the register's last word,
still fits the request limit (125 registers for function codes 3/4, 2000 bits for 1/2, Modbus
Application Protocol V1.1b3 sections 6.1-6.4). A multi-word value is never split across blocks.

Values follow the register map: value = raw * scale + offset, where raw is the register content
read as int16/uint16/int32/uint32/float32. Inside a register the bytes are big-endian ("MODBUS
uses a 'big-Endian' representation for addresses and data items", MB Application Protocol 4.2);
the order of the two words of a 32-bit value is the map's `word_order` (big: most significant
word first). Encoding inverts this, rounds integer types to the nearest raw value and refuses a
value that does not fit, naming the point and its range in engineering units.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.errors import CommandRejected, GatewayError
from model.drivers import (
    ModbusMapConfig,
    ModbusRegisterMap,
    ModbusTable,
    RegisterType,
    WordOrder,
)
from model.quality import BAD_REFERENCE, FAILURE, Validity, with_validity
from model.sample import Value

__all__ = [
    "BIT_TABLES",
    "EXCEPTION_NAMES",
    "RAW_RANGES",
    "PlanError",
    "ReadBlock",
    "RegisterRangeError",
    "decode",
    "decode_block",
    "encode",
    "exception_name",
    "exception_quality",
    "merge_blocks",
    "plan_polls",
    "plan_reads",
    "value_range",
]

BIT_TABLES = frozenset({ModbusTable.COIL, ModbusTable.DISCRETE_INPUT})
TABLE_ORDER = (ModbusTable.COIL, ModbusTable.DISCRETE_INPUT, ModbusTable.HOLDING, ModbusTable.INPUT)

# Largest finite IEEE 754 single-precision value.
FLOAT32_MAX = 3.4028234663852886e38

# Raw (register) range of each integer type; float32 is bounded by FLOAT32_MAX.
RAW_RANGES: dict[RegisterType, tuple[float, float]] = {
    RegisterType.BOOL: (0, 1),
    RegisterType.INT16: (-(2**15), 2**15 - 1),
    RegisterType.UINT16: (0, 2**16 - 1),
    RegisterType.INT32: (-(2**31), 2**31 - 1),
    RegisterType.UINT32: (0, 2**32 - 1),
    RegisterType.FLOAT32: (-FLOAT32_MAX, FLOAT32_MAX),
}

_STRUCT = {
    RegisterType.INT16: ">h",
    RegisterType.UINT16: ">H",
    RegisterType.INT32: ">i",
    RegisterType.UINT32: ">I",
    RegisterType.FLOAT32: ">f",
}

# Modbus Application Protocol V1.1b3, section 7 "MODBUS Exception Responses".
EXCEPTION_NAMES: dict[int, str] = {
    1: "ILLEGAL FUNCTION",
    2: "ILLEGAL DATA ADDRESS",
    3: "ILLEGAL DATA VALUE",
    4: "SERVER DEVICE FAILURE",
    5: "ACKNOWLEDGE",
    6: "SERVER DEVICE BUSY",
    7: "NEGATIVE ACKNOWLEDGE",
    8: "MEMORY PARITY ERROR",
    10: "GATEWAY PATH UNAVAILABLE",
    11: "GATEWAY TARGET DEVICE FAILED TO RESPOND",
}


class PlanError(GatewayError):
    """A register map that cannot be read within the configured request limits."""


class RegisterRangeError(CommandRejected):
    """A value that the target register cannot hold (after scale and offset)."""

    def __init__(self, reg: ModbusRegisterMap, value: object, lo: float, hi: float) -> None:
        where = f"{reg.table.value} {reg.address} ({reg.dtype.value}"
        if reg.dtype != RegisterType.BOOL:
            where += f", scale {reg.scale:g}, offset {reg.offset:g}"
        super().__init__(
            f"{reg.point}: value {value!r} is out of range for {where}): "
            f"allowed {lo:.10g}..{hi:.10g}",
            code="out_of_range",
        )
        self.point = reg.point
        self.value = value
        self.lo = lo
        self.hi = hi


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: `count` registers (or bits) of `table` from `start`, feeding `registers`."""

    table: ModbusTable
    start: int
    count: int
    registers: tuple[ModbusRegisterMap, ...]

    @property
    def end(self) -> int:
        """Last address read."""
        return self.start + self.count - 1

    @property
    def points(self) -> tuple[str, ...]:
        """Model points fed by this block."""
        return tuple(r.point for r in self.registers)


def merge_blocks(
    table: ModbusTable, registers: Iterable[ModbusRegisterMap], limit: int, max_gap: int
) -> list[ReadBlock]:
    """Merge registers of one table into read blocks of at most `limit` addresses."""
    regs = sorted((r for r in registers if r.table == table), key=lambda r: r.address)
    blocks: list[ReadBlock] = []
    cur: list[ModbusRegisterMap] = []
    start = end = 0
    for r in regs:
        if r.words > limit:
            raise PlanError(
                f"{r.point}: {r.dtype.value} at {table.value} {r.address} needs {r.words} "
                f"registers, more than the {limit} allowed per read"
            )
        if cur and r.address - end - 1 <= max_gap and r.end - start + 1 <= limit:
            cur.append(r)
            end = max(end, r.end)
            continue
        if cur:
            blocks.append(ReadBlock(table, start, end - start + 1, tuple(cur)))
        cur, start, end = [r], r.address, r.end
    if cur:
        blocks.append(ReadBlock(table, start, end - start + 1, tuple(cur)))
    return blocks


def plan_reads(config: ModbusMapConfig, group: str | None = None) -> list[ReadBlock]:
    """Read blocks of one poll group (or of every register when group is None)."""
    regs = [r for r in config.registers if group is None or r.group == group]
    out: list[ReadBlock] = []
    for table in TABLE_ORDER:
        limit = config.max_bits_per_read if table in BIT_TABLES else config.max_registers_per_read
        out.extend(merge_blocks(table, regs, limit, config.max_gap))
    return out


def plan_polls(config: ModbusMapConfig) -> dict[str, list[ReadBlock]]:
    """Read blocks of every poll group, by group name (groups without registers map to [])."""
    return {g.name: plan_reads(config, g.name) for g in config.poll_groups}


def decode(reg: ModbusRegisterMap, words: Sequence[int] | Sequence[bool]) -> Value:
    """The value of `reg` from its own words (or its one bit): raw * scale + offset.

    Integer types with scale 1 and offset 0 give an int, other register values a float.
    """
    if len(words) != reg.words:
        raise ValueError(
            f"{reg.point}: {reg.dtype.value} needs {reg.words} words, got {len(words)}"
        )
    if reg.dtype == RegisterType.BOOL:
        return bool(words[0])
    w = [int(x) & 0xFFFF for x in words]
    if reg.words == 2 and reg.word_order == WordOrder.LITTLE:
        w.reverse()
    data = b"".join(x.to_bytes(2, "big") for x in w)
    raw: int | float = struct.unpack(_STRUCT[reg.dtype], data)[0]
    if reg.dtype != RegisterType.FLOAT32 and reg.scale == 1 and reg.offset == 0:
        return int(raw)
    return raw * reg.scale + reg.offset


def decode_block(
    block: ReadBlock, data: Sequence[int] | Sequence[bool]
) -> list[tuple[ModbusRegisterMap, Value]]:
    """Decode every register of a block from the words (or bits) read from block.start on."""
    if len(data) < block.count:
        raise ValueError(
            f"{block.table.value} {block.start}: expected {block.count} values, got {len(data)}"
        )
    out: list[tuple[ModbusRegisterMap, Value]] = []
    for r in block.registers:
        i = r.address - block.start
        out.append((r, decode(r, data[i : i + r.words])))
    return out


def value_range(reg: ModbusRegisterMap) -> tuple[float, float]:
    """Lowest and highest value (engineering units) that `reg` can hold."""
    lo, hi = RAW_RANGES[reg.dtype]
    if reg.dtype == RegisterType.BOOL:
        return lo, hi
    a, b = lo * reg.scale + reg.offset, hi * reg.scale + reg.offset
    return (a, b) if a <= b else (b, a)


def encode(reg: ModbusRegisterMap, value: Value) -> list[int]:
    """The words (or, for a coil, [0] / [1]) that make `reg` read as `value`.

    Raises RegisterRangeError (naming the point and the allowed range) for a value the register
    cannot hold.
    """
    if reg.dtype == RegisterType.BOOL:
        if isinstance(value, bool) or value in (0, 1):
            return [1 if value else 0]
        raise RegisterRangeError(reg, value, 0, 1)
    lo_v, hi_v = value_range(reg)
    try:
        raw = (float(value) - reg.offset) / reg.scale
    except (TypeError, ValueError, OverflowError):
        raise RegisterRangeError(reg, value, lo_v, hi_v) from None
    if not math.isfinite(raw):
        raise RegisterRangeError(reg, value, lo_v, hi_v)
    lo, hi = RAW_RANGES[reg.dtype]
    packed: int | float
    if reg.dtype == RegisterType.FLOAT32:
        if abs(raw) > FLOAT32_MAX:
            raise RegisterRangeError(reg, value, lo_v, hi_v)
        packed = raw
    else:
        packed = round(raw)
        if not lo <= packed <= hi:
            raise RegisterRangeError(reg, value, lo_v, hi_v)
    data = struct.pack(_STRUCT[reg.dtype], packed)
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if reg.words == 2 and reg.word_order == WordOrder.LITTLE:
        words.reverse()
    return words


def exception_name(code: int) -> str:
    """'ILLEGAL DATA ADDRESS (2)' for 2; unknown codes read 'EXCEPTION (n)'."""
    return f"{EXCEPTION_NAMES.get(code, 'EXCEPTION')} ({code})"


def exception_quality(code: int) -> int:
    """Quality of points whose read got Modbus exception `code`: invalid, with the reason.

    Codes 1-3 (function, address or value refused) say the map does not fit the device:
    badReference. Every other code is the device failing to serve the request: failure.
    """
    detail = BAD_REFERENCE if code in (1, 2, 3) else FAILURE
    return with_validity(detail, Validity.INVALID)
