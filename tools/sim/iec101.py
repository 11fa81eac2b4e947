"""An IEC 60870-5-101 outstation simulator for one iec101 driver config, backed by DER physics.

Hand-written on our sans-IO codec (gateway.codecs.iec101); it speaks the real wire format, on a
TCP port (as a serial-to-TCP converter would present it) or on the master side of a pty pair
(the driver opens the slave side as serial://<path>).

Theory of operation
-------------------
The values behind the IOAs come from the simulated DERs of tools.sim.physics (built for the
site's resources whose points the map names; points without a DER keep what was written, in
`values`). step(dt) advances the physics and reports what changed:

- unbalanced mode (secondary station, UnbalancedSecondary): status information (single/double
  points, step positions, bitstrings) as spontaneous events (COT 3) in class 1; measured values
  as cyclic data (COT 1) in class 2. Activation confirmations/terminations, interrogation
  answers and command read-backs (COT 11) also go to class 1, so the master sees ACD = 1 and
  fetches them first.
- balanced mode (BalancedLink, controlled station, DIR = 0): the same ASDUs, sent by
  SEND/CONFIRM as soon as the simulator's own primary direction is up.

Commands: C_SC/C_DC/C_RC/C_SE_NA/NB/NC/C_BO with COT 6 at a configured command IOA are executed
into the DER model (value = raw * scale + offset), confirmed (ACT_CON), terminated (ACT_TERM)
and read back through the monitor point of the same model point. Select-before-operate points
demand a select (S/E = 1) of the same value within select_timeout_s before the execute. A wrong
IOA, type, cause or common address is answered with the negative mirror (COT 47, 44, 45, 46);
IOAs in `refuse` are answered with a negative ACT_CON. General interrogation (C_IC_NA_1),
counter interrogation (C_CI_NA_1), clock synchronisation (C_CS_NA_1), read (C_RD_NA_1) and test
(C_TS_NA_1) are answered as the standard describes. After the first link reset the outstation
reports its end of initialisation (M_EI_NA_1, COT 4). With `mute` set it stops answering (a cut
line) without closing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from typing import Any
from urllib.parse import urlsplit

from gateway.codecs.iec101 import (
    ASDU,
    ASDUError,
    AsduParams,
    BalancedLink,
    Bitstring,
    BitstringCommand,
    Cause,
    ClockSync,
    CP24Time2a,
    CP56Time2a,
    DoubleCommand,
    DoublePoint,
    EndOfInitialisation,
    InformationObject,
    IntegratedTotal,
    Interrogation,
    LinkReset,
    LinkState,
    LocalProtocolError,
    Normalized,
    ReadCommand,
    RegulatingStep,
    Scaled,
    SetpointFloat,
    SetpointNormalized,
    SetpointScaled,
    ShortFloat,
    SingleCommand,
    SinglePoint,
    StepPosition,
    TestCommand,
    TypeID,
    UnbalancedSecondary,
    UserData,
    decode_asdu,
    encode_asdu,
    max_objects,
    max_user_data,
    type_spec,
)
from gateway.transports.pty import PtyPair, open_pty
from gateway.transports.stream import ByteStream, TransportError, open_stream, stream_from_fd
from model.drivers_iec101 import IEC101DriverConfig, IEC101PointMap
from model.natures import NATURES, Role
from model.quality import IEC104Flags
from model.site import SiteConfig
from tools.sim.binding import SimBinding
from tools.sim.physics import DERModel, model_for

__all__ = ["IEC101Simulator", "bind_points", "site_simulator"]

log = logging.getLogger(__name__)

_BACKLOG = 1000
_COMMANDS = {
    TypeID.C_SC_NA_1,
    TypeID.C_DC_NA_1,
    TypeID.C_RC_NA_1,
    TypeID.C_SE_NA_1,
    TypeID.C_SE_NB_1,
    TypeID.C_SE_NC_1,
    TypeID.C_BO_NA_1,
}


def bind_points(
    site: SiteConfig, refs: set[str], day_length_s: float = 86400.0, noise: float = 0.0
) -> SimBinding:
    """DER models for every resource of the site that has one of `refs` among its points."""
    models: list[DERModel] = []
    by_point: dict[str, tuple[DERModel, Role]] = {}
    for i, (vpp_id, res) in enumerate(site.resources()):
        ld = f"{vpp_id}.{res.id}/"
        mine = [t for t in NATURES[res.kind].points if ld + t.path in refs]
        if not mine:
            continue
        # Spread PV sites over the day a little so two PV plants do not move in lockstep.
        m = model_for(res, day_length_s=day_length_s, day_offset_s=i * 7.0, noise=noise)
        models.append(m)
        for t in mine:
            by_point[ld + t.path] = (m, t.role)
    return SimBinding(models, by_point)


def _raw(pm: IEC101PointMap, value: float) -> tuple[Any, int]:
    """(raw value for the point's type, QDS flags) from a model value, clamped to the type."""
    raw = (value - pm.offset) / pm.scale
    if not math.isfinite(raw):
        return 0, IEC104Flags.IV
    kind = pm.type[2:4]
    if kind == "SP":
        return raw != 0.0, 0
    if kind == "DP":
        return (2 if raw >= 1.5 else 1), 0
    if kind == "IT":
        r = round(raw)
        return min(max(r, -(2**31)), 2**31 - 1), (0 if -(2**31) <= r < 2**31 else IEC104Flags.OV)
    if kind == "ST":
        r = round(raw)
        return min(max(r, -64), 63), (0 if -64 <= r <= 63 else IEC104Flags.OV)
    if kind == "BO":
        r = round(raw)
        return min(max(r, 0), 0xFFFFFFFF), (0 if 0 <= r <= 0xFFFFFFFF else IEC104Flags.OV)
    fam = pm.type[5:7]
    if fam in ("NA", "TA", "TD", "ND"):
        nva = min(max(round(raw * 32768.0), -32768), 32767) / 32768.0
        return nva, (0 if -1.0 <= raw <= 1.0 else IEC104Flags.OV)
    if fam in ("NB", "TB", "TE"):
        r = round(raw)
        return min(max(r, -32768), 32767), (0 if -32768 <= r <= 32767 else IEC104Flags.OV)
    return float(raw), 0


def _time_tag(tid: TypeID, now: float) -> CP24Time2a | CP56Time2a | None:
    t = type_spec(tid).time
    if t == 7:
        return CP56Time2a.from_epoch(now)
    if t == 3:
        return CP24Time2a.from_epoch(now)
    return None


def _object(pm: IEC101PointMap, raw: Any, qds: int, now: float) -> InformationObject:
    """The monitor object of a point's type."""
    tid = TypeID[pm.type]
    t = _time_tag(tid, now)
    q = qds & 0xF0 if pm.type[2:4] in ("SP", "DP") else qds
    cls = type_spec(tid).cls
    ioa = pm.ioa
    if cls is SinglePoint:
        return SinglePoint(ioa, bool(raw), q, t)
    if cls is DoublePoint:
        return DoublePoint(ioa, int(raw), q, t)
    if cls is StepPosition:
        return StepPosition(ioa, int(raw), False, q, t)
    if cls is Bitstring:
        return Bitstring(ioa, int(raw), q, t)
    if cls is IntegratedTotal:
        return IntegratedTotal(
            ioa, int(raw), 0, bool(qds & IEC104Flags.OV), False, bool(qds & IEC104Flags.IV), t
        )
    if cls is Normalized:
        return Normalized(ioa, float(raw), 0 if tid == TypeID.M_ME_ND_1 else q, t)
    if cls is Scaled:
        return Scaled(ioa, int(raw), q, t)
    return ShortFloat(ioa, float(raw), q, t)


def _command_raw(o: InformationObject) -> float:
    """The number a received command carries."""
    if isinstance(o, SingleCommand):
        return 1.0 if o.value else 0.0
    if isinstance(o, DoubleCommand | RegulatingStep | SetpointScaled | BitstringCommand):
        return float(o.value)
    if isinstance(o, SetpointNormalized | SetpointFloat):
        return float(o.value)
    raise TypeError(f"not a command: {o!r}")


class _Session:
    """One connection (a TCP client or the pty line) with its link machine."""

    def __init__(self, link: UnbalancedSecondary | BalancedLink, stream: ByteStream) -> None:
        self.link = link
        self.stream = stream
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.backlog: list[bytes] = []  # balanced: ASDUs waiting for our primary direction


class IEC101Simulator:
    """A simulated IEC 101 outstation for one driver config."""

    def __init__(
        self,
        config: IEC101DriverConfig,
        site: SiteConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        pty_fd: int | None = None,
        serial_port: str | None = None,
        tick_s: float = 1.0,
        day_length_s: float = 86400.0,
        select_timeout_s: float = 10.0,
        single_char_ack: bool = False,
    ) -> None:
        self._own_pty: PtyPair | None = None
        if port is None and pty_fd is None and serial_port is None:
            if urlsplit(config.link).scheme == "tcp":
                port = _port_of(config.link)
            else:
                # A serial link and no device given: play the device on a new pty pair; the
                # driver (or a serial tool) opens serial_port, the slave side.
                self._own_pty = open_pty()
                pty_fd = self._own_pty.master_fd
                serial_port = self._own_pty.slave_path
        self.config = config
        self.params = AsduParams(config.cot_size, config.ca_size, config.ioa_size)
        self.host = host
        self.port = port
        self.pty_fd = pty_fd
        self.serial_port = serial_port  # the device the master opens (or we serve on)
        self.tick_s = tick_s
        self.select_timeout_s = select_timeout_s
        self.single_char_ack = single_char_ack
        self.monitors = [p for p in config.points if not p.is_command]
        self.commands = {p.ioa: p for p in config.points if p.is_command}
        self.by_ref: dict[str, list[IEC101PointMap]] = {}
        for p in self.monitors:
            self.by_ref.setdefault(p.point, []).append(p)
        refs = {p.point for p in config.points}
        self.binding = (
            bind_points(site, refs, day_length_s=day_length_s)
            if site is not None
            else SimBinding([], {})
        )
        self.values: dict[str, float] = {}  # points without a DER model
        self.refuse: set[int] = set()  # command IOAs answered with a negative confirmation
        self.mute = False  # stop answering (a cut line)
        self.now = time.time()
        self.last: dict[int, tuple[Any, int]] = {}  # ioa -> (raw, qds) last reported
        self.selected: dict[int, tuple[float, float]] = {}  # ioa -> (raw, monotonic time)
        self.clock_offset = 0.0  # set by clock synchronisation: master time - our time
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "connections",
                "commands_received",
                "commands_refused",
                "interrogations",
                "counter_interrogations",
                "clock_syncs",
                "bad_asdus",
                "sent_asdus",
                "dropped_asdus",
            ),
            0,
        )
        self._reported_init = False
        self._sessions: list[_Session] = []
        self._server: asyncio.Server | None = None
        self._ticker: asyncio.Task[None] | None = None

    @classmethod
    def from_site(cls, site: SiteConfig, driver_id: str, **kw: Any) -> IEC101Simulator:
        """The simulator for the iec101 driver `driver_id` of a site file."""
        for d in site.drivers:
            if d.id == driver_id and isinstance(d, IEC101DriverConfig):
                return cls(d, site, **kw)
        raise KeyError(f"no iec101 driver {driver_id!r} in the site file")

    # --- values -------------------------------------------------------------------------------

    def read(self, ref: str) -> float:
        """Current model value of a point."""
        if ref in self.binding.by_point:
            return self.binding.read(ref)
        return self.values.get(ref, 0.0)

    def write(self, ref: str, value: float) -> None:
        """Set a point's model value (a DER set-point is clamped by the DER's limits)."""
        if ref in self.binding.by_point:
            self.binding.write(ref, value)
        else:
            self.values[ref] = value

    def _current(self, pm: IEC101PointMap) -> tuple[Any, int]:
        return _raw(pm, self.read(pm.point))

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def connected(self) -> int:
        """Open connections."""
        return len(self._sessions)

    async def start(self) -> None:
        """Listen on host:port, or serve the pty master; start stepping every tick_s."""
        if self.pty_fd is not None:
            stream = await stream_from_fd(self.pty_fd, "iec101-sim-pty")
            self._open_session(stream)
        elif self.serial_port is not None:
            # Serve on a serial device (a real port, or one end of a null-modem pty bridge),
            # with the line settings of the driver's link URL.
            query = (
                urlsplit(self.config.link).query if self.config.link.startswith("serial:") else ""
            )
            url = f"serial://{self.serial_port}" + (f"?{query}" if query else "")
            self._open_session(await open_stream(url))
            log.info("IEC 101 simulator for %s on %s", self.config.id, url)
        else:
            self._server = await asyncio.start_server(self._on_client, self.host, self.port)
            log.info("IEC 101 simulator for %s on %s:%s", self.config.id, self.host, self.port)
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def stop(self) -> None:
        """Stop listening, close every connection; idempotent."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            self._server.close()
            self._server = None
        for s in list(self._sessions):
            await self._close_session(s)
        if self._own_pty is not None:
            self._own_pty.close()
            self._own_pty = None

    async def serve(self, stop: asyncio.Event) -> None:
        """Start, run until stop is set, then stop."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def drop_connections(self) -> None:
        """Close every open connection (the server keeps listening)."""
        for s in list(self._sessions):
            await self._close_session(s)

    async def _tick_loop(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            try:
                self.step(now - last)
            except Exception:  # a bad step must not end the simulator
                log.exception("iec101 simulator %s: step failed", self.config.id)
            last = now

    def step(self, dt: float) -> int:
        """Advance the physics by dt seconds and report what changed; returns objects reported."""
        self.now += dt
        self.binding.step(self.now, dt)
        if not self._sessions:
            return 0
        events: list[InformationObject] = []
        cyclic: list[InformationObject] = []
        now = time.time() + self.clock_offset
        for pm in self.monitors:
            if pm.type.startswith("M_IT"):
                continue  # integrated totals travel on counter interrogation
            cur = self._current(pm)
            if self.last.get(pm.ioa) == cur:
                continue
            self.last[pm.ioa] = cur
            obj = _object(pm, cur[0], cur[1], now)
            (cyclic if pm.type.startswith("M_ME") else events).append(obj)
        n = 0
        for data in self._pack(events, Cause.SPONTANEOUS):
            n += self._emit(data, 1)
        for data in self._pack(cyclic, Cause.PERIODIC):
            n += self._emit(data, 2)
        return len(events) + len(cyclic)

    # --- connections --------------------------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A serial line has one master: a new connection replaces the old one.
        for s in list(self._sessions):
            await self._close_session(s)
        peer = writer.get_extra_info("peername")
        self._open_session(ByteStream(reader, writer, f"iec101-sim {peer}"))

    def _new_link(self) -> UnbalancedSecondary | BalancedLink:
        cfg = self.config
        if cfg.mode == "balanced":
            return BalancedLink(
                cfg.link_address,
                address_size=cfg.link_address_size,
                controlling=False,
                response_timeout=cfg.response_timeout_ms / 1000.0,
                retries=cfg.retries,
                reconnect_interval=cfg.reconnect_min_s,
                single_char_ack=self.single_char_ack,
                max_pending=4096,
            )
        return UnbalancedSecondary(
            cfg.link_address,
            address_size=cfg.link_address_size,
            single_char_ack=self.single_char_ack,
        )

    def _open_session(self, stream: ByteStream) -> None:
        s = _Session(self._new_link(), stream)
        self._sessions.append(s)
        self.counters["connections"] += 1
        self.last.clear()  # a new master gets every value again
        s.task = asyncio.get_running_loop().create_task(self._run_session(s))

    async def _close_session(self, s: _Session) -> None:
        if s in self._sessions:
            self._sessions.remove(s)
        if s.task is not None and s.task is not asyncio.current_task():
            s.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TransportError):
                await s.task
        await s.stream.close()

    async def _run_session(self, s: _Session) -> None:
        loop = asyncio.get_running_loop()
        link = s.link
        reader = loop.create_task(self._read(s))
        try:
            if isinstance(link, BalancedLink):
                link.start(loop.time())
            while True:
                s.wake.clear()
                await self._flush(s)
                if reader.done():
                    reader.result()
                    return
                dl = link.deadline if isinstance(link, BalancedLink) else None
                timeout = None if dl is None else max(0.001, dl - loop.time())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await s.wake.wait()
                if isinstance(link, BalancedLink) and not self.mute:
                    link.timeout(loop.time())
        except TransportError as e:
            log.debug("iec101 simulator: %s", e)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, TransportError):
                await reader
            if s in self._sessions:
                self._sessions.remove(s)
                await s.stream.close()

    async def _read(self, s: _Session) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await s.stream.read(4096)
                if not data:
                    return
                if not self.mute:
                    s.link.receive_data(data, loop.time())
                s.wake.set()
        finally:
            s.wake.set()

    async def _flush(self, s: _Session) -> None:
        link = s.link
        while True:
            ev = link.next_event()
            while ev is not None:
                if isinstance(ev, UserData):
                    self._on_asdu(s, ev.data)
                elif isinstance(ev, LinkReset) and not self._reported_init:
                    # First link reset after power-on: end of initialisation, local power on.
                    self._reported_init = True
                    eoi = ASDU(
                        TypeID.M_EI_NA_1,
                        Cause.INITIALIZED,
                        self.config.common_address,
                        (EndOfInitialisation(0, 0),),
                    )
                    self._emit_to(s, self._encode(eoi), 1)
                ev = link.next_event()
            if isinstance(link, BalancedLink) and s.backlog and link.state == LinkState.UP:
                backlog, s.backlog = s.backlog, []
                for i, data in enumerate(backlog):
                    try:
                        link.send(data, asyncio.get_running_loop().time())
                    except LocalProtocolError:  # full: keep the rest for later
                        s.backlog = backlog[i:]
                        break
            out = link.bytes_to_send()
            if self.mute or not out:
                return
            await s.stream.write(out)

    # --- application layer --------------------------------------------------------------------

    def _encode(self, asdu: ASDU) -> bytes:
        return encode_asdu(
            dataclasses.replace(asdu, originator=self.config.originator_address), self.params
        )

    def _pack(self, objs: list[InformationObject], cot: int) -> list[bytes]:
        """ASDUs of at most one frame each, one type per ASDU, carrying objs."""
        by_type: dict[TypeID, list[InformationObject]] = {}
        types = {p.ioa: TypeID[p.type] for p in self.config.points}
        for o in objs:
            by_type.setdefault(types[o.ioa], []).append(o)
        room = max_user_data(self.config.link_address_size)
        out = []
        for tid, group in by_type.items():
            k = max(1, max_objects(tid, self.params, room))
            for i in range(0, len(group), k):
                chunk = tuple(group[i : i + k])
                out.append(self._encode(ASDU(tid, cot, self.config.common_address, chunk)))
        return out

    def _emit(self, data: bytes, cls: int) -> int:
        n = 0
        for s in self._sessions:
            n += self._emit_to(s, data, cls)
        return n

    def _emit_to(self, s: _Session, data: bytes, cls: int) -> int:
        link = s.link
        if isinstance(link, UnbalancedSecondary):
            ok = link.queue_class1(data) if cls == 1 else link.queue_class2(data)
        elif link.state == LinkState.UP and not s.backlog:
            try:
                link.send(data, asyncio.get_running_loop().time())
                ok = True
            except LocalProtocolError:
                ok = False
            s.wake.set()
        elif len(s.backlog) < _BACKLOG:
            s.backlog.append(data)
            ok = True
        else:
            ok = False
        self.counters["sent_asdus" if ok else "dropped_asdus"] += 1
        return 1 if ok else 0

    def _reply(self, s: _Session, asdu: ASDU, cot: int, negative: bool = False) -> None:
        self._emit_to(s, self._encode(dataclasses.replace(asdu, cot=cot, negative=negative)), 1)

    def _on_asdu(self, s: _Session, data: bytes) -> None:
        try:
            asdu = decode_asdu(data, self.params)
        except ASDUError as e:
            self.counters["bad_asdus"] += 1
            log.debug("iec101 simulator: bad ASDU %s: %s", data.hex(" "), e)
            if data and len(data) >= 3 and "not supported" in e.what:
                # Unknown type identification: mirror it with COT 44, P/N = 1 (7.2.3).
                mirror = bytearray(data)
                mirror[2] = (mirror[2] & 0x80) | 0x40 | Cause.UNKNOWN_TYPE
                self._emit_to(s, bytes(mirror), 1)
            return
        ca = asdu.common_address
        cfg = self.config
        broadcast = (1 << (8 * self.params.ca_size)) - 1
        if ca not in (cfg.common_address, broadcast):
            self._reply(s, asdu, Cause.UNKNOWN_COMMON_ADDRESS, True)
            return
        tid = asdu.type_id
        if asdu.cot not in (Cause.ACTIVATION, Cause.DEACTIVATION) and not (
            tid == TypeID.C_RD_NA_1 and asdu.cot == Cause.REQUEST
        ):
            self._reply(s, asdu, Cause.UNKNOWN_CAUSE, True)
            return
        deact = asdu.cot == Cause.DEACTIVATION
        if tid == TypeID.C_IC_NA_1:
            self.counters["interrogations"] += 1
            self._reply(s, asdu, Cause.DEACTIVATION_CON if deact else Cause.ACTIVATION_CON)
            if deact:
                return
            qoi = asdu.objects[0].qualifier if isinstance(asdu.objects[0], Interrogation) else 20
            if qoi == 20:
                now = time.time() + self.clock_offset
                objs = []
                for pm in self.monitors:
                    if pm.type.startswith("M_IT"):
                        continue
                    cur = self._current(pm)
                    self.last[pm.ioa] = cur
                    objs.append(_object(pm, cur[0], cur[1], now))
                for data in self._pack(objs, Cause.INTERROGATED_STATION):
                    self._emit_to(s, data, 1)
            self._reply(s, asdu, Cause.ACTIVATION_TERMINATION)
        elif tid == TypeID.C_CI_NA_1:
            self.counters["counter_interrogations"] += 1
            self._reply(s, asdu, Cause.DEACTIVATION_CON if deact else Cause.ACTIVATION_CON)
            if deact:
                return
            now = time.time() + self.clock_offset
            objs = [
                _object(pm, *self._current(pm), now)
                for pm in self.monitors
                if pm.type.startswith("M_IT")
            ]
            for data in self._pack(objs, Cause.REQUESTED_COUNTERS):
                self._emit_to(s, data, 1)
            self._reply(s, asdu, Cause.ACTIVATION_TERMINATION)
        elif tid == TypeID.C_CS_NA_1:
            o = asdu.objects[0]
            if isinstance(o, ClockSync):
                try:
                    self.clock_offset = o.clock.to_epoch() - time.time()
                except ValueError:
                    self._reply(s, asdu, Cause.ACTIVATION_CON, True)
                    return
            self.counters["clock_syncs"] += 1
            self._reply(s, asdu, Cause.ACTIVATION_CON)
        elif tid == TypeID.C_TS_NA_1:
            o = asdu.objects[0]
            ok = isinstance(o, TestCommand) and o.pattern == 0x55AA
            self._reply(s, asdu, Cause.ACTIVATION_CON, not ok)
        elif tid == TypeID.C_RD_NA_1:
            o = asdu.objects[0]
            rd = next(
                (p for p in self.monitors if isinstance(o, ReadCommand) and p.ioa == o.ioa), None
            )
            if rd is None:
                self._reply(s, asdu, Cause.UNKNOWN_IOA, True)
                return
            cur = self._current(rd)
            obj = _object(rd, cur[0], cur[1], time.time() + self.clock_offset)
            self._emit_to(
                s, self._encode(ASDU(TypeID[rd.type], Cause.REQUEST, cfg.common_address, (obj,))), 1
            )
        elif tid in _COMMANDS:
            self._on_command(s, asdu)
        else:
            self._reply(s, asdu, Cause.UNKNOWN_TYPE, True)

    def _on_command(self, s: _Session, asdu: ASDU) -> None:
        o = asdu.objects[0] if asdu.objects else None
        pm = self.commands.get(o.ioa) if o is not None else None
        if o is None or pm is None:
            self._reply(s, asdu, Cause.UNKNOWN_IOA, True)
            return
        if TypeID[pm.type] != asdu.type_id:
            self._reply(s, asdu, Cause.UNKNOWN_TYPE, True)
            return
        self.counters["commands_received"] += 1
        if asdu.cot == Cause.DEACTIVATION:
            self.selected.pop(pm.ioa, None)
            self._reply(s, asdu, Cause.DEACTIVATION_CON)
            return
        if pm.ioa in self.refuse:
            self.counters["commands_refused"] += 1
            self._reply(s, asdu, Cause.ACTIVATION_CON, True)
            return
        raw = _command_raw(o)
        mono = time.monotonic()
        if getattr(o, "select", False):
            self.selected[pm.ioa] = (raw, mono)
            self._reply(s, asdu, Cause.ACTIVATION_CON)
            return
        if pm.select_before_operate:
            sel = self.selected.pop(pm.ioa, None)
            if sel is None or sel[0] != raw or mono - sel[1] > self.select_timeout_s:
                # Execute without a matching select: refused (select-before-operate point).
                self.counters["commands_refused"] += 1
                self._reply(s, asdu, Cause.ACTIVATION_CON, True)
                return
        value = raw * pm.scale + pm.offset
        try:
            self.write(pm.point, value)
        except Exception:
            self.counters["commands_refused"] += 1
            log.exception("iec101 simulator: command %s at IOA %s failed", pm.type, pm.ioa)
            self._reply(s, asdu, Cause.ACTIVATION_CON, True)
            return
        self._reply(s, asdu, Cause.ACTIVATION_CON)
        self._reply(s, asdu, Cause.ACTIVATION_TERMINATION)
        # Read-back: the monitor points of the same model point, as the device now has them.
        now = time.time() + self.clock_offset
        objs = []
        for m in self.by_ref.get(pm.point, []):
            cur = self._current(m)
            self.last[m.ioa] = cur
            objs.append(_object(m, cur[0], cur[1], now))
        for data in self._pack(objs, Cause.RETURN_REMOTE):
            self._emit_to(s, data, 1)


def site_simulator(
    site: SiteConfig,
    driver_id: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    serial_port: str | None = None,
    tick_s: float = 1.0,
    day_length_s: float = 86400.0,
) -> IEC101Simulator:
    """The simulator of a site's iec101 driver, as tools.sim.create_simulator builds them.

    TCP link: listens on host and port (default: the link's port). Serial link: serves on
    serial_port if given, else on a new pty pair whose slave path is `serial_port`.
    """
    return IEC101Simulator.from_site(
        site, driver_id, host=host, port=port, serial_port=serial_port, tick_s=tick_s,
        day_length_s=day_length_s,
    )  # fmt: skip


def _port_of(link: str) -> int:
    parts = urlsplit(link)
    if parts.scheme != "tcp" or parts.port is None:
        raise ValueError(f"{link!r} is not a tcp:// link: give port= or pty_fd=")
    return parts.port
