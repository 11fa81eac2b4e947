"""The OpenAPI 3.1 document of the north REST API (gateway.north.rest), as a Python dict.

The tests keep it true: every route of the app is documented, every documented path is a route,
and the answers the tests receive validate against the response schemas below.
"""

from __future__ import annotations

import copy
from typing import Any

from security.audit import AuditKind
from security.rbac import rest_rule
from security.users import Role

__all__ = ["API_VERSION", "openapi_document"]

API_VERSION = "1.1.0"

_P = "/api/v1"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json_content(schema)}


def _err(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _param(
    name: str, where: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "description": description,
        "required": required or where == "path",
        "schema": schema,
    }


_TIME = {
    "type": "string",
    "description": "ISO 8601 (a time without offset is UTC) or UTC epoch seconds, "
    "between 1970-01-01 and 9999-12-30",
    "examples": ["2026-01-01T00:00:00Z", "2026-01-01T08:00:00+08:00", "1767225600"],
}
_TS = {"type": ["string", "null"], "format": "date-time", "description": "ISO 8601, UTC"}
_VALUE = {"type": ["number", "boolean", "null"]}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "additionalProperties": False,
                "properties": {
                    "code": {
                        "type": "string",
                        "description": "machine-readable, e.g. bad_request, unknown_point, "
                        "out_of_limits, read_only, conflict, not_found",
                    },
                    "message": {"type": "string", "description": "what was wrong, in words"},
                    "details": {
                        "type": "array",
                        "description": "one entry per offending field of a request body",
                        "items": {
                            "type": "object",
                            "required": ["field", "message"],
                            "properties": {
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    },
    "Quality": {
        "type": "object",
        "description": "IEC 61850 quality",
        "required": ["validity", "details", "raw"],
        "additionalProperties": False,
        "properties": {
            "validity": {"enum": ["good", "invalid", "reserved", "questionable"]},
            "details": {
                "type": "array",
                "items": {
                    "enum": [
                        "overflow",
                        "outOfRange",
                        "badReference",
                        "oscillatory",
                        "failure",
                        "oldData",
                        "inconsistent",
                        "inaccurate",
                        "substituted",
                        "test",
                        "operatorBlocked",
                    ]
                },
            },
            "raw": {"type": "integer", "description": "the IEC 61850 quality bits as an int"},
        },
    },
    "Point": {
        "type": "object",
        "description": "A point of the model with its current value (value, ts and quality are "
        "null while the point has no value yet).",
        "required": [
            "point",
            "value",
            "ts",
            "quality",
            "unit",
            "dtype",
            "access",
            "description",
            "min",
            "max",
        ],
        "additionalProperties": False,
        "properties": {
            "point": {
                "type": "string",
                "description": "IEC 61850 object reference, e.g. VPP1.PV01/MMXU1.TotW.mag.f",
            },
            "value": _VALUE,
            "ts": _TS,
            "quality": {"oneOf": [_ref("Quality"), {"type": "null"}]},
            "unit": {"type": "string"},
            "dtype": {"enum": ["float", "int", "bool", None]},
            "access": {"enum": ["ro", "rw"]},
            "description": {"type": "string"},
            "min": {"type": ["number", "null"], "description": "lower limit of set-points"},
            "max": {"type": ["number", "null"], "description": "upper limit of set-points"},
        },
    },
    "PointList": {"type": "array", "items": _ref("Point")},
    "Change": {
        "type": "object",
        "required": ["point", "value", "ts", "quality"],
        "additionalProperties": False,
        "properties": {
            "point": {"type": "string"},
            "value": _VALUE,
            "ts": _TS,
            "quality": _ref("Quality"),
        },
    },
    "HistoryRaw": {
        "type": "object",
        "required": ["point", "start", "end", "interval", "agg", "samples"],
        "additionalProperties": False,
        "properties": {
            "point": {"type": "string"},
            "start": _TS,
            "end": _TS,
            "interval": {"type": "null"},
            "agg": {"type": "null"},
            "samples": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["ts", "value", "quality"],
                    "additionalProperties": False,
                    "properties": {
                        "ts": _TS,
                        "value": _VALUE,
                        "quality": _ref("Quality"),
                    },
                },
            },
        },
    },
    "HistoryResampled": {
        "type": "object",
        "required": ["point", "start", "end", "interval", "agg", "buckets"],
        "additionalProperties": False,
        "properties": {
            "point": {"type": "string"},
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "interval": {
                "enum": ["5s", "1min", "5min", "10min", "15min", "20min", "30min", "60min"]
            },
            "agg": {"enum": ["mean", "min", "max", "last"]},
            "buckets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["ts", "value", "count"],
                    "additionalProperties": False,
                    "properties": {
                        "ts": {
                            "type": "string",
                            "format": "date-time",
                            "description": "start of the bucket",
                        },
                        "value": {"type": ["number", "null"]},
                        "count": {"type": "integer", "minimum": 0},
                    },
                },
            },
        },
    },
    "History": {"oneOf": [_ref("HistoryRaw"), _ref("HistoryResampled")]},
    "PlantValue": {
        "type": "object",
        "required": ["point", "value", "ts", "quality", "unit"],
        "additionalProperties": False,
        "properties": {
            "point": {"type": "string"},
            "value": {"type": ["number", "null"]},
            "ts": _TS,
            "quality": {"oneOf": [_ref("Quality"), {"type": "null"}]},
            "unit": {"type": "string"},
        },
    },
    "VPP": {
        "type": "object",
        "required": ["id", "name", "mrid", "resource_count", "aggregates"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "mrid": {"type": ["string", "null"], "description": "CIM mRID"},
            "resource_count": {"type": "integer", "minimum": 0},
            "aggregates": {
                "type": "object",
                "description": "the VPP as one plant (generator sign convention: P > 0 delivers)",
                "required": ["p", "q", "up_w", "down_w", "up_wh", "down_wh", "online"],
                "additionalProperties": False,
                "properties": {
                    k: _ref("PlantValue")
                    for k in ("p", "q", "up_w", "down_w", "up_wh", "down_wh", "online")
                },
            },
            "resources": {
                "type": "array",
                "description": "only in GET /vpps/{id}",
                "items": {
                    "type": "object",
                    "required": ["id", "name", "kind", "mrid", "aggregator"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "kind": {"type": "string"},
                        "mrid": {"type": "string"},
                        "aggregator": {"type": ["string", "null"]},
                    },
                },
            },
        },
        "additionalProperties": False,
    },
    "VPPList": {"type": "array", "items": _ref("VPP")},
    "CommandRequest": {
        "type": "object",
        "required": ["point", "value"],
        "additionalProperties": False,
        "properties": {
            "point": {"type": "string", "description": "target point (access rw)"},
            "value": {"type": ["number", "boolean"]},
            "id": {
                "type": "string",
                "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,127}$",
                "description": "client-chosen id; repeating it with the same content returns "
                "the existing record and never executes twice",
            },
            "timeout_s": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 3600,
                "default": 10,
                "description": "seconds until the command's deadline",
            },
        },
    },
    "CommandState": {
        "enum": ["accepted", "selected", "sent", "confirmed", "failed", "timed_out", "unknown"]
    },
    "CommandRecord": {
        "type": "object",
        "required": ["id", "point", "value", "origin", "deadline", "created", "state", "history"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string"},
            "point": {"type": "string"},
            "value": {"type": ["number", "boolean"]},
            "origin": {"type": "string"},
            "deadline": {"type": "number", "description": "UTC epoch seconds"},
            "created": {"type": "number", "description": "UTC epoch seconds"},
            "state": _ref("CommandState"),
            "history": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["state", "ts", "reason"],
                    "additionalProperties": False,
                    "properties": {
                        "state": _ref("CommandState"),
                        "ts": {"type": "number", "description": "UTC epoch seconds"},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    },
    "CommandList": {"type": "array", "items": _ref("CommandRecord")},
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
        "additionalProperties": False,
    },
    "Status": {
        "type": "object",
        "description": "what the runtime reports, plus the twin's counters and subscriber queues",
        "required": ["twin", "subscribers"],
        "properties": {
            "twin": {
                "type": "object",
                "required": ["points", "seq", "applied", "unknown_samples", "commands"],
                "properties": {
                    "points": {"type": "integer"},
                    "seq": {"type": "integer"},
                    "applied": {"type": "integer"},
                    "unknown_samples": {"type": "integer"},
                    "commands": {"type": "integer"},
                },
            },
            "subscribers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "queued", "delivered", "dropped"],
                    "properties": {
                        "name": {"type": "string"},
                        "queued": {"type": "integer"},
                        "delivered": {"type": "integer"},
                        "dropped": {"type": "integer"},
                    },
                },
            },
        },
    },
    "WsSnapshot": {
        "type": "object",
        "required": ["type", "seq", "points"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "snapshot"},
            "seq": {"type": "integer", "description": "twin change-set number at the snapshot"},
            "points": _ref("PointList"),
        },
    },
    "WsChanges": {
        "type": "object",
        "required": ["type", "seq", "changes"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "changes"},
            "seq": {"type": "integer"},
            "changes": {"type": "array", "items": _ref("Change")},
        },
    },
    "WsDropped": {
        "type": "object",
        "required": ["type", "count"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "dropped"},
            "count": {"type": "integer", "minimum": 1},
        },
    },
    "WsMessage": {
        "oneOf": [_ref("WsSnapshot"), _ref("WsChanges"), _ref("WsDropped")],
    },
    "Role": {
        "enum": [r.value for r in Role],
        "description": "IEC 62351-8 roles; what each may do is the role matrix (security.rbac), "
        "given per operation in x-roles",
    },
    "LoginRequest": {
        "type": "object",
        "required": ["name", "password"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 64},
            "password": {"type": "string", "minLength": 1, "maxLength": 1024},
        },
    },
    "Token": {
        "type": "object",
        "required": ["token", "token_type", "expires_at", "expires_in", "name", "roles"],
        "additionalProperties": False,
        "properties": {
            "token": {
                "type": "string",
                "description": "send as 'Authorization: Bearer <token>' (HMAC-SM3 signed)",
            },
            "token_type": {"const": "Bearer"},
            "expires_at": {"type": "string", "format": "date-time"},
            "expires_in": {"type": "integer", "minimum": 0, "description": "seconds"},
            "name": {"type": "string"},
            "roles": {"type": "array", "items": _ref("Role")},
        },
    },
    "Me": {
        "type": "object",
        "required": ["name", "roles", "auth", "expires_at"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "description": "'local' when auth is off"},
            "roles": {"type": "array", "items": _ref("Role")},
            "auth": {"enum": ["token", "off"]},
            "expires_at": _TS,
        },
    },
    "Logout": {
        "type": "object",
        "required": ["name", "logged_out"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "logged_out": {
                "type": "boolean",
                "description": "false when the request carried no token (auth off)",
            },
        },
    },
    "User": {
        "type": "object",
        "required": ["name", "roles", "disabled"],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "roles": {"type": "array", "items": _ref("Role")},
            "disabled": {"type": "boolean"},
        },
    },
    "UserList": {"type": "array", "items": _ref("User")},
    "NewUser": {
        "type": "object",
        "required": ["name", "password", "roles"],
        "additionalProperties": False,
        "properties": {
            "name": {
                "type": "string",
                "pattern": "^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$",
            },
            "password": {"type": "string", "minLength": 8, "maxLength": 1024},
            "roles": {"type": "array", "items": _ref("Role")},
        },
    },
    "RolesRequest": {
        "type": "object",
        "required": ["roles"],
        "additionalProperties": False,
        "properties": {"roles": {"type": "array", "items": _ref("Role")}},
    },
    "Removed": {
        "type": "object",
        "required": ["name", "removed"],
        "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "removed": {"const": True}},
    },
    "AuditKind": {"enum": [k.value for k in AuditKind]},
    "AuditRecord": {
        "type": "object",
        "required": [
            "seq",
            "ts",
            "kind",
            "actor",
            "source",
            "subject",
            "detail",
            "prev_hash",
            "hash",
        ],
        "additionalProperties": False,
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "ts": {"type": "number", "description": "UTC epoch seconds"},
            "kind": _ref("AuditKind"),
            "actor": {"type": "string", "description": "user name, or the command's origin"},
            "source": {"type": "string", "description": "e.g. 'rest 10.0.0.5'"},
            "subject": {"type": "string", "description": "command id, user name, file..."},
            "detail": {"description": "what happened (JSON); null if the record is damaged"},
            "prev_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "hash": {
                "type": "string",
                "pattern": "^[0-9a-f]{64}$",
                "description": "SM3 over the record's fields and prev_hash",
            },
        },
    },
    "AuditPage": {
        "type": "object",
        "required": ["records", "next_after", "head"],
        "additionalProperties": False,
        "properties": {
            "records": {"type": "array", "items": _ref("AuditRecord")},
            "next_after": {
                "type": ["integer", "null"],
                "description": "pass as after for the next page; null on the last page",
            },
            "head": {
                "type": "object",
                "required": ["seq", "hash"],
                "additionalProperties": False,
                "properties": {"seq": {"type": "integer"}, "hash": {"type": "string"}},
            },
        },
    },
    "AuditVerification": {
        "type": "object",
        "required": [
            "ok",
            "records",
            "checkpoints",
            "signed_through",
            "unsigned_tail",
            "signatures_checked",
            "first_broken",
            "reason",
        ],
        "additionalProperties": False,
        "properties": {
            "ok": {"type": "boolean"},
            "records": {"type": "integer"},
            "checkpoints": {"type": "integer", "description": "signed checkpoints verified"},
            "signed_through": {
                "type": "integer",
                "description": "last record covered by a verified SM2-signed checkpoint",
            },
            "unsigned_tail": {
                "type": "integer",
                "description": "records after it: hash-chained, not yet signed",
            },
            "signatures_checked": {"type": "boolean"},
            "first_broken": {"type": ["integer", "null"]},
            "reason": {"type": ["string", "null"]},
        },
    },
}

_RESPONSES: dict[str, Any] = {
    "BadRequest": _ok("a parameter or the body is not valid (the message names it)", _ref("Error")),
    "NotFound": _ok("no such point, VPP, command or route", _ref("Error")),
    "Unprocessable": _ok(
        "the command was refused (code out_of_limits, bad_type, bad_value, read_only, expired, "
        "no_route); nothing was recorded",
        _ref("Error"),
    ),
    "Conflict": _ok("the command id was already used for another point or value", _ref("Error")),
    "Unavailable": _ok(
        "no history store is configured (history_unavailable) or it failed (history_error)",
        _ref("Error"),
    ),
    "TooLarge": _ok("the request body is larger than 64 KiB", _ref("Error")),
    "Unauthorized": {
        "description": "no bearer token (code unauthenticated), or one that is invalid, expired, "
        "revoked or of a removed or disabled user (code invalid_token); nothing was done",
        "headers": {
            "WWW-Authenticate": {
                "description": 'RFC 6750 challenge, e.g. Bearer realm="vpp-gateway", '
                'error="invalid_token"',
                "schema": {"type": "string"},
            }
        },
        "content": _json_content(_ref("Error")),
    },
    "Forbidden": _ok(
        "the user's roles do not allow this operation (code forbidden; x-roles says who may); "
        "nothing was done",
        _ref("Error"),
    ),
}

_LIMIT = {"type": "integer", "minimum": 1, "maximum": 100000}

_PATHS: dict[str, Any] = {
    f"{_P}/health": {
        "get": {
            "operationId": "health",
            "summary": "Liveness",
            "responses": {"200": _ok("the gateway answers", _ref("Health"))},
        }
    },
    f"{_P}/status": {
        "get": {
            "operationId": "status",
            "summary": "Gateway status, twin counters and subscriber queues",
            "responses": {"200": _ok("status", _ref("Status"))},
        }
    },
    f"{_P}/points": {
        "get": {
            "operationId": "listPoints",
            "summary": "Points with their current values",
            "parameters": [
                _param(
                    "prefix",
                    "query",
                    "only points whose reference starts with this",
                    {"type": "string"},
                ),
                _param("limit", "query", "at most this many points", _LIMIT),
            ],
            "responses": {
                "200": _ok("points in model order", _ref("PointList")),
                "400": _err("BadRequest"),
            },
        }
    },
    f"{_P}/points/{{ref}}": {
        "get": {
            "operationId": "getPoint",
            "summary": "One point with its current value",
            "parameters": [
                _param(
                    "ref",
                    "path",
                    "object reference, e.g. VPP1.PV01/MMXU1.TotW.mag.f "
                    "(its '/' need not be escaped)",
                    {"type": "string"},
                ),
            ],
            "responses": {"200": _ok("the point", _ref("Point")), "404": _err("NotFound")},
        }
    },
    f"{_P}/history/{{ref}}": {
        "get": {
            "operationId": "getHistory",
            "summary": "History of one point: raw samples, or resampled when interval is given",
            "parameters": [
                _param("ref", "path", "object reference", {"type": "string"}),
                _param("start", "query", "from this time (inclusive)", _TIME),
                _param("end", "query", "to this time (exclusive)", _TIME),
                _param(
                    "interval",
                    "query",
                    "resample into buckets of this length",
                    {"enum": ["5s", "1min", "5min", "10min", "15min", "20min", "30min", "60min"]},
                ),
                _param(
                    "agg",
                    "query",
                    "aggregation per bucket (default mean)",
                    {"enum": ["mean", "min", "max", "last"]},
                ),
                _param(
                    "limit",
                    "query",
                    "raw: at most this many samples; resampled: at most "
                    "this many buckets (default 10000)",
                    _LIMIT,
                ),
            ],
            "description": "Without interval: raw samples, oldest first, between start and end "
            "(both optional). With interval: buckets between start and end (default: the last "
            "hour).",
            "responses": {
                "200": _ok("history", _ref("History")),
                "400": _err("BadRequest"),
                "404": _err("NotFound"),
                "503": _err("Unavailable"),
            },
        }
    },
    f"{_P}/vpps": {
        "get": {
            "operationId": "listVpps",
            "summary": "Every VPP with its aggregate (plant) values",
            "responses": {"200": _ok("VPPs", _ref("VPPList"))},
        }
    },
    f"{_P}/vpps/{{id}}": {
        "get": {
            "operationId": "getVpp",
            "summary": "One VPP with its aggregate values and resources",
            "parameters": [_param("id", "path", "VPP id", {"type": "string"})],
            "responses": {"200": _ok("the VPP", _ref("VPP")), "404": _err("NotFound")},
        }
    },
    f"{_P}/commands": {
        "get": {
            "operationId": "listCommands",
            "summary": "Command records, most recent first",
            "parameters": [_param("limit", "query", "at most this many (default 100)", _LIMIT)],
            "responses": {
                "200": _ok("command records", _ref("CommandList")),
                "400": _err("BadRequest"),
            },
        },
        "post": {
            "operationId": "submitCommand",
            "summary": "Write a value to a point through the command path",
            "description": "The command is checked (access, type, limits), recorded as desired "
            "state and executed by the driver owning the point; its lifecycle ends confirmed "
            "when the value is read back. A refused command is not recorded.",
            "requestBody": {"required": True, "content": _json_content(_ref("CommandRequest"))},
            "responses": {
                "202": {
                    "description": "accepted; follow Location for its lifecycle",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                    "content": _json_content(_ref("CommandRecord")),
                },
                "200": {
                    "description": "this id was already submitted with the same content: the "
                    "existing record (not executed again)",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                    "content": _json_content(_ref("CommandRecord")),
                },
                "400": _err("BadRequest"),
                "404": _err("NotFound"),
                "409": _err("Conflict"),
                "413": _err("TooLarge"),
                "422": _err("Unprocessable"),
            },
        },
    },
    f"{_P}/commands/{{id}}": {
        "get": {
            "operationId": "getCommand",
            "summary": "One command record",
            "parameters": [_param("id", "path", "command id", {"type": "string"})],
            "responses": {
                "200": _ok("the record", _ref("CommandRecord")),
                "404": _err("NotFound"),
            },
        }
    },
    f"{_P}/ws": {
        "get": {
            "operationId": "changes",
            "summary": "WebSocket of live changes",
            "description": "Upgrade to a WebSocket. The server sends a WsSnapshot, then one "
            "WsChanges per twin change set. The queue per client is bounded: a client that reads "
            "too slowly loses the oldest change sets, gets a WsDropped message and sees a gap in "
            "seq (re-read /points then). With a prefix, change sets without a matching point are "
            "not sent.",
            "parameters": [
                _param(
                    "prefix",
                    "query",
                    "only points whose reference starts with this",
                    {"type": "string"},
                ),
                _param(
                    "access_token",
                    "query",
                    "the bearer token, for clients that cannot send an Authorization header on a "
                    "WebSocket (browsers); this route only",
                    {"type": "string"},
                ),
            ],
            "responses": {
                "101": {
                    "description": "switching to the WebSocket protocol; messages are WsMessage",
                    "content": _json_content(_ref("WsMessage")),
                },
                "400": _err("BadRequest"),
            },
        }
    },
    f"{_P}/auth/login": {
        "post": {
            "operationId": "login",
            "summary": "Exchange name and password for a bearer token",
            "description": "Every attempt, failed or not, is audited. The token expires "
            "(expires_at) and is revoked by POST /auth/logout.",
            "requestBody": {"required": True, "content": _json_content(_ref("LoginRequest"))},
            "responses": {
                "200": _ok("logged in", _ref("Token")),
                "400": _err("BadRequest"),
                "401": _ok(
                    "wrong name or password, or a disabled account (code login_failed)",
                    _ref("Error"),
                ),
                "413": _err("TooLarge"),
            },
        }
    },
    f"{_P}/auth/logout": {
        "post": {
            "operationId": "logout",
            "summary": "Revoke the token this request carries",
            "responses": {
                "200": _ok("logged out", _ref("Logout")),
                "503": _ok("revocations could not be saved", _ref("Error")),
            },
        }
    },
    f"{_P}/auth/me": {
        "get": {
            "operationId": "me",
            "summary": "Who this request is, its roles and its token's expiry",
            "responses": {"200": _ok("the user", _ref("Me"))},
        }
    },
    f"{_P}/users": {
        "get": {
            "operationId": "listUsers",
            "summary": "Users and their roles",
            "responses": {"200": _ok("users", _ref("UserList"))},
        },
        "post": {
            "operationId": "addUser",
            "summary": "Add a user (audited)",
            "requestBody": {"required": True, "content": _json_content(_ref("NewUser"))},
            "responses": {
                "201": _ok("the new user", _ref("User")),
                "400": _err("BadRequest"),
                "409": _ok("a user of that name exists (code user_exists)", _ref("Error")),
                "413": _err("TooLarge"),
                "503": _ok("the users file could not be saved; nothing changed", _ref("Error")),
            },
        },
    },
    f"{_P}/users/{{name}}/roles": {
        "put": {
            "operationId": "setUserRoles",
            "summary": "Replace a user's roles (audited with before and after)",
            "parameters": [_param("name", "path", "user name", {"type": "string"})],
            "requestBody": {"required": True, "content": _json_content(_ref("RolesRequest"))},
            "responses": {
                "200": _ok("the user with its new roles", _ref("User")),
                "400": _err("BadRequest"),
                "404": _err("NotFound"),
                "409": _ok(
                    "it would leave no enabled security_admin (code last_security_admin)",
                    _ref("Error"),
                ),
                "413": _err("TooLarge"),
                "503": _ok("the users file could not be saved; nothing changed", _ref("Error")),
            },
        }
    },
    f"{_P}/users/{{name}}": {
        "delete": {
            "operationId": "removeUser",
            "summary": "Remove a user and revoke its tokens (audited)",
            "parameters": [_param("name", "path", "user name", {"type": "string"})],
            "responses": {
                "200": _ok("removed", _ref("Removed")),
                "404": _err("NotFound"),
                "409": _ok(
                    "it would leave no enabled security_admin (code last_security_admin)",
                    _ref("Error"),
                ),
                "503": _ok("the users file could not be saved; nothing changed", _ref("Error")),
            },
        }
    },
    f"{_P}/audit": {
        "get": {
            "operationId": "listAudit",
            "summary": "Audit records, oldest first, one page after a sequence number",
            "parameters": [
                _param(
                    "after",
                    "query",
                    "only records with a larger seq (default 0: from the start)",
                    {"type": "integer", "minimum": 0},
                ),
                _param(
                    "limit",
                    "query",
                    "at most this many (default 100)",
                    {"type": "integer", "minimum": 1, "maximum": 1000},
                ),
                _param("kind", "query", "only records of this kind", _ref("AuditKind")),
            ],
            "responses": {
                "200": _ok("a page of records", _ref("AuditPage")),
                "400": _err("BadRequest"),
                "503": _ok("no audit log, or it cannot be read", _ref("Error")),
            },
        }
    },
    f"{_P}/audit/verify": {
        "get": {
            "operationId": "verifyAudit",
            "summary": "Verify the hash chain and the SM2-signed checkpoints of the audit log",
            "responses": {
                "200": _ok(
                    "the verdict (ok false names the first broken record)",
                    _ref("AuditVerification"),
                ),
                "503": _ok("no audit log, or it cannot be read", _ref("Error")),
            },
        }
    },
    f"{_P}/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": {"200": _ok("OpenAPI 3.1 document", {"type": "object"})},
        }
    },
}


def _secure(paths: dict[str, Any]) -> dict[str, Any]:
    """Write the role matrix into the operations: public ones need no token; the others name
    their roles (x-roles) and document 401 and 403."""
    for path, ops in paths.items():
        for method, op in ops.items():
            rule = rest_rule(method, path)
            if rule is None:
                continue  # the tests fail on it: every route needs a matrix entry
            if rule.public:
                op["security"] = []
                continue
            op["x-roles"] = "any" if rule.any_user else sorted(r.value for r in rule.roles)
            who = "any logged-in user" if rule.any_user else rule.describe()
            extra = f"Allowed: {who}."
            op["description"] = f"{op['description']} {extra}" if "description" in op else extra
            op["responses"]["401"] = _err("Unauthorized")
            op["responses"]["403"] = _err("Forbidden")
    return paths


_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "vpp-gateway north API",
        "version": API_VERSION,
        "description": "Live points, history, VPP aggregates and commands of the virtual power "
        "plant twin. Times in answers are ISO 8601 UTC, except command and audit records, which "
        'carry UTC epoch seconds. Every error is {"error": {"code", "message"}}. Every operation '
        "but health, openapi.json and auth/login needs a bearer token from POST /auth/login and "
        "one of the roles in its x-roles (401 without a valid token, 403 with the wrong role).",
        "license": {"name": "GPL-3.0-or-later", "identifier": "GPL-3.0-or-later"},
    },
    "paths": _secure(_PATHS),
    "security": [{"bearer": []}],
    "components": {
        "schemas": _SCHEMAS,
        "responses": _RESPONSES,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "vpp1 (HMAC-SM3 signed, from POST /api/v1/auth/login)",
            }
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the OpenAPI 3.1 document."""
    return copy.deepcopy(_DOCUMENT)
