"""Errors of the gateway room."""

from __future__ import annotations

from model.errors import ModelError

__all__ = ["CommandRejected", "DeviceError", "DriverError", "GatewayError", "LinkDown"]


class GatewayError(ModelError):
    """Base of the gateway's errors."""


class DriverError(GatewayError):
    """A south driver could not do what was asked."""


class LinkDown(DriverError):
    """The device link is not connected."""


class DeviceError(DriverError):
    """The device answered with a negative confirmation or exception code."""


class CommandRejected(GatewayError):
    """A command refused before it reached a device (policy, limits, unknown target)."""

    def __init__(self, reason: str, code: str = "rejected") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
