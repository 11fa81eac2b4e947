"""Subcommands of `vpp` beyond the core ones, one module each.

A module here (not starting with `_`: those are shared helpers) defines `register(sub)`, adding its parser to the `vpp` subparsers and setting
`func=handler` on it with `set_defaults`; the handler takes the parsed args and returns an exit
code. The CLI finds every module in this package, so a capability adds a command without
editing tools/cli.py.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

__all__ = ["register_all"]


def register_all(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Let every module of this package add its subcommands."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # shared helpers, not commands
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
