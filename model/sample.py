"""The Sample: one value of one point at one time, as acquisition hands it to the twin."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

__all__ = ["Sample", "Value", "from_epoch", "to_epoch"]

Value = float | int | bool


class Sample(NamedTuple):
    """An immutable value of a point: ts is UTC seconds since the epoch, quality an IEC 61850 int.

    A NamedTuple, not a pydantic model: millions are built per second on the acquisition path.
    """

    point: str
    value: Value
    ts: float
    quality: int = 0
    source: str = ""


def to_epoch(dt: datetime) -> float:
    """UTC epoch seconds of an aware datetime (naive datetimes are taken as UTC)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def from_epoch(ts: float) -> datetime:
    """Aware UTC datetime of epoch seconds."""
    return datetime.fromtimestamp(ts, tz=UTC)
