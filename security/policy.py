"""Command policy: the checks every command passes before it becomes desired state."""

from __future__ import annotations

import math
import time

from model.command import Command
from model.points import Access, DType, PointSpec
from security.errors import SecurityError

__all__ = ["PolicyViolation", "check_command"]


class PolicyViolation(SecurityError):
    """A command the policy refuses; `code` is machine-readable, the message names the reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_command(cmd: Command, spec: PointSpec | None, now: float | None = None) -> None:
    """Raise PolicyViolation if cmd may not be executed: unknown point, read-only, type, limits, expiry."""
    if spec is None:
        raise PolicyViolation("unknown_point", f"unknown point {cmd.target!r}")
    if spec.access != Access.RW:
        raise PolicyViolation("read_only", f"point {cmd.target!r} is read-only")
    v = cmd.value
    if spec.dtype == DType.BOOL:
        if not isinstance(v, bool):
            raise PolicyViolation("bad_type", f"point {cmd.target!r} takes true/false, not {v!r}")
    else:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise PolicyViolation("bad_type", f"point {cmd.target!r} takes a number, not {v!r}")
        if not math.isfinite(float(v)):
            raise PolicyViolation("bad_value", f"value {v!r} is not a finite number")
        if spec.dtype == DType.INT and float(v) != int(v):
            raise PolicyViolation("bad_type", f"point {cmd.target!r} takes an integer, not {v!r}")
        if not spec.in_limits(float(v)):
            raise PolicyViolation(
                "out_of_limits",
                f"value {v} is outside the limits of {cmd.target!r} [{spec.min}, {spec.max}] {spec.unit}",
            )
    now = time.time() if now is None else now
    if cmd.deadline <= now:
        raise PolicyViolation("expired", f"command {cmd.id} is already past its deadline")
