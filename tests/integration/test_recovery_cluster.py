"""Connection state recovery across nodes (--recovery-window with --redis-url).

Two real nodes on a real Redis behind a round-robin HAProxy; the stock socket.io-client
4.8 drops its transport and its reconnect lands on the other node (or its node is killed
with ``kill -9``). It must get ``recovered``, the same id, its rooms as changed over the
API meanwhile, and every event it missed once, in order, before anything newer.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from jsclient import JsClient
from recovery_race import emits_while_dropping
from test_cluster import (  # noqa: F401 (fixtures)
    Cluster,
    cluster,
    haproxy,
    local_sockets,
    wait_peers,
    wait_until,
)
from test_recovery import SECRET, Polling, close_polling, payloads, wait_parked  # noqa: F401
from webhook_receiver import WebhookReceiver

from conftest import Gateway

pytestmark = [pytest.mark.redis, pytest.mark.node]

WINDOW = "30"

Proxy = Callable[..., str]


@pytest.fixture
def env(request: pytest.FixtureRequest) -> tuple[Cluster, Proxy]:
    """The cluster of nodes and the HAProxy factory (test_cluster's fixtures)."""
    return request.getfixturevalue("cluster"), request.getfixturevalue("haproxy")


def start_two(nodes: Cluster, *args: str) -> tuple[Gateway, Gateway]:
    a = nodes.start_node("--recovery-window", WINDOW, *args)
    b = nodes.start_node("--recovery-window", WINDOW, *args)
    wait_peers([a, b])
    return a, b


def client(front: str, token: str, **options: Any) -> JsClient:
    return JsClient(front, auth={"token": token}, options={"transports": ["websocket"], **options})


def holder(nodes: tuple[Gateway, Gateway]) -> tuple[Gateway, Gateway]:
    """(the node holding the one socket, the other one)."""
    a, b = nodes
    wait_until(lambda: local_sockets(a) + local_sockets(b) == 1, "one socket connected")
    return (a, b) if local_sockets(a) == 1 else (b, a)


def ok(node: Gateway, path: str, **body: Any) -> None:
    r = node.api("POST", path, json=body)
    assert r.status_code == 200, r.text


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


def test_recovers_on_the_other_node_behind_round_robin(
    env: tuple[Cluster, Proxy], receiver: WebhookReceiver
) -> None:
    group, proxy = env
    hook = receiver
    nodes = start_two(group, "--webhook-url", hook.url, "--webhook-secret", SECRET)
    front = proxy(list(nodes))
    a, _ = nodes
    with client(front, a.token("alice", rooms=["news"])) as js:
        first = js.connect()
        assert first["type"] == "connected" and first["recovered"] is False
        sid = first["id"]
        first_node, other = holder(nodes)
        ok(a, "/v1/join", sockets=[sid], room="extra")
        a.emit("e", "before", rooms=["news"])
        assert payloads(js.wait_events("e", 1)) == ["before"]

        js.send(op="drop")
        js.wait_disconnect()
        wait_parked(a, sid)
        # While away, through both nodes: rooms changed and events of every kind.
        ok(other, "/v1/leave", sockets=[sid], room="extra")
        # With an Idempotency-Key (its one-step path must go through the log too).
        r = first_node.api(
            "POST",
            "/v1/join",
            json={"sockets": [sid], "room": "late"},
            headers={"Idempotency-Key": "join-late-1"},
        )
        assert r.status_code == 200, r.text
        other.emit("e", "room", rooms=["news"])
        first_node.emit("e", "not-mine", rooms=["extra"])
        other.emit("e", "joined", rooms=["late"])
        first_node.emit("e", "user", rooms=["user:alice"])
        other.emit("e", "direct", rooms=[sid])
        first_node.emit("e", "everyone")
        other.emit("e", "excluded", rooms=["news"], **{"except": ["late"]})
        r = other.api(
            "POST",
            "/v1/batch",
            json={"emits": [{"event": "n", "args": [i], "rooms": ["news"]} for i in range(1000)]},
        )
        assert r.status_code == 200, r.text

        again = js.connect()  # round-robin: the other node
        assert again["type"] == "connected", again
        assert again["id"] == sid and again["recovered"] is True, again
        wait_until(lambda: local_sockets(other) == 1, "the socket on the other node")
        wait_until(lambda: local_sockets(first_node) == 0, "the first node let go")
        r = first_node.emit("e", "after", rooms=["late"])
        assert r.status_code == 200
        got = payloads(js.wait_events("e", 7))
        # The API answers the offset the event carries (a Redis stream id).
        assert js.wait_events("e", 7)[-1][-1] == r.json()["offset"]
        assert got == ["before", "room", "joined", "user", "direct", "everyone", "after"]
        assert payloads(js.wait_events("n", 1000)) == list(range(1000))
        kinds = [o.get("event") for o in js.observations if o.get("type") == "event"]
        last_n = max(i for i, k in enumerate(kinds) if k == "n")
        assert kinds.index("e", last_n) > last_n  # "after" came after every replayed event
        # Its rooms now, listed once, connected.
        late = a.api("GET", "/v1/rooms/late/sockets").json()["sockets"]
        assert [(s["id"], s.get("connected", True)) for s in late] == [(sid, True)]
        assert a.api("GET", "/v1/rooms/extra/sockets").json()["sockets"] == []

        # Dropped again at once: it asks from the last replayed offset, gets nothing twice.
        js.send(op="drop")
        js.wait_disconnect()
        wait_parked(a, sid, "late")
        a.emit("e", "second", rooms=["late"])
        back = js.connect()
        assert back["id"] == sid and back["recovered"] is True, back
        assert payloads(js.wait_events("e", 8))[-1] == "second"
        time.sleep(0.3)
        assert len(js.wait_events("e", 8)) == 8 and len(js.wait_events("n", 1000)) == 1000

    # For the backend the socket never left: one connect, no disconnect until the client
    # left for good, and that one from the node that held it last.
    time.sleep(0.5)
    sent = [json.loads(r.body) for r in hook.requests]
    kinds = [w["type"] for w in sent if w["type"] in ("connect", "disconnect")]
    assert kinds == ["connect", "disconnect"], sent
    assert sent[-1]["reason"] == "client namespace disconnect" and "recovery" not in sent[-1]


def test_recovers_after_its_node_was_killed(env: tuple[Cluster, Proxy]) -> None:
    group, proxy = env
    nodes = start_two(group)
    front = proxy(list(nodes))
    with client(front, nodes[0].token("bob", rooms=["news"])) as js:
        sid = js.connected()
        victim, survivor = holder(nodes)
        survivor.emit("e", "before", rooms=["news"])
        assert payloads(js.wait_events("e", 1)) == ["before"]
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(5)
        js.wait_disconnect()
        ok(survivor, "/v1/join", sockets=[sid], room="late")
        survivor.emit("e", "missed", rooms=["news"])
        survivor.emit("e", "joined", rooms=["late"])
        survivor.emit("e", "direct", rooms=[sid])
        # The balancer may try the dead node first: retry as the client's own
        # reconnection would.
        for _ in range(4):
            again = js.connect()
            if again["type"] == "connected":
                break
        assert again["type"] == "connected" and again["id"] == sid, again
        assert again["recovered"] is True
        survivor.emit("e", "after", rooms=["late"])
        assert payloads(js.wait_events("e", 5)) == ["before", "missed", "joined", "direct", "after"]


def test_past_the_window_or_forged_is_a_new_socket(env: tuple[Cluster, Proxy]) -> None:
    group, proxy = env
    a = group.start_node("--recovery-window", "1")
    b = group.start_node("--recovery-window", "1")
    wait_peers([a, b])
    front = proxy([a, b])
    with client(front, a.token("carol", rooms=["news"])) as js:
        sid = js.connected()
        js.send(op="drop")
        js.wait_disconnect()
        wait_parked(a, sid)
        a.emit("e", "too-late", rooms=["news"])
        time.sleep(1.5)
        again = js.connect()
        assert again["type"] == "connected" and again["recovered"] is False
        assert again["id"] != sid
        a.emit("e", "new", rooms=["user:carol"])
        assert payloads(js.wait_events("e", 1)) == ["new"]
    # A made-up pid and offset, and another user's pid: new sockets, nothing leaks.
    with client(front, a.token("dave", rooms=["secret"])) as victim:
        victim_sid = victim.connected()
        victim.send(op="drop")
        victim.wait_disconnect()
        wait_parked(a, victim_sid, "secret")
        a.emit("e", "private", rooms=["secret"])
        pid = _pid_of(group.redis.url, victim_sid)
        for auth in (
            {"token": a.token("dave"), "pid": "x" * 22, "offset": "1-0"},
            {"token": a.token("dave"), "pid": pid, "offset": "99999999999999-0"},
            {"token": a.token("mallory"), "pid": pid},
        ):
            with JsClient(front, auth=auth, options={"transports": ["websocket"]}) as other:
                got = other.connect()
                assert got["type"] == "connected" and got["id"] != victim_sid, (auth, got)
                assert got["recovered"] is False
                a.emit("probe", 1, rooms=[got["id"]])
                other.wait_event("probe")
                assert not [o for o in other.observations if o.get("event") == "e"]


def _pid_of(url: str, sid: str) -> str:
    """The pid of a socket, read from its record in Redis (what its client was told)."""
    r = redis.Redis.from_url(url)
    try:
        for key in r.scan_iter("siogate:rsess:*"):
            if r.hget(key, "sid") == sid.encode():
                return str(key.decode().rsplit(":", 1)[1])
    finally:
        r.close()
    raise AssertionError(f"no record for {sid}")


def test_emits_while_reconnecting_across_nodes_are_neither_lost_nor_duplicated(
    env: tuple[Cluster, Proxy],
) -> None:
    # The client drops again and again and reconnects on its own through the balancer,
    # landing on alternate nodes, sometimes before its old node has parked it; events are
    # emitted through both nodes all along.
    group, proxy = env
    nodes = start_two(group)
    front = proxy(list(nodes))
    total = 600
    options = {"reconnection": True, "reconnectionDelay": 50, "randomizationFactor": 0}
    with client(front, nodes[0].token("frank", rooms=["race"]), **options) as js:
        sid = js.connected()
        time.sleep(0.2)  # the record is written
        urls = [n.url for n in nodes]
        emits_while_dropping(js, sid, urls, nodes[0].api_key, "race", total)
        # Exactly one node holds it in the end.
        wait_until(
            lambda: sorted(local_sockets(n) for n in nodes) == [0, 1], "one holder in the end"
        )


def test_a_polling_client_recovers_on_the_other_node(env: tuple[Cluster, Proxy]) -> None:
    # A raw Engine.IO long-polling session on A, then its CONNECT {pid, offset} on B.
    group, _ = env
    a, b = start_two(group)
    first = Polling(a)
    hello = first.connect({"token": a.token("gina", rooms=["news"])})
    assert hello["type"] == "40"
    b.emit("e", "seen", rooms=["news"])
    seen = json.loads(first.packets()[0][2:])
    assert seen[:2] == ["e", "seen"]
    first.drop()
    wait_parked(a, hello["sid"])
    b.emit("e", "missed", rooms=["news"])
    # A future offset: a new socket, and the session is still there for its client.
    forged = Polling(b).connect(
        {"token": a.token("gina"), "pid": hello["pid"], "offset": "99999999999999-0"}
    )
    assert forged["sid"] != hello["sid"]
    back = Polling(b)
    answer = back.connect({"token": a.token("gina"), "pid": hello["pid"], "offset": seen[-1]})
    assert (answer["sid"], answer["pid"]) == (hello["sid"], hello["pid"])
    replayed = json.loads(back.packets()[0][2:])
    assert replayed[:2] == ["e", "missed"] and replayed[-1] > seen[-1]


def test_room_history_answers_from_redis_on_any_node(env: tuple[Cluster, Proxy]) -> None:
    group, _ = env
    a, b = start_two(group, "--history-size", "100")
    offsets = []
    for i, node in enumerate([a, b, a, b]):
        r = node.emit("msg", {"n": i}, rooms=["chat"])
        assert r.status_code == 200, r.text
        offsets.append(r.json()["offset"])
    b.emit("msg", "elsewhere", rooms=["other"])
    for node in (a, b):
        body = node.api("GET", "/v1/rooms/chat/history").json()
        assert [m["data"] for m in body["messages"]] == [[{"n": i}] for i in range(4)]
        assert [m["offset"] for m in body["messages"]] == offsets
        assert all(abs(m["ts"] / 1000 - time.time()) < 60 for m in body["messages"])
        assert body["complete"] is True
        page = node.api("GET", f"/v1/rooms/chat/history?since={offsets[1]}&limit=1").json()
        assert [m["offset"] for m in page["messages"]] == [offsets[2]]
        assert page["complete"] is False
    r = a.api("GET", "/v1/rooms/chat/history?since=nope")
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_offset"


def test_render_then_subscribe_across_nodes(env: tuple[Cluster, Proxy]) -> None:
    # A page rendered with B's history subscribes on A with `since`: it gets what came
    # after, before anything newer, once each.
    group, _ = env
    a, b = start_two(group, "--history-size", "100")
    offsets = [b.emit("msg", i, rooms=["chat"]).json()["offset"] for i in range(3)]
    a.emit("msg", "elsewhere", rooms=["other"])
    rendered = b.api("GET", "/v1/rooms/chat/history?limit=1").json()["messages"]
    assert [m["offset"] for m in rendered] == [offsets[2]]
    auth = {"token": a.token("hana", rooms=["chat"]), "since": offsets[0]}
    with JsClient(a.url, auth=auth, options={"transports": ["websocket"]}) as js:
        assert js.connect()["type"] == "connected"
        b.emit("msg", "live", rooms=["chat"])
        assert payloads(js.wait_events("msg", 3)) == [1, 2, "live"]
        time.sleep(0.3)
        assert len(js.events("msg")) == 3
    # A `since` not handed out yet: nothing replayed.
    auth = {"token": a.token("hana", rooms=["chat"]), "since": "99999999999999-0"}
    with JsClient(a.url, auth=auth, options={"transports": ["websocket"]}) as js:
        assert js.connect()["type"] == "connected"
        b.emit("msg", "only", rooms=["chat"])
        assert payloads(js.wait_events("msg", 1)) == ["only"]
