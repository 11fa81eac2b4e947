"""IEC 60870-5-104 server for dispatch (D5000) and load-control systems, on c104.Server.

No ``from __future__ import annotations`` here: c104 checks every callback against its exact
signature, type hints included, and string annotations fail that check.

Each VPP is one station (common address) that looks like a plant: aggregate P and Q, available
up/down capacity and energy, ramp rate, targets in force, AGC/AVC mode, DR state and energy
counters; optionally every resource's telemetry. The table comes from
model.north_iec104.build_point_table (deterministic from the config and the site file).

Theory of operation
-------------------
Monitor direction (loop thread only). One task takes the twin's change sets from a bounded
subscription. Every sample of a table point updates that point's c104 information at once (so
a general or counter interrogation, which c104 answers by itself from the points, always sees
the present value) and, if it moved by at least the point's deadband since it was last sent
(or its quality changed), marks it for spontaneous transmission. Marked points wait in an
ordered set until they go out; a point that changes again meanwhile is sent once, with its
latest value (coalescing). A gap in the change-set sequence (the subscription dropped some)
makes the server re-read every point from the twin.

Pacing. c104 keeps ~100 outgoing messages per connection and silently overwrites the oldest
when full (transmit still returns True). So we count: every spontaneous/periodic/background
message we enqueue counts once per active connection, and every such I-frame c104 writes to a
socket (seen through on_send_raw) counts as drained. Only while the difference is below
`max_queued_messages` do we hand c104 more, grouped per type into c104.Batch messages of up to
`batch_size` objects. When the active connection count changes the count restarts from zero.
Periodic (COT 1) and background-scan (COT 2) messages use what the spontaneous ones leave.

Control direction. c104 answers select by itself for points in SELECT_AND_EXECUTE mode and
refuses an execute that was not selected; the select never reaches Python, so every check runs
at execute, in c104's thread (``_on_command``): known point, value type, time tag within
`command_max_age_s` (c104 does not check freshness), range, AGC/AVC mode, repeat of a
time-tagged command already executed. What passes goes to the loop
(run_coroutine_threadsafe) and the callback waits for the answer, bounded: the loop splits a
VPP target over its resources (control.dispatch), checks every resource command with the
command path and only then submits them (origin "iec104"), so a refusal sends nothing. The
callback's SUCCESS/FAILURE is the positive/negative ACT_CON. c104 holds no lock across a
Python callback that the loop's own c104 calls need (checked: transmit_batch returns at once
while a command callback waits), and the wait is bounded anyway (_CALLBACK_WAIT_S).

Clock synchronisation (C_CS_NA_1) is accepted; the host clock is not set (that is the OS's
job): the offset to the master's clock is kept and used to judge time-tag freshness.
Group interrogation is not offered: c104 2.2.1 answers every group request (QOI 21..36)
negatively by itself (Umc.UNIMPLEMENTED_GROUP) and has no hook to answer it.
"""

import asyncio
import concurrent.futures
import contextlib
import datetime
import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import c104

from control.dispatch import capacities, input_refs, split_target
from gateway.commands import CommandPath
from gateway.errors import CommandRejected, GatewayError
from model.command import Command
from model.natures import ResourceKind, Role
from model.north_iec104 import (
    IEC104ServerConfig,
    IEC104TableEntry,
    IEC104TLSConfig,
    PointFunction,
    build_point_table,
)
from model.quality import GOOD, VALIDITY_MASK, IEC104Flags, Validity, to_iec104
from model.resources import VPPConfig, plant_ref
from model.sample import Sample, Value
from model.site import SiteConfig
from security.rbac import iec104_rule
from security.users import Role as UserRole
from twin.twin import Twin

__all__ = ["IEC104Server", "IEC104ServerError"]

log = logging.getLogger(__name__)

_COT_PERIODIC, _COT_BACKGROUND, _COT_SPONT = 1, 2, 3
_PACED_COTS = frozenset({_COT_PERIODIC, _COT_BACKGROUND, _COT_SPONT})
_CALLBACK_WAIT_S = 3.0  # bound on c104's thread waiting for the loop to decide a command
_ENERGY_TICK_S = 1.0
_STALL_S = 5.0  # no frame drained for this long while messages are counted: recount
_INT31 = 2**31
_INVALID = int(Validity.INVALID)  # IEC 61850 quality: validity invalid, no detail


class IEC104ServerError(GatewayError):
    """The IEC 104 server cannot start or was misconfigured."""


class _Refused(Exception):
    """A command the server answers with a negative confirmation."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(slots=True, eq=False)
class _Mon:
    """A monitor-direction entry with its c104 point and what was set and sent."""

    entry: IEC104TableEntry
    point: c104.Point
    family: str  # SP, DP, NA, NB, NC, IT
    tagged: bool
    value: Value | None = None  # model value last set into the point
    quality: int = -1  # IEC 61850 quality last set
    ts: float = 0.0
    raw: Any = None
    qds: int = -1  # QDS last set into the point's information
    sent_value: float | None = None  # model value last sent spontaneously (deadband reference)
    sent_qds: int = -1


@dataclass(slots=True)
class _VPPState:
    """What the server itself keeps per VPP: modes, targets, DR, energy counters."""

    vpp: VPPConfig
    agc_on: bool
    avc_on: bool
    dr_active: bool = False
    dr_saved: dict[str, float] = field(default_factory=dict)
    p_target: float | None = None
    q_target: float | None = None
    e_sup_kwh: float = 0.0
    e_dmd_kwh: float = 0.0
    p_last: float | None = None
    p_since: float = 0.0


def _family(type_name: str) -> str:
    kind = type_name[2:4]
    if kind == "ME":
        return {"A": "NA", "D": "NA", "B": "NB", "E": "NB"}.get(type_name[6], "NC")
    return kind


def _local_naive(ts: float) -> datetime.datetime:
    # c104 takes naive datetimes as local time and puts them on the wire as UTC CP56Time2a.
    return datetime.datetime.fromtimestamp(ts)


class IEC104Server:
    """The VPPs as plants on IEC 104: telemetry out, AGC/AVC/DR commands into the command path."""

    def __init__(
        self,
        config: IEC104ServerConfig,
        site: SiteConfig,
        twin: Twin,
        commands: CommandPath,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self._client_roles = {UserRole(c.role) for c in config.clients} or {UserRole.OPERATOR}
        self.site = site
        self.twin = twin
        self.commands = commands
        self._loop = loop
        self._table = build_point_table(config, site)
        self._vpps = {v.id: v for v in site.vpps}
        self._state = {
            v.id: _VPPState(v, config.initial_agc, config.initial_avc) for v in site.vpps
        }
        self._inputs = {v.id: sorted(input_refs(v)) for v in site.vpps}
        self._plant_p = {v.id: plant_ref(v.id, "p") for v in site.vpps}
        # Ramp and availability change with the resources online, energy with the plant's P:
        # both aggregates are twin points, so only they trigger _derive.
        self._vpp_of_input: dict[str, set[str]] = {}
        for v in site.vpps:
            for r in (plant_ref(v.id, "p"), plant_ref(v.id, "online")):
                self._vpp_of_input.setdefault(r, set()).add(v.id)
        self._server: c104.Server | None = None
        self._mons: list[_Mon] = []
        self._by_ref: dict[str, list[_Mon]] = {}
        self._by_fn: dict[tuple[str, PointFunction], list[_Mon]] = {}
        self._cmds: dict[tuple[int, int], IEC104TableEntry] = {}
        self._spont: OrderedDict[int, _Mon] = OrderedDict()  # id(mon) -> mon, waiting to go out
        self._scan: list[tuple[int, _Mon]] = []  # (cot, mon) periodic / background, in order
        self._sub: Any = None
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._executed: OrderedDict[tuple[Any, ...], None] = OrderedDict()
        self._clock_offset = 0.0
        self._clock_synced = False
        # Pacing counters: `_drained` is written by c104's thread only, the rest by the loop.
        self._enqueued = 0
        self._drained = 0
        self._drained_seen = 0
        self._last_drain = 0.0
        self._active = 0
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "messages",
                "values_sent",
                "coalesced",
                "resyncs",
                "paced_waits",
                "commands_accepted",
                "commands_refused",
                "commands_repeated",
                "resource_commands",
                "clock_syncs",
                "connections_refused",
            ),
            0,
        )
        self.refusals: dict[str, int] = {}

    # --- public ---------------------------------------------------------------------------

    def point_table(self) -> list[IEC104TableEntry]:
        """The server's point table, ordered by common address and IOA."""
        return list(self._table)

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._task is not None

    def state(self, vpp_id: str) -> dict[str, Any]:
        """Modes, targets, DR state and energy counters of one VPP."""
        s = self._state[vpp_id]
        return {
            "agc_on": s.agc_on,
            "avc_on": s.avc_on,
            "dr_active": s.dr_active,
            "p_target": s.p_target,
            "q_target": s.q_target,
            "energy_delivered_kwh": s.e_sup_kwh,
            "energy_absorbed_kwh": s.e_dmd_kwh,
        }

    def stats(self) -> dict[str, Any]:
        """Counters, connections, queue estimate and clock offset."""
        srv = self._server
        out: dict[str, Any] = dict(self.counters)
        out["refusals"] = dict(self.refusals)
        out["connections"] = srv.open_connection_count if srv is not None else 0
        out["active_connections"] = srv.active_connection_count if srv is not None else 0
        out["queued_estimate"] = self._enqueued - self._drained
        out["waiting"] = len(self._spont)
        out["clock_offset_s"] = self._clock_offset if self._clock_synced else None
        return out

    async def start(self) -> None:
        """Build the c104 server, fill every point from the twin, listen, start sending."""
        if self._task is not None:
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="iec104-server")
        self._build()
        self._sub = self.twin.subscribe("iec104-server")
        self._seq = self.twin.seq
        self._refresh_all()
        for s in self._state.values():
            self._update_server_points(s)
        self._set_all_points()
        assert self._server is not None
        try:
            await self._loop.run_in_executor(self._pool, self._server.start)
        except RuntimeError as e:
            self.twin.unsubscribe(self._sub)
            raise IEC104ServerError(
                f"IEC 104 server cannot listen on {self.config.host}:{self.config.port}: {e}"
            ) from e
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="iec104-server")
        log.info(
            "IEC 104 server on %s:%s: %d points, %d VPPs%s",
            self.config.host,
            self.config.port,
            len(self._table),
            len(self._vpps),
            " (TLS)" if self.config.tls else "",
        )

    async def stop(self) -> None:
        """Stop sending, close every connection and the listening socket; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._sub is not None:
            self.twin.unsubscribe(self._sub)
            self._sub = None
        srv, self._server = self._server, None
        if srv is not None and self._loop is not None and self._pool is not None:
            await self._loop.run_in_executor(self._pool, srv.stop)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    # --- building -------------------------------------------------------------------------

    def _build(self) -> None:
        cfg = self.config
        tls = _transport_security(cfg.tls) if cfg.tls is not None else None
        srv = c104.Server(
            ip=cfg.host,
            port=cfg.port,
            tick_rate_ms=50,
            select_timeout_ms=cfg.select_timeout_ms,
            max_connections=cfg.max_connections,
            transport_security=tls,
        )
        pp = srv.protocol_parameters
        t = cfg.protocol
        pp.send_window_size = t.k
        pp.receive_window_size = t.w
        pp.connection_timeout = t.t0_s
        pp.message_timeout = t.t1_s
        pp.confirm_interval = t.t2_s
        pp.keep_alive_interval = t.t3_s
        srv.on_clock_sync(callable=self._on_clock_sync)
        srv.on_connect(callable=self._on_connect)
        srv.on_send_raw(callable=self._on_send_raw)
        stations: dict[int, c104.Station] = {}
        for e in self._table:
            st = stations.get(e.common_address)
            if st is None:
                st = srv.add_station(common_address=e.common_address)
                if st is None:
                    raise IEC104ServerError(f"c104 refused common address {e.common_address}")
                stations[e.common_address] = st
            mode = (
                c104.CommandMode.SELECT_AND_EXECUTE
                if e.select_before_operate
                else c104.CommandMode.DIRECT
            )
            kw: dict[str, Any] = {"command_mode": mode} if e.is_command else {}
            point = st.add_point(io_address=e.ioa, type=getattr(c104.Type, e.type), **kw)
            if point is None:
                raise IEC104ServerError(
                    f"c104 refused {e.type} at common address {e.common_address} IOA {e.ioa}"
                )
            if e.is_command:
                point.on_receive(callable=self._on_command)
                self._cmds[(e.common_address, e.ioa)] = e
                continue
            m = _Mon(e, point, _family(e.type), e.type[5] == "T")
            self._mons.append(m)
            if e.function == PointFunction.TWIN or e.point in self.twin:
                self._by_ref.setdefault(e.point, []).append(m)
            else:
                self._by_fn.setdefault((e.vpp, e.function), []).append(m)
        self._server = srv

    # --- monitor direction (loop thread) --------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        interval = cfg.send_interval_ms / 1000.0
        next_energy = loop.time() + _ENERGY_TICK_S
        next_periodic = loop.time() + cfg.periodic_s if cfg.periodic_s else math.inf
        next_background = loop.time() + cfg.background_s if cfg.background_s else math.inf
        sub = self._sub
        while True:
            waiting = bool(self._spont or self._scan)
            cs = await sub.get(timeout=interval if waiting else 0.25)
            try:
                touched: set[str] = set()
                if cs is not None:
                    for c in [cs, *sub.drain()]:
                        self._apply(c.seq, c.changes, touched)
                for vpp_id in touched:
                    self._derive(self._state[vpp_id])
                now = loop.time()
                if now >= next_energy:
                    next_energy = now + _ENERGY_TICK_S
                    for s in self._state.values():
                        self._integrate(s, None)
                        self._update_counters(s)
                if now >= next_periodic:
                    next_periodic = now + cfg.periodic_s
                    self._queue_scan(_COT_PERIODIC, lambda m: m.family in ("NA", "NB", "NC"))
                if now >= next_background:
                    next_background = now + cfg.background_s
                    self._queue_scan(_COT_BACKGROUND, lambda m: m.family != "IT")
                self._flush()
            except Exception:  # the server must outlive a bad value
                log.exception("IEC 104 server: update failed")
                await asyncio.sleep(interval)

    def _apply(self, seq: int, changes: tuple[Sample, ...], touched: set[str]) -> None:
        if seq != self._seq + 1:
            # The subscription dropped change sets: read everything again.
            self.counters["resyncs"] += 1
            self._seq = seq
            self._refresh_all()
            touched.update(self._state)
            return
        self._seq = seq
        by_ref, vpp_of = self._by_ref, self._vpp_of_input
        for s in changes:
            ms = by_ref.get(s[0])
            if ms is not None:
                for m in ms:
                    self._update(m, s[1], s[3], s[2])
            vs = vpp_of.get(s[0])
            if vs is not None:
                touched.update(vs)

    def _refresh_all(self) -> None:
        now = time.time()
        got = self.twin.read(self._by_ref)
        for ref, ms in self._by_ref.items():
            v, q = got.get(ref, (None, GOOD))
            if v is None:
                continue
            for m in ms:
                self._update(m, v, q, now)

    def _update(self, m: _Mon, value: Value, quality: int, ts: float) -> None:
        """Set a point's new value; mark it for spontaneous transmission beyond its deadband."""
        if value == m.value and quality == m.quality and type(value) is type(m.value):
            return
        m.value, m.quality, m.ts = value, quality, ts
        raw, qds = self._to_raw(m, value, quality)
        if raw == m.raw and qds == m.qds:
            return
        self._set_info(m, raw, qds)
        if m.family == "IT":
            return  # counters go out on counter interrogation
        if qds != m.sent_qds or m.sent_value is None or not isinstance(value, float):
            send = True
        else:
            db = m.entry.deadband
            send = abs(value - m.sent_value) >= db if db > 0 else value != m.sent_value
        if send:
            key = id(m)
            if key in self._spont:
                self.counters["coalesced"] += 1
            else:
                self._spont[key] = m

    def _to_raw(self, m: _Mon, value: Value, quality: int) -> tuple[Any, int]:
        qds = to_iec104(quality)
        fam = m.family
        if fam == "SP":
            return bool(value), qds
        if fam == "DP":
            return bool(value), qds
        v = float(value)
        if not math.isfinite(v):
            return 0.0, qds | IEC104Flags.IV
        r = v / m.entry.scale
        if fam == "NC":
            return r, qds
        if fam == "NA":
            top = 1.0 - 2.0**-15
            if not -1.0 <= r <= top:
                return min(max(r, -1.0), top), qds | IEC104Flags.OV
            return r, qds
        if fam == "NB":
            i = round(r)
            if not -32768 <= i <= 32767:
                return min(max(i, -32768), 32767), qds | IEC104Flags.OV
            return i, qds
        # IT: IEC 60870-5-101 7.2.6.9 BCR, a signed 32-bit count; CY set when it wrapped.
        i = math.floor(r)
        wrapped = (i + _INT31) % (2 * _INT31) - _INT31
        return wrapped, qds | (IEC104Flags.OV if wrapped != i else 0)

    def _set_info(self, m: _Mon, raw: Any, qds: int) -> None:
        """Put raw value and QDS into the c104 point (what interrogations answer from)."""
        point = m.point
        if qds == m.qds and not m.tagged and m.family in ("NC", "SP"):
            point.value = raw  # the cheap path: only the value changed
        else:
            point.info = self._info(m, raw, qds)
        m.raw, m.qds = raw, qds

    def _info(self, m: _Mon, raw: Any, qds: int) -> c104.Information:
        ts = _local_naive(m.ts + self._clock_offset) if m.tagged else None
        fam = m.family
        if fam == "IT":
            bcq: Any = c104.BinaryCounterQuality()
            if qds & IEC104Flags.IV:
                bcq = bcq | c104.BinaryCounterQuality.Invalid
            if qds & IEC104Flags.OV:
                bcq = bcq | c104.BinaryCounterQuality.Carry
            return c104.BinaryCounterInfo(
                counter=int(raw), sequence=c104.UInt5(0), quality=bcq, recorded_at=ts
            )
        # c104.Quality takes the QDS bits (IV 0x80, NT 0x40, SB 0x20, BL 0x10, OV 0x01).
        q = cast(Any, c104.Quality)(qds & 0xF1)
        if fam == "NC":
            return c104.ShortInfo(actual=float(raw), quality=q, recorded_at=ts)
        if fam == "NB":
            return c104.ScaledInfo(actual=c104.Int16(int(raw)), quality=q, recorded_at=ts)
        if fam == "NA":
            return c104.NormalizedInfo(
                actual=c104.NormalizedFloat(float(raw)), quality=q, recorded_at=ts
            )
        if fam == "SP":
            return c104.SingleInfo(on=bool(raw), quality=q, recorded_at=ts)
        state = c104.Double.ON if raw else c104.Double.OFF
        return c104.DoubleInfo(state=state, quality=q, recorded_at=ts)

    def _set_all_points(self) -> None:
        """Points with no value yet answer interrogations as invalid."""
        for m in self._mons:
            if m.qds < 0:
                m.point.info = self._info(m, 0, IEC104Flags.IV)
                m.qds = IEC104Flags.IV
            # What a master sees first comes from its interrogation: the deadband starts there.
            _mark_sent(m)
        self._spont.clear()

    def _queue_scan(self, cot: int, which: Any) -> None:
        if any(c == cot for c, _ in self._scan):
            return  # the previous round has not gone out yet
        self._scan.extend((cot, m) for m in self._mons if m.qds >= 0 and which(m))

    def _budget(self) -> int:
        """Messages c104 can take now without overwriting any (see Pacing above)."""
        srv = self._server
        if srv is None:
            return 0
        active = srv.active_connection_count
        now = time.monotonic()
        drained = self._drained
        if drained != self._drained_seen:
            self._drained_seen = drained
            self._last_drain = now
        if active != self._active or (
            self._enqueued > drained and now - self._last_drain > _STALL_S
        ):
            # Connections came or went (their queues are new or gone), or nothing drains:
            # restart the count.
            self._active = active
            self._enqueued = self._drained = self._drained_seen = 0
            self._last_drain = now
            drained = 0
        if active == 0:
            return 0
        # Sum of the per-connection backlogs: bounding the sum bounds each one.
        return self.config.max_queued_messages - (self._enqueued - drained)

    def _flush(self) -> None:
        """Send what waits, grouped per type, as far as c104's queue has room."""
        if not (self._spont or self._scan):
            return
        budget = self._budget()
        if budget <= 0:
            if self._active:
                self.counters["paced_waits"] += 1
            else:
                # No one listening: nothing to send spontaneously; interrogation will serve.
                for m in self._spont.values():
                    _mark_sent(m)
                self._spont.clear()
                self._scan.clear()
            return
        size = self.config.batch_size
        if self._spont:
            groups: dict[str, list[_Mon]] = {}
            for m in self._spont.values():
                groups.setdefault(m.entry.type, []).append(m)
            for ms in groups.values():
                for i in range(0, len(ms), size):
                    if budget <= 0:
                        break
                    chunk = ms[i : i + size]
                    if self._transmit(c104.Cot.SPONTANEOUS, chunk):
                        budget -= 1
                    for m in chunk:
                        _mark_sent(m)
                        del self._spont[id(m)]
        while self._scan and budget > 0:
            cot = self._scan[0][0]
            typ = self._scan[0][1].entry.type
            chunk = []
            rest = []
            for c, m in self._scan:
                if c == cot and m.entry.type == typ and len(chunk) < size:
                    chunk.append(m)
                else:
                    rest.append((c, m))
            self._scan = rest
            cause = c104.Cot.PERIODIC if cot == _COT_PERIODIC else c104.Cot.BACKGROUND_SCAN
            if self._transmit(cause, chunk):
                budget -= 1

    def _transmit(self, cause: c104.Cot, chunk: list[_Mon]) -> bool:
        srv = self._server
        assert srv is not None
        if len(chunk) == 1:
            ok = chunk[0].point.transmit(cause=cause)
        else:
            ok = srv.transmit_batch(c104.Batch(cause=cause, points=[m.point for m in chunk]))
        if ok:
            self._enqueued += self._active
            self.counters["messages"] += 1
            self.counters["values_sent"] += len(chunk)
        return bool(ok)

    # --- server-kept points ------------------------------------------------------------------

    def _set_fn(self, s: _VPPState, fn: PointFunction, value: Value, quality: int = GOOD) -> None:
        for m in self._by_fn.get((s.vpp.id, fn), ()):
            self._update(m, value, quality, time.time())

    def _update_server_points(self, s: _VPPState) -> None:
        self._set_fn(s, PointFunction.AGC_ON, s.agc_on)
        self._set_fn(s, PointFunction.AVC_ON, s.avc_on)
        self._set_fn(s, PointFunction.DR_ACTIVE, s.dr_active)
        for fn, target in (
            (PointFunction.P_TARGET, s.p_target),
            (PointFunction.Q_TARGET, s.q_target),
        ):
            # No target given yet: the indication is invalid rather than a made-up 0.
            self._set_fn(s, fn, target or 0.0, GOOD if target is not None else _INVALID)
        self._derive(s)
        self._update_counters(s)

    def _derive(self, s: _VPPState) -> None:
        """Ramp rate and availability from the resources online; energy from the plant P."""
        v = s.vpp
        refs = []
        for r in v.all_resources():
            p = r.ref(v.id, Role.P)
            if p:
                refs.append(p)
        got = self.twin.read([*refs, self._plant_p[v.id]])
        ramp = 0.0
        online = 0
        for r in v.all_resources():
            if r.kind == ResourceKind.METER:
                continue
            p = r.ref(v.id, Role.P)
            val, q = got.get(p or "", (None, GOOD))
            if val is None or (q & VALIDITY_MASK) == Validity.INVALID:
                continue
            online += 1
            sp = r.ref(v.id, Role.P_SET)
            if sp is None or self.commands.owner(sp) is None:
                continue
            lim = r.limits
            # Without a configured ramp limit a resource is taken to cross its range in 1 min.
            ramp += lim.ramp_kw_per_min or (lim.p_max_kw - lim.p_min_kw)
        self._set_fn(s, PointFunction.RAMP, ramp)
        self._set_fn(s, PointFunction.AVAILABLE, online > 0)
        pv, pq = got.get(self._plant_p[v.id], (None, GOOD))
        ok = pv is not None and (pq & VALIDITY_MASK) != Validity.INVALID
        self._integrate(s, float(cast(float, pv)) if ok else None, changed=True)

    def _integrate(self, s: _VPPState, p_now: float | None, changed: bool = False) -> None:
        """Advance the energy counters: the last known P held since it was seen."""
        now = time.monotonic()
        if s.p_last is not None:
            dt = now - s.p_since
            if dt > 0:
                s.e_sup_kwh += max(s.p_last, 0.0) * dt / 3600.0
                s.e_dmd_kwh += max(-s.p_last, 0.0) * dt / 3600.0
        s.p_since = now
        if changed:
            s.p_last = p_now

    def _update_counters(self, s: _VPPState) -> None:
        self._set_fn(s, PointFunction.E_SUP, s.e_sup_kwh)
        self._set_fn(s, PointFunction.E_DMD, s.e_dmd_kwh)

    # --- control direction ---------------------------------------------------------------------

    def _on_command(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        key = (message.common_address, point.io_address)
        e = self._cmds.get(key)
        if e is None:
            return c104.ResponseState.FAILURE
        try:
            value, tag = self._decode(e, point)
            repeat_key = self._check(e, value, tag)
            loop = self._loop
            if loop is None or self._task is None:
                raise _Refused("stopped", "the server is stopping")
            cmd_id = _command_id(e, value, tag) if tag is not None else f"iec104-{time.time_ns():x}"
            fut = asyncio.run_coroutine_threadsafe(self._execute(e, value, cmd_id), loop)
            try:
                fut.result(timeout=_CALLBACK_WAIT_S)
            except concurrent.futures.TimeoutError:
                fut.cancel()
                raise _Refused("busy", "the command path did not answer in time") from None
            if repeat_key is not None:
                self._executed[repeat_key] = None
                while len(self._executed) > 1000:
                    self._executed.popitem(last=False)
        except _Repeated:
            self.counters["commands_repeated"] += 1
            return c104.ResponseState.SUCCESS
        except _Refused as r:
            self.counters["commands_refused"] += 1
            self.refusals[r.code] = self.refusals.get(r.code, 0) + 1
            log.warning("IEC 104: %s to CA %s IOA %s (%s) refused: %s", e.type, *key, e.point, r)
            return c104.ResponseState.FAILURE
        except Exception:
            self.counters["commands_refused"] += 1
            log.exception("IEC 104: %s to CA %s IOA %s failed", e.type, *key)
            return c104.ResponseState.FAILURE
        self.counters["commands_accepted"] += 1
        return c104.ResponseState.SUCCESS

    def _decode(self, e: IEC104TableEntry, point: c104.Point) -> tuple[Value, float | None]:
        """(model value, time tag as UTC epoch or None) of a received command."""
        raw = point.value
        kind = e.type[2:4]
        value: Value
        if kind == "SC":
            value = bool(raw)
        elif kind == "DC":
            if raw == c104.Double.ON:
                value = True
            elif raw == c104.Double.OFF:
                value = False
            else:
                raise _Refused("bad_value", f"double command state {raw} is neither ON nor OFF")
        elif isinstance(raw, c104.Int16):
            value = int(cast(Any, raw)) * e.scale
        else:
            value = float(cast(Any, raw)) * e.scale
            if not math.isfinite(value):
                raise _Refused("bad_value", f"value {value} is not a finite number")
        tag = None
        if e.time_tagged:
            rec = point.info.recorded_at
            if rec is None:
                raise _Refused("no_time_tag", "time-tagged command without a time tag")
            # c104 gives CP56Time2a as a naive local datetime: .timestamp() is the UTC epoch.
            tag = rec.timestamp()
        return value, tag

    def _check(
        self, e: IEC104TableEntry, value: Value, tag: float | None
    ) -> tuple[Any, ...] | None:
        """Refuse what must not run; return the repeat key of a time-tagged command."""
        rule = iec104_rule(e.function)
        if rule is not None and not all(rule.permits({r}) for r in self._client_roles):
            # c104 does not say which connection sent a command: only what every allowed
            # master's role permits may run (a monitoring-only master needs its own server).
            raise _Refused(
                "forbidden",
                f"{e.function} commands need {rule.describe()}; a configured master has "
                f"role(s) {', '.join(sorted(r.value for r in self._client_roles))}",
            )
        repeat_key = None
        if tag is not None:
            now = time.time() + self._clock_offset
            age = now - tag
            limit = self.config.command_max_age_s
            # c104 does not judge time tags; IEC 60870-5-104 leaves the window to the system.
            if age > limit:
                raise _Refused("stale", f"time tag is {age:.1f} s old (window {limit:g} s)")
            if age < -limit:
                raise _Refused("future", f"time tag is {-age:.1f} s ahead (window {limit:g} s)")
            repeat_key = (e.common_address, e.ioa, value, tag)
            if repeat_key in self._executed:
                raise _Repeated()
        if isinstance(value, float):
            lo, hi = e.min, e.max
            if (lo is not None and value < lo - 1e-9) or (hi is not None and value > hi + 1e-9):
                raise _Refused("out_of_range", f"value {value:g} {e.unit} is outside [{lo}, {hi}]")
        s = self._state.get(e.vpp)
        if e.function == PointFunction.AGC_P and s is not None and not s.agc_on:
            raise _Refused("agc_off", "AGC is off: active-power set-points are not accepted")
        if e.function == PointFunction.AVC_Q and s is not None and not s.avc_on:
            raise _Refused("avc_off", "AVC is off: reactive-power set-points are not accepted")
        return repeat_key

    async def _execute(self, e: IEC104TableEntry, value: Value, cmd_id: str) -> None:
        """Turn an accepted IEC 104 command into commands on the command path (loop thread)."""
        s = self._state[e.vpp]
        fn = e.function
        deadline = time.time() + self.config.command_timeout_s
        if fn in (PointFunction.AGC_P, PointFunction.AVC_Q):
            kind = "p" if fn == PointFunction.AGC_P else "q"
            target = float(value)
            cmds = self._split(s, kind, target, deadline, cmd_id)
            await self._submit(cmds)
            if kind == "p":
                s.p_target = target
                self._set_fn(s, PointFunction.P_TARGET, target)
            else:
                s.q_target = target
                self._set_fn(s, PointFunction.Q_TARGET, target)
        elif fn == PointFunction.AGC_MODE:
            s.agc_on = bool(value)
            self._set_fn(s, PointFunction.AGC_ON, s.agc_on)
        elif fn == PointFunction.AVC_MODE:
            s.avc_on = bool(value)
            self._set_fn(s, PointFunction.AVC_ON, s.avc_on)
        elif fn == PointFunction.DR:
            await self._demand_response(s, bool(value), deadline, cmd_id)
        elif fn == PointFunction.DIRECT:
            await self._submit([Command(e.point, value, "iec104", id=cmd_id, deadline=deadline)])
        else:
            raise _Refused("not_a_command", f"{e.point} is not a command point")
        self._flush()

    def _controllable(self, kind: str) -> set[str]:
        role = Role.P_SET if kind == "p" else Role.Q_SET
        out = set()
        for v in self.site.vpps:
            for r in v.all_resources():
                ref = r.ref(v.id, role)
                if ref and self.commands.owner(ref) is not None:
                    out.add(ref)
        return out

    def _split(
        self, s: _VPPState, kind: str, target: float, deadline: float, cmd_id: str
    ) -> list[Command]:
        read = self.twin.read(self._inputs[s.vpp.id])
        controllable = self._controllable(kind)
        k: Literal["p", "q"] = "p" if kind == "p" else "q"
        if not any(c.setpoint_ref for c in capacities(s.vpp, read, k, controllable)):
            raise _Refused("no_capacity", f"no controllable resource of {s.vpp.id} is online")
        split = split_target(
            s.vpp,
            read,
            target,
            kind=k,
            origin="iec104",
            deadline=deadline,
            id_prefix=cmd_id,
            controllable=controllable,
        )
        return split.commands

    async def _submit(self, cmds: list[Command]) -> None:
        """Check every command first (nothing goes out if one is refused), then submit all."""
        for c in cmds:
            try:
                self.commands.check(c)
            except CommandRejected as r:
                raise _Refused(r.code, f"{c.target} = {c.value}: {r.reason}") from None
        for c in cmds:
            try:
                await self.commands.submit(c)
            except CommandRejected as r:
                log.warning("IEC 104: resource command %s = %s refused: %s", c.target, c.value, r)
                raise _Refused(r.code, r.reason) from None
            self.counters["resource_commands"] += 1

    async def _demand_response(
        self, s: _VPPState, start: bool, deadline: float, cmd_id: str
    ) -> None:
        if start == s.dr_active:
            self.counters["commands_repeated"] += 1
            return  # already in that state: executed once
        if start:
            # Keep the set-points in force so that stop can restore them, then deliver every kW
            # of upward capacity (consumption cut, storage discharging, curtailment released).
            controllable = self._controllable("p")
            refs = [r for r in self._inputs[s.vpp.id] if r in controllable]
            got = self.twin.read(refs)
            saved = {}
            for ref in refs:
                desired = self.twin.commands.desired.get(ref)
                v = desired[0] if desired is not None else got.get(ref, (None, GOOD))[0]
                if v is not None:
                    saved[ref] = float(v)
            read = self.twin.read(self._inputs[s.vpp.id])
            split = split_target(
                s.vpp,
                read,
                math.inf,
                origin="iec104",
                deadline=deadline,
                id_prefix=cmd_id,
                controllable=set(refs),
            )
            await self._submit(split.commands)
            s.dr_saved = saved
        else:
            cmds = [
                Command(ref, v, "iec104", id=f"{cmd_id}.{i}", deadline=deadline)
                for i, (ref, v) in enumerate(s.dr_saved.items())
            ]
            await self._submit(cmds)
            s.dr_saved = {}
        s.dr_active = start
        self._set_fn(s, PointFunction.DR_ACTIVE, start)

    # --- other c104 callbacks (c104 threads) ---------------------------------------------------

    def _on_clock_sync(
        self, server: c104.Server, ip: str, date_time: datetime.datetime
    ) -> c104.ResponseState:
        master = date_time.timestamp()
        self._clock_offset = master - time.time()
        self._clock_synced = True
        self.counters["clock_syncs"] += 1
        log.info("IEC 104: clock sync from %s: offset %+.3f s", ip, self._clock_offset)
        return c104.ResponseState.SUCCESS

    def _on_connect(self, server: c104.Server, ip: str) -> bool:
        allowed = self.config.clients
        if not allowed or any(c.host == ip for c in allowed):
            log.info("IEC 104: connection from %s", ip)
            return True
        self.counters["connections_refused"] += 1
        log.warning("IEC 104: connection from %s refused: not a configured dispatch client", ip)
        return False

    def _on_send_raw(self, server: c104.Server, data: bytes) -> None:
        # I-format APDU: 0x68, length, 4 control octets (first & 1 == 0), type, VSQ, COT, ...
        if len(data) > 8 and not data[2] & 1 and data[8] & 0x3F in _PACED_COTS:
            self._drained += 1


def _mark_sent(m: _Mon) -> None:
    """The point's present value is what masters have: the deadband counts from it."""
    m.sent_value = float(m.value) if isinstance(m.value, int | float) else None
    m.sent_qds = m.qds


class _Repeated(Exception):
    """A time-tagged command already executed: confirm positively, do nothing."""


def _command_id(e: IEC104TableEntry, value: Value, tag: float) -> str:
    """Deterministic id of a time-tagged command: a repeat maps to the same id."""
    h = hashlib.sha256(f"{e.common_address}|{e.ioa}|{e.type}|{value!r}|{tag!r}".encode())
    return f"iec104-{h.hexdigest()[:20]}"


def _transport_security(cfg: IEC104TLSConfig) -> c104.TransportSecurity:
    """c104 TLS settings; client certificates pinned after dropping revoked or expired ones."""
    pinned = _usable_client_certs(cfg) if cfg.client_certs else []
    tls = c104.TransportSecurity(validate=True, only_known=bool(cfg.client_certs))
    try:
        tls.set_certificate(cert=cfg.cert, key=cfg.key, passphrase=cfg.passphrase)
        tls.set_ca_certificate(cert=cfg.ca)
        low = c104.TlsVersion.TLS_1_3 if cfg.min_version == "1.3" else c104.TlsVersion.TLS_1_2
        tls.set_version(min=low, max=c104.TlsVersion.TLS_1_3)
        for path in pinned:
            tls.add_allowed_remote_certificate(cert=path)
    except ValueError as e:
        raise IEC104ServerError(f"IEC 104 TLS configuration: {e}") from e
    if cfg.client_certs and not pinned:
        raise IEC104ServerError("IEC 104 TLS: no usable client certificate is left to accept")
    return tls


def _usable_client_certs(cfg: IEC104TLSConfig) -> list[str]:
    """The configured client certificates that the CA signed, that are valid now, not revoked."""
    try:
        from cryptography import x509
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise IEC104ServerError(
            "IEC 104 TLS with client_certs needs the 'cryptography' package"
        ) from e
    try:
        ca = x509.load_pem_x509_certificate(Path(cfg.ca).read_bytes())
        crl = x509.load_pem_x509_crl(Path(cfg.crl).read_bytes()) if cfg.crl else None
    except (OSError, ValueError) as e:
        raise IEC104ServerError(f"IEC 104 TLS: cannot read the CA or CRL: {e}") from e
    if crl is not None and not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise IEC104ServerError(f"IEC 104 TLS: CRL {cfg.crl} is not signed by CA {cfg.ca}")
    now = datetime.datetime.now(datetime.UTC)
    out = []
    for path in cfg.client_certs:
        try:
            cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
        except (OSError, ValueError) as e:
            raise IEC104ServerError(
                f"IEC 104 TLS: cannot read client certificate {path}: {e}"
            ) from e
        why = None
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:
            why = "not issued by the configured CA"
        if why is None and not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            why = f"not valid now ({cert.not_valid_before_utc} .. {cert.not_valid_after_utc})"
        revoked = crl is not None and (
            crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
        )
        if why is None and revoked:
            why = f"revoked by {cfg.crl}"
        if why is not None:
            log.warning("IEC 104 TLS: client certificate %s left out: %s", path, why)
            continue
        out.append(path)
    return out
