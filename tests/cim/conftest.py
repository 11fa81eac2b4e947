"""CGMES data sets for the cim tests, an independent lxml counter, and a builder of small files."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import cimpy
import pytest
from lxml import etree

from tests.conftest import SHARED_DATA

CGMES = SHARED_DATA / "cgmes"
CIGRE_MV = Path(cimpy.__file__).resolve().parent / "examples" / "sampledata" / "CIGRE_MV"

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
MD = "http://iec.ch/TC57/61970-552/ModelDescription/1#"
CIM16 = "http://iec.ch/TC57/2013/CIM-schema-cim16#"
CIM100 = "http://iec.ch/TC57/CIM100#"

EQ = "http://entsoe.eu/CIM/EquipmentCore/3/1"
TP = "http://entsoe.eu/CIM/Topology/4/1"
SSH = "http://entsoe.eu/CIM/SteadyStateHypothesis/1/1"
SV = "http://entsoe.eu/CIM/StateVariables/4/1"
EQ3 = "http://iec.ch/TC57/ns/CIM/CoreEquipment-EU/3.0"
TP3 = "http://iec.ch/TC57/ns/CIM/Topology-EU/3.0"
SSH3 = "http://iec.ch/TC57/ns/CIM/SteadyStateHypothesis-EU/3.0"
SV3 = "http://iec.ch/TC57/ns/CIM/StateVariables-EU/3.0"


def shared_dir(path: Path, what: str) -> Path:
    """path when it exists; else skip with the reason, or fail when VPP_REQUIRE_DATA=1."""
    if not path.is_dir() or not any(path.glob("*.xml")):
        msg = f"{what}: data set not found at {path}"
        if os.environ.get("VPP_REQUIRE_DATA") == "1":
            pytest.fail(f"{msg}, but VPP_REQUIRE_DATA=1")
        pytest.skip(msg)
    return path


@pytest.fixture
def cigre_files() -> list[Path]:
    """The CIGRE MV sample shipped by cimpy (EQ, TP, SV, DL)."""
    return sorted(shared_dir(CIGRE_MV, "CIGRE MV (cimpy sample)").glob("*.xml"))


@pytest.fixture
def microgrid() -> tuple[list[Path], list[Path]]:
    """MicroGrid BE+NL: (model files, boundary files)."""
    d = shared_dir(CGMES / "microgrid-be-nl", "ENTSO-E MicroGrid BE+NL")
    files = sorted(d.glob("*.xml"))
    return [f for f in files if "_BD_" not in f.name], [f for f in files if "_BD_" in f.name]


@pytest.fixture
def smallgrid_files() -> list[Path]:
    """SmallGrid BusBranch base case (EQ, TP, SSH, SV)."""
    return sorted(shared_dir(CGMES / "smallgrid", "ENTSO-E SmallGrid").glob("*.xml"))


# --- counting with lxml, independently of the importer ------------------------------------------


def _objects(files: Iterable[Path]) -> Iterable[etree._Element]:
    for f in files:
        root = etree.parse(str(f)).getroot()
        yield from root.xpath("/rdf:RDF/*[namespace-uri() != $md]", namespaces={"rdf": RDF}, md=MD)


def count_defined(files: Iterable[Path]) -> Counter[str]:
    """Objects defined with rdf:ID, by class."""
    return Counter(etree.QName(e).localname for e in _objects(files) if e.get(f"{{{RDF}}}ID"))


def ids_of(files: Iterable[Path], *classes: str) -> set[str]:
    """rdf:IDs of the objects of the given classes."""
    return {
        e.get(f"{{{RDF}}}ID")
        for e in _objects(files)
        if etree.QName(e).localname in classes and e.get(f"{{{RDF}}}ID")
    }


def dangling_count(files: list[Path]) -> int:
    """References to no rdf:ID, plus objects only ever described with rdf:about."""
    objs = list(_objects(files))
    defined = {e.get(f"{{{RDF}}}ID") for e in objs} - {None}
    refs = [
        r
        for e in objs
        for c in e
        if (r := c.get(f"{{{RDF}}}resource")) and r.startswith("#") and r[1:] not in defined
    ]
    about = {a[1:] for e in objs if (a := e.get(f"{{{RDF}}}about")) and a[1:] not in defined}
    return len(refs) + len(about)


def attr_of(files: Iterable[Path], mrid: str, qname: str) -> str | None:
    """Text or rdf:resource of attribute qname (e.g. 'RotatingMachine.p') of object mrid."""
    for e in _objects(files):
        if e.get(f"{{{RDF}}}ID") == mrid or e.get(f"{{{RDF}}}about") == f"#{mrid}":
            for c in e:
                if etree.QName(c).localname == qname:
                    r = c.get(f"{{{RDF}}}resource")
                    return r[1:] if r and r.startswith("#") else (c.text or "").strip()
    return None


# --- small files of our own ----------------------------------------------------------------------


def cim_doc(body: str, profile: str | None = EQ, ns: str = CIM16, model: str = "") -> str:
    """An RDF/XML document with a md:FullModel header declaring profile (None: no header)."""
    import uuid

    head = ""
    if profile is not None:
        mid = model or f"urn:uuid:{uuid.uuid4()}"
        head = (
            f'  <md:FullModel rdf:about="{mid}">\n'
            f"    <md:Model.profile>{profile}</md:Model.profile>\n"
            "  </md:FullModel>\n"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<rdf:RDF xmlns:rdf="{RDF}" xmlns:md="{MD}" xmlns:cim="{ns}">\n{head}{body}</rdf:RDF>\n'
    )


@pytest.fixture
def write_cim(tmp_path: Path) -> Callable[..., Path]:
    """write_cim(name, body, profile=EQ, ns=CIM16) -> Path of a small CIM file in tmp_path."""

    def write(name: str, body: str, profile: str | None = EQ, ns: str = CIM16) -> Path:
        p = tmp_path / name
        p.write_text(cim_doc(body, profile, ns), encoding="utf-8")
        return p

    return write
