"""Commands and their lifecycle, the same for every origin and every protocol."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from model.sample import Value

__all__ = ["TERMINAL_STATES", "Command", "CommandState", "new_command_id"]


class CommandState(StrEnum):
    """Lifecycle states of a command."""

    ACCEPTED = "accepted"
    SELECTED = "selected"
    SENT = "sent"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    UNKNOWN = "unknown"


TERMINAL_STATES = frozenset(
    {CommandState.CONFIRMED, CommandState.FAILED, CommandState.TIMED_OUT, CommandState.UNKNOWN}
)


def new_command_id() -> str:
    """A fresh command id."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Command:
    """Write `value` to the `target` point on behalf of `origin`, before `deadline` (UTC epoch s)."""

    target: str
    value: Value
    origin: str
    id: str = field(default_factory=new_command_id)
    deadline: float = field(default_factory=lambda: time.time() + 10.0)
    created: float = field(default_factory=time.time)
    select_before_operate: bool = False
