"""DL/T 645-2007: decode throughput against a bare struct parse, and a 32 x 20 bus poll cycle at
9600 baud against the physical minimum the baud rate implies.

Decode: the stream is what a gateway receives polling a bus: normal read answers (FE FE FE FE
preamble, as many meters send) for 20 data items of 32 meters, read in 4 kB chunks. Ours runs the
whole receive path: the resynchronising frame decoder (checksum, end byte, BCD address, 33H
removal), the typed event, and the item's value from the DI table (BCD, sign bit, decimals).
The baseline knows the layout in advance and only slices the same values out with
struct.unpack_from and a hex-to-int BCD conversion: no checks, no sign, no objects - the floor
any decoder pays to touch the bytes in Python. ratio = ours / baseline.

Bus poll, and how it is measured: a pty does not throttle to a baud rate (bytes cross it at
memory speed), so the physical minimum is computed, and the simulator supplies the line time.
1. Physical minimum: for every transaction of one cycle, the bytes of the request the driver
   sends (4 FE + 16) and of the meter's answer (16 + the item's data) at 11 bits per byte (start,
   8 data, even parity, stop: 8E1) / 9600 bit/s, summed. DL/T 645's slave turnaround Td
   (20 ms <= Td <= 500 ms) is left out of this floor and shown separately.
2. Measured: the driver polls the simulator over a real pty; for every request the simulator
   waits the wire time of that request plus its answer before answering (it cannot know when the
   driver's bytes "left" the line, so it charges both legs at once), then writes the answer. The
   cycle the driver measures is therefore line time + everything our software adds: encode,
   tty, decode, asyncio scheduling, the simulator's own work.
3. The same cycle without the per-byte delay gives the software cost alone.
ratio = measured cycle / physical minimum (1.0: the wire is the only cost).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Iterable
from typing import Any

from gateway.codecs.dlt645 import (
    NEED_DATA,
    Decoder,
    ReadData,
    ReadDataResponse,
    encode,
    encode_item,
    lookup_di,
    point_value,
    wire_time,
)
from gateway.south.dlt645 import DLT645Driver
from gateway.transports.pty import open_pty
from model.drivers_dlt645 import DataItem, DLT645DriverConfig
from model.sample import Sample
from tools.sim.dlt645 import DLT645Simulator

__all__ = ["ITEMS", "record_stream", "run"]

# Twenty data items a gateway typically reads from a three-phase meter.
ITEMS = [
    "voltage_a", "voltage_b", "voltage_c", "current_a", "current_b", "current_c",
    "active_power", "active_power_a", "active_power_b", "active_power_c", "reactive_power",
    "apparent_power", "power_factor", "frequency", "forward_active_energy",
    "reverse_active_energy", "combined_reactive1_energy", "q1_reactive_energy",
    "status_word3", "meter_temperature",
]  # fmt: skip
_PREAMBLE = 4
_SUB33 = bytes((b - 0x33) & 0xFF for b in range(256))


def _items() -> list[DataItem]:
    from model.drivers_dlt645 import di_by_name

    out = []
    for name in ITEMS:
        di = di_by_name(name)
        item = lookup_di(di) if di is not None else None
        assert item is not None, name
        out.append(item)
    return out


def _address(k: int) -> str:
    return f"{k + 1:012d}"


def _sample_value(item: DataItem, k: int) -> Any:
    f = item.fields[0]
    if f.kind == "bits":
        return k & 0xFF
    top = 10 ** (f.size * 2 - 1) - 1
    v = (k * 7919 + 1234) % top
    return v / 10**f.decimals if f.decimals else v


def record_stream(frames: int, meters: int = 32) -> tuple[bytes, int]:
    """A recorded bus stream of `frames` read answers (with FE preamble); (bytes, frames)."""
    items = _items()
    parts = []
    for n in range(frames):
        item = items[n % len(items)]
        data = encode_item(item, _sample_value(item, n))
        ans = ReadDataResponse(_address((n // len(items)) % meters), item.di, data)
        parts.append(encode(ans, _PREAMBLE))
    return b"".join(parts), frames


def _ours(stream: bytes) -> tuple[int, float]:
    by_di = {i.di: i for i in _items()}
    d = Decoder(max_buffer=1 << 20)
    n = 0
    acc = 0.0
    t0 = time.perf_counter()
    for i in range(0, len(stream), 4096):
        d.receive_data(stream[i : i + 4096])
        while True:
            ev = d.next_event()
            if ev is NEED_DATA:
                break
            assert isinstance(ev, ReadDataResponse)
            acc += float(point_value(by_di[ev.di], ev.data))
            n += 1
    return n, time.perf_counter() - t0


def _baseline(stream: bytes) -> tuple[int, float]:
    decimals = {i.di: i.fields[0].decimals for i in _items()}
    unpack = struct.unpack_from
    n = 0
    acc = 0.0
    t0 = time.perf_counter()
    buf = stream
    i = 0
    end = len(buf)
    while i < end:
        while buf[i] == 0xFE:
            i += 1
        length = buf[i + 9]
        data = buf[i + 10 : i + 10 + length].translate(_SUB33)
        (di,) = unpack("<I", data)
        raw = int(data[:3:-1].hex(), 16 if di == 0x04000503 else 10)
        acc += raw / 10 ** decimals[di]
        n += 1
        i += 12 + length
    return n, time.perf_counter() - t0


class _Count:
    def __init__(self) -> None:
        self.samples = 0

    def apply(self, samples: list[Sample]) -> object:
        self.samples += len(samples)
        return None

    def mark_not_topical(self, refs: Iterable[str], source: str = "") -> object:
        return None


def _config(link: str, meters: int, timeout_s: float) -> DLT645DriverConfig:
    return DLT645DriverConfig.model_validate(
        {
            "id": "bench",
            "protocol": "dlt645",
            "link": link,
            "poll_period_s": 0.001,
            "timeout_s": timeout_s,
            "retries": 0,
            "preamble": _PREAMBLE,
            "meters": [{"name": f"m{k}", "address": _address(k)} for k in range(meters)],
            "items": [
                {"meter": f"m{k}", "di": name, "point": f"B.M{k}/GGIO1.AnIn{j}.mag.f"}
                for k in range(meters)
                for j, name in enumerate(ITEMS)
            ],
        }
    )


def physical_minimum(meters: int, baudrate: int) -> tuple[float, int]:
    """Seconds and bytes one poll cycle needs on the line at `baudrate`, 8E1, no turnaround."""
    total = 0
    for item in _items():
        request = len(encode(ReadData(_address(0), item.di), _PREAMBLE))
        answer = len(encode(ReadDataResponse(_address(0), item.di, bytes(item.element_size))))
        total += request + answer
    total *= meters
    return wire_time(total, baudrate), total


async def _poll_cycle(meters: int, baudrate: int | None, cycles: int) -> tuple[float, int]:
    """Seconds of the driver's first complete poll cycles over a pty (best of `cycles`)."""
    pair = open_pty()
    link = f"serial://{pair.slave_path}?baudrate={baudrate or 9600}"
    cfg = _config(link, meters, timeout_s=2.0)
    sim = DLT645Simulator(cfg, pty_fd=pair.master_fd, baudrate=baudrate, tick_s=1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(sim.serve(stop))
    sink = _Count()
    driver = DLT645Driver(cfg, sink)
    try:
        await driver.start()
        deadline = time.monotonic() + 600
        while len(driver.cycle_times) < cycles and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if driver.timeouts or not driver.cycle_times:
            raise RuntimeError(f"bus poll failed: {driver.stats()}")
        return min(driver.cycle_times), driver.requests
    finally:
        await driver.stop()
        stop.set()
        await task
        pair.close()


def run(
    meters: int = 32, frames: int = 50_000, baudrate: int = 9600, rounds: int = 3
) -> dict[str, Any]:
    """Decode frames/s (ours vs struct) and the bus poll cycle at `baudrate` vs its minimum."""
    stream, n = record_stream(frames, meters)
    ours = min(_ours(stream)[1] for _ in range(rounds))
    base = min(_baseline(stream)[1] for _ in range(rounds))
    assert _ours(stream)[0] == _baseline(stream)[0] == n
    minimum, line_bytes = physical_minimum(meters, baudrate)
    transactions = meters * len(ITEMS)
    measured, _ = asyncio.run(_poll_cycle(meters, baudrate, 1))
    software, _ = asyncio.run(_poll_cycle(meters, None, 3))
    return {
        "name": "dlt645",
        "decode_frames": n,
        "decode_stream_bytes": len(stream),
        "decode_frames_per_s": round(n / ours),
        "struct_frames_per_s": round(n / base),
        "decode_ratio": round(base / ours, 3),
        "bus_meters": meters,
        "bus_items_per_meter": len(ITEMS),
        "bus_transactions": transactions,
        "bus_baudrate": baudrate,
        "bus_line_bytes_per_cycle": line_bytes,
        "bus_physical_min_s": round(minimum, 3),
        "bus_physical_min_with_td20ms_s": round(minimum + 0.020 * transactions, 3),
        "bus_measured_cycle_s": round(measured, 3),
        "bus_cycle_ratio": round(measured / minimum, 3),
        "bus_overhead_per_transaction_ms": round((measured - minimum) / transactions * 1000, 2),
        "bus_software_only_cycle_s": round(software, 3),
        "bus_software_per_transaction_ms": round(software / transactions * 1000, 2),
    }
