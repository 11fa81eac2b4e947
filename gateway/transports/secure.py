"""The secure channel over a ByteStream: client (edge terminal) and server (platform) sides.

The protocol lives in gateway/codecs/secure (sans-IO); this module only moves bytes between it
and a TCP ByteStream, bounds every wait, and closes the stream when the codec says the
connection cannot go on (after sending the codec's alert, so the peer learns why). The handshake's
SM2 work (~10 ms) runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gateway.codecs.secure import (
    ChannelConfig,
    CommandReceived,
    ConnectionClosed,
    Credentials,
    DataReceived,
    Event,
    HandshakeComplete,
    HandshakeError,
    KeyUpdated,
    LocalProtocolError,
    NeedData,
    SecureChannelError,
    SecureConnection,
    Side,
)
from gateway.transports.stream import ByteStream, TransportError, open_stream
from security.command_signing import CommandVerifier, SignedCommand
from security.identity import Certificate, TrustStore

__all__ = [
    "SecureChannel",
    "SecureServer",
    "accept_secure",
    "open_secure_channel",
    "serve_secure",
]

log = logging.getLogger(__name__)
_READ = 65536


class SecureChannel:
    """An authenticated, encrypted channel: send data or signed commands, receive events."""

    def __init__(self, stream: ByteStream, connection: SecureConnection) -> None:
        self.stream = stream
        self.connection = connection
        self.closed = False

    @property
    def peer(self) -> Certificate:
        """The peer's validated certificate."""
        if self.connection.peer is None:
            raise LocalProtocolError("no peer before the handshake")
        return self.connection.peer

    async def _flush(self) -> None:
        out = self.connection.data_to_send()
        if out:
            await self.stream.write(out)

    async def _next(self, timeout: float | None) -> Event:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        eof = False
        while True:
            if self.closed:  # closed here (close() from another task): nothing more to read
                return ConnectionClosed(clean=True, reason="closed locally")
            try:
                ev = self.connection.next_event()
            except SecureChannelError:
                # Let the peer read our alert (if any) before the stream goes.
                with contextlib.suppress(TransportError, OSError):
                    await self._flush()
                await self.stream.close()
                self.closed = True
                raise
            if not isinstance(ev, NeedData):
                return ev
            if eof:  # the stream ended and the codec wants more: never spin on b""
                return ConnectionClosed(clean=False, reason="stream ended")
            await self._flush()  # handshake answers the codec queued while reading
            left = None if deadline is None else max(0.0, deadline - loop.time())
            data = await self.stream.read(_READ, left)
            eof = not data
            self.connection.receive_data(data)

    async def handshake(self, timeout: float = 10.0) -> Certificate:
        """Run the handshake; the peer's certificate, or a HandshakeError naming why not."""
        if self.connection.side is Side.CLIENT:
            self.connection.initiate()
            await self._flush()
        try:
            ev = await self._next(timeout)
        except TimeoutError:
            await self.stream.close()
            self.closed = True
            raise
        await self._flush()
        if isinstance(ev, ConnectionClosed):
            await self.stream.close()
            self.closed = True
            raise TransportError(f"{self.stream.name}: peer closed during the handshake")
        if not isinstance(ev, HandshakeComplete):  # cannot happen: the codec yields it first
            raise LocalProtocolError(f"unexpected {type(ev).__name__} during the handshake")
        return ev.peer

    async def send(self, data: bytes) -> None:
        """Send application bytes as one record."""
        self.connection.send_data(data)
        await self._flush()

    async def send_command(self, signed: SignedCommand) -> None:
        """Send one signed command."""
        self.connection.send_command(signed)
        await self._flush()

    async def send_commands(self, signed: Iterable[SignedCommand]) -> int:
        """Send many signed commands in one write; how many."""
        n = 0
        for s in signed:
            self.connection.send_command(s)
            n += 1
        await self._flush()
        return n

    async def update_keys(self) -> None:
        """Re-key our sending direction now."""
        self.connection.update_keys()
        await self._flush()

    async def receive(
        self, timeout: float | None = None
    ) -> DataReceived | CommandReceived | ConnectionClosed:
        """The next delivered data, command or close (key updates are handled silently)."""
        while True:
            ev = await self._next(timeout)
            if isinstance(ev, KeyUpdated):
                log.debug("%s: peer re-keyed to epoch %d", self.stream.name, ev.epoch)
                continue
            if isinstance(ev, HandshakeComplete):
                continue
            if isinstance(ev, ConnectionClosed):
                await self.stream.close()
                self.closed = True
            return ev

    async def close(self) -> None:
        """Send a close alert (if still open) and close the stream; idempotent."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(SecureChannelError, TransportError, OSError):
            self.connection.close()
            await self._flush()
        await self.stream.close()


async def open_secure_channel(
    url: str,
    credentials: Credentials,
    trust: TrustStore,
    *,
    config: ChannelConfig | None = None,
    command_verifier: CommandVerifier | None = None,
    timeout: float = 10.0,
) -> SecureChannel:
    """Connect to a platform at `url` (tcp://host:port) and run the handshake as the client."""
    stream = await open_stream(url, timeout)
    conn = SecureConnection(
        Side.CLIENT, credentials, trust, config=config, command_verifier=command_verifier
    )
    ch = SecureChannel(stream, conn)
    await ch.handshake(timeout)
    return ch


async def accept_secure(
    stream: ByteStream,
    credentials: Credentials,
    trust: TrustStore,
    *,
    config: ChannelConfig | None = None,
    command_verifier: CommandVerifier | None = None,
    timeout: float = 10.0,
) -> SecureChannel:
    """Run the server side of the handshake on an accepted stream."""
    conn = SecureConnection(
        Side.SERVER, credentials, trust, config=config, command_verifier=command_verifier
    )
    ch = SecureChannel(stream, conn)
    await ch.handshake(timeout)
    return ch


class SecureServer:
    """A listening platform endpoint; `refused_handshakes` counts peers turned away, by reason."""

    def __init__(self, server: asyncio.Server) -> None:
        self.server = server
        self.refused_handshakes: dict[str, int] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end the connection handlers."""
        self.server.close()
        for t in list(self.tasks):
            t.cancel()
        for t in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.server.wait_closed()


async def serve_secure(
    host: str,
    port: int,
    credentials: Credentials,
    trust: TrustStore,
    handler: Callable[[SecureChannel], Awaitable[None]],
    *,
    config: ChannelConfig | None = None,
    timeout: float = 10.0,
) -> SecureServer:
    """Listen on host:port; run `handler` with each peer that completes the handshake."""
    holder: list[SecureServer] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        name = f"tcp://{peername[0]}:{peername[1]}" if peername else "tcp://?"
        stream = ByteStream(reader, writer, name)
        srv = holder[0]
        task = asyncio.current_task()
        if task is not None:
            srv.tasks.add(task)
        try:
            try:
                ch = await accept_secure(stream, credentials, trust, config=config, timeout=timeout)
            except HandshakeError as e:
                key = e.reason.name.lower()
                srv.refused_handshakes[key] = srv.refused_handshakes.get(key, 0) + 1
                log.warning("%s: handshake refused: %s", name, e)
                return
            except (TimeoutError, TransportError, SecureChannelError) as e:
                log.warning("%s: handshake failed: %s", name, e)
                await stream.close()
                return
            try:
                await handler(ch)
            finally:
                await ch.close()
        finally:
            if task is not None:
                srv.tasks.discard(task)

    server = await asyncio.start_server(on_client, host, port)
    holder.append(SecureServer(server))
    return holder[0]
