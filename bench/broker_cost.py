"""What cluster mode's single command channel costs a node, and what per-room channels would.

Every node receives every command (one ``<prefix>:commands`` channel). The price is paid
by nodes that hold none of the target sockets: they decode the command and find nobody.
This measures that price, then the price of the alternative, channels per room, where a
node subscribes when a room gains its first local member and must have the subscription
confirmed before that member may count as joined (otherwise an emit sent right after a
join can be missed, see docs/architecture.md).

    .venv/bin/python bench/broker_cost.py [--messages 20000]

It starts its own redis-server on a spare port (``cluster.Redis``, pinned to core 0 with
the publisher) and stops it at the end; the measured node runs on core 1.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
from cluster import Redis
from run import LOADGEN_CORE, SERVER_CORE

from siogate.app import build
from siogate.broker import EmitCommand, MemoryBroker, wire
from siogate.broker.redis import RedisBroker
from siogate.config import Settings
from siogate.types import Namespace, Room

SIZES = (100, 1_000, 10_000)


def command(size: int, i: int) -> EmitCommand:
    payload = {"seq": i, "text": "x" * size}
    return EmitCommand(Namespace("/"), "news", [payload], rooms=(Room("elsewhere"),))


def in_process_cost(messages: int) -> dict[int, float]:
    """Microseconds to decode and apply one command that matches no local socket."""
    gateway = build(Settings(api_key="k" * 32, jwt_secret="s" * 32), broker=MemoryBroker())
    node = gateway.node
    out = {}
    for size in SIZES:
        data = [wire.encode_commands("other", [command(size, i)]) for i in range(messages)]
        started = time.perf_counter()
        for message in data:
            node.apply(wire.decode_commands(wire.decode(message)))
        out[size] = (time.perf_counter() - started) / messages * 1e6
    return out


def _publish(url: str, channel: str, size: int, messages: int) -> None:
    os.sched_setaffinity(0, {SERVER_CORE})  # with Redis, away from the measured node

    async def run() -> None:
        client = aioredis.Redis.from_url(url)
        data = [wire.encode_commands("other", [command(size, i)]) for i in range(messages)]
        for start in range(0, messages, 200):
            async with client.pipeline(transaction=False) as pipe:
                for message in data[start : start + 200]:
                    pipe.publish(channel, message)
                await pipe.execute()
        await client.aclose()

    asyncio.run(run())


async def through_redis(url: str, messages: int) -> dict[int, tuple[float, float]]:
    """(CPU us per message, messages/s) for a node absorbing irrelevant commands."""
    out = {}
    for size in SIZES:
        # Redis disconnects a subscriber more than 32 MB behind (client-output-buffer-limit
        # pubsub): keep each burst well under that.
        count = min(messages, 5_000_000 // size)
        seen = 0
        done = asyncio.Event()

        def handler(_commands: object, count: int = count, done: asyncio.Event = done) -> None:
            nonlocal seen
            seen += 1
            if seen == count:
                done.set()

        prefix = f"bench-{size}"
        broker = RedisBroker(url, prefix=prefix)
        await broker.start(handler, lambda _q: None)
        publisher = multiprocessing.Process(
            target=_publish, args=(url, f"{prefix}:commands", size, count)
        )
        cpu0, wall0 = time.process_time(), time.perf_counter()
        publisher.start()
        await asyncio.wait_for(done.wait(), 60)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        publisher.join()
        await broker.close()
        out[size] = (cpu / count * 1e6, count / wall)
    return out


async def subscribe_cost(url: str, rooms: int) -> float:
    """Microseconds per confirmed SUBSCRIBE + UNSUBSCRIBE of one room channel."""
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.subscribe("bench:warm")
    await pubsub.get_message(timeout=1)
    started = time.perf_counter()
    for i in range(rooms):
        channel = f"bench:room:{i}"
        await pubsub.subscribe(channel)
        while (m := await pubsub.get_message(timeout=1)) is None or m["type"] != "subscribe":
            pass
    for i in range(rooms):
        await pubsub.unsubscribe(f"bench:room:{i}")
        while (m := await pubsub.get_message(timeout=1)) is None or m["type"] != "unsubscribe":
            pass
    elapsed = time.perf_counter() - started
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await client.aclose()
    return elapsed / rooms * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rooms", type=int, default=5_000)
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOADGEN_CORE})
    with tempfile.TemporaryDirectory() as logs:
        redis = Redis(Path(logs) / "redis-server.log")
        try:
            local = in_process_cost(args.messages)
            remote = asyncio.run(through_redis(redis.url, args.messages))
            churn = asyncio.run(subscribe_cost(redis.url, args.rooms))
        finally:
            redis.stop()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.messages} messages")
    print("| payload | decode + apply, no local recipient | through Redis: node CPU | absorbed |")
    print("|---|---|---|---|")
    for size in SIZES:
        cpu, rate = remote[size]
        print(f"| {size:,} B | {local[size]:.1f} us | {cpu:.1f} us | {rate:,.0f} msg/s |")
    print(f"per-room channel: confirmed SUBSCRIBE + UNSUBSCRIBE = {churn:.1f} us per room")


if __name__ == "__main__":
    main()
