"""An IEC 60870-5-104 outstation simulator (c104.Server) for one iec104 driver of a site file.

No ``from __future__ import annotations`` here: c104 checks callback signatures, type hints
included, and string annotations fail that check.

Every monitor IOA of the driver reads its model point from the simulated DER behind it
(tools.sim.binding); every command IOA writes its model point into that DER. step(dt) advances
the physics and sends what changed spontaneously, grouped per type into c104.Batch messages of
at most BATCH_SIZE objects: the c104 server queue holds ~100 messages and silently overwrites
the oldest when full, so one message per point per step would lose values on larger maps. A
command is answered in c104's receive callback: the set-point goes into the model and the
monitor point of the same model point is returned at once, so read-back does not wait for a step.

Threads: c104 calls the command callback on its server thread while step() runs on the caller's
thread (the asyncio loop in serve()). The model and the last-sent cache are guarded by one
lock, which is never held while calling into c104 (c104 holds its own locks around callbacks).
The read-back of a command goes out through c104's related-point auto-return, after the
command's confirmation, so the client sees ACT_CON before the new value, as from a real device.
"""

import asyncio
import contextlib
import datetime
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

import c104

from model.drivers import IEC104DriverConfig, IEC104PointMap
from model.quality import IEC104Flags
from model.site import SiteConfig
from tools.sim.binding import bind_driver

__all__ = ["BATCH_SIZE", "IEC104Simulator"]

log = logging.getLogger(__name__)

BATCH_SIZE = 30  # information objects per spontaneous message
# c104's server queue holds ~100 messages and overwrites the oldest when full, silently.
QUEUE_WARN = 60  # messages in one step above which values may be lost


@dataclass
class _Monitor:
    pm: IEC104PointMap
    point: c104.Point
    last: tuple[Any, int] | None = None  # (raw value, QDS) last sent


def _model_to_raw(pm: IEC104PointMap, value: float) -> tuple[Any, bool]:
    """(raw value for the point's type, overflow) from a model value; clamps to the type's range."""
    raw = (value - pm.offset) / pm.scale
    kind = pm.type[2:4]
    if kind == "SP":
        return raw != 0.0, False
    if kind == "DP":
        return (2 if raw >= 1.5 else 1), False  # ON / OFF
    if kind == "IT":
        r = round(raw)
        return min(max(r, -(2**31)), 2**31 - 1), not -(2**31) <= r < 2**31
    if kind in ("ST",):
        r = round(raw)
        return min(max(r, -64), 63), not -64 <= r <= 63
    if kind == "BO":
        r = round(raw)
        return min(max(r, 0), 0xFFFFFFFF), not 0 <= r <= 0xFFFFFFFF
    if pm.type in ("M_ME_NA_1", "M_ME_TD_1"):
        return min(max(raw, -1.0), 1.0), not -1.0 <= raw <= 1.0
    if pm.type in ("M_ME_NB_1", "M_ME_TE_1"):
        r = round(raw)
        return min(max(r, -32768), 32767), not -32768 <= r <= 32767
    return float(raw), False


def _info(pm: IEC104PointMap, raw: Any, quality: c104.Quality) -> c104.Information:
    """A c104 information object of the point's type."""
    # c104 takes naive datetimes as local time and sends them as UTC CP56Time2a.
    ts = datetime.datetime.now() if pm.type[5] == "T" else None
    kind = pm.type[2:4]
    info: c104.Information
    if kind == "SP":
        info = c104.SingleInfo(on=bool(raw), quality=quality, recorded_at=ts)
    elif kind == "DP":
        state = c104.Double.ON if raw == 2 else c104.Double.OFF
        info = c104.DoubleInfo(state=state, quality=quality, recorded_at=ts)
    elif kind == "ST":
        # c104 2.2.1 names this argument `state`; its stub says otherwise.
        step = c104.Int7(int(raw))
        info = c104.StepInfo(state=step, quality=quality, recorded_at=ts)  # type: ignore[call-arg]
    elif kind == "BO":
        blob = c104.Byte32(int(raw).to_bytes(4, "little"))
        info = c104.BinaryInfo(blob=blob, quality=quality, recorded_at=ts)
    elif kind == "IT":
        bcq = c104.BinaryCounterQuality()
        info = c104.BinaryCounterInfo(
            counter=int(raw), sequence=c104.UInt5(0), quality=bcq, recorded_at=ts
        )
    elif pm.type in ("M_ME_NA_1", "M_ME_TD_1"):
        nf = c104.NormalizedFloat(float(raw))
        info = c104.NormalizedInfo(actual=nf, quality=quality, recorded_at=ts)
    elif pm.type in ("M_ME_NB_1", "M_ME_TE_1"):
        info = c104.ScaledInfo(actual=c104.Int16(int(raw)), quality=quality, recorded_at=ts)
    else:
        info = c104.ShortInfo(actual=float(raw), quality=quality, recorded_at=ts)
    return info


def _command_raw(v: Any) -> float:
    """The number carried by a received command value."""
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, c104.Byte32):
        return float(int.from_bytes(bytes(v), "little"))
    # c104.Double, c104.Step, c104.Int16, c104.NormalizedFloat, float (stubs lack __float__).
    if isinstance(v, c104.Double | c104.Step | c104.Int16):
        return float(int(cast(Any, v)))
    return float(cast(Any, v))


class IEC104Simulator:
    """A simulated IEC 104 outstation answering for the DERs behind one driver of a site."""

    def __init__(
        self,
        site: SiteConfig,
        driver_id: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        tick_s: float = 1.0,
        day_length_s: float = 86400.0,
    ) -> None:
        cfgs = {d.id: d for d in site.drivers}
        cfg = cfgs.get(driver_id)
        if not isinstance(cfg, IEC104DriverConfig):
            raise KeyError(f"no iec104 driver {driver_id!r} in the site file")
        self.config = cfg
        self.host = host
        self.port = cfg.port if port is None else port
        self.tick_s = tick_s
        self.binding = bind_driver(site, driver_id, day_length_s=day_length_s)
        self.now = time.time()
        self.commands_received = 0
        self.commands_refused = 0
        self.steps = 0
        self.transmitted = 0
        self._lock = threading.Lock()
        self._warned = False
        self.server = c104.Server(
            ip=host,
            port=self.port,
            tick_rate_ms=50,
            select_timeout_ms=cfg.command_timeout_ms,
        )
        self.server.on_clock_sync(callable=self._on_clock_sync)
        station = self.server.add_station(common_address=cfg.common_address)
        if station is None:
            raise RuntimeError(f"c104 refused common address {cfg.common_address}")
        self.station = station
        self._monitors: list[_Monitor] = []
        self._by_ref: dict[str, list[_Monitor]] = {}
        self._commands: dict[int, IEC104PointMap] = {}
        for pm in cfg.points:
            if pm.is_command:
                continue
            point = station.add_point(io_address=pm.ioa, type=getattr(c104.Type, pm.type))
            if point is None:
                raise RuntimeError(f"c104 refused {pm.type} at IOA {pm.ioa}")
            mon = _Monitor(pm, point)
            self._monitors.append(mon)
            self._by_ref.setdefault(pm.point, []).append(mon)
        for pm in cfg.points:
            if not pm.is_command:
                continue
            mode = (
                c104.CommandMode.SELECT_AND_EXECUTE
                if pm.select_before_operate
                else c104.CommandMode.DIRECT
            )
            # c104 sends the related monitor point (COT return-info-remote) right after the
            # command's confirmation (after ACT_TERM with select-before-operate): read-back in
            # the order a real device answers.
            related = self._by_ref.get(pm.point)
            kw: dict[str, Any] = {}
            if related:
                kw = {"related_io_address": related[0].pm.ioa, "related_io_autoreturn": True}
            point = station.add_point(
                io_address=pm.ioa, type=getattr(c104.Type, pm.type), command_mode=mode, **kw
            )
            if point is None:
                raise RuntimeError(f"c104 refused {pm.type} at IOA {pm.ioa}")
            point.on_receive(callable=self._on_command)
            self._commands[pm.ioa] = pm
        # Initial values, so that the first interrogation answers with the model's state.
        self._send(self._refresh(self._monitors), transmit=False)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Open the listening socket."""
        self.server.start()
        log.info(
            "IEC 104 simulator for %s listening on %s:%s", self.config.id, self.host, self.port
        )

    def stop(self) -> None:
        """Close the listening socket and every connection."""
        self.server.stop()

    @property
    def has_clients(self) -> bool:
        """True while a client connection is open."""
        return bool(self.server.has_open_connections)

    def step(self, dt: float) -> int:
        """Advance the physics by dt seconds and send what changed; returns objects sent."""
        with self._lock:
            self.now += dt
            self.binding.step(self.now, dt)
            self.steps += 1
        return self._send(self._refresh(self._monitors), transmit=True)

    async def serve(self, stop: asyncio.Event) -> None:
        """Start, step every tick_s (by the real time elapsed) until stop is set, then stop."""
        self.start()
        try:
            last = time.monotonic()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.tick_s):
                        await stop.wait()
                now = time.monotonic()
                try:
                    self.step(now - last)
                except Exception:  # a bad step must not end the simulator
                    log.exception("simulator %s: step failed", self.config.id)
                last = now
        finally:
            self.stop()

    # --- sending ------------------------------------------------------------------------------

    def _refresh(self, monitors: list[_Monitor]) -> list[tuple[_Monitor, Any, int]]:
        """(monitor, raw, QDS) for each monitor whose value or quality changed."""
        out = []
        with self._lock:
            for m in monitors:
                value = self.binding.read(m.pm.point)
                raw, overflow = _model_to_raw(m.pm, value)
                qds = IEC104Flags.OV if overflow else 0
                if not math.isfinite(float(raw)):
                    raw, qds = 0.0, IEC104Flags.IV
                if m.last != (raw, qds):
                    m.last = (raw, qds)
                    out.append((m, raw, qds))
        return out

    def _send(self, changed: list[tuple[_Monitor, Any, int]], *, transmit: bool) -> int:
        """Set the points' values; if transmit, send them spontaneously in per-type batches."""
        by_type: dict[str, list[c104.Point]] = {}
        for m, raw, qds in changed:
            quality = c104.Quality()
            if qds & IEC104Flags.IV:
                quality = c104.Quality.Invalid
            elif qds & IEC104Flags.OV:
                quality = c104.Quality.Overflow
            m.point.info = _info(m.pm, raw, quality)
            by_type.setdefault(m.pm.type, []).append(m.point)
        if not transmit:
            return 0
        messages = sum(-(-len(p) // BATCH_SIZE) for p in by_type.values())
        if messages > QUEUE_WARN and not self._warned:
            self._warned = True
            log.warning(
                "simulator %s: %d messages in one step; c104 drops values beyond ~100 queued",
                self.config.id,
                messages,
            )
        sent = 0
        for points in by_type.values():
            for i in range(0, len(points), BATCH_SIZE):
                chunk = points[i : i + BATCH_SIZE]
                if len(chunk) == 1:
                    ok = chunk[0].transmit(cause=c104.Cot.SPONTANEOUS)
                else:
                    ok = self.server.transmit_batch(
                        c104.Batch(cause=c104.Cot.SPONTANEOUS, points=chunk)
                    )
                if ok:
                    sent += len(chunk)
        self.transmitted += sent
        return sent

    # --- c104 callbacks (server thread) -------------------------------------------------------

    def _on_command(
        self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage
    ) -> c104.ResponseState:
        pm = self._commands.get(point.io_address)
        if pm is None:
            return c104.ResponseState.FAILURE
        try:
            value = _command_raw(point.value) * pm.scale + pm.offset
            with self._lock:
                self.binding.write(pm.point, value)
                self.commands_received += 1
        except Exception:
            self.commands_refused += 1
            log.exception("simulator: command %s at IOA %s failed", pm.type, pm.ioa)
            return c104.ResponseState.FAILURE
        log.debug("simulator: %s IOA %s -> %s = %s", pm.type, pm.ioa, pm.point, value)
        # Read-back: the related monitor point gets the new value now and c104 returns it after
        # the confirmation; other monitors of the same model point follow on the next step.
        self._send(self._refresh(self._by_ref.get(pm.point, [])[:1]), transmit=False)
        return c104.ResponseState.SUCCESS

    def _on_clock_sync(
        self, server: c104.Server, ip: str, date_time: datetime.datetime
    ) -> c104.ResponseState:
        log.debug("simulator: clock sync from %s: %s", ip, date_time)
        return c104.ResponseState.SUCCESS
