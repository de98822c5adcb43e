"""Cluster mode: answer Engine.IO requests for sessions that another node owns.

Behind a round-robin balancer, the requests of one long-polling client land on any node.
A session id starts with the id of the node that owns it, so a node that receives a
request for someone else's session passes it to the owner (at the URL the owner
advertises in the registry) and relays the answer. A WebSocket upgrade of such a session
is relayed byte for byte once the owner has answered it.

A forwarded request carries ``X-Siogate-Forwarded`` and is never forwarded again, so two
nodes that disagree about an owner cannot bounce a request between them. At most
``MAX_IN_FLIGHT_PER_OWNER`` requests are relayed to one owner at a time (each holds a
connection to it); more are answered ``503`` at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import cast
from urllib.parse import urlsplit

import httptools

from ..errors import ProtocolError
from ..ratelog import RateLimitedLog
from .http import Request, Response

logger = logging.getLogger("siogate.transport")
# Clients pick the session ids that lead here: one line per kind per interval.
_log = RateLimitedLog(logger)

FORWARDED_HEADER = "x-siogate-forwarded"
# Bytes a relayed WebSocket may receive from the client before the owner is connected.
MAX_EARLY_BYTES = 1 << 20
# Seconds to open a connection to the owner node.
CONNECT_TIMEOUT = 2.0
# Idle keep-alive connections kept open to each owner node.
MAX_IDLE_PER_OWNER = 256
# Polling requests relayed to one owner node at once (a long poll holds one for up to a
# ping interval, so this is about that many long-polling clients on the wrong node).
MAX_IN_FLIGHT_PER_OWNER = 1000

_BUSY_BODY = (
    b'{"error":{"code":"forward_overloaded",'
    b'"message":"too many requests relayed to the node that owns this session"}}'
)

# Per-hop headers that describe the client's connection, not the request.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
# Headers of the owner's answer that the client must see.
_PASSED_BACK = ("access-control-allow-origin", "access-control-allow-credentials", "vary")

Resolve = Callable[[str], Awaitable[str | None]]


class Forwarder:
    """Finds the owner of a session and relays requests to it."""

    def __init__(
        self,
        node_id: str,
        resolve: Resolve,
        *,
        timeout: float,
        max_body: int,
        max_in_flight: int = MAX_IN_FLIGHT_PER_OWNER,
    ) -> None:
        self.node_id = node_id
        self._resolve = resolve
        # A long poll may legitimately wait a whole ping interval at the owner.
        self._timeout = timeout
        self._max_body = max_body
        self._max_in_flight = max_in_flight
        # Idle keep-alive connections to each owner, by (host, port).
        self._idle: dict[tuple[str, int], list[_OwnerConnection]] = {}
        # Requests being relayed, by owner node (only owners with some).
        self._in_flight: dict[str, int] = {}
        # Counters for /metrics (refused: answered 503 over max_in_flight; also failures).
        self.requests = 0
        self.websockets = 0
        self.failures = 0
        self.refused = 0

    def owner(self, request: Request) -> str | None:
        """The other node that owns the request's session, if it names one."""
        if FORWARDED_HEADER in request.headers:
            return None
        sid = request.arg("sid")
        size = len(self.node_id)
        if sid is None or len(sid) <= size:
            return None
        node = sid[:size]
        return None if node == self.node_id else node

    async def _address(self, node: str) -> tuple[str, int] | None:
        """(host, port) the owner advertises; None (a failure, counted) when it has none."""
        try:
            base = await self._resolve(node)
        except Exception as exc:
            _log.warning("lookup", "cannot look up node %s: %s", node, exc)
            base = None
        parts = urlsplit(base) if base is not None else None
        if parts is None or parts.scheme != "http" or parts.hostname is None:
            if base is not None:
                _log.warning(
                    "advertised", "node %s advertises %s: only http:// is forwarded to", node, base
                )
            self.failures += 1
            return None
        return parts.hostname, parts.port or 80

    def _head(self, request: Request, headers: Iterable[tuple[str, str]]) -> bytes:
        """The request line and ``headers``, marked as forwarded by this node."""
        lines = [f"{request.method} {request.path}?{request.query_string} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in headers]
        lines.append(f"{FORWARDED_HEADER}: {self.node_id}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def forward(self, request: Request, node: str) -> Response | None:
        """Relay a polling request; None when the owner is unknown or gone."""
        address = await self._address(node)
        if address is None:
            return None
        in_flight = self._in_flight.get(node, 0)
        if in_flight >= self._max_in_flight:
            self.refused += 1
            self.failures += 1
            _log.warning(
                "overloaded",
                "node %s already has %d requests relayed to it: answering 503",
                node,
                in_flight,
            )
            return Response(503, _BUSY_BODY)
        self._in_flight[node] = in_flight + 1
        try:
            return await self._relay(request, node, address)
        finally:
            left = self._in_flight[node] - 1
            if left:
                self._in_flight[node] = left
            else:
                del self._in_flight[node]

    async def _relay(
        self, request: Request, node: str, address: tuple[str, int]
    ) -> Response | None:
        self.requests += 1
        host, port = address
        headers = [(k, v) for k, v in request.headers.items() if k not in _HOP_BY_HOP]
        headers += [("host", f"{host}:{port}"), ("content-length", str(len(request.body)))]
        raw = self._head(request, headers) + request.body
        try:
            async with asyncio.timeout(self._timeout):
                answer = await self._exchange(address, raw)
        except (OSError, TimeoutError, ProtocolError) as exc:
            _log.warning(
                "forward", "forwarding to node %s at %s:%d failed: %r", node, host, port, exc
            )
            self.failures += 1
            return None
        status, headers, body = answer
        passed = [(k, v) for k, v in headers if k in _PASSED_BACK]
        content_type = next((v for k, v in headers if k == "content-type"), "text/plain")
        return Response(status, body, content_type, passed)

    async def _exchange(
        self, address: tuple[str, int], raw: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        idle = self._idle.setdefault(address, [])
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            try:
                answer = await connection.exchange(raw)
            except _NothingReceived:
                # The owner closed this idle connection just as it was reused; it read
                # nothing of the request, so a fresh connection may carry it.
                continue
            self._release(address, connection)
            return answer
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: _OwnerConnection(self._max_body), *address
        )
        try:
            answer = await connection.exchange(raw)
        except _NothingReceived:
            raise ConnectionResetError("the owner closed the connection") from None
        self._release(address, connection)
        return answer

    def _release(self, address: tuple[str, int], connection: _OwnerConnection) -> None:
        idle = self._idle[address]
        if connection.reusable and len(idle) < MAX_IDLE_PER_OWNER:
            idle.append(connection)
        else:
            connection.close()

    def relay_upgrade(
        self, request: Request, transport: asyncio.Transport, node: str
    ) -> WebSocketRelay:
        """Take over an upgrade request and pipe it to the owner node."""
        relay = WebSocketRelay(transport, self._head(request, request.headers.items()))
        relay.task = asyncio.get_running_loop().create_task(self._open_relay(relay, node))
        return relay

    async def _open_relay(self, relay: WebSocketRelay, node: str) -> None:
        address = await self._address(node)
        if address is None:
            relay.refuse()
            return
        self.websockets += 1
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.get_running_loop().create_connection(
                    lambda: _Upstream(relay), *address
                )
        except (OSError, TimeoutError) as exc:
            _log.warning(
                "relay", "relaying a WebSocket to node %s at %s failed: %s", node, address, exc
            )
            self.failures += 1
            relay.refuse()

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class _NothingReceived(Exception):
    """The connection ended before any byte of an answer arrived."""


class _OwnerConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to an owner node, one exchange at a time.

    Written on asyncio and httptools (the parser the server side uses) rather than with
    httpx: measured here, httpx spent about 10 ms of CPU per relayed request with 300
    long polls in flight, which made the relaying node the bottleneck.
    """

    def __init__(self, max_body: int) -> None:
        self._max_body = max_body
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self._answer: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]] | None = None
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._received = False

    async def exchange(self, raw: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self.transport is not None and self._answer is None
        self._answer = asyncio.get_running_loop().create_future()
        self._headers, self._body, self._size, self._received = [], [], 0, False
        self.reusable = False
        self.transport.write(raw)
        try:
            return await self._answer
        except BaseException:
            # Cancelled (the client went away) or failed: this connection's state is
            # unknown, and closing it tells the owner the poll is gone.
            self.close()
            raise
        finally:
            self._answer = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolError(f"bad answer from the owner: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            if self._received:
                self._answer.set_exception(ConnectionResetError("owner closed mid-answer"))
            else:
                self._answer.set_exception(_NothingReceived())

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._fail(ProtocolError("answer from the owner is too large"))
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._answer is None or self._answer.done():
            return
        self.reusable = bool(self._parser.should_keep_alive())
        status = self._parser.get_status_code()
        self._answer.set_result((status, self._headers, b"".join(self._body)))


class WebSocketRelay:
    """The client side of a relayed WebSocket: bytes both ways, with back-pressure."""

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self.client = transport
        self.upstream: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self._early: list[bytes] = [head]
        self._early_bytes = 0
        self._closed = False

    def attach(self, upstream: asyncio.Transport) -> None:
        if self._closed:
            upstream.close()
            return
        self.upstream = upstream
        upstream.write(b"".join(self._early))
        self._early = []

    def refuse(self) -> None:
        """The owner cannot be reached: answer as for an unknown session."""
        if not self._closed and not self.client.is_closing():
            body = b'{"code":1,"message":"Session ID unknown"}'
            self.client.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n"
                b"connection: close\r\n\r\n" + body
            )
            self.client.close()
        self._closed = True

    # The client connection (UpgradedProtocol)

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None:
            self.upstream.write(data)
            return
        self._early_bytes += len(data)
        if self._early_bytes > MAX_EARLY_BYTES:
            self.refuse()
            return
        self._early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self.upstream is not None:
            self.upstream.close()
        elif self.task is not None:
            self.task.cancel()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.resume_reading()


class _Upstream(asyncio.Protocol):
    """The owner side of a relayed WebSocket."""

    def __init__(self, relay: WebSocketRelay) -> None:
        self.relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not a subclass of asyncio.Transport).
        self.relay.attach(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.relay.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.client.close()

    def pause_writing(self) -> None:
        self.relay.client.pause_reading()

    def resume_writing(self) -> None:
        self.relay.client.resume_reading()
