"""Crypto benchmark: SM2 sign/verify per second and SM4-GCM MB/s, against `openssl speed`.

The baseline is the system OpenSSL measured in the same run. Its CLI has no SM4-GCM, so SM4 is
compared with `openssl speed -evp sm4-ctr` (GCM is CTR plus GHASH: the ratio is a lower bound of
how close we are to OpenSSL's SM4 core).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any

from security import sm4
from security.sm2 import SM2PrivateKey

__all__ = ["run"]

SIZES = {"64B": 64, "1KiB": 1024, "1MiB": 1 << 20}


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of fn over about `seconds`."""
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(8):
            fn()
        n += 8
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - t0)


def _openssl(args: list[str]) -> str | None:
    exe = shutil.which("openssl")
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return None
    return r.stdout if r.returncode == 0 else None


def _openssl_sm2(seconds: int) -> tuple[float, float] | None:
    out = _openssl(["speed", "-seconds", str(seconds), "sm2"])
    # "256 bits SM2 (CurveSM2)   0.0003s   0.0003s   3923.0   3980.0"
    m = re.search(r"SM2 \(CurveSM2\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", out or "")
    return (float(m.group(1)), float(m.group(2))) if m else None


def _openssl_sm4(size: int, seconds: int) -> float | None:
    """MB/s (10^6 bytes) of `openssl speed -evp sm4-ctr` at one buffer size."""
    out = _openssl(["speed", "-seconds", str(seconds), "-bytes", str(size), "-evp", "sm4-ctr"])
    m = re.search(r"^SM4-CTR\s+([\d.]+)k", out or "", re.M | re.I)
    return float(m.group(1)) / 1000 if m else None


def _ratio(ours: float, base: float | None) -> float | None:
    return round(ours / base, 2) if base else None


def run(seconds: float = 1.0) -> dict[str, Any]:
    """Measure ours and OpenSSL's; return figures and ratios (ours / OpenSSL)."""
    key = SM2PrivateKey.generate()
    pub = key.public_key
    msg = b"dispatch batch: " + bytes(84)  # 100 bytes, like a signed command digest record
    sig = key.sign(msg)
    res: dict[str, Any] = {}
    sign = _rate(lambda: key.sign(msg), seconds)
    verify = _rate(lambda: pub.verify(sig, msg), seconds)
    base = _openssl_sm2(max(1, round(seconds)))
    res["sm2_sign_per_s"] = round(sign)
    res["sm2_verify_per_s"] = round(verify)
    res["openssl_sm2_sign_per_s"] = base[0] if base else None
    res["openssl_sm2_verify_per_s"] = base[1] if base else None
    res["sm2_sign_ratio"] = _ratio(sign, base[0] if base else None)
    res["sm2_verify_ratio"] = _ratio(verify, base[1] if base else None)

    k = sm4.generate_key()
    nonce = bytes(sm4.GCM_NONCE_SIZE)  # benchmark only: a real sender never reuses a nonce
    for label, size in SIZES.items():
        data = bytes(size)

        def seal(d: bytes = data) -> bytes:
            return sm4.encrypt_gcm(k, nonce, d)

        calls = _rate(seal, seconds)
        ours = calls * size / 1e6
        theirs = _openssl_sm4(size, max(1, round(seconds)))
        res[f"sm4_gcm_{label}_MBps"] = round(ours, 1)
        res[f"openssl_sm4_ctr_{label}_MBps"] = round(theirs, 1) if theirs else None
        res[f"sm4_gcm_{label}_ratio"] = _ratio(ours, theirs)
    return res


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
