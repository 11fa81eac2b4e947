"""CGMES SSH/SV export of the twin's present state, and the round trip import -> export -> import."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cimpy
import pytest
from lxml import etree

from cim.cgmes_export import export_ssh, export_sv
from cim.cgmes_import import CgmesImport, import_cgmes, load_bindings
from cim.errors import CgmesExportError
from model.quality import GOOD
from model.resources import Resource
from model.sample import Sample
from model.site import load_site
from tests.cim.conftest import CIM100, EQ3, RDF, SSH3, SV3, TP3, count_defined
from tests.cim.test_cgmes_import import EQ3_BODY, SSH3_BODY, SV3_BODY, TP3_BODY
from tests.conftest import ROOT
from twin.history import HistoryStore
from twin.twin import Twin


def vpp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def is_state(path: Path) -> bool:
    name = path.name
    return any(tag in name for tag in ("_SSH", "_SV")) and "_BD_" not in name


def twin_state(first: CgmesImport) -> dict[str, float]:
    """A twin built from the imported site, moved away from the imported values, read back."""
    twin = Twin.from_site(first.site)
    values = first.initial_values()
    assert values, "the import gave no state"
    now = time.time()
    moved = {
        ref: (v * 0.5 + 1.25 if i % 2 == 0 else v)
        for i, (ref, v) in enumerate(sorted(values.items()))
    }
    twin.apply([Sample(ref, v, now, GOOD, "test") for ref, v in moved.items()])
    present = {}
    for ref in moved:
        s = twin.get(ref)
        assert s is not None
        present[ref] = float(s.value)
    return present


def round_trip(
    files: list[Path], boundary: list[Path], out: Path
) -> tuple[CgmesImport, CgmesImport, dict[str, float]]:
    first = import_cgmes(files, boundary)
    present = twin_state(first)
    out.mkdir()
    kw = {
        "cgmes_version": first.cgmes_version,
        "models": first.models,
        "cim_namespace": first.cim_namespace,
    }
    ssh = export_ssh(first.site, first.bindings, present, out, **kw)  # type: ignore[arg-type]
    sv = export_sv(first.site, first.bindings, present, out, **kw)  # type: ignore[arg-type]
    # Only resources the twin holds no value for are left out (e.g. an injection without SV).
    with_values = {ref.split("/")[0].split(".")[1] for ref in present}
    for rid, why in ssh.skipped + sv.skipped:
        assert rid not in with_values and why.startswith("no value"), (rid, why)
    assert set(ssh.written) == with_values and sv.notes == []
    second = import_cgmes([*(f for f in files if not is_state(f)), ssh.path, sv.path], boundary)
    # Same resources (ids, mRIDs, names, kinds, limits, points), same topology bindings.
    assert second.site == first.site
    for mrid, b in first.bindings.items():
        b2 = second.bindings[mrid]
        assert (b2.id, b2.cim_class, b2.terminal, b2.topological_node, b2.unit_mrid) == (
            b.id,
            b.cim_class,
            b.terminal,
            b.topological_node,
            b.unit_mrid,
        )
    # Same values: what the twin held is what the re-import reads.
    got = second.initial_values()
    for ref, v in present.items():
        assert got[ref] == pytest.approx(v, rel=1e-12, abs=1e-6), ref
    return first, second, present


def test_round_trip_cigre_mv(tmp_path: Path, cigre_files: list[Path]) -> None:
    _, _, present = round_trip(cigre_files, [], tmp_path / "out")
    # P and Q of each resource with an SvPowerFlow (the sample has none for its external grid).
    assert len(present) == 2 * count_defined(cigre_files)["SvPowerFlow"] == 36


def test_round_trip_microgrid(tmp_path: Path, microgrid: tuple[list[Path], list[Path]]) -> None:
    files, boundary = microgrid
    _, second, _ = round_trip(files, boundary, tmp_path / "out")
    assert second.report.dangling == []
    assert {f["reader"] for f in second.report.files} == {"cimpy 1.1.0"}


def test_round_trip_smallgrid(tmp_path: Path, smallgrid_files: list[Path]) -> None:
    first, _, present = round_trip(smallgrid_files, [], tmp_path / "out")
    assert len(first.site.resources()) == 125 and len(present) > 250


def test_round_trip_cgmes3_battery_state_of_charge(write_cim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files = [
        write_cim("v3_EQ.xml", EQ3_BODY, EQ3, CIM100),
        write_cim("v3_TP.xml", TP3_BODY, TP3, CIM100),
        write_cim("v3_SSH.xml", SSH3_BODY, SSH3, CIM100),
        write_cim("v3_SV.xml", SV3_BODY, SV3, CIM100),
    ]
    _, second, present = round_trip(files, [], tmp_path / "out")
    bat = next(r for _, r in second.site.resources() if r.kind == "storage")
    soc = f"VPP1.{bat.id}/ZBAT1.SoC.mag.f"
    assert soc in present and second.initial_values()[soc] == pytest.approx(present[soc])
    ssh = next((tmp_path / "out").glob("*_SSH.xml"))
    root = etree.parse(str(ssh)).getroot()
    assert root.nsmap["cim"] == CIM100
    stored = root.find(f"{{{CIM100}}}BatteryUnit/{{{CIM100}}}BatteryUnit.storedE")
    assert stored is not None and float(stored.text or "") == pytest.approx(
        present[soc] / 100 * 0.2
    )


def test_exported_files_reimport_cleanly_in_cimpy(tmp_path: Path, cigre_files: list[Path]) -> None:
    first = import_cgmes(cigre_files)
    load = next(r for _, r in first.site.resources() if r.mrid == "Load7-I")
    values = {
        f"VPP1.{load.id}/MMXU1.TotW.mag.f": -150.0,
        f"VPP1.{load.id}/MMXU1.TotVAr.mag.f": -30.0,
    }
    ns = first.cim_namespace
    ssh = export_ssh(first.site, first.bindings, values, tmp_path, cim_namespace=ns)
    sv = export_sv(first.site, first.bindings, values, tmp_path, cim_namespace=ns)
    assert ssh.written == sv.written == [load.id]
    assert len(ssh.skipped) == len(first.site.resources()) - 1  # no values for the others
    eq_tp = [f for f in cigre_files if f.name.endswith(("_EQ.xml", "_TP.xml"))]
    docs = [io.BytesIO(f.read_bytes()) for f in [*eq_tp, ssh.path, sv.path]]
    topo = cimpy.cim_import(docs, "cgmes_v2_4_15")["topology"]
    consumer = topo["Load7-I"]
    assert (consumer.p, consumer.q) == (0.15, 0.03)  # load sign, MW
    flow = next(o for o in topo.values() if type(o).__name__ == "SvPowerFlow")
    assert flow.Terminal is topo["E-288"] and (flow.p, flow.q) == (0.15, 0.03)
    head = (
        etree.parse(str(ssh.path))
        .getroot()
        .find("{http://iec.ch/TC57/61970-552/ModelDescription/1#}FullModel")
    )
    assert head is not None and head.get(f"{{{RDF}}}about", "").startswith("urn:uuid:")


def test_export_refuses_missing_folder_and_skips_unbound_resources(
    tmp_path: Path, cigre_files: list[Path]
) -> None:
    first = import_cgmes(cigre_files)
    with pytest.raises(CgmesExportError, match="does not exist"):
        export_ssh(first.site, first.bindings, {}, tmp_path / "nope")
    extra = Resource(id="BYHAND", mrid="_by-hand", kind="pv")  # type: ignore[arg-type]
    vpp0 = first.site.vpps[0]
    site = first.site.model_copy(
        update={"vpps": [vpp0.model_copy(update={"resources": [*vpp0.resources, extra]})]}
    )
    r = export_sv(site, first.bindings, {"VPP1.BYHAND/MMXU1.TotW.mag.f": 1.0}, tmp_path)
    assert ("BYHAND", "no CIM binding: not imported from CGMES") in r.skipped
    root = etree.parse(str(r.path)).getroot()
    assert root.findall(f"{{{first.cim_namespace}}}SvPowerFlow") == []


def test_cli_export_from_values_and_history(tmp_path: Path, cigre_files: list[Path]) -> None:
    site = tmp_path / "site.yaml"
    r = vpp("import", "cgmes", *map(str, cigre_files), "-o", str(site), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = load_site(site)
    load = next(x for _, x in cfg.resources() if x.mrid == "Load7-I")
    p_ref = f"VPP1.{load.id}/MMXU1.TotW.mag.f"
    out = tmp_path / "out"
    out.mkdir()
    r = vpp(
        "export", "cgmes-ssh", "-c", str(site), "--values", json.dumps({p_ref: -250.0}),
        "--scenario-time", "2026-01-02T03:04:00", "-o", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    ssh = out / "20260102T0304Z_CGMES_SSH.xml"
    assert ssh.exists() and "(1 resource(s))" in r.stdout
    root = etree.parse(str(ssh)).getroot()
    cim = root.nsmap["cim"]  # the import's own spelling (CIGRE MV: the 2012 CIM16 namespace)
    p = root.find(f"{{{cim}}}EnergyConsumer/{{{cim}}}EnergyConsumer.p")
    assert p is not None and float(p.text or "") == 0.25
    # From history: the latest stored sample of each point.
    url = f"sqlite:///{tmp_path / 'h.db'}"
    with HistoryStore(url) as store:
        store.write([Sample(p_ref, -100.0, 1000.0, GOOD), Sample(p_ref, -300.0, 2000.0, GOOD)])
    r = vpp(
        "export", "cgmes-sv", "-c", str(site), "--history-url", url, "-o", str(out), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    sv = next(out.glob("*_SV.xml"))
    flows = etree.parse(str(sv)).getroot().findall(f"{{{cim}}}SvPowerFlow")
    assert len(flows) == 1
    assert float(flows[0].findtext(f"{{{cim}}}SvPowerFlow.p") or "") == 0.3
    # Without a binding file the export says what is missing and writes nothing.
    (tmp_path / "site.cim.json").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = vpp("export", "cgmes-ssh", "-c", str(site), "-o", str(empty), cwd=tmp_path)
    assert r.returncode == 2 and "site.cim.json: cannot read" in r.stderr
    assert list(empty.iterdir()) == []


def test_binding_file_round_trips(tmp_path: Path, cigre_files: list[Path]) -> None:
    first = import_cgmes(cigre_files)
    bpath = first.write(tmp_path / "s.yaml")
    bf = load_bindings(bpath)
    assert (bf.cgmes_version, bf.cim_namespace) == ("2.4.15", first.cim_namespace)
    assert bf.models == first.models and bf.bindings == first.bindings
