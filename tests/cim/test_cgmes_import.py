"""CGMES import: the three public data sets counted independently, small models of our own for
kinds, limits and measurements, CGMES 3.0 power electronics, and malformed input."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cim.cgmes_import import CgmesImport, SourceFile, import_cgmes
from cim.errors import (
    CgmesDuplicateError,
    CgmesImportError,
    CgmesProfileError,
    CgmesReferenceError,
    CgmesSyntaxError,
)
from model.natures import ResourceKind
from model.resources import Resource
from model.site import load_site
from tests.cim.conftest import (
    CIM16,
    CIM100,
    EQ3,
    SSH,
    SSH3,
    SV,
    SV3,
    TP,
    TP3,
    attr_of,
    count_defined,
    dangling_count,
    ids_of,
)
from tests.conftest import ROOT

RESOURCE_CLASSES = (
    "SynchronousMachine",
    "AsynchronousMachine",
    "EnergyConsumer",
    "ConformLoad",
    "NonConformLoad",
    "EquivalentInjection",
    "ExternalNetworkInjection",
)


def vpp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def by_mrid(result: CgmesImport) -> dict[str, Resource]:
    return {r.mrid: r for _, r in result.site.resources()}


# --- the public data sets --------------------------------------------------------------------


def test_cigre_mv_counts_mrids_and_sv_values(cigre_files: list[Path]) -> None:
    counts = count_defined(cigre_files)
    assert counts["EnergyConsumer"] == 18 and counts["ExternalNetworkInjection"] == 1
    result = import_cgmes(cigre_files)
    rep = result.report
    assert rep.cgmes_version == "2.4.15"
    for cls in ("EnergyConsumer", "ExternalNetworkInjection", "Terminal", "SvPowerFlow"):
        assert rep.found[cls] == counts[cls], cls
    assert rep.imported == {"EnergyConsumer": 18, "ExternalNetworkInjection": 1}
    assert rep.kinds == {"load": 18, "meter": 1}
    res = by_mrid(result)
    assert set(res) == ids_of(cigre_files, "EnergyConsumer", "ExternalNetworkInjection")
    assert all(r.name == attr_of(cigre_files, m, "IdentifiedObject.name") for m, r in res.items())
    # cimpy 1.1.0 has no Name/NameType class: read with lxml and said so.
    assert rep.read_with_lxml["Name"] == counts["Name"]
    assert any("cimpy 1.1.0 has no class for: Name" in n for n in rep.notes)
    # The DL file is named as not used; the sample's dangling OperationalLimitType references
    # are report entries naming the element.
    assert any("DI.xml: profile DL is not used" in n for n in rep.notes)
    used = [f for f in cigre_files if not f.name.endswith("_DI.xml")]
    assert len(rep.dangling) == dangling_count(used) > 0
    assert all("OperationalLimit.OperationalLimitType" in str(i) for i in rep.dangling)
    # P/Q from SV at each load's terminal, changed to generator sign and kW.
    load = res["Load7-I"]
    b = result.bindings["Load7-I"]
    assert b.terminal == "E-288"
    assert b.topological_node == attr_of(cigre_files, "E-288", "Terminal.TopologicalNode")
    flow = next(
        f for f in ids_of(cigre_files, "SvPowerFlow")
        if attr_of(cigre_files, f, "SvPowerFlow.Terminal") == "E-288"
    )  # fmt: skip
    p_mw = float(attr_of(cigre_files, flow, "SvPowerFlow.p") or "nan")
    values = result.initial_values()
    assert values[f"VPP1.{load.id}/MMXU1.TotW.mag.f"] == pytest.approx(-p_mw * 1000)


def test_microgrid_with_boundary(microgrid: tuple[list[Path], list[Path]]) -> None:
    files, boundary = microgrid
    counts = count_defined(files + boundary)
    result = import_cgmes(files, boundary)
    rep = result.report
    for cls, n in counts.items():
        assert rep.found[cls] == n, cls
    assert rep.imported == {
        "EnergyConsumer": counts["EnergyConsumer"],
        "EquivalentInjection": counts["EquivalentInjection"],
        "SynchronousMachine": counts["SynchronousMachine"],
    }
    assert counts["SynchronousMachine"] == 4 and counts["EquivalentInjection"] == 10
    assert set(by_mrid(result)) == ids_of(files, *RESOURCE_CLASSES)
    assert rep.dangling == []  # the boundary defines what BE and NL refer to
    # Every file was read by cimpy, after the int workaround the report names.
    assert {f["reader"] for f in rep.files} == {"cimpy 1.1.0"}
    assert any("integral value(s)" in n for n in rep.notes)
    skipped = {s.cls: s for s in rep.skipped}
    assert "generic source equivalent" in skipped["EnergySource"].reason
    # Generators: SSH p -> set-point, SV flow -> P, kinds and limits from the GeneratingUnit.
    g = next(r for r in by_mrid(result).values() if r.name == "NL-G1")
    assert g.kind == ResourceKind.CHP
    gu = attr_of(files, g.mrid, "RotatingMachine.GeneratingUnit")
    assert gu is not None
    assert g.limits.p_max_kw == pytest.approx(
        1000 * float(attr_of(files, gu, "GeneratingUnit.maxOperatingP") or "nan")
    )
    ssh_p = float(attr_of(files, g.mrid, "RotatingMachine.p") or "nan")
    values = result.initial_values()
    assert values[f"VPP1.{g.id}/DRCC1.WSpt.setMag.f"] == pytest.approx(-ssh_p * 1000)
    b = result.bindings[g.mrid]
    assert b.unit_mrid == gu and b.terminal and b.connectivity_node and b.topological_node
    assert result.site_yaml().count("mrid:") == len(by_mrid(result))


def test_microgrid_without_boundary_reports_dangling(
    microgrid: tuple[list[Path], list[Path]],
) -> None:
    files, _ = microgrid
    result = import_cgmes(files)
    assert len(result.report.dangling) == dangling_count(files) > 0
    text = result.report.format(limit=10_000)
    assert "Terminal.ConnectivityNode ->" in text and "no file given defines it" in text
    with pytest.raises(CgmesReferenceError) as e:
        import_cgmes(files, strict=True)
    assert "cim:Terminal" in str(e.value)


def test_smallgrid_counts_ids_and_duplicate_names(smallgrid_files: list[Path]) -> None:
    counts = count_defined(smallgrid_files)
    result = import_cgmes(smallgrid_files)
    rep = result.report
    assert counts["EnergyConsumer"] == 103 and counts["SynchronousMachine"] == 19
    for cls in ("EnergyConsumer", "SynchronousMachine", "ThermalGeneratingUnit", "Terminal"):
        assert rep.found[cls] == counts[cls]
    assert rep.imported["EnergyConsumer"] == counts["EnergyConsumer"]
    assert rep.imported["SynchronousMachine"] == counts["SynchronousMachine"]
    assert rep.imported["EquivalentInjection"] == counts["EquivalentInjection"] == 3
    assert rep.kinds["chp"] == counts["ThermalGeneratingUnit"]
    assert set(by_mrid(result)) == ids_of(smallgrid_files, *RESOURCE_CLASSES)
    ids = [r.id for _, r in result.site.resources()]
    assert len(ids) == len(set(ids))
    # Three injections are all called "Injection": readable, unique ids, mRID keeps identity.
    inj = sorted(r.id for _, r in result.site.resources() if r.name == "Injection")
    assert inj == ["Injection", "Injection_2", "Injection_3"]
    assert len(rep.dangling) == dangling_count(smallgrid_files)


def test_zip_input_gives_the_same_site(
    tmp_path: Path, microgrid: tuple[list[Path], list[Path]]
) -> None:
    files, boundary = microgrid
    z = tmp_path / "model.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in files:
            zf.write(f, f.name)
    zb = tmp_path / "boundary.zip"
    with zipfile.ZipFile(zb, "w") as zf:
        for f in boundary:
            zf.write(f, f.name)
    assert import_cgmes([z], [zb]).site == import_cgmes(files, boundary).site


# --- small models of our own: kinds, limits, measurements ----------------------------------------

U = CIM16
EQ_BODY = f"""
  <cim:SolarGeneratingUnit rdf:ID="_gu_pv">
    <cim:IdentifiedObject.name>PV park</cim:IdentifiedObject.name>
    <cim:GeneratingUnit.minOperatingP>0</cim:GeneratingUnit.minOperatingP>
    <cim:GeneratingUnit.maxOperatingP>2.5</cim:GeneratingUnit.maxOperatingP>
  </cim:SolarGeneratingUnit>
  <cim:SynchronousMachine rdf:ID="_sm_pv">
    <cim:IdentifiedObject.name>PV park</cim:IdentifiedObject.name>
    <cim:RotatingMachine.GeneratingUnit rdf:resource="#_gu_pv"/>
    <cim:RotatingMachine.ratedS>3</cim:RotatingMachine.ratedS>
    <cim:SynchronousMachine.minQ>-1</cim:SynchronousMachine.minQ>
    <cim:SynchronousMachine.maxQ>1.2</cim:SynchronousMachine.maxQ>
  </cim:SynchronousMachine>
  <cim:ConnectivityNode rdf:ID="_cn1"><cim:IdentifiedObject.name>CN1</cim:IdentifiedObject.name></cim:ConnectivityNode>
  <cim:Terminal rdf:ID="_t_pv">
    <cim:ACDCTerminal.sequenceNumber>1</cim:ACDCTerminal.sequenceNumber>
    <cim:Terminal.ConductingEquipment rdf:resource="#_sm_pv"/>
    <cim:Terminal.ConnectivityNode rdf:resource="#_cn1"/>
  </cim:Terminal>
  <cim:WindGeneratingUnit rdf:ID="_gu_wind">
    <cim:IdentifiedObject.name>Wind unit</cim:IdentifiedObject.name>
    <cim:GeneratingUnit.maxOperatingP>4</cim:GeneratingUnit.maxOperatingP>
  </cim:WindGeneratingUnit>
  <cim:SynchronousMachine rdf:ID="_sm_wind">
    <cim:IdentifiedObject.name>Wind 1</cim:IdentifiedObject.name>
    <cim:RotatingMachine.GeneratingUnit rdf:resource="#_gu_wind"/>
    <cim:RotatingMachine.ratedS>5</cim:RotatingMachine.ratedS>
  </cim:SynchronousMachine>
  <cim:Terminal rdf:ID="_t_wind"><cim:Terminal.ConductingEquipment rdf:resource="#_sm_wind"/></cim:Terminal>
  <cim:HydroGeneratingUnit rdf:ID="_gu_hydro">
    <cim:GeneratingUnit.maxOperatingP>1</cim:GeneratingUnit.maxOperatingP>
  </cim:HydroGeneratingUnit>
  <cim:SynchronousMachine rdf:ID="_sm_hydro">
    <cim:IdentifiedObject.name>3 Hydro</cim:IdentifiedObject.name>
    <cim:RotatingMachine.GeneratingUnit rdf:resource="#_gu_hydro"/>
  </cim:SynchronousMachine>
  <cim:SynchronousMachine rdf:ID="_sm_cond">
    <cim:IdentifiedObject.name>Condenser</cim:IdentifiedObject.name>
    <cim:SynchronousMachine.type rdf:resource="{U}SynchronousMachineKind.condenser"/>
  </cim:SynchronousMachine>
  <cim:ThermalGeneratingUnit rdf:ID="_gu_orphan">
    <cim:IdentifiedObject.name>Orphan unit</cim:IdentifiedObject.name>
  </cim:ThermalGeneratingUnit>
  <cim:ConformLoad rdf:ID="_load1"><cim:IdentifiedObject.name>Cold store</cim:IdentifiedObject.name></cim:ConformLoad>
  <cim:Terminal rdf:ID="_t_load1"><cim:Terminal.ConductingEquipment rdf:resource="#_load1"/></cim:Terminal>
  <cim:NonConformLoad rdf:ID="_load2"><cim:IdentifiedObject.name>PLANT</cim:IdentifiedObject.name></cim:NonConformLoad>
  <cim:ExternalNetworkInjection rdf:ID="_grid">
    <cim:IdentifiedObject.name>Grid</cim:IdentifiedObject.name>
    <cim:ExternalNetworkInjection.minP>-10</cim:ExternalNetworkInjection.minP>
    <cim:ExternalNetworkInjection.maxP>10</cim:ExternalNetworkInjection.maxP>
    <cim:ExternalNetworkInjection.minQ>-5</cim:ExternalNetworkInjection.minQ>
    <cim:ExternalNetworkInjection.maxQ>5</cim:ExternalNetworkInjection.maxQ>
  </cim:ExternalNetworkInjection>
  <cim:ACLineSegment rdf:ID="_line"><cim:IdentifiedObject.name>Line</cim:IdentifiedObject.name></cim:ACLineSegment>
  <cim:Analog rdf:ID="_m_p">
    <cim:IdentifiedObject.name>PV P</cim:IdentifiedObject.name>
    <cim:Measurement.measurementType>ThreePhaseActivePower</cim:Measurement.measurementType>
    <cim:Measurement.unitMultiplier rdf:resource="{U}UnitMultiplier.M"/>
    <cim:Measurement.unitSymbol rdf:resource="{U}UnitSymbol.W"/>
    <cim:Measurement.PowerSystemResource rdf:resource="#_sm_pv"/>
  </cim:Analog>
  <cim:Analog rdf:ID="_m_q">
    <cim:IdentifiedObject.name>PV Q</cim:IdentifiedObject.name>
    <cim:Measurement.measurementType>ThreePhaseReactivePower</cim:Measurement.measurementType>
    <cim:Measurement.unitMultiplier rdf:resource="{U}UnitMultiplier.M"/>
    <cim:Analog.positiveFlowIn>true</cim:Analog.positiveFlowIn>
    <cim:Measurement.Terminal rdf:resource="#_t_pv"/>
  </cim:Analog>
  <cim:Analog rdf:ID="_m_p2">
    <cim:IdentifiedObject.name>PV P again</cim:IdentifiedObject.name>
    <cim:Measurement.measurementType>ThreePhaseActivePower</cim:Measurement.measurementType>
    <cim:Measurement.PowerSystemResource rdf:resource="#_gu_pv"/>
  </cim:Analog>
  <cim:Analog rdf:ID="_m_i">
    <cim:IdentifiedObject.name>PV current</cim:IdentifiedObject.name>
    <cim:Measurement.measurementType>LineCurrent</cim:Measurement.measurementType>
    <cim:Measurement.PowerSystemResource rdf:resource="#_sm_pv"/>
  </cim:Analog>
  <cim:Discrete rdf:ID="_m_pos">
    <cim:IdentifiedObject.name>Cold store switch</cim:IdentifiedObject.name>
    <cim:Measurement.measurementType>SwitchPosition</cim:Measurement.measurementType>
    <cim:Measurement.PowerSystemResource rdf:resource="#_load1"/>
  </cim:Discrete>
  <cim:Accumulator rdf:ID="_m_e">
    <cim:IdentifiedObject.name>Grid energy</cim:IdentifiedObject.name>
    <cim:Measurement.measurementType>ActiveEnergy</cim:Measurement.measurementType>
    <cim:Measurement.PowerSystemResource rdf:resource="#_grid"/>
  </cim:Accumulator>
  <cim:Analog rdf:ID="_m_line">
    <cim:IdentifiedObject.name>Line flow</cim:IdentifiedObject.name>
    <cim:Measurement.measurementType>ThreePhaseActivePower</cim:Measurement.measurementType>
    <cim:Measurement.PowerSystemResource rdf:resource="#_line"/>
  </cim:Analog>
  <cim:Analog rdf:ID="_m_none">
    <cim:IdentifiedObject.name>Nowhere</cim:IdentifiedObject.name>
    <cim:Measurement.measurementType>Frequency</cim:Measurement.measurementType>
  </cim:Analog>
  <cim:Analog rdf:ID="_m_conflict">
    <cim:IdentifiedObject.name>Confused</cim:IdentifiedObject.name>
    <cim:Measurement.measurementType>ThreePhaseActivePower</cim:Measurement.measurementType>
    <cim:Measurement.PowerSystemResource rdf:resource="#_sm_wind"/>
    <cim:Measurement.Terminal rdf:resource="#_t_pv"/>
  </cim:Analog>
"""
TP_BODY = """
  <cim:TopologicalNode rdf:ID="_tn1"><cim:IdentifiedObject.name>TN1</cim:IdentifiedObject.name></cim:TopologicalNode>
  <cim:Terminal rdf:about="#_t_pv"><cim:Terminal.TopologicalNode rdf:resource="#_tn1"/></cim:Terminal>
"""
SSH_BODY = """
  <cim:SynchronousMachine rdf:about="#_sm_pv">
    <cim:RotatingMachine.p>-1.5</cim:RotatingMachine.p>
    <cim:RotatingMachine.q>0.2</cim:RotatingMachine.q>
  </cim:SynchronousMachine>
  <cim:ConformLoad rdf:about="#_load1">
    <cim:EnergyConsumer.p>0.8</cim:EnergyConsumer.p>
    <cim:EnergyConsumer.q>0.1</cim:EnergyConsumer.q>
  </cim:ConformLoad>
"""
SV_BODY = """
  <cim:SvPowerFlow rdf:ID="_sv1">
    <cim:SvPowerFlow.p>-1.4</cim:SvPowerFlow.p>
    <cim:SvPowerFlow.q>0.1</cim:SvPowerFlow.q>
    <cim:SvPowerFlow.Terminal rdf:resource="#_t_pv"/>
  </cim:SvPowerFlow>
"""


@pytest.fixture
def own_model(write_cim) -> list[Path]:  # type: ignore[no-untyped-def]
    return [
        write_cim("own_EQ.xml", EQ_BODY),
        write_cim("own_TP.xml", TP_BODY, TP),
        write_cim("own_SSH.xml", SSH_BODY, SSH),
        write_cim("own_SV.xml", SV_BODY, SV),
    ]


def test_kinds_limits_and_skips(own_model: list[Path]) -> None:
    result = import_cgmes(own_model)
    res = by_mrid(result)
    pv, wind, hydro = res["_sm_pv"], res["_sm_wind"], res["_sm_hydro"]
    assert (pv.kind, wind.kind, hydro.kind) == ("pv", "wind", "chp")
    assert (pv.id, hydro.id) == ("PV_park", "GEN_3_Hydro")
    assert res["_load2"].id == "PLANT_2"  # PLANT is the VPP's own logical device
    assert pv.limits.model_dump(include={"p_min_kw", "p_max_kw", "q_min_kvar", "q_max_kvar"}) == {
        "p_min_kw": 0.0,
        "p_max_kw": 2500.0,
        "q_min_kvar": -1000.0,
        "q_max_kvar": 1200.0,
    }
    assert (wind.limits.q_min_kvar, wind.limits.q_max_kvar) == (-5000.0, 5000.0)
    grid = res["_grid"]
    assert grid.kind == "meter" and (grid.limits.p_min_kw, grid.limits.p_max_kw) == (-1e4, 1e4)
    assert res["_load1"].kind == res["_load2"].kind == "load"
    rep = result.report
    notes = "\n".join(rep.notes)
    assert "Q limits taken as +/- ratedS" in notes and "no hydro kind" in notes
    assert "ExternalNetworkInjection: mapped to kind meter" in notes
    skipped = {s.mrid: s.reason for s in rep.skipped}
    assert "synchronous condenser" in skipped["_sm_cond"]
    assert "no RotatingMachine" in skipped["_gu_orphan"]
    b = result.bindings["_sm_pv"]
    assert (b.terminal, b.connectivity_node, b.topological_node) == ("_t_pv", "_cn1", "_tn1")
    assert (b.unit_mrid, b.unit_class) == ("_gu_pv", "SolarGeneratingUnit")
    values = result.initial_values()
    assert values["VPP1.PV_park/MMXU1.TotW.mag.f"] == 1400.0  # SV
    assert values["VPP1.PV_park/DRCC1.WSpt.setMag.f"] == 1500.0  # SSH
    assert values["VPP1.Cold_store/MMXU1.TotW.mag.f"] == -800.0  # a load takes: negative


def test_measurements_bound_unbound_and_twice(own_model: list[Path]) -> None:
    result = import_cgmes(own_model)
    rep = result.report
    bound = {m.mrid: m for m in rep.bound}
    assert bound["_m_p"].point == "VPP1.PV_park/MMXU1.TotW.mag.f"
    assert bound["_m_p"].scale == 1000.0  # MW -> kW
    assert bound["_m_q"].point == "VPP1.PV_park/MMXU1.TotVAr.mag.f"
    assert bound["_m_q"].scale == -1000.0  # positiveFlowIn: load sign
    assert bound["_m_i"].point == "VPP1.PV_park/MMXU1.A.mag.f"
    assert bound["_m_pos"].point == "VPP1.Cold_store/XSWI1.Pos.stVal"
    assert bound["_m_e"].point == "VPP1.Grid/MMTR1.TotWh.actVal"
    unbound = {m.mrid: m.reason for m in rep.unbound}
    assert set(unbound) == {"_m_line", "_m_none"}
    assert "cim:ACLineSegment _line" in unbound["_m_line"]
    twice = {m.mrid: m.reason for m in rep.twice_bound}
    assert set(twice) == {"_m_p2", "_m_conflict"}
    assert "already bound to Analog _m_p" in twice["_m_p2"]
    assert "Wind_1" in twice["_m_conflict"] and "PV_park" in twice["_m_conflict"]
    # Extra points exist in the site, typed, and name their measurement.
    specs = {s.ref: s for s in result.site.point_specs()}
    assert specs["VPP1.PV_park/MMXU1.A.mag.f"].unit == "A"
    assert "_m_i" in specs["VPP1.PV_park/MMXU1.A.mag.f"].description
    assert specs["VPP1.Cold_store/XSWI1.Pos.stVal"].dtype == "int"
    assert [m.mrid for m in result.bindings["_sm_pv"].measurements] == ["_m_i", "_m_p", "_m_q"]
    text = rep.format()
    assert "measurements: 5 bound, 2 unbound, 2 bound twice" in text


# --- CGMES 3.0: power electronics, read with lxml -------------------------------------------------

EQ3_BODY = """
  <cim:PowerElectronicsConnection rdf:about="#_pec_pv">
    <cim:IdentifiedObject.name>Roof PV</cim:IdentifiedObject.name>
    <cim:PowerElectronicsConnection.minQ>-0.05</cim:PowerElectronicsConnection.minQ>
    <cim:PowerElectronicsConnection.maxQ>0.05</cim:PowerElectronicsConnection.maxQ>
  </cim:PowerElectronicsConnection>
  <cim:PhotoVoltaicUnit rdf:about="#_pvu">
    <cim:IdentifiedObject.name>Roof PV unit</cim:IdentifiedObject.name>
    <cim:PowerElectronicsUnit.PowerElectronicsConnection rdf:resource="#_pec_pv"/>
    <cim:PowerElectronicsUnit.minP>0</cim:PowerElectronicsUnit.minP>
    <cim:PowerElectronicsUnit.maxP>0.1</cim:PowerElectronicsUnit.maxP>
  </cim:PhotoVoltaicUnit>
  <cim:PowerElectronicsConnection rdf:about="#_pec_bat">
    <cim:IdentifiedObject.name>Battery</cim:IdentifiedObject.name>
    <cim:PowerElectronicsConnection.ratedS>0.06</cim:PowerElectronicsConnection.ratedS>
  </cim:PowerElectronicsConnection>
  <cim:BatteryUnit rdf:about="#_batu">
    <cim:PowerElectronicsUnit.PowerElectronicsConnection rdf:resource="#_pec_bat"/>
    <cim:PowerElectronicsUnit.minP>-0.05</cim:PowerElectronicsUnit.minP>
    <cim:PowerElectronicsUnit.maxP>0.05</cim:PowerElectronicsUnit.maxP>
    <cim:BatteryUnit.ratedE>0.2</cim:BatteryUnit.ratedE>
  </cim:BatteryUnit>
  <cim:PowerElectronicsConnection rdf:about="#_pec_wind">
    <cim:IdentifiedObject.name>Small wind</cim:IdentifiedObject.name>
  </cim:PowerElectronicsConnection>
  <cim:PowerElectronicsWindUnit rdf:about="#_wu">
    <cim:PowerElectronicsUnit.PowerElectronicsConnection rdf:resource="#_pec_wind"/>
    <cim:PowerElectronicsUnit.minP>0</cim:PowerElectronicsUnit.minP>
    <cim:PowerElectronicsUnit.maxP>1</cim:PowerElectronicsUnit.maxP>
  </cim:PowerElectronicsWindUnit>
  <cim:PowerElectronicsConnection rdf:about="#_pec_none">
    <cim:IdentifiedObject.name>Empty inverter</cim:IdentifiedObject.name>
  </cim:PowerElectronicsConnection>
  <cim:Terminal rdf:about="#_t_pv"><cim:Terminal.ConductingEquipment rdf:resource="#_pec_pv"/></cim:Terminal>
  <cim:Terminal rdf:about="#_t_bat"><cim:Terminal.ConductingEquipment rdf:resource="#_pec_bat"/></cim:Terminal>
  <cim:Terminal rdf:about="#_t_wind"><cim:Terminal.ConductingEquipment rdf:resource="#_pec_wind"/></cim:Terminal>
  <cim:Analog rdf:about="#_m3">
    <cim:Measurement.measurementType>ThreePhaseActivePower</cim:Measurement.measurementType>
    <cim:Measurement.PowerSystemResource rdf:resource="#_batu"/>
  </cim:Analog>
"""
TP3_BODY = """
  <cim:TopologicalNode rdf:about="#_tn"><cim:IdentifiedObject.name>LV bus</cim:IdentifiedObject.name></cim:TopologicalNode>
  <cim:Terminal rdf:about="#_t_pv"><cim:Terminal.TopologicalNode rdf:resource="#_tn"/></cim:Terminal>
  <cim:Terminal rdf:about="#_t_bat"><cim:Terminal.TopologicalNode rdf:resource="#_tn"/></cim:Terminal>
  <cim:Terminal rdf:about="#_t_wind"><cim:Terminal.TopologicalNode rdf:resource="#_tn"/></cim:Terminal>
"""
SSH3_BODY = """
  <cim:PowerElectronicsConnection rdf:about="#_pec_pv">
    <cim:PowerElectronicsConnection.p>-0.08</cim:PowerElectronicsConnection.p>
    <cim:PowerElectronicsConnection.q>0.01</cim:PowerElectronicsConnection.q>
  </cim:PowerElectronicsConnection>
  <cim:PowerElectronicsConnection rdf:about="#_pec_bat">
    <cim:PowerElectronicsConnection.p>0.02</cim:PowerElectronicsConnection.p>
    <cim:PowerElectronicsConnection.q>0</cim:PowerElectronicsConnection.q>
  </cim:PowerElectronicsConnection>
  <cim:BatteryUnit rdf:about="#_batu"><cim:BatteryUnit.storedE>0.1</cim:BatteryUnit.storedE></cim:BatteryUnit>
"""
SV3_BODY = """
  <cim:SvPowerFlow rdf:about="#_sv_pv">
    <cim:SvPowerFlow.p>-0.075</cim:SvPowerFlow.p>
    <cim:SvPowerFlow.q>0.01</cim:SvPowerFlow.q>
    <cim:SvPowerFlow.Terminal rdf:resource="#_t_pv"/>
  </cim:SvPowerFlow>
"""


@pytest.fixture
def cgmes3_model(write_cim) -> list[Path]:  # type: ignore[no-untyped-def]
    return [
        write_cim("v3_EQ.xml", EQ3_BODY, EQ3, CIM100),
        write_cim("v3_TP.xml", TP3_BODY, TP3, CIM100),
        write_cim("v3_SSH.xml", SSH3_BODY, SSH3, CIM100),
        write_cim("v3_SV.xml", SV3_BODY, SV3, CIM100),
    ]


def test_cgmes3_power_electronics_read_with_lxml(cgmes3_model: list[Path]) -> None:
    result = import_cgmes(cgmes3_model)
    rep = result.report
    assert rep.cgmes_version == "3.0"
    assert {f["reader"] for f in rep.files} == {"lxml"}
    assert any("cimpy 1.1.0 has no 3.0 classes" in n for n in rep.notes)
    assert rep.read_with_lxml["PhotoVoltaicUnit"] == 1 and rep.read_with_lxml["BatteryUnit"] == 1
    res = by_mrid(result)
    assert {m: r.kind.value for m, r in res.items()} == {
        "_pec_pv": "pv",
        "_pec_bat": "storage",
        "_pec_wind": "wind",
    }
    bat = res["_pec_bat"]
    assert (bat.limits.p_min_kw, bat.limits.p_max_kw) == (-50.0, 50.0)
    assert (bat.limits.q_min_kvar, bat.limits.q_max_kvar) == (-60.0, 60.0)  # +/- ratedS
    assert bat.limits.energy_capacity_kwh == 200.0
    assert res["_pec_pv"].limits.p_max_kw == 100.0
    assert any(s.mrid == "_pec_none" for s in rep.skipped)
    values = result.initial_values()
    assert values[f"VPP1.{bat.id}/ZBAT1.SoC.mag.f"] == 50.0
    assert values[f"VPP1.{bat.id}/DRCC1.WSpt.setMag.f"] == -20.0  # charging 0.02 MW
    assert values["VPP1.Roof_PV/MMXU1.TotW.mag.f"] == 75.0  # SV beats SSH for P
    assert result.bindings["_pec_pv"].topological_node == "_tn"
    # A measurement on the unit binds to its connection's resource.
    assert [m.point for m in rep.bound] == [f"VPP1.{bat.id}/MMXU1.TotW.mag.f"]
    assert rep.dangling == []


# --- malformed input -------------------------------------------------------------------------


def test_truncated_xml_names_file_and_line(tmp_path: Path, own_model: list[Path]) -> None:
    eq = own_model[0]
    text = eq.read_text()
    cut = tmp_path / "cut_EQ.xml"
    cut.write_text(text[: len(text) // 2])
    with pytest.raises(CgmesSyntaxError) as e:
        import_cgmes([cut, *own_model[1:]])
    issue = e.value.issues[0]
    assert issue.file == str(cut) and issue.line and issue.line > 1
    assert "not well-formed XML" in str(e.value)


def test_unknown_profile_namespace_and_header(write_cim) -> None:  # type: ignore[no-untyped-def]
    body = '  <cim:ConformLoad rdf:ID="_l"/>\n'
    odd = write_cim("odd.xml", body, "http://example.com/CIM/Weather/1")
    with pytest.raises(CgmesProfileError) as e:
        import_cgmes([odd])
    assert "unknown CGMES profile 'http://example.com/CIM/Weather/1'" in str(e.value)
    assert e.value.issues[0].line == 4 and e.value.issues[0].element == "md:Model.profile"
    bare = write_cim("bare.xml", body, None)
    with pytest.raises(CgmesProfileError, match=r"no md:Model\.profile"):
        import_cgmes([bare])
    other = write_cim("v17.xml", body, ns="http://iec.ch/TC57/2015/CIM-schema-cim17#")
    with pytest.raises(CgmesProfileError, match="unknown CIM namespace"):
        import_cgmes([other])
    eq = write_cim("eq.xml", body)
    with pytest.raises(CgmesProfileError, match="given as a boundary file"):
        import_cgmes([], [eq])
    v3 = write_cim("v3.xml", '  <cim:ConformLoad rdf:about="#_m"/>\n', EQ3, CIM100)
    with pytest.raises(CgmesProfileError, match="mix CGMES versions"):
        import_cgmes([eq, v3])


def test_dangling_references_are_reported_or_refused(write_cim) -> None:  # type: ignore[no-untyped-def]
    eq = write_cim(
        "eq.xml",
        """  <cim:ConformLoad rdf:ID="_l"><cim:IdentifiedObject.name>L</cim:IdentifiedObject.name></cim:ConformLoad>
  <cim:Terminal rdf:ID="_t">
    <cim:Terminal.ConductingEquipment rdf:resource="#_l"/>
    <cim:Terminal.ConnectivityNode rdf:resource="#_nowhere"/>
  </cim:Terminal>
""",
    )
    ssh = write_cim(
        "ssh.xml",
        '  <cim:ConformLoad rdf:about="#_ghost"><cim:EnergyConsumer.p>1</cim:EnergyConsumer.p>'
        "</cim:ConformLoad>\n",
        SSH,
    )
    result = import_cgmes([eq, ssh])
    text = [str(i) for i in result.report.dangling]
    assert f"{eq}:9: cim:Terminal _t: Terminal.ConnectivityNode -> _nowhere" in text[0]
    assert f"{ssh}:6: cim:ConformLoad _ghost: SSH data for an object no file defines" in text[1]
    assert [r.mrid for _, r in result.site.resources()] == ["_l"]
    with pytest.raises(CgmesReferenceError) as e:
        import_cgmes([eq, ssh], strict=True)
    assert len(e.value.issues) == 2


def test_duplicate_mrids_name_both_places(write_cim, own_model: list[Path]) -> None:  # type: ignore[no-untyped-def]
    dup = write_cim(
        "dup.xml",
        '  <cim:ConformLoad rdf:ID="_x"/>\n  <cim:NonConformLoad rdf:ID="_x"/>\n',
    )
    with pytest.raises(CgmesDuplicateError) as e:
        import_cgmes([dup])
    assert f"{dup}:7: cim:ConformLoad _x: duplicate mRID" in str(e.value)
    assert f"also defined at {dup}:6" in str(e.value)
    # The same mRID in two EQ files.
    other = write_cim("other.xml", '  <cim:ConformLoad rdf:ID="_load1"/>\n')
    with pytest.raises(CgmesDuplicateError, match="rdf:ID '_load1' is also defined"):
        import_cgmes([*own_model, other])
    # One SSH file given twice.
    with pytest.raises(CgmesDuplicateError, match="given twice"):
        import_cgmes([*own_model, own_model[2]])
    # Two SSH files describing the same object.
    ssh2 = write_cim(
        "ssh2.xml",
        '  <cim:ConformLoad rdf:about="#_load1"><cim:EnergyConsumer.p>2</cim:EnergyConsumer.p>'
        "</cim:ConformLoad>\n",
        SSH,
    )
    with pytest.raises(CgmesDuplicateError, match="SSH data for '_load1' is also given"):
        import_cgmes([*own_model, ssh2])


def test_unreadable_and_bad_zip(tmp_path: Path) -> None:
    with pytest.raises(CgmesImportError, match="cannot read"):
        import_cgmes([tmp_path / "missing.xml"])
    z = tmp_path / "empty.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "no xml here")
    with pytest.raises(CgmesImportError, match=r"holds no \.xml member"):
        import_cgmes([z])
    with pytest.raises(CgmesSyntaxError, match="not well-formed"):
        import_cgmes([SourceFile("mem.xml", b"<rdf:RDF")])


# --- the command line: report, atomic write, nothing half-written ---------------------------------


def test_cli_import_writes_validated_site_and_binding(
    tmp_path: Path, own_model: list[Path]
) -> None:
    out = tmp_path / "site.yaml"
    rep = tmp_path / "report.json"
    r = vpp(
        "import", "cgmes", *map(str, own_model), "-o", str(out), "--vpp-id", "VPPX",
        "--report", str(rep), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "imported 6 resource(s)" in r.stdout and "unbound measurements: 2" in r.stdout
    site = load_site(out)
    assert site.vpps[0].id == "VPPX" and len(site.resources()) == 6
    assert (tmp_path / "site.cim.json").exists() and rep.exists()
    assert oct(out.stat().st_mode & 0o777) != "0o600"  # not the temp file's private mode
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_cli_failed_import_leaves_site_untouched(tmp_path: Path, own_model: list[Path]) -> None:
    out = tmp_path / "site.yaml"
    out.write_text("# the integrator's own site file\n")
    before = out.read_bytes()
    cut = tmp_path / "cut.xml"
    cut.write_text(own_model[0].read_text()[:500])
    r = vpp("import", "cgmes", str(cut), *map(str, own_model[1:]), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2
    assert f"{cut}:" in r.stderr and "nothing written" in r.stderr
    assert out.read_bytes() == before
    assert not (tmp_path / "site.cim.json").exists()
    # A VPP id the model refuses: the site would not validate, so nothing is written either.
    fresh = tmp_path / "new.yaml"
    r = vpp(
        "import", "cgmes", *map(str, own_model), "-o", str(fresh), "--vpp-id", "1x", cwd=tmp_path
    )
    assert r.returncode == 2 and "vpps.0.id" in r.stderr
    assert not fresh.exists() and not (tmp_path / "new.cim.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
