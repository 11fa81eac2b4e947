"""Modbus TCP and Modbus RTU south driver: polls register blocks per poll group, writes set-points.

Theory of operation: one supervisor task owns the connection. It builds a fresh pymodbus
client (AsyncModbusTcpClient, or AsyncModbusSerialClient with the RTU framer for a serial line)
for every connection attempt (pymodbus' own reconnect is never relied on:
its behaviour differs across versions, and the client is closed as soon as the link drops, which
cancels it). While up, one task per poll group reads that group's planned blocks (see
modbus_plan) at the group's period, the first time at once, so every (re)connect is a full
refresh; each poll hands one batch of Samples to the sink. A Modbus exception response on a
read marks that block's points invalid and polling goes on. A transport failure (connection
lost, no response) ends the connection: the poll tasks are cancelled, the client closed, the
driver's points are marked not topical once, and the supervisor reconnects with exponential
backoff from reconnect_min_s to reconnect_max_s.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from gateway.errors import CommandRejected, DeviceError, DriverError, LinkDown
from gateway.south.base import Report, SampleSink, SouthDriver
from gateway.south.modbus_plan import (
    ReadBlock,
    decode_block,
    encode,
    exception_name,
    exception_quality,
    plan_polls,
)
from gateway.transports.stream import parse_link
from model.command import Command, CommandState
from model.drivers import (
    ModbusMapConfig,
    ModbusRegisterMap,
    ModbusRtuDriverConfig,
    ModbusTable,
    RegisterType,
)
from model.quality import GOOD, OVERFLOW, Validity, with_validity
from model.sample import Sample, Value

__all__ = ["ModbusDriver", "ModbusExceptionError"]

_Client = AsyncModbusTcpClient | AsyncModbusSerialClient

log = logging.getLogger(__name__)

_NONFINITE = with_validity(OVERFLOW, Validity.INVALID)


class ModbusExceptionError(DeviceError):
    """The device answered a request with a Modbus exception response."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _LinkLost(Exception):
    """The transport failed during a poll (internal: ends the connection)."""


class ModbusDriver(SouthDriver):
    """A Modbus TCP device polled through pymodbus."""

    protocol = "modbus"

    def __init__(self, config: ModbusMapConfig, sink: SampleSink) -> None:
        super().__init__(config.id, sink)
        self.config = config
        self.plan: dict[str, list[ReadBlock]] = plan_polls(config)
        self._periods = {g.name: g.period_s for g in config.poll_groups}
        self._monitored = {r.point for r in config.registers}
        self._writable: dict[str, ModbusRegisterMap] = {}
        for r in config.registers:
            if r.writable:
                self._writable.setdefault(r.point, r)
        self._last: dict[str, Value] = {}
        self._client: _Client | None = None
        self._up = False
        self._marked_down = False
        self._supervisor: asyncio.Task[None] | None = None
        self._bad_blocks: set[tuple[ModbusTable, int]] = set()
        self.polls: dict[str, int] = {g: 0 for g in self.plan}
        self.requests = 0
        self.samples = 0
        self.errors = 0
        self.reconnects = 0
        self.connects = 0
        self.exceptions: dict[int, int] = {}

    # --- SouthDriver ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the connection supervisor (returns at once)."""
        if self._supervisor is not None and not self._supervisor.done():
            return
        if not self.config.enabled:
            log.info("modbus %s: disabled in the site file, not started", self.id)
            return
        self._supervisor = asyncio.create_task(self._run(), name=f"modbus {self.id}")

    async def stop(self) -> None:
        """Stop polling, close the connection, mark the points not topical; idempotent."""
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            # Bounded: a poll cancelled inside a pymodbus request has been seen to keep going.
            done, _ = await asyncio.wait({task}, timeout=5.0)
            if not done:
                log.error("modbus %s: supervisor did not stop within 5 s; abandoned", self.id)
        self._link_down()

    @property
    def connected(self) -> bool:
        """True while the TCP connection to the device is up."""
        return self._up and self._client is not None and self._client.connected

    def monitored_points(self) -> set[str]:
        """Every mapped point (writable registers are read back too)."""
        return set(self._monitored)

    def command_points(self) -> set[str]:
        """Points mapped to writable holding registers or coils."""
        return set(self._writable)

    async def execute(self, cmd: Command, report: Report) -> None:
        """Write cmd.value to the target's register or coil; report SENT once acknowledged."""
        reg = self._writable.get(cmd.target)
        if reg is None:
            raise CommandRejected(
                f"{cmd.target} is not a writable register of Modbus driver {self.id}",
                code="not_writable",
            )
        words = encode(reg, cmd.value)  # RegisterRangeError (a CommandRejected) if it cannot fit
        client = self._client
        if client is None or not self.connected:
            raise LinkDown(f"Modbus driver {self.id}: not connected to {self._where()}")
        dev = self.config.device_id
        try:
            if reg.table == ModbusTable.COIL:
                resp = await client.write_coil(reg.address, bool(words[0]), device_id=dev)
            elif len(words) == 1:
                resp = await client.write_register(reg.address, words[0], device_id=dev)
            else:
                resp = await client.write_registers(reg.address, words, device_id=dev)
        except (TimeoutError, ModbusException, OSError) as e:
            self.errors += 1
            if not self.connected:
                raise LinkDown(f"Modbus driver {self.id}: link lost while writing: {e}") from e
            raise DriverError(f"Modbus driver {self.id}: write of {cmd.target} failed: {e}") from e
        if resp.isError():
            code = int(getattr(resp, "exception_code", 0))
            self._count_exception(code)
            raise ModbusExceptionError(
                f"{self.id}: device refused write of {cmd.target} to {reg.table.value} "
                f"{reg.address}: exception {exception_name(code)}",
                code,
            )
        report(CommandState.SENT, f"{reg.table.value} {reg.address} <- {words}")

    def stats(self) -> dict[str, Any]:
        """Counters: polls per group, requests, samples, errors, reconnects, exceptions per code."""
        out = super().stats()
        out.update(
            link=self._where(),
            polls=dict(self.polls),
            requests=self.requests,
            samples=self.samples,
            errors=self.errors,
            connects=self.connects,
            reconnects=self.reconnects,
            exceptions=dict(self.exceptions),
        )
        return out

    # --- connection supervisor -----------------------------------------------------------

    def _where(self) -> str:
        return str(getattr(self.config, "where", self.config.id))

    def _new_client(self, lost: asyncio.Event) -> _Client:
        def on_connect(up: bool) -> None:
            if not up:
                lost.set()

        # reconnect_delay is never 0 (pymodbus #1794 busy-loops); its own reconnect task is
        # cancelled by close() as soon as we see the link drop, so the value hardly matters.
        cfg = self.config
        if isinstance(cfg, ModbusRtuDriverConfig):
            spec = parse_link(cfg.link)
            return AsyncModbusSerialClient(
                spec.device,
                framer=FramerType.RTU,
                baudrate=spec.baudrate,
                bytesize=spec.bytesize,
                parity=spec.parity,
                stopbits=int(spec.stopbits),
                name=f"modbus-{self.id}",
                timeout=cfg.timeout_s,
                retries=0,
                reconnect_delay=cfg.reconnect_max_s,
                reconnect_delay_max=cfg.reconnect_max_s,
                trace_connect=on_connect,
            )
        return AsyncModbusTcpClient(
            cfg.host,  # type: ignore[attr-defined]
            port=cfg.port,  # type: ignore[attr-defined]
            name=f"modbus-{self.id}",
            timeout=self.config.timeout_s,
            retries=0,
            reconnect_delay=self.config.reconnect_max_s,
            reconnect_delay_max=self.config.reconnect_max_s,
            trace_connect=on_connect,
        )

    async def _run(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min_s
        while True:
            try:
                served = await self._connection()
            except Exception:  # a bug rather than the device: log it, keep the driver alive
                log.exception("modbus %s: connection supervisor failed", self.id)
                served = False
            self._link_down()
            if served:
                delay = cfg.reconnect_min_s
            log.debug("modbus %s: reconnecting to %s in %.2fs", self.id, self._where(), delay)
            await asyncio.sleep(delay)
            if not served:
                delay = min(delay * 2, cfg.reconnect_max_s)

    async def _connection(self) -> bool:
        """Connect once and poll until the link drops; False if the connection failed."""
        lost = asyncio.Event()
        client = self._new_client(lost)
        tasks: list[asyncio.Task[None]] = []
        try:
            try:
                ok = await client.connect()
            except (OSError, ModbusException) as e:
                log.debug("modbus %s: connect raised %s", self.id, e)
                ok = False
            if not ok or not client.connected:
                log.debug("modbus %s: cannot connect to %s", self.id, self._where())
                return False
            if self.connects:
                self.reconnects += 1
            self.connects += 1
            self._client, self._up, self._marked_down = client, True, False
            log.info("modbus %s: connected to %s", self.id, self._where())
            tasks = [
                asyncio.create_task(
                    self._poll_loop(g, blocks, client, lost), name=f"modbus {self.id} {g}"
                )
                for g, blocks in self.plan.items()
                if blocks
            ]
            await lost.wait()
            log.warning("modbus %s: link to %s lost, reconnecting", self.id, self._where())
            return True
        finally:
            self._up = False
            self._client = None
            client.close()  # first: a request in flight then fails instead of waiting it out
            for t in tasks:
                t.cancel()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=2.0)
                for t in pending:
                    log.warning(
                        "modbus %s: poll task %s ignored cancellation", self.id, t.get_name()
                    )

    def _link_down(self) -> None:
        """Mark every point not topical, once per outage."""
        self._up = False
        if self._marked_down:
            return
        self._marked_down = True
        self.sink.mark_not_topical(self.monitored_points(), self.id)

    # --- polling ---------------------------------------------------------------------------

    async def _poll_loop(
        self, group: str, blocks: list[ReadBlock], client: _Client, lost: asyncio.Event
    ) -> None:
        loop = asyncio.get_running_loop()
        period = self._periods[group]
        due = loop.time()
        while not lost.is_set():
            try:
                batch = await self._poll(blocks, client)
                self.polls[group] += 1
                self.samples += len(batch)
                if batch:
                    self.sink.apply(batch)
            except _LinkLost as e:
                log.debug("modbus %s: poll of %s failed: %s", self.id, group, e)
                lost.set()
                return
            except Exception:  # a bug (decoding, the sink): log it, poll again next period
                self.errors += 1
                log.exception("modbus %s: poll of group %s failed", self.id, group)
            due += period
            now = loop.time()
            if due < now:  # overran: skip the missed periods rather than bursting
                due = now + period - (now - due) % period
            await asyncio.sleep(due - now)

    async def _read(self, block: ReadBlock, client: _Client) -> ModbusPDU:
        dev = self.config.device_id
        if block.table == ModbusTable.HOLDING:
            return await client.read_holding_registers(
                block.start, count=block.count, device_id=dev
            )
        if block.table == ModbusTable.INPUT:
            return await client.read_input_registers(block.start, count=block.count, device_id=dev)
        if block.table == ModbusTable.COIL:
            return await client.read_coils(block.start, count=block.count, device_id=dev)
        return await client.read_discrete_inputs(block.start, count=block.count, device_id=dev)

    async def _poll(self, blocks: list[ReadBlock], client: _Client) -> list[Sample]:
        batch: list[Sample] = []
        for block in blocks:
            self.requests += 1
            try:
                resp = await self._read(block, client)
            except (TimeoutError, ModbusException, OSError) as e:
                self.errors += 1
                raise _LinkLost(str(e)) from e
            ts = time.time()
            key = (block.table, block.start)
            if resp.isError():
                code = int(getattr(resp, "exception_code", 0))
                self._count_exception(code)
                if key not in self._bad_blocks:
                    self._bad_blocks.add(key)
                    log.warning(
                        "modbus %s: read of %s %d..%d answered %s; its points are invalid",
                        self.id, block.table.value, block.start, block.end, exception_name(code),
                    )  # fmt: skip
                q = exception_quality(code)
                batch.extend(
                    Sample(r.point, self._stale_value(r), ts, q, self.id) for r in block.registers
                )
                continue
            if key in self._bad_blocks:
                self._bad_blocks.discard(key)
                log.info(
                    "modbus %s: %s %d..%d readable again",
                    self.id,
                    block.table.value,
                    block.start,
                    block.end,
                )
            data = (
                resp.bits
                if block.table in (ModbusTable.COIL, ModbusTable.DISCRETE_INPUT)
                else resp.registers
            )
            try:
                decoded = decode_block(block, data)
            except ValueError as e:  # short answer: the device broke the protocol
                self.errors += 1
                raise _LinkLost(str(e)) from e
            for reg, value in decoded:
                q = GOOD
                if isinstance(value, float) and not math.isfinite(value):
                    q = _NONFINITE
                self._last[reg.point] = value
                batch.append(Sample(reg.point, value, ts, q, self.id))
        return batch

    def _stale_value(self, reg: ModbusRegisterMap) -> Value:
        """The value an invalid sample carries: the last one read, else a zero of the right type."""
        last = self._last.get(reg.point)
        if last is not None:
            return last
        return False if reg.dtype == RegisterType.BOOL else 0.0

    def _count_exception(self, code: int) -> None:
        self.errors += 1
        self.exceptions[code] = self.exceptions.get(code, 0) + 1
