"""The north REST API (aiohttp): points, history, VPPs, commands and a WebSocket of change sets.

Every route lives under /api/v1 and answers JSON.

Access. Every route is looked up in the role matrix (security.rbac.REST_ROUTES) before its
handler runs: public routes (/health, /openapi.json, /auth/login) pass; any other needs a bearer
token (security.tokens) from POST /auth/login, and one of the roles the matrix names. Without a
valid token the answer is 401 with a WWW-Authenticate challenge (RFC 6750 3); with a role the
matrix does not allow it is 403; in both cases the handler never runs. A route without a matrix
entry is refused (403). The user's roles are read from the user store on every request, so a role
change applies at once. With `auth: off` (loopback only, see model.api_security) a request
without a token acts as "local" with every role. Logins (failed ones too), logouts, refusals,
user and role changes and who asked for each command go to the audit log (security.audit).
Security administrators manage users under /users; auditors read /audit. Errors, including unknown routes and bad input,
are JSON too: {"error": {"code": "...", "message": "..."}} with the matching HTTP status, made in
one middleware; nothing a client sends ends in a 500 with a traceback. Every write goes through
the one command path (gateway.commands.CommandPath). The routes and response shapes are described
by the OpenAPI document in gateway.north.openapi, served at /api/v1/openapi.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from gateway.commands import CommandPath
from gateway.errors import CommandRejected, GatewayError
from gateway.north.openapi import openapi_document
from model.api_security import (
    ApiSecurityConfig,
    ApiTLSConfig,
    AuthMode,
    check_api_exposure,
)
from model.command import Command, new_command_id
from model.errors import UnknownPointError
from model.quality import Quality
from model.sample import Sample, Value, from_epoch
from security.audit import AuditError, AuditKind, AuditLog
from security.keystore import write_atomic
from security.rbac import ALL_ROLES, Principal, rest_rule
from security.tokens import TokenClaims, TokenError, TokenService
from security.users import Role, User, UserStore, UserStoreError
from twin.aggregates import PlantCalculator
from twin.errors import HistoryError, UnknownCommand
from twin.history import AGGREGATES, INTERVALS, HistoryStore
from twin.twin import Twin

__all__ = [
    "API_PREFIX",
    "REALM",
    "ApiError",
    "ApiSecurity",
    "ApiSecurityError",
    "CommandBody",
    "create_app",
    "ensure_self_signed",
    "https_context",
]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"

StatusFn = Callable[[], dict[str, Any]]

DEFAULT_HISTORY_LIMIT = 10_000
MAX_HISTORY_LIMIT = 100_000
DEFAULT_RESAMPLE_SPAN_S = 3600.0
DEFAULT_COMMAND_LIST = 100
DEFAULT_AUDIT_PAGE = 100
MAX_AUDIT_PAGE = 1000
WS_AUTH_CHECK_S = 5.0  # how often a WebSocket re-checks its token and its user's roles
REALM = "vpp-gateway"
# Times accepted in queries: 1970-01-01 .. 9999-12-30 (room left for a default end after start).
MIN_TS = 0.0
MAX_TS = 253_402_214_400.0
MAX_LIST_LIMIT = 100_000

# Status code of each CommandRejected.code; anything else is 422.
_REJECT_STATUS = {
    "unknown_point": 404,
    "conflict": 409,
    "read_only": 422,
    "bad_type": 422,
    "bad_value": 422,
    "out_of_limits": 422,
    "expired": 422,
    "no_route": 422,
}

_TWIN: web.AppKey[Twin] = web.AppKey("twin", Twin)
_COMMANDS: web.AppKey[CommandPath] = web.AppKey("commands", CommandPath)
_HISTORY: web.AppKey[HistoryStore | None] = web.AppKey("history")
_STATUS: web.AppKey[StatusFn | None] = web.AppKey("status")
_WS_QUEUE: web.AppKey[int] = web.AppKey("ws_queue", int)
_WS_CLIENTS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("ws_clients")
_OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
_SECURITY: web.AppKey[ApiSecurity] = web.AppKey("security")
_PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
_CLAIMS: web.RequestKey[TokenClaims] = web.RequestKey("claims", TokenClaims)

_dumps = partial(json.dumps, allow_nan=False, separators=(",", ":"))


class ApiError(Exception):
    """An error answer: HTTP status, machine-readable code, message naming what was wrong."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


class ApiSecurityError(GatewayError, ValueError):
    """API security cannot be set up as configured (exposure, certificate, key files)."""


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, "bad_request", f"{param}: {message}")


def _error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return web.json_response({"error": err}, status=status, headers=headers, dumps=_dumps)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a JSON error answer; log (never send) tracebacks of internal ones."""
    try:
        return await handler(request)
    except ApiError as e:
        return _error_response(e.status, e.code, e.message, e.details, e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = re.sub(r"[^a-z0-9]+", "_", (e.reason or "error").lower()).strip("_")
        message = e.reason or "error"
        if e.status == 404:
            message = f"no such resource: {request.method} {request.path}"
        elif e.status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        elif e.text and not e.text.startswith(f"{e.status}:"):
            message = e.text
        headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
        return _error_response(e.status, code, message, headers=headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("internal error answering %s %s", request.method, request.path)
        return _error_response(500, "internal_error", "internal error (logged by the gateway)")


# --- security: who is asking, and may they -----------------------------------------------------


class ApiSecurity:
    """What the API authenticates and authorises with: users, tokens, audit log and auth mode."""

    def __init__(
        self,
        users: UserStore,
        tokens: TokenService,
        audit: AuditLog | None = None,
        *,
        auth: AuthMode = "required",
        host: str | None = None,
        login_concurrency: int = 2,
    ) -> None:
        if auth not in ("required", "off"):
            raise ApiSecurityError(f"auth must be required or off, not {auth!r}")
        if host is not None:
            try:
                check_api_exposure(host, auth)
            except ValueError as e:
                raise ApiSecurityError(str(e)) from None
        self.users = users
        self.tokens = tokens
        self.audit = audit
        self.auth: AuthMode = auth
        # Argon2id takes ~64 MiB and tens of ms per check: bound how many run at once.
        self._login_slots = asyncio.Semaphore(login_concurrency)
        self._users_lock = asyncio.Lock()

    @classmethod
    def local(cls, audit: AuditLog | None = None) -> ApiSecurity:
        """No login needed (auth off): in-memory users and a random token secret."""
        return cls(UserStore(), TokenService(secrets.token_bytes(32)), audit, auth="off")

    @classmethod
    def from_config(
        cls,
        cfg: ApiSecurityConfig,
        host: str,
        *,
        audit: AuditLog | None = None,
        users: UserStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> ApiSecurity:
        """From the site's api settings: the user store file and the token key file."""
        try:
            check_api_exposure(host, cfg.auth)
            store = users if users is not None else UserStore.load(cfg.users_file, missing_ok=True)
            tokens = TokenService.from_key_file(
                cfg.token_secret_file, ttl_s=cfg.token_ttl_s, clock=clock
            )
        except (ValueError, UserStoreError, TokenError) as e:
            raise ApiSecurityError(f"API security: {e}") from e
        return cls(store, tokens, audit, auth=cfg.auth, host=host)

    def record(self, kind: AuditKind, **kw: Any) -> None:
        """Queue an audit record when there is an audit log."""
        if self.audit is not None:
            self.audit.record(kind, **kw)


def _challenge(error: str | None = None, description: str | None = None) -> dict[str, str]:
    """WWW-Authenticate of RFC 6750 3: the Bearer scheme, our realm, the error if any."""
    value = f'Bearer realm="{REALM}"'
    if error:
        value += f', error="{error}"'
    if description:
        safe = re.sub(r'[^\x20-\x7e]|["\\]', "'", description)
        value += f', error_description="{safe}"'
    return {"WWW-Authenticate": value}


def _source(request: web.Request) -> str:
    return f"rest {request.remote or '?'}"


def _template(request: web.Request) -> str | None:
    info = request.match_info
    if getattr(info, "http_exception", None) is not None:
        return None  # no route matched: 404/405 answered by the error middleware
    resource = info.route.resource
    return resource.canonical if resource is not None else None


def _bearer(request: web.Request, template: str) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(
                401,
                "unauthenticated",
                f"the Authorization header must be 'Bearer <token>', not a {scheme or 'blank'} "
                "credential: get a token from POST /api/v1/auth/login",
                headers=_challenge(),
            )
        return value.strip()
    if template == f"{API_PREFIX}/ws":
        # Browsers cannot set headers on a WebSocket: the token may come as access_token
        # (RFC 6750 2.3), on this route only.
        return request.query.get("access_token") or None
    return None


def _authenticate(request: web.Request, sec: ApiSecurity, template: str) -> Principal:
    token = _bearer(request, template)
    if token is None:
        if sec.auth == "off":
            return Principal("local", ALL_ROLES, via="auth off")
        raise ApiError(
            401,
            "unauthenticated",
            f"{request.method} {template} needs a bearer token: POST /api/v1/auth/login with "
            "name and password, then send 'Authorization: Bearer <token>'",
            headers=_challenge(),
        )
    try:
        claims = sec.tokens.verify(token)
    except TokenError as e:
        raise ApiError(
            401, "invalid_token", str(e), headers=_challenge("invalid_token", str(e))
        ) from None
    user = sec.users.get(claims.sub)
    if user is None or user.disabled:
        why = (
            f"user {claims.sub!r} no longer exists"
            if user is None
            else f"the account {claims.sub!r} is disabled"
        )
        raise ApiError(401, "invalid_token", why, headers=_challenge("invalid_token", why))
    request[_CLAIMS] = claims
    return Principal.of(user)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the route against the role matrix before its handler runs (401/403, nothing done)."""
    template = _template(request)
    if template is None:
        return await handler(request)
    sec = request.app[_SECURITY]
    rule = rest_rule(request.method, template)
    if rule is None:
        log.error("REST route %s %s has no entry in the role matrix", request.method, template)
        raise ApiError(403, "forbidden", f"{request.method} {template} has no access rule: refused")
    if rule.public:
        return await handler(request)
    principal = _authenticate(request, sec, template)
    if not rule.permits(principal.roles):
        sec.record(
            AuditKind.ACCESS_DENIED,
            actor=principal.name,
            source=_source(request),
            subject=f"{request.method} {template}",
            detail={"roles": sorted(r.value for r in principal.roles), "path": request.path},
        )
        raise ApiError(
            403,
            "forbidden",
            f"{principal.describe()} may not {request.method} {template} "
            f"(allowed: {rule.describe()})",
        )
    request[_PRINCIPAL] = principal
    return await handler(request)


def _principal(request: web.Request) -> Principal:
    p = request.get(_PRINCIPAL)
    if not isinstance(p, Principal):  # only public routes run without one
        raise ApiError(401, "unauthenticated", "no authenticated user", headers=_challenge())
    return p


# --- formatting ----------------------------------------------------------------------------------


def iso(ts: float) -> str:
    """ISO 8601 UTC text of epoch seconds, e.g. 2026-11-21T10:00:00.000000Z."""
    return from_epoch(ts).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ts(ts: float) -> str | None:
    """iso() of a timestamp that came with data; null if it is not a representable time."""
    try:
        return iso(ts)
    except (OverflowError, ValueError, OSError):
        return None


def _jvalue(v: Value | None) -> Value | None:
    """A value as JSON can carry it: non-finite floats become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _point_json(twin: Twin, ref: str, sample: Sample | None) -> dict[str, Any]:
    spec = twin.specs.get(ref)
    out: dict[str, Any] = {
        "point": ref,
        "value": None,
        "ts": None,
        "quality": None,
        "unit": spec.unit if spec else "",
        "dtype": spec.dtype.value if spec else None,
        "access": spec.access.value if spec else "ro",
        "description": spec.description if spec else "",
        "min": spec.min if spec else None,
        "max": spec.max if spec else None,
    }
    if sample is not None:
        out["value"] = _jvalue(sample.value)
        out["ts"] = _ts(sample.ts)
        out["quality"] = Quality(sample.quality).to_dict()
    return out


def _change_json(s: Sample) -> dict[str, Any]:
    return {
        "point": s.point,
        "value": _jvalue(s.value),
        "ts": _ts(s.ts),
        "quality": Quality(s.quality).to_dict(),
    }


def _points(twin: Twin, prefix: str, limit: int | None = None) -> list[dict[str, Any]]:
    refs = twin.refs(prefix)
    if limit is not None:
        refs = refs[:limit]
    return [_point_json(twin, r, twin.get(r)) for r in refs]


# --- query parameters ----------------------------------------------------------------------------


def _int_param(
    request: web.Request, name: str, default: int | None, lo: int, hi: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[+-]?\d{1,12}", raw):
        raise _bad(name, f"{raw!r} is not an integer in {lo}..{hi}")
    n = int(raw)
    if not lo <= n <= hi:
        raise _bad(name, f"{n} is outside {lo}..{hi}")
    return n


_EPOCH = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def parse_time(name: str, raw: str) -> float:
    """Epoch seconds of an ISO 8601 time (naive = UTC) or of a number of epoch seconds."""
    text = raw.strip()
    if _EPOCH.match(text):
        ts = float(text)
    else:
        # An unencoded '+' in a query string arrives as a space: '...T10:00:00 08:00'.
        text = re.sub(r" (\d\d(:?\d\d)?)$", r"+\1", text)
        try:
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
            ts = dt.timestamp()
        except (ValueError, OverflowError):
            raise _bad(
                name,
                f"{raw!r} is neither an ISO 8601 time (2026-01-01T00:00:00Z) nor epoch seconds",
            ) from None
    if not MIN_TS <= ts <= MAX_TS:  # also refuses inf and nan
        raise _bad(name, f"{raw!r} is outside {iso(MIN_TS)} .. {iso(MAX_TS)}")
    return ts


def _time_param(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    return parse_time(name, raw)


# --- handlers ------------------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    """Liveness."""
    return _json({"status": "ok"})


async def get_status(request: web.Request) -> web.Response:
    """Gateway status from the runtime, plus the twin's counters and subscriber queues."""
    twin = request.app[_TWIN]
    fn = request.app[_STATUS]
    out: dict[str, Any] = dict(fn()) if fn is not None else {}
    out["twin"] = {
        "points": len(twin),
        "seq": twin.seq,
        "applied": twin.applied,
        "unknown_samples": twin.unknown_samples,
        "commands": len(twin.commands),
    }
    out["subscribers"] = twin.subscriber_stats()
    return _json(out)


async def list_points(request: web.Request) -> web.Response:
    """Points under an optional prefix, with their current values."""
    twin = request.app[_TWIN]
    prefix = request.query.get("prefix", "")
    limit = _int_param(request, "limit", None, 1, MAX_LIST_LIMIT)
    return _json(_points(twin, prefix, limit))


def _known_point(twin: Twin, ref: str) -> None:
    if ref not in twin:
        raise ApiError(404, "unknown_point", f"unknown point {ref!r}")


async def get_point(request: web.Request) -> web.Response:
    """One point with its current value."""
    twin = request.app[_TWIN]
    ref = request.match_info["ref"]
    _known_point(twin, ref)
    return _json(_point_json(twin, ref, twin.get(ref)))


async def get_history(request: web.Request) -> web.Response:
    """Raw or resampled history of one point."""
    twin = request.app[_TWIN]
    store = request.app[_HISTORY]
    ref = request.match_info["ref"]
    if store is None:
        raise ApiError(503, "history_unavailable", "no history store is configured")
    _known_point(twin, ref)
    q = request.query
    for name in q:
        if name not in ("start", "end", "interval", "agg", "limit"):
            raise _bad(name, "unknown parameter (expected start, end, interval, agg, limit)")
    start = _time_param(request, "start")
    end = _time_param(request, "end")
    limit = _int_param(request, "limit", DEFAULT_HISTORY_LIMIT, 1, MAX_HISTORY_LIMIT)
    assert limit is not None
    interval = q.get("interval") or None
    agg = q.get("agg") or None
    if start is not None and end is not None and start >= end:
        raise _bad("start", f"start ({iso(start)}) must be before end ({iso(end)})")
    if interval is None:
        if agg is not None:
            raise _bad("agg", "applies to resampled history only: give an interval too")
        samples = await _store_call(store.raw, ref, start, end, limit) or []
        return _json(
            {
                "point": ref,
                "start": iso(start) if start is not None else None,
                "end": iso(end) if end is not None else None,
                "interval": None,
                "agg": None,
                "samples": [
                    {
                        "ts": _ts(s.ts),
                        "value": _jvalue(s.value),
                        "quality": Quality(s.quality).to_dict(),
                    }
                    for s in samples
                ],
            }
        )
    if interval not in INTERVALS:
        raise _bad("interval", f"{interval!r} is not one of {', '.join(INTERVALS)}")
    agg = agg or "mean"
    if agg not in AGGREGATES:
        raise _bad("agg", f"{agg!r} is not one of {', '.join(AGGREGATES)}")
    if end is None:
        end = time.time() if start is None else max(time.time(), start + INTERVALS[interval])
    if start is None:
        start = end - max(DEFAULT_RESAMPLE_SPAN_S, INTERVALS[interval])
    buckets = _bucket_count(start, end, INTERVALS[interval])
    if buckets > limit:
        raise _bad(
            "interval",
            f"{interval} from {iso(start)} to {iso(end)} makes {buckets} buckets, "
            f"more than the limit {limit}: use a longer interval or a shorter range",
        )
    rows = await _store_call(store.resample, ref, start, end, interval, agg)
    if rows is None:
        size = INTERVALS[interval]
        first = math.floor(start / size)
        rows = [((first + i) * size, None, 0) for i in range(buckets)]
    return _json(
        {
            "point": ref,
            "start": iso(start),
            "end": iso(end),
            "interval": interval,
            "agg": agg,
            "buckets": [
                {"ts": iso(ts), "value": _jvalue(v), "count": n} for ts, v, n in rows[:limit]
            ],
        }
    )


def _bucket_count(start: float, end: float, size_s: int) -> int:
    """Epoch-aligned buckets resample() gives over [start, end), counted as the store does."""

    def trunc(a: int, b: int) -> int:
        return -(-a // b) if a < 0 else a // b

    b_us = size_s * 1_000_000
    return trunc(round(end * 1e6) - 1, b_us) - trunc(round(start * 1e6), b_us) + 1


async def _store_call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a (blocking) history query in a worker thread, mapping the store's errors.

    Parameters are checked before the call, so a HistoryError here is the store failing.
    """
    try:
        return await asyncio.to_thread(fn, *args)
    except UnknownPointError:
        # The twin knows the point (checked before): history has simply never stored it.
        return None
    except HistoryError as e:
        log.warning("history query failed: %s", e)
        raise ApiError(503, "history_error", f"history query failed: {e}") from None


def _plant_value(twin: Twin, ref: str) -> dict[str, Any]:
    spec = twin.specs.get(ref)
    s = twin.get(ref) if ref in twin else None
    return {
        "point": ref,
        "value": _jvalue(s.value) if s else None,
        "ts": _ts(s.ts) if s else None,
        "quality": Quality(s.quality).to_dict() if s else None,
        "unit": spec.unit if spec else "",
    }


def _vpp_json(twin: Twin, plant: PlantCalculator, detail: bool = False) -> dict[str, Any]:
    vpp = plant.vpp
    resources = vpp.all_resources()
    out: dict[str, Any] = {
        "id": vpp.id,
        "name": vpp.name,
        "mrid": vpp.mrid,
        "resource_count": len(resources),
        "aggregates": {key: _plant_value(twin, ref) for key, ref in plant.refs.items()},
    }
    if detail:
        agg_of = {r.id: a.id for a in vpp.aggregators for r in a.resources}
        out["resources"] = [
            {
                "id": r.id,
                "name": r.name,
                "kind": r.kind.value,
                "mrid": r.mrid,
                "aggregator": agg_of.get(r.id),
            }
            for r in resources
        ]
    return out


async def list_vpps(request: web.Request) -> web.Response:
    """Every VPP with its aggregate (plant) values."""
    twin = request.app[_TWIN]
    return _json([_vpp_json(twin, p) for p in twin.plants])


async def get_vpp(request: web.Request) -> web.Response:
    """One VPP with its aggregates and resources."""
    twin = request.app[_TWIN]
    vid = request.match_info["id"]
    for p in twin.plants:
        if p.vpp.id == vid:
            return _json(_vpp_json(twin, p, detail=True))
    raise ApiError(404, "unknown_vpp", f"unknown VPP {vid!r}")


# --- commands ------------------------------------------------------------------------------------

CommandId = Annotated[
    StrictStr,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$", description="client-chosen id"),
]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class CommandBody(BaseModel):
    """Body of POST /commands."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    point: StrictStr
    value: StrictBool | StrictInt | FiniteFloat
    id: CommandId | None = None
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _validation_details(e: ValidationError) -> list[dict[str, str]]:
    seen: dict[str, str] = {}
    for err in e.errors(include_url=False):
        loc = err["loc"]
        field = str(loc[0]) if loc else "(body)"
        if field in seen:
            continue
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif field == "value":
            msg = "must be a finite number or true/false"
        elif field == "id" and err["type"] == "string_pattern_mismatch":
            msg = "must be 1-128 characters of letters, digits, '_', '.', ':' or '-'"
        else:
            msg = err["msg"][0].lower() + err["msg"][1:]
        seen[field] = msg
    return [{"field": f, "message": m} for f, m in seen.items()]


_M = TypeVar("_M", bound=BaseModel)
_T = TypeVar("_T")


async def _read_body(request: web.Request) -> CommandBody:
    return await _read_model(request, CommandBody)


async def _read_model(request: web.Request, model: type[_M]) -> _M:
    raw = await request.read()
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "malformed_json", "request body is not UTF-8 text") from None
    except ValueError as e:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        details = _validation_details(e)
        msg = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ApiError(400, "invalid_body", msg, details) from None


def _command_location(cmd_id: str) -> str:
    return f"{API_PREFIX}/commands/{cmd_id}"


async def post_command(request: web.Request) -> web.Response:
    """Submit a command through the command path: 202 when accepted, 200 for a known id."""
    twin = request.app[_TWIN]
    path = request.app[_COMMANDS]
    sec = request.app[_SECURITY]
    who = _principal(request)
    body = await _read_body(request)
    cmd_id = body.id or new_command_id()
    known = cmd_id in twin.commands

    def audit(outcome: str, code: str | None = None) -> None:
        detail: dict[str, Any] = {
            "point": body.point,
            "value": _jvalue(body.value),
            "outcome": outcome,
        }
        if code is not None:
            detail["code"] = code
        sec.record(
            AuditKind.COMMAND_REQUEST,
            actor=who.name,
            source=_source(request),
            subject=cmd_id,
            detail=detail,
        )

    if not known and body.point not in twin:
        audit("rejected", "unknown_point")
        _known_point(twin, body.point)
    cmd = Command(
        target=body.point,
        value=body.value,
        origin="rest",
        id=cmd_id,
        deadline=time.time() + body.timeout_s,
    )
    try:
        rec = await path.submit(cmd)
    except CommandRejected as e:
        audit("rejected", e.code)
        st = _REJECT_STATUS.get(e.code, 422)
        raise ApiError(st, e.code, e.reason) from None
    audit("repeated" if known else "accepted")
    headers = {"Location": _command_location(cmd_id)}
    return _json(rec.to_dict(), status=200 if known else 202, headers=headers)


async def list_commands(request: web.Request) -> web.Response:
    """Command records, most recent first."""
    twin = request.app[_TWIN]
    limit = _int_param(request, "limit", DEFAULT_COMMAND_LIST, 1, MAX_LIST_LIMIT)
    recs = twin.commands.records()
    recs.reverse()
    return _json([r.to_dict() for r in recs[:limit]])


async def get_command(request: web.Request) -> web.Response:
    """One command record."""
    twin = request.app[_TWIN]
    cmd_id = request.match_info["id"]
    try:
        rec = twin.commands.get(cmd_id)
    except UnknownCommand:
        raise ApiError(404, "unknown_command", f"unknown command id {cmd_id!r}") from None
    return _json(rec.to_dict())


async def get_openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of this API."""
    return _json(request.app[_OPENAPI])


# --- login, users, audit -------------------------------------------------------------------------

UserName = Annotated[StrictStr, Field(min_length=1, max_length=64)]
# Argon2 hashes any length, but an unbounded password is unbounded work per login attempt.
Password = Annotated[StrictStr, Field(min_length=1, max_length=1024)]
RoleList = Annotated[list[Role], Field(max_length=len(Role))]


class LoginBody(BaseModel):
    """Body of POST /auth/login."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: UserName
    password: Password


class NewUserBody(BaseModel):
    """Body of POST /users."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: UserName
    password: Password
    roles: RoleList


class RolesBody(BaseModel):
    """Body of PUT /users/{name}/roles."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: RoleList


def _user_json(u: User) -> dict[str, Any]:
    return {"name": u.name, "roles": sorted(r.value for r in u.roles), "disabled": u.disabled}


async def login(request: web.Request) -> web.Response:
    """Exchange name and password for a bearer token; every attempt is audited."""
    sec = request.app[_SECURITY]
    body = await _read_model(request, LoginBody)
    async with sec._login_slots:
        user = await asyncio.to_thread(sec.users.authenticate, body.name, body.password)
    if user is None:
        known = sec.users.get(body.name)
        sec.record(
            AuditKind.LOGIN_FAILED,
            actor=body.name,
            source=_source(request),
            subject=body.name,
            detail={
                "known_user": known is not None,
                "disabled": bool(known is not None and known.disabled),
            },
        )
        raise ApiError(
            401,
            "login_failed",
            "wrong name or password, or the account is disabled",
            headers=_challenge(),
        )
    if sec.users.dirty and sec.users.path is not None:  # re-hashed with newer parameters
        async with sec._users_lock:
            try:
                await asyncio.to_thread(sec.users.save)
            except (OSError, UserStoreError) as e:
                log.warning("could not save the re-hashed password of %s: %s", user.name, e)
    token, claims = sec.tokens.issue(user.name)
    roles = sorted(r.value for r in user.roles)
    sec.record(
        AuditKind.LOGIN,
        actor=user.name,
        source=_source(request),
        subject=user.name,
        detail={"token_id": claims.jti, "expires": claims.exp, "roles": roles},
    )
    return _json(
        {
            "token": token,
            "token_type": "Bearer",
            "expires_at": iso(claims.exp),
            "expires_in": round(claims.exp - claims.iat),
            "name": user.name,
            "roles": roles,
        },
        headers={"Cache-Control": "no-store"},
    )


async def logout(request: web.Request) -> web.Response:
    """Revoke the token this request carries."""
    sec = request.app[_SECURITY]
    who = _principal(request)
    claims = request.get(_CLAIMS)
    if not isinstance(claims, TokenClaims):
        return _json({"name": who.name, "logged_out": False})
    try:
        await asyncio.to_thread(sec.tokens.revoke, claims)
    except TokenError as e:
        raise ApiError(503, "token_store_error", str(e)) from None
    sec.record(
        AuditKind.LOGOUT,
        actor=who.name,
        source=_source(request),
        subject=who.name,
        detail={"token_id": claims.jti},
    )
    return _json({"name": who.name, "logged_out": True})


async def whoami(request: web.Request) -> web.Response:
    """The user of this request, its roles and its token's expiry."""
    who = _principal(request)
    claims = request.get(_CLAIMS)
    return _json(
        {
            "name": who.name,
            "roles": sorted(r.value for r in who.roles),
            "auth": "token" if isinstance(claims, TokenClaims) else "off",
            "expires_at": iso(claims.exp) if isinstance(claims, TokenClaims) else None,
        }
    )


async def list_users(request: web.Request) -> web.Response:
    """Every user with roles (never a password hash)."""
    return _json([_user_json(u) for u in request.app[_SECURITY].users])


def _unknown_user(name: str) -> ApiError:
    return ApiError(404, "unknown_user", f"no user {name!r}")


def _keeps_an_admin(store: UserStore, name: str, roles: frozenset[Role] | None) -> None:
    """Refuse a change that leaves no enabled security administrator (nobody could undo it)."""
    u = store.get(name)
    if u is None or u.disabled or Role.SECURITY_ADMIN not in u.roles:
        return
    if roles is not None and Role.SECURITY_ADMIN in roles:
        return
    if store.count_role(Role.SECURITY_ADMIN) <= 1:
        raise ApiError(
            409,
            "last_security_admin",
            f"{name!r} is the last enabled security_admin: add another one first",
        )


async def _change_users(sec: ApiSecurity, fn: Callable[[UserStore], _T]) -> _T:
    """Run fn on the user store in a worker thread, saved with it or undone (UserStore.change)."""

    def run() -> _T:
        with sec.users.change() as store:
            return fn(store)

    async with sec._users_lock:
        try:
            return await asyncio.to_thread(run)
        except OSError as e:
            raise ApiError(503, "users_file_error", f"cannot save the users file: {e}") from None


async def add_user(request: web.Request) -> web.Response:
    """Create a user (security_admin); audited."""
    sec = request.app[_SECURITY]
    who = _principal(request)
    body = await _read_model(request, NewUserBody)
    if body.name in sec.users:
        raise ApiError(409, "user_exists", f"user {body.name!r} already exists")
    try:
        user = await _change_users(sec, lambda s: s.add(body.name, body.password, body.roles))
    except UserStoreError as e:
        if "already exists" in str(e):
            raise ApiError(409, "user_exists", str(e)) from None
        raise ApiError(400, "invalid_user", str(e)) from None
    sec.record(
        AuditKind.USER_ADD,
        actor=who.name,
        source=_source(request),
        subject=user.name,
        detail={"roles": _user_json(user)["roles"]},
    )
    return _json(_user_json(user), status=201, headers={"Location": f"{API_PREFIX}/users"})


async def set_user_roles(request: web.Request) -> web.Response:
    """Replace a user's roles (security_admin); audited with before and after."""
    sec = request.app[_SECURITY]
    who = _principal(request)
    name = request.match_info["name"]
    body = await _read_model(request, RolesBody)
    roles = frozenset(body.roles)

    def change(store: UserStore) -> tuple[User, User]:
        # Looked up and checked under the users lock: two admins demoting each other at once
        # cannot both pass the last-administrator check.
        before = store.get(name)
        if before is None:
            raise _unknown_user(name)
        _keeps_an_admin(store, name, roles)
        return before, store.set_roles(name, roles)

    try:
        before, user = await _change_users(sec, change)
    except UserStoreError as e:
        raise ApiError(400, "invalid_user", str(e)) from None
    sec.record(
        AuditKind.ROLE_CHANGE,
        actor=who.name,
        source=_source(request),
        subject=name,
        detail={"before": _user_json(before)["roles"], "after": _user_json(user)["roles"]},
    )
    return _json(_user_json(user))


async def remove_user(request: web.Request) -> web.Response:
    """Remove a user and revoke its tokens (security_admin); audited."""
    sec = request.app[_SECURITY]
    who = _principal(request)
    name = request.match_info["name"]

    def change(store: UserStore) -> User:
        before = store.get(name)
        if before is None:
            raise _unknown_user(name)
        _keeps_an_admin(store, name, None)
        store.remove(name)
        return before

    before = await _change_users(sec, change)
    try:
        # A user of the same name added later must not inherit tokens issued before.
        await asyncio.to_thread(sec.tokens.revoke_user, name)
    except TokenError as e:
        log.warning("tokens of removed user %s: %s", name, e)
    sec.record(
        AuditKind.USER_REMOVE,
        actor=who.name,
        source=_source(request),
        subject=name,
        detail={"roles": _user_json(before)["roles"]},
    )
    return _json({"name": name, "removed": True})


def _audit_log(request: web.Request) -> AuditLog:
    audit = request.app[_SECURITY].audit
    if audit is None:
        raise ApiError(503, "audit_unavailable", "no audit log is configured")
    return audit


async def list_audit(request: web.Request) -> web.Response:
    """Audit records after a sequence number, oldest first (a page)."""
    audit = _audit_log(request)
    for name in request.query:
        if name not in ("after", "limit", "kind"):
            raise _bad(name, "unknown parameter (expected after, limit, kind)")
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", DEFAULT_AUDIT_PAGE, 1, MAX_AUDIT_PAGE)
    assert after is not None and limit is not None
    kind = request.query.get("kind") or None
    if kind is not None and kind not in {k.value for k in AuditKind}:
        raise _bad("kind", f"{kind!r} is not one of {', '.join(k.value for k in AuditKind)}")

    def read() -> tuple[list[Any], tuple[int, str]]:
        audit.flush()  # what was just done is on the page too
        return audit.rows(after, limit, kind), audit.head()

    try:
        rows, (head_seq, head_hash) = await asyncio.to_thread(read)
    except AuditError as e:
        raise ApiError(503, "audit_error", str(e)) from None
    return _json(
        {
            "records": [r.to_dict() for r in rows],
            "next_after": rows[-1].seq if len(rows) == limit else None,
            "head": {"seq": head_seq, "hash": head_hash},
        }
    )


async def verify_audit(request: web.Request) -> web.Response:
    """Verify the whole chain and its signed checkpoints."""
    audit = _audit_log(request)

    def run() -> dict[str, Any]:
        audit.flush()
        return audit.verify().to_dict()

    try:
        return _json(await asyncio.to_thread(run))
    except AuditError as e:
        raise ApiError(503, "audit_error", str(e)) from None


# --- WebSocket -----------------------------------------------------------------------------------


async def websocket(request: web.Request) -> web.StreamResponse:
    """Stream change sets: a snapshot first, then one 'changes' message per change set.

    The subscription is bounded: a client that reads too slowly loses the oldest change sets;
    it then gets a {"type": "dropped"} message and sees a gap in seq, and should re-read /points.
    """
    twin = request.app[_TWIN]
    ws = web.WebSocketResponse(heartbeat=30.0)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "websocket_required", "this endpoint needs a WebSocket upgrade")
    prefix = request.query.get("prefix", "")
    await ws.prepare(request)
    clients = request.app[_WS_CLIENTS]
    clients.add(ws)
    peer = request.remote or "?"
    # Subscribe before the snapshot so no change falls between the two.
    sub = twin.subscribe(f"rest-ws:{peer}:{id(ws):x}", request.app[_WS_QUEUE])
    sender = asyncio.create_task(_ws_send(ws, twin, sub, prefix), name="rest-ws-send")
    tasks = [sender]
    claims = request.get(_CLAIMS)
    if claims is not None:
        watch = _ws_watch(ws, request.app[_SECURITY], claims, request.method, request.path)
        tasks.append(asyncio.create_task(watch, name="rest-ws-auth"))
    try:
        async for msg in ws:  # the client sends nothing we act on; this notices its close
            if msg.type == WSMsgType.ERROR:
                break
    finally:
        twin.unsubscribe(sub)
        for t in tasks:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await asyncio.gather(*tasks)
        clients.discard(ws)
        if not ws.closed:
            await ws.close()
    return ws


async def _ws_watch(
    ws: web.WebSocketResponse, sec: ApiSecurity, claims: TokenClaims, method: str, path: str
) -> None:
    """Close a WebSocket whose token expires or is revoked, or whose user may no longer read.

    The check at connect time covers only that moment; a stream may outlive its token.
    """
    rule = rest_rule(method, f"{API_PREFIX}/ws")
    while not ws.closed:
        left = claims.exp - sec.tokens.clock()
        await asyncio.sleep(max(0.0, min(WS_AUTH_CHECK_S, left)))
        why = None
        try:
            sec.tokens.check(claims)
        except TokenError as e:
            why = str(e)
        else:
            user = sec.users.get(claims.sub)
            if user is None or rule is None or not rule.permits(Principal.of(user).roles):
                why = f"{claims.sub!r} may no longer read {path}"
        if why is not None:
            log.info("closing WebSocket of %s: %s", claims.sub, why)
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=why.encode()[:120])
            return


async def _send(ws: web.WebSocketResponse, msg: dict[str, Any]) -> None:
    await ws.send_str(_dumps(msg))


async def _ws_send(ws: web.WebSocketResponse, twin: Twin, sub: Any, prefix: str) -> None:
    try:
        await _send(ws, {"type": "snapshot", "seq": twin.seq, "points": _points(twin, prefix)})
        reported = 0
        while not ws.closed:
            cs = await sub.get()
            if cs is None:
                return
            if sub.dropped > reported:
                await _send(ws, {"type": "dropped", "count": sub.dropped - reported})
                reported = sub.dropped
            changes = _filter(cs.changes, prefix)
            if changes:
                await _send(
                    ws,
                    {
                        "type": "changes",
                        "seq": cs.seq,
                        "changes": [_change_json(s) for s in changes],
                    },
                )
    except (ConnectionError, RuntimeError):
        # The client went away mid-send; the receive loop ends and cleans up.
        return
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("WebSocket sender failed")
        await ws.close(code=1011, message=b"internal error")


def _filter(changes: Iterable[Sample], prefix: str) -> list[Sample]:
    if not prefix:
        return list(changes)
    return [s for s in changes if s.point.startswith(prefix)]


async def _close_websockets(app: web.Application) -> None:
    clients = app[_WS_CLIENTS]
    for ws in list(clients):
        await ws.close(code=1001, message=b"server shutdown")


# --- HTTPS ---------------------------------------------------------------------------------------

_DEFAULT_TLS_HOSTS = ("localhost", "127.0.0.1", "::1")


def _tls_hosts(host: str, extra: Iterable[str]) -> list[str]:
    out: list[str] = []
    for h in (*_DEFAULT_TLS_HOSTS, host, *extra):
        h = h.strip().strip("[]")
        if h and h not in ("0.0.0.0", "::") and h not in out:  # wildcards name no host
            out.append(h)
    return out


def ensure_self_signed(
    directory: str | Path,
    hosts: Iterable[str],
    *,
    days: int = 365,
    clock: Callable[[], float] = time.time,
) -> tuple[Path, Path]:
    """cert.pem and key.pem (0600) in directory: an ECDSA P-256 self-signed certificate naming
    every host, made when missing, expiring within a day, or not naming them all."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = Path(directory)
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    wanted = list(dict.fromkeys(hosts))
    now = datetime.fromtimestamp(clock(), UTC)

    def names(h: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(h))
        except ValueError:
            return x509.DNSName(h)

    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            have = set(san)
            fresh = cert.not_valid_after_utc - now > timedelta(days=1)
            if fresh and all(names(h) in have for h in wanted):
                return cert_path, key_path
            log.warning(
                "REST API: the generated certificate in %s is expiring or does not name "
                "every host; making a new one",
                d,
            )
        except (ValueError, x509.ExtensionNotFound, OSError) as e:
            log.warning("REST API: cannot reuse the certificate in %s (%s); making a new one", d, e)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vpp-gateway REST API")])
    pub = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([names(h) for h in wanted]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(pub), critical=False)
        .sign(key, hashes.SHA256())
    )
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_atomic(key_path, key_pem, mode=0o600)
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    except Exception as e:
        raise ApiSecurityError(f"cannot write the REST API certificate to {d}: {e}") from e
    fp = cert.fingerprint(hashes.SHA256()).hex(":")
    log.warning(
        "REST API: generated a self-signed certificate %s for %s (SHA-256 %s): clients "
        "must trust it explicitly",
        cert_path,
        ", ".join(wanted),
        fp,
    )
    return cert_path, key_path


def https_context(cfg: ApiTLSConfig, host: str) -> ssl.SSLContext:
    """The server TLS context of the REST API: the given certificate, or a generated one."""
    from security.errors import SecurityError
    from security.secrets import reveal

    if cfg.cert is not None and cfg.key is not None:
        cert, key = Path(cfg.cert), Path(cfg.key)
    else:
        cert, key = ensure_self_signed(cfg.generated_dir, _tls_hosts(host, cfg.hostnames))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if cfg.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    try:
        password = reveal(cfg.key_passphrase) if cfg.key_passphrase else None
        ctx.load_cert_chain(cert, key, password=password)
    except (OSError, ssl.SSLError, SecurityError) as e:
        raise ApiSecurityError(f"REST API TLS: cannot load {cert} / {key}: {e}") from e
    return ctx


# --- the app -------------------------------------------------------------------------------------


def create_app(
    twin: Twin,
    commands: CommandPath,
    history: HistoryStore | None = None,
    *,
    status: StatusFn | None = None,
    ws_queue_size: int | None = None,
    security: ApiSecurity | None = None,
) -> web.Application:
    """The REST API application over a twin, its command path and (optionally) a history store.

    Without `security` the API runs with auth off (ApiSecurity.local()): give one for anything
    but a loopback development setup.
    """
    if security is None:
        log.warning("REST API without authentication (auth: off): every request has every role")
        security = ApiSecurity.local()
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=64 * 1024
    )
    app[_SECURITY] = security
    app[_TWIN] = twin
    app[_COMMANDS] = commands
    app[_HISTORY] = history
    app[_STATUS] = status
    app[_WS_QUEUE] = ws_queue_size or twin.queue_size
    clients: set[web.WebSocketResponse] = set()
    app[_WS_CLIENTS] = clients
    app[_OPENAPI] = openapi_document()
    app.on_shutdown.append(_close_websockets)
    p = API_PREFIX
    app.router.add_get(f"{p}/health", health)
    app.router.add_post(f"{p}/auth/login", login)
    app.router.add_post(f"{p}/auth/logout", logout)
    app.router.add_get(f"{p}/auth/me", whoami)
    app.router.add_get(f"{p}/users", list_users)
    app.router.add_post(f"{p}/users", add_user)
    app.router.add_put(f"{p}/users/{{name}}/roles", set_user_roles)
    app.router.add_delete(f"{p}/users/{{name}}", remove_user)
    app.router.add_get(f"{p}/audit", list_audit)
    app.router.add_get(f"{p}/audit/verify", verify_audit)
    app.router.add_get(f"{p}/status", get_status)
    app.router.add_get(f"{p}/points", list_points)
    app.router.add_get(f"{p}/points/{{ref:.+}}", get_point)
    app.router.add_get(f"{p}/history/{{ref:.+}}", get_history)
    app.router.add_get(f"{p}/vpps", list_vpps)
    app.router.add_get(f"{p}/vpps/{{id}}", get_vpp)
    app.router.add_post(f"{p}/commands", post_command)
    app.router.add_get(f"{p}/commands", list_commands)
    app.router.add_get(f"{p}/commands/{{id}}", get_command)
    app.router.add_get(f"{p}/ws", websocket)
    app.router.add_get(f"{p}/openapi.json", get_openapi)
    return app
