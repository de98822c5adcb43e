"""The one-step path of idempotency keys: a request that is one publish is claimed,
recorded and published in one step (with Redis: one script in the broker's pipeline).

Against the real broker and stores (a real redis-server); HTTP behaviour through real
``siogate serve`` processes is in ``tests/integration/test_idempotency.py``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from conftest import RedisServer
from siogate.api.idempotent import Idempotency, OnePublish
from siogate.broker import BrokerUnavailable, Command, EmitCommand, Guard, Query
from siogate.broker.redis import RedisBroker
from siogate.errors import ApiError
from siogate.idempotency import (
    GuardedPublish,
    IdempotencyStore,
    MemoryIdempotencyStore,
    RedisIdempotencyStore,
    StoredResponse,
    fingerprint,
)
from siogate.transport.http import Request, Response
from siogate.types import Namespace

OK = StoredResponse(200, '{"ok":true}')
FP = fingerprint("POST", "/v1/emit", b'{"event":"a"}')


def emit(n: int) -> list[Command]:
    return [EmitCommand(Namespace("/"), "seq", [n])]


class Log:
    """What a node's broker hands to its hub."""

    def __init__(self) -> None:
        self.applied: list[list[Command]] = []
        self.changed = asyncio.Event()

    def apply(self, commands: Sequence[Command]) -> None:
        self.applied.append(list(commands))
        self.changed.set()

    def answer(self, query: Query) -> Any:
        return None

    async def wait(self, n: int) -> list[list[Command]]:
        async with asyncio.timeout(5):
            while len(self.applied) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.applied


Pair = tuple[RedisBroker, Log, RedisBroker, Log]


@pytest.fixture
async def pair(shared_redis: RedisServer) -> AsyncIterator[Pair]:
    prefix = f"guard-{uuid.uuid4().hex[:8]}"
    a, b = Log(), Log()
    one = RedisBroker(shared_redis.url, prefix=prefix)
    two = RedisBroker(shared_redis.url, prefix=prefix)
    await one.start(a.apply, a.answer)
    await two.start(b.apply, b.answer)
    yield one, a, two, b
    await one.close()
    await two.close()


# ---------------------------------------------------------------- the broker


async def test_a_guarded_publish_happens_once_across_nodes(pair: Pair) -> None:
    one, a, two, b = pair
    guard = Guard(f"{uuid.uuid4().hex}:key", "first", 60_000)
    results = await asyncio.gather(
        *((one, two)[i % 2].publish_guarded(emit(0), guard) for i in range(20))
    )
    assert results.count(None) == 1
    assert set(results) == {None, b"first"}
    # Applied once: on the node that won, and on the other through Redis.
    await a.wait(1)
    await b.wait(1)
    await asyncio.sleep(0.1)
    assert a.applied == b.applied == [emit(0)]
    ttl = await one._redis.pttl(guard.key)  # type: ignore[union-attr]
    assert 0 < ttl <= 60_000


async def test_guarded_and_plain_publishes_keep_their_order(pair: Pair) -> None:
    one, a, _, b = pair
    tag = uuid.uuid4().hex

    def send(n: int) -> Awaitable[Any]:
        if n % 3 == 0:
            return one.publish(emit(n))
        return one.publish_guarded(emit(n), Guard(f"{tag}:{n}", "v", 60_000))

    await asyncio.gather(*(send(n) for n in range(60)))
    expected = [emit(n) for n in range(60)]
    assert a.applied == expected
    assert await b.wait(60) == expected


async def test_a_taken_key_publishes_nothing(pair: Pair) -> None:
    one, a, _, b = pair
    key = f"{uuid.uuid4().hex}:taken"
    assert one._redis is not None
    await one._redis.set(key, "someone else's")
    assert await one.publish_guarded(emit(1), Guard(key, "mine", 60_000)) == b"someone else's"
    await one.publish(emit(2))  # a sentinel: b has all that came before it
    assert await b.wait(1) == [emit(2)]
    assert a.applied == [emit(2)]


async def test_a_forgotten_script_is_loaded_again(pair: Pair) -> None:
    # Redis restarted, or SCRIPT FLUSH: EVALSHA answers NOSCRIPT; the publish still goes.
    one, a, _, b = pair
    assert one._redis is not None
    await one._redis.script_flush()
    tag = uuid.uuid4().hex
    results = await asyncio.gather(
        *(one.publish_guarded(emit(n), Guard(f"{tag}:{n}", "v", 60_000)) for n in range(5))
    )
    assert results == [None] * 5
    assert sorted(c[0].args[0] for c in a.applied) == list(range(5))  # type: ignore[union-attr]
    assert len(await b.wait(5)) == 5


async def test_an_error_reply_fails_the_publish_not_the_connection(pair: Pair) -> None:
    one, a, _, _ = pair
    # PX 0 is refused by Redis ("invalid expire time"): the script fails, nothing is set.
    key = f"{uuid.uuid4().hex}:bad"
    with pytest.raises(BrokerUnavailable):
        await one.publish_guarded(emit(1), Guard(key, "v", 0))
    assert a.applied == []
    assert one._redis is not None and await one._redis.get(key) is None
    assert await one.publish_guarded(emit(2), Guard(key, "v", 60_000)) is None
    assert a.applied == [emit(2)]


async def test_unreachable_redis_refuses_a_guarded_publish(redis_server: RedisServer) -> None:
    log = Log()
    broker = RedisBroker(redis_server.url, prefix="down", start_wait=1)
    await broker.start(log.apply, log.answer)
    redis_server.stop()
    try:
        with pytest.raises(BrokerUnavailable):
            await broker.publish_guarded(emit(1), Guard("k", "v", 60_000))
        assert log.applied == []
    finally:
        await broker.close()


# ---------------------------------------------------------------- the stores


class Publisher:
    """Counts the publishes a store makes; publishes through ``broker`` when given."""

    def __init__(self, broker: RedisBroker | None = None, commands: list[Command] | None = None):
        self.broker = broker
        self.commands = commands or emit(0)
        self.calls = 0
        self.fail: Exception | None = None

    async def publish(self) -> None:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        if self.broker is not None:
            await self.broker.publish(self.commands)

    @property
    def guarded(self) -> GuardedPublish | None:
        broker = self.broker
        if broker is None:
            return None

        async def guarded(key: str, value: str, ttl_ms: int) -> bytes | None:
            self.calls += 1
            if self.fail is not None:
                raise self.fail
            return await broker.publish_guarded(self.commands, Guard(key, value, ttl_ms))

        return guarded


@pytest.fixture(params=["memory", "redis"])
async def store_and_publisher(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[IdempotencyStore, Callable[[], Publisher]]]:
    if request.param == "memory":
        memory = MemoryIdempotencyStore(60)
        yield memory, Publisher
        await memory.close()
        return
    server: RedisServer = request.getfixturevalue("shared_redis")
    prefix = f"one-{uuid.uuid4().hex[:8]}"
    log = Log()
    broker = RedisBroker(server.url, prefix=prefix)
    await broker.start(log.apply, log.answer)
    store = RedisIdempotencyStore(server.url, prefix=prefix, ttl=60)
    yield store, lambda: Publisher(broker)
    await store.close()
    await broker.close()


async def test_one_step_applies_once_and_replays(
    store_and_publisher: tuple[IdempotencyStore, Callable[[], Publisher]],
) -> None:
    store, publisher = store_and_publisher
    p = publisher()
    first = await store.apply_once("k", FP, OK, p.publish, p.guarded)
    assert first.state == "new"
    again = await store.apply_once("k", FP, OK, p.publish, p.guarded)
    assert (again.state, again.response) == ("replay", OK)
    reused = await store.apply_once("k", "another body", OK, p.publish, p.guarded)
    assert reused.state == "mismatch"
    # The two-step path reads the one-step record, and the other way round.
    assert (await store.claim("k", FP)).state == "replay"
    claim = await store.claim("two", FP)
    assert (await store.apply_once("two", FP, OK, p.publish, p.guarded)).state == "in_progress"
    await store.complete("two", claim, OK)
    assert (await store.apply_once("two", FP, OK, p.publish, p.guarded)).state == "replay"
    # Published once (the guarded publishes that found the key taken did not publish).
    if p.broker is None:
        assert p.calls == 1


async def test_one_step_concurrent_repeats_apply_once(
    store_and_publisher: tuple[IdempotencyStore, Callable[[], Publisher]],
) -> None:
    store, publisher = store_and_publisher
    p = publisher()
    claims = await asyncio.gather(
        *(store.apply_once("same", FP, OK, p.publish, p.guarded) for _ in range(30))
    )
    states = sorted(c.state for c in claims)
    # The record is complete as soon as the key is taken: repeats are replays.
    assert states == ["new"] + ["replay"] * 29, states


async def test_one_step_failure_frees_the_key(
    store_and_publisher: tuple[IdempotencyStore, Callable[[], Publisher]],
) -> None:
    store, publisher = store_and_publisher
    p = publisher()
    p.fail = BrokerUnavailable("down")
    with pytest.raises(BrokerUnavailable):
        await store.apply_once("k", FP, OK, p.publish, p.guarded)
    p.fail = None
    # A retry with another body is fine: nothing was recorded.
    assert (await store.apply_once("k", "fixed", OK, p.publish, p.guarded)).state == "new"


async def test_memory_one_step_over_a_publish_that_waits() -> None:
    # A broker whose publish waits (not the memory broker's): repeats meanwhile are
    # in_progress, never a second publish.
    store = MemoryIdempotencyStore(60)
    go = asyncio.Event()
    calls = 0

    async def slow() -> None:
        nonlocal calls
        calls += 1
        await go.wait()

    first = asyncio.create_task(store.apply_once("k", FP, OK, slow, None))
    await asyncio.sleep(0.01)
    assert (await store.apply_once("k", FP, OK, slow, None)).state == "in_progress"
    go.set()
    assert (await first).state == "new"
    assert (await store.apply_once("k", FP, OK, slow, None)).state == "replay"
    assert calls == 1


async def test_redis_store_without_a_guarded_publish_goes_in_steps(
    shared_redis: RedisServer,
) -> None:
    store = RedisIdempotencyStore(shared_redis.url, prefix=f"steps-{uuid.uuid4().hex[:8]}")
    p = Publisher()
    try:
        assert (await store.apply_once("k", FP, OK, p.publish, None)).state == "new"
        assert (await store.apply_once("k", FP, OK, p.publish, None)).state == "replay"
        assert p.calls == 1
    finally:
        await store.close()


async def test_redis_one_step_record_is_the_stored_json(shared_redis: RedisServer) -> None:
    prefix = f"rec-{uuid.uuid4().hex[:8]}"
    log = Log()
    broker = RedisBroker(shared_redis.url, prefix=prefix)
    await broker.start(log.apply, log.answer)
    store = RedisIdempotencyStore(shared_redis.url, prefix=prefix, ttl=60)
    p = Publisher(broker)
    try:
        body = StoredResponse(200, '{"ok":true,"note":"é \\" \\n"}')
        assert (await store.apply_once("k", FP, body, p.publish, p.guarded)).state == "new"
        keys = await store._redis.keys(f"{prefix}:idempotency:*")
        value = json.loads(await store._redis.get(keys[0]))
        assert value == {"fp": FP, "status": 200, "body": body.body, "type": "application/json"}
        assert 59_000 < await store._redis.pttl(keys[0]) <= 60_000
        assert log.applied == [p.commands]
    finally:
        await store.close()
        await broker.close()


# ---------------------------------------------------------------- the API glue


class FakeNode:
    """What Idempotency.bind reads: a publish, and a broker (no guarded publish)."""

    def __init__(self) -> None:
        self.broker = object()
        self.published: list[Sequence[Command]] = []
        self.fail: Exception | None = None

    async def publish(self, commands: Sequence[Command]) -> None:
        if self.fail is not None:
            raise self.fail
        self.published.append(commands)


def request(key: str | None, body: bytes = b'{"event":"a"}') -> Request:
    headers = {} if key is None else {"idempotency-key": key}
    return Request("POST", "/v1/emit", "", headers, body)


def plan(request: Request) -> OnePublish | None:
    body = json.loads(request.body)
    if "bad" in body:
        raise ApiError(400, "invalid_field", "bad")
    if "ack" in body:
        return None
    return OnePublish(emit(body.get("n", 0)), Response(200, b'{"ok":true}'))


async def never() -> Response:
    raise AssertionError("the one-step path does not call the route handler")


async def test_api_one_step_publishes_once_and_replays() -> None:
    node = FakeNode()
    idem = Idempotency(MemoryIdempotencyStore())
    idem.bind(node)  # type: ignore[arg-type]
    answers = await asyncio.gather(*(idem.run(request("k"), never, plan) for _ in range(10)))
    assert node.published == [emit(0)]
    replayed = [a for a in answers if ("idempotent-replayed", "true") in a.headers]
    assert len(replayed) == 9
    assert {(a.status, a.body) for a in answers} == {(200, b'{"ok":true}')}
    reused = await idem.run(request("k", b'{"n":1}'), never, plan)
    assert reused.status == 422


async def test_api_invalid_request_goes_the_general_way() -> None:
    # A reused key is 422 whatever the new body is; an invalid body under a new key is
    # the route's own error, and the key stays free.
    node = FakeNode()
    idem = Idempotency(MemoryIdempotencyStore())
    idem.bind(node)  # type: ignore[arg-type]
    assert (await idem.run(request("k"), never, plan)).status == 200
    assert (await idem.run(request("k", b'{"bad":1}'), never, plan)).status == 422

    async def route_error() -> Response:
        return Response(400, b"{}")

    assert (await idem.run(request("k2", b'{"bad":1}'), route_error, plan)).status == 400
    assert (await idem.run(request("k2", b'{"n":2}'), never, plan)).status == 200
    assert node.published == [emit(0), emit(2)]


async def test_api_ack_emits_keep_the_two_steps() -> None:
    # Not one publish (its answer is the acks): a repeat meanwhile is 409.
    idem = Idempotency(MemoryIdempotencyStore())
    idem.bind(FakeNode())  # type: ignore[arg-type]
    go = asyncio.Event()

    async def slow() -> Response:
        await go.wait()
        return Response(200, b'{"acks":[]}')

    body = b'{"ack":{"timeout_ms":100}}'
    first = asyncio.create_task(idem.run(request("k", body), slow, plan))
    await asyncio.sleep(0.01)
    assert (await idem.run(request("k", body), slow, plan)).status == 409
    go.set()
    assert (await first).body == b'{"acks":[]}'


async def test_api_one_step_broker_down_propagates_and_frees_the_key() -> None:
    node = FakeNode()
    idem = Idempotency(MemoryIdempotencyStore())
    idem.bind(node)  # type: ignore[arg-type]
    node.fail = BrokerUnavailable("down")
    with pytest.raises(BrokerUnavailable):  # the API answers it 503 (see routes._call)
        await idem.run(request("k"), never, plan)
    node.fail = None
    response = await idem.run(request("k"), never, plan)
    assert response.status == 200 and not response.headers


@pytest.mark.parametrize("parts", [1, 2])
def test_a_guarded_publish_is_packed_as_its_evalsha(parts: int) -> None:
    # One part is packed by a single format (the common case), several piece by piece:
    # both must be the RESP array of EVALSHA sha 1 key value ttl (kind channel data)...
    from siogate.broker import redis as broker_redis

    guarded = broker_redis._Guarded(Guard("p:idempotency:k\u00e9y", '{"fp":"x"}', 86_400_000))
    for i in range(parts):
        guarded.args += (b"SPUBLISH", b"p:s:%d" % i, b"data \r\n %d" % i)
    args = [
        b"EVALSHA",
        broker_redis.GUARDED_PUBLISH_SHA,
        b"1",
        "p:idempotency:k\u00e9y".encode(),
        b'{"fp":"x"}',
        b"86400000",
        *guarded.args,
    ]
    expected = b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)
    broker = RedisBroker.__new__(RedisBroker)
    assert broker._pack((guarded, b"", None, None, None)) == expected
