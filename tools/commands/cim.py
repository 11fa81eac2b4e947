"""`vpp import cgmes` and `vpp export cgmes-ssh` / `vpp export cgmes-sv`.

`import` and `export` are groups that other modules of tools/commands add to as well (`vpp import
scl`, `vpp export iec104-points`); argparse refuses a second parser of one name, so each module
adds its subcommands to the group's parser when an earlier module already made it (see _group).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from cim.cgmes_import import binding_path_for, import_cgmes, load_bindings, state_values
from cim.errors import CimError
from model.errors import SiteConfigError
from model.site import SiteConfig, load_site

__all__ = ["register", "values_from_history"]


def _group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help: str, dest: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The subparsers of the `vpp <name>` group, made here unless another module made it first."""
    parser = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(name, help=help)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return cast("argparse._SubParsersAction[argparse.ArgumentParser]", action)
    return parser.add_subparsers(dest=dest, metavar="FORMAT", required=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `import cgmes`, `export cgmes-ssh` and `export cgmes-sv`."""
    imp = _group(sub, "import", "import models (CGMES, SCL) into a site file", "import_cmd")
    p = imp.add_parser(
        "cgmes",
        help="CGMES EQ/TP/SSH/SV files (XML or zip) -> site file + binding file, with a report",
        description="Import a CGMES model: resources with their mRIDs, limits and measurements. "
        "The site file is written only when the result validates; terminals, nodes and "
        "measurement bindings go to <site>.cim.json beside it.",
    )
    p.add_argument("files", nargs="+", type=Path, help="CGMES RDF/XML files or zip files")
    p.add_argument("--boundary", nargs="+", type=Path, default=[], help="boundary EQ_BD/TP_BD")
    p.add_argument("-o", "--output", required=True, type=Path, help="site file to write (YAML)")
    p.add_argument("--vpp-id", default="VPP1", help="id of the VPP holding the resources")
    p.add_argument("--site-id", default="CGMES", help="site id (default CGMES)")
    p.add_argument("--site-name", default="", help="site name")
    p.add_argument("--report", type=Path, help="also write the report as JSON here")
    p.add_argument(
        "--strict",
        action="store_true",
        help="fail on references to objects no file defines (default: list them in the report)",
    )
    p.set_defaults(func=_import_cgmes)

    exp = _group(
        sub, "export", "export the site or the twin's state in other formats", "export_cmd"
    )
    for profile, what in (("ssh", "set-points and P/Q as SSH"), ("sv", "P/Q flows as SV")):
        e = exp.add_parser(
            f"cgmes-{profile}",
            help=f"the present state of CGMES-imported resources: {what}",
        )
        e.add_argument("--config", "-c", required=True, type=Path, help="site file")
        e.add_argument("--cim", type=Path, help="binding file (default: <site>.cim.json)")
        src = e.add_mutually_exclusive_group()
        src.add_argument("--history-url", help="take each point's latest value from this history")
        src.add_argument(
            "--values", help="point values as a JSON object {ref: value}, or a file holding one"
        )
        e.add_argument("--scenario-time", help="ISO 8601 time of the state (default: now)")
        e.add_argument("-o", "--output", required=True, type=Path, help="folder to write into")
        e.set_defaults(func=_export_cgmes, profile=profile.upper())


def _import_cgmes(args: argparse.Namespace) -> int:
    try:
        result = import_cgmes(
            args.files,
            args.boundary,
            vpp_id=args.vpp_id,
            site_id=args.site_id,
            site_name=args.site_name,
            strict=args.strict,
        )
    except CimError as e:
        print(f"error: {e}", file=sys.stderr)
        print(f"nothing written: {args.output} is unchanged", file=sys.stderr)
        return 2
    except SiteConfigError as e:
        print(f"error: the imported site does not validate: {e}", file=sys.stderr)
        print(f"nothing written: {args.output} is unchanged", file=sys.stderr)
        return 2
    print(result.report.format())
    try:
        bpath = result.write(args.output)
        if args.report:
            args.report.write_text(json.dumps(result.report.to_dict(), indent=1) + "\n")
    except OSError as e:
        print(f"error: cannot write: {e}", file=sys.stderr)
        return 1
    n = len(result.site.resources())
    print(f"wrote {args.output} ({n} resource(s) in VPP {result.vpp_id}) and {bpath}")
    return 0


def values_from_history(url: str, refs: list[str]) -> dict[str, float]:
    """The latest stored value of each ref that history holds."""
    from twin.history import HistoryStore

    out: dict[str, float] = {}
    with HistoryStore(url) as store:
        known = set(store.points())
        for ref in refs:
            if ref not in known:
                continue
            # Hour buckets from the first to the last sample; the last filled one is the latest.
            buckets = store.resample(ref, None, None, "60min", "last")
            for _, v, n in reversed(buckets):
                if n and v is not None and not math.isnan(v):
                    out[ref] = v
                    break
    return out


def _values(args: argparse.Namespace, site: SiteConfig, imported: dict[str, float]) -> Any:
    if args.history_url:
        return values_from_history(args.history_url, [s.ref for s in site.point_specs()])
    if args.values:
        text = args.values
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text(encoding="utf-8")
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("--values must be a JSON object {point ref: value}")
        return {str(k): float(v) for k, v in data.items() if v is not None}
    print("no --history-url or --values: exporting the state recorded at import", file=sys.stderr)
    return imported


def _export_cgmes(args: argparse.Namespace) -> int:
    from cim.cgmes_export import export_ssh, export_sv

    try:
        site = load_site(args.config)
        bf = load_bindings(args.cim or binding_path_for(args.config))
        imported = state_values(site, bf.bindings)
        values = _values(args, site, imported)
        when = datetime.fromisoformat(args.scenario_time) if args.scenario_time else None
        if when is not None and when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        fn = export_ssh if args.profile == "SSH" else export_sv
        result = fn(
            site,
            bf.bindings,
            values,
            args.output,
            cgmes_version=bf.cgmes_version,
            models=bf.models,
            scenario_time=when,
            cim_namespace=bf.cim_namespace or None,
        )
    except (CimError, SiteConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result.format())
    return 0
