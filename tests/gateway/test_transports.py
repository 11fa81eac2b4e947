"""Transports: link URLs, TCP and a serial link over a real pty."""

import asyncio

import pytest

from gateway.transports.pty import open_pty
from gateway.transports.stream import TransportError, open_stream, parse_link, stream_from_fd


def test_parse_links() -> None:
    s = parse_link("serial:///dev/ttyUSB0?baudrate=2400&parity=e&stopbits=1")
    assert (s.kind, s.device, s.baudrate, s.parity, s.bytesize) == (
        "serial",
        "/dev/ttyUSB0",
        2400,
        "E",
        8,
    )
    t = parse_link("tcp://127.0.0.1:8899")
    assert (t.host, t.port) == ("127.0.0.1", 8899)
    for bad, why in [
        ("udp://x:1", "tcp:// or serial://"),
        ("tcp://127.0.0.1", "host and port"),
        ("serial:///dev/x?speed=9600", "unknown serial option"),
        ("serial:///dev/x?parity=Q", "parity"),
        ("serial:///dev/x?baudrate=fast", "bad serial option"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_link(bad)


async def test_serial_over_pty_round_trip() -> None:
    pair = open_pty()
    try:
        dev = await stream_from_fd(pair.master_fd, "device")
        drv = await open_stream(f"serial://{pair.slave_path}?baudrate=2400&parity=E")
        frame = bytes(range(256))  # every byte value passes a raw tty unchanged
        await drv.write(frame)
        got = b""
        while len(got) < len(frame):
            got += await dev.read(1024, timeout=2)
        assert got == frame
        await dev.write(b"\x68\x16")
        assert await drv.read(16, timeout=2) == b"\x68\x16"
        await drv.close()
        await dev.close()
    finally:
        pair.close()


async def test_tcp_round_trip_and_refused(port: int) -> None:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(await r.read(100))
        await w.drain()
        w.close()

    server = await asyncio.start_server(echo, "127.0.0.1", port)
    async with server:
        s = await open_stream(f"tcp://127.0.0.1:{port}")
        await s.write(b"ping")
        assert await s.read(timeout=2) == b"ping"
        assert await s.read(timeout=2) == b""  # closed by the peer
        await s.close()
    with pytest.raises(TransportError, match=r"cannot open tcp://127\.0\.0\.1"):
        await open_stream(f"tcp://127.0.0.1:{port}", timeout=2)
    with pytest.raises(TransportError, match="cannot open serial"):
        await open_stream("serial:///dev/does-not-exist")
