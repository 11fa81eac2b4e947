"""`vpp secrets`: a master key, and site-file values sealed under it (SM4-GCM)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `vpp secrets`."""
    p = sub.add_parser("secrets", help="master key and sealed site-file values (SM4-GCM)")
    s = p.add_subparsers(dest="secrets_cmd", metavar="SUBCOMMAND", required=True)
    init = s.add_parser("init", help="create a master key file (mode 0600)")
    init.add_argument("--key-file", type=Path, default=Path("var/master.key"))
    init.set_defaults(func=_init)
    seal = s.add_parser("seal", help="print a value sealed for the site file (enc:sm4:...)")
    seal.add_argument("value", nargs="?", help="the secret (default: prompt without echo)")
    seal.set_defaults(func=_seal)
    reveal = s.add_parser("reveal", help="print the plaintext of a sealed value")
    reveal.add_argument("value")
    reveal.set_defaults(func=_reveal)


def _init(args: argparse.Namespace) -> int:
    from security.secrets import new_master_key_file

    try:
        new_master_key_file(args.key_file)
    except FileExistsError:
        print(f"error: {args.key_file} exists; not overwritten", file=sys.stderr)
        return 2
    print(
        f"master key written to {args.key_file} (mode 0600); set VPP_MASTER_KEY_FILE to use another"
    )
    return 0


def _seal(args: argparse.Namespace) -> int:
    from security.errors import SecurityError
    from security.secrets import load_master_key, seal

    value = args.value if args.value is not None else getpass.getpass("secret: ")
    try:
        print(seal(value, load_master_key()))
    except SecurityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _reveal(args: argparse.Namespace) -> int:
    from security.errors import SecurityError
    from security.secrets import reveal

    try:
        print(reveal(args.value))
    except SecurityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
