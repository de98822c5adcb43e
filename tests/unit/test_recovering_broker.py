"""The Redis broker with recovery on (``siogate.broker.recovering``): its publishes are
logged and published by one script that runs in the broker's publish pipeline.

Against a real redis-server, two brokers on one prefix; what a client sees through real
``siogate serve`` processes is in ``tests/integration/test_recovery_cluster.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from conftest import RedisServer
from siogate.broker import BrokerUnavailable, Command, EmitCommand, Query
from siogate.broker.recovering import RecoveringRedisBroker
from siogate.broker.streams import parse_offset
from siogate.types import Namespace


def emit(n: int) -> list[Command]:
    return [EmitCommand(Namespace("/"), "seq", [n])]


class Log:
    """What a node's broker hands to its hub."""

    def __init__(self) -> None:
        self.applied: list[Command] = []
        self.changed = asyncio.Event()

    def apply(self, commands: Sequence[Command]) -> None:
        self.applied += commands
        self.changed.set()

    def answer(self, query: Query) -> Any:
        return None

    async def wait(self, n: int) -> list[Command]:
        async with asyncio.timeout(5):
            while len(self.applied) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.applied


Pair = tuple[RecoveringRedisBroker, Log, RecoveringRedisBroker, Log]


@pytest.fixture
async def pair(shared_redis: RedisServer) -> AsyncIterator[Pair]:
    prefix = f"rbroker-{uuid.uuid4().hex[:8]}"
    a, b = Log(), Log()
    options = {"window": 60.0, "max_log": 10_000, "max_missed": 1_000, "prefix": prefix}
    one = RecoveringRedisBroker(shared_redis.url, **options)  # type: ignore[arg-type]
    two = RecoveringRedisBroker(shared_redis.url, **options)  # type: ignore[arg-type]
    await one.start(a.apply, a.answer)
    await two.start(b.apply, b.answer)
    yield one, a, two, b
    await one.close()
    await two.close()


def seqs(commands: Sequence[Command]) -> list[int]:
    return [c.args[0] for c in commands]  # type: ignore[union-attr]


async def test_concurrent_publishes_are_applied_everywhere_in_log_order(pair: Pair) -> None:
    one, a, two, b = pair
    offsets = await asyncio.gather(*((one, two)[n % 2].publish_logged(emit(n)) for n in range(40)))
    # Each call answers its own offset, once it has been applied on its own node.
    points = [parse_offset(o) for [o] in offsets]
    assert None not in points and len(set(points)) == 40
    await a.wait(40)
    await b.wait(40)
    # Both nodes applied the same commands in the same order: the log's.
    by_offset = sorted(range(40), key=lambda n: points[n])  # type: ignore[arg-type,return-value]
    assert seqs(a.applied) == seqs(b.applied) == by_offset
    assert [c.offset for c in a.applied] == [offsets[n][0] for n in by_offset]
    assert one.applied_out_of_order == two.applied_out_of_order == 0


async def test_a_forgotten_script_is_loaded_again(pair: Pair) -> None:
    # Redis restarted, or SCRIPT FLUSH: EVALSHA answers NOSCRIPT; the publishes still go,
    # each once, in order.
    one, a, _, b = pair
    assert one._redis is not None
    await one._redis.script_flush()
    offsets = await asyncio.gather(*(one.publish_logged(emit(n)) for n in range(5)))
    assert [len(o) for o in offsets] == [1] * 5
    assert seqs(await b.wait(5)) == seqs(a.applied) == list(range(5))


async def test_a_publish_redis_refuses_fails_and_is_not_waited_for(pair: Pair) -> None:
    one, a, _, b = pair
    assert one._redis is not None and one.log is not None
    # The log key holding another type: XADD answers WRONGTYPE, the script fails.
    key = one.log.log_key("/")
    await one._redis.set(key, "not a stream")
    with pytest.raises(BrokerUnavailable):
        await one.publish_logged(emit(1))
    assert one._waiting == {}
    assert a.applied == []
    await one._redis.delete(key)
    [offset] = await one.publish_logged(emit(2))
    assert parse_offset(offset) is not None
    assert seqs(await b.wait(1)) == [2]


def test_the_log_is_trimmed_by_age_at_most_once_a_second_per_node() -> None:
    from redis.asyncio import Redis

    from siogate.broker import wire
    from siogate.broker.streams import Outbound, RedisRecoveryLog

    log = RedisRecoveryLog(Redis(), prefix="p", node="n", window=30.0, max_log=500)
    [command] = emit(7)
    entry = wire.encode_commands("n", [command])
    out = Outbound("p:c", False, entry[:-1] + b',"req":"ab"}', (0,))

    def packed(now_ms: int) -> bytes:
        return log.pack_append_publish([command], [out], now_ms, entries=[entry])[0]

    assert b"$8\r\n970000-0\r\n" in packed(1_000_000)
    # Within the second: no age bound (an empty argument), so the script skips XTRIM.
    within = packed(1_000_999)
    assert b"970999-0" not in within and b"\r\n$0\r\n\r\n" in within
    assert b"$8\r\n971000-0\r\n" in packed(1_001_000)


def test_an_own_message_tail_is_read_without_decoding_the_rest() -> None:
    from siogate.broker.recovering import own_echo

    body = b'{"v":1,"commands":[{"args":[{"req":"x","s":",\\"req\\":\\""}]}]'
    tail = b',"req":"0123456789abcdef","offsets":["17-0","17-1"]}'
    assert own_echo(body[:-1] + tail) == ("0123456789abcdef", ["17-0", "17-1"])
    # Anything else is left to the full decoder.
    assert own_echo(body) is None
    assert own_echo(body[:-1] + tail.replace(b'"17-1"', b'"x"')) is None
    assert own_echo(body[:-1] + tail.replace(b"]}", b"}")) is None
    assert own_echo(body[:-1] + b',"req":"0123456789abcdef"}') is None
