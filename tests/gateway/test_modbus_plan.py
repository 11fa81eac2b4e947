"""Modbus read planning and value coding (sans-IO): merge limits, word order, ranges, round trips."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import CommandRejected
from gateway.south.modbus_plan import (
    PlanError,
    RegisterRangeError,
    decode,
    decode_block,
    encode,
    exception_name,
    exception_quality,
    merge_blocks,
    plan_polls,
    plan_reads,
    value_range,
)
from model.drivers import (
    ModbusDriverConfig,
    ModbusRegisterMap,
    ModbusTable,
    RegisterType,
    WordOrder,
)
from model.quality import BAD_REFERENCE, FAILURE, Validity, with_validity

H = ModbusTable.HOLDING


def reg(
    address: int, dtype: str = "uint16", table: str = "holding", **kw: Any
) -> ModbusRegisterMap:
    return ModbusRegisterMap.model_validate(
        {
            "point": f"T.DEV/GGIO1.In{address}.mag.f",
            "table": table,
            "address": address,
            "dtype": dtype,
            **kw,
        }
    )


def cfg(registers: list[dict[str, Any]], **kw: Any) -> ModbusDriverConfig:
    return ModbusDriverConfig.model_validate(
        {"id": "mb", "protocol": "modbus", "registers": registers, **kw}
    )


def spans(blocks: list[Any]) -> list[tuple[int, int]]:
    return [(b.start, b.count) for b in blocks]


# --- planning -------------------------------------------------------------------------------


def test_contiguous_registers_split_at_125() -> None:
    regs = [reg(a) for a in range(130)]
    blocks = merge_blocks(H, regs, 125, 8)
    assert spans(blocks) == [(0, 125), (125, 5)]
    assert sum(len(b.registers) for b in blocks) == 130


def test_bits_split_at_2000() -> None:
    regs = [reg(a, "bool", "coil") for a in range(2100)]
    blocks = merge_blocks(ModbusTable.COIL, regs, 2000, 8)
    assert spans(blocks) == [(0, 2000), (2000, 100)]


def test_default_limits_come_from_the_config() -> None:
    c = cfg(
        [{"point": f"T.DEV/GGIO1.In{a}.mag.f", "table": "input", "address": a} for a in range(300)]
        + [
            {
                "point": f"T.DEV/GGIO2.Ind{a}.stVal",
                "table": "discrete_input",
                "address": a,
                "dtype": "bool",
            }
            for a in range(2500)
        ]
    )
    assert (c.max_registers_per_read, c.max_bits_per_read) == (125, 2000)
    blocks = plan_reads(c)
    by_table = {t: spans([b for b in blocks if b.table == t]) for t in ModbusTable}
    assert by_table[ModbusTable.INPUT] == [(0, 125), (125, 125), (250, 50)]
    assert by_table[ModbusTable.DISCRETE_INPUT] == [(0, 2000), (2000, 500)]


def test_max_gap_is_inclusive() -> None:
    # 0 and 9: addresses 1..8 unused = 8 = max_gap -> one block; 0 and 10: 9 unused -> two.
    assert spans(merge_blocks(H, [reg(0), reg(9)], 125, 8)) == [(0, 10)]
    assert spans(merge_blocks(H, [reg(0), reg(10)], 125, 8)) == [(0, 1), (10, 1)]
    assert spans(merge_blocks(H, [reg(0), reg(1)], 125, 0)) == [(0, 2)]
    assert spans(merge_blocks(H, [reg(0), reg(2)], 125, 0)) == [(0, 1), (2, 1)]


def test_gap_is_measured_from_the_last_word_of_a_32_bit_value() -> None:
    # float32 at 0 ends at 1; next at 10 leaves 2..9 = 8 unused.
    assert spans(merge_blocks(H, [reg(0, "float32"), reg(10)], 125, 8)) == [(0, 11)]
    assert spans(merge_blocks(H, [reg(0, "float32"), reg(11)], 125, 8)) == [(0, 2), (11, 1)]


def test_32_bit_value_is_never_split_across_blocks() -> None:
    regs = [reg(a) for a in range(124)] + [reg(124, "int32")]
    blocks = merge_blocks(H, regs, 125, 8)
    assert spans(blocks) == [(0, 124), (124, 2)]
    assert blocks[1].registers[0].dtype == RegisterType.INT32


def test_limit_counts_the_gap_too() -> None:
    blocks = merge_blocks(H, [reg(0), reg(5)], 5, 8)
    assert spans(blocks) == [(0, 1), (5, 1)]
    assert spans(merge_blocks(H, [reg(0), reg(4)], 5, 8)) == [(0, 5)]


def test_register_wider_than_the_limit_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match=r"T\.DEV/GGIO1\.In0\.mag\.f.*2 registers.*1 allowed"):
        merge_blocks(H, [reg(0, "float32")], 1, 0)


def test_groups_and_tables_are_planned_separately() -> None:
    c = cfg(
        [
            {"point": "T.DEV/A1.X.mag.f", "table": "holding", "address": 0, "group": "fast"},
            {"point": "T.DEV/A2.X.mag.f", "table": "holding", "address": 1, "group": "slow"},
            {"point": "T.DEV/A3.X.mag.f", "table": "input", "address": 0, "group": "fast"},
            {
                "point": "T.DEV/A4.X.stVal",
                "table": "coil",
                "address": 0,
                "dtype": "bool",
                "group": "fast",
            },
        ],
        poll_groups=[{"name": "fast", "period_s": 1}, {"name": "slow", "period_s": 5}],
    )
    plan = plan_polls(c)
    assert [(b.table, b.start, b.count) for b in plan["fast"]] == [
        (ModbusTable.COIL, 0, 1),
        (ModbusTable.HOLDING, 0, 1),
        (ModbusTable.INPUT, 0, 1),
    ]
    assert [(b.table, b.start, b.count) for b in plan["slow"]] == [(ModbusTable.HOLDING, 1, 1)]


def test_unordered_map_is_sorted() -> None:
    blocks = merge_blocks(H, [reg(18), reg(3), reg(10)], 125, 8)
    assert spans(blocks) == [(3, 16)]
    assert [r.address for r in blocks[0].registers] == [3, 10, 18]


# --- decoding -------------------------------------------------------------------------------


def test_word_order_big_and_little() -> None:
    big = reg(0, "uint32")
    little = reg(0, "uint32", word_order="little")
    assert decode(big, [0x1234, 0x5678]) == 0x12345678
    assert decode(little, [0x5678, 0x1234]) == 0x12345678
    assert encode(big, 0x12345678) == [0x1234, 0x5678]
    assert encode(little, 0x12345678) == [0x5678, 0x1234]


def test_float32_vectors() -> None:
    # 1.0f = 0x3F800000; -2.5f = 0xC0200000
    assert decode(reg(0, "float32"), [0x3F80, 0x0000]) == 1.0
    assert decode(reg(0, "float32", word_order="little"), [0x0000, 0xC020]) == -2.5
    assert encode(reg(0, "float32", word_order="little"), -2.5) == [0x0000, 0xC020]


def test_signed_types_and_scale_offset() -> None:
    assert decode(reg(0, "int16"), [0xFFFF]) == -1
    assert decode(reg(0, "uint16"), [0xFFFF]) == 65535
    assert decode(reg(0, "int32"), [0xFFFF, 0xFFFE]) == -2
    assert decode(reg(0, "int32", word_order="little"), [0xFFFE, 0xFFFF]) == -2
    v = decode(reg(0, "int16", scale=0.1, offset=-40), [0x0190])  # 400 * 0.1 - 40
    assert v == pytest.approx(0.0)
    assert isinstance(decode(reg(0, "uint16"), [7]), int)
    assert isinstance(decode(reg(0, "uint16", scale=0.5), [7]), float)
    assert decode(reg(0, "bool", "coil"), [True]) is True


def test_decode_block_uses_offsets_within_the_block() -> None:
    regs = [reg(10, "int16"), reg(12, "float32"), reg(15)]
    (block,) = merge_blocks(H, regs, 125, 8)
    assert (block.start, block.count) == (10, 6)
    got = decode_block(block, [0xFFFF, 0, 0x3F80, 0, 0, 42])
    assert [v for _, v in got] == [-1, 1.0, 42]
    with pytest.raises(ValueError, match="expected 6"):
        decode_block(block, [0, 0])


def test_wrong_word_count_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 2 words"):
        decode(reg(0, "int32"), [1])


# --- encoding ranges -------------------------------------------------------------------------


def test_range_error_names_point_and_range() -> None:
    r = reg(7, "int16", scale=0.1)
    lo, hi = value_range(r)
    assert (lo, hi) == pytest.approx((-3276.8, 3276.7))
    with pytest.raises(RegisterRangeError) as ei:
        encode(r, 5000.0)
    e = ei.value
    assert isinstance(e, CommandRejected) and e.code == "out_of_range"
    assert e.point == "T.DEV/GGIO1.In7.mag.f"
    msg = str(e)
    assert "T.DEV/GGIO1.In7.mag.f" in msg and "-3276.8..3276.7" in msg and "holding 7" in msg


@pytest.mark.parametrize(
    ("dtype", "bad", "good"),
    [
        ("int16", 32768, 32767),
        ("int16", -32769, -32768),
        ("uint16", -1, 65535),
        ("uint16", 65536, 0),
        ("int32", 2**31, -(2**31)),
        ("uint32", 2**32, 2**32 - 1),
        ("float32", 1e39, 3.4e38),
        ("float32", math.nan, -1.5),
        ("float32", math.inf, 0.0),
    ],
)
def test_integer_and_float_limits(dtype: str, bad: float, good: float) -> None:
    r = reg(0, dtype)
    with pytest.raises(RegisterRangeError, match=r"T\.DEV/GGIO1\.In0\.mag\.f"):
        encode(r, bad)
    encode(r, good)


def test_negative_scale_range_is_ordered() -> None:
    r = reg(0, "uint16", scale=-1.0)
    assert value_range(r) == (-65535, 0)
    assert encode(r, -3) == [3]
    with pytest.raises(RegisterRangeError):
        encode(r, 1)


def test_integer_encoding_rounds() -> None:
    r = reg(0, "int32", scale=0.1)
    assert encode(r, 20.0) == [0, 200]
    assert encode(r, 20.04) == [0, 200]
    assert encode(r, 20.06) == [0, 201]
    assert encode(r, -0.1) == [0xFFFF, 0xFFFF]


def test_coil_values() -> None:
    c = reg(0, "bool", "coil")
    assert encode(c, True) == [1]
    assert encode(c, 0) == [0]
    with pytest.raises(RegisterRangeError, match=r"allowed 0\.\.1"):
        encode(c, 2)


def test_exception_names_and_quality() -> None:
    assert exception_name(2) == "ILLEGAL DATA ADDRESS (2)"
    assert exception_name(4) == "SERVER DEVICE FAILURE (4)"
    assert exception_name(99) == "EXCEPTION (99)"
    assert exception_quality(2) == with_validity(BAD_REFERENCE, Validity.INVALID)
    assert exception_quality(4) == with_validity(FAILURE, Validity.INVALID)
    assert exception_quality(11) == with_validity(FAILURE, Validity.INVALID)


# --- round trips ------------------------------------------------------------------------------

INT_TYPES = {
    "int16": (-(2**15), 2**15 - 1, 1),
    "uint16": (0, 2**16 - 1, 1),
    "int32": (-(2**31), 2**31 - 1, 2),
    "uint32": (0, 2**32 - 1, 2),
}
SCALES = st.sampled_from([1.0, 0.1, 0.01, 0.001, 2.0, 10.0, -1.0, -0.5])
OFFSETS = st.sampled_from([0.0, 1.5, -40.0, 273.15, 1000.0])
ORDERS = st.sampled_from(list(WordOrder))


@st.composite
def int_case(draw: st.DrawFn) -> tuple[ModbusRegisterMap, list[int]]:
    dtype = draw(st.sampled_from(sorted(INT_TYPES)))
    lo, hi, words = INT_TYPES[dtype]
    raw = draw(st.integers(lo, hi))
    r = reg(0, dtype, scale=draw(SCALES), offset=draw(OFFSETS), word_order=draw(ORDERS))
    data = struct.pack(">" + {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I"}[dtype], raw)
    ws = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    if r.word_order == WordOrder.LITTLE:
        ws.reverse()
    assert len(ws) == words
    return r, ws


@given(int_case())
def test_integer_words_round_trip(case: tuple[ModbusRegisterMap, list[int]]) -> None:
    r, ws = case
    assert encode(r, decode(r, ws)) == ws


@given(st.sampled_from(sorted(INT_TYPES)), ORDERS, st.data())
def test_integer_values_round_trip(dtype: str, order: WordOrder, data: st.DataObject) -> None:
    lo, hi, _ = INT_TYPES[dtype]
    r = reg(0, dtype, word_order=order)
    v = data.draw(st.integers(lo, hi))
    assert decode(r, encode(r, v)) == v


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), ORDERS)
def test_float32_values_round_trip(v: float, order: WordOrder) -> None:
    r = reg(0, "float32", word_order=order)
    assert decode(r, encode(r, v)) == v


@given(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2), ORDERS)
def test_float32_words_round_trip(ws: list[int], order: WordOrder) -> None:
    r = reg(0, "float32", word_order=order)
    v = decode(r, ws)
    assert isinstance(v, float)
    if not math.isfinite(v):
        with pytest.raises(RegisterRangeError):
            encode(r, v)
    else:
        assert encode(r, v) == ws


@given(
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([0.1, 0.01, 1.0, 2.0]),
    OFFSETS,
    ORDERS,
)
def test_scaled_values_round_trip_within_a_step(
    v: float, scale: float, offset: float, order: WordOrder
) -> None:
    r = reg(0, "int32", scale=scale, offset=offset, word_order=order)
    got = decode(r, encode(r, v))
    assert abs(float(got) - v) <= abs(scale) / 2 + 1e-9 * max(1.0, abs(v))
