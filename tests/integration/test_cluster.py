"""Cluster mode: real ``siogate serve`` nodes as separate processes, one real Redis.

Each test gets its own ``redis-server`` on a free port (tests stop and restart it) and
starts its nodes with a short registration TTL so that a dead node is forgotten quickly.
Clients are python-socketio sockets (``Recorder``) and the official socket.io-client
driven from Node (``JsClient``); a round-robin HAProxy stands in front of the nodes where
the test is about load balancing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsclient import JS_DIR, JsClient
from sioclient import Recorder, uid

from conftest import API_KEY, JWT_SECRET, Gateway, RedisServer, free_port, spawn_gateway

pytestmark = pytest.mark.redis

NODE_TTL_MS = 1500
CLUSTER_TIMEOUT_MS = 500
HEADERS = {"Authorization": f"Bearer {API_KEY}"}


# ---------------------------------------------------------------- nodes and clients


class Cluster:
    """Nodes started by one test, all on the test's Redis."""

    def __init__(self, redis: RedisServer, log_dir: Path) -> None:
        self.redis = redis
        self.log_dir = log_dir
        self.nodes: list[Gateway] = []

    def start_node(self, *args: str, prefix: str = "siogate", port: int | None = None) -> Gateway:
        extra = ["--port", str(port)] if port is not None else []
        node = spawn_gateway(
            "--allow-anonymous",
            "--redis-url", self.redis.url,
            "--redis-prefix", prefix,
            "--node-ttl", str(NODE_TTL_MS),
            "--cluster-timeout", str(CLUSTER_TIMEOUT_MS),
            *extra,
            *args,
            log_dir=self.log_dir,
        )  # fmt: skip
        self.nodes.append(node)
        wait_until(lambda: health(node)["status"] == "ok", "node connected to Redis")
        return node

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def health(node: Gateway) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{node.url}/healthz", timeout=2).json()
    return body


def metrics(node: Gateway) -> dict[str, float]:
    """The node's unlabelled /metrics samples by name."""
    text = httpx.get(f"{node.url}/metrics", headers=HEADERS, timeout=5).text
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and "{" not in line
    }


def wait_until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_peers(nodes: list[Gateway]) -> None:
    """Until every node sees all the others in the registry."""
    for node in nodes:
        wait_until(
            lambda node=node: health(node)["broker"]["peers"] == len(nodes) - 1,
            f"node {node.port} sees {len(nodes) - 1} peers",
        )


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(redis_server, tmp_path)
    yield c
    c.stop()


@pytest.fixture
def two(cluster: Cluster) -> tuple[Gateway, Gateway]:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    return a, b


Connect = Callable[..., Awaitable[Recorder]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(node, token=..., transports=[...])`` -> a connected Recorder."""
    made: list[Recorder] = []

    async def make(
        node: Gateway, *, token: str | None = None, transports: list[str] | None = None
    ) -> Recorder:
        recorder = Recorder(
            node.url,
            auth={"token": token} if token else None,
            namespaces=["/"],
            transports=transports or ["websocket"],
        )
        made.append(recorder)
        return await recorder.connect()

    yield make
    await asyncio.gather(*(r.close() for r in made))


async def post(node: Gateway, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.url, headers=HEADERS, timeout=10) as client:
        return await client.post(path, json=body)


async def ok(node: Gateway, path: str, body: dict[str, Any]) -> None:
    r = await post(node, path, body)
    assert r.status_code == 200, r.text


async def get(node: Gateway, path: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=node.url, headers=HEADERS, timeout=10) as client:
        r = await client.get(path)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def sentinel(node: Gateway, *clients: Recorder) -> None:
    """Emit through ``node`` to everyone; wait until each client has it (see sioclient)."""
    name = uid("sentinel")
    await ok(node, "/v1/emit", {"event": name})
    for client in clients:
        await client.wait_event(name)


# ---------------------------------------------------------------- delivery


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_emit_through_either_node_reaches_sockets_on_both(
    two: tuple[Gateway, Gateway], connect: Connect, transport: str
) -> None:
    a, b = two
    on_a = await connect(a, transports=[transport])
    on_b = await connect(b, transports=[transport])
    room = uid("news")
    for client, node in ((on_a, a), (on_b, b)):
        await ok(node, "/v1/join", {"sockets": [client.sid()], "room": room})
    for sender in (a, b):
        payload = {"from": sender.port, "nested": {"list": [1, "é", None]}}
        await ok(sender, "/v1/emit", {"event": "news", "data": payload, "rooms": [room]})
    for client in (on_a, on_b):
        await client.wait_event("news", count=2)
        assert [args[0]["from"] for args in client.received("news")] == [a.port, b.port]
    # Once each: nothing more arrives after a later sentinel.
    await sentinel(a, on_a, on_b)
    assert len(on_a.received("news")) == len(on_b.received("news")) == 2


async def test_deep_and_large_payloads_cross_nodes_intact(
    two: tuple[Gateway, Gateway], connect: Connect
) -> None:
    a, b = two
    on_b = await connect(b)
    deep: Any = "bottom"
    for level in range(500):
        deep = [deep] if level % 2 else {"level": level, "k": deep}
    large = {"text": "é😀" * 100_000, "numbers": list(range(5_000))}  # 0.6 MB
    await ok(a, "/v1/emit", {"event": "deep", "data": deep})
    await ok(a, "/v1/emit", {"event": "large", "data": large})
    assert await on_b.wait_event("deep") == [deep]
    assert await on_b.wait_event("large") == [large]


async def test_per_socket_order_is_kept_for_emits_through_one_node(
    two: tuple[Gateway, Gateway], connect: Connect
) -> None:
    a, b = two
    target = await connect(b)
    n = 300
    async with httpx.AsyncClient(base_url=a.url, headers=HEADERS, timeout=10) as api:
        for i in range(n):
            r = await api.post("/v1/emit", json={"event": "seq", "args": [i]})
            assert r.status_code == 200
        batch = [{"event": "seq", "args": [n + i]} for i in range(100)]
        assert (await api.post("/v1/batch", json={"emits": batch})).status_code == 200
    await target.wait_event("seq", count=n + 100)
    assert [args[0] for args in target.received("seq")] == list(range(n + 100))


async def test_jwt_user_room_across_nodes_and_except(
    two: tuple[Gateway, Gateway], connect: Connect
) -> None:
    a, b = two
    alice = await connect(b, token=b.token("alice"))
    bob = await connect(a, token=a.token("bob"))
    await ok(a, "/v1/emit", {"event": "dm", "args": ["for alice"], "rooms": ["user:alice"]})
    await ok(b, "/v1/emit", {"event": "all-but-bob", "except": ["user:bob"]})
    assert await alice.wait_event("dm") == ["for alice"]
    await alice.wait_event("all-but-bob")
    await sentinel(b, alice, bob)
    assert bob.received("dm") == [] and bob.received("all-but-bob") == []


async def test_join_leave_disconnect_act_on_sockets_of_the_other_node(
    two: tuple[Gateway, Gateway], connect: Connect
) -> None:
    a, b = two
    on_b = await connect(b)
    room = uid("moved")
    # Join through A a socket that lives on B; an emit through A right after reaches it.
    await ok(a, "/v1/join", {"sockets": [on_b.sid()], "room": room})
    await ok(a, "/v1/emit", {"event": "in-room", "rooms": [room]})
    await on_b.wait_event("in-room")
    listing = await get(b, f"/v1/rooms/{room}/sockets")
    assert [s["id"] for s in listing["sockets"]] == [on_b.sid()]
    # Leave by room selector through A.
    await ok(a, "/v1/leave", {"rooms": [room], "room": room})
    await ok(a, "/v1/emit", {"event": "after-leave", "rooms": [room]})
    await sentinel(a, on_b)
    assert on_b.received("after-leave") == []
    # Disconnect by id through A.
    await ok(a, "/v1/disconnect", {"sockets": [on_b.sid()]})
    ns, reason = await on_b.wait_disconnect()
    assert ns == "/" and reason == "server disconnect"


async def test_listings_are_cluster_wide_and_agree_from_every_node(
    two: tuple[Gateway, Gateway], connect: Connect
) -> None:
    a, b = two
    room = uid("shared")
    members: dict[str, str] = {}
    for node, user in ((a, "ann"), (b, "ben"), (b, "bea")):
        client = await connect(node, token=node.token(user))
        await ok(node, "/v1/join", {"sockets": [client.sid()], "room": room})
        members[client.sid()] = user
    node_ids = {health(a)["node"]: a.port, health(b)["node"]: b.port}

    for node in (a, b):
        rooms = await get(node, "/v1/rooms")
        assert {"name": room, "sockets": 3} in rooms["rooms"]
        assert {"name": "user:ben", "sockets": 1} in rooms["rooms"]
        assert rooms["partial"] is False and rooms["nodes"] == {"answered": 2, "missing": []}
        listing = await get(node, f"/v1/rooms/{room}/sockets")
        assert {s["id"]: s["user"] for s in listing["sockets"]} == members
        assert listing["partial"] is False
        # Each socket names the node that holds it.
        by_port = {s["user"]: node_ids[s["node"]] for s in listing["sockets"]}
        assert by_port == {"ann": a.port, "ben": b.port, "bea": b.port}


async def test_official_client_on_each_node_receives_from_either(
    two: tuple[Gateway, Gateway],
) -> None:
    a, b = two
    with JsClient(a.url) as on_a, JsClient(b.url) as on_b:
        on_a.connect()
        on_b.connect()
        big = {"k" + str(i): {"v": [i, str(i) * 3, {"deep": i % 2 == 0}]} for i in range(50)}
        await ok(b, "/v1/emit", {"event": "big", "data": big})
        await ok(a, "/v1/emit", {"event": "small", "args": [1, "two"]})
        for js in (on_a, on_b):
            assert js.wait_event("big") == [big]
            assert js.wait_event("small") == [1, "two"]


async def test_prefixes_keep_clusters_sharing_a_redis_apart(
    cluster: Cluster, connect: Connect
) -> None:
    red = cluster.start_node(prefix="red")
    blue = cluster.start_node(prefix="blue")
    on_red = await connect(red)
    on_blue = await connect(blue)
    await ok(red, "/v1/emit", {"event": "red-only"})
    await on_red.wait_event("red-only")
    await sentinel(blue, on_blue)
    assert on_blue.received("red-only") == []
    assert health(red)["broker"]["peers"] == 0
    assert [r for r in (await get(red, "/v1/rooms"))["rooms"]] == []


# ---------------------------------------------------------------- faults


async def test_killed_node_leaves_the_others_serving_and_drops_out_of_listings(
    cluster: Cluster, connect: Connect
) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    on_a = await connect(a, token=a.token("survivor"))
    await connect(b, token=b.token("victim"))
    room_of = {"survivor": a, "victim": b}
    for user, node in room_of.items():
        await ok(node, "/v1/join", {"rooms": [f"user:{user}"], "room": "everyone"})
    b_id = health(b)["node"]

    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    killed_at = time.monotonic()

    # A keeps delivering to its own sockets at once.
    await ok(a, "/v1/emit", {"event": "still-here", "rooms": ["everyone"]})
    await on_a.wait_event("still-here")
    # B's sockets are gone from the very next listing, which says who did not answer.
    listing = await get(a, "/v1/rooms/everyone/sockets")
    assert [s["user"] for s in listing["sockets"]] == ["survivor"]
    assert listing["partial"] is True and listing["nodes"]["missing"] == [b_id]
    # Once B's registration expires (--node-ttl), listings are whole again, and fast.
    deadline = killed_at + NODE_TTL_MS / 1000 + 2
    while (await get(a, "/v1/rooms"))["partial"]:
        assert time.monotonic() < deadline, "dead node still expected after its TTL"
        await asyncio.sleep(0.1)
    started = time.monotonic()
    rooms = await get(a, "/v1/rooms")
    assert time.monotonic() - started < CLUSTER_TIMEOUT_MS / 1000
    assert {"name": "everyone", "sockets": 1} in rooms["rooms"]
    assert rooms["nodes"] == {"answered": 1, "missing": []}


def test_clients_of_a_killed_node_reconnect_to_another_through_the_balancer(
    cluster: Cluster, haproxy: Callable[..., str]
) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    front = haproxy([a, b])
    options = {"reconnection": True, "reconnectionDelay": 100, "reconnectionDelayMax": 500}
    clients = [JsClient(front, transports=["websocket"], options=options) for _ in range(4)]
    for js in clients:
        js.start()
        js.connect()
    try:
        assert local_sockets(a) + local_sockets(b) == 4
        assert local_sockets(b) > 0, "round-robin should have put sockets on both nodes"
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(5)
        # The stock client reconnects (through the balancer, which finds A) on its own.
        wait_until(lambda: local_sockets(a) == 4, "all four sockets on the survivor", 15)
        r = httpx.post(f"{a.url}/v1/emit", json={"event": "after"}, headers=HEADERS, timeout=5)
        assert r.status_code == 200
        for js in clients:
            assert js.wait_event("after") == []
    finally:
        for js in clients:
            js.close()


def local_sockets(node: Gateway) -> int:
    """Sockets connected to ``node`` itself (its ``siogate_sockets`` gauge)."""
    return int(metrics(node)["siogate_sockets"])


async def test_a_node_stopped_normally_leaves_listings_whole_at_once(
    cluster: Cluster, connect: Connect
) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    on_b = await connect(b)
    b.stop()  # SIGTERM: sessions closed, registration removed
    ns, _ = await on_b.wait_disconnect()
    assert ns == "/"
    started = time.monotonic()
    rooms = await get(a, "/v1/rooms")
    assert time.monotonic() - started < CLUSTER_TIMEOUT_MS / 1000
    assert rooms["partial"] is False and rooms["nodes"] == {"answered": 1, "missing": []}


def test_cluster_settings_are_checked_before_starting(tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "siogate", "serve", "--port", "0", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=tmp_path)

    no_secrets = serve("--redis-url", "redis://127.0.0.1:1/0")
    assert no_secrets.returncode == 2
    assert "cluster mode needs --api-key and --jwt-secret" in no_secrets.stderr
    keys = ("--api-key", API_KEY, "--jwt-secret", JWT_SECRET)
    for bad, message in (
        (("--redis-url", "http://127.0.0.1:6379"), "redis_url must be a redis://"),
        (("--redis-url", "redis://x", "--node-ttl", "10"), "node_ttl must be at least 1000"),
        (("--redis-url", "redis://x", "--redis-prefix", "a b"), "redis_prefix must be"),
    ):
        result = serve(*keys, *bad)
        assert result.returncode == 2 and message in result.stderr, result.stderr


async def test_redis_outage_degrades_then_recovers_without_restarts(
    cluster: Cluster, connect: Connect
) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    on_a = await connect(a)
    on_b = await connect(b)

    cluster.redis.stop()
    for node in (a, b):
        wait_until(lambda node=node: health(node)["status"] == "degraded", "degraded health")
        body = health(node)
        assert body["broker"]["connected"] is False and body["broker"]["error"]
    # Commands are refused whole (applied nowhere: safe to retry), not half delivered.
    r = await post(a, "/v1/emit", {"event": "during"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "broker_unavailable"
    assert r.headers["retry-after"] == "1"
    listing = await get(a, "/v1/rooms")
    assert listing["partial"] is True
    assert metrics(a)["siogate_broker_connected"] == 0
    # Sockets stay connected through the outage (heartbeats are local).
    await asyncio.sleep(0.5)
    assert on_a.sio.connected and on_b.sio.connected

    cluster.redis.start()
    for node in (a, b):
        wait_until(lambda node=node: health(node)["status"] == "ok", "healthy again", 15)
    wait_peers([a, b])
    await ok(a, "/v1/emit", {"event": "after"})
    await ok(b, "/v1/emit", {"event": "after"})
    for client in (on_a, on_b):
        await client.wait_event("after", count=2)
        assert client.received("during") == []
    after = metrics(a)
    assert after["siogate_broker_connected"] == 1
    assert after["siogate_broker_reconnects_total"] == 1
    assert after["siogate_broker_publish_failures_total"] == 1
    for node in (a, b):
        assert node.proc.poll() is None


async def test_node_started_before_redis_serves_and_joins_when_it_appears(
    cluster: Cluster, connect: Connect
) -> None:
    cluster.redis.stop()
    lonely = spawn_gateway(
        "--allow-anonymous",
        "--redis-url", cluster.redis.url,
        "--node-ttl", str(NODE_TTL_MS),
        log_dir=cluster.log_dir,
    )  # fmt: skip
    cluster.nodes.append(lonely)
    assert health(lonely)["status"] == "degraded"
    client = await connect(lonely)
    cluster.redis.start()
    wait_until(lambda: health(lonely)["status"] == "ok", "connected once Redis is up", 15)
    other = cluster.start_node()
    wait_peers([lonely, other])
    await ok(other, "/v1/emit", {"event": "hello"})
    await client.wait_event("hello")


async def test_malformed_messages_on_redis_are_counted_and_ignored(
    two: tuple[Gateway, Gateway], cluster: Cluster, connect: Connect
) -> None:
    a, _ = two
    client = await connect(a)
    garbage = [
        b"not json",
        b'{"v":99,"node":"x","commands":[]}',
        b'{"v":1,"node":"x","commands":[{"type":"emit","ns":"/","event":1}]}',
        b'{"v":1,"node":"x","commands":"all"}',
        b"[" * 100_000,
    ]
    for data in garbage:
        redis_publish(cluster.redis.port, "siogate:commands", data)
    await ok(a, "/v1/emit", {"event": "fine"})
    await client.wait_event("fine")
    assert metrics(a)["siogate_broker_messages_invalid_total"] == len(garbage)
    assert a.proc.poll() is None


def redis_publish(port: int, channel: str, data: bytes) -> None:
    """PUBLISH over a raw RESP connection (no client-side checks in the way)."""
    parts = [b"PUBLISH", channel.encode(), data]
    command = b"*3\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(command)
        assert s.recv(64).startswith(b":")


# ---------------------------------------------------------------- a round-robin balancer


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """``haproxy([a, b])`` -> URL of a round-robin HAProxy in front of the nodes."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(binary):
        message = "haproxy is not installed (scripts/test installs Debian's haproxy)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    procs: list[subprocess.Popen[bytes]] = []

    def start(nodes: list[Gateway]) -> str:
        port = free_port()
        servers = "\n".join(f"    server n{i} 127.0.0.1:{n.port}" for i, n in enumerate(nodes))
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
        with (tmp_path / "haproxy.log").open("wb") as log:
            proc = subprocess.Popen([binary, "-f", str(config), "-db"], stdout=log, stderr=log)
        procs.append(proc)
        wait_until(lambda: _listening(port), "haproxy listening")
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(5)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


# No stickiness at all: every request goes to the next node in turn.
HAPROXY_CONFIG = """\
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 60s
    option http-server-close

frontend front
    bind 127.0.0.1:{port}
    default_backend nodes

backend nodes
    balance roundrobin
{servers}
"""


@pytest.mark.parametrize("upgrade", [False, True])
def test_polling_client_works_behind_a_plain_round_robin_balancer(
    cluster: Cluster, haproxy: Callable[..., str], upgrade: bool
) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    front = haproxy([a, b])
    options = {"upgrade": upgrade}
    with JsClient(front, transports=["polling", "websocket"], options=options) as js:
        js.connect()
        if upgrade:
            js.send(op="wait_transport", name="websocket", timeout=10000, tag="up")
            assert js.wait_for("transport", tag="up")["name"] == "websocket"
        for i in range(20):
            r = httpx.post(f"{front}/v1/emit", json={"event": "tick", "args": [i]},
                           headers=HEADERS, timeout=5)  # fmt: skip
            assert r.status_code == 200
        got = js.wait_events("tick", 20)
        assert [args[0] for args in got] == list(range(20))
        js.send(op="transport", tag="t")
        assert js.wait_for("transport", tag="t")["name"] == ("websocket" if upgrade else "polling")
    # The balancer did send the session's requests to the node that does not own it.
    counts = [(k, v) for n in (a, b) for k, v in metrics(n).items() if "forwarded_" in k]
    assert sum(v for _, v in counts) > 0, counts


def test_many_idle_long_polls_forwarded_at_once_keep_their_sessions(
    cluster: Cluster,
) -> None:
    """More waiting polls than an HTTP client pool usually holds, all relayed by one node,
    through several ping rounds (a relay that queued them would let sessions time out)."""
    fast = ("--ping-interval", "700", "--ping-timeout", "1500")
    owner, relay = cluster.start_node(*fast), cluster.start_node(*fast)
    wait_peers([owner, relay])
    n = 300
    driver = subprocess.Popen(
        ["node", str(JS_DIR / "longpolls.mjs"), owner.url, relay.url, str(n), "wake-up", "30000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert driver.stdout is not None
        first = driver.stdout.readline()
        assert first == "ready\n", first
        time.sleep(3)  # four ping rounds while every poll waits at the owner
        assert local_sockets(owner) == n
        r = httpx.post(f"{relay.url}/v1/emit", json={"event": "wake-up"}, headers=HEADERS)
        assert r.status_code == 200
        result = json.loads(driver.stdout.readline())
    finally:
        driver.wait(40)
        if driver.stdout is not None:
            driver.stdout.close()
    assert result == {"received": n, "closed": 0, "errors": []}
    forwarded = {k: v for k, v in metrics(relay).items() if "forward" in k}
    assert forwarded["siogate_forwarded_requests_total"] >= 3 * n, forwarded
    assert forwarded["siogate_forward_failures_total"] == 0


async def test_a_frozen_redis_is_noticed_and_its_return_too(
    cluster: Cluster, connect: Connect
) -> None:
    """SIGSTOP keeps Redis's connections open but silent: no error ever arrives by itself."""
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    on_b = await connect(b)
    assert cluster.redis.proc is not None
    cluster.redis.proc.send_signal(signal.SIGSTOP)
    try:
        for node in (a, b):
            wait_until(lambda node=node: health(node)["status"] == "degraded", "degraded", 10)
    finally:
        cluster.redis.proc.send_signal(signal.SIGCONT)
    for node in (a, b):
        wait_until(lambda node=node: health(node)["status"] == "ok", "healthy again", 15)
    wait_peers([a, b])
    await ok(a, "/v1/emit", {"event": "after-freeze"})
    await on_b.wait_event("after-freeze")
