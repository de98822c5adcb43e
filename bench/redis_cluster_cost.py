"""What a Redis Cluster costs per emit, against one standalone Redis, in the same run.

Two real ``siogate serve`` nodes; the recipients (two python-socketio clients) on node 0,
emits of 1 KB posted to node 1, to a room (``SPUBLISH`` on a shard channel) and to a
socket id (``PUBLISH`` on node 0's channel). Once on a standalone redis-server, once on
a 3-primary Redis Cluster (``redis-cli --cluster create``, no replicas) where the
deployment lives on the primary owning its slot (docs/cluster.md, "Redis Cluster"). CPU
per emit of each node and each redis-server beyond its idle rate; the other primaries
show what ``PUBLISH``'s copies over the cluster bus cost them.

    .venv/bin/python bench/redis_cluster_cost.py [--messages 3000] [--reps 2]

Redis servers on core 0 with node 0, node 1 and this process on core 1 (as
routing_cost.py). The kinds of Redis alternate within each rep. Each run reports the
emits its clients missed and the clients the node cut (a loaded machine can make them
fall behind): Redis's CPU per emit does not depend on them, node 0's does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import socketio
from cluster import REDIS_CORE, REDIS_SERVER, Redis
from routing_cost import HEADERS, Node, blast, cpu_seconds, measure
from run import LOADGEN_CORE, SERVER_CORE, free_port

from siogate.broker.redis_cluster import slot_of, tagged

CLIENTS = 2


class RedisCluster:
    """Three cluster-enabled redis-servers joined by redis-cli, no replicas."""

    def __init__(self, directory: Path) -> None:
        self.ports: list[int] = []
        while len(self.ports) < 3:
            port = free_port()
            if port + 10000 < 65536 and port not in self.ports:
                self.ports.append(port)
        self.procs = []
        for port in self.ports:
            argv = [
                "taskset", "-c", str(REDIS_CORE), REDIS_SERVER, "--port", str(port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(directory), "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
            ]  # fmt: skip
            with (directory / f"redis-{port}.log").open("wb") as log:
                self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        time.sleep(0.5)
        cli = shutil.which("redis-cli") or "redis-cli"
        hosts = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *hosts, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
        )
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in self.cli(p, "CLUSTER", "INFO") for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not become ok")
            time.sleep(0.1)
        self.url = ",".join(f"redis://127.0.0.1:{p}/0" for p in self.ports)

    @staticmethod
    def cli(port: int, *args: str) -> str:
        cli = shutil.which("redis-cli") or "redis-cli"
        return subprocess.run(
            [cli, "-p", str(port), *args], capture_output=True, text=True, timeout=10
        ).stdout

    def owner_first(self, prefix: str) -> list[int]:
        """PIDs of the servers, the one owning ``prefix``'s slot first."""
        slot = slot_of(tagged(prefix))
        owner = 0
        for i, port in enumerate(self.ports):
            line = next(x for x in self.cli(port, "CLUSTER", "NODES").splitlines() if "myself" in x)
            for rng in line.split()[8:]:
                low, _, high = rng.partition("-")
                if int(low) <= slot <= int(high or low):
                    owner = i
        order = [owner] + [i for i in range(3) if i != owner]
        return [self.procs[i].pid for i in order]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)


async def one_run(kind: str, opts: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    standalone = Redis(log_dir / "redis.log") if kind == "standalone" else None
    cluster = RedisCluster(log_dir) if standalone is None else None
    url = standalone.url if standalone is not None else cluster.url  # type: ignore[union-attr]
    nodes = [Node(url, "sharded", c, log_dir) for c in (SERVER_CORE, LOADGEN_CORE)]
    clients: list[socketio.AsyncClient] = []
    received = [0] * CLIENTS
    dropped = [0]
    try:
        for node in nodes:
            node.wait_ready()
        await asyncio.sleep(1.0)
        for n in range(CLIENTS):
            client = socketio.AsyncClient(reconnection=False)

            def count(*_: Any, n: int = n) -> None:
                received[n] += 1

            client.on("e", count)
            client.on("disconnect", lambda *_: dropped.__setitem__(0, dropped[0] + 1))
            await client.connect(nodes[0].url, transports=["websocket"], wait_timeout=10)
            clients.append(client)
        sids = [c.get_sid("/") for c in clients]
        redis_pids = (
            [standalone.pid] if standalone is not None else cluster.owner_first("siogate")  # type: ignore[union-attr]
        )
        pids = [n.proc.pid for n in nodes] + redis_pids
        out: dict[str, Any] = {"redis": kind}
        async with httpx.AsyncClient(headers=HEADERS, timeout=30) as api:
            r = await api.post(f"{nodes[0].url}/v1/join", json={"sockets": sids, "room": "r"})
            r.raise_for_status()
            before = [cpu_seconds(p) for p in pids]
            await asyncio.sleep(opts.idle)
            idle = [(cpu_seconds(p) - b) / opts.idle for p, b in zip(pids, before, strict=True)]
            text = "x" * 1000
            for label, target in (("room", "r"), ("socket id", sids[0])):
                bodies = [
                    {"event": "e", "data": {"seq": i, "text": text}, "rooms": [target]}
                    for i in range(opts.messages)
                ]
                wall, cpu = await measure(pids, idle, blast(api, nodes[1].url, bodies))
                out[label] = {
                    "msgs_per_s": opts.messages / wall,
                    "nodes_us_per_msg": [1e6 * c / opts.messages for c in cpu[:2]],
                    # standalone: [redis]; cluster: [owner, other, other]
                    "redis_us_per_msg": [1e6 * c / opts.messages for c in cpu[2:]],
                }
        expected = [2 * opts.messages] + [opts.messages] * (CLIENTS - 1)
        for _ in range(50):
            if sum(received) >= sum(expected):
                break
            await asyncio.sleep(0.1)
        out["client_disconnects"] = dropped[0]
        out["missing"] = sum(e - r for e, r in zip(expected, received, strict=True))
        return out
    finally:
        for client in clients:
            await client.disconnect()
        for node in nodes:
            node.stop()
        if standalone is not None:
            standalone.stop()
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idle baseline")
    opts = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {"standalone": [], "cluster": []}
    for rep in range(opts.reps):
        order = ["standalone", "cluster"] if rep % 2 == 0 else ["cluster", "standalone"]
        for kind in order:
            with tempfile.TemporaryDirectory() as tmp:
                result = asyncio.run(one_run(kind, opts, Path(tmp)))
            print(json.dumps(result), flush=True)
            runs[kind].append(result)
    summary: dict[str, Any] = {}
    for kind, results in runs.items():
        for label in ("room", "socket id"):
            cols = zip(*(r[label]["redis_us_per_msg"] for r in results), strict=True)
            summary[f"{kind} {label}"] = {
                "msgs_per_s": statistics.median(r[label]["msgs_per_s"] for r in results),
                "redis_us_per_msg": [round(statistics.median(c), 1) for c in cols],
            }
    print(json.dumps({"median": summary}, indent=1))


if __name__ == "__main__":
    main()
