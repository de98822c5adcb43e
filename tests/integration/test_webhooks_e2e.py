"""Webhooks end to end: python-socketio client -> ``siogate serve`` -> a real HTTP receiver.

The receiver (``webhook_receiver.py``) is an ``http.server`` in a thread of this
process; the gateway is a subprocess that POSTs to it over loopback. Signatures (over
``<timestamp>.<body>``) are checked here with :mod:`hmac`, independently of siogate's
own signing code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sioclient import WAIT, Recorder
from webhook_receiver import Received, Reply, WebhookReceiver, of_type
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from conftest import Gateway, free_port, spawn_gateway

SECRET = "whsec-e2e-0123456789abcdef0123456789"
SIGNATURE = re.compile(r"^sha256=[0-9a-f]{64}$")


class HookClient(Recorder):
    """A socket on one namespace, with a token for ``user`` (None: anonymous)."""

    def __init__(
        self,
        gw: Gateway,
        user: str | None,
        *,
        transport: str = "websocket",
        namespace: str = "/",
        rooms: list[str] | None = None,
    ) -> None:
        auth = {"token": gw.token(user, rooms=rooms)} if user else None
        super().__init__(gw.url, auth=auth, namespaces=[namespace], transports=[transport])
        self.namespace = namespace

    @property
    def id(self) -> str:
        return self.sid(self.namespace)

    async def call(
        self, event: str, *args: Any, namespace: str | None = None, timeout: float = WAIT
    ) -> list[Any]:
        return await super().call(
            event, *args, namespace=namespace or self.namespace, timeout=timeout
        )


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebhookReceiver, Gateway]]:
    """One receiver and one gateway posting to it, for the tests that need no flags of
    their own. Tests tell their requests apart by socket id."""
    with WebhookReceiver() as receiver:
        gw = spawn_gateway(
            "--allow-anonymous",
            "--webhook-url",
            receiver.url,
            "--webhook-secret",
            SECRET,
            log_dir=tmp_path_factory.mktemp("gw"),
        )
        yield receiver, gw
        gw.stop()


@pytest.fixture
def hook(shared: tuple[WebhookReceiver, Gateway]) -> Iterator[WebhookReceiver]:
    receiver = shared[0]
    receiver.respond = default_reply
    yield receiver
    receiver.respond = default_reply


@pytest.fixture
def gw(shared: tuple[WebhookReceiver, Gateway]) -> Gateway:
    return shared[1]


@pytest.fixture
def own_hook() -> Iterator[WebhookReceiver]:
    """A receiver for a test that starts its own gateway."""
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
async def clients() -> AsyncIterator[list[HookClient]]:
    made: list[HookClient] = []
    yield made
    await asyncio.gather(*(c.close() for c in made))


def default_reply(request: Received) -> Reply:
    return Reply()


def from_socket(kind: str, sid: str, user: str | None, **fields: Any) -> Callable[[Received], bool]:
    return of_type(kind, socket={"id": sid, "user": user}, **fields)


def hooked(start_gateway: Callable[..., Gateway], url: str, *flags: str) -> Gateway:
    return start_gateway("--webhook-url", url, "--webhook-secret", SECRET, *flags)


async def connected(
    clients: list[HookClient], gw: Gateway, user: str | None, **kwargs: Any
) -> HookClient:
    client = HookClient(gw, user, **kwargs)
    clients.append(client)
    await client.connect()
    return client


def assert_signed(request: Received) -> None:
    assert request.method == "POST" and request.path == "/hook"
    assert request.headers["content-type"].startswith("application/json")
    signature = request.headers.get("x-siogate-signature", "")
    assert SIGNATURE.match(signature), signature
    timestamp = request.headers.get("x-siogate-timestamp", "")
    assert re.fullmatch(r"[0-9]{10}", timestamp), timestamp
    assert abs(time.time() - int(timestamp)) < 60, "the timestamp is not the time of sending"
    assert request.signature_ok(SECRET), "signature is not the HMAC of timestamp.raw body"
    assert not request.signature_ok(SECRET + "x")


# ---------------------------------------------------------------- events and acks


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_event_round_trip(
    gw: Gateway, hook: WebhookReceiver, clients: list[HookClient], transport: str
) -> None:
    def respond(request: Received) -> Reply:
        payload = request.payload
        if payload["type"] != "event":
            return Reply()
        return Reply(body={"ack": ["got", payload["event"], payload["args"], {"n": 1}]})

    hook.respond = respond
    client = await connected(clients, gw, "alice", transport=transport)

    args = [{"id": 7, "tags": ["a", "ü"]}, "two", None, 3.5]
    ack = await client.call("order", *args)
    assert ack == ["got", "order", args, {"n": 1}]

    request = await hook.wait(from_socket("event", client.id, "alice", event="order"))
    assert_signed(request)
    assert request.payload == {
        "type": "event",
        "namespace": "/",
        "socket": {"id": client.id, "user": "alice"},
        "event": "order",
        "args": args,
    }


async def test_event_without_ack_is_posted(
    gw: Gateway, hook: WebhookReceiver, clients: list[HookClient]
) -> None:
    client = await connected(clients, gw, "bob")
    await client.sio.emit("note", ("fire", "and forget"))
    request = await hook.wait(from_socket("event", client.id, "bob", event="note"))
    assert_signed(request)
    assert request.payload["args"] == ["fire", "and forget"]
    assert request.payload["socket"] == {"id": client.id, "user": "bob"}


async def test_anonymous_socket_in_a_namespace(
    gw: Gateway, hook: WebhookReceiver, clients: list[HookClient]
) -> None:
    hook.respond = lambda request: Reply(body={"ack": [request.payload.get("namespace")]})
    client = await connected(clients, gw, None, namespace="/chat")
    assert await client.call("hi") == ["/chat"]
    event = (await hook.wait(from_socket("event", client.id, None, event="hi"))).payload
    assert event["namespace"] == "/chat"
    assert event["socket"] == {"id": client.id, "user": None}
    connect = (await hook.wait(from_socket("connect", client.id, None))).payload
    assert connect == {
        "type": "connect",
        "namespace": "/chat",
        "socket": {"id": client.id, "user": None},
    }


@pytest.mark.parametrize(
    ("reply", "ack"),
    [
        (Reply(body={"ack": []}), []),
        (Reply(body={"ack": [None]}), [None]),
        (Reply(body={"ack": [1, "two", [3], {"four": 4}]}), [1, "two", [3], {"four": 4}]),
        (Reply(body={"ack": None}), []),
        (Reply(body={}), []),
        (Reply(status=204, body=b""), []),
        (Reply(status=201, body={"ack": ["created"], "other": "ignored"}), ["created"]),
    ],
    ids=["empty", "null-arg", "several", "ack-null", "no-ack", "204", "201"],
)
async def test_ack_reply_shapes(
    gw: Gateway, hook: WebhookReceiver, clients: list[HookClient], reply: Reply, ack: list[Any]
) -> None:
    hook.respond = lambda request: reply
    client = await connected(clients, gw, "shapes")
    assert await client.call("shape", 1) == ack


async def test_binary_args_reach_the_webhook_as_base64(
    gw: Gateway, hook: WebhookReceiver, clients: list[HookClient]
) -> None:
    client = await connected(clients, gw, "bin")
    blob = bytes(range(256))
    await client.call("upload", {"file": blob}, b"\x00")
    args = (await hook.wait(from_socket("event", client.id, "bin"))).payload["args"]
    assert args == [
        {"file": {"_binary": base64.b64encode(blob).decode()}},
        {"_binary": base64.b64encode(b"\x00").decode()},
    ]


# ---------------------------------------------------------------- connect / disconnect


@asynccontextmanager
async def raw_socket(gw: Gateway, token: str) -> AsyncIterator[tuple[ClientConnection, str]]:
    """A Socket.IO socket on a bare WebSocket, so a test decides every byte it sends."""
    url = f"ws://127.0.0.1:{gw.port}/socket.io/?EIO=4&transport=websocket"
    async with ws_connect(url) as ws:
        assert str(await ws.recv()).startswith("0{")
        await ws.send("40" + json.dumps({"token": token}))
        answer = str(await ws.recv())
        assert answer.startswith("40{"), answer
        yield ws, json.loads(answer[2:])["sid"]


async def test_connect_webhook(
    gw: Gateway, hook: WebhookReceiver, clients: list[HookClient]
) -> None:
    client = await connected(clients, gw, "carol", rooms=["lobby"])
    connect = await hook.wait(from_socket("connect", client.id, "carol"))
    assert_signed(connect)
    assert connect.payload == {
        "type": "connect",
        "namespace": "/",
        "socket": {"id": client.id, "user": "carol"},
    }


async def test_client_disconnect_reason(gw: Gateway, hook: WebhookReceiver) -> None:
    async with raw_socket(gw, gw.token("carol")) as (ws, sid):
        await ws.send("41")  # Socket.IO DISCONNECT; the WebSocket stays open
        disconnect = await hook.wait(from_socket("disconnect", sid, "carol"))
        assert_signed(disconnect)
        assert disconnect.payload == {
            "type": "disconnect",
            "namespace": "/",
            "socket": {"id": sid, "user": "carol"},
            "reason": "client namespace disconnect",
        }
    # Closing the transport afterwards reports nothing more for that socket.
    await asyncio.sleep(0.2)
    assert len(hook.matching(from_socket("disconnect", sid, "carol"))) == 1


async def test_python_client_disconnect_over_polling(
    gw: Gateway, hook: WebhookReceiver, clients: list[HookClient]
) -> None:
    # (Over WebSocket, python-socketio closes the socket without waiting for its queued
    # DISCONNECT packet, so the reason there may be "transport close"; polling sends it.)
    client = await connected(clients, gw, "frank", transport="polling")
    sid = client.id
    await client.close()
    disconnect = (await hook.wait(from_socket("disconnect", sid, "frank"))).payload
    assert disconnect["socket"] == {"id": sid, "user": "frank"}
    assert disconnect["reason"] == "client namespace disconnect"


async def test_server_disconnect_reason(
    gw: Gateway, hook: WebhookReceiver, clients: list[HookClient]
) -> None:
    client = await connected(clients, gw, "dave")
    sid = client.id
    r = gw.api("POST", "/v1/disconnect", json={"sockets": [sid]})
    assert r.status_code == 200
    disconnect = (await hook.wait(from_socket("disconnect", sid, "dave"))).payload
    assert disconnect["socket"] == {"id": sid, "user": "dave"}
    assert disconnect["reason"] == "server namespace disconnect"


async def test_transport_close_reason(gw: Gateway, hook: WebhookReceiver) -> None:
    async with raw_socket(gw, gw.token("erin")) as (_ws, sid):
        pass  # the connection goes away without a Socket.IO DISCONNECT
    disconnect = (await hook.wait(from_socket("disconnect", sid, "erin"))).payload
    assert disconnect["socket"] == {"id": sid, "user": "erin"}
    assert disconnect["reason"] == "transport close"


# ---------------------------------------------------------------- failing webhooks


FAILURES = {
    # mode: (error code the client's ack carries, words in its message)
    "status-500": ("webhook_status", "500"),
    "bad-reply": ("webhook_bad_reply", ""),
    "slow": ("webhook_timeout", "0.5"),
    "down": ("webhook_unreachable", ""),
}


def failing(mode: str) -> Callable[[Received], Reply]:
    """Fail ``doomed`` events in the given way; answer every other request at once."""

    def respond(request: Received) -> Reply:
        payload = request.payload
        if payload.get("event") != "doomed":
            return Reply(body={"ack": ["fine", *payload.get("args", [])]})
        if mode == "status-500":
            return Reply(status=500, body={"detail": "boom"})
        if mode == "bad-reply":
            return Reply(body=b"<html>not json</html>")
        return Reply(delay=3.0)  # slow: well past --webhook-timeout 0.5

    return respond


@pytest.mark.parametrize("mode", list(FAILURES))
async def test_failing_webhook_acks_an_error_and_stalls_nobody(
    start_gateway: Callable[..., Gateway],
    own_hook: WebhookReceiver,
    clients: list[HookClient],
    mode: str,
) -> None:
    code, words = FAILURES[mode]
    own_hook.respond = failing(mode)
    # "down": a port nothing listens on (connection refused).
    url = f"http://127.0.0.1:{free_port()}/hook" if mode == "down" else own_hook.url
    gw = hooked(start_gateway, url, "--webhook-timeout", "0.5")
    doomed = await connected(clients, gw, "doomed")
    bystander = await connected(clients, gw, "bystander", transport="polling")
    loop = asyncio.get_running_loop()

    # 1. The doomed socket fires several acked events at the failing webhook.
    started = loop.time()

    async def doomed_call(i: int) -> tuple[list[Any], float]:
        ack = await doomed.call("doomed", i, timeout=WAIT)
        return ack, loop.time() - started

    pending = [asyncio.ensure_future(doomed_call(i)) for i in range(5)]
    if mode != "down":
        # One socket has at most --webhook-per-socket (default 4) calls running; the
        # fifth waits in that socket's own queue.
        await own_hook.wait(of_type("event", event="doomed"), count=4)

    # 2. Meanwhile another socket gets emits and acks, each promptly: well within the
    #    0.5 s a wait on the failing webhook would cost.
    async with httpx.AsyncClient(
        base_url=gw.url, timeout=WAIT, headers={"Authorization": f"Bearer {gw.api_key}"}
    ) as api:
        trips = []
        for i in range(5):
            t0 = loop.time()
            r = await api.post(
                "/v1/emit", json={"event": "tick", "data": i, "rooms": ["user:bystander"]}
            )
            assert r.status_code == 200
            assert await bystander.wait_event("tick", count=i + 1) == [i]
            ack = await bystander.call("quick", i)
            if mode == "down":
                assert ack[0]["error"]["code"] == "webhook_unreachable"
            else:
                assert ack == ["fine", i]
            trips.append(loop.time() - t0)
    bystander_done = loop.time() - started

    # 3. The doomed socket's acks carry the error, once each.
    results = await asyncio.gather(*pending)
    for ack, _ in results:
        assert len(ack) == 1, ack
        error = ack[0]["error"]
        assert set(error) == {"code", "message"}
        assert error["code"] == code, error
        assert words in error["message"] and "/hook" not in error["message"], error
        assert SECRET not in error["message"]
    arrivals = sorted(at for _, at in results)

    assert max(trips) < 0.4, f"bystander round trips took {[round(t, 3) for t in trips]}"
    assert arrivals[-1] < 2.0, arrivals
    if mode == "slow":
        # The bystander finished while the slow calls were still waiting on the webhook,
        # and those gave up at --webhook-timeout, not at the webhook's own pace (3 s).
        assert bystander_done < arrivals[0], (bystander_done, arrivals)
        assert arrivals[0] >= 0.45, arrivals

    metrics = gw.api("GET", "/metrics").text
    failures = re.search(r"^siogate_webhook_failures_total (\S+)$", metrics, re.M)
    assert failures and float(failures.group(1)) >= 5, metrics
    if mode == "slow":
        timeouts = re.search(r"^siogate_webhook_timeouts_total (\S+)$", metrics, re.M)
        assert timeouts and float(timeouts.group(1)) >= 5


async def test_slow_webhook_does_not_delay_connects(
    start_gateway: Callable[..., Gateway], own_hook: WebhookReceiver, clients: list[HookClient]
) -> None:
    # Every webhook call hangs, connect notifications included.
    own_hook.respond = lambda request: Reply(delay=3.0)
    gw = hooked(start_gateway, own_hook.url, "--webhook-timeout", "0.5")
    started = time.monotonic()
    await asyncio.gather(*(connected(clients, gw, f"c{i}") for i in range(10)))
    assert time.monotonic() - started < 1.0
    await own_hook.wait(of_type("connect"), count=10)


async def test_one_flooding_socket_cannot_take_every_webhook_slot(
    start_gateway: Callable[..., Gateway], own_hook: WebhookReceiver, clients: list[HookClient]
) -> None:
    # Two slots in all, one per socket: the flooder's hanging calls hold one slot and
    # queue the rest behind it; the other socket's call gets the second slot at once.
    own_hook.respond = failing("slow")
    gw = hooked(
        start_gateway, own_hook.url, "--webhook-timeout", "2",
        "--webhook-concurrency", "2", "--webhook-per-socket", "1",
    )  # fmt: skip
    flooder = await connected(clients, gw, "flooder")
    other = await connected(clients, gw, "other")
    pending = [asyncio.ensure_future(flooder.call("doomed", i, timeout=WAIT)) for i in range(6)]
    await own_hook.wait(of_type("event", event="doomed"), count=1)
    started = time.monotonic()
    assert await other.call("quick", 1) == ["fine", 1]
    assert time.monotonic() - started < 0.5
    # The flooder's events were called one at a time, in order.
    doomed = [r.payload["args"][0] for r in own_hook.requests if r.payload.get("event") == "doomed"]
    assert doomed == [0]
    for future in pending:
        future.cancel()


async def test_webhook_lane_is_per_connection_not_per_namespace(
    start_gateway: Callable[..., Gateway], own_hook: WebhookReceiver
) -> None:
    # One call at a time per connection: a client that opens four namespaces still has
    # one webhook call running, not four (the old lanes were keyed by socket id).
    def respond(request: Received) -> Reply:
        payload = request.payload
        if payload.get("event") == "held":
            return Reply(delay=1.0, body={"ack": [payload["namespace"]]})
        return Reply()

    own_hook.respond = respond
    gw = hooked(
        start_gateway, own_hook.url, "--webhook-per-socket", "1", "--webhook-concurrency", "16"
    )
    namespaces = [f"/n{i}" for i in range(4)]
    client = Recorder(
        gw.url, auth={"token": gw.token("multi")}, namespaces=namespaces, transports=["websocket"]
    )
    await client.connect()
    try:
        calls = [
            asyncio.ensure_future(client.call("held", namespace=ns, timeout=15))
            for ns in namespaces
        ]
        held = of_type("event", event="held")
        await own_hook.wait(held)
        await asyncio.sleep(0.5)
        assert len(own_hook.matching(held)) == 1
        acks = await asyncio.gather(*calls)
        assert sorted(ack[0] for ack in acks) == namespaces
        # Each call started after the one before it had its (1 s late) reply.
        starts = [r.at for r in own_hook.matching(held)]
        assert all(b - a >= 0.9 for a, b in zip(starts, starts[1:], strict=False)), starts
    finally:
        await client.close()
