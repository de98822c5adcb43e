"""Presence: which users are connected, over the whole cluster.

A user is the ``sub`` of the token a socket connected with; every such socket sits in the
room ``user:<sub>`` (see :meth:`siogate.node.Node._on_connect`), which is the index used
here. A socket counts for a user only while it is in that room and its own user is that
one, so a socket of another user put in ``user:<sub>`` by a backend or a token claim does
not make ``sub`` look online.

Two questions, asked of every node through the broker like the other listings:

* :class:`~siogate.broker.PresenceQuery`: for each of a few users, how many sockets
  they have; each node answers ``{user: count}`` for its users with sockets, and the
  counts are summed.
* :class:`~siogate.broker.RoomPresenceQuery`: the distinct users of a room with their
  socket counts, paged by user id as :mod:`siogate.listings` explains, plus the number
  of anonymous sockets there (not paged: one number). Each node answers
  ``{"users": [[user, count], ...], "anonymous": count}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from .broker import Answers, PresenceQuery, RoomPresenceQuery
from .hub import Hub
from .listings import Page, first_after, is_count, sum_counts, well_formed
from .types import Room, UserId


def user_room(user: str) -> Room:
    """The room every socket of ``user`` joins when it connects."""
    return Room(f"user:{user}")


# Users: {user: socket count}, summed over the nodes.


def local_presence(hub: Hub, query: PresenceQuery) -> dict[str, int]:
    counts: dict[str, int] = {}
    for user in query.users:
        members = hub.select(query.namespace, [user_room(user)])
        n = sum(1 for s in members if s.user == user)
        if n:
            counts[user] = n
    return counts


def merge_presence(answers: Answers, users: tuple[UserId, ...]) -> dict[UserId, int]:
    """Sockets per asked user, over the nodes that answered (0 for a user with none)."""
    total = dict.fromkeys(users, 0)
    for _, counts in well_formed(answers, dict, "presence"):
        for user, n in counts.items():
            # Only users that were asked about: a node cannot add keys to the answer.
            if user in total and is_count(n):
                total[UserId(user)] += n
    return total


# Users in a room: paged by user id; anonymous sockets counted apart.


def local_room_presence(hub: Hub, query: RoomPresenceQuery) -> dict[str, Any]:
    users: Counter[str] = Counter()
    anonymous = 0
    for socket in hub.select(query.namespace, [query.room]):
        if socket.user is None:
            anonymous += 1
        else:
            users[socket.user] += 1
    page = first_after(users.items(), query.after, query.limit)
    return {"users": [[user, n] for user, n in page], "anonymous": anonymous}


def merge_room_presence(
    answers: Answers, after: UserId | None, limit: int | None
) -> tuple[Page[tuple[UserId, int]], int]:
    """The page of users with their summed counts, and the anonymous sockets in all."""
    anonymous = 0
    pairs: list[tuple[Any, Any]] = []
    for _, answer in well_formed(answers, dict, "room presence"):
        if is_count(answer.get("anonymous")):
            anonymous += answer["anonymous"]
        pairs.extend(_pairs(answer.get("users")))
    page = sum_counts(pairs, after, limit)
    return Page([(UserId(u), n) for u, n in page.items], page.more), anonymous


def _pairs(users: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(users, list):
        for entry in users:
            if isinstance(entry, list) and len(entry) == 2:
                yield entry[0], entry[1]
