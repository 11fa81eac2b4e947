"""IEC 60870-5-101 (DL/T 634.5101) south driver: our primary station on a serial line or TCP tunnel.

Hand-written on our sans-IO codec (gateway.codecs.iec101): no maintained Python library speaks
IEC 101.

Theory of operation
-------------------
One supervisor task owns the link::

    open the link URL (serial://... via pyserial, tcp://... to a serial server)
        | failed: back off (reconnect_min_s doubling to reconnect_max_s), open again
        v
    session: a link machine (UnbalancedPrimary, or BalancedLink as controlling station)
        reader task: bytes -> machine.receive_data(now), wake the session loop
        session loop: write machine.bytes_to_send(), handle machine events, sleep until the
                      machine's deadline or a wake-up, then machine.timeout(now)
        | end of stream or transport error: close, mark points not topical, back off ...

All of it runs on the event loop thread; the machine is never touched from anywhere else.

Events. LinkUp (the outstation answered the status request and acknowledged the link reset):
the driver is connected and initialises the station: clock synchronisation (C_CS_NA_1, if
configured), general interrogation (C_IC_NA_1, QOI 20) and counter interrogation (C_CI_NA_1, if
counters are mapped), then repeats the interrogations every interrogation_period_s if set.
LinkDown (no answer after the configured retries, each repeating the same FCB): not connected,
every monitored point is marked not topical (last values kept); the machine keeps requesting
the link status and a later LinkUp refreshes everything by interrogation. An end of
initialisation (M_EI_NA_1) after the initialisation is done means the outstation restarted:
initialise again.

User data. Each ASDU is decoded with the configured COT / common address / IOA sizes. Monitor
objects become Samples through the point map (value = raw * scale + offset; bool and int raw
values stay as they are with scale 1 and offset 0; quality from SIQ/DIQ/QDS via
model.quality.from_iec104; the CP56Time2a time tag, or the CP24Time2a tag completed with the
current hour, as the sample time, else the receive time), one sink.apply per ASDU. A point
configured M_ME_NC_1 also accepts M_ME_TC_1 / M_ME_TF_1 (same information, other time tagging).
Confirmations (COT 7 ACT_CON, 9 DEACT_CON, 10 ACT_TERM, and the negative mirrors 44..47) go to
the request waiting for them, keyed by type identification and IOA.

Commands. execute() converts the model value to the wire value (raw = (value - offset) / scale,
range-checked for the type: SetpointRangeError, nothing sent), then sends the command with COT 6
(activation). With select-before-operate: select (S/E = 1), wait for its ACT_CON (SELECTED is
reported as it is handled, in wire order with the samples), then execute (S/E = 0), whose
ACT_CON reports SENT. A negative confirmation raises DeviceError naming the phase; no
confirmation within command_timeout_ms raises DeviceError; a link that is or goes down raises
LinkDown. ACT_TERM is not required.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from gateway.codecs.iec101 import (
    ASDU,
    ASDUError,
    AsduParams,
    BalancedLink,
    Bitstring,
    BitstringCommand,
    Cause,
    ClockSync,
    CounterInterrogation,
    CP24Time2a,
    CP56Time2a,
    DataRejected,
    DoubleCommand,
    DoublePoint,
    EndOfInitialisation,
    Event,
    InformationObject,
    IntegratedTotal,
    Interrogation,
    LinkUp,
    LocalProtocolError,
    Normalized,
    RegulatingStep,
    Scaled,
    SetpointFloat,
    SetpointNormalized,
    SetpointScaled,
    ShortFloat,
    SingleCommand,
    SinglePoint,
    StepPosition,
    TypeID,
    UnbalancedPrimary,
    UserData,
    decode_asdu,
    encode_asdu,
)
from gateway.codecs.iec101 import (
    LinkDown as LinkDownEvent,
)
from gateway.errors import DeviceError, DriverError, LinkDown
from gateway.south.base import Report, SampleSink, SouthDriver
from gateway.transports.stream import ByteStream, TransportError, open_stream
from model.command import Command, CommandState
from model.drivers_iec101 import IEC101DriverConfig, IEC101PointMap
from model.quality import IEC104Flags, from_iec104
from model.sample import Sample, Value

__all__ = ["IEC101Driver", "SetpointRangeError", "command_object", "family"]

log = logging.getLogger(__name__)

_QDS_MASK = IEC104Flags.IV | IEC104Flags.NT | IEC104Flags.SB | IEC104Flags.BL | IEC104Flags.OV
_QDS_TO_QUALITY = tuple(from_iec104(f & _QDS_MASK) for f in range(256))
_OPEN_TIMEOUT_S = 5.0
_NEGATIVE_MIRRORS = {
    Cause.UNKNOWN_TYPE,
    Cause.UNKNOWN_CAUSE,
    Cause.UNKNOWN_COMMON_ADDRESS,
    Cause.UNKNOWN_IOA,
}

_ME_FAMILY = {
    "NA": "ME_NA", "TA": "ME_NA", "TD": "ME_NA", "ND": "ME_NA",
    "NB": "ME_NB", "TB": "ME_NB", "TE": "ME_NB",
    "NC": "ME_NC", "TC": "ME_NC", "TF": "ME_NC",
}  # fmt: skip


def family(type_name: str) -> str:
    """Information kind shared by a type and its time-tagged variants (M_ME_NC_1 ~ M_ME_TF_1)."""
    kind = type_name[2:4]
    if kind == "ME":
        return _ME_FAMILY[type_name[5:7]]
    return kind


class SetpointRangeError(DeviceError, ValueError):
    """A command value cannot be represented in the IEC 101 type of its point."""


def command_object(pm: IEC101PointMap, value: Value, select: bool = False) -> InformationObject:
    """The information object carrying a model value to a command point; SetpointRangeError if none."""
    t = pm.type
    kind = t[2:4]
    where = f"{t} at IOA {pm.ioa} ({pm.point})"
    ioa = pm.ioa
    if kind in ("SC", "DC", "RC") and isinstance(value, bool):
        if kind == "SC":
            return SingleCommand(ioa, value, select)
        cls = DoubleCommand if kind == "DC" else RegulatingStep
        return cls(ioa, 2 if value else 1, select)
    raw = (float(value) - pm.offset) / pm.scale
    if not math.isfinite(raw):
        raise SetpointRangeError(f"{where}: value {value!r} is not a finite number")
    if kind == "SC":
        return SingleCommand(ioa, raw != 0.0, select)
    if kind in ("DC", "RC"):
        r = round(raw)
        if r not in (1, 2) or abs(raw - r) > 1e-9:
            what = "1 (off) or 2 (on)" if kind == "DC" else "1 (lower) or 2 (higher)"
            raise SetpointRangeError(f"{where}: raw value {raw:g} must be {what}")
        return (DoubleCommand if kind == "DC" else RegulatingStep)(ioa, r, select)
    if t == "C_SE_NA_1":
        # 7.2.6.6 NVA: normalized value, -1 .. +1 - 2^-15.
        if not -1.0 <= raw <= 1.0:
            raise SetpointRangeError(
                f"{where}: normalised value {raw:g} (from {value!r}) is outside -1..1"
            )
        return SetpointNormalized(ioa, raw, select)
    if t == "C_SE_NB_1":
        # 7.2.6.7 SVA: scaled value, a 16-bit signed integer.
        r = round(raw)
        if not -32768 <= r <= 32767:
            raise SetpointRangeError(
                f"{where}: scaled value {r} (from {value!r}) is outside -32768..32767"
            )
        return SetpointScaled(ioa, r, select)
    if t == "C_SE_NC_1":
        if abs(raw) > 3.4028234663852886e38:
            raise SetpointRangeError(f"{where}: {raw:g} does not fit a short float")
        return SetpointFloat(ioa, raw, select)
    if kind == "BO":
        r = round(raw)
        if not 0 <= r <= 0xFFFFFFFF:
            raise SetpointRangeError(f"{where}: bitstring {r} is outside 0..2^32-1")
        if select:
            raise SetpointRangeError(f"{where}: C_BO_NA_1 has no select/execute qualifier")
        return BitstringCommand(ioa, r)
    raise SetpointRangeError(f"{where}: unsupported command type")


@dataclass(frozen=True, slots=True)
class _Mon:
    """A monitored IOA: where its value goes and how it is scaled."""

    ref: str
    scale: float
    offset: float
    identity: bool
    family: str
    type_name: str


class _Watch:
    """Confirmations of one request in flight (a command, an interrogation, a clock sync)."""

    __slots__ = (
        "con",
        "lost",
        "negative",
        "reason",
        "report",
        "sbo",
        "selected",
        "sent",
        "term",
        "what",
    )

    def __init__(self, what: str, report: Report | None = None, sbo: bool = False) -> None:
        self.what = what
        self.report = report
        self.sbo = sbo
        self.con = asyncio.Event()  # ACT_CON / DEACT_CON (or a negative mirror) seen
        self.term = asyncio.Event()  # ACT_TERM seen
        self.negative = False
        self.lost = False  # the link went down while waiting
        self.reason = ""
        self.selected = self.sent = False

    def on(self, cot: int, negative: bool, select: bool) -> None:
        """An ASDU for this request arrived (runs in wire order, before later samples)."""
        if cot in (Cause.ACTIVATION_CON, Cause.DEACTIVATION_CON):
            if negative:
                self.negative = True
                self.reason = "negative confirmation"
            elif self.report is not None:
                if select and self.sbo:
                    if not self.selected:
                        self.selected = True
                        self.report(CommandState.SELECTED, f"{self.what}: select confirmed")
                elif not self.sent:
                    self.sent = True
                    self.report(CommandState.SENT, f"{self.what}: execute confirmed")
            self.con.set()
        elif cot == Cause.ACTIVATION_TERMINATION:
            self.term.set()
        elif cot in _NEGATIVE_MIRRORS:
            self.negative = True
            self.reason = Cause(cot).name.lower().replace("_", " ")
            self.con.set()
            self.term.set()

    def fail_link(self) -> None:
        self.lost = True
        self.con.set()
        self.term.set()


def _value_of(o: InformationObject) -> tuple[Value, int]:
    """(raw value, QDS-style flags) of a monitor object."""
    if isinstance(o, ShortFloat | Normalized):
        return o.value, o.quality
    if isinstance(o, Scaled | SinglePoint | DoublePoint | StepPosition | Bitstring):
        return o.value, o.quality
    if isinstance(o, IntegratedTotal):
        flags = (IEC104Flags.IV if o.invalid else 0) | (IEC104Flags.OV if o.carry else 0)
        return o.value, flags
    raise TypeError(f"not a monitor object: {o!r}")


def _time_of(o: InformationObject, now: float) -> float:
    t = getattr(o, "time", None)
    if t is None:
        return now
    if isinstance(t, CP56Time2a):
        if t.invalid:
            return now
        try:
            return t.to_epoch()
        except ValueError:
            return now
    if isinstance(t, CP24Time2a) and not t.invalid and t.minute < 60 and t.millisecond < 60000:
        return t.resolve(now)
    return now


class IEC101Driver(SouthDriver):
    """An IEC 60870-5-101 outstation acquired and commanded by our primary station."""

    protocol = "iec101"

    def __init__(self, config: IEC101DriverConfig, sink: SampleSink) -> None:
        super().__init__(config.id, sink)
        self.config = config
        self.source = f"iec101:{config.id}"
        self.params = AsduParams(config.cot_size, config.ca_size, config.ioa_size)
        self._mon: dict[int, _Mon] = {}
        self._cmd: dict[str, IEC101PointMap] = {}
        for p in config.points:
            if p.is_command:
                self._cmd[p.point] = p
            else:
                identity = p.scale == 1.0 and p.offset == 0.0
                self._mon[p.ioa] = _Mon(
                    p.point, p.scale, p.offset, identity, family(p.type), p.type
                )
        self._monitored = frozenset(m.ref for m in self._mon.values())
        self._has_counters = any(m.family == "IT" for m in self._mon.values())
        self._machine: UnbalancedPrimary | BalancedLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._init_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._connected = False
        self._topical = False
        self._stopping = False
        self._watches: dict[tuple[int, int], _Watch] = {}
        self._cmd_locks: dict[int, asyncio.Lock] = {}
        self._logged: set[tuple[str, int]] = set()
        self._last_link: dict[str, int] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "opens",
                "open_failures",
                "connects",
                "reconnects",
                "link_losses",
                "samples",
                "asdus",
                "bad_asdus",
                "interrogations",
                "counter_interrogations",
                "clock_syncs",
                "commands",
                "commands_failed",
                "errors",
                "unknown_ioa",
                "unknown_ca",
                "type_mismatches",
                "restarts",
            ),
            0,
        )

    # --- SouthDriver ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the link is up (the outstation acknowledged the link reset)."""
        return self._connected

    def monitored_points(self) -> set[str]:
        """Model points fed by monitor-direction IOAs."""
        return set(self._monitored)

    def command_points(self) -> set[str]:
        """Model points written through control-direction IOAs."""
        return set(self._cmd)

    def stats(self) -> dict[str, Any]:
        """Counters, link-layer counters and link state."""
        out = super().stats()
        out.update(self.counters)
        m = self._machine
        link = m.counters() if m is not None else self._last_link
        out.update({f"link_{k}": v for k, v in link.items()})
        out["state"] = m.state.value if m is not None else "closed"
        out["peer"] = self.config.link
        return out

    async def start(self) -> None:
        """Start the supervisor; returns at once."""
        if self._task is not None:
            return
        self._stopping = False
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"iec101-{self.id}"
        )

    async def stop(self) -> None:
        """Close the link, mark points not topical; idempotent."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._link_lost("driver stopped", announce=False)

    async def execute(self, cmd: Command, report: Report) -> None:
        """Send a command; report SELECTED (select-before-operate) and SENT on confirmation."""
        pm = self._cmd.get(cmd.target)
        if pm is None:
            raise DriverError(f"driver {self.id}: {cmd.target!r} is not one of its command points")
        sbo = pm.select_before_operate or cmd.select_before_operate
        obj = command_object(pm, cmd.value, select=False)
        if sbo and isinstance(obj, BitstringCommand):
            raise SetpointRangeError(
                f"{pm.type} at IOA {pm.ioa}: C_BO_NA_1 has no select-before-operate"
            )
        if not self._connected:
            raise LinkDown(
                f"driver {self.id}: link {self.config.link} is down; {pm.type} to IOA {pm.ioa} not sent"
            )
        tid = TypeID[pm.type]
        target = f"{pm.type} to IOA {pm.ioa} ({pm.point} = {cmd.value!r})"
        lock = self._cmd_locks.setdefault(pm.ioa, asyncio.Lock())
        async with lock:
            self._count("commands")
            w = _Watch(f"{pm.type} IOA {pm.ioa}", report, sbo)
            key = (int(tid), pm.ioa)
            self._watches[key] = w
            try:
                if sbo:
                    sel = command_object(pm, cmd.value, select=True)
                    await self._phase(w, tid, sel, target, "select")
                    w.con.clear()
                await self._phase(w, tid, obj, target, "execute")
            except DriverError:
                self._count("commands_failed", "errors")
                raise
            finally:
                if self._watches.get(key) is w:
                    del self._watches[key]

    async def _phase(
        self, w: _Watch, tid: TypeID, obj: InformationObject, target: str, phase: str
    ) -> None:
        self._send(ASDU(tid, Cause.ACTIVATION, self.config.common_address, (obj,)), target)
        timeout = self.config.command_timeout_ms / 1000.0
        try:
            async with asyncio.timeout(timeout):
                await w.con.wait()
        except TimeoutError:
            raise DeviceError(
                f"driver {self.id}: no {phase} confirmation of {target} within "
                f"{self.config.command_timeout_ms} ms"
            ) from None
        if w.lost:
            raise LinkDown(f"driver {self.id}: link lost while sending {target}")
        if w.negative:
            raise DeviceError(
                f"driver {self.id}: outstation refused {target}: negative {phase} confirmation"
                + (f" ({w.reason})" if w.reason != "negative confirmation" else "")
            )

    # --- sending --------------------------------------------------------------------------------

    def _send(self, asdu: ASDU, what: str) -> None:
        """Queue an ASDU on the link; LinkDown if the link is down, DeviceError if it cannot go."""
        m = self._machine
        if m is None or not self._connected:
            raise LinkDown(f"driver {self.id}: link {self.config.link} is down; {what} not sent")
        try:
            data = encode_asdu(
                dataclasses.replace(asdu, originator=self.config.originator_address), self.params
            )
            m.send(data, asyncio.get_running_loop().time())
        except LocalProtocolError as e:
            raise DeviceError(f"driver {self.id}: cannot send {what}: {e}") from e
        if self._wake is not None:
            self._wake.set()

    async def _request(self, what: str, counter: str, asdu: ASDU, needs_term: bool) -> bool:
        """A station request confirmed by ACT_CON (and ACT_TERM); True if it was."""
        w = _Watch(what)
        key = (int(asdu.type_id), asdu.objects[0].ioa)
        self._watches[key] = w
        try:
            self._send(asdu, what)
            timeout = self.config.command_timeout_ms / 1000.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await (w.term if needs_term else w.con).wait()
        except DriverError as e:
            log.warning("%s: %s failed: %s", self.id, what, e)
            self._count("errors")
            return False
        finally:
            if self._watches.get(key) is w:
                del self._watches[key]
        if w.lost:
            return False
        if w.negative or not (w.term if needs_term else w.con).is_set():
            self._count("errors")
            log.warning("%s: %s %s", self.id, what, "refused" if w.negative else "not confirmed")
            return False
        self._count(counter)
        return True

    async def _initialise(self) -> None:
        """After LinkUp: clock sync, general (and counter) interrogation, then periodically."""
        cfg = self.config
        ca = cfg.common_address
        if cfg.clock_sync:
            clock = CP56Time2a.from_epoch(time.time())
            await self._request(
                "clock synchronisation",
                "clock_syncs",
                ASDU(TypeID.C_CS_NA_1, Cause.ACTIVATION, ca, (ClockSync(0, clock),)),
                needs_term=False,
            )
        while True:
            await self._interrogate()
            if cfg.interrogation_period_s <= 0:
                return
            await asyncio.sleep(cfg.interrogation_period_s)

    async def _interrogate(self) -> None:
        ca = self.config.common_address
        await self._request(
            "general interrogation",
            "interrogations",
            ASDU(TypeID.C_IC_NA_1, Cause.ACTIVATION, ca, (Interrogation(0, 20),)),
            needs_term=True,
        )
        if self._has_counters:
            await self._request(
                "counter interrogation",
                "counter_interrogations",
                ASDU(TypeID.C_CI_NA_1, Cause.ACTIVATION, ca, (CounterInterrogation(0, 5, 0),)),
                needs_term=True,
            )

    # --- supervisor and session -----------------------------------------------------------------

    async def _supervise(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min_s
        while not self._stopping:
            try:
                stream = await open_stream(cfg.link, timeout=_OPEN_TIMEOUT_S)
            except TransportError as e:
                self._count("open_failures")
                log.debug("%s: %s", self.id, e)
            else:
                self._count("opens")
                try:
                    if await self._session(stream):
                        delay = cfg.reconnect_min_s
                except asyncio.CancelledError:
                    raise
                except TransportError as e:
                    log.warning("%s: %s", self.id, e)
                except Exception:  # never let the supervisor die: count, log, reopen
                    self._count("errors")
                    log.exception("%s: link session failed", self.id)
                finally:
                    await stream.close()
                    self._link_lost(f"link {cfg.link} closed")
            await asyncio.sleep(delay)
            delay = min(delay * 2.0, cfg.reconnect_max_s)

    def _new_machine(self) -> UnbalancedPrimary | BalancedLink:
        cfg = self.config
        timeout = cfg.response_timeout_ms / 1000.0
        if cfg.mode == "balanced":
            return BalancedLink(
                cfg.link_address,
                address_size=cfg.link_address_size,
                controlling=True,
                response_timeout=timeout,
                retries=cfg.retries,
                reconnect_interval=cfg.reconnect_min_s,
                test_interval=cfg.test_interval_s,
            )
        return UnbalancedPrimary(
            cfg.link_address,
            address_size=cfg.link_address_size,
            response_timeout=timeout,
            retries=cfg.retries,
            class1_interval=cfg.class1_poll_s,
            class2_interval=cfg.class2_poll_s,
            reconnect_interval=cfg.reconnect_min_s,
        )

    async def _session(self, stream: ByteStream) -> bool:
        """Run the link machine over an open stream until it ends; True if the link came up."""
        loop = asyncio.get_running_loop()
        wake = self._wake
        assert wake is not None
        m = self._new_machine()
        self._machine = m
        came_up = False
        reader = loop.create_task(self._reader(stream, m, wake), name=f"iec101-{self.id}-rx")
        try:
            m.start(loop.time())
            while True:
                wake.clear()
                while True:
                    ev = m.next_event()
                    while ev is not None:
                        came_up |= isinstance(ev, LinkUp)
                        self._on_event(ev)
                        ev = m.next_event()
                    out = m.bytes_to_send()
                    if not out:
                        break
                    await stream.write(out)
                if reader.done():
                    reader.result()  # a TransportError ends the session here
                    log.info("%s: link %s closed by the peer", self.id, self.config.link)
                    return came_up
                dl = m.deadline
                # (At least 1 ms: never spin on a deadline the machine cannot act on yet.)
                timeout = None if dl is None else max(0.001, dl - loop.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await wake.wait()
                m.timeout(loop.time())
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, TransportError):
                await reader
            self._last_link = m.counters()
            self._machine = None

    async def _reader(
        self, stream: ByteStream, m: UnbalancedPrimary | BalancedLink, wake: asyncio.Event
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await stream.read(4096)
                if not data:
                    return
                m.receive_data(data, loop.time())
                wake.set()
        finally:
            wake.set()

    # --- events ---------------------------------------------------------------------------------

    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, UserData):
            self._on_asdu(ev.data)
        elif isinstance(ev, LinkUp):
            self._connected = True
            self._count("connects")
            if self.counters["connects"] > 1:
                self._count("reconnects")
            log.info("%s: link to %s up", self.id, self.config.link)
            self._start_init()
        elif isinstance(ev, LinkDownEvent):
            log.warning("%s: link to %s down: %s", self.id, self.config.link, ev.reason)
            self._link_lost(ev.reason)
        elif isinstance(ev, DataRejected):
            self._count("errors")
            try:
                asdu = decode_asdu(ev.data, self.params)
            except ASDUError:
                return
            w = self._watches.get((int(asdu.type_id), asdu.objects[0].ioa if asdu.objects else 0))
            if w is not None:
                w.negative = True
                w.reason = f"link layer: {ev.reason}"
                w.con.set()
                w.term.set()
        # LinkReset / ProcessReset: the peer's primary side (balanced); nothing to do.

    def _start_init(self) -> None:
        if self._init_task is not None and not self._init_task.done():
            self._init_task.cancel()
        self._init_task = asyncio.get_running_loop().create_task(
            self._initialise(), name=f"iec101-{self.id}-init"
        )

    def _link_lost(self, reason: str, announce: bool = True) -> None:
        was = self._connected
        self._connected = False
        if self._init_task is not None:
            self._init_task.cancel()
            self._init_task = None
        for w in list(self._watches.values()):
            w.fail_link()
        if was and announce:
            self._count("link_losses")
        if was or self._topical:
            self._topical = False
            if self._monitored:
                try:
                    self.sink.mark_not_topical(self._monitored, source=self.source)
                except Exception:
                    self._count("errors")
                    log.exception("%s: sink.mark_not_topical failed", self.id)

    def _on_asdu(self, data: bytes) -> None:
        try:
            asdu = decode_asdu(data, self.params)
        except ASDUError as e:
            self._count("bad_asdus", "errors")
            log.warning("%s: bad ASDU %s: %s", self.id, data.hex(" "), e)
            return
        self._count("asdus")
        ca = asdu.common_address
        if ca != self.config.common_address and ca != (1 << (8 * self.params.ca_size)) - 1:
            self._count("unknown_ca")
            return
        tid = asdu.type_id
        if tid >= TypeID.C_SC_NA_1 and tid != TypeID.M_EI_NA_1:
            self._on_confirmation(asdu)
            return
        if tid == TypeID.M_EI_NA_1:
            if self._init_task is not None and self._init_task.done() and self._connected:
                o = asdu.objects[0] if asdu.objects else None
                cause = o.cause if isinstance(o, EndOfInitialisation) else -1
                log.info(
                    "%s: outstation initialised (cause %s): interrogating again", self.id, cause
                )
                self._count("restarts")
                self._start_init()
            return
        now = time.time()
        samples: list[Sample] = []
        fam = family(tid.name)
        for o in asdu.objects:
            m = self._mon.get(o.ioa)
            if m is None:
                self._count("unknown_ioa")
                continue
            if m.family != fam:
                self._count("type_mismatches", "errors")
                if ("type", o.ioa) not in self._logged:
                    self._logged.add(("type", o.ioa))
                    log.warning(
                        "%s: IOA %s sends %s but is configured as %s: ignored",
                        self.id,
                        o.ioa,
                        tid.name,
                        m.type_name,
                    )
                continue
            try:
                raw, flags = _value_of(o)
            except TypeError:
                self._count("type_mismatches", "errors")
                continue
            value: Value = raw if m.identity else raw * m.scale + m.offset
            samples.append(
                Sample(m.ref, value, _time_of(o, now), _QDS_TO_QUALITY[flags & 0xFF], self.source)
            )
        if samples:
            self._count("samples", n=len(samples))
            self._topical = True
            try:
                self.sink.apply(samples)
            except Exception:
                self._count("errors")
                log.exception("%s: sink rejected %d samples", self.id, len(samples))

    def _on_confirmation(self, asdu: ASDU) -> None:
        if not asdu.objects:
            return
        o = asdu.objects[0]
        w = self._watches.get((int(asdu.type_id), o.ioa))
        if w is None:
            log.debug(
                "%s: %s COT %s for IOA %s: nobody waits",
                self.id,
                asdu.type_id.name,
                asdu.cot,
                o.ioa,
            )
            return
        w.on(asdu.cot, asdu.negative, bool(getattr(o, "select", False)))

    def _count(self, *keys: str, n: int = 1) -> None:
        for k in keys:
            self.counters[k] += n
