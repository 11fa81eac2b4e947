"""Errors of the model room: one typed hierarchy, each naming what was wrong and where."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigIssue", "ModelError", "SiteConfigError", "UnknownPointError"]


class ModelError(Exception):
    """Base of every error the model raises."""


class UnknownPointError(ModelError, KeyError):
    """A point reference that the model does not hold."""

    def __init__(self, ref: str) -> None:
        super().__init__(ref)
        self.ref = ref

    def __str__(self) -> str:
        return f"unknown point {self.ref!r}"


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a site file: where (file, line, field path) and what."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}"


class SiteConfigError(ModelError):
    """A site file that cannot be used; `issues` lists every problem found."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  {i}" for i in issues)
        super().__init__(f"{len(issues)} problem(s) in site configuration:\n{lines}")
