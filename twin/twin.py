"""The live process image: apply Sample batches, derive plant aggregates, publish change sets.

Theory of operation: points live in parallel lists indexed by an int (value, ts, quality, last
receive time) so that the per-sample hot path is a dict lookup, two compares and three stores, with
no object built per sample: an unchanged sample is absorbed, a changed one is itself the entry of
the change set (Samples are immutable). After a batch, aggregates of the VPPs it touched are
recomputed, pending commands are confirmed by read-back, and one ChangeSet goes to every
subscriber's bounded queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from model.command import Command
from model.errors import UnknownPointError
from model.points import PointSpec
from model.quality import GOOD, OLD_DATA, not_topical
from model.sample import Sample, Value
from model.site import SiteConfig
from twin.aggregates import PlantCalculator
from twin.commands import CommandBook
from twin.subscription import ChangeSet, Subscription

__all__ = ["Twin"]

log = logging.getLogger(__name__)

AGG_SOURCE = "twin.aggregate"


class Twin:
    """The VPP's live state."""

    def __init__(
        self,
        specs: Iterable[PointSpec] = (),
        *,
        refs: Iterable[str] = (),
        plants: Iterable[PlantCalculator] = (),
        queue_size: int = 1000,
        default_stale_after_s: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._mono = monotonic
        self.queue_size = queue_size
        self.specs: dict[str, PointSpec] = {}
        self._index: dict[str, int] = {}
        self._refs: list[str] = []
        self._values: list[Value | None] = []
        self._ts: list[float] = []
        self._quality: list[int] = []
        self._received: list[float] = []
        self._agg_flag = bytearray()
        self._stale: list[tuple[int, float]] = []
        for s in specs:
            self._add(s.ref)
            self.specs[s.ref] = s
            after = s.stale_after_s or default_stale_after_s
            if after and not (s.role or "").startswith("plant."):
                self._stale.append((self._index[s.ref], after))
        for r in refs:
            self._add(r)
        self.plants = list(plants)
        for p in self.plants:
            for ref in p.input_refs():
                if ref in self._index:
                    self._agg_flag[self._index[ref]] = 1
        self.commands = CommandBook(clock)
        self._subs: list[Subscription] = []
        self.seq = 0
        self.unknown_samples = 0
        self.applied = 0

    @classmethod
    def from_site(cls, site: SiteConfig) -> Twin:
        """A twin holding every point of a site, with one plant calculator per VPP."""
        return cls(
            site.point_specs(),
            plants=[PlantCalculator(v) for v in site.vpps],
            queue_size=site.twin.subscriber_queue,
            default_stale_after_s=site.twin.stale_after_s,
        )

    def _add(self, ref: str) -> None:
        if ref in self._index:
            raise ValueError(f"duplicate point {ref!r}")
        self._index[ref] = len(self._refs)
        self._refs.append(ref)
        self._values.append(None)
        self._ts.append(0.0)
        self._quality.append(GOOD)
        self._received.append(0.0)
        self._agg_flag.append(0)

    # --- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, ref: object) -> bool:
        return ref in self._index

    def refs(self, prefix: str = "") -> list[str]:
        """Point references, optionally only those starting with prefix."""
        if not prefix:
            return list(self._refs)
        return [r for r in self._refs if r.startswith(prefix)]

    def get(self, ref: str) -> Sample | None:
        """The current value of a point, None if it never had one; UnknownPointError if no such point."""
        i = self._index.get(ref)
        if i is None:
            raise UnknownPointError(ref)
        v = self._values[i]
        if v is None:
            return None
        return Sample(ref, v, self._ts[i], self._quality[i], "")

    def snapshot(self, prefix: str = "") -> list[Sample]:
        """Every point that has a value (optionally under a prefix)."""
        out = []
        for i, r in enumerate(self._refs):
            v = self._values[i]
            if v is not None and (not prefix or r.startswith(prefix)):
                out.append(Sample(r, v, self._ts[i], self._quality[i], ""))
        return out

    def read(self, refs: Iterable[str]) -> dict[str, tuple[Value | None, int]]:
        """(value, quality) of each known ref."""
        idx, vals, qs = self._index, self._values, self._quality
        return {r: (vals[i], qs[i]) for r in refs if (i := idx.get(r)) is not None}

    # --- subscribing -----------------------------------------------------------------------

    def subscribe(self, name: str, maxsize: int | None = None) -> Subscription:
        """A bounded queue of every future change set."""
        sub = Subscription(name, maxsize or self.queue_size)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Stop delivering to sub."""
        sub.close()
        if sub in self._subs:
            self._subs.remove(sub)

    def subscriber_stats(self) -> list[dict[str, Any]]:
        """Queue depth, delivered and dropped count per subscriber."""
        return [
            {"name": s.name, "queued": len(s), "delivered": s.delivered, "dropped": s.dropped}
            for s in self._subs
        ]

    # --- writing ---------------------------------------------------------------------------

    def apply(self, samples: Iterable[Sample]) -> ChangeSet | None:
        """Apply a batch; publish and return the change set (None if nothing changed)."""
        idx = self._index
        vals, tss, qs, rec, agg = (
            self._values,
            self._ts,
            self._quality,
            self._received,
            self._agg_flag,
        )
        now = self._mono()
        changed: list[Sample] = []
        push = changed.append
        unknown = 0
        n = 0
        agg_dirty = False
        for s in samples:
            n += 1
            i = idx.get(s[0])
            if i is None:
                unknown += 1
                continue
            rec[i] = now
            tss[i] = s[2]
            if vals[i] != s[1] or qs[i] != s[3] or type(vals[i]) is not type(s[1]):
                vals[i] = s[1]
                qs[i] = s[3]
                push(s)
                if agg[i]:
                    agg_dirty = True
        self.applied += n
        if unknown:
            self.unknown_samples += unknown
            log.debug("%d samples for unknown points ignored", unknown)
        book = self.commands
        if book.desired:
            # Changed values only: a read-back equal to the value already held is confirmed by
            # the command path when the driver reports SENT (CommandPath._execute).
            for s in changed:
                if s[0] in book.desired and s[3] == GOOD:
                    book.on_reported(s[0], s[1])
        if agg_dirty:
            changed.extend(self._aggregate())
        return self._publish(changed)

    def mark_not_topical(self, refs: Iterable[str], source: str = "") -> ChangeSet | None:
        """Flag points as not topical (link down, stale), keeping their last values."""
        idx, vals, qs, tss = self._index, self._values, self._quality, self._ts
        changed: list[Sample] = []
        agg_dirty = False
        for r in refs:
            i = idx.get(r)
            if i is None or vals[i] is None or qs[i] & OLD_DATA:
                continue
            qs[i] = not_topical(qs[i])
            changed.append(Sample(r, vals[i], tss[i], qs[i], source))  # type: ignore[arg-type]
            agg_dirty = agg_dirty or bool(self._agg_flag[i])
        if agg_dirty:
            changed.extend(self._aggregate())
        return self._publish(changed)

    def check_stale(self) -> ChangeSet | None:
        """Mark points not updated within their stale_after_s as not topical."""
        now = self._mono()
        rec, vals, qs = self._received, self._values, self._quality
        refs = [
            self._refs[i]
            for i, after in self._stale
            if vals[i] is not None and not qs[i] & OLD_DATA and now - rec[i] > after
        ]
        return self.mark_not_topical(refs, "twin.stale") if refs else None

    def tick(self) -> None:
        """Periodic housekeeping: staleness and command deadlines."""
        self.check_stale()
        self.commands.sweep()

    def accept_command(self, cmd: Command) -> bool:
        """Record a checked command as desired state; False if its id was already known."""
        if cmd.target not in self._index:
            raise UnknownPointError(cmd.target)
        _, new = self.commands.accept(cmd)
        return new

    def _aggregate(self) -> list[Sample]:
        ts = self._clock()
        out: list[Sample] = []
        idx, vals, qs, tss = self._index, self._values, self._quality, self._ts
        for plant in self.plants:
            values = plant.compute(self.read(plant.input_refs()))
            for ref, (v, q) in values.items():
                i = idx.get(ref)
                if i is None:
                    continue
                if vals[i] != v or qs[i] != q:
                    vals[i], qs[i], tss[i] = v, q, ts
                    out.append(Sample(ref, v, ts, q, AGG_SOURCE))
        return out

    def _publish(self, changed: list[Sample]) -> ChangeSet | None:
        if not changed:
            return None
        self.seq += 1
        cs = ChangeSet(self.seq, self._clock(), tuple(changed))
        for sub in self._subs:
            sub.put(cs)
        return cs
