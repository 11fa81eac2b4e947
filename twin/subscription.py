"""Change sets and bounded subscriber queues: a slow subscriber drops (and counts), never blocks."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from model.sample import Sample

__all__ = ["ChangeSet", "Subscription"]


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """What changed in one twin update; seq increases by one per change set."""

    seq: int
    ts: float
    changes: tuple[Sample, ...]


class Subscription:
    """A bounded queue of change sets for one subscriber.

    When full, the oldest change set is dropped and counted: acquisition never waits for a
    subscriber. A gap in `seq` tells the subscriber it missed changes and should re-read a snapshot.
    """

    def __init__(self, name: str, maxsize: int) -> None:
        self.name = name
        self.maxsize = maxsize
        self.dropped = 0
        self.delivered = 0
        self._q: deque[ChangeSet] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    def __len__(self) -> int:
        return len(self._q)

    def put(self, cs: ChangeSet) -> None:
        """Enqueue, dropping the oldest when full. Call from the twin's event-loop thread."""
        if self.closed:
            return
        q = self._q
        if len(q) >= self.maxsize:
            q.popleft()
            self.dropped += 1
        q.append(cs)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def drain(self) -> list[ChangeSet]:
        """Take every queued change set without waiting."""
        out = list(self._q)
        self._q.clear()
        self.delivered += len(out)
        return out

    async def get(self, timeout: float | None = None) -> ChangeSet | None:
        """Next change set; None on timeout or when closed and empty."""
        while not self._q:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        self.delivered += 1
        return self._q.popleft()

    def close(self) -> None:
        """Stop accepting change sets and wake a waiting reader."""
        self.closed = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
