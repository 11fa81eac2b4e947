"""Errors of the cim room: one typed hierarchy, each naming the file, line and element at fault."""

from __future__ import annotations

from dataclasses import dataclass

from model.errors import ModelError

__all__ = [
    "CgmesDuplicateError",
    "CgmesExportError",
    "CgmesImportError",
    "CgmesProfileError",
    "CgmesReferenceError",
    "CgmesSyntaxError",
    "CimError",
    "CimIssue",
]

# How many issues an error's message spells out; `issues` always holds all of them.
_SHOWN = 20


@dataclass(frozen=True)
class CimIssue:
    """One problem in a CIM file: where (file, line), which element, and what."""

    file: str
    line: int | None
    element: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return (
            f"{where}: {self.element}: {self.message}"
            if self.element
            else f"{where}: {self.message}"
        )


class CimError(ModelError):
    """Base of every error the cim room raises."""


class CgmesImportError(CimError):
    """CGMES input that cannot be imported; `issues` lists every problem found."""

    def __init__(self, issues: list[CimIssue], what: str = "CGMES input") -> None:
        self.issues = issues
        lines = [f"  {i}" for i in issues[:_SHOWN]]
        if len(issues) > _SHOWN:
            lines.append(f"  ... and {len(issues) - _SHOWN} more")
        super().__init__(f"{len(issues)} problem(s) in {what}:\n" + "\n".join(lines))


class CgmesSyntaxError(CgmesImportError):
    """A file that is not well-formed RDF/XML (truncated, not XML, no rdf:RDF root)."""


class CgmesProfileError(CgmesImportError):
    """A file whose CGMES profile or CIM version is unknown, missing or not wanted where given."""


class CgmesDuplicateError(CgmesImportError):
    """The same mRID (rdf:ID) defined twice, or the same model given twice."""


class CgmesReferenceError(CgmesImportError):
    """rdf:resource references to objects no file defines (raised only in strict mode)."""


class CgmesExportError(CimError):
    """A site, binding file or set of values that cannot be written as CGMES."""
