"""`vpp import scl`: IEC 61850-6 SCL files (ICD, CID, SCD) -> resources, points and MMS drivers.

The site file is written (atomically, to a temporary name then renamed) only when the import and
the whole resulting site validate; on any error the output file is left as it was.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cim.errors import CimError
from cim.scl_import import import_scl, parse_map, read_map_file
from model.errors import SiteConfigError
from model.site import load_site
from tools.commands.cim import _group

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `import scl`."""
    imp = _group(sub, "import", "import models (CGMES, SCL) into a site file", "import_cmd")
    p = imp.add_parser(
        "scl",
        help="IEC 61850 SCL files (.icd/.cid/.scd) -> resources, points and MMS drivers, with a report",
        description="Import IEC 61850-6 SCL: each logical device becomes a resource (its kind "
        "from its logical node classes), bound by --map, by the mRID the SCL carries, or by the "
        "site's iec61850 driver; analogues and set-points become points; each IED gets an MMS "
        "driver. Nothing is written unless the result validates.",
    )
    p.add_argument("files", nargs="+", type=Path, help="SCL files")
    p.add_argument("--site", type=Path, help="existing site file to enrich (default: a new site)")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="LD=VPP.RES",
        help="bind a logical device (LD name, IED/inst or inst) to a resource; repeatable",
    )
    p.add_argument("--map-file", type=Path, help="LD=VPP.RES lines, one per logical device")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="site file to write (default: --site itself; without either, only the report)",
    )
    p.add_argument("--vpp-id", help="VPP of new resources (default: the site's first, else VPP1)")
    p.add_argument("--site-id", default="SCL", help="site id of a new site (default SCL)")
    p.add_argument("--site-name", default="", help="site name of a new site")
    p.add_argument("--report", type=Path, help="also write the report (and driver configs) as JSON")
    p.set_defaults(func=_import_scl)


def _import_scl(args: argparse.Namespace) -> int:
    output: Path | None = args.output or args.site
    try:
        site = load_site(args.site) if args.site else None
        maps = read_map_file(args.map_file) if args.map_file else {}
        maps.update(parse_map(args.map))
        result = import_scl(
            args.files,
            site=site,
            maps=maps,
            vpp_id=args.vpp_id,
            site_id=args.site_id,
            site_name=args.site_name,
        )
    except (CimError, SiteConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        if output is not None:
            print(f"nothing written: {output} is unchanged", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot read: {e}", file=sys.stderr)
        return 2
    print(result.report.format())
    try:
        if args.report:
            args.report.write_text(result.report_json() + "\n", encoding="utf-8")
        if output is None:
            print("no --output or --site given: nothing written")
            return 0
        result.write(output)
    except OSError as e:
        print(f"error: cannot write: {e}", file=sys.stderr)
        return 1
    n = len(result.report.imported)
    print(f"wrote {output} ({n} logical device(s) bound to resources)")
    return 0
