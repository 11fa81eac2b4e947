"""DL/T 698.45 decode throughput: frames/s of our codec on a recorded stream, against a bare parse
of the same bytes with `struct` alone.

The stream is what a gateway receives polling a bus: GET-Response NormalList frames of meters
(voltage and current arrays of 3 long-unsigned/double-long, active power array of 4 double-long,
frequency long-unsigned), each from its own meter address, read in 4 kB chunks. Ours runs the
whole receive path, the sans-IO Link: resynchronising frame decoder with HCS and FCS checks,
A-XDR APDU decoding into typed objects. The baseline knows the layout in advance and only slices
the same values out with struct.unpack_from: no checks, no CRC, no objects; it is the floor any
decoder pays to touch the bytes in Python. ratio = ours / baseline (1.0 would be free checks).
"""

from __future__ import annotations

import struct
import time
from typing import Any

from gateway.codecs.dlt698 import (
    NEED_DATA,
    OAD,
    AResultNormal,
    Data,
    Direction,
    GetResponseNormalList,
    Link,
    ServerAddress,
    Tag,
    frames_for,
)
from gateway.codecs.dlt698.link import ApduReceived

__all__ = ["record_stream", "run"]


def _array(tag: Tag, base: int, n: int) -> Data:
    return Data(Tag.ARRAY, tuple(Data(tag, base + k) for k in range(n)))


def record_stream(frames: int) -> bytes:
    """`frames` GET-Response NormalList frames from 32 meters, back to back."""
    out = bytearray()
    for i in range(frames):
        server = ServerAddress.from_text(f"{i % 32 + 1:012d}")
        resp = GetResponseNormalList(
            i % 64,
            (
                AResultNormal(OAD(0x2000, 2), _array(Tag.LONG_UNSIGNED, 2200 + i % 50, 3)),
                AResultNormal(OAD(0x2001, 2), _array(Tag.DOUBLE_LONG, 5000 + i % 700, 3)),
                AResultNormal(OAD(0x2004, 2), _array(Tag.DOUBLE_LONG, 11000 + i % 900, 4)),
                AResultNormal(OAD(0x200F, 2), Data(Tag.LONG_UNSIGNED, 4990 + i % 20)),
            ),
        )
        (raw,) = frames_for(resp, server, 0x10, direction=Direction.SERVER)
        out += raw
    return bytes(out)


def _ours(stream: bytes) -> tuple[int, int]:
    link = Link()
    n = values = 0
    for i in range(0, len(stream), 4096):
        link.receive_data(stream[i : i + 4096])
        while (ev := link.next_event()) is not NEED_DATA:
            if isinstance(ev, ApduReceived) and isinstance(ev.apdu, GetResponseNormalList):
                n += 1
                for r in ev.apdu.results:
                    d = r.result
                    if isinstance(d, Data):
                        values += len(d.value) if isinstance(d.value, tuple) else 1
    return n, values


_U16 = struct.Struct("<H")
_BE_U16 = struct.Struct(">H")
_BE_I32 = struct.Struct(">i")


def _baseline(stream: bytes) -> tuple[int, int]:
    """Slice the known layout with struct only: frame length, header, the four results."""
    n = values = 0
    pos = 0
    end = len(stream)
    while pos < end:
        if stream[pos] != 0x68:
            pos += 1
            continue
        total = (_U16.unpack_from(stream, pos + 1)[0] & 0x3FFF) + 2
        sa_len = (stream[pos + 4] & 0x0F) + 1
        p = pos + 5 + sa_len + 1 + 2  # APDU: 85 02 PIID count
        p += 4
        for _ in range(4):
            p += 4  # OAD
            p += 1  # Get-Result choice
            tag = stream[p]
            p += 1
            if tag == 1:  # array
                count = stream[p]
                p += 1
                for _ in range(count):
                    etag = stream[p]
                    if etag == 18:
                        _BE_U16.unpack_from(stream, p + 1)
                        p += 3
                    else:
                        _BE_I32.unpack_from(stream, p + 1)
                        p += 5
                    values += 1
            else:
                _BE_U16.unpack_from(stream, p)
                p += 2
                values += 1
        n += 1
        pos += total
    return n, values


def _timed(fn: Any, stream: bytes) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    n, v = fn(stream)
    return time.perf_counter() - t0, n, v


def run(frames: int = 20_000, rounds: int = 5) -> dict[str, Any]:
    """Decode `frames` recorded frames with ours and with the struct baseline; frames/s and ratio.

    The two alternate, round by round, and the best round of each counts: on a shared machine
    both see the same load.
    """
    stream = record_stream(frames)
    t_ours = t_base = float("inf")
    n_ours = v_ours = n_base = v_base = 0
    for _ in range(rounds):
        t, n_ours, v_ours = _timed(_ours, stream)
        t_ours = min(t_ours, t)
        t, n_base, v_base = _timed(_baseline, stream)
        t_base = min(t_base, t)
    if (n_ours, v_ours) != (n_base, v_base) or n_ours != frames:
        raise RuntimeError(f"decoders disagree: ours {n_ours}/{v_ours}, baseline {n_base}/{v_base}")
    ours_fps = frames / t_ours
    base_fps = frames / t_base
    return {
        "benchmark": "dlt698 decode",
        "frames": frames,
        "stream_bytes": len(stream),
        "values_per_frame": v_ours // frames,
        "ours_frames_per_s": round(ours_fps),
        "struct_frames_per_s": round(base_fps),
        "ours_mb_per_s": round(len(stream) / t_ours / 1e6, 2),
        "ratio": round(ours_fps / base_fps, 3),
    }


if __name__ == "__main__":
    print(run())
