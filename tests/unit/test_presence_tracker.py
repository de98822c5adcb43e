"""Presence trackers at the store level: the in-memory one, and several Redis ones (as
several nodes) on one real Redis. End to end through real nodes:
``tests/integration/test_presence_webhooks.py``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from conftest import RedisServer
from siogate.presence_tracker import MemoryPresenceTracker, PresenceCounts, RedisPresenceTracker
from siogate.types import Namespace, UserId

NS = Namespace("/")
ANN = UserId("ann")
Seen = list[tuple[str, str, str, str]]  # (node, kind, namespace, user)


async def test_memory_tracker_reports_first_and_last_socket() -> None:
    seen: list[tuple[str, str, str]] = []
    tracker = MemoryPresenceTracker()
    await tracker.start(lambda kind, ns, user: seen.append((kind, ns, user)))
    tracker.add(NS, ANN)
    tracker.add(NS, ANN)
    tracker.add(Namespace("/chat"), ANN)
    tracker.remove(NS, ANN)
    assert seen == [("user.online", "/", "ann"), ("user.online", "/chat", "ann")]
    tracker.remove(NS, ANN)
    tracker.remove(NS, ANN)  # one too many: ignored
    assert seen[2:] == [("user.offline", "/", "ann")]
    await tracker.close()  # the user still on /chat goes offline with the node
    assert seen[3:] == [("user.offline", "/chat", "ann")]


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[Callable[[str], RedisPresenceTracker]]:
    """``await make(node_id)``: a started tracker, its transitions recorded in ``seen``."""
    made: list[RedisPresenceTracker] = []

    def make(node: str) -> RedisPresenceTracker:
        # A long TTL: the reapers run only when a test calls _reap_once.
        tracker = RedisPresenceTracker(redis_server.url, prefix="t", node_id=node, node_ttl=600)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        await tracker.close()


async def started(tracker: RedisPresenceTracker, seen: Seen) -> RedisPresenceTracker:
    node = tracker.node_id
    await tracker.start(lambda kind, ns, user: seen.append((node, kind, ns, user)))
    return tracker


async def register(redis: Redis, *nodes: str) -> None:
    """Put ``nodes`` in the registry as the broker would, alive for a minute."""
    await redis.zadd("t:nodes", {node: time.time() + 60 for node in nodes})


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def written(*trackers: RedisPresenceTracker) -> None:
    await asyncio.sleep(0.05)
    await until(lambda: all(not t._queue and not t._dirty for t in trackers))
    await asyncio.sleep(0.05)


async def test_sockets_on_two_nodes_make_one_online_and_one_offline(
    redis_server: RedisServer, nodes: Callable[[str], RedisPresenceTracker]
) -> None:
    seen: Seen = []
    a, b = await started(nodes("a"), seen), await started(nodes("b"), seen)
    a.add(NS, ANN)
    await written(a)
    b.add(NS, ANN)
    b.add(NS, ANN)
    b.remove(NS, ANN)
    await written(b)
    a.remove(NS, ANN)
    await written(a)
    assert seen == [("a", "user.online", "/", "ann")]
    b.remove(NS, ANN)
    await written(b)
    assert seen[1:] == [("b", "user.offline", "/", "ann")]


async def test_connect_and_leave_within_one_batch_still_make_a_pair(
    redis_server: RedisServer, nodes: Callable[[str], RedisPresenceTracker]
) -> None:
    seen: Seen = []
    a = await started(nodes("a"), seen)
    a.add(NS, ANN)
    a.remove(NS, ANN)
    await written(a)
    assert [kind for _, kind, _, _ in seen] == ["user.online", "user.offline"]


async def test_a_dead_node_is_reaped_once_and_a_live_one_never(
    redis_server: RedisServer, nodes: Callable[[str], RedisPresenceTracker]
) -> None:
    redis = Redis.from_url(redis_server.url)
    seen: Seen = []
    a, b, c = [await started(nodes(n), seen) for n in "abc"]
    await register(redis, "a", "b", "c")
    bob = UserId("bob")
    b.add(NS, ANN)
    b.add(NS, bob)
    a.add(NS, bob)
    await written(a, b)
    del seen[:]
    await asyncio.gather(a._reap_once(), c._reap_once())
    assert seen == []  # b is registered: alive
    await redis.zrem("t:nodes", "b")  # b's registration lapsed (killed)
    await asyncio.gather(a._reap_once(), c._reap_once(), a._reap_once())
    assert [(kind, user) for _, kind, _, user in seen] == [("user.offline", "ann")]
    assert await redis.hgetall('t:presence:["/","bob"]') == {b"a": b"1"}
    await redis.aclose()


async def test_a_node_reaped_while_alive_writes_its_counts_again(
    redis_server: RedisServer, nodes: Callable[[str], RedisPresenceTracker]
) -> None:
    redis = Redis.from_url(redis_server.url)
    seen: Seen = []
    a, b = await started(nodes("a"), seen), await started(nodes("b"), seen)
    await register(redis, "a")  # b's registration lapsed (a long Redis outage, say)
    b.add(NS, ANN)
    await written(b)
    await a._reap_once()
    await register(redis, "b")
    await b._reap_once()  # b finds the mark a left and writes its state again
    await written(b)
    assert [(node, kind) for node, kind, _, _ in seen] == [
        ("b", "user.online"),
        ("a", "user.offline"),
        ("b", "user.online"),
    ]
    b.remove(NS, ANN)
    await written(b)
    assert seen[3][:2] == ("b", "user.offline")
    await redis.aclose()


async def test_writes_missed_while_redis_was_down_are_synced_when_it_returns(
    redis_server: RedisServer, nodes: Callable[[str], RedisPresenceTracker]
) -> None:
    seen: Seen = []
    a = await started(nodes("a"), seen)
    a.add(NS, ANN)
    await written(a)
    redis_server.stop()
    a.remove(NS, ANN)
    a.add(NS, UserId("bob"))
    await until(lambda: a._dirty)
    redis_server.start()  # the same data (the test server keeps no dump: empty)
    await written(a)
    kinds = [(kind, user) for _, kind, _, user in seen]
    assert kinds[0] == ("user.online", "ann") and ("user.online", "bob") in kinds


async def test_counts_lost_by_a_redis_restart_are_written_again(
    redis_server: RedisServer, nodes: Callable[[str], RedisPresenceTracker]
) -> None:
    seen: Seen = []
    a = await started(nodes("a"), seen)
    a.add(NS, ANN)
    await written(a)
    redis_server.stop()
    redis_server.start()  # empty, and no write of a's failed meanwhile
    with contextlib.suppress(RedisError):
        await a._reap_once()  # the pooled connection died with the old server
    assert not a._dirty
    await a._reap_once()  # finds its counts gone
    await written(a)
    assert [kind for _, kind, _, _ in seen] == ["user.online", "user.online"]
    a.remove(NS, ANN)
    await written(a)
    assert seen[2][1] == "user.offline"


def test_counts_kept_for_workers_report_each_transition_once() -> None:
    """The primary's counts (serve --workers without Redis): a transition goes back to
    the worker whose change crossed 0, and a gone worker's users come out offline."""
    counts = PresenceCounts()
    assert counts.apply("w1", [("/", "ann", 1), ("/", "bob", 1)]) == [
        ("user.online", "/", "ann"),
        ("user.online", "/", "bob"),
    ]
    assert counts.apply("w2", [("/", "ann", 1), ("/chat", "ann", 1)]) == [
        ("user.online", "/chat", "ann")  # presence is per namespace
    ]
    assert counts.apply("w1", [("/", "ann", -1)]) == []  # still on w2
    assert counts.apply("w1", [("/", "ann", -1)]) == []  # a stray remove changes nothing
    assert counts.drop("w2") == [("user.offline", "/", "ann"), ("user.offline", "/chat", "ann")]
    assert counts.drop("w2") == []
    assert counts.apply("w1", [("/", "bob", 1), ("/", "bob", -1), ("/", "bob", -1)]) == [
        ("user.offline", "/", "bob")
    ]
    assert counts.drop("w1") == []
