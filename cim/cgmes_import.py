"""CGMES import: EQ/TP/SSH/SV (+ boundary) RDF/XML files or zips -> site resources and a report.

Two readers work together:

* cimpy 1.1.0 (`cimpy.cim_import(files, "cgmes_v2_4_15")`) builds the CGMES 2.4.15 objects, merging
  the profiles of one object into one Python object and converting attribute values; the mapping
  reads numeric and enumeration values from those objects.
* Our own lxml index (one pass over every file) does what cimpy does not: it checks each file is
  well-formed RDF/XML with a known profile and CIM version, finds mRIDs defined twice (cimpy keeps
  the last silently) and references to objects no file defines (cimpy counts them in a log line
  without saying where), and records which attributes the files actually give (cimpy fills absent
  floats with 0.0). It is also the reader of everything cimpy lacks: CGMES 3.0 files (cimpy
  1.1.0 ships only `cgmes_v2_4_15`; 3.0 brings the power-electronics classes PhotoVoltaicUnit,
  BatteryUnit, PowerElectronicsWindUnit, PowerElectronicsConnection) and any 2.4.15 class cimpy
  has no module for. The import report lists what was read this way, by class.

Identity. A resource is the CIM conducting equipment that has the terminal and the P/Q state:
SynchronousMachine/AsynchronousMachine (with its GeneratingUnit giving the kind and P limits),
EnergyConsumer/ConformLoad/NonConformLoad/StationSupply, EquivalentInjection,
ExternalNetworkInjection, or a CGMES 3.0 PowerElectronicsConnection (with its PowerElectronicsUnit
giving the kind). Its `mrid` is the object's rdf:ID as written (e.g. `_2844585c-...`), which is
what SSH and SV files refer to with rdf:about="#...". Terminal, connectivity node, topological node,
unit, initial state and measurement bindings have no field in the site model yet: they go to the
binding file (`<site>.cim.json`) beside the site file, which `vpp export cgmes-ssh/sv` reads.

Nothing is written unless the whole result validates with `model.site.parse_site`; files are
written to a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import re
import tempfile
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml
from lxml import etree
from pydantic import ValidationError

from cim.errors import (
    CgmesDuplicateError,
    CgmesImportError,
    CgmesProfileError,
    CgmesReferenceError,
    CgmesSyntaxError,
    CimIssue,
)
from cim.mapping import (
    EQUIVALENT_CLASSES,
    GENERATING_UNIT_CLASSES,
    LOAD_CLASSES,
    MACHINE_CLASSES,
    MD_NAMESPACE,
    MEASUREMENT_CLASSES,
    PE_UNIT_CLASSES,
    PEC_CLASS,
    RDF_NAMESPACE,
    classify_profile,
    from_cim_power,
    kind_for_generating_unit,
    kind_for_pe_unit,
    make_ident,
    measurement_scale,
    measurement_target,
    mw_to_kw,
    pq_attributes,
    version_of_namespace,
)
from model.errors import ConfigIssue, SiteConfigError
from model.natures import ResourceKind, Role
from model.resources import ExtraPoint, Limits, Resource
from model.site import SiteConfig, parse_site

__all__ = [
    "BINDING_FORMAT",
    "BindingFile",
    "CgmesImport",
    "ImportReport",
    "MeasurementEntry",
    "ResourceBinding",
    "SkippedEntry",
    "SourceFile",
    "binding_path_for",
    "import_cgmes",
    "load_bindings",
    "read_sources",
    "state_values",
    "write_atomic",
]

log = logging.getLogger(__name__)

RDF = RDF_NAMESPACE
_ID = f"{{{RDF}}}ID"
_ABOUT = f"{{{RDF}}}about"
_RESOURCE = f"{{{RDF}}}resource"

BINDING_FORMAT = "vpp-gateway/cim-binding/1"
_USED_PROFILES = frozenset({"EQ", "EQ_BD", "TP", "TP_BD", "SSH", "SV"})
_BOUNDARY_PROFILES = frozenset({"EQ_BD", "TP_BD"})
# In CGMES 3.0 objects are usually written with rdf:about everywhere; these profiles create them.
_DEFINING_PROFILES = frozenset({"EQ", "EQ_BD", "TP", "TP_BD", "SV"})
_ID_PREFIX = {
    ResourceKind.PV: "PV",
    ResourceKind.WIND: "WIND",
    ResourceKind.STORAGE: "BAT",
    ResourceKind.LOAD: "LOAD",
    ResourceKind.CHP: "GEN",
    ResourceKind.METER: "MTR",
}


def _cimpy_version() -> str:
    try:
        return version("cimpy")
    except PackageNotFoundError:  # pragma: no cover - cimpy is a dependency
        return "?"


# --- reading files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    """One RDF/XML document: a display name (path, or zip!member) and its bytes."""

    name: str
    data: bytes
    boundary: bool = False


def read_sources(paths: Iterable[str | Path], *, boundary: bool = False) -> list[SourceFile]:
    """Read XML files and the .xml members of zip files; CgmesImportError names what failed."""
    out: list[SourceFile] = []
    issues: list[CimIssue] = []
    for p in map(Path, paths):
        try:
            data = p.read_bytes()
        except OSError as e:
            issues.append(CimIssue(str(p), None, "", f"cannot read: {e.strerror}"))
            continue
        if zipfile.is_zipfile(io.BytesIO(data)):
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    members = [m for m in z.namelist() if m.lower().endswith((".xml", ".rdf"))]
                    if not members:
                        issues.append(CimIssue(str(p), None, "", "zip file holds no .xml member"))
                    for m in sorted(members):
                        out.append(SourceFile(f"{p}!{m}", z.read(m), boundary))
            except (zipfile.BadZipFile, OSError) as e:
                issues.append(CimIssue(str(p), None, "", f"bad zip file: {e}"))
        else:
            out.append(SourceFile(str(p), data, boundary))
    if issues:
        raise CgmesImportError(issues, "the input files")
    return out


# --- the lxml index ---------------------------------------------------------------------------


@dataclass
class _FileInfo:
    name: str
    version: str
    namespace: str
    profiles: list[str]
    kinds: set[str]
    model_id: str | None
    boundary: bool
    used: bool


@dataclass
class _Obj:
    """One CIM object as the files describe it, merged over profiles (lxml view)."""

    mrid: str
    cls: str
    version: str
    attrs: dict[str, str] = field(default_factory=dict)
    attr_files: dict[str, str] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    where: list[tuple[str, int, str, bool]] = field(default_factory=list)  # file, line, kind, byID
    defined: bool = False

    @property
    def name(self) -> str:
        return self.attrs.get("IdentifiedObject.name", "")

    def element(self) -> str:
        return f"cim:{self.cls} {self.mrid}"


def _local(tag: str) -> tuple[str, str]:
    ns, _, local = tag[1:].partition("}")
    return ns, local


class _Index:
    """Every object of every file, with the checks cimpy does not make."""

    def __init__(self) -> None:
        self.files: list[_FileInfo] = []
        self.objects: dict[str, _Obj] = {}
        self.refs: list[tuple[_Obj, str, str, str, int]] = []  # obj, attr, target, file, line
        self.conflicts: list[CimIssue] = []
        self.skipped_files: list[tuple[str, str]] = []
        self.trees: dict[str, Any] = {}

    def add(self, src: SourceFile) -> None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
        try:
            root = etree.fromstring(src.data, parser)
        except etree.XMLSyntaxError as e:
            raise CgmesSyntaxError(
                [CimIssue(src.name, e.lineno or None, "", f"not well-formed XML: {e.msg}")],
                src.name,
            ) from e
        if not isinstance(root.tag, str) or root.tag != f"{{{RDF}}}RDF":
            raise CgmesSyntaxError(
                [CimIssue(src.name, root.sourceline, str(root.tag), "the root is not rdf:RDF")],
                src.name,
            )
        info = self._header(src, root)
        self.files.append(info)
        if not info.used:
            return
        self.trees[src.name] = root
        for el in root:
            if not isinstance(el.tag, str):
                continue  # comments, processing instructions
            ns, cls = _local(el.tag)
            if ns in (MD_NAMESPACE, RDF):
                continue
            self._object(src.name, info, el, cls)

    def _header(self, src: SourceFile, root: Any) -> _FileInfo:
        ns = root.nsmap.get("cim")
        if ns is None:
            for el in root:
                if isinstance(el.tag, str) and _local(el.tag)[0] not in (MD_NAMESPACE, RDF):
                    ns = _local(el.tag)[0]
                    break
        ver = version_of_namespace(ns)
        issues: list[CimIssue] = []
        if ver is None:
            issues.append(
                CimIssue(
                    src.name,
                    root.sourceline,
                    "rdf:RDF",
                    f"unknown CIM namespace {ns!r}: expected CGMES 2.4.15 (CIM16) or 3.0 (CIM100)",
                )
            )
        header = next(
            (e for e in root if isinstance(e.tag, str) and _local(e.tag)[1] == "FullModel"), None
        )
        profiles: list[tuple[str, int]] = []
        if header is not None:
            profiles = [
                ((e.text or "").strip(), e.sourceline)
                for e in header
                if isinstance(e.tag, str) and _local(e.tag)[1] == "Model.profile"
            ]
        if not profiles:
            issues.append(
                CimIssue(
                    src.name,
                    header.sourceline if header is not None else root.sourceline,
                    "md:FullModel",
                    "no md:Model.profile in the header: cannot tell which CGMES profile this is",
                )
            )
        kinds: set[str] = set()
        for uri, line in profiles:
            kind = classify_profile(uri)
            if kind is None:
                issues.append(
                    CimIssue(src.name, line, "md:Model.profile", f"unknown CGMES profile {uri!r}")
                )
            else:
                kinds.add(kind)
        if src.boundary and kinds and not kinds <= _BOUNDARY_PROFILES:
            issues.append(
                CimIssue(
                    src.name,
                    header.sourceline if header is not None else None,
                    "md:Model.profile",
                    f"given as a boundary file but declares {', '.join(sorted(kinds))}, "
                    "not EquipmentBoundary/TopologyBoundary",
                )
            )
        if issues:
            raise CgmesProfileError(issues, src.name)
        model_id = header.get(_ABOUT) if header is not None else None
        used = bool(kinds & _USED_PROFILES)
        if not used:
            self.skipped_files.append(
                (src.name, f"profile {', '.join(sorted(kinds))} is not used by the import")
            )
        return _FileInfo(
            src.name,
            ver or "",
            ns or "",
            [u for u, _ in profiles],
            kinds,
            model_id,
            src.boundary,
            used,
        )

    def _object(self, file: str, info: _FileInfo, el: Any, cls: str) -> None:
        by_id = el.get(_ID)
        about = el.get(_ABOUT)
        if by_id is None and about is None:
            raise CgmesSyntaxError(
                [CimIssue(file, el.sourceline, f"cim:{cls}", "has neither rdf:ID nor rdf:about")],
                file,
            )
        mrid = by_id if by_id is not None else about.removeprefix("#")
        kind = "EQ" if info.kinds & {"EQ"} else sorted(info.kinds)[0]
        obj = self.objects.get(mrid)
        if obj is None:
            obj = self.objects[mrid] = _Obj(mrid, cls, info.version)
        elif obj.cls != cls:
            first = obj.where[0]
            self.conflicts.append(
                CimIssue(
                    file,
                    el.sourceline,
                    f"cim:{cls} {mrid}",
                    f"also described as cim:{obj.cls} at {first[0]}:{first[1]}; kept cim:{obj.cls}",
                )
            )
        obj.where.append((file, el.sourceline, kind, by_id is not None))
        if by_id is not None or (info.version == "3.0" and kind in _DEFINING_PROFILES):
            obj.defined = True
        for child in el:
            if not isinstance(child.tag, str):
                continue
            attr = _local(child.tag)[1]
            res = child.get(_RESOURCE)
            if res is None:
                obj.attrs[attr] = (child.text or "").strip()
                obj.attr_files[attr] = file
            elif res.startswith("#"):
                obj.refs[attr] = res[1:]
                self.refs.append((obj, attr, res[1:], file, child.sourceline))
            elif "#" in res:  # an enumeration value: http://...#SynchronousMachineKind.generator
                obj.attrs[attr] = res.rsplit("#", 1)[1]
                obj.attr_files[attr] = file
            else:
                obj.refs[attr] = res
                self.refs.append((obj, attr, res, file, child.sourceline))

    def check(self) -> None:
        """Duplicate models and mRIDs: raise CgmesDuplicateError naming both places."""
        issues: list[CimIssue] = []
        models: dict[str, str] = {}
        for f in self.files:
            if f.model_id is None:
                continue
            if f.model_id in models:
                issues.append(
                    CimIssue(
                        f.name,
                        None,
                        f"md:FullModel {f.model_id}",
                        f"the same model as {models[f.model_id]} (given twice?)",
                    )
                )
            models.setdefault(f.model_id, f.name)
        if issues:
            raise CgmesDuplicateError(issues, "the input files")
        for obj in self.objects.values():
            ids = [w for w in obj.where if w[3]]
            for w in ids[1:]:
                issues.append(
                    CimIssue(
                        w[0],
                        w[1],
                        obj.element(),
                        f"duplicate mRID: rdf:ID {obj.mrid!r} is also defined at {ids[0][0]}:{ids[0][1]}",
                    )
                )
            seen: dict[str, tuple[str, int]] = {}
            for file, line, kind, by_id in obj.where:
                if by_id:
                    continue
                if kind in seen and seen[kind][0] != file:
                    issues.append(
                        CimIssue(
                            file,
                            line,
                            obj.element(),
                            f"duplicate mRID: {kind} data for {obj.mrid!r} is also given at "
                            f"{seen[kind][0]}:{seen[kind][1]}",
                        )
                    )
                seen.setdefault(kind, (file, line))
        if issues:
            raise CgmesDuplicateError(issues)

    def dangling(self) -> list[CimIssue]:
        """References to objects no file defines, and objects described but never defined."""
        out: list[CimIssue] = []
        for obj, attr, target, file, line in self.refs:
            t = self.objects.get(target)
            if t is None or not t.defined:
                out.append(
                    CimIssue(
                        file, line, obj.element(), f"{attr} -> {target}: no file given defines it"
                    )
                )
        for obj in self.objects.values():
            if not obj.defined:
                file, line, kind, _ = obj.where[0]
                out.append(
                    CimIssue(
                        file, line, obj.element(), f"{kind} data for an object no file defines"
                    )
                )
        return out


# --- report -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkippedEntry:
    """A CIM object that could have been a resource and was not, with the reason."""

    cls: str
    mrid: str
    name: str
    reason: str


@dataclass(frozen=True)
class MeasurementEntry:
    """A CIM measurement and where it went (point ref) or why it did not."""

    cls: str
    mrid: str
    name: str
    measurement_type: str
    point: str | None = None
    scale: float | None = None
    reason: str = ""


@dataclass
class ImportReport:
    """What the import read, made, skipped and could not bind."""

    cgmes_version: str = ""
    files: list[dict[str, Any]] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)
    imported: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    read_with_lxml: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dangling: list[CimIssue] = field(default_factory=list)
    class_conflicts: list[CimIssue] = field(default_factory=list)
    bound: list[MeasurementEntry] = field(default_factory=list)
    unbound: list[MeasurementEntry] = field(default_factory=list)
    twice_bound: list[MeasurementEntry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (JSON-ready)."""
        d = asdict(self)
        d["dangling"] = [str(i) for i in self.dangling]
        d["class_conflicts"] = [str(i) for i in self.class_conflicts]
        return d

    def format(self, limit: int = 20) -> str:
        """The report as text for a person, long lists cut at `limit` entries."""
        out = [f"CGMES {self.cgmes_version} import: {len(self.files)} file(s)"]
        for f in self.files:
            out.append(f"  {f['name']}: {', '.join(f['kinds'])} (read by {f['reader']})")
        out.append(f"imported {sum(self.imported.values())} resource(s):")
        for cls, n in sorted(self.imported.items()):
            out.append(f"  {cls:<28} {n:>5} of {self.found.get(cls, 0)}")
        if self.kinds:
            out.append("  by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items())))
        if self.read_with_lxml:
            out.append("read with lxml (cimpy lacks the version or the class):")
            out += [f"  {c:<28} {n:>5}" for c, n in sorted(self.read_with_lxml.items())]

        def section(title: str, items: Sequence[object]) -> None:
            if not items:
                return
            out.append(f"{title}: {len(items)}")
            out.extend(f"  {i}" for i in items[:limit])
            if len(items) > limit:
                out.append(f"  ... and {len(items) - limit} more")

        section("skipped", [f"{s.cls} {s.mrid} {s.name!r}: {s.reason}" for s in self.skipped])
        section("notes", self.notes)
        section("dangling references", [str(i) for i in self.dangling])
        section("class conflicts", [str(i) for i in self.class_conflicts])
        out.append(
            f"measurements: {len(self.bound)} bound, {len(self.unbound)} unbound, "
            f"{len(self.twice_bound)} bound twice"
        )
        section(
            "unbound measurements",
            [
                f"{m.cls} {m.mrid} {m.name!r} ({m.measurement_type}): {m.reason}"
                for m in self.unbound
            ],
        )
        section(
            "measurements bound twice",
            [
                f"{m.cls} {m.mrid} {m.name!r} ({m.measurement_type}): {m.reason}"
                for m in self.twice_bound
            ],
        )
        return "\n".join(out)


# --- result -----------------------------------------------------------------------------------


@dataclass
class ResourceBinding:
    """What the site model cannot hold yet about one imported resource: CIM topology and state."""

    id: str
    mrid: str
    cim_class: str
    kind: str
    name: str = ""
    unit_mrid: str | None = None
    unit_class: str | None = None
    terminal: str | None = None
    connectivity_node: str | None = None
    topological_node: str | None = None
    ssh_p_kw: float | None = None
    ssh_q_kvar: float | None = None
    sv_p_kw: float | None = None
    sv_q_kvar: float | None = None
    soc_pct: float | None = None
    rated_e_kwh: float | None = None
    measurements: list[MeasurementEntry] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """As plain data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResourceBinding:
        """From plain data (the binding file)."""
        d = dict(d)
        d["measurements"] = [MeasurementEntry(**m) for m in d.get("measurements", [])]
        return cls(**d)


@dataclass
class CgmesImport:
    """A finished import: the site, the CIM bindings of its resources, and the report."""

    site: SiteConfig
    vpp_id: str
    cgmes_version: str
    bindings: dict[str, ResourceBinding]  # by mRID
    models: dict[str, list[str]]  # profile -> md:FullModel ids
    report: ImportReport
    cim_namespace: str = ""

    def site_yaml(self) -> str:
        """The site file text (validated by parse_site before it is returned)."""
        data = self.site.model_dump(mode="json", exclude_defaults=True)
        n = sum(1 for _ in self.site.resources())
        head = (
            f"# Imported from CGMES {self.cgmes_version} by `vpp import cgmes`: {n} resource(s).\n"
            "# Each resource keeps its CIM mRID; terminals, nodes, units and measurement bindings\n"
            "# are in the binding file beside this one (<name>.cim.json).\n"
        )
        text = head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        parse_site(text, "<imported site>")
        return text

    def binding_document(self) -> dict[str, Any]:
        """The binding file's content."""
        return {
            "format": BINDING_FORMAT,
            "cgmes_version": self.cgmes_version,
            "cim_namespace": self.cim_namespace,
            "vpp_id": self.vpp_id,
            "models": self.models,
            "resources": [b.to_dict() for b in self.bindings.values()],
        }

    def initial_values(self) -> dict[str, float]:
        """Point values from the imported SSH/SV: P/Q from SV (else SSH), set-points from SSH."""
        return state_values(self.site, self.bindings)

    def write(self, site_path: str | Path, binding_path: str | Path | None = None) -> Path:
        """Write the site file and its binding file, each atomically; returns the binding path."""
        site_path = Path(site_path)
        bpath = Path(binding_path) if binding_path else binding_path_for(site_path)
        text = self.site_yaml()
        write_atomic(bpath, json.dumps(self.binding_document(), indent=1) + "\n")
        write_atomic(site_path, text)
        return bpath


def state_values(site: SiteConfig, bindings: dict[str, ResourceBinding]) -> dict[str, float]:
    """Point values held in bindings: P/Q from SV (else SSH), P/Q set-points from SSH, SoC."""
    out: dict[str, float] = {}
    for vpp_id, r in site.resources():
        b = bindings.get(r.mrid)
        if b is None:
            continue
        for role, value in (
            (Role.P, b.sv_p_kw if b.sv_p_kw is not None else b.ssh_p_kw),
            (Role.Q, b.sv_q_kvar if b.sv_q_kvar is not None else b.ssh_q_kvar),
            (Role.P_SET, b.ssh_p_kw),
            (Role.Q_SET, b.ssh_q_kvar),
            (Role.SOC, b.soc_pct),
        ):
            ref = r.ref(vpp_id, role)
            if ref is not None and value is not None:
                out[ref] = value
    return out


def binding_path_for(site_path: str | Path) -> Path:
    """The binding file that goes with a site file: site.yaml -> site.cim.json."""
    p = Path(site_path)
    return p.with_name(p.stem + ".cim.json")


def write_atomic(path: str | Path, text: str) -> None:
    """Write text to path through a temporary file in the same folder and a rename."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o777  # keep the mode of the file being replaced
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class BindingFile:
    """A binding file as read back: CGMES version and namespace, models, bindings by mRID."""

    cgmes_version: str
    cim_namespace: str
    models: dict[str, list[str]]
    bindings: dict[str, ResourceBinding]


def load_bindings(path: str | Path) -> BindingFile:
    """Read a binding file written by CgmesImport.write."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise CgmesImportError([CimIssue(str(p), None, "", f"cannot read: {e.strerror}")]) from e
    except json.JSONDecodeError as e:
        raise CgmesImportError([CimIssue(str(p), e.lineno, "", f"not JSON: {e.msg}")]) from e
    if not isinstance(doc, dict) or doc.get("format") != BINDING_FORMAT:
        raise CgmesImportError(
            [CimIssue(str(p), None, "format", f"not a binding file ({BINDING_FORMAT})")]
        )
    try:
        bindings = [ResourceBinding.from_dict(d) for d in doc["resources"]]
        return BindingFile(
            str(doc["cgmes_version"]),
            str(doc.get("cim_namespace", "")),
            dict(doc.get("models", {})),
            {b.mrid: b for b in bindings},
        )
    except (KeyError, TypeError) as e:
        raise CgmesImportError([CimIssue(str(p), None, "resources", f"malformed: {e}")]) from e


# --- reading values: cimpy objects where cimpy has them, the lxml index otherwise --------------


class _Values:
    def __init__(self, index: _Index, topology: dict[str, Any], cimpy_files: set[str]) -> None:
        self.index = index
        self.topology = topology
        self.cimpy_files = cimpy_files
        self.notes: list[str] = []

    def _cimpy(self, obj: _Obj, qname: str) -> Any:
        """cimpy's value of an attribute, when cimpy read the file that gives it."""
        if obj.attr_files.get(qname) not in self.cimpy_files:
            return None
        c = self.topology.get(obj.mrid)
        return getattr(c, qname.rsplit(".", 1)[-1], None) if c is not None else None

    def num(self, obj: _Obj | None, qname: str) -> float | None:
        """A numeric attribute the files give (None when absent: cimpy would say 0.0)."""
        if obj is None or qname not in obj.attrs:
            return None
        v = self._cimpy(obj, qname)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
        try:
            return float(obj.attrs[qname])
        except ValueError:
            self.notes.append(f"{obj.element()}: {qname} {obj.attrs[qname]!r} is not a number")
            return None

    def enum(self, obj: _Obj | None, qname: str) -> str | None:
        """An enumeration value's member name (e.g. 'generator'), or None."""
        if obj is None or qname not in obj.attrs:
            return None
        v = self._cimpy(obj, qname)
        if isinstance(v, str) and v:
            return v.rsplit(".", 1)[-1]
        return obj.attrs[qname].rsplit(".", 1)[-1]

    def flag(self, obj: _Obj | None, qname: str) -> bool:
        """A boolean attribute (absent -> False)."""
        if obj is None:
            return False
        return obj.attrs.get(qname, "").strip().lower() == "true"

    def ref(self, obj: _Obj | None, qname: str) -> _Obj | None:
        """The object a reference points to, if some file defines it."""
        if obj is None:
            return None
        target = obj.refs.get(qname)
        t = self.index.objects.get(target) if target else None
        return t if t is not None and t.defined else None


class _Tracked(io.BytesIO):
    """A file for cimpy that records itself as the one being read, to name a file cimpy fails on."""

    # Shared by the instances of one cim_import call; imports are not run from several threads.
    current: list[str] = [""]

    def __init__(self, src: SourceFile) -> None:
        super().__init__(src.data)
        self.name = src.name

    def read(self, size: int | None = -1, /) -> bytes:
        _Tracked.current[0] = self.name
        return super().read(size)


@contextlib.contextmanager
def _quiet_cimpy() -> Iterator[None]:
    """cimpy logs one warning per unresolved object; our report says the same with file and line."""
    lg = logging.getLogger("cimpy")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


_INT_ATTRS: dict[tuple[str, str], bool] = {}
_INTEGRAL = re.compile(r"^\s*[-+]?\d+\.0*\s*$")


def _cimpy_int(cls: str, attr: str) -> bool:
    """True when cimpy's class `cls` holds `attr` as an int (its default value is an int)."""
    key = (cls, attr)
    if key not in _INT_ATTRS:
        try:
            module = importlib.import_module(f"cimpy.cgmes_v2_4_15.{cls}")
            default = getattr(getattr(module, cls)(), attr, None)
        except (ImportError, AttributeError, TypeError):
            default = None
        _INT_ATTRS[key] = type(default) is int
    return _INT_ATTRS[key]


def _for_cimpy(root: Any) -> tuple[bytes, int]:
    """The document as cimpy can read it, and how many values had to be rewritten for that.

    cimpy 1.1.0 converts a value with the type of its class default and catches only TypeError,
    so a valid "10.000000" for an int attribute (TapChanger.neutralStep in the MicroGrid EQ) stops
    the whole import with ValueError. Integral values of int attributes are given as "10".
    """
    fixed = 0
    for el in root:
        if not isinstance(el.tag, str):
            continue
        cls = _local(el.tag)[1]
        for child in el:
            text = child.text
            if not isinstance(child.tag, str) or text is None or not _INTEGRAL.match(text):
                continue
            attr = _local(child.tag)[1].rsplit(".", 1)[-1]
            if _cimpy_int(cls, attr):
                child.text = str(int(float(text)))
                fixed += 1
    return etree.tostring(root, xml_declaration=True, encoding="utf-8"), fixed


def _run_cimpy(
    sources: Sequence[SourceFile], index: _Index, notes: list[str]
) -> tuple[dict[str, Any], set[str]]:
    """cimpy's objects for the CGMES 2.4.15 files keyed by rdf:ID, and the files cimpy read.

    Should cimpy still stop on a file, that file is left to the lxml reader and named in the
    notes, and cimpy reads the others.
    """
    import cimpy

    by_ns: dict[str, list[SourceFile]] = defaultdict(list)
    infos = {f.name: f for f in index.files}
    fixed = 0
    for s in sources:
        info = infos[s.name]
        if info.used and info.version == "2.4.15":
            data, n = _for_cimpy(index.trees[s.name])
            fixed += n
            by_ns[info.namespace].append(SourceFile(s.name, data, s.boundary))
    if fixed:
        notes.append(
            f"{fixed} integral value(s) such as '10.000000' of int attributes given to cimpy "
            f"{_cimpy_version()} as integers (it converts them with int() and stops otherwise)"
        )
    topology: dict[str, Any] = {}
    read: set[str] = set()
    # cimpy takes the CIM namespace from the first file only, so each spelling goes in its own call.
    for files in by_ns.values():
        todo = list(files)
        while todo:
            result: dict[str, Any] = {"meta_info": {}, "topology": dict(topology)}
            _Tracked.current[0] = ""
            try:
                with _quiet_cimpy():
                    result = cimpy.cim_import([_Tracked(s) for s in todo], "cgmes_v2_4_15", result)
            except Exception as e:  # cimpy has no error types of its own
                bad = _Tracked.current[0] or todo[-1].name
                notes.append(
                    f"{bad}: cimpy {_cimpy_version()} failed on this file ({e!r}); read with lxml"
                )
                todo = [s for s in todo if s.name != bad]
                continue
            topology = result["topology"]
            read.update(s.name for s in todo)
            break
    return topology, read


# --- building the site ------------------------------------------------------------------------


@dataclass
class _Candidate:
    eq: _Obj
    kind: ResourceKind
    unit: _Obj | None
    limits: dict[str, float]
    notes: list[str]


class _Builder:
    def __init__(self, index: _Index, values: _Values, report: ImportReport) -> None:
        self.ix = index
        self.v = values
        self.report = report
        self.terminals: dict[str, list[_Obj]] = defaultdict(list)
        self.sv: dict[str, _Obj] = {}
        self.pe_units: dict[str, list[_Obj]] = defaultdict(list)
        self.machine_of_unit: dict[str, _Obj] = {}
        for o in index.objects.values():
            if not o.defined:
                continue
            if o.cls == "Terminal" and (ce := o.refs.get("Terminal.ConductingEquipment")):
                self.terminals[ce].append(o)
            elif o.cls == "SvPowerFlow" and (t := o.refs.get("SvPowerFlow.Terminal")):
                self.sv[t] = o
            elif o.cls in PE_UNIT_CLASSES and (
                pec := o.refs.get("PowerElectronicsUnit.PowerElectronicsConnection")
            ):
                self.pe_units[pec].append(o)
            elif o.cls in MACHINE_CLASSES and (gu := o.refs.get("RotatingMachine.GeneratingUnit")):
                self.machine_of_unit[gu] = o
        for ts in self.terminals.values():
            ts.sort(key=lambda t: (self._seq(t), t.mrid))

    def _seq(self, t: _Obj) -> float:
        for q in ("ACDCTerminal.sequenceNumber", "Terminal.sequenceNumber"):
            n = self.v.num(t, q)
            if n is not None:
                return n
        return 0.0

    def skip(self, o: _Obj, reason: str) -> None:
        self.report.skipped.append(SkippedEntry(o.cls, o.mrid, o.name, reason))

    # -- which objects become resources, of which kind, with which limits --

    def candidates(self) -> list[_Candidate]:
        out: list[_Candidate] = []
        objs = sorted(
            (o for o in self.ix.objects.values() if o.defined), key=lambda o: (o.name, o.mrid)
        )
        for o in objs:
            c: _Candidate | None = None
            if o.cls in MACHINE_CLASSES:
                c = self._machine(o)
            elif o.cls in LOAD_CLASSES:
                c = _Candidate(o, ResourceKind.LOAD, None, {}, [])
            elif o.cls in EQUIVALENT_CLASSES:
                c = self._equivalent(o)
            elif o.cls == PEC_CLASS:
                c = self._pec(o)
            elif o.cls in GENERATING_UNIT_CLASSES and o.mrid not in self.machine_of_unit:
                self.skip(o, "no RotatingMachine refers to this unit: no terminal and no P/Q state")
            elif (
                o.cls in PE_UNIT_CLASSES
                and self.v.ref(o, "PowerElectronicsUnit.PowerElectronicsConnection") is None
            ):
                self.skip(o, "no PowerElectronicsConnection: no terminal and no P/Q state")
            elif o.cls == "EnergySource":
                self.skip(o, "a generic source equivalent, not a resource the VPP can act on")
            if c is not None:
                out.append(c)
        return out

    def _q_limits(self, eq: _Obj, lim: dict[str, float], notes: list[str], owner: str) -> None:
        qmin, qmax = self.v.num(eq, f"{owner}.minQ"), self.v.num(eq, f"{owner}.maxQ")
        rated = self.v.num(eq, "RotatingMachine.ratedS") or self.v.num(
            eq, "PowerElectronicsConnection.ratedS"
        )
        if qmin is not None and qmax is not None:
            lim["q_min_kvar"], lim["q_max_kvar"] = mw_to_kw(qmin), mw_to_kw(qmax)
        elif rated:
            lim["q_min_kvar"], lim["q_max_kvar"] = mw_to_kw(-rated), mw_to_kw(rated)
            notes.append("no minQ/maxQ: Q limits taken as +/- ratedS")

    def _machine(self, o: _Obj) -> _Candidate | None:
        unit = self.v.ref(o, "RotatingMachine.GeneratingUnit")
        lim: dict[str, float] = {}
        notes: list[str] = []
        if unit is None:
            mtype = self.v.enum(o, "AsynchronousMachine.asynchronousMachineType")
            if o.cls == "AsynchronousMachine" and mtype == "motor":
                return _Candidate(o, ResourceKind.LOAD, None, lim, ["asynchronous motor: a load"])
            smtype = self.v.enum(o, "SynchronousMachine.type")
            why = "a synchronous condenser" if smtype == "condenser" else "no GeneratingUnit"
            self.skip(o, f"{why}: nothing to say its kind or active power limits")
            return None
        kind, note = kind_for_generating_unit(unit.cls)
        if note:
            notes.append(f"{unit.cls}: {note}")
        pmin = self.v.num(unit, "GeneratingUnit.minOperatingP")
        pmax = self.v.num(unit, "GeneratingUnit.maxOperatingP")
        if pmax is None:
            rated = self.v.num(o, "RotatingMachine.ratedS")
            if rated:
                pmax = rated
                notes.append("no maxOperatingP: P max taken as ratedS")
        if pmax is not None:
            lim["p_min_kw"], lim["p_max_kw"] = mw_to_kw(pmin or 0.0), mw_to_kw(pmax)
        if o.cls == "SynchronousMachine":
            self._q_limits(o, lim, notes, "SynchronousMachine")
        return _Candidate(o, kind, unit, lim, notes)

    def _equivalent(self, o: _Obj) -> _Candidate:
        lim: dict[str, float] = {}
        pmin, pmax = self.v.num(o, f"{o.cls}.minP"), self.v.num(o, f"{o.cls}.maxP")
        if pmin is not None and pmax is not None:
            lim["p_min_kw"], lim["p_max_kw"] = mw_to_kw(pmin), mw_to_kw(pmax)
        self._q_limits(o, lim, [], o.cls)
        return _Candidate(o, ResourceKind.METER, None, lim, [])

    def _pec(self, o: _Obj) -> _Candidate | None:
        units = self.pe_units.get(o.mrid, [])
        if not units:
            self.skip(o, "no PowerElectronicsUnit refers to this connection: kind unknown")
            return None
        unit = units[0]
        kind = kind_for_pe_unit(unit.cls)
        notes: list[str] = []
        if kind is None:  # pragma: no cover - pe_units only holds classes we map
            self.skip(o, f"unit class {unit.cls} is not mapped")
            return None
        if len(units) > 1:
            others = ", ".join(f"{u.cls} {u.mrid}" for u in units[1:])
            notes.append(f"several units on one connection: kind from {unit.cls}; also {others}")
        lim: dict[str, float] = {}
        pmin = self.v.num(unit, "PowerElectronicsUnit.minP")
        pmax = self.v.num(unit, "PowerElectronicsUnit.maxP")
        if pmin is not None and pmax is not None:
            lim["p_min_kw"], lim["p_max_kw"] = mw_to_kw(pmin), mw_to_kw(pmax)
        self._q_limits(o, lim, notes, "PowerElectronicsConnection")
        rated_e = self.v.num(unit, "BatteryUnit.ratedE")
        if rated_e:
            lim["energy_capacity_kwh"] = mw_to_kw(rated_e)
        return _Candidate(o, kind, unit, lim, notes)

    # -- resources, bindings and measurements --

    def build(
        self, vpp_id: str
    ) -> tuple[list[Resource], dict[str, ResourceBinding], dict[str, tuple[Resource, _Obj | None]]]:
        taken: set[str] = set()
        resources: list[Resource] = []
        bindings: dict[str, ResourceBinding] = {}
        owners: dict[str, tuple[Resource, _Obj | None]] = {}  # equipment or unit mRID -> resource
        note_classes: set[str] = set()
        for c in self.candidates():
            eq = c.eq
            limits = self._limits(c)
            rid = make_ident(eq.name, _ID_PREFIX.get(c.kind, "RES"), taken)
            try:
                res = Resource(id=rid, mrid=eq.mrid, name=eq.name, kind=c.kind, limits=limits)
            except ValidationError as e:
                taken.discard(rid)
                msg = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
                self.skip(eq, f"not accepted by the site model: {msg}")
                continue
            for n in c.notes:
                self.report.notes.append(f"{eq.element()} ({rid}): {n}")
            if eq.cls in EQUIVALENT_CLASSES and eq.cls not in note_classes:
                self.report.notes.append(
                    f"{eq.cls}: mapped to kind meter (an equivalent of a network outside the model: "
                    "P/Q are measured, not dispatched)"
                )
            if eq.cls in LOAD_CLASSES and eq.cls not in note_classes:
                self.report.notes.append(
                    f"{eq.cls}: CIM gives no P/Q limits for loads; limits left at 0, "
                    "set them in the site file before dispatching"
                )
            note_classes.add(eq.cls)
            b = self._binding(res, c)
            resources.append(res)
            bindings[eq.mrid] = b
            owners[eq.mrid] = (res, None)
            if c.unit is not None:
                owners[c.unit.mrid] = (res, c.unit)
            self.report.imported[eq.cls] = self.report.imported.get(eq.cls, 0) + 1
            self.report.kinds[c.kind.value] = self.report.kinds.get(c.kind.value, 0) + 1
        return resources, bindings, owners

    def _limits(self, c: _Candidate) -> Limits:
        lim = dict(c.limits)
        for lo, hi in (("p_min_kw", "p_max_kw"), ("q_min_kvar", "q_max_kvar")):
            if lo in lim and lim[lo] > lim[hi]:
                c.notes.append(f"{lo} {lim[lo]} is above {hi} {lim[hi]}: both dropped")
                del lim[lo], lim[hi]
        return Limits(**lim)

    def _binding(self, res: Resource, c: _Candidate) -> ResourceBinding:
        eq = c.eq
        b = ResourceBinding(res.id, eq.mrid, eq.cls, c.kind.value, eq.name)
        if c.unit is not None:
            b.unit_mrid, b.unit_class = c.unit.mrid, c.unit.cls
        terms = self.terminals.get(eq.mrid, [])
        if terms:
            t = terms[0]
            b.terminal = t.mrid
            b.connectivity_node = t.refs.get("Terminal.ConnectivityNode")
            b.topological_node = t.refs.get("Terminal.TopologicalNode")
            sv = self.sv.get(t.mrid)
            if sv is not None:
                p, q = self.v.num(sv, "SvPowerFlow.p"), self.v.num(sv, "SvPowerFlow.q")
                b.sv_p_kw = from_cim_power(p) if p is not None else None
                b.sv_q_kvar = from_cim_power(q) if q is not None else None
        pq = pq_attributes(eq.cls)
        if pq is not None:
            p, q = self.v.num(eq, pq[0]), self.v.num(eq, pq[1])
            b.ssh_p_kw = from_cim_power(p) if p is not None else None
            b.ssh_q_kvar = from_cim_power(q) if q is not None else None
        if c.unit is not None and c.unit.cls == "BatteryUnit":
            rated = self.v.num(c.unit, "BatteryUnit.ratedE")
            stored = self.v.num(c.unit, "BatteryUnit.storedE")
            b.rated_e_kwh = mw_to_kw(rated) if rated else None
            if rated and stored is not None:
                b.soc_pct = stored / rated * 100.0
        return b

    def measurements(
        self,
        vpp_id: str,
        resources: list[Resource],
        bindings: dict[str, ResourceBinding],
        owners: dict[str, tuple[Resource, _Obj | None]],
    ) -> list[Resource]:
        """Bind measurements to points; resources come back with their extra points added."""
        extra: dict[str, list[ExtraPoint]] = defaultdict(list)
        taken: dict[str, MeasurementEntry] = {}  # point ref -> the measurement bound to it
        counters: Counter[str] = Counter()
        term_owner = {t.mrid: eq_mrid for eq_mrid, ts in self.terminals.items() for t in ts}
        objs = sorted(
            (o for o in self.ix.objects.values() if o.defined and o.cls in MEASUREMENT_CLASSES),
            key=lambda o: o.mrid,
        )
        for m in objs:
            mtype = m.attrs.get("Measurement.measurementType", "")
            entry = MeasurementEntry(m.cls, m.mrid, m.name, mtype)
            psr = m.refs.get("Measurement.PowerSystemResource")
            term = m.refs.get("Measurement.Terminal")
            by_psr = owners[psr][0] if psr is not None and psr in owners else None
            eq_of_term = term_owner.get(term) if term is not None else None
            by_term = owners[eq_of_term][0] if eq_of_term in owners else None
            if by_psr is not None and by_term is not None and by_psr.id != by_term.id:
                self.report.twice_bound.append(
                    _with(entry, f"PowerSystemResource is {by_psr.id}, Terminal is of {by_term.id}")
                )
                continue
            res = by_psr or by_term
            if res is None:
                if not psr and not term:
                    why = "no PowerSystemResource and no Terminal"
                else:
                    target = self.ix.objects.get(psr or term or "")
                    what = target.element() if target else f"{psr or term} (not in the files)"
                    why = f"refers to {what}, which is not an imported resource"
                self.report.unbound.append(_with(entry, why))
                continue
            counters[res.id] += 1
            tgt = measurement_target(m.cls, mtype, res.kind, counters[res.id])
            ref: str | None = None
            if tgt.role is not None:
                ref = res.ref(vpp_id, tgt.role)
                if ref is None:  # the nature has no such point: keep it as an extra analog
                    tgt = measurement_target(m.cls, "", res.kind, counters[res.id])
            if ref is None:
                path = tgt.path or f"GGIO1.AnIn{counters[res.id]}.mag.f"
                used = {e.path for e in extra[res.id]}
                if path in used:
                    path = f"GGIO1.AnIn{counters[res.id]}.mag.f"
                ref = f"{vpp_id}.{res.id}/{path}"
                if path not in used:
                    extra[res.id].append(
                        ExtraPoint(
                            path=path,
                            dtype=tgt.dtype,
                            unit=tgt.unit,
                            description=f"CIM {m.cls} {m.name!r} ({mtype or 'no type'}) {m.mrid}",
                        )
                    )
            if ref in taken:
                self.report.twice_bound.append(
                    _with(entry, f"{ref} is already bound to {taken[ref].cls} {taken[ref].mrid}")
                )
                continue
            scale = measurement_scale(
                self.v.enum(m, "Measurement.unitSymbol"),
                self.v.enum(m, "Measurement.unitMultiplier"),
                self.v.flag(m, "Analog.positiveFlowIn"),
                tgt.role,
            )
            bound = MeasurementEntry(m.cls, m.mrid, m.name, mtype, ref, scale)
            taken[ref] = bound
            self.report.bound.append(bound)
            bindings[res.mrid].measurements.append(bound)
        return [
            r.model_copy(update={"points": [*r.points, *extra[r.id]]}) if extra[r.id] else r
            for r in resources
        ]


def _with(e: MeasurementEntry, reason: str) -> MeasurementEntry:
    return MeasurementEntry(e.cls, e.mrid, e.name, e.measurement_type, reason=reason)


# --- entry point ------------------------------------------------------------------------------


def import_cgmes(
    files: Iterable[str | Path | SourceFile],
    boundary: Iterable[str | Path | SourceFile] = (),
    *,
    vpp_id: str = "VPP1",
    site_id: str = "CGMES",
    site_name: str = "",
    strict: bool = False,
) -> CgmesImport:
    """Import CGMES files (XML or zip) into a validated site; nothing is written here.

    Raises CgmesSyntaxError (not well-formed), CgmesProfileError (unknown profile or version),
    CgmesDuplicateError (an mRID or a model given twice), and in strict mode CgmesReferenceError
    (references to objects no file defines; otherwise they are report entries).
    """
    sources: list[SourceFile] = []
    for group, is_bd in ((files, False), (boundary, True)):
        for item in group:
            if isinstance(item, SourceFile):
                sources.append(SourceFile(item.name, item.data, is_bd or item.boundary))
            else:
                sources.extend(read_sources([item], boundary=is_bd))
    if not sources:
        raise CgmesImportError([CimIssue("(arguments)", None, "", "no CGMES files given")])
    index = _Index()
    for s in sources:
        index.add(s)
    used = [f for f in index.files if f.used]
    versions = sorted({f.version for f in used})
    if len(versions) > 1:
        raise CgmesProfileError(
            [CimIssue(f.name, None, "rdf:RDF", f"CGMES {f.version} ({f.namespace})") for f in used],
            "the input files: they mix CGMES versions",
        )
    index.check()
    dangling = index.dangling()
    if strict and dangling:
        raise CgmesReferenceError(dangling, "the references between the input files")
    cgmes_version = versions[0] if versions else ""
    cimpy_notes: list[str] = []
    topology, cimpy_files = (
        _run_cimpy(sources, index, cimpy_notes) if cgmes_version == "2.4.15" else ({}, set())
    )

    report = ImportReport(cgmes_version=cgmes_version, dangling=dangling)
    report.class_conflicts = index.conflicts
    cimpy_reader = f"cimpy {_cimpy_version()}"
    for f in index.files:
        reader = "skipped" if not f.used else cimpy_reader if f.name in cimpy_files else "lxml"
        report.files.append(
            {"name": f.name, "kinds": sorted(f.kinds), "profiles": f.profiles, "reader": reader}
        )
    for name, why in index.skipped_files:
        report.notes.append(f"{name}: {why}")
    report.notes.extend(cimpy_notes)
    found: Counter[str] = Counter()
    lxml_read: Counter[str] = Counter()
    for o in index.objects.values():
        if o.defined:
            found[o.cls] += 1
            if o.mrid not in topology:
                lxml_read[o.cls] += 1
    report.found = dict(sorted(found.items()))
    report.read_with_lxml = dict(sorted(lxml_read.items()))
    if cgmes_version == "3.0":
        report.notes.append(
            f"CGMES 3.0: cimpy {_cimpy_version()} has no 3.0 classes (only cgmes_v2_4_15); "
            "every 3.0 file was read with lxml"
        )
    elif lxml_read:
        report.notes.append(
            f"cimpy {_cimpy_version()} has no class for: {', '.join(sorted(lxml_read))}; "
            "those objects were read with lxml"
        )

    values = _Values(index, topology, cimpy_files)
    builder = _Builder(index, values, report)
    resources, bindings, owners = builder.build(vpp_id)
    resources = builder.measurements(vpp_id, resources, bindings, owners)
    report.notes.extend(values.notes)
    try:
        site = SiteConfig.model_validate(
            {
                "site": {"id": site_id, "name": site_name},
                "vpps": [{"id": vpp_id, "name": site_name, "resources": resources}],
            }
        )
    except ValidationError as e:  # a bad --site-id or --vpp-id: resource ids are made valid above
        raise SiteConfigError(
            [
                ConfigIssue("<imported site>", None, ".".join(map(str, err["loc"])), err["msg"])
                for err in e.errors()
            ]
        ) from e
    models: dict[str, list[str]] = defaultdict(list)
    for f in used:
        if f.model_id:
            for k in sorted(f.kinds):
                models[k].append(f.model_id)
    namespace = used[0].namespace if used else ""
    result = CgmesImport(site, vpp_id, cgmes_version, bindings, dict(models), report, namespace)
    result.site_yaml()  # validate through parse_site now, so that a caller never gets a bad site
    return result
