"""Command policy: every refusal names its reason."""

import time

import pytest

from model.command import Command
from security.policy import PolicyViolation, check_command


@pytest.fixture
def specs(demo_site):
    return {s.ref: s for s in demo_site.point_specs()}


@pytest.mark.parametrize(
    ("target", "value", "code"),
    [
        ("VPP1.BAT01/DRCC1.WSpt.setMag.f", 61.0, "out_of_limits"),
        ("VPP1.BAT01/DRCC1.WSpt.setMag.f", -60.5, "out_of_limits"),
        ("VPP1.BAT01/DRCC1.WSpt.setMag.f", float("nan"), "bad_value"),
        ("VPP1.BAT01/DRCC1.WSpt.setMag.f", True, "bad_type"),
        ("VPP1.BAT01/MMXU1.TotW.mag.f", 1.0, "read_only"),
        ("VPP1.BAT99/DRCC1.WSpt.setMag.f", 1.0, "unknown_point"),
    ],
)
def test_refusals(specs, target, value, code) -> None:
    with pytest.raises(PolicyViolation) as ei:
        check_command(Command(target, value, "test"), specs.get(target))
    assert ei.value.code == code
    assert target in str(ei.value) or code in ("bad_value",)


def test_expired_and_accepted(specs) -> None:
    ref = "VPP1.BAT01/DRCC1.WSpt.setMag.f"
    with pytest.raises(PolicyViolation, match="deadline"):
        check_command(Command(ref, 1.0, "t", deadline=time.time() - 1), specs[ref])
    check_command(Command(ref, -60.0, "t"), specs[ref])  # at the limit is fine
