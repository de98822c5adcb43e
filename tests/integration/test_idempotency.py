"""``Idempotency-Key`` through real ``siogate serve`` processes.

Deliveries are counted by python-socketio sockets: a repeat must be answered (with
``Idempotent-Replayed: true``) and not delivered again. Negative checks close with a
sentinel emit without a key: the socket receives emits in order, so once the
sentinel has arrived, a second delivery that has not arrived never will.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from sioclient import Recorder, uid
from test_cluster import Cluster, wait_peers

from conftest import API_KEY, Gateway, RedisServer
from siogate.idempotency import fingerprint

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
async def sockets() -> AsyncIterator[Callable[[Gateway], Any]]:
    opened: list[Recorder] = []

    async def connect(node: Gateway) -> Recorder:
        recorder = Recorder(node.url, transports=["websocket"])
        opened.append(recorder)
        return await recorder.connect()

    yield connect
    await asyncio.gather(*(r.close() for r in opened))


async def post(node: Gateway, path: str, body: Any, key: str | None) -> httpx.Response:
    headers = dict(HEADERS)
    if key is not None:
        headers["Idempotency-Key"] = key
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        return await client.post(path, json=body, headers=headers)


async def settle(recorder: Recorder, event: str) -> None:
    """Until a sentinel emitted after everything else has arrived."""
    sentinel = uid("sentinel")
    async with httpx.AsyncClient(base_url=recorder.url, headers=HEADERS) as client:
        response = await client.post("/v1/emit", json={"event": sentinel})
        assert response.status_code == 200
    await recorder.wait_event(sentinel)


async def test_a_repeat_is_replayed_not_delivered_again(
    start_gateway: Callable[..., Gateway], sockets: Callable[[Gateway], Any]
) -> None:
    gw = start_gateway("--allow-anonymous")
    recorder = await sockets(gw)
    event, key = uid("once"), uid("key")
    first = await post(gw, "/v1/emit", {"event": event, "data": 1}, key)
    assert (first.status_code, first.json()) == (200, {"ok": True})
    assert "idempotent-replayed" not in first.headers
    again = await post(gw, "/v1/emit", {"event": event, "data": 1}, key)
    assert (again.status_code, again.content) == (200, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    await settle(recorder, event)
    assert recorder.received(event) == [[1]]

    # The same key with another body is refused, and not delivered either.
    reused = await post(gw, "/v1/emit", {"event": event, "data": 2}, key)
    assert reused.status_code == 422
    assert reused.json()["error"]["code"] == "idempotency_key_reused"
    # Batch replays its own body (the count), once.
    batch = {"emits": [{"event": event, "data": 3}, {"event": event, "data": 4}]}
    counts = [await post(gw, "/v1/batch", batch, "batch-key") for _ in range(3)]
    assert [r.json() for r in counts] == [{"ok": True, "count": 2}] * 3
    await settle(recorder, event)
    assert recorder.received(event) == [[1], [3], [4]]


async def test_join_leave_disconnect_are_applied_once(
    start_gateway: Callable[..., Gateway], sockets: Callable[[Gateway], Any]
) -> None:
    gw = start_gateway("--allow-anonymous")
    recorder = await sockets(gw)
    room, event = uid("room"), uid("ev")
    join = {"room": room, "sockets": [recorder.sid()]}
    assert (await post(gw, "/v1/join", join, "j1")).status_code == 200
    assert (await post(gw, "/v1/leave", join, "l1")).status_code == 200
    # A late retry of the join is answered, not applied: the leave stands.
    replay = await post(gw, "/v1/join", join, "j1")
    assert replay.headers["idempotent-replayed"] == "true"
    assert (await post(gw, "/v1/emit", {"event": event, "rooms": [room]}, None)).status_code == 200
    await settle(recorder, event)
    assert recorder.received(event) == []
    gone = {"sockets": [recorder.sid()]}
    assert (await post(gw, "/v1/disconnect", gone, "d1")).status_code == 200
    assert (await post(gw, "/v1/disconnect", gone, "d1")).headers["idempotent-replayed"] == "true"
    await recorder.wait_disconnect()


async def test_a_failed_request_releases_its_key(
    start_gateway: Callable[..., Gateway], sockets: Callable[[Gateway], Any]
) -> None:
    gw = start_gateway("--allow-anonymous", "--namespace", "/")
    recorder = await sockets(gw)
    event, key = uid("retry"), uid("key")
    bad = await post(gw, "/v1/emit", {"event": event, "namespace": "/nope"}, key)
    assert bad.status_code == 400
    # Not kept: a corrected request with the same key is applied.
    fixed = await post(gw, "/v1/emit", {"event": event}, key)
    assert fixed.status_code == 200 and "idempotent-replayed" not in fixed.headers
    await recorder.wait_event(event)


def raw_post(gw: Gateway, key: bytes) -> bytes:
    """POST /v1/emit with an Idempotency-Key of these exact bytes (httpx refuses some)."""
    body = b'{"event":"raw"}'
    head = (
        b"POST /v1/emit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + API_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nIdempotency-Key: "
        + key
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(head + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_invalid_keys_are_refused(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--allow-anonymous")
    for key in (b"", b"x" * 257, "é".encode(), b"\x80"):
        answer = raw_post(gw, key)
        assert answer.startswith(b"HTTP/1.1 400"), (key, answer)
        assert b'"invalid_idempotency_key"' in answer, (key, answer)
    # Other control characters are refused by the HTTP parser already.
    assert raw_post(gw, b"a\x01b\x7f").startswith(b"HTTP/1.1 400")
    assert raw_post(gw, b"x" * 256).startswith(b"HTTP/1.1 200")
    # GETs ignore the header.
    rooms = gw.api("GET", "/v1/rooms", headers={"Idempotency-Key": ""})
    assert rooms.status_code == 200


def test_keys_are_forgotten_after_the_ttl(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--allow-anonymous", "--idempotency-ttl", "1")
    headers = {"Idempotency-Key": "short-lived"}

    def send() -> httpx.Response:
        return gw.api("POST", "/v1/emit", json={"event": "a"}, headers=headers)

    assert "idempotent-replayed" not in send().headers
    assert send().headers["idempotent-replayed"] == "true"
    time.sleep(1.5)
    later = send()
    assert later.status_code == 200 and "idempotent-replayed" not in later.headers


# ---------------------------------------------------------------- a cluster


@pytest.fixture
def cluster(redis_server: RedisServer, tmp_path: Path) -> Any:
    c = Cluster(redis_server, tmp_path)
    yield c
    c.stop()


@pytest.mark.redis
async def test_concurrent_repeats_across_nodes_deliver_once(
    cluster: Cluster, sockets: Callable[[Gateway], Any]
) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    recorders = [await sockets(a), await sockets(b), await sockets(a), await sockets(b)]
    event, key = uid("cluster-once"), uid("key")
    body = {"event": event, "data": {"n": 1}}

    async with httpx.AsyncClient(headers=HEADERS, timeout=10) as client:

        async def send(node: Gateway) -> httpx.Response:
            return await client.post(
                f"{node.url}/v1/emit", json=body, headers={"Idempotency-Key": key}
            )

        answers = await asyncio.gather(*(send((a, b)[i % 2]) for i in range(50)))
    statuses = sorted(r.status_code for r in answers)
    applied = [
        r for r in answers if r.status_code == 200 and "idempotent-replayed" not in r.headers
    ]
    assert len(applied) == 1, statuses
    assert set(statuses) <= {200, 409}, statuses
    for r in answers:
        if r.status_code == 409:
            assert r.json()["error"]["code"] == "idempotency_key_in_progress"
    # Every later repeat, on either node, is a replay.
    for node in (a, b):
        replay = await post(node, "/v1/emit", body, key)
        assert (replay.status_code, replay.headers["idempotent-replayed"]) == (200, "true")
    for recorder in recorders:
        await settle(recorder, event)
        assert recorder.received(event) == [[{"n": 1}]]


@pytest.mark.redis
async def test_a_key_claimed_on_another_node_is_409(cluster: Cluster) -> None:
    a = cluster.start_node(prefix="idem")
    # Another node's claim, as it stands while that node applies the request.
    body = json.dumps({"event": "x"}).encode()
    fp = fingerprint("POST", "/v1/emit", body)
    name = "idem:idempotency:" + hashlib.sha256(b"busy").hexdigest()
    with Redis.from_url(cluster.redis.url) as redis:
        redis.set(name, json.dumps({"fp": fp, "token": "elsewhere"}), px=60_000)
        headers = {**HEADERS, "Idempotency-Key": "busy", "Content-Type": "application/json"}
        busy = httpx.post(f"{a.url}/v1/emit", content=body, headers=headers)
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "idempotency_key_in_progress"
        # Another cluster (prefix) sharing the Redis has keys of its own.
        other = cluster.start_node(prefix="other")
        free = httpx.post(f"{other.url}/v1/emit", content=body, headers=headers)
        assert free.status_code == 200


def test_openapi_documents_the_header_and_its_errors(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--allow-anonymous")
    paths = httpx.get(f"{gw.url}/v1/openapi.json").json()["paths"]
    for path in ("/v1/emit", "/v1/batch", "/v1/join", "/v1/leave", "/v1/disconnect"):
        post = paths[path]["post"]
        assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
        assert {"409", "422"} <= post["responses"].keys()
        assert "Idempotent-Replayed" in post["responses"]["200"]["headers"]
    assert "parameters" not in paths["/v1/rooms"]["get"] or all(
        p["name"] != "Idempotency-Key" for p in paths["/v1/rooms"]["get"]["parameters"]
    )


# ---------------------------------------------------------------- the one-step path
# An emit without ack, a batch, a join, a leave and a disconnect are one publish each:
# their key is claimed, recorded and published in one step (one script with Redis), so
# a repeat that arrives while the first is applied is already a replay, never a 409.


async def fifty_at_once(
    nodes: list[Gateway], path: str, body: Any, key: str
) -> list[httpx.Response]:
    async with httpx.AsyncClient(headers=HEADERS, timeout=10) as client:

        async def send(node: Gateway) -> httpx.Response:
            return await client.post(
                f"{node.url}{path}", json=body, headers={"Idempotency-Key": key}
            )

        return await asyncio.gather(*(send(nodes[i % len(nodes)]) for i in range(50)))


def one_applied_rest_replayed(answers: list[httpx.Response]) -> httpx.Response:
    """The one answer that applied the request; every other is its replay."""
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
    applied = [r for r in answers if "idempotent-replayed" not in r.headers]
    assert len(applied) == 1
    for r in answers:
        assert r.content == applied[0].content
        assert r.headers["content-type"] == applied[0].headers["content-type"]
        if r is not applied[0]:
            assert r.headers["idempotent-replayed"] == "true"
    return applied[0]


@pytest.mark.redis
async def test_one_step_repeats_across_nodes_are_replays_and_deliver_once(
    cluster: Cluster, sockets: Callable[[Gateway], Any]
) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    recorders = [await sockets(a), await sockets(b), await sockets(a), await sockets(b)]
    event = uid("one-step")
    answers = await fifty_at_once([a, b], "/v1/emit", {"event": event, "data": [1]}, uid("k"))
    first = one_applied_rest_replayed(answers)
    assert first.json() == {"ok": True}
    # A batch is one publish too: its body (the count) is what is replayed.
    batch = {"emits": [{"event": event, "data": [2]}, {"event": event, "data": [3]}]}
    first = one_applied_rest_replayed(await fifty_at_once([b, a], "/v1/batch", batch, uid("k")))
    assert first.json() == {"ok": True, "count": 2}
    for recorder in recorders:
        await settle(recorder, event)
        assert recorder.received(event) == [[[1]], [[2]], [[3]]]


@pytest.mark.redis
async def test_one_step_join_through_two_nodes_is_applied_once(
    cluster: Cluster, sockets: Callable[[Gateway], Any]
) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    recorder = await sockets(b)
    room, event, key = uid("room"), uid("ev"), uid("join")
    join = {"room": room, "sockets": [recorder.sid()]}
    one_applied_rest_replayed(await fifty_at_once([a, b], "/v1/join", join, key))
    assert (await post(a, "/v1/leave", join, uid("leave"))).status_code == 200
    # A late repeat of the join, on either node, does not undo the leave.
    for node in (a, b):
        late = await post(node, "/v1/join", join, key)
        assert late.headers["idempotent-replayed"] == "true"
    assert (await post(a, "/v1/emit", {"event": event, "rooms": [room]}, None)).status_code == 200
    await settle(recorder, event)
    assert recorder.received(event) == []


@pytest.mark.redis
async def test_one_step_key_reused_with_another_body_is_422_on_every_node(
    cluster: Cluster, sockets: Callable[[Gateway], Any]
) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    recorder = await sockets(b)
    event, key = uid("reuse"), uid("key")
    assert (await post(a, "/v1/emit", {"event": event, "data": 1}, key)).status_code == 200
    for node in (a, b):
        for path, body in (
            ("/v1/emit", {"event": event, "data": 2}),
            ("/v1/batch", {"emits": [{"event": event, "data": 3}]}),
            ("/v1/emit", {"event": event, "namespace": "not valid"}),
        ):
            reused = await post(node, path, body, key)
            assert reused.status_code == 422, (path, reused.text)
            assert reused.json()["error"]["code"] == "idempotency_key_reused"
    await settle(recorder, event)
    assert recorder.received(event) == [[1]]


@pytest.mark.redis
async def test_one_step_survives_redis_forgetting_its_script(
    cluster: Cluster, sockets: Callable[[Gateway], Any]
) -> None:
    a = cluster.start_node()
    recorder = await sockets(a)
    event, key = uid("flushed"), uid("key")
    assert (await post(a, "/v1/emit", {"event": event, "data": 1}, uid("warm"))).status_code == 200
    with Redis.from_url(cluster.redis.url) as redis:
        redis.script_flush()
    first = await post(a, "/v1/emit", {"event": event, "data": 2}, key)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    again = await post(a, "/v1/emit", {"event": event, "data": 2}, key)
    assert again.headers["idempotent-replayed"] == "true"
    await settle(recorder, event)
    assert recorder.received(event) == [[1], [2]]


async def test_one_step_repeats_on_one_node_are_replays(
    start_gateway: Callable[..., Gateway], sockets: Callable[[Gateway], Any]
) -> None:
    gw = start_gateway("--allow-anonymous")
    recorder = await sockets(gw)
    event = uid("single")
    one_applied_rest_replayed(await fifty_at_once([gw], "/v1/emit", {"event": event}, uid("k")))
    await settle(recorder, event)
    assert recorder.received(event) == [[]]


async def test_an_emit_answered_with_its_offset_keeps_two_steps(
    start_gateway: Callable[..., Gateway], sockets: Callable[[Gateway], Any]
) -> None:
    # With history, an emit's answer is the offset it got: not known before it is
    # applied, so it is claimed, applied and then recorded, and its repeat replays it.
    gw = start_gateway("--allow-anonymous", "--history-size", "10")
    recorder = await sockets(gw)
    event, key = uid("offset"), uid("key")
    first = await post(gw, "/v1/emit", {"event": event, "rooms": ["r"]}, key)
    assert first.status_code == 200 and "offset" in first.json()
    assert (await post(gw, "/v1/emit", {"event": event, "rooms": ["r"]}, None)).status_code == 200
    again = await post(gw, "/v1/emit", {"event": event, "rooms": ["r"]}, key)
    assert (again.content, again.headers["idempotent-replayed"]) == (first.content, "true")
    await settle(recorder, event)
