"""`vpp crypto` end to end on temp files, checked against the OpenSSL CLI where it can be."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from security import sm2, sm4
from security.sm3 import sm3

ROOT = Path(__file__).resolve().parents[2]
OPENSSL = shutil.which("openssl")
KEY_HEX = "0123456789abcdeffedcba9876543210"


def vpp(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", "crypto", *map(str, args)],
        cwd=ROOT, input=stdin.decode() if stdin is not None else None,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    "sub", ["", "sm2-keygen", "sm2-sign", "sm2-verify", "sm3", "sm4-encrypt", "sm4-decrypt"]
)
def test_help(sub: str) -> None:
    r = vpp(*([sub] if sub else []), "--help")
    assert r.returncode == 0, r.stderr
    assert "usage: vpp crypto" in r.stdout
    assert "exit status" in r.stdout


def test_keygen_sign_verify(tmp_path: Path) -> None:
    key, pub, data = tmp_path / "edge.pem", tmp_path / "edge.pub.pem", tmp_path / "cmd.json"
    r = vpp("sm2-keygen", "-o", key)
    assert r.returncode == 0, r.stderr
    assert key.stat().st_mode & 0o077 == 0, "private key must not be readable by others"
    priv = sm2.load_private_key(key.read_bytes())
    assert sm2.load_public_key(pub.read_bytes()) == priv.public_key
    # Never overwrites a key silently.
    r = vpp("sm2-keygen", "-o", key)
    assert r.returncode == 2 and "exists" in r.stderr
    assert sm2.load_private_key(key.read_bytes()).to_bytes() == priv.to_bytes()

    data.write_bytes(b'{"target": "VPP1.BAT1/DRCC1.OutWSet", "value": 250}')
    r = vpp("sm2-sign", "--key", key, data)
    assert r.returncode == 0, r.stderr
    sig = tmp_path / "cmd.json.sig"
    priv.public_key.verify(sig.read_bytes(), data.read_bytes())
    r = vpp("sm2-verify", "--pub", pub, "--sig", sig, data)
    assert r.returncode == 0 and r.stdout.startswith("OK"), r.stderr
    r = vpp("sm2-verify", "--pub", pub, "--sig", sig, "--id", "someone-else", data)
    assert r.returncode == 1 and "FAIL" in r.stderr
    assert "sm2_sign.c" not in r.stderr  # GmSSL's diagnostics are kept off the terminal

    # Custom ID and raw r||s output.
    raw = tmp_path / "raw.sig"
    assert vpp("sm2-sign", "--key", key, "--id", "edge-7", "--raw", data, "-o", raw).returncode == 0
    assert len(raw.read_bytes()) == 64
    assert (
        vpp("sm2-verify", "--pub", pub, "--sig", raw, "--id-hex", b"edge-7".hex(), data).returncode
        == 0
    )

    data.write_bytes(data.read_bytes().replace(b"250", b"950"))
    r = vpp("sm2-verify", "--pub", pub, "--sig", sig, data)
    assert r.returncode == 1 and "FAIL" in r.stderr


def test_bad_inputs_exit_2(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    r = vpp("sm2-sign", "--key", junk, junk)
    assert r.returncode == 2 and "not a usable SM2 private key" in r.stderr
    r = vpp("sm2-sign", "--key", tmp_path / "missing.pem", junk)
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = vpp("sm2-verify", "--pub", junk, "--sig", junk, junk)
    assert r.returncode == 2 and "public key" in r.stderr
    r = vpp("sm4-encrypt", "--key", "abc", junk, "-o", tmp_path / "o")
    assert r.returncode == 2 and "hex" in r.stderr
    r = vpp("sm4-encrypt", "--key", "00" * 15, junk, "-o", tmp_path / "o")
    assert r.returncode == 2 and "16 bytes" in r.stderr
    assert vpp("sm3", tmp_path / "missing").returncode == 2
    assert vpp("sm4-encrypt", junk, "-o", tmp_path / "o").returncode == 2  # no key: argparse


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_openssl_checks_cli_signature_and_cli_checks_openssl(tmp_path: Path) -> None:
    key, pub, data = tmp_path / "k.pem", tmp_path / "k.pub.pem", tmp_path / "d"
    assert vpp("sm2-keygen", "-o", key).returncode == 0
    data.write_bytes(os.urandom(3000))
    assert vpp("sm2-sign", "--key", key, data, "-o", tmp_path / "s").returncode == 0
    ok = subprocess.run(
        [OPENSSL, "pkeyutl", "-verify", "-in", str(data), "-rawin", "-digest", "sm3", "-pubin",
         "-inkey", str(pub), "-sigfile", str(tmp_path / "s"), "-pkeyopt", "distid:1234567812345678"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    if ok.returncode != 0 and b"SM2" in ok.stderr:
        pytest.skip(f"openssl lacks SM2: {ok.stderr.decode()}")
    assert ok.returncode == 0, ok.stderr
    # OpenSSL signs with the key vpp generated; vpp verifies.
    r = subprocess.run(
        [OPENSSL, "pkeyutl", "-sign", "-in", str(data), "-rawin", "-digest", "sm3", "-inkey", str(key),
         "-out", str(tmp_path / "os"), "-pkeyopt", "distid:1234567812345678"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert vpp("sm2-verify", "--pub", pub, "--sig", tmp_path / "os", data).returncode == 0


def test_sm3_files_and_stdin(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"abc")
    b.write_bytes(b"abcd" * 16)
    r = vpp("sm3", a, b)
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0] == f"{sm3(b'abc').hex()}  {a}"
    assert lines[1].startswith("debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732")
    r = vpp("sm3", "-", stdin=b"abc")
    assert r.stdout.split()[0] == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


@pytest.mark.parametrize("mode", ["gcm", "cbc"])
def test_sm4_round_trip_and_wrong_key(tmp_path: Path, mode: str) -> None:
    src, enc, dec = tmp_path / "plain", tmp_path / "enc", tmp_path / "dec"
    src.write_bytes(os.urandom(70_001))
    keyfile = tmp_path / "key.hex"
    keyfile.write_text(KEY_HEX + "\n")
    r = vpp("sm4-encrypt", "--key-file", keyfile, "--mode", mode, src, "-o", enc)
    assert r.returncode == 0, r.stderr
    assert vpp("sm4-decrypt", "--key", KEY_HEX, "--mode", mode, enc, "-o", dec).returncode == 0
    assert dec.read_bytes() == src.read_bytes()
    rawkey = tmp_path / "key.bin"
    rawkey.write_bytes(bytes.fromhex(KEY_HEX))
    assert (
        vpp(
            "sm4-decrypt", "--key-file", rawkey, "--mode", mode, enc, "-o", dec, "--force"
        ).returncode
        == 0
    )
    r = vpp("sm4-decrypt", "--key", "ff" * 16, "--mode", mode, enc, "-o", tmp_path / "bad")
    if mode == "gcm":
        assert r.returncode == 1 and "authentication failed" in r.stderr
        assert not (tmp_path / "bad").exists()
    elif r.returncode == 0:  # CBC has no integrity: a wrong key shows only if padding breaks
        assert (tmp_path / "bad").read_bytes() != src.read_bytes()
    else:
        assert r.returncode == 1 and "padding" in r.stderr
    if mode == "gcm":
        blob = bytearray(enc.read_bytes())
        blob[100] ^= 1
        enc.write_bytes(bytes(blob))
        assert vpp("sm4-decrypt", "--key", KEY_HEX, enc, "-o", tmp_path / "t").returncode == 1


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_sm4_cbc_file_matches_openssl_enc(tmp_path: Path) -> None:
    src, enc = tmp_path / "plain", tmp_path / "enc"
    src.write_bytes(b"telemetry " * 1000)
    assert vpp("sm4-encrypt", "--key", KEY_HEX, "--mode", "cbc", src, "-o", enc).returncode == 0
    blob = enc.read_bytes()
    iv, ct = blob[:16], blob[16:]
    out = subprocess.run(
        [OPENSSL, "enc", "-d", "-sm4-cbc", "-K", KEY_HEX, "-iv", iv.hex()],
        input=ct, capture_output=True, timeout=60,
    )  # fmt: skip
    if out.returncode != 0:
        pytest.skip(f"openssl enc lacks sm4-cbc: {out.stderr.decode()}")
    assert out.stdout == src.read_bytes()
    # And a file OpenSSL encrypted (IV prepended) decrypts with vpp.
    theirs = subprocess.run(
        [OPENSSL, "enc", "-sm4-cbc", "-K", KEY_HEX, "-iv", iv.hex()],
        input=src.read_bytes(), capture_output=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    (tmp_path / "theirs").write_bytes(iv + theirs)
    r = vpp(
        "sm4-decrypt",
        "--key",
        KEY_HEX,
        "--mode",
        "cbc",
        tmp_path / "theirs",
        "-o",
        tmp_path / "back",
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back").read_bytes() == src.read_bytes()
    assert sm4.decrypt_cbc(bytes.fromhex(KEY_HEX), iv, theirs) == src.read_bytes()
