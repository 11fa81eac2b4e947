"""Each VPP as one plant: total P and Q, available up/down capacity and energy, from limits and state.

Capacity rules (generator sign convention, P > 0 delivers):
- controllable resources give up = max(0, p_max_eff - p) and down = max(0, p - p_min_eff);
- storage: at or below its minimum SoC it cannot discharge (p_max_eff <= 0), at or above its
  maximum it cannot charge (p_min_eff >= 0); energy up/down from SoC and capacity;
- HVAC with a comfort band: at the band's top it cannot cut consumption further (no up), at its
  bottom it cannot add consumption (no down);
- PV and wind have upward capacity only while curtailed (P at its limit), up to p_max;
- meters count toward nothing; a resource whose P is not good is left out and makes the
  aggregate questionable.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.natures import ResourceKind, Role
from model.quality import GOOD, OLD_DATA, VALIDITY_MASK, Validity, with_validity
from model.resources import Resource, VPPConfig, plant_ref
from model.sample import Value

__all__ = ["PlantCalculator", "ResourceInputs"]


@dataclass(frozen=True, slots=True)
class ResourceInputs:
    """Where one resource's state lives in the twin."""

    resource: Resource
    p: str | None
    q: str | None
    soc: str | None
    p_set: str | None
    temp: str | None


class PlantCalculator:
    """Computes one VPP's aggregate points from the twin's current values."""

    def __init__(self, vpp: VPPConfig) -> None:
        self.vpp = vpp
        self.inputs = [
            ResourceInputs(
                r,
                r.ref(vpp.id, Role.P),
                r.ref(vpp.id, Role.Q),
                r.ref(vpp.id, Role.SOC),
                r.ref(vpp.id, Role.P_SET),
                r.ref(vpp.id, Role.TEMP),
            )
            for r in vpp.all_resources()
        ]
        self.refs = {key: plant_ref(vpp.id, key) for key in
                     ("p", "q", "up_w", "down_w", "up_wh", "down_wh", "online")}  # fmt: skip

    def input_refs(self) -> set[str]:
        """Points whose change requires a recomputation."""
        out: set[str] = set()
        for i in self.inputs:
            out.update(x for x in (i.p, i.q, i.soc, i.p_set, i.temp) if x)
        return out

    def compute(self, read: dict[str, tuple[Value | None, int]]) -> dict[str, tuple[float, int]]:
        """Aggregate values and quality from `read[ref] = (value, quality)`."""
        p_tot = q_tot = up = down = up_wh = down_wh = 0.0
        online = 0
        degraded = False
        stale = False
        for inp in self.inputs:
            r = inp.resource
            if r.kind == ResourceKind.METER:
                continue
            pv, pq = read.get(inp.p, (None, GOOD)) if inp.p else (None, GOOD)
            if pv is None or (pq & VALIDITY_MASK) == Validity.INVALID:
                degraded = True
                continue
            if pq != GOOD:
                degraded = True
                stale = stale or bool(pq & OLD_DATA)
            p = float(pv)
            online += 1
            p_tot += p
            if inp.q:
                qv, _ = read.get(inp.q, (None, GOOD))
                if qv is not None:
                    q_tot += float(qv)
            lim = r.limits
            pmax, pmin = lim.p_max_kw, lim.p_min_kw
            soc = _num(read, inp.soc)
            if r.kind == ResourceKind.STORAGE and soc is not None:
                if soc <= lim.soc_min_pct:
                    pmax = min(pmax, 0.0)
                if soc >= lim.soc_max_pct:
                    pmin = max(pmin, 0.0)
                if lim.energy_capacity_kwh:
                    cap = lim.energy_capacity_kwh
                    up_wh += max(0.0, soc - lim.soc_min_pct) / 100.0 * cap
                    down_wh += max(0.0, lim.soc_max_pct - soc) / 100.0 * cap
            temp = _num(read, inp.temp)
            if r.kind == ResourceKind.HVAC and temp is not None:
                if lim.comfort_max_c is not None and temp >= lim.comfort_max_c:
                    pmax = p
                if lim.comfort_min_c is not None and temp <= lim.comfort_min_c:
                    pmin = p
            if r.kind in (ResourceKind.PV, ResourceKind.WIND):
                pset = _num(read, inp.p_set)
                curtailed = pset is not None and pset < pmax and p >= pset - 0.01 * max(pmax, 1.0)
                up += max(0.0, pmax - p) if curtailed else 0.0
                down += max(0.0, p - pmin)
            elif inp.p_set is not None:
                up += max(0.0, pmax - p)
                down += max(0.0, p - pmin)
        q = GOOD
        if degraded:
            q = with_validity(q, Validity.QUESTIONABLE)
            if stale:
                q |= OLD_DATA
        refs = self.refs
        return {
            refs["p"]: (p_tot, q),
            refs["q"]: (q_tot, q),
            refs["up_w"]: (up, q),
            refs["down_w"]: (down, q),
            refs["up_wh"]: (up_wh, q),
            refs["down_wh"]: (down_wh, q),
            refs["online"]: (online, GOOD),
        }


def _num(read: dict[str, tuple[Value | None, int]], ref: str | None) -> float | None:
    if ref is None:
        return None
    v, q = read.get(ref, (None, GOOD))
    if v is None or (q & VALIDITY_MASK) == Validity.INVALID:
        return None
    return float(v)
