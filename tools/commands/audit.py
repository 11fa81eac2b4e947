"""`vpp audit verify`: prove the hash chains (command log, audit log) and the audit log's SM2-signed
checkpoints, or name the first broken record."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `vpp audit`."""
    p = sub.add_parser("audit", help="audit records: verify the command log and the audit log")
    audit_sub = p.add_subparsers(dest="audit_cmd", metavar="SUBCOMMAND", required=True)
    v = audit_sub.add_parser(
        "verify",
        help="check every record of the chains and the signed checkpoints; name the first "
        "broken record",
    )
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", "-c", help="site file: use its history (and audit) database")
    src.add_argument("--history-url", help="SQLAlchemy URL of the database holding the logs")
    v.add_argument("--audit-url", help="SQLAlchemy URL of the audit log, if not the same database")
    v.add_argument(
        "--pki",
        type=Path,
        help="CA directory: trust every platform certificate it issued (default: the site's "
        "audit pki_dir, when it exists)",
    )
    v.add_argument(
        "--cert",
        type=Path,
        action="append",
        default=[],
        help="a platform certificate (PEM/DER) whose checkpoint signatures to trust; repeatable",
    )
    v.add_argument(
        "--require-signed",
        action="store_true",
        help="fail (exit 1) when signatures cannot be checked or records are not yet signed",
    )
    v.add_argument("--json", action="store_true", help="print the result as JSON")
    v.set_defaults(func=_verify)


def _platform_certs(pki: Path) -> list[Any]:
    """Every certificate of role platform the CA in `pki` issued (current and earlier ones)."""
    from security.identity import Certificate, IdentityError
    from security.identity import Role as CertRole

    ca = Certificate.load_file(pki / "ca.cert.pem")
    out = []
    for path in sorted((pki / "certs").glob("*.cert.pem")):
        try:
            cert = Certificate.load_file(path)
        except IdentityError as e:
            print(f"warning: {e}", file=sys.stderr)
            continue
        if (
            cert.role is CertRole.PLATFORM
            and cert.issuer == ca.name
            and cert.signed_by(ca.public_key)
        ):
            out.append(cert)
    return out


def _verify(args: argparse.Namespace) -> int:
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError

    from model.site import load_site
    from security.audit import TABLE, AuditError, AuditLog
    from security.identity import IdentityError
    from security.secrets import reveal
    from twin.command_store import CommandStore

    pki: Path | None = args.pki
    audit_url = args.audit_url
    if args.config:
        site = load_site(args.config)
        url = site.history.url
        audit_cfg = getattr(site, "audit", None)  # the site's audit section, once it has one
        if audit_cfg is not None:
            audit_url = audit_url or audit_cfg.url
            if pki is None and Path(audit_cfg.pki_dir, "ca.cert.pem").exists():
                pki = Path(audit_cfg.pki_dir)
    else:
        url = args.history_url
    certs: list[Any] = []
    try:
        from security.identity import Certificate

        certs = [Certificate.load_file(p) for p in args.cert]
        if pki is not None:
            certs += _platform_certs(pki)
    except (IdentityError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {}
    broken = False
    engines = []
    try:
        engine = create_engine(reveal(url))
        engines.append(engine)
        audit_engine = create_engine(reveal(audit_url)) if audit_url else engine
        if audit_engine is not engine:
            engines.append(audit_engine)
        has_cmd = inspect(engine).has_table("command_log")
        has_audit = inspect(audit_engine).has_table(TABLE)
        if not has_cmd and not has_audit:
            where = engine.url.render_as_string()
            print(f"error: no command log or audit log in {where}", file=sys.stderr)
            return 2
        if has_cmd:
            store = CommandStore(engine)
            first = store.verify()
            n = len(store.rows(0, 10**9))
            report["command_log"] = {"ok": first is None, "records": n, "first_broken": first}
            broken |= first is not None
        if has_audit:
            result = AuditLog(audit_engine).verify(certs)
            report["audit_log"] = result.to_dict()
            broken |= not result.ok
            if (
                args.require_signed
                and result.ok
                and (not result.signatures_checked or result.unsigned_tail)
            ):
                broken = True
                report["audit_log"]["reason"] = (
                    "not every record is covered by a verified signature"
                )
    except (SQLAlchemyError, AuditError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        for eng in engines:
            eng.dispose()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, args.require_signed)
    return 1 if broken else 0


def _print(report: dict[str, Any], require_signed: bool) -> None:
    c = report.get("command_log")
    if c is not None:
        if c["ok"]:
            print(f"command log: OK: {c['records']} record(s), hash chain intact")
        else:
            print(
                f"command log: BROKEN: record {c['first_broken']} does not match the chain "
                f"({c['records']} record(s) present)"
            )
    a = report.get("audit_log")
    if a is None:
        return
    if not a["ok"]:
        print(f"audit log: BROKEN: {a['reason']} ({a['records']} record(s) read)")
        return
    line = f"audit log: OK: {a['records']} record(s), hash chain intact"
    if a["signatures_checked"]:
        line += (
            f"; {a['checkpoints']} SM2-signed checkpoint(s) verified, signed through record "
            f"{a['signed_through']}"
        )
        if a["unsigned_tail"]:
            line += f"; the last {a['unsigned_tail']} record(s) are not signed yet"
    else:
        line += (
            "; signatures NOT checked (no platform certificate: give --pki or --cert), "
            f"{a['checkpoints']} checkpoint(s) present"
        )
    if require_signed and a.get("reason"):
        line = line.replace("audit log: OK", "audit log: NOT PROVEN") + f": {a['reason']}"
    print(line)
