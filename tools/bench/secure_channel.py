"""Secure channel benchmark: signed + SM4-encrypted commands end to end over loopback TCP.

Both ends run in one process and one event loop (as the baseline does), over a real loopback TCP
connection. Two measures, each against the same commands on a plain TCP connection (u32 length +
the canonical command bytes, decoded at the edge) in the same run:

- throughput: `commands` commands in dispatch batches of `batch`; per batch one SM2 signature over
  the Merkle root; at the edge SM4-GCM, replay/time checks, the inclusion proof and (once per
  batch) the SM2 root verification. Commands per second from the first signature to the last
  command delivered.
- latency: `single` one-command dispatches, each signed and verified on its own (the worst case:
  an SM2 sign and an SM2 verify per command), answered by an acknowledgement; p50 / p99 of the
  round trip.

Run: `python -m tools.bench.secure_channel [--quick] [--json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from gateway.codecs.secure import ChannelConfig, CommandReceived, Credentials, DataReceived
from gateway.transports.secure import SecureChannel, accept_secure, open_secure_channel
from gateway.transports.stream import ByteStream
from model.command import Command
from security.command_signing import CommandVerifier, decode_command, encode_command, sign_batch
from security.identity import CertificateAuthority, Role

__all__ = ["run"]


def _commands(n: int, tag: str) -> list[Command]:
    deadline = time.time() + 3600
    return [
        Command(f"VPP1.DER{i:05d}/DRCT1.WSet.setMag.f", 100.0 + i, "dispatch", id=f"{tag}{i}",
                deadline=deadline)
        for i in range(n)
    ]  # fmt: skip


def _p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _plain(commands: int, batch: int, single: int) -> dict[str, float]:
    got: asyncio.Queue[int] = asyncio.Queue()
    done = asyncio.Event()
    count = 0

    async def edge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        while True:
            try:
                head = await reader.readexactly(4)
            except asyncio.IncompleteReadError:
                break
            body = await reader.readexactly(int.from_bytes(head, "big"))
            cmd = decode_command(body)
            count += 1
            if cmd.id.startswith("lat"):
                writer.write(b"\x00\x00\x00\x03ack")
                await writer.drain()
            elif count == commands:
                done.set()
        writer.close()
        await got.put(count)

    server = await asyncio.start_server(edge, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    cmds = _commands(commands, "t")
    t0 = time.perf_counter()
    for i in range(0, commands, batch):
        writer.write(
            b"".join(
                len(b).to_bytes(4, "big") + b for b in map(encode_command, cmds[i : i + batch])
            )
        )
        await writer.drain()
    await asyncio.wait_for(done.wait(), 300)
    rate = commands / (time.perf_counter() - t0)
    rtts = []
    for c in _commands(single, "lat"):
        t = time.perf_counter()
        b = encode_command(c)
        writer.write(len(b).to_bytes(4, "big") + b)
        await writer.drain()
        await reader.readexactly(7)
        rtts.append(time.perf_counter() - t)
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(got.get(), 10)
    server.close()
    await server.wait_closed()
    return {"rate": rate, "p50": _p(rtts, 0.5), "p99": _p(rtts, 0.99)}


async def _secure(commands: int, batch: int, single: int) -> dict[str, float]:
    ca = CertificateAuthority.create("bench-ca")
    pk, pc = ca.issue_new_key("platform", role=Role.PLATFORM)
    ek, ec = ca.issue_new_key("edge-bench", role=Role.EDGE)
    trust = ca.trust_store()
    platform_creds, edge_creds = Credentials(pk, pc), Credentials(ek, ec)
    accepted: asyncio.Future[SecureChannel] = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ch = await accept_secure(ByteStream(reader, writer, "platform"), platform_creds, trust)
        accepted.set_result(ch)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    t = time.perf_counter()
    edge = await open_secure_channel(
        f"tcp://127.0.0.1:{port}",
        edge_creds,
        trust,
        config=ChannelConfig(),
        command_verifier=CommandVerifier(pc, trust=trust),
    )
    platform = await asyncio.wait_for(accepted, 10)
    handshake = time.perf_counter() - t
    done = asyncio.Event()
    count = 0

    async def edge_loop() -> None:
        nonlocal count
        while True:
            ev = await edge.receive()
            if not isinstance(ev, CommandReceived):
                return
            count += 1
            if ev.command.id.startswith("lat"):
                await edge.send(b"ack")
            elif count == commands:
                done.set()

    task = asyncio.create_task(edge_loop())
    cmds = _commands(commands, "t")
    t0 = time.perf_counter()
    for i in range(0, commands, batch):
        signed = sign_batch(cmds[i : i + batch], pk, pc)
        await platform.send_commands(signed.commands)
    await asyncio.wait_for(done.wait(), 300)
    rate = commands / (time.perf_counter() - t0)
    rtts = []
    for c in _commands(single, "lat"):
        t = time.perf_counter()
        (sc,) = sign_batch([c], pk, pc).commands
        await platform.send_command(sc)
        ev = await platform.receive(timeout=10)
        assert isinstance(ev, DataReceived)
        rtts.append(time.perf_counter() - t)
    refused = edge.connection.refused_total
    await platform.close()
    await asyncio.wait_for(task, 10)
    await edge.close()
    server.close()
    await server.wait_closed()
    if refused:
        raise RuntimeError(f"the edge refused {refused} genuine records")
    return {"rate": rate, "p50": _p(rtts, 0.5), "p99": _p(rtts, 0.99), "handshake": handshake}


def run(commands: int = 20_000, batch: int = 1000, single: int = 500) -> dict[str, Any]:
    """Measure the secure channel and plain TCP with the same commands; figures and ratios."""

    async def both() -> tuple[dict[str, float], dict[str, float]]:
        plain = await _plain(commands, batch, single)
        secure = await _secure(commands, batch, single)
        return plain, secure

    plain, secure = asyncio.run(both())
    return {
        "benchmark": "secure_channel",
        "commands": commands,
        "batch": batch,
        "secure_commands_per_s": round(secure["rate"]),
        "plain_commands_per_s": round(plain["rate"]),
        "ratio_rate": round(secure["rate"] / plain["rate"], 3),
        "secure_single_p50_ms": round(secure["p50"] * 1000, 3),
        "secure_single_p99_ms": round(secure["p99"] * 1000, 3),
        "plain_single_p50_ms": round(plain["p50"] * 1000, 3),
        "plain_single_p99_ms": round(plain["p99"] * 1000, 3),
        "ratio_p99": round(secure["p99"] / plain["p99"], 1),
        "handshake_ms": round(secure["handshake"] * 1000, 1),
    }


def main() -> None:
    """Command line: print the figures (text or JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r = run(2000, 500, 100) if a.quick else run()
    if a.json:
        print(json.dumps(r, indent=2))
    else:
        for k, v in r.items():
            print(f"  {k:28} {v}")


if __name__ == "__main__":
    main()
