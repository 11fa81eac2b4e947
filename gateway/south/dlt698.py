"""DL/T 698.45 south driver: polls meters on one link, takes their reports, executes commands.

Theory of operation: one supervisor task owns the link. It opens the link URL (serial RS-485
bus, or TCP), starts a reader task and polls; when the link breaks it marks every point not
topical (once per outage), closes everything and reopens with exponential backoff from
reconnect_min_s to reconnect_max_s. Each (re)connection begins with a full refresh.

The reader task feeds received bytes to the sans-IO codec (gateway.codecs.dlt698.link) and
handles its events: a response completes the one outstanding request (matched by PIID and
server address); a REPORT-Notification from a meter is applied at once and answered with a
REPORT-Response; link-layer fragments are confirmed so the meter sends the next one; a
SECURITY-Response in plaintext is unwrapped (its MAC is counted, not verified: the SM4/ESAM
security transfer is not implemented); bad frames and undecodable APDUs are counted and dropped.

Requests are strictly one at a time (a bus is half duplex): the poller and execute() take the
bus lock, send, and wait for the response up to timeout_s, retrying `retries` times. Every poll
period, per meter: CONNECT first if configured (once per connection), the objects' scaler-units
(attribute 3) once if read_scaler_unit, then GET-Request NormalList of the meter's OADs in chunks
of max_oads_per_request. A data access result (DAR) instead of a value makes that item's sample
INVALID (the DAR is named in the log and in stats()); a meter that does not answer has its
points marked not topical until it answers again; when no meter of a TCP link answers, the
link is taken as lost and reopened (a serial port stays open: the meters are polled on).
SET and ACTION commands are reported SENT once the meter answers success; a refusal raises
DLT698RefusedError naming the DAR; the meter is polled again at once so the twin confirms the
command by read-back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.codecs.dlt698 import (
    NEED_DATA,
    OAD,
    OMD,
    ActionRequest,
    ActionResponse,
    AddressType,
    Apdu,
    ApduReceived,
    ApduRejected,
    BadFrame,
    ConnectMechanism,
    ConnectRequest,
    ConnectResponse,
    Dar,
    Data,
    DecodeError,
    Direction,
    FragmentAcked,
    FragmentReceived,
    Frame,
    GetRequestNormal,
    GetRequestNormalList,
    GetResponseNormal,
    GetResponseNormalList,
    Link,
    LinkRequest,
    LinkResponse,
    ReleaseRequest,
    ReportNotificationList,
    ReportNotificationRecordList,
    ReportResponseList,
    ReportResponseRecordList,
    ScalerUnit,
    SecurityRequest,
    SecurityResponse,
    ServerAddress,
    SetRequestNormal,
    SetResponseNormal,
    Tag,
    encode_apdu,
    encode_frame,
    frames_for,
    lookup,
    parse_oad,
    to_number,
)
from gateway.codecs.dlt698.apdu import CONNECT_RESULTS, ErrorResponse
from gateway.codecs.dlt698.axdr import BitString, DateTime
from gateway.codecs.dlt698.frame import FUNC_LINK
from gateway.errors import CommandRejected, DeviceError, DriverError, LinkDown
from gateway.south.base import Report, SampleSink, SouthDriver
from gateway.transports.stream import ByteStream, TransportError, open_stream
from model.command import Command, CommandState
from model.drivers_dlt698 import DLT698Control, DLT698DriverConfig, DLT698Item, DLT698Meter
from model.quality import (
    BAD_REFERENCE,
    FAILURE,
    GOOD,
    INCONSISTENT,
    OUT_OF_RANGE,
    OVERFLOW,
    Validity,
    with_validity,
)
from model.sample import Sample, Value

__all__ = ["DLT698Driver", "DLT698RefusedError", "dar_quality", "value_to_data"]

log = logging.getLogger(__name__)

_INT_TYPES = {
    Tag.INTEGER: (-128, 127),
    Tag.LONG: (-32768, 32767),
    Tag.UNSIGNED: (0, 255),
    Tag.LONG_UNSIGNED: (0, 65535),
    Tag.DOUBLE_LONG: (-(2**31), 2**31 - 1),
    Tag.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
    Tag.LONG64: (-(2**63), 2**63 - 1),
    Tag.LONG64_UNSIGNED: (0, 2**64 - 1),
    Tag.ENUM: (0, 255),
}


_WRITABLE = frozenset(_INT_TYPES) | {Tag.BOOL, Tag.FLOAT32, Tag.FLOAT64}


def dar_quality(dar: Dar) -> int:
    """The IEC 61850 quality of a point whose read answered a DAR: invalid, with a detail."""
    if dar.code in (4, 5, 6):  # object undefined / class mismatch / object nonexistent
        return with_validity(BAD_REFERENCE, Validity.INVALID)
    if dar.code == 7:  # type mismatch
        return with_validity(INCONSISTENT, Validity.INVALID)
    if dar.code == 8:  # out of range
        return with_validity(OUT_OF_RANGE, Validity.INVALID)
    return with_validity(FAILURE, Validity.INVALID)


def value_to_data(value: Value, tag: Tag) -> Data:
    """A command value as a Data of type tag (integers rounded); CommandRejected if it can't fit."""
    if tag == Tag.BOOL:
        return Data(Tag.BOOL, bool(value))
    if tag in (Tag.FLOAT32, Tag.FLOAT64):
        return Data(tag, float(value))
    rng = _INT_TYPES.get(tag)
    if rng is None:
        raise CommandRejected(f"cannot write a number as {tag.type_name}", code="type")
    f = float(value)
    if not math.isfinite(f):
        raise CommandRejected(f"{value!r} is not a finite number", code="range")
    raw = round(f)
    if not rng[0] <= raw <= rng[1]:
        raise CommandRejected(
            f"{value!r} -> {raw} does not fit {tag.type_name} ({rng[0]}..{rng[1]})", code="range"
        )
    return Data(tag, raw)


class DLT698RefusedError(DeviceError):
    """The meter answered a SET or ACTION with a data access result other than success."""

    def __init__(self, message: str, dar: Dar) -> None:
        super().__init__(message)
        self.dar = dar


class _NoAnswer(Exception):
    """A request got no response within timeout_s (after retries)."""


class _LinkLost(Exception):
    """The transport failed (internal: ends the connection)."""


@dataclass
class _Item:
    cfg: DLT698Item
    oad: OAD  # what is requested (index 0 unless the OAD itself names an element)
    tag: Tag | None  # wire type for writing (table or item dtype)


@dataclass
class _Meter:
    cfg: DLT698Meter
    server: ServerAddress
    items: list[_Item] = field(default_factory=list)
    oads: list[OAD] = field(default_factory=list)
    scalers: dict[int, ScalerUnit] = field(default_factory=dict)
    connected: bool = False  # application connection established (CONNECT)
    scalers_read: bool = False
    down: bool = False  # marked not topical after failing to answer
    failures: int = 0

    @property
    def points(self) -> set[str]:
        return {it.cfg.point for it in self.items}


class DLT698Driver(SouthDriver):
    """Meters on one DL/T 698.45 link."""

    protocol = "dlt698"

    def __init__(self, config: DLT698DriverConfig, sink: SampleSink) -> None:
        super().__init__(config.id, sink)
        self.config = config
        self.meters: dict[str, _Meter] = {}
        for m in config.meters:
            server = ServerAddress.from_text(
                m.address, AddressType[m.address_type.upper()], m.logical_address
            )
            self.meters[m.name] = _Meter(m, server)
        self._commands: dict[str, tuple[_Meter, DLT698Item | DLT698Control]] = {}
        for it in config.items:
            meter = self.meters[it.meter]
            oad = parse_oad(it.oad)
            obj = lookup(oad.oi) if oad.attribute == 2 else None
            tname = it.dtype or (obj.value_type if obj else None)
            tag = Tag[tname.upper().replace("-", "_")] if tname else None
            meter.items.append(_Item(it, oad, tag))
            if oad not in meter.oads:
                meter.oads.append(oad)
            if it.writable:
                if tag is None or tag not in _WRITABLE:
                    raise DriverError(
                        f"{config.id}: item {it.point} ({it.oad}) is writable but its type is "
                        f"unknown or not numeric: give dtype"
                    )
                self._commands[it.point] = (meter, it)
        for c in config.controls:
            self._commands[c.point] = (self.meters[c.meter], c)
        self._monitored = {it.point for it in config.items}
        self._tcp = config.link.startswith("tcp://")
        self._last: dict[str, Value] = {}
        self.dar_errors: dict[str, str] = {}
        self._stream: ByteStream | None = None
        self._link: Link | None = None
        self._up = False
        self._marked_down = False
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._bus = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._waiting: tuple[int, bytes, asyncio.Future[Apdu]] | None = None
        self._acked: asyncio.Queue[int] = asyncio.Queue()
        self._poll_now = asyncio.Event()
        self._piid = 0
        # counters
        self.polls = 0
        self.requests = 0
        self.responses = 0
        self.samples = 0
        self.timeouts = 0
        self.reports = 0
        self.errors = 0
        self.connects = 0
        self.opens = 0
        self.reconnects = 0
        self.security_responses = 0
        self.unverified_macs = 0

    # --- SouthDriver ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the link supervisor (returns at once)."""
        if self._supervisor is not None and not self._supervisor.done():
            return
        if not self.config.enabled:
            log.info("dlt698 %s: disabled in the site file, not started", self.id)
            return
        self._stopping = False
        self._supervisor = asyncio.create_task(self._run(), name=f"dlt698 {self.id}")

    async def stop(self) -> None:
        """Release application connections, close the link, mark points not topical; idempotent."""
        await self._release_all()
        task, self._supervisor = self._supervisor, None
        self._stopping = True
        if task is not None:
            # Cancel until it ends: a cancellation arriving as an inner wait_for completes is
            # lost on Python 3.11 (and the loop checks _stopping as well).
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
            if not task.cancelled() and task.exception() is not None:
                log.error("dlt698 %s: supervisor ended with %r", self.id, task.exception())
        await self._close()
        self._link_down()

    @property
    def connected(self) -> bool:
        """True while the link is open."""
        return self._up

    def monitored_points(self) -> set[str]:
        """Every item's point."""
        return set(self._monitored)

    def command_points(self) -> set[str]:
        """Writable items and controls."""
        return set(self._commands)

    async def execute(self, cmd: Command, report: Report) -> None:
        """SET or ACTION for cmd.target; report SENT once the meter answers success."""
        entry = self._commands.get(cmd.target)
        if entry is None:
            raise CommandRejected(
                f"{cmd.target} is not a command point of DL/T 698 driver {self.id}",
                code="not_writable",
            )
        meter, spec = entry
        request, what = self._command_request(meter, spec, cmd.value)
        if not self._up:
            raise LinkDown(f"DL/T 698 driver {self.id}: link {self.config.link} is not open")
        try:
            resp = await self._request(meter, request)
        except _NoAnswer as e:
            raise DriverError(f"{self.id}: meter {meter.cfg.name} did not answer {what}") from e
        except _LinkLost as e:
            raise LinkDown(f"{self.id}: link lost during {what}: {e}") from e
        dar = resp.dar if isinstance(resp, SetResponseNormal | ActionResponse) else None
        if dar is None:
            raise DriverError(
                f"{self.id}: meter {meter.cfg.name} answered {what} with {type(resp).__name__}"
            )
        if not dar.ok:
            raise DLT698RefusedError(
                f"{self.id}: meter {meter.cfg.name} refused {what}: {dar}", dar
            )
        report(CommandState.SENT, f"{what}: success")
        self._poll_now.set()  # read back at once

    def stats(self) -> dict[str, Any]:
        """Counters for status output."""
        out = super().stats()
        link = self._link
        out.update(
            link=self.config.link,
            polls=self.polls,
            requests=self.requests,
            responses=self.responses,
            samples=self.samples,
            timeouts=self.timeouts,
            reports=self.reports,
            errors=self.errors,
            connects=self.connects,
            opens=self.opens,
            reconnects=self.reconnects,
            security_responses=self.security_responses,
            unverified_macs=self.unverified_macs,
            bad_frames=link.decoder.bad_frames if link else 0,
            rejected_apdus=link.rejected if link else 0,
            meters_down=[m.cfg.name for m in self.meters.values() if m.down],
            dar_errors=dict(self.dar_errors),
        )
        return out

    async def _release_all(self) -> None:
        """RELEASE-Request to every connected meter (best effort, bounded by timeout_s each)."""
        if not self._up:
            return
        for meter in self.meters.values():
            if not meter.connected:
                continue
            meter.connected = False
            with contextlib.suppress(_NoAnswer, _LinkLost, DriverError, TimeoutError):
                await asyncio.wait_for(
                    self._request(meter, ReleaseRequest(self._next_piid())), self.config.timeout_s
                )

    # --- commands ------------------------------------------------------------------------

    def _command_request(
        self, meter: _Meter, spec: DLT698Item | DLT698Control, value: Value
    ) -> tuple[Apdu, str]:
        if isinstance(spec, DLT698Item):
            item = next(i for i in meter.items if i.cfg is spec)
            assert item.tag is not None
            oad = (
                item.oad
                if spec.index is None
                else OAD(item.oad.oi, item.oad.attribute, spec.index, item.oad.feature)
            )
            raw: Value = value
            if item.tag != Tag.BOOL:
                scaler = self._scaler(meter, item)
                raw = (float(value) - spec.offset) / spec.scale / 10.0**scaler
            data = value_to_data(raw, item.tag)
            return SetRequestNormal(self._next_piid(), oad, data), f"SET {oad}"
        if spec.action == "remote_control":
            relay = parse_oad(spec.relay)
            if value:
                # 合闸 (method 130): array structure {relay OAD, command enum 1 = direct close}
                omd = OMD(0x8000, 130)
                fields: tuple[Data, ...] = (Data(Tag.OAD, relay), Data(Tag.ENUM, 1))
            else:
                # 跳闸 (method 129): array structure {relay OAD, alarm delay (min), power-cut
                # time (min, 0 = until closed), automatic close}
                omd = OMD(0x8000, 129)
                fields = (
                    Data(Tag.OAD, relay),
                    Data(Tag.UNSIGNED, 0),
                    Data(Tag.LONG_UNSIGNED, 0),
                    Data(Tag.BOOL, False),
                )
            param = Data(Tag.ARRAY, (Data(Tag.STRUCTURE, fields),))
        elif spec.action == "power_protection":
            omd = OMD(0x8001, 127 if value else 128)
            param = Data(Tag.NULL)
        else:
            assert spec.omd is not None
            omd = OMD.from_bytes(bytes.fromhex(spec.omd))
            tag = Tag[spec.dtype.upper().replace("-", "_")]
            param = value_to_data(value if tag == Tag.BOOL else float(value) / spec.scale, tag)
        return ActionRequest(self._next_piid(), omd, param), f"ACTION {omd}"

    # --- supervisor ----------------------------------------------------------------------

    async def _run(self) -> None:
        cfg = self.config
        delay = cfg.reconnect_min_s
        while not self._stopping:
            try:
                served = await self._connection()
            except Exception:  # a bug rather than the device: log it, keep the driver alive
                log.exception("dlt698 %s: link supervisor failed", self.id)
                served = False
            await self._close()
            self._link_down()
            if served:
                delay = cfg.reconnect_min_s
            log.debug("dlt698 %s: reopening %s in %.2fs", self.id, cfg.link, delay)
            await asyncio.sleep(delay)
            if not served:
                delay = min(delay * 2, cfg.reconnect_max_s)

    async def _connection(self) -> bool:
        """Open the link and poll until it is lost; False if nothing answered at all."""
        try:
            stream = await open_stream(self.config.link, timeout=self.config.timeout_s)
        except TransportError as e:
            log.debug("dlt698 %s: %s", self.id, e)
            return False
        self._stream = stream
        if self.opens:
            self.reconnects += 1
        self.opens += 1
        responses = self.responses
        self._link = Link(max_frame=16385, max_apdu=self.config.max_apdu)
        lost = asyncio.Event()
        reader = asyncio.create_task(
            self._reader(stream, self._link, lost), name=f"dlt698 {self.id} rx"
        )
        poller = asyncio.create_task(self._poller(lost), name=f"dlt698 {self.id} poll")
        for m in self.meters.values():
            m.connected = m.scalers_read = False
            m.failures = 0
        self._up = True
        try:
            await lost.wait()
        finally:
            lost.set()  # the loops end even if a cancellation gets lost in a wait_for
            for t in (poller, reader):
                t.cancel()
            await asyncio.gather(poller, reader, return_exceptions=True)
        answered = self.responses > responses
        log.warning("dlt698 %s: link %s lost, reopening", self.id, self.config.link)
        return answered

    async def _close(self) -> None:
        self._up = False
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting[2].done():
            waiting[2].set_exception(_LinkLost("link closed"))
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    def _link_down(self) -> None:
        """Mark every point not topical, once per outage."""
        self._up = False
        if self._marked_down:
            return
        self._marked_down = True
        self.sink.mark_not_topical(self.monitored_points(), self.id)

    # --- I/O -----------------------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        stream = self._stream
        if stream is None:
            raise _LinkLost("link closed")
        async with self._write_lock:
            try:
                await stream.write(data)
            except TransportError as e:
                raise _LinkLost(str(e)) from e

    async def _reader(self, stream: ByteStream, link: Link, lost: asyncio.Event) -> None:
        try:
            while not lost.is_set():
                try:
                    data = await stream.read(4096)
                except TransportError as e:
                    log.debug("dlt698 %s: %s", self.id, e)
                    return
                if not data:
                    log.debug("dlt698 %s: end of stream", self.id)
                    return
                link.receive_data(data)
                while (ev := link.next_event()) is not NEED_DATA:
                    await self._on_event(ev)
        except _LinkLost:
            return
        except Exception:  # a bug: log it, and let the supervisor reconnect
            log.exception("dlt698 %s: receive failed", self.id)
        finally:
            lost.set()

    async def _on_event(self, ev: object) -> None:
        if isinstance(ev, FragmentReceived):
            await self._write(ev.ack)
        elif isinstance(ev, FragmentAcked):
            assert ev.frame.fragment is not None
            self._acked.put_nowait(ev.frame.fragment.seq)
        elif isinstance(ev, BadFrame):
            self.errors += 1
            log.info("dlt698 %s: dropped a bad frame: %s", self.id, ev.error)
        elif isinstance(ev, ApduRejected):
            self.errors += 1
            log.info(
                "dlt698 %s: dropped an APDU from %s: %s", self.id, ev.frame.server.text, ev.error
            )
        elif isinstance(ev, ApduReceived):
            await self._on_apdu(ev.frame, ev.apdu)

    async def _on_apdu(self, frame: Frame, apdu: Apdu) -> None:
        if isinstance(apdu, SecurityResponse):
            self.security_responses += 1
            if apdu.mac is not None:
                self.unverified_macs += 1  # no SM4/ESAM here: the MAC is reported, not checked
            try:
                apdu = apdu.inner()
            except DecodeError as e:
                self.errors += 1
                log.warning(
                    "dlt698 %s: SECURITY-Response from %s: %s", self.id, frame.server.text, e
                )
                return
        if isinstance(apdu, ReportNotificationList | ReportNotificationRecordList):
            await self._on_report(frame, apdu)
            return
        if isinstance(apdu, LinkRequest):
            await self._answer_link(frame, apdu)
            return
        waiting = self._waiting
        p = getattr(apdu, "piid_acd", None)
        if waiting is None or p is None or (p & 0x3F) != waiting[0]:
            log.debug(
                "dlt698 %s: unexpected %s from %s", self.id, type(apdu).__name__, frame.server.text
            )
            return
        fut = waiting[2]
        if not fut.done():
            fut.set_result(apdu)

    async def _answer_link(self, frame: Frame, req: LinkRequest) -> None:
        # A terminal on TCP logs in / beats its heart: answer success with our clock.
        now = time.gmtime()
        t = DateTime(
            now.tm_year,
            now.tm_mon,
            now.tm_mday,
            (now.tm_wday + 1) % 7,
            now.tm_hour,
            now.tm_min,
            now.tm_sec,
            0,
        )
        resp = LinkResponse(req.piid_acd & 0xBF, 0x80, req.time, t, t)
        out = Frame(frame.server, frame.client, encode_apdu(resp), Direction.CLIENT, 0, FUNC_LINK)
        await self._write(encode_frame(out))

    async def _on_report(
        self, frame: Frame, rep: ReportNotificationList | ReportNotificationRecordList
    ) -> None:
        self.reports += 1
        meter = next(
            (m for m in self.meters.values() if m.server.address == frame.server.address), None
        )
        oads = tuple(r.oad for r in rep.results)
        if meter is not None and isinstance(rep, ReportNotificationList):
            ts = time.time()
            batch = [
                s
                for r in rep.results
                for it in meter.items
                if it.oad == r.oad
                for s in [self._sample(meter, it, r.result, ts)]
            ]
            if batch:
                self.samples += len(batch)
                self.sink.apply(batch)
        elif meter is None:
            log.info("dlt698 %s: report from unknown meter %s", self.id, frame.server.text)
        ack: Apdu
        if isinstance(rep, ReportNotificationList):
            ack = ReportResponseList(rep.piid_acd & 0xBF, oads)
        else:
            ack = ReportResponseRecordList(rep.piid_acd & 0xBF, oads)
        out = Frame(frame.server, self.config.client_address, encode_apdu(ack), Direction.CLIENT, 0)
        await self._write(encode_frame(out))

    def _next_piid(self) -> int:
        self._piid = (self._piid + 1) % 64
        return self._piid

    async def _request(self, meter: _Meter, apdu: Apdu) -> Apdu:
        """Send one request to a meter and wait for its response (retrying on silence)."""
        piid_ = getattr(apdu, "piid", 0) & 0x3F
        payload: Apdu | bytes = apdu
        if self.config.security:
            payload = encode_apdu(SecurityRequest(encode_apdu(apdu), os.urandom(16)))
        frames = frames_for(
            payload, meter.server, self.config.client_address, max_frame=self.config.max_frame
        )
        loop = asyncio.get_running_loop()
        async with self._bus:
            for attempt in range(self.config.retries + 1):
                fut: asyncio.Future[Apdu] = loop.create_future()
                self._waiting = (piid_, meter.server.address, fut)
                self.requests += 1
                try:
                    await self._send_frames(frames)
                    async with asyncio.timeout(self.config.timeout_s):
                        resp = await fut
                except TimeoutError:
                    self.timeouts += 1
                    log.debug(
                        "dlt698 %s: no answer from %s (attempt %d)",
                        self.id,
                        meter.cfg.name,
                        attempt + 1,
                    )
                    continue
                finally:
                    self._waiting = None
                self.responses += 1
                if isinstance(resp, ErrorResponse):
                    raise DriverError(
                        f"{self.id}: meter {meter.cfg.name} answered ERROR-Response {resp.kind}"
                    )
                return resp
        raise _NoAnswer(meter.cfg.name)

    async def _send_frames(self, frames: list[bytes]) -> None:
        """Send frames; between fragments wait for the peer's confirmation."""
        while not self._acked.empty():
            self._acked.get_nowait()
        for i, f in enumerate(frames):
            await self._write(f)
            if i < len(frames) - 1:
                async with asyncio.timeout(self.config.timeout_s):
                    await self._acked.get()

    # --- polling -------------------------------------------------------------------------

    async def _poller(self, lost: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        period = self.config.poll_period_s
        due = loop.time()
        try:
            while not lost.is_set():
                self._poll_now.clear()
                answered = 0
                for meter in self.meters.values():
                    if await self._poll_meter(meter):
                        answered += 1
                self.polls += 1
                if answered:
                    self._marked_down = False
                elif self._tcp:
                    # A TCP converter or terminal that answers nothing is stale: reconnect. A
                    # serial port stays open (reopening does not wake silent meters on a bus).
                    log.warning("dlt698 %s: no meter answered on %s", self.id, self.config.link)
                    lost.set()
                    return
                due += period
                now = loop.time()
                if due < now:  # overran: skip the missed periods rather than bursting
                    due = now + period - (now - due) % period
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due - now):
                        await self._poll_now.wait()
        except _LinkLost:
            lost.set()

    async def _poll_meter(self, meter: _Meter) -> bool:
        """Read one meter's items; False if it did not answer."""
        try:
            if meter.cfg.connect and not meter.connected:
                await self._connect(meter)
            if self.config.read_scaler_unit and not meter.scalers_read:
                await self._read_scalers(meter)
            batch: list[Sample] = []
            n = self.config.max_oads_per_request
            for i in range(0, len(meter.oads), n):
                chunk = tuple(meter.oads[i : i + n])
                results = await self._get(meter, chunk)
                ts = time.time()
                for oad, result in results.items():
                    for it in meter.items:
                        if it.oad == oad:
                            batch.append(self._sample(meter, it, result, ts))
        except _NoAnswer:
            meter.failures += 1
            # It may have restarted when it answers again: connect and read scalers afresh.
            meter.connected = meter.scalers_read = False
            if not meter.down:
                meter.down = True
                log.warning(
                    "dlt698 %s: meter %s (%s) does not answer; its points are not topical",
                    self.id,
                    meter.cfg.name,
                    meter.server.text,
                )
                self.sink.mark_not_topical(meter.points, self.id)
            return False
        except DriverError as e:
            self.errors += 1
            log.warning("dlt698 %s: meter %s: %s", self.id, meter.cfg.name, e)
            return True
        if meter.down:
            log.info("dlt698 %s: meter %s answers again", self.id, meter.cfg.name)
        meter.down = False
        meter.failures = 0
        if batch:
            self.samples += len(batch)
            self.sink.apply(batch)
        return True

    async def _get(self, meter: _Meter, oads: tuple[OAD, ...]) -> dict[OAD, Data | Dar]:
        req: Apdu
        if len(oads) == 1:
            req = GetRequestNormal(self._next_piid(), oads[0])
        else:
            req = GetRequestNormalList(self._next_piid(), oads)
        resp = await self._request(meter, req)
        if isinstance(resp, GetResponseNormal):
            return {resp.result.oad: resp.result.result}
        if isinstance(resp, GetResponseNormalList):
            return {r.oad: r.result for r in resp.results}
        raise DriverError(f"GET answered with {type(resp).__name__}")

    async def _connect(self, meter: _Meter) -> None:
        mech = ConnectMechanism()
        if meter.cfg.password is not None:
            mech = ConnectMechanism(1, password=meter.cfg.password)
        req = ConnectRequest(
            self._next_piid(),
            send_max=self.config.max_frame,
            recv_max=self.config.max_frame,
            apdu_max=min(self.config.max_apdu, 65535),
            mechanism=mech,
        )
        resp = await self._request(meter, req)
        if not isinstance(resp, ConnectResponse):
            raise DriverError(f"CONNECT answered with {type(resp).__name__}")
        if resp.result != 0:
            raise DriverError(
                f"CONNECT refused: {CONNECT_RESULTS.get(resp.result, resp.result)} ({resp.result})"
            )
        meter.connected = True
        self.connects += 1
        log.info("dlt698 %s: connected to meter %s", self.id, meter.cfg.name)

    async def _read_scalers(self, meter: _Meter) -> None:
        ois = sorted(
            {
                it.oad.oi
                for it in meter.items
                if it.oad.attribute == 2 and (obj := lookup(it.oad.oi)) and obj.class_id <= 6
            }
        )
        meter.scalers_read = True
        if not ois:
            return
        n = self.config.max_oads_per_request
        for i in range(0, len(ois), n):
            got = await self._get(meter, tuple(OAD(oi, 3) for oi in ois[i : i + n]))
            for oad, result in got.items():
                if isinstance(result, Data) and isinstance(result.value, ScalerUnit):
                    meter.scalers[oad.oi] = result.value

    def _scaler(self, meter: _Meter, item: _Item) -> int:
        if item.cfg.scaler is not None:
            return item.cfg.scaler
        if item.oad.attribute != 2:
            return 0
        su = meter.scalers.get(item.oad.oi)
        if su is not None:
            return su.scaler
        obj = lookup(item.oad.oi)
        return obj.scaler if obj else 0

    def _invalid(self, item: _Item, quality: int, why: str, ts: float) -> Sample:
        point = item.cfg.point
        if self.dar_errors.get(point) != why:
            log.warning(
                "dlt698 %s: %s (%s): %s; the point is invalid", self.id, point, item.cfg.oad, why
            )
        self.dar_errors[point] = why
        last = self._last.get(point, 0.0)
        return Sample(point, last, ts, quality, self.id)

    def _sample(self, meter: _Meter, item: _Item, result: Data | Dar, ts: float) -> Sample:
        point = item.cfg.point
        if isinstance(result, Dar):
            return self._invalid(item, dar_quality(result), f"DAR {result}", ts)
        d = result
        idx = item.cfg.index
        if idx is not None:
            if d.tag not in (Tag.ARRAY, Tag.STRUCTURE) or not isinstance(d.value, tuple):
                return self._invalid(
                    item,
                    with_validity(INCONSISTENT, Validity.INVALID),
                    f"index {idx} of a {d.type_name}",
                    ts,
                )
            if idx > len(d.value):
                return self._invalid(
                    item,
                    with_validity(BAD_REFERENCE, Validity.INVALID),
                    f"index {idx} of {len(d.value)} elements",
                    ts,
                )
            elem = d.value[idx - 1]
            if not isinstance(elem, Data):  # an RCSD is not an array of Data
                return self._invalid(
                    item,
                    with_validity(INCONSISTENT, Validity.INVALID),
                    f"index {idx} of a {d.type_name}",
                    ts,
                )
            d = elem
        value: Value
        if item.cfg.bit is not None:
            if d.tag != Tag.BIT_STRING or not isinstance(d.value, BitString):
                return self._invalid(
                    item,
                    with_validity(INCONSISTENT, Validity.INVALID),
                    f"bit {item.cfg.bit} of a {d.type_name}",
                    ts,
                )
            if item.cfg.bit >= d.value.bits:
                return self._invalid(
                    item,
                    with_validity(BAD_REFERENCE, Validity.INVALID),
                    f"bit {item.cfg.bit} of {d.value.bits} bits",
                    ts,
                )
            value = d.value.bit(item.cfg.bit) != item.cfg.invert
        else:
            n = to_number(d)
            if n is None:
                return self._invalid(
                    item,
                    with_validity(INCONSISTENT, Validity.INVALID),
                    f"a {d.type_name} is not a number",
                    ts,
                )
            if isinstance(n, bool):
                value = n != item.cfg.invert
            elif d.tag == Tag.DATE_TIME_S:
                value = n
            else:
                scaler = self._scaler(meter, item)
                c = item.cfg
                if scaler == 0 and c.scale == 1.0 and c.offset == 0.0 and isinstance(n, int):
                    value = n
                else:
                    value = n * 10.0**scaler * c.scale + c.offset
        q = GOOD
        if isinstance(value, float) and not math.isfinite(value):
            q = with_validity(OVERFLOW, Validity.INVALID)
        if self.dar_errors.pop(point, None) is not None:
            log.info("dlt698 %s: %s readable again", self.id, point)
        self._last[point] = value
        return Sample(point, value, ts, q, self.id)
