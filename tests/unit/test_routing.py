"""Routing decisions (siogate.broker.routing) and shard bookkeeping (siogate.broker.shards)."""

from __future__ import annotations

import itertools

import pytest

from siogate.broker import EmitCommand, SocketsCommand, wire
from siogate.broker.routing import ALL, SHARDS, Destination, route, segments, shard_of, split
from siogate.broker.shards import LINGER, ShardSubscriptions
from siogate.hub import Hub, Socket
from siogate.types import Namespace, Room, Sid, new_socket_id

NS = Namespace("/")
ME, OTHER = "nodeaaaa", "nodebbbb"


def rooms_in_distinct_shards(n: int) -> list[Room]:
    found: dict[int, Room] = {}
    for i in itertools.count():
        found.setdefault(shard_of(NS, Room(f"r{i}")), Room(f"r{i}"))
        if len(found) == n:
            return list(found.values())
    raise AssertionError


def shard(room: Room) -> Destination:
    return Destination("shard", str(shard_of(NS, room)))


def test_shards_are_stable_and_in_range() -> None:
    assert shard_of(NS, Room("news")) == shard_of(NS, Room("news"))
    assert 0 <= shard_of(Namespace("/chat"), Room("user:\udcff")) < SHARDS
    spread = {shard_of(NS, Room(f"room{i}")) for i in range(SHARDS // 4)}
    assert len(spread) > SHARDS // 4 * 0.85  # 88% expected with a uniform hash


def test_socket_ids_carry_the_node_id_when_it_fits() -> None:
    sid = new_socket_id(ME)
    assert sid.startswith(ME) and len(sid) == 20
    assert new_socket_id(ME) != sid
    assert len(new_socket_id("not a node id")) == 20


def test_each_command_goes_where_its_sockets_are() -> None:
    news = Room("news")
    on_other = new_socket_id(OTHER)
    emit_room = EmitCommand(NS, "e", [], (news,))
    emit_all = EmitCommand(NS, "e", [], (), (news,))
    emit_sid = EmitCommand(NS, "e", [], (Room(on_other),))
    assert split(emit_room) == [(shard(news), emit_room)]
    assert split(emit_all) == [(ALL, emit_all)]
    assert split(emit_sid) == [(Destination("node", OTHER), emit_sid)]
    join = SocketsCommand("join", NS, (Sid(on_other),), (), news)
    assert split(join) == [(Destination("node", OTHER), join)]
    by_room = SocketsCommand("disconnect", NS, (), (news,))
    assert split(by_room) == [(shard(news), by_room)]
    everyone = SocketsCommand("leave", NS, (), (), news)
    assert split(everyone) == [(ALL, everyone)]


def test_an_emit_across_shards_excludes_earlier_parts_so_no_socket_hears_it_twice() -> None:
    one, two = rooms_in_distinct_shards(2)
    parts = split(EmitCommand(NS, "e", [1], (one, two), (Room("x"),)))
    assert parts == [
        (shard(one), EmitCommand(NS, "e", [1], (one,), (Room("x"),))),
        (shard(two), EmitCommand(NS, "e", [1], (two,), (Room("x"), one))),
    ]


def test_socket_commands_are_cut_by_owner_node() -> None:
    mine, theirs = new_socket_id(ME), new_socket_id(OTHER)
    command = SocketsCommand("join", NS, (Sid(mine), Sid(theirs)), (), Room("r"))
    assert split(command) == [
        (Destination("node", ME), SocketsCommand("join", NS, (Sid(mine),), (), Room("r"))),
        (Destination("node", OTHER), SocketsCommand("join", NS, (Sid(theirs),), (), Room("r"))),
    ]
    # This node applies its own part itself: nothing to publish for it.
    parts = route([command], ME)
    assert [p.destination for p in parts] == [Destination("node", OTHER)]
    assert parts[0].changes_rooms
    assert route([SocketsCommand("leave", NS, (Sid(mine),), (), Room("r"))], ME) == []


def test_consecutive_commands_for_one_destination_share_a_message_in_order() -> None:
    one, two = rooms_in_distinct_shards(2)
    a, b, c = (EmitCommand(NS, str(i), [], (r,)) for i, r in enumerate((one, one, two)))
    d = EmitCommand(NS, "d", [], (one,))
    parts = route([a, b, c, d], ME)
    assert [(p.destination, p.commands) for p in parts] == [
        (shard(one), [a, b]),
        (shard(two), [c]),
        (shard(one), [d]),
    ]
    assert not any(p.changes_rooms for p in parts)


def test_a_batch_is_cut_after_each_room_change() -> None:
    e1, e2 = EmitCommand(NS, "1", []), EmitCommand(NS, "2", [])
    join = SocketsCommand("join", NS, (Sid("s"),), (), Room("r"))
    leave = SocketsCommand("leave", NS, (Sid("s"),), (), Room("r"))
    assert segments([e1, join, e2]) == [[e1, join], [e2]]
    assert segments([join, leave, e1, e2]) == [[join], [leave], [e1, e2]]
    assert segments([e1, e2]) == [[e1, e2]]
    assert segments([]) == []


class Watcher:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def room_opened(self, namespace: Namespace, room: Room) -> None:
        self.events.append(("open", room))

    def room_closed(self, namespace: Namespace, room: Room) -> None:
        self.events.append(("close", room))


class NoLink:
    session = None

    def flush(self) -> None: ...

    def write_broadcast(self, outgoing: object) -> None: ...

    def close(self, reason: str) -> None: ...


def test_the_hub_reports_a_room_s_first_member_and_its_last() -> None:
    hub, watcher = Hub(), Watcher()
    hub.watcher = watcher
    s1, s2 = (Socket(new_socket_id(ME), NS, None, NoLink()) for _ in range(2))  # type: ignore[arg-type]
    hub.add(s1)
    hub.add(s2)
    hub.join(s1, Room("r"))
    hub.join(s2, Room("r"))
    hub.join(s1, Room(s2.id))  # a socket-id name is never a room
    hub.leave(s1, Room("r"))
    hub.join(s2, Room("q"))
    hub.remove(s2)
    assert watcher.events[:2] == [("open", "r"), ("open", "q")]
    assert sorted(watcher.events[2:]) == [("close", "q"), ("close", "r")]


def test_shards_subscribe_once_settle_on_confirmation_and_linger_before_leaving() -> None:
    one, two = rooms_in_distinct_shards(2)
    s1, s2 = shard_of(NS, one), shard_of(NS, two)
    subs = ShardSubscriptions()
    assert subs.settled()
    subs.room_opened(NS, one)
    assert not subs.settled()
    assert subs.to_subscribe() == [s1]
    assert subs.to_subscribe() == []  # sent once
    subs.confirmed(s1, True)
    assert subs.settled()
    subs.room_closed(NS, one, now=100.0)
    assert subs.settled()  # nothing wanted
    assert subs.to_unsubscribe(now=100.0 + LINGER / 2) == []  # lingers
    subs.room_opened(NS, two)
    assert subs.to_subscribe() == [s2]
    subs.confirmed(s2, True)
    assert subs.to_unsubscribe(now=100.0 + LINGER) == [s1]
    # Wanted again while the unsubscribe is in flight: not settled until that is
    # confirmed and the shard subscribed anew.
    subs.room_opened(NS, one)
    assert not subs.settled() and subs.to_subscribe() == []
    subs.confirmed(s1, False)
    assert not subs.settled() and subs.to_subscribe() == [s1]
    subs.confirmed(s1, True)
    assert subs.settled() and subs.subscribed == {s1, s2}
    # A room that closes and reopens within the linger costs nothing.
    subs.room_closed(NS, two, now=200.0)
    subs.room_opened(NS, two)
    assert subs.to_unsubscribe(now=300.0) == [] and subs.to_subscribe() == []
    subs.reset()  # the connection was lost
    assert not subs.settled() and sorted(subs.to_subscribe()) == sorted([s1, s2])


def test_the_ack_id_survives_the_wire_and_a_bad_one_is_refused() -> None:
    join = SocketsCommand("join", NS, (Sid(new_socket_id(ME)),), (), Room("r"))
    message = wire.decode(wire.encode_commands(ME, [join], ack="a1b2"))
    assert wire.decode_commands(message) == [join] and wire.decode_ack(message) == "a1b2"
    assert wire.decode_ack(wire.decode(wire.encode_commands(ME, [join]))) is None
    with pytest.raises(wire.WireError):
        wire.decode_ack(wire.decode(b'{"v":1,"node":"n","commands":[],"ack":7}'))


def test_sharded_routing_needs_node_ids_that_socket_ids_can_start_with() -> None:
    from siogate.broker.redis import RedisBroker

    with pytest.raises(ValueError, match="node id"):
        RedisBroker("redis://127.0.0.1:1/0", node_id="short")
    assert RedisBroker("redis://127.0.0.1:1/0", node_id="short", routing="broadcast")
    assert RedisBroker("redis://127.0.0.1:1/0").node_id  # a generated one fits
