"""What cross-node recovery's Redis half (siogate.broker.streams) costs Redis.

Starts its own redis-server on a free loopback port (stopped by PID at the end) and
measures, alternating rep by rep:

1. publish rate: N one-command messages published as today (pipelined PUBLISH, the
   peer) against the same messages logged and published in one script
   (``append_and_publish``), with ``--inflight`` calls in flight, in batches of
   ``--batch`` commands per call (the broker's writer sends what queued meanwhile);
   and redis-server's own CPU time per message (INFO cpu), which does not depend on
   how fast this Python client is;
2. Redis memory per logged message (``MEMORY USAGE`` of the stream over its length,
   about 100 bytes of arguments each) and per session record (a socket with 3 rooms).

    .venv/bin/python bench/recovery_redis_cost.py [--messages 20000] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

from redis.asyncio import Redis

from siogate.broker import EmitCommand, wire
from siogate.broker.streams import Outbound, RedisRecoveryLog, Session
from siogate.types import Namespace, Room, Sid

NS = Namespace("/")
ARGS = [{"text": "x" * 80, "n": 1}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def publish_plain(redis: Redis, batches: list[list[EmitCommand]], inflight: int) -> float:
    async def one(batch: list[EmitCommand]) -> None:
        async with redis.pipeline(transaction=False) as pipe:
            for c in batch:
                pipe.publish("b:commands", wire.encode_commands("n1", [c]))
            await pipe.execute()

    return await _run(one, batches, inflight)


async def publish_logged(
    log: RedisRecoveryLog, batches: list[list[EmitCommand]], inflight: int
) -> float:
    async def one(batch: list[EmitCommand]) -> None:
        out = [
            Outbound("b:commands", False, wire.encode_commands("n1", [c]), (i,))
            for i, c in enumerate(batch)
        ]
        await log.append_and_publish(batch, out, int(time.time() * 1000))

    return await _run(one, batches, inflight)


async def _run(one: object, batches: list[list[EmitCommand]], inflight: int) -> float:
    queue = list(reversed(batches))

    async def worker() -> None:
        while queue:
            await one(queue.pop())  # type: ignore[operator]

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    tmp = tempfile.mkdtemp()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        redis = Redis.from_url(f"redis://127.0.0.1:{port}/0")
        for _ in range(100):
            try:
                await redis.ping()
                break
            except Exception:
                await asyncio.sleep(0.05)
        log = RedisRecoveryLog(redis, prefix="b", node="n1", window=120, max_log=10_000_000)
        commands = [
            EmitCommand(NS, "news", ARGS, (Room(f"r{i % 100}"),)) for i in range(args.messages)
        ]
        batches = [commands[i : i + args.batch] for i in range(0, len(commands), args.batch)]
        plain: list[float] = []
        logged: list[float] = []
        cpu_plain: list[float] = []
        cpu_logged: list[float] = []

        async def redis_cpu() -> float:
            info = await redis.info("cpu")
            return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

        for _ in range(args.reps):
            await redis.flushdb()
            before = await redis_cpu()
            plain.append(await publish_plain(redis, batches, args.inflight))
            cpu_plain.append((await redis_cpu() - before) / args.messages * 1e6)
            await redis.flushdb()
            before = await redis_cpu()
            logged.append(await publish_logged(log, batches, args.inflight))
            cpu_logged.append((await redis_cpu() - before) / args.messages * 1e6)
        p, q = statistics.median(plain), statistics.median(logged)
        print(
            f"messages {args.messages}, batch {args.batch},",
            f"in flight {args.inflight}, reps {args.reps}",
        )
        print(f"PUBLISH only:        {p:10,.0f} msgs/s  (reps {[round(x) for x in plain]})")
        print(f"log + PUBLISH (Lua): {q:10,.0f} msgs/s  (reps {[round(x) for x in logged]})")
        print(f"ratio logged/plain:  {q / p:.2f}")
        a, b = statistics.median(cpu_plain), statistics.median(cpu_logged)
        print(f"redis-server CPU per message: PUBLISH only {a:.1f} us, logged {b:.1f} us")
        length = await redis.xlen(log.log_key(NS))
        usage = await redis.memory_usage(log.log_key(NS), samples=0)
        print(f"stream: {length} entries, {usage:,} bytes, {usage / length:.0f} bytes per message")
        rooms = {Room("a"), Room("b"), Room("user:u1")}
        session = Session(
            Sid("n1abcdef-0123456789abcdef"), NS, "u1", rooms, "1-0", "1-0", [], "1-0", 1.9e9
        )
        for i in range(1000):
            await log.save(f"{i:022d}", session)
        per = statistics.median(
            [await redis.memory_usage(log.session_key(f"{i:022d}"), samples=0) for i in range(1000)]
        )
        print(f"session record (3 rooms): {per:,.0f} bytes")
        await redis.aclose()
    finally:
        server.terminate()
        server.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(main(parser.parse_args()))
