"""The `vpp` command line: run a site, the demo, simulators, config checks and benchmarks."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from model.errors import SiteConfigError
from model.site import SiteConfig, dump_schema, load_site

__all__ = ["main"]

DEMO_SITE = Path(__file__).with_name("demo_site.yaml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vpp",
        description="vpp-gateway: virtual power plant gateway and digital twin.",
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run a site: acquisition, twin, history and REST API")
    run.add_argument("--config", "-c", required=True, type=Path, help="site file (YAML)")
    run.add_argument("--history-url", help="SQLAlchemy URL overriding the site file's history.url")
    run.add_argument("--api-port", type=int, help="REST API port overriding the site file")
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument(
        "--role",
        choices=["central", "edge"],
        default="central",
        help="central platform (default) or edge terminal (needs edge.uplink in the site file)",
    )

    demo = sub.add_parser(
        "demo", help="run the embedded demo site with simulated devices on loopback"
    )
    demo.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)"
    )
    demo.add_argument("--api-port", type=int, default=8080, help="REST API port (default 8080)")
    demo.add_argument(
        "--iec104-port", type=int, help="IEC 104 outstation simulator port (default 2414)"
    )
    demo.add_argument("--modbus-port", type=int, help="Modbus simulator port (default 5020)")
    demo.add_argument(
        "--iec104-server-port", type=int, help="IEC 104 server port for dispatch (default 2404)"
    )
    demo.add_argument("--opcua-port", type=int, help="OPC UA server port (default 4840)")
    demo.add_argument(
        "--edge-hub-port",
        type=int,
        help="edge hub port, where the edge terminal connects (default 7443)",
    )
    demo.add_argument(
        "--edge-modbus-port", type=int, help="edge terminal's Modbus simulator port (default 5021)"
    )
    demo.add_argument(
        "--edge-api-port", type=int, help="edge terminal's own REST API port (default 8081)"
    )
    demo.add_argument(
        "--history-url", help="SQLAlchemy URL (default sqlite:///var/demo-history.db)"
    )
    demo.add_argument(
        "--day-length",
        type=float,
        default=600.0,
        help="seconds in a simulated PV day (default 600)",
    )
    demo.add_argument("--progress", type=float, default=5.0, help="seconds between status lines")

    cfg = sub.add_parser("config", help="site file tools")
    cfg_sub = cfg.add_subparsers(dest="config_cmd", metavar="SUBCOMMAND", required=True)
    chk = cfg_sub.add_parser("check", help="validate a site file; errors name file, line and field")
    chk.add_argument("file", type=Path)
    cfg_sub.add_parser("schema", help="print the JSON Schema of the site file")

    sim = sub.add_parser("sim", help="run a device simulator for one driver of a site file")
    from tools.sim import SIMULATORS

    sim.add_argument("protocol", choices=sorted(SIMULATORS))
    sim.add_argument(
        "--config", "-c", type=Path, default=DEMO_SITE, help="site file (default: demo)"
    )
    sim.add_argument(
        "--driver", help="driver id in the site file (default: the first of the protocol)"
    )
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, help="listen port (default: the driver's port)")
    sim.add_argument("--serial-port", help="serial device to serve on (serial protocols)")
    sim.add_argument("--tick", type=float, default=1.0, help="physics step in seconds")
    sim.add_argument("--day-length", type=float, default=86400.0, help="seconds in a simulated day")
    sim.add_argument("--duration", type=float, help="stop after this many seconds")

    bench = sub.add_parser("bench", help="benchmarks, each as a ratio against a same-run baseline")
    from tools.bench import BENCHMARKS

    bench.add_argument("which", choices=[*BENCHMARKS, "all"])
    bench.add_argument("--json", action="store_true", help="print JSON instead of text")
    bench.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")

    from tools.commands import register_all

    register_all(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `vpp` console script."""
    args = _parser().parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "func", None) is not None:
            return int(args.func(args))
        if args.cmd == "config":
            return _config(args)
        if args.cmd == "run":
            site = load_site(args.config)
            return _run_async(lambda stop: _run_site(site, args, stop), args.duration)
        if args.cmd == "demo":
            from tools.demo import run_demo

            return _run_async(lambda stop: run_demo(args, stop), args.duration)
        if args.cmd == "sim":
            site = load_site(args.config)
            return _run_async(lambda stop: _run_sim(site, args, stop), args.duration)
        if args.cmd == "bench":
            from tools.bench import run_benchmarks

            return run_benchmarks(args.which, as_json=args.json, quick=args.quick)
    except SiteConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _config(args: argparse.Namespace) -> int:
    if args.config_cmd == "schema":
        print(dump_schema())
        return 0
    site = load_site(args.file)
    n_res = len(site.resources())
    n_pts = len(site.point_specs())
    print(
        f"{args.file}: OK - {len(site.vpps)} VPP(s), {n_res} resource(s), {n_pts} point(s), "
        f"{len(site.drivers)} driver(s)"
    )
    return 0


def _run_async(body: Callable[[asyncio.Event], Awaitable[int]], duration: float | None) -> int:
    async def runner() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        if duration is not None:
            loop.call_later(duration, stop.set)
        return await body(stop)

    try:
        return asyncio.run(runner())
    except KeyboardInterrupt:
        return 130


async def _run_site(site: SiteConfig, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from gateway.runtime import Gateway

    try:
        gw = Gateway(site, history_url=args.history_url, api_port=args.api_port, role=args.role)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        await gw.start()
    except BaseException:
        await gw.stop()  # release what did start (listeners, drivers, history)
        raise
    print(f"vpp-gateway running site {site.site.id}: {len(gw.twin)} points, "
          f"{len(gw.drivers)} driver(s); REST API {gw.api_url}/api/v1", flush=True)  # fmt: skip
    try:
        await stop.wait()
    finally:
        await gw.stop()
    print("stopped", flush=True)
    return 0


async def _run_sim(site: SiteConfig, args: argparse.Namespace, stop: asyncio.Event) -> int:
    from tools.sim import create_simulator

    drivers = [d for d in site.drivers if d.protocol == args.protocol]
    if args.driver:
        drivers = [d for d in drivers if d.id == args.driver]
    if not drivers:
        which = f" {args.driver!r}" if args.driver else ""
        print(f"error: no {args.protocol} driver{which} in {args.config}", file=sys.stderr)
        return 2
    d = drivers[0]
    sim = create_simulator(
        site, d.id, host=args.host, port=args.port, serial_port=args.serial_port,
        tick_s=args.tick, day_length_s=args.day_length,
    )  # fmt: skip
    where = getattr(sim, "serial_port", None) or f"{args.host}:{getattr(sim, 'port', args.port)}"
    print(f"{args.protocol} simulator for driver {d.id} on {where} (Ctrl-C stops)", flush=True)
    await sim.serve(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
