"""Sharded routing: a command reaches only the nodes that hold its rooms or sockets.

Real ``siogate serve`` nodes on one private Redis (the fixtures of ``test_cluster``),
python-socketio clients. Whether a node received a command is read from its
``siogate_broker_messages_in_total``; the same scenario under ``--cluster-routing
broadcast`` shows that the count does move when a node is sent what it does not need.
"""

# ruff: noqa: F811

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from sioclient import uid
from test_cluster import (  # noqa: F401 (fixtures)
    API_KEY,
    HEADERS,
    JWT_SECRET,
    Cluster,
    Connect,
    Gateway,
    cluster,
    connect,
    free_port,
    health,
    metrics,
    ok,
    sentinel,
    wait_peers,
)

from siogate.broker.routing import shard_of
from siogate.types import Namespace, Room

pytestmark = pytest.mark.redis

IN = "siogate_broker_messages_in_total"


def nodes(cluster: Cluster, n: int, *args: str) -> list[Gateway]:
    started = [cluster.start_node(*args) for _ in range(n)]
    wait_peers(started)
    return started


def rooms_in_distinct_shards(n: int) -> list[str]:
    """``n`` fresh room names of ``/`` whose shards differ."""
    found: dict[int, str] = {}
    while len(found) < n:
        room = uid("room")
        found.setdefault(shard_of(Namespace("/"), Room(room)), room)
    return list(found.values())


async def test_room_emit_reaches_members_on_every_node_and_no_one_else(
    cluster: Cluster, connect: Connect
) -> None:
    a, b, c = nodes(cluster, 3)
    room = uid("news")
    members = [await connect(a), await connect(b), await connect(b)]
    outsiders = [await connect(a), await connect(b), await connect(c)]
    for client, node in zip(members, (a, b, b), strict=True):
        await ok(node, "/v1/join", {"sockets": [client.sid()], "room": room})
    alice = await connect(c, token=c.token("alice"))  # user:alice, a room like others
    for sender in (a, b, c):
        await ok(sender, "/v1/emit", {"event": "news", "args": [sender.port], "rooms": [room]})
        await ok(
            sender, "/v1/emit", {"event": "dm", "args": [sender.port], "rooms": ["user:alice"]}
        )
    for client in members:
        await client.wait_event("news", count=3)
        assert [args[0] for args in client.received("news")] == [a.port, b.port, c.port]
    await alice.wait_event("dm", count=3)
    await sentinel(a, *members, *outsiders, alice)
    for client in [*outsiders, alice]:
        assert client.received("news") == []
    for client in [*members, *outsiders]:
        assert client.received("dm") == []


async def test_join_through_one_node_for_a_socket_on_another_then_emit_from_any(
    cluster: Cluster, connect: Connect
) -> None:
    a, b, c = nodes(cluster, 3)
    on_b = await connect(b)
    # Fresh rooms, each in a shard B has not subscribed to yet: every join makes B
    # subscribe, and the emit that follows the join's 200 must find it subscribed.
    rooms = rooms_in_distinct_shards(20)
    for i, room in enumerate(rooms):
        await ok(a, "/v1/join", {"sockets": [on_b.sid()], "room": room})
        sender = (a, c)[i % 2]
        await ok(sender, "/v1/emit", {"event": "joined", "args": [i], "rooms": [room]})
    await on_b.wait_event("joined", count=len(rooms))
    assert [args[0] for args in on_b.received("joined")] == list(range(len(rooms)))
    assert metrics(b)["siogate_broker_shards"] >= len(rooms)
    assert metrics(a)["siogate_broker_ack_timeouts_total"] == 0


async def test_a_new_socket_is_connected_only_once_its_rooms_are_routed_to_its_node(
    cluster: Cluster, connect: Connect
) -> None:
    """The CONNECT answer waits for the SSUBSCRIBE of the socket's rooms (here its user
    room, in a shard B holds nothing of): whoever learns of the connect and emits to
    those rooms through any node reaches it, as after a join's 200."""
    a, b = nodes(cluster, 2)
    user = uid("carol")
    pause = 0.8
    with redis.Redis.from_url(cluster.redis.url) as r:
        # Redis answers no client for a while: B's SSUBSCRIBE is confirmed only after.
        r.execute_command("CLIENT", "PAUSE", int(pause * 1000), "ALL")
    started = time.monotonic()
    carol = await connect(b, token=b.token(user))
    waited = time.monotonic() - started
    assert waited >= pause * 0.75, f"connected after {waited:.3f} s, before the subscribe"
    await ok(a, "/v1/emit", {"event": "dm", "args": ["hi"], "rooms": [f"user:{user}"]})
    await carol.wait_event("dm")
    assert carol.received("dm") == [["hi"]]
    assert metrics(b)["siogate_broker_ack_timeouts_total"] == 0
    # A second socket of that user finds the shard subscribed: no wait.
    started = time.monotonic()
    await connect(b, token=b.token(user))
    assert time.monotonic() - started < pause * 0.75


async def test_leave_through_another_node_stops_delivery(
    cluster: Cluster, connect: Connect
) -> None:
    a, b, c = nodes(cluster, 3)
    on_b = await connect(b)
    stays = await connect(a)
    room = uid("leave")
    await ok(c, "/v1/join", {"sockets": [on_b.sid(), stays.sid()], "room": room})
    await ok(c, "/v1/emit", {"event": "before", "rooms": [room]})
    await on_b.wait_event("before")
    await ok(c, "/v1/leave", {"sockets": [on_b.sid()], "room": room})
    await ok(a, "/v1/emit", {"event": "after", "rooms": [room]})
    await stays.wait_event("after")
    await sentinel(a, on_b)
    assert on_b.received("after") == []


@pytest.mark.parametrize("routing", ["sharded", "broadcast"])
async def test_nodes_without_members_receive_nothing(
    cluster: Cluster, connect: Connect, routing: str
) -> None:
    a, b, idle = nodes(cluster, 3, "--cluster-routing", routing)
    member = await connect(b)
    bystander = await connect(idle)  # connected, in no room
    room = uid("busy")
    await ok(b, "/v1/join", {"sockets": [member.sid()], "room": room})
    before = metrics(idle)[IN]
    n = 30
    for i in range(n):
        await ok(a, "/v1/emit", {"event": "busy", "args": [i], "rooms": [room]})
        await ok(a, "/v1/emit", {"event": "direct", "args": [i], "rooms": [member.sid()]})
    await member.wait_event("busy", count=n)
    await member.wait_event("direct", count=n)
    await asyncio.sleep(0.2)
    received = metrics(idle)[IN] - before
    if routing == "sharded":
        assert received == 0
        assert metrics(idle)["siogate_broker_shards"] == 0
    else:
        assert received >= 2 * n
    await sentinel(a, member, bystander)  # the whole namespace still reaches every node
    assert bystander.received("busy") == bystander.received("direct") == []


async def test_socket_ids_start_with_their_node_id(cluster: Cluster, connect: Connect) -> None:
    a, b = nodes(cluster, 2)
    for node in (a, b):
        client = await connect(node)
        assert client.sid().startswith(health(node)["node"])


async def test_an_emit_to_rooms_of_several_shards_reaches_each_socket_once(
    cluster: Cluster, connect: Connect
) -> None:
    a, b, c = nodes(cluster, 3)
    one, two, three = rooms_in_distinct_shards(3)
    both = await connect(b)  # in one and two
    only_two = await connect(a)
    excluded = await connect(b)  # in three and in two, but three is excluded
    await ok(c, "/v1/join", {"sockets": [both.sid()], "room": one})
    await ok(c, "/v1/join", {"sockets": [both.sid(), only_two.sid(), excluded.sid()], "room": two})
    await ok(c, "/v1/join", {"sockets": [excluded.sid()], "room": three})
    body = {"event": "multi", "rooms": [one, two, both.sid()], "except": [three]}
    await ok(c, "/v1/emit", body)
    await ok(a, "/v1/emit", {**body, "rooms": [two, one]})
    await both.wait_event("multi", count=2)
    await only_two.wait_event("multi", count=2)
    await sentinel(c, both, only_two, excluded)
    assert len(both.received("multi")) == len(only_two.received("multi")) == 2
    assert excluded.received("multi") == []


def test_a_bad_routing_setting_is_refused_from_flag_env_and_toml(tmp_path: Path) -> None:
    def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "siogate", "serve", "--port", "0", *args]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=30, cwd=tmp_path,
            env={**os.environ, **(env or {})},
        )  # fmt: skip

    keys = ("--api-key", API_KEY, "--jwt-secret", JWT_SECRET, "--redis-url", "redis://x")
    flag = serve(*keys, "--cluster-routing", "rooms")
    assert flag.returncode == 2 and "--cluster-routing" in flag.stderr, flag.stderr
    env = serve(*keys, env={"SIOGATE_CLUSTER_ROUTING": "rooms"})
    assert env.returncode == 2 and "rooms" in env.stderr, env.stderr
    config = tmp_path / "siogate.toml"
    config.write_text('cluster_routing = "rooms"\n')
    toml = serve(*keys, "--config", str(config))
    assert toml.returncode == 2 and "cluster_routing" in toml.stderr, toml.stderr
    assert "not one of 'sharded', 'broadcast'" in toml.stderr


def test_a_redis_cluster_without_slots_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    """A Redis Cluster node whose cluster was never created (no primary serves the
    deployment's slot): serve says so and exits 2 instead of retrying forever. A working
    cluster is tested in test_redis_cluster."""
    port = free_port()
    cmd = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--cluster-enabled", "yes",
        "--cluster-config-file", str(tmp_path / "nodes.conf"),
    ]  # fmt: skip
    log = tmp_path / "redis.log"
    try:
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    except OSError as exc:
        pytest.skip(f"redis-server cannot be started here: {exc}")
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.skip(f"redis-server cannot run in cluster mode here: {log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        result = subprocess.run(
            [sys.executable, "-m", "siogate", "serve", "--port", "0",
             "--api-key", API_KEY, "--jwt-secret", JWT_SECRET,
             "--redis-url", f"redis://127.0.0.1:{port}/0"],
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "is a Redis Cluster node, but no primary serves slot" in result.stderr
        assert "redis-cli --cluster create" in result.stderr
    finally:
        proc.terminate()
        proc.wait(10)


async def test_emits_through_one_node_keep_their_order_across_shards_and_socket_ids(
    cluster: Cluster, connect: Connect
) -> None:
    """On one Redis, a node receives another node's messages in publish order whatever
    their channels (docs/cluster.md, "Ordering")."""
    a, b = nodes(cluster, 2)
    target = await connect(b)
    one, two = rooms_in_distinct_shards(2)
    for room in (one, two):
        await ok(a, "/v1/join", {"sockets": [target.sid()], "room": room})
    n = 150
    targets = [[one], [two], [target.sid()]]
    async with httpx.AsyncClient(base_url=a.url, headers=HEADERS, timeout=10) as api:
        for i in range(n):
            body = {"event": "seq", "args": [i], "rooms": targets[i % 3]}
            assert (await api.post("/v1/emit", json=body)).status_code == 200
        batch = [{"event": "seq", "args": [n + i], "rooms": targets[i % 3]} for i in range(60)]
        assert (await api.post("/v1/batch", json={"emits": batch})).status_code == 200
    await target.wait_event("seq", count=n + 60)
    assert [args[0] for args in target.received("seq")] == list(range(n + 60))
