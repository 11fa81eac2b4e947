"""Byte streams for the field protocols: TCP, serial (RS-232/RS-485), and pseudo-terminals for tests.

Codecs are sans-IO; a driver moves bytes between a ByteStream and its codec. One URL names a link:
`tcp://host:port` (including serial-to-TCP "transparent transmission" converters) or
`serial:///dev/ttyUSB0?baudrate=2400&bytesize=8&parity=E&stopbits=1` (DL/T 645 meters default to
2400 baud, 8E1).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from gateway.errors import DriverError

__all__ = [
    "ByteStream",
    "LinkSpec",
    "TransportError",
    "open_stream",
    "parse_link",
    "stream_from_fd",
]


class TransportError(DriverError):
    """A link could not be opened or broke."""


@dataclass(frozen=True)
class LinkSpec:
    """A parsed link URL."""

    kind: str  # "tcp" or "serial"
    host: str = ""
    port: int = 0
    device: str = ""
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: float = 1

    def __str__(self) -> str:
        if self.kind == "tcp":
            return f"tcp://{self.host}:{self.port}"
        return (
            f"serial://{self.device}?baudrate={self.baudrate}&bytesize={self.bytesize}"
            f"&parity={self.parity}&stopbits={self.stopbits:g}"
        )


def parse_link(url: str) -> LinkSpec:
    """Parse a link URL; ValueError naming the problem."""
    parts = urlsplit(url)
    if parts.scheme == "tcp":
        if not parts.hostname or parts.port is None:
            raise ValueError(f"{url!r}: a tcp link needs host and port, e.g. tcp://127.0.0.1:8899")
        return LinkSpec("tcp", host=parts.hostname, port=parts.port)
    if parts.scheme == "serial":
        device = parts.path or parts.netloc
        if not device:
            raise ValueError(f"{url!r}: a serial link needs a device, e.g. serial:///dev/ttyUSB0")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(q) - {"baudrate", "bytesize", "parity", "stopbits"}
        if unknown:
            raise ValueError(f"{url!r}: unknown serial option(s) {', '.join(sorted(unknown))}")
        parity = q.get("parity", "N").upper()
        if parity not in ("N", "E", "O", "M", "S"):
            raise ValueError(f"{url!r}: parity must be one of N, E, O, M, S")
        try:
            return LinkSpec(
                "serial",
                device=device,
                baudrate=int(q.get("baudrate", 9600)),
                bytesize=int(q.get("bytesize", 8)),
                parity=parity,
                stopbits=float(q.get("stopbits", 1)),
            )
        except ValueError as e:
            raise ValueError(f"{url!r}: bad serial option: {e}") from None
    raise ValueError(f"{url!r}: link must start with tcp:// or serial://")


class ByteStream:
    """A bidirectional byte stream over asyncio streams."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        name: str,
        read_transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.name = name
        # A pipe pair (pty master) reads through its own transport, closed with the writer.
        self._read_transport = read_transport

    async def read(self, max_bytes: int = 4096, timeout: float | None = None) -> bytes:
        """Some bytes (b"" at end of stream); TimeoutError when nothing came within timeout."""
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(max_bytes)
        except TimeoutError:
            raise  # nothing came in time: not a broken link (TimeoutError is an OSError too)
        except (ConnectionError, OSError) as e:
            raise TransportError(f"{self.name}: read failed: {e}") from e

    async def write(self, data: bytes) -> None:
        """Send bytes and wait until they are handed to the OS."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError) as e:
            raise TransportError(f"{self.name}: write failed: {e}") from e

    def discard_input(self) -> int:
        """Drop bytes already received but not read (e.g. before a new request on a bus)."""
        buf = getattr(self.reader, "_buffer", None)
        n = len(buf) if buf is not None else 0
        if buf is not None:
            buf.clear()
        return n

    async def close(self) -> None:
        """Close; idempotent."""
        if self._read_transport is not None and not self._read_transport.is_closing():
            self._read_transport.close()
        if self.writer.is_closing():
            return
        self.writer.close()
        # Pipe writers (pty, serial) have no close waiter: NotImplementedError, nothing to wait for.
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation of close().
        with contextlib.suppress(TimeoutError, ConnectionError, OSError, NotImplementedError):
            async with asyncio.timeout(2.0):
                await self.writer.wait_closed()


async def open_stream(url: str, timeout: float = 5.0) -> ByteStream:
    """Open the link a URL names; TransportError if it cannot be opened in time."""
    spec = parse_link(url)
    try:
        if spec.kind == "tcp":
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(spec.host, spec.port), timeout
            )
        else:
            return await _open_serial(spec)
    except (TimeoutError, OSError) as e:
        raise TransportError(f"cannot open {spec}: {e or 'timed out'}") from e
    except Exception as e:  # pyserial raises SerialException (an OSError subclass in most versions)
        raise TransportError(f"cannot open {spec}: {e}") from e
    return ByteStream(reader, writer, str(spec))


async def _open_serial(spec: LinkSpec) -> ByteStream:
    # pyserial configures the tty (baud, parity, ...); asyncio pipes then do the I/O on its fd.
    # (pyserial-asyncio sets VMIN/VTIME through a zero timeout, which ptys refuse with EINVAL.)
    import serial

    port = serial.Serial(
        spec.device,
        baudrate=spec.baudrate,
        bytesize=spec.bytesize,
        parity=spec.parity,
        stopbits=spec.stopbits,
    )
    try:
        stream = await stream_from_fd(port.fileno(), str(spec))
    finally:
        port.close()  # the stream holds its own duplicates of the descriptor
    return stream


async def stream_from_fd(fd: int, name: str) -> ByteStream:
    """A ByteStream over a file descriptor, e.g. the master side of a pty that plays a device."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    rfile = os.fdopen(os.dup(fd), "rb", buffering=0)
    rtransport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), rfile
    )
    wfile = os.fdopen(os.dup(fd), "wb", buffering=0)
    wtransport, wprotocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, wfile)
    writer = asyncio.StreamWriter(wtransport, wprotocol, reader, loop)
    return ByteStream(reader, writer, name, rtransport)
