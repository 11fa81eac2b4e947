"""Bearer tokens: expiry by an injected clock, tampering, revocation (logout, per user), the key
file, and the same over real HTTP: login (failures audited), logout, expired and forged tokens."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from model.site import SiteConfig
from security.sm3 import hmac_sm3
from security.tokens import (
    BadTokenSignature,
    MalformedToken,
    TokenError,
    TokenExpired,
    TokenRevoked,
    TokenService,
)
from security.users import Role
from tests.north.test_rest import API, PASSWORD, PV01_SET, Env, FakeClock, make_env, make_security

SECRET = bytes(range(32))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(secret: bytes, payload: dict[str, object] | bytes) -> str:
    """A token with a valid MAC under `secret` over any payload (what only the server can make)."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    mac = hmac_sm3(secret, b"vpp-api-token\x00v1\x00" + raw)
    return f"vpp1.{_b64(raw)}.{_b64(mac)}"


def test_issue_and_verify() -> None:
    clock = FakeClock()
    svc = TokenService(SECRET, ttl_s=600, clock=clock)
    token, claims = svc.issue("olga")
    assert token.startswith("vpp1.") and token.count(".") == 2
    assert (claims.sub, claims.iat, claims.exp) == ("olga", clock.t, clock.t + 600)
    assert svc.verify(token) == claims
    assert svc.issue("olga")[1].jti != claims.jti  # every token has its own id


def test_expiry_follows_the_injected_clock() -> None:
    clock = FakeClock()
    svc = TokenService(SECRET, ttl_s=60, clock=clock)
    token, _ = svc.issue("olga")
    clock.advance(59.999)
    assert svc.verify(token).sub == "olga"
    clock.advance(0.001)
    with pytest.raises(TokenExpired, match="expired at 2027-01-15T08:01:00Z"):
        svc.verify(token)
    short, _ = svc.issue("olga", ttl_s=1)
    clock.advance(1)
    with pytest.raises(TokenExpired):
        svc.verify(short)


def test_tampering_is_refused() -> None:
    svc = TokenService(SECRET)
    token, claims = svc.issue("viewer")
    prefix, payload, mac = token.split(".")
    # Another user in the payload, the MAC kept.
    doc = json.loads(base64.urlsafe_b64decode(payload + "=="))
    doc["sub"] = "security_admin"
    with pytest.raises(BadTokenSignature):
        svc.verify(f"{prefix}.{_b64(json.dumps(doc).encode())}.{mac}")
    # A later expiry, the MAC kept.
    doc = {**json.loads(base64.urlsafe_b64decode(payload + "==")), "exp": 2**40}
    with pytest.raises(BadTokenSignature):
        svc.verify(f"{prefix}.{_b64(json.dumps(doc).encode())}.{mac}")
    # Every single character of payload and MAC changed in turn (the last one of each may only
    # change unused bits: still refused, as non-canonical).
    for i, part in ((1, payload), (2, mac)):
        for j in range(len(part)):
            c = "A" if part[j] != "A" else "B"
            parts = [prefix, payload, mac]
            parts[i] = part[:j] + c + part[j + 1 :]
            with pytest.raises((BadTokenSignature, MalformedToken)):
                svc.verify(".".join(parts))
    # The MAC's last character spelled with its unused low bit set: the same bytes, refused.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(mac + "=")
    with pytest.raises(MalformedToken, match="canonical"):
        svc.verify(f"{prefix}.{payload}.{twin}")
    # Made with another secret.
    other = TokenService(bytes(32))
    with pytest.raises(BadTokenSignature):
        svc.verify(other.issue("viewer")[0])
    assert svc.verify(token) == claims


@pytest.mark.parametrize(
    "token",
    ["", "vpp1", "vpp1..", "vpp2.a.b", "vpp1.a.b.c", "vpp1.!!!.abc", "x" * 5000, "vpp1.a b.c"],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(MalformedToken):
        TokenService(SECRET).verify(token)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        {"sub": "olga"},
        {"sub": "olga", "iat": 1, "exp": 2, "jti": "short"},
        {"sub": "", "iat": 1, "exp": 2, "jti": "0" * 32},
        {"sub": "olga", "iat": 5, "exp": 2, "jti": "0" * 32},
        {"sub": "olga", "iat": 1.5, "exp": 2**50, "jti": "0" * 32},
        {"sub": "olga", "iat": 1, "exp": 2**50, "jti": "0" * 32, "roles": ["security_admin"]},
    ],
)
def test_signed_but_malformed_claims_are_refused(payload: dict[str, object] | bytes) -> None:
    with pytest.raises(MalformedToken):
        TokenService(SECRET).verify(_forge(SECRET, payload))


def test_logout_revokes_one_token_until_it_expires() -> None:
    clock = FakeClock()
    svc = TokenService(SECRET, ttl_s=100, clock=clock)
    t1, c1 = svc.issue("olga")
    t2, _ = svc.issue("olga")
    svc.revoke(c1)
    with pytest.raises(TokenRevoked, match="logged out"):
        svc.verify(t1)
    svc.verify(t2)
    assert svc.revoked_count == 1
    clock.advance(101)
    svc.revoke(svc.issue("x")[1])  # pruning happens on change: the expired revocation goes
    assert svc.revoked_count == 1
    with pytest.raises(TokenExpired):
        svc.verify(t1)


def test_revoke_user_voids_every_earlier_token() -> None:
    clock = FakeClock()
    svc = TokenService(SECRET, clock=clock)
    old = [svc.issue("olga")[0] for _ in range(3)]
    other = svc.issue("erin")[0]
    svc.revoke_user("olga")
    for t in old:
        with pytest.raises(TokenRevoked, match="every token of 'olga'"):
            svc.verify(t)
    svc.verify(other)
    clock.advance(0.001)
    svc.verify(svc.issue("olga")[0])


def test_key_file_and_revocations_survive_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "var" / "api_token.key"
    a = TokenService.from_key_file(path, clock=clock)
    assert path.stat().st_mode & 0o777 == 0o600
    token, claims = a.issue("olga")
    gone, gone_claims = a.issue("olga")
    a.revoke(gone_claims)
    b = TokenService.from_key_file(path, clock=clock)  # "restart"
    assert b.verify(token) == claims
    with pytest.raises(TokenRevoked):
        b.verify(gone)
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match="chmod 600"):
        TokenService.from_key_file(path)
    with pytest.raises(TokenError, match="no token secret"):
        TokenService.from_key_file(tmp_path / "none.key", create=False)
    with pytest.raises(TokenError, match="at least 32 bytes"):
        TokenService(b"short")


# --- over HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def env(demo_site: SiteConfig, clock: FakeClock) -> AsyncIterator[Env]:
    e = await make_env(demo_site, None, sec=make_security(clock=clock, ttl_s=600))
    yield e
    await e.client.close()
    await e.path.close()


def _audit(env: Env, kind: str) -> list[dict[str, object]]:
    env.audit.flush()
    return [r.to_dict() for r in env.audit.rows(0, 10_000, kind=kind)]


async def test_login_me_logout(env: Env, clock: FakeClock) -> None:
    body, _ = await env.post(
        f"{API}/auth/login", 200, token=None, json={"name": "engineer", "password": PASSWORD}
    )
    assert body["token_type"] == "Bearer" and body["name"] == "engineer"
    assert body["roles"] == ["engineer"] and body["expires_in"] == 600
    token = body["token"]
    me = await env.get(f"{API}/auth/me", token=token)
    assert me == {
        "name": "engineer",
        "roles": ["engineer"],
        "auth": "token",
        "expires_at": body["expires_at"],
    }
    out, _ = await env.post(f"{API}/auth/logout", 200, token=token)
    assert out == {"name": "engineer", "logged_out": True}
    async with env.client.get(f"{API}/auth/me", headers=env.headers(token)) as r:
        assert r.status == 401
        err = await r.json()
        assert err["error"] == {
            "code": "invalid_token",
            "message": "token was revoked (logged out)",
        }
        assert r.headers["WWW-Authenticate"] == (
            'Bearer realm="vpp-gateway", error="invalid_token", '
            'error_description="token was revoked (logged out)"'
        )
    [login] = _audit(env, "login")
    assert login["actor"] == "engineer" and login["source"] == "rest 127.0.0.1"
    [logout] = _audit(env, "logout")
    assert logout["detail"] == {"token_id": login["detail"]["token_id"]}  # type: ignore[index]
    assert token not in json.dumps(_audit(env, "login") + _audit(env, "logout"))  # never stored


async def test_expired_token_is_401_naming_it(env: Env, clock: FakeClock) -> None:
    token = await env.login("viewer")
    await env.get(f"{API}/points", token=token)
    clock.advance(600)
    err = await env.get(f"{API}/points", 401, token=token)
    assert err["error"]["code"] == "invalid_token"
    assert err["error"]["message"].startswith("token expired at ")


async def test_forged_and_foreign_tokens_are_401(env: Env) -> None:
    viewer = await env.login("viewer")
    prefix, payload, mac = viewer.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = f"{prefix}.{_b64(json.dumps({**doc, 'sub': 'operator'}).encode())}.{mac}"
    before = len(env.twin.commands)
    err, _ = await env.post(
        f"{API}/commands", 401, token=forged, json={"point": PV01_SET, "value": 1}
    )
    assert err["error"]["code"] == "invalid_token" and "signature" in err["error"]["message"]
    foreign = TokenService(bytes(32)).issue("operator")[0]
    await env.post(f"{API}/commands", 401, token=foreign, json={"point": PV01_SET, "value": 1})
    assert len(env.twin.commands) == before
    async with env.client.get(
        f"{API}/points", headers={"Authorization": "Basic b3BlcmF0b3I6eA=="}
    ) as r:
        assert r.status == 401
        assert "must be 'Bearer <token>'" in (await r.json())["error"]["message"]


async def test_login_failures_are_audited_and_say_nothing_more(env: Env) -> None:
    env.sec.users.add("dora", PASSWORD, [Role.OPERATOR])
    env.sec.users.set_disabled("dora")
    cases = [("viewer", "wrong password!"), ("mallory", PASSWORD), ("dora", PASSWORD)]
    for name, password in cases:
        err, headers = await env.post(
            f"{API}/auth/login", 401, token=None, json={"name": name, "password": password}
        )
        assert err["error"] == {
            "code": "login_failed",
            "message": "wrong name or password, or the account is disabled",
        }
        assert headers["WWW-Authenticate"] == 'Bearer realm="vpp-gateway"'
    failed = _audit(env, "login_failed")
    assert [(r["actor"], r["detail"]) for r in failed] == [
        ("viewer", {"known_user": True, "disabled": False}),
        ("mallory", {"known_user": False, "disabled": False}),
        ("dora", {"known_user": True, "disabled": True}),
    ]
    assert all(r["source"] == "rest 127.0.0.1" for r in failed)
    assert _audit(env, "login") == []
    # Malformed logins are 400 and issue nothing.
    for bad in (
        {"name": "viewer"},
        {"name": "viewer", "password": 5},
        {"name": "", "password": "x"},
    ):
        await env.post(f"{API}/auth/login", 400, token=None, json=bad)
    await env.post(
        f"{API}/auth/login", 400, token=None, json={"name": "viewer", "password": "x" * 1025}
    )


async def test_removed_user_and_reused_name(env: Env) -> None:
    admin = env.token_for("security_admin")
    await env.call(
        "POST",
        f"{API}/users",
        201,
        token=admin,
        json={"name": "temp", "password": PASSWORD, "roles": ["operator"]},
    )
    temp = await env.login("temp")
    await env.get(f"{API}/points", token=temp)
    await env.call("DELETE", f"{API}/users/temp", 200, token=admin)
    err = await env.get(f"{API}/points", 401, token=temp)
    assert "every token of 'temp'" in err["error"]["message"]
    # Removed from the store some other way: the token names a user that is not there.
    env.sec.users.remove("engineer")
    err = await env.get(f"{API}/points", 401, token=env.token_for("engineer"))
    assert err["error"]["message"] == "user 'engineer' no longer exists"
    # Added again under the same name: the old token does not come back to life.
    await env.call(
        "POST",
        f"{API}/users",
        201,
        token=admin,
        json={"name": "temp", "password": PASSWORD, "roles": ["operator"]},
    )
    err = await env.get(f"{API}/points", 401, token=temp)
    assert "every token of 'temp'" in err["error"]["message"]


async def test_websocket_token_in_query(env: Env) -> None:
    token = env.token_for("viewer")
    async with env.client.ws_connect(f"{API}/ws", params={"access_token": token}) as ws:
        msg = await ws.receive_json(timeout=5)
        assert msg["type"] == "snapshot"
    async with env.client.get(f"{API}/ws", params={"access_token": "nope"}) as r:
        assert r.status == 401
    # Only there: elsewhere a query token is not read.
    await env.get(f"{API}/points", 401, token=None, params={"access_token": token})


async def test_websocket_closes_when_its_token_expires_or_is_revoked(
    env: Env, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiohttp

    import gateway.north.rest as rest

    monkeypatch.setattr(rest, "WS_AUTH_CHECK_S", 0.02)

    async def closed_by_server(ws: aiohttp.ClientWebSocketResponse) -> str:
        assert (await ws.receive_json(timeout=5))["type"] == "snapshot"
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
        return str(msg.extra)

    token = env.token_for("viewer")
    async with env.client.ws_connect(f"{API}/ws", headers=env.headers(token)) as ws:
        await ws.receive_json(timeout=5)
        clock.advance(600)
        msg = await ws.receive(timeout=5)
        assert ws.close_code == 1008 and "expired" in str(msg.extra)
    token = env.token_for("viewer")
    async with env.client.ws_connect(f"{API}/ws", headers=env.headers(token)) as ws:
        await env.post(f"{API}/auth/logout", 200, token=token)
        assert "revoked" in await closed_by_server(ws)
    token = env.token_for("operator")
    async with env.client.ws_connect(f"{API}/ws", headers=env.headers(token)) as ws:
        env.sec.users.set_roles("operator", [Role.AUDITOR])
        assert "may no longer read" in await closed_by_server(ws)
