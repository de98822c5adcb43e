"""Redis Cluster: real ``siogate serve`` nodes on a real 3-primary Redis Cluster.

The module starts three ``redis-server --cluster-enabled yes`` on free ports and joins
them with ``redis-cli --cluster create`` (no replicas); it is skipped where that cannot
run (failed under ``CI``). Each test uses a prefix of its own, so its deployment lives in
a slot of its own, on whichever primary owns it (docs/cluster.md, "Redis Cluster").
Nodes are given different ``--redis-url`` forms: a node that does not own the slot, the
list of all three, the owner itself.
"""

# ruff: noqa: F811

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from sioclient import uid
from test_cluster import (  # noqa: F401 (fixtures)
    API_KEY,
    CLUSTER_TIMEOUT_MS,
    HEADERS,
    JWT_SECRET,
    NODE_TTL_MS,
    Connect,
    Gateway,
    connect,
    get,
    health,
    metrics,
    ok,
    sentinel,
    wait_peers,
    wait_until,
)

from conftest import REDIS_SERVER, free_port, spawn_gateway
from siogate.broker.redis_cluster import locate, slot_of, tagged
from siogate.presence_tracker import RedisPresenceTracker
from siogate.types import Namespace, UserId

pytestmark = pytest.mark.redis

REDIS_CLI = shutil.which("redis-cli")


def _cannot(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _cluster_ports() -> list[int]:
    """Three free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port()
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _cli(port: int, *args: str) -> str:
    assert REDIS_CLI is not None
    done = subprocess.run(
        [REDIS_CLI, "-p", str(port), *args], capture_output=True, text=True, timeout=10
    )
    return done.stdout.strip()


class RedisCluster:
    """Three cluster-enabled redis-servers, one slot range each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = _cluster_ports()
        self.procs: list[subprocess.Popen[bytes]] = []

    def url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    @property
    def all_urls(self) -> str:
        return ",".join(self.url(p) for p in self.ports)

    def owner(self, prefix: str) -> int:
        """The port of the primary that holds ``prefix``'s keys and channels."""
        slot = slot_of(tagged(prefix))
        for port in self.ports:
            for line in _cli(port, "CLUSTER", "NODES").splitlines():
                if "myself,master" in line and _owns(line, slot):
                    return port
        raise AssertionError(f"no primary owns slot {slot}")

    def start(self) -> None:
        for port in self.ports:
            cmd = [
                REDIS_SERVER or "redis-server",
                "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.directory),
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "2000",
            ]  # fmt: skip
            with (self.directory / f"redis-{port}.log").open("wb") as log:
                self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 10
        for port, proc in zip(self.ports, self.procs, strict=True):
            while not _ping(port):
                if proc.poll() is not None:
                    log_text = (self.directory / f"redis-{port}.log").read_text()
                    _cannot(f"redis-server cannot run in cluster mode here:\n{log_text}")
                if time.monotonic() > deadline:
                    _cannot(f"redis-server on {port} did not answer in cluster mode")
                time.sleep(0.05)
        assert REDIS_CLI is not None
        create = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if create.returncode != 0:
            _cannot(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
        wait_until(
            lambda: all("cluster_state:ok" in _cli(p, "CLUSTER", "INFO") for p in self.ports),
            "the Redis Cluster to be ok",
            timeout=30,
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _owns(nodes_line: str, slot: int) -> bool:
    """Whether a ``CLUSTER NODES`` line lists ``slot`` among its ranges."""
    for field in nodes_line.split()[8:]:
        if field.startswith("["):
            continue  # a slot being migrated
        low, _, high = field.partition("-")
        if int(low) <= slot <= int(high or low):
            return True
    return False


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    if REDIS_SERVER is None or REDIS_CLI is None:
        _cannot("redis-server and redis-cli are needed (scripts/test installs Debian's)")
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


class Nodes:
    """siogate nodes started by one test on the module's Redis Cluster."""

    def __init__(self, redis: RedisCluster, log_dir: Path) -> None:
        self.redis = redis
        self.log_dir = log_dir
        self.started: list[Gateway] = []
        self.prefix = uid("dep")

    def start(self, url: str, *args: str) -> Gateway:
        node = spawn_gateway(
            "--allow-anonymous",
            "--redis-url", url,
            "--redis-prefix", self.prefix,
            "--node-ttl", str(NODE_TTL_MS),
            "--cluster-timeout", str(CLUSTER_TIMEOUT_MS),
            *args,
            log_dir=self.log_dir,
        )  # fmt: skip
        self.started.append(node)
        wait_until(lambda: health(node)["status"] == "ok", "node connected to Redis")
        return node

    def three(self) -> list[Gateway]:
        """A node given a primary that does not own the slot, one given the whole list,
        one given the owner."""
        owner = self.redis.owner(self.prefix)
        other = next(p for p in self.redis.ports if p != owner)
        started = [
            self.start(self.redis.url(other)),
            self.start(self.redis.all_urls),
            self.start(self.redis.url(owner)),
        ]
        wait_peers(started)
        return started


@pytest.fixture
def nodes(redis_cluster: RedisCluster, tmp_path: Path) -> Iterator[Nodes]:
    made = Nodes(redis_cluster, tmp_path)
    yield made
    for node in made.started:
        node.stop()


async def test_rooms_joins_socket_ids_and_listings_span_nodes_on_a_redis_cluster(
    nodes: Nodes, connect: Connect
) -> None:
    a, b, c = nodes.three()
    on_a, on_b, on_c = await connect(a), await connect(b), await connect(c)
    room = uid("news")
    # Joined through other nodes than their own: the join answers once applied there.
    await ok(a, "/v1/join", {"sockets": [on_b.sid()], "room": room})
    await ok(b, "/v1/join", {"sockets": [on_c.sid()], "room": room})
    await ok(c, "/v1/join", {"sockets": [on_a.sid()], "room": room})
    await ok(c, "/v1/emit", {"event": "news", "args": [1], "rooms": [room]})
    for client in (on_a, on_b, on_c):
        assert (await client.wait_event("news")) == [1]
    # By socket id, through a node that does not hold the socket.
    await ok(a, "/v1/emit", {"event": "direct", "args": ["b"], "rooms": [on_b.sid()]})
    assert (await on_b.wait_event("direct")) == ["b"]
    await sentinel(b, on_a, on_b, on_c)
    assert on_a.received("direct") == on_c.received("direct") == []
    assert [len(x.received("news")) for x in (on_a, on_b, on_c)] == [1, 1, 1]
    listing = await get(b, f"/v1/rooms/{room}/sockets")
    assert listing["partial"] is False and listing["nodes"]["answered"] == 3
    assert sorted(s["id"] for s in listing["sockets"]) == sorted(
        x.sid() for x in (on_a, on_b, on_c)
    )
    # The registry is in the hash-tagged slot, on the primary that owns it.
    owner = nodes.redis.owner(nodes.prefix)
    assert _cli(owner, "ZCARD", f"{tagged(nodes.prefix)}:nodes") == "3"


async def test_an_idempotency_key_sent_to_two_nodes_delivers_once(
    nodes: Nodes, connect: Connect
) -> None:
    a, b, c = nodes.three()
    client = await connect(c)
    key = uid("key")
    body = {"event": "once", "args": [key]}
    async with httpx.AsyncClient(timeout=10) as http:
        for node in (a, b):
            r = await http.post(
                f"{node.url}/v1/emit", json=body, headers={**HEADERS, "Idempotency-Key": key}
            )
            assert r.status_code == 200, r.text
    await client.wait_event("once")
    await sentinel(a, client)
    assert client.received("once") == [[key]]


async def test_a_killed_node_leaves_the_registry_by_its_ttl(nodes: Nodes, connect: Connect) -> None:
    a, b, c = nodes.three()
    await connect(a)
    c.proc.send_signal(signal.SIGKILL)
    c.proc.wait(5)
    killed_at = time.monotonic()
    wait_until(lambda: health(a)["broker"]["peers"] == 1, "the dead node to leave", timeout=10)
    assert time.monotonic() - killed_at < NODE_TTL_MS / 1000 + 2
    listing = await get(b, "/v1/rooms")
    assert listing["partial"] is False and listing["nodes"]["missing"] == []


def serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "siogate", "serve", "--port", "0",
         "--api-key", API_KEY, "--jwt-secret", JWT_SECRET, *args],
        capture_output=True, text=True, timeout=30, cwd=cwd,
    )  # fmt: skip


def test_a_list_of_urls_naming_a_standalone_redis_is_refused(
    redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    standalone = free_port()
    proc = subprocess.Popen(
        [REDIS_SERVER or "redis-server", "--port", str(standalone), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: _ping(standalone), "the standalone redis-server")
        urls = f"redis://127.0.0.1:{standalone}/0,{redis_cluster.url(redis_cluster.ports[0])}"
        result = serve("--redis-url", urls, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "is a standalone Redis: give it alone" in result.stderr
    finally:
        proc.terminate()
        proc.wait(10)


async def test_presence_counts_and_reaping_work_in_the_deployments_slot(
    redis_cluster: RedisCluster,
) -> None:
    """The presence scripts build key names of their own: on a cluster they must all fall
    in the deployment's slot (the trackers as nodes would run them, on the located
    primary; end to end: test_presence_webhooks)."""
    located = locate(redis_cluster.all_urls, uid("dep"))
    assert located is not None and located.cluster
    assert located.url == redis_cluster.url(redis_cluster.owner(located.prefix))
    seen: list[tuple[str, str, str]] = []
    trackers = [
        RedisPresenceTracker(located.url, prefix=located.prefix, node_id=n, node_ttl=600)
        for n in ("a", "b")
    ]
    for tracker in trackers:
        node = tracker.node_id
        await tracker.start(lambda kind, ns, user, node=node: seen.append((node, kind, user)))
    a, b = trackers
    redis = Redis.from_url(located.url)
    try:
        await redis.zadd(f"{located.prefix}:nodes", {"a": time.time() + 60})
        a.add(Namespace("/"), UserId("ann"))
        b.add(Namespace("/"), UserId("bob"))
        await wait_for(lambda: len(seen) == 2)
        assert sorted(seen) == [("a", "user.online", "ann"), ("b", "user.online", "bob")]
        await a._reap_once()  # b is not registered: dead, its users go offline
        assert seen[2:] == [("a", "user.offline", "bob")]
    finally:
        await redis.aclose()
        for tracker in trackers:
            await tracker.close()


async def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_list_with_a_unix_socket_or_that_nobody_answers_is_refused(tmp_path: Path) -> None:
    """Checked without a cluster: these never need one to fail."""
    bad = serve("--redis-url", "redis://127.0.0.1:1/0,unix:///tmp/redis.sock", cwd=tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert "each URL of a list (Redis Cluster nodes) must be redis://" in bad.stderr
    down = serve("--redis-url", "redis://127.0.0.1:1/0,redis://127.0.0.1:2/0", cwd=tmp_path)
    assert down.returncode == 3, down.stderr
    assert "none of the Redis Cluster nodes answered" in down.stderr


def test_the_redis_emitter_reaches_a_node_through_another_primary(nodes: Nodes) -> None:
    """@socket.io/redis-emitter PUBLISHes on whichever cluster node it is given: the
    cluster bus carries it to the primary where the siogate node listens."""
    from jsclient import JsClient
    from test_emitter_compat import Emitter

    owner = nodes.redis.owner(nodes.prefix)
    other = next(p for p in nodes.redis.ports if p != owner)
    node = nodes.start(nodes.redis.all_urls, "--emitter-compat")
    wait_until(lambda: metrics(node).get("siogate_emitter_connected") == 1, "emitter subscription")
    js = JsClient(node.url, auth={"token": node.token(rooms=["news"])}).start()
    emitter = Emitter(nodes.redis.url(other))
    try:
        js.connected()
        emitter.emit("hello", {"n": 1}, to=["news"])
        assert js.wait_events("hello") == [[{"n": 1}]]
    finally:
        emitter.close()
        js.close()
