"""A small user store: named users with IEC 62351-8 roles and Argon2id password hashes.

Passwords are never stored: each user keeps an Argon2id hash (argon2-cffi, RFC 9106 parameters)
that embeds its own salt and cost, so a file written with older parameters still verifies and is
re-hashed at the next successful login (`dirty` tells the owner to save). The file is YAML (or JSON
when its name ends in .json)::

    users:
      - name: alice
        roles: [operator]
        password_hash: $argon2id$v=19$m=65536,t=3,p=4$...
        disabled: false

Saving writes a temporary file beside the target (mode 0600) and renames it over the target, so a
crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "WRITE_ROLES",
    "Role",
    "User",
    "UserStore",
    "UserStoreError",
    "can_write",
]

MIN_PASSWORD_LENGTH = 8
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_KEYS = frozenset({"name", "roles", "password_hash", "disabled"})


class Role(StrEnum):
    """Roles after the IEC 62351-8 predefined roles (VIEWER, OPERATOR, ENGINEER, SECADM, SECAUD)."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    MARKET_PARTICIPANT = "market_participant"
    SECURITY_ADMIN = "security_admin"
    AUDITOR = "auditor"


# IEC 62351-8 Table 2: OPERATOR may CONTROL, ENGINEER may CONFIGURE (which includes control here);
# VIEWER, SECAUD and SECADM may not operate the process. The decision is security.rbac's
# (OPCUA_WRITE); this set is kept for callers that want the names.
WRITE_ROLES = frozenset({Role.OPERATOR, Role.ENGINEER})


class UserStoreError(Exception):
    """A user store that cannot be read, written or changed as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    """A named user with roles; the password hash stays out of repr."""

    name: str
    roles: frozenset[Role]
    password_hash: str = field(repr=False)
    disabled: bool = False

    def has_role(self, role: Role) -> bool:
        """True when the user holds role."""
        return role in self.roles

    def to_dict(self) -> dict[str, Any]:
        """The form stored in the users file."""
        return {
            "name": self.name,
            "roles": sorted(r.value for r in self.roles),
            "password_hash": self.password_hash,
            "disabled": self.disabled,
        }


def can_write(user: User | None) -> bool:
    """True when user may write set-points over OPC UA (security.rbac.OPCUA_WRITE; not disabled)."""
    # Imported here: security.rbac imports this module for Role and User.
    from security.rbac import OPCUA_WRITE

    return user is not None and not user.disabled and OPCUA_WRITE.permits(user.roles)


def _roles(values: Iterable[str | Role], where: str) -> frozenset[Role]:
    out: set[Role] = set()
    for v in values:
        try:
            out.add(Role(v))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise UserStoreError(f"{where}: unknown role {v!r} (allowed: {allowed})") from None
    return frozenset(out)


def _check_name(name: str, where: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserStoreError(
            f"{where}: user name {name!r} must be 1-64 of letters, digits, '_', '.', '@', '-'"
        )


class UserStore:
    """Users by name, with Argon2id hashing, authentication and a YAML/JSON file."""

    def __init__(
        self,
        users: Iterable[User] = (),
        *,
        path: str | Path | None = None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self._hasher = hasher or PasswordHasher()
        self._users: dict[str, User] = {}
        for u in users:
            if u.name in self._users:
                raise UserStoreError(f"user {u.name!r} is listed twice")
            self._users[u.name] = u
        # Verified against for unknown names, so a miss costs as much time as a wrong password.
        self._dummy = self._hasher.hash("not a password of anyone")
        self.dirty = False

    # --- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, name: object) -> bool:
        return name in self._users

    def __iter__(self) -> Iterator[User]:
        return iter(list(self._users.values()))

    def get(self, name: str) -> User | None:
        """The user called name, if any."""
        return self._users.get(name)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user if name and password match and the user is enabled; None otherwise."""
        user = self._users.get(name) if isinstance(name, str) else None
        if not isinstance(password, str):
            return None
        stored = user.password_hash if user is not None else self._dummy
        try:
            self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if user is None or user.disabled:
            return None
        if self._hasher.check_needs_rehash(stored):
            user = replace(user, password_hash=self._hasher.hash(password))
            self._users[name] = user
            self.dirty = True
        return user

    # --- changing --------------------------------------------------------------------------

    def hash_password(self, password: str) -> str:
        """An Argon2id hash of password (refused when shorter than MIN_PASSWORD_LENGTH)."""
        if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
            raise UserStoreError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
        return self._hasher.hash(password)

    def add(self, name: str, password: str, roles: Iterable[str | Role]) -> User:
        """Create a user; UserStoreError if the name is taken or invalid, or a role unknown."""
        _check_name(name, "add")
        if name in self._users:
            raise UserStoreError(f"user {name!r} already exists")
        user = User(name, _roles(roles, f"user {name!r}"), self.hash_password(password))
        self._users[name] = user
        self.dirty = True
        return user

    def set_password(self, name: str, password: str) -> User:
        """Replace a user's password."""
        user = self._require(name)
        user = replace(user, password_hash=self.hash_password(password))
        self._users[name] = user
        self.dirty = True
        return user

    def set_roles(self, name: str, roles: Iterable[str | Role]) -> User:
        """Replace a user's roles."""
        user = replace(self._require(name), roles=_roles(roles, f"user {name!r}"))
        self._users[name] = user
        self.dirty = True
        return user

    def set_disabled(self, name: str, disabled: bool = True) -> User:
        """Disable (or enable again) a user without forgetting it."""
        user = replace(self._require(name), disabled=disabled)
        self._users[name] = user
        self.dirty = True
        return user

    def remove(self, name: str) -> None:
        """Forget a user."""
        self._require(name)
        del self._users[name]
        self.dirty = True

    @contextlib.contextmanager
    def change(self) -> Iterator[UserStore]:
        """Changes made inside are saved together (when the store has a file) or not at all.

        On any error, inside the block or while saving, the users are put back as they were, so
        the store in memory never differs from the file because of a half-done change.
        """
        before, dirty = dict(self._users), self.dirty
        try:
            yield self
            if self.path is not None and self.dirty:
                self.save()
        except BaseException:
            self._users, self.dirty = before, dirty
            raise

    def count_role(self, role: Role) -> int:
        """Enabled users holding role."""
        return sum(1 for u in self._users.values() if role in u.roles and not u.disabled)

    def _require(self, name: str) -> User:
        user = self._users.get(name)
        if user is None:
            raise UserStoreError(f"no user {name!r}")
        return user

    # --- the file --------------------------------------------------------------------------

    @classmethod
    def load(
        cls, path: str | Path, *, missing_ok: bool = False, hasher: PasswordHasher | None = None
    ) -> UserStore:
        """Read a users file; a missing file is an error unless missing_ok (then: no users)."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            if missing_ok:
                return cls(path=p, hasher=hasher)
            raise UserStoreError(f"{p}: no such users file") from None
        except OSError as e:
            raise UserStoreError(f"{p}: cannot read: {e.strerror}") from e
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as e:
            kind = "JSON" if p.suffix == ".json" else "YAML"
            raise UserStoreError(f"{p}: not valid {kind}: {e}") from e
        if data is None:
            data = {"users": []}
        if not isinstance(data, dict) or set(data) - {"users"}:
            raise UserStoreError(f"{p}: expected a mapping with one key, 'users'")
        entries = data.get("users") or []
        if not isinstance(entries, list):
            raise UserStoreError(f"{p}: 'users' must be a list")
        users = [_parse_user(e, f"{p}: users[{i}]") for i, e in enumerate(entries)]
        try:
            return cls(users, path=p, hasher=hasher)
        except UserStoreError as e:
            raise UserStoreError(f"{p}: {e}") from None

    def save(self, path: str | Path | None = None) -> Path:
        """Write every user to path (default: where it was loaded from), atomically, mode 0600."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise UserStoreError("no path to save the user store to")
        doc = {"users": [u.to_dict() for u in self._users.values()]}
        if target.suffix == ".json":
            text = json.dumps(doc, indent=2) + "\n"
        else:
            text = yaml.safe_dump(doc, sort_keys=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.path = target
        self.dirty = False
        return target


def _parse_user(entry: object, where: str) -> User:
    if not isinstance(entry, dict):
        raise UserStoreError(f"{where}: expected a mapping")
    unknown = set(entry) - _KEYS
    if unknown:
        hint = " (store password_hash, never a password)" if "password" in unknown else ""
        raise UserStoreError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}{hint}"
        )
    for key in ("name", "password_hash"):
        if key not in entry:
            raise UserStoreError(f"{where}: '{key}' is missing")
    name = entry["name"]
    _check_name(name, where)
    h = entry["password_hash"]
    if not isinstance(h, str) or not h.startswith("$argon2"):
        raise UserStoreError(f"{where}: password_hash of {name!r} is not an Argon2 hash")
    roles = entry.get("roles") or []
    if not isinstance(roles, list):
        raise UserStoreError(f"{where}: roles of {name!r} must be a list")
    disabled = entry.get("disabled", False)
    if not isinstance(disabled, bool):
        raise UserStoreError(f"{where}: disabled of {name!r} must be true or false")
    return User(name, _roles(roles, where), h, disabled)
