"""python-socketio's ``AsyncClient`` (a second, independent client implementation) against
a real ``siogate serve`` process, over WebSocket only and over long-polling only.

Negative checks are closed with a sentinel emit, as in ``test_http_api.py``: a socket
receives emits in the order the API applied them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
import socketio
from sioclient import WAIT, Recorder, uid

from conftest import Gateway, spawn_gateway, without_node

TRANSPORTS = ["websocket", "polling"]
CONFORMANCE_HANDLERS = "examples.conformance:handlers"
OTHER_SECRET = "not-the-gateway-secret-0123456789abcdef0123"  # 32+ bytes: no PyJWT warning

# Binary attachments at the top level and nested in objects and lists.
BINARY_ARGS: list[Any] = [
    b"\x00\x01\x02\xfe\xff",
    {"name": "file.bin", "content": b"\x89PNG\r\n\x1a\n" + bytes(range(256))},
    [b"", "text between", {"deep": [b"\x7f" * 1000]}],
    "😀 plain string",
    42,
]


def recorder(url: str, transport: str | None, auth: dict[str, Any] | None = None) -> Recorder:
    """A socket on "/"; no transport: python-socketio's default, polling then an upgrade."""
    return Recorder(url, auth=auth, transports=[transport] if transport else None)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A token is required (no --allow-anonymous); no handlers, no webhook."""
    g = spawn_gateway(log_dir=tmp_path_factory.mktemp("gw"))
    yield g
    g.stop()


@pytest.fixture(scope="module")
def conformance_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The conformance handlers: echo ``message`` as ``message-back``, ack with the args."""
    g = spawn_gateway("--handlers", CONFORMANCE_HANDLERS, log_dir=tmp_path_factory.mktemp("conf"))
    yield g
    g.stop()


@pytest.fixture
async def recorders() -> AsyncIterator[list[Recorder]]:
    """Recorders appended here are closed after the test."""
    made: list[Recorder] = []
    yield made
    await asyncio.gather(*(r.close() for r in made))


@pytest.fixture
async def api(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {gw.api_key}"}
    async with httpx.AsyncClient(base_url=gw.url, headers=headers, timeout=10) as client:
        yield client


async def emit(api: httpx.AsyncClient, event: str, *args: Any, **body: Any) -> None:
    r = await api.post("/v1/emit", json={"event": event, "args": list(args), **body})
    assert r.status_code == 200, r.text


async def settle(api: httpx.AsyncClient, *clients: Recorder) -> None:
    name = uid("sentinel")
    await emit(api, name)
    for client in clients:
        await client.wait_event(name)


def foreign_token(secret: str, *, algorithm: str = "HS256", **claims: Any) -> str:
    payload = {"sub": "mallory", "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(payload, secret, algorithm=algorithm)


# ---------------------------------------------------------------- JWT accepted


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_jwt_rooms_and_user_room(
    gw: Gateway, api: httpx.AsyncClient, recorders: list[Recorder], transport: str
) -> None:
    alice = recorder(gw.url, transport, {"token": gw.token("alice", rooms=["news"])})
    bob = recorder(gw.url, transport, {"token": gw.token("bob", rooms=["sports"])})
    recorders += [alice, bob]
    await alice.connect()
    await bob.connect()
    assert alice.sio.transport() == transport

    await emit(api, "headline", {"title": "hello"}, rooms=["news"])
    await emit(api, "private", "for alice", 2, rooms=["user:alice"])
    await emit(api, "scores", 3, rooms=["sports"])
    await emit(api, "both", rooms=["news", "user:alice"])
    await settle(api, alice, bob)

    assert alice.received("headline") == [[{"title": "hello"}]]
    assert alice.received("private") == [["for alice", 2]]
    assert alice.received("both") == [[]]
    assert alice.received("scores") == []
    assert bob.received("headline") == [] and bob.received("private") == []
    assert bob.received("scores") == [[3]]


async def test_upgrade_from_polling_keeps_receiving(
    gw: Gateway, api: httpx.AsyncClient, recorders: list[Recorder]
) -> None:
    client = recorder(gw.url, None, {"token": gw.token("upgrader", rooms=["up"])})
    recorders.append(client)
    await client.connect()
    for _ in range(100):
        if client.sio.transport() == "websocket":
            break
        await asyncio.sleep(0.02)
    assert client.sio.transport() == "websocket"
    await emit(api, "after-upgrade", 1, rooms=["up"])
    assert await client.wait_event("after-upgrade") == [1]


# ---------------------------------------------------------------- handshakes refused


def refused_tokens(gw: Gateway) -> dict[str, tuple[dict[str, Any] | None, str]]:
    """name -> (auth payload, words the CONNECT_ERROR message must contain)."""
    now = int(time.time())
    return {
        "expired": ({"token": gw.token("alice", ttl=-60)}, "expired"),
        "wrong-secret": ({"token": foreign_token(OTHER_SECRET)}, "invalid"),
        "no-exp": ({"token": jwt.encode({"sub": "a"}, gw.jwt_secret, "HS256")}, "exp"),
        "alg-none": ({"token": foreign_token("", algorithm="none")}, "invalid"),
        "not-a-jwt": ({"token": "definitely.not.a-jwt"}, "invalid"),
        "not-yet-valid": ({"token": gw.token("a", nbf=now + 3600)}, "not yet valid"),
        "no-token": (None, "missing"),
        "empty-auth": ({}, "missing"),
    }


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong-secret",
        "no-exp",
        "alg-none",
        "not-a-jwt",
        "not-yet-valid",
        "no-token",
        "empty-auth",
    ],
)
async def test_refused_handshake(
    gw: Gateway, recorders: list[Recorder], transport: str, case: str
) -> None:
    auth, words = refused_tokens(gw)[case]
    client = recorder(gw.url, transport, auth)
    recorders.append(client)
    with pytest.raises(socketio.exceptions.ConnectionError) as info:
        await client.connect()
    assert "/" in str(info.value)  # python-socketio names the namespace that failed
    assert not client.sio.connected
    assert len(client.connect_errors) == 1, client.connect_errors
    error = client.connect_errors[0]
    assert isinstance(error, dict) and set(error) >= {"message"}, error
    assert words in error["message"].lower(), error
    assert client.events == []


async def test_refused_socket_gets_no_events(
    gw: Gateway, api: httpx.AsyncClient, recorders: list[Recorder]
) -> None:
    good = recorder(gw.url, "websocket", {"token": gw.token("good")})
    bad = recorder(gw.url, "websocket", {"token": gw.token("good", ttl=-60)})
    recorders += [good, bad]
    await good.connect()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await bad.connect()
    await settle(api, good)
    assert bad.events == []


async def test_anonymous_only_with_the_flag(
    start_gateway: Callable[..., Gateway], recorders: list[Recorder]
) -> None:
    gw = start_gateway("--allow-anonymous")
    anonymous = recorder(gw.url, "websocket")
    recorders.append(anonymous)
    await anonymous.connect()
    sid = anonymous.sio.get_sid()
    r = gw.api("GET", f"/v1/rooms/{sid}/sockets")
    assert without_node(r.json()["sockets"]) == [{"id": sid, "user": None}]
    # A bad token is still refused: anonymous means "no token", not "any token".
    forged = recorder(gw.url, "websocket", {"token": foreign_token(OTHER_SECRET)})
    recorders.append(forged)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await forged.connect()


# ---------------------------------------------------------------- client events


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_binary_round_trip_with_handlers(
    conformance_gw: Gateway, recorders: list[Recorder], transport: str
) -> None:
    token = conformance_gw.token("binary")
    client = recorder(conformance_gw.url, transport, {"token": token})
    recorders.append(client)
    await client.connect()
    # The handlers' on_connect echoes the CONNECT payload as "auth".
    assert await client.wait_event("auth") == [{"token": token}]

    await client.sio.emit("message", tuple(BINARY_ARGS))
    assert await client.wait_event("message-back") == BINARY_ARGS

    ack = await client.sio.call("message-with-ack", tuple(BINARY_ARGS), timeout=WAIT)
    assert list(ack) == BINARY_ARGS
    assert await client.sio.call("message-with-ack", b"\x00only", timeout=WAIT) == b"\x00only"


async def test_event_without_webhook_or_handler_acks_an_error(
    gw: Gateway, recorders: list[Recorder]
) -> None:
    client = recorder(gw.url, "websocket", {"token": gw.token("lonely")})
    recorders.append(client)
    await client.connect()
    ack = await client.sio.call("hello", {"x": 1}, timeout=WAIT)
    assert isinstance(ack, dict) and ack["error"]["code"] == "no_handler", ack
    assert ack["error"]["message"]


# ---------------------------------------------------------------- many clients


async def test_fifty_clients_receive_one_broadcast_exactly_once(
    gw: Gateway, api: httpx.AsyncClient, recorders: list[Recorder]
) -> None:
    room = uid("crowd")
    clients = [
        recorder(
            gw.url,
            "polling" if i % 5 == 0 else "websocket",
            {"token": gw.token(f"crowd-{i}", rooms=[room])},
        )
        for i in range(50)
    ]
    outsider = recorder(gw.url, "websocket", {"token": gw.token("outsider")})
    recorders += [*clients, outsider]
    await asyncio.gather(*(c.connect() for c in [*clients, outsider]))
    r = await api.get("/v1/rooms")
    assert {"name": room, "sockets": 50} in r.json()["rooms"]

    started = time.monotonic()
    await emit(api, "broadcast", {"n": 1}, rooms=[room])
    await asyncio.gather(*(c.wait_event("broadcast") for c in clients))
    elapsed = time.monotonic() - started
    await settle(api, *clients, outsider)
    counts = [len(c.received("broadcast")) for c in clients]
    assert counts == [1] * 50
    assert all(c.received("broadcast") == [[{"n": 1}]] for c in clients)
    assert outsider.received("broadcast") == []
    assert elapsed < 2.0, f"50 local deliveries took {elapsed:.2f}s"
