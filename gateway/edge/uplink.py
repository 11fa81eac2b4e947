"""The edge terminal's uplink: buffered samples up to the platform, signed commands down.

Theory of operation. Two tasks run while the uplink is started:

- The collector takes every change set of the local twin (its own bounded subscription) and
  appends the samples it forwards (by default all but the edge's plant aggregates) to the
  on-disk SampleBuffer, which numbers them. Acquisition never waits for the platform: while the
  link is down, samples pile up in the buffer; when it is full, the oldest are dropped, counted
  and reported (stats, and `hello` tells the hub). At start, the values the twin already holds
  are buffered first, so the platform starts from the whole current state.
- The supervisor connects (open_secure_channel's steps: mutual certificates, the platform's
  name pinned), with backoff from reconnect_min_s doubling to reconnect_max_s while it fails. Per
  connection: `hello` with the buffer's stream id; the hub's `welcome` carries its watermark,
  and buffered samples up to it are deleted at once (they reached the twin before the link
  broke). A sender sends the buffer's samples after the watermark, in order, in batches of
  batch_size with up to max_inflight_batches unacknowledged, command reports first, and a ping
  when idle for keepalive_s; a receiver deletes samples as the hub acknowledges them (cumulative
  `ack`) and takes commands. Nothing heard for idle_timeout_s, an acknowledgement overdue by as
  long, or any channel error ends the connection; unacknowledged samples (and command reports)
  are sent again on the next one, and the hub drops those it already has (by (edge, stream,
  seq)). If the hub holds more of the stream than the buffer ever numbered (the file was
  replaced by an older copy), the buffer takes a new stream id, else its samples would look
  like duplicates.

Commands arrive as the channel's COMMAND records. The channel hands each to `verifier`
(CommandVerifier: deadline, inclusion proof, platform signature, never-seen id; plus the ids
accepted before a restart, kept in the buffer file); a refusal there is recorded with its
evidence and reported up as FAILED with the verifier's code. A command that passed is checked
with security.policy.check_command against the edge's *own* model (its limits, not the
platform's), recorded (SignedCommand bytes in the buffer's command_evidence table: proof of who
ordered it), submitted to the edge's own CommandPath (which records it in the twin's command
book, and in the hash-chained command log where the gateway keeps one) and executed by the
local driver. Every lifecycle transition of such a command is reported up (`cmd` messages) so
the central record follows.

Reports are durable. Each one is queued in the buffer file (SampleBuffer.queue_reports, which
also keeps the command's last reported state) by one writer task, in the order they were made,
off the event loop, and numbered there (the report queue's key, never reused); the sender sends
queued reports before samples, oldest first, each with its number, and the receiver removes
them from the file only when the hub acknowledges them (`cmdack`, cumulative: the hub applied
or ignored every report up to that number). A report acknowledgement overdue by idle_timeout_s
ends the connection like a sample acknowledgement; every connection starts by sending all the
reports still in the file, so what a broken link swallowed (written, never read by the hub, or
its acknowledgement lost) goes up again, in order, and the hub ignores and counts what it
already applied (repeated or stale). So reports made while the link is down, or still queued
when the edge stops or dies, go up after a restart, first. At start the uplink also settles
what a restart cut short: every command accepted from the platform whose deadline has not
passed and whose final state was not reported gets its current state reported once: the
restored record's state and reason where the gateway keeps a command store (it restores records
and marks in-flight ones UNKNOWN before the uplink starts), else UNKNOWN (the edge restarted, the
outcome at the device is unknown). A command whose last reported state is already that one, or
final, is left alone. Reports made while the uplink is stopped wait in memory for the next
start(); those of a process that ends are covered by that settling at its next start.

Revocation. The hub sends its CA's CRL after `welcome` and whenever it takes a newer one. A CRL
is used only if the CA's signature holds and its number is above the one held; it then replaces
the trust store's (so the command verifier and the next handshake refuse what it revokes) and is
written to pki_dir/crl.pem (atomically), so a restarted edge starts from it. If it revokes the
platform certificate of the session itself, the session ends and no handshake succeeds after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gateway.codecs.secure import (
    ChannelConfig,
    CommandReceived,
    ConnectionClosed,
    Credentials,
    SecureChannelError,
    SecureConnection,
    Side,
)
from gateway.commands import CommandPath
from gateway.edge import crl_status, load_certificate, load_credentials, load_trust_store
from gateway.edge.buffer import EdgeBufferError, SampleBuffer
from gateway.edge.messages import (
    Ack,
    CommandAck,
    CommandReport,
    CrlUpdate,
    EdgeProtocolError,
    Hello,
    Message,
    Ping,
    Pong,
    SampleBatch,
    Welcome,
    decode,
    encode,
)
from gateway.errors import CommandRejected, GatewayError
from gateway.transports.secure import SecureChannel
from gateway.transports.stream import TransportError, open_stream
from model.command import TERMINAL_STATES, Command, CommandState
from model.edge import EdgeRoleConfig
from model.sample import Sample
from security.command_signing import (
    CommandReplayed,
    CommandSignatureError,
    CommandVerifier,
    SignedCommand,
)
from security.identity import (
    BadRevocationList,
    Certificate,
    Clock,
    IdentityError,
    RevocationList,
    Role,
    TrustStore,
)
from security.keystore import KeyStoreError, write_atomic
from security.policy import PolicyViolation, check_command
from twin.commands import CommandRecord, Transition
from twin.subscription import Subscription
from twin.twin import Twin

__all__ = ["RESTARTED_REASON", "EdgeCommandVerifier", "EdgeUplink"]

RESTARTED_REASON = "the edge restarted while the command was in progress: its outcome is unknown"

log = logging.getLogger(__name__)

_LINK_ERRORS = (TimeoutError, OSError, TransportError, SecureChannelError, EdgeProtocolError)


class _SessionEnded(GatewayError):
    """The connection must be dropped (overdue acknowledgement, protocol error)."""


class EdgeCommandVerifier(CommandVerifier):
    """CommandVerifier that also knows ids accepted before a restart and reports its refusals."""

    def __init__(
        self,
        platform_certs: Certificate | Iterable[Certificate],
        *,
        trust: TrustStore | None = None,
        clock: Clock = time.time,
        known_ids: Iterable[str] = (),
        on_refused: Callable[[SignedCommand, CommandSignatureError], None] | None = None,
    ) -> None:
        super().__init__(platform_certs, trust=trust, clock=clock)
        self.known_ids = set(known_ids)
        self.on_refused = on_refused

    def verify(self, signed: SignedCommand) -> Command:
        """The command if it may be acted on; CommandSignatureError (reported) if not."""
        try:
            if signed.command.id in self.known_ids:
                raise CommandReplayed(f"command {signed.command.id} was accepted before")
            return super().verify(signed)
        except CommandSignatureError as e:
            if self.on_refused is not None:
                try:
                    self.on_refused(signed, e)
                except Exception:  # reporting must not change the verdict
                    log.exception("edge: reporting a refused command failed")
            raise


class EdgeUplink:
    """The edge terminal's link to the central platform."""

    def __init__(
        self,
        twin: Twin,
        commands: CommandPath,
        buffer: SampleBuffer,
        credentials: Credentials,
        trust: TrustStore,
        platform: Certificate,
        *,
        url: str,
        batch_size: int = 500,
        max_inflight_batches: int = 4,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        keepalive_s: float = 5.0,
        idle_timeout_s: float = 20.0,
        forward: Iterable[str] | None = None,
        channel_config: ChannelConfig | None = None,
        subscriber_queue: int = 100_000,
        connect_timeout_s: float = 10.0,
        crl_file: Path | None = None,
    ) -> None:
        self.twin = twin
        self.commands = commands
        self.buffer = buffer
        self.credentials = credentials
        self.name = credentials.certificate.name
        self.trust = trust
        self.crl_file = crl_file
        self.platform = platform
        self.url = url
        self.batch_size = batch_size
        self.max_inflight = max_inflight_batches
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.keepalive_s = keepalive_s
        self.idle_timeout_s = idle_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.subscriber_queue = subscriber_queue
        self.channel_config = channel_config or ChannelConfig(peer_name=platform.name)
        if forward is not None:
            self.forward: frozenset[str] | None = frozenset(forward)
            self._skip: frozenset[str] = frozenset()
        else:
            self.forward = None
            self._skip = frozenset(
                r for r, s in twin.specs.items() if (s.role or "").startswith("plant.")
            )
        self.verifier = EdgeCommandVerifier(
            platform, trust=trust, on_refused=self._verifier_refused
        )
        self.channel: SecureChannel | None = None
        # Reports not yet in the buffer file (bounded like the file's queue).
        self._unsaved: deque[CommandReport] = deque(maxlen=buffer.max_reports)
        self._writer: asyncio.Task[None] | None = None
        self._acked_to = 0  # the highest report number the platform acknowledged
        self._remover: asyncio.Task[None] | None = None
        self._running = False
        self._from_hub: set[str] = set()
        self._wake = asyncio.Event()
        self._inflight: deque[tuple[int, float]] = deque()
        # Per write of command reports: (last report id written, when), until acknowledged.
        self._reports_inflight: deque[tuple[int, float]] = deque()
        self._sub: Subscription | None = None
        self._collector: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()
        self._max_sent = 0
        self._max_report_sent = 0
        self._listening = False
        # counters
        self.connects = 0
        self.connect_failures = 0
        self.last_error: str | None = None
        self.batches_sent = 0
        self.samples_sent = 0
        self.samples_resent = 0
        self.samples_acked = 0
        self.buffer_errors = 0
        self.commands_received = 0
        self.commands_refused: dict[str, int] = {}
        self.reports_lost = 0
        self.reports_sent = 0
        self.reports_resent = 0
        self.reports_acked = 0
        self.reports_resumed = 0
        self.crl_updates = 0
        self.crl_refused = 0

    @classmethod
    def from_config(
        cls, cfg: EdgeRoleConfig, twin: Twin, commands: CommandPath, *, root: str | Path = "."
    ) -> EdgeUplink:
        """Build from the site file's `edge.uplink` section (paths relative to root)."""
        root = Path(root)
        pki = root / cfg.pki_dir
        pf = None if cfg.key_passphrase_file is None else root / cfg.key_passphrase_file
        return cls(
            twin,
            commands,
            SampleBuffer(root / cfg.buffer_path, cfg.buffer_max_rows, durable=cfg.buffer_durable),
            load_credentials(pki, cfg.name, pf),
            load_trust_store(pki),
            load_certificate(pki, cfg.platform_certificate),
            url=cfg.uplink,
            batch_size=cfg.batch_size,
            max_inflight_batches=cfg.max_inflight_batches,
            reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s,
            keepalive_s=cfg.keepalive_s,
            idle_timeout_s=cfg.idle_timeout_s,
            forward=cfg.forward,
            crl_file=pki / "crl.pem",
        )

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a session with the platform is up."""
        return self.channel is not None and not self.channel.closed

    async def start(self) -> None:
        """Open the buffer, start collecting and connecting (returns at once)."""
        if self._collector is not None:
            return
        await asyncio.to_thread(self.buffer.open)
        now = time.time()
        # Ids accepted before a restart stay refused: a command is never executed twice.
        self.verifier.known_ids |= await asyncio.to_thread(self.buffer.accepted_ids, now)
        if not self._listening:
            self.twin.commands.add_listener(self._on_transition)
            self._listening = True
        # Reports made while stopped first (they set the last reported states), then what a
        # restart left unreported; both in the file before the first connection.
        self._running = True
        await self._flush_reports()
        await self._settle(now)
        self._sub = self.twin.subscribe("edge-uplink", self.subscriber_queue)
        # Values the twin already holds (drivers started before us) go first, so the platform
        # starts from the whole current state; from here on every change set follows.
        seed = [s for s in self.twin.snapshot() if self._forwarded(s)]
        if seed:
            await asyncio.to_thread(self.buffer.append, seed)
        self._collector = asyncio.create_task(self._collect(self._sub), name="edge-uplink collect")
        self._supervisor = asyncio.create_task(self._supervise(), name="edge-uplink connect")

    async def stop(self) -> None:
        """Stop connecting; buffer what was already acquired; close the buffer."""
        sup, self._supervisor = self._supervisor, None
        if sup is not None:
            sup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sup
        if self._sub is not None:
            self.twin.unsubscribe(self._sub)  # the collector buffers what is queued, then ends
        col, self._collector = self._collector, None
        if col is not None:
            try:
                async with asyncio.timeout(10.0):
                    await col
            except TimeoutError:
                log.error("edge uplink: buffering the last samples took too long")
        for t in list(self._bg):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await t
        try:
            async with asyncio.timeout(10.0):
                await self._flush_reports()
        except TimeoutError:
            log.error("edge uplink: writing the last command reports took too long")
        # No await from here to close(): a report made now waits in memory for start().
        self._running = False
        self._sub = None
        await asyncio.to_thread(self.buffer.close)

    def stats(self) -> dict[str, Any]:
        """Link state, buffer (rows, full, dropped), traffic and command counters."""
        return {
            "edge": self.name,
            "uplink": self.url,
            "connected": self.connected,
            "connects": self.connects,
            "connect_failures": self.connect_failures,
            "last_error": self.last_error,
            "buffer": self.buffer.stats(),
            "lost_before_buffer": (self._sub.dropped if self._sub else 0) + self.buffer_errors,
            "batches_sent": self.batches_sent,
            "samples_sent": self.samples_sent,
            "samples_resent": self.samples_resent,
            "samples_acked": self.samples_acked,
            "inflight_batches": len(self._inflight),
            "commands_received": self.commands_received,
            "commands_refused": dict(self.commands_refused),
            "reports_queued": self.buffer.reports_queued + len(self._unsaved),
            "reports_sent": self.reports_sent,
            "reports_resent": self.reports_resent,
            "reports_acked": self.reports_acked,
            "inflight_report_writes": len(self._reports_inflight),
            "reports_resumed": self.reports_resumed,
            "reports_lost": self.reports_lost + self.buffer.reports_dropped,
            **crl_status(self.trust),
            "crl_updates": self.crl_updates,
            "crl_refused": self.crl_refused,
        }

    # --- collecting --------------------------------------------------------------------------

    def _forwarded(self, s: Sample) -> bool:
        if self.forward is not None:
            return s[0] in self.forward
        return s[0] not in self._skip

    async def _collect(self, sub: Subscription) -> None:
        while True:
            cs = await sub.get()
            if cs is None:
                if sub.closed and not len(sub):
                    return
                continue
            changes = list(cs.changes)
            for more in sub.drain():
                changes.extend(more.changes)
            samples = [s for s in changes if self._forwarded(s)]
            if not samples:
                continue
            try:
                await asyncio.to_thread(self.buffer.append, samples)
            except EdgeBufferError as e:
                self.buffer_errors += len(samples)
                self.last_error = str(e)
                log.error("edge uplink: %d samples lost: %s", len(samples), e)
                continue
            self._wake.set()

    # --- connecting --------------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = self.reconnect_min_s
        while True:
            try:
                ch = await self._connect()
            except _LINK_ERRORS as e:
                self.connect_failures += 1
                self.last_error = f"connect: {e}"
                log.debug("edge uplink: cannot connect to %s: %s", self.url, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
                continue
            delay = self.reconnect_min_s
            try:
                await self._session(ch)
            except (*_LINK_ERRORS, _SessionEnded) as e:
                self.last_error = f"session: {e}"
                log.info("edge uplink: connection to %s ended: %s", self.url, e)
            except Exception as e:  # a bug: log it, keep the uplink alive
                self.last_error = f"session: {e!r}"
                log.exception("edge uplink: session failed")
            finally:
                self.channel = None
                self._inflight.clear()
                self._reports_inflight.clear()
                with contextlib.suppress(Exception):
                    await ch.close()
            await asyncio.sleep(delay)

    async def _connect(self) -> SecureChannel:
        # open_secure_channel's steps, closing the stream on every failure: its handshake
        # leaves the stream open when the peer resets the connection mid-handshake.
        stream = await open_stream(self.url, self.connect_timeout_s)
        try:
            conn = SecureConnection(
                Side.CLIENT,
                self.credentials,
                self.trust,
                config=self.channel_config,
                command_verifier=self.verifier,
            )
            ch = SecureChannel(stream, conn)
            await ch.handshake(self.connect_timeout_s)
        except BaseException:
            await stream.close()
            raise
        return ch

    async def _session(self, ch: SecureChannel) -> None:
        buf = self.buffer
        await ch.send(encode(Hello(self.name, buf.stream, len(buf), buf.dropped)))
        ev = await ch.receive(self.idle_timeout_s)
        if isinstance(ev, ConnectionClosed):
            raise _SessionEnded(f"the platform closed before welcome: {ev.reason or 'no reason'}")
        if isinstance(ev, CommandReceived):
            raise _SessionEnded("a command came before welcome")
        welcome = decode(ev.data)
        if not isinstance(welcome, Welcome) or welcome.stream != buf.stream:
            raise _SessionEnded(f"expected welcome for stream {buf.stream}, got {welcome}")
        if welcome.acked > buf.last_seq:
            # The platform holds more of this stream than we ever numbered: the buffer file was
            # replaced by an older copy. Our next numbers would look like duplicates to the hub:
            # go on under a new stream id instead.
            old = buf.stream
            await asyncio.to_thread(buf.new_stream)
            log.error(
                "edge uplink: the platform holds stream %s up to %d, beyond our %d; "
                "continuing as stream %s", old, welcome.acked, buf.last_seq, buf.stream,
            )  # fmt: skip
            raise _SessionEnded("stream renewed; reconnecting")
        self.samples_acked += await asyncio.to_thread(buf.ack, welcome.acked)
        self.channel = ch
        self.connects += 1
        log.info("edge uplink: connected to %s (platform holds seq <= %d)", self.url, welcome.acked)
        sender = asyncio.create_task(self._send_loop(ch, welcome.acked), name="edge-uplink send")
        receiver = asyncio.create_task(self._receive_loop(ch), name="edge-uplink receive")
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sender, receiver):
                t.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)
        for t in done:
            exc = t.exception()
            if exc is not None:
                raise exc

    async def _send(self, ch: SecureChannel, msg: Message) -> None:
        await ch.send(encode(msg))

    async def _send_loop(self, ch: SecureChannel, after: int) -> None:
        last_sent = after
        last_tx = time.monotonic()
        inflight, rinflight = self._inflight, self._reports_inflight
        inflight.clear()
        rinflight.clear()
        # Every report still in the file is unacknowledged: this connection sends them all.
        reports_sent = 0
        while True:
            self._wake.clear()
            if self.buffer.last_report_id > reports_sent:
                reports_sent = await self._send_reports(ch, reports_sent)
                last_tx = time.monotonic()
            now = time.monotonic()
            if inflight and now - inflight[0][1] > self.idle_timeout_s:
                raise _SessionEnded(f"no acknowledgement for {self.idle_timeout_s:g} s")
            if rinflight and now - rinflight[0][1] > self.idle_timeout_s:
                raise _SessionEnded(
                    f"no acknowledgement of command reports for {self.idle_timeout_s:g} s"
                )
            if len(inflight) < self.max_inflight:
                rows = await asyncio.to_thread(self.buffer.read, last_sent, self.batch_size)
                if rows:
                    await self._send(ch, SampleBatch(tuple(rows)))
                    self.batches_sent += 1
                    self.samples_sent += len(rows)
                    self.samples_resent += sum(1 for seq, _ in rows if seq <= self._max_sent)
                    last_sent = rows[-1][0]
                    self._max_sent = max(self._max_sent, last_sent)
                    last_tx = time.monotonic()
                    inflight.append((last_sent, last_tx))
                    continue
            wait = self.keepalive_s - (time.monotonic() - last_tx)
            if wait <= 0:
                await self._send(ch, Ping(time.time()))
                last_tx = time.monotonic()
                continue
            for q in (inflight, rinflight):
                if q:
                    wait = min(wait, max(0.05, q[0][1] + self.idle_timeout_s - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _send_reports(self, ch: SecureChannel, after: int) -> int:
        """Send the queued reports with id > after, oldest first; the last id written.

        They stay in the file until the hub acknowledges them (`cmdack`, see _receive_loop).
        """
        while (last := self.buffer.last_report_id) > after:
            rows = await asyncio.to_thread(self.buffer.queued_reports, 100, after)
            if rows:
                for _, r in rows:
                    await self._send(ch, r)
                after = rows[-1][0]
                self._reports_inflight.append((after, time.monotonic()))
                self.reports_sent += len(rows)
                self.reports_resent += sum(1 for i, _ in rows if i <= self._max_report_sent)
                self._max_report_sent = max(self._max_report_sent, after)
            if len(rows) < 100:
                # Read after `last` was given out: every report up to it was in that read
                # (or is gone: acknowledged, or dropped by the bound).
                after = max(after, last)
        return after

    async def _receive_loop(self, ch: SecureChannel) -> None:
        while True:
            ev = await ch.receive(self.idle_timeout_s)
            if isinstance(ev, ConnectionClosed):
                return
            if isinstance(ev, CommandReceived):
                await self._on_command(ev)
                continue
            msg = decode(ev.data)
            if isinstance(msg, Ack):
                self.samples_acked += await asyncio.to_thread(self.buffer.ack, msg.seq)
                while self._inflight and self._inflight[0][0] <= msg.seq:
                    self._inflight.popleft()
                self._wake.set()
            elif isinstance(msg, CommandAck):
                self._remove_acked(msg.n)
                while self._reports_inflight and self._reports_inflight[0][0] <= msg.n:
                    self._reports_inflight.popleft()
                self._wake.set()
            elif isinstance(msg, Ping):
                await self._send(ch, Pong(msg.ts))
            elif isinstance(msg, CrlUpdate):
                await self._on_crl(ch, msg)
            elif not isinstance(msg, Pong):
                raise _SessionEnded(f"unexpected {type(msg).__name__} from the platform")

    async def _on_crl(self, ch: SecureChannel, msg: CrlUpdate) -> None:
        try:
            crl = RevocationList.load(msg.der, self.trust.ca)
        except BadRevocationList as e:
            self.crl_refused += 1
            log.error("edge uplink: CRL from the platform refused: %s", e)
            return
        held = self.trust.crl
        if held is not None and crl.number <= held.number:
            return  # the one we hold (sent at every connect) or an older one
        self.trust.update_crl(crl)
        log.info("edge uplink: CRL number %d taken (%d revoked)", crl.number, len(crl.entries))
        if self.crl_file is not None:
            try:
                await asyncio.to_thread(write_atomic, self.crl_file, crl.pem)
            except KeyStoreError as e:
                log.error("edge uplink: cannot keep the CRL in %s: %s", self.crl_file, e)
        self.crl_updates += 1
        try:
            self.trust.validate(ch.peer, [Role.PLATFORM])
        except IdentityError as e:
            raise _SessionEnded(f"the platform's certificate is no longer valid: {e}") from e

    # --- commands ----------------------------------------------------------------------------

    def _report(self, r: CommandReport) -> None:
        """Queue a report (on the loop): the writer task puts it in the buffer file, in order."""
        if len(self._unsaved) == self._unsaved.maxlen:
            self.reports_lost += 1
        self._unsaved.append(r)
        self._kick_writer()

    def _kick_writer(self) -> None:
        # One writer at a time keeps the reports in the order they were made.
        if self._running and self._unsaved and (self._writer is None or self._writer.done()):
            self._writer = asyncio.get_running_loop().create_task(
                self._write_reports(), name="edge-uplink reports"
            )

    async def _write_reports(self) -> None:
        while self._unsaved:
            batch = list(self._unsaved)
            self._unsaved.clear()
            try:
                await asyncio.to_thread(self.buffer.queue_reports, batch)
            except Exception as e:  # never raises: start() and stop() wait for this task
                self.reports_lost += len(batch)
                self.last_error = str(e)
                log.error("edge uplink: %d command reports lost: %s", len(batch), e,
                          exc_info=not isinstance(e, EdgeBufferError))  # fmt: skip
                continue
            self._wake.set()

    def _remove_acked(self, n: int) -> None:
        # The hub acknowledges each report: deleting each in its own (synced) transaction in
        # the receive loop would hold up sample acks behind a burst of reports. One remover
        # at a time deletes through the highest number acknowledged so far, so a burst costs a
        # few transactions; a report acknowledged but not yet deleted when the link breaks is
        # sent again and the hub acknowledges it as repeated.
        self._acked_to = max(self._acked_to, n)
        if self._remover is None or self._remover.done():
            task = asyncio.get_running_loop().create_task(
                self._remove_reports(), name="edge-uplink report acks"
            )
            self._remover = task
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)

    async def _remove_reports(self) -> None:
        done = 0
        while done < self._acked_to:
            target = self._acked_to
            try:
                self.reports_acked += await asyncio.to_thread(self.buffer.remove_reports, target)
            except EdgeBufferError as e:  # kept in the file: sent again, acknowledged again
                self.last_error = str(e)
                log.error("edge uplink: acknowledged reports not removed: %s", e)
                return
            done = target

    async def _flush_reports(self) -> None:
        """Return once every report made so far is in the buffer file (or counted lost)."""
        self._kick_writer()
        # A report made as the writer ends starts another one: wait for that too.
        while self._writer is not None and not self._writer.done():
            await self._writer

    async def _settle(self, now: float) -> None:
        """Report the current state of commands a restart left unreported (once each)."""
        owed = await asyncio.to_thread(self.buffer.unreported, now)
        n = 0
        for cid, last in owed:
            if cid in self._from_hub:
                continue  # still live in this process: its own transitions are reported
            r = self._current_state(cid)
            if r.state != last:
                self._report(r)
                n += 1
        await self._flush_reports()
        self.reports_resumed += n
        if n:
            log.info("edge uplink: reporting the state of %d commands after a restart", n)

    def _current_state(self, cid: str) -> CommandReport:
        """The command's state as this edge knows it now (UNKNOWN without a record)."""
        if cid not in self.twin.commands:
            return CommandReport(cid, CommandState.UNKNOWN, RESTARTED_REASON, "", time.time())
        rec = self.twin.commands.get(cid)
        if not rec.done:  # its later transitions are the platform's too
            self._from_hub.add(cid)
        last = rec.history[-1]
        return CommandReport(cid, last.state, last.reason, "", last.ts)

    def _count_refusal(self, code: str) -> None:
        self.commands_refused[code] = self.commands_refused.get(code, 0) + 1

    def _keep_evidence(
        self, signed: SignedCommand, verdict: str, code: str = "", reason: str = ""
    ) -> asyncio.Task[str | None]:
        """Record the signed command in the buffer file; the task gives the error, if any."""
        cmd = signed.command

        async def write() -> str | None:
            try:
                await asyncio.to_thread(
                    self.buffer.record_command,
                    cmd.id, cmd.deadline, signed.encode(), verdict, code, reason,
                )  # fmt: skip
            except Exception as e:
                log.error("edge: cannot record the evidence of command %s: %s", cmd.id, e)
                return str(e)
            return None

        task = asyncio.get_running_loop().create_task(write(), name=f"evidence {cmd.id}")
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    def _verifier_refused(self, signed: SignedCommand, err: CommandSignatureError) -> None:
        """Called by the channel's verifier (on the loop) for each command it refuses."""
        cmd = signed.command
        self.commands_received += 1
        self._count_refusal(err.code)
        log.warning("edge: refused command %s for %s: %s", cmd.id, cmd.target, err)
        self._keep_evidence(signed, "refused", err.code, str(err))
        if isinstance(err, CommandReplayed):
            return  # the first command of this id stands; its own reports tell the platform
        self._report(
            CommandReport(cmd.id, CommandState.FAILED, f"refused at the edge: {err}", err.code,
                          time.time())
        )  # fmt: skip

    async def _on_command(self, ev: CommandReceived) -> None:
        cmd = ev.command
        self.commands_received += 1
        try:
            check_command(cmd, self.twin.specs.get(cmd.target))
        except PolicyViolation as e:
            self._count_refusal(e.code)
            log.warning("edge: refused command %s: %s", cmd.id, e)
            self._keep_evidence(ev.signed, "refused", e.code, str(e))
            self._report(
                CommandReport(cmd.id, CommandState.FAILED,
                              f"refused by the edge's limits: {e}", e.code, time.time())
            )  # fmt: skip
            return
        # The evidence is written before the command acts: nothing executes unrecorded.
        err = await self._keep_evidence(ev.signed, "accepted")
        if err is not None:
            self._count_refusal("no_evidence")
            self._report(
                CommandReport(cmd.id, CommandState.FAILED,
                              f"the edge cannot record the command: {err}", "no_evidence",
                              time.time())
            )  # fmt: skip
            return
        self.verifier.known_ids.add(cmd.id)
        self._from_hub.add(cmd.id)
        try:
            await self.commands.submit(cmd)
        except CommandRejected as e:
            self._from_hub.discard(cmd.id)
            self._count_refusal(e.code)
            self._report(
                CommandReport(cmd.id, CommandState.FAILED, f"refused at the edge: {e}", e.code,
                              time.time())
            )  # fmt: skip

    def _on_transition(self, rec: CommandRecord, t: Transition) -> None:
        cid = rec.command.id
        if cid not in self._from_hub:
            return
        self._report(CommandReport(cid, t.state, t.reason, "", t.ts))
        if t.state in TERMINAL_STATES:
            self._from_hub.discard(cid)
