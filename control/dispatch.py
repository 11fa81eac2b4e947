"""Splitting a VPP's active or reactive target over its resources, proportional to capacity.

Pure: from the VPP's configuration, a read of the twin and a target to Commands; no I/O. This is
the first dispatch rule (the control issue replaces it with optimisation): the gap between the
target and the VPP's present total is shared among the controllable resources in proportion to
the capacity each has in that direction, and each resource gets a set-point of its present
value plus its share, within its limits.

Capacity of one resource follows the rules of twin.aggregates (so that the plant's up/down
points and this split agree), generator sign convention (P > 0 delivers):

- a resource whose power is unknown or invalid is left out (neither total nor capacity);
- controllable resources (with a set-point the command path can write): up = max(0, p_max - p),
  down = max(0, p - p_min);
- storage at or below its minimum SoC cannot discharge (p_max <= 0), at or above its maximum it
  cannot charge (p_min >= 0);
- HVAC at the top of its comfort band cannot cut consumption further (no up), at the bottom it
  cannot add consumption (no down);
- PV and wind can go up only while curtailed (P at its limit), up to p_max; down to p_min;
- meters and resources without a writable set-point count at their present value, with no
  capacity. Reactive power: only resources with a reactive set-point move, within
  [q_min, q_max].
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from model.command import Command, new_command_id
from model.natures import ResourceKind, Role
from model.quality import VALIDITY_MASK, Validity
from model.resources import Resource, VPPConfig
from model.sample import Value

__all__ = ["Capacity", "Split", "capacities", "input_refs", "split_target"]

Kind = Literal["p", "q"]
Read = Mapping[str, tuple[Value | None, int]]


@dataclass(frozen=True, slots=True)
class Capacity:
    """One resource's present value and how far it can move each way."""

    resource: Resource
    value: float
    up: float
    down: float
    setpoint_ref: str | None  # None: not controllable here (counts at its present value)
    lo: float  # static limits of the set-point
    hi: float


@dataclass(frozen=True, slots=True)
class Split:
    """The commands that move a VPP toward a target, and what they should achieve."""

    target: float
    total: float  # present total of the resources with a known value
    expected: float  # total once the commands took effect
    capacity: float  # capacity in the direction of the target
    commands: list[Command] = field(default_factory=list)

    @property
    def feasible(self) -> bool:
        """True when the commands reach the target (within rounding)."""
        return abs(self.expected - self.target) <= 1e-6 * max(1.0, abs(self.target))

    @property
    def setpoints(self) -> dict[str, float]:
        """New set-point per point reference."""
        return {c.target: float(c.value) for c in self.commands}


def input_refs(vpp: VPPConfig) -> set[str]:
    """Every twin point the split of this VPP reads."""
    out: set[str] = set()
    for r in vpp.all_resources():
        for role in (Role.P, Role.Q, Role.SOC, Role.P_SET, Role.Q_SET, Role.TEMP):
            ref = r.ref(vpp.id, role)
            if ref:
                out.add(ref)
    return out


def _num(read: Read, ref: str | None) -> float | None:
    if ref is None:
        return None
    v, q = read.get(ref, (None, 0))
    if v is None or (q & VALIDITY_MASK) == Validity.INVALID:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def capacities(
    vpp: VPPConfig, read: Read, kind: Kind = "p", controllable: Collection[str] | None = None
) -> list[Capacity]:
    """Present value and up/down capacity of each resource with a known value."""
    out: list[Capacity] = []
    for r in vpp.all_resources():
        if r.kind == ResourceKind.METER:
            continue
        lim = r.limits
        if kind == "p":
            value = _num(read, r.ref(vpp.id, Role.P))
            sp = r.ref(vpp.id, Role.P_SET)
            lo, hi = lim.p_min_kw, lim.p_max_kw
        else:
            value = _num(read, r.ref(vpp.id, Role.Q))
            sp = r.ref(vpp.id, Role.Q_SET)
            lo, hi = lim.q_min_kvar, lim.q_max_kvar
        if value is None:
            continue
        if sp is not None and controllable is not None and sp not in controllable:
            sp = None
        if sp is None:
            out.append(Capacity(r, value, 0.0, 0.0, None, lo, hi))
            continue
        up_hi, dn_lo = hi, lo
        if kind == "p":
            soc = _num(read, r.ref(vpp.id, Role.SOC))
            if r.kind == ResourceKind.STORAGE and soc is not None:
                if soc <= lim.soc_min_pct:
                    up_hi = min(up_hi, 0.0)
                if soc >= lim.soc_max_pct:
                    dn_lo = max(dn_lo, 0.0)
            temp = _num(read, r.ref(vpp.id, Role.TEMP))
            if r.kind == ResourceKind.HVAC and temp is not None:
                if lim.comfort_max_c is not None and temp >= lim.comfort_max_c:
                    up_hi = value
                if lim.comfort_min_c is not None and temp <= lim.comfort_min_c:
                    dn_lo = value
            if r.kind in (ResourceKind.PV, ResourceKind.WIND):
                pset = _num(read, sp)
                curtailed = pset is not None and pset < hi and value >= pset - 0.01 * max(hi, 1.0)
                if not curtailed:
                    up_hi = value
        up = max(0.0, up_hi - value)
        down = max(0.0, value - dn_lo)
        out.append(Capacity(r, value, up, down, sp, lo, hi))
    return out


def split_target(
    vpp: VPPConfig,
    read: Read,
    target: float,
    *,
    kind: Kind = "p",
    origin: str = "dispatch",
    deadline: float,
    id_prefix: str | None = None,
    controllable: Collection[str] | None = None,
    min_step: float = 1e-6,
) -> Split:
    """Commands moving the VPP's total P (or Q) to `target`, shared in proportion to capacity.

    When the target is beyond the capacity, every resource goes to its limit in that direction
    (the split is then not feasible and `expected` says where the VPP ends). Resources whose
    share is below `min_step` get no command. Command ids are `<id_prefix>.<resource id>` when
    id_prefix is given (a repeated order then repeats its ids), fresh ids otherwise.
    """
    caps = capacities(vpp, read, kind, controllable)
    total = sum(c.value for c in caps)
    delta = target - total
    capacity = sum(c.up for c in caps) if delta > 0 else sum(c.down for c in caps)
    take = min(abs(delta), capacity)
    commands: list[Command] = []
    moved = 0.0
    if take > 0 and capacity > 0:
        sign = 1.0 if delta > 0 else -1.0
        for c in caps:
            room = c.up if delta > 0 else c.down
            if c.setpoint_ref is None or room <= 0:
                continue
            share = sign * take * room / capacity
            if abs(share) < min_step:
                continue
            new = min(max(c.value + share, c.lo), c.hi)
            moved += new - c.value
            cid = f"{id_prefix}.{c.resource.id}" if id_prefix else new_command_id()
            commands.append(Command(c.setpoint_ref, new, origin, id=cid, deadline=deadline))
    return Split(target, total, total + moved, capacity, commands)
