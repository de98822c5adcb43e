"""The JSON messages nodes exchange through Redis (format version 1).

Every message is one JSON object whose first two members are ``"v"`` (the format
version) and ``"node"`` (the sender's id), written in that order so that a node can skip
its own messages by comparing a prefix, without parsing. See ``docs/cluster.md``.

Whatever arrives from Redis is treated as untrusted input: it is parsed with ``json`` only
(never pickle), checked member by member, and a message that does not fit is refused
with :class:`WireError` rather than half applied.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..errors import SiogateError
from ..protocol.socketio import dumps
from ..types import Namespace, Room, Sid, UserId
from .base import (
    AckEmitQuery,
    AdminQuery,
    Command,
    CountQuery,
    EmitCommand,
    PresenceQuery,
    Query,
    RoomPresenceQuery,
    RoomsQuery,
    SocketsCommand,
    SocketsQuery,
    StatsQuery,
)

VERSION = 1
# The longest wait an ack emit may ask of a node (as the HTTP API allows).
MAX_ACK_TIMEOUT_MS = 60_000

# Bounds on what a query may ask of a node (the API asks far less: a page of at most
# 1,000 entries plus one, at most 100 users).
MAX_QUERY_LIMIT = 100_000
MAX_QUERY_USERS = 10_000

# Compact JSON that falls back to \u escapes for strings UTF-8 cannot carry (a lone
# surrogate sent by JavaScript), as on the Socket.IO wire.
_dumps = dumps


class WireError(SiogateError):
    """A message from the broker does not follow the format."""


def prefix(node: str) -> bytes:
    """The bytes every message from ``node`` starts with."""
    return f'{{"v":{VERSION},"node":{_dumps(node)},'.encode()


def _message(node: str, body: dict[str, Any]) -> bytes:
    return prefix(node) + _dumps(body).encode()[1:]


# Commands


def _command_json(command: Command) -> dict[str, Any]:
    if isinstance(command, EmitCommand):
        return {
            "type": "emit",
            "ns": command.namespace,
            "event": command.event,
            "args": command.args,
            "rooms": list(command.rooms),
            "except": list(command.exclude),
        }
    out: dict[str, Any] = {
        "type": command.action,
        "ns": command.namespace,
        "sockets": list(command.sockets),
        "rooms": list(command.rooms),
    }
    if command.room is not None:
        out["room"] = command.room
    # Written only when set, so that messages without them read as before.
    if command.exclude:
        out["except"] = list(command.exclude)
    if command.close:
        out["close"] = True
    return out


def string_forms(text: str) -> tuple[bytes, ...]:
    """How ``text`` can appear as a JSON string in a message written here: as the encoder
    writes it, or escaped to ASCII (the whole message falls back to that when another of
    its strings holds a lone surrogate). A message holding none of these does not hold
    ``text``, so a reader looking for it can skip decoding the message."""
    return tuple({_dumps(text).encode(), json.dumps(text).encode()})


def encode_commands(node: str, commands: Sequence[Command], ack: str | None = None) -> bytes:
    """A command batch; with ``ack``, each receiver answers ``ack`` once it applied the
    batch and subscribed to the shards of the rooms it joined (an addition to format 1
    that older nodes ignore)."""
    body: dict[str, Any] = {"commands": [_command_json(c) for c in commands]}
    if ack is not None:
        body["ack"] = ack
    return _message(node, body)


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise WireError(f"{key!r} must be a string")
    return value


def _strs(obj: dict[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WireError(f"{key!r} must be a list of strings")
    return tuple(value)


def _command(obj: Any) -> Command:
    if not isinstance(obj, dict):
        raise WireError("a command must be an object")
    kind = obj.get("type")
    ns = Namespace(_str(obj, "ns"))
    rooms = tuple(Room(r) for r in _strs(obj, "rooms"))
    if kind == "emit":
        args = obj.get("args")
        if not isinstance(args, list):
            raise WireError("'args' must be a list")
        exclude = tuple(Room(r) for r in _strs(obj, "except"))
        return EmitCommand(ns, _str(obj, "event"), args, rooms, exclude)
    if kind in ("join", "leave", "disconnect"):
        sockets = tuple(Sid(s) for s in _strs(obj, "sockets"))
        room = None if kind == "disconnect" else Room(_str(obj, "room"))
        exclude = tuple(Room(r) for r in _strs(obj, "except"))
        close = obj.get("close", False)
        if not isinstance(close, bool):
            raise WireError("'close' must be a boolean")
        return SocketsCommand(kind, ns, sockets, rooms, room, exclude, close)
    raise WireError(f"unknown command type {kind!r}")


def decode(data: bytes) -> dict[str, Any]:
    """Parse a message and check its envelope (version and sender)."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise WireError("a message must be a JSON object")
    if obj.get("v") != VERSION:
        raise WireError(f"unsupported format version {obj.get('v')!r}")
    _str(obj, "node")
    return obj


def decode_ack(obj: dict[str, Any]) -> str | None:
    """The id a command batch asks its receivers to answer, if any."""
    ack = obj.get("ack")
    if ack is not None and not isinstance(ack, str):
        raise WireError("'ack' must be a string")
    return ack


def decode_commands(obj: dict[str, Any]) -> list[Command]:
    commands = obj.get("commands")
    if not isinstance(commands, list):
        raise WireError("'commands' must be a list")
    return [_command(c) for c in commands]


# Queries and answers


def encode_query(node: str, request_id: str, query: Query) -> bytes:
    if isinstance(query, CountQuery | AckEmitQuery):
        # An emit's selector (count) or the whole emit with its ack terms (ack_emit).
        ack_body: dict[str, Any] = {"id": request_id, **_command_json(query.emit)}
        if isinstance(query, CountQuery):
            ack_body["query"] = "count"
            ack_body["args"] = []  # only the selector counts
        else:
            ack_body["query"] = "ack_emit"
            ack_body["timeout_ms"] = query.timeout_ms
            ack_body["max"] = query.max_recipients
        return _message(node, ack_body)
    if isinstance(query, AdminQuery):
        return _message(node, {"id": request_id, "query": "admin", "limit": query.limit})
    if isinstance(query, StatsQuery):
        return _message(node, {"id": request_id, "query": "stats", "last": query.last})
    # "after" and "limit" are optional members added to format 1: a node that predates
    # them ignores them and answers in full, which the asking node pages itself.
    body: dict[str, Any] = {"id": request_id, "ns": query.namespace}
    if isinstance(query, RoomsQuery):
        body["query"] = "rooms"
    elif isinstance(query, SocketsQuery):
        body["query"] = "sockets"
        body["room"] = query.room
    elif isinstance(query, RoomPresenceQuery):
        body["query"] = "room_presence"
        body["room"] = query.room
    else:
        body["query"] = "presence"
        body["users"] = list(query.users)
    if not isinstance(query, PresenceQuery):
        if query.after is not None:
            body["after"] = query.after
        if query.limit is not None:
            body["limit"] = query.limit
    return _message(node, body)


def _paging(obj: dict[str, Any]) -> tuple[str | None, int | None]:
    after = obj.get("after")
    if after is not None and not isinstance(after, str):
        raise WireError("'after' must be a string")
    limit = obj.get("limit")
    if limit is not None and (
        not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_QUERY_LIMIT
    ):
        raise WireError(f"'limit' must be an integer from 1 to {MAX_QUERY_LIMIT}")
    return after, limit


def _int(obj: dict[str, Any], key: str, low: int, high: int) -> int:
    value = obj.get(key)
    if type(value) is not int or not low <= value <= high:
        raise WireError(f"{key!r} must be an integer from {low} to {high}")
    return value


def decode_query(obj: dict[str, Any]) -> tuple[str, Query]:
    request_id = _str(obj, "id")
    kind = obj.get("query")
    if kind == "admin":
        return request_id, AdminQuery(_int(obj, "limit", 1, MAX_QUERY_LIMIT))
    if kind == "stats":
        last = obj.get("last")
        if last is not None and (type(last) not in (int, float) or not 0 <= last <= 86_400):
            raise WireError("'last' must be null or a number of seconds from 0 to 86400")
        return request_id, StatsQuery(None if last is None else float(last))
    ns = Namespace(_str(obj, "ns"))
    if kind == "presence":
        users = _strs(obj, "users")
        if len(users) > MAX_QUERY_USERS:
            raise WireError(f"'users' may hold at most {MAX_QUERY_USERS} entries")
        return request_id, PresenceQuery(ns, tuple(UserId(u) for u in users))
    after, limit = _paging(obj)
    if kind == "rooms":
        return request_id, RoomsQuery(ns, None if after is None else Room(after), limit)
    if kind == "sockets":
        room = Room(_str(obj, "room"))
        return request_id, SocketsQuery(ns, room, None if after is None else Sid(after), limit)
    if kind == "room_presence":
        room = Room(_str(obj, "room"))
        user = None if after is None else UserId(after)
        return request_id, RoomPresenceQuery(ns, room, user, limit)
    if kind in ("count", "ack_emit"):
        emit = _command(obj)
        if not isinstance(emit, EmitCommand):
            raise WireError("an ack emit must carry an emit")
        if kind == "count":
            return request_id, CountQuery(emit)
        timeout_ms = _int(obj, "timeout_ms", 1, MAX_ACK_TIMEOUT_MS)
        return request_id, AckEmitQuery(emit, timeout_ms, _int(obj, "max", 1, 2**31))
    raise WireError(f"unknown query {kind!r}")


def encode_answer(node: str, request_id: str, answer: Any) -> bytes:
    return _message(node, {"id": request_id, "answer": answer})


def decode_answer(obj: dict[str, Any]) -> tuple[str, Any]:
    if "answer" not in obj:
        raise WireError("an answer needs 'answer'")
    return _str(obj, "id"), obj["answer"]


# Node registry entries


def encode_node(url: str | None) -> bytes:
    return _dumps({"v": VERSION, "url": url}).encode()


def decode_node(data: bytes | str) -> str | None:
    try:
        obj = json.loads(data)
    except ValueError:
        raise WireError("registry entry is not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise WireError("registry entry has an unsupported format")
    url = obj.get("url")
    return url if isinstance(url, str) else None
