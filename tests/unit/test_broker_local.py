"""The workers' broker: LocalBroker nodes through a real LocalRelay on a Unix socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from test_broker import Node

from siogate.broker import BrokerUnavailable, Command, EmitCommand, RoomsQuery, SocketsCommand
from siogate.broker.local import (
    ACK,
    HELLO,
    MAX_FRAME,
    FrameReader,
    LocalBroker,
    LocalRelay,
    frame,
)
from siogate.broker.routing import shard_of
from siogate.types import Namespace, Room, Sid

Trio = tuple[LocalRelay, list[tuple[LocalBroker, Node]]]


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[Trio]:
    relay = LocalRelay(str(tmp_path / "relay.sock"))
    await relay.start()
    nodes: list[tuple[LocalBroker, Node]] = []
    for name in "abc":
        broker = LocalBroker(relay.path, advertise_url=f"http://{name}:1")
        node = Node(name)
        await broker.start(node.apply, node.answer)
        nodes.append((broker, node))
    # Each knows the others once the relay's registry reached it.
    for broker, _ in nodes:
        async with asyncio.timeout(5):
            while broker.stats.peers != 2:
                await asyncio.sleep(0.01)
    yield relay, nodes
    for broker, _ in nodes:
        await broker.close()
    await relay.close()


def test_frames_split_across_reads_come_out_whole() -> None:
    data = frame(ACK, b"12345678") + frame(7, b"") + frame(3, b"x" * 1000)
    reader = FrameReader()
    out = []
    for i in range(0, len(data), 7):
        out += reader.feed(data[i : i + 7])
    assert out == [(ACK, b"12345678"), (7, b""), (3, b"x" * 1000)]
    with pytest.raises(ValueError):
        FrameReader().feed((MAX_FRAME + 1).to_bytes(4, "big") + b"\x02")


async def test_batches_reach_every_other_worker_once_and_in_order(three: Trio) -> None:
    _, [(one, a), (_, b), (_, c)] = three
    batches: list[list[Command]] = [[EmitCommand(Namespace("/"), "seq", [i])] for i in range(300)]
    await asyncio.gather(*(one.publish(batch) for batch in batches))
    assert a.applied == batches  # applied locally, in call order, before returning
    assert await b.wait_batches(300) == batches
    assert await c.wait_batches(300) == batches
    await asyncio.sleep(0.05)
    assert len(a.applied) == 300


class Members(Node):
    """A node that tells its broker about rooms opened and closed by joins and leaves of
    its own sockets, as the hub's RoomWatcher does."""

    def __init__(self, name: str, broker: LocalBroker) -> None:
        super().__init__(name)
        self.broker = broker
        self.rooms: dict[Room, set[Sid]] = {}

    def apply(self, commands: Sequence[Command]) -> None:
        super().apply(commands)
        for c in commands:
            if not isinstance(c, SocketsCommand) or c.room is None:
                continue
            for sid in c.sockets:
                if not sid.startswith(self.broker.node_id):
                    continue
                members = self.rooms.setdefault(c.room, set())
                if c.action == "join" and sid not in members:
                    members.add(sid)
                    if len(members) == 1:
                        self.broker.room_opened(c.namespace, c.room)
                elif c.action == "leave" and sid in members:
                    members.discard(sid)
                    if not members:
                        self.broker.room_closed(c.namespace, c.room)


@pytest.fixture
async def routed(
    tmp_path: Path,
) -> AsyncIterator[tuple[LocalRelay, list[tuple[LocalBroker, Members]]]]:
    relay = LocalRelay(str(tmp_path / "relay.sock"))
    await relay.start()
    nodes: list[tuple[LocalBroker, Members]] = []
    for name in "abc":
        broker = LocalBroker(relay.path, advertise_url=None)
        node = Members(name, broker)
        await broker.start(node.apply, node.answer)
        nodes.append((broker, node))
    for broker, _ in nodes:
        async with asyncio.timeout(5):
            while broker.stats.peers != 2:
                await asyncio.sleep(0.01)
    yield relay, nodes
    for broker, _ in nodes:
        await broker.close()
    await relay.close()


Routed = tuple[LocalRelay, list[tuple[LocalBroker, Members]]]
ROOT = Namespace("/")


def sid_of(broker: LocalBroker, i: int) -> Sid:
    return Sid(f"{broker.node_id}{i:012d}")


def join(sid: Sid, room: str) -> SocketsCommand:
    return SocketsCommand("join", ROOT, sockets=(sid,), room=Room(room))


def emit(room: str, i: int) -> EmitCommand:
    return EmitCommand(ROOT, "e", [i], rooms=(Room(room),))


async def test_a_join_answered_by_one_worker_is_ahead_of_an_emit_through_another(
    routed: Routed,
) -> None:
    """Join C's socket through A, then emit to the room through B: C gets both, in
    order, every time (the join's publish returns once C subscribed the room's shard)."""
    _, [(one, _), (two, _), (three, c)] = routed
    for i in range(50):
        await one.publish([join(sid_of(three, i), f"r{i}")])
        await two.publish([emit(f"r{i}", i)])
    applied = await c.wait_batches(100)
    assert applied == [
        batch
        for i in range(50)
        for batch in ([join(sid_of(three, i), f"r{i}")], [emit(f"r{i}", i)])
    ]
    assert three.stats.shards == 50


async def test_a_join_and_an_emit_in_one_batch_reach_the_joined_socket(routed: Routed) -> None:
    _, [(one, a), (_, b), (three, c)] = routed
    await one.publish([join(sid_of(three, 1), "room"), emit("room", 1)])
    assert await c.wait_batches(2) == [[join(sid_of(three, 1), "room")], [emit("room", 1)]]
    assert a.applied == [[join(sid_of(three, 1), "room")], [emit("room", 1)]]
    await asyncio.sleep(0.05)
    assert b.applied == []


async def test_a_worker_without_members_of_a_room_receives_nothing_for_it(
    routed: Routed,
) -> None:
    relay, [(one, _), (two, b), (three, c)] = routed
    await one.publish([join(sid_of(three, 1), "here")])
    received = two.stats.messages_in
    for i in range(100):
        await one.publish([emit("here", i)])
        await one.publish([emit("nowhere", i)])
    await c.wait_batches(101)
    await asyncio.sleep(0.05)
    assert c.applied[1:] == [[emit("here", i)] for i in range(100)]
    assert b.applied == []  # the join went to C only, the emits to C or nobody
    assert two.stats.messages_in == received == 0
    assert relay.unrouted == 100  # "nowhere": no worker has members there
    # Namespace-wide emits still reach every worker.
    await one.publish([EmitCommand(ROOT, "all", [])])
    assert (await b.wait_batches(1))[-1] == [EmitCommand(ROOT, "all", [])]


async def test_a_room_left_is_let_go_after_the_linger(
    routed: Routed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("siogate.broker.local.LINGER", 0.1)
    relay, [(one, _), (_, _), (three, c)] = routed
    await one.publish([join(sid_of(three, 1), "r")])
    assert relay.subscribers(shard_of(ROOT, Room("r"))) == {three.node_id}
    await one.publish([SocketsCommand("leave", ROOT, sockets=(sid_of(three, 1),), room=Room("r"))])
    async with asyncio.timeout(5):
        while relay.subscribers(shard_of(ROOT, Room("r"))):
            await asyncio.sleep(0.02)
    assert three.stats.shards == 0
    await one.publish([emit("r", 1)])
    await asyncio.sleep(0.05)
    assert len(c.applied) == 2  # the join and the leave, not the emit
    # Joined again: subscribed again, and reached.
    await one.publish([join(sid_of(three, 2), "r"), emit("r", 2)])
    assert (await c.wait_batches(4))[-1] == [emit("r", 2)]


async def test_a_join_for_a_worker_that_dies_does_not_hang(routed: Routed) -> None:
    relay, [(one, _), (_, _), (three, _)] = routed
    await three.close()
    async with asyncio.timeout(5):
        while three.node_id in relay.nodes:
            await asyncio.sleep(0.01)
        await one.publish([join(sid_of(three, 1), "r")])


async def test_queries_gather_every_worker_and_a_gone_one_is_not_awaited(three: Trio) -> None:
    relay, [(one, _), (two, _), (three_, _)] = three
    answers = await one.query(RoomsQuery(Namespace("/")), timeout=2)
    assert [node for node, _ in answers.answers] == [one.node_id, two.node_id, three_.node_id]
    assert answers.complete and answers.missing == ()
    assert await one.node_url(two.node_id) == "http://b:1"
    assert set(relay.nodes) == {one.node_id, two.node_id, three_.node_id}
    gone = three_.node_id
    await three_.close()
    async with asyncio.timeout(5):
        while one.stats.peers != 1:
            await asyncio.sleep(0.01)
    started = asyncio.get_running_loop().time()
    answers = await one.query(RoomsQuery(Namespace("/")), timeout=2)
    assert asyncio.get_running_loop().time() - started < 1
    assert [node for node, _ in answers.answers] == [one.node_id, two.node_id]
    assert await one.node_url(gone) is None


async def test_without_the_relay_publishes_are_refused_and_listings_partial(three: Trio) -> None:
    relay, [(one, a), _, _] = three
    await relay.close()
    async with asyncio.timeout(5):
        while one.stats.connected:
            await asyncio.sleep(0.01)
    assert one.stats.error
    assert one.lost.is_set()  # the worker stops on it, to be restarted
    with pytest.raises(BrokerUnavailable):
        await one.publish([EmitCommand(Namespace("/"), "x", [])])
    assert a.applied == []  # a refused batch is not applied here either
    answers = await one.query(RoomsQuery(Namespace("/")), timeout=1)
    assert answers.answers == [(one.node_id, {"node": "a", "query": "RoomsQuery"})]
    assert not answers.complete


async def test_calls_reach_the_primarys_service_and_fail_without_one(tmp_path: Path) -> None:
    async def upper(request: bytes) -> bytes:
        return request.upper()

    served = LocalRelay(str(tmp_path / "a.sock"), upper)
    bare = LocalRelay(str(tmp_path / "b.sock"))
    for relay in (served, bare):
        await relay.start()
    one = LocalBroker(served.path, advertise_url=None)
    two = LocalBroker(bare.path, advertise_url=None)
    node = Node("n")
    for broker in (one, two):
        await broker.start(node.apply, node.answer)
    try:
        replies = await asyncio.gather(*(one.call(f"r{i}".encode()) for i in range(50)))
        assert replies == [f"R{i}".encode() for i in range(50)]
        with pytest.raises(BrokerUnavailable):
            await two.call(b"anything")
    finally:
        for broker in (one, two):
            await broker.close()
        for relay in (served, bare):
            await relay.close()


async def test_a_join_for_a_stalled_worker_is_answered_after_the_ack_timeout(
    routed: Routed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("siogate.broker.local.ACK_TIMEOUT", 0.2)
    relay, [(one, _), _, _] = routed
    # A worker that registers and then never reads nor confirms anything.
    _, writer = await asyncio.open_unix_connection(relay.path)
    writer.write(frame(HELLO, json.dumps({"node": "stalled1", "url": None}).encode()))
    await writer.drain()
    async with asyncio.timeout(5):
        while "stalled1" not in relay.nodes:
            await asyncio.sleep(0.01)
        started = asyncio.get_running_loop().time()
        await one.publish([join(Sid("stalled1" + "0" * 12), "r")])
    assert 0.15 < asyncio.get_running_loop().time() - started < 2
    assert one.stats.ack_timeouts == 1
    writer.close()
