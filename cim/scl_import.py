"""IEC 61850-6 SCL import: ICD/CID/SCD files -> site resources, points and an MMS driver per IED.

Reading. lxml parses each file (line numbers kept for every element). The reader takes IEDs, their
access points, logical devices (inst, ldName), logical nodes (prefix/lnClass/inst/lnType) with
their DOI/SDI/DAI initial values, data sets and report control blocks, the DataTypeTemplates
(LNodeType, DOType with DA and SDO, DAType with BDA, EnumType) and the Communication section
(ConnectedAP addresses: IP, IP-SUBNET, IP-GATEWAY, MMS-Port). Every problem is collected before
anything is raised, each naming its file, line and element: a required attribute that is absent
(IEC 61850-6 makes `name` required on IED and AccessPoint, `inst` on LDevice, `lnClass`,
`lnType` and `inst` on LN), a reference to a template that DataTypeTemplates does not hold,
duplicate names or ids.

Mapping (the IEC/TS 62361-102 direction: a CIM resource <-> an IEC 61850 logical device). Each
logical device becomes one resource. Its kind comes from its logical node classes (IEC 61850-7-420
DER nodes and 61400-25 wind nodes; see KIND_BY_LN_CLASS), or from a `<Private
type="vpp-gateway:kind">` element; a device with only measurement nodes is a meter; one with DER
control nodes (DRCC, DRCT...) but no generating or storage node is a controllable load; one with
neither (LLN0, LPHD, GGIO only) is skipped with the reason. The device is bound to a resource, in
this order: an explicit `--map LD=VPP.RES`; the CIM mRID the SCL carries (a `<Private
type="...mRID...">` or `mRID=...` in the desc of the LDevice or its LN0) matched against the site;
the site's existing iec61850 driver, whose point references name the device; otherwise a new
resource (its mRID the SCL's, or a stable UUID derived from IED and device names).

Points. The resource's nature gives its standard points (model.natures); each is bound to the SCL
data object that fits (same logical node, else same class, else a known alias such as WTUR.W for
active power), with the unit conversion taken from the SCL units (SIUnit and multiplier; W with no
multiplier when absent). Every other analogue (MV, CMV, WYE/DEL phases) becomes a read-only extra
point, every APC or ASG set-point a writable one (APC by operate, ASG by a write of setMag).

Nothing is written unless the whole site validates with model.site.parse_site; the file is written
to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lxml import etree

from cim.cgmes_import import write_atomic
from cim.errors import CimIssue
from cim.mapping import make_ident
from cim.scl_errors import (
    SclDuplicateError,
    SclMappingError,
    SclSchemaError,
    SclSyntaxError,
    SclTemplateError,
)
from model.drivers import PROTOCOLS
from model.natures import NATURES, ResourceKind, Role
from model.site import SiteConfig, parse_site

__all__ = [
    "KIND_BY_LN_CLASS",
    "SCL_NAMESPACE",
    "LdOutcome",
    "SclAddress",
    "SclDataObject",
    "SclDocument",
    "SclIED",
    "SclImport",
    "SclImportReport",
    "SclLDevice",
    "SclLeaf",
    "SclLogicalNode",
    "SclTemplates",
    "import_scl",
    "kind_of",
    "mrid_of",
    "parse_map",
    "parse_scl",
    "read_map_file",
]

SCL_NAMESPACE = "http://www.iec.ch/61850/2003/SCL"
_SCL_NAMESPACES = frozenset({SCL_NAMESPACE, ""})
_MAX_DEPTH = 12  # nesting of SDOs and structured DAs; deeper means a template cycle

# Logical node class -> resource kind, strongest first (a storage device also has a ZINV).
# IEC 61850-7-420 (DER), 7-4 (ZBAT, ZINV, MMXU...) and 61400-25-2 (wind) classes.
KIND_BY_LN_CLASS: tuple[tuple[ResourceKind, frozenset[str]], ...] = (
    (ResourceKind.STORAGE, frozenset({"ZBAT", "ZBTC", "DBAT", "DSTO"})),
    (ResourceKind.EV_CHARGER, frozenset({"DEEV", "DESE"})),
    (ResourceKind.WIND, frozenset({"WTUR", "WGEN", "WROT", "WCNV"})),
    (ResourceKind.PV, frozenset({"ZINV", "DPVC", "DPVM", "DPVA", "DPVI", "DPVS"})),
    (ResourceKind.CHP, frozenset({"DGEN", "DCHP", "DCHC", "DCTS", "DCIP", "DFCL"})),
    (ResourceKind.HVAC, frozenset({"KHTR", "KFAN", "STMP"})),
)
_CONTROL_CLASSES = frozenset({"DRCC", "DRCT", "DRCS", "DOPM", "DOPR", "DSCC", "DSCH"})
_MEASUREMENT_CLASSES = frozenset({"MMXU", "MMXN", "MMTR", "MMTN", "MSTA", "MHAI", "MSQI"})
_SYSTEM_CLASSES = frozenset({"LLN0", "LPHD"})

# Where a nature point may come from besides its own logical node class: role -> (class, DO).
_ALIASES: dict[Role, tuple[tuple[str, str], ...]] = {
    Role.P: (("MMXU", "TotW"), ("WTUR", "W"), ("WGEN", "W"), ("MMXN", "Watt")),
    Role.Q: (("MMXU", "TotVAr"), ("WTUR", "VAr"), ("WGEN", "VAr")),
    Role.P_SET: (("DRCC", "WSpt"), ("DRCC", "OutWSet")),
    Role.Q_SET: (("DRCC", "VArSpt"), ("DRCC", "OutVarSet")),
    Role.SOC: (("ZBAT", "SoC"), ("DSTO", "SoC"), ("DBAT", "SoC")),
    Role.STATE: (("DRCT", "DERSt"),),
    Role.TEMP: (("STMP", "Tmp"),),
    Role.ENERGY: (("MMTR", "TotWh"),),
}
# Leaf attribute tried first for the value of a data object, by preference.
_VALUE_LEAVES = (
    "mag.f",
    "mag.i",
    "cVal.mag.f",
    "mxVal.f",
    "mxVal.i",
    "setMag.f",
    "setMag.i",
    "stVal",
    "actVal",
    "setVal",
)
_ANALOGUE_CDCS = frozenset({"MV", "CMV", "SAV"})
_PHASE_CDCS = frozenset({"WYE", "DEL"})
_SETPOINT_CDCS = frozenset({"APC", "ASG", "BAC"})
_FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT64"})
_INT_TYPES = frozenset(
    {"INT8", "INT16", "INT24", "INT32", "INT64", "INT128", "INT8U", "INT16U", "INT24U", "INT32U",
     "Enum", "Dbpos", "Tcmd"}
)  # fmt: skip
# IEC 61850-7-3 SIUnit and multiplier ordinals, for files that give numbers without an EnumType.
_SI_UNITS = {1: "", 5: "A", 23: "degC", 29: "V", 33: "Hz", 38: "W", 61: "VA", 63: "VAr",
             71: "VAh", 72: "Wh", 73: "VArh"}  # fmt: skip
_MULTIPLIERS = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G"}
_PREFIX_POWER = {"n": -9, "u": -6, "µ": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9}
# Model units (model.natures) by base SI unit, with their power of ten.
_MODEL_UNITS = {"kW": ("W", 3), "kvar": ("VAr", 3), "kWh": ("Wh", 3), "%": ("%", 0),
                "degC": ("degC", 0)}  # fmt: skip
_MRID = re.compile(r"\bmRID\s*[=:]\s*([0-9A-Za-z_][0-9A-Za-z\-_.]*)", re.IGNORECASE)
_MRID_NS = uuid.UUID("8f2b3c1e-61a5-4f0e-9c2d-5b7a3e8d1c40")  # namespace of generated mRIDs
_MAP_ENTRY = re.compile(r"^\s*([^=\s]+)\s*=\s*([A-Za-z][A-Za-z0-9_]*)\.([A-Za-z][A-Za-z0-9_]*)\s*$")


# --- the parsed document ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SclAddress:
    """A ConnectedAP's address: where the IED's access point listens."""

    ied: str
    access_point: str
    subnetwork: str
    ip: str | None
    subnet: str | None
    gateway: str | None
    port: int
    line: int | None


@dataclass(frozen=True, slots=True)
class _DA:
    name: str
    btype: str
    fc: str | None  # None for a BDA (it inherits its DA's)
    type: str | None
    count: int
    value: str | None
    line: int | None


@dataclass(frozen=True, slots=True)
class _DOTypeEntry:
    id: str
    cdc: str
    das: tuple[_DA, ...]
    sdos: tuple[tuple[str, str, int | None], ...]  # name, DOType id, line
    line: int | None


@dataclass
class SclTemplates:
    """DataTypeTemplates of one file."""

    file: str
    line: int | None = None
    lnode_types: dict[str, tuple[str, list[tuple[str, str, int | None]], int | None]] = field(
        default_factory=dict
    )  # id -> (lnClass, [(DO name, DOType id, line)], line)
    do_types: dict[str, _DOTypeEntry] = field(default_factory=dict)
    da_types: dict[str, tuple[tuple[_DA, ...], int | None]] = field(default_factory=dict)
    enum_types: dict[str, tuple[dict[int, str], int | None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SclLeaf:
    """A leaf data attribute under a data object: path below the LN, FC and basic type."""

    path: str  # DO[.SDO].DA[.BDA], e.g. "TotW.mag.f"
    fc: str
    btype: str
    enum_type: str | None
    default: str | None


@dataclass
class SclDataObject:
    """A data object of a logical node instance, expanded through the templates."""

    name: str
    path: str  # below the LN: 'TotW', or 'PhV.phsA' for a sub data object
    cdc: str
    type_id: str
    leaves: list[SclLeaf]
    sdos: dict[str, SclDataObject]
    desc: str = ""

    def leaf(self, path: str) -> SclLeaf | None:
        """The leaf at `path` below this data object (e.g. 'mag.f'), if any."""
        full = f"{self.path}.{path}"
        return next((lf for lf in self.leaves if lf.path == full), None)

    @property
    def controllable(self) -> bool:
        """True when the object has an Oper structure (FC CO)."""
        return any(lf.fc == "CO" and lf.path.startswith(f"{self.path}.Oper.") for lf in self.leaves)


@dataclass
class SclLogicalNode:
    """A logical node instance (LN0 or LN) with its initial values, data sets and report blocks."""

    prefix: str
    ln_class: str
    inst: str
    ln_type: str
    desc: str
    line: int | None
    values: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # DOI path -> value
    datasets: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # name -> [(ref, fc)]
    reports: list[dict[str, Any]] = field(default_factory=list)
    privates: list[tuple[str, str]] = field(default_factory=list)
    data: dict[str, SclDataObject] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """prefix + lnClass + inst, e.g. 'MMXU1' or 'LLN0'."""
        return f"{self.prefix}{self.ln_class}{self.inst}"


@dataclass
class SclLDevice:
    """A logical device of an IED's server."""

    ied: str
    inst: str
    ld_name: str  # the MMS domain: ldName, else IED name + inst
    desc: str
    line: int | None
    file: str
    access_point: str
    lns: list[SclLogicalNode] = field(default_factory=list)
    privates: list[tuple[str, str]] = field(default_factory=list)

    def ln(self, name: str) -> SclLogicalNode | None:
        """The logical node called `name`, if any."""
        return next((n for n in self.lns if n.name == name), None)

    @property
    def classes(self) -> set[str]:
        """Logical node classes of this device."""
        return {n.ln_class for n in self.lns}


@dataclass
class SclIED:
    """An IED with its logical devices (over every access point)."""

    name: str
    desc: str
    manufacturer: str
    type: str
    line: int | None
    file: str
    access_points: list[str] = field(default_factory=list)
    lds: list[SclLDevice] = field(default_factory=list)


@dataclass
class SclDocument:
    """Everything read from one or more SCL files."""

    files: list[str] = field(default_factory=list)
    ieds: list[SclIED] = field(default_factory=list)
    addresses: list[SclAddress] = field(default_factory=list)
    templates: dict[str, SclTemplates] = field(default_factory=dict)  # by file
    counts: Counter[str] = field(default_factory=Counter)

    def lds(self) -> Iterator[SclLDevice]:
        """Every logical device of every IED."""
        for ied in self.ieds:
            yield from ied.lds

    def address(self, ied: str) -> SclAddress | None:
        """The first address of an IED (its MMS access point), if the file gives one."""
        return next((a for a in self.addresses if a.ied == ied), None)


# --- reading ------------------------------------------------------------------------------------


def _local(el: Any) -> str | None:
    if not isinstance(el.tag, str):
        return None
    q = etree.QName(el)
    return q.localname if (q.namespace or "") in _SCL_NAMESPACES else None


def _kids(el: Any, *names: str) -> list[Any]:
    return [c for c in el if _local(c) in names]


def _private(el: Any) -> list[tuple[str, str]]:
    out = []
    for p in _kids(el, "Private"):
        text = "".join(p.itertext()).strip()
        out.append((p.get("type", ""), text))
    return out


class _Reader:
    """One pass over the files, collecting issues instead of stopping at the first."""

    def __init__(self) -> None:
        self.doc = SclDocument()
        self.schema: list[CimIssue] = []
        self.template: list[CimIssue] = []
        self.duplicate: list[CimIssue] = []

    def read(self, path: Path) -> None:
        file = str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise SclSyntaxError([CimIssue(file, None, "", f"cannot read: {e.strerror}")]) from e
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
        try:
            root = etree.fromstring(data, parser)
        except etree.XMLSyntaxError as e:
            raise SclSyntaxError(
                [CimIssue(file, e.lineno or None, "", f"not well-formed XML: {e.msg}")], file
            ) from e
        if _local(root) != "SCL":
            raise SclSyntaxError(
                [CimIssue(file, root.sourceline, str(root.tag), "the root element is not SCL")],
                file,
            )
        self.doc.files.append(file)
        tpl_el = _kids(root, "DataTypeTemplates")
        templates = SclTemplates(file)
        for t in tpl_el:
            self._templates(file, t, templates)
        if tpl_el:
            templates.line = tpl_el[0].sourceline
        self.doc.templates[file] = templates
        for comm in _kids(root, "Communication"):
            self._communication(file, comm)
        start = len(self.doc.ieds)
        for ied in _kids(root, "IED"):
            self._ied(file, ied)
        new_lns = [ln for ied in self.doc.ieds[start:] for ld in ied.lds for ln in ld.lns]
        if new_lns and not tpl_el:
            self.template.append(
                CimIssue(
                    file,
                    root.sourceline,
                    "DataTypeTemplates",
                    f"the file has {len(new_lns)} logical node(s) but no DataTypeTemplates section",
                )
            )
        else:
            self._resolve(file, templates, self.doc.ieds[start:])

    # -- Communication --

    def _communication(self, file: str, comm: Any) -> None:
        for sn in _kids(comm, "SubNetwork"):
            for cap in _kids(sn, "ConnectedAP"):
                ied, ap = cap.get("iedName"), cap.get("apName")
                if not ied or not ap:
                    self.schema.append(
                        CimIssue(
                            file,
                            cap.sourceline,
                            "ConnectedAP",
                            "required attribute 'iedName' or 'apName' is missing",
                        )
                    )
                    continue
                params: dict[str, str] = {}
                for addr in _kids(cap, "Address"):
                    for p in _kids(addr, "P"):
                        params[p.get("type", "")] = (p.text or "").strip()
                port = 102
                raw_port = params.get("MMS-Port") or params.get("TCP-Port")
                if raw_port:
                    try:
                        port = int(raw_port)
                    except ValueError:
                        self.schema.append(
                            CimIssue(
                                file,
                                cap.sourceline,
                                f"ConnectedAP {ied}/{ap}",
                                f"MMS port {raw_port!r} is not a number",
                            )
                        )
                self.doc.addresses.append(
                    SclAddress(
                        ied,
                        ap,
                        sn.get("name", ""),
                        params.get("IP"),
                        params.get("IP-SUBNET"),
                        params.get("IP-GATEWAY"),
                        port,
                        cap.sourceline,
                    )
                )
                self.doc.counts["ConnectedAP"] += 1

    # -- IED / AccessPoint / LDevice / LN --

    def _require(self, file: str, el: Any, attr: str, what: str) -> str | None:
        v = el.get(attr)
        if v is None or (v == "" and attr != "inst"):
            self.schema.append(
                CimIssue(file, el.sourceline, what, f"required attribute '{attr}' is missing")
            )
            return None
        return str(v)

    def _ied(self, file: str, el: Any) -> None:
        self.doc.counts["IED"] += 1
        name = self._require(file, el, "name", "IED")
        if name is None:
            return
        if any(i.name == name for i in self.doc.ieds):
            first = next(i for i in self.doc.ieds if i.name == name)
            self.duplicate.append(
                CimIssue(
                    file,
                    el.sourceline,
                    f"IED {name}",
                    f"duplicate IED name: also at {first.file}:{first.line}",
                )
            )
            return
        ied = SclIED(
            name,
            el.get("desc", ""),
            el.get("manufacturer", ""),
            el.get("type", ""),
            el.sourceline,
            file,
        )
        self.doc.ieds.append(ied)
        for ap in _kids(el, "AccessPoint"):
            self.doc.counts["AccessPoint"] += 1
            ap_name = self._require(file, ap, "name", f"AccessPoint in IED {name}")
            ap_name = ap_name or ""
            ied.access_points.append(ap_name)
            for server in _kids(ap, "Server"):
                for ld in _kids(server, "LDevice"):
                    self._ldevice(file, ied, ap_name, ld)

    def _ldevice(self, file: str, ied: SclIED, ap: str, el: Any) -> None:
        self.doc.counts["LDevice"] += 1
        inst = self._require(file, el, "inst", f"LDevice in IED {ied.name}")
        if inst is None:
            return
        ld_name = el.get("ldName") or f"{ied.name}{inst}"
        prior = next((d for d in ied.lds if d.inst == inst), None)
        if prior is not None:
            self.duplicate.append(
                CimIssue(
                    file,
                    el.sourceline,
                    f"LDevice {inst} in IED {ied.name}",
                    f"duplicate LDevice inst: also at line {prior.line}",
                )
            )
            return
        ld = SclLDevice(
            ied.name, inst, ld_name, el.get("desc", ""), el.sourceline, file, ap, [], _private(el)
        )
        ied.lds.append(ld)
        for ln_el in _kids(el, "LN0", "LN"):
            self._ln(file, ied, ld, ln_el)

    def _ln(self, file: str, ied: SclIED, ld: SclLDevice, el: Any) -> None:
        self.doc.counts["LN"] += 1
        is0 = _local(el) == "LN0"
        where = f"{'LN0' if is0 else 'LN'} in LDevice {ld.inst} of IED {ied.name}"
        ln_class = self._require(file, el, "lnClass", where)
        ln_type = self._require(file, el, "lnType", where)
        inst = "" if is0 else self._require(file, el, "inst", where)
        if ln_class is None or ln_type is None or inst is None:
            return
        ln = SclLogicalNode(
            el.get("prefix", "") or "",
            ln_class,
            inst,
            ln_type,
            el.get("desc", ""),
            el.sourceline,
            privates=_private(el),
        )
        prior = ld.ln(ln.name)
        if prior is not None:
            self.duplicate.append(
                CimIssue(
                    file,
                    el.sourceline,
                    f"LN {ln.name} in LDevice {ld.inst} of IED {ied.name}",
                    f"duplicate logical node name: also at line {prior.line}",
                )
            )
            return
        ld.lns.append(ln)
        for doi in _kids(el, "DOI"):
            self._doi(file, ln, doi, doi.get("name", ""))
        for ds in _kids(el, "DataSet"):
            entries = []
            for fcda in _kids(ds, "FCDA"):
                ref = _fcda_ref(ied.name, fcda)
                if ref is not None:
                    entries.append((ref, fcda.get("fc", "")))
            ln.datasets[ds.get("name", "")] = entries
        for rc in _kids(el, "ReportControl"):
            max_en = 1
            for r in _kids(rc, "RptEnabled"):
                try:
                    max_en = int(r.get("max", "1"))
                except ValueError:
                    max_en = 1
            ln.reports.append(
                {
                    "name": rc.get("name", ""),
                    "dataset": rc.get("datSet", ""),
                    "buffered": rc.get("buffered", "false").lower() == "true",
                    "indexed": rc.get("indexed", "true").lower() == "true",
                    "max": max_en,
                    "rpt_id": rc.get("rptID", ""),
                    "line": rc.sourceline,
                }
            )

    def _doi(self, file: str, ln: SclLogicalNode, el: Any, path: str) -> None:
        for child in el:
            kind = _local(child)
            if kind in ("SDI", "DAI"):
                sub = f"{path}.{child.get('name', '')}"
                if kind == "DAI":
                    vals = _kids(child, "Val")
                    if vals:
                        ln.values[sub] = ((vals[0].text or "").strip(), child.sourceline)
                        self.doc.counts["DAI"] += 1
                else:
                    self._doi(file, ln, child, sub)
        if _local(el) == "DOI" and el.get("desc"):
            ln.values[f"{path}.@desc"] = (el.get("desc", ""), el.sourceline)

    # -- DataTypeTemplates --

    def _templates(self, file: str, el: Any, t: SclTemplates) -> None:
        def dup(kind: str, id_: str, line: int | None, first: int | None) -> None:
            self.duplicate.append(
                CimIssue(file, line, f"{kind} {id_}", f"duplicate id: also at line {first}")
            )

        for lt in _kids(el, "LNodeType"):
            id_ = self._require(file, lt, "id", "LNodeType")
            cls = self._require(file, lt, "lnClass", f"LNodeType {id_}")
            if id_ is None or cls is None:
                continue
            if id_ in t.lnode_types:
                dup("LNodeType", id_, lt.sourceline, t.lnode_types[id_][2])
                continue
            dos = []
            for d in _kids(lt, "DO"):
                n = self._require(file, d, "name", f"DO in LNodeType {id_}")
                ty = self._require(file, d, "type", f"DO {n} in LNodeType {id_}")
                if n and ty:
                    dos.append((n, ty, d.sourceline))
            t.lnode_types[id_] = (cls, dos, lt.sourceline)
        for dt in _kids(el, "DOType"):
            id_ = self._require(file, dt, "id", "DOType")
            cdc = self._require(file, dt, "cdc", f"DOType {id_}")
            if id_ is None or cdc is None:
                continue
            if id_ in t.do_types:
                dup("DOType", id_, dt.sourceline, t.do_types[id_].line)
                continue
            das = tuple(self._da(file, d, f"DOType {id_}", True) for d in _kids(dt, "DA"))
            sdos = []
            for s in _kids(dt, "SDO"):
                n = self._require(file, s, "name", f"SDO in DOType {id_}")
                ty = self._require(file, s, "type", f"SDO {n} in DOType {id_}")
                if n and ty:
                    sdos.append((n, ty, s.sourceline))
            t.do_types[id_] = _DOTypeEntry(
                id_, cdc, tuple(d for d in das if d), tuple(sdos), dt.sourceline
            )
        for at in _kids(el, "DAType"):
            id_ = self._require(file, at, "id", "DAType")
            if id_ is None:
                continue
            if id_ in t.da_types:
                dup("DAType", id_, at.sourceline, t.da_types[id_][1])
                continue
            bdas = tuple(self._da(file, d, f"DAType {id_}", False) for d in _kids(at, "BDA"))
            t.da_types[id_] = (tuple(b for b in bdas if b), at.sourceline)
        for et in _kids(el, "EnumType"):
            id_ = self._require(file, et, "id", "EnumType")
            if id_ is None:
                continue
            if id_ in t.enum_types:
                dup("EnumType", id_, et.sourceline, t.enum_types[id_][1])
                continue
            vals: dict[int, str] = {}
            for ev in _kids(et, "EnumVal"):
                try:
                    vals[int(ev.get("ord", ""))] = (ev.text or "").strip()
                except ValueError:
                    self.schema.append(
                        CimIssue(
                            file, ev.sourceline, f"EnumVal in EnumType {id_}", "ord is not a number"
                        )
                    )
            t.enum_types[id_] = (vals, et.sourceline)

    def _da(self, file: str, el: Any, owner: str, needs_fc: bool) -> _DA | None:
        kind = "DA" if needs_fc else "BDA"
        name = self._require(file, el, "name", f"{kind} in {owner}")
        btype = self._require(file, el, "bType", f"{kind} {name} in {owner}")
        fc = self._require(file, el, "fc", f"{kind} {name} in {owner}") if needs_fc else None
        if name is None or btype is None or (needs_fc and fc is None):
            return None
        if btype in ("Struct", "Enum") and not el.get("type"):
            self.schema.append(
                CimIssue(
                    file,
                    el.sourceline,
                    f"{kind} {name} in {owner}",
                    f"bType {btype} needs a 'type' naming its {'DAType' if btype == 'Struct' else 'EnumType'}",
                )
            )
            return None
        try:
            count = int(el.get("count", "0") or 0)
        except ValueError:
            count = 0
        vals = _kids(el, "Val")
        value = (vals[0].text or "").strip() if vals else None
        return _DA(name, btype, fc, el.get("type"), count, value, el.sourceline)

    # -- resolving LN types through the templates --

    def _resolve(self, file: str, t: SclTemplates, ieds: Sequence[SclIED]) -> None:
        self._check_templates(file, t)
        for ied in ieds:
            for ld in ied.lds:
                for ln in ld.lns:
                    entry = t.lnode_types.get(ln.ln_type)
                    if entry is None:
                        self.template.append(
                            CimIssue(
                                file,
                                ln.line,
                                f"LN {ln.name} (lnClass {ln.ln_class}) in LDevice {ld.inst} of IED {ied.name}",
                                f"lnType {ln.ln_type!r}: no LNodeType with that id in DataTypeTemplates",
                            )
                        )
                        continue
                    for do_name, do_type, _line in entry[1]:
                        self.doc.counts["DO"] += 1
                        dobj = _expand_do(t, do_name, do_type, do_name, 0)
                        if dobj is not None:
                            desc = ln.values.get(f"{do_name}.@desc", ("", None))[0]
                            dobj.desc = desc
                            ln.data[do_name] = dobj

    def _check_templates(self, file: str, t: SclTemplates) -> None:
        for id_, (_cls, dos, _line) in t.lnode_types.items():
            for name, ty, line in dos:
                if ty not in t.do_types:
                    self.template.append(
                        CimIssue(
                            file,
                            line,
                            f"DO {name} in LNodeType {id_}",
                            f"type {ty!r}: no DOType with that id in DataTypeTemplates",
                        )
                    )
        for id_, dt in t.do_types.items():
            for name, ty, line in dt.sdos:
                if ty not in t.do_types:
                    self.template.append(
                        CimIssue(
                            file,
                            line,
                            f"SDO {name} in DOType {id_}",
                            f"type {ty!r}: no DOType with that id in DataTypeTemplates",
                        )
                    )
            for da in dt.das:
                self._check_da_type(file, t, da, f"DA {da.name} in DOType {id_}")
        for id_, (bdas, _line) in t.da_types.items():
            for bda in bdas:
                self._check_da_type(file, t, bda, f"BDA {bda.name} in DAType {id_}")

    def _check_da_type(self, file: str, t: SclTemplates, da: _DA, where: str) -> None:
        if da.btype == "Struct" and da.type not in t.da_types:
            self.template.append(
                CimIssue(
                    file,
                    da.line,
                    where,
                    f"type {da.type!r}: no DAType with that id in DataTypeTemplates",
                )
            )
        elif da.btype == "Enum" and da.type not in t.enum_types:
            self.template.append(
                CimIssue(
                    file,
                    da.line,
                    where,
                    f"type {da.type!r}: no EnumType with that id in DataTypeTemplates",
                )
            )

    def finish(self) -> SclDocument:
        if self.schema:
            raise SclSchemaError(self.schema, "the SCL input (required attributes)")
        if self.duplicate:
            raise SclDuplicateError(self.duplicate, "the SCL input (duplicate names)")
        if self.template:
            raise SclTemplateError(self.template, "the SCL input (DataTypeTemplates)")
        return self.doc


def _fcda_ref(ied: str, el: Any) -> str | None:
    ld, cls, do = el.get("ldInst"), el.get("lnClass"), el.get("doName")
    if not ld or not cls or not do:
        return None
    ln = f"{el.get('prefix', '') or ''}{cls}{el.get('lnInst', '') or ''}"
    da = el.get("daName")
    ref = f"{ied}{ld}/{ln}.{do}"
    return f"{ref}.{da}" if da else ref


def _expand_do(
    t: SclTemplates, name: str, type_id: str, path: str, depth: int
) -> SclDataObject | None:
    dt = t.do_types.get(type_id)
    if dt is None or depth > _MAX_DEPTH:
        return None
    obj = SclDataObject(name, path, dt.cdc, type_id, [], {})
    for da in dt.das:
        obj.leaves.extend(_expand_da(t, da, da.fc or "", f"{path}.{da.name}", depth + 1))
    for sname, stype, _line in dt.sdos:
        sub = _expand_do(t, sname, stype, f"{path}.{sname}", depth + 1)
        if sub is not None:
            obj.sdos[sname] = sub
            obj.leaves.extend(sub.leaves)
    return obj


def _expand_da(t: SclTemplates, da: _DA, fc: str, path: str, depth: int) -> list[SclLeaf]:
    if da.btype == "Struct":
        entry = t.da_types.get(da.type or "")
        if entry is None or depth > _MAX_DEPTH or da.count:
            return []
        out: list[SclLeaf] = []
        for b in entry[0]:
            out.extend(_expand_da(t, b, fc, f"{path}.{b.name}", depth + 1))
        return out
    if da.count:
        return []  # arrays are not mapped to points
    enum = da.type if da.btype == "Enum" else None
    return [SclLeaf(path, fc, da.btype, enum, da.value)]


def parse_scl(paths: str | Path | Iterable[str | Path]) -> SclDocument:
    """Read SCL files; raise an SclImportError subclass naming every problem's file, line and element."""
    if isinstance(paths, str | Path):
        paths = [paths]
    reader = _Reader()
    for p in paths:
        reader.read(Path(p))
    return reader.finish()


# --- units ---------------------------------------------------------------------------------------


def _enum_text(t: SclTemplates, enum_type: str | None, raw: str, table: dict[int, str]) -> str:
    """An enumeration value as its name: SCL gives the name, some tools the ordinal."""
    if re.fullmatch(r"-?\d+", raw):
        n = int(raw)
        if enum_type and enum_type in t.enum_types and n in t.enum_types[enum_type][0]:
            return t.enum_types[enum_type][0][n]
        return table.get(n, raw)
    return raw


def _unit_of(t: SclTemplates, ln: SclLogicalNode, dobj: SclDataObject) -> str | None:
    """The SCL unit of a data object ('kW', 'V', ...): DOI initial value, else template default."""
    parts: dict[str, str] = {}
    for key, table in (("SIUnit", _SI_UNITS), ("multiplier", _MULTIPLIERS)):
        leaf = dobj.leaf(f"units.{key}")
        raw = ln.values.get(f"{dobj.path}.units.{key}", (None, None))[0]
        if raw is None and leaf is not None:
            raw = leaf.default
        if raw is not None:
            parts[key] = _enum_text(t, leaf.enum_type if leaf else None, raw, table)
    if "SIUnit" not in parts:
        return None
    mult = parts.get("multiplier", "")
    return f"{'' if mult in ('none', '') else mult}{parts['SIUnit']}"


def _split_unit(unit: str) -> tuple[str, int] | None:
    """('W', 3) for 'kW': the base unit and its power of ten."""
    for base in ("VArh", "VAh", "Wh", "VAr", "VA", "W", "V", "A", "Hz", "degC", "%"):
        if unit.endswith(base):
            prefix = unit[: -len(base)]
            if prefix in _PREFIX_POWER:
                return base, _PREFIX_POWER[prefix]
    if unit.lower() in ("kvar", "kvarh"):
        return ("VAr" if unit.lower() == "kvar" else "VArh"), 3
    return None


def _scale(scl_unit: str | None, model_unit: str) -> tuple[float, str | None]:
    """Factor from SCL values to model units, and a note when it had to be assumed."""
    target = _MODEL_UNITS.get(model_unit)
    if target is None or not model_unit:
        return 1.0, None
    base, power = target
    if scl_unit is None:
        if base in ("W", "VAr", "Wh"):
            return 10.0 ** (0 - power), f"no units in the SCL: {base} assumed"
        return 1.0, None
    split = _split_unit(scl_unit)
    if split is None or split[0] != base:
        return 1.0, f"SCL unit {scl_unit!r} does not convert to {model_unit}: scale 1 used"
    return 10.0 ** (split[1] - power), None


def _number(raw: str | None) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


# --- mapping to resources -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    """Where a model point comes from in an LD: the value leaf, its FC, and how to command it."""

    ln: SclLogicalNode
    dobj: SclDataObject
    leaf: SclLeaf
    command: str | None  # "operate" | "write" | None


def _value_leaf(dobj: SclDataObject) -> SclLeaf | None:
    for p in _VALUE_LEAVES:
        lf = dobj.leaf(p)
        if lf is not None:
            return lf
    return None


def _source(ln: SclLogicalNode, dobj: SclDataObject) -> _Source | None:
    leaf = _value_leaf(dobj)
    if leaf is None:
        return None
    command = None
    if dobj.controllable:
        command = "operate"
    elif dobj.cdc in _SETPOINT_CDCS and leaf.fc in ("SP", "SG", "SE", "CF"):
        command = "write"
    return _Source(ln, dobj, leaf, command)


def _find_source(ld: SclLDevice, path: str, role: Role) -> _Source | None:
    ln_name, do_name = path.split(".")[:2]
    ln_class = ln_name.rstrip("0123456789")
    candidates: list[tuple[SclLogicalNode, str]] = []
    exact = ld.ln(ln_name)
    if exact is not None:
        candidates.append((exact, do_name))
    candidates += [(n, do_name) for n in ld.lns if n.ln_class == ln_class and n is not exact]
    for cls, alias_do in _ALIASES.get(role, ()):
        candidates += [(n, alias_do) for n in ld.lns if n.ln_class == cls]
    for ln, name in candidates:
        dobj = ln.data.get(name)
        if dobj is not None:
            src = _source(ln, dobj)
            if src is not None:
                return src
    return None


def kind_of(ld: SclLDevice) -> tuple[ResourceKind | None, str]:
    """The resource kind of a logical device and why (which classes, or why none)."""
    for typ, text in ld.privates + next((n.privates for n in ld.lns if n.ln_class == "LLN0"), []):
        if typ.lower().endswith(":kind") or typ.lower() == "kind":
            try:
                return ResourceKind(text.strip().lower()), f"Private {typ}"
            except ValueError:
                pass
    classes = ld.classes
    for kind, lns in KIND_BY_LN_CLASS:
        hit = sorted(classes & lns)
        if hit:
            return kind, "LN " + ", ".join(hit)
    if classes & _CONTROL_CLASSES:
        return ResourceKind.LOAD, "DER control LN " + ", ".join(sorted(classes & _CONTROL_CLASSES))
    if classes & _MEASUREMENT_CLASSES:
        return ResourceKind.METER, "measurement LN " + ", ".join(
            sorted(classes & _MEASUREMENT_CLASSES)
        )
    return None, f"no DER or measurement logical node (only {', '.join(sorted(classes)) or 'none'})"


def mrid_of(ld: SclLDevice) -> str | None:
    """The CIM mRID a logical device carries: a Private '...mRID...' element or 'mRID=' in a desc."""
    ln0 = next((n for n in ld.lns if n.ln_class == "LLN0"), None)
    privates = ld.privates + (ln0.privates if ln0 else [])
    for typ, text in privates:
        if "mrid" in typ.lower() and text:
            return text.strip()
    for desc in (ld.desc, ln0.desc if ln0 else ""):
        m = _MRID.search(desc or "")
        if m:
            return m.group(1)
    return None


def parse_map(entries: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Parse '--map LD=VPP1.PV01' entries; SclMappingError names a malformed one."""
    out: dict[str, tuple[str, str]] = {}
    issues = []
    for e in entries:
        m = _MAP_ENTRY.match(e)
        if m is None:
            issues.append(
                CimIssue("--map", None, e, "expected LD=VPP.RESOURCE, e.g. ied1Inverter=VPP1.PV01")
            )
            continue
        out[m.group(1)] = (m.group(2), m.group(3))
    if issues:
        raise SclMappingError(issues, "the --map entries")
    return out


# --- the report ---------------------------------------------------------------------------------


@dataclass
class LdOutcome:
    """What became of one logical device."""

    ied: str
    ld: str
    file: str
    line: int | None
    kind: str | None
    why: str
    resource: str | None = None  # VPP.RES
    mrid: str | None = None
    bound_by: str | None = None  # map | mrid | site-driver | new
    nature_points: int = 0
    extra_points: int = 0
    unbound: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class SclImportReport:
    """What the SCL import read, built and skipped."""

    files: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    templates: dict[str, int] = field(default_factory=dict)
    addresses: list[dict[str, Any]] = field(default_factory=list)
    devices: list[LdOutcome] = field(default_factory=list)
    drivers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def imported(self) -> list[LdOutcome]:
        """Logical devices that became (or enriched) a resource."""
        return [d for d in self.devices if d.resource]

    @property
    def skipped(self) -> list[LdOutcome]:
        """Logical devices that did not, with the reason in `why`."""
        return [d for d in self.devices if not d.resource]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data (JSON-ready)."""
        return asdict(self)

    def format(self, limit: int = 20) -> str:
        """The report as text for a person."""
        c = self.counts
        out = [
            f"SCL import: {len(self.files)} file(s): {c.get('IED', 0)} IED(s), "
            f"{c.get('AccessPoint', 0)} access point(s), {c.get('LDevice', 0)} logical device(s), "
            f"{c.get('LN', 0)} logical node(s), {c.get('DO', 0)} data object(s), "
            f"{c.get('DAI', 0)} initial value(s)",
            "templates: " + ", ".join(f"{k} {v}" for k, v in self.templates.items()),
        ]
        for a in self.addresses:
            out.append(
                f"  address {a['ied']}/{a['access_point']}: {a['ip'] or '?'}:{a['port']}"
                f" subnet {a['subnet'] or '?'} ({a['subnetwork']})"
            )
        out.append(f"imported {len(self.imported)} logical device(s):")
        for d in self.imported:
            out.append(
                f"  {d.ld:<24} -> {d.resource} ({d.kind}, {d.why}; bound by {d.bound_by}): "
                f"{d.nature_points} nature point(s) bound, {d.extra_points} extra point(s)"
            )
            out += [f"      unbound: {u}" for u in d.unbound[:limit]]
            out += [f"      note: {n}" for n in d.notes[:limit]]
        if self.skipped:
            out.append(f"skipped {len(self.skipped)} logical device(s):")
            out += [f"  {d.ld:<24} {d.why}" for d in self.skipped[:limit]]
        for drv in self.drivers:
            state = "written" if drv["written"] else "not written"
            out.append(
                f"driver {drv['id']} ({state}): {drv['host']}:{drv['port']}, "
                f"{drv['points']} point(s), reports {', '.join(drv['reports']) or 'none'}"
            )
        out += [f"note: {n}" for n in self.notes[:limit]]
        return "\n".join(out)


# --- the import ---------------------------------------------------------------------------------


@dataclass
class SclImport:
    """A finished SCL import: the site (validated), the driver configs, the report."""

    site: SiteConfig
    report: SclImportReport
    drivers: list[dict[str, Any]]

    def site_yaml(self) -> str:
        """The site file text (validated by parse_site before it is returned)."""
        data = self.site.model_dump(mode="json", exclude_defaults=True)
        head = (
            "# Written by `vpp import scl`: logical devices of IEC 61850 SCL files bound to\n"
            "# resources by mRID or by explicit mapping; see the import report for details.\n"
        )
        text = head + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
        parse_site(text, "<imported site>")
        return text

    def write(self, path: str | Path) -> None:
        """Write the site file atomically (temporary file and rename)."""
        write_atomic(path, self.site_yaml())

    def report_json(self) -> str:
        """The report and the driver configs as JSON."""
        return json.dumps({**self.report.to_dict(), "driver_configs": self.drivers}, indent=1)


class _Builder:
    """Builds the site document (plain data) from the SCL document and the existing site."""

    def __init__(
        self,
        doc: SclDocument,
        site: SiteConfig | None,
        maps: dict[str, tuple[str, str]],
        vpp_id: str | None,
        site_id: str,
        site_name: str,
    ) -> None:
        self.doc = doc
        self.maps = dict(maps)
        if site is not None:
            self.data: dict[str, Any] = site.model_dump(mode="json", exclude_defaults=True)
        else:
            self.data = {"site": {"id": site_id, **({"name": site_name} if site_name else {})}}
        self.data.setdefault("vpps", [])
        self.data.setdefault("drivers", [])
        self.vpp_id = vpp_id or (self.data["vpps"][0]["id"] if self.data["vpps"] else "VPP1")
        self.report = SclImportReport(files=list(doc.files))
        self.driver_configs: list[dict[str, Any]] = []
        self._by_mrid: dict[str, tuple[str, str]] = {}
        self._site_ld: dict[str, tuple[str, str]] = {}
        self._taken: dict[str, set[str]] = {}
        self._used: dict[tuple[str, str], str] = {}
        for v in self.data["vpps"]:
            ids = self._taken.setdefault(v["id"], set())
            for r in self._resources(v):
                ids.add(r["id"])
                self._by_mrid[r["mrid"]] = (v["id"], r["id"])
        # Points the site's other drivers already acquire or command stay theirs: binding them
        # again would make the site invalid (a point acquired twice). A driver this import
        # regenerates (same id) is replaced, so its bindings do not count.
        ours = {_driver_id(i.name) for i in doc.ieds}
        self._bound: dict[str, str] = {}
        if site is not None:
            for d in site.drivers:
                if d.id in ours:
                    continue
                for _key, _i, ref, _cmd in d.bindings():
                    self._bound.setdefault(ref, d.id)
            for d in site.drivers:
                if getattr(d, "protocol", "") != "iec61850":
                    continue
                for pm in getattr(d, "points", []):
                    ld_name = str(pm.ref).split("/", 1)[0]
                    vpp_res = str(pm.point).split("/", 1)[0]
                    vpp, _, res = vpp_res.partition(".")
                    self._site_ld.setdefault(ld_name, (vpp, res))

    @staticmethod
    def _resources(v: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = list(v.get("resources", []))
        for a in v.get("aggregators", []):
            out.extend(a.get("resources", []))
        return out

    def _vpp(self, vpp_id: str) -> dict[str, Any]:
        vpps: list[dict[str, Any]] = self.data["vpps"]
        for v in vpps:
            if v["id"] == vpp_id:
                return v
        v = {"id": vpp_id, "resources": []}
        self.data["vpps"].append(v)
        self._taken.setdefault(vpp_id, set())
        self.report.notes.append(f"VPP {vpp_id} created")
        return v

    def _resource(self, vpp_id: str, res_id: str) -> dict[str, Any] | None:
        for v in self.data["vpps"]:
            if v["id"] == vpp_id:
                for r in self._resources(v):
                    if r["id"] == res_id:
                        return r
        return None

    def _map_key(self, ld: SclLDevice) -> str | None:
        for key in (ld.ld_name, f"{ld.ied}/{ld.inst}", ld.inst):
            if key in self.maps:
                return key
        return None

    def build(self) -> None:
        issues: list[CimIssue] = []
        lds = list(self.doc.lds())
        for key in self.maps:
            hits = [ld for ld in lds if key in (ld.ld_name, f"{ld.ied}/{ld.inst}", ld.inst)]
            if not hits:
                issues.append(
                    CimIssue("--map", None, key, "names no logical device of the SCL input")
                )
            elif len(hits) > 1 and key not in {ld.ld_name for ld in hits}:
                names = ", ".join(ld.ld_name for ld in hits)
                issues.append(
                    CimIssue("--map", None, key, f"is ambiguous ({names}): use the LD name")
                )
        if issues:
            raise SclMappingError(issues, "the --map entries")
        per_ied: dict[str, list[tuple[SclLDevice, list[dict[str, Any]], list[str]]]] = {}
        for ld in lds:
            outcome, points = self._ld(ld, issues)
            self.report.devices.append(outcome)
            if points:
                per_ied.setdefault(ld.ied, []).append((ld, points, []))
        if issues:
            raise SclMappingError(issues, "the logical device bindings")
        for ied in self.doc.ieds:
            if ied.name in per_ied:
                self._driver(ied, per_ied[ied.name])
        c = self.doc.counts
        self.report.counts = {
            k: c.get(k, 0)
            for k in ("IED", "AccessPoint", "LDevice", "LN", "DO", "DAI", "ConnectedAP")
        }
        tcount: Counter[str] = Counter()
        for t in self.doc.templates.values():
            tcount["LNodeType"] += len(t.lnode_types)
            tcount["DOType"] += len(t.do_types)
            tcount["DAType"] += len(t.da_types)
            tcount["EnumType"] += len(t.enum_types)
        self.report.templates = dict(tcount)
        self.report.addresses = [asdict(a) for a in self.doc.addresses]

    def _bind(self, ld: SclLDevice, mrid: str | None) -> tuple[str, str, str] | None:
        key = self._map_key(ld)
        if key is not None:
            vpp, res = self.maps[key]
            return vpp, res, "map"
        if mrid and mrid in self._by_mrid:
            vpp, res = self._by_mrid[mrid]
            return vpp, res, "mrid"
        if ld.ld_name in self._site_ld:
            vpp, res = self._site_ld[ld.ld_name]
            return vpp, res, "site-driver"
        return None

    def _ld(self, ld: SclLDevice, issues: list[CimIssue]) -> tuple[LdOutcome, list[dict[str, Any]]]:
        kind, why = kind_of(ld)
        out = LdOutcome(ld.ied, ld.ld_name, ld.file, ld.line, kind.value if kind else None, why)
        bound = self._bind(ld, mrid_of(ld))
        if kind is None and bound is None:
            return out, []
        mrid = mrid_of(ld)
        if bound is None:
            vpp_id = self.vpp_id
            taken = self._taken.setdefault(vpp_id, set())
            res_id = make_ident(ld.ld_name, "LD", taken)
            bound_by = "new"
        else:
            vpp_id, res_id, bound_by = bound
        where = f"{vpp_id}.{res_id}"
        if (vpp_id, res_id) in self._used:
            issues.append(
                CimIssue(
                    ld.file,
                    ld.line,
                    f"LDevice {ld.ld_name}",
                    f"bound to {where}, which {self._used[(vpp_id, res_id)]} is already bound to",
                )
            )
            return out, []
        self._used[(vpp_id, res_id)] = f"LDevice {ld.ld_name}"
        res = self._resource(vpp_id, res_id)
        if res is None:
            if kind is None:
                kind = ResourceKind.METER
                out.notes.append("no DER logical node: created as a meter")
            new_mrid = mrid or str(uuid.uuid5(_MRID_NS, f"scl:{ld.ied}/{ld.inst}"))
            if new_mrid in self._by_mrid:
                issues.append(
                    CimIssue(
                        ld.file,
                        ld.line,
                        f"LDevice {ld.ld_name}",
                        f"mRID {new_mrid} is already the resource {'.'.join(self._by_mrid[new_mrid])}",
                    )
                )
                return out, []
            res = {"id": res_id, "mrid": new_mrid, "kind": kind.value}
            if ld.desc and not _MRID.search(ld.desc):
                res["name"] = ld.desc
            self._by_mrid[new_mrid] = (vpp_id, res_id)
            self._vpp(vpp_id).setdefault("resources", []).append(res)
            self._taken.setdefault(vpp_id, set()).add(res_id)
        else:
            site_kind = ResourceKind(res["kind"])
            if kind is not None and kind != site_kind:
                out.notes.append(
                    f"the SCL suggests {kind.value} ({why}); the site's kind {site_kind.value} is kept"
                )
            kind = site_kind
            if mrid and res.get("mrid") != mrid:
                out.notes.append(f"SCL mRID {mrid} differs from the site's {res.get('mrid')}")
        out.kind = kind.value
        out.resource = where
        out.mrid = res["mrid"]
        out.bound_by = bound_by
        limits = self._limits(ld, kind)
        if limits and bound_by == "new":
            res["limits"] = limits
        points = []
        for pm in self._points(ld, kind, res, vpp_id, out):
            other = self._bound.get(pm["point"])
            if other is None:
                points.append(pm)
            else:
                out.notes.append(f"{pm['point']} is already acquired by driver {other}: left to it")
        return out, points

    def _limits(self, ld: SclLDevice, kind: ResourceKind) -> dict[str, float]:
        """Rated/maximum active power from DOI initial values (WMax, WRtg setMag.f)."""
        t = self.doc.templates[ld.file]
        for ln in ld.lns:
            for do_name in ("WMax", "WRtg"):
                dobj = ln.data.get(do_name)
                raw = _number(ln.values.get(f"{do_name}.setMag.f", (None, None))[0])
                if dobj is None or raw is None:
                    continue
                factor, _ = _scale(_unit_of(t, ln, dobj), "kW")
                p_max = raw * factor
                if p_max <= 0:
                    continue
                if kind in (ResourceKind.STORAGE,):
                    return {"p_min_kw": -p_max, "p_max_kw": p_max}
                if kind in (ResourceKind.LOAD, ResourceKind.HVAC, ResourceKind.EV_CHARGER):
                    return {"p_min_kw": -p_max, "p_max_kw": 0.0}
                if kind != ResourceKind.METER:
                    return {"p_min_kw": 0.0, "p_max_kw": p_max}
        return {}

    def _points(
        self, ld: SclLDevice, kind: ResourceKind, res: dict[str, Any], vpp_id: str, out: LdOutcome
    ) -> list[dict[str, Any]]:
        t = self.doc.templates[ld.file]
        prefix = f"{vpp_id}.{res['id']}"
        maps: list[dict[str, Any]] = []
        used: set[tuple[str, str]] = set()  # (LN name, DO name) bound already
        nature_paths = {p.path for p in NATURES[kind].points}
        assumed: set[str] = set()
        for tpl in NATURES[kind].points:
            src = _find_source(ld, tpl.path, tpl.role)
            if src is None:
                out.unbound.append(f"{tpl.path} ({tpl.role.value}): no matching data object")
                continue
            if tpl.access.value == "rw" and src.command is None:
                out.notes.append(
                    f"{tpl.path}: {src.ln.name}.{src.dobj.name} ({src.dobj.cdc}) is not "
                    "controllable in the SCL: acquired only"
                )
            factor, note = _scale(_unit_of(t, src.ln, src.dobj), tpl.unit)
            if note:
                assumed.add(note)
            used.add((src.ln.name, src.dobj.name))
            maps.append(
                self._map(ld, src, f"{prefix}/{tpl.path}", factor, tpl.access.value == "rw")
            )
            out.nature_points += 1
        existing = {p["path"] for p in res.get("points", [])}
        extras: list[dict[str, Any]] = []
        for ln in ld.lns:
            if ln.ln_class in _SYSTEM_CLASSES:
                continue
            for dobj in ln.data.values():
                if (ln.name, dobj.name) in used:
                    continue
                for sub in _analogues(dobj):
                    src = _source(ln, sub)
                    if src is None or src.leaf.btype not in _FLOAT_TYPES:
                        continue
                    path = sub.path
                    rel = f"{ln.name}.{src.leaf.path}"
                    if rel in nature_paths:
                        continue
                    unit = _unit_of(t, ln, sub) or ""
                    rw = dobj.cdc in _SETPOINT_CDCS and src.command is not None
                    entry: dict[str, Any] = {"path": rel}
                    if unit:
                        entry["unit"] = unit
                    if rw:
                        entry["access"] = "rw"
                        lo = _number(ln.values.get(f"{path}.minVal.f", (None, None))[0])
                        hi = _number(ln.values.get(f"{path}.maxVal.f", (None, None))[0])
                        if lo is not None:
                            entry["min"] = lo
                        if hi is not None:
                            entry["max"] = hi
                    desc = sub.desc or dobj.desc
                    entry["description"] = f"{ld.ld_name}/{ln.name}.{path}" + (
                        f": {desc}" if desc else ""
                    )
                    if rel not in existing:
                        extras.append(entry)
                        existing.add(rel)
                    maps.append(self._map(ld, src, f"{prefix}/{rel}", 1.0, rw))
                    out.extra_points += 1
        if extras:
            res.setdefault("points", []).extend(extras)
        out.notes.extend(sorted(assumed))
        return maps

    @staticmethod
    def _map(ld: SclLDevice, src: _Source, point: str, scale: float, rw: bool) -> dict[str, Any]:
        leaf_path = src.leaf.path
        entry: dict[str, Any] = {
            "ref": f"{ld.ld_name}/{src.ln.name}.{leaf_path}",
            "fc": src.leaf.fc,
            "point": point,
        }
        if scale != 1.0:
            entry["scale"] = scale
        if rw and src.command is not None:
            entry["command"] = src.command
            if src.command == "operate":
                entry["control"] = f"{ld.ld_name}/{src.ln.name}.{src.dobj.path}"
        return entry

    def _driver(
        self, ied: SclIED, lds: list[tuple[SclLDevice, list[dict[str, Any]], list[str]]]
    ) -> None:
        addr = self.doc.address(ied.name)
        host = addr.ip if addr and addr.ip else None
        if host in (None, "0.0.0.0"):
            self.report.notes.append(
                f"IED {ied.name}: no usable IP address in the Communication section "
                f"({host or 'none'}): the driver's host is 127.0.0.1, set it in the site file"
            )
            host = "127.0.0.1"
        points = [p for _ld, pts, _ in lds for p in pts]
        reports: list[str] = []
        for ld, pts, _ in lds:
            refs = [(p["ref"], p["fc"]) for p in pts]
            for ln in ld.lns:
                for rc in ln.reports:
                    entries = ln.datasets.get(rc["dataset"], [])
                    if not any(
                        r.startswith(e) and (fc == efc or not efc)
                        for r, fc in refs
                        for e, efc in entries
                    ):
                        continue
                    inst = f"{rc['name']}01" if rc["indexed"] and rc["max"] > 1 else rc["name"]
                    reports.append(
                        f"{ld.ld_name}/{ln.name}.{'BR' if rc['buffered'] else 'RP'}.{inst}"
                    )
        driver_id = _driver_id(ied.name)
        config = {
            "id": driver_id,
            "protocol": "iec61850",
            "host": host,
            "port": addr.port if addr else 102,
            "ied_name": ied.name,
            "reports": reports,
            "points": points,
        }
        written = "iec61850" in PROTOCOLS
        if written:
            self.data["drivers"] = [d for d in self.data["drivers"] if d.get("id") != driver_id]
            self.data["drivers"].append(config)
        else:
            self.report.notes.append(
                f"driver {driver_id}: the iec61850 protocol is not registered in this build "
                "(model.drivers.DriverConfig): its config is in the JSON report, not the site file"
            )
        self.driver_configs.append(config)
        self.report.drivers.append(
            {
                "id": driver_id,
                "host": host,
                "port": config["port"],
                "points": len(points),
                "reports": reports,
                "written": written,
            }
        )


def _driver_id(ied: str) -> str:
    """The id of the MMS driver generated for an IED."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", f"iec61850-{ied}")


def _analogues(dobj: SclDataObject) -> list[SclDataObject]:
    """The data objects holding the analogue values of `dobj` (itself, or its phases)."""
    if dobj.cdc in _ANALOGUE_CDCS or dobj.cdc in _SETPOINT_CDCS:
        return [dobj]
    if dobj.cdc in _PHASE_CDCS:
        return [sub for sub in dobj.sdos.values() if sub.cdc == "CMV"]
    return []


def import_scl(
    paths: str | Path | Iterable[str | Path],
    *,
    site: SiteConfig | None = None,
    maps: dict[str, tuple[str, str]] | None = None,
    vpp_id: str | None = None,
    site_id: str = "SCL",
    site_name: str = "",
) -> SclImport:
    """Import SCL files into a site (a new one, or `site` enriched); nothing is written here.

    Raises an SclImportError subclass naming file, line and element of every problem, or
    SiteConfigError when the resulting site does not validate.
    """
    doc = parse_scl(paths)
    builder = _Builder(doc, site, maps or {}, vpp_id, site_id, site_name)
    builder.build()
    if not builder.data["vpps"]:
        reasons = "; ".join(f"{d.ld}: {d.why}" for d in builder.report.skipped) or "no LDevice"
        raise SclMappingError(
            [
                CimIssue(
                    doc.files[0],
                    None,
                    "",
                    f"no logical device became a resource ({reasons}); "
                    "bind one with --map LD=VPP.RES",
                )
            ],
            "the SCL input",
        )
    text = yaml.safe_dump(builder.data, sort_keys=False, allow_unicode=True, width=100)
    new_site = parse_site(text, "<imported site>")
    return SclImport(new_site, builder.report, builder.driver_configs)


def read_map_file(path: str | Path) -> dict[str, tuple[str, str]]:
    """LD=VPP.RES lines of a mapping file (blank lines and '#' comments ignored)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return parse_map(ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#"))
