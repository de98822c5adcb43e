"""Validation of HTTP API request bodies into broker commands.

Bodies are checked strictly: unknown fields are refused, so that a typo such as
``"room"`` for ``"rooms"`` fails loudly instead of emitting to the whole namespace.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal

from ..broker import EmitCommand, SocketsCommand
from ..errors import ApiError, ProtocolError
from ..hub import is_socket_id
from ..protocol import socketio
from ..protocol.socketio import MAX_DEPTH, RESERVED_EVENTS
from ..types import Namespace, Room, Sid

MAX_NAME = 256
MAX_ROOMS = 1_000
MAX_SOCKETS = 10_000
MAX_BATCH = 1_000
# An emit with ack waits at most this long for its replies.
MAX_ACK_TIMEOUT_MS = 60_000
# Containers nested in a body: at most MAX_DEPTH (as in packets from clients). Deeper
# values could be parsed but not encoded again for the sockets (or for Redis), so they
# are refused up front, whoever would receive them.


def bad(message: str, code: str = "invalid_field") -> ApiError:
    return ApiError(400, code, message)


def parse_body(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object."""
    if not body:
        raise bad("request body must be a JSON object", "invalid_json")
    try:
        # The Socket.IO parser's rules: no NaN, Infinity or out-of-range numbers (1e999),
        # which no encoder here could write back.
        value = socketio.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise bad(f"request body is not valid UTF-8: {exc.reason}", "invalid_json") from None
    except ProtocolError as exc:
        raise bad(f"request body is not valid: {exc}", "invalid_json") from None
    if not isinstance(value, dict):
        raise bad("request body must be a JSON object", "invalid_json")
    # Counting brackets (C speed) rules out deep nesting for almost every body; only
    # bodies with many containers are walked.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and socketio.deeper_than(value, MAX_DEPTH):
        raise bad(f"request body is nested more than {MAX_DEPTH} levels deep", "invalid_json")
    return value


def _only(body: dict[str, Any], allowed: Collection[str], where: str = "body") -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise bad(f"unknown field(s) in {where}: {', '.join(unknown)}")


def name(value: Any, field: str) -> str:
    """A non-empty string of at most ``MAX_NAME`` characters."""
    if not isinstance(value, str) or not value:
        raise bad(f"{field} must be a non-empty string")
    if len(value) > MAX_NAME:
        raise bad(f"{field} must be at most {MAX_NAME} characters")
    return value


def namespace(value: Any, allowed: frozenset[str] | None) -> Namespace:
    if value is None:
        value = "/"
    text = name(value, "namespace")
    if not text.startswith("/"):
        raise bad("namespace must start with '/'")
    if allowed is not None and text not in allowed:
        raise bad(f"namespace {text!r} is not served by this gateway", "unknown_namespace")
    return Namespace(text)


def _names(value: Any, field: str, limit: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise bad(f"{field} must be a list of strings")
    if len(value) > limit:
        raise bad(f"{field} may hold at most {limit} entries")
    return tuple(name(v, f"{field}[]") for v in value)


EMIT_FIELDS = ("event", "data", "args", "namespace", "rooms", "except")


def emit(body: dict[str, Any], allowed: frozenset[str] | None, where: str = "body") -> EmitCommand:
    _only(body, EMIT_FIELDS, where)
    if "event" not in body:
        raise bad(f"{where}: event is required")
    event = name(body["event"], "event")
    if event in RESERVED_EVENTS:
        raise bad(f"event name {event!r} is reserved by Socket.IO", "reserved_event")
    if "data" in body and "args" in body:
        raise bad(f"{where}: give either data or args, not both")
    if "args" in body:
        args = body["args"]
        if not isinstance(args, list):
            raise bad("args must be a list")
    elif "data" in body:
        args = [body["data"]]
    else:
        args = []
    if body.get("rooms") == []:
        # An empty list computed by a backend must not become "everyone".
        raise bad(f"{where}: rooms must not be empty; omit it to emit to the whole namespace")
    return EmitCommand(
        namespace=namespace(body.get("namespace"), allowed),
        event=event,
        args=args,
        rooms=tuple(Room(r) for r in _names(body.get("rooms"), "rooms", MAX_ROOMS)),
        exclude=tuple(Room(r) for r in _names(body.get("except"), "except", MAX_ROOMS)),
    )


def ack_timeout(body: dict[str, Any]) -> int | None:
    """Take ``"ack": {"timeout_ms": N}`` out of an emit body: N, or None without ack."""
    if "ack" not in body:
        return None
    ack = body.pop("ack")
    if not isinstance(ack, dict):
        raise bad('ack must be an object: {"timeout_ms": N}')
    _only(ack, ("timeout_ms",), "ack")
    timeout = ack.get("timeout_ms")
    if type(timeout) is not int or not 1 <= timeout <= MAX_ACK_TIMEOUT_MS:
        raise bad(f"ack.timeout_ms must be an integer from 1 to {MAX_ACK_TIMEOUT_MS}")
    return timeout


def batch(body: dict[str, Any], allowed: frozenset[str] | None) -> list[EmitCommand]:
    _only(body, ("emits",))
    emits = body.get("emits")
    if not isinstance(emits, list) or not emits:
        raise bad("emits must be a non-empty list of emit bodies")
    if len(emits) > MAX_BATCH:
        raise bad(f"emits may hold at most {MAX_BATCH} entries")
    commands = []
    for i, item in enumerate(emits):
        if not isinstance(item, dict):
            raise bad(f"emits[{i}] must be an object")
        if "ack" in item:
            raise bad(f"emits[{i}]: ack is not supported in a batch; use /v1/emit", "ack_in_batch")
        commands.append(emit(item, allowed, f"emits[{i}]"))
    return commands


def sockets_command(
    action: Literal["join", "leave", "disconnect"],
    body: dict[str, Any],
    allowed: frozenset[str] | None,
) -> SocketsCommand:
    fields = ("namespace", "sockets", "rooms") + (("room",) if action != "disconnect" else ())
    _only(body, fields)
    sockets = _names(body.get("sockets"), "sockets", MAX_SOCKETS)
    rooms = _names(body.get("rooms"), "rooms", MAX_ROOMS)
    if bool(sockets) == bool(rooms):
        raise bad("give exactly one of sockets (ids) or rooms (selector), non-empty")
    room = None
    if action != "disconnect":
        if "room" not in body:
            raise bad("room is required")
        room = Room(name(body["room"], "room"))
        if is_socket_id(room):
            # Such a name addresses one socket; a room of that name could receive the
            # direct messages of the socket that has (or will have) that id.
            raise bad(
                f"room {room!r} has the shape of a socket id (20 characters of A-Z a-z "
                "0-9 _ -): such names address one socket and cannot be joined or left"
            )
    return SocketsCommand(
        action=action,
        namespace=namespace(body.get("namespace"), allowed),
        sockets=tuple(Sid(s) for s in sockets),
        rooms=tuple(Room(r) for r in rooms),
        room=room,
    )
