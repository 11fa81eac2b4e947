"""IEC 60870-5-104 south driver: a c104 client polling one outstation through a point map.

No ``from __future__ import annotations`` here: c104 checks every callback against its exact
signature, type hints included, and string annotations fail that check.

Theory of operation
-------------------
One ``c104.Client`` with one connection and one station (the configured common address). Every
configured IOA is added to the station as a client point (so that c104 knows it); command points
are transmitted from ``execute``. c104 runs the link (APCI, acknowledgements, STARTDT, commands).

Receive path. Values are taken from the raw frames, not from c104's per-point receive callbacks:
``_on_raw`` (c104's receive thread, once per APDU, in wire order) decodes monitor-direction ASDUs
of our common address with our IEC 101 codec (``gateway.codecs.iec101``, IEC 104 field sizes)
and queues one ``Sample`` per configured IOA. Why: c104 receives no faster than its Python
callbacks run (a slow callback throttles the link and the outstation overwrites its own queue),
and a per-point callback costs ~11 us of CPU per value inside c104 (GIL, argument objects, its
callback thread) before our code runs: a bare c104 client counting in per-point callbacks used
~12 us of process CPU per value at 40k values/s, the same client counting from raw frames (one
call per APDU of ~30 values) ~1.6 us, and only the latter received all 120,000 values of the
tools/bench/iec104.py stream on the 2-core bench machine. c104 still decodes the frames itself
(points, unknown IOAs and stations are counted through its callbacks).

- Scaling, quality and time: raw * scale + offset (bool/int kept when scale is 1 and offset 0);
  QDS / SIQ / DIQ bits -> IEC 61850 quality (BCR, 7.2.6.9: IV -> invalid, CY -> overflow; c104
  2.2.1's own client reads the wire's CY as "Adjusted" and CA as "Carry"); a CP56Time2a tag
  (UTC on the wire) is the sample time, values without one get the receive time.
- A type id other than the configured one is accepted when it carries the same information
  (M_ME_NC_1 in a GI, M_ME_TF_1 spontaneous), logged once per IOA; another kind is counted as a
  type mismatch and ignored.
- Hand-off without a lock per value: samples go to a deque (``append`` is atomic). The loop is
  woken (``call_soon_threadsafe``: a socket write that also hands the GIL over) only when no
  drain is armed; while values keep coming it drains again every ``_DRAIN_S`` on its own timer,
  so a stream costs ~1/_DRAIN_S wake-ups per second and ``sink.apply`` gets larger batches.

The callbacks never touch the sink. ``_flush`` (loop thread) hands the queued samples to
``sink.apply``. Command reports (SELECTED, SENT) are queued in the same deque as callables
between the samples, so the sink and the command path see them in wire order: a read-back that
follows an ACT_CON arrives after SENT; a report also wakes the loop at once. Blocking c104 calls
(client start/stop, command transmit) run in per-driver thread pools.

Frames. ``_on_raw`` also watches ACT_CON / ACT_TERM frames (and their P/N bit) of the requests
in flight: set-points and commands by type and IOA, interrogations and clock sync by type. It is
the source of truth for confirmations, because c104's own blocking wait can miss a
confirmation that arrives before it starts waiting and then reports a failure at its timeout
(about once in 400 requests on loopback). Interrogations and clock sync are therefore sent
without c104's wait and confirmed from the frames; a command finishes as soon as its outcome is
seen in the frames (c104's transmit may still be waiting; the point stays locked until it
returns). The ACT_TERM of an interrogation comes after every value it carried, in the queue too.

Connection supervisor (one task, ``_supervise``)::

    start client --> wait OPEN --(failed / no answer)--> stop client, back off --> start ...
                        |   (still OPEN_MUTED after 0.3 s: send STARTDT again)
                        v
                  initialise: clock sync (config.clock_sync), general interrogation,
                  counter interrogation (if counters are mapped)
                        |
                        v
                  connected: periodic GI (and CI) if interrogation_period_s > 0
                        |  link lost (state leaves OPEN)
                        v
                  flush, sink.mark_not_topical(monitored points), stop client, back off ...

Reconnect and backoff. c104 reconnects by itself: on loss it enters CLOSED_AWAIT_RECONNECT and
schedules a new dial about one second later, forever, with no backoff (connect timeout t0 is
2 s). To honour reconnect_min_s..reconnect_max_s the supervisor stops the client as soon as it
sees CLOSED_AWAIT_RECONNECT (stopping cancels c104's own redial), sleeps the backoff delay
(doubling from reconnect_min_s up to reconnect_max_s, reset after a successful connect), then
starts the client again. Connections are made with ``Init.NONE`` so that the initialisation
sequence (and its counters and errors) is ours. c104 2.2.1 can leave a fresh connection in
OPEN_MUTED although data transfer was started (it handles STARTDT_CON before it records
OPEN_MUTED); the supervisor then sends STARTDT again.

Commands. ``execute`` converts the model value to the wire value (raw = (value - offset) /
scale, with range checks: SetpointRangeError, nothing sent), then calls ``Point.transmit``.
With select-before-operate c104 sends select, waits for its confirmation, sends execute and
waits for the execute confirmation and termination, all inside one blocking call; SELECTED is
reported at the select ACT_CON and SENT at the execute ACT_CON (ACT_TERM is not required). A
negative confirmation raises DeviceError naming the phase; no confirmation within
command_timeout_ms raises DeviceError; a closed link raises LinkDown. If c104 lost a confirmed
select (its wait race) it never sends the execute: the driver selects again, once.
"""

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any, cast

import c104

from gateway.codecs.iec101 import (
    ASDUError,
    AsduParams,
    CP56Time2a,
    IntegratedTotal,
    TypeID,
    decode_asdu,
)
from gateway.errors import DeviceError, DriverError, LinkDown
from gateway.south.base import Report, SampleSink, SouthDriver
from model.command import Command, CommandState
from model.drivers import IEC104DriverConfig, IEC104PointMap
from model.quality import IEC104Flags, from_iec104
from model.sample import Sample, Value

__all__ = ["IEC104Driver", "SetpointRangeError", "to_wire"]

log = logging.getLogger(__name__)

# c104 states we react to.
_OPEN = c104.ConnectionState.OPEN
_AWAIT_RECONNECT = c104.ConnectionState.CLOSED_AWAIT_RECONNECT
_MUTED = c104.ConnectionState.OPEN_MUTED

# IEC 60870-5-101 7.2.3: cause of transmission 7 = activation confirmation, bit 6 = P/N.
_COT_ACT_CON = 7
_COT_ACT_TERM = 10
_COT_NEGATIVE = 0x40
# Control direction type identifications (45..51 without time, 58..64 with CP56Time2a).
_CMD_TYPE_MIN, _CMD_TYPE_MAX = 45, 64
# System commands in control direction: C_IC_NA_1 (100), C_CI_NA_1 (101), C_CS_NA_1 (103).
_SYS_TYPE_MIN, _SYS_TYPE_MAX = 100, 103

# QDS bits that have an IEC 61850 meaning (EI, 0x08, is for protection events only).
_QDS_MASK = IEC104Flags.IV | IEC104Flags.NT | IEC104Flags.SB | IEC104Flags.BL | IEC104Flags.OV
_QDS_TO_QUALITY = tuple(from_iec104(f & _QDS_MASK) for f in range(256))
_new_sample = tuple.__new__  # Sample(...) through tuple.__new__: ~0.2 us instead of ~0.45 us
# Monitor-direction ASDUs are decoded by our IEC 101 codec with the fixed 104 field sizes.
_ASDU_PARAMS = AsduParams.iec104()

_POLL_S = 0.25  # safety-net poll of the connection state, in case a state callback is lost
_UNMUTE_AFTER_S = 0.3  # a connection still muted after this is unmuted again
_CONNECT_TIMEOUT_S = 6.0  # c104 dials with t0 = 2 s; this only bounds a hung attempt
_CATCH_UP_S = 1.0  # bound on waiting for our frame observer after c104's transmit returned
# While values keep arriving the loop drains the receive queue on this period instead of being
# woken by c104's thread for every few values (each wake-up is a socket write and a GIL hand-over
# that stalls c104's receive path). It bounds the added latency of a value in a stream; the
# first value after a quiet spell and every command report wake the loop at once.
_DRAIN_S = 0.005


def _family(type_name: str) -> str:
    """Information kind shared by a type and its time-tagged variants (M_ME_NC_1 ~ M_ME_TF_1)."""
    kind = type_name[2:4]
    if kind == "ME":
        # NA/TA/TD/ND normalised, NB/TB/TE scaled, NC/TC/TF short float.
        return {"A": "ME_NA", "D": "ME_NA", "B": "ME_NB", "E": "ME_NB"}.get(type_name[6], "ME_NC")
    return kind


# Process information in monitor direction (type ids 1..44) -> its family.
_MON_FAMILY = {int(t): _family(t.name) for t in TypeID if t.name.startswith("M_") and t < 45}


def _type_name(tid: int) -> str:
    """The standard's name of a type identification (its number if unknown)."""
    try:
        return TypeID(tid).name
    except ValueError:
        return str(tid)


@dataclass(frozen=True, slots=True)
class _Mon:
    """A monitored IOA: where its value goes and how it is scaled."""

    ref: str
    scale: float
    offset: float
    identity: bool  # scale 1, offset 0: keep bool/int values as they are
    family: str
    type_name: str
    type_id: int


class SetpointRangeError(DeviceError, ValueError):
    """A command value cannot be represented in the IEC 104 type of its point."""


class _Watch:
    """Confirmations seen for one request in flight (a command, an interrogation, a clock sync).

    on_frame runs on c104's callback thread under the driver lock and returns what the loop must
    run, in order with the samples; the other methods run on the loop thread.
    """

    __slots__ = (
        "confirmations", "done", "needs_term", "negative", "ok", "report", "sbo", "selected",
        "sent", "settled", "what",
    )  # fmt: skip

    def __init__(
        self,
        what: str,
        *,
        report: Report | None = None,
        sbo: bool = False,
        needs_term: bool = False,
    ) -> None:
        self.what = what
        self.report = report  # None: a station request (interrogation, clock sync)
        self.sbo = sbo
        self.needs_term = needs_term  # a station request that ends with ACT_TERM
        self.confirmations = 0  # positive ACT_CON frames (c104 thread)
        self.negative = False  # a negative confirmation was seen (c104 thread)
        self.done = False  # the outcome frame was seen (c104 thread)
        self.selected = self.sent = self.ok = False  # loop thread
        self.settled = asyncio.Event()  # the outcome was handled (loop thread)

    def on_frame(self, cot: int, negative: bool) -> Callable[[], None] | None:
        if self.done:
            return None
        if negative:
            self.negative = self.done = True
            return self.settled.set
        if cot == _COT_ACT_CON:
            self.confirmations += 1
            if self.report is not None:
                if self.sbo and self.confirmations == 1:
                    return self.on_selected
                self.done = True
                return self.on_sent
            if not self.needs_term:
                self.done = True
                return self.on_ok
        elif cot == _COT_ACT_TERM and self.report is None and self.confirmations:
            self.done = True
            return self.on_ok
        return None

    def retry(self) -> None:
        """Forget the frames of a first attempt (caller holds the driver lock)."""
        self.confirmations = 0
        self.done = self.negative = False

    def on_selected(self) -> None:
        if not self.selected and self.report is not None:
            self.selected = True
            self.report(CommandState.SELECTED, f"{self.what}: select confirmed")

    def on_sent(self) -> None:
        if self.sbo:
            self.on_selected()
        if not self.sent and self.report is not None:
            self.sent = True
            self.report(CommandState.SENT, f"{self.what}: execute confirmed")
        self.settled.set()

    def on_ok(self) -> None:
        self.ok = True
        self.settled.set()


def to_wire(pm: IEC104PointMap, value: Value) -> Any:
    """The c104 value to send for a model value on a command point; SetpointRangeError if none."""
    kind = pm.type[2:4]
    where = f"{pm.type} at IOA {pm.ioa} ({pm.point})"
    if kind in ("SC", "DC", "RC") and isinstance(value, bool):
        if kind == "SC":
            return value
        if kind == "DC":
            return c104.Double.ON if value else c104.Double.OFF
        return c104.Step.HIGHER if value else c104.Step.LOWER
    raw = (float(value) - pm.offset) / pm.scale
    if not math.isfinite(raw):
        raise SetpointRangeError(f"{where}: value {value!r} is not a finite number")
    if kind == "SC":
        return raw != 0.0
    if kind in ("DC", "RC"):
        r = round(raw)
        if r not in (1, 2) or abs(raw - r) > 1e-9:
            what = "1 (off) or 2 (on)" if kind == "DC" else "1 (lower) or 2 (higher)"
            raise SetpointRangeError(f"{where}: raw value {raw:g} must be {what}")
        if kind == "DC":
            return c104.Double.ON if r == 2 else c104.Double.OFF
        return c104.Step.HIGHER if r == 2 else c104.Step.LOWER
    if pm.type in ("C_SE_NA_1", "C_SE_TA_1"):
        # 7.2.6.6 NVA: normalised value, -1 .. +1 - 2^-15.
        if not -1.0 <= raw <= 1.0:
            raise SetpointRangeError(
                f"{where}: normalised value {raw:g} (from {value!r}) is outside -1..1"
            )
        return c104.NormalizedFloat(raw)
    if pm.type in ("C_SE_NB_1", "C_SE_TB_1"):
        # 7.2.6.7 SVA: scaled value, a 16-bit signed integer.
        r = round(raw)
        if not -32768 <= r <= 32767:
            raise SetpointRangeError(
                f"{where}: scaled value {r} (from {value!r}) is outside -32768..32767"
            )
        return c104.Int16(r)
    if pm.type in ("C_SE_NC_1", "C_SE_TC_1"):
        if abs(raw) > 3.4028234663852886e38:
            raise SetpointRangeError(f"{where}: {raw:g} does not fit a short float")
        return raw
    if kind == "BO":
        r = round(raw)
        if not 0 <= r <= 0xFFFFFFFF:
            raise SetpointRangeError(f"{where}: bitstring {r} is outside 0..2^32-1")
        # c104 2.2.1 builds a zero Byte32 from an int; bytes work (little-endian).
        return c104.Byte32(r.to_bytes(4, "little"))
    raise SetpointRangeError(f"{where}: unsupported command type")


class IEC104Driver(SouthDriver):
    """An IEC 60870-5-104 outstation acquired and commanded through c104."""

    protocol = "iec104"

    def __init__(
        self,
        config: IEC104DriverConfig,
        sink: SampleSink,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config.id, sink)
        self.config = config
        self.source = f"iec104:{config.id}"
        self._loop = loop
        self._mon: dict[int, _Mon] = {}
        self._cmd: dict[str, IEC104PointMap] = {}
        for p in config.points:
            if p.is_command:
                self._cmd[p.point] = p
            else:
                identity = p.scale == 1.0 and p.offset == 0.0
                self._mon[p.ioa] = _Mon(
                    p.point, p.scale, p.offset, identity, _family(p.type), p.type, _type_id(p.type)
                )
        self._monitored = frozenset(m.ref for m in self._mon.values())
        self._cmd_ioas = frozenset(p.ioa for p in self._cmd.values())
        self._ca = config.common_address
        self._has_counters = any(m.family == "IT" for m in self._mon.values())

        self._lock = threading.Lock()
        # c104 threads -> loop: Samples and, between them, command-report callables, in wire
        # order. deque.append is atomic, so the per-value path takes no lock.
        self._queue: deque[Sample | Callable[[], None]] = deque()
        self._marks_queued = 0  # callables in _queue (under _lock)
        # A drain is scheduled or its timer runs: c104's threads need not wake the loop.
        self._drain_armed = False
        self._timer: asyncio.TimerHandle | None = None
        self._watches: dict[tuple[int, int], _Watch] = {}
        self._cmd_locks: dict[int, asyncio.Lock] = {}
        self._mismatch_logged: set[int] = set()

        self._client: c104.Client | None = None
        self._con: c104.Connection | None = None
        self._cmd_points: dict[int, c104.Point] = {}
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None  # blocking requests
        self._life: concurrent.futures.ThreadPoolExecutor | None = None  # start/stop, in order
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._connected = False
        self._topical = False  # samples were delivered since the last mark_not_topical
        self._stopping = False

        self.counters: dict[str, int] = dict.fromkeys(
            (
                "samples",
                "interrogations",
                "counter_interrogations",
                "clock_syncs",
                "connects",
                "reconnects",
                "link_losses",
                "connect_failures",
                "commands",
                "commands_failed",
                "errors",
                "unknown_ioa",
                "unknown_ca",
                "type_mismatches",
            ),
            0,
        )

    # --- SouthDriver ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the link is open and initialised."""
        return self._connected

    def monitored_points(self) -> set[str]:
        """Model points fed by monitor-direction IOAs."""
        return set(self._monitored)

    def command_points(self) -> set[str]:
        """Model points written through control-direction IOAs."""
        return set(self._cmd)

    def stats(self) -> dict[str, Any]:
        """Counters and link state."""
        out = super().stats()
        with self._lock:
            out.update(self.counters)
        out["state"] = self._con.state.name if self._con is not None else "STOPPED"
        out["peer"] = f"{self.config.host}:{self.config.port}"
        return out

    async def start(self) -> None:
        """Build the c104 client and start the connection supervisor; returns at once."""
        if self._task is not None:
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._drain_armed = False
        self._wake = asyncio.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix=f"iec104-{self.id}"
        )
        self._life = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"iec104-{self.id}-life"
        )
        self._build_client()
        self._task = self._loop.create_task(self._supervise(), name=f"iec104-{self.id}")

    async def stop(self) -> None:
        """Stop supervising, close the link, flush, mark points not topical; idempotent."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None and self._life is not None:
            await self._lifecycle(self._client.stop)
        was_connected, self._connected = self._connected, False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        self._drain_armed = False
        if was_connected or self._topical:
            self._mark_not_topical()
        for pool in (self._pool, self._life):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._life = None

    async def execute(self, cmd: Command, report: Report) -> None:
        """Send a command; report SELECTED (select-before-operate) and SENT on confirmation."""
        pm = self._cmd.get(cmd.target)
        if pm is None:
            raise DriverError(f"driver {self.id}: {cmd.target!r} is not one of its command points")
        wire = to_wire(pm, cmd.value)
        point = self._cmd_points.get(pm.ioa)
        if point is None or not self._connected or self._con is None:
            raise LinkDown(
                f"driver {self.id}: link to {self.config.host}:{self.config.port} is down; "
                f"{pm.type} to IOA {pm.ioa} not sent"
            )
        sbo = pm.select_before_operate or cmd.select_before_operate
        lock = self._cmd_locks.setdefault(pm.ioa, asyncio.Lock())
        await lock.acquire()
        fut: asyncio.Future[bool] | None = None
        try:
            self._count("commands")
            w = _Watch(f"{pm.type} IOA {pm.ioa}", report=report, sbo=sbo)
            key = (_type_id(pm.type), pm.ioa)
            self._watch(key, w)
            try:
                for attempt in (1, 2):
                    fut = self._loop_().run_in_executor(
                        self._pool, self._transmit, point, wire, sbo
                    )
                    ok, quick = await self._await_command(fut, w)
                    if not fut.done():
                        break  # outcome seen in the frames while c104 still waits
                    # c104 may miss a confirmation that arrives before it starts waiting and
                    # then gives up at its timeout. After a confirmed select it never sent the
                    # execute: select again, once.
                    if attempt == 1 and sbo and not (ok or quick or w.negative or w.sent):
                        with self._lock:
                            selected = w.confirmations == 1
                            if selected:
                                w.retry()
                        if selected:
                            log.warning(
                                "%s: %s: c104 lost the select confirmation; selecting again",
                                self.id,
                                w.what,
                            )
                            continue
                    break
            except (RuntimeError, ValueError) as e:  # c104: e.g. "command ... already running"
                self._command_failed()
                raise DeviceError(f"driver {self.id}: {pm.type} to IOA {pm.ioa} failed: {e}") from e
            finally:
                self._unwatch(key)
        finally:
            if fut is not None and not fut.done():
                # Keep the point locked until c104's transmit returns: c104 refuses a second
                # command for a point while one is running.
                fut.add_done_callback(functools.partial(_release_after, lock))
            else:
                lock.release()
        if w.sent:
            return
        if ok:  # c104 says confirmed, but the frames were not seen in time
            w.on_sent()
            return
        self._command_failed()
        target = f"{pm.type} to IOA {pm.ioa} ({pm.point} = {cmd.value!r})"
        if w.negative:
            phase = "select" if sbo and w.confirmations == 0 else "execute"
            raise DeviceError(
                f"driver {self.id}: outstation refused {target}: negative {phase} confirmation"
            )
        if not self._connected or self._con.state != _OPEN:
            raise LinkDown(f"driver {self.id}: link lost while sending {target}")
        if quick:
            raise DeviceError(
                f"driver {self.id}: outstation refused {target}: negative confirmation"
            )
        raise DeviceError(
            f"driver {self.id}: no confirmation of {target} within {self.config.command_timeout_ms} ms"
        )

    async def _await_command(self, fut: "asyncio.Future[bool]", w: _Watch) -> tuple[bool, bool]:
        """(c104's result, returned before its timeout) once the outcome is known."""
        loop = self._loop_()
        t0 = loop.time()
        waiter = loop.create_task(w.settled.wait())
        both: list[asyncio.Future[Any]] = [fut, waiter]
        try:
            await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not fut.done():
            return False, True  # outcome seen in the frames first
        ok = fut.result()
        # c104 returns before its timeout only on a confirmation (or a closed link).
        quick = loop.time() - t0 < 0.9 * self.config.command_timeout_ms / 1000.0
        if (ok or quick) and not w.settled.is_set() and self._connected:
            # c104 can end its wait before our frame observer's report has reached the loop
            # (through the queue, behind the samples before it): let it catch up so that
            # SELECTED/SENT are reported in wire order with the samples.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CATCH_UP_S):
                    await w.settled.wait()
        return ok, quick

    def _loop_(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    # --- c104 setup ---------------------------------------------------------------------------

    def _build_client(self) -> None:
        cfg = self.config
        client = c104.Client(tick_rate_ms=50, command_timeout_ms=cfg.command_timeout_ms)
        client.originator_address = cfg.originator_address
        con = client.add_connection(ip=cfg.host, port=cfg.port, init=c104.Init.NONE)
        if con is None:
            raise DriverError(
                f"driver {self.id}: c104 refused a connection to {cfg.host}:{cfg.port}"
            )
        station = con.add_station(common_address=cfg.common_address)
        if station is None:
            raise DriverError(f"driver {self.id}: c104 refused common address {cfg.common_address}")
        for p in cfg.points:
            point = station.add_point(io_address=p.ioa, type=getattr(c104.Type, p.type))
            if point is None:
                raise DriverError(f"driver {self.id}: c104 refused {p.type} at IOA {p.ioa}")
            if p.is_command:
                self._cmd_points[p.ioa] = point
            # Monitor points get no c104 receive callback: values come from the raw frames.
        client.on_new_point(callable=self._on_new_point)
        client.on_new_station(callable=self._on_new_station)
        con.on_state_change(callable=self._on_state)
        con.on_unexpected_message(callable=self._on_unexpected)
        con.on_receive_raw(callable=self._on_raw)
        self._client, self._con = client, con

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking c104 call in the driver's thread pool."""
        loop = self._loop
        assert loop is not None and self._pool is not None
        return await loop.run_in_executor(self._pool, fn, *args)

    async def _lifecycle(self, fn: Callable[[], None]) -> None:
        """Start or stop the c104 client on the single lifecycle thread (so they stay in order)."""
        loop = self._loop
        assert loop is not None and self._life is not None
        await loop.run_in_executor(self._life, fn)

    @staticmethod
    def _transmit(point: c104.Point, wire: Any, sbo: bool) -> bool:
        point.command_mode = c104.CommandMode.SELECT_AND_EXECUTE if sbo else c104.CommandMode.DIRECT
        point.value = wire
        return bool(point.transmit(cause=c104.Cot.ACTIVATION))

    def _count(self, *keys: str, n: int = 1) -> None:
        """Add n to counters (any thread)."""
        with self._lock:
            for k in keys:
                self.counters[k] += n

    def _command_failed(self) -> None:
        self._count("commands_failed", "errors")

    # --- c104 callbacks (c104 threads: never touch the sink here) ------------------------------

    def _on_unexpected(
        self, connection: c104.Connection, message: c104.IncomingMessage, cause: c104.Umc
    ) -> None:
        # Values are taken from the raw frames (_on_monitor), which also judges a type id other
        # than the configured one; c104's own view is only logged. (INVALID_COT, e.g. for a
        # time-tagged type in an interrogation answer, loses nothing: the frame was decoded.)
        tid = int(cast(Any, message.type))
        if cause == c104.Umc.MISMATCHED_TYPE_ID and tid not in _MON_FAMILY:
            # A type our codec does not decode (e.g. M_PS_NA_1) on a configured IOA.
            self._type_mismatch(message.io_address, self._mon.get(message.io_address), tid)
            return
        log.debug("%s: unexpected %s IOA %s: %s", self.id, message.type, message.io_address, cause)

    def _wake_loop(self) -> None:
        """Have the loop drain the queue soon (any thread)."""
        self._drain_armed = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(self._drain)

    def _mark(self, fn: Callable[[], None]) -> None:
        """Run fn on the loop after the samples queued so far (caller holds the lock)."""
        self._queue.append(fn)
        self._marks_queued += 1

    def _on_new_point(
        self, client: c104.Client, station: c104.Station, io_address: int, point_type: c104.Type
    ) -> None:
        # Not added to the station: c104 then drops the message. Counted once per message.
        self._count("unknown_ioa")
        log.debug("%s: unknown IOA %s (%s) ignored", self.id, io_address, point_type)

    def _on_new_station(
        self, client: c104.Client, connection: c104.Connection, common_address: int
    ) -> None:
        self._count("unknown_ca")
        log.debug("%s: unknown common address %s ignored", self.id, common_address)

    def _on_state(self, connection: c104.Connection, state: c104.ConnectionState) -> None:
        log.debug("%s: c104 state %s", self.id, state.name)
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def _on_raw(self, connection: c104.Connection, data: bytes) -> None:
        # c104's receive thread, once per APDU, in wire order. I-format APDU: 0x68, length,
        # 4 control octets (first & 1 == 0), then the ASDU: type id, VSQ, COT (P/N in bit 6),
        # originator, CA (2 octets), IOA (3 octets), ...
        # An exception here would make c104 drop this callback for good: none may escape.
        try:
            if len(data) < 12 or data[2] & 1:
                return
            tid = data[6]
            family = _MON_FAMILY.get(tid)
            if family is not None:
                if data[10] | data[11] << 8 == self._ca:  # other stations: c104 counts them
                    self._on_monitor(tid, family, data)
                return
            if self._watches and len(data) >= 15:
                self._on_confirmation(tid, data)
        except Exception:
            self._count("errors")
            log.exception("%s: cannot handle frame %s", self.id, data.hex())

    def _on_monitor(self, tid: int, family: str, data: bytes) -> None:
        """Queue a Sample for every configured IOA in a monitor-direction ASDU."""
        try:
            asdu = decode_asdu(memoryview(data)[6:], _ASDU_PARAMS)
        except ASDUError as e:
            self._count("errors")
            log.warning("%s: undecodable %s ASDU from %s: %s", self.id, tid, self.config.host, e)
            return
        now = time.time()  # the receive time of values without a (valid) time tag
        mon, push, source = self._mon, self._queue.append, self.source
        counter = family == "IT"
        # (Monitor types only: every object has ioa, value and time; all but BCR a quality.)
        objects: tuple[Any, ...] = asdu.objects
        for o in objects:
            m = mon.get(o.ioa)
            if m is None or m.family != family:
                if m is not None or o.ioa in self._cmd_ioas:
                    self._type_mismatch(o.ioa, m, tid)
                continue  # an IOA not in the map: c104 counts it (on_new_point)
            if m.type_id != tid and o.ioa not in self._mismatch_logged:
                # Same information, other time tagging (M_ME_NC_1 in a GI, M_ME_TF_1 spontaneous).
                self._mismatch_logged.add(o.ioa)
                log.info(
                    "%s: IOA %s configured %s, outstation sends %s: accepted",
                    self.id,
                    o.ioa,
                    m.type_name,
                    _type_name(tid),
                )
            v: Value = o.value
            if not m.identity:
                v = v * m.scale + m.offset
            if counter:
                # BCR: IV -> invalid, CY (carry: the counter overflowed) -> overflow.
                bcr = cast(IntegratedTotal, o)
                qds = (IEC104Flags.IV if bcr.invalid else 0) | (IEC104Flags.OV if bcr.carry else 0)
            else:
                qds = o.quality
            t = o.time
            ts = now
            if type(t) is CP56Time2a:
                # CP56Time2a is UTC on the wire (c104 sends it so); a tag that is no date
                # falls back to the receive time. (CP24Time2a, not allowed in 104, likewise.)
                with contextlib.suppress(ValueError):
                    ts = t.to_epoch()
            push(_new_sample(Sample, (m.ref, v, ts, _QDS_TO_QUALITY[qds], source)))
        if not self._drain_armed:
            self._wake_loop()

    def _type_mismatch(self, ioa: int, m: _Mon | None, tid: int) -> None:
        self._count("type_mismatches", "errors")
        if ioa not in self._mismatch_logged:
            self._mismatch_logged.add(ioa)
            log.warning(
                "%s: IOA %s sends %s but is configured as %s: ignored",
                self.id,
                ioa,
                _type_name(tid),
                m.type_name if m is not None else "a command type",
            )

    def _on_confirmation(self, tid: int, data: bytes) -> None:
        """Note an ACT_CON / ACT_TERM of a request in flight; its report goes in wire order."""
        if not (_CMD_TYPE_MIN <= tid <= _CMD_TYPE_MAX or _SYS_TYPE_MIN <= tid <= _SYS_TYPE_MAX):
            return
        cot = data[8] & 0x3F
        if cot != _COT_ACT_CON and cot != _COT_ACT_TERM:
            return
        ioa = data[12] | data[13] << 8 | data[14] << 16
        with self._lock:
            w = self._watches.get((tid, ioa))
            if w is None:
                return
            fn = w.on_frame(cot, bool(data[8] & _COT_NEGATIVE))
            if fn is None:
                return
            self._mark(fn)
        self._wake_loop()  # a command report is not kept waiting for the drain timer

    # --- loop thread ----------------------------------------------------------------------------

    def _watch(self, key: tuple[int, int], w: _Watch) -> None:
        """Watch the frames for the confirmations of a request."""
        with self._lock:
            self._watches[key] = w

    def _unwatch(self, key: tuple[int, int]) -> None:
        with self._lock:
            self._watches.pop(key, None)

    def _drain(self) -> None:
        """Flush the queue; while values keep coming, flush again every _DRAIN_S (loop thread)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._flush():
            self._drain_armed = False
            # A value queued since the flush saw the flag still set and did not wake us.
            if not self._queue:
                return
            self._drain_armed = True
        if not self._stopping:
            self._timer = self._loop_().call_later(_DRAIN_S, self._drain)

    def _flush(self) -> int:
        """Hand what the receive thread queued to the sink, reports in order; how many items."""
        q = self._queue
        with self._lock:
            # Counted under the lock with the length, so every report counted is among the n.
            n = len(q)
            marks, self._marks_queued = self._marks_queued, 0
        if not n:
            return 0
        popleft = q.popleft
        items = [popleft() for _ in repeat(None, n)]
        if not marks:
            self._apply(cast(list[Sample], items))
            return n
        batch: list[Sample] = []
        for x in items:
            if type(x) is Sample:
                batch.append(x)
                continue
            self._apply(batch)
            batch = []
            try:
                cast(Callable[[], None], x)()
            except Exception:
                log.exception("%s: command report callback failed", self.id)
        self._apply(batch)
        return n

    def _apply(self, batch: list[Sample]) -> None:
        if batch:
            self._count("samples", n=len(batch))
            self._topical = True
            try:
                self.sink.apply(batch)
            except Exception:
                self._count("errors")
                log.exception("%s: sink rejected %d samples", self.id, len(batch))

    def _mark_not_topical(self) -> None:
        self._topical = False
        if self._monitored:
            try:
                self.sink.mark_not_topical(self._monitored, source=self.source)
            except Exception:
                self._count("errors")
                log.exception("%s: sink.mark_not_topical failed", self.id)

    async def _wait_state(
        self, pred: Callable[[c104.ConnectionState], bool], timeout: float | None
    ) -> c104.ConnectionState | None:
        """The connection state once pred holds, None after timeout (None: no timeout)."""
        assert self._con is not None and self._wake is not None and self._loop is not None
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            self._wake.clear()
            s = self._con.state
            if pred(s):
                return s
            wait = _POLL_S
            if deadline is not None:
                remaining = deadline - self._loop.time()
                if remaining <= 0:
                    return None
                wait = min(wait, remaining)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _supervise(self) -> None:
        assert self._client is not None
        cfg = self.config
        delay = cfg.reconnect_min_s
        while not self._stopping:
            try:
                if await self._attempt():
                    delay = cfg.reconnect_min_s
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the supervisor die: count, log, back off, retry
                self._count("errors")
                log.exception("%s: connection supervisor error", self.id)
                self._connected = False
                self._flush()
                self._mark_not_topical()
            # Stopping the client cancels c104's own 1 s redial so that our backoff holds.
            await self._lifecycle(self._client.stop)
            log.debug("%s: next connection attempt in %.2f s", self.id, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2.0, cfg.reconnect_max_s)

    async def _attempt(self) -> bool:
        """One connection: dial, initialise, serve until the link drops; True if it opened."""
        assert self._client is not None
        cfg = self.config
        await self._lifecycle(self._client.start)
        s = await self._wait_open()
        if s != _OPEN:
            self._count("connect_failures")
            log.debug("%s: cannot connect to %s:%s", self.id, cfg.host, cfg.port)
            return False
        self._count("connects")
        if self.counters["connects"] > 1:
            self._count("reconnects")
        log.info("%s: connected to %s:%s", self.id, cfg.host, cfg.port)
        self._connected = True
        try:
            await self._initialise()
            period = cfg.interrogation_period_s
            while True:
                s = await self._wait_state(lambda s: s != _OPEN, period if period > 0 else None)
                if s is not None:
                    break
                await self._interrogate()
        finally:
            self._connected = False
            self._flush()
            self._mark_not_topical()
        self._count("link_losses")
        log.warning("%s: link to %s:%s lost", self.id, cfg.host, cfg.port)
        return True

    async def _wait_open(self) -> c104.ConnectionState | None:
        """Wait for OPEN (or a failed dial); unmute a connection c104 left muted."""
        assert self._loop is not None and self._con is not None
        con = self._con
        deadline = self._loop.time() + _CONNECT_TIMEOUT_S
        while True:
            s = await self._wait_state(
                lambda s: s in (_OPEN, _AWAIT_RECONNECT),
                min(_UNMUTE_AFTER_S, max(deadline - self._loop.time(), 0.0)),
            )
            if s is not None or self._loop.time() >= deadline:
                return s
            if con.state == _MUTED:
                # c104 2.2.1 race: the STARTDT confirmation can be handled before c104 records
                # OPEN_MUTED, and then the connection stays "muted" although data transfer is
                # started. Another STARTDT (harmless, 5.3 of IEC 60870-5-104) moves it to OPEN.
                log.debug("%s: connection left muted by c104: sending STARTDT again", self.id)
                await self._blocking(con.unmute)

    async def _request(
        self, what: str, counter: str, type_name: str, send: Callable[[], bool], needs_term: bool
    ) -> None:
        """A station request, confirmed by its ACT_CON (and ACT_TERM) frames as we see them.

        c104's own wait_for_response is not used: it can miss a confirmation that arrives
        before it starts waiting (seen about once in 400 requests on loopback) and then reports
        a failure at its timeout. Seen through our frame observer, the end of an interrogation
        also comes after every value it carried has reached the sink.
        """
        w = _Watch(what, needs_term=needs_term)
        key = (_type_id(type_name), 0)
        self._watch(key, w)
        sent = False
        try:
            sent = bool(await self._blocking(send))
            if sent:
                timeout = self.config.command_timeout_ms / 1000.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await w.settled.wait()
        except RuntimeError as e:  # c104: e.g. "command ... already running"
            log.warning("%s: %s failed: %s", self.id, what, e)
        finally:
            self._unwatch(key)
        if w.ok:
            self._count(counter)
            return
        self._count("errors")
        if w.negative:
            log.warning("%s: %s refused by %s", self.id, what, self.config.host)
        elif sent:
            log.warning("%s: %s not confirmed by %s", self.id, what, self.config.host)

    async def _initialise(self) -> None:
        """Station initialisation after connect: clock sync, general and counter interrogation."""
        con, ca = self._con, self.config.common_address
        assert con is not None
        if self.config.clock_sync:
            await self._request(
                "clock synchronisation",
                "clock_syncs",
                "C_CS_NA_1",
                lambda: con.clock_sync(common_address=ca, wait_for_response=False),
                needs_term=False,
            )
        await self._interrogate()

    async def _interrogate(self) -> None:
        con, ca = self._con, self.config.common_address
        assert con is not None
        await self._request(
            "general interrogation",
            "interrogations",
            "C_IC_NA_1",
            lambda: con.interrogation(common_address=ca, wait_for_response=False),
            needs_term=True,
        )
        if self._has_counters:
            await self._request(
                "counter interrogation",
                "counter_interrogations",
                "C_CI_NA_1",
                lambda: con.counter_interrogation(common_address=ca, wait_for_response=False),
                needs_term=True,
            )


def _release_after(lock: asyncio.Lock, fut: "asyncio.Future[bool]") -> None:
    """Done-callback: release a point's command lock once c104's transmit returned."""
    if not fut.cancelled():
        fut.exception()  # retrieved: the outcome was already decided from the frames
    lock.release()


def _type_id(type_name: str) -> int:
    """The IEC 60870-5-101 type identification number of a type name."""
    return int(getattr(c104.Type, type_name))
