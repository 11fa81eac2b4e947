"""What every south driver is: samples out through a sink, commands in through execute()."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from model.command import Command, CommandState
from model.sample import Sample

__all__ = ["Report", "SampleSink", "SouthDriver"]

# report(state, reason): a driver tells the command path SELECTED / SENT as they happen.
Report = Callable[[CommandState, str], None]


class SampleSink(Protocol):
    """Where a driver puts what it acquired (the twin, through the runtime). Loop thread only."""

    def apply(self, samples: list[Sample]) -> object:
        """Take a batch of samples."""

    def mark_not_topical(self, refs: Iterable[str], source: str = "") -> object:
        """Flag points whose source is unreachable; their last values stay."""


class SouthDriver(abc.ABC):
    """One connection to one field device or outstation.

    A driver never calls control or north code: it turns frames into Samples for its sink and
    executes the Commands it is given. It reconnects by itself; while the link is down its points
    are not topical, and after reconnect they are refreshed (interrogation or a full poll).
    """

    protocol: str = ""

    def __init__(self, driver_id: str, sink: SampleSink) -> None:
        self.id = driver_id
        self.sink = sink

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin connecting and acquiring; returns at once (connection proceeds in the background)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Disconnect and release everything; idempotent."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """True while the device link is up."""

    @abc.abstractmethod
    def monitored_points(self) -> set[str]:
        """Model points this driver acquires."""

    @abc.abstractmethod
    def command_points(self) -> set[str]:
        """Model points this driver can write."""

    @abc.abstractmethod
    async def execute(self, cmd: Command, report: Report) -> None:
        """Send cmd to the device; report SELECTED/SENT; raise DriverError subclasses on failure."""

    def stats(self) -> dict[str, Any]:
        """Counters for status output (frames, samples, reconnects, errors)."""
        return {"id": self.id, "protocol": self.protocol, "connected": self.connected}
