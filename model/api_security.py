"""Site-file settings of API security and of the audit log. Pure configuration (pydantic).

``api:`` in the site file gains (ApiConfig derives from ApiSecurityConfig)::

    api:
      host: 127.0.0.1
      port: 8443
      auth: required            # or off: only on a loopback host
      users_file: var/users.yaml
      token_ttl_s: 3600
      token_secret_file: var/api_token.key
      tls:
        enabled: true           # cert + key given, or generated (self-signed) on first run
        cert: null
        key: null

and the site gains ``audit:`` (AuditConfig): where the audit log lives and which platform key
signs its checkpoints.
"""

from __future__ import annotations

import ipaddress
from typing import Literal, Self

from pydantic import Field, model_validator

from model.points import StrictModel

__all__ = [
    "ApiSecurityConfig",
    "ApiTLSConfig",
    "AuditConfig",
    "AuthMode",
    "check_api_exposure",
    "is_loopback",
]

AuthMode = Literal["required", "off"]


def is_loopback(host: str) -> bool:
    """True when host is a loopback name or address (localhost, 127.0.0.0/8, ::1)."""
    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_api_exposure(host: str, auth: AuthMode) -> None:
    """Raise ValueError when an API without authentication would listen beyond loopback."""
    if auth == "off" and not is_loopback(host):
        raise ValueError(
            f"auth: off is only allowed on a loopback host (127.0.0.1, ::1, localhost), "
            f"not {host!r}: use auth: required"
        )


class ApiTLSConfig(StrictModel):
    """HTTPS for the REST API: a given certificate and key, or a self-signed one made once."""

    enabled: bool = False
    cert: str | None = Field(default=None, description="PEM certificate (chain) file")
    key: str | None = Field(default=None, description="PEM private key file")
    key_passphrase: str = Field(
        default="", description="passphrase of the key file (may be sealed: enc:sm4:...)"
    )
    generated_dir: str = Field(
        default="var/tls",
        description="where a generated certificate (cert.pem) and key (key.pem, 0600) are kept",
    )
    hostnames: list[str] = Field(
        default=[],
        description="DNS names and IP addresses for a generated certificate, besides localhost, "
        "127.0.0.1, ::1 and the API host",
    )
    min_version: Literal["1.2", "1.3"] = "1.2"

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls: give both cert and key, or neither (to generate them)")
        return self


class ApiSecurityConfig(StrictModel):
    """Who may use the REST API and how it is protected."""

    auth: AuthMode = Field(
        default="required",
        description="required: a bearer token on every route but /health, /openapi.json and "
        "/auth/login; off: no login (loopback only)",
    )
    users_file: str = Field(default="var/users.yaml", description="user store (vpp users)")
    token_ttl_s: float = Field(default=3600.0, gt=0, le=7 * 86400, description="token lifetime")
    token_secret_file: str = Field(
        default="var/api_token.key",
        description="HMAC-SM3 key of bearer tokens (made on first run, 0600); revocations "
        "are kept beside it",
    )
    tls: ApiTLSConfig = ApiTLSConfig()


class AuditConfig(StrictModel):
    """The audit log: its database and the platform key signing its checkpoints."""

    enabled: bool = True
    url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: the history database"
    )
    pki_dir: str = Field(default="var/pki", description="CA directory holding the platform key")
    certificate: str = Field(
        default="vpp-platform", description="the platform certificate's name (role platform)"
    )
    key_passphrase_file: str | None = None
    require_signing: bool = Field(
        default=False,
        description="refuse to start without the platform key (else: hash chain only, warned)",
    )
    checkpoint_every: int = Field(default=1000, ge=1, description="records per signed checkpoint")
    checkpoint_interval_s: float = Field(
        default=10.0, gt=0, description="longest time records stay unsigned"
    )
