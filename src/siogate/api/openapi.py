"""The OpenAPI 3.1 description served at ``GET /v1/openapi.json``."""

from __future__ import annotations

from typing import Any

from .._version import __version__
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


def _post(summary: str, body: str, ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [{"apiKey": []}],
            "requestBody": {"required": True, **_json(_ref(body))},
            "responses": {"200": {"description": "Applied", **_json(ok)}, **_ERRORS},
        }
    }


_NAMESPACE_QUERY = {"name": "namespace", "in": "query", "schema": _NAMESPACE}


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
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
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
                {"oneOf": [_OK, _ref("AckResult")]},
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
                    "parameters": [_NAMESPACE_QUERY],
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
                    "parameters": [
                        {"name": "room", "in": "path", "required": True, "schema": _NAME},
                        _NAMESPACE_QUERY,
                    ],
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
                                                },
                                            },
                                        },
                                        **_LISTING,
                                    },
                                }
                            ),
                        },
                        **_ERRORS,
                    },
                }
            },
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
        },
    }
