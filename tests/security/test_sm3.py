"""SM3: GB/T 32905-2016 known answers, incremental hashing, HMAC and KDF, OpenSSL CLI interop."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from security.errors import CryptoError
from security.sm3 import SM3, hmac_sm3, hmac_sm3_verify, kdf, sm3, sm3_file

# GB/T 32905-2016 Appendix A, examples 1 and 2.
ABC = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
ABCD16 = "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"

OPENSSL = shutil.which("openssl")


def test_standard_vectors() -> None:
    assert sm3(b"abc").hex() == ABC
    assert sm3(b"abcd" * 16).hex() == ABCD16


def test_incremental_equals_one_shot() -> None:
    h = SM3(b"ab")
    c = h.copy()
    h.update(b"cd" * 32)
    h2 = SM3()
    for _ in range(16):
        h2.update(b"abcd")
    assert h2.digest().hex() == ABCD16
    c.update(b"c")
    assert c.digest().hex() == ABC


def test_file_digest_in_chunks() -> None:
    data = bytes(range(256)) * 9000  # > 1 MiB chunk
    assert sm3_file(io.BytesIO(data)) == sm3(data)


def test_hmac_and_verify() -> None:
    tag = hmac_sm3(b"key", b"message")
    assert len(tag) == 32
    assert hmac_sm3_verify(b"key", b"message", tag)
    assert not hmac_sm3_verify(b"key", b"messagE", tag)
    assert not hmac_sm3_verify(b"kez", b"message", tag)


def test_kdf_is_a_prefix_stream() -> None:
    z = b"shared secret"
    long = kdf(z, 100)
    assert len(long) == 100
    assert kdf(z, 33) == long[:33]
    # Counter starts at 1 (GB/T 32918.4 5.4.3): first block is SM3(Z || 00000001).
    assert long[:32] == sm3(z + b"\x00\x00\x00\x01")
    assert kdf(z, 0) == b""
    with pytest.raises(CryptoError):
        kdf(z, -1)


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_openssl_dgst_and_hmac_agree(tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    data = bytes(range(256)) * 41
    f.write_bytes(data)
    out = subprocess.run(
        [str(OPENSSL), "dgst", "-sm3", "-r", str(f)], capture_output=True, text=True, timeout=30
    )
    if out.returncode != 0:
        pytest.skip(f"openssl lacks SM3: {out.stderr.strip()}")
    assert out.stdout.split()[0] == sm3(data).hex()
    mac = subprocess.run(
        [str(OPENSSL), "dgst", "-sm3", "-hmac", "secret-key", "-r", str(f)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert mac.stdout.split()[0] == hmac_sm3(b"secret-key", data).hex()
