"""Simple DER physics for the simulators: they answer set-points the way real devices would.

PV follows a daily curve and a curtailment limit; a battery's SoC integrates its power and it
stops at its SoC bounds; an air-conditioning block follows its set-point inside its comfort band
(the room warms as cooling is cut and the block takes back control at the band's edge); a plain
controllable load follows its set-point. Generator sign convention: P > 0 delivers to the grid.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from model.natures import ResourceKind, Role
from model.resources import Resource

__all__ = ["DERModel", "daily_pv_fraction", "model_for"]

RUNNING = 1
STOPPED = 0


def daily_pv_fraction(t: float, day_length_s: float = 86400.0, offset_s: float = 0.0) -> float:
    """Clear-sky fraction of PV peak at time t: a sine from 06:00 to 18:00 of a (possibly short) day."""
    phase = ((t + offset_s) % day_length_s) / day_length_s  # 0 = midnight
    if phase < 0.25 or phase > 0.75:
        return 0.0
    return math.sin((phase - 0.25) * 2.0 * math.pi)


@dataclass
class DERModel:
    """One simulated resource: state per role, stepped forward in time."""

    resource: Resource
    day_length_s: float = 86400.0
    day_offset_s: float = 0.0
    noise: float = 0.0
    values: dict[Role, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lim = self.resource.limits
        k = self.resource.kind
        v = self.values
        v.setdefault(Role.P, 0.0)
        v.setdefault(Role.Q, 0.0)
        v.setdefault(Role.STATE, RUNNING)
        if k in (ResourceKind.PV, ResourceKind.WIND):
            v.setdefault(Role.P_SET, lim.p_max_kw)
        elif k == ResourceKind.STORAGE:
            v.setdefault(Role.P_SET, 0.0)
            v.setdefault(Role.Q_SET, 0.0)
            v.setdefault(Role.SOC, (lim.soc_min_pct + lim.soc_max_pct) / 2.0)
        elif k == ResourceKind.HVAC:
            v.setdefault(Role.P_SET, (lim.p_min_kw + lim.p_max_kw) / 2.0)
            lo = lim.comfort_min_c if lim.comfort_min_c is not None else 21.0
            hi = lim.comfort_max_c if lim.comfort_max_c is not None else 26.0
            v.setdefault(Role.TEMP, (lo + hi) / 2.0)
        elif k in (ResourceKind.LOAD, ResourceKind.EV_CHARGER, ResourceKind.CHP):
            v.setdefault(Role.P_SET, (lim.p_min_kw + lim.p_max_kw) / 2.0)
        self.step(0.0, 0.0)

    def set(self, role: Role, value: float) -> None:
        """Apply a set-point, clamped to the resource's limits."""
        lim = self.resource.limits
        if role == Role.P_SET:
            value = min(max(value, lim.p_min_kw), lim.p_max_kw)
        elif role == Role.Q_SET:
            value = min(max(value, lim.q_min_kvar), lim.q_max_kvar)
        self.values[role] = value

    def step(self, now: float, dt: float) -> None:
        """Advance the physics by dt seconds at wall time now."""
        lim = self.resource.limits
        k = self.resource.kind
        v = self.values
        jitter = (random.uniform(-1, 1) * self.noise) if self.noise else 0.0
        if k in (ResourceKind.PV, ResourceKind.WIND):
            avail = lim.p_max_kw * daily_pv_fraction(now, self.day_length_s, self.day_offset_s)
            v[Role.P] = max(0.0, min(avail * (1.0 + jitter), v[Role.P_SET]))
            v[Role.Q] = 0.0
        elif k == ResourceKind.STORAGE:
            target = v[Role.P_SET]
            if lim.ramp_kw_per_min and dt > 0:
                step = lim.ramp_kw_per_min / 60.0 * dt
                target = min(max(target, v[Role.P] - step), v[Role.P] + step)
            soc = v[Role.SOC]
            if soc <= lim.soc_min_pct and target > 0:
                target = 0.0
            if soc >= lim.soc_max_pct and target < 0:
                target = 0.0
            v[Role.P] = target
            v[Role.Q] = v[Role.Q_SET]
            cap = lim.energy_capacity_kwh or 1.0
            soc -= target * dt / 3600.0 / cap * 100.0
            v[Role.SOC] = min(max(soc, 0.0), 100.0)
        elif k == ResourceKind.HVAC:
            lo = lim.comfort_min_c if lim.comfort_min_c is not None else 21.0
            hi = lim.comfort_max_c if lim.comfort_max_c is not None else 26.0
            p = v[Role.P_SET]
            temp = v[Role.TEMP]
            # The block's own thermostat overrides the set-point at the comfort band's edges.
            if temp >= hi:
                p = lim.p_min_kw
            elif temp <= lo:
                p = lim.p_max_kw
            v[Role.P] = p * (1.0 + jitter)
            # Room drifts toward 32 degC, cooling (|P|) pulls it down: time constants in minutes.
            cooling = -p / max(abs(lim.p_min_kw), 1.0)
            v[Role.TEMP] = temp + dt * ((32.0 - temp) / 1800.0 - cooling * 12.0 / 1800.0)
            v[Role.Q] = v[Role.P] * 0.2
        elif k in (ResourceKind.LOAD, ResourceKind.EV_CHARGER, ResourceKind.CHP):
            v[Role.P] = v[Role.P_SET] * (1.0 + jitter)
            v[Role.Q] = v[Role.P] * 0.1


def model_for(resource: Resource, **kw: float) -> DERModel:
    """A physics model for a resource."""
    return DERModel(resource, **kw)  # type: ignore[arg-type]
