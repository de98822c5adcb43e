"""--emitter-compat: the stock @socket.io/redis-emitter publishes, siogate's sockets receive.

Two ``siogate serve`` nodes on one real Redis, the npm emitter (5.1.0, on node-redis 4)
driven by ``tests/js/emitter.mjs``, and recipients that are the stock socket.io-client
(``JsClient``), spread over both nodes. Every check that something did *not* arrive is
made after a later message did arrive at the same client (pub/sub keeps the order), and
every check that something arrived also checks it arrived once.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from jsclient import JS_DIR, JsClient, encode, ensure_node_modules, node_path

from conftest import API_KEY, ROOT, Gateway, RedisServer, free_port, spawn_gateway

pytestmark = [pytest.mark.redis, pytest.mark.node]

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


def ensure_emitter_installed() -> None:
    """tests/js as its lockfile says, when a copy installed before the emitter was added
    lacks it (ensure_node_modules only looks for socket.io-client)."""
    ensure_node_modules()
    marker = JS_DIR / "node_modules" / "@socket.io" / "redis-emitter" / "package.json"
    if marker.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is required to install tests/js (npm ci)")
    with (JS_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=JS_DIR,
                check=True,
                timeout=300,
            )


class Emitter:
    """One Node process holding one @socket.io/redis-emitter Emitter (see emitter.mjs)."""

    def __init__(self, redis_url: str, key: str | None = None) -> None:
        ensure_emitter_installed()
        args = [node_path(), str(JS_DIR / "emitter.mjs"), redis_url, *([key] if key else [])]
        self.proc = subprocess.Popen(
            args,
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self._tags = 0

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    def step(self, op: str, **fields: Any) -> None:
        """Run one step; return once Redis has processed what it published."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._tags += 1
        tag = f"t{self._tags}"
        self.proc.stdin.write(json.dumps({"op": op, "tag": tag, **fields}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"emitter.mjs exited:\n{''.join(self._stderr)}")
        answer = json.loads(line)
        assert answer == {"type": "done", "tag": tag}, answer

    def emit(self, event: str, *args: Any, **fields: Any) -> None:
        self.step("emit", event=event, args=encode(list(args)), **fields)

    def raw(self, channel: str, data: bytes) -> None:
        self.step("raw", channel=channel, base64=base64.b64encode(data).decode())

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write('{"op":"exit"}\n')
                self.proc.stdin.flush()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def metrics(node: Gateway) -> dict[str, float]:
    text = httpx.get(f"{node.url}/metrics", headers=HEADERS, timeout=5).text
    return {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and "{" not in line
    }


def wait_until(check: Any, what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def nodes(
    shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Gateway]]:
    log_dir = tmp_path_factory.mktemp("emitter")
    started: list[Gateway] = []
    try:
        for _ in range(2):
            started.append(
                spawn_gateway(
                    "--allow-anonymous",
                    "--redis-url",
                    shared_redis.url,
                    "--emitter-compat",
                    "--namespace",
                    "/",
                    "--namespace",
                    "/ns",
                    "--max-payload",
                    "4096",
                    log_dir=log_dir,
                )  # fmt: skip
            )
        for node in started:
            wait_until(lambda node=node: metrics(node).get("siogate_emitter_connected") == 1,
                       "subscribed to the emitter channels")  # fmt: skip
        yield started[0], started[1]
    finally:
        for node in started:
            node.stop()


@pytest.fixture(scope="module")
def emitter(shared_redis: RedisServer) -> Iterator[Emitter]:
    e = Emitter(shared_redis.url)
    yield e
    e.close()


@pytest.fixture
def clients() -> Iterator[list[JsClient]]:
    made: list[JsClient] = []
    yield made
    for c in made:
        c.close()


def client(
    made: list[JsClient],
    node: Gateway,
    rooms: list[str],
    namespace: str = "/",
    options: dict[str, Any] | None = None,
) -> JsClient:
    js = JsClient(
        node.url, namespace=namespace, auth={"token": node.token(rooms=rooms)}, options=options
    )
    made.append(js.start())
    js.connected()
    return js


def test_to_except_and_of_reach_the_right_sockets_once(
    nodes: tuple[Gateway, Gateway], emitter: Emitter, clients: list[JsClient]
) -> None:
    a, b = nodes
    on_a = client(clients, a, ["news"])
    on_b = client(clients, b, ["news"])
    muted = client(clients, b, ["news", "muted"])
    outside = client(clients, a, ["sports"])
    in_ns = client(clients, b, ["news"], namespace="/ns")

    emitter.emit("hello", {"n": 1}, to=["news"])
    emitter.emit("quiet", 2, to=["news"], **{"except": ["muted"]})
    emitter.emit("ns-only", 3, nsp="/ns", to=["news"])
    emitter.emit("all", 4)
    emitter.emit("two-rooms", 5, to=["news", "sports"])

    for js in (on_a, on_b, muted, outside):
        js.wait_event("all")
    in_ns.wait_event("ns-only")
    assert on_a.events("hello") == [[{"n": 1}]]
    assert on_b.events("hello") == [[{"n": 1}]]
    assert muted.events("hello") == [[{"n": 1}]]
    assert outside.events("hello") == []
    assert on_a.events("quiet") == [[2]] and on_b.events("quiet") == [[2]]
    assert muted.events("quiet") == []
    # of("/ns") reached only the /ns socket; "/" sockets did not see it.
    for js in (on_a, on_b, muted, outside):
        assert js.events("ns-only") == []
    assert in_ns.events("ns-only") == [[3]]
    assert in_ns.events("hello") == [] and in_ns.events("all") == []
    # In two rooms at once: each socket once.
    for js in (on_a, on_b, muted, outside):
        assert js.wait_events("two-rooms") == [[5]]
    time.sleep(0.2)
    for js in (on_a, on_b, muted, outside):
        assert js.events("all") == [[4]] and js.events("two-rooms") == [[5]]


def test_sockets_join_then_emit_and_leave(
    nodes: tuple[Gateway, Gateway], emitter: Emitter, clients: list[JsClient]
) -> None:
    a, b = nodes
    vip_a = client(clients, a, ["gold"])
    vip_b = client(clients, b, ["gold"])
    gold_but_banned = client(clients, b, ["gold", "banned"])
    other = client(clients, a, ["silver"])

    emitter.step("socketsJoin", to=["gold"], rooms=["vip", "lounge"], **{"except": ["banned"]})
    emitter.emit("welcome", "in", to=["vip"])
    emitter.emit("drinks", "in", to=["lounge"])
    emitter.emit("all", 1)
    for js in (vip_a, vip_b, gold_but_banned, other):
        js.wait_event("all")
    assert vip_a.events("welcome") == [["in"]] and vip_b.events("welcome") == [["in"]]
    assert vip_a.events("drinks") == [["in"]] and vip_b.events("drinks") == [["in"]]
    assert gold_but_banned.events("welcome") == [] and other.events("welcome") == []

    # The joins are real memberships: the HTTP API lists them cluster-wide.
    listed = a.api("GET", "/v1/rooms/vip/sockets").json()
    assert len(listed["sockets"]) == 2

    emitter.step("socketsLeave", to=["gold"], rooms=["vip"])
    emitter.emit("welcome", "again", to=["vip"])
    emitter.emit("drinks", "again", to=["lounge"])
    emitter.emit("all", 2)
    for js in (vip_a, vip_b):
        js.wait_events("all", 2)
        assert js.events("welcome") == [["in"]]
        assert js.events("drinks") == [["in"], ["again"]]


def test_disconnect_sockets(
    nodes: tuple[Gateway, Gateway], emitter: Emitter, clients: list[JsClient]
) -> None:
    a, b = nodes
    doomed_a = client(clients, a, ["doomed"])
    doomed_b = client(clients, b, ["doomed"])
    spared = client(clients, b, ["doomed", "spared"])
    reconnecting = {"reconnection": True, "reconnectionDelay": 100, "reconnectionDelayMax": 500}
    closed = client(clients, a, ["closed"], options=reconnecting)

    emitter.step("disconnectSockets", to=["doomed"], **{"except": ["spared"]})
    assert doomed_a.wait_disconnect()["reason"] == "io server disconnect"
    assert doomed_b.wait_disconnect()["reason"] == "io server disconnect"

    # close=true, as Node's disconnect(true): the connection's sockets in every namespace
    # are disconnected (so the client does not reconnect them, even with reconnection
    # on), then the connection is closed.
    closed.connected(socket="ns", namespace="/ns", auth={"token": a.token(rooms=["elsewhere"])})
    emitter.step("disconnectSockets", to=["closed"], close=True)
    assert closed.wait_disconnect()["reason"] == "io server disconnect"
    assert closed.wait_disconnect(socket="ns")["reason"] == "io server disconnect"

    emitter.emit("still-here", 1, to=["doomed"])
    assert spared.wait_event("still-here") == [1]
    assert spared.find("disconnect") is None
    time.sleep(1)  # reconnection delay 100-500 ms: it would have come back by now
    assert [o["type"] for o in closed.observations].count("connected") == 2


def test_payloads_arrive_intact(
    nodes: tuple[Gateway, Gateway], emitter: Emitter, clients: list[JsClient]
) -> None:
    a, b = nodes
    recipients = [client(clients, a, ["data"]), client(clients, b, ["data"])]
    blob = bytes(range(256)) * 4
    nested = {"list": [1, -2, 3.5, None, True, "é😀"], "deep": {"a": {"b": {"c": []}}}, "$k": 1}
    emitter.emit("object", nested, to=["data"])
    emitter.emit("binary", blob, {"inner": b"\x00\x01", "n": 7}, to=["data"])
    # A Date (sent as {"$date": ...} to the driver, unescaped) travels as a MessagePack
    # timestamp and arrives as Socket.IO's JSON would have it: its ISO string.
    emitter.step("emit", event="date", args=[{"$date": "2024-02-29T12:34:56.789Z"}], to=["data"])
    emitter.emit("many", 1, "two", [3], {"four": 4}, None, to=["data"])
    emitter.emit("numbers", 2**53 - 1, -(2**40), 0.5, -0.0, to=["data"])
    for js in recipients:
        assert js.wait_event("object") == [nested]
        assert js.wait_event("binary") == [blob, {"inner": b"\x00\x01", "n": 7}]
        assert js.wait_event("date") == ["2024-02-29T12:34:56.789Z"]
        assert js.wait_event("many") == [1, "two", [3], {"four": 4}, None]
        assert js.wait_event("numbers") == [2**53 - 1, -(2**40), 0.5, 0]


def test_malformed_and_unsupported_messages_are_counted_and_ignored(
    nodes: tuple[Gateway, Gateway], emitter: Emitter, clients: list[JsClient]
) -> None:
    a, b = nodes
    recipients = [client(clients, a, ["room1"]), client(clients, b, ["room1"])]
    before = [metrics(n) for n in nodes]

    good_packet = {"type": 2, "data": ["bad", 1], "nsp": "/"}
    malformed = [
        ("socket.io#/#", b"\xc1 not msgpack"),
        ("socket.io#/#", msgpack.packb(["emitter", good_packet])),  # two members
        ("socket.io#/#", msgpack.packb(["emitter", {"type": 2, "data": [42]}, {}])),
        ("socket.io#/#", msgpack.packb(["emitter", {"type": 2, "data": ["x"], "nsp": "/ns"}, {}])),
        ("socket.io#/#room1#", msgpack.packb(["emitter", good_packet, {"rooms": ["other"]}])),
        ("socket.io#/#", msgpack.packb(["emitter", good_packet, {"rooms": "room1"}])),
        ("socket.io#/#", msgpack.packb(["emitter", good_packet, {}]) + b"trailing"),
        ("socket.io#/#", msgpack.packb(["e", {"type": 2, "data": ["x", b"y" * 5000]}, {}])),
        ("socket.io-request#/#", b'{"type": 2, "opts": {"rooms": 1}, "rooms": ["x"]}'),
        ("socket.io-request#/#", b"{not json"),
    ]
    for channel, data in malformed:
        emitter.raw(channel, data)
    emitter.step("serverSideEmit", args=["ping", 1])
    emitter.raw("socket.io-request#/#", b'{"type": 5, "requestId": "r", "opts": {}}')
    emitter.emit("after", "ok", to=["room1"])

    for js in recipients:
        assert js.wait_event("after") == ["ok"]
        assert js.events("bad") == [] and js.events("x") == []
    for node, old in zip(nodes, before, strict=True):
        new = metrics(node)
        diff = {
            k: new[k] - old[k]
            for k in (
                "siogate_emitter_messages_invalid_total",
                "siogate_emitter_messages_unsupported_total",
                "siogate_emitter_messages_total",
            )
        }
        assert diff == {
            "siogate_emitter_messages_invalid_total": len(malformed),
            "siogate_emitter_messages_unsupported_total": 2,
            "siogate_emitter_messages_total": 1,
        }
        assert node.proc.poll() is None
    log = a.log()
    assert "dropped a malformed emitter message" in log
    assert "ignored serverSideEmit('ping') in /: no handler has on_server_event" in log


def test_server_side_emit_reaches_every_nodes_handlers(
    shared_redis: RedisServer, emitter: Emitter, tmp_path: Path
) -> None:
    """As in a Node cluster, where every server's io.on(event) listeners run: each node's
    on_server_event is called once."""
    record = tmp_path / "events.jsonl"
    started = [
        spawn_gateway(
            "--allow-anonymous",
            "--redis-url",
            shared_redis.url,
            "--redis-prefix",
            "sse",
            "--emitter-compat",
            "--handlers",
            "tests.integration.emitter_handlers:ServerEvents",
            log_dir=tmp_path,
            env={"EMITTER_TEST_EVENTS": str(record)},
        )  # fmt: skip
        for _ in range(2)
    ]
    try:
        for node in started:
            wait_until(lambda node=node: metrics(node).get("siogate_emitter_connected") == 1,
                       "subscribed")  # fmt: skip
        emitter.step("serverSideEmit", args=["cache:flush", {"key": "k1"}, 2])
        emitter.step("serverSideEmit", nsp="/ns", args=["hello"])

        def lines() -> list[dict[str, Any]]:
            if not record.exists():
                return []
            return [json.loads(x) for x in record.read_text().splitlines()]

        wait_until(lambda: len(lines()) >= 4, "four handler calls")
        time.sleep(0.3)
        calls = lines()
        assert len(calls) == 4
        pids = {n.proc.pid for n in started}
        flush = [c for c in calls if c["event"] == "cache:flush"]
        assert {c["pid"] for c in flush} == pids
        assert all(c["namespace"] == "/" and c["args"] == [{"key": "k1"}, 2] for c in flush)
        hello = [c for c in calls if c["event"] == "hello"]
        assert {c["pid"] for c in hello} == pids
        assert all(c["namespace"] == "/ns" and c["args"] == [] for c in hello)
        for node in started:
            assert metrics(node)["siogate_emitter_messages_unsupported_total"] == 0
    finally:
        for node in started:
            node.stop()


def test_custom_key(shared_redis: RedisServer, tmp_path: Path, clients: list[JsClient]) -> None:
    node = spawn_gateway(
        "--allow-anonymous", "--redis-url", shared_redis.url, "--redis-prefix", "other",
        "--emitter-compat", "--emitter-key", "my*app", log_dir=tmp_path,
    )  # fmt: skip
    custom = Emitter(shared_redis.url, key="my*app")
    try:
        wait_until(lambda: metrics(node).get("siogate_emitter_connected") == 1, "subscribed")
        js = client(clients, node, ["k"])
        # "my*app" is a literal key, not a pattern: a "myXapp" emitter is not heard.
        other = Emitter(shared_redis.url, key="myXapp")
        try:
            other.emit("wrong-key", 1, to=["k"])
        finally:
            other.close()
        custom.emit("right-key", 2, to=["k"])
        assert js.wait_event("right-key") == [2]
        assert js.events("wrong-key") == []
    finally:
        custom.close()
        node.stop()


NODE_REF = ROOT / "bench" / "node-ref"


def test_mixed_with_a_node_socket_io_server_during_a_migration(
    nodes: tuple[Gateway, Gateway],
    shared_redis: RedisServer,
    emitter: Emitter,
    clients: list[JsClient],
    tmp_path: Path,
) -> None:
    """A Node socket.io server on @socket.io/redis-adapter (bench/node-ref) and siogate on
    one Redis: the emitter reaches both, and the Node server's broadcasts reach siogate's
    sockets too."""
    if not (NODE_REF / "node_modules" / "@socket.io" / "redis-adapter").exists():
        pytest.skip("bench/node-ref is not installed (cd bench/node-ref && npm ci)")
    a, _ = nodes
    port = free_port()
    log = (tmp_path / "node-ref.log").open("wb")
    server = subprocess.Popen(
        [node_path(), str(NODE_REF / "server.js"), "--port", str(port)],
        env={**os.environ, "API_KEY": API_KEY, "JWT_SECRET": a.jwt_secret,
             "REDIS_URL": shared_redis.url},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        node_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: b"listening" in (tmp_path / "node-ref.log").read_bytes(), "node-ref")
        on_node = JsClient(node_url, auth={"token": a.token(rooms=["mixed"])})
        clients.append(on_node.start())
        on_node.connected()
        on_siogate = client(clients, a, ["mixed"])

        emitter.emit("from-emitter", {"n": 1}, to=["mixed"])
        reply = httpx.post(
            f"{node_url}/v1/emit",
            headers=HEADERS,
            json={"event": "from-node", "args": [2], "rooms": ["mixed"]},
        )
        assert reply.status_code == 200
        for js in (on_node, on_siogate):
            assert js.wait_event("from-emitter") == [{"n": 1}]
            assert js.wait_event("from-node") == [2]
        emitter.emit("last", to=["mixed"])
        for js in (on_node, on_siogate):
            js.wait_event("last")
            assert len(js.events("from-emitter")) == 1 and len(js.events("from-node")) == 1
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.mark.parametrize(
    ("args", "env", "toml", "message"),
    [
        (["--emitter-compat"], {}, None, "emitter_compat needs redis_url"),
        ([], {"SIOGATE_EMITTER_COMPAT": "true"}, None, "emitter_compat needs redis_url"),
        ([], {}, "emitter_compat = true", "emitter_compat needs redis_url"),
        (["--emitter-key", ""], {}, None, "emitter_key must be 1-256 characters"),
    ],
)
def test_setting_errors_exit_2(
    args: list[str], env: dict[str, str], toml: str | None, message: str, tmp_path: Path
) -> None:
    if toml is not None:
        (tmp_path / "s.toml").write_text(toml)
        args = [*args, "--config", str(tmp_path / "s.toml")]
    proc = subprocess.run(
        [sys.executable, "-m", "siogate", "serve", "--api-key", API_KEY, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, **env},
    )
    assert proc.returncode == 2
    assert message in proc.stderr
