"""Which simulated DER and role stands behind each point a driver names in the site file."""

from __future__ import annotations

from dataclasses import dataclass

from model.natures import NATURES, Role
from model.site import SiteConfig
from tools.sim.physics import DERModel, model_for

__all__ = ["SimBinding", "bind_driver"]


@dataclass
class SimBinding:
    """The DER models behind one driver's points, and each point's (model, role)."""

    models: list[DERModel]
    by_point: dict[str, tuple[DERModel, Role]]

    def step(self, now: float, dt: float) -> None:
        """Advance every model."""
        for m in self.models:
            m.step(now, dt)

    def read(self, ref: str) -> float:
        """Current value of a point."""
        m, role = self.by_point[ref]
        return m.values.get(role, 0.0)

    def write(self, ref: str, value: float) -> None:
        """Apply a set-point to a point's model."""
        m, role = self.by_point[ref]
        m.set(role, value)


def bind_driver(
    site: SiteConfig, driver_id: str, day_length_s: float = 86400.0, noise: float = 0.0
) -> SimBinding:
    """Build DER models for every resource whose points the driver `driver_id` carries."""
    drivers = {d.id: d for d in site.drivers}
    if driver_id not in drivers:
        raise KeyError(f"no driver {driver_id!r} in the site file (have: {', '.join(drivers)})")
    d = drivers[driver_id]
    refs = {b[2] for b in d.bindings()}
    models: list[DERModel] = []
    by_point: dict[str, tuple[DERModel, Role]] = {}
    for i, (vpp_id, res) in enumerate(site.resources()):
        ld = f"{vpp_id}.{res.id}/"
        mine = [t for t in NATURES[res.kind].points if ld + t.path in refs]
        if not mine:
            continue
        # Spread PV sites over the day a little so two PV plants do not move in lockstep.
        m = model_for(res, day_length_s=day_length_s, day_offset_s=i * 7.0, noise=noise)
        models.append(m)
        for t in mine:
            by_point[ld + t.path] = (m, t.role)
    return SimBinding(models, by_point)
