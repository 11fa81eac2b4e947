"""The proportional split of a VPP target over its resources (control.dispatch)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control.dispatch import capacities, input_refs, split_target
from model.natures import ResourceKind, Role
from model.quality import GOOD, OLD_DATA, Validity, with_validity
from model.resources import Limits, Resource, VPPConfig
from model.site import SiteConfig

DEADLINE = time.time() + 3600


def _vpp(*resources: Resource) -> VPPConfig:
    return VPPConfig(id="V", resources=list(resources))


def _res(rid: str, kind: str, **limits: float) -> Resource:
    return Resource(id=rid, mrid=f"mrid-{rid}", kind=ResourceKind(kind), limits=Limits(**limits))


def _read(vpp: VPPConfig, values: dict[tuple[str, Role], float], q: int = GOOD):
    out = {}
    for r in vpp.all_resources():
        for role in Role:
            ref = r.ref(vpp.id, role)
            if ref and (r.id, role) in values:
                out[ref] = (values[(r.id, role)], q)
    return out


def test_gap_is_shared_in_proportion_to_capacity() -> None:
    vpp = _vpp(
        _res("B1", "storage", p_min_kw=-50, p_max_kw=50),
        _res("B2", "storage", p_min_kw=-10, p_max_kw=30),
        _res("M", "meter"),
    )
    read = _read(vpp, {("B1", Role.P): 10.0, ("B2", Role.P): 10.0, ("M", Role.P): 999.0})
    s = split_target(vpp, read, 40.0, origin="t", deadline=DEADLINE, id_prefix="x")
    # up: B1 40, B2 20 -> the 20 kW gap goes 2:1.
    assert s.setpoints == pytest.approx(
        {"V.B1/DRCC1.WSpt.setMag.f": 10 + 40 / 3 * 1, "V.B2/DRCC1.WSpt.setMag.f": 10 + 20 / 3}
    )
    assert s.total == 20.0 and s.feasible and s.expected == pytest.approx(40.0)
    assert [c.id for c in s.commands] == ["x.B1", "x.B2"]
    assert all(c.origin == "t" and c.deadline == DEADLINE for c in s.commands)
    # Downward: capacity B1 60, B2 20.
    s = split_target(vpp, read, 0.0, deadline=DEADLINE)
    assert s.setpoints == pytest.approx(
        {"V.B1/DRCC1.WSpt.setMag.f": 10 - 15.0, "V.B2/DRCC1.WSpt.setMag.f": 10 - 5.0}
    )


def test_beyond_capacity_every_resource_goes_to_its_limit() -> None:
    vpp = _vpp(
        _res("B1", "storage", p_min_kw=-50, p_max_kw=50),
        _res("L", "load", p_min_kw=-40, p_max_kw=-10),
    )
    read = _read(vpp, {("B1", Role.P): 0.0, ("L", Role.P): -30.0})
    s = split_target(vpp, read, 500.0, deadline=DEADLINE)
    assert not s.feasible
    assert s.expected == pytest.approx(50.0 - 10.0)
    assert s.setpoints == {"V.B1/DRCC1.WSpt.setMag.f": 50.0, "V.L/DRCC1.WSpt.setMag.f": -10.0}


def test_state_limits_unknown_values_and_uncontrollable_resources() -> None:
    vpp = _vpp(
        _res("B", "storage", p_min_kw=-50, p_max_kw=50, soc_min_pct=10, soc_max_pct=90),
        _res("H", "hvac", p_min_kw=-80, p_max_kw=-5, comfort_min_c=21, comfort_max_c=26),
        _res("PV", "pv", p_min_kw=0, p_max_kw=100),
        _res("X", "load", p_min_kw=-20, p_max_kw=0),
    )
    values = {
        ("B", Role.P): 0.0,
        ("B", Role.SOC): 10.0,  # empty: cannot discharge
        ("H", Role.P): -40.0,
        ("H", Role.TEMP): 26.0,  # at the top of its band: cannot cut consumption
        ("PV", Role.P): 60.0,
        ("PV", Role.P_SET): 100.0,  # not curtailed: no upward capacity
        ("X", Role.P): -10.0,
    }
    caps = {c.resource.id: c for c in capacities(vpp, _read(vpp, values))}
    assert caps["B"].up == 0.0 and caps["B"].down == 50.0
    assert caps["H"].up == 0.0 and caps["H"].down == 40.0
    assert caps["PV"].up == 0.0 and caps["PV"].down == 60.0
    # Curtailed PV (P at its limit) can go back up to p_max.
    values[("PV", Role.P_SET)] = 60.0
    assert {c.resource.id: c for c in capacities(vpp, _read(vpp, values))}["PV"].up == 40.0
    # A resource the command path cannot write counts at its value, with no capacity.
    caps2 = capacities(vpp, _read(vpp, values), controllable={"V.B/DRCC1.WSpt.setMag.f"})
    assert {c.resource.id for c in caps2 if c.setpoint_ref} == {"B"}
    # An invalid power leaves the resource out altogether.
    read = _read(vpp, values)
    read["V.X/MMXU1.TotW.mag.f"] = (-10.0, with_validity(GOOD, Validity.INVALID))
    assert "X" not in {c.resource.id for c in capacities(vpp, read)}
    # Questionable (old) data still counts.
    read["V.X/MMXU1.TotW.mag.f"] = (-10.0, with_validity(OLD_DATA, Validity.QUESTIONABLE))
    assert "X" in {c.resource.id for c in capacities(vpp, read)}


def test_reactive_split_uses_reactive_setpoints_only(demo_site: SiteConfig) -> None:
    vpp = demo_site.vpps[0]
    values = {(r.id, Role.Q): 0.0 for r in vpp.all_resources()}
    values |= {(r.id, Role.P): 0.0 for r in vpp.all_resources()}
    s = split_target(vpp, _read(vpp, values), 20.0, kind="q", deadline=DEADLINE)
    # Only the two batteries have a reactive set-point: limits 30 and 0 -> all to BAT01.
    assert s.setpoints == {"VPP1.BAT01/DRCC1.VArSpt.setMag.f": 20.0}
    assert "VPP1.BAT01/ZBAT1.SoC.mag.f" in input_refs(vpp)


_limits = st.tuples(st.floats(-100, 0, allow_nan=False), st.floats(0.1, 100, allow_nan=False)).map(
    lambda t: (t[0], t[0] + t[1])
)


@settings(max_examples=200, deadline=None)
@given(
    res=st.lists(
        st.tuples(_limits, st.floats(0, 1), st.sampled_from(["storage", "load", "chp"])),
        min_size=1,
        max_size=8,
    ),
    where=st.floats(0, 1),
)
def test_split_sums_to_target_within_limits_and_in_proportion(res, where) -> None:
    resources = [
        _res(f"R{i}", kind, p_min_kw=lo, p_max_kw=hi) for i, ((lo, hi), _, kind) in enumerate(res)
    ]
    vpp = _vpp(*resources)
    values = {(f"R{i}", Role.P): lo + f * (hi - lo) for i, ((lo, hi), f, _) in enumerate(res)}
    read = _read(vpp, values)
    lo_total = sum(lo for (lo, _), _, _ in res)
    hi_total = sum(hi for (_, hi), _, _ in res)
    target = lo_total + where * (hi_total - lo_total)
    s = split_target(vpp, read, target, deadline=DEADLINE)
    new = {f"V.R{i}/MMXU1.TotW.mag.f": values[(f"R{i}", Role.P)] for i in range(len(res))}
    for c in s.commands:
        new[c.target.replace("DRCC1.WSpt.setMag.f", "MMXU1.TotW.mag.f")] = float(c.value)
    # Feasible by construction: the split reaches the target...
    assert s.feasible
    assert sum(new.values()) == pytest.approx(target, abs=1e-6 * max(1, abs(target)))
    # ... every set-point stays within its resource's limits ...
    by_ref = {f"V.R{i}/DRCC1.WSpt.setMag.f": lim for i, (lim, _, _) in enumerate(res)}
    for c in s.commands:
        lo, hi = by_ref[c.target]
        assert lo - 1e-9 <= float(c.value) <= hi + 1e-9
    # ... and each share is the same fraction of that resource's capacity in that direction.
    caps = {c.setpoint_ref: c for c in capacities(vpp, read)}
    fractions = []
    for c in s.commands:
        cap = caps[c.target]
        room = cap.up if target > s.total else cap.down
        fractions.append(abs(float(c.value) - cap.value) / room)
    if fractions:
        assert max(fractions) - min(fractions) < 1e-6
