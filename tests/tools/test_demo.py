"""`vpp demo` end to end: simulators, gateway, history, REST; a set-point comes back through acquisition."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BAT = "VPP1.BAT02/DRCC1.WSpt.setMag.f"
BAT_P = "VPP1.BAT02/MMXU1.TotW.mag.f"


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _post(url: str, body: dict) -> tuple[int, object]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


@pytest.mark.parametrize("bat", ["VPP1.BAT01", "VPP1.BAT02"])  # over IEC 104 and over Modbus
def test_demo_set_point_round_trip(tmp_path: Path, bat: str, new_port) -> None:
    free_port = new_port
    api_port = free_port()
    cmd = [
        sys.executable, "-m", "tools.cli", "demo", "--duration", "60",
        "--api-port", str(api_port), "--iec104-port", str(free_port()),
        "--modbus-port", str(free_port()), "--iec104-server-port", str(free_port()),
        "--opcua-port", str(free_port()),
        "--history-url", f"sqlite:///{tmp_path}/h.db",
        "--progress", "1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    api = f"http://127.0.0.1:{api_port}/api/v1"
    try:
        _wait(lambda: _get(f"{api}/points/{bat}/MMXU1.TotW.mag.f")["quality"]["validity"] == "good",
              30, "battery power acquired")  # fmt: skip
        status, rec = _post(
            f"{api}/commands", {"point": f"{bat}/DRCC1.WSpt.setMag.f", "value": -20}
        )
        assert status == 202, rec
        cid = rec["id"]
        _wait(lambda: _get(f"{api}/commands/{cid}")["state"] == "confirmed", 20, "confirmation")
        # The simulated battery follows: its measured power goes to -20 kW (charging).
        _wait(lambda: abs(_get(f"{api}/points/{bat}/MMXU1.TotW.mag.f")["value"] + 20) < 0.5,
              20, "battery power to follow the set-point")  # fmt: skip
        status, err = _post(
            f"{api}/commands", {"point": f"{bat}/DRCC1.WSpt.setMag.f", "value": 999}
        )
        assert status == 422 and err["error"]["code"] == "out_of_limits"
        plant = _get(f"{api}/vpps/VPP1")
        assert plant is not None
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "started IEC 104 outstation simulator" in out
    assert "IEC 104 server for dispatch" in out
    assert "OPC UA server: opc.tcp://127.0.0.1:" in out
    assert "REST API: " in out
    assert "demo stopped" in out
    # history kept what was acquired
    import sqlite3

    con = sqlite3.connect(tmp_path / "h.db")
    (n,) = con.execute("select count(*) from samples").fetchone()
    con.close()
    assert n > 0
