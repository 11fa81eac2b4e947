"""What a driver config's bindings() returns, shared by every protocol's config module."""

from __future__ import annotations

__all__ = ["Binding"]

# (list key in the driver's section, index in that list, model point, True if a command target)
Binding = tuple[str, int, str, bool]
