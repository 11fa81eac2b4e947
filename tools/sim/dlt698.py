"""A DL/T 698.45 meter simulator: the meters of one dlt698 driver config on TCP or a pty.

Theory of operation: every meter holds an object image, (OI, attribute) -> Data, filled from the
OAD table for every OAD the config reads (voltages, currents, powers, energies ... with the
table's types) plus attribute 3 (scaler-unit) of each numeric object. Requests are answered from
the image through the same sans-IO codec the gateway uses: GET (Normal, NormalList; Record is
answered with DAR object-nonexistent), SET (the element's type must match), ACTION (8000 remote
control trip/close and 8001 power protection change the image; other methods are refused),
CONNECT/RELEASE, and SECURITY-Request in plaintext (answered in plaintext with a MAC the
simulator does not compute: four zero bytes). Frames addressed to another meter are ignored;
a wildcard or broadcast address is answered by the first matching meter.

A response larger than max_frame is sent in link-layer fragments, each after the client's
confirmation of the previous one. With reports enabled, a change of a read value (set_value(),
or the physics step) is sent as a REPORT-Notification to every client, which must answer with a
REPORT-Response (counted in reports_acked).

Values: without a site every value stays as set (tests set them); with dynamics=True the meter
draws a slowly varying load and integrates its energy; with a site, points bound to simulated
DERs (tools.sim.physics) take the DER's value, converted back through the item's scale/offset
and the object's scaler, and a SET of such an item is a set-point for the DER.

Transports: serve() listens on TCP (host, port; port 0 picks a free one) or, with pty_fd, plays
the meters on the master side of a pty whose slave the driver opens as serial://<slave path>.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.codecs.dlt698 import (
    NEED_DATA,
    OAD,
    OMD,
    ActionRequest,
    ActionRequestList,
    ActionResponse,
    ActionResponseList,
    AddressType,
    Apdu,
    ApduReceived,
    AResultNormal,
    AResultRecord,
    BitString,
    ConnectRequest,
    ConnectResponse,
    Dar,
    Data,
    DateTimeS,
    DecodeError,
    Direction,
    ErrorResponse,
    FragmentAcked,
    FragmentReceived,
    Frame,
    GetRequestNormal,
    GetRequestNormalList,
    GetRequestRecord,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    Link,
    ReleaseRequest,
    ReleaseResponse,
    ReportNotificationList,
    ReportResponseList,
    ReportResponseRecordList,
    ScalerUnit,
    SecurityRequest,
    SecurityResponse,
    ServerAddress,
    SetRequestNormal,
    SetRequestNormalList,
    SetResponseNormal,
    Tag,
    encode_apdu,
    frames_for,
    lookup,
    parse_oad,
    to_number,
)
from gateway.codecs.dlt698.apdu import SetResponseNormalList
from gateway.codecs.dlt698.oad import element_names
from gateway.transports.stream import ByteStream, TransportError, stream_from_fd
from model.drivers_dlt698 import DLT698DriverConfig, DLT698Item
from model.natures import NATURES
from model.site import SiteConfig
from tools.sim.binding import SimBinding
from tools.sim.physics import model_for

__all__ = ["DLT698Simulator", "SimMeter", "bind_points"]

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (OI, attribute)

_DEFAULTS: dict[int, int] = {  # raw values (before the scaler) of a fresh meter
    0x2000: 2200,  # 220.0 V
    0x2001: 5000,  # 5.000 A
    0x2004: 11000,  # 1100.0 W
    0x2005: 2000,  # 200.0 var
    0x2006: 11180,
    0x200A: 984,  # 0.984
    0x200F: 5000,  # 50.00 Hz
    0x2010: 250,  # 25.0 degC
}
_ARRAY_LEN = {"phases": 3, "total_phases": 4, "tariffs": 5}


def bind_points(site: SiteConfig, refs: set[str], day_length_s: float = 86400.0) -> SimBinding:
    """DER models for the resources whose points are in refs (as tools.sim.binding does)."""
    models = []
    by_point = {}
    for i, (vpp_id, res) in enumerate(site.resources()):
        ld = f"{vpp_id}.{res.id}/"
        mine = [t for t in NATURES[res.kind].points if ld + t.path in refs]
        if not mine:
            continue
        m = model_for(res, day_length_s=day_length_s, day_offset_s=i * 7.0)
        models.append(m)
        for t in mine:
            by_point[ld + t.path] = (m, t.role)
    return SimBinding(models, by_point)


def _zero(tag: Tag) -> Data:
    if tag == Tag.BOOL:
        return Data(tag, False)
    if tag in (Tag.FLOAT32, Tag.FLOAT64):
        return Data(tag, 0.0)
    if tag == Tag.OCTET_STRING:
        return Data(tag, b"")
    if tag == Tag.VISIBLE_STRING:
        return Data(tag, "")
    if tag == Tag.BIT_STRING:
        return Data(tag, BitString(8, b"\x00"))
    if tag == Tag.DATE_TIME_S:
        return Data(tag, DateTimeS.from_datetime(_now()))
    return Data(tag, 0)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _with_number(d: Data, n: float) -> Data:
    """d with its number replaced by n (rounded and clamped to the type's range)."""
    if d.tag == Tag.BOOL:
        return Data(d.tag, bool(n))
    if d.tag in (Tag.FLOAT32, Tag.FLOAT64):
        return Data(d.tag, float(n))
    lo, hi = {
        Tag.INTEGER: (-128, 127), Tag.LONG: (-32768, 32767), Tag.UNSIGNED: (0, 255),
        Tag.LONG_UNSIGNED: (0, 65535), Tag.DOUBLE_LONG: (-(2**31), 2**31 - 1),
        Tag.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1), Tag.LONG64: (-(2**63), 2**63 - 1),
        Tag.LONG64_UNSIGNED: (0, 2**64 - 1), Tag.ENUM: (0, 255),
    }.get(d.tag, (0, 0))  # fmt: skip
    if lo == hi:
        return d
    v = 0 if not math.isfinite(n) else round(n)
    return Data(d.tag, max(lo, min(hi, v)))


@dataclass
class SimMeter:
    """One simulated meter: its address and object image."""

    name: str
    address: bytes  # wire order
    image: dict[Key, Data] = field(default_factory=dict)
    failing: dict[OAD, Dar] = field(default_factory=dict)  # GET of these OADs answers a DAR
    refusing: dict[str, Dar] = field(default_factory=dict)  # "OAD"/"OMD" hex -> DAR on SET/ACTION
    password: str | None = None
    relay_closed: bool = True
    protected: bool = False

    def get(self, oad: OAD) -> Data | Dar:
        """The value of an OAD (whole attribute or element), or the DAR a meter answers."""
        if oad in self.failing:
            return self.failing[oad]
        d = self.image.get((oad.oi, oad.attribute))
        if d is None:
            return Dar(6)  # object nonexistent
        if oad.index == 0:
            return d
        if d.tag not in (Tag.ARRAY, Tag.STRUCTURE) or not isinstance(d.value, tuple):
            return Dar(8)  # out of range
        if oad.index > len(d.value):
            return Dar(8)
        e = d.value[oad.index - 1]
        return e if isinstance(e, Data) else Dar(7)

    def put(self, oad: OAD, value: Data) -> Dar:
        """Store a value (whole attribute or element) if its type matches; the DAR."""
        key = (oad.oi, oad.attribute)
        cur = self.image.get(key)
        if cur is None:
            return Dar(6)
        if oad.index == 0:
            if cur.tag != value.tag:
                return Dar(7)
            self.image[key] = value
            return Dar(0)
        if cur.tag not in (Tag.ARRAY, Tag.STRUCTURE) or not isinstance(cur.value, tuple):
            return Dar(8)
        if oad.index > len(cur.value):
            return Dar(8)
        old = cur.value[oad.index - 1]
        if not isinstance(old, Data) or old.tag != value.tag:
            return Dar(7)
        elems = list(cur.value)
        elems[oad.index - 1] = value
        self.image[key] = Data(cur.tag, tuple(elems))  # type: ignore[arg-type]
        return Dar(0)


@dataclass(eq=False)
class _Session:
    stream: ByteStream
    link: Link = field(default_factory=Link)
    pending: list[bytes] = field(default_factory=list)  # fragments waiting for confirmation
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class DLT698Simulator:
    """Simulated meters answering a dlt698 driver config's requests."""

    def __init__(
        self,
        config: DLT698DriverConfig,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        pty_fd: int | None = None,
        tick_s: float = 1.0,
        reports: bool = False,
        max_frame: int = 2048,
        dynamics: bool = False,
        site: SiteConfig | None = None,
        day_length_s: float = 86400.0,
    ) -> None:
        self.config = config
        self.host = host
        if port is None:
            port = 0
            if config.link.startswith("tcp://"):
                from urllib.parse import urlsplit

                port = urlsplit(config.link).port or 0
        self.port = port
        self.pty_fd = pty_fd
        self.tick_s = tick_s
        self.reports = reports
        self.max_frame = max_frame
        self.dynamics = dynamics
        self.mute = False  # True: ignore every request (a meter gone silent)
        self.meters: dict[str, SimMeter] = {}
        self.requests = 0
        self.connects = 0
        self.releases = 0
        self.sets = 0
        self.actions = 0
        self.reports_sent = 0
        self.reports_acked = 0
        self.security_requests = 0
        self.fragments_sent = 0
        self.fragments_received = 0
        self._items: dict[str, list[DLT698Item]] = {}
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty: dict[str, set[OAD]] = {}
        self._dirty_event = asyncio.Event()
        self._piid = 0
        self._t0 = time.monotonic()
        self._energy_acc: dict[str, float] = {}
        for m in config.meters:
            sa = ServerAddress.from_text(m.address)
            meter = SimMeter(m.name, sa.address, password=m.password)
            self.meters[m.name] = meter
            self._items[m.name] = [it for it in config.items if it.meter == m.name]
            self._fill(meter, self._items[m.name])
        refs = {it.point for it in config.items}
        self.binding = bind_points(site, refs, day_length_s) if site is not None else None
        self.step(0.0)

    @classmethod
    def from_site(cls, site: SiteConfig, driver_id: str, **kw: Any) -> DLT698Simulator:
        """The simulator of driver `driver_id` of a site file, with its DER physics."""
        cfg = next((d for d in site.drivers if d.id == driver_id), None)
        if cfg is None:
            have = ", ".join(d.id for d in site.drivers)
            raise KeyError(f"no driver {driver_id!r} in the site file (have: {have})")
        if not isinstance(cfg, DLT698DriverConfig):
            raise ValueError(f"driver {driver_id!r} is {cfg.protocol}, not dlt698")
        return cls(cfg, site=site, **kw)

    # --- the object image ----------------------------------------------------------------

    def _fill(self, meter: SimMeter, items: list[DLT698Item]) -> None:
        img = meter.image
        img[(0x4001, 2)] = Data(Tag.OCTET_STRING, meter.address[::-1])
        img[(0x4000, 2)] = _zero(Tag.DATE_TIME_S)
        img[(0x8000, 3)] = Data(Tag.BIT_STRING, BitString(8, b"\x00"))  # bit 0 set = tripped
        img[(0x8001, 2)] = Data(Tag.ENUM, 0)
        for it in items:
            oad = parse_oad(it.oad)
            key = (oad.oi, oad.attribute)
            if key in img:
                continue
            obj = lookup(oad.oi) if oad.attribute == 2 else None
            if obj is not None:
                tag = Tag[obj.value_type.upper().replace("-", "_")]
                raw = _DEFAULTS.get(oad.oi, 0)
                elem = _with_number(_zero(tag), raw) if raw else _zero(tag)
                if obj.dtype == "array":
                    n = max(_ARRAY_LEN.get(obj.elements, 1), it.index or 0, oad.index)
                    img[key] = Data(Tag.ARRAY, tuple(elem for _ in range(n)))
                else:
                    img[key] = elem
                if obj.class_id <= 6:
                    img[(oad.oi, 3)] = Data(Tag.SCALER_UNIT, ScalerUnit(obj.scaler, obj.unit))
            else:
                tag = Tag[(it.dtype or "double-long").upper().replace("-", "_")]
                if it.bit is not None:
                    tag = Tag.BIT_STRING
                elem = _zero(tag)
                if it.index:
                    img[key] = Data(Tag.ARRAY, tuple(elem for _ in range(it.index)))
                else:
                    img[key] = elem

    def meter(self, name: str | None = None) -> SimMeter:
        """A meter by name (the first one by default)."""
        return self.meters[name] if name else next(iter(self.meters.values()))

    def set_value(self, oad: str | OAD, value: Data | float, meter: str | None = None) -> None:
        """Set a value: a Data, or a number in engineering units (the table's scaler applied)."""
        m = self.meter(meter)
        o = parse_oad(oad) if isinstance(oad, str) else oad
        if not isinstance(value, Data):
            cur = m.get(o)
            if not isinstance(cur, Data):
                raise KeyError(f"{m.name} has no {o}")
            obj = lookup(o.oi)
            scaler = obj.scaler if obj and o.attribute == 2 else 0
            su = m.image.get((o.oi, 3))
            if su is not None and isinstance(su.value, ScalerUnit):
                scaler = su.value.scaler
            value = _with_number(cur, value / 10.0**scaler)
        dar = m.put(o, value)
        if not dar.ok:
            raise ValueError(f"{m.name}: cannot set {o}: {dar}")
        self._changed(m, o)

    def value(self, oad: str | OAD, meter: str | None = None) -> Data | Dar:
        """The current value of an OAD."""
        return self.meter(meter).get(parse_oad(oad) if isinstance(oad, str) else oad)

    def _changed(self, m: SimMeter, o: OAD) -> None:
        if not self.reports:
            return
        self._dirty.setdefault(m.name, set()).add(o.whole())
        self._dirty_event.set()

    def step(self, dt: float) -> None:
        """Advance time: the meter clock, synthetic dynamics, DER physics."""
        for m in self.meters.values():
            m.image[(0x4000, 2)] = _zero(Tag.DATE_TIME_S)
        if self.dynamics and dt > 0:
            self._dynamics(dt)
        if self.binding is not None:
            self.binding.step(time.time(), dt)
            for name, items in self._items.items():
                m = self.meters[name]
                for it in items:
                    if it.point in self.binding.by_point and it.bit is None:
                        self._store_model(m, it, self.binding.read(it.point))

    def _dynamics(self, dt: float) -> None:
        t = time.monotonic() - self._t0
        for m in self.meters.values():
            p = m.image.get((0x2004, 2))
            if p is None or not isinstance(p.value, tuple):
                continue
            watts = 1100.0 + 400.0 * math.sin(t / 60.0)
            raw = round(watts * 10)
            elems = [e for e in p.value if isinstance(e, Data)]
            new = Data(
                Tag.ARRAY,
                tuple(_with_number(e, raw if i == 0 else raw / 3) for i, e in enumerate(elems)),
            )
            if new != p:
                m.image[(0x2004, 2)] = new
                self._changed(m, OAD(0x2004, 2))
            e = m.image.get((0x0010, 2))
            if e is not None and isinstance(e.value, tuple) and e.value:
                first = e.value[0]
                if isinstance(first, Data) and isinstance(first.value, int):
                    # Energy in 0.01 kWh steps: carry the fraction between steps.
                    acc = self._energy_acc.get(m.name, 0.0) + watts * dt / 3600.0 / 10.0
                    steps = int(acc)
                    self._energy_acc[m.name] = acc - steps
                    if steps:
                        total = _with_number(first, first.value + steps)
                        m.image[(0x0010, 2)] = Data(Tag.ARRAY, (total, *e.value[1:]))
                        self._changed(m, OAD(0x0010, 2))

    def _scaler(self, m: SimMeter, o: OAD, it: DLT698Item) -> int:
        if it.scaler is not None:
            return it.scaler
        su = m.image.get((o.oi, 3))
        if o.attribute == 2 and su is not None and isinstance(su.value, ScalerUnit):
            return su.value.scaler
        obj = lookup(o.oi)
        return obj.scaler if obj and o.attribute == 2 else 0

    def _store_model(self, m: SimMeter, it: DLT698Item, model_value: float) -> None:
        o = parse_oad(it.oad)
        if it.index:
            o = OAD(o.oi, o.attribute, it.index, o.feature)
        cur = m.get(o)
        if not isinstance(cur, Data):
            return
        raw = (model_value - it.offset) / it.scale / 10.0 ** self._scaler(m, o, it)
        new = _with_number(cur, raw)
        if new != cur and m.put(o, new).ok:
            self._changed(m, o)

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while serving."""
        return self._server is not None or bool(self._sessions)

    async def start(self) -> None:
        """Listen on TCP, or serve the pty master."""
        if self.pty_fd is not None:
            stream = await stream_from_fd(self.pty_fd, "dlt698-sim-pty")
            self._spawn(self._session(stream))
        else:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
            sock = self._server.sockets[0]
            self.port = int(sock.getsockname()[1])
            log.info("dlt698 sim listening on %s:%d", self.host, self.port)
        self._spawn(self._reporter())

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        """Close the listener and every client; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for s in list(self._sessions):
            await s.stream.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await server.wait_closed()
        self._sessions.clear()

    async def drop_clients(self) -> None:
        """Close every client connection (the listener stays)."""
        for s in list(self._sessions):
            await s.stream.close()

    async def serve(self, stop: asyncio.Event) -> None:
        """Start, step the physics every tick_s until stop is set, then stop."""
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

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._session(ByteStream(reader, writer, "dlt698-sim-tcp"))

    async def _session(self, stream: ByteStream) -> None:
        s = _Session(stream, Link(max_apdu=self.config.max_apdu))
        self._sessions.add(s)
        try:
            while True:
                try:
                    data = await stream.read(4096)
                except TransportError:
                    return
                if not data:
                    return
                s.link.receive_data(data)
                while (ev := s.link.next_event()) is not NEED_DATA:
                    await self._on_event(s, ev)
        except (TransportError, ConnectionError, OSError):
            return
        finally:
            self._sessions.discard(s)
            await stream.close()

    async def _send(self, s: _Session, frames: list[bytes]) -> None:
        async with s.lock:
            if len(frames) > 1:
                s.pending = frames[1:]
                self.fragments_sent += 1
            await s.stream.write(frames[0])

    async def _on_event(self, s: _Session, ev: object) -> None:
        if isinstance(ev, FragmentReceived):
            self.fragments_received += 1
            await s.stream.write(ev.ack)
        elif isinstance(ev, FragmentAcked):
            if s.pending:
                nxt = s.pending.pop(0)
                self.fragments_sent += 1
                await s.stream.write(nxt)
        elif isinstance(ev, ApduReceived):
            await self._on_apdu(s, ev.frame, ev.apdu)
        else:
            log.info("dlt698 sim: dropped %s", ev)

    async def _on_apdu(self, s: _Session, frame: Frame, apdu: Apdu) -> None:
        if isinstance(apdu, ReportResponseList | ReportResponseRecordList):
            self.reports_acked += 1
            return
        if self.mute or frame.direction != Direction.CLIENT:
            return
        meter = next((m for m in self.meters.values() if frame.server.matches(m.address)), None)
        if meter is None:
            return
        self.requests += 1
        secured = isinstance(apdu, SecurityRequest)
        if isinstance(apdu, SecurityRequest):
            self.security_requests += 1
            try:
                apdu = apdu.inner()
            except DecodeError:
                await self._respond(s, frame, meter, SecurityResponse(Dar(22)))
                return
        resp = self._answer(meter, apdu)
        if resp is None:
            return
        if secured:
            resp = SecurityResponse(encode_apdu(resp), mac=b"\x00\x00\x00\x00")
        await self._respond(s, frame, meter, resp)

    async def _respond(self, s: _Session, frame: Frame, meter: SimMeter, resp: Apdu) -> None:
        server = ServerAddress(meter.address, AddressType.SINGLE, frame.server.logical)
        frames = frames_for(
            resp, server, frame.client, direction=Direction.SERVER, prm=1, max_frame=self.max_frame
        )
        await self._send(s, frames)

    def _answer(self, m: SimMeter, a: Apdu) -> Apdu | None:
        if isinstance(a, GetRequestNormal):
            return GetResponseNormal(a.piid, AResultNormal(a.oad, m.get(a.oad)))
        if isinstance(a, GetRequestNormalList):
            return GetResponseNormalList(a.piid, tuple(AResultNormal(o, m.get(o)) for o in a.oads))
        if isinstance(a, GetRequestRecord):
            return GetResponseRecord(a.piid, AResultRecord(a.oad, a.rcsd, Dar(6)))
        if isinstance(a, SetRequestNormal):
            return SetResponseNormal(a.piid, a.oad, self._set(m, a.oad, a.value))
        if isinstance(a, SetRequestNormalList):
            return SetResponseNormalList(a.piid, tuple((o, self._set(m, o, d)) for o, d in a.items))
        if isinstance(a, ActionRequest):
            return ActionResponse(a.piid, a.omd, self._action(m, a.omd, a.parameter))
        if isinstance(a, ActionRequestList):
            return ActionResponseList(
                a.piid, tuple((o, self._action(m, o, d), None) for o, d in a.items)
            )
        if isinstance(a, ConnectRequest):
            self.connects += 1
            ok = m.password is None or (
                a.mechanism.kind == 1 and a.mechanism.password == m.password
            )
            return ConnectResponse(
                a.piid,
                send_max=min(a.send_max, self.max_frame),
                recv_max=min(a.recv_max, self.max_frame),
                result=0 if ok else 1,
            )
        if isinstance(a, ReleaseRequest):
            self.releases += 1
            return ReleaseResponse(a.piid)
        piid = getattr(a, "piid", 0)
        return ErrorResponse(piid, 2)  # service not supported

    def _set(self, m: SimMeter, o: OAD, value: Data) -> Dar:
        self.sets += 1
        refused = m.refusing.get(str(o)) or m.refusing.get(str(o.whole()))
        if refused is not None:
            return refused
        it = next(
            (
                i
                for i in self._items[m.name]
                if i.writable
                and parse_oad(i.oad).oi == o.oi
                and parse_oad(i.oad).attribute == o.attribute
            ),
            None,
        )
        if it is None:
            return Dar(3)  # read-write denied: only writable items of the config may be written
        if self.binding is not None and it.point in self.binding.by_point:
            n = to_number(value)
            if n is None:
                return Dar(7)
            cur = m.get(o)
            if not isinstance(cur, Data) or cur.tag != value.tag:
                return Dar(7)
            model_value = float(n) * 10.0 ** self._scaler(m, o, it) * it.scale + it.offset
            self.binding.write(it.point, model_value)
            self._store_model(m, it, self.binding.read(it.point))
            return Dar(0)
        dar = m.put(o, value)
        if dar.ok:
            self._changed(m, o)
        return dar

    def _action(self, m: SimMeter, omd: OMD, param: Data) -> Dar:
        self.actions += 1
        refused = m.refusing.get(str(omd))
        if refused is not None:
            return refused
        if omd.oi == 0x8000 and omd.method in (129, 130):
            if param.tag != Tag.ARRAY:
                return Dar(7)
            m.relay_closed = omd.method == 130
            bits = BitString(8, b"\x00" if m.relay_closed else b"\x80")
            m.image[(0x8000, 3)] = Data(Tag.BIT_STRING, bits)
            self._changed(m, OAD(0x8000, 3))
            log.info("dlt698 sim %s: relay %s", m.name, "closed" if m.relay_closed else "tripped")
            return Dar(0)
        if omd.oi == 0x8001 and omd.method in (127, 128):
            m.protected = omd.method == 127
            m.image[(0x8001, 2)] = Data(Tag.ENUM, 1 if m.protected else 0)
            self._changed(m, OAD(0x8001, 2))
            return Dar(0)
        return Dar(4)  # object undefined (no such method here)

    async def _reporter(self) -> None:
        """Send REPORT-Notification for changed values, to every client."""
        while True:
            await self._dirty_event.wait()
            self._dirty_event.clear()
            await asyncio.sleep(0.01)  # gather changes made together
            dirty, self._dirty = self._dirty, {}
            for name, oads in dirty.items():
                m = self.meters[name]
                results = tuple(AResultNormal(o, m.get(o)) for o in sorted(oads))
                self._piid = (self._piid + 1) % 64
                rep = ReportNotificationList(self._piid, results)
                server = ServerAddress(m.address)
                frames = frames_for(
                    rep,
                    server,
                    self.config.client_address,
                    direction=Direction.SERVER,
                    prm=0,
                    max_frame=self.max_frame,
                )
                for s in list(self._sessions):
                    with contextlib.suppress(TransportError, ConnectionError, OSError):
                        await self._send(s, frames)
                        self.reports_sent += 1

    def describe(self) -> list[str]:
        """One line per meter and value, for the CLI."""
        out = []
        for m in self.meters.values():
            out.append(f"meter {m.name} address {m.address[::-1].hex().upper()}")
            for (oi, attr), d in sorted(m.image.items()):
                obj = lookup(oi)
                names = element_names(obj) if obj else ()
                out.append(
                    f"  {oi:04X}{attr:02X}00 {obj.name if obj else '?'} {d.type_name}"
                    f"{' ' + '/'.join(names) if names else ''}"
                )
        return out
