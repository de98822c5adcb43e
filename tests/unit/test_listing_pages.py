"""Paged listings and presence: node answers, merges, the wire and cursors (no I/O)."""

from __future__ import annotations

import base64
import json
import random
from typing import Any

import pytest

from siogate import listings, presence
from siogate.api import paging
from siogate.broker import Answers, PresenceQuery, RoomPresenceQuery, RoomsQuery, SocketsQuery, wire
from siogate.errors import ApiError
from siogate.hub import Hub, Outgoing, Socket, new_socket_id
from siogate.protocol.session import Session
from siogate.types import Namespace, Room, Sid, UserId

NS = Namespace("/")


class FakeLink:
    def __init__(self) -> None:
        self.session = Session("e")

    def flush(self) -> None:
        pass

    def write_broadcast(self, outgoing: Outgoing) -> None:
        pass

    def close(self, reason: str) -> None:
        pass


def add(hub: Hub, user: str | None, *rooms: str) -> Socket:
    socket = Socket(new_socket_id(), NS, None if user is None else UserId(user), FakeLink())
    hub.add(socket)
    for room in rooms:
        hub.join(socket, Room(room))
    return socket


def cluster(seed: int, nodes: int = 3) -> list[Hub]:
    """Hubs with sockets spread at random over rooms and users shared between them."""
    rng = random.Random(seed)
    hubs = [Hub() for _ in range(nodes)]
    for _ in range(300):
        user = rng.choice([None, *(f"u{i:02d}" for i in range(40))])
        rooms = {f"r{rng.randrange(60):02d}" for _ in range(rng.randrange(4))} | {"all"}
        add(rng.choice(hubs), user, *rooms, *([f"user:{user}"] if user else []))
    return hubs


def ask(hubs: list[Hub], answer: Any, query: Any) -> Answers:
    """Each hub's answer, as a broker would gather them (through the wire format)."""
    _, decoded = wire.decode_query(wire.decode(wire.encode_query("asker", "1", query)))
    assert decoded == query
    return Answers(
        [(f"n{i}", json.loads(json.dumps(answer(hub, decoded)))) for i, hub in enumerate(hubs)]
    )


def walk(fetch: Any, limit: int) -> list[Any]:
    """Every page of a listing: ``fetch(after, limit)`` -> Page; keys are item[0]."""
    out: list[Any] = []
    after = None
    while True:
        page = fetch(after, limit)
        assert len(page.items) <= limit
        out += page.items
        if not page.more:
            return out
        assert len(page.items) == limit
        after = page.items[-1][0]


@pytest.mark.parametrize("limit", [1, 7, 50, 1000])
@pytest.mark.parametrize("seed", [1, 2])
def test_pages_over_nodes_equal_the_whole_sorted_listing(seed: int, limit: int) -> None:
    hubs = cluster(seed)

    def rooms(after: Any, n: int) -> Any:
        query = RoomsQuery(NS, after, n + 1)
        return listings.merge_rooms(ask(hubs, listings.local_rooms, query), after, n)

    whole: dict[str, int] = {}
    for hub in hubs:
        for room, count in hub.rooms(NS).items():
            whole[room] = whole.get(room, 0) + count
    assert walk(rooms, limit) == sorted(whole.items())

    def sockets(after: Any, n: int) -> Any:
        query = SocketsQuery(NS, Room("all"), after, n + 1)
        return listings.merge_sockets(ask(hubs, listings.local_sockets, query), after, n)

    got = walk(sockets, limit)
    everyone = sorted(s.id for hub in hubs for s in hub.select(NS, [Room("all")]))
    assert [sid for sid, _, _, _ in got] == everyone

    def users(after: Any, n: int) -> Any:
        query = RoomPresenceQuery(NS, Room("all"), after, n + 1)
        answers = ask(hubs, presence.local_room_presence, query)
        page, anonymous = presence.merge_room_presence(answers, after, n)
        assert anonymous == sum(
            1 for hub in hubs for s in hub.select(NS, [Room("all")]) if s.user is None
        )
        return page

    counts: dict[str, int] = {}
    for hub in hubs:
        for s in hub.select(NS, [Room("all")]):
            if s.user is not None:
                counts[s.user] = counts.get(s.user, 0) + 1
    assert walk(users, limit) == sorted(counts.items())


def test_each_node_answers_at_most_limit_entries_after_the_key() -> None:
    hub = Hub()
    for i in range(50):
        add(hub, f"u{i:02d}", f"r{i:02d}", "big")
    answer = listings.local_rooms(hub, RoomsQuery(NS, Room("r09"), 3))
    assert answer == {"r10": 1, "r11": 1, "r12": 1}
    assert len(listings.local_sockets(hub, SocketsQuery(NS, Room("big"), None, 5))) == 5
    page = presence.local_room_presence(hub, RoomPresenceQuery(NS, Room("big"), UserId("u47"), 9))
    assert page == {"users": [["u48", 1], ["u49", 1]], "anonymous": 0}


def test_a_node_without_paging_gives_the_same_page() -> None:
    hubs = cluster(3, nodes=2)
    query = RoomsQuery(NS, Room("r20"), 6)
    paged = ask(hubs, listings.local_rooms, query)
    old = Answers([paged.answers[0], ("old", hubs[1].rooms(NS))])
    assert listings.merge_rooms(old, Room("r20"), 5) == listings.merge_rooms(paged, Room("r20"), 5)


def test_presence_sums_asked_users_only() -> None:
    a, b = Hub(), Hub()
    add(a, "ann", "user:ann")
    add(b, "ann", "user:ann")
    # Another user's socket in ann's room does not count for ann.
    add(b, "bob", "user:ann", "user:bob")
    query = PresenceQuery(NS, (UserId("ann"), UserId("bob"), UserId("cy")))
    answers = ask([a, b], presence.local_presence, query)
    assert presence.merge_presence(answers, query.users) == {"ann": 2, "bob": 1, "cy": 0}
    forged = Answers([("x", {"ann": 1, "zed": 5, "bob": -3, "cy": True}), ("y", [1])])
    assert presence.merge_presence(forged, query.users) == {"ann": 1, "bob": 0, "cy": 0}


def test_malformed_answers_are_skipped() -> None:
    answers = Answers([("a", {"r": 1, "s": "x", "t": -1}), ("b", ["not", "a", "dict"])])
    assert listings.merge_rooms(answers, None, 10).items == [("r", 1)]
    answers = Answers([("a", [["s1", None], ["s2"], [3, None], "x"]), ("b", {"k": 1})])
    assert listings.merge_sockets(answers, None, 10).items == [(Sid("s1"), None, "a", True)]
    answers = Answers([("a", {"users": [["u", 2], ["v"], [1, 1]], "anonymous": "x"})])
    assert presence.merge_room_presence(answers, None, 10)[0].items == [("u", 2)]


@pytest.mark.parametrize(
    "body",
    [
        {"query": "rooms", "limit": 0},
        {"query": "rooms", "limit": True},
        {"query": "rooms", "limit": 1.5},
        {"query": "rooms", "limit": wire.MAX_QUERY_LIMIT + 1},
        {"query": "rooms", "after": 5},
        {"query": "sockets", "after": "x"},
        {"query": "presence", "users": "ann"},
        {"query": "presence", "users": ["x"] * (wire.MAX_QUERY_USERS + 1)},
        {"query": "room_presence"},
    ],
)
def test_malformed_queries_are_refused(body: dict[str, Any]) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_query({"v": 1, "node": "n", "id": "1", "ns": "/", **body})


def test_queries_of_the_first_format_still_decode() -> None:
    # What a node without paging sends: no after, no limit.
    old = {"v": 1, "node": "n", "id": "1", "ns": "/", "query": "sockets", "room": "r"}
    assert wire.decode_query(old) == ("1", SocketsQuery(NS, Room("r")))


def test_cursors_round_trip_and_are_bound_to_their_listing() -> None:
    scope = {"ns": "/", "room": "news 😀"}
    cursor = paging.encode_cursor("sockets", scope, "abc")
    assert paging.decode_cursor(cursor, "sockets", scope) == "abc"
    for of, other in (("presence", scope), ("sockets", {**scope, "room": "x"})):
        with pytest.raises(ApiError) as refused:
            paging.decode_cursor(cursor, of, other)
        assert refused.value.code == "invalid_cursor"
    # The same bytes spelled with non-zero unused bits are not a cursor.
    raw = base64.urlsafe_b64encode(b"{}").rstrip(b"=").decode()
    tweaked = raw[:-1] + chr(ord(raw[-1]) + 1)
    assert base64.urlsafe_b64decode(tweaked + "=") == b"{}"
    with pytest.raises(ApiError):
        paging.decode_cursor(tweaked, "rooms", {"ns": "/"})


def test_limit_and_defaults() -> None:
    assert paging.page_request(None, None, "rooms", {}) == paging.PageRequest(None, 1000, False)
    cursor = paging.encode_cursor("rooms", {}, "k")
    assert paging.page_request(None, cursor, "rooms", {}) == paging.PageRequest("k", 100, True)
    assert paging.page_request("7", None, "rooms", {}).limit == 7
    for bad in ("0", "1001", "+5", " 5", "5.0", "٣"):
        with pytest.raises(ApiError):
            paging.page_request(bad, None, "rooms", {})
