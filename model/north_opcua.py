"""Configuration of the OPC UA server that lets SCADA, historians and engineers browse the twin."""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import urlparse

from pydantic import Field, model_validator

from model.points import StrictModel

__all__ = ["AnonymousAccess", "OpcUaConfig", "SecurityPolicyName", "WriteWait"]

#: What an anonymous session may do: browse, read, subscribe and read history, or nothing at all.
AnonymousAccess = Literal["read", "off"]

#: Security policies offered as endpoints. "None" sends everything in the clear; add it only
#: where the network itself is trusted (loopback, a demo).
SecurityPolicyName = Literal["None", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt"]

#: How long an OPC UA Write of a set-point waits before answering: until the command path has
#: accepted the command, or until the owning driver has sent it to the device (or failed).
WriteWait = Literal["accepted", "sent"]


class OpcUaConfig(StrictModel):
    """The OPC UA server: endpoint, who may connect, certificates and write behaviour."""

    enabled: bool = True
    endpoint: str = Field(
        default="opc.tcp://127.0.0.1:4840", description="opc.tcp://host:port to listen on"
    )
    server_name: str = "vpp-gateway"
    application_uri: str = "urn:vpp-gateway:opcua-server"
    namespace_uri: str = Field(
        default="urn:vpp-gateway:twin",
        description="namespace of the twin's nodes; point NodeIds are ns=<it>;s=<point reference>",
    )
    anonymous: AnonymousAccess = "read"
    security_policies: list[SecurityPolicyName] = Field(
        default=["Basic256Sha256_SignAndEncrypt", "Basic256Sha256_Sign"], min_length=1
    )
    certificate: str = Field(
        default="var/opcua/server_cert.der",
        description="server certificate (DER); generated, self-signed, on first run",
    )
    private_key: str = Field(
        default="var/opcua/server_key.pem",
        description="server private key (PEM, mode 0600); generated on first run",
    )
    certificate_hosts: list[str] = Field(
        default=["localhost", "127.0.0.1"],
        description="DNS names and IP addresses put in a generated certificate (the host name is added)",
    )
    certificate_days: int = Field(default=365, ge=1, le=3650)
    trusted_client_certs_dir: str | None = Field(
        default=None,
        description="if set, only client application certificates found there (DER/PEM) may connect",
    )
    users_file: str = Field(
        default="var/users.yaml",
        description="user store (security.users); absent file = no named users",
    )
    write_wait: WriteWait = "sent"
    write_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="longest a Write waits; after it the answer is GoodCompletesAsynchronously",
    )
    command_deadline_s: float = Field(
        default=10.0, gt=0, description="deadline given to commands from OPC UA writes"
    )
    subscriber_queue: int = Field(default=1000, ge=1, description="twin change sets held")
    yield_every: int = Field(
        default=100, ge=1, description="value writes between yields to the event loop"
    )
    history_max_values: int = Field(
        default=10_000,
        ge=1,
        description="values per HistoryRead answer before a continuation point",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        u = urlparse(self.endpoint)
        if u.scheme != "opc.tcp" or not u.hostname:
            raise ValueError(f"endpoint {self.endpoint!r} is not opc.tcp://host:port")
        try:
            port = u.port
        except ValueError as e:
            raise ValueError(f"endpoint {self.endpoint!r}: {e}") from e
        if port is None:
            raise ValueError(f"endpoint {self.endpoint!r} has no port")
        if len(set(self.security_policies)) != len(self.security_policies):
            raise ValueError("security_policies lists a policy twice")
        if self.anonymous == "off" and self.security_policies == ["None"]:
            # Passwords are never taken in the clear, so nobody at all could connect.
            raise ValueError(
                "anonymous is off and only security policy None is offered: nobody could log in"
            )
        return self

    @property
    def host(self) -> str:
        """Host part of the endpoint."""
        return urlparse(self.endpoint).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        """Port of the endpoint."""
        return urlparse(self.endpoint).port or 4840
