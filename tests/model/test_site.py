"""Site files: the demo loads; bad input names file, line and field; unknown keys are errors."""

from pathlib import Path

import pytest

from model.errors import SiteConfigError
from model.natures import NATURES
from model.site import load_site, parse_site, site_schema

DEMO = (Path(__file__).resolve().parents[2] / "tools" / "demo_site.yaml").read_text()


def _issues(text: str) -> list:
    with pytest.raises(SiteConfigError) as ei:
        parse_site(text, "bad.yaml")
    assert ei.value.issues, "an error must list its issues"
    return ei.value.issues


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_demo_site_loads_with_natures_and_plant_points(demo_site) -> None:
    specs = {s.ref: s for s in demo_site.point_specs()}
    n_nature_points = sum(len(NATURES[r.kind].points) for _, r in demo_site.resources())
    assert len(specs) == n_nature_points + 7  # plus the VPP's seven plant points
    bat = specs["VPP1.BAT01/DRCC1.WSpt.setMag.f"]
    assert (bat.min, bat.max, bat.access, bat.unit) == (-60, 60, "rw", "kW")
    assert "VPP1.PLANT/MMXU1.TotW.mag.f" in specs
    assert demo_site.vpps[0].aggregators[0].resources[0].mrid.endswith("0101")


def test_unknown_key_is_an_error_naming_line_and_field() -> None:
    text = DEMO.replace("    device_id: 1\n", "    device_id: 1\n    poll_rate: 3\n")
    (issue,) = _issues(text)
    assert issue.file == "bad.yaml"
    assert issue.line == _line_of(text, "poll_rate")
    assert issue.field == "drivers[1].poll_rate"
    assert "unknown key" in issue.message


def test_wrong_type_names_field() -> None:
    text = DEMO.replace("port: 2414", "port: twenty")
    (issue,) = _issues(text)
    assert issue.field == "drivers[0].port"
    assert issue.line == _line_of(text, "port: twenty")


def test_duplicate_point_and_resource() -> None:
    text = DEMO.replace("- id: PV02", "- id: PV01")
    msgs = [str(i) for i in _issues(text)]
    assert any("duplicate resource id 'PV01'" in m for m in msgs)
    assert any("duplicate point 'VPP1.PV01/MMXU1.TotW.mag.f'" in m for m in msgs)


def test_register_overlap_names_both_registers() -> None:
    # BAT02 power is int32 at 10..11; put its reactive power at 11.
    text = DEMO.replace(
        "table: input, address: 12, dtype: int32", "table: input, address: 11, dtype: int32"
    )
    (issue,) = _issues(text)
    assert issue.field == "drivers[1]"
    assert "overlaps" in issue.message and "input 11" in issue.message


def test_address_out_of_range() -> None:
    text = DEMO.replace(
        "table: input, address: 0, dtype: float32", "table: input, address: 65535, dtype: float32"
    )
    (issue,) = _issues(text)
    assert issue.field == "drivers[1].registers[0]"
    assert "beyond 65535" in issue.message
    text = DEMO.replace("{ioa: 1001,", "{ioa: 16777216,")
    (issue,) = _issues(text)
    assert issue.field == "drivers[0].points[0].ioa"
    assert issue.line == _line_of(text, "16777216")


def test_binding_to_unknown_or_read_only_point() -> None:
    text = DEMO.replace(
        "point: VPP1.PV01/MMXU1.TotVAr.mag.f}", "point: VPP1.PV09/MMXU1.TotVAr.mag.f}"
    )
    (issue,) = _issues(text)
    assert "not defined by any resource" in issue.message
    assert issue.line == _line_of(text, "PV09")
    text = DEMO.replace(
        "{ioa: 2001, type: C_SE_NC_1, point: VPP1.PV01/DRCC1.WSpt.setMag.f}",
        "{ioa: 2001, type: C_SE_NC_1, point: VPP1.PV01/MMXU1.TotW.mag.f}",
    )
    (issue,) = _issues(text)
    assert "read-only" in issue.message


def test_point_acquired_twice() -> None:
    text = DEMO.replace(
        "{ioa: 1002, type: M_ME_NC_1, point: VPP1.PV01/MMXU1.TotVAr.mag.f}",
        "{ioa: 1002, type: M_ME_NC_1, point: VPP1.PV01/MMXU1.TotW.mag.f}",
    )
    (issue,) = _issues(text)
    assert "acquired twice" in issue.message


def test_yaml_problems() -> None:
    (issue,) = _issues("site: {id: X\n")
    assert "not valid YAML" in issue.message and issue.line
    (issue,) = _issues("")
    assert "empty" in issue.message
    dup = DEMO.replace("  id: DEMO\n", "  id: DEMO\n  id: OTHER\n")
    assert any(i.message == "duplicate key" and i.field == "site.id" for i in _issues(dup))


def test_limits_are_checked() -> None:
    text = DEMO.replace(
        "limits: {p_min_kw: 0, p_max_kw: 60}", "limits: {p_min_kw: 70, p_max_kw: 60}"
    )
    (issue,) = _issues(text)
    assert "p_min_kw 70.0 is above p_max_kw 60.0" in issue.message


def test_load_site_missing_file(tmp_path) -> None:
    with pytest.raises(SiteConfigError, match="cannot read"):
        load_site(tmp_path / "nope.yaml")


def test_schema_describes_drivers() -> None:
    schema = site_schema()
    assert "drivers" in schema["properties"]
    assert schema["additionalProperties"] is False
