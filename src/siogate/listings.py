"""Paged listings over a cluster: what a node answers about its hub, and the merge.

Every listing is ordered by a key unique within it (room name, socket id, user id),
compared by code point. A page is the entries whose key sorts after ``after`` (the last
key of the previous page), at most ``limit`` of them.

Each node answers only its own first ``limit`` entries after ``after``, and the asking
node keeps the first ``limit`` of the merged answers. That is the cluster's page: an
entry a node left out has ``limit`` of that node's entries before it, so it could not be
in the page. A key several nodes hold (a room, a user) is in every such node's answer
when it is in the page, for the same reason, so its summed count is whole. The asking
node asks for ``limit + 1`` entries to learn whether another page follows.

A node that predates paging answers in full; the merge filters and cuts again, so such
an answer gives the same page.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Generic, TypeVar

from .broker import Answers, RoomsQuery, SocketsQuery
from .hub import Hub
from .protocol.session import State
from .types import Room, Sid, UserId

logger = logging.getLogger("siogate.listings")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Listing:
    """A cluster-wide answer, and how complete it is."""

    nodes: int
    # Live nodes that did not answer in time (their sockets are not in the answer).
    missing: tuple[str, ...]
    # False when the live nodes could not even be counted (the broker is unreachable).
    complete: bool

    @classmethod
    def of(cls, answers: Answers) -> Listing:
        return cls(len(answers.answers), answers.missing, answers.complete)

    @property
    def partial(self) -> bool:
        return bool(self.missing) or not self.complete


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Entries of one page, in key order."""

    items: list[T]
    # Entries follow the last one: there is a next page.
    more: bool


def first_after(
    entries: Iterable[tuple[str, T]], after: str | None, limit: int | None
) -> list[tuple[str, T]]:
    """The ``limit`` entries (all if None) with the smallest keys after ``after``, sorted."""
    if after is not None:
        entries = (e for e in entries if e[0] > after)
    if limit is None:
        return sorted(entries, key=itemgetter(0))
    # O(n log limit): a node need not sort its whole hub for one page.
    return heapq.nsmallest(limit, entries, key=itemgetter(0))


def page_after(
    entries: Iterable[tuple[str, T]], after: str | None, limit: int | None
) -> Page[tuple[str, T]]:
    """The page of ``limit`` entries after ``after``, and whether more follow."""
    found = first_after(entries, after, None if limit is None else limit + 1)
    if limit is None or len(found) <= limit:
        return Page(found, False)
    return Page(found[:limit], True)


def well_formed(answers: Answers, kind: type, what: str) -> Iterator[tuple[str, Any]]:
    """(node, answer) for each answer of the expected JSON type; others are logged."""
    for node, answer in answers.answers:
        if isinstance(answer, kind):
            yield node, answer
        else:
            logger.warning("node %s sent a malformed %s answer", node, what)


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def sum_counts(
    counts: Iterable[tuple[str, Any]], after: str | None, limit: int | None
) -> Page[tuple[str, int]]:
    """Merge (key, count) pairs from several nodes: counts summed per key, then paged."""
    total: dict[str, int] = {}
    for key, n in counts:
        if isinstance(key, str) and is_count(n):
            total[key] = total.get(key, 0) + n
    return page_after(total.items(), after, limit)


# Rooms: {room: member count} per node, summed.


def local_rooms(hub: Hub, query: RoomsQuery) -> dict[str, int]:
    return dict(first_after(hub.rooms(query.namespace).items(), query.after, query.limit))


def merge_rooms(answers: Answers, after: Room | None, limit: int | None) -> Page[tuple[Room, int]]:
    pairs = (pair for _, rooms in well_formed(answers, dict, "rooms") for pair in rooms.items())
    page = sum_counts(pairs, after, limit)
    return Page([(Room(r), n) for r, n in page.items], page.more)


# Sockets: [[id, user], ...] per node; a socket is on one node only.


def local_sockets(hub: Hub, query: SocketsQuery) -> list[list[str | bool | None]]:
    """``[id, user]`` per socket; ``[id, user, false]`` for one whose transport is gone
    and that waits for its client (connection state recovery, siogate.recovery)."""
    members = ((s.id, s) for s in hub.select(query.namespace, [query.room]))
    return [
        [s.id, s.user] if s.link.session.state is State.OPEN else [s.id, s.user, False]
        for _, s in first_after(members, query.after, query.limit)
    ]


def merge_sockets(
    answers: Answers, after: Sid | None, limit: int | None
) -> Page[tuple[Sid, UserId | None, str, bool]]:
    """(id, user, node, connected) per socket."""
    found: list[tuple[str, tuple[Sid, UserId | None, str, bool]]] = []
    for node, sockets in well_formed(answers, list, "sockets"):
        for entry in sockets:
            match entry:
                case [str(sid), str() | None as user, *rest] if rest in ([], [False]):
                    user_id = None if user is None else UserId(user)
                    found.append((sid, (Sid(sid), user_id, node, not rest)))
    page = page_after(found, after, limit)
    return Page([socket for _, socket in page.items], page.more)
