"""Bearer tokens for the REST API: HMAC-SM3 signed, with expiry, revoked on logout.

A token is ``vpp1.<payload>.<mac>`` (both base64url without padding): the payload is compact JSON
``{"sub": NAME, "iat": MS, "exp": MS, "jti": 32 hex}`` (times in UTC epoch milliseconds) and the
mac is HMAC-SM3 under the server secret over ``"vpp-api-token\\0v1\\0" || payload bytes``. Checking
one costs a single HMAC-SM3 and no lookup; with the secret kept in a key file (0600) tokens survive
a restart.

A token carries no roles: the API reads the user's current roles from the user store on every
request, so a role change, a disabled account or a removed user takes effect at once.

Revocation: logout revokes one token (its jti, until it would have expired); ``revoke_user``
revokes every token of a name issued until now (user removed, password changed). Both are kept,
pruned once expired, and saved to a state file beside the key file when there is one, so that a
restart does not bring a logged-out token back. The clock is injectable (tests move time).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from security.errors import SecurityError
from security.keystore import KeyStoreError, write_atomic
from security.sm3 import hmac_sm3, hmac_sm3_verify

__all__ = [
    "DEFAULT_TTL_S",
    "BadTokenSignature",
    "MalformedToken",
    "TokenClaims",
    "TokenError",
    "TokenExpired",
    "TokenRevoked",
    "TokenService",
]

DEFAULT_TTL_S = 3600.0
PREFIX = "vpp1"
MAX_TOKEN_LENGTH = 1024
MIN_SECRET = 32
_DOMAIN = b"vpp-api-token\x00v1\x00"
_B64 = re.compile(r"^[A-Za-z0-9_-]+$")
_JTI = re.compile(r"^[0-9a-f]{32}$")
_NAME_MAX = 64

Clock = Callable[[], float]


class TokenError(SecurityError):
    """A bearer token refused; the message says why (never echoes the token)."""


class MalformedToken(TokenError):
    """Not a token of ours at all: wrong shape, encoding or payload."""


class BadTokenSignature(TokenError):
    """The token's HMAC-SM3 does not verify: altered, or made with another secret."""


class TokenExpired(TokenError):
    """The token is past its expiry."""


class TokenRevoked(TokenError):
    """The token was revoked (logout, or every token of its user)."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says: who, when issued and until when (epoch seconds), its id."""

    sub: str
    iat: float
    exp: float
    jti: str


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    if not _B64.match(text):
        raise MalformedToken("token is not base64url text")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedToken("token is not base64url text") from None
    # The last character may carry unused bits: refuse any spelling but the one we write, so
    # one token has exactly one text (no second string that verifies as the same token).
    if _b64e(data) != text:
        raise MalformedToken("token is not canonical base64url text")
    return data


class TokenService:
    """Issues, verifies and revokes bearer tokens under one server secret."""

    def __init__(
        self,
        secret: bytes,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Clock = time.time,
        state_path: str | Path | None = None,
    ) -> None:
        if len(secret) < MIN_SECRET:
            raise TokenError(f"the token secret needs at least {MIN_SECRET} bytes")
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise TokenError(f"token lifetime must be a positive number of seconds, not {ttl_s}")
        self._secret = bytes(secret)
        self.ttl_s = float(ttl_s)
        self.clock = clock
        self.state_path = Path(state_path) if state_path is not None else None
        self._lock = threading.Lock()
        self._revoked: dict[str, int] = {}  # jti -> exp (ms)
        self._not_before: dict[str, int] = {}  # name -> ms: tokens issued at or before are void
        if self.state_path is not None:
            self._load_state()

    # --- construction from a key file -------------------------------------------------------

    @classmethod
    def from_key_file(
        cls,
        path: str | Path,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Clock = time.time,
        create: bool = True,
    ) -> TokenService:
        """The secret in `path` (hex, mode 0600; made on first use when `create`); revocations
        are kept in `path`.revoked.json."""
        p = Path(path)
        if not p.exists():
            if not create:
                raise TokenError(f"no token secret file {p}")
            p.parent.mkdir(parents=True, exist_ok=True)
            try:
                write_atomic(
                    p, secrets.token_bytes(32).hex().encode() + b"\n", mode=0o600, overwrite=False
                )
            except KeyStoreError as e:
                if not p.exists():  # another process may have made it meanwhile
                    raise TokenError(str(e)) from e
        try:
            st = p.stat()
            text = p.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise TokenError(f"cannot read the token secret {p}: {e}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise TokenError(
                f"token secret {p} has mode {stat.S_IMODE(st.st_mode):04o}: group or others can "
                f"access it; run chmod 600 {p}"
            )
        try:
            secret = bytes.fromhex(text)
        except ValueError:
            raise TokenError(f"token secret {p} is not hex text") from None
        state = p.with_name(p.name + ".revoked.json")
        return cls(secret, ttl_s=ttl_s, clock=clock, state_path=state)

    # --- issuing and checking ---------------------------------------------------------------

    def _now_ms(self) -> int:
        return math.floor(self.clock() * 1000)

    def _mac(self, payload: bytes) -> bytes:
        return hmac_sm3(self._secret, _DOMAIN + payload)

    def issue(self, name: str, ttl_s: float | None = None) -> tuple[str, TokenClaims]:
        """A new token for `name`, valid for `ttl_s` (default: the service's) from now."""
        if not isinstance(name, str) or not 0 < len(name) <= _NAME_MAX:
            raise TokenError(f"cannot issue a token for the name {name!r}")
        ttl = self.ttl_s if ttl_s is None else float(ttl_s)
        if not (math.isfinite(ttl) and ttl > 0):
            raise TokenError(f"token lifetime must be a positive number of seconds, not {ttl}")
        iat = self._now_ms()
        exp = iat + max(1, round(ttl * 1000))
        jti = secrets.token_hex(16)
        payload = json.dumps(
            {"sub": name, "iat": iat, "exp": exp, "jti": jti},
            separators=(",", ":"),
            ensure_ascii=True,
        ).encode("ascii")
        token = f"{PREFIX}.{_b64e(payload)}.{_b64e(self._mac(payload))}"
        return token, TokenClaims(name, iat / 1000, exp / 1000, jti)

    def verify(self, token: str) -> TokenClaims:
        """The claims of a valid token; a TokenError subclass naming why it is refused."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise MalformedToken("token is not a vpp1 token (too long or not text)")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            raise MalformedToken("token is not a vpp1 token (expected vpp1.<payload>.<mac>)")
        payload, mac = _b64d(parts[1]), _b64d(parts[2])
        # The MAC first: nothing of an unauthenticated payload is trusted or even parsed.
        if not hmac_sm3_verify(self._secret, _DOMAIN + payload, mac):
            raise BadTokenSignature("token signature does not verify (altered or not ours)")
        claims = _parse_claims(payload)
        self.check(claims)
        return claims

    def check(self, claims: TokenClaims) -> None:
        """Raise TokenExpired or TokenRevoked when verified claims are no longer good (a
        long-lived connection re-checks its token with this)."""
        if self._now_ms() >= round(claims.exp * 1000):
            raise TokenExpired(f"token expired at {_iso(claims.exp)}")
        with self._lock:
            if claims.jti in self._revoked:
                raise TokenRevoked("token was revoked (logged out)")
            nb = self._not_before.get(claims.sub)
        if nb is not None and round(claims.iat * 1000) <= nb:
            raise TokenRevoked(
                f"every token of {claims.sub!r} issued until {_iso(nb / 1000)} was revoked"
            )

    # --- revocation -------------------------------------------------------------------------

    def revoke(self, claims: TokenClaims) -> None:
        """Revoke one token (logout) until it would have expired."""
        with self._lock:
            self._revoked[claims.jti] = round(claims.exp * 1000)
            self._prune_locked()
        self._save_state()

    def revoke_user(self, name: str) -> None:
        """Revoke every token of `name` issued until now."""
        with self._lock:
            self._not_before[name] = self._now_ms()
            self._prune_locked()
        self._save_state()

    @property
    def revoked_count(self) -> int:
        """Revoked tokens still remembered (not yet past their expiry)."""
        with self._lock:
            return len(self._revoked)

    def _prune_locked(self) -> None:
        now = self._now_ms()
        self._revoked = {j: e for j, e in self._revoked.items() if e > now}
        # A user cut-off matters only while tokens issued before it can still be unexpired.
        horizon = now - round(self.ttl_s * 1000)
        self._not_before = {n: t for n, t in self._not_before.items() if t > horizon}

    def _load_state(self) -> None:
        assert self.state_path is not None
        try:
            doc = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            raise TokenError(f"cannot read token revocations {self.state_path}: {e}") from None
        try:
            revoked = {str(j): int(e) for j, e in doc["revoked"].items()}
            nb = {str(n): int(t) for n, t in doc["not_before"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise TokenError(f"token revocations {self.state_path} are damaged: {e}") from None
        with self._lock:
            self._revoked, self._not_before = revoked, nb
            self._prune_locked()

    def _save_state(self) -> None:
        if self.state_path is None:
            return
        with self._lock:
            doc = {"revoked": dict(self._revoked), "not_before": dict(self._not_before)}
        data = json.dumps(doc, sort_keys=True).encode() + b"\n"
        try:
            write_atomic(self.state_path, data, mode=0o600)
        except KeyStoreError as e:
            raise TokenError(f"cannot save token revocations: {e}") from e


def _parse_claims(payload: bytes) -> TokenClaims:
    try:
        doc: Any = json.loads(payload.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedToken("token payload is not JSON") from None
    if not isinstance(doc, dict) or set(doc) != {"sub", "iat", "exp", "jti"}:
        raise MalformedToken("token payload lacks sub, iat, exp or jti")
    sub, iat, exp, jti = doc["sub"], doc["iat"], doc["exp"], doc["jti"]
    if (
        not isinstance(sub, str)
        or not 0 < len(sub) <= _NAME_MAX
        or not isinstance(jti, str)
        or not _JTI.match(jti)
        or type(iat) is not int
        or type(exp) is not int
        or exp <= iat
    ):
        raise MalformedToken("token payload has malformed claims")
    return TokenClaims(sub, iat / 1000, exp / 1000, jti)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
