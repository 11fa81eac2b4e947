"""The central platform's side of edge terminals: EdgeHub accepts them, EdgeLinkDriver is each one.

To the rest of the platform an edge terminal is one south driver (`EdgeLinkDriver`, protocol
`edge`): its monitored points are the edge's points, declared in the central site file; samples
arrive over the secure channel; commands go down it signed and SM4-encrypted and are confirmed
by read-back like any other driver's. The `EdgeHub` listens (gateway.transports.secure.
serve_secure), authenticates each edge by its certificate and routes the connection to the
driver whose `edge` is the certificate's name.

Theory of operation (one session per connected edge):

1. Handshake (mutual certificates, SM2 key exchange). A certificate that is revoked, expired,
   of another CA or role is refused there (SecureServer.refused_handshakes); a valid one that no
   driver names is refused here (`refused["unknown_edge"]`).
2. The edge says `hello` (its buffer stream id); a previous session of the same edge is ended
   first, so one edge's samples are only ever handled by one session at a time, in order. The
   hub answers `welcome` with its watermark for (edge, stream): the highest sample sequence
   number already applied to the twin.
3. `samples`: those with seq <= watermark are duplicates (the edge resends whatever was not
   acknowledged when a link broke) and are dropped and counted; the rest go to the twin in one
   batch, the watermark moves to the last of them, is written to the database (WatermarkStore,
   beside history) and only then acknowledged (`ack`). The edge deletes acknowledged samples
   from its buffer. Hence: at least once on the wire, exactly once into the twin, in order.
   A jump in seq is a gap: samples the edge dropped because its buffer was full (counted).
4. Commands: CommandPath calls execute(); commands arriving within `command_linger_ms` of each
   other are signed together (one SM2 signature over their Merkle root, security.
   command_signing) and sent as COMMAND records. execute() returns when the edge reports the
   command SENT to its device (the command path then moves it to SENT and read-back confirms
   it), raises when the edge refuses or fails it; later failures reported by the edge (e.g. it
   timed out there) are applied through the command's report callback. Reports can come twice
   or late (the edge keeps them on disk until acknowledged and sends again what a broken link
   left unacknowledged, and reports the state of commands a restart cut short): per command the
   driver keeps the last state heard from the edge, and a report that does not move the command
   forward (the same state again, an earlier one, anything after a final one) or names a
   command it does not follow is ignored and counted (`reports_ignored`, by why), never a second
   transition. Each numbered report, applied or ignored, is then acknowledged (`cmdack`,
   cumulative over the session); the edge deletes acknowledged reports from its file. Hence, as
   for samples: at least once on the wire, applied once. The hub keeps no report numbers
   across sessions: the per-command states decide what is applied.
5. The peer's certificate is validated again every `revalidate_s` and whenever update_crl()
   brings a new revocation list; a session whose certificate no longer validates is closed.
   Revocation lists go down to the edges too: the current one after `welcome`, a newer one to
   every connected edge as soon as the hub takes it (update_crl(), or the CRL file in pki_dir
   rewritten by `vpp keys revoke`, looked at every `revalidate_s`), so an edge refuses a revoked
   platform certificate without waiting for an operator to copy files.
   When a session ends the driver's points are marked not topical until the edge is back.

Crash windows, stated: the watermark and the history rows are written by different
transactions (the twin's history writer batches on its own, every flush_interval_s). If the
central process dies after a batch's watermark was written but before the history writer
flushed it, those rows are missing from history (as any driver's unflushed samples would be);
if it dies after the history writer flushed a batch but before the batch's watermark was
written (a few milliseconds: it is written right after the batch is applied), the edge sends
the batch again and history holds it twice. A link cut, a hub restart or an edge restart loses
and repeats nothing. Closing both windows needs the watermark and the rows in one transaction.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Column, Engine, Float, MetaData, String, Table, select, update
from sqlalchemy.exc import SQLAlchemyError

from gateway.codecs.secure import (
    ChannelConfig,
    CommandReceived,
    ConnectionClosed,
    Credentials,
    SecureChannelError,
)
from gateway.edge import crl_status, load_credentials, load_trust_store
from gateway.edge.messages import (
    Ack,
    CommandAck,
    CommandReport,
    CrlUpdate,
    EdgeProtocolError,
    Hello,
    Ping,
    Pong,
    SampleBatch,
    Welcome,
    decode,
    encode,
)
from gateway.errors import CommandRejected, DeviceError, DriverError, LinkDown
from gateway.south.base import Report, SampleSink, SouthDriver
from gateway.transports.secure import SecureChannel, SecureServer, serve_secure
from gateway.transports.stream import TransportError
from model.command import TERMINAL_STATES, Command, CommandState
from model.edge import EdgeHubConfig, EdgeLinkDriverConfig
from model.sample import Sample
from security.command_signing import SignedBatch, sign_batch
from security.identity import (
    BadRevocationList,
    IdentityError,
    RevocationList,
    Role,
    TrustStore,
)

__all__ = ["EdgeCommandFailed", "EdgeHub", "EdgeLinkDriver", "WatermarkStore"]

log = logging.getLogger(__name__)

_EDGE_ROLES = (Role.EDGE, Role.DER_AGENT)
_FOLLOWED = 10_000  # commands per edge whose reports are still looked at

# How far along its lifecycle a report puts a command: only a later stage is news.
_STAGE = {CommandState.ACCEPTED: 0, CommandState.SELECTED: 1, CommandState.SENT: 2} | {
    s: 3 for s in TERMINAL_STATES
}


class EdgeCommandFailed(DeviceError):
    """The edge terminal refused or failed a command; `state` and `code` say how."""

    def __init__(self, message: str, state: CommandState, code: str = "") -> None:
        super().__init__(message)
        self.state = state
        self.code = code


# ------------------------------------------------------------------------------- watermarks


class WatermarkStore:
    """Per (edge, stream), the highest sample seq applied to the twin; kept in a database."""

    def __init__(self, engine: Engine | None = None, *, table_prefix: str = "") -> None:
        self.engine = engine
        md = MetaData()
        self.table = Table(
            f"{table_prefix}edge_streams", md,
            Column("edge", String(64), primary_key=True),
            Column("stream", String(32), primary_key=True),
            Column("acked", BigInteger, nullable=False),
            Column("updated", Float, nullable=False),
        )  # fmt: skip
        self.metadata = md
        self._marks: dict[tuple[str, str], int] = {}
        self._saved: dict[tuple[str, str], int] = {}
        self.write_errors = 0

    def open(self) -> WatermarkStore:
        """Create the table if missing and load every watermark (blocking)."""
        if self.engine is None:
            return self
        try:
            self.metadata.create_all(self.engine)
            with self.engine.connect() as conn:
                for r in conn.execute(select(self.table)):
                    self._marks[(r.edge, r.stream)] = int(r.acked)
            self._saved = dict(self._marks)
        except SQLAlchemyError as e:
            raise DriverError(f"cannot open the edge watermark table: {e}") from e
        return self

    def get(self, edge: str, stream: str) -> int:
        """The watermark (0: nothing of this stream yet)."""
        return self._marks.get((edge, stream), 0)

    def saved(self, edge: str, stream: str) -> int:
        """The watermark as last written to the database (what may be acknowledged)."""
        return self._saved.get((edge, stream), 0)

    def advance(self, edge: str, stream: str, seq: int) -> None:
        """Move the in-memory watermark (loop thread, at once, before any await)."""
        self._marks[(edge, stream)] = seq

    def persist(self, edge: str, stream: str) -> int:
        """Write the current watermark of (edge, stream) (blocking: call from a worker thread)."""
        seq = self._marks.get((edge, stream), 0)
        if self.engine is None:
            self._saved[(edge, stream)] = seq
            return seq
        t = self.table
        try:
            with self.engine.begin() as conn:
                n = conn.execute(
                    update(t)
                    .where(t.c.edge == edge, t.c.stream == stream)
                    .values(acked=seq, updated=time.time())
                ).rowcount
                if not n:
                    conn.execute(
                        t.insert().values(edge=edge, stream=stream, acked=seq, updated=time.time())
                    )
        except SQLAlchemyError as e:
            self.write_errors += 1
            raise DriverError(f"cannot record the watermark of edge {edge}: {e}") from e
        self._saved[(edge, stream)] = seq
        return seq


# ------------------------------------------------------------------------------------ driver


@dataclass(slots=True)
class _Pending:
    command: Command
    future: asyncio.Future[None]
    report: Report


@dataclass(eq=False)
class _Session:
    driver: EdgeLinkDriver
    channel: SecureChannel
    stream: str
    opened: float = field(default_factory=time.time)
    validated: float = field(default_factory=time.monotonic)
    reports_handled: int = 0
    """The highest command report number handled in this session (what `cmdack` says)."""

    async def close(self) -> None:
        # Only the stream: the handler's pending receive then sees the end of the stream and
        # returns ConnectionClosed. (Closing the SecureChannel under a pending receive would
        # leave it reading a closed codec, which yields no event, forever.)
        await self.channel.stream.close()


class EdgeLinkDriver(SouthDriver):
    """One edge terminal as a south driver of the central platform (attached to an EdgeHub)."""

    protocol = "edge"

    def __init__(self, config: EdgeLinkDriverConfig, sink: SampleSink) -> None:
        super().__init__(config.id, sink)
        self.config = config
        self.edge = config.edge
        self.points = frozenset(p.point for p in config.points)
        self.writable = frozenset(p.point for p in config.points if p.writable)
        # The edge's names -> ours for samples, ours -> the edge's for commands (mostly equal).
        self._to_central = {p.at_edge: p.point for p in config.points}
        self._to_edge = {p.point: p.edge_point for p in config.points if p.edge_point}
        self.hub: EdgeHub | None = None
        self.running = False
        self._session: _Session | None = None
        self._lock = asyncio.Lock()
        self._outbox: list[str] = []
        self._flush: asyncio.TimerHandle | None = None
        self._waiting: dict[str, _Pending] = {}
        self._after_sent: OrderedDict[str, Report] = OrderedDict()
        self._heard: OrderedDict[str, CommandState | None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._marked_down = False
        # counters
        self.sessions = 0
        self.samples = 0
        self.duplicates = 0
        self.gaps = 0
        self.unknown_points = 0
        self.batches_signed = 0
        self.commands_sent = 0
        self.commands_refused = 0
        self.edge_buffered = 0
        self.edge_dropped = 0
        self.reports_received = 0
        self.reports_ignored: dict[str, int] = {}

    # --- SouthDriver -----------------------------------------------------------------------

    async def start(self) -> None:
        """Accept this edge's connections from now on (the hub does the listening)."""
        self.running = True

    async def stop(self) -> None:
        """End the session, fail commands still waiting; idempotent."""
        self.running = False
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        s = self._session
        if s is not None:
            await s.close()
        for p in list(self._waiting.values()):
            if not p.future.done():
                p.future.set_exception(LinkDown(f"edge link {self.id} stopped"))
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._link_down()

    @property
    def connected(self) -> bool:
        """True while the edge terminal is connected."""
        return self._session is not None and not self._session.channel.closed

    def monitored_points(self) -> set[str]:
        """The edge's points this platform mirrors."""
        return set(self.points)

    def command_points(self) -> set[str]:
        """The edge's points that take commands."""
        return set(self.writable)

    async def execute(self, cmd: Command, report: Report) -> None:
        """Sign (batched) and send cmd to the edge; return when the edge reports it SENT."""
        if cmd.target not in self.writable:
            raise CommandRejected(
                f"{cmd.target} is not a writable point of edge {self.edge}", "not_writable"
            )
        if self.hub is None or not self.connected:
            raise LinkDown(f"edge {self.edge} ({self.id}) is not connected")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[cmd.id] = _Pending(cmd, fut, report)
        _bounded_put(self._heard, cmd.id, None)
        self._outbox.append(cmd.id)
        if self._flush is None:
            loop = asyncio.get_running_loop()
            linger = self.config.command_linger_ms / 1000.0
            self._flush = loop.call_later(linger, self._flush_outbox)
        try:
            await fut
        finally:
            self._waiting.pop(cmd.id, None)

    def stats(self) -> dict[str, Any]:
        """Counters: sessions, samples, duplicates dropped, gaps, commands, the edge's buffer."""
        out = super().stats()
        s = self._session
        out.update(
            edge=self.edge,
            stream=s.stream if s else None,
            sessions=self.sessions,
            samples=self.samples,
            duplicates_dropped=self.duplicates,
            gaps=self.gaps,
            unknown_points=self.unknown_points,
            batches_signed=self.batches_signed,
            commands_sent=self.commands_sent,
            commands_refused_by_edge=self.commands_refused,
            edge_buffered=self.edge_buffered,
            edge_dropped=self.edge_dropped,
            commands_waiting=len(self._waiting),
            reports_received=self.reports_received,
            reports_ignored=dict(self.reports_ignored),
        )
        return out

    # --- commands ------------------------------------------------------------------------

    def _flush_outbox(self) -> None:
        self._flush = None
        ids, self._outbox = self._outbox, []
        pend = [p for i in ids if (p := self._waiting.get(i)) is not None and not p.future.done()]
        if not pend:
            return
        task = asyncio.get_running_loop().create_task(
            self._transmit(pend), name=f"edge {self.id} commands"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _transmit(self, pend: list[_Pending]) -> None:
        s, hub = self._session, self.hub
        if s is None or hub is None or s.channel.closed:
            for p in pend:
                if not p.future.done():
                    p.future.set_exception(LinkDown(f"edge {self.edge} disconnected"))
            return
        try:
            # Signed as the edge names the point: it checks the command against its own model.
            batch = hub.sign([self._for_edge(p.command) for p in pend])
        except Exception as e:
            log.exception("edge %s: signing a batch of %d commands failed", self.edge, len(pend))
            for p in pend:
                if not p.future.done():
                    p.future.set_exception(DriverError(f"cannot sign the command: {e}"))
            return
        self.batches_signed += 1
        try:
            await s.channel.send_commands(batch.commands)
        except (SecureChannelError, TransportError, OSError) as e:
            for p in pend:
                if not p.future.done():
                    p.future.set_exception(LinkDown(f"edge {self.edge}: sending failed: {e}"))
            return
        self.commands_sent += len(pend)

    def _for_edge(self, cmd: Command) -> Command:
        target = self._to_edge.get(cmd.target)
        return cmd if target is None else replace(cmd, target=target)

    def on_report(self, r: CommandReport) -> None:
        """A command's state at the edge: resolve execute() or apply a later failure."""
        self.reports_received += 1
        p = self._waiting.get(r.id)
        if r.id not in self._heard and p is None:
            self._ignore("unknown_command", r)
            return
        last = self._heard.get(r.id)
        if last is not None and _STAGE[r.state] <= _STAGE[last]:
            self._ignore("repeated" if r.state is last else "stale", r)
            return
        _bounded_put(self._heard, r.id, r.state)
        why = f"edge {self.edge}: {r.reason}" if r.reason else f"edge {self.edge}"
        if p is not None and not p.future.done():
            if r.state is CommandState.SELECTED:
                self._move(p.report, r, why)
            elif r.state in (CommandState.SENT, CommandState.CONFIRMED):
                p.future.set_result(None)
                # The edge wrote it: keep listening for a later failure (e.g. no read-back there).
                if r.state is CommandState.SENT:
                    _bounded_put(self._after_sent, r.id, p.report)
            elif r.state is not CommandState.ACCEPTED:
                if r.code:
                    self.commands_refused += 1
                if r.state is not CommandState.FAILED:  # timed_out / unknown: keep the state
                    self._move(p.report, r, why)
                code = f" ({r.code})" if r.code else ""
                p.future.set_exception(
                    EdgeCommandFailed(f"edge {self.edge}{code}: {r.reason}", r.state, r.code)
                )
            return
        report = self._after_sent.pop(r.id, None)
        if report is None or r.state not in TERMINAL_STATES:
            # execute() ended without the edge's SENT (the command path decided), or no more to say.
            self._ignore("finished", r)
            return
        if r.state is not CommandState.CONFIRMED:  # confirmation is our own read-back's
            self._move(report, r, why)

    def _move(self, report: Report, r: CommandReport, why: str) -> None:
        """Move the central record; a failure there is logged, never the session's end."""
        try:
            report(r.state, why)
        except Exception:
            self._ignore("not_applied", r)
            log.exception("edge %s: applying %s of command %s failed", self.edge, r.state, r.id)

    def _ignore(self, why: str, r: CommandReport) -> None:
        self.reports_ignored[why] = self.reports_ignored.get(why, 0) + 1
        log.debug("edge %s: report %s of command %s ignored (%s)", self.edge, r.state, r.id, why)

    # --- sessions (called by the hub) ----------------------------------------------------

    def _attach(self, s: _Session) -> None:
        self._session = s
        self._marked_down = False
        self.sessions += 1

    def _detach(self, s: _Session) -> None:
        if self._session is s:
            self._session = None
            self._link_down()

    def _link_down(self) -> None:
        if self._marked_down:
            return
        self._marked_down = True
        self.sink.mark_not_topical(self.points, self.id)

    def _apply(self, items: Sequence[tuple[int, Sample]], watermark: int) -> int:
        """Apply samples newer than watermark to the twin; the new watermark."""
        k = bisect.bisect_right(items, watermark, key=lambda it: it[0])
        self.duplicates += k
        fresh = items[k:]
        if not fresh:
            return watermark
        prev = watermark
        out: list[Sample] = []
        names, me = self._to_central, self.id
        for seq, s in fresh:
            if seq != prev + 1:
                self.gaps += seq - prev - 1
            prev = seq
            point = names.get(s[0])
            if point is not None:
                out.append(Sample(point, s[1], s[2], s[3], me))
        self.unknown_points += len(fresh) - len(out)
        if out:
            self.sink.apply(out)
        self.samples += len(out)
        return prev


# --------------------------------------------------------------------------------------- hub


class EdgeHub:
    """Listens for edge terminals on the secure channel and routes each to its EdgeLinkDriver."""

    def __init__(
        self,
        credentials: Credentials,
        trust: TrustStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        engine: Engine | None = None,
        table_prefix: str = "",
        channel_config: ChannelConfig | None = None,
        revalidate_s: float = 30.0,
        idle_timeout_s: float = 30.0,
        handshake_timeout_s: float = 10.0,
        crl_file: Path | None = None,
    ) -> None:
        self.credentials = credentials
        self.trust = trust
        self.crl_file = crl_file
        self._crl_stamp = _stamp(crl_file)
        self.crl_pushes = 0
        self.host = host
        self._port = port
        self.marks = WatermarkStore(engine, table_prefix=table_prefix)
        self.channel_config = channel_config
        self.revalidate_s = revalidate_s
        self.idle_timeout_s = idle_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.drivers: dict[str, EdgeLinkDriver] = {}
        self.refused: dict[str, int] = {}
        self.protocol_errors = 0
        self.dropped_sessions = 0
        self.signer: Callable[[Sequence[Command]], SignedBatch] = self._sign
        self._server: SecureServer | None = None
        self._opened = False
        self._ticker: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(
        cls, cfg: EdgeHubConfig, *, engine: Engine | None = None, root: str | Path = "."
    ) -> EdgeHub:
        """Build from the site file's `edge.hub` section (pki_dir relative to root)."""
        pki = Path(root) / cfg.pki_dir
        pf = None if cfg.key_passphrase_file is None else Path(root) / cfg.key_passphrase_file
        return cls(
            load_credentials(pki, cfg.certificate, pf),
            load_trust_store(pki),
            host=cfg.host,
            port=cfg.port,
            engine=engine,
            revalidate_s=cfg.revalidate_s,
            idle_timeout_s=cfg.idle_timeout_s,
            crl_file=pki / "crl.pem",
        )

    def attach_all(self, drivers: Iterable[SouthDriver]) -> int:
        """Attach every EdgeLinkDriver among a gateway's drivers; how many."""
        n = 0
        for d in drivers:
            if isinstance(d, EdgeLinkDriver):
                self.attach(d)
                n += 1
        return n

    def attach(self, driver: EdgeLinkDriver) -> None:
        """Route connections of the edge named driver.edge to driver."""
        if driver.edge in self.drivers and self.drivers[driver.edge] is not driver:
            raise ValueError(f"edge {driver.edge!r} is already served by another driver")
        self.drivers[driver.edge] = driver
        driver.hub = self

    @property
    def port(self) -> int:
        """The bound TCP port (after start)."""
        return self._server.port if self._server is not None else self._port

    @property
    def refused_handshakes(self) -> dict[str, int]:
        """Peers turned away at the handshake, by reason (revoked, expired, unknown CA...)."""
        return dict(self._server.refused_handshakes) if self._server is not None else {}

    async def start(self) -> None:
        """Load the watermarks and listen."""
        if self._server is not None:
            return
        if not self._opened:
            await asyncio.to_thread(self.marks.open)
            self._opened = True
        self._server = await serve_secure(
            self.host,
            self._port,
            self.credentials,
            self.trust,
            self._handle,
            config=self.channel_config,
            timeout=self.handshake_timeout_s,
        )
        self._port = self._server.port
        self._ticker = asyncio.create_task(self._revalidate_loop(), name="edge-hub revalidate")
        log.info("edge hub listening on %s:%d", self.host, self._port)

    async def stop(self) -> None:
        """Stop listening and end every session; idempotent (start() may be called again)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        server, self._server = self._server, None
        if server is not None:
            await server.close()

    def sign(self, commands: Sequence[Command]) -> SignedBatch:
        """One signature for a dispatch batch (through `signer`, replaceable for fault tests)."""
        return self.signer(commands)

    def _sign(self, commands: Sequence[Command]) -> SignedBatch:
        return sign_batch(commands, self.credentials.key, self.credentials.certificate)

    def update_crl(self, crl: RevocationList) -> int:
        """Take a newer CRL, drop sessions it revokes, send it to the other edges; how many dropped."""
        self.trust.update_crl(crl)
        dropped = self.revalidate()
        for d in self.drivers.values():
            if d._session is not None:
                self._spawn(self._push_crl(d._session), "edge-hub crl")
        return dropped

    def reload_crl(self) -> bool:
        """Take the CRL file again if it changed since last looked at; True if a newer one was taken."""
        stamp = _stamp(self.crl_file)
        if self.crl_file is None or stamp == self._crl_stamp or stamp is None:
            return False
        self._crl_stamp = stamp
        try:
            crl = RevocationList.load(self.crl_file.read_bytes(), self.trust.ca)
        except (OSError, BadRevocationList) as e:
            log.error("edge hub: %s not taken: %s", self.crl_file, e)
            return False
        if self.trust.crl is not None and crl.number <= self.trust.crl.number:
            return False
        log.info("edge hub: CRL number %d from %s", crl.number, self.crl_file)
        self.update_crl(crl)
        return True

    async def _push_crl(self, s: _Session) -> None:
        crl = self.trust.crl
        if crl is None:
            return
        try:
            await s.channel.send(encode(CrlUpdate(crl.der)))
            self.crl_pushes += 1
        except (TransportError, SecureChannelError, OSError) as e:
            log.info("edge %s: CRL not sent: %s", s.driver.edge, e)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def revalidate(self) -> int:
        """Validate every connected edge's certificate now; close those that fail; how many."""
        n = 0
        for d in self.drivers.values():
            s = d._session
            if s is None:
                continue
            try:
                self.trust.validate(s.channel.peer, _EDGE_ROLES)
                s.validated = time.monotonic()
            except IdentityError as e:
                n += 1
                self._drop(s, f"certificate no longer valid: {e}")
        return n

    def _drop(self, s: _Session, why: str) -> None:
        log.warning("edge %s: session dropped: %s", s.driver.edge, why)
        self.dropped_sessions += 1
        # Closing the stream ends the session's receive (end of stream), so its handler ends
        # normally; a cancelled handler would be logged as an error by asyncio's start_server.
        self._spawn(s.close(), "edge-hub drop")

    async def _revalidate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.revalidate_s)
            if not self.reload_crl():  # a newer CRL revalidates by itself
                self.revalidate()

    def stats(self) -> dict[str, Any]:
        """Listener, refusals and each edge link's counters."""
        return {
            "listening": f"{self.host}:{self.port}" if self._server is not None else None,
            "refused_handshakes": self.refused_handshakes,
            "refused": dict(self.refused),
            "protocol_errors": self.protocol_errors,
            "dropped_sessions": self.dropped_sessions,
            **crl_status(self.trust),
            "crl_pushes": self.crl_pushes,
            "watermark_write_errors": self.marks.write_errors,
            "edges": {name: d.stats() for name, d in self.drivers.items()},
        }

    def _refuse(self, reason: str, name: str, detail: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        log.warning("edge hub: refused %r: %s", name, detail)

    # --- one connection ------------------------------------------------------------------

    async def _handle(self, ch: SecureChannel) -> None:
        try:
            await self._session(ch)
        except asyncio.CancelledError:
            # The hub is stopping (SecureServer.close cancels handlers). End normally:
            # Python 3.11's start_server logs a cancelled client task as an error.
            log.info("edge %s: session ended: the hub stops", ch.peer.name)

    async def _session(self, ch: SecureChannel) -> None:
        peer = ch.peer
        driver = self.drivers.get(peer.name)
        if driver is None or not driver.running:
            self._refuse("unknown_edge", peer.name, "no running edge link names this certificate")
            return
        try:
            ev = await ch.receive(self.handshake_timeout_s)
        except (TimeoutError, TransportError, SecureChannelError) as e:
            log.info("edge %s: no hello: %s", peer.name, e)
            return
        if isinstance(ev, ConnectionClosed | CommandReceived):
            return
        try:
            hello = decode(ev.data)
        except EdgeProtocolError as e:
            self.protocol_errors += 1
            self._refuse("bad_hello", peer.name, str(e))
            return
        if not isinstance(hello, Hello) or hello.edge != peer.name:
            self._refuse("bad_hello", peer.name, f"expected hello from {peer.name!r}, got {hello}")
            return
        old = driver._session
        if old is not None:
            self._drop(old, "the edge connected again")
        async with driver._lock:  # the old session's handler has finished once we hold it
            s = _Session(driver, ch, hello.stream)
            driver.edge_buffered, driver.edge_dropped = hello.buffered, hello.dropped
            try:
                await ch.send(
                    encode(Welcome(hello.stream, self.marks.saved(peer.name, hello.stream)))
                )
            except (TransportError, SecureChannelError, OSError):
                return
            driver._attach(s)
            log.info("edge %s connected (stream %s)", peer.name, hello.stream)
            await self._push_crl(s)
            try:
                await self._serve(s)
            except (TimeoutError, TransportError, SecureChannelError, OSError) as e:
                log.info("edge %s: session ended: %s", peer.name, e)
            finally:
                driver._detach(s)
                await ch.close()

    async def _serve(self, s: _Session) -> None:
        ch, d = s.channel, s.driver
        edge = d.edge
        while True:
            ev = await ch.receive(self.idle_timeout_s)
            if isinstance(ev, ConnectionClosed):
                return
            if isinstance(ev, CommandReceived):  # a server has no verifier: never delivered
                continue
            if time.monotonic() - s.validated > self.revalidate_s:
                try:
                    self.trust.validate(ch.peer, _EDGE_ROLES)
                except IdentityError as e:
                    self.dropped_sessions += 1
                    log.warning("edge %s: certificate no longer valid: %s", edge, e)
                    return
                s.validated = time.monotonic()
            try:
                msg = decode(ev.data)
            except EdgeProtocolError as e:
                self.protocol_errors += 1
                log.warning("edge %s: bad message, closing: %s", edge, e)
                return
            if isinstance(msg, SampleBatch):
                marks = self.marks
                mark = marks.get(edge, s.stream)
                new = d._apply(msg.items, mark)  # no await from reading the mark to moving it
                if new != mark:
                    marks.advance(edge, s.stream, new)
                if marks.saved(edge, s.stream) != new:
                    try:
                        await asyncio.to_thread(marks.persist, edge, s.stream)
                    except DriverError as e:
                        # Not acknowledged: the edge keeps the samples and sends them again;
                        # the in-memory watermark keeps them out of the twin a second time.
                        log.error("edge %s: %s", edge, e)
                        continue
                await ch.send(encode(Ack(marks.saved(edge, s.stream))))
            elif isinstance(msg, CommandReport):
                d.on_report(msg)
                # Handled (applied, or ignored as repeated, stale or unknown): the edge may
                # forget it. A report without a number (an older edge) is not acknowledged.
                if msg.n is not None:
                    s.reports_handled = max(s.reports_handled, msg.n)
                    await ch.send(encode(CommandAck(s.reports_handled)))
            elif isinstance(msg, Ping):
                await ch.send(encode(Pong(msg.ts)))
            elif isinstance(msg, Pong):
                pass
            else:
                self.protocol_errors += 1
                log.warning("edge %s: unexpected %s, closing", edge, type(msg).__name__)
                return


def _bounded_put(d: OrderedDict[str, Any], key: str, value: Any) -> None:
    """Set key (as the newest) and forget the oldest beyond _FOLLOWED."""
    d[key] = value
    d.move_to_end(key)
    while len(d) > _FOLLOWED:
        d.popitem(last=False)


def _stamp(path: Path | None) -> tuple[int, int] | None:
    """(mtime_ns, size) of a file, None when missing: enough to notice a rewrite."""
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)
