"""IEC 101 decode throughput: our FT1.2 stream decoder (+ ASDU decoder) on a recorded line,
against a bare parse of the same bytes with `struct` alone.

The recording is what a line monitor sees on an unbalanced link polled by a master: class 2
requests answered with measured values (M_ME_NC_1, 20 per ASDU), class 1 requests answered
with time-tagged events (M_SP_TB_1) or E5, commands (C_SE_NC_1) with their ACK. The bare
parse walks the same bytes frame by frame, checks start, length, checksum and end byte and, in
the "frames + ASDUs" variant, unpacks the ASDU header and every object's IOA, value and quality
with struct: what a purpose-built parser for exactly this traffic would do, without
resynchronisation, error reporting or typed objects.
"""

from __future__ import annotations

import random
import struct
import time
from typing import Any

from gateway.codecs.iec101 import (
    ASDU,
    AsduParams,
    Cause,
    CP56Time2a,
    FixedFrame,
    FT12Decoder,
    PrimaryControl,
    PrimaryFunction,
    SecondaryControl,
    SecondaryFunction,
    SetpointFloat,
    ShortFloat,
    SingleCharacter,
    SinglePoint,
    TypeID,
    VariableFrame,
    decode_asdu,
    encode_asdu,
    encode_frame,
)

__all__ = ["recording", "run"]

_P = AsduParams(1, 1, 2)
_CHUNK = 4096


def recording(exchanges: int, seed: int = 1) -> tuple[bytes, int]:
    """(line bytes, frame count) of `exchanges` request/answer pairs."""
    rnd = random.Random(seed)
    out = bytearray()
    frames = 0
    fcb = True
    t0 = 1_750_000_000.0
    for k in range(exchanges):
        r = rnd.random()
        req: Any
        if r < 0.6:  # class 2: measured values
            req = FixedFrame(PrimaryControl(PrimaryFunction.REQUEST_CLASS_2, fcb, True), 1)
            objs = tuple(ShortFloat(1000 + j, rnd.uniform(-500, 500), 0) for j in range(20))
            asdu = ASDU(TypeID.M_ME_NC_1, Cause.PERIODIC, 1, objs)
            ans: Any = VariableFrame(
                SecondaryControl(SecondaryFunction.USER_DATA), 1, encode_asdu(asdu, _P)
            )
        elif r < 0.85:  # class 1: events, or nothing
            req = FixedFrame(PrimaryControl(PrimaryFunction.REQUEST_CLASS_1, fcb, True), 1)
            if rnd.random() < 0.5:
                tag = CP56Time2a.from_epoch(t0 + k * 0.1)
                objs2 = tuple(SinglePoint(100 + j, rnd.random() < 0.5, 0, tag) for j in range(4))
                asdu = ASDU(TypeID.M_SP_TB_1, Cause.SPONTANEOUS, 1, objs2)
                ans = VariableFrame(
                    SecondaryControl(SecondaryFunction.USER_DATA, acd=True),
                    1,
                    encode_asdu(asdu, _P),
                )
            else:
                ans = SingleCharacter()
        else:  # a set-point and its ACK
            asdu = ASDU(
                TypeID.C_SE_NC_1, Cause.ACTIVATION, 1, (SetpointFloat(2001, rnd.uniform(0, 100)),)
            )
            req = VariableFrame(
                PrimaryControl(PrimaryFunction.USER_DATA_CONFIRMED, fcb, True),
                1,
                encode_asdu(asdu, _P),
            )
            ans = FixedFrame(SecondaryControl(SecondaryFunction.ACK), 1)
        out += encode_frame(req) + encode_frame(ans)
        frames += 2
        fcb = not fcb
    return bytes(out), frames


def _ours(data: bytes, with_asdu: bool) -> tuple[int, int]:
    dec = FT12Decoder(1)
    frames = objects = 0
    for i in range(0, len(data), _CHUNK):
        dec.receive_data(data[i : i + _CHUNK])
        for f in dec:
            frames += 1
            if with_asdu and isinstance(f, VariableFrame):
                objects += len(decode_asdu(f.data, _P).objects)
    return frames, objects


_OBJ = {
    13: (struct.Struct("<HfB"), 7),
    30: (struct.Struct("<HB7s"), 10),
    50: (struct.Struct("<HfB"), 7),
}


def _bare(data: bytes, with_asdu: bool) -> tuple[int, int]:
    """Frames (and objects) of the recording, with struct and slicing only."""
    frames = objects = 0
    i, n = 0, len(data)
    unpack_h = struct.Struct("<BBBB").unpack_from
    while i < n:
        b = data[i]
        if b == 0xE5:
            i += 1
        elif b == 0x10:
            if (sum(data[i + 1 : i + 3]) & 0xFF) != data[i + 3] or data[i + 4] != 0x16:
                raise ValueError("bad fixed frame")
            i += 5
        else:
            length = data[i + 1]
            end = i + 6 + length
            if data[i + 2] != length or data[i + 3] != 0x68 or data[end - 1] != 0x16:
                raise ValueError("bad variable frame")
            if (sum(data[i + 4 : end - 2]) & 0xFF) != data[end - 2]:
                raise ValueError("bad checksum")
            if with_asdu:
                a = i + 6  # after 68 L L 68 C A
                tid, vsq, _cot, _ca = unpack_h(data, a)
                st, size = _OBJ[tid]
                p = a + 4
                for _ in range(vsq & 0x7F):
                    st.unpack_from(data, p)
                    p += size
                    objects += 1
            i = end
        frames += 1
    return frames, objects


def _best_pair(
    data: bytes, with_asdu: bool, rounds: int
) -> tuple[float, float, tuple[int, int], tuple[int, int]]:
    """Best times of ours and of the bare parse, alternating rounds so load hits both alike."""
    t_ours = t_bare = float("inf")
    r_ours = r_bare = (0, 0)
    for _ in range(rounds):
        t0 = time.perf_counter()
        r_ours = _ours(data, with_asdu)
        t1 = time.perf_counter()
        r_bare = _bare(data, with_asdu)
        t2 = time.perf_counter()
        t_ours = min(t_ours, t1 - t0)
        t_bare = min(t_bare, t2 - t1)
    return t_ours, t_bare, r_ours, r_bare


def run(exchanges: int = 20_000, rounds: int = 7) -> dict[str, Any]:
    """Decode throughput (frames/s) of ours vs the bare struct parse, link only and with ASDUs."""
    data, n = recording(exchanges)
    out: dict[str, Any] = {"benchmark": "iec101", "frames": n, "bytes": len(data)}
    for label, with_asdu in (("frames", False), ("frames_asdus", True)):
        t_ours, t_bare, (f1, o1), (f2, o2) = _best_pair(data, with_asdu, rounds)
        if f1 != n or f2 != n or o1 != o2:
            raise RuntimeError(f"parsers disagree: ours {f1}/{o1}, bare {f2}/{o2}, frames {n}")
        out[f"{label}_ours_per_s"] = round(n / t_ours)
        out[f"{label}_bare_per_s"] = round(n / t_bare)
        out[f"{label}_ratio"] = round(t_bare / t_ours, 3)
        if with_asdu:
            out["objects"] = o1
    return out
