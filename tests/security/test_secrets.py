"""Secrets at rest: sealed site-file values, master key handling, and a sealed history URL in use."""

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from security.errors import DecryptionError
from security.secrets import (
    PREFIX,
    MasterKeyError,
    is_sealed,
    load_master_key,
    new_master_key_file,
    reveal,
    seal,
)

ROOT = Path(__file__).resolve().parents[2]


def test_seal_reveal_and_tamper(monkeypatch) -> None:
    key = bytes(range(16))
    monkeypatch.setenv("VPP_MASTER_KEY", key.hex())
    sealed = seal("postgresql+psycopg://vpp:s3cret@127.0.0.1/test", key)
    assert is_sealed(sealed) and "s3cret" not in sealed
    assert reveal(sealed) == "postgresql+psycopg://vpp:s3cret@127.0.0.1/test"
    assert reveal("plain") == "plain"
    assert seal("x", key) != seal("x", key)  # fresh nonce each time
    blob = bytearray(base64.b64decode(sealed[len(PREFIX) :]))
    blob[-5] ^= 1  # one bit of the tag
    with pytest.raises(DecryptionError, match="wrong key or altered"):
        reveal(PREFIX + base64.b64encode(blob).decode())
    with pytest.raises(DecryptionError, match="not valid base64"):
        reveal(PREFIX + "@@@")
    with pytest.raises(DecryptionError, match="wrong key"):
        reveal(sealed, bytes(16))


def test_master_key_sources(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("VPP_MASTER_KEY", raising=False)
    path = tmp_path / "k" / "master.key"
    monkeypatch.setenv("VPP_MASTER_KEY_FILE", str(path))
    with pytest.raises(MasterKeyError, match="no master key"):
        load_master_key()
    key = new_master_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_master_key() == key
    with pytest.raises(FileExistsError):
        new_master_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(MasterKeyError, match="readable by others"):
        load_master_key()
    monkeypatch.setenv("VPP_MASTER_KEY", "abcd")
    with pytest.raises(MasterKeyError, match="16 bytes"):
        load_master_key()


def test_cli_and_sealed_history_url(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VPP_MASTER_KEY_FILE": str(tmp_path / "m.key")}
    env.pop("VPP_MASTER_KEY", None)

    def vpp(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tools.cli", *a], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    assert vpp("secrets", "init", "--key-file", str(tmp_path / "m.key")).returncode == 0
    url = f"sqlite:///{tmp_path}/sealed.db"
    out = vpp("secrets", "seal", url)
    assert out.returncode == 0 and out.stdout.startswith("enc:sm4:")
    sealed = out.stdout.strip()
    assert vpp("secrets", "reveal", sealed).stdout.strip() == url
    site = (
        (ROOT / "tools" / "demo_site.yaml")
        .read_text()
        .replace("url: sqlite:///var/demo-history.db", f"url: '{sealed}'")
        # no north servers here: 2404 / 4840 may be in use by a running demo
        .replace("iec104: {enabled: true", "iec104: {enabled: false")
        .replace(
            "    enabled: true\n    endpoint: opc.tcp", "    enabled: false\n    endpoint: opc.tcp"
        )
    )
    assert site.count("enabled: false") == 2, "the demo site's north section changed shape"
    (tmp_path / "site.yaml").write_text(site)
    run = vpp("run", "--config", str(tmp_path / "site.yaml"), "--api-port", "0", "--duration", "1")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "sealed.db").exists()  # the sealed URL was opened
    assert url not in run.stdout + run.stderr
