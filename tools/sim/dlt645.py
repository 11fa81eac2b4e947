"""A DL/T 645-2007 bus simulator: several meters sharing one serial line (pty) or one TCP link.

Theory of operation: each SimMeter keeps meter registers - phase voltages and currents, active,
reactive and apparent power, power factor, frequency, energies integrating the power per tariff
and quadrant, maximum demand, a clock (set by time sync and by writing 04000101/04000102),
status words (relay state in status word 3), event counters and freeze records. step(dt)
advances them: the active power follows the DER model behind the meter's power point when the
simulator is built from a site file, otherwise a smooth load profile; a tripped relay forces
power and currents to zero.

Every link (the pty master, or each TCP connection) runs the codec's Connection in the METER
role. For each request, the meters whose address it matches answer in turn - a broadcast (time
sync, broadcast freeze) is obeyed silently; a wildcard address is answered by the first meter
that matches. Answers longer than `max_data` (L <= 200 in DL/T 645-2007) are split into
follow-up frames (B1/B2, then 92). Serial timing: a pty delivers bytes instantly, so with
`baudrate` set the simulator waits, before answering, the wire time of the request it just got
plus that of its answer (11 bits per byte for 8E1) and the turnaround delay, which is what a
real bus at that speed would cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.codecs.dlt645 import (
    BROADCAST,
    ChangeBaudRate,
    ChangeBaudRateAck,
    ChangePassword,
    ChangePasswordAck,
    ClearDemand,
    ClearDemandAck,
    ClearEvents,
    ClearEventsAck,
    ClearMeter,
    ClearMeterAck,
    Connection,
    ControlAction,
    DecodeError,
    ErrorResponse,
    Event,
    Freeze,
    FreezeAck,
    LocalProtocolError,
    NeedData,
    OtherFrame,
    Password,
    ReadAddress,
    ReadAddressResponse,
    ReadData,
    ReadDataResponse,
    ReadFollowUp,
    ReadFollowUpResponse,
    RemoteControl,
    RemoteControlAck,
    Role,
    TimeSync,
    WriteAddress,
    WriteData,
    WriteDataAck,
    address_matches,
    encode,
    encode_item,
    lookup_di,
    wire_time,
)
from gateway.codecs.dlt645.data_ids import decode_item
from gateway.transports.stream import ByteStream, TransportError, parse_link, stream_from_fd
from model.drivers_dlt645 import DLT645DriverConfig
from model.natures import NATURES
from model.natures import Role as PointRole
from model.site import SiteConfig
from tools.sim.physics import DERModel, model_for

__all__ = ["DLT645Simulator", "SimMeter"]

log = logging.getLogger(__name__)

# Error word bits (DL/T 645-2007 错误信息字).
ERR_OTHER = 0x01
ERR_NO_DATA = 0x02
ERR_PASSWORD = 0x04
ERR_BAUD = 0x08

_ENERGY_KINDS = range(0x00, 0x0B)
_PHASE_BASES = (0x15, 0x29, 0x3D)
_PF = 0.95


@dataclass
class SimMeter:
    """One simulated meter's registers (values in kW, kvar, kWh, V, A; clock in meter time)."""

    address: str
    name: str = ""
    base_kw: float = 5.0
    tariffs: int = 4
    utc_offset_h: float = 8.0
    password: Password = field(default_factory=Password)
    relay_closed: bool = True
    silent: bool = False  # a dead meter: answers nothing
    p_kw: float = 0.0
    voltage: list[float] = field(default_factory=lambda: [220.0, 220.0, 220.0])
    frequency: float = 50.0
    # energy[kind DI2][0 = total, 1..tariffs] in kWh / kvarh / kVAh
    energy: dict[int, list[float]] = field(default_factory=dict)
    max_demand_kw: float = 0.0
    max_demand_at: datetime | None = None
    clock_offset_s: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    records: dict[int, Any] = field(default_factory=dict)
    overrides: dict[int, bytes] = field(default_factory=dict)  # DI -> raw data answered as is
    errors: dict[int, int] = field(default_factory=dict)  # DI -> error word answered instead
    writable: dict[int, Any] = field(default_factory=dict)
    model: DERModel | None = None
    _t: float = 0.0

    def __post_init__(self) -> None:
        for k in _ENERGY_KINDS:
            self.energy.setdefault(k, [0.0] * (self.tariffs + 1))
        for name in ("programming", "meter_clear", "demand_clear", "event_clear", "time_sync",
                     "cover_open", "power_down"):  # fmt: skip
            self.counters.setdefault(name, 0)
        self.writable.setdefault(0x04000103, 15)  # demand period, minutes
        self.writable.setdefault(0x04000104, 1)
        self.writable.setdefault(0x04000409, 1200)
        self.writable.setdefault(0x0400040A, 1200)
        self.writable.setdefault(0x04000402, self.address)
        self.step(0.0)

    # --- physics -------------------------------------------------------------------------

    def now(self) -> datetime:
        """The meter's clock: naive local time."""
        t = datetime.now(UTC) + timedelta(hours=self.utc_offset_h, seconds=self.clock_offset_s)
        return t.replace(tzinfo=None, microsecond=0)

    def set_clock(self, t: datetime) -> None:
        """Set the clock to meter-local time t."""
        real = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=self.utc_offset_h)
        self.clock_offset_s = (t - real).total_seconds()

    @property
    def q_kvar(self) -> float:
        """Reactive power at the fixed power factor, same sign as P."""
        return self.p_kw * math.tan(math.acos(_PF))

    @property
    def s_kva(self) -> float:
        """Apparent power."""
        return math.hypot(self.p_kw, self.q_kvar)

    def current(self, phase: int) -> float:
        """Phase current in A, signed like the power (P split evenly on three phases)."""
        v = self.voltage[phase] or 1.0
        return self.p_kw * 1000.0 / 3.0 / (v * _PF)

    def tariff(self) -> int:
        """The tariff running now (1..tariffs): by the meter's hour of day."""
        return 1 + (self.now().hour // 6) % self.tariffs

    def step(self, dt: float) -> None:
        """Advance power, voltages and the energy registers by dt seconds."""
        self._t += dt
        if self.model is not None:
            p = self.model.values.get(PointRole.P, 0.0)
        else:
            p = self.base_kw * (1.0 + 0.2 * math.sin(self._t / 60.0 + int(self.address) % 7))
        self.p_kw = p if self.relay_closed else 0.0
        wobble = math.sin(self._t / 30.0 + int(self.address) % 5)
        self.voltage = [220.0 + 2.0 * wobble, 221.0 + 2.0 * wobble, 219.5 + 2.0 * wobble]
        self.frequency = 50.0 + 0.02 * wobble
        if dt <= 0:
            return
        p, q, s = self.p_kw, self.q_kvar, self.s_kva
        t = self.tariff()
        hours = dt / 3600.0

        def add(kind: int, amount: float) -> None:
            reg = self.energy[kind]
            reg[0] += amount
            reg[t] += amount

        # P > 0 counts forward, P < 0 reverse (built from a site, P is the DER model's own P).
        add(0x01 if p >= 0 else 0x02, abs(p) * hours)
        add(0x09 if p >= 0 else 0x0A, s * hours)
        quadrant = (0x05 if q >= 0 else 0x08) if p >= 0 else (0x06 if q >= 0 else 0x07)
        add(quadrant, abs(q) * hours)
        # Combined registers (default combination words): active = forward + reverse,
        # reactive 1 = QI + QII, reactive 2 = QIII + QIV.
        e = self.energy
        e[0x00] = [a + b for a, b in zip(e[0x01], e[0x02], strict=True)]
        e[0x03] = [a + b for a, b in zip(e[0x05], e[0x06], strict=True)]
        e[0x04] = [a + b for a, b in zip(e[0x07], e[0x08], strict=True)]
        if abs(p) > self.max_demand_kw:
            self.max_demand_kw, self.max_demand_at = abs(p), self.now()

    # --- registers -------------------------------------------------------------------------

    def status_word3(self) -> int:
        """Status word 3: bit4 relay state and bit6 relay command (1 = open)."""
        return 0 if self.relay_closed else 0x50

    def value(self, di: int) -> Any:
        """The value of a data item for encode_item, or None if this meter has no such item."""
        di3, di2, di1, di0 = di >> 24, (di >> 16) & 0xFF, (di >> 8) & 0xFF, di & 0xFF
        if di3 == 0x00:
            return self._energy_value(di2, di1, di0)
        if di3 == 0x01:
            if di2 != 0x01 or di0 or (di1 and di1 != 0xFF):
                return None
            at = self.max_demand_at or self.now()
            rec = {"value": round(self.max_demand_kw, 4), "time": at.strftime("%Y-%m-%d %H:%M")}
            zero = {"value": 0.0, "time": "2000-01-01 00:00"}
            return [rec] + [zero] * self.tariffs if di1 == 0xFF else rec
        if di3 == 0x02:
            return self._instant(di)
        if di in self.records:
            return self.records[di]
        counters = {
            0x03300000: "programming", 0x03300100: "meter_clear", 0x03300200: "demand_clear",
            0x03300300: "event_clear", 0x03300400: "time_sync", 0x03300D00: "cover_open",
            0x03110000: "power_down",
        }  # fmt: skip
        if di in counters:
            return self.counters[counters[di]]
        if di == 0x04000101:
            return self.now()
        if di == 0x04000102:
            return self.now()
        if di == 0x0400010C:
            return self.now()
        if di == 0x04000401:
            return self.address
        if di == 0x04000501:
            return 0x0010 if self.p_kw < 0 else 0  # bit4: active power reverse
        if di == 0x04000503:
            return self.status_word3()
        if 0x04000502 <= di <= 0x04000507:
            return 0
        if di == 0x040005FF:
            return [0x0010 if self.p_kw < 0 else 0, 0, self.status_word3(), 0, 0, 0, 0]
        return self.writable.get(di)

    def _energy_value(self, di2: int, di1: int, di0: int) -> Any:
        if di0:  # past settlement days: nothing settled in a simulation, zeros
            regs = [0.0] * (self.tariffs + 1)
        elif di2 in self.energy:
            regs = self.energy[di2]
        elif any(b <= di2 < b + 10 for b in _PHASE_BASES):
            base = next(b for b in _PHASE_BASES if b <= di2 < b + 10)
            kind = (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A)[di2 - base]
            regs = [v / 3.0 for v in self.energy[kind]]
        else:
            return None
        regs = [round(v, 2) for v in regs]
        if di1 == 0xFF:
            return regs
        if di1 > self.tariffs:
            return None
        return regs[di1]

    def _instant(self, di: int) -> Any:
        di2, di1 = (di >> 16) & 0xFF, (di >> 8) & 0xFF
        p, q, s = self.p_kw, self.q_kvar, self.s_kva
        pf = _PF if p >= 0 else -_PF
        per_phase: dict[int, tuple[list[float], bool]] = {
            0x01: ([round(v, 1) for v in self.voltage], False),
            0x02: ([round(self.current(i), 3) for i in range(3)], False),
            0x03: ([round(x, 4) for x in (p, p / 3, p / 3, p / 3)], True),
            0x04: ([round(x, 4) for x in (q, q / 3, q / 3, q / 3)], True),
            0x05: ([round(x, 4) for x in (s, s / 3, s / 3, s / 3)], True),
            0x06: ([round(pf, 3)] * 4, True),
            0x07: ([0.0, 120.0, 240.0], False),
            0x08: ([1.2, 1.3, 1.1], False),
            0x09: ([3.4, 3.3, 3.5], False),
        }
        if di >> 24 == 0x02 and di2 in per_phase and di & 0xFF == 0:
            vals, total = per_phase[di2]
            if di1 == 0xFF:
                return vals
            k = di1 if total else di1 - 1
            return vals[k] if 0 <= k < len(vals) else None
        singles = {
            0x02800001: 0.0,
            0x02800002: round(self.frequency, 2),
            0x02800003: round(p, 4),
            0x02800004: round(p, 4),
            0x02800005: round(q, 4),
            0x02800006: round(s, 4),
            0x02800007: 31.5,
            0x02800008: 3.6,
            0x02800009: 6.0,
            0x0280000A: 1440,
        }
        return singles.get(di)

    # --- commands --------------------------------------------------------------------------

    def record_time_sync(self, before: datetime, after: datetime, operator: str) -> None:
        """Keep the clock-setting event (count and latest record)."""
        self.counters["time_sync"] += 1
        self.records[0x03300401] = {"operator": operator, "before": before, "after": after}

    def clear_events(self, di: int, operator: str) -> None:
        """Event clear: counters to zero, keep the clear record."""
        for k in self.counters:
            self.counters[k] = 0
        self.counters["event_clear"] = 1
        self.records = {0x03300301: {"time": self.now(), "operator": operator, "di": f"{di:08X}"}}

    def freeze_now(self, slot: int = 1) -> None:
        """Instant freeze: keep the time and the forward/reverse energies."""
        self.records[0x05010000 | slot] = self.now()
        self.records[0x05010100 | slot] = [round(v, 2) for v in self.energy[0x01]]
        self.records[0x05010200 | slot] = [round(v, 2) for v in self.energy[0x02]]


class DLT645Simulator:
    """Several meters on one bus, answering over TCP (host/port) or a pty master fd."""

    def __init__(
        self,
        config: DLT645DriverConfig | SiteConfig | Iterable[SimMeter],
        driver_id: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        pty_fd: int | None = None,
        tick_s: float = 1.0,
        baudrate: int | None = None,
        turnaround_s: float = 0.0,
        max_data: int = 200,
        preamble: int = 0,
        day_length_s: float = 86400.0,
        speedup: float = 1.0,
    ) -> None:
        self.host = host
        self.port = 0 if port is None else port
        self.pty_fd = pty_fd
        self.tick_s = tick_s
        self.baudrate = baudrate
        self.turnaround_s = turnaround_s
        self.max_data = max_data
        self.preamble = preamble
        self.speedup = speedup  # simulated seconds per wall-clock second (energy fills faster)
        self.meters: list[SimMeter] = []
        self._models: list[DERModel] = []
        if isinstance(config, SiteConfig):
            cfg = self._driver_of(config, driver_id)
            self.meters = self._meters_of(cfg, config, day_length_s)
        elif isinstance(config, DLT645DriverConfig):
            self.meters = self._meters_of(config, None, day_length_s)
        else:
            self.meters = list(config)
        if not self.meters:
            raise ValueError("a DL/T 645 bus simulator needs at least one meter")
        self.link = ""
        if isinstance(config, SiteConfig | DLT645DriverConfig):
            cfg = (
                config
                if isinstance(config, DLT645DriverConfig)
                else self._driver_of(config, driver_id)
            )
            self.link = cfg.link
            spec = parse_link(cfg.link)
            if port is None and pty_fd is None and spec.kind == "tcp":
                self.port = spec.port  # listen where the driver will connect
        self.requests = 0
        self.answers = 0
        self.bad_frames = 0
        self.writes = 0
        self.controls = 0
        self.time_syncs = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: set[ByteStream] = set()
        self._pending: dict[tuple[str, int], list[bytes]] = {}  # follow-up chunks per meter, DI

    # --- construction --------------------------------------------------------------------

    @staticmethod
    def _driver_of(site: SiteConfig, driver_id: str | None) -> DLT645DriverConfig:
        drivers: list[Any] = [d for d in site.drivers if getattr(d, "protocol", "") == "dlt645"]
        if driver_id is not None:
            drivers = [d for d in drivers if d.id == driver_id]
        if not drivers:
            raise KeyError(f"no dlt645 driver {driver_id or ''} in the site file")
        d = drivers[0]
        if isinstance(d, DLT645DriverConfig):
            return d
        return DLT645DriverConfig.model_validate(d.model_dump())

    def _meters_of(
        self, cfg: DLT645DriverConfig, site: SiteConfig | None, day_length_s: float
    ) -> list[SimMeter]:
        power_points: dict[str, str] = {}  # point -> meter name, for active power items
        for it in cfg.items:
            if it.data_item().di in (0x02030000, 0x02800003):
                power_points.setdefault(it.point, it.meter)
        models: dict[str, DERModel] = {}
        if site is not None:
            for i, (vpp_id, res) in enumerate(site.resources()):
                ld = f"{vpp_id}.{res.id}/"
                for t in NATURES[res.kind].points:
                    meter = power_points.get(ld + t.path)
                    if meter is not None and t.role == PointRole.P and meter not in models:
                        m = model_for(res, day_length_s=day_length_s, day_offset_s=i * 7.0)
                        models[meter] = m
                        self._models.append(m)
        out = []
        for k, mcfg in enumerate(cfg.meters):
            out.append(
                SimMeter(
                    mcfg.address,
                    name=mcfg.name,
                    base_kw=3.0 + k,
                    utc_offset_h=cfg.meter_utc_offset_h,
                    password=Password(cfg.password_level, cfg.password.upper()),
                    model=models.get(mcfg.name),
                )
            )
        return out

    @property
    def where(self) -> str:
        """Where the simulator answers: 'tcp://host:port' or 'pty fd N'."""
        if self.pty_fd is not None:
            return f"pty fd {self.pty_fd}"
        return f"tcp://{self.host}:{self.port}"

    def meter(self, address_or_name: str) -> SimMeter:
        """A meter by address or name (KeyError if none)."""
        for m in self.meters:
            if address_or_name in (m.address, m.name):
                return m
        raise KeyError(address_or_name)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the pty master fd, or listen on host:port (port 0: ephemeral, stored back)."""
        if self.pty_fd is not None:
            stream = await stream_from_fd(self.pty_fd, "dlt645-sim pty")
            self._spawn(self._serve_stream(stream))
            return
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._on_client, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])
        log.info("dlt645 sim: %d meter(s) on %s:%d", len(self.meters), self.host, self.port)

    async def stop(self) -> None:
        """Stop answering: close the listener, every connection and the pty stream; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for s in list(self._streams):
            await s.close()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await server.wait_closed()

    async def serve(self, stop: asyncio.Event) -> None:
        """Start, step the meters every tick_s until `stop` is set, then stop."""
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

    def step(self, dt: float) -> None:
        """Advance the DER models and every meter by dt seconds."""
        now = time.time()
        for m in self._models:
            m.step(now, dt)
        for meter in self.meters:
            meter.step(dt * self.speedup)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name="dlt645-sim link")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        stream = ByteStream(reader, writer, f"dlt645-sim tcp {peer}")
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._serve_stream(stream)

    # --- the bus ---------------------------------------------------------------------------

    async def _serve_stream(self, stream: ByteStream) -> None:
        conn = Connection(Role.METER)
        self._streams.add(stream)
        try:
            while True:
                data = await stream.read(4096)
                if not data:
                    return
                conn.receive_data(data)
                while True:
                    before = conn.decoder.frames.preamble_bytes
                    try:
                        event = conn.next_event()
                    except DecodeError as e:
                        self.bad_frames += 1
                        log.debug("dlt645 sim: bad frame dropped: %s", e)
                        continue
                    if isinstance(event, NeedData):
                        break
                    received = len(encode(event)) + conn.decoder.frames.preamble_bytes - before
                    await self._answer(stream, event, received)
        except (TransportError, ConnectionError, OSError) as e:
            log.debug("dlt645 sim: link closed: %s", e)
        finally:
            self._streams.discard(stream)
            await stream.close()

    async def _answer(self, stream: ByteStream, event: Event, received: int) -> None:
        self.requests += 1
        if isinstance(event, TimeSync):
            self.time_syncs += 1
        answers: list[Event] = []
        broadcast = event.address == BROADCAST
        for meter in self.meters:
            if meter.silent or not (broadcast or address_matches(event.address, meter.address)):
                continue
            try:
                a = self._handle(meter, event)
            except LocalProtocolError as e:  # a value our own table cannot encode: a bug
                log.warning("dlt645 sim: meter %s cannot answer %r: %s", meter.address, event, e)
                a = ErrorResponse(meter.address, int(getattr(event, "function", 0x11)), ERR_OTHER)
            if a is not None and not broadcast:
                answers.append(a)
                if "A" in event.address:
                    break  # a wildcard is answered by the first meter that matches
        out = b"".join(encode(a, self.preamble) for a in answers)
        delay = self.turnaround_s if answers else 0.0
        if self.baudrate:
            delay += wire_time(received + len(out), self.baudrate)
        if delay > 0:
            await asyncio.sleep(delay)
        if out:
            self.answers += len(answers)
            await stream.write(out)

    def _handle(self, meter: SimMeter, ev: Event) -> Event | None:
        a = meter.address
        match ev:
            case ReadData():
                return self._read(meter, ev.di)
            case ReadFollowUp():
                chunks = self._pending.get((a, ev.di))
                if not chunks or ev.seq > len(chunks):
                    return ErrorResponse(a, 0x12, ERR_NO_DATA)
                more = ev.seq < len(chunks)
                return ReadFollowUpResponse(a, ev.di, chunks[ev.seq - 1], ev.seq, more)
            case ReadAddress():
                return ReadAddressResponse(a)
            case TimeSync():
                before = meter.now()
                meter.set_clock(ev.time)
                meter.record_time_sync(before, ev.time, "00000000")
                return None
            case WriteData():
                return self._write(meter, ev)
            case WriteAddress():
                return ErrorResponse(a, 0x15, ERR_OTHER)  # addresses are fixed in the simulation
            case Freeze():
                if ev.when == "99999999":
                    meter.freeze_now()
                return FreezeAck(a)
            case ChangeBaudRate():
                if ev.baud not in (1200, 2400, 4800, 9600):
                    return ErrorResponse(a, 0x17, ERR_BAUD)
                return ChangeBaudRateAck(a, ev.baud)
            case ChangePassword():
                if ev.old != meter.password:
                    return ErrorResponse(a, 0x18, ERR_PASSWORD)
                meter.password = ev.new
                return ChangePasswordAck(a, ev.new)
            case ClearDemand():
                if ev.password != meter.password:
                    return ErrorResponse(a, 0x19, ERR_PASSWORD)
                meter.max_demand_kw, meter.max_demand_at = 0.0, None
                meter.counters["demand_clear"] += 1
                return ClearDemandAck(a)
            case ClearMeter():
                if ev.password != meter.password:
                    return ErrorResponse(a, 0x1A, ERR_PASSWORD)
                for reg in meter.energy.values():
                    reg[:] = [0.0] * len(reg)
                meter.max_demand_kw = 0.0
                meter.counters["meter_clear"] += 1
                return ClearMeterAck(a)
            case ClearEvents():
                if ev.password != meter.password:
                    return ErrorResponse(a, 0x1B, ERR_PASSWORD)
                meter.clear_events(ev.di, ev.operator)
                return ClearEventsAck(a)
            case RemoteControl():
                return self._control(meter, ev)
            case OtherFrame():
                return (
                    ErrorResponse(a, ev.control & 0x1F, ERR_OTHER)
                    if ev.control & 0x1F in (0x11, 0x14)
                    else None
                )
        return None

    def _read(self, meter: SimMeter, di: int) -> Event:
        a = meter.address
        err = meter.errors.get(di)
        if err is not None:
            return ErrorResponse(a, 0x11, err)
        data = meter.overrides.get(di)
        if data is None:
            item = lookup_di(di)
            value = None if item is None or item.access == "w" else meter.value(di)
            if item is None or value is None:
                return ErrorResponse(a, 0x11, ERR_NO_DATA)
            data = encode_item(item, value)
        room = self.max_data - 4
        if len(data) <= room:
            return ReadDataResponse(a, di, data)
        # Long data: the first part now (B1), the rest as follow-up frames of room - 1 bytes.
        first, rest = data[:room], data[room:]
        step = room - 1
        self._pending[(a, di)] = [rest[i : i + step] for i in range(0, len(rest), step)]
        return ReadDataResponse(a, di, first, more=True)

    def _write(self, meter: SimMeter, ev: WriteData) -> Event:
        a = meter.address
        if ev.password != meter.password:
            return ErrorResponse(a, 0x14, ERR_PASSWORD)
        item = lookup_di(ev.di)
        if item is None or item.access == "r":
            return ErrorResponse(a, 0x14, ERR_OTHER)
        try:
            value = decode_item(item, ev.data)
        except DecodeError:
            return ErrorResponse(a, 0x14, ERR_OTHER)
        self.writes += 1
        meter.counters["programming"] += 1
        if ev.di in (0x04000101, 0x04000102, 0x0400010C):
            before = meter.now()
            meter.set_clock(_merge_clock(before, ev.di, str(value)))
            meter.record_time_sync(before, meter.now(), ev.operator)
        elif 0x04000C01 <= ev.di <= 0x04000C0A:
            pass  # passwords are changed with 18H in this simulation
        else:
            meter.writable[ev.di] = value
        return WriteDataAck(a)

    def _control(self, meter: SimMeter, ev: RemoteControl) -> Event:
        a = meter.address
        if ev.password != meter.password:
            return ErrorResponse(a, 0x1C, ERR_PASSWORD)
        if ev.valid_until < meter.now():
            return ErrorResponse(a, 0x1C, ERR_OTHER)  # the command has expired
        self.controls += 1
        if ev.action == ControlAction.TRIP:
            meter.relay_closed = False
        elif ev.action in (ControlAction.CLOSE, ControlAction.CLOSE_ALLOWED):
            meter.relay_closed = True
        meter.step(0.0)
        return RemoteControlAck(a)


def _merge_clock(before: datetime, di: int, text: str) -> datetime:
    """The new clock after writing the date (04000101), the time (04000102) or both (0400010C)."""
    g = [int(x) for x in re.findall(r"\d+", text)]
    if di == 0x04000101:
        return before.replace(year=g[0], month=g[1], day=g[2])
    if di == 0x04000102:
        return before.replace(hour=g[0], minute=g[1], second=g[2])
    return datetime(g[0], g[1], g[2], g[4], g[5], g[6])
