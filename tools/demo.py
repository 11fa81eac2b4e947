"""`vpp demo`: the embedded demo site - simulators, gateway, history and REST API on loopback,
and an edge terminal reaching the gateway over the signed + SM4 channel with a demo PKI."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from model.edge import EdgeHubConfig, EdgeLinkDriverConfig, EdgePoint, EdgeRoleConfig
from model.natures import Role
from model.points import Access
from model.resources import plant_ref
from model.site import NorthConfig, SiteConfig, load_site, parse_site
from security.errors import SecurityError
from security.identity import Certificate, CertificateAuthority
from security.identity import Role as CertRole
from security.keystore import load_private_key_file, write_atomic

if TYPE_CHECKING:
    from gateway.runtime import Gateway
    from tools.sim.iec104 import IEC104Simulator
    from tools.sim.modbus import ModbusSimulator

__all__ = [
    "central_site",
    "demo_site",
    "edge_site",
    "ensure_demo_pki",
    "run_demo",
]

DEMO_SITE = Path(__file__).with_name("demo_site.yaml")
EDGE_SITE = Path(__file__).with_name("edge_demo_site.yaml")
EDGE_DRIVER = "edge1"  # the edge terminal as one driver of the central site
DEMO_CA = "vpp-demo-ca"
_RENEW_BEFORE_S = 86400.0  # a certificate this close to expiry is renewed at start


def demo_site(
    iec104_port: int | None = None,
    modbus_port: int | None = None,
    api_port: int | None = None,
    history_url: str | None = None,
    iec104_server_port: int | None = None,
    opcua_port: int | None = None,
    edge_hub_port: int | None = None,
) -> SiteConfig:
    """The demo site file, with ports and history URL overridden where given."""
    site = load_site(DEMO_SITE)
    drivers = []
    for d in site.drivers:
        if d.protocol == "iec104" and iec104_port:
            d = d.model_copy(update={"port": iec104_port})
        if d.protocol == "modbus" and modbus_port:
            d = d.model_copy(update={"port": modbus_port})
        drivers.append(d)
    update: dict[str, object] = {"drivers": drivers}
    if api_port is not None:
        update["api"] = site.api.model_copy(update={"port": api_port})
    if history_url:
        update["history"] = site.history.model_copy(update={"url": history_url})
    north: dict[str, object] = {}
    if iec104_server_port is not None:
        north["iec104"] = site.north.iec104.model_copy(update={"port": iec104_server_port})
    if opcua_port is not None:
        endpoint = f"opc.tcp://127.0.0.1:{opcua_port}"
        north["opcua"] = site.north.opcua.model_copy(update={"endpoint": endpoint})
    if north:
        update["north"] = site.north.model_copy(update=north)
    if edge_hub_port:
        hub = hub_config(site).model_copy(update={"port": edge_hub_port})
        assert site.edge is not None  # hub_config found its hub
        update["edge"] = site.edge.model_copy(update={"hub": hub})
    return site.model_copy(update=update)


def hub_config(site: SiteConfig) -> EdgeHubConfig:
    """The site's edge hub section (the demo site file declares one)."""
    if site.edge is None or site.edge.hub is None:
        raise ValueError(f"site {site.site.id} has no edge.hub section")
    return site.edge.hub


def uplink_config(site: SiteConfig) -> EdgeRoleConfig:
    """The site's edge uplink section (the edge terminal's site file declares one)."""
    if site.edge is None or site.edge.uplink is None:
        raise ValueError(f"site {site.site.id} has no edge.uplink section")
    return site.edge.uplink


def edge_site(
    modbus_port: int | None = None,
    hub_port: int | None = None,
    api_port: int | None = None,
) -> SiteConfig:
    """The edge terminal's site file for the demo: ports overridden where given, north off."""
    site = load_site(EDGE_SITE)
    drivers = [
        d.model_copy(update={"port": modbus_port}) if modbus_port and d.protocol == "modbus" else d
        for d in site.drivers
    ]
    uplink = uplink_config(site)
    if hub_port is not None:
        host = uplink.uplink.removeprefix("tcp://").rsplit(":", 1)[0]
        uplink = uplink.model_copy(update={"uplink": f"tcp://{host}:{hub_port}"})
    # Open without login like the central demo API: auth off is loopback-only (checked on load).
    api: dict[str, object] = {"auth": "off"}
    if api_port is not None:
        api["port"] = api_port
    return site.model_copy(
        update={
            "drivers": drivers,
            "api": site.api.model_copy(update=api),
            "north": NorthConfig(),  # dispatch and SCADA talk to the platform, not the edge
            "edge": site.edge.model_copy(update={"uplink": uplink}) if site.edge else None,
        }
    )


def central_site(central: SiteConfig, edge: SiteConfig) -> SiteConfig:
    """The central site plus the edge terminal: its resources in the same VPPs, one edge driver.

    Both are taken from the edge's own site file, so the platform declares exactly the edge's
    resources (mRIDs, limits) and points; the result is validated as a site file is.
    """
    uplink = uplink_config(edge)
    specs = {s.ref: s for s in edge.point_specs()}
    # What the uplink sends up: its `forward` list, else every point but the edge's own plant.
    carried = uplink.forward or [
        ref for ref, s in specs.items() if not (s.role or "").startswith("plant.")
    ]
    link = EdgeLinkDriverConfig(
        id=EDGE_DRIVER,
        protocol="edge",
        edge=uplink.name,
        points=[EdgePoint(point=p, writable=specs[p].access == Access.RW) for p in carried],
    )
    theirs = {v.id: v for v in edge.vpps}
    missing = set(theirs) - {v.id for v in central.vpps}
    if missing:
        raise ValueError(f"the edge terminal's VPPs {sorted(missing)} are not in the central site")
    vpps = [
        v.model_copy(
            update={
                "aggregators": [*v.aggregators, *theirs[v.id].aggregators],
                "resources": [*v.resources, *theirs[v.id].resources],
            }
        )
        if v.id in theirs
        else v
        for v in central.vpps
    ]
    doc = central.model_copy(update={"vpps": vpps, "drivers": [*central.drivers, link]})
    text = yaml.safe_dump(doc.model_dump(mode="json"), sort_keys=False)
    return parse_site(text, f"<{DEMO_SITE.name} + {EDGE_SITE.name}>")


# -------------------------------------------------------------------------------- demo PKI


def ensure_demo_pki(ca_dir: Path, platform: str, edge: str, edge_dir: Path) -> list[str]:
    """Create the demo CA, the platform's and the edge's certificates unless they are there and
    valid; refresh the edge terminal's copy in edge_dir. Returns what was created."""
    created: list[str] = []
    if (ca_dir / "ca.cert.pem").exists():
        ca = CertificateAuthority.open(ca_dir)
    else:
        # No passphrase: a demo CA on loopback; `vpp keys init` protects a real one.
        ca = CertificateAuthority.create(DEMO_CA, directory=ca_dir)
        created.append(f"CA {DEMO_CA}")
    for name, role in ((platform, CertRole.PLATFORM), (edge, CertRole.EDGE)):
        if not _holds_valid(ca, name, role.value):
            ca.issue_new_key(name, role=role, renew=True)
            created.append(f"{role.value} certificate {name}")
    _copy_for_edge(ca_dir, edge_dir, edge, platform)
    return created


def _holds_valid(ca: CertificateAuthority, name: str, role: str) -> bool:
    """True when issued/NAME.cert.pem + key.pem match, and the CA lists it valid for a while."""
    assert ca.directory is not None
    cert_path = ca.directory / "issued" / f"{name}.cert.pem"
    key_path = ca.directory / "issued" / f"{name}.key.pem"
    if not (cert_path.exists() and key_path.exists()):
        return False
    cert = Certificate.load_file(cert_path)
    entry = ca.entries.get(cert.serial)
    soon = time.time() + _RENEW_BEFORE_S
    return (
        entry is not None
        and entry.name == name
        and entry.role == role
        and entry.status(soon) == "valid"
        # A crash between writing the certificate and its key leaves them unmatched.
        and load_private_key_file(key_path).public_key == cert.public_key
    )


def _copy_for_edge(ca_dir: Path, edge_dir: Path, edge: str, platform: str) -> None:
    """What an edge terminal holds: CA certificate, CRL, its own certificate and key, and the
    platform's certificate - never the CA's or the platform's key."""
    issued = ca_dir / "issued"
    files = [
        (ca_dir / "ca.cert.pem", 0o644),
        (ca_dir / "crl.pem", 0o644),
        (issued / f"{edge}.cert.pem", 0o644),
        (issued / f"{edge}.key.pem", 0o600),
        (issued / f"{platform}.cert.pem", 0o644),
    ]
    edge_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    edge_dir.chmod(0o700)
    for src, mode in files:
        write_atomic(edge_dir / src.name, src.read_bytes(), mode=mode)


# ------------------------------------------------------------------------------------- run


def _check_free(host: str, port: int, what: str) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise OSError(
                f"{what} port {host}:{port} is in use ({e.strerror}); pick another with the option "
                f"shown in `vpp demo --help`"
            ) from e


def _port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1].split("/", 1)[0])


def _sites(args: argparse.Namespace) -> tuple[SiteConfig, SiteConfig]:
    """(central site with the edge terminal added, edge terminal site) from the options."""
    demo = demo_site(
        args.iec104_port, args.modbus_port, args.api_port, args.history_url,
        args.iec104_server_port, args.opcua_port, args.edge_hub_port,
    )  # fmt: skip
    hub = hub_config(demo)
    edge = edge_site(args.edge_modbus_port, hub.port, args.edge_api_port)
    return central_site(demo, edge), edge


def _listeners(site: SiteConfig, edge: SiteConfig) -> list[tuple[str, int, str]]:
    """(host, port, what) of everything the demo listens on."""
    d104 = next(d for d in site.drivers if d.protocol == "iec104")
    dmb = next(d for d in site.drivers if d.protocol == "modbus")
    emb = next(d for d in edge.drivers if d.protocol == "modbus")
    hub = hub_config(site)
    return [
        (d104.host, d104.port, "IEC 104 simulator"),
        (dmb.host, dmb.port, "Modbus simulator"),
        (site.api.host, site.api.port, "REST API"),
        (site.north.iec104.host, site.north.iec104.port, "IEC 104 server"),
        ("127.0.0.1", _port_of(site.north.opcua.endpoint), "OPC UA server"),
        (hub.host, hub.port, "edge hub"),
        (emb.host, emb.port, "edge Modbus simulator"),
        (edge.api.host, edge.api.port, "edge REST API"),
    ]


class _Sims:
    """Device simulators served until stop() (each set of them stops on its own)."""

    def __init__(self, sims: list[IEC104Simulator | ModbusSimulator]) -> None:
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(s.serve(self._stop), name=f"sim-{id(s)}") for s in sims]

    async def stop(self) -> None:
        """Stop serving and wait for the listeners to close."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def run_demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Start simulators, the gateway and the edge terminal, print progress until stop is set."""
    from gateway.runtime import Gateway
    from tools.sim.iec104 import IEC104Simulator
    from tools.sim.modbus import ModbusSimulator

    site, edge = _sites(args)
    for host, port, what in _listeners(site, edge):
        if port:
            _check_free(host, port, what)
    hub, uplink = hub_config(site), uplink_config(edge)
    try:
        created = ensure_demo_pki(
            Path(hub.pki_dir), hub.certificate, uplink.name, Path(uplink.pki_dir)
        )
    except SecurityError as e:  # reported like a busy port: one line, exit status 1
        raise OSError(f"demo PKI in {hub.pki_dir}: {e} (remove it to make a new one)") from e
    d104 = next(d for d in site.drivers if d.protocol == "iec104")
    dmb = next(d for d in site.drivers if d.protocol == "modbus")
    emb = next(d for d in edge.drivers if d.protocol == "modbus")

    print("vpp-gateway demo", flush=True)
    made = f"created {', '.join(created)}" if created else "reused"
    print(f"  demo PKI: {hub.pki_dir} ({made}); the edge terminal's copy in {uplink.pki_dir}",
          flush=True)  # fmt: skip
    # Unwinds in reverse: edge gateway, its simulator, central gateway, central simulators.
    async with contextlib.AsyncExitStack() as running:
        sims = _Sims([
            IEC104Simulator(site, d104.id, tick_s=1.0, day_length_s=args.day_length),
            ModbusSimulator(site, dmb.id, tick_s=1.0, day_length_s=args.day_length),
        ])  # fmt: skip
        running.push_async_callback(sims.stop)
        print(f"  started IEC 104 outstation simulator  {d104.host}:{d104.port}  "
              f"(PV01, BAT01, HVAC01)", flush=True)  # fmt: skip
        print(f"  started Modbus TCP device simulator   {dmb.host}:{dmb.port}  "
              f"(PV02, BAT02, LOAD01)", flush=True)  # fmt: skip
        gw = Gateway(site, tick_s=1.0)
        running.push_async_callback(gw.stop)  # also releases what a failed start did start
        await gw.start()
        _print_central(gw)
        edge_sims = _Sims([ModbusSimulator(edge, emb.id, tick_s=1.0, day_length_s=args.day_length)])
        running.push_async_callback(edge_sims.stop)
        print(f"  started edge terminal's Modbus TCP device simulator  {emb.host}:{emb.port}  "
              f"({', '.join(r.id for _, r in edge.resources())})", flush=True)  # fmt: skip
        egw = Gateway(edge, tick_s=1.0, role="edge")
        running.push_async_callback(egw.stop)
        await egw.start()
        _print_edge(egw)
        _print_try(gw, args.duration)
        await _follow(gw, args.progress, stop)
    print("demo stopped; history kept in", gw.history_url, flush=True)
    return 0


async def _follow(gw: Gateway, every: float, stop: asyncio.Event) -> None:
    """Print a status line every `every` seconds until stop is set."""
    t0 = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await stop.wait()
        print(_progress(gw, time.monotonic() - t0), flush=True)


def _print_central(gw: Gateway) -> None:
    site = gw.site
    print(f"  started gateway: {len(gw.twin)} points, drivers "
          f"{', '.join(d.id for d in gw.drivers)}", flush=True)  # fmt: skip
    print(f"  history: {gw.history_url}", flush=True)
    n104 = site.north.iec104
    print(f"  IEC 104 server for dispatch: {n104.host}:{n104.port} "
          "(point table: vpp export iec104-points)", flush=True)  # fmt: skip
    print(f"  OPC UA server: {site.north.opcua.endpoint} (anonymous read-only; operators "
          "from `vpp users add`)", flush=True)  # fmt: skip
    auth = (
        "auth off: open to anyone on this machine" if site.api.auth == "off" else "login required"
    )
    api = f"{gw.api_url}/api/v1"
    print(f"  REST API: {api}/points   (OpenAPI: {api}/openapi.json; {auth})", flush=True)
    hub = hub_config(site)
    port = gw.hub.port if gw.hub is not None else hub.port
    print(f"  edge hub for edge terminals: {hub.host}:{port} (SM2-signed, SM4-encrypted; "
          f"certificate {hub.certificate}, CA in {hub.pki_dir})", flush=True)  # fmt: skip


def _print_edge(egw: Gateway) -> None:
    edge, uplink = egw.site, uplink_config(egw.site)
    ids = [r.id for _, r in edge.resources()]
    print(f"  started edge terminal {edge.site.id} (certificate {uplink.name}): its own twin, "
          f"history {egw.history_url}, buffer {uplink.buffer_path}; uplink {uplink.uplink}; "
          f"REST API {egw.api_url}/api/v1 (its local view)", flush=True)  # fmt: skip
    print(f"    on the platform: driver {EDGE_DRIVER} ({', '.join(ids)}), "
          f"aggregator {edge.vpps[0].aggregators[0].id} of {edge.vpps[0].id}", flush=True)  # fmt: skip


def _print_try(gw: Gateway, duration: float | None) -> None:
    api = f"{gw.api_url}/api/v1"
    print("  try a set-point - battery 1 to charge at 30 kW:", flush=True)
    print(f"    curl -s -X POST {api}/commands -H 'Content-Type: application/json' "
          "-d '{\"point\": \"VPP1.BAT01/DRCC1.WSpt.setMag.f\", \"value\": -30}'", flush=True)  # fmt: skip
    print("  or through the edge terminal - its battery to charge at 20 kW (signed by the "
          "platform, SM4-encrypted down the channel, checked and executed at the edge):",
          flush=True)  # fmt: skip
    print(f"    curl -s -X POST {api}/commands -H 'Content-Type: application/json' "
          "-d '{\"point\": \"VPP1.BAT11/DRCC1.WSpt.setMag.f\", \"value\": -20}'", flush=True)  # fmt: skip
    print("  Ctrl-C stops" + (f"; stopping by itself after {duration:g} s" if duration else ""),
          flush=True)  # fmt: skip


def _fmt(v: object) -> str:
    return f"{v:7.1f}" if isinstance(v, int | float) else "      -"


def _progress(gw: object, elapsed: float) -> str:
    from gateway.runtime import Gateway

    assert isinstance(gw, Gateway)
    tw = gw.twin
    parts = [f"[{elapsed:6.0f}s]"]
    for v in gw.site.vpps:
        vals = tw.read(plant_ref(v.id, k) for k in ("p", "up_w", "down_w"))
        p, up, dn = (vals.get(plant_ref(v.id, k), (None, 0))[0] for k in ("p", "up_w", "down_w"))
        parts.append(f"{v.id} P={_fmt(p)} kW up={_fmt(up)} down={_fmt(dn)}")
        pv_refs = [r.ref(v.id, Role.P) for r in v.all_resources() if r.kind.value == "pv"]
        pv_vals = [x for x, _ in tw.read([ref for ref in pv_refs if ref]).values() if x is not None]
        parts.append(f"PV={_fmt(sum(float(x) for x in pv_vals)) if pv_vals else _fmt(None)} kW")
        for r in v.all_resources():
            if r.kind.value == "storage":
                soc_ref, p_ref = r.ref(v.id, Role.SOC), r.ref(v.id, Role.P)
                got = tw.read([x for x in (soc_ref, p_ref) if x])
                pv = got.get(p_ref or "", (None, 0))[0]
                sv = got.get(soc_ref or "", (None, 0))[0]
                parts.append(f"{r.id} P={_fmt(pv)} SoC={_fmt(sv)}%")
    links = " ".join(f"{d.id}:{'up' if d.connected else 'DOWN'}" for d in gw.drivers)
    rows = gw.writer.stats().get("rows_written", 0) if gw.writer else 0
    parts.append(f"| {links} | samples {tw.applied} history rows {rows}")
    return " ".join(parts)
