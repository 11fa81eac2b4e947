"""Errors of the twin room."""

from __future__ import annotations

from model.errors import ModelError

__all__ = ["CommandConflict", "HistoryError", "TwinError", "UnknownCommand"]


class TwinError(ModelError):
    """Base of the twin's errors."""


class UnknownCommand(TwinError, KeyError):
    """No command with this id is known."""

    def __str__(self) -> str:
        return f"unknown command id {self.args[0]!r}"


class CommandConflict(TwinError):
    """A command id reused with a different target or value."""


class HistoryError(TwinError):
    """History store failure or bad history query."""
