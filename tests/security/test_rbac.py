"""RBAC: every REST route x every role, asserted from the one table (security.rbac), over real HTTP.

The routes come from the running app's router, so a route added without a matrix entry fails
here. For each route and role the request is made with a fresh token of a user holding only that
role: allowed -> the handler ran (and did what it does); refused -> 403 naming the role, and
nothing changed (no command recorded or executed, no user added, changed or removed, no token
revoked). Without a token every non-public route answers 401 with a WWW-Authenticate challenge.
The matrix itself is then checked against what the roles are meant to do, and the OPC UA, IEC 104
and MMS parts against the code that uses them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from model.command import Command
from model.north_iec104 import COMMAND_FUNCTIONS
from model.site import SiteConfig
from security.audit import AuditKind
from security.rbac import (
    IEC104_COMMANDS,
    MMS_CONTROLS,
    OPCUA_WRITE,
    REST_ROUTES,
    AccessDenied,
    allowed,
    iec104_rule,
    mms_rule,
    rest_rule,
)
from security.tokens import TokenRevoked
from security.users import Role, User, can_write
from tests.north.test_rest import (
    API,
    PASSWORD,
    PV01_P,
    PV01_SET,
    Env,
    check_response,
    make_env,
)
from twin.history import HistoryStore


@pytest.fixture
async def env(demo_site: SiteConfig, tmp_path: Path) -> AsyncIterator[Env]:
    store = HistoryStore(f"sqlite:///{tmp_path / 'history.db'}").open()
    e = await make_env(demo_site, store)
    yield e
    await e.client.close()
    await e.path.close()
    store.close()


def app_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, template) of every route the app serves (HEAD is GET's)."""
    out = []
    for r in app.router.routes():
        if r.method == "HEAD" or r.resource is None:
            continue
        out.append((r.method, r.resource.canonical))
    return sorted(set(out))


@dataclass
class Probe:
    """How to call one route, and how to see whether it did anything."""

    path: str
    body: dict[str, Any] | None
    # the state this route changes, read before and after (None: it changes nothing)
    effect: Callable[[], Any] | None = None


def _state(env: Env) -> tuple[Any, ...]:
    users = tuple(sorted((u.name, tuple(sorted(u.roles)), u.disabled) for u in env.sec.users))
    return (len(env.twin.commands), len(env.driver.executed), users)


def probe(env: Env, method: str, template: str, n: int) -> Probe:
    """A concrete request for a route: valid path parameters and body, unique per call (n)."""
    victim = f"victim-{n}"
    if template.endswith("/users/{name}/roles") or template.endswith("/users/{name}"):
        env.sec.users.add(victim, PASSWORD, [Role.VIEWER])
    if ("GET", template) == ("GET", f"{API}/commands/{{id}}") and "seed" not in env.twin.commands:
        env.twin.commands.accept(Command(PV01_SET, 1.0, "test", id="seed"))
    path = (
        template.replace("{ref}", PV01_P if "history" in template else PV01_SET)
        .replace("{id}", "VPP1" if "/vpps/" in template else "seed")
        .replace("{name}", victim)
    )
    body: dict[str, Any] | None = None
    effect: Callable[[], Any] | None = None
    if (method, template) == ("POST", f"{API}/commands"):
        body = {"point": PV01_SET, "value": 10 + n % 100, "id": f"rbac-{n}"}
        effect = lambda: _state(env)  # noqa: E731
    elif (method, template) == ("POST", f"{API}/users"):
        body = {"name": f"new-{n}", "password": PASSWORD, "roles": ["viewer"]}
        effect = lambda: _state(env)  # noqa: E731
    elif method == "PUT":
        body = {"roles": ["viewer", "operator"]}
        effect = lambda: _state(env)  # noqa: E731
    elif method == "DELETE":
        effect = lambda: _state(env)  # noqa: E731
    elif (method, template) == ("POST", f"{API}/auth/login"):
        body = {"name": "viewer", "password": PASSWORD}
    elif method == "POST":
        body = {}
    return Probe(path, body, effect)


async def _request(env: Env, method: str, p: Probe, token: str | None) -> tuple[int, Any, Any]:
    headers = env.headers(token)
    async with env.client.request(method, p.path, json=p.body, headers=headers) as resp:
        body = await resp.json()
        check_response(env.doc, method, resp.url.path, resp.status, body)
        return resp.status, body, resp.headers


def _fresh_token(env: Env, role: Role) -> str:
    return env.token_for(role.value)


async def test_every_route_has_a_matrix_entry_and_no_entry_lacks_a_route(env: Env) -> None:
    routes = app_routes(env.app)
    missing = [f"{m} {t}" for m, t in routes if rest_rule(m, t) is None]
    assert not missing, f"routes without an entry in security.rbac.REST_ROUTES: {missing}"
    assert set(REST_ROUTES) == set(routes), "matrix entries without a route"


async def test_every_route_times_every_role(env: Env) -> None:
    n = 0
    for method, template in app_routes(env.app):
        rule = REST_ROUTES[(method, template)]
        for role in Role:
            n += 1
            p = probe(env, method, template, n)
            before = p.effect() if p.effect else None
            env.audit.flush()
            denied_before = len(env.audit.rows(0, 10**6, kind=AuditKind.ACCESS_DENIED.value))
            status, body, _ = await _request(env, method, p, _fresh_token(env, role))
            what = f"{role.value} {method} {template} -> {status} {body}"
            if rule.permits({role}):
                # It ran: a success (the WebSocket route, asked without an upgrade, says so).
                ws = template.endswith("/ws") and body["error"]["code"] == "websocket_required"
                assert 200 <= status < 300 or ws, what
                if p.effect is not None:
                    assert p.effect() != before, f"allowed but nothing happened: {what}"
            else:
                assert status == 403, what
                assert body["error"]["code"] == "forbidden", what
                assert (
                    role.value in body["error"]["message"] and template in body["error"]["message"]
                )
                if p.effect is not None:
                    assert p.effect() == before, f"refused but something changed: {what}"
                env.audit.flush()
                denied = env.audit.rows(0, 10**6, kind=AuditKind.ACCESS_DENIED.value)
                assert len(denied) == denied_before + 1, what
                assert denied[-1].actor == role.value
                assert denied[-1].subject == f"{method} {template}"


async def test_without_a_token_every_guarded_route_is_401_and_does_nothing(env: Env) -> None:
    for n, (method, template) in enumerate(app_routes(env.app)):
        rule = REST_ROUTES[(method, template)]
        p = probe(env, method, template, 10_000 + n)
        before = p.effect() if p.effect else None
        status, body, headers = await _request(env, method, p, None)
        if rule.public:
            assert status not in (401, 403), (method, template, status, body)
            continue
        assert status == 401, (method, template, status, body)
        assert body["error"]["code"] == "unauthenticated"
        assert "POST /api/v1/auth/login" in body["error"]["message"]
        assert headers["WWW-Authenticate"] == 'Bearer realm="vpp-gateway"'
        if p.effect is not None:
            assert p.effect() == before


async def test_a_user_without_roles_may_only_see_itself(env: Env) -> None:
    env.sec.users.add("nobody", PASSWORD, [])
    for n, (method, template) in enumerate(app_routes(env.app)):
        rule = REST_ROUTES[(method, template)]
        p = probe(env, method, template, 20_000 + n)
        status, _, _ = await _request(env, method, p, env.token_for("nobody"))
        if rule.public or rule.any_user:
            assert status not in (401, 403), (method, template)
        else:
            assert status == 403, (method, template)


async def test_a_route_added_without_a_matrix_entry_is_refused(demo_site: SiteConfig) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.commands import CommandPath
    from gateway.north.rest import create_app
    from tests.north.test_rest import make_security
    from twin.twin import Twin

    ran = []

    async def secret(request: web.Request) -> web.Response:
        ran.append(1)
        return web.json_response({})

    twin = Twin.from_site(demo_site)
    sec = make_security()
    app = create_app(twin, CommandPath(twin, []), security=sec)
    app.router.add_get(f"{API}/secret", secret)
    assert (("GET", f"{API}/secret")) in app_routes(app)
    assert rest_rule("GET", f"{API}/secret") is None  # what the coverage test above catches
    async with TestClient(TestServer(app)) as client:
        for role in Role:
            token = sec.tokens.issue(role.value)[0]
            async with client.get(
                f"{API}/secret", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                assert r.status == 403
                assert "has no access rule" in (await r.json())["error"]["message"]
    assert ran == []


async def test_roles_are_read_at_each_request(env: Env) -> None:
    token = await env.login("operator")
    body = {"point": PV01_SET, "value": 12.0}
    await env.post(f"{API}/commands", 202, token=token, json=body)
    env.sec.users.set_roles("operator", [Role.VIEWER])  # demoted: the same token now reads only
    err, _ = await env.post(f"{API}/commands", 403, token=token, json={**body, "value": 13.0})
    assert "viewer" in err["error"]["message"]
    await env.get(f"{API}/points", token=token)
    env.sec.users.set_disabled("operator")
    err = await env.get(f"{API}/points", 401, token=token)
    assert "disabled" in err["error"]["message"]


# --- the table is what the roles are meant to do ---------------------------------------------------

READS = [
    ("GET", f"{API}/points"),
    ("GET", f"{API}/points/{{ref}}"),
    ("GET", f"{API}/history/{{ref}}"),
    ("GET", f"{API}/vpps"),
    ("GET", f"{API}/vpps/{{id}}"),
    ("GET", f"{API}/commands"),
    ("GET", f"{API}/commands/{{id}}"),
    ("GET", f"{API}/status"),
    ("GET", f"{API}/ws"),
]
USERS = [
    ("GET", f"{API}/users"),
    ("POST", f"{API}/users"),
    ("PUT", f"{API}/users/{{name}}/roles"),
    ("DELETE", f"{API}/users/{{name}}"),
]
AUDIT = [("GET", f"{API}/audit"), ("GET", f"{API}/audit/verify")]
COMMAND = ("POST", f"{API}/commands")


def _may(role: Role, route: tuple[str, str]) -> bool:
    return REST_ROUTES[route].permits({role})


def test_matrix_says_what_each_role_is_for() -> None:
    readers = {Role.VIEWER, Role.OPERATOR, Role.ENGINEER, Role.MARKET_PARTICIPANT}
    for role in Role:
        for route in READS:
            assert _may(role, route) == (role in readers), (role, route)
        assert _may(role, COMMAND) == (role in {Role.OPERATOR, Role.ENGINEER}), role
        for route in USERS:
            assert _may(role, route) == (role is Role.SECURITY_ADMIN), (role, route)
        for route in AUDIT:
            assert _may(role, route) == (role is Role.AUDITOR), (role, route)
    for route in [("GET", f"{API}/health"), ("GET", f"{API}/openapi.json")]:
        assert REST_ROUTES[route].public
    assert REST_ROUTES[("POST", f"{API}/auth/login")].public
    assert REST_ROUTES[("GET", f"{API}/auth/me")].any_user
    assert REST_ROUTES[("POST", f"{API}/auth/logout")].any_user
    assert rest_rule("HEAD", f"{API}/points") == rest_rule("GET", f"{API}/points")


def test_opcua_write_follows_the_matrix() -> None:
    for role in Role:
        u = User("u", frozenset({role}), "$argon2id$x")
        assert (
            can_write(u) == OPCUA_WRITE.permits({role}) == (role in {Role.OPERATOR, Role.ENGINEER})
        )
        assert not can_write(User("u", frozenset({role}), "$argon2id$x", disabled=True))
    assert not can_write(None)


def test_iec104_and_mms_entries_cover_every_command_kind() -> None:
    assert set(IEC104_COMMANDS) == {f.value for f in COMMAND_FUNCTIONS}
    for f in COMMAND_FUNCTIONS:
        rule = iec104_rule(f)
        assert rule is not None
        allowed(rule, {Role.OPERATOR}, f"IEC 104 {f.value}")
        with pytest.raises(AccessDenied, match="not allowed for viewer"):
            allowed(rule, {Role.VIEWER}, f"IEC 104 {f.value}")
    assert iec104_rule("p") is None  # a monitoring point is no command
    with pytest.raises(AccessDenied, match="no access rule"):
        allowed(iec104_rule("p"), set(Role))
    assert set(MMS_CONTROLS) == {"select", "operate", "cancel"}
    for service in MMS_CONTROLS:
        rule = mms_rule(service)
        assert rule is not None and rule.permits({Role.ENGINEER})
        assert not rule.permits({Role.AUDITOR, Role.SECURITY_ADMIN, Role.VIEWER})


async def test_logout_by_any_role_revokes_only_that_token(env: Env) -> None:
    for role in Role:
        t1, t2 = env.token_for(role.value), env.token_for(role.value)
        body, _ = await env.post(f"{API}/auth/logout", 200, token=t1)
        assert body == {"name": role.value, "logged_out": True}
        with pytest.raises(TokenRevoked):
            env.sec.tokens.verify(t1)
        env.sec.tokens.verify(t2)
