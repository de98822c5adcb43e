"""Composition root: builds every component from :class:`~siogate.config.Settings` and runs.

This is the only module that picks implementations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from . import handlers as handlers_module
from .api import Api
from .auth import JwtVerifier
from .broker import Broker, MemoryBroker
from .config import Settings
from .errors import ConfigError
from .hub import Hub
from .metrics import Metrics
from .node import Node, NodeOptions
from .transport.engine import EngineOptions, EngineServer
from .transport.http import HttpConnection, Request, Response, UpgradedProtocol
from .webhooks import WebhookDispatcher, WebhookSettings

logger = logging.getLogger("siogate")

ENGINE_PREFIX = "/socket.io/"
# Pending connections the kernel may hold while the loop is busy (a connect storm).
LISTEN_BACKLOG = 2048


@dataclass
class Gateway:
    """A built gateway, ready to :meth:`serve`."""

    settings: Settings
    node: Node
    engine: EngineServer
    api: Api
    connections: set[HttpConnection] = field(default_factory=set)
    server: asyncio.Server | None = None

    async def handle(self, request: Request) -> Response:
        if request.path.startswith(ENGINE_PREFIX):
            return await self.engine.handle(request)
        return await self.api.handle(request)

    def upgrade(
        self, request: Request, transport: asyncio.Transport
    ) -> UpgradedProtocol | Response:
        if request.path.startswith(ENGINE_PREFIX):
            return self.engine.upgrade(request, transport)
        return Response(
            400, b'{"error":{"code":"bad_request","message":"upgrade only under /socket.io/"}}'
        )

    def _protocol(self) -> HttpConnection:
        return HttpConnection(
            self.handle,
            self.upgrade,
            max_body=self.settings.max_payload,
            connections=self.connections,
        )

    async def start(self) -> int:
        """Start the node and listen; returns the bound port."""
        await self.node.start()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            self._protocol,
            self.settings.host,
            self.settings.port,
            backlog=LISTEN_BACKLOG,
            reuse_address=True,
        )
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Graceful shutdown: stop listening, close sessions, flush, close connections."""
        if self.server is not None:
            self.server.close()
        await self.engine.close()
        await self.node.close()
        # Give transports a moment to flush CLOSE packets.
        await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()
        if self.server is not None:
            await self.server.wait_closed()

    async def serve(self, on_listening: Callable[[int], None] | None = None) -> None:
        """Run until SIGINT or SIGTERM; ``on_listening`` gets the bound port."""
        port = await self.start()
        logger.info("siogate listening on http://%s:%d", self.settings.host, port)
        if on_listening is not None:
            on_listening(port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            logger.info("shutting down")
            await self.stop()


def build(settings: Settings, *, broker: Broker | None = None) -> Gateway:
    """Wire the gateway. ``api_key`` and ``jwt_secret`` must be set by now."""
    if not settings.api_key or not settings.jwt_secret:
        raise ValueError("build() needs api_key and jwt_secret")
    metrics = Metrics()
    hub = Hub()
    webhooks = None
    if settings.webhook_url is not None:
        assert settings.webhook_secret is not None  # checked by Settings
        webhooks = WebhookDispatcher(
            WebhookSettings(
                url=settings.webhook_url,
                secret=settings.webhook_secret,
                timeout=settings.webhook_timeout,
                max_in_flight=settings.webhook_concurrency,
                max_response_bytes=settings.max_payload,
            )
        )
        metrics.webhooks = webhooks.stats
    handlers = handlers_module.load(settings.handlers) if settings.handlers else None
    if settings.auth == "handlers" and (handlers is None or handlers.on_connect is None):
        raise ConfigError("--auth handlers needs handlers with an on_connect method")
    node = Node(
        hub=hub,
        broker=broker or MemoryBroker(),
        verifier=JwtVerifier(settings.jwt_secret),
        options=NodeOptions(
            allow_anonymous=settings.allow_anonymous,
            verify_tokens=settings.auth == "jwt",
            webhook_per_socket=settings.webhook_per_socket,
            namespaces=settings.namespaces,
        ),
        metrics=metrics,
        webhooks=webhooks,
        handlers=handlers,
    )
    engine = EngineServer(
        node,
        EngineOptions(
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            connect_timeout=settings.connect_timeout,
            max_payload=settings.max_payload,
            max_buffer=settings.max_buffer,
            cors_origins=settings.cors_origin,
        ),
    )
    metrics.gauge("siogate_sockets", "Sockets connected to this node.", hub.count)
    metrics.gauge("siogate_rooms", "Rooms with members on this node.", hub.room_count)
    metrics.gauge("siogate_sessions", "Engine.IO sessions open.", lambda: len(engine.clients))
    metrics.gauge(
        "siogate_http_connections", "Open TCP connections.", lambda: len(gateway.connections)
    )
    api = Api(node, api_key=settings.api_key, namespaces=settings.namespaces)
    gateway = Gateway(settings=settings, node=node, engine=engine, api=api)
    return gateway


def install_event_loop() -> None:
    """Use uvloop when it is installed (it roughly halves per-write overhead)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
