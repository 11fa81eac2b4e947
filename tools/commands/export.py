"""`vpp export iec104-points`: the IEC 104 server's point table as CSV for the dispatch side.

`export` is a group other modules of tools/commands add to as well (`vpp export cgmes-ssh`):
argparse refuses a second parser of one name, so this module joins the group when it exists.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any, cast

from model.north_iec104 import IEC104ServerConfig, IEC104TableEntry, build_point_table
from model.site import SiteConfig, load_site

__all__ = ["COLUMNS", "points_csv", "register"]

COLUMNS = ("common_address", "ioa", "type", "point", "description", "unit", "scale", "deadband")
DEMO_SITE = Path(__file__).resolve().parent.parent / "demo_site.yaml"


def server_config(site: SiteConfig) -> IEC104ServerConfig:
    """The site's IEC 104 server section (`north.iec104`) if it has one, else the defaults."""
    north: Any = getattr(site, "north", None)
    cfg = getattr(north, "iec104", None)
    return cfg if isinstance(cfg, IEC104ServerConfig) else IEC104ServerConfig()


def points_csv(table: list[IEC104TableEntry]) -> str:
    """The point table as CSV text, one row per information object."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(COLUMNS)
    for e in table:
        w.writerow(
            [e.common_address, e.ioa, e.type, e.point, e.description, e.unit, f"{e.scale:g}",
             f"{e.deadband:g}"]
        )  # fmt: skip
    return out.getvalue()


def _export(args: argparse.Namespace) -> int:
    site = load_site(args.config or DEMO_SITE)
    text = points_csv(build_point_table(server_config(site), site))
    if args.output is None or str(args.output) == "-":
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"{args.output}: {text.count(chr(10)) - 1} points", file=sys.stderr)
    return 0


def _group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The subparsers of `vpp export`, made here unless another module made it first."""
    parser = sub.choices.get("export")
    if parser is None:
        parser = sub.add_parser(
            "export", help="export the site or the twin's state in other formats"
        )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return cast("argparse._SubParsersAction[argparse.ArgumentParser]", action)
    return parser.add_subparsers(dest="export_cmd", metavar="FORMAT", required=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `vpp export iec104-points` (to the `export` group other modules share)."""
    pts = _group(sub).add_parser(
        "iec104-points",
        help="the IEC 104 server's point table as CSV (common_address, ioa, type, point, ...)",
    )
    pts.add_argument("--config", "-c", type=Path, help="site file (default: the demo site's table)")
    pts.add_argument("-o", "--output", type=Path, help="CSV file to write (default: stdout)")
    pts.set_defaults(func=_export)
