"""The HTTP API of a real ``siogate serve`` process: every route, every error code.

Deliveries are checked with python-socketio ``AsyncClient`` sockets on the same
gateway. Negative checks ("this socket must not receive X") are closed with a
sentinel: the API applies emits in order and a socket receives them in order, so
once a later emit has reached every socket, an earlier one that has not arrived
never will (see :func:`settle`).

One gateway serves the module; each test uses room and event names of its own, so
tests do not see each other's sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import socketio
from sioclient import WAIT, Recorder, uid

from conftest import Gateway, spawn_gateway

# What a listing says about the nodes that answered: on one node, always this.
WHOLE = {"partial": False, "nodes": {"answered": 1, "missing": []}}

# python-engineio's client refuses a polling payload of more than 16 packets
# (engineio.payload.Payload.max_decode_packets), and the gateway may coalesce a burst
# into one payload; so a polling client is sent at most this many events in a row.
POLLING_BURST = 12
RESERVED = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
]
V1_PATHS = {
    "/v1/emit": "post",
    "/v1/batch": "post",
    "/v1/join": "post",
    "/v1/leave": "post",
    "/v1/disconnect": "post",
    "/v1/rooms": "get",
    "/v1/rooms/{room}/sockets": "get",
    "/v1/rooms/{room}/presence": "get",
    "/v1/rooms/{room}/history": "get",
    "/v1/presence": "get",
    "/v1/stats": "get",
}


Connect = Callable[..., Awaitable[Recorder]]


@pytest.fixture
async def connect(gw: Gateway) -> AsyncIterator[Connect]:
    """``await connect(token=..., namespaces=[...])`` -> a connected :class:`Recorder`."""
    made: list[Recorder] = []

    async def make(
        *,
        token: str | None = None,
        namespaces: list[str] | None = None,
        transports: list[str] | None = None,
    ) -> Recorder:
        recorder = Recorder(
            gw.url,
            auth={"token": token} if token else None,
            namespaces=namespaces or ["/"],
            transports=transports or ["websocket"],
        )
        made.append(recorder)
        return await recorder.connect()

    yield make
    for recorder in made:
        await recorder.close()


# ---------------------------------------------------------------- gateway and API


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = spawn_gateway("--allow-anonymous", log_dir=tmp_path_factory.mktemp("gw"))
    yield g
    g.stop()


@pytest.fixture
async def api(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {gw.api_key}"}
    async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=10) as client:
        yield client


async def ok(response: Awaitable[httpx.Response]) -> dict[str, Any]:
    r = await response
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("ok", True) is True
    return body


async def settle(api: httpx.AsyncClient, *clients: Recorder, namespace: str = "/") -> None:
    """Emit a sentinel to the whole namespace and wait until every client has it."""
    name = uid("sentinel")
    await ok(api.post("/v1/emit", json={"event": name, "namespace": namespace}))
    for client in clients:
        await client.wait_event(name, namespace)


async def eventually(read: Callable[[], Awaitable[Any]], expected: Any, what: str) -> None:
    """Poll ``read()`` until it returns ``expected`` (for effects the API does not order)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while (value := await read()) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: still {value!r} after {WAIT}s, expected {expected!r}")
        await asyncio.sleep(0.02)


def expect_error(gw: Gateway, r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check the error shape, then that the server still answers."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    assert gw.api("GET", "/healthz").json() == {"status": "ok"}
    return error


# ---------------------------------------------------------------- POST /v1/emit


async def test_emit_data_is_one_argument(api: httpx.AsyncClient, connect: Connect) -> None:
    client = await connect()
    value = {"text": "héllo 😀", "n": [1, 2.5, None, True]}
    await ok(api.post("/v1/emit", json={"event": "with-data", "data": value}))
    assert await client.wait_event("with-data") == [value]


async def test_emit_args_are_spread(api: httpx.AsyncClient, connect: Connect) -> None:
    client = await connect()
    args = [1, "two", None, [3], {"four": 4}]
    assert await ok(api.post("/v1/emit", json={"event": "with-args", "args": args})) == {"ok": True}
    assert await client.wait_event("with-args") == args


async def test_emit_without_args(api: httpx.AsyncClient, connect: Connect) -> None:
    client = await connect()
    await ok(api.post("/v1/emit", json={"event": "bare"}))
    assert await client.wait_event("bare") == []
    # data: null is one argument (null), not none.
    await ok(api.post("/v1/emit", json={"event": "null-data", "data": None}))
    assert await client.wait_event("null-data") == [None]


async def test_emit_to_rooms_and_except(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect
) -> None:
    red, blue = uid("red"), uid("blue")
    only_red = await connect(token=gw.token("u1", rooms=[red]))
    only_blue = await connect(token=gw.token("u2", rooms=[blue]))
    both = await connect(token=gw.token("u3", rooms=[red, blue]))
    neither = await connect()
    everyone = [only_red, only_blue, both, neither]

    await ok(api.post("/v1/emit", json={"event": "rb", "rooms": [red, blue], "data": 1}))
    await ok(api.post("/v1/emit", json={"event": "r-not-b", "rooms": [red], "except": [blue]}))
    await ok(api.post("/v1/emit", json={"event": "all-not-r", "except": [red]}))
    # A socket id works as an except entry too.
    await ok(
        api.post("/v1/emit", json={"event": "r-not-sid", "rooms": [red], "except": [both.sid()]})
    )
    await settle(api, *everyone)

    def counts(client: Recorder) -> list[int]:
        names = ["rb", "r-not-b", "all-not-r", "r-not-sid"]
        return [len(client.received(name)) for name in names]

    assert counts(only_red) == [1, 1, 0, 1]
    assert counts(only_blue) == [1, 0, 1, 0]
    assert counts(both) == [1, 0, 0, 0]  # in both target rooms: once
    assert counts(neither) == [0, 0, 1, 0]


async def test_socket_in_several_target_rooms_receives_once(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect
) -> None:
    rooms = [uid("a"), uid("b"), uid("c")]
    polling = await connect(token=gw.token("dup-p", rooms=rooms), transports=["polling"])
    ws = await connect(token=gw.token("dup-w", rooms=rooms))
    targets = [*rooms, rooms[0], "user:dup-p", "user:dup-w", polling.sid()]
    await ok(api.post("/v1/emit", json={"event": "once", "rooms": targets, "data": "x"}))
    await settle(api, polling, ws)
    assert polling.received("once") == [["x"]]
    assert ws.received("once") == [["x"]]


async def test_emit_to_namespace(api: httpx.AsyncClient, connect: Connect) -> None:
    ns = f"/{uid('chat')}"
    root = await connect()
    chat = await connect(namespaces=[ns])
    both = await connect(namespaces=["/", ns])
    await ok(api.post("/v1/emit", json={"event": "to-chat", "namespace": ns, "data": 1}))
    await ok(api.post("/v1/emit", json={"event": "to-root", "data": 2}))
    await settle(api, root, both)
    await settle(api, chat, both, namespace=ns)
    assert chat.received("to-chat", ns) == [[1]]
    assert both.received("to-chat", ns) == [[1]]
    assert root.received("to-chat", ns) == [] and root.received("to-chat") == []
    assert root.received("to-root") == [[2]] and both.received("to-root") == [[2]]
    assert chat.received("to-root", ns) == [] and both.received("to-root", ns) == []


# ---------------------------------------------------------------- POST /v1/batch


async def test_batch_counts_and_keeps_order(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect
) -> None:
    odd, third = uid("odd"), uid("third")
    odd_client = await connect(token=gw.token("b1", rooms=[odd]))
    third_client = await connect(token=gw.token("b2", rooms=[third]), transports=["polling"])
    all_client = await connect(token=gw.token("b3", rooms=[odd, third]))
    n = 3 * (POLLING_BURST - 1)  # every third one goes to the polling client
    emits: list[dict[str, Any]] = [
        {"event": "seq", "rooms": [third if i % 3 == 0 else odd], "data": i} for i in range(n)
    ]
    emits.append({"event": "done", "args": []})
    body = await ok(api.post("/v1/batch", json={"emits": emits}))
    assert body == {"ok": True, "count": n + 1}
    for client in (odd_client, third_client, all_client):
        await client.wait_event("done")
    assert odd_client.received("seq") == [[i] for i in range(n) if i % 3]
    assert third_client.received("seq") == [[i] for i in range(n) if i % 3 == 0]
    assert all_client.received("seq") == [[i] for i in range(n)]
    # The batch as a whole is ordered before a later emit.
    assert [ev for _, ev, _ in all_client.events][-1] == "done"


async def test_batch_is_all_or_nothing_on_a_bad_entry(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect
) -> None:
    client = await connect()
    emits = [{"event": "first-of-bad-batch"}, {"event": "disconnect"}]
    r = await api.post("/v1/batch", json={"emits": emits})
    error = expect_error(gw, r, 400, "reserved_event")
    assert "emits[1]" in error["message"] or "disconnect" in error["message"]
    await settle(api, client)
    assert client.received("first-of-bad-batch") == []


# ---------------------------------------------------------------- join / leave


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_join_then_emit_reaches_the_socket(
    api: httpx.AsyncClient, connect: Connect, transport: str
) -> None:
    room = uid("joined")
    client = await connect(transports=[transport])
    other = await connect()
    for i in range(POLLING_BURST):
        # A 200 means applied: the very next emit must reach the socket.
        await ok(api.post("/v1/join", json={"room": f"{room}-{i}", "sockets": [client.sid()]}))
        await ok(
            api.post("/v1/emit", json={"event": "after-join", "rooms": [f"{room}-{i}"], "data": i})
        )
    await settle(api, client, other)
    assert client.received("after-join") == [[i] for i in range(POLLING_BURST)]
    assert other.received("after-join") == []


async def test_join_and_leave_by_room_selector(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect
) -> None:
    team, target = uid("team"), uid("target")
    a = await connect(token=gw.token("sel-a", rooms=[team]))
    b = await connect(token=gw.token("sel-b", rooms=[team]))
    outsider = await connect()
    await ok(api.post("/v1/join", json={"namespace": "/", "room": target, "rooms": [team]}))
    await ok(api.post("/v1/emit", json={"event": "joined", "rooms": [target]}))
    await ok(api.post("/v1/leave", json={"room": target, "rooms": [team]}))
    await ok(api.post("/v1/emit", json={"event": "left", "rooms": [target]}))
    await settle(api, a, b, outsider)
    for client in (a, b):
        assert len(client.received("joined")) == 1
        assert client.received("left") == []
    assert outsider.received("joined") == []


async def test_leave_then_emit_does_not_reach(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect
) -> None:
    room = uid("leaving")
    stays = await connect(token=gw.token("stays", rooms=[room]))
    leaves = await connect(token=gw.token("leaves", rooms=[room]), transports=["polling"])
    await ok(api.post("/v1/emit", json={"event": "before", "rooms": [room]}))
    await ok(api.post("/v1/leave", json={"room": room, "sockets": [leaves.sid()]}))
    await ok(api.post("/v1/emit", json={"event": "after", "rooms": [room]}))
    await settle(api, stays, leaves)
    assert len(stays.received("before")) == 1 and len(stays.received("after")) == 1
    assert len(leaves.received("before")) == 1 and leaves.received("after") == []
    listing = (await api.get(f"/v1/rooms/{quote(room, safe='')}/sockets")).json()
    assert [s["id"] for s in listing["sockets"]] == [stays.sid()]


async def test_join_unknown_socket_is_a_no_op(gw: Gateway, api: httpx.AsyncClient) -> None:
    room = uid("ghost")
    await ok(api.post("/v1/join", json={"room": room, "sockets": ["no-such-socket"]}))
    r = await api.get(f"/v1/rooms/{room}/sockets")
    assert r.json() == {"sockets": [], "next_cursor": None, **WHOLE}


# ---------------------------------------------------------------- POST /v1/disconnect


async def test_disconnect_by_socket_id(api: httpx.AsyncClient, connect: Connect) -> None:
    victim = await connect()
    polling_victim = await connect(transports=["polling"])
    bystander = await connect()
    sids = [victim.sid(), polling_victim.sid()]
    await ok(api.post("/v1/disconnect", json={"sockets": sids}))
    for client in (victim, polling_victim):
        namespace, reason = await client.wait_disconnect()
        assert namespace == "/"
        assert reason == socketio.AsyncClient.reason.SERVER_DISCONNECT
    await settle(api, bystander)
    assert bystander.disconnects == [] and bystander.sio.connected
    ids = {s["id"] for s in (await api.get("/v1/rooms/" + sids[0] + "/sockets")).json()["sockets"]}
    assert ids == set()


async def test_disconnect_by_room(gw: Gateway, api: httpx.AsyncClient, connect: Connect) -> None:
    room = uid("doomed")
    doomed = [await connect(token=gw.token(f"d{i}", rooms=[room])) for i in range(3)]
    survivor = await connect(token=gw.token("survivor"))
    await ok(api.post("/v1/disconnect", json={"namespace": "/", "rooms": [room]}))
    for client in doomed:
        assert (await client.wait_disconnect())[0] == "/"
    await settle(api, survivor)
    assert survivor.disconnects == []
    rooms = {r["name"] for r in (await api.get("/v1/rooms")).json()["rooms"]}
    assert room not in rooms
    assert "user:survivor" in rooms


async def test_disconnect_one_namespace_keeps_the_others(
    api: httpx.AsyncClient, connect: Connect
) -> None:
    ns = f"/{uid('side')}"
    client = await connect(namespaces=["/", ns])
    await ok(api.post("/v1/disconnect", json={"namespace": ns, "sockets": [client.sid(ns)]}))
    assert (await client.wait_disconnect())[0] == ns
    await ok(api.post("/v1/emit", json={"event": "still-here"}))
    assert await client.wait_event("still-here") == []


# ---------------------------------------------------------------- GET /v1/rooms


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_rooms_lists_names_and_counts(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect, transport: str
) -> None:
    news, sports = uid("news"), uid("sports")
    alice, bob = uid("alice"), uid("bob")
    await connect(token=gw.token(alice, rooms=[news]))
    bob_client = await connect(token=gw.token(bob, rooms=[news, sports]), transports=[transport])

    def mine(listing: dict[str, Any]) -> dict[str, int]:
        wanted = {news, sports, f"user:{alice}", f"user:{bob}"}
        return {r["name"]: r["sockets"] for r in listing["rooms"] if r["name"] in wanted}

    r = await api.get("/v1/rooms", params={"namespace": "/"})
    assert r.status_code == 200
    names = [room["name"] for room in r.json()["rooms"]]
    assert names == sorted(names) and len(names) == len(set(names))
    assert mine(r.json()) == {news: 2, sports: 1, f"user:{alice}": 1, f"user:{bob}": 1}
    # No query string means namespace "/".
    assert mine((await api.get("/v1/rooms")).json()) == mine(r.json())

    # A client's own disconnect is asynchronous to the API: poll until it shows.
    await bob_client.close()

    async def listing() -> dict[str, int]:
        return mine((await api.get("/v1/rooms")).json())

    await eventually(listing, {news: 1, f"user:{alice}": 1}, "rooms after bob disconnected")


async def test_rooms_of_another_namespace(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect
) -> None:
    ns, room = f"/{uid('ns')}", uid("room")
    await connect(token=gw.token(uid("u"), rooms=[room]), namespaces=[ns])
    listing = (await api.get("/v1/rooms", params={"namespace": ns})).json()["rooms"]
    assert {"name": room, "sockets": 1} in listing
    root = (await api.get("/v1/rooms", params={"namespace": "/"})).json()["rooms"]
    assert room not in {r["name"] for r in root}
    assert (await api.get("/v1/rooms", params={"namespace": "/empty-ns"})).json() == {
        "rooms": [],
        "next_cursor": None,
        **WHOLE,
    }


@pytest.mark.parametrize("room", ["team/a b", "plain", "ünï 😀", "100%/x?y#z", "a+b&c=d"])
async def test_room_sockets_with_encoded_names(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect, room: str
) -> None:
    room = f"{room}-{uuid.uuid4().hex[:6]}"
    user = uid("member")
    member = await connect(token=gw.token(user, rooms=[room]))
    anonymous = await connect()
    await ok(api.post("/v1/join", json={"room": room, "sockets": [anonymous.sid()]}))
    path = f"/v1/rooms/{quote(room, safe='')}/sockets"
    r = await api.get(path, params={"namespace": "/"})
    assert r.status_code == 200, r.text
    got = sorted(r.json()["sockets"], key=lambda s: s["user"] or "")
    # One node: every socket names the same one.
    assert len({s.pop("node") for s in got}) == 1
    assert got == [{"id": anonymous.sid(), "user": None}, {"id": member.sid(), "user": user}]
    # The listing matches what an emit to that room reaches.
    await ok(api.post("/v1/emit", json={"event": "room-check", "rooms": [room]}))
    await member.wait_event("room-check")
    await anonymous.wait_event("room-check")


async def test_room_sockets_of_user_room(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect
) -> None:
    user = uid("multi")
    a = await connect(token=gw.token(user))
    b = await connect(token=gw.token(user), transports=["polling"])
    r = await api.get(f"/v1/rooms/user:{user}/sockets")
    got = {(s["id"], s["user"]) for s in r.json()["sockets"]}
    assert got == {(a.sid(), user), (b.sid(), user)}


# ---------------------------------------------------------------- /healthz /metrics /openapi


def test_healthz_needs_no_key(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def parse_prometheus(text: str) -> dict[str, float]:
    """``{'name{labels}': value}`` for every sample line; checks every line's shape."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}, line
            typed.add(name)
        elif line.startswith("# HELP ") or not line:
            continue
        else:
            key, _, value = line.rpartition(" ")
            assert key and not line.startswith("#"), line
            base = key.split("{", 1)[0]
            family = base.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
            assert base in typed or family in typed, f"sample before its TYPE: {line}"
            samples[key] = float(value)
    return samples


async def test_metrics_counters_move_after_an_emit(
    gw: Gateway, api: httpx.AsyncClient, connect: Connect
) -> None:
    room = uid("metered")
    clients = [await connect(token=gw.token(uid("m"), rooms=[room])) for _ in range(3)]
    r = await api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    before = parse_prometheus(r.text)
    for name in (
        "siogate_emits_total",
        "siogate_packets_out_total",
        "siogate_bytes_out_total",
        "siogate_connections_total",
        "siogate_sockets",
    ):
        assert name in before, name
    await ok(api.post("/v1/emit", json={"event": "metered", "rooms": [room], "data": "x" * 100}))
    for client in clients:
        await client.wait_event("metered")
    after = parse_prometheus((await api.get("/metrics")).text)
    assert after["siogate_emits_total"] == before["siogate_emits_total"] + 1
    assert after["siogate_packets_out_total"] == before["siogate_packets_out_total"] + 3
    assert after["siogate_bytes_out_total"] >= before["siogate_bytes_out_total"] + 3 * 100
    emit_ok = 'siogate_api_requests_total{route="/v1/emit",status="200"}'
    assert after[emit_ok] >= before.get(emit_ok, 0) + 1
    assert after["siogate_sockets"] >= 3


def test_metrics_needs_the_key(gw: Gateway) -> None:
    expect_error(gw, httpx.get(f"{gw.url}/metrics"), 401, "unauthorized")


def test_openapi_lists_every_v1_path(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/v1/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = json.loads(r.content)
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"] and doc["info"]["version"]
    paths = doc["paths"]
    for path, method in V1_PATHS.items():
        assert path in paths, f"{path} missing from openapi.json"
        assert method in paths[path], f"{method.upper()} {path} missing"
    # Everything it lists is really served (a GET gives no 404; a POST no 404/405).
    for path, operations in paths.items():
        concrete = path.replace("{room}", "r")
        for method in operations:
            if method in {"get", "post", "put", "delete", "patch"}:
                body = {} if method == "post" else None
                resp = gw.api(method.upper(), concrete, json=body)
                assert resp.status_code not in (404, 405), (method, path, resp.text)


# ---------------------------------------------------------------- 400


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"{", b"[1, 2]", b'"event"', b"null", b'{"event": NaN}', b"\xff\xfe"],
    ids=["empty", "text", "truncated", "array", "string", "null", "nan", "bad-utf8"],
)
def test_invalid_json(gw: Gateway, body: bytes) -> None:
    headers = {"content-type": "application/json"}
    for path in ("/v1/emit", "/v1/batch", "/v1/join", "/v1/leave", "/v1/disconnect"):
        r = gw.api("POST", path, content=body, headers=headers)
        expect_error(gw, r, 400, "invalid_json")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/emit", {}),
        ("/v1/emit", {"event": ""}),
        ("/v1/emit", {"event": 5}),
        ("/v1/emit", {"event": "x" * 257}),
        ("/v1/emit", {"event": "e", "room": ["typo"]}),
        ("/v1/emit", {"event": "e", "unknown": 1}),
        ("/v1/emit", {"event": "e", "args": "not-a-list"}),
        ("/v1/emit", {"event": "e", "args": {"a": 1}}),
        ("/v1/emit", {"event": "e", "data": 1, "args": [1]}),
        ("/v1/emit", {"event": "e", "rooms": "r"}),
        ("/v1/emit", {"event": "e", "rooms": [1]}),
        ("/v1/emit", {"event": "e", "rooms": [""]}),
        ("/v1/emit", {"event": "e", "except": "r"}),
        ("/v1/emit", {"event": "e", "namespace": "chat"}),
        ("/v1/emit", {"event": "e", "namespace": ""}),
        ("/v1/emit", {"event": "e", "namespace": 7}),
        ("/v1/batch", {}),
        ("/v1/batch", {"emits": []}),
        ("/v1/batch", {"emits": {"event": "e"}}),
        ("/v1/batch", {"emits": ["e"]}),
        ("/v1/batch", {"emits": [{"event": "e"}], "extra": 1}),
        ("/v1/batch", {"emits": [{"event": "e", "data": 1, "args": []}]}),
        ("/v1/batch", {"emits": [{"event": "e"}] * 1001}),
        ("/v1/join", {"sockets": ["s"]}),
        ("/v1/join", {"room": "r"}),
        ("/v1/join", {"room": "r", "sockets": []}),
        ("/v1/join", {"room": "r", "sockets": ["s"], "rooms": ["x"]}),
        ("/v1/join", {"room": "", "sockets": ["s"]}),
        ("/v1/join", {"room": "r", "sockets": "s"}),
        ("/v1/join", {"room": "r", "sockets": ["s"], "namespace": "nope"}),
        ("/v1/join", {"room": "r", "sockets": ["s"], "socket": "s"}),
        ("/v1/leave", {"sockets": ["s"]}),
        ("/v1/leave", {"room": "r", "rooms": [5]}),
        ("/v1/disconnect", {}),
        ("/v1/disconnect", {"sockets": ["s"], "rooms": ["r"]}),
        ("/v1/disconnect", {"sockets": ["s"], "room": "r"}),
        ("/v1/disconnect", {"rooms": ["r"], "namespace": "x"}),
    ],
)
def test_invalid_field(gw: Gateway, path: str, body: dict[str, Any]) -> None:
    expect_error(gw, gw.api("POST", path, json=body), 400, "invalid_field")


def test_unknown_field_is_named_in_the_message(gw: Gateway) -> None:
    r = gw.api("POST", "/v1/emit", json={"event": "e", "room": "news"})
    assert "room" in expect_error(gw, r, 400, "invalid_field")["message"]


@pytest.mark.parametrize("event", RESERVED)
def test_reserved_event(gw: Gateway, event: str) -> None:
    r = gw.api("POST", "/v1/emit", json={"event": event, "data": 1})
    assert event in expect_error(gw, r, 400, "reserved_event")["message"]
    r = gw.api("POST", "/v1/batch", json={"emits": [{"event": "fine"}, {"event": event}]})
    expect_error(gw, r, 400, "reserved_event")


def test_reserved_names_are_exact(gw: Gateway) -> None:
    # Only the exact names are reserved; lookalikes are ordinary events.
    for event in ("Connect", "disconnected", "connect ", "message", "error"):
        assert gw.emit(event).status_code == 200, event


def test_rooms_query_errors(gw: Gateway) -> None:
    expect_error(gw, gw.api("GET", "/v1/rooms?namespace=chat"), 400, "invalid_field")
    expect_error(gw, gw.api("GET", "/v1/rooms?namespace="), 400, "invalid_field")
    expect_error(gw, gw.api("GET", "/v1/rooms?nsp=/"), 400, "invalid_field")
    expect_error(gw, gw.api("GET", "/v1/rooms/r/sockets?namespace=x"), 400, "invalid_field")


def test_unknown_namespace_with_an_allowlist(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--namespace", "/", "--namespace", "/chat")
    assert gw.emit("e", namespace="/chat").status_code == 200
    assert gw.emit("e").status_code == 200
    expect_error(gw, gw.emit("e", namespace="/other"), 400, "unknown_namespace")
    body = {"emits": [{"event": "e"}, {"event": "e", "namespace": "/other"}]}
    expect_error(gw, gw.api("POST", "/v1/batch", json=body), 400, "unknown_namespace")
    for path in ("/v1/join", "/v1/leave"):
        body = {"namespace": "/other", "room": "r", "sockets": ["s"]}
        expect_error(gw, gw.api("POST", path, json=body), 400, "unknown_namespace")
    body = {"namespace": "/other", "rooms": ["r"]}
    expect_error(gw, gw.api("POST", "/v1/disconnect", json=body), 400, "unknown_namespace")
    expect_error(gw, gw.api("GET", "/v1/rooms?namespace=/other"), 400, "unknown_namespace")
    r = gw.api("GET", "/v1/rooms/r/sockets?namespace=/other")
    expect_error(gw, r, 400, "unknown_namespace")
    assert gw.api("GET", "/v1/rooms?namespace=/chat").json() == {
        "rooms": [],
        "next_cursor": None,
        **WHOLE,
    }


def test_malformed_http_gets_400_and_the_server_stays_up(gw: Gateway) -> None:
    garbage = [
        b"\x00\xff\x13garbage\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST /v1/emit HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
    ]
    for data in garbage:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
            s.sendall(data)
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 400 "), (data, reply)
        assert b'"code":"bad_request"' in reply
        assert gw.api("GET", "/healthz").status_code == 200


def test_half_sent_request_then_close_keeps_the_server_up(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b'POST /v1/emit HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"ev')
    assert gw.api("GET", "/healthz").status_code == 200


# ---------------------------------------------------------------- 401


PROTECTED = [
    ("POST", "/v1/emit"),
    ("POST", "/v1/batch"),
    ("POST", "/v1/join"),
    ("POST", "/v1/leave"),
    ("POST", "/v1/disconnect"),
    ("GET", "/v1/rooms"),
    ("GET", "/v1/rooms/r/sockets"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer wrong-key",
        "Bearer test-api-key-0123456789abcdef012345678",  # one character short
        "Basic dGVzdDp0ZXN0",
        "Token test-api-key-0123456789abcdef0123456789",
        "test-api-key-0123456789abcdef0123456789",
    ],
    ids=["missing", "empty", "no-key", "wrong", "prefix", "basic", "token", "bare"],
)
def test_unauthorized(gw: Gateway, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in PROTECTED:
        body = {"event": "e"} if method == "POST" else None
        r = httpx.request(method, gw.url + path, headers=headers, json=body)
        expect_error(gw, r, 401, "unauthorized")


def test_right_key_wrong_body_is_400_not_401(gw: Gateway) -> None:
    expect_error(gw, gw.api("POST", "/v1/emit", json={}), 400, "invalid_field")


# ---------------------------------------------------------------- 404 / 405


@pytest.mark.parametrize(
    "path", ["/", "/v1", "/v1/", "/v1/nope", "/v2/emit", "/v1/emit/extra", "/v1/rooms/r", "/x"]
)
def test_not_found(gw: Gateway, path: str) -> None:
    expect_error(gw, gw.api("GET", path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/emit", "POST"),
        ("PUT", "/v1/batch", "POST"),
        ("DELETE", "/v1/join", "POST"),
        ("GET", "/v1/leave", "POST"),
        ("GET", "/v1/disconnect", "POST"),
        ("POST", "/v1/rooms", "GET"),
        ("DELETE", "/v1/rooms/r/sockets", "GET"),
        ("POST", "/healthz", "GET"),
        ("POST", "/metrics", "GET"),
        ("PATCH", "/v1/openapi.json", "GET"),
    ],
)
def test_method_not_allowed(gw: Gateway, method: str, path: str, allow: str) -> None:
    r = gw.api(method, path)
    expect_error(gw, r, 405, "method_not_allowed")
    assert r.headers["allow"] == allow


# ---------------------------------------------------------------- 413


@pytest.fixture(scope="module")
def small_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = spawn_gateway(
        "--allow-anonymous", "--max-payload", "2048", log_dir=tmp_path_factory.mktemp("small")
    )
    yield g
    g.stop()


def test_body_over_max_payload(small_gw: Gateway) -> None:
    gw = small_gw
    fits = json.dumps({"event": "e", "data": "x" * 1900}).encode()
    assert len(fits) <= 2048
    assert gw.api("POST", "/v1/emit", content=fits).status_code == 200
    too_big = json.dumps({"event": "e", "data": "x" * 2100}).encode()
    for path in ("/v1/emit", "/v1/batch", "/v1/join"):
        error = expect_error(gw, gw.api("POST", path, content=too_big), 413, "payload_too_large")
        assert "2048" in error["message"]


def test_body_over_max_payload_chunked(small_gw: Gateway) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"event":"e","data":"'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    r = small_gw.api("POST", "/v1/emit", content=chunks())
    assert "content-length" not in r.request.headers
    expect_error(small_gw, r, 413, "payload_too_large")


def test_body_over_max_payload_is_refused_before_auth(small_gw: Gateway) -> None:
    # A large body is not read to its end just to answer 401.
    r = httpx.post(f"{small_gw.url}/v1/emit", content=b"x" * 100_000)
    assert r.status_code == 413, r.text
    assert small_gw.api("GET", "/healthz").status_code == 200
