"""SM4: GB/T 32907-2016 known answers (incl. the 1,000,000-iteration one), RFC 8998 SM4-GCM,
CBC/GCM behaviour and `openssl enc -sm4-cbc` interop both ways."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from security import sm4
from security.errors import CryptoError, DecryptionError, KeyFormatError

KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")
OPENSSL = shutil.which("openssl")


def test_single_block_vector() -> None:
    # GB/T 32907-2016 Appendix A, example 1: plaintext = key.
    ct = sm4.encrypt_block(KEY, KEY)
    assert ct.hex() == "681edf34d206965e86b3e94f536e4246"
    assert sm4.decrypt_block(KEY, ct) == KEY


def test_million_iterations_vector() -> None:
    # GB/T 32907-2016 Appendix A, example 2: encrypt the plaintext 1,000,000 times with the same
    # key. One ECB context fed one block at a time is the same computation and takes ~0.3 s here
    # (a fresh Cipher per block takes ~10x longer), so it stays in the default run.
    enc = Cipher(algorithms.SM4(KEY), modes.ECB()).encryptor()
    block = KEY
    t0 = time.perf_counter()
    for _ in range(1_000_000):
        block = enc.update(block)
    elapsed = time.perf_counter() - t0
    assert block.hex() == "595298c7c6fd271f0402f804c33d3f66"
    assert elapsed < 20, f"1,000,000 SM4 blocks took {elapsed:.1f} s"


def test_gcm_rfc8998_vector() -> None:
    # RFC 8998 Appendix A.1 (SM4-GCM test vector).
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    iv = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    pt = bytes.fromhex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD"
        "EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA"
    )
    ct = bytes.fromhex(
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
        "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    )
    tag = bytes.fromhex("83DE3541E4C2B58177E065A9BF7B62EC")
    assert sm4.encrypt_gcm(key, iv, pt, aad) == ct + tag
    assert sm4.decrypt_gcm(key, iv, ct + tag, aad) == pt


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000])
def test_round_trips(size: int) -> None:
    data = bytes(range(256)) * 4
    data = data[:size]
    key = sm4.generate_key()
    assert sm4.open_gcm(key, sm4.seal_gcm(key, data, b"hdr"), b"hdr") == data
    assert sm4.open_cbc(key, sm4.seal_cbc(key, data)) == data
    assert len(sm4.seal_cbc(key, data)) == 16 + (size // 16 + 1) * 16


def test_gcm_refuses_tampering_wrong_key_and_aad() -> None:
    key = sm4.generate_key()
    blob = sm4.seal_gcm(key, b"set P = 5 MW", b"cmd")
    for i in (0, 12, len(blob) - 1):  # nonce, ciphertext, tag
        bad = bytearray(blob)
        bad[i] ^= 1
        with pytest.raises(DecryptionError):
            sm4.open_gcm(key, bytes(bad), b"cmd")
    with pytest.raises(DecryptionError):
        sm4.open_gcm(key, blob, b"cmx")
    with pytest.raises(DecryptionError):
        sm4.open_gcm(sm4.generate_key(), blob, b"cmd")
    with pytest.raises(DecryptionError):
        sm4.open_gcm(key, blob[:20])


def test_cbc_bad_padding_and_sizes() -> None:
    key = sm4.generate_key()
    iv = bytes(16)
    # A block whose decryption ends in 0x00 is never valid PKCS#7.
    raw = sm4.encrypt_cbc(key, iv, bytes(16), pad=False)
    with pytest.raises(DecryptionError, match="padding"):
        sm4.decrypt_cbc(key, iv, raw)
    with pytest.raises(DecryptionError):
        sm4.decrypt_cbc(key, iv, b"x" * 17)
    with pytest.raises(CryptoError):
        sm4.encrypt_cbc(key, iv, b"x" * 5, pad=False)
    with pytest.raises(CryptoError):
        sm4.encrypt_cbc(key, b"short", b"x")


def test_bad_key_and_nonce() -> None:
    with pytest.raises(KeyFormatError, match="16 bytes"):
        sm4.encrypt_block(b"k" * 15, KEY)
    with pytest.raises(CryptoError, match="nonce"):
        sm4.encrypt_gcm(KEY, b"n" * 16, b"data")
    with pytest.raises(CryptoError, match="multiple"):
        sm4.encrypt_block(KEY, b"x" * 10)


def _openssl_enc(args: list[str], data: bytes) -> bytes:
    assert OPENSSL is not None
    out = subprocess.run([OPENSSL, "enc", *args], input=data, capture_output=True, timeout=30)
    if out.returncode != 0:
        pytest.skip(f"openssl enc lacks sm4-cbc: {out.stderr.decode().strip()}")
    return out.stdout


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
@pytest.mark.parametrize("size", [0, 5, 16, 4097])
def test_cbc_matches_openssl_both_ways(size: int) -> None:
    key, iv = sm4.generate_key(), bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    data = (b"vpp-gateway " * 400)[:size]
    ours = sm4.encrypt_cbc(key, iv, data)
    theirs = _openssl_enc(["-sm4-cbc", "-K", key.hex(), "-iv", iv.hex()], data)
    assert ours == theirs
    assert _openssl_enc(["-d", "-sm4-cbc", "-K", key.hex(), "-iv", iv.hex()], ours) == data
    assert sm4.decrypt_cbc(key, iv, theirs) == data


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_ecb_vector_through_openssl() -> None:
    out = _openssl_enc(["-sm4-ecb", "-K", KEY.hex(), "-nopad"], KEY)
    assert out == sm4.encrypt_block(KEY, KEY)
