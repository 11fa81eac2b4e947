"""The north REST API over real HTTP on loopback: a real twin from the demo site, a real SQLite
history store, the real command path, and a small south driver standing in for the field device.

Every JSON answer the tests receive is validated against the OpenAPI document's schema for that
path, method and status, so the document is kept true by the tests themselves. Authentication is
on (auth: required) with one user per role and a real audit log; requests carry the operator's
bearer token unless a test says otherwise. The helpers here (Env, make_security, FakeClock) are
shared by the security tests.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from openapi_spec_validator import validate as validate_spec
from sqlalchemy import create_engine
from sqlalchemy.pool import StaticPool

from gateway.commands import CommandPath
from gateway.north.openapi import openapi_document
from gateway.north.rest import ApiSecurity, create_app
from gateway.south.base import Report, SouthDriver
from model.command import Command, CommandState
from model.points import Access
from model.quality import GOOD, OLD_DATA, Validity, with_validity
from model.sample import Sample
from model.site import SiteConfig
from security.audit import AuditLog
from security.rbac import rest_rule
from security.tokens import TokenService
from security.users import Role, UserStore
from twin.history import HistoryStore
from twin.twin import Twin

API = "/api/v1"
PV01_P = "VPP1.PV01/MMXU1.TotW.mag.f"
PV01_SET = "VPP1.PV01/DRCC1.WSpt.setMag.f"  # rw, limits [0, 120] kW
BAT01_P = "VPP1.BAT01/MMXU1.TotW.mag.f"
BAT01_SOC = "VPP1.BAT01/ZBAT1.SoC.mag.f"
LOAD01_SET = "VPP1.LOAD01/DRCC1.WSpt.setMag.f"  # rw, but left without a driver here
PLANT_P = "VPP1.PLANT/MMXU1.TotW.mag.f"
T0 = 1_700_000_040.0  # on a minute boundary: 2023-11-14T22:14:00Z
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
PASSWORD = "correct horse battery"
# Argon2id at its cheapest: the tests log in often; the real parameters are the library's.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


class LoopbackDriver(SouthDriver):
    """A test peer for a field device: records what it is asked to write, reports SENT, and a
    moment later reports the written value back to the twin as the device's read-back."""

    protocol = "test"

    def __init__(self, twin: Twin, points: set[str]) -> None:
        super().__init__("loopback", twin)
        self.twin = twin
        self.points = points
        self.executed: list[Command] = []

    async def start(self) -> None:
        """Nothing to connect."""

    async def stop(self) -> None:
        """Nothing to release."""

    @property
    def connected(self) -> bool:
        """Always up."""
        return True

    def monitored_points(self) -> set[str]:
        """The points it writes are read back too."""
        return set(self.points)

    def command_points(self) -> set[str]:
        """Points it can write."""
        return set(self.points)

    async def execute(self, cmd: Command, report: Report) -> None:
        """Record, report SENT, read back shortly after."""
        self.executed.append(cmd)
        report(CommandState.SENT, "written by the loopback peer")
        readback = [Sample(cmd.target, cmd.value, time.time(), GOOD, self.id)]
        asyncio.get_running_loop().call_later(0.02, self.twin.apply, readback)


# --- OpenAPI response checking ---------------------------------------------------------------------

_FORMATS = jsonschema.FormatChecker()


def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    dt = datetime.fromisoformat(value)
    return dt.tzinfo is not None and dt.utcoffset() == timedelta(0)


_FORMATS.checks("date-time", raises=ValueError)(_is_datetime)


def _template(doc: dict[str, Any], path: str) -> str | None:
    """The documented path template that a concrete request path matches."""
    if path in doc["paths"]:
        return path
    for tpl in doc["paths"]:
        rx = "^" + re.sub(r"\\\{[^}]+\\\}", ".+", re.escape(tpl)) + "$"
        if "{" in tpl and re.match(rx, path):
            return str(tpl)
    return None


def _resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        parts = node["$ref"].removeprefix("#/").split("/")
        node = doc
        for p in parts:
            node = node[p]
    return node


def validate_against(doc: dict[str, Any], schema: dict[str, Any], body: Any) -> None:
    """Validate body against a schema of the document (with its components)."""
    wrapped = {"components": doc["components"], **schema}
    jsonschema.Draft202012Validator(wrapped, format_checker=_FORMATS).validate(body)


def check_response(doc: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    """Assert that this answer is documented and matches its documented schema."""
    tpl = _template(doc, path)
    if tpl is None:
        assert status == 404, f"{method} {path} is not documented but answered {status}"
        validate_against(doc, {"$ref": "#/components/schemas/Error"}, body)
        return
    op = doc["paths"][tpl].get(method.lower())
    if op is None:
        assert status == 405, f"{method} {tpl} is not documented but answered {status}"
        validate_against(doc, {"$ref": "#/components/schemas/Error"}, body)
        return
    responses = op["responses"]
    assert str(status) in responses, f"{method} {tpl} answered {status}, not documented: {body}"
    resp = _resolve(doc, responses[str(status)])
    validate_against(doc, resp["content"]["application/json"]["schema"], body)


# --- fixtures --------------------------------------------------------------------------------------


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def memory_audit(**kw: Any) -> AuditLog:
    """An audit log in an in-memory SQLite database shared by every thread."""
    engine = create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    return AuditLog(engine, **kw).open()


def make_security(
    clock: Any = time.time, audit: AuditLog | None = None, ttl_s: float = 3600.0
) -> ApiSecurity:
    """auth: required, one user per role named after it (password PASSWORD), tokens and audit."""
    users = UserStore(hasher=FAST_HASHER)
    for role in Role:
        users.add(role.value, PASSWORD, [role])
    tokens = TokenService(b"test-token-secret-of-32-bytes!!!", ttl_s=ttl_s, clock=clock)
    return ApiSecurity(users, tokens, audit if audit is not None else memory_audit(), host="::1")


_DEFAULT: Any = object()


@dataclass
class Env:
    twin: Twin
    store: HistoryStore | None
    driver: LoopbackDriver
    path: CommandPath
    app: web.Application
    client: TestClient[Any, Any]
    doc: dict[str, Any]
    sec: ApiSecurity
    token: str  # the operator's

    @property
    def audit(self) -> AuditLog:
        assert self.sec.audit is not None
        return self.sec.audit

    def token_for(self, name: str) -> str:
        """A fresh token of a user, issued directly (no login)."""
        return self.sec.tokens.issue(name)[0]

    def headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token is not None else {}

    async def call(
        self, method: str, url: str, status: int, token: Any = _DEFAULT, **kw: Any
    ) -> tuple[Any, dict[str, str]]:
        """Request (with the operator's token by default; token=None: without one), assert the
        status and a JSON answer, validate it against the document."""
        headers = dict(kw.pop("headers", None) or {})
        if "Authorization" not in headers:
            headers.update(self.headers(self.token if token is _DEFAULT else token))
        async with self.client.request(method, url, headers=headers, **kw) as resp:
            assert resp.content_type == "application/json", await resp.text()
            body = await resp.json()
            assert resp.status == status, body
            check_response(self.doc, method, resp.url.path, resp.status, body)
            return body, dict(resp.headers)

    async def get(self, url: str, status: int = 200, **kw: Any) -> Any:
        return (await self.call("GET", url, status, **kw))[0]

    async def post(self, url: str, status: int, **kw: Any) -> tuple[Any, dict[str, str]]:
        return await self.call("POST", url, status, **kw)

    async def login(self, name: str, password: str = PASSWORD) -> str:
        body, headers = await self.post(
            f"{API}/auth/login", 200, token=None, json={"name": name, "password": password}
        )
        assert headers["Cache-Control"] == "no-store"
        return str(body["token"])


def _rw_points(twin: Twin) -> set[str]:
    return {ref for ref, s in twin.specs.items() if s.access == Access.RW}


async def make_env(
    site: SiteConfig,
    store: HistoryStore | None,
    ws_queue_size: int | None = None,
    sec: ApiSecurity | None = None,
) -> Env:
    """A running API over the demo site (see the module docstring)."""
    twin = Twin.from_site(site)
    twin.apply(
        [
            Sample(PV01_P, 80.0, T0, GOOD, "test"),
            Sample(BAT01_P, -20.0, T0, GOOD, "test"),
            Sample(BAT01_SOC, 50.0, T0, GOOD, "test"),
        ]
    )
    driver = LoopbackDriver(twin, _rw_points(twin) - {LOAD01_SET})
    path = CommandPath(twin, [driver])
    sec = sec or make_security()
    if sec.audit is not None:
        sec.audit.attach(twin.commands)
    app = create_app(
        twin,
        path,
        store,
        status=lambda: {"role": "test"},
        ws_queue_size=ws_queue_size,
        security=sec,
    )
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    token = sec.tokens.issue(Role.OPERATOR.value)[0]
    return Env(twin, store, driver, path, app, client, openapi_document(), sec, token)


_env = make_env


@pytest.fixture
async def store(tmp_path: Any) -> AsyncIterator[HistoryStore]:
    s = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}").open()
    # PV01 P every 10 s for two minutes from T0: values 0..11.
    s.write([Sample(PV01_P, float(i), T0 + 10 * i, GOOD, "test") for i in range(12)])
    yield s
    s.close()


@pytest.fixture
async def env(demo_site: SiteConfig, store: HistoryStore) -> AsyncIterator[Env]:
    e = await _env(demo_site, store)
    yield e
    await e.client.close()
    await e.path.close()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- health, status, OpenAPI -----------------------------------------------------------------------


async def test_health(env: Env) -> None:
    assert await env.get(f"{API}/health") == {"status": "ok"}


async def test_status_has_runtime_twin_and_subscribers(env: Env) -> None:
    sub = env.twin.subscribe("someone", 5)
    body = await env.get(f"{API}/status")
    assert body["role"] == "test"
    assert body["twin"]["points"] == len(env.twin)
    assert body["subscribers"] == [{"name": "someone", "queued": 0, "delivered": 0, "dropped": 0}]
    env.twin.unsubscribe(sub)


async def test_openapi_document_is_valid_and_served(env: Env) -> None:
    validate_spec(env.doc)
    served = await env.get(f"{API}/openapi.json")
    assert served == env.doc


async def test_every_route_is_documented_and_every_documented_path_is_a_route(env: Env) -> None:
    routes: set[tuple[str, str]] = set()
    for r in env.app.router.routes():
        if r.method == "HEAD":
            continue
        info = r.resource.get_info() if r.resource is not None else {}
        routes.add((info.get("path") or info["formatter"], r.method.lower()))
    documented = {(p, m) for p, ops in env.doc["paths"].items() for m in ops if m in HTTP_METHODS}
    assert routes == documented


async def test_unknown_route_and_method_are_json_errors(env: Env) -> None:
    body, _ = await env.call("GET", "/nope", 404)
    assert body["error"]["code"] == "not_found"
    body, _ = await env.call("GET", f"{API}/nope", 404)
    body, headers = await env.call("DELETE", f"{API}/points", 405)
    assert body["error"]["code"] == "method_not_allowed"
    assert "GET" in headers["Allow"]


# --- points -----------------------------------------------------------------------------------------


async def test_points_list(env: Env) -> None:
    pts = await env.get(f"{API}/points")
    assert [p["point"] for p in pts] == env.twin.refs()
    by = {p["point"]: p for p in pts}
    p = by[PV01_P]
    assert p["value"] == 80.0
    assert p["ts"] == _iso(T0)
    assert p["quality"] == {"validity": "good", "details": [], "raw": 0}
    assert (p["unit"], p["dtype"], p["access"]) == ("kW", "float", "ro")
    assert p["description"]
    unset = by["VPP1.PV02/MMXU1.TotW.mag.f"]
    assert unset["value"] is None and unset["ts"] is None and unset["quality"] is None
    s = by[PV01_SET]
    assert (s["access"], s["min"], s["max"]) == ("rw", 0.0, 120.0)


async def test_points_prefix_and_limit(env: Env) -> None:
    pts = await env.get(f"{API}/points", params={"prefix": "VPP1.BAT01/"})
    assert pts and all(p["point"].startswith("VPP1.BAT01/") for p in pts)
    assert len(await env.get(f"{API}/points", params={"limit": "3"})) == 3
    assert await env.get(f"{API}/points", params={"prefix": "NOPE"}) == []
    for bad in ("0", "-1", "x", "1.5", "99999999999"):
        body = await env.get(f"{API}/points", 400, params={"limit": bad})
        assert body["error"]["message"].startswith("limit:")


async def test_point_get(env: Env) -> None:
    p = await env.get(f"{API}/points/{PV01_P}")
    assert p["point"] == PV01_P and p["value"] == 80.0
    # The '/' inside the reference may also come percent-encoded.
    q = await env.get(f"{API}/points/{PV01_P.replace('/', '%2F')}")
    assert q == p
    # The VPP aggregate is a point too, computed by the twin.
    plant = await env.get(f"{API}/points/{PLANT_P}")
    assert plant["value"] == 60.0
    assert plant["quality"]["validity"] == "questionable"  # not every resource reported yet


async def test_point_unknown_is_404(env: Env) -> None:
    body = await env.get(f"{API}/points/VPP1.PV99/MMXU1.TotW.mag.f", 404)
    assert body["error"]["code"] == "unknown_point"
    assert "VPP1.PV99/MMXU1.TotW.mag.f" in body["error"]["message"]
    await env.get(f"{API}/points/garbage", 404)
    await env.get(f"{API}/points/", 404)


async def test_point_quality_details(env: Env) -> None:
    q = with_validity(OLD_DATA, Validity.QUESTIONABLE)
    env.twin.apply([Sample(PV01_P, 81.0, T0 + 1, q, "test")])
    p = await env.get(f"{API}/points/{PV01_P}")
    assert p["quality"] == {"validity": "questionable", "details": ["oldData"], "raw": q}


async def test_non_finite_value_is_null_not_invalid_json(env: Env) -> None:
    env.twin.apply([Sample(BAT01_SOC, float("nan"), T0 + 1, GOOD, "test")])
    p = await env.get(f"{API}/points/{BAT01_SOC}")
    assert p["value"] is None and p["ts"] is not None
    # A timestamp from the field that is no representable time: null, not a 500.
    env.twin.apply([Sample(BAT01_SOC, 51.0, 1e20, GOOD, "test")])
    p = await env.get(f"{API}/points/{BAT01_SOC}")
    assert p["value"] == 51.0 and p["ts"] is None


# --- VPPs -------------------------------------------------------------------------------------------


async def test_vpps(env: Env) -> None:
    vpps = await env.get(f"{API}/vpps")
    assert [v["id"] for v in vpps] == ["VPP1"]
    v = vpps[0]
    assert v["resource_count"] == 6
    assert set(v["aggregates"]) == {"p", "q", "up_w", "down_w", "up_wh", "down_wh", "online"}
    assert v["aggregates"]["p"]["value"] == 60.0
    assert v["aggregates"]["p"]["unit"] == "kW"
    assert v["aggregates"]["p"]["point"] == PLANT_P
    assert v["aggregates"]["online"]["value"] == 2
    # BAT01: 200 kWh, SoC 50 %, limits 10..95 %
    assert v["aggregates"]["up_wh"]["value"] == pytest.approx(80.0)
    assert v["aggregates"]["down_wh"]["value"] == pytest.approx(90.0)
    assert "resources" not in v

    one = await env.get(f"{API}/vpps/VPP1")
    assert one["aggregates"] == v["aggregates"]
    assert {r["id"] for r in one["resources"]} == {
        "PV01", "BAT01", "HVAC01", "PV02", "BAT02", "LOAD01"
    }  # fmt: skip
    assert {r["aggregator"] for r in one["resources"]} == {"AGG1", "AGG2"}


async def test_vpp_unknown_is_404(env: Env) -> None:
    body = await env.get(f"{API}/vpps/VPP9", 404)
    assert body["error"]["code"] == "unknown_vpp"


# --- history ----------------------------------------------------------------------------------------


async def test_history_raw(env: Env) -> None:
    url = f"{API}/history/{PV01_P}"
    body = await env.get(url)
    assert body["interval"] is None
    assert [s["value"] for s in body["samples"]] == [float(i) for i in range(12)]
    assert body["samples"][0] == {
        "ts": _iso(T0),
        "value": 0.0,
        "quality": {"validity": "good", "details": [], "raw": 0},
    }
    # ISO with Z, end exclusive
    body = await env.get(url, params={"start": _iso(T0 + 10), "end": _iso(T0 + 60)})
    assert [s["value"] for s in body["samples"]] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert body["start"] == _iso(T0 + 10) and body["end"] == _iso(T0 + 60)
    # epoch seconds
    body = await env.get(url, params={"start": str(T0 + 100), "end": str(T0 + 1000)})
    assert [s["value"] for s in body["samples"]] == [10.0, 11.0]
    # naive ISO is UTC; an explicit offset is honoured
    naive = datetime.fromtimestamp(T0 + 100, UTC).replace(tzinfo=None).isoformat()
    body = await env.get(url, params={"start": naive})
    assert [s["value"] for s in body["samples"]] == [10.0, 11.0]
    cst = datetime.fromtimestamp(T0 + 100, timezone(timedelta(hours=8))).isoformat()
    assert cst.endswith("+08:00")
    body = await env.get(url, params={"start": cst})
    assert [s["value"] for s in body["samples"]] == [10.0, 11.0]
    # limit
    body = await env.get(url, params={"limit": "3"})
    assert [s["value"] for s in body["samples"]] == [0.0, 1.0, 2.0]


async def test_history_resampled(env: Env) -> None:
    url = f"{API}/history/{PV01_P}"
    rng = {"start": _iso(T0), "end": _iso(T0 + 120)}
    body = await env.get(url, params={**rng, "interval": "1min"})
    assert body["agg"] == "mean" and body["interval"] == "1min"
    assert body["buckets"] == [
        {"ts": _iso(T0), "value": 2.5, "count": 6},
        {"ts": _iso(T0 + 60), "value": 8.5, "count": 6},
    ]
    body = await env.get(url, params={**rng, "interval": "1min", "agg": "max"})
    assert [b["value"] for b in body["buckets"]] == [5.0, 11.0]
    body = await env.get(url, params={**rng, "interval": "1min", "agg": "last"})
    assert [b["value"] for b in body["buckets"]] == [5.0, 11.0]
    body = await env.get(url, params={"start": str(T0), "end": str(T0 + 180), "interval": "1min"})
    assert body["buckets"][-1] == {"ts": _iso(T0 + 120), "value": None, "count": 0}
    # Default range for resampling: the last hour (nothing stored there).
    body = await env.get(url, params={"interval": "5min"})
    assert len(body["buckets"]) in (12, 13)
    assert all(b["count"] == 0 for b in body["buckets"])


async def test_history_bad_parameters_are_400_naming_them(env: Env) -> None:
    url = f"{API}/history/{PV01_P}"
    cases = [
        ({"interval": "7min"}, "interval"),
        ({"interval": "1min", "agg": "median"}, "agg"),
        ({"agg": "max"}, "agg"),
        ({"start": "yesterday"}, "start"),
        ({"end": "2026-13-45T00:00:00Z"}, "end"),
        ({"start": "1e999"}, "start"),
        ({"start": "nan"}, "start"),
        ({"start": str(T0 + 60), "end": str(T0)}, "start"),
        ({"start": str(T0), "end": str(T0)}, "start"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"bogus": "1"}, "bogus"),
        ({"start": "0", "end": str(T0), "interval": "5s"}, "interval"),  # far too many buckets
    ]
    for params, name in cases:
        body = await env.get(url, 400, params=params)
        assert body["error"]["code"] == "bad_request"
        assert body["error"]["message"].startswith(f"{name}:"), (params, body)


async def test_history_unknown_point_is_404(env: Env) -> None:
    body = await env.get(f"{API}/history/VPP1.PV99/MMXU1.TotW.mag.f", 404)
    assert body["error"]["code"] == "unknown_point"


async def test_history_of_a_point_never_stored_is_empty(env: Env) -> None:
    url = f"{API}/history/{BAT01_P}"
    assert (await env.get(url))["samples"] == []
    body = await env.get(url, params={"start": str(T0), "end": str(T0 + 120), "interval": "1min"})
    assert body["buckets"] == [
        {"ts": _iso(T0), "value": None, "count": 0},
        {"ts": _iso(T0 + 60), "value": None, "count": 0},
    ]


async def test_history_not_configured_is_503(demo_site: SiteConfig) -> None:
    e = await _env(demo_site, None)
    try:
        body = await e.get(f"{API}/history/{PV01_P}", 503)
        assert body["error"]["code"] == "history_unavailable"
    finally:
        await e.client.close()


async def test_history_store_failure_is_503_not_500(env: Env) -> None:
    assert env.store is not None
    env.store.close()
    body = await env.get(f"{API}/history/{PV01_P}", 503)
    assert body["error"]["code"] == "history_error"


# --- commands ---------------------------------------------------------------------------------------


async def _wait_state(env: Env, cmd_id: str, state: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        rec = await env.get(f"{API}/commands/{cmd_id}")
        if rec["state"] == state or time.monotonic() > deadline:
            assert rec["state"] == state, rec
            return rec  # type: ignore[no-any-return]
        await asyncio.sleep(0.01)


async def test_command_lifecycle_reaches_confirmed(env: Env) -> None:
    rec, headers = await env.post(
        f"{API}/commands", 202, json={"point": PV01_SET, "value": 50.5, "timeout_s": 5}
    )
    assert rec["point"] == PV01_SET and rec["value"] == 50.5 and rec["origin"] == "rest"
    assert rec["deadline"] == pytest.approx(time.time() + 5, abs=2)
    assert headers["Location"] == f"{API}/commands/{rec['id']}"
    final = await _wait_state(env, rec["id"], "confirmed")
    assert [h["state"] for h in final["history"]] == ["accepted", "sent", "confirmed"]
    assert [c.value for c in env.driver.executed] == [50.5]
    pt = await env.get(f"{API}/points/{PV01_SET}")
    assert pt["value"] == 50.5
    # Location is followable
    assert (await env.get(headers["Location"]))["state"] == "confirmed"


async def test_repeated_command_id_executes_once(env: Env) -> None:
    body = {"point": PV01_SET, "value": 30, "id": "dispatch-42"}
    first, h1 = await env.post(f"{API}/commands", 202, json=body)
    again, h2 = await env.post(f"{API}/commands", 200, json=body)
    assert first["id"] == again["id"] == "dispatch-42"
    assert h1["Location"] == h2["Location"]
    await _wait_state(env, "dispatch-42", "confirmed")
    again, _ = await env.post(f"{API}/commands", 200, json=body)
    assert again["state"] == "confirmed"
    assert len(env.driver.executed) == 1
    assert len(env.twin.commands) == 1
    # Same id, other value: conflict, and nothing new executed or recorded.
    err, _ = await env.post(f"{API}/commands", 409, json={**body, "value": 31})
    assert err["error"]["code"] == "conflict"
    assert len(env.driver.executed) == 1 and len(env.twin.commands) == 1


async def test_out_of_limits_is_422_and_nothing_recorded_or_executed(env: Env) -> None:
    err, _ = await env.post(f"{API}/commands", 422, json={"point": PV01_SET, "value": 500})
    assert err["error"]["code"] == "out_of_limits"
    assert "120" in err["error"]["message"]
    await asyncio.sleep(0.05)
    assert len(env.twin.commands) == 0
    assert env.driver.executed == []
    assert await env.get(f"{API}/commands") == []
    assert env.twin.commands.desired == {}


async def test_read_only_point_is_422(env: Env) -> None:
    err, _ = await env.post(f"{API}/commands", 422, json={"point": PV01_P, "value": 1.0})
    assert err["error"]["code"] == "read_only"
    assert len(env.twin.commands) == 0 and env.driver.executed == []


async def test_wrong_type_for_point_is_422(env: Env) -> None:
    err, _ = await env.post(f"{API}/commands", 422, json={"point": PV01_SET, "value": True})
    assert err["error"]["code"] == "bad_type"


async def test_point_without_driver_is_422_no_route(env: Env) -> None:
    err, _ = await env.post(f"{API}/commands", 422, json={"point": LOAD01_SET, "value": -20})
    assert err["error"]["code"] == "no_route"
    assert len(env.twin.commands) == 0


async def test_command_unknown_point_is_404(env: Env) -> None:
    err, _ = await env.post(
        f"{API}/commands", 404, json={"point": "VPP1.PV99/DRCC1.WSpt.setMag.f", "value": 1}
    )
    assert err["error"]["code"] == "unknown_point"
    assert len(env.twin.commands) == 0


async def test_malformed_and_invalid_bodies_are_400(env: Env) -> None:
    url = f"{API}/commands"
    raw_cases = [
        (b"{not json", "malformed_json"),
        (b"", "malformed_json"),
        (b"\xff\xfe", "malformed_json"),
        (b'{"point": "' + PV01_SET.encode() + b'", "value": NaN}', "malformed_json"),
        (b"[1, 2]", "invalid_body"),
        (b'"text"', "invalid_body"),
    ]
    for data, code in raw_cases:
        err, _ = await env.post(url, 400, data=data, headers={"Content-Type": "application/json"})
        assert err["error"]["code"] == code, data
    cases: list[tuple[dict[str, Any], str]] = [
        ({"point": PV01_SET, "value": 5, "colour": "red"}, "colour"),
        ({"point": PV01_SET}, "value"),
        ({"value": 5}, "point"),
        ({"point": 7, "value": 5}, "point"),
        ({"point": PV01_SET, "value": "5"}, "value"),
        ({"point": PV01_SET, "value": None}, "value"),
        ({"point": PV01_SET, "value": [5]}, "value"),
        ({"point": PV01_SET, "value": 5, "timeout_s": 0}, "timeout_s"),
        ({"point": PV01_SET, "value": 5, "timeout_s": 3601}, "timeout_s"),
        ({"point": PV01_SET, "value": 5, "timeout_s": "10"}, "timeout_s"),
        ({"point": PV01_SET, "value": 5, "id": ""}, "id"),
        ({"point": PV01_SET, "value": 5, "id": "a/b"}, "id"),
        ({"point": PV01_SET, "value": 5, "id": 12}, "id"),
    ]
    for body, field in cases:
        err, _ = await env.post(url, 400, json=body)
        assert err["error"]["code"] == "invalid_body"
        assert field in err["error"]["message"], (body, err)
        assert [d["field"] for d in err["error"]["details"]] == [field], (body, err)
    # 1e400 parses to infinity: refused, not passed on.
    data = b'{"point": "' + PV01_SET.encode() + b'", "value": 1e400}'
    err, _ = await env.post(url, 400, data=data)
    assert err["error"]["details"][0]["field"] == "value"
    assert len(env.twin.commands) == 0 and env.driver.executed == []


async def test_body_too_large_is_json_413(env: Env) -> None:
    err, _ = await env.post(
        f"{API}/commands", 413, data=b"x" * 200_000, headers={"Content-Type": "application/json"}
    )
    assert err["error"]["code"] == "request_entity_too_large"


async def test_list_commands_most_recent_first(env: Env) -> None:
    for i, v in enumerate((10, 20, 30)):
        await env.post(f"{API}/commands", 202, json={"point": PV01_SET, "value": v, "id": f"c{i}"})
    recs = await env.get(f"{API}/commands")
    assert [r["id"] for r in recs] == ["c2", "c1", "c0"]
    recs = await env.get(f"{API}/commands", params={"limit": "2"})
    assert [r["id"] for r in recs] == ["c2", "c1"]
    await env.get(f"{API}/commands", 400, params={"limit": "0"})


async def test_get_command_unknown_is_404(env: Env) -> None:
    err = await env.get(f"{API}/commands/nope", 404)
    assert err["error"]["code"] == "unknown_command"


# --- WebSocket --------------------------------------------------------------------------------------


async def _ws_json(env: Env, ws: Any) -> dict[str, Any]:
    msg: dict[str, Any] = await ws.receive_json(timeout=5)
    validate_against(env.doc, {"$ref": "#/components/schemas/WsMessage"}, msg)
    return msg


async def _no_subscribers(env: Env) -> None:
    for _ in range(200):
        if not env.twin.subscriber_stats():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still subscribed: {env.twin.subscriber_stats()}")


async def test_websocket_snapshot_then_changes(env: Env) -> None:
    async with env.client.ws_connect(f"{API}/ws", headers=env.headers(env.token)) as ws:
        snap = await _ws_json(env, ws)
        assert snap["type"] == "snapshot"
        assert snap["seq"] == env.twin.seq
        assert {p["point"]: p["value"] for p in snap["points"]}[PV01_P] == 80.0
        assert len(snap["points"]) == len(env.twin)
        assert len(env.twin.subscriber_stats()) == 1
        env.twin.apply([Sample(PV01_P, 90.0, T0 + 5, GOOD, "test")])
        msg = await _ws_json(env, ws)
        assert msg["type"] == "changes" and msg["seq"] == snap["seq"] + 1
        changes = {c["point"]: c for c in msg["changes"]}
        assert changes[PV01_P] == {
            "point": PV01_P,
            "value": 90.0,
            "ts": _iso(T0 + 5),
            "quality": {"validity": "good", "details": [], "raw": 0},
        }
        assert changes[PLANT_P]["value"] == 70.0  # the aggregate follows in the same change set
    await _no_subscribers(env)


async def test_websocket_prefix_filter(env: Env) -> None:
    async with env.client.ws_connect(
        f"{API}/ws", params={"prefix": "VPP1.BAT01/"}, headers=env.headers(env.token)
    ) as ws:
        snap = await _ws_json(env, ws)
        assert snap["points"] and all(p["point"].startswith("VPP1.BAT01/") for p in snap["points"])
        env.twin.apply([Sample(PV01_P, 91.0, T0 + 6, GOOD, "test")])  # filtered out
        env.twin.apply([Sample(BAT01_SOC, 55.0, T0 + 6, GOOD, "test")])
        msg = await _ws_json(env, ws)
        assert msg["type"] == "changes"
        assert [c["point"] for c in msg["changes"]] == [BAT01_SOC]
    await _no_subscribers(env)


async def test_websocket_slow_client_sees_dropped_and_seq_gap(demo_site: SiteConfig) -> None:
    e = await _env(demo_site, None, ws_queue_size=2)
    try:
        async with e.client.ws_connect(f"{API}/ws", headers=e.headers(e.token)) as ws:
            snap = await _ws_json(e, ws)
            # Ten change sets while the server's sender cannot run: its queue holds two.
            for i in range(10):
                e.twin.apply([Sample(PV01_P, 100.0 + i, T0 + 10 + i, GOOD, "test")])
            dropped = await _ws_json(e, ws)
            assert dropped == {"type": "dropped", "count": 8}
            a = await _ws_json(e, ws)
            b = await _ws_json(e, ws)
            assert (a["seq"], b["seq"]) == (snap["seq"] + 9, snap["seq"] + 10)
            assert {c["point"]: c["value"] for c in b["changes"]}[PV01_P] == 109.0
        await _no_subscribers(e)
    finally:
        await e.client.close()


async def test_websocket_without_upgrade_is_json_400(env: Env) -> None:
    err = await env.get(f"{API}/ws", 400)
    assert err["error"]["code"] == "websocket_required"


# --- robustness -------------------------------------------------------------------------------------


async def test_bad_input_never_gives_500(env: Env) -> None:
    hist = f"{API}/history/{PV01_P}"
    probes: list[tuple[str, dict[str, str]]] = [
        (hist, {"start": "1e300"}),
        (hist, {"start": "-1e300"}),
        (hist, {"end": "inf"}),
        (hist, {"start": "0001-01-01T00:00:00+01:00"}),
        (hist, {"start": "9999-12-31T23:59:59Z", "interval": "60min"}),
        (hist, {"start": "253402214400", "interval": "60min"}),
        (hist, {"start": "2023-11-14T22:14:00 08:00"}),
        (hist, {"start": "\x00", "end": "\ud7ff"}),
        (hist, {"interval": "", "agg": ""}),
        (hist, {"limit": "1_000"}),
        (hist, {"limit": " 5"}),
        (f"{API}/points", {"limit": "1e3"}),
        (f"{API}/points", {"prefix": "\x00/..%2F"}),
        (f"{API}/points/%00", {}),
        (f"{API}/points/..%2F..%2Fetc%2Fpasswd", {}),
        (f"{API}/commands/%FF", {}),
        (f"{API}/vpps/%2F", {}),
    ]
    for url, params in probes:
        async with env.client.get(url, params=params, headers=env.headers(env.token)) as resp:
            assert resp.status < 500, (url, params, resp.status, await resp.text())
            body = await resp.json()
            check_response(env.doc, "GET", resp.url.path, resp.status, body)


async def test_internal_error_is_json_without_traceback(
    demo_site: SiteConfig, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_status() -> dict[str, Any]:
        raise RuntimeError("secret internals")

    twin = Twin.from_site(demo_site)
    path = CommandPath(twin, [])
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(twin, path, status=broken_status))
    )
    await client.start_server()
    try:
        async with client.get(f"{API}/status") as resp:
            assert resp.status == 500
            body = await resp.json()
        assert body == {
            "error": {"code": "internal_error", "message": "internal error (logged by the gateway)"}
        }
        assert "secret internals" in caplog.text  # logged for the operator, not sent
    finally:
        await client.close()


# --- security in the document, auth off, HTTPS -------------------------------------------------------


async def test_document_states_the_role_matrix(env: Env) -> None:
    doc = env.doc
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            rule = rest_rule(method, path)
            assert rule is not None, f"{method.upper()} {path} has no role matrix entry"
            if rule.public:
                assert op["security"] == [], (method, path)
                assert "401" not in op["responses"] or path.endswith("/auth/login")
                continue
            assert "security" not in op  # the document-wide bearer requirement applies
            assert op["responses"]["401"] == {"$ref": "#/components/responses/Unauthorized"}
            assert op["responses"]["403"] == {"$ref": "#/components/responses/Forbidden"}
            want = "any" if rule.any_user else sorted(r.value for r in rule.roles)
            assert op["x-roles"] == want, (method, path)


async def test_auth_off_only_on_loopback_and_acts_as_local(demo_site: SiteConfig) -> None:
    from gateway.north.rest import ApiSecurityError

    users = UserStore(hasher=FAST_HASHER)
    tokens = TokenService(b"x" * 32)
    for host in ("0.0.0.0", "10.1.2.3", "::", "gateway.example"):
        with pytest.raises(ApiSecurityError, match="only allowed on a loopback host"):
            ApiSecurity(users, tokens, auth="off", host=host)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost", "[::1]"):
        ApiSecurity(users, tokens, auth="off", host=host)
    users.add("olga", PASSWORD, [Role.VIEWER])
    e = await make_env(demo_site, None, sec=ApiSecurity(users, tokens, auth="off", host="::1"))
    try:
        me = await e.get(f"{API}/auth/me", token=None)
        assert me["name"] == "local" and me["auth"] == "off"
        assert set(me["roles"]) == {r.value for r in Role}
        await e.post(f"{API}/commands", 202, token=None, json={"point": PV01_SET, "value": 5})
        # A token, when one is sent, is still checked: with it the user's own roles apply.
        viewer = tokens.issue("olga")[0]
        await e.post(f"{API}/commands", 403, token=viewer, json={"point": PV01_SET, "value": 6})
        err = await e.get(f"{API}/points", 401, token="vpp1.bogus.token")
        assert err["error"]["code"] == "invalid_token"
    finally:
        await e.client.close()
        await e.path.close()


async def test_https_end_to_end_with_generated_certificate(
    demo_site: SiteConfig, tmp_path: Any, port: int
) -> None:
    import ssl

    import aiohttp

    from gateway.north.rest import https_context
    from model.api_security import ApiTLSConfig

    cfg = ApiTLSConfig(enabled=True, generated_dir=str(tmp_path / "tls"))
    server_ctx = https_context(cfg, "127.0.0.1")
    cert = tmp_path / "tls" / "cert.pem"
    key = tmp_path / "tls" / "key.pem"
    assert cert.exists() and (key.stat().st_mode & 0o777) == 0o600
    first = cert.read_bytes()
    https_context(cfg, "127.0.0.1")  # the second start reuses it
    assert cert.read_bytes() == first

    twin = Twin.from_site(demo_site)
    path = CommandPath(twin, [LoopbackDriver(twin, _rw_points(twin))])
    sec = make_security()
    runner = web.AppRunner(create_app(twin, path, security=sec), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx).start()
    client_ctx = ssl.create_default_context(cafile=str(cert))  # verifies chain and host name
    base = f"https://127.0.0.1:{port}{API}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{base}/auth/login",
                json={"name": "operator", "password": PASSWORD},
                ssl=client_ctx,
            ) as r:
                assert r.status == 200
                token = (await r.json())["token"]
            auth = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{base}/points/{PV01_SET}", headers=auth, ssl=client_ctx) as r:
                assert r.status == 200 and (await r.json())["point"] == PV01_SET
            async with http.get(f"{base}/points", ssl=client_ctx) as r:
                assert r.status == 401
            # Without trusting the generated certificate the client refuses the server.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with http.get(f"{base}/health", ssl=ssl.create_default_context()):
                    pass
            # Plain HTTP to the HTTPS port gets no answer of ours.
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}{API}/health") as r:
                    await r.read()
    finally:
        await runner.cleanup()
        await path.close()


async def test_generated_certificate_is_remade_when_it_does_not_name_the_host(
    tmp_path: Any,
) -> None:
    from cryptography import x509

    from gateway.north.rest import ensure_self_signed

    c1, _ = ensure_self_signed(tmp_path, ["localhost", "127.0.0.1"])
    first = c1.read_bytes()
    c2, _ = ensure_self_signed(tmp_path, ["localhost", "127.0.0.1", "vpp.example"])
    assert c2 == c1 and c2.read_bytes() != first
    cert = x509.load_pem_x509_certificate(c2.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "vpp.example" in san.get_values_for_type(x509.DNSName)
    # ...and when it is about to expire.
    later = FakeClock(time.time() + 400 * 86400)
    before = c2.read_bytes()
    ensure_self_signed(tmp_path, ["localhost", "127.0.0.1", "vpp.example"], clock=later)
    assert c2.read_bytes() != before
