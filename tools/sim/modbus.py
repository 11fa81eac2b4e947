"""A Modbus TCP device simulator: one site-file driver's register map, backed by DER physics.

Theory of operation: the simulator keeps its own register image (address -> word, or bit, per
table), filled by step() from the DER models of tools.sim.binding through the same encode()
the gateway uses to write. The pymodbus server (SimDevice with four separate tables) only
decides which addresses exist; its `action` hook, called on every request that passed pymodbus'
own address check, copies the image into the response (reads) and routes writes to the DER
models (binding.write), after which the image holds the model's value again, so a written
set-point is read back as the device accepted it (clamped to the resource's limits).

Which addresses answer: exactly the read blocks the gateway plans for this map (modbus_plan,
per poll group, with the map's max_gap), so a gateway reading across small gaps gets its
blocks, and everything else answers exception 2, ILLEGAL DATA ADDRESS. Writes are accepted only
on the words of writable mapped registers, whole (a 32-bit value written half is refused with
exception 2 too). pymodbus 3.16 keeps coils and discrete inputs in 16-bit words, so for the bit
tables its own check is per group of 16 bits: a read that starts on an unmapped bit is refused,
but a read starting on a mapped bit may run on into unmapped bits of the same block, which read
as 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.south.modbus_plan import (
    BIT_TABLES,
    RegisterRangeError,
    decode,
    encode,
    plan_polls,
)
from gateway.transports.stream import parse_link
from model.drivers import (
    ModbusDriverConfig,
    ModbusMapConfig,
    ModbusRegisterMap,
    ModbusRtuDriverConfig,
    ModbusTable,
    RegisterType,
)
from model.site import SiteConfig
from tools.sim.binding import SimBinding, bind_driver

__all__ = ["ModbusSimulator"]

log = logging.getLogger(__name__)

# Function code -> table (MB Application Protocol 6.1-6.17).
_FC_TABLE: dict[int, ModbusTable] = {
    1: ModbusTable.COIL,
    5: ModbusTable.COIL,
    15: ModbusTable.COIL,
    2: ModbusTable.DISCRETE_INPUT,
    3: ModbusTable.HOLDING,
    6: ModbusTable.HOLDING,
    16: ModbusTable.HOLDING,
    22: ModbusTable.HOLDING,
    23: ModbusTable.HOLDING,
    4: ModbusTable.INPUT,
}
_TUPLE_ORDER = (
    ModbusTable.COIL,
    ModbusTable.DISCRETE_INPUT,
    ModbusTable.HOLDING,
    ModbusTable.INPUT,
)


def _intervals(addresses: set[int]) -> list[tuple[int, int]]:
    """Sorted (start, end) runs of consecutive addresses."""
    out: list[tuple[int, int]] = []
    for a in sorted(addresses):
        if out and a == out[-1][1] + 1:
            out[-1] = (out[-1][0], a)
        else:
            out.append((a, a))
    return out


class ModbusSimulator:
    """A Modbus TCP server answering one driver's register map from simulated DERs."""

    def __init__(
        self,
        site: SiteConfig,
        driver_id: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        tick_s: float = 1.0,
        day_length_s: float = 86400.0,
        serial_port: str | None = None,
    ) -> None:
        cfg = next((d for d in site.drivers if d.id == driver_id), None)
        if cfg is None:
            have = ", ".join(d.id for d in site.drivers)
            raise KeyError(f"no driver {driver_id!r} in the site file (have: {have})")
        if not isinstance(cfg, ModbusMapConfig):
            raise ValueError(f"driver {driver_id!r} is {cfg.protocol}, not modbus")
        self.config = cfg
        self.driver_id = driver_id
        self.host = host
        self.port = (
            cfg.port if port is None and isinstance(cfg, ModbusDriverConfig) else (port or 0)
        )
        # Modbus RTU: the serial device this simulator opens (default: the driver's own link
        # device, for a bench with a null-modem pair, tests pass the other end of a pty bridge).
        self.serial_port = serial_port
        if isinstance(cfg, ModbusRtuDriverConfig) and serial_port is None:
            self.serial_port = parse_link(cfg.link).device
        self.tick_s = tick_s
        self.binding: SimBinding = bind_driver(site, driver_id, day_length_s=day_length_s)
        self.writes = 0
        self.requests = 0
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._image: dict[ModbusTable, dict[int, int]] = {t: {} for t in ModbusTable}
        self._readable: dict[ModbusTable, set[int]] = {t: set() for t in ModbusTable}
        self._writable: dict[ModbusTable, dict[int, ModbusRegisterMap]] = {
            t: {} for t in ModbusTable
        }
        self._range_logged: set[str] = set()
        for blocks in plan_polls(cfg).values():
            for b in blocks:
                self._readable[b.table].update(range(b.start, b.end + 1))
        for r in cfg.registers:
            if r.writable:
                for a in range(r.address, r.end + 1):
                    self._writable[r.table][a] = r
            if r.point not in self.binding.by_point:
                log.warning(
                    "modbus sim %s: %s has no simulated resource; its register is plain memory",
                    driver_id, r.point,
                )  # fmt: skip
        self.step(0.0)

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the server listens."""
        return self._server is not None

    async def start(self) -> None:
        """Listen on host:port (port 0: an ephemeral port, stored in self.port)."""
        if self._server is not None:
            return
        server: ModbusTcpServer | ModbusSerialServer
        if isinstance(self.config, ModbusRtuDriverConfig):
            spec = parse_link(self.config.link)
            server = ModbusSerialServer(
                self._device(),
                framer=FramerType.RTU,
                port=self.serial_port or spec.device,
                baudrate=spec.baudrate,
                bytesize=spec.bytesize,
                parity=spec.parity,
                stopbits=int(spec.stopbits),
            )
            await server.serve_forever(background=True)
            self._server = server
            log.info("modbus rtu sim %s on %s", self.driver_id, self.serial_port)
            return
        server = ModbusTcpServer(self._device(), address=(self.host, self.port))
        await server.serve_forever(background=True)
        if self.port == 0:
            sockets = getattr(server.transport, "sockets", None) or []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])
        self._server = server
        log.info("modbus sim %s listening on %s:%d", self.driver_id, self.host, self.port)

    async def stop(self) -> None:
        """Close the listener and every client connection; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        await server.shutdown()  # type: ignore[no-untyped-call]
        await asyncio.sleep(0)  # let the transports run their close callbacks
        log.info("modbus sim %s stopped", self.driver_id)

    async def serve(self, stop: asyncio.Event) -> None:
        """Start, step the physics every tick_s until `stop` is set, then stop."""
        await self.start()
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.tick_s):
                        await stop.wait()
                now = loop.time()
                self.step(now - last)
                last = now
        finally:
            await self.stop()

    # --- physics and the register image ---------------------------------------------------

    def step(self, dt: float) -> None:
        """Advance the DER models by dt seconds and write their values into the register image."""
        self.binding.step(time.time(), dt)
        for r in self.config.registers:
            if r.point in self.binding.by_point:
                self._store(r, self.binding.read(r.point))

    def _store(self, reg: ModbusRegisterMap, value: float | bool) -> None:
        if reg.dtype == RegisterType.BOOL:
            value = bool(value)
        try:
            words = encode(reg, value)
        except RegisterRangeError as e:
            if reg.point not in self._range_logged:
                self._range_logged.add(reg.point)
                log.warning("modbus sim %s: %s (register keeps its last value)", self.driver_id, e)
            return
        img = self._image[reg.table]
        for i, w in enumerate(words):
            img[reg.address + i] = w

    def words(self, table: ModbusTable, address: int, count: int = 1) -> list[int]:
        """Current image content (tests and tools)."""
        img = self._image[table]
        return [img.get(a, 0) for a in range(address, address + count)]

    # --- the pymodbus datastore ------------------------------------------------------------

    def _device(self) -> SimDevice:
        lists: list[list[SimData]] = []
        for table in _TUPLE_ORDER:
            runs = _intervals(self._readable[table])
            entries: list[SimData] = []
            if table in BIT_TABLES:
                entries = [
                    SimData(a, values=[False] * (b - a + 1), datatype=DataType.BITS)
                    for a, b in runs
                ]
                if not entries:  # pymodbus needs one entry per table; the action refuses all
                    entries = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
            else:
                entries = [
                    SimData(a, values=[0] * (b - a + 1), datatype=DataType.REGISTERS)
                    for a, b in runs
                ]
                if not entries:
                    entries = [SimData(0, datatype=DataType.INVALID)]
            lists.append(entries)
        return SimDevice(
            id=self.config.device_id,
            simdata=(lists[0], lists[1], lists[2], lists[3]),
            action=self._action,
        )

    async def _action(
        self,
        func_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus hook: serve reads from the image, route writes to the DER models."""
        self.requests += 1
        table = _FC_TABLE.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            return self._write(table, address, set_values)
        readable = self._readable[table]
        img = self._image[table]
        if table in BIT_TABLES:
            # For bits pymodbus passes the bit address but counts 16-bit words.
            if address not in readable:
                return ExcCodes.ILLEGAL_ADDRESS
            first = address // 16
            for w in range(first, first + count):
                word = 0
                for bit in range(16):
                    if img.get(w * 16 + bit):
                        word |= 1 << bit
                registers[w - start_address] = word
            return None
        if any(a not in readable for a in range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        if func_code == 6:  # the echo of a single-register write: answer what was written
            return None
        for a in range(address, address + count):
            registers[a - start_address] = img.get(a, 0)
        return None

    def _write(
        self, table: ModbusTable, address: int, values: Sequence[int | bool]
    ) -> ExcCodes | None:
        writable = self._writable[table]
        touched: dict[int, ModbusRegisterMap] = {}
        for i in range(len(values)):
            reg = writable.get(address + i)
            if reg is None:
                log.info(
                    "modbus sim %s: write to %s %d refused (not a writable register)",
                    self.driver_id, table.value, address + i,
                )  # fmt: skip
                return ExcCodes.ILLEGAL_ADDRESS
            touched[reg.address] = reg
        last = address + len(values) - 1
        for reg in touched.values():
            if reg.address < address or reg.end > last:
                log.info("modbus sim %s: partial write of %s refused", self.driver_id, reg.point)
                return ExcCodes.ILLEGAL_ADDRESS
        for reg in touched.values():
            i = reg.address - address
            words = [int(v) for v in values[i : i + reg.words]]
            value = decode(reg, words)
            self.writes += 1
            if reg.point in self.binding.by_point:
                self.binding.write(reg.point, float(value))
                self._store(reg, self.binding.read(reg.point))
            else:
                img = self._image[table]
                for k, w in enumerate(words):
                    img[reg.address + k] = w
            log.info("modbus sim %s: %s <- %r", self.driver_id, reg.point, value)
        return None
