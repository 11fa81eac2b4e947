"""Edge terminal configuration: the edge's uplink to its platform, the platform's hub, edge links.

Three pieces of a site file:

- `EdgeRoleConfig` (site `edge.uplink`): on an edge terminal (`vpp run --role edge`), where the
  central platform listens, which certificates to use, and the bounded on-disk sample buffer.
- `EdgeHubConfig` (site `edge.hub`): on the central platform, where edge terminals connect.
- `EdgeLinkDriverConfig` (a `drivers:` entry, `protocol: edge`): on the central platform, one edge
  terminal seen as a south driver: the points it carries and which of them take commands.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from model.points import PointRef, StrictModel

__all__ = [
    "EdgeHubConfig",
    "EdgeLinkDriverConfig",
    "EdgePoint",
    "EdgeRoleConfig",
    "EdgeSection",
]

# (list key, index, point, is_command): model.drivers.Binding's shape, defined here because
# model.drivers imports this module for its DriverConfig union.
Binding = tuple[str, int, str, bool]

# The holder name of an SM2 certificate (security.identity.check_name's rule).
CertName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class EdgeRoleConfig(StrictModel):
    """The edge terminal's side: its platform's address, its certificates, its sample buffer."""

    name: CertName = Field(description="this edge's certificate name (CN), e.g. edge-site-1")
    uplink: str = Field(
        pattern=r"^tcp://[^/:]+:[0-9]{1,5}$",
        description="where the platform's edge hub listens, tcp://host:port",
    )
    pki_dir: str = Field(
        default="var/pki",
        description="holds ca.cert.pem, optionally crl.pem, NAME.cert.pem + NAME.key.pem (0600) "
        "and the platform's certificate (directly or under issued/)",
    )
    key_passphrase_file: str | None = Field(
        default=None, description="file whose first line decrypts an encrypted NAME.key.pem"
    )
    platform_certificate: CertName = Field(
        default="vpp-platform",
        description="the platform certificate's name: pinned at the handshake, signs commands",
    )
    buffer_path: str = Field(default="var/edge-buffer.db", description="SQLite file (WAL)")
    buffer_max_rows: int = Field(
        default=1_000_000, ge=1, description="samples kept while the uplink is down; oldest dropped"
    )
    buffer_durable: bool = Field(
        default=True, description="fsync every buffer commit (survives power loss)"
    )
    batch_size: int = Field(default=500, ge=1, le=20_000, description="samples per uplink message")
    max_inflight_batches: int = Field(default=4, ge=1, le=64)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    keepalive_s: float = Field(default=5.0, gt=0, description="ping when idle this long")
    idle_timeout_s: float = Field(
        default=20.0, gt=0, description="drop the connection when nothing came for this long"
    )
    forward: list[PointRef] | None = Field(
        default=None,
        description="points sent up (default: every point except the edge's own plant aggregates)",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        port = int(self.uplink.rsplit(":", 1)[1])
        if not 1 <= port <= 65535:
            raise ValueError(f"uplink port {port} is not 1..65535")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s is above reconnect_max_s")
        if self.idle_timeout_s <= self.keepalive_s:
            raise ValueError("idle_timeout_s must be longer than keepalive_s")
        return self


class EdgeHubConfig(StrictModel):
    """The central platform's listener for edge terminals (signed + SM4 channel)."""

    host: str = "127.0.0.1"
    port: int = Field(default=7443, ge=0, le=65535)
    pki_dir: str = "var/pki"
    certificate: CertName = Field(
        default="vpp-platform", description="the platform certificate's name (role platform)"
    )
    key_passphrase_file: str | None = None
    revalidate_s: float = Field(
        default=30.0, gt=0, description="re-check connected edges' certificates this often"
    )
    idle_timeout_s: float = Field(default=30.0, gt=0)


class EdgeSection(StrictModel):
    """The site file's `edge:` section: `uplink` on an edge terminal, `hub` on the platform."""

    uplink: EdgeRoleConfig | None = None
    hub: EdgeHubConfig | None = None


class EdgePoint(StrictModel):
    """One point an edge terminal carries; writable ones take commands."""

    point: PointRef = Field(description="the point's name on this platform")
    writable: bool = False
    edge_point: PointRef | None = Field(
        default=None,
        description="the edge terminal's own name for the point, where it differs (samples are "
        "renamed on arrival, commands are signed with the edge's name)",
    )

    @property
    def at_edge(self) -> str:
        """The name the edge terminal uses."""
        return self.edge_point or self.point


class EdgeLinkDriverConfig(StrictModel):
    """An edge terminal, seen by the central platform as one south driver."""

    id: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")]
    protocol: Literal["edge"]
    enabled: bool = True
    edge: CertName = Field(description="the edge terminal's certificate name (CN)")
    command_linger_ms: float = Field(
        default=2.0,
        ge=0,
        le=1000,
        description="commands arriving this close together share one signature",
    )
    points: list[EdgePoint] = []

    def bindings(self) -> list[Binding]:
        """(list key, index, point, is_command); a writable point is also acquired (read-back)."""
        out: list[Binding] = [("points", i, p.point, False) for i, p in enumerate(self.points)]
        out += [("points", i, p.point, True) for i, p in enumerate(self.points) if p.writable]
        return out

    @model_validator(mode="after")
    def _unique(self) -> Self:
        seen: dict[str, int] = {}
        at_edge: dict[str, int] = {}
        for i, p in enumerate(self.points):
            if p.point in seen:
                raise ValueError(
                    f"points[{i}]: {p.point!r} is already listed as points[{seen[p.point]}]"
                )
            if p.at_edge in at_edge:
                raise ValueError(
                    f"points[{i}]: the edge's {p.at_edge!r} is already the edge's name of "
                    f"points[{at_edge[p.at_edge]}]"
                )
            seen[p.point] = i
            at_edge[p.at_edge] = i
        return self
