"""Errors of the IEC 61850-6 SCL import: each issue names the file, the line and the element at fault.

They join the cim room's hierarchy (cim.errors.CimError) and reuse its CimIssue, so a caller that
handles CGMES import errors handles SCL ones the same way.
"""

from __future__ import annotations

from cim.errors import CimError, CimIssue

__all__ = [
    "SclDuplicateError",
    "SclError",
    "SclImportError",
    "SclMappingError",
    "SclSchemaError",
    "SclSyntaxError",
    "SclTemplateError",
]

# How many issues an error's message spells out; `issues` always holds all of them.
_SHOWN = 20


class SclError(CimError):
    """Base of every error the SCL import raises."""


class SclImportError(SclError):
    """SCL input that cannot be imported; `issues` lists every problem found."""

    def __init__(self, issues: list[CimIssue], what: str = "SCL input") -> None:
        self.issues = issues
        lines = [f"  {i}" for i in issues[:_SHOWN]]
        if len(issues) > _SHOWN:
            lines.append(f"  ... and {len(issues) - _SHOWN} more")
        super().__init__(f"{len(issues)} problem(s) in {what}:\n" + "\n".join(lines))


class SclSyntaxError(SclImportError):
    """A file that is not well-formed XML or whose root is not an SCL element."""


class SclSchemaError(SclImportError):
    """An element without an attribute IEC 61850-6 requires (an AccessPoint without a name...)."""


class SclTemplateError(SclImportError):
    """A reference to a DataTypeTemplates entry (LNodeType, DOType, DAType, EnumType) that is absent."""


class SclDuplicateError(SclImportError):
    """Two IEDs, logical devices, logical nodes or template entries with the same name or id."""


class SclMappingError(SclImportError):
    """A --map entry or binding that names no logical device, or binds two devices to one resource."""
