"""WebhookDispatcher against a real HTTP/1.1 receiver on a loopback port.

The receiver is a small asyncio server written here: each test gives it a
handler (an async function from the request to the reply), the way httpx's
MockTransport takes one, but the bytes really cross a socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from siogate._version import __version__
from siogate.errors import ConfigError, WebhookError
from siogate.webhooks import (
    LATENCY_BUCKETS,
    WebhookDispatcher,
    WebhookSettings,
    WebhookStats,
    WebhookVerificationError,
    verify_request,
)

SECRET = "whsec-integration-0123456789"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False


def signed(request: Request, secret: str) -> bool:
    """Whether the library's receiver check accepts ``request`` under ``secret`` now."""
    try:
        verify_request(
            request.body,
            secret,
            request.headers.get("x-siogate-signature"),
            request.headers.get("x-siogate-timestamp"),
            now=time.time(),
        )
    except WebhookVerificationError:
        return False
    return True


def json_reply(value: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(value).encode(), {"Content-Type": "application/json"})


Handler = Callable[[Request], Awaitable[Reply]]
MakeDispatcher = Callable[..., WebhookDispatcher]


async def ack_empty(request: Request) -> Reply:
    return json_reply({"ack": []})


class Receiver:
    """An HTTP/1.1 server with keep-alive, Content-Length and chunked replies."""

    def __init__(self) -> None:
        self.handler: Handler = ack_empty
        self.requests: list[Request] = []
        self.received = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while request := await self._read_request(reader):
                self.requests.append(request)
                self.received.set()
                reply = await self.handler(request)
                writer.write(self._encode(reply))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() cancels handlers still waiting; ending normally keeps
            # asyncio.streams from logging the cancellation as an error.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, asyncio.CancelledError):
                pass

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> Request | None:
        line = await reader.readline()
        if not line:
            return None
        method, path, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        return Request(method, path, headers, body)

    @staticmethod
    def _encode(reply: Reply) -> bytes:
        head = [f"HTTP/1.1 {reply.status} Whatever"]
        head += [f"{name}: {value}" for name, value in reply.headers.items()]
        if reply.chunked:
            head.append("Transfer-Encoding: chunked")
            size = 16
            pieces = [reply.body[i : i + size] for i in range(0, len(reply.body), size)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        else:
            head.append(f"Content-Length: {len(reply.body)}")
            body = reply.body
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def make_dispatcher() -> AsyncIterator[MakeDispatcher]:
    made: list[WebhookDispatcher] = []

    def make(url: str, **settings: Any) -> WebhookDispatcher:
        dispatcher = WebhookDispatcher(WebhookSettings(url=url, secret=SECRET, **settings))
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        await dispatcher.aclose()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


async def expect_error(code: str, call: Awaitable[Any]) -> WebhookError:
    with pytest.raises(WebhookError) as info:
        await call
    assert info.value.code == code, info.value.message
    return info.value


async def wait_until(predicate: Callable[[], bool], limit: float = 2.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


EVENT = {
    "type": "event",
    "namespace": "/",
    "socket": {"id": "s1", "user": "alice"},
    "event": "chat",
    "args": ["hello 👋", {"n": 1}],
}


# Requests and acks


async def test_signed_request_and_ack_round_trip(
    receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    async def handler(request: Request) -> Reply:
        # Verified here independently of siogate.webhooks.sign: the HMAC of
        # "<timestamp>.<body>", with a timestamp of now.
        timestamp = request.headers.get("x-siogate-timestamp", "")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 5:
            return Reply(401)
        signed = timestamp.encode() + b"." + request.body
        expected = hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
        if request.headers.get("x-siogate-signature") != f"sha256={expected}":
            return Reply(401)
        payload = request.json()
        return json_reply({"ack": [payload["args"][0], "seen", 42, None, {"deep": [1]}]})

    receiver.handler = handler
    dispatcher = make_dispatcher(receiver.url)
    ack = await dispatcher.call(EVENT)
    assert ack == ["hello 👋", "seen", 42, None, {"deep": [1]}]

    [request] = receiver.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == f"siogate/{__version__}"
    # Compact, UTF-8, not \u-escaped; and the library's verifier agrees.
    assert request.body == json.dumps(EVENT, separators=(",", ":"), ensure_ascii=False).encode()
    assert "👋".encode() in request.body
    assert signed(request, SECRET)


async def test_wrong_secret_is_detected_by_receiver(receiver: Receiver) -> None:
    async def handler(request: Request) -> Reply:
        ok = signed(request, "receiver-secret")
        return json_reply({"ack": [ok]})

    receiver.handler = handler
    async with WebhookDispatcher(WebhookSettings(url=receiver.url, secret="other")) as dispatcher:
        assert await dispatcher.call(EVENT) == [False]


async def test_lone_surrogate_falls_back_to_ascii_escapes(
    receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    payload = {**EVENT, "args": ["half an emoji: \ud83d", "ok ✓"]}
    dispatcher = make_dispatcher(receiver.url)
    assert await dispatcher.call(payload) == []
    [request] = receiver.requests
    assert request.body.isascii()
    assert json.loads(request.body) == payload
    assert signed(request, SECRET)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b""),
        Reply(204, b""),
        Reply(200, b"  \r\n"),
        json_reply({}),
        json_reply({"ok": True}),
        json_reply({"ack": None}),
        json_reply({"ack": []}, status=201),
    ],
)
async def test_replies_without_ack_give_empty_list(
    receiver: Receiver, make_dispatcher: MakeDispatcher, reply: Reply
) -> None:
    async def handler(request: Request) -> Reply:
        return reply

    receiver.handler = handler
    assert await make_dispatcher(receiver.url).call(EVENT) == []


async def test_connection_is_reused(receiver: Receiver, make_dispatcher: MakeDispatcher) -> None:
    dispatcher = make_dispatcher(receiver.url)
    for _ in range(5):
        await dispatcher.call(EVENT)
    assert len(receiver.requests) == 5
    assert len(receiver._connections) == 1


# Failures


@pytest.mark.parametrize("status", [500, 503, 404, 400, 401, 302, 307])
async def test_non_2xx_is_webhook_status(
    receiver: Receiver, make_dispatcher: MakeDispatcher, status: int
) -> None:
    async def handler(request: Request) -> Reply:
        if request.path == "/elsewhere":
            return json_reply({"ack": ["followed"]})
        return Reply(status, b'{"ack":["ignored"]}', {"Location": "/elsewhere"})

    receiver.handler = handler
    dispatcher = make_dispatcher(receiver.url)
    error = await expect_error("webhook_status", dispatcher.call(EVENT))
    assert str(status) in error.message
    assert [r.path for r in receiver.requests] == ["/hook"]  # redirects not followed
    assert dispatcher.stats.failures == 1


async def test_injected_client_still_does_not_follow_redirects(receiver: Receiver) -> None:
    async def handler(request: Request) -> Reply:
        if request.path == "/elsewhere":
            return json_reply({"ack": ["followed"]})
        return Reply(302, b"", {"Location": "/elsewhere"})

    receiver.handler = handler
    async with httpx.AsyncClient(follow_redirects=True, timeout=60) as client:
        dispatcher = WebhookDispatcher(
            WebhookSettings(url=receiver.url, secret=SECRET), client=client
        )
        await expect_error("webhook_status", dispatcher.call(EVENT))
        await dispatcher.aclose()
        assert not client.is_closed  # not ours to close
    assert [r.path for r in receiver.requests] == ["/hook"]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(200, b"OK"),
        Reply(200, b"<html>hi</html>", {"Content-Type": "text/html"}),
        Reply(200, b'{"ack": [1,'),
        json_reply([1, 2]),
        json_reply("ack"),
        json_reply({"ack": "not a list"}),
        json_reply({"ack": {"0": 1}}),
        Reply(200, b'{"ack": [NaN]}'),
        Reply(200, b'{"ack": [Infinity]}'),
        Reply(200, b"\xff\xfe\x00garbage"),
    ],
)
async def test_bad_reply(receiver: Receiver, make_dispatcher: MakeDispatcher, reply: Reply) -> None:
    async def handler(request: Request) -> Reply:
        return reply

    receiver.handler = handler
    await expect_error("webhook_bad_reply", make_dispatcher(receiver.url).call(EVENT))


@pytest.mark.parametrize("chunked", [False, True])
async def test_reply_too_big(
    receiver: Receiver, make_dispatcher: MakeDispatcher, chunked: bool
) -> None:
    big = json.dumps({"ack": ["x" * 200]}).encode()

    async def handler(request: Request) -> Reply:
        return Reply(200, big, chunked=chunked)

    receiver.handler = handler
    dispatcher = make_dispatcher(receiver.url, max_response_bytes=100)
    error = await expect_error("webhook_bad_reply", dispatcher.call(EVENT))
    assert "100 bytes" in error.message
    # At the limit exactly, the same reply is fine.
    exact = make_dispatcher(receiver.url, max_response_bytes=len(big))
    assert await exact.call(EVENT) == ["x" * 200]


async def test_slow_receiver_times_out(receiver: Receiver, make_dispatcher: MakeDispatcher) -> None:
    never = asyncio.Event()

    async def handler(request: Request) -> Reply:
        await never.wait()
        return Reply()

    receiver.handler = handler
    dispatcher = make_dispatcher(receiver.url, timeout=0.3)
    started = time.perf_counter()
    error = await expect_error("webhook_timeout", dispatcher.call(EVENT))
    elapsed = time.perf_counter() - started
    assert 0.28 <= elapsed < 0.8, elapsed
    assert "0.3s" in error.message
    assert (dispatcher.stats.failures, dispatcher.stats.timeouts) == (1, 1)
    assert dispatcher.in_flight == 0


async def test_trickling_receiver_times_out(make_dispatcher: MakeDispatcher) -> None:
    # Each byte arrives well within httpx's per-read timeout; only the overall
    # deadline stops this.
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await Receiver._read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n")
        try:
            for _ in range(40):
                if reader.at_eof():  # the client gave up
                    break
                writer.write(b" ")
                await writer.drain()
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        dispatcher = make_dispatcher(f"http://127.0.0.1:{port}/", timeout=0.3)
        started = time.perf_counter()
        await expect_error("webhook_timeout", dispatcher.call(EVENT))
        assert time.perf_counter() - started < 0.8
    finally:
        server.close()
        await server.wait_closed()


async def test_closed_port_is_unreachable(make_dispatcher: MakeDispatcher) -> None:
    dispatcher = make_dispatcher(closed_port_url(), timeout=2.0)
    started = time.perf_counter()
    error = await expect_error("webhook_unreachable", dispatcher.call(EVENT))
    assert time.perf_counter() - started < 1.0
    assert "127.0.0.1" not in error.message  # no URL in client-visible messages


async def test_connection_dropped_without_reply_is_unreachable(
    make_dispatcher: MakeDispatcher,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        dispatcher = make_dispatcher(f"http://127.0.0.1:{port}/")
        await expect_error("webhook_unreachable", dispatcher.call(EVENT))
    finally:
        server.close()
        await server.wait_closed()


async def test_unencodable_payload(receiver: Receiver, make_dispatcher: MakeDispatcher) -> None:
    dispatcher = make_dispatcher(receiver.url)
    await expect_error("webhook_bad_payload", dispatcher.call({"args": [b"raw bytes"]}))
    await expect_error("webhook_bad_payload", dispatcher.call({"args": [float("nan")]}))
    assert receiver.requests == []
    assert (dispatcher.stats.calls, dispatcher.stats.failures) == (2, 2)


# Concurrency


async def test_overload_is_refused_immediately(
    receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    gate = asyncio.Event()

    async def handler(request: Request) -> Reply:
        await gate.wait()
        return json_reply({"ack": [request.json()["event"]]})

    receiver.handler = handler
    dispatcher = make_dispatcher(receiver.url, max_in_flight=1, max_queued=1, timeout=3.0)
    first = asyncio.create_task(dispatcher.call({**EVENT, "event": "first"}))
    await wait_until(lambda: len(receiver.requests) == 1)
    second = asyncio.create_task(dispatcher.call({**EVENT, "event": "second"}))
    await wait_until(lambda: dispatcher.queued == 1)
    assert dispatcher.in_flight == 1

    started = time.perf_counter()
    error = await expect_error("webhook_overloaded", dispatcher.call({**EVENT, "event": "third"}))
    assert time.perf_counter() - started < 0.05
    assert "1 running, 1 waiting" in error.message
    assert dispatcher.stats.overloaded == 1

    gate.set()
    assert await first == ["first"]
    assert await second == ["second"]
    assert [r.json()["event"] for r in receiver.requests] == ["first", "second"]
    assert (dispatcher.in_flight, dispatcher.queued) == (0, 0)
    # Capacity is back once the backlog drains.
    assert await dispatcher.call({**EVENT, "event": "fourth"}) == ["fourth"]


async def test_max_queued_zero_refuses_when_all_slots_busy(
    receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    gate = asyncio.Event()

    async def handler(request: Request) -> Reply:
        await gate.wait()
        return Reply()

    receiver.handler = handler
    dispatcher = make_dispatcher(receiver.url, max_in_flight=2, max_queued=0)
    busy = [asyncio.create_task(dispatcher.call(EVENT)) for _ in range(2)]
    await wait_until(lambda: len(receiver.requests) == 2)
    await expect_error("webhook_overloaded", dispatcher.call(EVENT))
    gate.set()
    assert await asyncio.gather(*busy) == [[], []]


async def test_deadline_covers_waiting_for_a_slot(
    receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    gate = asyncio.Event()

    async def handler(request: Request) -> Reply:
        await gate.wait()
        return Reply()

    receiver.handler = handler
    dispatcher = make_dispatcher(receiver.url, max_in_flight=1, timeout=0.3)
    first = asyncio.create_task(dispatcher.call(EVENT))
    await wait_until(lambda: dispatcher.in_flight == 1)
    started = time.perf_counter()
    await expect_error("webhook_timeout", dispatcher.call(EVENT))
    # The slot frees when the first call times out, just before this one's
    # deadline; a deadline that started only at the request would end ~0.6s.
    assert 0.28 <= time.perf_counter() - started < 0.45
    await expect_error("webhook_timeout", first)
    assert (dispatcher.queued, dispatcher.in_flight) == (0, 0)
    assert dispatcher.stats.timeouts == 2


async def test_slow_call_does_not_delay_another(
    receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    gate = asyncio.Event()

    async def handler(request: Request) -> Reply:
        if request.json()["event"] == "slow":
            await gate.wait()
        return json_reply({"ack": [request.json()["event"]]})

    receiver.handler = handler
    dispatcher = make_dispatcher(receiver.url, timeout=3.0)
    slow = asyncio.create_task(dispatcher.call({**EVENT, "event": "slow"}))
    await wait_until(lambda: len(receiver.requests) == 1)

    started = time.perf_counter()
    fast = await dispatcher.call({**EVENT, "event": "fast"})
    elapsed = time.perf_counter() - started
    assert fast == ["fast"]
    assert elapsed < 0.2, elapsed
    assert not slow.done()

    gate.set()
    assert await slow == ["slow"]


# Fire and forget


async def test_notify_delivers_in_background(
    receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    dispatcher = make_dispatcher(receiver.url)
    payload = {**EVENT, "type": "connect"}
    dispatcher.notify(payload)
    payload["type"] = "changed after notify"  # the body was already encoded
    await asyncio.wait_for(receiver.received.wait(), 2.0)
    [request] = receiver.requests
    assert request.json()["type"] == "connect"
    assert signed(request, SECRET)


async def test_notify_failure_is_logged_not_raised(
    make_dispatcher: MakeDispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = make_dispatcher(closed_port_url())
    with caplog.at_level(logging.WARNING, logger="siogate.webhooks"):
        dispatcher.notify(EVENT)
        dispatcher.notify({"args": [b"bytes"]})
        await dispatcher.aclose()
    messages = [r.getMessage() for r in caplog.records if r.name == "siogate.webhooks"]
    assert any("webhook_unreachable" in m for m in messages), messages
    assert any("webhook_bad_payload" in m for m in messages), messages
    assert all(r.levelno == logging.WARNING for r in caplog.records)


async def test_aclose_waits_for_pending_notifications(receiver: Receiver) -> None:
    async def handler(request: Request) -> Reply:
        await asyncio.sleep(0.1)
        return Reply()

    receiver.handler = handler
    dispatcher = WebhookDispatcher(WebhookSettings(url=receiver.url, secret=SECRET))
    for i in range(3):
        dispatcher.notify({**EVENT, "event": f"n{i}"})
    await dispatcher.aclose()
    assert sorted(r.json()["event"] for r in receiver.requests) == ["n0", "n1", "n2"]
    assert dispatcher.stats.calls == 3
    assert dispatcher.stats.failures == 0


async def test_aclose_is_bounded_by_timeout(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    never = asyncio.Event()

    async def handler(request: Request) -> Reply:
        await never.wait()
        return Reply()

    receiver.handler = handler
    dispatcher = WebhookDispatcher(WebhookSettings(url=receiver.url, secret=SECRET, timeout=0.3))
    dispatcher.notify(EVENT)
    await wait_until(lambda: len(receiver.requests) == 1)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="siogate.webhooks"):
        await dispatcher.aclose()
    assert time.perf_counter() - started < 0.8


async def test_closed_dispatcher_refuses_work(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = WebhookDispatcher(WebhookSettings(url=receiver.url, secret=SECRET))
    await dispatcher.aclose()
    await dispatcher.aclose()  # idempotent
    await expect_error("webhook_unreachable", dispatcher.call(EVENT))
    with caplog.at_level(logging.WARNING, logger="siogate.webhooks"):
        dispatcher.notify(EVENT)
    assert "dispatcher is closed" in caplog.text
    assert receiver.requests == []


# Stats and settings


async def test_stats_count_calls_failures_and_latency(
    receiver: Receiver, make_dispatcher: MakeDispatcher
) -> None:
    async def handler(request: Request) -> Reply:
        return Reply(500) if request.json()["event"] == "fail" else Reply()

    receiver.handler = handler
    dispatcher = make_dispatcher(receiver.url)
    for event in ("ok", "ok", "fail"):
        try:
            await dispatcher.call({**EVENT, "event": event})
        except WebhookError:
            pass
    stats = dispatcher.stats
    assert (stats.calls, stats.failures, stats.timeouts, stats.overloaded) == (3, 1, 0, 0)
    assert stats.latency_count == 3
    assert sum(stats.latency_buckets) == 3
    assert 0 < stats.latency_sum_seconds < 3
    assert stats.cumulative_buckets()[-1] == (float("inf"), 3)


def test_latency_buckets_are_inclusive_upper_bounds() -> None:
    stats = WebhookStats()
    for seconds in (0.0, 0.005, 0.0051, 10.0, 10.5):
        stats.observe_latency(seconds)
    assert len(stats.latency_buckets) == len(LATENCY_BUCKETS) + 1
    assert stats.latency_buckets[0] == 2  # 0.0 and 0.005 are <= 0.005
    assert stats.latency_buckets[1] == 1  # 0.0051 <= 0.01
    assert stats.latency_buckets[-2] == 1  # 10.0 <= 10.0
    assert stats.latency_buckets[-1] == 1  # 10.5 only in +Inf
    cumulative = stats.cumulative_buckets()
    assert [le for le, _ in cumulative] == [*LATENCY_BUCKETS, float("inf")]
    assert [n for _, n in cumulative][:2] == [2, 3]
    assert cumulative[-1] == (float("inf"), 5)
    assert stats.latency_sum_seconds == pytest.approx(20.5101)


@pytest.mark.parametrize(
    "overrides",
    [
        {"url": "ftp://example.com/hook"},
        {"url": "not a url"},
        {"url": ""},
        {"secret": ""},
        {"timeout": 0},
        {"timeout": -1},
        {"timeout": float("nan")},
        {"timeout": float("inf")},
        {"max_in_flight": 0},
        {"max_queued": -1},
        {"max_response_bytes": -1},
    ],
)
def test_invalid_settings(overrides: dict[str, Any]) -> None:
    values: dict[str, Any] = {"url": "http://127.0.0.1:9/hook", "secret": SECRET, **overrides}
    with pytest.raises(ConfigError):
        WebhookSettings(**values)


def test_default_settings() -> None:
    settings = WebhookSettings(url="https://example.com/hook", secret=SECRET)
    assert (settings.timeout, settings.max_in_flight, settings.max_queued) == (5.0, 64, 10_000)
    assert settings.max_response_bytes == 1_000_000
    assert SECRET not in repr(settings)
