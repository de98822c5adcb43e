"""Which channel carries a command to the nodes that need it (sans-I/O).

Commands are routed by what selects their sockets (see ``docs/cluster.md``, "Routing"):

* a named room (``user:<sub>`` rooms included) of a namespace hashes to one of
  :data:`SHARDS` shards; the shard's channel reaches the nodes that hold members of
  some room of that shard (they subscribe while they do: ``siogate.broker.shards``);
* a socket id starts with the id of the node that holds the socket
  (:func:`siogate.types.new_socket_id`), whose own channel reaches it;
* no room at all (the whole namespace) goes to every node.

A command that names rooms of several destinations is cut in one part per destination.
Emit parts keep each socket from hearing an emit twice: part *k* excludes the rooms of
parts 1..*k-1*, whose own channels reach a socket that is in one of them. Join, leave and
disconnect parts need no such care (doing them twice is doing them once).

A part addressed to this node's own channel is dropped: the node applies every command
itself, after publishing it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ..types import NODE_ID_LENGTH, Namespace, Room, Sid, is_socket_id
from .base import Command, EmitCommand, SocketsCommand

# Fixed for a cluster: every node must hash a room to the same shard. A node holding
# members of R rooms subscribes to about min(R, SHARDS) channels, and an emit to a room
# reaches a node without members there with probability 1 - exp(-R / SHARDS): 2^16
# keeps that at 14% for a node with 10,000 users (user:<sub> rooms) while bounding what
# a node with members everywhere subscribes to (docs/cluster.md, "Routing").
SHARDS = 65536

DestinationKind = Literal["all", "shard", "node"]


@dataclass(frozen=True, slots=True, order=True)
class Destination:
    """A channel's meaning: every node, one shard of rooms, or one node."""

    kind: DestinationKind
    # The shard number or the node id; "" for "all".
    key: str = ""


ALL = Destination("all")


@dataclass(slots=True)
class Part:
    """Commands (or parts of commands) for one destination, in order."""

    destination: Destination
    commands: list[Command]

    @property
    def changes_rooms(self) -> bool:
        """Whether a receiving node may have to subscribe before it can be emitted to."""
        return any(isinstance(c, SocketsCommand) for c in self.commands)


def shard_of(namespace: Namespace, room: Room) -> int:
    """The shard of a named room: the high bits of the CRC-32 of namespace and name
    (the low bits of CRC-32 spread names that differ in a counter poorly)."""
    raw = f"{namespace}\0{room}".encode("utf-8", "surrogatepass")
    crc = zlib.crc32(raw)
    return crc * SHARDS >> 32


def owner_of(sid: Sid | Room) -> str:
    """The node id a socket id starts with."""
    return sid[:NODE_ID_LENGTH]


def destination_of(namespace: Namespace, room: Room) -> Destination:
    if is_socket_id(room):
        return Destination("node", owner_of(room))
    return Destination("shard", str(shard_of(namespace, room)))


def _grouped(namespace: Namespace, names: Sequence[Room]) -> dict[Destination, list[Room]]:
    groups: dict[Destination, list[Room]] = {}
    for name in names:
        groups.setdefault(destination_of(namespace, name), []).append(name)
    return groups


def split(command: Command) -> list[tuple[Destination, Command]]:
    """``command`` as parts, one per destination."""
    if isinstance(command, EmitCommand):
        if not command.rooms:
            return [(ALL, command)]
        groups = _grouped(command.namespace, command.rooms)
        if len(groups) == 1:
            return [(next(iter(groups)), command)]
        emits: list[tuple[Destination, Command]] = []
        before: list[Room] = []
        for destination, rooms in groups.items():
            part = replace(command, rooms=tuple(rooms), exclude=(*command.exclude, *before))
            emits.append((destination, part))
            before += rooms
        return emits
    if command.sockets:
        by_node: dict[Destination, list[Sid]] = {}
        for sid in command.sockets:
            by_node.setdefault(Destination("node", owner_of(sid)), []).append(sid)
        if len(by_node) == 1:
            return [(next(iter(by_node)), command)]
        return [(d, replace(command, sockets=tuple(s))) for d, s in by_node.items()]
    if not command.rooms:
        return [(ALL, command)]
    groups = _grouped(command.namespace, command.rooms)
    if len(groups) == 1:
        return [(next(iter(groups)), command)]
    # Other members (exclusions, flags) stay as they are in every part.
    return [(d, replace(command, rooms=tuple(r))) for d, r in groups.items()]


def segments(commands: Sequence[Command]) -> list[list[Command]]:
    """``commands`` cut after each join, leave or disconnect.

    A segment is published, and its room changes confirmed by the nodes that made them,
    before the next one: a command that follows a join must find the joined socket's node
    subscribed to the room's shard.
    """
    out: list[list[Command]] = [[]]
    for command in commands:
        if out[-1] and isinstance(out[-1][-1], SocketsCommand):
            out.append([])
        out[-1].append(command)
    return out if out[0] else []


def route(commands: Sequence[Command], own: str) -> list[Part]:
    """The parts to publish for ``commands``, in order, without those for ``own`` node.

    Consecutive parts for one destination share a message; parts are never reordered,
    so that a node that receives several channels on one connection (a standalone Redis)
    gets them in the order they were published.
    """
    parts: list[Part] = []
    mine = Destination("node", own)
    for command in commands:
        for destination, part in split(command):
            if destination == mine:
                continue
            if parts and parts[-1].destination == destination:
                parts[-1].commands.append(part)
            else:
                parts.append(Part(destination, [part]))
    return parts
