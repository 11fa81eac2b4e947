"""CGMES SSH and SV export of the present state of the resources a site imported from CGMES.

What goes where. The steady-state hypothesis (SSH) holds what is intended: each resource's
`<class>.p`/`.q` (RotatingMachine, EnergyConsumer, EquivalentInjection, ExternalNetworkInjection,
PowerElectronicsConnection) from its active/reactive power set-point where its nature has one and
the twin holds a value, else from the measured P/Q; a CGMES 3.0 BatteryUnit also gets `storedE` from
the state of charge. The state variables (SV) hold what is: one `SvPowerFlow` per resource terminal
with the measured P/Q. Values change sign and unit on the way out (model/natures.py generator sign,
kW -> CGMES load sign, MW; see cim/mapping.py). The import reads them back the same way, so
import -> export -> re-import gives the values the twin had.

Both files are partial profiles: they carry the resources' state only (no tap positions, voltages,
regulating controls), which is what re-imports cleanly here and in cimpy, not a complete SSH/SV for
a power-flow tool. Objects are named by their rdf:ID from the import (the resource's mRID, the
terminal's mRID from the binding file); SvPowerFlow ids are derived from the terminal (uuid5) so
that repeated exports of one site name the same objects.

This module reads no twin and no database: the caller passes the values (point ref -> value).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from cim.cgmes_import import ResourceBinding, write_atomic
from cim.errors import CgmesExportError
from cim.mapping import (
    CIM16_NAMESPACES,
    CIM100_NAMESPACE,
    MD_NAMESPACE,
    PROFILE_URIS,
    RDF_NAMESPACE,
    pq_attributes,
    to_cim_power,
)
from model.natures import Role
from model.site import SiteConfig

__all__ = ["ExportResult", "export_ssh", "export_sv"]

RDF = RDF_NAMESPACE
_NS_SV = uuid.UUID("6b0f4a52-3c55-4c1e-9a51-8f3a8c1b2d10")  # names SvPowerFlow ids from terminals


@dataclass
class ExportResult:
    """One written file: which resources it carries and which it left out, and why."""

    path: Path
    profile: str
    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def format(self) -> str:
        """A short text for a person."""
        lines = [f"{self.profile}: {self.path} ({len(self.written)} resource(s))"]
        lines += [f"  skipped {rid}: {why}" for rid, why in self.skipped]
        lines += [f"  note {rid}: {what}" for rid, what in self.notes]
        return "\n".join(lines)


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _fmt(x: float) -> str:
    return repr(float(x))


class _Doc:
    def __init__(
        self,
        profile: str,
        version: str,
        site: SiteConfig,
        depends_on: list[str],
        scenario_time: datetime,
        namespace: str | None,
    ) -> None:
        if version not in PROFILE_URIS:
            raise CgmesExportError(f"cannot write CGMES version {version!r}")
        self.version = version
        default = CIM100_NAMESPACE if version == "3.0" else CIM16_NAMESPACES[0]
        self.cim = namespace or default  # the import's spelling: cimpy reads one per call
        self.root = etree.Element(
            _q(RDF, "RDF"), nsmap={"cim": self.cim, "md": MD_NAMESPACE, "rdf": RDF}
        )
        head = etree.SubElement(self.root, _q(MD_NAMESPACE, "FullModel"))
        head.set(_q(RDF, "about"), f"urn:uuid:{uuid.uuid4()}")
        now = datetime.now(UTC)

        def md(name: str, text: str | None = None, resource: str | None = None) -> None:
            e = etree.SubElement(head, _q(MD_NAMESPACE, f"Model.{name}"))
            if text is not None:
                e.text = text
            if resource is not None:
                e.set(_q(RDF, "resource"), resource)

        md("scenarioTime", scenario_time.strftime("%Y-%m-%dT%H:%M:%SZ"))
        md("created", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        md("description", f"vpp-gateway: present state of site {site.site.id}")
        md("version", "1")
        for dep in depends_on:
            md("DependentOn", resource=dep)
        md("profile", PROFILE_URIS[version][profile])
        md("modelingAuthoritySet", f"urn:vpp-gateway:{site.site.id}")

    def obj(self, cls: str, mrid: str, define: bool = False) -> etree._Element:
        e = etree.SubElement(self.root, _q(self.cim, cls))
        if define and self.version != "3.0":
            e.set(_q(RDF, "ID"), mrid)
        else:
            e.set(_q(RDF, "about"), f"#{mrid}")
        return e

    def attr(self, parent: etree._Element, name: str, value: float) -> None:
        etree.SubElement(parent, _q(self.cim, name)).text = _fmt(value)

    def ref(self, parent: etree._Element, name: str, mrid: str) -> None:
        etree.SubElement(parent, _q(self.cim, name)).set(_q(RDF, "resource"), f"#{mrid}")

    def write(self, path: Path) -> None:
        body = etree.tostring(self.root, pretty_print=True, encoding="unicode")
        write_atomic(path, '<?xml version="1.0" encoding="utf-8"?>\n' + body)


def _prepare(
    out_dir: str | Path, site: SiteConfig, profile: str, scenario_time: datetime | None
) -> tuple[Path, datetime]:
    out = Path(out_dir)
    if not out.is_dir():
        raise CgmesExportError(f"output folder {out} does not exist")
    when = scenario_time or datetime.now(UTC)
    return out / f"{when:%Y%m%dT%H%MZ}_{site.site.id}_{profile}.xml", when


def _value(values: Mapping[str, float], ref: str | None) -> float | None:
    if ref is None or ref not in values:
        return None
    v = values[ref]
    return None if v is None else float(v)


def export_ssh(
    site: SiteConfig,
    bindings: Mapping[str, ResourceBinding],
    values: Mapping[str, float],
    out_dir: str | Path,
    *,
    cgmes_version: str = "2.4.15",
    models: Mapping[str, list[str]] | None = None,
    scenario_time: datetime | None = None,
    cim_namespace: str | None = None,
) -> ExportResult:
    """Write the SSH profile of the resources' set-points (else measured P/Q) into out_dir."""
    path, when = _prepare(out_dir, site, "SSH", scenario_time)
    deps = list((models or {}).get("EQ", []))
    doc = _Doc("SSH", cgmes_version, site, deps, when, cim_namespace)
    result = ExportResult(path, "SSH")
    for vpp_id, r in site.resources():
        b = bindings.get(r.mrid)
        if b is None:
            result.skipped.append((r.id, "no CIM binding: not imported from CGMES"))
            continue
        names = pq_attributes(b.cim_class)
        if names is None:
            result.skipped.append((r.id, f"no SSH P/Q attributes for cim:{b.cim_class}"))
            continue
        p = _value(values, r.ref(vpp_id, Role.P_SET))
        if p is None:
            p = _value(values, r.ref(vpp_id, Role.P))
        q = _value(values, r.ref(vpp_id, Role.Q_SET))
        if q is None:
            q = _value(values, r.ref(vpp_id, Role.Q))
        if p is None and q is None:
            result.skipped.append((r.id, "no value for P or Q (nor their set-points)"))
            continue
        e = doc.obj(b.cim_class, r.mrid)
        if p is not None:
            doc.attr(e, names[0], to_cim_power(p))
        if q is not None:
            doc.attr(e, names[1], to_cim_power(q))
        soc = _value(values, r.ref(vpp_id, Role.SOC))
        if (
            soc is not None
            and b.unit_class == "BatteryUnit"
            and b.unit_mrid
            and b.rated_e_kwh
            and cgmes_version == "3.0"
        ):
            u = doc.obj("BatteryUnit", b.unit_mrid)
            doc.attr(u, "BatteryUnit.storedE", soc / 100.0 * b.rated_e_kwh / 1000.0)
        result.written.append(r.id)
    doc.write(path)
    return result


def export_sv(
    site: SiteConfig,
    bindings: Mapping[str, ResourceBinding],
    values: Mapping[str, float],
    out_dir: str | Path,
    *,
    cgmes_version: str = "2.4.15",
    models: Mapping[str, list[str]] | None = None,
    scenario_time: datetime | None = None,
    cim_namespace: str | None = None,
) -> ExportResult:
    """Write the SV profile: an SvPowerFlow with the measured P/Q at each resource's terminal."""
    path, when = _prepare(out_dir, site, "SV", scenario_time)
    m = models or {}
    deps = list(m.get("TP", [])) + list(m.get("SSH", []))
    doc = _Doc("SV", cgmes_version, site, deps, when, cim_namespace)
    result = ExportResult(path, "SV")
    for vpp_id, r in site.resources():
        b = bindings.get(r.mrid)
        if b is None:
            result.skipped.append((r.id, "no CIM binding: not imported from CGMES"))
            continue
        if not b.terminal:
            result.skipped.append((r.id, "no terminal in the binding file"))
            continue
        p = _value(values, r.ref(vpp_id, Role.P))
        q = _value(values, r.ref(vpp_id, Role.Q))
        if p is None and q is None:
            result.skipped.append((r.id, "no value for P or Q"))
            continue
        flow_id = f"_{uuid.uuid5(_NS_SV, b.terminal)}"
        e = doc.obj("SvPowerFlow", flow_id, define=True)
        # CGMES 2.4.15 SvPowerFlow.p/q are required; a missing one is written as 0 and reported.
        if p is None or q is None:
            result.notes.append((r.id, f"{'P' if p is None else 'Q'} unknown: written as 0"))
        doc.attr(e, "SvPowerFlow.p", to_cim_power(p or 0.0))
        doc.attr(e, "SvPowerFlow.q", to_cim_power(q or 0.0))
        doc.ref(e, "SvPowerFlow.Terminal", b.terminal)
        result.written.append(r.id)
    doc.write(path)
    return result
