"""The one command path: policy check, desired state in the twin, execution by the owning driver.

Every write - REST, IEC 104, OPC UA, MMS, a DR event, a market award - enters through
CommandPath.submit(). The driver reports SELECTED/SENT; read-back in the twin confirms; a driver
error fails it; the deadline times it out. A repeated id returns the existing record and is never
executed twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from gateway.errors import CommandRejected, DriverError
from gateway.south.base import SouthDriver
from model.command import Command, CommandState
from security.policy import PolicyViolation, check_command
from twin.commands import CommandRecord
from twin.errors import CommandConflict
from twin.twin import Twin

__all__ = ["CommandPath"]

log = logging.getLogger(__name__)


class CommandPath:
    """Routes checked commands to the south driver that owns the target point."""

    def __init__(self, twin: Twin, drivers: Iterable[SouthDriver]) -> None:
        self.twin = twin
        self._owner: dict[str, SouthDriver] = {}
        for d in drivers:
            for p in d.command_points():
                self._owner[p] = d
        self._tasks: set[asyncio.Task[None]] = set()

    def owner(self, point: str) -> SouthDriver | None:
        """The driver that executes commands for point, if any."""
        return self._owner.get(point)

    def check(self, cmd: Command) -> SouthDriver:
        """Raise CommandRejected unless cmd passes policy and has a driver; return the driver."""
        try:
            check_command(cmd, self.twin.specs.get(cmd.target))
        except PolicyViolation as e:
            raise CommandRejected(str(e), e.code) from e
        driver = self._owner.get(cmd.target)
        if driver is None:
            raise CommandRejected(f"no driver can write point {cmd.target!r}", "no_route")
        return driver

    async def submit(self, cmd: Command) -> CommandRecord:
        """Check, record and start executing cmd; return its record (existing one for a known id)."""
        if cmd.id in self.twin.commands:  # a repeat: the existing record, never run again
            try:
                rec, _ = self.twin.commands.accept(cmd)
            except CommandConflict as e:
                raise CommandRejected(str(e), "conflict") from e
            return rec
        driver = self.check(cmd)
        try:
            new = self.twin.accept_command(cmd)
        except CommandConflict as e:
            raise CommandRejected(str(e), "conflict") from e
        rec = self.twin.commands.get(cmd.id)
        if new:
            task = asyncio.create_task(self._execute(cmd, driver), name=f"command-{cmd.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return rec

    async def _execute(self, cmd: Command, driver: SouthDriver) -> None:
        book = self.twin.commands

        def report(state: CommandState, reason: str = "") -> None:
            book.transition(cmd.id, state, reason)

        budget = max(0.05, cmd.deadline - time.time())
        try:
            await asyncio.wait_for(driver.execute(cmd, report), budget)
        except TimeoutError:
            book.transition(cmd.id, CommandState.TIMED_OUT, f"{driver.id}: no confirmation in time")
        except DriverError as e:
            book.transition(cmd.id, CommandState.FAILED, f"{driver.id}: {e}")
        except asyncio.CancelledError:
            book.transition(cmd.id, CommandState.UNKNOWN, "gateway stopped while executing")
            raise
        except Exception as e:  # a driver bug must not kill the command path
            log.exception("driver %s failed executing %s", driver.id, cmd.id)
            book.transition(cmd.id, CommandState.FAILED, f"{driver.id}: internal error: {e!r}")
        else:
            book.transition(cmd.id, CommandState.SENT, f"written by {driver.id}")
            # The value may already be there (read-back raced the write, or it was unchanged).
            cur = self.twin.get(cmd.target)
            if cur is not None and cur.quality == 0:
                book.on_reported(cmd.target, cur.value)

    async def close(self) -> None:
        """Cancel commands still executing (they end UNKNOWN)."""
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
