"""The one role matrix: who may do what, for every REST route, OPC UA write, IEC 104 command kind
and IEC 61850 MMS control. The code that enforces access and the tests that check it both read
the tables below; nothing else decides.

Roles follow IEC 62351-8 (security.users.Role). Where this matrix departs from the standard's
predefined rights, it says so:

- viewer, operator, engineer and market_participant read the process (points, history, VPPs,
  commands, status, the live WebSocket); operator and engineer also command (IEC 62351-8 gives
  CONTROL to OPERATOR only; here ENGINEER, who configures, may command too, as it may over OPC UA).
  Configuration routes are engineer's when they come (`CONFIG_CHANGE`); market routes will be
  market_participant's.
- security_admin manages users and roles; auditor reads the audit log. Neither reads the process
  nor commands: separation of duties (IEC 62351-8 grants SECADM and SECAUD VIEW and READ; we
  grant them nothing they do not need).
- /health, /openapi.json and /auth/login are public; /auth/me and /auth/logout need a login
  (any role, even none).

A route of the REST app without an entry here is refused by the API (403) and fails the RBAC
test, so a new route cannot go out unguarded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from security.errors import SecurityError
from security.users import Role, User

__all__ = [
    "ALL_ROLES",
    "CONFIG_CHANGE",
    "IEC104_COMMANDS",
    "MMS_CONTROLS",
    "OPCUA_WRITE",
    "REST_ROUTES",
    "AccessDenied",
    "Principal",
    "Rule",
    "allowed",
    "iec104_rule",
    "mms_rule",
    "rest_rule",
]

ALL_ROLES = frozenset(Role)


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may perform one action: anyone (public), any logged-in user, or holders of `roles`."""

    roles: frozenset[Role] = frozenset()
    public: bool = False
    any_user: bool = False

    def permits(self, roles: Iterable[Role]) -> bool:
        """True if a holder of `roles` may perform the action (public rules permit anyone)."""
        if self.public or self.any_user:
            return True
        return not self.roles.isdisjoint(roles)

    def describe(self) -> str:
        """Who may, in words."""
        if self.public:
            return "anyone"
        if self.any_user:
            return "any logged-in user"
        return ", ".join(sorted(r.value for r in self.roles)) or "nobody"


def _roles(*roles: Role) -> Rule:
    return Rule(frozenset(roles))


PUBLIC = Rule(public=True)
LOGGED_IN = Rule(any_user=True)

# Readers of the process (IEC 62351-8 VIEW + READ) and commanders (CONTROL).
READ = _roles(Role.VIEWER, Role.OPERATOR, Role.ENGINEER, Role.MARKET_PARTICIPANT)
CONTROL = _roles(Role.OPERATOR, Role.ENGINEER)
SECURITY = _roles(Role.SECURITY_ADMIN)
AUDIT = _roles(Role.AUDITOR)

_P = "/api/v1"

# (method, route template as aiohttp canonicalises it) -> rule. HEAD follows GET.
REST_ROUTES: Mapping[tuple[str, str], Rule] = MappingProxyType(
    {
        ("GET", f"{_P}/health"): PUBLIC,
        ("GET", f"{_P}/openapi.json"): PUBLIC,
        ("POST", f"{_P}/auth/login"): PUBLIC,
        ("POST", f"{_P}/auth/logout"): LOGGED_IN,
        ("GET", f"{_P}/auth/me"): LOGGED_IN,
        ("GET", f"{_P}/status"): READ,
        ("GET", f"{_P}/points"): READ,
        ("GET", f"{_P}/points/{{ref}}"): READ,
        ("GET", f"{_P}/history/{{ref}}"): READ,
        ("GET", f"{_P}/vpps"): READ,
        ("GET", f"{_P}/vpps/{{id}}"): READ,
        ("GET", f"{_P}/commands"): READ,
        ("GET", f"{_P}/commands/{{id}}"): READ,
        ("POST", f"{_P}/commands"): CONTROL,
        ("GET", f"{_P}/ws"): READ,
        ("GET", f"{_P}/users"): SECURITY,
        ("POST", f"{_P}/users"): SECURITY,
        ("PUT", f"{_P}/users/{{name}}/roles"): SECURITY,
        ("DELETE", f"{_P}/users/{{name}}"): SECURITY,
        ("GET", f"{_P}/audit"): AUDIT,
        ("GET", f"{_P}/audit/verify"): AUDIT,
    }
)

# An OPC UA Value write of a read-write point (becomes a command).
OPCUA_WRITE = CONTROL

# IEC 104 commands by the point function they address (model.north_iec104.PointFunction values):
# AGC/AVC set-points, AGC/AVC mode switches, demand response start/stop, direct resource writes.
IEC104_COMMANDS: Mapping[str, Rule] = MappingProxyType(
    {
        "agc_p": CONTROL,
        "avc_q": CONTROL,
        "agc_mode": CONTROL,
        "avc_mode": CONTROL,
        "dr": CONTROL,
        "direct": CONTROL,
    }
)

# IEC 61850-7-2 clause 20 control services on a controllable object (SBOw/SBO, Operate, Cancel).
MMS_CONTROLS: Mapping[str, Rule] = MappingProxyType(
    {"select": CONTROL, "operate": CONTROL, "cancel": CONTROL}
)

# Changing the site configuration (no route does yet; reserved so its rule is decided here).
CONFIG_CHANGE = _roles(Role.ENGINEER)


class AccessDenied(SecurityError):
    """An action refused by the role matrix; the message names the action, roles and who may."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: a user name and its roles (`via` says how it was established)."""

    name: str
    roles: frozenset[Role]
    via: str = "token"

    @classmethod
    def of(cls, user: User, via: str = "token") -> Principal:
        """The principal of a user account (a disabled account holds no roles)."""
        return cls(user.name, frozenset() if user.disabled else user.roles, via)

    def describe(self) -> str:
        """e.g. alice (operator, viewer)."""
        roles = ", ".join(sorted(r.value for r in self.roles)) or "no role"
        return f"{self.name} ({roles})"


def rest_rule(method: str, template: str) -> Rule | None:
    """The rule of a REST route (HEAD as GET); None when the route has no entry."""
    m = method.upper()
    return REST_ROUTES.get(("GET" if m == "HEAD" else m, template))


def iec104_rule(function: str) -> Rule | None:
    """The rule of an IEC 104 command addressed to a point of this function, if it is one."""
    return IEC104_COMMANDS.get(str(function))


def mms_rule(service: str) -> Rule | None:
    """The rule of an MMS control service (select, operate, cancel)."""
    return MMS_CONTROLS.get(service)


def allowed(rule: Rule | None, roles: Iterable[Role], action: str = "this") -> None:
    """Raise AccessDenied unless `rule` exists and permits `roles`."""
    held = frozenset(roles)
    if rule is None:
        raise AccessDenied(f"{action}: no access rule exists for this action; refused")
    if not rule.permits(held):
        mine = ", ".join(sorted(r.value for r in held)) or "no role"
        raise AccessDenied(f"{action}: not allowed for {mine} (allowed: {rule.describe()})")
