"""The vpp command line: help, config check/schema, and bad site files leave everything untouched."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tools" / "demo_site.yaml"


def vpp(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_help_lists_commands() -> None:
    out = vpp("--help")
    assert out.returncode == 0
    for cmd in ("run", "demo", "config", "sim", "bench"):
        assert cmd in out.stdout


def test_config_check_ok() -> None:
    out = vpp("config", "check", str(DEMO))
    assert out.returncode == 0, out.stderr
    assert "OK - 1 VPP(s), 6 resource(s)" in out.stdout


def test_config_check_names_file_line_field(tmp_path: Path) -> None:
    bad = tmp_path / "site.yaml"
    text = DEMO.read_text().replace("    device_id: 1\n", "    device_id: 1\n    colour: red\n")
    bad.write_text(text)
    out = vpp("config", "check", str(bad))
    assert out.returncode == 2
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "colour" in s)
    assert f"{bad}:{line}: drivers[1].colour: unknown key" in out.stderr


def test_config_schema_is_json_schema() -> None:
    out = vpp("config", "schema")
    assert out.returncode == 0
    schema = json.loads(out.stdout)
    assert schema["title"] == "SiteConfig" and "vpps" in schema["required"]


def test_bad_site_leaves_history_untouched(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    con = sqlite3.connect(db)
    con.execute("create table keep(x)")
    con.execute("insert into keep values (42)")
    con.commit()
    con.close()
    before = db.read_bytes()
    bad = tmp_path / "site.yaml"
    bad.write_text(DEMO.read_text().replace("port: 2414", "port: 99999"))
    out = vpp("run", "--config", str(bad), "--history-url", f"sqlite:///{db}", "--duration", "1")
    assert out.returncode == 2
    assert "drivers[0].port" in out.stderr
    assert db.read_bytes() == before
    assert not (tmp_path / "var").exists()


def test_run_role_edge_needs_an_uplink_and_the_edge_site_validates() -> None:
    out = vpp("run", "--role", "edge", "--config", str(DEMO), "--duration", "1")
    assert out.returncode == 2 and "edge.uplink" in out.stderr
    edge_site = ROOT / "tools" / "edge_demo_site.yaml"
    out = vpp("config", "check", str(edge_site))
    assert out.returncode == 0 and "2 resource(s)" in out.stdout


def test_every_benchmark_is_offered_full_and_quick() -> None:
    from tools.bench import BENCHMARKS, _suite

    assert set(_suite(quick=False)) == set(BENCHMARKS) == set(_suite(quick=True))
    out = vpp("bench", "--help")
    assert all(name in out.stdout for name in BENCHMARKS)
