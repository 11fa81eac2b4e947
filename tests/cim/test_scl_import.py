"""IEC 61850-6 SCL import: the public libiec61850 example files, our own DER controllers, bad input.

Counts are checked against an independent count made here with lxml; errors must name file,
line and element; an import that fails writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from cim.scl_errors import (
    SclImportError,
    SclMappingError,
    SclSchemaError,
    SclSyntaxError,
    SclTemplateError,
)
from cim.scl_import import import_scl, parse_map, parse_scl
from model.drivers_iec61850 import IEC61850ClientDriverConfig
from model.natures import ResourceKind
from model.site import SiteConfig, load_site, parse_site
from tests.conftest import SHARED_DATA
from tools.commands import scl as scl_command

NS = {"s": "http://www.iec.ch/61850/2003/SCL"}
OWN = Path(__file__).resolve().parent / "scl"
PV_MRID = "6f1c2a3e-0b1d-4c5e-9a10-000000000101"
BAT_MRID = "6f1c2a3e-0b1d-4c5e-9a10-000000000202"
VALID_SHARED = (
    "cid_example_deadband.cid",
    "complexModel.icd",
    "inverter3ph.icd",
    "inverter_with_report.icd",
    "simpleIO_control_tests.cid",
    "simpleIO_direct_control.cid",
    "simpleIO_direct_control_goose.scd",
    "wtur.cid",
)


def _scl_data() -> Path:
    """The shared SCL folder; skip with the reason, or fail when VPP_REQUIRE_DATA=1."""
    d = SHARED_DATA / "scl"
    if not d.is_dir() or not any(d.glob("*.icd")):
        msg = f"IEC 61850 SCL files: data set not found at {d}"
        if os.environ.get("VPP_REQUIRE_DATA") == "1":
            pytest.fail(f"{msg}, but VPP_REQUIRE_DATA=1")
        pytest.skip(msg)
    return d


def lxml_counts(path: Path) -> Counter[str]:
    """IEDs, access points, LDs, LNs, DOs (per LN instance, through its LNodeType), DAIs with a
    value and ConnectedAPs, counted straight from the XML."""
    root = etree.parse(str(path)).getroot()
    c: Counter[str] = Counter()
    c["IED"] = len(root.xpath("s:IED", namespaces=NS))
    c["AccessPoint"] = len(root.xpath("s:IED/s:AccessPoint", namespaces=NS))
    c["LDevice"] = len(root.xpath("//s:LDevice", namespaces=NS))
    lns = root.xpath("//s:LDevice/s:LN0 | //s:LDevice/s:LN", namespaces=NS)
    c["LN"] = len(lns)
    for ln in lns:
        types = root.xpath(
            "s:DataTypeTemplates/s:LNodeType[@id=$t]", namespaces=NS, t=ln.get("lnType")
        )
        c["DO"] += len(types[0].xpath("s:DO", namespaces=NS)) if types else 0
    c["DAI"] = len(root.xpath("//s:DOI//s:DAI[s:Val]", namespaces=NS))
    c["ConnectedAP"] = len(root.xpath("s:Communication/s:SubNetwork/s:ConnectedAP", namespaces=NS))
    return c


def _site_without_drivers(demo_site: SiteConfig) -> SiteConfig:
    return demo_site.model_copy(update={"drivers": []})


def _run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="vpp")
    scl_command.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["import", "scl", *argv])
    return int(args.func(args))


# --- the public example files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", VALID_SHARED)
def test_shared_files_are_read_with_the_counts_lxml_finds(name: str) -> None:
    path = _scl_data() / name
    doc = parse_scl(path)
    expected = lxml_counts(path)
    for key, n in expected.items():
        assert doc.counts.get(key, 0) == n, key
    assert sum(len(ied.lds) for ied in doc.ieds) == expected["LDevice"]
    assert sum(len(ld.lns) for ld in doc.lds()) == expected["LN"]
    # Every LN's data objects were expanded through DOType/DAType to leaf attributes.
    assert sum(len(ln.data) for ld in doc.lds() for ln in ld.lns) == expected["DO"]


def test_der_example_files_become_resources() -> None:
    d = _scl_data()
    got = import_scl(d / "complexModel.icd")
    kinds = {o.ld: o.kind for o in got.report.imported}
    assert kinds == {"ied1Inverter": "pv", "ied1Battery": "storage"}
    assert [o.ld for o in got.report.skipped] == ["ied1Physical_Measurements"]
    assert "only LLN0, LPHD" in got.report.skipped[0].why
    assert got.report.counts == {k: v for k, v in lxml_counts(d / "complexModel.icd").items()}
    # The wind turbine: active power from WTUR.W (IEC 61400-25), the address from Communication.
    wind = import_scl(d / "wtur.cid")
    (res,) = wind.site.resources()
    assert res[1].kind == ResourceKind.WIND
    (drv,) = wind.drivers
    assert (drv["host"], drv["port"], drv["ied_name"]) == ("10.0.2.2", 102, "WIND")
    p = next(m for m in drv["points"] if m["point"].endswith("MMXU1.TotW.mag.f"))
    assert p["ref"] == "WINDWTG/WTUR1.W.mag.f" and p["fc"] == "MX"
    assert wind.report.addresses[0]["subnet"] == "255.255.255.0"
    # The three-phase inverter has no MMXU.TotW: its MMXN.Watt gives the power.
    inv = import_scl(d / "inverter3ph.icd")
    p = next(m for m in inv.drivers[0]["points"] if m["point"].endswith("MMXU1.TotW.mag.f"))
    assert p["ref"] == "Inverter3Phinverter/MMXN1.Watt.mag.f"
    # Every generated driver config is a valid iec61850 driver config.
    for result in (got, wind, inv):
        for cfg in result.drivers:
            IEC61850ClientDriverConfig.model_validate(cfg)


def test_io_only_files_need_a_mapping() -> None:
    path = _scl_data() / "simpleIO_direct_control.cid"
    with pytest.raises(SclMappingError, match="no logical device became a resource"):
        import_scl(path)
    got = import_scl(path, maps=parse_map(["simpleIOGenericIO=VPP1.IO1"]))
    (_, res) = got.site.resources()[0]
    assert res.id == "IO1" and res.kind == ResourceKind.METER
    assert {p.path for p in res.points} >= {f"GGIO1.AnIn{i}.mag.f" for i in range(1, 5)}


def test_sample_model_errors_names_the_access_point(tmp_path: Path) -> None:
    path = _scl_data() / "sampleModel_errors.icd"
    root = etree.parse(str(path)).getroot()
    (ap,) = root.xpath("//s:AccessPoint[not(@name)]", namespaces=NS)
    with pytest.raises(SclSchemaError) as ei:
        import_scl(path)
    (issue,) = ei.value.issues
    assert (issue.file, issue.line) == (str(path), ap.sourceline)
    assert issue.element == "AccessPoint in IED SampleIED"
    assert "required attribute 'name' is missing" in issue.message
    # Through the command line: error, exit 2, the output file untouched.
    out = tmp_path / "site.yaml"
    out.write_text("original\n")
    assert _run_cli(str(path), "-o", str(out)) == 2
    assert out.read_text() == "original\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.yaml"]


def test_empty_type_ids_in_an_scd_are_named() -> None:
    # The libiec61850 example SCD has a DAType with id="" and a DA whose type="" points at it.
    path = _scl_data() / "simpleIO_control_tests.scd"
    root = etree.parse(str(path)).getroot()
    bad_da = root.xpath("//s:DA[@bType='Struct' and @type='']", namespaces=NS)
    bad_type = root.xpath("//s:DAType[@id='']", namespaces=NS)
    with pytest.raises(SclSchemaError) as ei:
        parse_scl(path)
    lines = {(i.line, i.element) for i in ei.value.issues}
    assert (bad_da[0].sourceline, "DA mag in DOType MV_1_AnIn1") in lines
    assert (bad_type[0].sourceline, "DAType") in lines


# --- our own DER controllers ----------------------------------------------------------------------


def test_own_der_files_counts() -> None:
    for f in sorted(OWN.glob("*.icd")):
        if f.name == "missing_template.icd":
            continue
        doc = parse_scl(f)
        for key, n in lxml_counts(f).items():
            assert doc.counts.get(key, 0) == n, (f.name, key)


def test_own_der_files_bind_by_mrid_and_mapping(demo_site: SiteConfig) -> None:
    site = _site_without_drivers(demo_site)
    got = import_scl(
        [OWN / "pv_inverter.icd", OWN / "battery.icd", OWN / "load_controller.icd"],
        site=site,
        maps=parse_map(["LOADCTL1LOAD=VPP1.LOAD01"]),
    )
    out = {o.ld: o for o in got.report.devices}
    assert (out["PVINV1PV"].resource, out["PVINV1PV"].bound_by) == ("VPP1.PV01", "mrid")
    assert (out["BESS1BAT"].resource, out["BESS1BAT"].bound_by) == ("VPP1.BAT02", "mrid")
    assert (out["LOADCTL1LOAD"].resource, out["LOADCTL1LOAD"].bound_by) == ("VPP1.LOAD01", "map")
    assert out["LOADCTL1LOAD"].kind == "load"  # DER control nodes, no generation: a load
    assert (out["BESS1METER"].kind, out["BESS1METER"].bound_by) == ("meter", "new")
    assert (out["LOADCTL1AC"].kind, out["LOADCTL1AC"].why) == ("hvac", "Private vpp-gateway:kind")
    assert out["LOADCTL1AUX"].resource is None
    # The existing resources kept their mRIDs and gained the SCL's extra points.
    by_id = {r.id: r for _, r in got.site.resources()}
    assert by_id["PV01"].mrid == PV_MRID and by_id["BAT02"].mrid == BAT_MRID
    pv_points = {p.path: p for p in by_id["PV01"].points}
    assert pv_points["MMXU1.PhV.phsA.cVal.mag.f"].unit == "V"  # SIUnit given as ordinal 29
    assert pv_points["MMXU1.Hz.mag.f"].unit == "Hz"
    assert pv_points["ZINV1.WRtg.setMag.f"].access == "rw"
    new_ids = {r.id for _, r in got.site.resources()} - {r.id for _, r in site.resources()}
    assert new_ids == {"BESS1METER", "LOADCTL1AC"}
    # Drivers: address and port from Communication, units converted to the model's kW/kvar.
    drivers = {d["id"]: d for d in got.drivers}
    pv = drivers["iec61850-PVINV1"]
    assert (pv["host"], pv["port"]) == ("192.168.10.21", 10102)
    maps = {m["point"]: m for m in pv["points"]}
    assert "scale" not in maps["VPP1.PV01/MMXU1.TotW.mag.f"]  # kW in the SCL already
    assert maps["VPP1.PV01/MMXU1.TotVAr.mag.f"]["scale"] == pytest.approx(0.001)  # VAr
    wspt = maps["VPP1.PV01/DRCC1.WSpt.setMag.f"]
    assert wspt == {
        "ref": "PVINV1PV/DRCC1.WSpt.mxVal.f",
        "fc": "MX",
        "point": "VPP1.PV01/DRCC1.WSpt.setMag.f",
        "command": "operate",
        "control": "PVINV1PV/DRCC1.WSpt",
    }
    assert maps["VPP1.PV01/ZINV1.WRtg.setMag.f"]["command"] == "write"
    assert pv["reports"] == ["PVINV1PV/LLN0.RP.urcbMeas01"]  # indexed, RptEnabled max=2
    assert drivers["iec61850-BESS1"]["reports"] == ["BESS1BAT/LLN0.BR.brcbMeas"]
    for cfg in got.drivers:
        IEC61850ClientDriverConfig.model_validate(cfg)
    # The written text validates and reads back to the same site.
    assert parse_site(got.site_yaml()) == got.site


def test_limits_from_initial_values() -> None:
    got = import_scl(OWN / "pv_inverter.icd")
    (_, res) = got.site.resources()[0]
    assert res.kind == ResourceKind.PV and res.mrid == PV_MRID
    assert (res.limits.p_min_kw, res.limits.p_max_kw) == (0.0, 120.0)  # WRtg 120 kW
    bat = {o.ld: o for o in import_scl(OWN / "battery.icd").report.devices}
    assert bat["BESS1BAT"].kind == "storage"
    site = import_scl(OWN / "battery.icd").site
    res = next(r for _, r in site.resources() if r.mrid == BAT_MRID)
    assert (res.limits.p_min_kw, res.limits.p_max_kw) == (-30.0, 30.0)  # WRtg 30000 W


def test_points_acquired_by_other_drivers_stay_theirs(demo_site: SiteConfig) -> None:
    got = import_scl(OWN / "pv_inverter.icd", site=demo_site)
    (drv,) = got.drivers
    points = {m["point"] for m in drv["points"]}
    assert "VPP1.PV01/MMXU1.TotW.mag.f" not in points  # the IEC 104 driver acquires it
    notes = next(o for o in got.report.devices if o.ld == "PVINV1PV").notes
    assert any("already acquired by driver ied104" in n for n in notes)


def test_mapping_errors() -> None:
    files = [OWN / "battery.icd"]
    with pytest.raises(SclMappingError, match="names no logical device"):
        import_scl(files, maps=parse_map(["NOPE=VPP1.X"]))
    with pytest.raises(SclMappingError, match="already bound"):
        import_scl(files, maps=parse_map(["BESS1BAT=VPP1.B1", "BESS1METER=VPP1.B1"]))
    with pytest.raises(SclMappingError, match=r"expected LD=VPP\.RESOURCE"):
        parse_map(["BESS1BAT:VPP1.B1"])


# --- bad input ------------------------------------------------------------------------------------


def test_missing_templates_are_named(tmp_path: Path) -> None:
    path = OWN / "missing_template.icd"
    root = etree.parse(str(path)).getroot()
    ln = root.xpath("//s:LN[@lnType='MMXU_GONE']", namespaces=NS)[0]
    do = root.xpath("//s:DO[@type='APC_GONE']", namespaces=NS)[0]
    with pytest.raises(SclTemplateError) as ei:
        import_scl(path)
    issues = {(i.line, i.element): i.message for i in ei.value.issues}
    assert issues[(ln.sourceline, "LN MMXU1 (lnClass MMXU) in LDevice PV of IED BROKEN1")] == (
        "lnType 'MMXU_GONE': no LNodeType with that id in DataTypeTemplates"
    )
    assert issues[(do.sourceline, "DO WSpt in LNodeType DRCC_T")] == (
        "type 'APC_GONE': no DOType with that id in DataTypeTemplates"
    )
    assert all(i.file == str(path) for i in ei.value.issues)
    # No DataTypeTemplates section at all.
    text = (OWN / "pv_inverter.icd").read_text()
    no_templates = tmp_path / "no_templates.icd"
    no_templates.write_text(text[: text.index("  <DataTypeTemplates>")] + "</SCL>\n")
    with pytest.raises(SclTemplateError) as ei:
        import_scl(no_templates)
    (issue,) = ei.value.issues
    assert issue.element == "DataTypeTemplates" and "no DataTypeTemplates section" in issue.message
    # A DAType a DOType's DA needs, removed.
    no_analogue = tmp_path / "no_analogue.icd"
    start = text.index('    <DAType id="AnalogueValue">')
    end = text.index("</DAType>", start) + len("</DAType>\n")
    no_analogue.write_text(text[:start] + text[end:])
    with pytest.raises(SclTemplateError, match="type 'AnalogueValue': no DAType"):
        import_scl(no_analogue)


def test_malformed_files(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.icd"
    text = (OWN / "battery.icd").read_text()
    truncated.write_text(text[: len(text) // 2])
    with pytest.raises(SclSyntaxError) as ei:
        import_scl(truncated)
    assert ei.value.issues[0].line is not None and "not well-formed XML" in str(ei.value)
    not_scl = tmp_path / "not_scl.xml"
    not_scl.write_text("<root/>")
    with pytest.raises(SclSyntaxError, match="root element is not SCL"):
        import_scl(not_scl)
    dup = tmp_path / "dup.icd"
    dup.write_text(text.replace('<LDevice inst="METER"', '<LDevice inst="BAT"'))
    with pytest.raises(SclImportError, match="duplicate LDevice inst"):
        import_scl(dup)


def test_cli_writes_atomically_only_on_success(tmp_path: Path, demo_site: SiteConfig) -> None:
    site_path = tmp_path / "site.yaml"
    site_path.write_text(_site_without_drivers(demo_site).model_dump_json())
    before = site_path.read_text()
    # A bad --map: nothing written.
    assert _run_cli(str(OWN / "battery.icd"), "--site", str(site_path), "--map", "X=VPP1.Y") == 2
    assert site_path.read_text() == before
    # A good import updates the site in place (default output: --site) and writes a report.
    report = tmp_path / "report.json"
    rc = _run_cli(
        str(OWN / "battery.icd"), str(OWN / "load_controller.icd"),
        "--site", str(site_path), "--map", "LOADCTL1LOAD=VPP1.LOAD01", "--report", str(report),
    )  # fmt: skip
    assert rc == 0
    site = load_site(site_path)
    assert {r.id for _, r in site.resources()} >= {"BAT02", "LOAD01", "BESS1METER", "LOADCTL1AC"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "site.yaml"]
    data: dict[str, Any] = json.loads(report.read_text())
    assert {d["id"] for d in data["driver_configs"]} == {"iec61850-BESS1", "iec61850-LOADCTL1"}
