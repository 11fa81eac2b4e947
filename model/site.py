"""The site file: one YAML document describing the VPPs, their resources and the drivers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from model.api_security import ApiSecurityConfig, AuditConfig, check_api_exposure
from model.drivers import PROTOCOLS, DriverConfig
from model.edge import EdgeSection
from model.errors import ConfigIssue, SiteConfigError
from model.north_iec104 import IEC104ServerConfig, PointTableError, build_point_table
from model.north_mms import MmsServerConfig
from model.north_opcua import OpcUaConfig
from model.points import PointSpec, StrictModel
from model.resources import Resource, VPPConfig

__all__ = [
    "ApiConfig",
    "HistoryConfig",
    "NorthConfig",
    "SiteConfig",
    "SiteInfo",
    "TwinConfig",
    "load_site",
    "parse_site",
    "site_schema",
]


class SiteInfo(StrictModel):
    """Who and where the site is."""

    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    name: str = ""


class HistoryConfig(StrictModel):
    """Where history goes: any SQLAlchemy URL; SQLite (WAL) under var/ by default."""

    enabled: bool = True
    url: str = "sqlite:///var/history.db"
    batch_size: int = Field(default=5000, ge=1)
    flush_interval_s: float = Field(default=1.0, gt=0)


class ApiConfig(ApiSecurityConfig):
    """The REST API listener and who may use it (auth off is allowed on loopback only)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    @field_validator("auth", mode="before")
    @classmethod
    def _yaml_off(cls, v: object) -> object:
        # YAML 1.1 reads an unquoted `off` as false (and `on` as true).
        return {False: "off", True: "required"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _exposure(self) -> Self:
        check_api_exposure(self.host, self.auth)
        return self


class TwinConfig(StrictModel):
    """Live-state settings."""

    stale_after_s: float | None = Field(
        default=None, gt=0, description="default staleness for acquired points"
    )
    subscriber_queue: int = Field(default=1000, ge=1, description="change sets held per subscriber")
    command_timeout_s: float = Field(default=10.0, gt=0)


class AtRestConfig(StrictModel):
    """Business data encrypted at rest under the master key (security.secrets)."""

    encrypt_business_data: bool = Field(
        default=False,
        description="store command values and origins and audit details SM4-GCM sealed under "
        "the master key (VPP_MASTER_KEY or var/master.key, `vpp secrets init`); the gateway "
        "refuses to start without that key",
    )


class NorthConfig(StrictModel):
    """North interfaces serving the twin to dispatch, SCADA and engineering tools."""

    iec104: IEC104ServerConfig = IEC104ServerConfig(enabled=False)
    opcua: OpcUaConfig = OpcUaConfig(enabled=False)
    mms: MmsServerConfig = MmsServerConfig(enabled=False)


class SiteConfig(StrictModel):
    """A whole site file."""

    site: SiteInfo
    vpps: list[VPPConfig] = Field(min_length=1)
    drivers: list[DriverConfig] = []
    history: HistoryConfig = HistoryConfig()
    api: ApiConfig = ApiConfig()
    twin: TwinConfig = TwinConfig()
    north: NorthConfig = NorthConfig()
    audit: AuditConfig = AuditConfig()
    at_rest: AtRestConfig = AtRestConfig()
    edge: EdgeSection | None = None

    def point_specs(self) -> list[PointSpec]:
        """Every point of the site: resources' points then each VPP's plant points."""
        out: list[PointSpec] = []
        for v in self.vpps:
            for r in v.all_resources():
                out.extend(r.point_specs(v.id))
            out.extend(v.plant_specs())
        return out

    def resources(self) -> list[tuple[str, Resource]]:
        """(vpp id, resource) for every resource."""
        return [(v.id, r) for v in self.vpps for r in v.all_resources()]


def site_schema() -> dict[str, Any]:
    """JSON Schema of the site file."""
    return SiteConfig.model_json_schema()


# --- loading with file/line/field errors -------------------------------------------------------


class _LineMap:
    """Line numbers of every node of a YAML document, by path (keys and list indices)."""

    def __init__(self) -> None:
        self.lines: dict[tuple[Any, ...], int] = {}

    def line(self, path: tuple[Any, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def _build(
    node: yaml.Node, path: tuple[Any, ...], lm: _LineMap, file: str, issues: list[ConfigIssue]
) -> Any:
    lm.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for k, v in node.value:
            key = _scalar(k) if isinstance(k, yaml.ScalarNode) else k.start_mark.line
            if key in out:
                issues.append(
                    ConfigIssue(file, k.start_mark.line + 1, _fmt((*path, key)), "duplicate key")
                )
            lm.lines[(*path, key)] = k.start_mark.line + 1
            out[key] = _build(v, (*path, key), lm, file, issues)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, (*path, i), lm, file, issues) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _fmt(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


def _pydantic_issues(e: ValidationError, file: str, lm: _LineMap) -> list[ConfigIssue]:
    issues = []
    for err in e.errors():
        # Discriminated unions add the tag ('iec104') to loc; it is not in the document.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in PROTOCOLS))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not part of the site file schema)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        issues.append(ConfigIssue(file, lm.line(loc), _fmt(loc), msg))
    return issues


def _cross_check(cfg: SiteConfig, file: str, lm: _LineMap) -> list[ConfigIssue]:
    """Checks across sections: unique ids and points, bindings to known points, no double binding."""
    issues: list[ConfigIssue] = []

    def add(path: tuple[Any, ...], msg: str) -> None:
        issues.append(ConfigIssue(file, lm.line(path), _fmt(path), msg))

    vpp_ids: set[str] = set()
    mrids: dict[str, str] = {}
    for vi, v in enumerate(cfg.vpps):
        if v.id in vpp_ids:
            add(("vpps", vi, "id"), f"duplicate VPP id {v.id!r}")
        vpp_ids.add(v.id)
        res_ids: set[str] = set()
        paths = [("vpps", vi, "resources", ri) for ri in range(len(v.resources))] + [
            ("vpps", vi, "aggregators", ai, "resources", ri)
            for ai, a in enumerate(v.aggregators)
            for ri in range(len(a.resources))
        ]
        for path, r in zip(paths, v.all_resources(), strict=True):
            if r.id in res_ids:
                add((*path, "id"), f"duplicate resource id {r.id!r} in VPP {v.id}")
            res_ids.add(r.id)
            if r.mrid in mrids:
                add((*path, "mrid"), f"duplicate mRID {r.mrid!r} (also {mrids[r.mrid]})")
            mrids[r.mrid] = f"{v.id}.{r.id}"
    specs: dict[str, PointSpec] = {}
    for s in cfg.point_specs():
        if s.ref in specs:
            issues.append(ConfigIssue(file, None, "vpps", f"duplicate point {s.ref!r}"))
        specs[s.ref] = s

    driver_ids: set[str] = set()
    monitored: dict[str, str] = {}
    commanded: dict[str, str] = {}
    for di, d in enumerate(cfg.drivers):
        if d.id in driver_ids:
            add(("drivers", di, "id"), f"duplicate driver id {d.id!r}")
        driver_ids.add(d.id)
        entries = d.bindings()
        for key, i, ref, is_cmd in entries:
            where = ("drivers", di, key, i, "point")
            spec = specs.get(ref)
            if spec is None:
                add(where, f"point {ref!r} is not defined by any resource")
                continue
            table = commanded if is_cmd else monitored
            if ref in table and table[ref] != f"{d.id}#{i}":
                what = "commanded" if is_cmd else "acquired"
                add(where, f"point {ref!r} is {what} twice (also by {table[ref]})")
            table[ref] = f"{d.id}#{i}"
            if is_cmd and spec.access != "rw":
                add(where, f"point {ref!r} is read-only: it cannot be a command target")
    if cfg.north.iec104.enabled and not issues:
        try:
            build_point_table(cfg.north.iec104, cfg)
        except PointTableError as e:
            for problem in e.problems:
                add(("north", "iec104"), str(problem))
    return issues


def parse_site(text: str, file: str = "<site>") -> SiteConfig:
    """Parse and validate a site document; raise SiteConfigError naming file, line and field."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SiteConfigError(
            [ConfigIssue(file, line, "(document)", f"not valid YAML: {e}")]
        ) from e
    if node is None:
        raise SiteConfigError([ConfigIssue(file, None, "(document)", "the file is empty")])
    lm = _LineMap()
    issues: list[ConfigIssue] = []
    data = _build(node, (), lm, file, issues)
    if not isinstance(data, dict):
        raise SiteConfigError([ConfigIssue(file, 1, "(document)", "top level must be a mapping")])
    try:
        cfg = SiteConfig.model_validate(data)
    except ValidationError as e:
        raise SiteConfigError(issues + _pydantic_issues(e, file, lm)) from e
    issues += _cross_check(cfg, file, lm)
    if issues:
        raise SiteConfigError(issues)
    return cfg


def load_site(path: str | Path) -> SiteConfig:
    """Load a site file (YAML or JSON)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise SiteConfigError(
            [ConfigIssue(str(p), None, "(file)", f"cannot read: {e.strerror}")]
        ) from e
    return parse_site(text, str(p))


def dump_schema() -> str:
    """The JSON Schema as indented text."""
    return json.dumps(site_schema(), indent=2)
