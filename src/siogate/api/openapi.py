"""The OpenAPI 3.1 description served at ``GET /v1/openapi.json``."""

from __future__ import annotations

from typing import Any

from .._version import __version__
from .paging import DEFAULT_LIMIT, MAX_LIMIT, MAX_PRESENCE_USERS
from .schemas import MAX_ACK_TIMEOUT_MS, MAX_BATCH, MAX_NAME, MAX_ROOMS, MAX_SOCKETS

_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME}
_NAMESPACE = {**_NAME, "pattern": "^/", "default": "/"}
_ROOMS = {"type": "array", "items": _NAME, "maxItems": MAX_ROOMS}
_SOCKETS = {"type": "array", "items": _NAME, "maxItems": MAX_SOCKETS}
_OK = {
    "type": "object",
    "properties": {"ok": {"const": True}},
    "required": ["ok"],
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": {"description": "Invalid request", **_json(_ref("Error"))},
    "401": {"description": "Missing or wrong API key", **_json(_ref("Error"))},
    "408": {
        "description": "Head or body slower than --head-timeout / --body-timeout",
        **_json(_ref("Error")),
    },
    "413": {"description": "Body larger than --max-payload", **_json(_ref("Error"))},
    "431": {"description": "Request head larger than --max-head-size", **_json(_ref("Error"))},
    "503": {
        "description": "Cluster mode: Redis did not confirm the command (not applied here); "
        "or too many connections (--max-connections, --max-connections-per-ip); or "
        "too_many_pending_acks (--max-pending-acks)",
        **_json(_ref("Error")),
    },
}

# Listings are cluster-wide; these say whether every live node answered in time.
_LISTING = {
    "partial": {"type": "boolean"},
    "nodes": {
        "type": "object",
        "properties": {
            "answered": {"type": "integer"},
            "missing": {"type": "array", "items": {"type": "string"}},
        },
    },
}


# Idempotency (see api/idempotent.py)
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Apply this request at most once per key: a repeat within "
    "--idempotency-ttl gets the first 2xx answer again, with Idempotent-Replayed: true.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[ -~]+$"},
}
_IDEMPOTENCY_ERRORS = {
    "409": {
        "description": "idempotency_key_in_progress: a request with this key is still "
        "being applied",
        **_json(_ref("Error")),
    },
    "422": {
        "description": "idempotency_key_reused: this key was used for a different request",
        **_json(_ref("Error")),
    },
}
_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "true: the answer of an earlier request with the same key, "
        "which was not applied again",
        "schema": {"const": "true"},
    }
}


def _post(summary: str, body: str, ok: dict[str, Any]) -> dict[str, Any]:
    applied = {"description": "Applied (or replayed)", "headers": _REPLAYED, **_json(ok)}
    return {
        "post": {
            "summary": summary,
            "security": [{"apiKey": []}],
            "parameters": [_IDEMPOTENCY_KEY],
            "requestBody": {"required": True, **_json(_ref(body))},
            "responses": {"200": applied, **_ERRORS, **_IDEMPOTENCY_ERRORS},
        }
    }


_NAMESPACE_QUERY = {"name": "namespace", "in": "query", "schema": _NAMESPACE}
_ROOM_PATH = {"name": "room", "in": "path", "required": True, "schema": _NAME}

# Paged listings (see siogate.api.paging): keyset pages, an opaque cursor.
_PAGING_QUERY = [
    {
        "name": "limit",
        "in": "query",
        "description": f"Entries per page (default {DEFAULT_LIMIT} with a cursor). Without "
        f"limit and cursor the whole listing is answered, or 400 too_many_results when it "
        f"holds more than {MAX_LIMIT} entries.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    },
    {
        "name": "cursor",
        "in": "query",
        "description": "next_cursor of the previous page (opaque; 400 invalid_cursor if it "
        "was not made for this listing).",
        "schema": {"type": "string"},
    },
]
_NEXT = {
    "next_cursor": {
        "type": ["string", "null"],
        "description": "Pass as ?cursor= for the next page; null on the last page.",
    }
}


def _listing(summary: str, parameters: list[Any], description: str, properties: Any) -> Any:
    schema = {"type": "object", "properties": {**properties, **_LISTING}}
    return {
        "get": {
            "summary": summary,
            "security": [{"apiKey": []}],
            "parameters": parameters,
            "responses": {"200": {"description": description, **_json(schema)}, **_ERRORS},
        }
    }


def _ack_result(max_recipients: int) -> dict[str, Any]:
    """The answer to an emit with ``ack``."""
    return {
        "type": "object",
        "required": ["recipients", "acks", "timeouts"],
        "properties": {
            "recipients": {"type": "integer", "maximum": max_recipients},
            "acks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "socket": {"type": "string"},
                        "args": {"type": "array", "description": "What the client answered."},
                    },
                },
            },
            "timeouts": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Sockets that did not answer in time, or left first.",
            },
            **_LISTING,
        },
    }


def openapi_document(*, max_ack_recipients: int = 1_000) -> dict[str, Any]:
    emit = {
        "type": "object",
        "additionalProperties": False,
        "required": ["event"],
        "properties": {
            "event": {**_NAME, "description": "Not a reserved Socket.IO event name."},
            "data": {"description": "A single argument (same as args: [data])."},
            "args": {"type": "array", "description": "Event arguments."},
            "namespace": _NAMESPACE,
            "rooms": {
                **_ROOMS,
                "minItems": 1,
                "description": "Target rooms; omitted: whole namespace.",
            },
            "except": {**_ROOMS, "description": "Rooms (or socket ids) to leave out."},
            "ack": {
                "type": "object",
                "additionalProperties": False,
                "required": ["timeout_ms"],
                "properties": {
                    "timeout_ms": {"type": "integer", "minimum": 1, "maximum": MAX_ACK_TIMEOUT_MS}
                },
                "description": "Wait for every recipient's acknowledgement (at most "
                f"{max_ack_recipients} recipients, --max-ack-recipients; over it: 400 "
                "too_many_recipients, nothing sent). The answer is then an AckResult. "
                "Not allowed in /v1/batch.",
            },
        },
    }
    membership = {
        "type": "object",
        "additionalProperties": False,
        "required": ["room"],
        "properties": {
            "namespace": _NAMESPACE,
            "room": {
                **_NAME,
                "description": "Not shaped like a socket id (20 of A-Z a-z 0-9 _ -): "
                "such a name addresses that socket and is never a room.",
            },
            "sockets": {**_SOCKETS, "description": "Socket ids (give this or rooms)."},
            "rooms": {**_ROOMS, "description": "Select sockets in these rooms."},
        },
    }
    disconnect = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "namespace": _NAMESPACE,
            "sockets": _SOCKETS,
            "rooms": _ROOMS,
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "siogate HTTP API", "version": __version__},
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer"},
                # /v1/stats and /dashboard only: the API key as the password (any user
                # name), or --admin-username and the password of --admin-password-hash.
                "basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                "Emit": emit,
                "Batch": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["emits"],
                    "properties": {
                        "emits": {
                            "type": "array",
                            "items": _ref("Emit"),
                            "minItems": 1,
                            "maxItems": MAX_BATCH,
                        }
                    },
                },
                "AckResult": _ack_result(max_ack_recipients),
                "Membership": membership,
                "Disconnect": disconnect,
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
        "paths": {
            "/v1/emit": _post(
                "Emit an event to sockets",
                "Emit",
                {
                    "oneOf": [
                        {
                            **_OK,
                            "properties": {
                                "ok": {"const": True},
                                "offset": {
                                    "type": "string",
                                    "description": "With --history-size or "
                                    "--recovery-window: the offset this emit got (pass "
                                    "it as since to the room history).",
                                },
                            },
                        },
                        _ref("AckResult"),
                    ]
                },
            ),
            "/v1/batch": _post(
                "Emit several events, in order",
                "Batch",
                {**_OK, "properties": {"ok": {"const": True}, "count": {"type": "integer"}}},
            ),
            "/v1/join": _post("Add sockets to a room", "Membership", _OK),
            "/v1/leave": _post("Remove sockets from a room", "Membership", _OK),
            "/v1/disconnect": _post("Disconnect sockets from a namespace", "Disconnect", _OK),
            "/v1/rooms": {
                "get": {
                    "summary": "Rooms with their socket counts",
                    "security": [{"apiKey": []}],
                    "parameters": [_NAMESPACE_QUERY, *_PAGING_QUERY],
                    "responses": {
                        "200": {
                            "description": "Rooms",
                            **_json(
                                {
                                    "type": "object",
                                    "properties": {
                                        "rooms": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "properties": {
                                                    "name": {"type": "string"},
                                                    "sockets": {"type": "integer"},
                                                },
                                            },
                                        },
                                        **_NEXT,
                                        **_LISTING,
                                    },
                                }
                            ),
                        },
                        **_ERRORS,
                    },
                }
            },
            "/v1/rooms/{room}/sockets": {
                "get": {
                    "summary": "Sockets in a room (a socket id is a room too)",
                    "security": [{"apiKey": []}],
                    "parameters": [_ROOM_PATH, _NAMESPACE_QUERY, *_PAGING_QUERY],
                    "responses": {
                        "200": {
                            "description": "Sockets",
                            **_json(
                                {
                                    "type": "object",
                                    "properties": {
                                        "sockets": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "properties": {
                                                    "id": {"type": "string"},
                                                    "user": {"type": ["string", "null"]},
                                                    "node": {"type": "string"},
                                                    "connected": {
                                                        "type": "boolean",
                                                        "description": "Only present, "
                                                        "false, for a socket in its "
                                                        "recovery window.",
                                                    },
                                                },
                                            },
                                        },
                                        **_NEXT,
                                        **_LISTING,
                                    },
                                }
                            ),
                        },
                        **_ERRORS,
                    },
                }
            },
            "/v1/rooms/{room}/presence": _listing(
                "Distinct users in a room with their socket counts",
                [_ROOM_PATH, _NAMESPACE_QUERY, *_PAGING_QUERY],
                "Users by id; anonymous sockets counted apart",
                {
                    "users": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "user": {"type": "string"},
                                "sockets": {"type": "integer"},
                            },
                        },
                    },
                    "anonymous": {"type": "integer"},
                    **_NEXT,
                },
            ),
            "/v1/rooms/{room}/history": {
                "get": {
                    "summary": "A room's recent events, oldest first (--history-size)",
                    "security": [{"apiKey": []}],
                    "parameters": [
                        _ROOM_PATH,
                        _NAMESPACE_QUERY,
                        {
                            "name": "limit",
                            "in": "query",
                            "description": f"Messages (default {DEFAULT_LIMIT}): the newest, "
                            "or the first after since.",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        },
                        {
                            "name": "since",
                            "in": "query",
                            "description": "An offset: only what came after it (400 "
                            "unknown_offset if this gateway run did not hand it out).",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "Messages, and whether they are complete",
                            **_json(
                                {
                                    "type": "object",
                                    "properties": {
                                        "messages": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "properties": {
                                                    "offset": {"type": "string"},
                                                    "event": {"type": "string"},
                                                    "data": {"type": "array"},
                                                    "ts": {
                                                        "type": "integer",
                                                        "description": "ms since the epoch",
                                                    },
                                                },
                                            },
                                        },
                                        "complete": {
                                            "type": "boolean",
                                            "description": "False when messages after "
                                            "since (or older ones) are no longer kept, or "
                                            "limit cut the answer.",
                                        },
                                    },
                                }
                            ),
                        },
                        **_ERRORS,
                        "400": {
                            "description": "Invalid request; history_off: the gateway "
                            "runs without --history-size",
                            **_json(_ref("Error")),
                        },
                    },
                }
            },
            "/v1/presence": _listing(
                "Whether users are connected, and with how many sockets",
                [
                    {
                        "name": "user",
                        "in": "query",
                        "required": True,
                        "description": "A token sub; repeat for several users.",
                        "style": "form",
                        "explode": True,
                        "schema": {
                            "type": "array",
                            "items": _NAME,
                            "minItems": 1,
                            "maxItems": MAX_PRESENCE_USERS,
                        },
                    },
                    _NAMESPACE_QUERY,
                ],
                "Each asked user",
                {
                    "users": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "online": {"type": "boolean"},
                                "sockets": {"type": "integer"},
                            },
                        },
                    }
                },
            ),
            "/healthz": {
                "get": {
                    "summary": "Liveness",
                    "responses": {"200": {"description": "Up", **_json({"type": "object"})}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [{"apiKey": []}],
                    "responses": {"200": {"description": "Prometheus text format"}},
                }
            },
            "/v1/stats": _STATS,
            "/dashboard": {
                "get": {
                    "summary": "The built-in dashboard (an HTML page that polls /v1/stats)",
                    "security": [{"apiKey": []}, {"basic": []}],
                    "responses": {
                        "200": {"description": "The page", "content": {"text/html": {}}},
                        "401": _VIEW_401,
                    },
                }
            },
        },
    }


# /v1/stats: every node's metrics now and its samples (see siogate.stats).
_SAMPLE = {
    "type": "object",
    "description": "One sample: gauges at time t, rates per second over the interval "
    "before it; webhook_ms (mean) and webhook_p95_ms (upper bound of the latency bucket "
    "holding the 95th percentile) are null when no webhook call ended in it.",
    "properties": {
        "t": {"type": "number", "description": "The node's Unix time"},
        "sockets": {"type": "number"},
        "rooms": {"type": "number"},
        **{
            name: {"type": ["number", "null"]}
            for name in (
                "connects_per_s",
                "disconnects_per_s",
                "emits_per_s",
                "packets_out_per_s",
                "bytes_out_per_s",
                "client_events_per_s",
                "api_requests_per_s",
                "webhook_calls_per_s",
                "webhook_errors_per_s",
                "webhook_ms",
                "webhook_p95_ms",
            )
        },
    },
}
_VIEW_401 = {
    "description": "Missing or wrong credentials; WWW-Authenticate: Basic asks a browser for them",
    **_json(_ref("Error")),
}
_STATS = {
    "get": {
        "summary": "Every node's metrics (as /metrics) and samples of the last minutes",
        "security": [{"apiKey": []}, {"basic": []}],
        "parameters": [
            {
                "name": "last",
                "in": "query",
                "required": False,
                "description": "Only samples of the last this many seconds (each node by "
                "its own clock); all kept samples (10 minutes) when left out.",
                "schema": {"type": "number", "minimum": 0, "maximum": 86400},
            }
        ],
        "responses": {
            "200": {
                "description": "One entry per node that answered, this node first",
                **_json(
                    {
                        "type": "object",
                        "properties": {
                            "time": {"type": "number"},
                            "stats": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "node": {"type": "string"},
                                        "time": {"type": "number"},
                                        "interval": {"type": "number"},
                                        "metrics": {
                                            "type": "object",
                                            "description": "Name -> value as in /metrics; "
                                            "histograms as {buckets: [[le, cumulative]], "
                                            "sum, count}; other labelled metrics as "
                                            "[[{label: value}, value]]",
                                        },
                                        "samples": {"type": "array", "items": _SAMPLE},
                                    },
                                },
                            },
                            **_LISTING,
                        },
                    }
                ),
            },
            "400": _ERRORS["400"],
            "401": _VIEW_401,
        },
    }
}
