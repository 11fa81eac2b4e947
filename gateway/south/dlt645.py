"""DL/T 645-2007 south driver: polls the meters on one RS-485 bus (or TCP converter), trips/closes relays.

Theory of operation: one supervisor task owns the link. It opens the link URL (serial port or a
TCP "transparent transmission" converter); while the link is open it polls, cycle after cycle,
every meter in turn and each of that meter's data items (round robin over the bus), one
request/response transaction at a time under a bus lock, so a command slips in between two
transactions. A transaction clears the input, sends the request with its FE preamble and waits
up to timeout_s for the matching answer (codec Connection in the MASTER role: our own echo and
stray answers are skipped); a silent meter or a bad frame costs a retry, `retries` times.
An answer announcing follow-up frames (B1/B2) is completed with 12H requests, SEQ 1, 2, ...

Outcome per item: a normal answer gives GOOD samples (raw value * scale + offset, or a status
bit as bool); an abnormal answer gives the item's points quality INVALID (badReference for "no
requested data", failure otherwise), the decoded error word is logged once and kept in
stats()["abnormal"]; data that do not fit the item's format give INVALID|inconsistent. A meter
that does not answer after the retries is lost: the rest of its items are skipped this cycle
and its points are marked not topical once; it is polled again next cycle and its points are
refreshed as soon as it answers. A transport failure (TCP closed, serial error) ends the
session: every point is marked not topical once, the link is closed and reopened with
exponential backoff from reconnect_min_s to reconnect_max_s; the first cycle after a reconnect
refreshes everything.

Commands: a control point's value True closes the meter's relay (1CH, N1 = 1CH direct close or
1BH close allowed), False trips it (N1 = 1AH), with the configured password and operator code and
a validity window in the meter's local time. A normal answer reports SENT; an abnormal answer
raises DLT645DeviceError with the named errors. The relay state is then read back at once from
status word 3 (bit 4: 1 = open), which confirms the command in the twin.
Broadcast time sync (08H) goes out on connect and every time_sync_period_s when configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.codecs.dlt645 import (
    BROADCAST,
    Connection,
    ControlAction,
    DecodeError,
    DLT645Error,
    ErrorResponse,
    NeedData,
    Password,
    ReadData,
    ReadDataResponse,
    ReadFollowUp,
    ReadFollowUpResponse,
    RemoteControl,
    Request,
    Response,
    Role,
    TimeSync,
    point_value,
    wire_time,
)
from gateway.errors import CommandRejected, DeviceError, DriverError, LinkDown
from gateway.south.base import Report, SampleSink, SouthDriver
from gateway.transports.stream import ByteStream, TransportError, open_stream, parse_link
from model.command import Command, CommandState
from model.drivers_dlt645 import STATUS_WORD_3, DataItem, DLT645DriverConfig, lookup_di
from model.quality import (
    BAD_REFERENCE,
    FAILURE,
    GOOD,
    INCONSISTENT,
    OVERFLOW,
    Validity,
    with_validity,
)
from model.sample import Sample, Value

__all__ = ["DLT645DeviceError", "DLT645Driver"]

log = logging.getLogger(__name__)

_INVALID_NO_DATA = with_validity(BAD_REFERENCE, Validity.INVALID)
_INVALID_FAILURE = with_validity(FAILURE, Validity.INVALID)
_INVALID_FORMAT = with_validity(INCONSISTENT, Validity.INVALID)
_NONFINITE = with_validity(OVERFLOW, Validity.INVALID)
_RELAY_BIT = 4  # status word 3, bit 4: relay state, 0 = closed (通), 1 = open (断)
_MAX_FOLLOW_UPS = 255


class DLT645DeviceError(DeviceError):
    """A meter answered a command with an abnormal answer; `errors` names the error word bits."""

    def __init__(self, message: str, error: int, errors: tuple[str, ...]) -> None:
        super().__init__(message)
        self.error = error
        self.errors = errors


class _LinkLost(Exception):
    """The transport failed (internal: ends the session)."""


class _NoAnswer(Exception):
    """A meter gave no usable answer within the retries (internal)."""


@dataclass(frozen=True, slots=True)
class _Binding:
    point: str
    field: str | None = None
    index: int | None = None
    bit: int | None = None
    scale: float = 1.0
    offset: float = 0.0
    relay: bool = False  # a control point's read-back: True when the relay is closed


@dataclass(slots=True)
class _Read:
    di: int
    item: DataItem
    bindings: list[_Binding] = field(default_factory=list)


@dataclass(slots=True)
class _Meter:
    name: str
    address: str
    reads: list[_Read] = field(default_factory=list)

    def points(self) -> set[str]:
        return {b.point for r in self.reads for b in r.bindings}


class DLT645Driver(SouthDriver):
    """The meters on one DL/T 645-2007 bus."""

    protocol = "dlt645"

    def __init__(self, config: DLT645DriverConfig, sink: SampleSink) -> None:
        super().__init__(config.id, sink)
        self.config = config
        spec = parse_link(config.link)
        self._baudrate = spec.baudrate if spec.kind == "serial" else 0
        self._password = Password(config.password_level, config.password.upper())
        self.meters: list[_Meter] = []
        by_name: dict[str, _Meter] = {}
        for m in config.meters:
            meter = _Meter(m.name, m.address)
            self.meters.append(meter)
            by_name[m.name] = meter

        def read_of(meter: _Meter, di: int) -> _Read:
            for r in meter.reads:
                if r.di == di:
                    return r
            item = lookup_di(di)
            assert item is not None  # the config validated every DI
            r = _Read(di, item)
            meter.reads.append(r)
            return r

        for it in config.items:
            item = it.data_item()
            read_of(by_name[it.meter], item.di).bindings.append(
                _Binding(it.point, it.field, it.index, it.bit, it.scale, it.offset)
            )
        self._controls: dict[str, tuple[_Meter, ControlAction, int]] = {}
        for c in config.controls:
            meter = by_name[c.meter]
            read_of(meter, STATUS_WORD_3).bindings.append(
                _Binding(c.point, bit=_RELAY_BIT, relay=True)
            )
            action = ControlAction.CLOSE if c.close == "close" else ControlAction.CLOSE_ALLOWED
            self._controls[c.point] = (meter, action, c.valid_s)
        self._monitored = {p for m in self.meters for p in m.points()}
        self._last: dict[str, Value] = {}
        self._conn = Connection(Role.MASTER)
        self._stream: ByteStream | None = None
        self._bus = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._marked_down = False
        self._lost: set[str] = set()
        self._abnormal_logged: set[tuple[str, int]] = set()
        self._next_sync = 0.0
        self.abnormal: dict[str, dict[str, list[str]]] = {}
        self.cycle_times: deque[float] = deque(maxlen=100)
        self.cycles = 0
        self.requests = 0
        self.answers = 0
        self.timeouts = 0
        self.bad_frames = 0
        self.follow_ups = 0
        self.samples = 0
        self.errors = 0
        self.connects = 0
        self.reconnects = 0
        self.time_syncs = 0

    # --- SouthDriver ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the link supervisor (returns at once)."""
        if self._supervisor is not None and not self._supervisor.done():
            return
        if not self.config.enabled:
            log.info("dlt645 %s: disabled in the site file, not started", self.id)
            return
        self._supervisor = asyncio.create_task(self._run(), name=f"dlt645 {self.id}")

    async def stop(self) -> None:
        """Stop polling, close the link, mark the points not topical; idempotent."""
        task, self._supervisor = self._supervisor, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close()
        self._link_down()

    @property
    def connected(self) -> bool:
        """True while the link is open and at least one meter answers."""
        return self._stream is not None and len(self._lost) < len(self.meters)

    def monitored_points(self) -> set[str]:
        """Every item's point and every control point (read back from status word 3)."""
        return set(self._monitored)

    def command_points(self) -> set[str]:
        """The relay control points."""
        return set(self._controls)

    async def execute(self, cmd: Command, report: Report) -> None:
        """Trip (False) or close (True) a meter's relay; report SENT once the meter accepted."""
        target = self._controls.get(cmd.target)
        if target is None:
            raise CommandRejected(
                f"{cmd.target} is not a relay control point of DL/T 645 driver {self.id}",
                code="not_writable",
            )
        meter, close_action, valid_s = target
        action = close_action if bool(cmd.value) else ControlAction.TRIP
        request = RemoteControl(
            meter.address,
            action,
            self.meter_time() + timedelta(seconds=valid_s),
            self._password,
            self.config.operator.upper(),
        )
        async with self._bus:
            if self._stream is None:
                raise LinkDown(f"DL/T 645 driver {self.id}: link {self.config.link} is down")
            try:
                answer = await self._transact(request)
            except _NoAnswer as e:
                raise DriverError(
                    f"{self.id}: meter {meter.name} ({meter.address}) did not answer the "
                    f"remote control command: {e}"
                ) from e
            except _LinkLost as e:
                raise LinkDown(f"{self.id}: link lost while sending a command: {e}") from e
        if isinstance(answer, ErrorResponse):
            self.errors += 1
            names = ", ".join(answer.errors) or "no bit set"
            raise DLT645DeviceError(
                f"{self.id}: meter {meter.name} ({meter.address}) refused {action.name.lower()}"
                f" of {cmd.target}: error word 0x{answer.error:02X} ({names})",
                answer.error,
                answer.errors,
            )
        report(CommandState.SENT, f"meter {meter.address}: 1C {action.name.lower()} accepted")
        read = next(r for r in meter.reads if r.di == STATUS_WORD_3)
        with contextlib.suppress(_NoAnswer, _LinkLost):  # the next poll reads it back anyway
            async with self._bus:
                if self._stream is not None:
                    batch = await self._poll_read(meter, read)
                    self._apply(batch)

    def stats(self) -> dict[str, Any]:
        """Counters: cycles and their times, transactions, timeouts, bad frames, lost meters."""
        out = super().stats()
        out.update(
            link=self.config.link,
            meters=len(self.meters),
            lost_meters=sorted(self._lost),
            cycles=self.cycles,
            last_cycle_s=self.cycle_times[-1] if self.cycle_times else None,
            requests=self.requests,
            answers=self.answers,
            timeouts=self.timeouts,
            bad_frames=self.bad_frames,
            follow_ups=self.follow_ups,
            samples=self.samples,
            errors=self.errors,
            abnormal={k: dict(v) for k, v in self.abnormal.items()},
            connects=self.connects,
            reconnects=self.reconnects,
            time_syncs=self.time_syncs,
        )
        return out

    # --- time ---------------------------------------------------------------------------------

    def meter_time(self) -> datetime:
        """Now in the meters' local time (naive), as time sync and validity windows need it."""
        t = datetime.now(UTC) + timedelta(hours=self.config.meter_utc_offset_h)
        return t.replace(tzinfo=None, microsecond=0)

    async def sync_time(self) -> None:
        """Broadcast time sync (08H) to every meter now; LinkDown if the link is down."""
        async with self._bus:
            if self._stream is None:
                raise LinkDown(f"DL/T 645 driver {self.id}: link {self.config.link} is down")
            try:
                await self._broadcast_time()
            except _LinkLost as e:
                raise LinkDown(f"{self.id}: link lost during time sync: {e}") from e

    async def _broadcast_time(self) -> None:
        stream = self._stream
        assert stream is not None
        data = self._conn.send(TimeSync(BROADCAST, self.meter_time()), self.config.preamble)
        try:
            await stream.write(data)
        except TransportError as e:
            raise _LinkLost(str(e)) from e
        self.time_syncs += 1
        # Nobody answers a broadcast: leave the line quiet while the meters take it in.
        await asyncio.sleep(wire_time(len(data), self._baudrate) + 0.02 if self._baudrate else 0.01)

    # --- link supervisor ----------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min_s
        while True:
            try:
                served = await self._session()
            except Exception:  # a bug rather than the bus: log it, keep the driver alive
                log.exception("dlt645 %s: link supervisor failed", self.id)
                served = False
            await self._close()
            self._link_down()
            if served:
                delay = cfg.reconnect_min_s
            log.debug("dlt645 %s: reopening %s in %.2fs", self.id, cfg.link, delay)
            await asyncio.sleep(delay)
            if not served:
                delay = min(delay * 2, cfg.reconnect_max_s)

    async def _session(self) -> bool:
        """Open the link once and poll until it fails; False if it could not be opened."""
        try:
            stream = await open_stream(self.config.link, timeout=max(self.config.timeout_s, 2.0))
        except TransportError as e:
            log.debug("dlt645 %s: %s", self.id, e)
            return False
        if self.connects:
            self.reconnects += 1
        self.connects += 1
        self._stream, self._marked_down = stream, False
        self._lost.clear()
        self._conn = Connection(Role.MASTER)
        log.info(
            "dlt645 %s: link %s open, %d meter(s)", self.id, self.config.link, len(self.meters)
        )
        try:
            await self._poll_forever()
        except _LinkLost as e:
            log.warning("dlt645 %s: link %s lost (%s), reopening", self.id, self.config.link, e)
        return True

    async def _close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    def _link_down(self) -> None:
        """Mark every point not topical, once per outage."""
        if self._marked_down:
            return
        self._marked_down = True
        self.sink.mark_not_topical(self.monitored_points(), self.id)

    # --- polling ---------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.config.poll_period_s
        sync_period = self.config.time_sync_period_s
        self._next_sync = loop.time() if sync_period > 0 else math.inf
        due = loop.time()
        while True:
            if loop.time() >= self._next_sync:
                async with self._bus:
                    await self._broadcast_time()
                self._next_sync = loop.time() + sync_period
            t0 = loop.time()
            await self.poll_cycle()
            self.cycle_times.append(loop.time() - t0)
            due += period
            now = loop.time()
            if due < now:  # overran: start the next cycle now rather than bursting
                due = now
            await asyncio.sleep(due - now)

    async def poll_cycle(self) -> None:
        """Poll every meter's items once (round robin over the bus)."""
        for meter in self.meters:
            batch: list[Sample] = []
            for read in meter.reads:
                async with self._bus:
                    if self._stream is None:
                        raise _LinkLost("link closed")
                    try:
                        batch += await self._poll_read(meter, read)
                    except _NoAnswer as e:
                        self._meter_lost(meter, str(e))
                        break
            else:
                self._meter_back(meter)
            self._apply(batch)
        self.cycles += 1

    def _apply(self, batch: list[Sample]) -> None:
        if batch:
            self.samples += len(batch)
            self.sink.apply(batch)

    def _meter_lost(self, meter: _Meter, why: str) -> None:
        if meter.name in self._lost:
            return
        self._lost.add(meter.name)
        log.warning("dlt645 %s: meter %s (%s) lost: %s", self.id, meter.name, meter.address, why)
        self.sink.mark_not_topical(meter.points(), self.id)

    def _meter_back(self, meter: _Meter) -> None:
        if meter.name in self._lost:
            self._lost.discard(meter.name)
            log.info("dlt645 %s: meter %s (%s) answers again", self.id, meter.name, meter.address)

    async def _poll_read(self, meter: _Meter, read: _Read) -> list[Sample]:
        """Read one item (with its follow-up frames) and turn it into samples."""
        answer = await self._transact(ReadData(meter.address, read.di))
        ts = time.time()
        if isinstance(answer, ErrorResponse):
            return self._abnormal(meter, read, answer, ts)
        assert isinstance(answer, ReadDataResponse)
        data = answer.data
        seq = 0
        more = answer.more
        while more:
            seq += 1
            if seq > _MAX_FOLLOW_UPS:
                raise _NoAnswer(f"more than {_MAX_FOLLOW_UPS} follow-up frames for {read.item.hex}")
            self.follow_ups += 1
            part = await self._transact(ReadFollowUp(meter.address, read.di, seq))
            if isinstance(part, ErrorResponse):
                return self._abnormal(meter, read, part, ts)
            assert isinstance(part, ReadFollowUpResponse)
            data += part.data
            more = part.more
        self._abnormal_logged.discard((meter.name, read.di))
        self.abnormal.get(meter.name, {}).pop(read.item.hex, None)
        out: list[Sample] = []
        for b in read.bindings:
            try:
                raw = point_value(read.item, data, field=b.field, index=b.index, bit=b.bit)
            except DLT645Error as e:
                self.errors += 1
                log.warning("dlt645 %s: %s of meter %s: %s", self.id, read.item.hex, meter.name, e)
                out.append(Sample(b.point, self._stale(b), ts, _INVALID_FORMAT, self.id))
                continue
            value: Value
            q = GOOD
            if b.relay:
                value = not raw
            elif isinstance(raw, bool):
                value = raw
            else:
                value = raw * b.scale + b.offset
                if not math.isfinite(value):
                    q = _NONFINITE
            self._last[b.point] = value
            out.append(Sample(b.point, value, ts, q, self.id))
        return out

    def _abnormal(
        self, meter: _Meter, read: _Read, answer: ErrorResponse, ts: float
    ) -> list[Sample]:
        self.errors += 1
        names = list(answer.errors)
        self.abnormal.setdefault(meter.name, {})[read.item.hex] = names
        key = (meter.name, read.di)
        if key not in self._abnormal_logged:
            self._abnormal_logged.add(key)
            log.warning(
                "dlt645 %s: meter %s (%s) answered %s (%s) with error word 0x%02X: %s; "
                "its points are invalid",
                self.id, meter.name, meter.address, read.item.hex, read.item.name, answer.error,
                ", ".join(names) or "no bit set",
            )  # fmt: skip
        q = _INVALID_NO_DATA if "no_requested_data" in names else _INVALID_FAILURE
        return [Sample(b.point, self._stale(b), ts, q, self.id) for b in read.bindings]

    def _stale(self, b: _Binding) -> Value:
        last = self._last.get(b.point)
        if last is not None:
            return last
        return False if b.bit is not None else 0.0

    # --- one transaction -----------------------------------------------------------------------

    async def _transact(self, request: Request) -> Response:
        """Send request, return the matching answer; _NoAnswer after the retries, _LinkLost."""
        stream = self._stream
        if stream is None:
            raise _LinkLost("link closed")
        conn = self._conn
        why = "no answer"
        for _attempt in range(1 + self.config.retries):
            conn.clear()
            stream.discard_input()
            data = conn.send(request, self.config.preamble)
            self.requests += 1
            try:
                await stream.write(data)
            except TransportError as e:
                raise _LinkLost(str(e)) from e
            try:
                answer = await self._answer(stream, conn)
            except TimeoutError:
                self.timeouts += 1
                why = f"no answer within {self.config.timeout_s:g}s"
                continue
            except DecodeError as e:
                self.bad_frames += 1
                why = f"bad frame: {e}"
                log.debug("dlt645 %s: %s", self.id, why)
                continue
            self.answers += 1
            return answer
        raise _NoAnswer(f"{why} (after {1 + self.config.retries} attempt(s))")

    async def _answer(self, stream: ByteStream, conn: Connection) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.timeout_s
        while True:
            event = conn.next_event()
            if not isinstance(event, NeedData):
                return event  # type: ignore[return-value]  # a MASTER only returns answers
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            try:
                # The deadline is kept here, not by ByteStream.read(timeout=): there a timeout
                # surfaces as a TransportError (TimeoutError is an OSError) and would look like a
                # broken link. asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
                # a cancellation that races with the read completing, and stop() would hang.
                async with asyncio.timeout(remaining):
                    chunk = await stream.read(4096)
            except TransportError as e:
                raise _LinkLost(str(e)) from e
            if not chunk:
                raise _LinkLost("the link was closed by the other end")
            conn.receive_data(chunk)
