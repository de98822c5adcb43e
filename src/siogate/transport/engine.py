"""Engine.IO v4 over HTTP long-polling and WebSocket, including the upgrade between them.

Each client connection is a :class:`Client`: it owns a sans-I/O
:class:`~siogate.protocol.session.Session`, the transport currently in use and the ping
timer, and hands session events to the node.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ProtocolError
from ..hub import Outgoing
from ..node import Node
from ..protocol import engineio
from ..protocol.engineio import EncodedPacket
from ..protocol.session import (
    REASON_SERVER_SHUTDOWN,
    REASON_SLOW_CONSUMER,
    REASON_TRANSPORT_CLOSE,
    REASON_TRANSPORT_ERROR,
    Session,
    State,
)
from ..protocol.websocket import accept_key, valid_key
from ..ratelog import RateLimitedLog
from ..types import new_socket_id
from .forward import Forwarder
from .http import Request, Response, UpgradedProtocol
from .websocket import CLOSE_INTERNAL_ERROR, WebSocketConnection, frames

logger = logging.getLogger("siogate.engine")
# Every line a peer can cause goes through this (one per kind per interval).
_log = RateLimitedLog(logger)

REASON_CONNECT_TIMEOUT = "connect timeout"

# Packets in one long-polling response. The python-engineio client refuses payloads of
# more than 16 packets (and drops them whole); the rest waits for the next poll.
MAX_PACKETS_PER_POLL = 16

# Packets of one long-polling POST handled per loop turn (see EngineServer._post).
PACKETS_PER_TURN = 256

# Engine.IO error codes (the values the reference server sends).
UNKNOWN_TRANSPORT = 0
UNKNOWN_SID = 1
BAD_HANDSHAKE_METHOD = 2
BAD_REQUEST = 3
FORBIDDEN = 4
UNSUPPORTED_PROTOCOL_VERSION = 5

_ERROR_MESSAGES = {
    UNKNOWN_TRANSPORT: "Transport unknown",
    UNKNOWN_SID: "Session ID unknown",
    BAD_HANDSHAKE_METHOD: "Bad handshake method",
    BAD_REQUEST: "Bad request",
    FORBIDDEN: "Forbidden",
    UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Engine.IO settings (times in milliseconds, sizes in bytes)."""

    ping_interval: int = 25_000
    ping_timeout: int = 20_000
    # A session with no namespace joined for this long is closed (checked at each ping).
    connect_timeout: int = 45_000
    max_payload: int = 1_000_000
    # Outgoing bytes a client may have waiting before it is disconnected at once.
    max_buffer: int = 1_000_000
    # A client whose writes have not drained (WebSocket) or whose queue has not been
    # taken (long-polling) for this long is disconnected as a slow consumer.
    slow_timeout: int = 10_000
    # Binary attachments in one Socket.IO packet.
    max_attachments: int = 10
    cors_origins: tuple[str, ...] = ()


class Client:
    """One Engine.IO session and its current transport (implements ``hub.Link``)."""

    __slots__ = (
        "engine",
        "session",
        "ws",
        "probe",
        "probed",
        "queue",
        "queued_bytes",
        "queued_since",
        "waiter",
        "timer",
        "ping_sent",
        "alone_since",
        "posting",
    )

    def __init__(self, engine: EngineServer, session: Session) -> None:
        self.engine = engine
        self.session = session
        # The WebSocket in use; None while on long-polling.
        self.ws: WebSocketConnection | None = None
        # A WebSocket being probed for an upgrade, and whether its probe succeeded.
        self.probe: WebSocketConnection | None = None
        self.probed = False
        # Long-polling: packets waiting for the next GET, and the GET waiting for packets.
        self.queue: list[EncodedPacket] = []
        self.queued_bytes = 0
        # Loop time since which the queue has held packets that no poll has taken.
        self.queued_since: float | None = None
        self.waiter: asyncio.Future[None] | None = None
        # A long-polling POST is being handled (its packets take several loop turns).
        self.posting = False
        self.timer: asyncio.TimerHandle | None = None
        self.ping_sent = 0.0
        # When the session last had no namespace joined (None: it has one).
        self.alone_since: float | None = None

    # hub.Link

    def flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            self._write(out)
        if self.session.state is State.CLOSED:
            self._teardown()

    def write_broadcast(self, outgoing: Outgoing) -> None:
        if self.session.state is not State.OPEN:
            return
        ws = self.ws
        if ws is not None:
            data = outgoing.ws_bytes
            if data is None:
                data = outgoing.ws_bytes = frames(outgoing.messages)
            ws.transport.write(data)
            if ws.transport.get_write_buffer_size() > self.engine.options.max_buffer:
                self._slow_consumer("outgoing buffer over --max-buffer")
        else:
            self._enqueue(outgoing.messages)

    def close(self, reason: str) -> None:
        if self.session.state is State.OPEN:
            self.session.close(reason)
            self._process()

    # Writing

    def _write(self, messages: list[EncodedPacket]) -> None:
        ws = self.ws
        if ws is not None:
            ws.send(messages)
            if ws.buffered() > self.engine.options.max_buffer:
                self._slow_consumer("outgoing buffer over --max-buffer")
        else:
            self._enqueue(messages)

    def _enqueue(self, messages: list[EncodedPacket]) -> None:
        self.queue.extend(messages)
        self.queued_bytes += sum(len(m) for m in messages)
        if self.queued_bytes > self.engine.options.max_buffer:
            self._slow_consumer("long-polling queue over --max-buffer")
            return
        if self.waiter is None and self.session.state is State.OPEN:
            now = asyncio.get_running_loop().time()
            if self.queued_since is None:
                self.queued_since = now
            elif now - self.queued_since > self.engine.slow_timeout:
                self._slow_consumer("long-polling queue not taken for --slow-timeout")
                return
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _slow_consumer(self, why: str) -> None:
        if self.session.state is not State.OPEN:
            return
        self.engine.node.metrics.slow_consumer_disconnects_total += 1
        _log.warning("slow consumer", "closing %s (slow consumer): %s", self.session.sid, why)
        ws, self.ws = self.ws, None
        if ws is not None:
            # Its buffer is not draining: drop it now rather than wait for a flush.
            ws.abort()
        self.lose(REASON_SLOW_CONSUMER)

    def take_payload(self) -> bytes:
        """Packets for one polling response: at least one, at most ``MAX_PACKETS_PER_POLL``
        and (unless one packet alone is larger) ``max_payload`` bytes."""
        limit = self.engine.options.max_payload
        taken: list[EncodedPacket] = []
        size = 0
        for packet in self.queue:
            cost = len(packet) + 1 if isinstance(packet, str) else len(packet) * 4 // 3 + 6
            if taken and (size + cost > limit or len(taken) == MAX_PACKETS_PER_POLL):
                break
            taken.append(packet)
            size += cost
        del self.queue[: len(taken)]
        self.queued_bytes = sum(len(m) for m in self.queue)
        # A client that keeps polling is not slow, even if the queue refills meanwhile.
        self.queued_since = asyncio.get_running_loop().time() if self.queue else None
        return engineio.encode_payload(taken)

    # Reading

    def receive(self, message: str | bytes) -> None:
        self.session.receive(message)
        self._process()

    def receive_packets(self, packets: list[engineio.Packet]) -> None:
        self.session.receive_packets(packets)
        self._process()

    def lose(self, reason: str) -> None:
        """The transport is gone or misbehaved: end the session with ``reason``."""
        self.session.receive_eof(reason)
        self._process()

    def _process(self) -> None:
        events = self.session.events_received()
        if events:
            self.engine.node.handle_events(self, events)
        self.flush()

    # WebSocket listener (the active transport)

    def on_message(self, message: str | bytes) -> None:
        self.receive(message)

    def on_close(self) -> None:
        self.ws = None
        self.lose(REASON_TRANSPORT_CLOSE)

    def on_stalled(self) -> None:
        self._slow_consumer("WebSocket writes not drained for --slow-timeout")

    # Heartbeat: a PING every interval; a missing PONG closes the session.

    def start_heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        self.alone_since = loop.time()
        self.timer = loop.call_later(self.engine.ping_interval, self._on_ping)

    def _on_ping(self) -> None:
        loop = asyncio.get_running_loop()
        self.ping_sent = now = loop.time()
        session = self.session
        if session.namespaces or session.pending:
            self.alone_since = None
        elif self.alone_since is None:
            self.alone_since = now
        elif now - self.alone_since >= self.engine.connect_timeout:
            # A session that joins no namespace only holds resources (the reference
            # server's connectTimeout).
            self.close(REASON_CONNECT_TIMEOUT)
            return
        since = self.queued_since
        if since is not None and self.ws is None and now - since > self.engine.slow_timeout:
            # Nothing new was queued lately (that check is in _enqueue), but what is
            # queued has waited too long.
            self._slow_consumer("long-polling queue not taken for --slow-timeout")
            return
        self.session.send_ping()
        self.flush()
        self.timer = loop.call_at(now + self.engine.ping_timeout, self._on_deadline)

    def _on_deadline(self) -> None:
        if self.session.ping_expired():
            self.timer = None
            self._process()
            return
        # The next ping is due one interval after the last (or now, when the timeout is
        # the longer of the two).
        loop = asyncio.get_running_loop()
        due = max(self.ping_sent + self.engine.ping_interval, loop.time())
        self.timer = loop.call_at(due, self._on_ping)

    # End of session

    def _teardown(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.engine.forget(self)
        if self.probe is not None:
            self.probe.listener = None
            self.probe.close()
            self.probe = None
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.listener = None
            ws.close()
        self._wake()


class _Probe:
    """Listens on a WebSocket that asks to take over a long-polling session."""

    __slots__ = ("client", "ws")

    def __init__(self, client: Client, ws: WebSocketConnection) -> None:
        self.client = client
        self.ws = ws

    def on_message(self, message: str | bytes) -> None:
        client = self.client
        if message == "2probe" and not client.probed:
            client.probed = True
            self.ws.send([engineio.PROBE_PONG])
            # Let a pending poll return so that the client can pause polling.
            if client.waiter is not None and not client.queue:
                client.queue.append(engineio.NOOP)
                client._wake()
        elif message == "5" and client.probed:
            client.engine.complete_upgrade(client, self.ws)
        else:
            self.ws.listener = None
            self.ws.close()
            if client.probe is self.ws:
                client.probe = None
                client.probed = False

    def on_close(self) -> None:
        if self.client.probe is self.ws:
            self.client.probe = None
            self.client.probed = False

    def on_stalled(self) -> None:
        self.ws.abort()
        self.on_close()


class EngineServer:
    """Serves ``/socket.io/``: handshakes, polling requests and WebSocket upgrades."""

    def __init__(
        self, node: Node, options: EngineOptions, forwarder: Forwarder | None = None
    ) -> None:
        self.node = node
        self.options = options
        # Cluster mode: session ids start with this node's id, and requests for the
        # sessions of other nodes are relayed to them.
        self.forwarder = forwarder
        self._sid_prefix = forwarder.node_id if forwarder is not None else ""
        self.ping_interval = options.ping_interval / 1000
        self.ping_timeout = options.ping_timeout / 1000
        self.connect_timeout = options.connect_timeout / 1000
        self.slow_timeout = options.slow_timeout / 1000
        self.clients: dict[str, Client] = {}
        self._cors_any = "*" in options.cors_origins
        self._cors = frozenset(options.cors_origins)

    def _new_client(self) -> Client:
        sid = self._sid_prefix + new_socket_id()
        options = self.options
        session = Session(
            sid,
            max_attachments=options.max_attachments,
            max_attachment_bytes=options.max_payload,
        )
        client = Client(self, session)
        self.clients[sid] = client
        return client

    def _open_packet(self, client: Client, upgrades: list[str]) -> str:
        o = self.options
        return engineio.encode_open(
            client.session.sid,
            upgrades=upgrades,
            ping_interval=o.ping_interval,
            ping_timeout=o.ping_timeout,
            max_payload=o.max_payload,
        )

    def forget(self, client: Client) -> None:
        # A closed session is unknown at once (later polls get "Session ID unknown"),
        # as with the reference server; a poll already waiting still gets an answer.
        if self.clients.get(client.session.sid) is client:
            del self.clients[client.session.sid]

    # HTTP

    def _error(self, request: Request, code: int, status: int = 400) -> Response:
        body = json.dumps({"code": code, "message": _ERROR_MESSAGES[code]}).encode()
        return Response(status, body, headers=self._cors_headers(request))

    def _cors_headers(self, request: Request) -> list[tuple[str, str]]:
        origin = request.headers.get("origin")
        if origin is None:
            return []
        if not (self._cors_any or origin in self._cors):
            self._refused_origin(request, origin)
            return []
        return [
            ("access-control-allow-origin", origin),
            ("access-control-allow-credentials", "true"),
            ("vary", "Origin"),
        ]

    def _refused_origin(self, request: Request, origin: str) -> None:
        # A page on another origin gets no CORS headers, and the browser then blocks the
        # answer with a console message that does not say why: say it here.
        try:
            same_site = urlsplit(origin).netloc == request.headers.get("host")
        except ValueError:
            same_site = False
        if not same_site:
            _log.warning(
                "cors origin",
                "no CORS headers for Origin %r: it is not allowed by --cors-origin "
                "(browsers on that origin cannot use long-polling; add --cors-origin %s)",
                origin[:200],
                origin[:200],
            )

    def _check(self, request: Request) -> int | None:
        if request.arg("EIO") != engineio.PROTOCOL_VERSION:
            return UNSUPPORTED_PROTOCOL_VERSION
        if request.arg("transport") not in ("polling", "websocket"):
            return UNKNOWN_TRANSPORT
        return None

    async def handle(self, request: Request) -> Response:
        """A plain HTTP request under ``/socket.io/``."""
        try:
            return await self._handle(request)
        except Exception as exc:
            # A bug, not the client's fault: end its session (if any) with a 400, as for
            # a transport error, and keep the log to one line per kind per interval.
            _log.error(
                f"polling {type(exc).__qualname__}",
                "%s %s failed with an unexpected error: %r",
                request.method,
                request.path,
                exc,
                exc_info=exc,
            )
            client = self.clients.get(request.arg("sid") or "")
            if client is not None:
                try:
                    client.lose(REASON_TRANSPORT_ERROR)
                except Exception:
                    # The same bug again on the way out: drop the session regardless.
                    client._teardown()
            return self._error(request, BAD_REQUEST)

    async def _handle(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            headers = self._cors_headers(request)
            if headers:
                headers += [("access-control-allow-methods", "GET, POST, OPTIONS")]
                wanted = request.headers.get("access-control-request-headers")
                if wanted:
                    headers.append(("access-control-allow-headers", wanted))
            return Response(204, b"", content_type="text/plain", headers=headers)
        error = self._check(request)
        if error is not None:
            return self._error(request, error)
        if request.arg("transport") != "polling":
            # A WebSocket transport request without the Upgrade header.
            return self._error(request, BAD_REQUEST)
        sid = request.arg("sid")
        if sid is None:
            if request.method != "GET":
                return self._error(request, BAD_HANDSHAKE_METHOD)
            return self._handshake_polling(request)
        client = self.clients.get(sid)
        if client is None:
            return await self._elsewhere(request)
        if request.method == "GET":
            return await self._poll(request, client)
        if request.method == "POST":
            return await self._post(request, client)
        return self._error(request, BAD_REQUEST)

    async def _elsewhere(self, request: Request) -> Response:
        """A request for a session this node does not have: its owner's answer, if any."""
        forwarder = self.forwarder
        if forwarder is not None and (owner := forwarder.owner(request)) is not None:
            response = await forwarder.forward(request, owner)
            if response is not None:
                return response
        return self._error(request, UNKNOWN_SID)

    def _text(self, request: Request, body: bytes) -> Response:
        return Response(
            200,
            body,
            content_type="text/plain; charset=UTF-8",
            headers=self._cors_headers(request),
        )

    def _handshake_polling(self, request: Request) -> Response:
        client = self._new_client()
        client.start_heartbeat()
        return self._text(request, self._open_packet(client, ["websocket"]).encode())

    async def _poll(self, request: Request, client: Client) -> Response:
        if client.ws is not None:
            return self._error(request, BAD_REQUEST)
        if client.waiter is not None:
            # Two GETs at once on one session: the reference server closes it, and the
            # first GET carries the CLOSE packet.
            client.close(REASON_TRANSPORT_ERROR)
            return self._error(request, BAD_REQUEST)
        if not client.queue and client.session.state is State.OPEN:
            if client.probed:
                client.queue.append(engineio.NOOP)
            else:
                waiter = client.waiter = asyncio.get_running_loop().create_future()
                try:
                    await waiter
                except asyncio.CancelledError:
                    # The poll's connection went away: the client is gone.
                    if client.ws is None and client.session.state is State.OPEN:
                        client.lose(REASON_TRANSPORT_CLOSE)
                    raise
                finally:
                    client.waiter = None
        if not client.queue:
            # Woken with nothing to say (the session closed, or an upgrade finished).
            return self._text(request, engineio.NOOP.encode())
        return self._text(request, client.take_payload())

    async def _post(self, request: Request, client: Client) -> Response:
        # A body of max_payload bytes may hold hundreds of thousands of tiny packets:
        # they are decoded and handled a slice per loop turn, so that one POST cannot
        # stall every other connection. As on a WebSocket, packets before a malformed
        # one have been handled when it ends the session.
        if client.posting:
            # Two POSTs at once would interleave their packets: the reference server
            # refuses the overlap the same way.
            client.close(REASON_TRANSPORT_ERROR)
            return self._error(request, BAD_REQUEST)
        client.posting = True
        try:
            parts = engineio.split_payload(request.body, max_payload=self.options.max_payload)
            for start in range(0, len(parts), PACKETS_PER_TURN):
                if start:
                    await asyncio.sleep(0)
                    if client.session.state is not State.OPEN:
                        break
                chunk = parts[start : start + PACKETS_PER_TURN]
                client.receive_packets([engineio.decode_part(part) for part in chunk])
        except ProtocolError:
            client.lose(REASON_TRANSPORT_ERROR)
            return self._error(request, BAD_REQUEST)
        finally:
            client.posting = False
        return self._text(request, b"ok")

    # WebSocket

    def upgrade(
        self, request: Request, transport: asyncio.Transport
    ) -> UpgradedProtocol | Response:
        """An HTTP Upgrade request under ``/socket.io/``."""
        try:
            return self._upgrade(request, transport)
        except Exception as exc:
            # Raised before the 101 was written (what follows it catches its own).
            _log.error(
                f"upgrade {type(exc).__qualname__}",
                "WebSocket upgrade failed with an unexpected error: %r",
                exc,
                exc_info=exc,
            )
            return self._error(request, BAD_REQUEST)

    def _upgrade(
        self, request: Request, transport: asyncio.Transport
    ) -> UpgradedProtocol | Response:
        error = self._check(request)
        if error is not None:
            return self._error(request, error)
        headers = request.headers
        key = headers.get("sec-websocket-key")
        if (
            request.arg("transport") != "websocket"
            or request.method != "GET"
            or headers.get("upgrade", "").lower() != "websocket"
            or key is None
            or not valid_key(key)
            or headers.get("sec-websocket-version") != "13"
        ):
            return self._error(request, BAD_REQUEST)
        sid = request.arg("sid")
        client: Client | None = None
        if sid is not None:
            client = self.clients.get(sid)
            if client is None:
                forwarder = self.forwarder
                if forwarder is not None and (owner := forwarder.owner(request)) is not None:
                    return forwarder.relay_upgrade(request, transport, owner)
                return self._error(request, UNKNOWN_SID)
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept_key(key).encode()
            + b"\r\n\r\n"
        )
        o = self.options
        ws = WebSocketConnection(
            transport, o.max_payload, slow_timeout=self.slow_timeout, max_buffer=o.max_buffer
        )
        try:
            self._attach(ws, client)
        except Exception as exc:
            _log.error(
                f"websocket {type(exc).__qualname__}",
                "closing a new WebSocket after an unexpected error: %r",
                exc,
                exc_info=exc,
            )
            ws.close(CLOSE_INTERNAL_ERROR, "internal error")
        return ws

    def _attach(self, ws: WebSocketConnection, client: Client | None) -> None:
        """Give a fresh WebSocket its listener: a new session, or a probe of ``client``."""
        if client is not None and (client.ws is not None or client.probe is not None):
            # Already upgraded or upgrading: like the reference server, accept the
            # WebSocket and close it straight away.
            ws.close()
            return
        if client is None:
            client = self._new_client()
            client.ws = ws
            ws.listener = client
            ws.send([self._open_packet(client, [])])
            client.start_heartbeat()
        else:
            client.probe = ws
            ws.listener = _Probe(client, ws)

    def complete_upgrade(self, client: Client, ws: WebSocketConnection) -> None:
        """The client switched to ``ws``: drain the polling queue there."""
        client.probe = None
        client.probed = False
        client.ws = ws
        ws.listener = client
        pending = [p for p in client.queue if p != engineio.NOOP]
        client.queue.clear()
        client.queued_bytes = 0
        client.queued_since = None
        if client.waiter is not None:
            client.queue.append(engineio.NOOP)
            client._wake()
        if pending:
            ws.send(pending)

    async def close(self) -> None:
        """Server shutdown: close every session with a CLOSE packet."""
        for client in list(self.clients.values()):
            client.close(REASON_SERVER_SHUTDOWN)
        if self.forwarder is not None:
            await self.forwarder.aclose()
