"""What one node tells the admin UI about itself: stats and sockets, and the check of
other nodes' answers.

Every node answers :class:`~siogate.broker.AdminQuery` (whether or not it serves the
admin namespace itself), so an admin connected to any node sees the whole cluster.
Answers from other nodes come through Redis: :func:`parse` checks them member by member
and refuses what does not fit.
"""

from __future__ import annotations

import os
import socket as _socket
import time
from dataclasses import dataclass
from typing import Any

from .broker import AdminQuery
from .hub import Hub, Link
from .types import Namespace, Room, Sid

# When this module was loaded: close enough to the process start for an uptime.
_STARTED = time.monotonic()
_HOSTNAME = _socket.gethostname()


@dataclass(frozen=True, slots=True)
class SocketView:
    """One socket as the admin UI lists it."""

    namespace: Namespace
    id: Sid
    # The Engine.IO session the socket belongs to.
    client: str
    transport: str
    user: str | None
    rooms: tuple[Room, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One node's stats and sockets."""

    hostname: str
    pid: int
    uptime: float
    clients: int
    polling: int
    namespaces: dict[str, int]
    sockets: list[SocketView]
    # More sockets than the query's limit: only the first ``limit`` are listed.
    truncated: bool


def transport_of(link: Link) -> str:
    # The engine's Client sets ``ws`` once it runs over WebSocket; the hub's Link
    # protocol does not name transports, so this reads it without importing them.
    return "websocket" if getattr(link, "ws", None) is not None else "polling"


def local(hub: Hub, query: AdminQuery) -> dict[str, Any]:
    """This node's answer to ``query`` (JSON-safe)."""
    links: set[int] = set()
    polling = 0
    namespaces: dict[str, int] = {}
    sockets: list[list[Any]] = []
    truncated = False
    for namespace in hub.namespaces():
        members = hub.select(namespace)
        namespaces[namespace] = len(members)
        for socket in members:
            if id(socket.link) not in links:
                links.add(id(socket.link))
                if transport_of(socket.link) == "polling":
                    polling += 1
            if len(sockets) >= query.limit:
                truncated = True
                continue
            sockets.append(
                [
                    socket.namespace,
                    socket.id,
                    socket.link.session.sid,
                    transport_of(socket.link),
                    socket.user,
                    sorted(socket.rooms),
                ]
            )
    return {
        "hostname": _HOSTNAME,
        "pid": os.getpid(),
        "uptime": round(time.monotonic() - _STARTED, 3),
        "clients": len(links),
        "polling": polling,
        "namespaces": namespaces,
        "sockets": sockets,
        "truncated": truncated,
    }


class BadSnapshot(ValueError):
    """Another node's answer does not follow the format."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise BadSnapshot(what)


def _is_int(value: Any) -> bool:
    return type(value) is int and value >= 0


def _socket_view(entry: Any) -> SocketView:
    _check(isinstance(entry, list) and len(entry) == 6, "a socket must be a list of 6")
    namespace, sid, client, transport, user, rooms = entry
    _check(isinstance(namespace, str) and isinstance(sid, str), "bad socket id or namespace")
    _check(isinstance(client, str), "bad client id")
    _check(transport in ("websocket", "polling"), "bad transport")
    _check(user is None or isinstance(user, str), "bad user")
    _check(isinstance(rooms, list) and all(isinstance(r, str) for r in rooms), "bad rooms")
    return SocketView(
        Namespace(namespace), Sid(sid), client, transport, user, tuple(Room(r) for r in rooms)
    )


def parse(answer: Any) -> Snapshot:
    """Check another node's answer; :class:`BadSnapshot` when it does not fit."""
    _check(isinstance(answer, dict), "an answer must be an object")
    hostname, pid, uptime = answer.get("hostname"), answer.get("pid"), answer.get("uptime")
    _check(isinstance(hostname, str), "bad hostname")
    _check(_is_int(pid), "bad pid")
    _check(type(uptime) in (int, float) and uptime >= 0, "bad uptime")
    clients, polling = answer.get("clients"), answer.get("polling")
    _check(_is_int(clients) and _is_int(polling), "bad client counts")
    namespaces = answer.get("namespaces")
    _check(isinstance(namespaces, dict), "bad namespaces")
    _check(all(_is_int(n) for n in namespaces.values()), "bad namespace counts")
    sockets = answer.get("sockets")
    _check(isinstance(sockets, list), "bad sockets")
    truncated = answer.get("truncated")
    _check(isinstance(truncated, bool), "bad truncated")
    return Snapshot(
        hostname,
        pid,
        float(uptime),
        clients,
        polling,
        dict(namespaces),
        [_socket_view(s) for s in sockets],
        truncated,
    )
