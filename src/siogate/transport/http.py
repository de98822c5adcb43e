"""A small HTTP/1.1 server on asyncio and httptools.

The gateway serves its own HTTP so that a WebSocket upgrade hands the raw asyncio
transport to :mod:`siogate.transport.websocket`: broadcasts then write pre-built frame
bytes straight to each transport, with no per-connection task, queue or framing work.
Frameworks (aiohttp, ASGI servers) put a task and a message queue behind every socket,
which is what made per-recipient cost 4x the kernel floor in our measurements
(docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol, cast
from urllib.parse import parse_qs

import httptools

from ..ratelog import RateLimitedLog

logger = logging.getLogger("siogate.http")

# Input is fed to the parser in slices of at most this many bytes (a body of known length
# goes in one piece), so that the head-size and pipelining bounds are checked between
# slices: httptools reports a header only once it is complete, and parses a whole buffer
# of back-to-back requests in one call.
FEED_SLICE = 1024
# A connection closed with unsent bytes that its peer does not read is aborted after this
# many seconds (``transport.close()`` alone would wait for the peer forever).
CLOSE_LINGER = 5.0

# Where a connection is in its current request.
_IDLE, _HEAD, _BODY = range(3)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on what one peer may make the server hold (times in seconds)."""

    max_body: int = 1_000_000
    # Bytes of one request head, counted as they arrive.
    max_head_size: int = 16_384
    max_headers: int = 100
    # From connection open (first request) or message begin until the head is complete.
    head_timeout: float = 10.0
    # From the end of the head until the end of the body.
    body_timeout: float = 30.0
    # A keep-alive connection with no request in progress; also how long a response may
    # wait for a peer that does not read.
    idle_timeout: float = 75.0
    # Requests parsed and waiting behind the one being answered before reading stops.
    max_pipelined: int = 8
    max_connections: int = 10_000
    # Open connections from one peer address (0: no cap).
    max_connections_per_ip: int = 1_000


@dataclass(slots=True)
class HttpStats:
    """Counters read by ``/metrics``."""

    # New connections closed at once: over ``max_connections`` / ``max_connections_per_ip``.
    refused_total: int = 0
    refused_per_ip: int = 0
    # Requests answered 408 (head or body too slow) and 431 (head too large).
    timeouts: int = 0
    heads_too_large: int = 0
    # Connections ended by an unexpected exception (a bug), 500s included.
    errors: int = 0


class HttpServerState:
    """What every connection of one listener shares."""

    __slots__ = ("limits", "connections", "per_ip", "stats", "log")

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        self.connections: set[HttpConnection] = set()
        # Peer address -> open connections from it.
        self.per_ip: dict[str, int] = {}
        self.stats = HttpStats()
        self.log = RateLimitedLog(logger)


@dataclass(slots=True)
class Request:
    """One parsed HTTP request."""

    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes = b""
    # Filled by the server: the connection the request arrived on.
    connection: HttpConnection | None = field(default=None, repr=False)

    _query: dict[str, list[str]] | None = field(default=None, repr=False)

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self.query_string, keep_blank_values=True)
        return self._query

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    close: bool = False


class UpgradedProtocol(Protocol):
    """What takes over a connection after ``101 Switching Protocols``."""

    def data_received(self, data: bytes) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


RequestHandler = Callable[[Request], Awaitable[Response]]
# Returns the protocol that takes over, or a Response to refuse the upgrade.
UpgradeHandler = Callable[[Request, asyncio.Transport], "UpgradedProtocol | Response"]


def render_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_body(code: str, message: str) -> bytes:
    return f'{{"error":{{"code":"{code}","message":"{message}"}}}}'.encode()


class HttpConnection(asyncio.Protocol):
    """One client TCP connection: HTTP/1.1 keep-alive, then maybe a WebSocket."""

    # Slots, and parser state dropped after an upgrade: an idle WebSocket then costs
    # this object and its WebSocketConnection, nothing more.
    __slots__ = (
        "_handler",
        "_upgrade",
        "_state",
        "_limits",
        "transport",
        "_ip",
        "_parser",
        "_pending",
        "_phase",
        "_first",
        "_head_bytes",
        "_head_done",
        "_url",
        "_headers",
        "_header_bytes",
        "_header_lines",
        "_body",
        "_body_size",
        "_body_left",
        "_refused",
        "_queue",
        "_task",
        "_upgraded",
        "_timer",
        "_reading_paused",
        "_write_paused",
        "_writable",
    )

    def __init__(
        self, handler: RequestHandler, upgrade: UpgradeHandler, state: HttpServerState
    ) -> None:
        self._handler = handler
        self._upgrade = upgrade
        self._state = state
        self._limits = state.limits
        self.transport: asyncio.Transport | None = None
        # The peer address counted in state.per_ip (None: not counted, i.e. refused).
        self._ip: str | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        # Bytes received but not fed to the parser while reading is paused.
        self._pending = b""
        self._phase = _IDLE
        self._first = True
        # Bytes fed while the current head is incomplete, and whether one completed
        # during the slice being fed.
        self._head_bytes = 0
        self._head_done = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._header_lines = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._body_left = 0
        self._refused = False
        # A short list: bounded by max_pipelined (plus what one feed slice holds).
        self._queue: list[tuple[Request, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._upgraded: UpgradedProtocol | None = None
        # One timer at a time: head, body, keep-alive idle or close linger.
        self._timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._write_paused = False
        # Set while the transport's buffer is over its high-water mark.
        self._writable: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        state, limits = self._state, self._limits
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if len(state.connections) >= limits.max_connections:
            state.stats.refused_total += 1
            state.log.warning(
                "cap:total",
                "refusing connections: %d open, the --max-connections cap",
                limits.max_connections,
            )
            self._refuse_connection()
            return
        cap = limits.max_connections_per_ip
        if cap and state.per_ip.get(ip, 0) >= cap:
            state.stats.refused_per_ip += 1
            # Behind a proxy every client has its address: say which flag to raise.
            state.log.warning(
                "cap:per_ip",
                "refusing connections from %s: %d open, the --max-connections-per-ip cap",
                ip,
                cap,
            )
            self._refuse_connection()
            return
        self._ip = ip
        state.per_ip[ip] = state.per_ip.get(ip, 0) + 1
        state.connections.add(self)
        # The first request's head is timed from the connection's opening: a peer that
        # connects and sends nothing holds a descriptor for head_timeout at most.
        self._arm(limits.head_timeout, self._on_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        state = self._state
        state.connections.discard(self)
        ip, self._ip = self._ip, None
        if ip is not None:
            left = state.per_ip.get(ip, 1) - 1
            if left > 0:
                state.per_ip[ip] = left
            else:
                state.per_ip.pop(ip, None)
        self._disarm()
        self._wake_writer()
        self._pending = b""
        upgraded = self._upgraded
        if upgraded is not None:
            upgraded.connection_lost(exc)
            return
        if self._task is not None:
            self._task.cancel()
        self._queue.clear()
        self._parser = None

    def pause_writing(self) -> None:
        if self._upgraded is not None:
            self._upgraded.pause_writing()
            return
        # The peer does not read its responses: stop answering and stop reading until
        # it does, so that neither responses nor parsed requests pile up here.
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        if self._upgraded is not None:
            self._upgraded.resume_writing()
            return
        self._write_paused = False
        self._wake_writer()
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        upgraded = self._upgraded
        if upgraded is not None:
            try:
                upgraded.data_received(data)
            except Exception as exc:
                self._unexpected(exc, "upgraded")
            return
        if self._parser is None:
            return
        self._pending = self._pending + data if self._pending else data
        self._feed()

    # Parsing

    def _feed(self) -> None:
        """Feed pending input to the parser, slice by slice, while the bounds allow."""
        data, self._pending = self._pending, b""
        view = memoryview(data)
        limits = self._limits
        pos, end = 0, len(data)
        try:
            while pos < end:
                parser = self._parser
                if parser is None:
                    return
                if self._write_paused or len(self._queue) >= limits.max_pipelined:
                    self._pending = data[pos:]
                    self._update_reading()
                    return
                size = FEED_SLICE
                if self._phase == _BODY and self._body_left > size:
                    size = self._body_left
                chunk = view[pos : pos + size]
                self._head_done = False
                try:
                    parser.feed_data(chunk)
                except httptools.HttpParserUpgrade as exc:
                    offset = int(exc.args[0]) if exc.args else len(chunk)
                    self._do_upgrade(data[pos + offset :])
                    return
                pos += len(chunk)
                if self._phase != _BODY and not self._head_done and self._parser is not None:
                    # Counted here, not in the header callbacks: httptools reports a
                    # header only once it has buffered all of it.
                    self._head_bytes += len(chunk)
                    if self._head_bytes > limits.max_head_size:
                        self._head_too_large()
                        return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if cause is None or isinstance(cause, httptools.HttpParserError):
                self._fail(400, "bad_request", "malformed HTTP request")
            else:
                self._unexpected(cause, "parser callback")
        except httptools.HttpParserError:
            self._fail(400, "bad_request", "malformed HTTP request")
        except Exception as exc:
            self._unexpected(exc, "parser")

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._parser is None:  # failed earlier in this buffer
            return
        self._phase = _HEAD
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._header_lines = 0
        self._body = []
        self._body_size = 0
        self._body_left = 0
        self._refused = False
        if self._first:
            # Timed from the connection's opening (armed in connection_made).
            self._first = False
        else:
            self._arm(self._limits.head_timeout, self._on_timeout)

    def on_url(self, url: bytes) -> None:
        if self._parser is None:  # failed earlier in this buffer
            return
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > self._limits.max_head_size:
            self._head_too_large()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._parser is None:  # failed earlier in this buffer
            return
        limits = self._limits
        self._header_bytes += len(name) + len(value)
        self._header_lines += 1
        if self._header_bytes > limits.max_head_size or self._header_lines > limits.max_headers:
            self._head_too_large()
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        if self._parser is None:  # failed earlier in this buffer
            return
        self._phase = _BODY
        self._head_done = True
        self._head_bytes = 0
        self._first = False
        self._arm(self._limits.body_timeout, self._on_timeout)
        length = self._headers.get("content-length")
        if length is not None and length.isascii() and length.isdigit():
            self._body_left = int(length)
            if self._body_left > self._limits.max_body:
                self._refuse_body()

    def on_body(self, body: bytes) -> None:
        if self._parser is None:  # failed earlier in this buffer
            return
        self._body_left -= len(body)
        if self._refused:
            return
        self._body_size += len(body)
        if self._body_size > self._limits.max_body:
            self._refuse_body()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._phase = _IDLE
        self._head_done = True
        self._head_bytes = 0
        self._disarm()
        parser = self._parser
        if self._refused or parser is None or parser.should_upgrade():
            return
        request = self._make_request()
        request.body = b"".join(self._body)
        self._body = []
        self._queue.append((request, bool(parser.should_keep_alive())))
        self._update_reading()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._serve())

    # Request handling

    def _make_request(self) -> Request:
        parsed = httptools.parse_url(self._url)
        # Kept percent-encoded: routes decode each segment, so "%2F" stays inside one.
        path = parsed.path.decode("latin-1") if parsed.path else "/"
        query = parsed.query.decode("latin-1") if parsed.query else ""
        parser = self._parser
        method = parser.get_method().decode("ascii") if parser is not None else "GET"
        return Request(method, path, query, self._headers, connection=self)

    async def _serve(self) -> None:
        try:
            while self._queue:
                if self._write_paused and not await self._wait_writable():
                    return
                request, keep_alive = self._queue.pop(0)
                self._update_reading()
                try:
                    response = await self._handler(request)
                except Exception as exc:
                    self._state.stats.errors += 1
                    self._state.log.error(
                        "handler",
                        "unhandled error in %s %.200s",
                        request.method,
                        request.path,
                        exc_info=exc,
                    )
                    response = Response(500, error_body("internal", "internal error"))
                self.write_response(
                    response,
                    keep_alive=keep_alive and not response.close,
                    head=request.method == "HEAD",
                )
                if self.transport is None or self.transport.is_closing():
                    return
        finally:
            self._task = None
            if not self._queue and self._phase == _IDLE and self._parser is not None:
                self._arm(self._limits.idle_timeout, self._on_idle)

    async def _wait_writable(self) -> bool:
        """Wait until the peer reads again; False when it does not within idle_timeout."""
        waiter = self._writable
        if waiter is None or waiter.done():
            waiter = self._writable = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(self._limits.idle_timeout):
                await waiter
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()
            return False
        return self.transport is not None and not self.transport.is_closing()

    def _wake_writer(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _update_reading(self) -> None:
        """Read only while the peer reads its responses and few requests wait."""
        transport = self.transport
        if transport is None or self._parser is None or transport.is_closing():
            return
        pause = self._write_paused or len(self._queue) >= self._limits.max_pipelined
        if pause and not self._reading_paused:
            transport.pause_reading()
            self._reading_paused = True
            # Our own pause must not count against the peer's head or body time.
            if self._phase != _IDLE:
                self._disarm()
        elif not pause and self._reading_paused:
            transport.resume_reading()
            self._reading_paused = False
            if self._phase != _IDLE:
                timeout = self._limits.head_timeout
                if self._phase == _BODY:
                    timeout = self._limits.body_timeout
                self._arm(timeout, self._on_timeout)
            if self._pending:
                # Not from inside a parser callback: _feed returns before this can
                # happen there (the queue only grows while parsing).
                asyncio.get_running_loop().call_soon(self._feed_pending)

    def _feed_pending(self) -> None:
        if self._pending and not self._reading_paused and self._parser is not None:
            self._feed()

    def write_response(
        self, response: Response, *, keep_alive: bool = True, head: bool = False
    ) -> None:
        """Write ``response``; ``head``: the request was HEAD (headers only)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            *response.headers,
        ]
        if not keep_alive:
            headers.append(("connection", "close"))
        data = render_head(response.status, headers)
        transport.write(data if head else data + response.body)
        if not keep_alive:
            self._close()

    def _refuse_body(self) -> None:
        self._refused = True
        self._fail(
            413,
            "payload_too_large",
            f"request body exceeds the limit of {self._limits.max_body} bytes",
        )

    def _head_too_large(self) -> None:
        self._state.stats.heads_too_large += 1
        self._fail(431, "header_too_large", "request head too large")

    def _on_timeout(self) -> None:
        self._timer = None
        self._state.stats.timeouts += 1
        if self._phase == _IDLE and self._head_bytes == 0:
            # Nothing of a request arrived (a fresh connection that stayed silent).
            self._close()
            return
        self._fail(408, "request_timeout", "request not received in time")

    def _fail(self, status: int, code: str, message: str) -> None:
        """Answer a request that cannot be parsed or accepted, then close."""
        self._queue.clear()
        self._pending = b""
        if self._task is not None:
            self._task.cancel()
        self.write_response(Response(status, error_body(code, message)), keep_alive=False)
        # Nothing more is parsed on this connection (the rest of the input is dropped).
        self._parser = None

    def _unexpected(self, exc: BaseException, where: str) -> None:
        """A bug met by this connection's input: end this connection only."""
        self._state.stats.errors += 1
        self._state.log.error(
            f"{where}:{type(exc).__name__}",
            "unexpected error in HTTP %s; connection closed",
            where,
            exc_info=exc,
        )
        if self._upgraded is not None:
            if self.transport is not None:
                self.transport.abort()
            return
        self._fail(400, "bad_request", "request could not be processed")

    def _refuse_connection(self) -> None:
        """Over a connection cap: a short 503, written at once, then close."""
        self._parser = None
        body = error_body("too_many_connections", "too many connections")
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("retry-after", "1"),
            ("connection", "close"),
        ]
        transport = self.transport
        if transport is not None:
            transport.write(render_head(503, headers) + body)
            self._close()

    def _do_upgrade(self, rest: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        if self._task is not None or self._queue:
            # Requests still being answered would write HTTP into the new protocol.
            self._fail(400, "bad_request", "upgrade pipelined behind other requests")
            return
        self._disarm()
        request = self._make_request()
        result = self._upgrade(request, transport)
        if isinstance(result, Response):
            self.write_response(result, keep_alive=False)
            self._parser = None
            return
        self._upgraded = result
        self._parser = None
        self._headers = {}
        self._body = []
        self._queue.clear()
        if rest:
            result.data_received(rest)

    # Timers: one at a time (head, body, keep-alive idle, or the close linger).

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_idle(self) -> None:
        self._timer = None
        if self._task is None and self._upgraded is None:
            self._close()

    def _close(self) -> None:
        """Close after pending writes, but abort when the peer does not take them."""
        transport = self.transport
        if transport is None:
            return
        self._parser = None
        if not transport.is_closing():
            transport.close()
        if transport.get_write_buffer_size():
            self._arm(CLOSE_LINGER, transport.abort)
        else:
            self._disarm()

    def close(self) -> None:
        if self._upgraded is not None:
            if self.transport is not None:
                self.transport.close()
            return
        self._close()
