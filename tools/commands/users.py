"""`vpp users`: the people who may log in (REST, OPC UA), with IEC 62351-8 roles.

Changes made here can be written to the audit log too (`--audit-url`, the site's history
database); the REST API's /users routes always audit theirs. The gateway also records a
config_change whenever the users file differs from the one it last saw.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]

_ROLES_HELP = "viewer, operator, engineer, market_participant, security_admin, auditor"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `vpp users`."""
    p = sub.add_parser("users", help="users and roles (passwords stored as Argon2id hashes)")
    s = p.add_subparsers(dest="users_cmd", metavar="SUBCOMMAND", required=True)

    def common(q: argparse.ArgumentParser, audit: bool = True) -> None:
        q.add_argument("--file", type=Path, default=Path("var/users.yaml"))
        if audit:
            q.add_argument(
                "--audit-url", help="SQLAlchemy URL of the audit log to record the change in"
            )

    add = s.add_parser("add", help="add a user (password prompted, or from VPP_NEW_PASSWORD)")
    add.add_argument("name")
    add.add_argument("--role", action="append", required=True, help=_ROLES_HELP)
    common(add)
    add.set_defaults(func=_add)
    roles = s.add_parser("roles", help="replace a user's roles")
    roles.add_argument("name")
    roles.add_argument("--role", action="append", default=[], help=_ROLES_HELP + " (none: no role)")
    common(roles)
    roles.set_defaults(func=_roles)
    rm = s.add_parser("remove", help="remove a user")
    rm.add_argument("name")
    common(rm)
    rm.set_defaults(func=_remove)
    ls = s.add_parser("list", help="list users and their roles")
    common(ls, audit=False)
    ls.set_defaults(func=_list)


def _audit(args: argparse.Namespace, kind: str, subject: str, detail: dict[str, Any]) -> None:
    """Record a change made here in the audit log when --audit-url is given."""
    if not getattr(args, "audit_url", None):
        return
    import os
    import socket

    from sqlalchemy import create_engine

    from security.audit import AuditLog
    from security.secrets import reveal

    engine = create_engine(reveal(args.audit_url))
    try:
        log = AuditLog(engine).open()
        log.record(
            kind,
            actor=f"cli:{getpass.getuser()}",
            source=f"cli {socket.gethostname()} pid {os.getpid()}",
            subject=subject,
            detail={**detail, "file": str(args.file)},
        )
        log.flush()
    finally:
        engine.dispose()
    print(f"recorded in the audit log ({kind})")


def _load(args: argparse.Namespace) -> Any:
    from security.users import UserStore

    return UserStore.load(args.file, missing_ok=True)


def _add(args: argparse.Namespace) -> int:
    import os

    from security.audit import AuditError
    from security.users import UserStoreError

    try:
        store = _load(args)
    except UserStoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    password = os.environ.get("VPP_NEW_PASSWORD") or getpass.getpass(f"password for {args.name}: ")
    try:
        user = store.add(args.name, password, args.role)
        saved = store.save(args.file)
        _audit(args, "user_add", args.name, {"roles": sorted(r.value for r in user.roles)})
    except (ValueError, KeyError, UserStoreError, AuditError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"user {args.name} ({', '.join(args.role)}) saved to {saved}")
    return 0


def _roles(args: argparse.Namespace) -> int:
    from security.audit import AuditError
    from security.users import UserStoreError

    try:
        store = _load(args)
        before = store.get(args.name)
        if before is None:
            raise UserStoreError(f"no user {args.name!r} in {args.file}")
        user = store.set_roles(args.name, args.role)
        store.save(args.file)
        _audit(
            args,
            "role_change",
            args.name,
            {
                "before": sorted(r.value for r in before.roles),
                "after": sorted(r.value for r in user.roles),
            },
        )
    except (UserStoreError, AuditError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"user {args.name}: {', '.join(sorted(r.value for r in user.roles)) or 'no role'}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    from security.audit import AuditError
    from security.users import UserStoreError

    try:
        store = _load(args)
        before = store.get(args.name)
        if before is None:
            raise UserStoreError(f"no user {args.name!r} in {args.file}")
        store.remove(args.name)
        store.save(args.file)
        _audit(args, "user_remove", args.name, {"roles": sorted(r.value for r in before.roles)})
    except (UserStoreError, AuditError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"user {args.name} removed from {args.file}")
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _load(args)
    for u in store:
        roles = ", ".join(sorted(r.value for r in u.roles))
        print(f"{u.name}: {roles}{' (disabled)' if u.disabled else ''}")
    return 0
