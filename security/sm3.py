"""SM3 hash (GB/T 32905-2016), HMAC-SM3 and the SM3 key derivation function of GB/T 32918.

SM3 itself comes from `cryptography` (OpenSSL); only the KDF, a counter-mode construction defined
by GB/T 32918.3/.4 clause 5.4.3 and not offered by any binding here, is written out.
"""

from __future__ import annotations

import hmac as _hmac
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _crypto_hmac

from security.errors import CryptoError

__all__ = ["DIGEST_SIZE", "SM3", "hmac_sm3", "hmac_sm3_verify", "kdf", "sm3", "sm3_file"]

DIGEST_SIZE = 32
_CHUNK = 1 << 20


class SM3:
    """Incremental SM3: `update()` any number of times, then `digest()` (once)."""

    __slots__ = ("_h",)

    def __init__(self, data: bytes = b"") -> None:
        self._h = hashes.Hash(hashes.SM3())
        if data:
            self._h.update(data)

    def update(self, data: bytes) -> None:
        """Feed more message bytes."""
        self._h.update(data)

    def copy(self) -> SM3:
        """An independent hasher with the same state."""
        c = SM3.__new__(SM3)
        c._h = self._h.copy()
        return c

    def digest(self) -> bytes:
        """The 32-byte digest; the hasher cannot be used afterwards."""
        return self._h.finalize()


def sm3(data: bytes) -> bytes:
    """SM3 digest of `data` (32 bytes)."""
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


def sm3_file(f: BinaryIO) -> bytes:
    """SM3 digest of everything readable from a binary file object, read in 1 MiB chunks."""
    h = hashes.Hash(hashes.SM3())
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return h.finalize()


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """HMAC-SM3 (RFC 2104 over SM3) of `data` under `key`."""
    h = _crypto_hmac.HMAC(key, hashes.SM3())
    h.update(data)
    return h.finalize()


def hmac_sm3_verify(key: bytes, data: bytes, tag: bytes) -> bool:
    """True if `tag` is the HMAC-SM3 of `data` under `key` (constant-time compare)."""
    return _hmac.compare_digest(hmac_sm3(key, data), tag)


def kdf(z: bytes, klen: int) -> bytes:
    """GB/T 32918 KDF: the first `klen` bytes of SM3(Z || ct) for ct = 1, 2, ... (32-bit big endian)."""
    if klen < 0:
        raise CryptoError(f"KDF output length must be >= 0, got {klen}")
    # GB/T 32918.4 5.4.3: "klen < (2^32 - 1) * v" — far beyond anything used here.
    if klen > 0xFFFFFFFF * DIGEST_SIZE:
        raise CryptoError(f"KDF output length {klen} exceeds (2^32-1)*v bits")
    out = bytearray()
    ct = 1
    while len(out) < klen:
        h = hashes.Hash(hashes.SM3())
        h.update(z)
        h.update(ct.to_bytes(4, "big"))
        out += h.finalize()
        ct += 1
    return bytes(out[:klen])
