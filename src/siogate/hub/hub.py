"""The hub owns the sockets of this node and their rooms.

Every socket is addressable by its own id wherever a room name is taken (as in Socket.IO);
that "room" is resolved on lookup instead of being stored, which saves a dict per socket.

Socket ids and named rooms are kept apart by their shape: a name shaped like a socket id
(:func:`is_socket_id`) only ever resolves to the socket of that id, and no named room of
that shape can be joined. Otherwise a client allowed to pick a room name could join a
room named like another socket's id and read that socket's direct messages; and since
every node of a cluster resolves names on its own, the rule must not depend on which
sockets a node happens to hold.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..protocol.engineio import EncodedPacket
from ..protocol.session import Session
from ..types import Namespace, Room, Sid, UserId, is_socket_id


class Outgoing:
    """Packets encoded once for a broadcast; transports cache their framing here."""

    __slots__ = ("messages", "ws_bytes")

    def __init__(self, messages: list[EncodedPacket]) -> None:
        self.messages = messages
        # Filled by the first WebSocket recipient, reused by all the others.
        self.ws_bytes: bytes | None = None


class Link(Protocol):
    """What the hub and node need from a client connection (implemented by transports)."""

    session: Session

    def flush(self) -> None:
        """Write whatever the session has queued."""

    def write_broadcast(self, outgoing: Outgoing) -> None:
        """Write packets shared with other recipients (after anything already queued)."""

    def close(self, reason: str) -> None:
        """Close the session and the transport."""


class Socket:
    """One Socket.IO socket: a client link joined to one namespace."""

    __slots__ = ("id", "namespace", "user", "link", "rooms")

    def __init__(self, sid: Sid, namespace: Namespace, user: UserId | None, link: Link) -> None:
        self.id = sid
        self.namespace = namespace
        self.user = user
        self.link = link
        self.rooms: set[Room] = set()


class RoomWatcher(Protocol):
    """Told when a named room gets its first member on this node, or loses its last
    (the Redis broker subscribes to the room's shard meanwhile)."""

    def room_opened(self, namespace: Namespace, room: Room) -> None: ...

    def room_closed(self, namespace: Namespace, room: Room) -> None: ...


class _NamespaceState:
    __slots__ = ("sockets", "rooms")

    def __init__(self) -> None:
        self.sockets: dict[Sid, Socket] = {}
        self.rooms: dict[Room, dict[Sid, Socket]] = {}


class Hub:
    """Sockets and rooms of this node, per namespace."""

    def __init__(self) -> None:
        self._namespaces: dict[Namespace, _NamespaceState] = {}
        self.watcher: RoomWatcher | None = None

    # Sockets

    def add(self, socket: Socket) -> None:
        ns = self._namespaces.get(socket.namespace)
        if ns is None:
            ns = self._namespaces[socket.namespace] = _NamespaceState()
        ns.sockets[socket.id] = socket

    def remove(self, socket: Socket) -> None:
        ns = self._namespaces.get(socket.namespace)
        if ns is None or ns.sockets.pop(socket.id, None) is None:
            return
        for room in socket.rooms:
            members = ns.rooms.get(room)
            if members is not None:
                members.pop(socket.id, None)
                if not members:
                    del ns.rooms[room]
                    if self.watcher is not None:
                        self.watcher.room_closed(socket.namespace, room)
        socket.rooms.clear()
        if not ns.sockets:
            del self._namespaces[socket.namespace]

    def get(self, namespace: Namespace, sid: Sid) -> Socket | None:
        ns = self._namespaces.get(namespace)
        return None if ns is None else ns.sockets.get(sid)

    def count(self) -> int:
        return sum(len(ns.sockets) for ns in self._namespaces.values())

    def room_count(self) -> int:
        """Rooms with at least one member, over all namespaces."""
        return sum(len(ns.rooms) for ns in self._namespaces.values())

    def namespaces(self) -> list[Namespace]:
        return list(self._namespaces)

    # Rooms

    def join(self, socket: Socket, room: Room) -> bool:
        """Put ``socket`` in ``room``; False (and nothing done) for a socket-id-shaped name.

        Joining an unknown socket, or a room it is already in, does nothing and is True.
        """
        if is_socket_id(room):
            return False
        ns = self._namespaces.get(socket.namespace)
        if ns is None or socket.id not in ns.sockets or room in socket.rooms:
            return True
        socket.rooms.add(room)
        members = ns.rooms.get(room)
        if members is None:
            members = ns.rooms[room] = {}
            if self.watcher is not None:
                self.watcher.room_opened(socket.namespace, room)
        members[socket.id] = socket
        return True

    def leave(self, socket: Socket, room: Room) -> None:
        ns = self._namespaces.get(socket.namespace)
        if ns is None or room not in socket.rooms:
            return
        socket.rooms.discard(room)
        members = ns.rooms.get(room)
        if members is not None:
            members.pop(socket.id, None)
            if not members:
                del ns.rooms[room]
                if self.watcher is not None:
                    self.watcher.room_closed(socket.namespace, room)

    def rooms(self, namespace: Namespace) -> dict[Room, int]:
        """Room name -> local member count (socket-id rooms are not listed)."""
        ns = self._namespaces.get(namespace)
        if ns is None:
            return {}
        return {room: len(members) for room, members in ns.rooms.items()}

    def _members(self, ns: _NamespaceState, room: Room) -> Iterable[Socket]:
        # Decided by the name's shape alone, never by what exists: a socket id that is
        # not on this node must not fall back to a named room here (see the module doc).
        if is_socket_id(room):
            own = ns.sockets.get(Sid(room))
            return () if own is None else (own,)
        members = ns.rooms.get(room)
        return () if members is None else members.values()

    def select(
        self,
        namespace: Namespace,
        rooms: Iterable[Room] = (),
        exclude: Iterable[Room] = (),
    ) -> list[Socket]:
        """Sockets in any of ``rooms`` (all sockets if empty) and in none of ``exclude``.

        Each socket is listed once even when it is in several of the rooms. The list is a
        snapshot: callers may change rooms or disconnect sockets while walking it.
        """
        ns = self._namespaces.get(namespace)
        if ns is None:
            return []
        rooms = list(rooms)
        excluded: set[Sid] = set()
        for room in exclude:
            excluded.update(s.id for s in self._members(ns, room))
        if not rooms:
            candidates: Iterable[Socket] = ns.sockets.values()
            if not excluded:
                return list(candidates)
            return [s for s in candidates if s.id not in excluded]
        if len(rooms) == 1 and not excluded:
            return list(self._members(ns, rooms[0]))
        seen: dict[Sid, Socket] = {}
        for room in rooms:
            for s in self._members(ns, room):
                if s.id not in excluded:
                    seen[s.id] = s
        return list(seen.values())
