"""The seam through which stores encrypt business-data fields at rest (implemented in security/).

The twin's stores (the command store) and the audit log take an optional FieldSealer. Each
sealed field is bound to a context naming its table, column and row, so a sealed value copied
into another row or column does not open. Values stored before sealing was turned on stay
readable: open() returns a value that is not sealed as it is.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["FieldSealer"]


class FieldSealer(Protocol):
    """Encrypts a text field for storage and opens it again."""

    def seal(self, text: str, context: str) -> str:
        """The stored form of `text` in `context` (e.g. "commands.value:ID")."""
        ...

    def open(self, stored: str, context: str) -> str:
        """The text of a stored field; a field that is not sealed comes back unchanged."""
        ...
