"""`vpp demo` end to end: simulators, gateway, edge terminal, history, REST; a set-point comes back
through acquisition, for the edge terminal's battery over the signed + SM4 channel too."""

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from model.points import Access
from security.identity import Certificate, CertificateAuthority
from tools.demo import EDGE_DRIVER, central_site, demo_site, edge_site, ensure_demo_pki

ROOT = Path(__file__).resolve().parents[2]


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


def _validity(api: str, ref: str) -> str | None:
    """The point's validity; None while the twin holds no value for it yet."""
    quality = _get(f"{api}/points/{ref}")["quality"]
    return quality["validity"] if quality else None


def _near(api: str, ref: str, want: float) -> bool:
    value = _get(f"{api}/points/{ref}")["value"]
    return value is not None and abs(value - want) < 0.5


def _demo(tmp_path: Path, ports: dict[str, int], *extra: str) -> subprocess.Popen[str]:
    """`vpp demo` in tmp_path (its var/ there) with every listener on the given ports."""
    cmd = [sys.executable, "-m", "tools.cli", "demo", "--progress", "1", *extra]
    for option, port in ports.items():
        cmd += [f"--{option}", str(port)]
    return subprocess.Popen(
        cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _ports(new_port) -> dict[str, int]:
    names = ("api-port", "iec104-port", "modbus-port", "iec104-server-port", "opcua-port",
             "edge-hub-port", "edge-modbus-port", "edge-api-port")  # fmt: skip
    return {n: new_port() for n in names}


# VPP1.BAT01 over IEC 104, VPP1.BAT02 over Modbus, VPP1.BAT11 behind the edge terminal: central
# -> signed + SM4 channel -> edge -> its Modbus device -> edge twin -> uplink -> central twin.
@pytest.mark.parametrize("bat", ["VPP1.BAT01", "VPP1.BAT02", "VPP1.BAT11"])
def test_demo_set_point_round_trip(tmp_path: Path, bat: str, new_port) -> None:
    ports = _ports(new_port)
    proc = _demo(tmp_path, ports, "--duration", "50", "--history-url", f"sqlite:///{tmp_path}/h.db")
    api = f"http://127.0.0.1:{ports['api-port']}/api/v1"
    power = f"{bat}/MMXU1.TotW.mag.f"
    try:
        _wait(lambda: _validity(api, power) == "good", 30, "battery power acquired")
        status, rec = _post(
            f"{api}/commands", {"point": f"{bat}/DRCC1.WSpt.setMag.f", "value": -20}
        )
        assert status == 202, rec
        cid = rec["id"]
        done = _wait(lambda: (c := _get(f"{api}/commands/{cid}"))["state"] == "confirmed" and c,
                     20, "confirmation")  # fmt: skip
        # The simulated battery follows: its measured power goes to -20 kW (charging).
        _wait(lambda: _near(api, power, -20), 20, "battery power to follow the set-point")
        status, err = _post(
            f"{api}/commands", {"point": f"{bat}/DRCC1.WSpt.setMag.f", "value": 999}
        )
        assert status == 422 and err["error"]["code"] == "out_of_limits"
        plant = _get(f"{api}/vpps/VPP1")
        assert plant is not None
        if bat == "VPP1.BAT11":
            # It went down the edge link and was confirmed by the edge's read-back; the edge's
            # own twin (its local API) holds the same power.
            assert [h["reason"] for h in done["history"] if h["state"] == "sent"] == [
                f"written by {EDGE_DRIVER}"
            ]
            assert done["history"][-1]["reason"].startswith("read back -20")
            edge_api = f"http://127.0.0.1:{ports['edge-api-port']}/api/v1"
            assert _near(edge_api, power, -20)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "started IEC 104 outstation simulator" in out
    assert "IEC 104 server for dispatch" in out
    assert "OPC UA server: opc.tcp://127.0.0.1:" in out
    assert "REST API: " in out
    assert f"edge hub for edge terminals: 127.0.0.1:{ports['edge-hub-port']}" in out
    assert f"Modbus TCP device simulator  127.0.0.1:{ports['edge-modbus-port']}" in out
    assert "started edge terminal EDGE1 (certificate edge-site-1)" in out
    assert f"uplink tcp://127.0.0.1:{ports['edge-hub-port']}" in out
    assert "VPP1.BAT11/DRCC1.WSpt.setMag.f" in out  # the edge set-point example
    assert f"{EDGE_DRIVER}:up" in out  # the progress line shows the edge link
    assert "demo stopped" in out
    assert "Traceback" not in out and " ERROR " not in out, out
    # history kept what was acquired
    con = sqlite3.connect(tmp_path / "h.db")
    (n,) = con.execute("select count(*) from samples").fetchone()
    con.close()
    assert n > 0


def test_a_taken_edge_port_is_named_before_anything_starts(tmp_path: Path, new_port) -> None:
    ports = _ports(new_port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["edge-hub-port"]))
        taken.listen()
        proc = _demo(tmp_path, ports, "--duration", "5")
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    assert f"edge hub port 127.0.0.1:{ports['edge-hub-port']} is in use" in out
    assert not (tmp_path / "var").exists()  # no PKI, no history: nothing was started


def test_demo_pki_is_made_once_and_the_edge_holds_only_its_share(tmp_path: Path) -> None:
    ca_dir, edge_dir = tmp_path / "demo-pki", tmp_path / "pki-edge1"
    made = ensure_demo_pki(ca_dir, "vpp-platform", "edge-site-1", edge_dir)
    assert made == [
        "CA vpp-demo-ca",
        "platform certificate vpp-platform",
        "edge certificate edge-site-1",
    ]
    before = {p.name: p.read_bytes() for p in sorted(ca_dir.rglob("*.pem"))}
    assert ensure_demo_pki(ca_dir, "vpp-platform", "edge-site-1", edge_dir) == []  # reused
    assert {p.name: p.read_bytes() for p in sorted(ca_dir.rglob("*.pem"))} == before
    held = {p.name: p for p in edge_dir.iterdir()}
    assert sorted(held) == [
        "ca.cert.pem", "crl.pem", "edge-site-1.cert.pem", "edge-site-1.key.pem",
        "vpp-platform.cert.pem",
    ]  # fmt: skip
    assert stat.S_IMODE(held["edge-site-1.key.pem"].stat().st_mode) == 0o600
    assert stat.S_IMODE(edge_dir.stat().st_mode) == 0o700
    ca = CertificateAuthority.open(ca_dir)
    trust = ca.trust_store()
    for name in ("edge-site-1", "vpp-platform"):
        assert (
            held[f"{name}.cert.pem"].read_bytes()
            == (ca_dir / "issued" / f"{name}.cert.pem").read_bytes()
        )
        assert trust.validate(Certificate.load_file(held[f"{name}.cert.pem"])).name == name
    # A certificate the CA revoked is replaced at the next start.
    ca.revoke("edge-site-1")
    assert ensure_demo_pki(ca_dir, "vpp-platform", "edge-site-1", edge_dir) == [
        "edge certificate edge-site-1"
    ]
    assert held["edge-site-1.cert.pem"].read_bytes() != before["edge-site-1.cert.pem"]


def test_the_platform_declares_the_edge_terminals_resources_and_points() -> None:
    edge = edge_site()
    site = central_site(demo_site(), edge)
    mine = {r.id: r for _, r in site.resources()}
    for _, r in edge.resources():
        assert mine[r.id] == r  # same mRID, name, kind and limits
    link = next(d for d in site.drivers if d.protocol == "edge")
    assert link.id == EDGE_DRIVER and link.enabled and link.edge == "edge-site-1"
    edge_specs = {s.ref: s for s in edge.point_specs() if not (s.role or "").startswith("plant.")}
    assert {p.point for p in link.points} == set(edge_specs)
    assert {p.point for p in link.points if p.writable} == {
        ref for ref, s in edge_specs.items() if s.access == Access.RW
    }
    # The demo's own file is unchanged: six DERs, no edge driver (other tools and tests use it).
    assert len(demo_site().resources()) == 6
    assert all(d.protocol != "edge" for d in demo_site().drivers)
