"""Client-visible presence: ``presence:join`` / ``presence:leave`` to a room's members.

With ``--presence-events`` on for a namespace, each time a socket of a known user (JWT
``sub``) enters a named room (from its token's ``rooms`` at connect, by ``POST /v1/join``
or by a handler) or leaves one (``POST /v1/leave``, a handler, its disconnect), the other
members of that room get ``presence:join`` / ``presence:leave`` with
``{"room": room, "user": user, "socket": sid}``.

Events are per socket, not per user: a user with two tabs is two joins, and each event
names its socket so that clients can count or dedupe. Anonymous sockets, the socket-id
"rooms" and the ``user:<sub>`` rooms are left out.

Only the node that holds the socket sees the change (join and leave commands reach every
node, but each acts on its own sockets), so that node builds the emit and sends it
through the broker like any other: every node delivers it to its own members of the room.
Alone (no cluster) and with no other member of the room here, nothing is sent; in a
cluster the node cannot know who is elsewhere, so every change costs one broker message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from .broker import EmitCommand
from .hub import Hub, Socket, is_socket_id
from .types import Room

Kind = Literal["presence:join", "presence:leave"]

ALL = "*"
"""In the namespace list: every namespace."""


class PresenceEvents:
    """Which namespaces have presence events, and the emits one change makes."""

    def __init__(self, namespaces: Iterable[str], *, cluster: bool) -> None:
        names = frozenset(namespaces)
        self._all = ALL in names
        self._namespaces = names - {ALL}
        self._cluster = cluster

    @property
    def enabled(self) -> bool:
        return self._all or bool(self._namespaces)

    def commands(
        self, kind: Kind, socket: Socket, rooms: Iterable[Room], hub: Hub
    ) -> list[EmitCommand]:
        """The emits telling the other members of ``rooms`` that ``socket`` came or went.

        Called after the hub has the change (a joined socket is in the room, a leaving
        one is out of it); the socket itself is excluded either way.
        """
        user = socket.user
        if user is None or not (self._all or socket.namespace in self._namespaces):
            return []
        own = Room(socket.id)
        out = []
        for room in rooms:
            if is_socket_id(room) or room.startswith("user:"):
                continue
            if not self._cluster and not _others_in(hub, socket, room):
                continue
            data = {"room": room, "user": user, "socket": socket.id}
            out.append(EmitCommand(socket.namespace, kind, [data], (room,), (own,)))
        return out


def _others_in(hub: Hub, socket: Socket, room: Room) -> bool:
    return any(s is not socket for s in hub.select(socket.namespace, (room,)))
