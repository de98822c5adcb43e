"""The broker contract, run against every implementation: in memory and on a real Redis.

The Redis factory needs a ``redis-server`` (started by the ``shared_redis`` fixture on a
free port); each test gets its own key prefix, so tests never see each other's nodes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from conftest import RedisServer, free_port
from siogate.broker import (
    Broker,
    BrokerUnavailable,
    Command,
    EmitCommand,
    MemoryBroker,
    Query,
    RoomsQuery,
    SocketsCommand,
    SocketsQuery,
    wire,
)
from siogate.broker import redis as redis_module
from siogate.broker.local import LocalBroker, LocalRelay
from siogate.broker.redis import RedisBroker, redacted
from siogate.types import Namespace, Room, Sid, new_socket_id

BATCH: list[Command] = [
    EmitCommand(Namespace("/"), "a", [1, {"é": None}], rooms=(Room("r"),), exclude=(Room("x"),)),
    SocketsCommand("join", Namespace("/"), sockets=(Sid("s"),), room=Room("r")),
    SocketsCommand("leave", Namespace("/chat"), rooms=(Room("r"),), room=Room("q")),
    SocketsCommand("disconnect", Namespace("/"), sockets=(Sid("s1"), Sid("s2"))),
    EmitCommand(Namespace("/"), "b", []),
]

Factory = Callable[[], Broker]


class Node:
    """What a gateway node hands its broker: a command log and a canned answer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.applied: list[list[Command]] = []
        self.changed = asyncio.Event()

    def apply(self, commands: Sequence[Command]) -> None:
        self.applied.append(list(commands))
        self.changed.set()

    def answer(self, query: Query) -> Any:
        return {"node": self.name, "query": type(query).__name__}

    async def wait_batches(self, n: int) -> list[list[Command]]:
        async with asyncio.timeout(5):
            while len(self.applied) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.applied


@pytest.fixture(params=["memory", "redis", "local"])
async def make_broker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[tuple[Broker, Node]]]]:
    """``await make_broker()`` -> a started broker and the node it delivers to."""
    started: list[Broker] = []
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    relay = LocalRelay(str(tmp_path / "relay.sock"))
    if request.param == "local":
        await relay.start()

    async def make() -> tuple[Broker, Node]:
        broker: Broker
        if request.param == "memory":
            broker = MemoryBroker()
        elif request.param == "local":
            broker = LocalBroker(relay.path, advertise_url="http://n:1")
        else:
            redis: RedisServer = request.getfixturevalue("shared_redis")
            broker = RedisBroker(redis.url, prefix=prefix, advertise_url="http://n:1")
        node = Node(f"n{len(started)}")
        await broker.start(node.apply, node.answer)
        started.append(broker)
        return broker, node

    yield make
    for broker in started:
        await broker.close()
    await relay.close()


# ---------------------------------------------------------------- every implementation


async def test_publish_applies_the_batch_locally_in_order_before_returning(
    make_broker: Callable[[], Awaitable[tuple[Broker, Node]]],
) -> None:
    broker, node = await make_broker()
    await broker.publish(BATCH)
    # A routing broker may hand a batch over in segments, cut after joins and leaves.
    assert [c for part in node.applied for c in part] == BATCH
    node.applied.clear()
    await broker.publish(BATCH[:1])
    assert node.applied == [BATCH[:1]]
    assert broker.stats.connected and broker.stats.messages_out >= 2


async def test_query_answers_for_this_node_first(
    make_broker: Callable[[], Awaitable[tuple[Broker, Node]]],
) -> None:
    broker, _ = await make_broker()
    answers = await broker.query(RoomsQuery(Namespace("/")), timeout=1)
    assert answers.answers == [(broker.node_id, {"node": "n0", "query": "RoomsQuery"})]
    assert answers.complete and answers.missing == ()


async def test_node_ids_are_distinct(
    make_broker: Callable[[], Awaitable[tuple[Broker, Node]]],
) -> None:
    (one, _), (two, _) = await make_broker(), await make_broker()
    assert one.node_id and two.node_id and one.node_id != two.node_id


@pytest.mark.parametrize("kind", [MemoryBroker, RedisBroker])
async def test_publish_before_start_is_an_error(kind: type[Broker]) -> None:
    broker = MemoryBroker() if kind is MemoryBroker else RedisBroker("redis://127.0.0.1:1/0")
    with pytest.raises(RuntimeError):
        await broker.publish([EmitCommand(Namespace("/"), "a", [])])


# ---------------------------------------------------------------- several nodes on Redis


@pytest.fixture
async def redis_pair(
    shared_redis: RedisServer,
) -> AsyncIterator[tuple[RedisBroker, Node, RedisBroker, Node]]:
    prefix = f"pair-{uuid.uuid4().hex[:8]}"
    a, b = Node("a"), Node("b")
    one = RedisBroker(shared_redis.url, prefix=prefix, advertise_url="http://a:1")
    two = RedisBroker(shared_redis.url, prefix=prefix, advertise_url="http://b:2")
    await one.start(a.apply, a.answer)
    await two.start(b.apply, b.answer)
    yield one, a, two, b
    await one.close()
    await two.close()


async def test_batches_reach_the_other_node_once_and_in_order(
    redis_pair: tuple[RedisBroker, Node, RedisBroker, Node],
) -> None:
    one, a, _, b = redis_pair
    batches = [[EmitCommand(Namespace("/"), "seq", [i])] for i in range(200)]
    await asyncio.gather(*(one.publish(batch) for batch in batches))
    assert a.applied == batches  # locally, in call order
    assert await b.wait_batches(200) == batches
    await asyncio.sleep(0.1)
    assert len(a.applied) == 200  # never its own batches a second time


async def test_query_gathers_every_live_node(
    redis_pair: tuple[RedisBroker, Node, RedisBroker, Node],
) -> None:
    one, _, two, _ = redis_pair
    answers = await one.query(SocketsQuery(Namespace("/"), Room("r")), timeout=2)
    assert dict(answers.answers) == {
        one.node_id: {"node": "a", "query": "SocketsQuery"},
        two.node_id: {"node": "b", "query": "SocketsQuery"},
    }
    assert answers.answers[0][0] == one.node_id
    assert answers.complete and answers.missing == ()
    assert await one.node_url(two.node_id) == "http://b:2"
    assert await one.node_url("nobody") is None


async def test_a_closed_node_leaves_the_registry_at_once(
    redis_pair: tuple[RedisBroker, Node, RedisBroker, Node],
) -> None:
    one, _, two, _ = redis_pair
    gone = two.node_id
    await two.close()
    answers = await one.query(RoomsQuery(Namespace("/")), timeout=2)
    assert [node for node, _ in answers.answers] == [one.node_id]
    assert answers.missing == () and answers.complete
    assert await one.node_url(gone) is None


async def test_a_node_that_starts_later_is_found_soon(shared_redis: RedisServer) -> None:
    prefix = f"late-{uuid.uuid4().hex[:8]}"
    one = RedisBroker(shared_redis.url, prefix=prefix, advertise_url="http://a:1")
    late = RedisBroker(
        shared_redis.url, prefix=prefix, advertise_url="http://late:2", node_id="latenode"
    )
    await one.start(Node("a").apply, Node("a").answer)
    try:
        assert await one.node_url("latenode") is None  # a miss, cached briefly
        missed = asyncio.get_running_loop().time()
        await late.start(Node("l").apply, Node("l").answer)
        while await one.node_url("latenode") is None:
            await asyncio.sleep(0.05)
        assert asyncio.get_running_loop().time() - missed < redis_module.URL_MISS_SECONDS + 0.5
    finally:
        await late.close()
        await one.close()


async def test_the_node_url_cache_is_bounded(
    redis_pair: tuple[RedisBroker, Node, RedisBroker, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    one, _, two, _ = redis_pair
    monkeypatch.setattr(redis_module, "URL_CACHE_SIZE", 50)
    assert await one.node_url(two.node_id) == "http://b:2"
    # Session ids with made-up node prefixes, as a client may send.
    for i in range(300):
        assert await one.node_url(f"x{i:07d}") is None
    assert len(one._urls) <= 50
    assert await one.node_url(two.node_id) == "http://b:2"  # looked up again if evicted


async def test_prefixes_separate_clusters(shared_redis: RedisServer) -> None:
    a, b = Node("a"), Node("b")
    one = RedisBroker(shared_redis.url, prefix=f"x-{uuid.uuid4().hex[:6]}")
    two = RedisBroker(shared_redis.url, prefix=f"y-{uuid.uuid4().hex[:6]}")
    await one.start(a.apply, a.answer)
    await two.start(b.apply, b.answer)
    try:
        await one.publish(BATCH)
        answers = await one.query(RoomsQuery(Namespace("/")), timeout=1)
        assert len(answers.answers) == 1
        await asyncio.sleep(0.2)
        assert b.applied == []
    finally:
        await one.close()
        await two.close()


async def test_unreachable_redis_refuses_publishes_and_reports_it() -> None:
    node = Node("alone")
    broker = RedisBroker(f"redis://127.0.0.1:{free_port()}/0", start_wait=0.3)
    await broker.start(node.apply, node.answer)
    try:
        assert not broker.stats.connected and broker.stats.error
        with pytest.raises(BrokerUnavailable):
            await broker.publish(BATCH)
        assert node.applied == []  # refused whole: applied nowhere
        assert broker.stats.publish_failures >= 1  # one per message the batch was routed as
        answers = await broker.query(RoomsQuery(Namespace("/")), timeout=1)
        assert not answers.complete and [n for n, _ in answers.answers] == [broker.node_id]
    finally:
        await broker.close()


# ---------------------------------------------------------------- the wire format


def test_commands_survive_the_wire() -> None:
    data = wire.encode_commands("abcd1234", BATCH)
    assert data.startswith(wire.prefix("abcd1234"))
    message = wire.decode(data)
    assert message["v"] == wire.VERSION and message["node"] == "abcd1234"
    assert wire.decode_commands(message) == BATCH


def test_a_lone_surrogate_survives_the_wire() -> None:
    # JavaScript strings may hold one; UTF-8 cannot, so it travels as a \u escape.
    batch: list[Command] = [EmitCommand(Namespace("/"), "x", ["\ud800", {"k\udfff": 1}])]
    data = wire.encode_commands("n", batch)
    assert wire.decode_commands(wire.decode(data)) == batch


def test_queries_and_answers_survive_the_wire() -> None:
    for query in (RoomsQuery(Namespace("/")), SocketsQuery(Namespace("/a"), Room("r"))):
        data = wire.encode_query("n", "id1", query)
        assert wire.decode_query(wire.decode(data)) == ("id1", query)
    data = wire.encode_answer("n", "id1", {"r": 2})
    assert wire.decode_answer(wire.decode(data)) == ("id1", {"r": 2})
    assert wire.decode_node(wire.encode_node("http://h:1")) == "http://h:1"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b"\xff",
        b'{"v":2,"node":"n","commands":[]}',
        b'{"v":1,"commands":[]}',
        b'{"v":1,"node":"n","commands":{}}',
        b'{"v":1,"node":"n","commands":[{"type":"emit","ns":"/","event":"e"}]}',
        b'{"v":1,"node":"n","commands":[{"type":"emit","ns":"/","event":"e","args":[],"rooms":[1]}]}',
        b'{"v":1,"node":"n","commands":[{"type":"join","ns":"/","sockets":["s"]}]}',
        b'{"v":1,"node":"n","commands":[{"type":"explode","ns":"/"}]}',
        b'{"v":1,"node":"n","commands":[null]}',
        b"[" * 50_000,
    ],
)
def test_malformed_messages_are_refused(data: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode_commands(wire.decode(data))


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://app:hunter2@cache/1", "rediss://app:***@cache/1"),
    ],
)
def test_passwords_stay_out_of_logs(url: str, logged: str) -> None:
    assert redacted(url) == logged


class FreezableProxy:
    """A TCP proxy to Redis whose current connections can be frozen: kept open, silent.

    That is what a connection looks like after a balancer or NAT drops its state: no
    error, no data, ever. New connections made after the freeze work normally.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.pipes: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter, list[bool]]] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        frozen = [False]
        self.pipes.append((writer, up_writer, frozen))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if not frozen[0]:
                    dst.write(data)

        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )

    def freeze_existing(self) -> None:
        for _, _, frozen in self.pipes:
            frozen[0] = True

    async def close(self) -> None:
        for writer, up_writer, _ in self.pipes:
            writer.close()
            up_writer.close()
        if self.server is not None:
            self.server.close()


async def test_a_silently_dead_subscription_is_found_and_replaced(
    shared_redis: RedisServer,
) -> None:
    proxy = FreezableProxy(shared_redis.port)
    port = await proxy.start()
    prefix = f"frozen-{uuid.uuid4().hex[:6]}"
    a, b = Node("a"), Node("b")
    through_proxy = RedisBroker(f"redis://127.0.0.1:{port}/0", prefix=prefix, node_ttl=1.5)
    direct = RedisBroker(shared_redis.url, prefix=prefix, node_ttl=1.5)
    await through_proxy.start(a.apply, a.answer)
    await direct.start(b.apply, b.answer)
    try:
        proxy.freeze_existing()
        # Its subscription still looks fine; only an unanswered PING can tell.
        async with asyncio.timeout(10):
            while through_proxy.stats.reconnects == 0 or not through_proxy.stats.connected:
                await asyncio.sleep(0.05)
        # For every node (a node that holds no room subscribes to no room's shard).
        await direct.publish(BATCH[-1:])
        assert await a.wait_batches(1) == [BATCH[-1:]]
    finally:
        await through_proxy.close()
        await direct.close()
        await proxy.close()


# ---------------------------------------------------------------- sharded routing


async def test_a_join_answers_once_the_node_holding_the_socket_is_subscribed(
    shared_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"shard-{uuid.uuid4().hex[:8]}"
    a, b = Node("a"), Node("b")
    one = RedisBroker(shared_redis.url, prefix=prefix)
    two = RedisBroker(shared_redis.url, prefix=prefix)

    def apply_on_b(commands: Sequence[Command]) -> None:
        b.apply(commands)
        for command in commands:  # what the hub does on a room's first member
            if isinstance(command, SocketsCommand) and command.room is not None:
                two.room_opened(command.namespace, command.room)

    # B's SSUBSCRIBE leaves late: the join's answer must wait for it.
    send = two._send_subscriptions

    async def late(*args: Any) -> None:
        await asyncio.sleep(0.3)
        await send(*args)

    monkeypatch.setattr(two, "_send_subscriptions", late)
    await one.start(a.apply, a.answer)
    await two.start(apply_on_b, b.answer)
    try:
        loop = asyncio.get_running_loop()
        room = Room(uuid.uuid4().hex)
        join = SocketsCommand("join", Namespace("/"), (new_socket_id(two.node_id),), (), room)
        emit = EmitCommand(Namespace("/"), "e", [], (room,))
        started = loop.time()
        await one.publish([join, emit])  # one batch: the emit waits for the join
        assert loop.time() - started >= 0.3
        assert await b.wait_batches(2) == [[join], [emit]]
        assert one.stats.ack_timeouts == 0 and two.stats.shards == 1
        # A node that holds no member of the room is sent nothing.
        assert one.stats.shards == 0
        before = one.stats.messages_in
        await two.publish([emit])
        await asyncio.sleep(0.2)
        assert one.stats.messages_in == before
    finally:
        await one.close()
        await two.close()
