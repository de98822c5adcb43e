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

logger = logging.getLogger("siogate.http")

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
KEEP_ALIVE_TIMEOUT = 75.0
# Requests parsed ahead of the one being answered before reading pauses.
MAX_PIPELINED = 8


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


class HttpConnection(asyncio.Protocol):
    """One client TCP connection: HTTP/1.1 keep-alive, then maybe a WebSocket."""

    # Slots, and parser state dropped after an upgrade: an idle WebSocket then costs
    # this object and its WebSocketConnection, nothing more.
    __slots__ = (
        "_handler",
        "_upgrade",
        "_max_body",
        "_connections",
        "transport",
        "_parser",
        "_url",
        "_headers",
        "_header_bytes",
        "_header_lines",
        "_body",
        "_body_size",
        "_refused",
        "_queue",
        "_task",
        "_upgraded",
        "_idle",
        "_paused",
    )

    def __init__(
        self,
        handler: RequestHandler,
        upgrade: UpgradeHandler,
        *,
        max_body: int,
        connections: set[HttpConnection],
    ) -> None:
        self._handler = handler
        self._upgrade = upgrade
        self._max_body = max_body
        self._connections = connections
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._header_lines = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._refused = False
        # A short list: pipelining is rare and bounded by MAX_PIPELINED.
        self._queue: list[tuple[Request, bool]] = []
        self._task: asyncio.Task[None] | None = None
        self._upgraded: UpgradedProtocol | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self._connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._cancel_idle()
        if self._upgraded is not None:
            self._upgraded.connection_lost(exc)
            return
        if self._task is not None:
            self._task.cancel()
        self._queue.clear()

    def pause_writing(self) -> None:
        if self._upgraded is not None:
            self._upgraded.pause_writing()

    def resume_writing(self) -> None:
        if self._upgraded is not None:
            self._upgraded.resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._upgraded is not None:
            self._upgraded.data_received(data)
            return
        parser = self._parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = int(exc.args[0]) if exc.args else len(data)
            self._do_upgrade(data[offset:])
        except httptools.HttpParserError:
            self._fail(400, "bad_request", "malformed HTTP request")

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._header_bytes = 0
        self._header_lines = 0
        self._body = []
        self._body_size = 0
        self._refused = False
        self._cancel_idle()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._fail(431, "header_too_large", "request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        self._header_lines += 1
        if self._header_bytes > MAX_HEADER_BYTES or self._header_lines > MAX_HEADERS:
            self._fail(431, "header_too_large", "request head too large")
            return
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self._headers.get(key)
        self._headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._refuse_body()

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_size += len(body)
        if self._body_size > self._max_body:
            self._refuse_body()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        parser = self._parser
        if self._refused or parser is None or parser.should_upgrade():
            return
        request = self._make_request()
        request.body = b"".join(self._body)
        self._body = []
        self._queue.append((request, bool(parser.should_keep_alive())))
        if len(self._queue) > MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
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
                request, keep_alive = self._queue.pop(0)
                try:
                    response = await self._handler(request)
                except Exception:
                    logger.exception("unhandled error in %s %s", request.method, request.path)
                    response = Response(
                        500,
                        b'{"error":{"code":"internal","message":"internal error"}}',
                    )
                self.write_response(response, keep_alive=keep_alive and not response.close)
                if self.transport is None or self.transport.is_closing():
                    return
                if self._paused and len(self._queue) <= MAX_PIPELINED:
                    self.transport.resume_reading()
                    self._paused = False
        finally:
            self._task = None
            if not self._queue:
                self._arm_idle()

    def write_response(self, response: Response, *, keep_alive: bool = True) -> None:
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
        transport.write(render_head(response.status, headers) + response.body)
        if not keep_alive:
            transport.close()

    def _refuse_body(self) -> None:
        self._refused = True
        self._fail(
            413,
            "payload_too_large",
            f"request body exceeds the limit of {self._max_body} bytes",
        )

    def _fail(self, status: int, code: str, message: str) -> None:
        """Answer a request that cannot be parsed or accepted, then close."""
        body = f'{{"error":{{"code":"{code}","message":"{message}"}}}}'.encode()
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()
        self.write_response(Response(status, body), keep_alive=False)

    def _do_upgrade(self, rest: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        request = self._make_request()
        result = self._upgrade(request, transport)
        if isinstance(result, Response):
            self.write_response(result, keep_alive=False)
            return
        self._cancel_idle()
        self._upgraded = result
        self._parser = None
        self._headers = {}
        self._queue.clear()
        if rest:
            result.data_received(rest)

    # Idle keep-alive connections are closed after a while.

    def _arm_idle(self) -> None:
        self._cancel_idle()
        if self._upgraded is None:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(KEEP_ALIVE_TIMEOUT, self._on_idle)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _on_idle(self) -> None:
        self._idle = None
        if self._task is None and self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
