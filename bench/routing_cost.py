"""What an emit costs the nodes that hold none of its recipients, broadcast vs sharded routing.

Four real ``siogate serve`` nodes on one Redis. The recipients (a few python-socketio
clients) are all on node 0. Emits are published through node 0 ("via owner") or through
node 1 ("via node 1", which then also pays for the HTTP request). Nodes that neither
hold a recipient nor took the request are bystanders: whatever CPU they spend during the
run beyond their idle rate (heartbeats) is the price of routing. Two kinds of emit: to a
named room, and to a socket id. Then room churn: a socket on node 0 joins a fresh room
(one whose shard node 0 has not subscribed) and leaves it again, through node 1: the
join's latency and the CPU of every node per join + leave.

    .venv/bin/python bench/routing_cost.py [--messages 4000] [--reps 3] [--churn 200]

Redis and node 0 run on core 0; the other nodes and this process (publisher and
clients) on core 1: with everything of the recipients' side on one core, the clients fell
behind and node 0 cut them as slow consumers. Each run checks that every emit arrived.
Each (routing, rep) gets a fresh Redis and fresh nodes; the routings alternate. CPU time
is read from /proc/<pid>/stat (10 ms ticks), so runs are sized to take seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import socketio
from cluster import Redis
from run import LOADGEN_CORE, SERVER_CORE, free_port

from siogate.broker.routing import shard_of
from siogate.types import Namespace, Room

ROOT = Path(__file__).resolve().parent.parent
API_KEY = secrets.token_urlsafe(32)
JWT_SECRET = secrets.token_urlsafe(32)
HEADERS = {"Authorization": f"Bearer {API_KEY}"}
TICK = os.sysconf("SC_CLK_TCK")
CONCURRENCY = 16
CLIENTS = 2


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


class Node:
    def __init__(self, redis_url: str, routing: str, core: int, log_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [
            "taskset", "-c", str(core), sys.executable, "-m", "siogate", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--api-key", API_KEY, "--jwt-secret", JWT_SECRET, "--allow-anonymous",
            "--redis-url", redis_url, "--cluster-routing", routing,
            "--max-connections-per-ip", "0", "--log-level", "warning",
        ]  # fmt: skip
        self.log_path = log_dir / f"node-{self.port}.log"
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).json()["status"] == "ok":
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"node on {self.port} did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def blast(api: httpx.AsyncClient, url: str, bodies: list[dict[str, Any]]) -> None:
    queue = iter(bodies)

    async def worker() -> None:
        for body in queue:
            r = await api.post(f"{url}/v1/emit", json=body)
            r.raise_for_status()

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def measure(pids: list[int], idle: list[float], work: Any) -> tuple[float, list[float]]:
    """Run ``work``; (wall seconds, CPU seconds of each process beyond its idle rate)."""
    before = [cpu_seconds(p) for p in pids]
    started = time.perf_counter()
    await work
    await asyncio.sleep(0.3)  # let the bystanders drain what Redis still holds for them
    wall = time.perf_counter() - started
    used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
    return wall, [max(0.0, u - rate * wall) for u, rate in zip(used, idle, strict=True)]


def fresh_rooms(count: int, taken: set[int]) -> list[str]:
    rooms: list[str] = []
    i = 0
    while len(rooms) < count:
        name = f"churn-{os.getpid()}-{i}"
        i += 1
        shard = shard_of(Namespace("/"), Room(name))
        if shard not in taken:
            taken.add(shard)
            rooms.append(name)
    return rooms


async def one_run(routing: str, opts: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    redis = Redis(log_dir / f"redis-{routing}.log")
    nodes = [
        Node(redis.url, routing, SERVER_CORE if i == 0 else LOADGEN_CORE, log_dir) for i in range(4)
    ]
    clients: list[socketio.AsyncClient] = []
    received = [0] * CLIENTS
    dropped = [0]
    try:
        for node in nodes:
            node.wait_ready()
        await asyncio.sleep(1.0)  # every node registered and subscribed
        owner = nodes[0]
        for n in range(CLIENTS):
            client = socketio.AsyncClient(reconnection=False)

            def count(*_: Any, n: int = n) -> None:
                received[n] += 1

            client.on("e", count)
            client.on("disconnect", lambda *_: dropped.__setitem__(0, dropped[0] + 1))
            await client.connect(owner.url, transports=["websocket"], wait_timeout=10)
            clients.append(client)
        sids = [c.get_sid("/") for c in clients]
        room = "bench-room"
        async with httpx.AsyncClient(headers=HEADERS, timeout=30) as api:
            r = await api.post(f"{owner.url}/v1/join", json={"sockets": sids, "room": room})
            r.raise_for_status()
            # Idle rate of every node (heartbeats, pings) and Redis over a quiet window.
            pids = [n.proc.pid for n in nodes] + [redis.pid]
            before = [cpu_seconds(p) for p in pids]
            await asyncio.sleep(opts.idle)
            idle = [(cpu_seconds(p) - b) / opts.idle for p, b in zip(pids, before, strict=True)]
            text = "x" * opts.payload
            out: dict[str, Any] = {"routing": routing, "idle_cpu_pct": [100 * i for i in idle]}
            for kind, target, via in (
                ("room via owner", room, owner),
                ("room via node 1", room, nodes[1]),
                ("socket id via node 1", sids[0], nodes[1]),
            ):
                bodies = [
                    {"event": "e", "data": {"seq": i, "text": text}, "rooms": [target]}
                    for i in range(opts.messages)
                ]
                wall, cpu = await measure(pids, idle, blast(api, via.url, bodies))
                out[kind] = {
                    "msgs_per_s": opts.messages / wall,
                    "us_per_msg": [1e6 * c / opts.messages for c in cpu[:4]],
                    "redis_us_per_msg": 1e6 * cpu[4] / opts.messages,
                }
            # Churn: join (through node 1) a socket of node 0 to a room in a shard node 0
            # has not subscribed, then leave it.
            api_node = nodes[1]
            rooms = fresh_rooms(opts.churn, {shard_of(Namespace("/"), Room(room))})
            latencies: list[float] = []

            async def churn() -> None:
                for name in rooms:
                    t0 = time.perf_counter()
                    body = {"sockets": [sids[0]], "room": name}
                    (await api.post(f"{api_node.url}/v1/join", json=body)).raise_for_status()
                    latencies.append(time.perf_counter() - t0)
                    (await api.post(f"{api_node.url}/v1/leave", json=body)).raise_for_status()

            wall, cpu = await measure(pids, idle, churn())
            latencies.sort()
            out["churn"] = {
                "join_ms_p50": 1e3 * statistics.median(latencies),
                "join_ms_p99": 1e3 * latencies[int(0.99 * (len(latencies) - 1))],
                "us_per_join_leave": [1e6 * c / len(rooms) for c in cpu[:4]],
                "redis_us_per_join_leave": 1e6 * cpu[4] / len(rooms),
            }
            # Every emit reached its recipients: rooms all clients, the socket id client 0.
            expected = [3 * opts.messages] + [2 * opts.messages] * (CLIENTS - 1)
            for _ in range(50):  # the clients may still be reading
                if sum(received) >= sum(expected):
                    break
                await asyncio.sleep(0.1)
            out["client_disconnects"] = dropped[0]
            out["missing"] = sum(e - r for e, r in zip(expected, received, strict=True))
            out["log_warnings"] = [
                line
                for node in nodes
                for line in node.log_path.read_text(errors="replace").splitlines()
                if "WARNING" in line or "ERROR" in line
            ][:5]
            metrics = httpx.get(f"{owner.url}/metrics", headers=HEADERS).text
            out["owner_shards_after"] = next(
                (float(line.split()[1]) for line in metrics.splitlines()
                 if line.startswith("siogate_broker_shards ")), None,
            )  # fmt: skip
        return out
    finally:
        for client in clients:
            await client.disconnect()
        for node in nodes:
            node.stop()
        redis.stop()


def median_list(values: list[list[float]]) -> list[float]:
    return [statistics.median(col) for col in zip(*values, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--payload", type=int, default=1000, help="bytes of text per emit")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--churn", type=int, default=200, help="join + leave pairs")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle baseline")
    opts = parser.parse_args()
    os.sched_setaffinity(0, {LOADGEN_CORE})
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="routing-cost-") as tmp:  # node logs
        for rep in range(opts.reps):
            for routing in ("broadcast", "sharded"):
                try:
                    result = asyncio.run(one_run(routing, opts, Path(tmp)))
                except Exception as exc:  # reported, not fatal: the other runs still count
                    print(json.dumps({"routing": routing, "rep": rep, "error": repr(exc)}))
                    continue
                result["rep"] = rep
                print(json.dumps(result), flush=True)
                runs.append(result)
    print(f"\nmedians of {opts.reps} reps; node 0 holds the recipients; us of CPU per message")
    for kind in ("room via owner", "room via node 1", "socket id via node 1"):
        of = {r: [x[kind] for x in runs if x["routing"] == r] for r in ("broadcast", "sharded")}
        if not of["broadcast"] or not of["sharded"]:
            continue
        by = {r: median_list([x["us_per_msg"] for x in v]) for r, v in of.items()}
        redis_us = {r: statistics.median(x["redis_us_per_msg"] for x in v) for r, v in of.items()}
        first = 1 if kind.endswith("owner") else 2
        bystanders = {r: statistics.mean(v[first:]) for r, v in by.items()}
        ratio = bystanders["sharded"] / bystanders["broadcast"] if bystanders["broadcast"] else 0
        print(
            f"{kind}: bystanders (nodes {first}-3) broadcast {bystanders['broadcast']:.1f} us, "
            f"sharded {bystanders['sharded']:.1f} us ({100 * ratio:.1f}%); per node "
            f"broadcast {[round(v) for v in by['broadcast']]}, "
            f"sharded {[round(v) for v in by['sharded']]}; "
            f"Redis {redis_us['broadcast']:.1f} / {redis_us['sharded']:.1f} us"
        )
    for r in ("broadcast", "sharded"):
        c = [x["churn"] for x in runs if x["routing"] == r]
        print(
            f"churn {r:9}: join p50 {statistics.median(x['join_ms_p50'] for x in c):.2f} ms, "
            f"p99 {statistics.median(x['join_ms_p99'] for x in c):.2f} ms; us per join+leave "
            f"by node {[round(v) for v in median_list([x['us_per_join_leave'] for x in c])]}"
        )


if __name__ == "__main__":
    main()
