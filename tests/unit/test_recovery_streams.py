"""The Redis half of cross-node recovery (siogate.broker.streams): the replay rules
without a network, and the log and session records against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from conftest import RedisServer
from siogate.broker import EmitCommand, SocketsCommand, wire
from siogate.broker.streams import (
    APPEND_PUBLISH,
    APPEND_PUBLISH_ONE,
    MAX_CHANGES,
    Outbound,
    Overflow,
    RedisRecoveryLog,
    Session,
    decode_entry,
    offsets_of,
    parse_offset,
    plan,
    split_append_reply,
)
from siogate.types import Namespace, Room, Sid

NS = Namespace("/")
SID = Sid("node0001-abcdefghijklmnop")


def emit(event: str, *rooms: str, exclude: tuple[str, ...] = ()) -> EmitCommand:
    return EmitCommand(NS, event, [event], tuple(Room(r) for r in rooms), tuple(map(Room, exclude)))


def join(
    room: str, *, sockets: tuple[str, ...] = (SID,), rooms: tuple[str, ...] = ()
) -> SocketsCommand:
    return SocketsCommand("join", NS, tuple(map(Sid, sockets)), tuple(map(Room, rooms)), Room(room))


def leave(room: str) -> SocketsCommand:
    return SocketsCommand("leave", NS, (SID,), (), Room(room))


def session(*rooms: str, at: str = "1-0") -> Session:
    return Session(SID, NS, "u1", {Room(r) for r in rooms}, at, since=at, changes_from=at)


def test_offsets_are_stream_ids_only() -> None:
    assert parse_offset("1733380000000-7") == (1733380000000, 7)
    for bad in (None, 3, "", "1-", "-1", "a-1", "1-2-3", "1" * 21 + "-0", "abc123-4"):
        assert parse_offset(bad) is None


def test_replay_follows_room_changes_in_log_order() -> None:
    s = session("a")
    entries = [
        ("2-0", emit("to-a", "a")),
        ("3-0", emit("to-b-before-join", "b")),
        ("4-0", join("b")),
        ("5-0", emit("to-b", "b")),
        ("6-0", leave("a")),
        ("7-0", emit("to-a-after-leave", "a")),
        ("8-0", emit("everyone")),
        ("9-0", emit("direct", SID)),
        ("10-0", emit("excluded", exclude=("b",))),
        ("11-0", EmitCommand(Namespace("/other"), "other-ns", [], ())),
    ]
    replay = plan(s, "1-0", "1-0", entries, 100)
    assert replay is not None
    assert [e[1] for e in replay.events] == ["to-a", "to-b", "everyone", "direct"]
    assert [e[0] for e in replay.events] == ["2-0", "5-0", "8-0", "9-0"]
    assert replay.rooms == {"b"}
    assert replay.last == "11-0"


def test_replay_skips_what_the_client_saw_but_still_applies_its_room_changes() -> None:
    s = session("a")
    entries = [("2-0", join("b")), ("3-0", emit("seen", "b")), ("4-0", emit("missed", "b"))]
    replay = plan(s, "1-0", "3-0", entries, 100)
    assert replay is not None and [e[1] for e in replay.events] == ["missed"]


def test_a_join_by_room_selection_reaches_members_only() -> None:
    s = session("a")
    entries = [
        ("2-0", join("x", sockets=(), rooms=("zzz",))),
        ("3-0", join("y", sockets=(), rooms=("a",))),
        ("4-0", emit("x", "x")),
        ("5-0", emit("y", "y")),
    ]
    replay = plan(s, "1-0", "1-0", entries, 100)
    assert replay is not None and [e[1] for e in replay.events] == ["y"]


def test_a_logged_disconnect_ends_the_session() -> None:
    s = session("a")
    entries = [("2-0", emit("a", "a")), ("3-0", SocketsCommand("disconnect", NS, (SID,)))]
    assert plan(s, "1-0", "1-0", entries, 100) is None


def test_too_many_missed_events_overflow() -> None:
    entries = [(f"{i}-0", emit("e", "a")) for i in range(2, 13)]
    with pytest.raises(Overflow):
        plan(session("a"), "1-0", "1-0", entries, 10)
    replay = plan(session("a"), "1-0", "1-0", entries[:10], 10)
    assert replay is not None and len(replay.events) == 10


def test_rooms_at_an_older_offset_undo_the_recorded_changes() -> None:
    s = session("a")
    s.changed("5-0", Room("b"), True)
    s.changed("7-0", Room("a"), False)
    assert s.rooms == {"b"} and s.at == "7-0"
    assert s.rooms_at("8-0") == {"b"}
    assert s.rooms_at("6-0") == {"a", "b"}
    assert s.rooms_at("4-0") == {"a"}
    # Before the socket connected: not an offset it can have had.
    assert s.rooms_at("0-5") is None
    # The client saw up to 4-0, missed the emit at 6-0 (it was in "a" then).
    entries = [("5-0", join("b")), ("6-0", emit("to-a", "a")), ("7-0", leave("a"))]
    replay = plan(s, "4-0", "4-0", entries, 100)
    assert replay is not None and [e[1] for e in replay.events] == ["to-a"]


def test_a_record_keeps_a_bounded_change_list() -> None:
    s = session()
    for i in range(MAX_CHANGES + 5):
        s.changed(f"{i + 2}-0", Room(f"r{i}"), True)
    assert len(s.changes) == MAX_CHANGES
    assert s.rooms_at("3-0") is None  # its changes were dropped
    assert s.rooms_at(s.changes_from) is not None


def test_records_round_trip_and_malformed_ones_are_refused() -> None:
    s = session("a", "user:u1")
    s.changed("4-0", Room("b"), True)
    s.expires = 1_900_000_000.0
    again = Session.from_fields(s.to_fields())
    assert again == s
    for key, bad in [
        ("rooms", "{}"),
        ("rooms", json.dumps([1])),
        ("user", "5"),
        ("at", "x"),
        ("changes", json.dumps([["1-0", "a", "yes"]])),
        ("changes", json.dumps([["1-0", "a", True]] * (MAX_CHANGES + 1))),
        ("exp", '"soon"'),
        ("rooms", "[" * 100_000),
    ]:
        fields = s.to_fields()
        fields[key] = bad
        assert Session.from_fields(fields) is None, (key, bad)
    fields = s.to_fields()
    del fields["sid"]
    assert Session.from_fields(fields) is None


# Against a real Redis


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def store(redis: Redis, node: str, **kw: float) -> RedisRecoveryLog:
    return RedisRecoveryLog(redis, prefix="t", node=node, window=kw.pop("window", 60.0), **kw)  # type: ignore[arg-type]


def now_ms() -> int:
    return int(time.time() * 1000)


async def connect(log: RedisRecoveryLog, pid: str, *rooms: str) -> Session:
    at = await log.last_offset(NS)
    s = Session(SID, NS, "u1", {Room(r) for r in rooms}, at, since=at, changes_from=at)
    assert await log.save(pid, s)
    return s


PID = "p" * 22


@pytest.mark.redis
async def test_another_node_recovers_after_the_first_one_died(redis: Redis) -> None:
    a, b = store(redis, "nodeA"), store(redis, "nodeB")
    s = await connect(a, PID, "a", "user:u1")
    first = await a.append([emit("seen", "a")], now_ms())
    # Node A dies without a word (kill -9): nothing more is written by it. Meanwhile the
    # API (any node) joins the socket to "b" and emits.
    await b.append([join("b"), emit("to-b", "b"), emit("other", "zzz")], now_ms())
    await b.append([emit("to-a", "a"), emit("to-user", "user:u1")], now_ms())
    got = await b.recover(PID, first[0], NS, "u1")
    assert got is not None
    claimed, replay = got
    assert claimed.previous_node == "nodeA" and claimed.previous_state == "live"
    assert [e[1] for e in replay.events] == ["to-b", "to-a", "to-user"]
    offsets = [e[0] for e in replay.events]
    assert offsets == sorted(offsets, key=parse_offset) and offsets[0] > first[0]
    assert replay.rooms == {"a", "b", "user:u1"}
    assert claimed.session.sid == s.sid
    # Node A, were it only slow, can no longer park, change or end the session.
    assert not await a.park(PID)
    assert not await a.save(PID, s)
    assert not await a.end(PID)
    assert await redis.hget(b.session_key(PID), "node") == b"nodeB"


@pytest.mark.redis
async def test_a_second_recovery_starts_from_the_last_replayed_offset(redis: Redis) -> None:
    # socketio/socket.io#5419: the replayed events carry their offsets, so a client
    # that drops again asks from the last one and gets nothing twice.
    a, b = store(redis, "nodeA"), store(redis, "nodeB")
    await connect(a, PID, "a")
    await a.append([emit("one", "a"), emit("two", "a")], now_ms())
    got = await b.recover(PID, None, NS, "u1")
    assert got is not None
    events = got[1].events
    assert [e[1] for e in events] == ["one", "two"]
    again = await a.recover(PID, events[-1][0], NS, "u1")
    assert again is not None and again[1].events == []


@pytest.mark.redis
async def test_unknown_forged_or_foreign_claims_get_nothing(redis: Redis) -> None:
    a, b = store(redis, "nodeA"), store(redis, "nodeB")
    await connect(a, PID, "a")
    ids = await a.append([emit("secret", "a")], now_ms())
    assert await b.recover("q" * 22, None, NS, "u1") is None  # unknown pid
    assert await b.recover(PID, None, NS, "u2") is None  # another user
    assert await b.recover(PID, None, Namespace("/x"), "u1") is None  # another namespace
    for offset in ("x", "99999999999999-0", 5, ["1-0"]):
        assert await b.recover(PID, offset, NS, "u1") is None  # forged offset
    for pid in (None, 7, "short", "p" * 65):
        assert await b.recover(pid, ids[0], NS, "u1") is None
    # Still recoverable by its own client afterwards: refused claims change nothing.
    got = await b.recover(PID, None, NS, "u1")
    assert got is not None and [e[1] for e in got[1].events] == ["secret"]


@pytest.mark.redis
async def test_a_parked_record_expires_with_the_window(redis: Redis) -> None:
    a, b = store(redis, "nodeA", window=0.3), store(redis, "nodeB", window=0.3)
    await connect(a, PID, "a")
    assert await a.park(PID)
    assert 0 < await redis.pttl(a.session_key(PID)) <= 300
    await asyncio.sleep(0.5)
    assert await b.recover(PID, None, NS, "u1") is None


@pytest.mark.redis
async def test_trimmed_entries_are_a_gap_not_a_silent_loss(redis: Redis) -> None:
    a = store(redis, "nodeA", max_log=10)
    await connect(a, PID, "a")
    first = await a.append([emit("e0", "a")], now_ms())
    for i in range(300):
        await a.append([emit(f"e{i + 1}", "zzz")], now_ms())
    assert await a.log_length(NS) < 300
    assert await a.recover(PID, first[0], NS, "u1") is None
    # The client goes on with a new socket: the old record is gone.
    assert not await redis.exists(a.session_key(PID))
    # A socket whose offset is still in the trimmed log recovers.
    await connect(a, PID, "a")
    ids = await a.append([emit("kept", "a"), emit("missed", "a")], now_ms())
    got = await a.recover(PID, ids[0], NS, "u1")
    assert got is not None and [e[1] for e in got[1].events] == ["missed"]


@pytest.mark.redis
async def test_a_thousand_missed_events_in_order_and_bounded(redis: Redis) -> None:
    a, b = store(redis, "nodeA", max_missed=1000), store(redis, "nodeB", max_missed=1000)
    await connect(a, PID, "a")
    for i in range(0, 1000, 100):
        await a.append([emit(str(n), "a") for n in range(i, i + 100)], now_ms())
    got = await b.recover(PID, None, NS, "u1")
    assert got is not None
    assert [e[1] for e in got[1].events] == [str(n) for n in range(1000)]
    await a.append([emit("1000", "a")], now_ms())
    c = store(redis, "nodeC", max_missed=1000)
    assert await c.recover(PID, None, NS, "u1") is None  # 1,001: over the cap


@pytest.mark.redis
async def test_log_entries_that_are_not_commands_are_refused(redis: Redis) -> None:
    a, b = store(redis, "nodeA"), store(redis, "nodeB")
    await connect(a, PID, "a")
    await redis.xadd(a.log_key(NS), {"c": b'{"v":1,"node":"","commands":[{"type":"pickle"}]}'})
    assert await b.recover(PID, None, NS, "u1") is None


@pytest.mark.redis
async def test_racing_claims_leave_one_owner_and_the_old_node_silent(redis: Redis) -> None:
    # The client's reconnect lands on B while A has not noticed the drop; a second
    # reconnect (the client dropped again at once) lands on C at the same moment.
    a = store(redis, "nodeA")
    s = await connect(a, PID, "a")
    others = [store(redis, f"node{i}") for i in range(8)]
    results = await asyncio.gather(*(n.claim(PID, NS, "u1") for n in others))
    gens = sorted(r.gen for r in results if r is not None)
    assert gens == list(range(1, 9))  # each claim saw a distinct generation
    last = next(r for r in results if r is not None and r.gen == 8)
    owner = (await redis.hget(a.session_key(PID), "node")).decode()
    assert last is not None and owner in {n.node for n in others}
    # Only the owner's writes count; A (the first holder) and the losers are refused.
    for n in [a, *others]:
        assert await n.park(PID) == (n.node == owner)
    assert not await a.save(PID, s)


@pytest.mark.redis
async def test_concurrent_publishers_are_received_in_log_order(redis_server: RedisServer) -> None:
    # Two nodes append and publish at once on two channels and a shard channel; one
    # subscriber connection (as a node's) receives everything in offset order, each
    # message with the offsets of the commands it carries.
    clients = [Redis.from_url(redis_server.url) for _ in range(3)]
    try:
        nodes = [store(c, f"node{i}") for i, c in enumerate(clients[:2])]
        pubsub = clients[2].pubsub()
        await pubsub.subscribe("t:c1", "t:c2")
        await pubsub.execute_command("SSUBSCRIBE", "t:r:1")
        got: list[str] = []

        async def receive() -> None:
            while len(got) < 400:
                message = await pubsub.get_message(timeout=5)
                if message is None or message["type"] not in ("message", "smessage"):
                    continue
                obj = wire.decode(message["data"])
                commands = wire.decode_commands(obj)
                offsets = offsets_of(obj, len(commands))
                assert offsets is not None
                got.extend(offsets)

        reader = asyncio.create_task(receive())
        await asyncio.sleep(0.1)

        async def publish(node: RedisRecoveryLog, i: int) -> None:
            commands = [emit(f"{node.node}-{i}-a", "a"), emit(f"{node.node}-{i}-b", "b")]
            channel, sharded = [("t:c1", False), ("t:c2", False), ("t:r:1", True)][i % 3]
            out = [
                Outbound(channel, sharded, wire.encode_commands(node.node, commands[:1]), (0,)),
                Outbound("t:c2", False, wire.encode_commands(node.node, commands[1:]), (1,)),
            ]
            ids, receivers = await node.append_and_publish(commands, out, now_ms())
            assert receivers == [1, 1] and len(ids) == 2

        await asyncio.gather(*(publish(n, i) for i in range(100) for n in nodes))
        await asyncio.wait_for(reader, 10)
        assert len(got) == 400 and len(set(got)) == 400
        assert got == sorted(got, key=parse_offset)
        logged = [_id.decode() for _id, _ in await clients[2].xrange(nodes[0].log_key(NS))]
        assert logged == got
        with pytest.raises(wire.WireError):
            offsets_of({"offsets": ["1-0", "x"]}, 2)
        assert offsets_of({}, 1) is None
        await pubsub.aclose()
    finally:
        for c in clients:
            await c.aclose()


@pytest.mark.redis
async def test_the_one_command_script_logs_and_publishes_as_the_general_one(
    redis_server: RedisServer,
) -> None:
    # A lone command (every API emit) goes through APPEND_PUBLISH_ONE: the same log
    # entry, the same message with its offset, the same reply as APPEND_PUBLISH's.
    client, listener = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    try:
        log = store(client, "nodeA")
        pubsub = listener.pubsub()
        await pubsub.subscribe("t:c")
        await pubsub.execute_command("SSUBSCRIBE", "t:r:1")
        command = emit("e1", "a")
        entry = wire.encode_commands("nodeA", [command])
        results = []
        for entries in ([entry], None, [entry]):  # the lone-command script, the general one
            for channel, sharded in (("t:c", False), ("t:r:1", True)):
                out = Outbound(channel, sharded, entry[:-1] + b',"req":"0123456789abcdef"}', (0,))
                packed, source = log.pack_append_publish([command], [out], now_ms(), entries)
                await client.script_load(source)
                connection = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
                try:
                    await connection.send_packed_command(packed)
                    reply = await connection.read_response()
                finally:
                    await client.connection_pool.release(connection)
                ids, receivers = split_append_reply(reply, 1)
                assert receivers == [1]
                while (message := await pubsub.get_message(timeout=5)) is not None:
                    if message["type"] in ("message", "smessage"):
                        break
                assert message is not None
                results.append((source, ids[0], message["data"]))
        assert {r[0] for r in results} == {APPEND_PUBLISH, APPEND_PUBLISH_ONE}
        for source, offset, data in results:
            tail = b',"req":"0123456789abcdef","offsets":["' + offset.encode() + b'"]}'
            assert data == entry[:-1] + tail, source
        logged = await client.xrange(log.log_key(NS))
        assert [i.decode() for i, _ in logged] == [r[1] for r in results]
        assert all(decode_entry(fields[b"c"]) == command for _, fields in logged)
        await pubsub.aclose()
    finally:
        await client.aclose()
        await listener.aclose()


@pytest.mark.redis
async def test_a_quiet_socket_recovers_though_the_log_was_trimmed_past_it(redis: Redis) -> None:
    # Its node noticed the loss and wrote where it was: the client got everything
    # written to it, so entries trimmed before that point cannot be for it.
    a, b = store(redis, "nodeA", max_log=10), store(redis, "nodeB", max_log=10)
    await connect(a, PID, "a")
    seen = await a.append([emit("seen", "a")], now_ms())
    for i in range(300):
        await a.append([emit(f"other{i}", "zzz")], now_ms())
    parked_at = await a.last_offset(NS)
    assert await a.park(PID, parked_at, seen[0])
    await a.append([emit("missed", "a")], now_ms())
    got = await b.recover(PID, seen[0], NS, "u1")
    assert got is not None and [e[1] for e in got[1].events] == ["missed"]
    # The claim cleared the marks: the new owner writes its own at its park.
    assert not await redis.hexists(a.session_key(PID), "parked_at")


@pytest.mark.redis
async def test_an_event_in_flight_at_the_loss_is_not_skipped(redis: Redis) -> None:
    # The node wrote "in-flight" to a dead transport; the client's offset is older.
    a, b = store(redis, "nodeA", max_log=10), store(redis, "nodeB")
    await connect(a, PID, "a")
    seen = await a.append([emit("seen", "a")], now_ms())
    flight = await a.append([emit("in-flight", "a")], now_ms())
    assert await a.park(PID, flight[0], flight[0])
    got = await b.recover(PID, seen[0], NS, "u1")
    assert got is not None and [e[1] for e in got[1].events] == ["in-flight"]
    # The same, but trimmed away meanwhile: a new socket, not a silent loss.
    c = store(redis, "nodeC", max_log=10)
    await connect(c, "r" * 22, "a")
    seen = await c.append([emit("seen", "a")], now_ms())
    flight = await c.append([emit("in-flight", "a")], now_ms())
    assert await c.park("r" * 22, flight[0], flight[0])
    for i in range(300):
        await c.append([emit(f"other{i}", "zzz")], now_ms())
    assert await b.recover("r" * 22, seen[0], NS, "u1") is None


@pytest.mark.redis
async def test_room_history_reads_the_log(redis: Redis) -> None:
    a = store(redis, "nodeA")
    ids = await a.append(
        [emit(f"m{i}", "chat" if i % 2 == 0 else "other") for i in range(10)]
        + [emit("direct", SID), emit("both", "chat", "other")],
        now_ms(),
    )
    got = await a.room_history(NS, "chat", None, 3)
    assert got is not None
    messages, complete = got
    assert [c.event for _, c in messages] == ["m6", "m8", "both"] and not complete
    got = await a.room_history(NS, "chat", None, 100)
    assert got is not None and got[1] is True and len(got[0]) == 6
    got = await a.room_history(NS, "chat", ids[4], 2)
    assert got is not None and [c.event for _, c in got[0]] == ["m6", "m8"] and not got[1]
    got = await a.room_history(NS, "chat", ids[4], 10)
    assert got is not None and [c.event for _, c in got[0]] == ["m6", "m8", "both"] and got[1]
    assert await a.room_history(NS, "chat", "x", 10) is None
    assert await a.room_history(NS, "chat", "99999999999999-0", 10) is None
    assert await a.room_history(Namespace("/x"), "chat", None, 10) == ([], True)
    # Trimmed: a reader from before the trim is told it is not complete.
    small = store(redis, "nodeB", max_log=10)
    for i in range(300):
        await small.append([emit(f"n{i}", "chat")], now_ms())
    got = await small.room_history(NS, "chat", ids[0], 1000)
    assert got is not None and got[1] is False
