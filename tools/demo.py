"""`vpp demo`: the embedded demo site - simulators, gateway, history and REST API on loopback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import time
from pathlib import Path

from model.natures import Role
from model.resources import plant_ref
from model.site import SiteConfig, load_site

__all__ = ["demo_site", "run_demo"]

DEMO_SITE = Path(__file__).with_name("demo_site.yaml")


def demo_site(
    iec104_port: int | None = None,
    modbus_port: int | None = None,
    api_port: int | None = None,
    history_url: str | None = None,
    iec104_server_port: int | None = None,
    opcua_port: int | None = None,
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
    return site.model_copy(update=update)


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


async def run_demo(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Start simulators and the gateway, print progress until stop is set."""
    from gateway.runtime import Gateway
    from tools.sim.iec104 import IEC104Simulator
    from tools.sim.modbus import ModbusSimulator

    site = demo_site(
        args.iec104_port, args.modbus_port, args.api_port, args.history_url,
        args.iec104_server_port, args.opcua_port,
    )  # fmt: skip
    d104 = next(d for d in site.drivers if d.protocol == "iec104")
    dmb = next(d for d in site.drivers if d.protocol == "modbus")
    for host, port, what in ((d104.host, d104.port, "IEC 104 simulator"),
                             (dmb.host, dmb.port, "Modbus simulator"),
                             (site.api.host, site.api.port, "REST API"),
                             (site.north.iec104.host, site.north.iec104.port,
                              "IEC 104 server"),
                             ("127.0.0.1", _port_of(site.north.opcua.endpoint),
                              "OPC UA server")):  # fmt: skip
        if port:
            _check_free(host, port, what)

    print("vpp-gateway demo", flush=True)
    sim_stop = asyncio.Event()
    sims: list[IEC104Simulator | ModbusSimulator] = [
        IEC104Simulator(site, d104.id, tick_s=1.0, day_length_s=args.day_length),
        ModbusSimulator(site, dmb.id, tick_s=1.0, day_length_s=args.day_length),
    ]
    sim_tasks = [
        asyncio.create_task(s.serve(sim_stop), name=f"sim-{i}") for i, s in enumerate(sims)
    ]
    print(f"  started IEC 104 outstation simulator  {d104.host}:{d104.port}  "
          f"(PV01, BAT01, HVAC01)", flush=True)  # fmt: skip
    print(f"  started Modbus TCP device simulator   {dmb.host}:{dmb.port}  "
          f"(PV02, BAT02, LOAD01)", flush=True)  # fmt: skip
    gw = Gateway(site, tick_s=1.0)
    await gw.start()
    api = f"{gw.api_url}/api/v1"
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
    print(f"  REST API: {api}/points   (OpenAPI: {api}/openapi.json; {auth})", flush=True)
    print("  try a set-point - battery 1 to charge at 30 kW:", flush=True)
    print(f"    curl -s -X POST {api}/commands -H 'Content-Type: application/json' "
          "-d '{\"point\": \"VPP1.BAT01/DRCC1.WSpt.setMag.f\", \"value\": -30}'", flush=True)  # fmt: skip
    print("  Ctrl-C stops" + (f"; stopping by itself after {args.duration:g} s" if args.duration else ""),
          flush=True)  # fmt: skip
    t0 = time.monotonic()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.progress)
            print(_progress(gw, time.monotonic() - t0), flush=True)
    finally:
        await gw.stop()
        sim_stop.set()
        await asyncio.gather(*sim_tasks, return_exceptions=True)
    print("demo stopped; history kept in", gw.history_url, flush=True)
    return 0


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
