"""``siogate serve --workers N``: real worker processes on one port, real clients.

The kernel spreads connections over the workers (SO_REUSEPORT), so the tests connect
many sockets and check through the listings' ``node`` field that both workers got some.
A worker is reached on its own through the private URL it logs (and advertises to the
others for forwarded long polls).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsclient import JsClient
from sioclient import Recorder, uid

from conftest import API_KEY, JWT_SECRET, ROOT, Gateway, RedisServer, free_port, spawn_gateway

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
CLUSTER_TIMEOUT_MS = 1000
WORKER = re.compile(r"worker (\d+) is node (\w+) \(pid (\d+)\)")
PRIVATE = re.compile(r"serving as node (\w+), private (\S+)")


class Workers:
    """A running ``serve --workers N`` and what its log says about the workers."""

    def __init__(self, gateway: Gateway, count: int) -> None:
        self.gw = gateway
        self.count = count

    @property
    def url(self) -> str:
        return self.gw.url

    def workers(self) -> dict[int, tuple[str, int]]:
        """Worker index -> (node id, pid), the latest of each."""
        found: dict[int, tuple[str, int]] = {}
        for index, node, pid in WORKER.findall(self.gw.log()):
            found[int(index)] = (node, int(pid))
        return found

    def private_url(self, node: str) -> str:
        return dict(PRIVATE.findall(self.gw.log()))[node]

    def metrics(self, node: str) -> dict[str, float]:
        text = httpx.get(f"{self.private_url(node)}/metrics", headers=HEADERS, timeout=5).text
        return {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line and not line.startswith("#") and "{" not in line
        }

    def wait_ready(self, others: int | None = None) -> None:
        """Until every worker runs and sees the others (``others`` nodes: the other
        workers, and other nodes of a cluster on Redis)."""
        wait_until(lambda: len(self.workers()) == self.count, "every worker started")
        expected = self.count - 1 if others is None else others
        for node, _ in self.workers().values():
            wait_until(
                lambda node=node: peers(self.private_url(node)) == expected,
                f"worker {node} sees the others",
            )


def peers(url: str) -> int:
    try:
        body = httpx.get(f"{url}/healthz", timeout=2).json()
    except httpx.TransportError:
        return -1
    return int(body["broker"]["peers"])


def wait_until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def start_workers(tmp_path: Path) -> Iterator[Callable[..., Workers]]:
    started: list[Gateway] = []

    def start(count: int = 2, *args: str) -> Workers:
        gw = spawn_gateway(
            "--allow-anonymous",
            "--workers", str(count),
            "--cluster-timeout", str(CLUSTER_TIMEOUT_MS),
            *args,
            log_dir=tmp_path,
        )  # fmt: skip
        started.append(gw)
        workers = Workers(gw, count)
        workers.wait_ready()
        return workers

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def two(start_workers: Callable[..., Workers]) -> Workers:
    return start_workers(2)


@pytest.fixture
async def recorders() -> AsyncIterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    await asyncio.gather(*(r.close() for r in made))


async def connect_many(
    url: str, made: list[Recorder], count: int, transports: list[str] | None = None
) -> list[Recorder]:
    new = [
        Recorder(url, namespaces=["/"], transports=transports or ["websocket"])
        for _ in range(count)
    ]
    made.extend(new)
    await asyncio.gather(*(r.connect() for r in new))
    return new


def fresh(method: str, url: str, **kw: Any) -> httpx.Response:
    """One request on a connection of its own (so the kernel picks a worker for it)."""
    with httpx.Client(headers={**HEADERS, "Connection": "close"}, timeout=10) as client:
        return client.request(method, url, **kw)


async def afresh(method: str, url: str, **kw: Any) -> httpx.Response:
    return await asyncio.to_thread(fresh, method, url, **kw)


def room_sockets(url: str, room: str) -> dict[str, Any]:
    r = fresh("GET", f"{url}/v1/rooms/{room}/sockets")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# ---------------------------------------------------------------- delivery and listings


@pytest.mark.node
async def test_sockets_on_both_workers_get_emits_and_listings_are_whole(
    two: Workers, recorders: list[Recorder]
) -> None:
    room = uid("room")
    clients = await connect_many(two.url, recorders, 16)
    with JsClient(two.url, transports=["websocket"]) as js:
        js_sid = js.connected()
        sids = {c.sid() for c in clients} | {js_sid}
        for sid in sids:
            r = await afresh("POST", f"{two.url}/v1/join", json={"sockets": [sid], "room": room})
            assert r.status_code == 200, r.text
        # Any worker answers for both: every socket, each with the worker that holds it.
        for _ in range(4):
            listing = room_sockets(two.url, room)
            assert {s["id"] for s in listing["sockets"]} == sids
            assert listing["partial"] is False
            assert listing["nodes"] == {"answered": 2, "missing": []}
        nodes = {s["node"] for s in listing["sockets"]}
        assert nodes == {node for node, _ in two.workers().values()}, "one worker got none"
        for i in range(3):
            r = await afresh("POST", f"{two.url}/v1/emit",
                             json={"event": "news", "args": [i], "rooms": [room]})  # fmt: skip
            assert r.status_code == 200, r.text
        for c in clients:
            await c.wait_event("news", count=3)
            assert [args[0] for args in c.received("news")] == [0, 1, 2]
        assert [args[0] for args in js.wait_events("news", 3)] == [0, 1, 2]


async def test_join_through_one_worker_then_emit_through_another_reaches_the_socket(
    two: Workers, recorders: list[Recorder]
) -> None:
    clients = await connect_many(two.url, recorders, 8)
    nodes = [node for node, _ in two.workers().values()]
    for round_ in range(10):
        room = uid("joined")
        # The join goes to one worker's private listener, the emit to the other's.
        for c in clients:
            r = await afresh("POST", f"{two.private_url(nodes[round_ % 2])}/v1/join",
                             json={"sockets": [c.sid()], "room": room})  # fmt: skip
            assert r.status_code == 200, r.text
        r = await afresh("POST", f"{two.private_url(nodes[(round_ + 1) % 2])}/v1/emit",
                         json={"event": "hi", "args": [round_], "rooms": [room]})  # fmt: skip
        assert r.status_code == 200, r.text
        for c in clients:
            assert await c.wait_event("hi", count=round_ + 1) == [round_]


async def test_a_worker_without_members_of_a_room_receives_nothing_for_it(
    two: Workers, recorders: list[Recorder]
) -> None:
    clients = await connect_many(two.url, recorders, 8)
    nodes = [node for node, _ in two.workers().values()]
    holder = next(n for n in nodes if any(c.sid().startswith(n) for c in clients))
    other = next(n for n in nodes if n != holder)
    member = next(c for c in clients if c.sid().startswith(holder))
    room = uid("routed")
    r = await afresh("POST", f"{two.private_url(other)}/v1/join",
                     json={"sockets": [member.sid()], "room": room})  # fmt: skip
    assert r.status_code == 200, r.text
    metric = "siogate_broker_messages_in_total"
    before = two.metrics(other)[metric]
    for i in range(20):
        r = await afresh("POST", f"{two.private_url(holder)}/v1/emit",
                         json={"event": "only", "args": [i], "rooms": [room]})  # fmt: skip
        assert r.status_code == 200, r.text
    assert await member.wait_event("only", count=20) == [19]
    assert two.metrics(other)[metric] == before  # none of the 20 reached the other worker
    # A namespace-wide emit still does (the metric is not stuck).
    r = await afresh("POST", f"{two.private_url(holder)}/v1/emit", json={"event": "all"})
    assert r.status_code == 200, r.text
    for c in clients:
        await c.wait_event("all")
    assert two.metrics(other)[metric] == before + 1


async def test_disconnect_through_the_api_reaches_sockets_on_every_worker(
    two: Workers, recorders: list[Recorder]
) -> None:
    room = uid("gone")
    clients: list[Recorder] = []
    # The kernel spreads connections over the workers; more until both hold some (10 on
    # one worker alone happened once in a full run).
    for _ in range(4):
        more = await connect_many(two.url, recorders, 10)
        for c in more:
            body = {"sockets": [c.sid()], "room": room}
            r = await afresh("POST", f"{two.url}/v1/join", json=body)
            assert r.status_code == 200
        clients += more
        if len({s["node"] for s in room_sockets(two.url, room)["sockets"]}) == 2:
            break
    assert len({s["node"] for s in room_sockets(two.url, room)["sockets"]}) == 2
    r = await afresh("POST", f"{two.url}/v1/disconnect", json={"rooms": [room]})
    assert r.status_code == 200, r.text
    for c in clients:
        await c.wait_disconnect()
    assert room_sockets(two.url, room)["sockets"] == []


# ---------------------------------------------------------------- long polling


def test_long_polling_sessions_that_land_on_the_other_worker_are_forwarded(two: Workers) -> None:
    # Every request on a connection of its own: about half land on the worker that does
    # not own the session, which relays them to the owner.
    eio = f"{two.url}/socket.io/?EIO=4&transport=polling"
    for _ in range(6):
        r = fresh("GET", eio)
        assert r.status_code == 200, r.text
        sid = httpx.Response(200, content=r.content[1:]).json()["sid"]
        assert fresh("POST", f"{eio}&sid={sid}", content=b"40").text == "ok"
        connected = fresh("GET", f"{eio}&sid={sid}").text
        assert connected.startswith("40")
        socket_id = httpx.Response(200, content=connected[2:].encode()).json()["sid"]
        for i in range(3):
            body = {"event": "poll", "args": [i], "rooms": [socket_id]}
            assert fresh("POST", f"{two.url}/v1/emit", json=body).status_code == 200
        seen = ""
        while seen.count('["poll"') < 3:
            seen += fresh("GET", f"{eio}&sid={sid}").text
        assert '["poll",0]' in seen and '["poll",2]' in seen
    forwarded = sum(
        two.metrics(node)["siogate_forwarded_requests_total"] for node, _ in two.workers().values()
    )
    assert forwarded > 0


@pytest.mark.node
def test_stock_client_over_long_polling_receives_emits(two: Workers) -> None:
    clients = [JsClient(two.url, transports=["polling"]) for _ in range(4)]
    try:
        for js in clients:
            js.start()
            js.connected()
        for i in range(5):
            r = fresh("POST", f"{two.url}/v1/emit", json={"event": "tick", "args": [i]})
            assert r.status_code == 200
        for js in clients:
            assert [args[0] for args in js.wait_events("tick", 5)] == list(range(5))
            assert js.transport() == "polling"
    finally:
        for js in clients:
            js.close()


# ---------------------------------------------------------------- failures and shutdown


@pytest.mark.node
def test_a_killed_worker_is_restarted_and_its_clients_reconnect(two: Workers) -> None:
    options = {"reconnection": True, "reconnectionDelay": 100, "reconnectionDelayMax": 500}
    clients = [JsClient(two.url, transports=["websocket"], options=options) for _ in range(8)]
    room = uid("all")
    try:
        for js in clients:
            js.start()
            sid = js.connected()
            assert fresh("POST", f"{two.url}/v1/join", json={"sockets": [sid], "room": room})
        held: dict[str, int] = {}
        for s in room_sockets(two.url, room)["sockets"]:
            held[s["node"]] = held.get(s["node"], 0) + 1
        # The victim: the worker holding the most of them.
        index, (node, pid) = max(two.workers().items(), key=lambda w: held.get(w[1][0], 0))
        assert held.get(node, 0) > 0
        subprocess.run(["kill", "-9", str(pid)], check=True)
        wait_until(lambda: two.workers()[index][1] != pid, "the worker restarted", 20)
        assert two.workers()[index][0] != node, "a restarted worker is a new node"
        two.wait_ready()
        # The stock client reconnects on its own; all eight are served again.
        deadline = time.monotonic() + 20
        while not all(js.events("back") for js in clients):
            assert time.monotonic() < deadline, [js.describe() for js in clients]
            assert fresh("POST", f"{two.url}/v1/emit", json={"event": "back"}).status_code == 200
            time.sleep(0.3)
        assert f"worker {index} (node {node}, pid {pid}) exited with -9" in two.gw.log()
        listing = room_sockets(two.url, uid("none"))
        assert listing["nodes"] == {"answered": 2, "missing": []}
    finally:
        for js in clients:
            js.close()


@pytest.mark.node
def test_sigterm_drains_every_worker_and_exits_0_in_bounded_time(two: Workers) -> None:
    with JsClient(two.url, transports=["websocket"]) as js:
        js.connected()
        pids = [pid for _, pid in two.workers().values()]
        started = time.monotonic()
        two.gw.proc.send_signal(signal.SIGTERM)
        assert two.gw.proc.wait(15) == 0
        elapsed = time.monotonic() - started
        js.wait_disconnect()
    assert elapsed < 10 + 2
    # The primary waited for its workers: none is left running.
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


# ---------------------------------------------------------------- presence


async def test_presence_webhooks_count_a_user_once_across_workers_without_redis(
    start_workers: Callable[..., Workers], recorders: list[Recorder]
) -> None:
    from webhook_receiver import WebhookReceiver, of_type

    secret = "whsec-workers-0123456789abcdef0123"
    with WebhookReceiver() as hook:
        w = start_workers(2, "--webhook-url", hook.url, "--webhook-secret", secret,
                          "--presence-webhooks")  # fmt: skip
        user = uid("ann")

        def kinds() -> list[str]:
            found = hook.matching(lambda r: of_type("user.online", user=user)(r)
                                  or of_type("user.offline", user=user)(r))  # fmt: skip
            return [r.payload["type"] for r in found]

        # Sockets of one user until both workers hold one (each connect is a new TCP
        # connection, which the kernel hands to either worker).
        by_node: dict[str, list[Recorder]] = {}
        for _ in range(24):
            c = await Recorder(
                w.url, auth={"token": w.gw.token(user)}, transports=["websocket"]
            ).connect()
            recorders.append(c)
            listing = (await afresh("GET", f"{w.url}/v1/rooms/user:{user}/sockets")).json()
            [node] = [s["node"] for s in listing["sockets"] if s["id"] == c.sid()]
            by_node.setdefault(node, []).append(c)
            if len(by_node) == 2:
                break
        assert len(by_node) == 2, "every connection landed on the same worker"
        await hook.wait(of_type("user.online", user=user))
        # All of its sockets on one worker leave: still online on the other.
        (_, first), (last_node, _) = by_node.items()
        for c in first:
            await c.close()
        await asyncio.sleep(1.5)  # more than a presence poll
        assert kinds() == ["user.online"]
        # The worker holding the rest is killed: a live worker reports the user offline,
        # once (these clients do not reconnect).
        [pid] = [pid for node, pid in w.workers().values() if node == last_node]
        os.kill(pid, signal.SIGKILL)
        await hook.wait(of_type("user.offline", user=user), timeout=10)
        await asyncio.sleep(1.5)
        assert kinds() == ["user.online", "user.offline"]
        offline = hook.matching(of_type("user.offline", user=user))[0]
        assert offline.signature_ok(secret)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "workers must be 1-"),
        (["--workers", "many"], "neither a number nor 'auto'"),
        (
            ["--workers", "2", "--history-size", "30"],
            "history_size with redis_url or workers above 1 needs recovery_window",
        ),
    ],
)  # fmt: skip
def test_settings_that_cannot_work_with_workers_exit_2(args: list[str], message: str) -> None:
    cmd = [sys.executable, "-m", "siogate", "serve", "--port", str(free_port()),
           "--api-key", API_KEY, "--jwt-secret", JWT_SECRET, *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


def test_a_second_serve_on_the_port_of_workers_is_refused(two: Workers) -> None:
    """SO_REUSEPORT would let it join the workers' group and take their connections."""
    for workers in ("2", "1"):
        cmd = [sys.executable, "-m", "siogate", "serve", "--port", str(two.gw.port),
               "--api-key", API_KEY, "--jwt-secret", JWT_SECRET, "--workers", workers]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert proc.returncode == 3, proc.stderr
        assert "cannot listen" in proc.stderr


def test_workers_auto_is_the_number_of_usable_cores(
    start_workers: Callable[..., Workers], tmp_path: Path
) -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    gw = spawn_gateway("--allow-anonymous", "--workers", "auto", log_dir=tmp_path)
    try:
        if cores == 1:
            assert "workers" not in gw.log()
        else:
            workers = Workers(gw, cores)
            workers.wait_ready()
    finally:
        gw.stop()


# ---------------------------------------------------------------- with Redis


@pytest.mark.redis
async def test_workers_on_redis_are_nodes_of_the_cluster(
    redis_server: RedisServer, tmp_path: Path, recorders: list[Recorder]
) -> None:
    common = ["--redis-url", redis_server.url, "--node-ttl", "1500",
              "--cluster-timeout", str(CLUSTER_TIMEOUT_MS), "--allow-anonymous"]  # fmt: skip
    gw = spawn_gateway("--workers", "2", *common, log_dir=tmp_path)
    single = spawn_gateway(*common, log_dir=tmp_path)
    try:
        workers = Workers(gw, 2)
        workers.wait_ready(others=2)  # the other worker and the single node
        room = uid("r")
        clients = await connect_many(gw.url, recorders, 8)
        clients += await connect_many(single.url, recorders, 2)
        for c in clients:
            r = await afresh(
                "POST", f"{single.url}/v1/join", json={"sockets": [c.sid()], "room": room}
            )
            assert r.status_code == 200
        listing = room_sockets(single.url, room)
        assert len(listing["sockets"]) == 10 and listing["nodes"]["answered"] == 3
        r = await afresh("POST", f"{single.url}/v1/emit", json={"event": "all", "rooms": [room]})
        assert r.status_code == 200
        for c in clients:
            await c.wait_event("all")
    finally:
        await asyncio.gather(*(r.close() for r in recorders))
        recorders.clear()
        gw.stop()
        single.stop()


def test_generated_dev_credentials_are_one_set_for_every_worker(tmp_path: Path) -> None:
    import json

    state = tmp_path / "state"
    gw = spawn_gateway(
        "--allow-anonymous", "--workers", "2", "--log-level", "info",
        log_dir=tmp_path, env={"XDG_STATE_HOME": str(state)}, with_defaults=False,
    )  # fmt: skip
    try:
        workers = Workers(gw, 2)
        workers.wait_ready()
        assert gw.log().count("siogate DEV MODE") == 1
        saved = json.loads((state / "siogate" / "dev-credentials.json").read_text())
        key = saved[gw.url]["api_key"]
        for node, _ in workers.workers().values():
            r = httpx.get(f"{workers.private_url(node)}/v1/rooms",
                          headers={"Authorization": f"Bearer {key}"}, timeout=5)  # fmt: skip
            assert r.status_code == 200, (node, r.text)
    finally:
        gw.stop()


async def test_without_so_reuseport_workers_share_the_primarys_socket(
    tmp_path: Path, recorders: list[Recorder]
) -> None:
    """The fallback for systems without SO_REUSEPORT, forced on this one."""
    port = free_port()
    code = (
        "import sys, siogate.supervisor as s; s.reuse_port_available = lambda: False; "
        "from siogate.cli import main; sys.argv[0] = 'siogate'; main()"
    )
    cmd = [sys.executable, "-c", code, "serve", "--port", str(port), "--workers", "2",
           "--api-key", API_KEY, "--jwt-secret", JWT_SECRET, "--allow-anonymous"]  # fmt: skip
    log_path = tmp_path / "shared.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    gw = Gateway(port=port, proc=proc, log_path=log_path)
    try:
        workers = Workers(gw, 2)
        workers.wait_ready()
        assert "with 2 workers (one shared socket)" in gw.log()
        room = uid("shared")
        clients = await connect_many(gw.url, recorders, 16)
        for c in clients:
            r = await afresh("POST", f"{gw.url}/v1/join", json={"sockets": [c.sid()], "room": room})
            assert r.status_code == 200
        listing = room_sockets(gw.url, room)
        assert len(listing["sockets"]) == 16 and listing["nodes"]["answered"] == 2
        r = await afresh("POST", f"{gw.url}/v1/emit", json={"event": "one", "rooms": [room]})
        assert r.status_code == 200
        for c in clients:
            await c.wait_event("one")
    finally:
        await asyncio.gather(*(r.close() for r in recorders))
        recorders.clear()
        gw.stop()


async def test_an_idempotency_key_retried_on_the_other_worker_is_replayed_not_applied(
    two: Workers, recorders: list[Recorder]
) -> None:
    [client] = await connect_many(two.url, recorders, 1)
    first, second = (two.private_url(node) for node, _ in two.workers().values())
    body = {"event": "once", "rooms": [client.sid()]}
    key = {"Idempotency-Key": uid("key")}
    a = await afresh("POST", f"{first}/v1/emit", json=body, headers={**HEADERS, **key})
    b = await afresh("POST", f"{second}/v1/emit", json=body, headers={**HEADERS, **key})
    assert a.status_code == b.status_code == 200
    assert "idempotent-replayed" not in a.headers
    assert b.headers.get("idempotent-replayed") == "true"
    assert b.json() == a.json()
    # The same key for another request is refused on either worker.
    other = await afresh("POST", f"{second}/v1/emit", json={**body, "event": "x"},
                         headers={**HEADERS, **key})  # fmt: skip
    assert other.status_code == 422, other.text
    await client.wait_event("once")
    await asyncio.sleep(0.3)
    assert len(client.received("once")) == 1


@pytest.mark.node
def test_emit_with_ack_collects_replies_from_sockets_on_every_worker(two: Workers) -> None:
    from test_ack_emit import AckClients, replies

    clients = AckClients(two.url, 10, silent=(3,))
    try:
        ids = dict(clients.ids)
        nodes = {room_sockets(two.url, sid)["sockets"][0]["node"] for sid in ids.values()}
        assert len(nodes) == 2, "one worker got no socket"
        body = {"event": "ask", "data": "all", "ack": {"timeout_ms": 2000}}
        r = fresh("POST", f"{two.url}/v1/emit", json=body)
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["recipients"] == 10
        assert result["timeouts"] == [ids[3]]
        assert replies(result) == {
            sid: [{"i": i, "id": sid, "echo": "all"}] for i, sid in ids.items() if i != 3
        }
        assert result["nodes"] == {"answered": 2, "missing": []}
    finally:
        clients.close()


# ---------------------------------------------------------------- recovery and history


def recover_on_both_workers(gw: Gateway) -> None:
    """A stock client drops its transport and reconnects until it came back on both
    workers: recovered each time, same id, every missed event once and in order."""
    from test_recovery import payloads, wait_parked

    room = uid("w")

    def holder() -> str | None:
        """The worker listing the socket as connected, once only one does."""
        live = [s for s in room_sockets(gw.url, room)["sockets"] if s.get("connected", True)]
        return live[0]["node"] if len(live) == 1 else None

    token = gw.token("alice", rooms=[room])
    with JsClient(gw.url, auth={"token": token}, options={"transports": ["websocket"]}) as js:
        first = js.connect()
        sid = first["id"]
        seen = {wait_until(holder, "the socket listed")}
        # The stock client asks to recover only with an offset: one event first.
        assert gw.emit("e", 0, rooms=[room]).status_code == 200
        assert payloads(js.wait_events("e", 1)) == [0]
        sent = 1
        # Each reconnect is a new TCP connection the kernel hands to either worker:
        # go on until one landed on the other worker (20 tries: 1 in 10^6 to fail).
        for _ in range(20):
            js.send(op="drop")
            js.wait_disconnect()
            wait_parked(gw, sid, room)
            for _ in range(3):
                assert gw.emit("e", sent, rooms=[room]).status_code == 200
                sent += 1
            again = js.connect()
            assert again["id"] == sid and again["recovered"] is True, again
            seen.add(wait_until(holder, "the socket listed again"))
            if len(seen) == 2:
                break
        assert len(seen) == 2, "every reconnect landed on the same worker"
        # Each event missed while away came once, in order, wherever it came back.
        assert payloads(js.wait_events("e", sent)) == list(range(sent))
        time.sleep(0.3)
        assert len(js.wait_events("e", sent)) == sent


@pytest.mark.node
def test_workers_recover_each_others_sockets_through_the_primary(
    start_workers: Callable[..., Workers],
) -> None:
    workers = start_workers(2, "--recovery-window", "30")
    recover_on_both_workers(workers.gw)


@pytest.mark.redis
@pytest.mark.node
def test_workers_on_redis_recover_each_others_sockets(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    gw = spawn_gateway(
        "--workers", "2", "--redis-url", redis_server.url, "--node-ttl", "1500",
        "--cluster-timeout", str(CLUSTER_TIMEOUT_MS), "--recovery-window", "30",
        log_dir=tmp_path,
    )  # fmt: skip
    try:
        Workers(gw, 2).wait_ready()
        recover_on_both_workers(gw)
    finally:
        gw.stop()


@pytest.mark.node
def test_a_socket_recovers_on_another_worker_after_its_worker_was_killed(
    start_workers: Callable[..., Workers],
) -> None:
    from test_recovery import payloads

    workers = start_workers(2, "--recovery-window", "30")
    gw = workers.gw
    room = uid("k")
    token = gw.token("bob", rooms=[room])
    with JsClient(gw.url, auth={"token": token}, options={"transports": ["websocket"]}) as js:
        sid = js.connect()["id"]
        assert gw.emit("e", "before", rooms=[room]).status_code == 200
        assert payloads(js.wait_events("e", 1)) == ["before"]
        holder = wait_until(lambda: room_sockets(gw.url, room)["sockets"], "the socket listed")
        node = holder[0]["node"]
        pid = next(p for n, p in workers.workers().values() if n == node)
        os.kill(pid, signal.SIGKILL)
        js.wait_disconnect()
        # Through the other worker (the only one listening until the killed one is back).
        assert fresh(
            "POST", f"{gw.url}/v1/join", json={"sockets": [sid], "room": "late"}
        ).is_success
        for body in (
            {"event": "e", "args": ["missed"], "rooms": [room]},
            {"event": "e", "args": ["joined"], "rooms": ["late"]},
            {"event": "e", "args": ["direct"], "rooms": [sid]},
        ):
            assert fresh("POST", f"{gw.url}/v1/emit", json=body).status_code == 200
        again = js.connect()
        assert again["type"] == "connected" and again["id"] == sid, again
        assert again["recovered"] is True
        assert gw.emit("e", "after", rooms=["late"]).status_code == 200
        assert payloads(js.wait_events("e", 5)) == ["before", "missed", "joined", "direct", "after"]
        time.sleep(0.3)
        assert len(js.wait_events("e", 5)) == 5


def test_room_history_is_the_same_from_every_worker(start_workers: Callable[..., Workers]) -> None:
    workers = start_workers(2, "--recovery-window", "30", "--history-size", "100")
    nodes = [node for node, _ in workers.workers().values()]
    urls = [workers.private_url(node) for node in nodes]
    offsets = []
    for i in range(4):
        r = fresh(
            "POST", f"{urls[i % 2]}/v1/emit", json={"event": "m", "args": [i], "rooms": ["chat"]}
        )
        assert r.status_code == 200, r.text
        offsets.append(r.json()["offset"])
    fresh("POST", f"{urls[1]}/v1/emit", json={"event": "m", "args": ["x"], "rooms": ["other"]})
    for url in urls:
        body = fresh("GET", f"{url}/v1/rooms/chat/history").json()
        assert [m["data"] for m in body["messages"]] == [[i] for i in range(4)]
        assert [m["offset"] for m in body["messages"]] == offsets
        assert body["complete"] is True
        page = fresh("GET", f"{url}/v1/rooms/chat/history?since={offsets[1]}&limit=1").json()
        assert [m["offset"] for m in page["messages"]] == [offsets[2]]
        assert page["complete"] is False


@pytest.mark.node
def test_emits_while_reconnecting_across_workers_are_neither_lost_nor_duplicated(
    start_workers: Callable[..., Workers],
) -> None:
    # The client drops again and again and reconnects on its own, the kernel handing
    # each reconnect to either worker (sometimes before the old one has parked it);
    # events are emitted through both workers all along.
    from recovery_race import emits_while_dropping

    workers = start_workers(2, "--recovery-window", "30")
    gw = workers.gw
    urls = [workers.private_url(node) for node, _ in workers.workers().values()]
    room, total = uid("race"), 600
    options = {"transports": ["websocket"], "reconnection": True, "reconnectionDelay": 50}
    options["randomizationFactor"] = 0
    with JsClient(gw.url, auth={"token": gw.token("frank", rooms=[room])}, options=options) as js:
        sid = js.connect()["id"]
        time.sleep(0.2)  # the record is written
        emits_while_dropping(js, sid, urls, API_KEY, room, total)
        # Exactly one worker holds it in the end.
        wait_until(
            lambda: len([s for s in room_sockets(gw.url, room)["sockets"] if s["id"] == sid]) == 1,
            "one holder in the end",
        )
