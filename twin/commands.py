"""Desired vs reported state: every command's lifecycle, confirmed by read-back.

Theory of operation: a command is ACCEPTED once policy passed; its value becomes the desired
value of its target point. The owning driver moves it to SELECTED (select-before-operate) and
SENT. A later sample of the target point whose value matches the desired value CONFIRMS it; a
driver error FAILS it; passing its deadline without confirmation TIMES it OUT. A terminal state
is final. Re-submitting an id that is known returns the existing record (never executed twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from model.command import TERMINAL_STATES, Command, CommandState
from model.sample import Value
from twin.errors import CommandConflict, UnknownCommand

__all__ = ["CommandBook", "CommandRecord", "Transition"]

_ALLOWED: dict[CommandState, frozenset[CommandState]] = {
    CommandState.ACCEPTED: frozenset(
        {CommandState.SELECTED, CommandState.SENT, CommandState.FAILED, CommandState.TIMED_OUT,
         CommandState.CONFIRMED, CommandState.UNKNOWN}
    ),
    CommandState.SELECTED: frozenset(
        {CommandState.SENT, CommandState.FAILED, CommandState.TIMED_OUT, CommandState.UNKNOWN}
    ),
    CommandState.SENT: frozenset(
        {CommandState.CONFIRMED, CommandState.FAILED, CommandState.TIMED_OUT, CommandState.UNKNOWN}
    ),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Transition:
    """One step of a command's lifecycle."""

    state: CommandState
    ts: float
    reason: str = ""


@dataclass(slots=True)
class CommandRecord:
    """A command with its lifecycle so far."""

    command: Command
    history: list[Transition] = field(default_factory=list)

    @property
    def state(self) -> CommandState:
        """The latest state."""
        return self.history[-1].state

    @property
    def done(self) -> bool:
        """True once the command reached a terminal state."""
        return self.state in TERMINAL_STATES

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        c = self.command
        return {
            "id": c.id,
            "point": c.target,
            "value": c.value,
            "origin": c.origin,
            "deadline": c.deadline,
            "created": c.created,
            "state": self.state.value,
            "history": [
                {"state": t.state.value, "ts": t.ts, "reason": t.reason} for t in self.history
            ],
        }


def _matches(desired: Value, reported: Value) -> bool:
    if isinstance(desired, bool) or isinstance(reported, bool):
        return bool(desired) == bool(reported)
    d, r = float(desired), float(reported)
    # Read-back passes through register scaling and float32: allow a small relative error.
    return abs(d - r) <= max(1e-6, 1e-3 * max(abs(d), 1.0))


class CommandBook:
    """Command records by id, desired values by point, and confirmation by read-back."""

    def __init__(self, clock: Callable[[], float] = time.time, keep: int = 10_000) -> None:
        self._clock = clock
        self._keep = keep
        self._records: dict[str, CommandRecord] = {}
        self.desired: dict[str, tuple[Value, str]] = {}
        self._listeners: list[Callable[[CommandRecord, Transition], None]] = []

    def add_listener(self, fn: Callable[[CommandRecord, Transition], None]) -> None:
        """Call fn(record, transition) on every transition (audit, API streams)."""
        self._listeners.append(fn)

    def __contains__(self, cmd_id: str) -> bool:
        return cmd_id in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, cmd_id: str) -> CommandRecord:
        """The record of a command; UnknownCommand if none."""
        try:
            return self._records[cmd_id]
        except KeyError:
            raise UnknownCommand(cmd_id) from None

    def accept(self, cmd: Command) -> tuple[CommandRecord, bool]:
        """Record a new command; return (record, True) or the existing (record, False) for a known id."""
        old = self._records.get(cmd.id)
        if old is not None:
            if old.command.target != cmd.target or old.command.value != cmd.value:
                raise CommandConflict(
                    f"command id {cmd.id!r} was already used for {old.command.target}="
                    f"{old.command.value!r}"
                )
            return old, False
        rec = CommandRecord(cmd)
        self._records[cmd.id] = rec
        self._trim()
        self._step(rec, CommandState.ACCEPTED, "")
        # A newer command for the same point supersedes the older one's desired value.
        self.desired[cmd.target] = (cmd.value, cmd.id)
        return rec, True

    def restore(self, rec: CommandRecord) -> None:
        """Put back a record loaded from storage (no listeners: it is already recorded)."""
        self._records[rec.command.id] = rec
        if not rec.done:
            self.desired[rec.command.target] = (rec.command.value, rec.command.id)

    def transition(self, cmd_id: str, state: CommandState, reason: str = "") -> CommandRecord:
        """Move a command to `state` if the lifecycle allows it; terminal states are final."""
        rec = self.get(cmd_id)
        if state in _ALLOWED.get(rec.state, frozenset()):
            self._step(rec, state, reason)
            if state in TERMINAL_STATES:
                self._release(rec)
        return rec

    def awaiting(self) -> bool:
        """True while some command waits for read-back."""
        return bool(self.desired)

    def on_reported(self, point: str, value: Value) -> None:
        """A value of `point` arrived: confirm the pending command whose desired value it matches."""
        d = self.desired.get(point)
        if d is None:
            return
        want, cmd_id = d
        rec = self._records.get(cmd_id)
        if rec is None or rec.done:
            self.desired.pop(point, None)
            return
        if rec.state == CommandState.SENT and _matches(want, value):
            self.transition(cmd_id, CommandState.CONFIRMED, f"read back {value!r}")

    def sweep(self, now: float | None = None) -> list[CommandRecord]:
        """Time out commands past their deadline; return them."""
        now = self._clock() if now is None else now
        out = []
        for rec in list(self._records.values()):
            if not rec.done and rec.command.deadline < now:
                self.transition(
                    rec.command.id, CommandState.TIMED_OUT, "no read-back before deadline"
                )
                out.append(rec)
        return out

    def records(self) -> list[CommandRecord]:
        """All records, oldest first."""
        return list(self._records.values())

    def _step(self, rec: CommandRecord, state: CommandState, reason: str) -> None:
        t = Transition(state, self._clock(), reason)
        rec.history.append(t)
        for fn in self._listeners:
            fn(rec, t)

    def _release(self, rec: CommandRecord) -> None:
        d = self.desired.get(rec.command.target)
        if d is not None and d[1] == rec.command.id:
            del self.desired[rec.command.target]

    def _trim(self) -> None:
        if len(self._records) <= self._keep:
            return
        for cid in list(self._records)[: len(self._records) - self._keep]:
            if self._records[cid].done:
                del self._records[cid]
