"""The Python SDK (``siogate.client``) against a real ``siogate serve`` process.

Behaviour tests run twice, with ``Client`` and with ``AsyncClient`` (the ``sdk``
fixture). The blocking client runs in a worker thread, so that this test's event
loop keeps serving the python-socketio clients that receive the events.

Receivers are ``sioclient.Recorder``s. A socket receives emits in the order the
API applied them, so ``got(recorder, *events)`` checks the exact list once the
last one has arrived: an emit that should have skipped the socket would stand in it.

Failures the gateway does not produce (a 503 from a proxy, a dropped connection,
a server that never answers) come from ``Stub``, a real HTTP server on loopback
whose answers each test scripts.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from sioclient import WAIT, Recorder, uid
from webhook_receiver import WebhookReceiver, of_type

from conftest import (
    API_KEY,
    JWT_SECRET,
    ROOT,
    Gateway,
    RedisServer,
    free_port,
    spawn_gateway,
)
from siogate.auth import JwtVerifier
from siogate.client import (
    ApiError,
    AsyncClient,
    Client,
    ConfigError,
    ListingNodes,
    RequestError,
    RequestTimeout,
    RoomInfo,
    RoomsListing,
    SocketInfo,
    UserCount,
    UserPresence,
    WebhookVerificationError,
    verify_webhook,
)
from siogate.webhooks import sign, signed_headers

WEBHOOK_SECRET = "whsec-sdk-0123456789abcdef0123456789"
OTHER_SECRET = "not-the-gateway-secret-0123456789abcdef0123"


# ---------------------------------------------------------------- receivers


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[Recorder]]]:
    """``await connect(url, token=None, namespace="/")`` -> a connected Recorder."""
    opened: list[Recorder] = []

    async def open_socket(url: str, token: str | None = None, namespace: str = "/") -> Recorder:
        auth = {"token": token} if token else None
        recorder = Recorder(url, auth=auth, namespaces=[namespace], transports=["websocket"])
        opened.append(recorder)
        return await recorder.connect()

    yield open_socket
    await asyncio.gather(*(r.close() for r in opened))


async def got(r: Recorder, *expected: tuple[str, list[Any]], namespace: str = "/") -> None:
    """``r`` has received exactly ``expected`` on ``namespace``, in this order.

    It waits for the last of them; an emit the SDK should not have delivered to ``r``
    would have arrived before it and stand in the list.
    """
    last = expected[-1][0]
    await r.wait_event(last, namespace, count=[event for event, _ in expected].count(last))
    assert [(event, args) for ns, event, args in r.events if ns == namespace] == list(expected)


# ---------------------------------------------------------------- the SDK, both ways


class Sdk:
    """One client; ``await sdk(lambda c: c.emit(...))`` runs an operation on it.

    An ``AsyncClient`` operation is awaited; a ``Client`` one runs in a thread.
    """

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client

    async def __call__(self, operation: Callable[[Any], Any]) -> Any:
        if isinstance(self.client, AsyncClient):
            return await operation(self.client)
        return await asyncio.to_thread(operation, self.client)


@pytest.fixture(params=[Client, AsyncClient], ids=["sync", "async"])
async def make_sdk(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Sdk]]:
    """``make_sdk(url, api_key=API_KEY, **options)`` -> an Sdk of this test's kind."""
    made: list[Client | AsyncClient] = []

    def make(url: str, api_key: str = API_KEY, **options: Any) -> Sdk:
        client = request.param(url, api_key, **options)
        made.append(client)
        return Sdk(client)

    yield make
    for client in made:
        if isinstance(client, AsyncClient):
            await client.aclose()
        else:
            client.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the tests that need no flags; they use rooms of their own."""
    gateway = spawn_gateway("--allow-anonymous", log_dir=tmp_path_factory.mktemp("gw"))
    yield gateway
    gateway.stop()


@pytest.fixture
def sdk(make_sdk: Callable[..., Sdk], gw: Gateway) -> Sdk:
    return make_sdk(gw.url, jwt_secret=JWT_SECRET)


async def members(sdk: Sdk, room: str, namespace: str = "/") -> list[tuple[str, str | None]]:
    """``(id, user)`` of each socket in ``room``, as the SDK lists them."""
    listing = await sdk(lambda c: c.sockets(room, namespace=namespace))
    return [(socket.id, socket.user) for socket in listing.sockets]


# ---------------------------------------------------------------- emit and batch


async def test_emit_data_args_null_and_nothing(
    sdk: Sdk, gw: Gateway, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    s = await connect(gw.url)
    data = {"text": "hi ü 😀", "n": [1, 2.5, None, True]}
    await sdk(lambda c: c.emit("data", data=data, rooms=[s.sid()]))
    await sdk(lambda c: c.emit("null", data=None, rooms=[s.sid()]))
    await sdk(lambda c: c.emit("args", args=(1, "two", None, {"x": []}), rooms=[s.sid()]))
    await sdk(lambda c: c.emit("bare", rooms=[s.sid()]))
    await got(
        s,
        ("data", [data]),
        ("null", [None]),  # data=None is one null argument
        ("args", [1, "two", None, {"x": []}]),
        ("bare", []),  # no data, no args: no argument
    )


async def test_emit_rooms_except_and_namespace(
    sdk: Sdk, gw: Gateway, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    news, alice, bob = uid("news"), uid("alice"), uid("bob")
    a = await connect(gw.url, sdk.client.token(alice, rooms=[news]))
    b = await connect(gw.url, sdk.client.token(bob, rooms=[news]))
    chat = await connect(gw.url, None, "/chat")

    await sdk(lambda c: c.emit("news", data=1, rooms=[news], except_=[f"user:{bob}"]))
    await sdk(lambda c: c.emit("everyone", data=2))  # the whole namespace "/"
    await sdk(lambda c: c.emit("chat", data=3, namespace="/chat", rooms=[chat.sid("/chat")]))

    await got(a, ("news", [1]), ("everyone", [2]))
    await got(b, ("everyone", [2]))  # not "news": user:bob was excepted
    await got(chat, ("chat", [3]), namespace="/chat")  # not "everyone": another namespace


async def test_batch_applies_in_order_and_counts(
    sdk: Sdk, gw: Gateway, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    s = await connect(gw.url)
    entries = [
        {"event": "a", "data": 1, "rooms": [s.sid()]},
        {"event": "b", "args": [1, 2], "rooms": [s.sid()]},
        {"event": "c", "rooms": [s.sid()], "except_": [uid("nobody")]},
        {"event": "d", "rooms": [s.sid()], "except_": [s.sid()]},
        {"event": "e", "data": None, "rooms": [s.sid()], "namespace": "/"},
    ]
    assert await sdk(lambda c: c.batch(iter(entries))) == 5
    await got(s, ("a", [1]), ("b", [1, 2]), ("c", []), ("e", [None]))  # "d" excepted it


# ---------------------------------------------------------------- rooms and sockets


async def test_join_list_and_leave(
    sdk: Sdk, gw: Gateway, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    user = uid("dana")
    s = await connect(gw.url, sdk.client.token(user))
    # Characters that must be percent-encoded in the /v1/rooms/<room>/sockets path.
    room = uid("room") + "/a b?c=%2F#é"
    other = uid("other")

    await sdk(lambda c: c.join(room, sockets=[s.sid()]))
    await sdk(lambda c: c.join(other, rooms=[room]))  # the sockets of a room
    await sdk(lambda c: c.emit("in-room", data=room, rooms=[other]))
    await got(s, ("in-room", [room]))

    listed = await sdk(lambda c: c.rooms())
    assert RoomInfo(name=room, sockets=1) in listed.rooms
    assert RoomInfo(name=other, sockets=1) in listed.rooms
    assert [r.name for r in listed.rooms] == sorted(r.name for r in listed.rooms)
    assert await members(sdk, room) == [(s.sid(), user)]
    assert await members(sdk, s.sid()) == [(s.sid(), user)]

    # How complete a listing is: one node, which answered.
    listing = await sdk(lambda c: c.sockets(room))
    assert (listed.partial, listing.partial) == (False, False)
    assert listed.nodes == listing.nodes == ListingNodes(answered=1, missing=())
    node = listing.sockets[0].node
    assert isinstance(node, str) and node
    assert listing.sockets == (SocketInfo(id=s.sid(), user=user, node=node),)

    await sdk(lambda c: c.leave(room, sockets=[s.sid()]))
    await sdk(lambda c: c.leave(other, rooms=[f"user:{user}"]))
    assert await members(sdk, room) == []
    names = {r.name for r in (await sdk(lambda c: c.rooms())).rooms}
    assert room not in names and other not in names


async def test_rooms_and_sockets_of_a_namespace(
    sdk: Sdk, gw: Gateway, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    s = await connect(gw.url, None, "/chat")
    room, sid = uid("lobby"), s.sid("/chat")
    await sdk(lambda c: c.join(room, sockets=[sid], namespace="/chat"))
    assert RoomInfo(room, 1) in (await sdk(lambda c: c.rooms("/chat"))).rooms
    assert room not in {r.name for r in (await sdk(lambda c: c.rooms())).rooms}
    assert await members(sdk, room, "/chat") == [(sid, None)]
    assert await members(sdk, room) == []


async def test_pages_and_presence(
    sdk: Sdk, gw: Gateway, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    room, user, away = uid("paged"), uid("erin"), uid("away")
    sids = set()
    for token in (sdk.client.token(user, rooms=[room]),) * 3 + (None,) * 2:
        s = await connect(gw.url, token)
        await sdk(lambda c, s=s: c.join(room, sockets=[s.sid()]))
        sids.add(s.sid())
    seen: list[str] = []
    cursor = None
    while True:
        page = await sdk(lambda c, cursor=cursor: c.sockets(room, limit=2, cursor=cursor))
        assert len(page.sockets) <= 2
        seen += [s.id for s in page.sockets]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == sorted(sids)
    first = await sdk(lambda c: c.rooms(limit=1))
    assert len(first.rooms) == 1 and first.next_cursor is not None

    presence = await sdk(lambda c: c.presence([user, away]))
    assert presence.users == {user: UserPresence(True, 3), away: UserPresence(False, 0)}
    assert presence.partial is False
    in_room = await sdk(lambda c: c.room_presence(room))
    assert (in_room.users, in_room.anonymous) == ((UserCount(user, 3),), 2)
    assert in_room.next_cursor is None
    with pytest.raises(ApiError) as refused:
        await sdk(lambda c: c.sockets(room, cursor="not-a-cursor"))
    assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")


async def test_disconnect_by_id_and_by_room(
    sdk: Sdk, gw: Gateway, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    user = uid("gone")
    by_id = await connect(gw.url)
    by_room = await connect(gw.url, sdk.client.token(user))
    stays = await connect(gw.url)
    await sdk(lambda c: c.disconnect(sockets=[by_id.sid()]))
    await sdk(lambda c: c.disconnect(rooms=[f"user:{user}"], namespace="/"))
    await by_id.wait_disconnect()
    await by_room.wait_disconnect()
    await sdk(lambda c: c.emit("still-here", rooms=[stays.sid()]))
    await got(stays, ("still-here", []))
    assert stays.disconnects == []


@pytest.mark.redis
async def test_a_cluster_listing_names_each_socket_node(
    redis_server: RedisServer, tmp_path: Path, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    flags = ("--allow-anonymous", "--redis-url", redis_server.url)
    nodes = [spawn_gateway(*flags, log_dir=tmp_path) for _ in range(2)]
    try:
        for node in nodes:
            await asyncio.to_thread(wait_for_peers, node, 1)
        a, b = [await connect(node.url) for node in nodes]
        room = uid("both")
        async with AsyncClient(nodes[0].url, API_KEY) as client:
            await client.join(room, sockets=[a.sid(), b.sid()])
            listing = await client.sockets(room)
            assert (listing.partial, listing.nodes) == (False, ListingNodes(answered=2))
            assert {s.id for s in listing.sockets} == {a.sid(), b.sid()}
            assert len({s.node for s in listing.sockets}) == 2
            assert (await client.rooms()).nodes == ListingNodes(answered=2)
            await client.emit("both", rooms=[room])
        await got(a, ("both", []))
        await got(b, ("both", []))
        await asyncio.gather(a.close(), b.close())  # while their nodes still answer
    finally:
        for node in nodes:
            node.stop()


def wait_for_peers(node: Gateway, peers: int) -> None:
    deadline = time.monotonic() + 10
    while httpx.get(f"{node.url}/healthz").json()["broker"]["peers"] != peers:
        assert time.monotonic() < deadline, f"node {node.port} did not see {peers} peer(s)"
        time.sleep(0.05)


# ---------------------------------------------------------------- tokens


async def test_token_minted_by_the_sdk_is_accepted(
    sdk: Sdk, gw: Gateway, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    user, room = uid("erin"), uid("vip")
    s = await connect(gw.url, sdk.client.token(user, rooms=[room], ttl=60))
    assert await members(sdk, room) == [(s.sid(), user)]
    assert await members(sdk, f"user:{user}") == [(s.sid(), user)]
    claims = JwtVerifier(JWT_SECRET).verify(sdk.client.token(user, ttl=60)).claims
    assert claims["exp"] - claims["iat"] == 60


async def test_tokens_the_gateway_refuses(
    make_sdk: Callable[..., Sdk], gw: Gateway, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    expired = make_sdk(gw.url, jwt_secret=JWT_SECRET).client.token("late", ttl=-60)
    foreign = make_sdk(gw.url, jwt_secret=OTHER_SECRET).client.token("mallory")
    for token in (expired, foreign):
        with pytest.raises(socketio.exceptions.ConnectionError):
            await connect(gw.url, token)
    with pytest.raises(ConfigError, match="jwt_secret"):
        make_sdk(gw.url).client.token("nobody")


# ---------------------------------------------------------------- errors


async def test_bad_api_key_is_unauthorized(make_sdk: Callable[..., Sdk], gw: Gateway) -> None:
    sdk = make_sdk(gw.url, "not-the-key")
    for operation in (lambda c: c.emit("x"), lambda c: c.rooms(), lambda c: c.sockets("r")):
        with pytest.raises(ApiError) as info:
            await sdk(operation)
        assert (info.value.status, info.value.code) == (401, "unauthorized")
        assert info.value.message == "missing or invalid API key"


@pytest.mark.parametrize(
    ("operation", "status", "code", "words"),
    [
        (lambda c: c.emit("connect"), 400, "reserved_event", "reserved"),
        (lambda c: c.emit("x", rooms=[]), 400, "invalid_field", "rooms must not be empty"),
        (lambda c: c.emit("x", data=1, args=[1]), 400, "invalid_field", "not both"),
        (lambda c: c.emit("x", namespace="chat"), 400, "invalid_field", "start with '/'"),
        (lambda c: c.emit("x" * 257), 400, "invalid_field", "at most 256"),
        (lambda c: c.batch([]), 400, "invalid_field", "non-empty list"),
        (lambda c: c.batch([{"event": "a"}, {"data": 1}]), 400, "invalid_field", "emits[1]"),
        (lambda c: c.join("r"), 400, "invalid_field", "exactly one of"),
        (lambda c: c.leave("r", sockets=["a"], rooms=["b"]), 400, "invalid_field", "exactly"),
        (lambda c: c.disconnect(sockets=[]), 400, "invalid_field", "exactly one of"),
        (lambda c: c.sockets("x" * 257), 400, "invalid_field", "at most 256"),
        (lambda c: c.sockets(""), 404, "not_found", ""),
    ],
)
async def test_validation_errors_carry_code_and_status(
    sdk: Sdk, operation: Callable[[Any], Any], status: int, code: str, words: str
) -> None:
    with pytest.raises(ApiError) as info:
        await sdk(operation)
    assert (info.value.status, info.value.code) == (status, code)
    assert words in info.value.message


@pytest.mark.parametrize(
    ("operation", "error", "words"),
    [
        (lambda c: c.emit("x", room=["a"]), TypeError, "unexpected keyword argument 'room'"),
        (lambda c: c.emit("x", rooms="news"), TypeError, "rooms must be a list"),
        (lambda c: c.join("r", sockets="abc"), TypeError, "sockets must be a list"),
        (lambda c: c.batch([{"event": "a", "except": ["b"]}]), TypeError, "'except'"),
        (lambda c: c.emit("x", data=float("nan")), ValueError, "JSON"),
        (lambda c: c.emit("x", data=b"bytes"), TypeError, "JSON"),
    ],
)
async def test_arguments_refused_before_any_request(
    make_sdk: Callable[..., Sdk],
    operation: Callable[[Any], Any],
    error: type[Exception],
    words: str,
) -> None:
    with Stub() as stub:
        with pytest.raises(error, match=re.escape(words)):
            await make_sdk(stub.url)(operation)
    assert stub.requests == []


async def test_namespace_and_size_limits_of_the_gateway(
    make_sdk: Callable[..., Sdk], tmp_path: Path
) -> None:
    strict = spawn_gateway("--namespace", "/", "--max-payload", "4096", log_dir=tmp_path)
    try:
        sdk = make_sdk(strict.url)
        with pytest.raises(ApiError) as info:
            await sdk(lambda c: c.rooms("/chat"))
        assert (info.value.status, info.value.code) == (400, "unknown_namespace")
        with pytest.raises(ApiError) as info:
            await sdk(lambda c: c.emit("big", data="x" * 5000))
        assert (info.value.status, info.value.code) == (413, "payload_too_large")
        await sdk(lambda c: c.emit("small", data="x" * 100))  # the client is still usable
    finally:
        strict.stop()


# ---------------------------------------------------------------- timeouts and retries


class Stub:
    """An HTTP server on 127.0.0.1 that answers requests from a script, in order.

    A script entry is ``(status, body)`` to answer, ``"close"`` to drop the
    connection without an answer, or ``"hang"`` to never answer. Past the script,
    every request gets ``then``.
    """

    def __init__(self, *script: tuple[int, str] | str, then: tuple[int, str] = (200, "{}")):
        self.script, self.then = list(script), then
        self.requests: list[tuple[str, str]] = []
        self.keys: list[str | None] = []  # the Idempotency-Key of each request
        self._closing = threading.Event()
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with stub._lock:
                    stub.requests.append((self.command, self.path))
                    stub.keys.append(self.headers.get("Idempotency-Key"))
                    step = stub.script.pop(0) if stub.script else stub.then
                if isinstance(step, str):  # "hang" or "close"
                    if step == "hang":
                        stub._closing.wait(WAIT * 2)
                    self.close_connection = True
                    return
                status, body = step
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer  # noqa: N815 - the http.server naming scheme

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Stub:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


UNAVAILABLE = (503, "<html>Service Unavailable</html>")
ROOMS_BODY = '{"rooms":[{"name":"news","sockets":2}]}'


async def test_get_is_retried_after_a_503_and_a_dropped_connection(
    make_sdk: Callable[..., Sdk],
) -> None:
    with Stub(UNAVAILABLE, "close", then=(200, ROOMS_BODY)) as stub:
        sdk = make_sdk(stub.url, retries=2, backoff=0.01)
        listing = await sdk(lambda c: c.rooms("/x"))
        assert listing == RoomsListing(rooms=(RoomInfo("news", 2),))
    assert stub.requests == [("GET", "/v1/rooms?namespace=%2Fx")] * 3


async def test_get_gives_up_after_its_retries(make_sdk: Callable[..., Sdk]) -> None:
    with Stub(then=UNAVAILABLE) as stub:
        sdk = make_sdk(stub.url, retries=2, backoff=0.01)
        with pytest.raises(ApiError) as info:
            await sdk(lambda c: c.sockets("news"))
        assert (info.value.status, info.value.code) == (503, "unexpected_response")
        assert len(stub.requests) == 3
        no_retry = make_sdk(stub.url, retries=0)
        with pytest.raises(ApiError):
            await no_retry(lambda c: c.rooms())
        assert len(stub.requests) == 4


POSTS: list[Callable[[Any], Any]] = [
    lambda c: c.emit("x", data=1),
    lambda c: c.batch([{"event": "x"}]),
    lambda c: c.join("r", sockets=["s"]),
    lambda c: c.leave("r", sockets=["s"]),
    lambda c: c.disconnect(sockets=["s"]),
]
IN_PROGRESS = (409, '{"error":{"code":"idempotency_key_in_progress","message":"busy"}}')


@pytest.mark.parametrize("step", [UNAVAILABLE, "close", IN_PROGRESS], ids=["503", "dropped", "409"])
async def test_posts_are_retried_under_one_idempotency_key(
    make_sdk: Callable[..., Sdk], step: Any
) -> None:
    for operation in POSTS:
        with Stub(step, step, then=(200, '{"ok":true,"count":1}')) as stub:
            sdk = make_sdk(stub.url, retries=5, backoff=0.01)
            await sdk(operation)
        assert len(stub.requests) == 3, stub.requests
        # One key for the call, sent on every attempt, the first one included.
        assert len(set(stub.keys)) == 1 and stub.keys[0] is not None, stub.keys
    with Stub(UNAVAILABLE, then=(200, '{"ok":true}')) as stub:
        sdk = make_sdk(stub.url, retries=1, backoff=0.01)
        await sdk(lambda c: c.emit("x", idempotency_key="mine-1"))
        await sdk(lambda c: c.emit("x"))
        await sdk(lambda c: c.emit("x"))
    assert stub.keys[:2] == ["mine-1", "mine-1"]
    assert len(set(stub.keys[2:])) == 2  # a new key for each new call


async def test_posts_without_retries_are_sent_once(make_sdk: Callable[..., Sdk]) -> None:
    with Stub(UNAVAILABLE, then=(200, '{"ok":true}')) as stub:
        sdk = make_sdk(stub.url, retries=0)
        with pytest.raises(ApiError):
            await sdk(lambda c: c.emit("x"))
    assert len(stub.requests) == 1


class LosingProxy:
    """A TCP proxy to ``target`` that drops the first ``lose`` answers it relays.

    The request reaches the gateway and is applied; only its answer is lost, as when
    a connection breaks on the way back. The SDK then retries under the same key.
    """

    def __init__(self, target: int, lose: int = 1) -> None:
        self.target, self.lose = target, lose
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                body = await reader.readexactly(int(length[1]) if length else 0)
                up_writer.write(head + body)
                answer = await up_reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length: *(\d+)", answer)
                answer += await up_reader.readexactly(int(length[1]) if length else 0)
                if self.lose > 0:
                    self.lose -= 1
                    return  # applied upstream; the client never hears of it
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            up_writer.close()


async def test_a_retry_after_a_lost_answer_is_delivered_once(
    make_sdk: Callable[..., Sdk], gw: Gateway, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    recorder = await connect(gw.url)
    event = uid("lost-answer")
    proxy = LosingProxy(gw.port, lose=1)
    async with proxy as url:
        sdk = make_sdk(url, retries=2, backoff=0.01)
        await sdk(lambda c: c.emit(event, data=1))
        assert proxy.lose == 0  # the first answer was lost, and the emit retried
        await sdk(lambda c: c.emit(event, data=2))  # the sentinel: it follows in order
    await got(recorder, (event, [1]), (event, [2]))


async def test_connection_refused(make_sdk: Callable[..., Sdk]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sdk = make_sdk(url, retries=2, backoff=0.2)
    started = time.monotonic()
    with pytest.raises(RequestError) as info:
        await sdk(lambda c: c.rooms())
    assert time.monotonic() - started >= 0.2 + 0.4  # two retries, backoff doubling
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert not isinstance(info.value, RequestTimeout)
    with pytest.raises(RequestError):
        await sdk(lambda c: c.emit("x"))


@pytest.mark.parametrize(
    "timeout", [0.3, httpx.Timeout(WAIT, read=0.3)], ids=["seconds", "httpx.Timeout"]
)
async def test_timeout_is_configurable(make_sdk: Callable[..., Sdk], timeout: Any) -> None:
    with Stub("hang", "hang", "hang", "hang") as stub:
        sdk = make_sdk(stub.url, timeout=timeout, retries=1, backoff=0.01)
        started = time.monotonic()
        with pytest.raises(RequestTimeout) as info:
            await sdk(lambda c: c.emit("x"))
        assert 0.6 <= time.monotonic() - started < 2 * WAIT
        assert isinstance(info.value.__cause__, httpx.ReadTimeout)
        assert len(stub.requests) == 2  # tried again once, under its idempotency key
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            await sdk(lambda c: c.rooms())
        assert 0.6 <= time.monotonic() - started < 2 * WAIT
        assert len(stub.requests) == 4  # a GET: tried again once


async def test_unexpected_answers(make_sdk: Callable[..., Sdk]) -> None:
    with Stub((200, "{}"), (200, "not json"), (302, ""), then=(500, '{"error":{}}')) as stub:
        sdk = make_sdk(stub.url, retries=0)
        for status in (200, 200, 302, 500):
            with pytest.raises(ApiError) as info:
                await sdk(lambda c: c.rooms())
            assert (info.value.status, info.value.code) == (status, "unexpected_response")


# ---------------------------------------------------------------- webhooks


async def test_verify_webhook_against_real_gateway_signatures(
    tmp_path: Path, connect: Callable[..., Awaitable[Recorder]]
) -> None:
    with WebhookReceiver() as hook:
        hooked = spawn_gateway(
            "--allow-anonymous",
            "--webhook-url",
            hook.url,
            "--webhook-secret",
            WEBHOOK_SECRET,
            log_dir=tmp_path,
        )
        try:
            s = await connect(hooked.url)
            await s.sio.emit("ping", {"n": 1, "text": "é"})
            event = await hook.wait(of_type("event", event="ping"))
            connected = await hook.wait(of_type("connect"))
            await s.close()  # while its gateway still answers
        finally:
            hooked.stop()

    def refused(body: bytes, signature: str | None, timestamp: str | None, **kw: Any) -> str:
        with pytest.raises(WebhookVerificationError) as info:
            verify_webhook(body, signature, timestamp, WEBHOOK_SECRET, **kw)
        return info.value.code

    for request in (event, connected):
        body = request.body
        header = request.headers["x-siogate-signature"]
        ts = request.headers["x-siogate-timestamp"]
        verify_webhook(body, header, ts, WEBHOOK_SECRET)
        verify_webhook(body, header.upper(), ts, WEBHOOK_SECRET)  # hex in either case
        verify_webhook(body, f"  {header} ", f" {ts} ", WEBHOOK_SECRET)

    body, header = event.body, event.headers["x-siogate-signature"]
    ts = event.headers["x-siogate-timestamp"]
    sent = int(ts)
    tampered = body.replace(b'"n":1', b'"n":2')
    assert tampered != body
    assert refused(tampered, header, ts) == "signature_mismatch"
    assert refused(body + b" ", header, ts) == "signature_mismatch"
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify_webhook(body, header, ts, WEBHOOK_SECRET + "x")
    # A valid signature of another request does not vouch for this body.
    other = connected.headers["x-siogate-signature"]
    assert refused(body, other, connected.headers["x-siogate-timestamp"]) == "signature_mismatch"
    # Nor for this body at another time: the timestamp is signed too.
    assert refused(body, header, str(sent + 1)) == "signature_mismatch"
    # Replayed later than the tolerance, or sent from a clock far ahead: refused.
    assert refused(body, header, ts, now=sent + 301) == "timestamp_too_old"
    assert refused(body, header, ts, now=sent + 61, tolerance=60) == "timestamp_too_old"
    assert refused(body, header, ts, now=sent - 301) == "timestamp_in_future"
    verify_webhook(body, header, ts, WEBHOOK_SECRET, now=sent + 299)
    verify_webhook(body, header, ts, WEBHOOK_SECRET, now=sent + 3000, tolerance=3600)
    assert refused(body, None, ts) == "missing_signature"
    assert refused(body, header, None) == "missing_timestamp"
    assert refused(body, header, "soon") == "malformed_timestamp"
    digest = header.removeprefix("sha256=")
    for garbage in [
        "",
        "sha256=",
        digest,
        f"sha1={digest}",
        f"sha256={digest[:-1]}",
        f"sha256={digest}0",
        "sha256=" + "zz" * 32,
        "sha256=" + "é" * 64,
        f"sha256={digest},sha256={digest}",
    ]:
        assert refused(body, garbage, ts) == "malformed_signature", garbage


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def test_fastapi_example_acks_and_joins(
    start_gateway: Callable[..., Gateway],
    connect: Callable[..., Awaitable[Recorder]],
    tmp_path: Path,
) -> None:
    pytest.importorskip("fastapi")
    port = free_port()
    hook_url = f"http://127.0.0.1:{port}/siogate"
    gw = start_gateway(
        "--allow-anonymous", "--webhook-url", hook_url, "--webhook-secret", WEBHOOK_SECRET
    )
    env = {
        **os.environ,
        "SIOGATE_URL": gw.url,
        "SIOGATE_API_KEY": API_KEY,
        "SIOGATE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    cmd = [sys.executable, "-m", "uvicorn", "examples.webhook_fastapi:app"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with (tmp_path / "uvicorn.log").open("wb") as log:
        app = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        await asyncio.to_thread(wait_listening, port, app)
        s = await connect(gw.url)
        assert await s.sio.call("echo", {"text": "hi"}, timeout=WAIT) == {"text": "hi"}
        room = uid("lobby")
        assert await s.sio.call("join", room, timeout=WAIT) == {"joined": room}
        async with AsyncClient(gw.url, API_KEY) as client:
            await client.emit("welcome", data=room, rooms=[room])
        await got(s, ("welcome", [room]))

        body = b'{"type":"connect","namespace":"/","socket":{"id":"a","user":null}}'
        now = time.time()
        async with httpx.AsyncClient() as http:
            forged = await http.post(hook_url, content=body, headers={"X-Siogate-Signature": ""})
            other = await http.post(
                hook_url,
                content=body,
                headers={
                    "X-Siogate-Signature": sign(b"x", WEBHOOK_SECRET, int(now)),
                    "X-Siogate-Timestamp": str(int(now)),
                },
            )
            replayed = await http.post(
                hook_url, content=body, headers=signed_headers(body, WEBHOOK_SECRET, now - 600)
            )
            fresh = await http.post(
                hook_url, content=body, headers=signed_headers(body, WEBHOOK_SECRET, now)
            )
        assert forged.status_code == 401
        assert other.status_code == 401  # a signature of other bytes
        assert replayed.status_code == 401  # signed 10 minutes ago
        assert fresh.status_code == 200
    finally:
        app.terminate()
        app.wait(10)
    assert b"Traceback" not in (tmp_path / "uvicorn.log").read_bytes()


# ---------------------------------------------------------------- the docs


def doc_snippet(marker: str) -> str:
    """The first ```python block after ``marker`` in docs/sdk-python.md."""
    text = (ROOT / "docs" / "sdk-python.md").read_text()
    after = text[text.index(marker) :]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match, marker
    return match.group(1)


async def test_the_docs_publish_snippet_runs(
    gw: Gateway, connect: Callable[..., Awaitable[Recorder]], tmp_path: Path
) -> None:
    s = await connect(gw.url, None)
    # The snippet emits to "news"; this socket is the only one there at that moment.
    async with AsyncClient(gw.url, API_KEY) as client:
        await client.join("news", sockets=[s.sid()])
        script = tmp_path / "publish.py"
        script.write_text(doc_snippet("## Publish"))
        env = {**os.environ, "SIOGATE_URL": gw.url, "SIOGATE_API_KEY": API_KEY}
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, str(script)], env=env, capture_output=True
        )
        assert done.returncode == 0, done.stderr.decode()
        await got(s, ("hello", [{"text": "hi"}]))
        await client.leave("news", sockets=[s.sid()])


def test_the_docs_webhook_example_is_the_example_file() -> None:
    example = (ROOT / "examples" / "webhook_fastapi.py").read_text()
    assert doc_snippet("## Receiving webhooks with FastAPI") == example
