"""Composition root: builds every component from :class:`~siogate.config.Settings` and runs.

This is the only module that picks implementations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import handlers as handlers_module
from .admin import Admin, AdminOptions, check_hash
from .api import Api
from .api.idempotent import Idempotency
from .auth import BasicAuth, JwtVerifier
from .broker import Broker, MemoryBroker
from .broker.emitter_compat import EmitterBridge
from .broker.recovering import RecoveringRedisBroker
from .broker.recovering_local import RecoveringLocalBroker
from .broker.redis import RedisBroker
from .config import Settings
from .errors import ConfigError
from .history import HistoryOptions
from .hub import Hub
from .idempotency import IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore
from .metrics import Metrics
from .node import Node, NodeOptions
from .presence_events import PresenceEvents
from .presence_tracker import MemoryPresenceTracker, PresenceTracker, RedisPresenceTracker
from .recovery import RecoveryOptions
from .transport.engine import EngineOptions, EngineServer
from .transport.forward import Forwarder
from .transport.http import (
    HttpConnection,
    HttpLimits,
    HttpServerState,
    Request,
    Response,
    UpgradedProtocol,
)
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
    http: HttpServerState = field(default_factory=HttpServerState)
    server: asyncio.Server | None = None
    admin: Admin | None = None
    # --emitter-compat: applies @socket.io/redis-emitter messages to this node's sockets.
    emitter: EmitterBridge | None = None
    # Listeners besides ``server`` (a worker's private one, see siogate.supervisor).
    extra_servers: list[asyncio.Server] = field(default_factory=list)

    @property
    def connections(self) -> set[HttpConnection]:
        return self.http.connections

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
        return HttpConnection(self.handle, self.upgrade, self.http)

    async def start(
        self,
        *,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        extra: Sequence[socket.socket] = (),
    ) -> int:
        """Start the node and listen; returns the bound port.

        A worker of ``serve --workers`` listens with ``reuse_port`` (or on the inherited
        ``sock``), and also on ``extra`` sockets (its private listener).
        """
        limit = raise_open_files_limit()
        if limit is not None:
            logger.info("open files limit: %d", limit)
        await self.node.start()
        if self.admin is not None:
            await self.admin.start()
        if self.emitter is not None:
            # Straight to this node's hub, never through the broker: every node has its
            # own subscription, so each applies each message once, to its own sockets.
            await self.emitter.start(self.node.apply, self.node.server_event)
        loop = asyncio.get_running_loop()
        if sock is not None:
            self.server = await loop.create_server(
                self._protocol, sock=sock, backlog=LISTEN_BACKLOG
            )
        else:
            self.server = await loop.create_server(
                self._protocol,
                self.settings.host,
                self.settings.port,
                backlog=LISTEN_BACKLOG,
                reuse_address=True,
                reuse_port=reuse_port or None,
            )
        for other in extra:
            self.extra_servers.append(
                await loop.create_server(self._protocol, sock=other, backlog=LISTEN_BACKLOG)
            )
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        """Graceful shutdown: stop listening, close sessions, flush, close connections."""
        if self.server is not None:
            self.server.close()
        if self.emitter is not None:
            await self.emitter.close()
        for server in self.extra_servers:
            server.close()
        await self.engine.close()
        if self.admin is not None:
            await self.admin.close()
        await self.node.close()
        if self.api.idempotency is not None:
            await self.api.idempotency.store.close()
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


def raise_open_files_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard one; returns the soft limit in force.

    Every connection costs a descriptor, and the usual soft default (1024) is far below
    ``max_connections``. None where the platform has no such limit.
    """
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        # macOS refuses RLIM_INFINITY as a soft limit; keep the old one there.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return int(soft)


def http_limits(settings: Settings) -> HttpLimits:
    return HttpLimits(
        max_body=settings.max_payload,
        max_head_size=settings.max_head_size,
        head_timeout=settings.head_timeout / 1000,
        body_timeout=settings.body_timeout / 1000,
        max_pipelined=settings.max_pipelined,
        max_connections=settings.max_connections,
        max_connections_per_ip=settings.max_connections_per_ip,
    )


def build(
    settings: Settings,
    *,
    broker: Broker | None = None,
    idempotency: IdempotencyStore | None = None,
    presence: PresenceTracker | None = None,
) -> Gateway:
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
    if broker is None:
        broker = _broker(settings)
    # The Redis broker subscribes to the shards of the rooms this node holds members of.
    hub.watcher = broker
    handlers = handlers_module.load(settings.handlers) if settings.handlers else None
    if settings.auth == "handlers" and (handlers is None or handlers.on_connect is None):
        raise ConfigError("--auth handlers needs handlers with an on_connect method")
    node = Node(
        hub=hub,
        broker=broker,
        verifier=JwtVerifier(
            settings.jwt_secret,
            leeway=settings.jwt_leeway,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        ),
        options=NodeOptions(
            allow_anonymous=settings.allow_anonymous,
            verify_tokens=settings.auth == "jwt",
            webhook_per_socket=settings.webhook_per_socket,
            event_rate=settings.event_rate,
            event_burst=settings.event_burst,
            event_rate_action=settings.event_rate_action,
            namespaces=settings.namespaces,
            query_timeout=settings.cluster_timeout / 1000,
            max_ack_recipients=settings.max_ack_recipients,
            max_pending_acks=settings.max_pending_acks,
            room_webhooks=settings.room_webhooks,
        ),
        metrics=metrics,
        webhooks=webhooks,
        handlers=handlers,
        presence_tracker=presence or _presence_tracker(settings, broker),
        presence_events=(
            PresenceEvents(settings.presence_events, cluster=settings.cluster)
            if settings.presence_events
            else None
        ),
        recovery=(
            RecoveryOptions(
                settings.recovery_window,
                max_missed=settings.recovery_max_missed,
                max_messages=settings.recovery_max_messages,
            )
            if settings.recovery_window > 0
            else None
        ),
        cluster_recovery=(
            broker if isinstance(broker, RecoveringRedisBroker | RecoveringLocalBroker) else None
        ),
        history=(
            HistoryOptions(
                settings.history_size,
                settings.history_ttl,
                max_messages=settings.history_max_messages,
            )
            if settings.history_size > 0
            else None
        ),
    )
    engine = EngineServer(
        node,
        EngineOptions(
            ping_interval=settings.ping_interval,
            ping_timeout=settings.ping_timeout,
            connect_timeout=settings.connect_timeout,
            max_payload=settings.max_payload,
            max_buffer=settings.max_buffer,
            slow_timeout=settings.slow_timeout,
            max_attachments=settings.max_attachments,
            cors_origins=settings.cors_origin,
        ),
        forwarder=_forwarder(settings, broker),
    )
    metrics.gauge("siogate_sockets", "Sockets connected to this node.", hub.count)
    metrics.gauge("siogate_rooms", "Rooms with members on this node.", hub.room_count)
    if node.recovery is not None:
        store = node.recovery
        metrics.gauge(
            "siogate_recovery_waiting_sockets",
            "Sockets whose transport dropped, waiting for their client (--recovery-window).",
            lambda: store.parked_count,
        )
        metrics.gauge(
            "siogate_recovery_log_messages",
            "Emits kept in the offset log.",
            lambda: store.logged_count,
        )
        metrics.counter(
            "siogate_recovered_sockets_total",
            "Sockets that got their session back after a transport loss.",
            lambda: store.recovered_total,
        )
        metrics.counter(
            "siogate_recovery_expired_total",
            "Sockets whose recovery window passed without their client.",
            lambda: store.expired_total,
        )
    metrics.gauge("siogate_sessions", "Engine.IO sessions open.", lambda: len(engine.clients))
    metrics.gauge(
        "siogate_http_connections", "Open TCP connections.", lambda: len(gateway.connections)
    )
    _broker_metrics(metrics, broker)
    if engine.forwarder is not None:
        _forwarder_metrics(metrics, engine.forwarder)
    api = Api(
        node,
        api_key=settings.api_key,
        namespaces=settings.namespaces,
        cluster=settings.cluster,
        idempotency=Idempotency(idempotency or _idempotency_store(settings)),
        people=_people(settings),
    )
    http = HttpServerState(http_limits(settings))
    _http_metrics(metrics, http)
    gateway = Gateway(settings=settings, node=node, engine=engine, api=api, http=http)
    if settings.admin:
        gateway.admin = _admin(settings, node)
    if settings.emitter_compat:
        assert settings.redis_url is not None  # checked by Settings
        gateway.emitter = EmitterBridge(
            settings.redis_url, key=settings.emitter_key, max_message=settings.max_payload
        )
        _emitter_metrics(metrics, gateway.emitter)
    return gateway


def _admin(settings: Settings, node: Node) -> Admin:
    password_hash = None
    if settings.admin_password_hash is not None:
        try:
            password_hash = check_hash(settings.admin_password_hash)
        except ValueError as exc:
            raise ConfigError(f"admin_password_hash: {exc}") from None
    admin = Admin(
        node,
        AdminOptions(
            namespace=settings.admin_namespace,
            username=settings.admin_username,
            password_hash=password_hash,
        ),
    )
    admin.install()
    return admin


def _people(settings: Settings) -> BasicAuth:
    """HTTP Basic credentials for the dashboard: the API key, or the admin's."""
    password_hash = None
    if settings.admin_password_hash is not None:
        try:
            password_hash = check_hash(settings.admin_password_hash)
        except ValueError as exc:
            raise ConfigError(f"admin_password_hash: {exc}") from None
    return BasicAuth(
        api_key=settings.api_key or "",
        username=settings.admin_username,
        password_hash=password_hash,
    )


def _broker(settings: Settings) -> Broker:
    if settings.redis_url is None:
        return MemoryBroker()
    advertise = settings.advertise_url
    if advertise is None and settings.port != 0:
        advertise = settings.local_url(settings.port)
    return redis_broker(settings, advertise)


def redis_broker(settings: Settings, advertise: str | None) -> RedisBroker:
    """The broker of a node on ``settings.redis_url`` (a worker of ``serve --workers``
    on Redis too), reachable by the others at ``advertise``."""
    assert settings.redis_url is not None
    if settings.recovery_window > 0:
        # Cross-node recovery: every command through the log (docs/recovery.md).
        return RecoveringRedisBroker(
            settings.redis_url,
            window=settings.recovery_window,
            # Room history answers from the same log: kept as long as history asks.
            log_age=settings.recovery_log_age,
            max_log=settings.recovery_max_messages,
            max_missed=settings.recovery_max_missed,
            prefix=settings.redis_prefix,
            advertise_url=advertise,
            node_ttl=settings.node_ttl / 1000,
        )
    return RedisBroker(
        settings.redis_url,
        prefix=settings.redis_prefix,
        advertise_url=advertise,
        node_ttl=settings.node_ttl / 1000,
        routing=settings.cluster_routing,
    )


def _presence_tracker(settings: Settings, broker: Broker) -> PresenceTracker | None:
    if not settings.presence_webhooks:
        return None
    if settings.redis_url is None:
        return MemoryPresenceTracker()
    # Counts per node in Redis, under the broker's node id (its registry tells the dead).
    return RedisPresenceTracker(
        settings.redis_url,
        prefix=settings.redis_prefix,
        node_id=broker.node_id,
        node_ttl=settings.node_ttl / 1000,
    )


def _idempotency_store(settings: Settings) -> IdempotencyStore:
    if settings.redis_url is None:
        return MemoryIdempotencyStore(settings.idempotency_ttl)
    # Shared by the cluster's nodes: a key sent to two nodes at once is applied once.
    return RedisIdempotencyStore(
        settings.redis_url, prefix=settings.redis_prefix, ttl=settings.idempotency_ttl
    )


def _forwarder(settings: Settings, broker: Broker) -> Forwarder | None:
    if not settings.cluster:
        return None
    # A relayed long poll may wait a whole ping interval at its owner.
    timeout = (settings.ping_interval + settings.ping_timeout) / 1000 + 5
    return Forwarder(broker.node_id, broker.node_url, timeout=timeout, max_body=settings.max_buffer)


def _broker_metrics(metrics: Metrics, broker: Broker) -> None:
    stats = broker.stats
    metrics.gauge(
        "siogate_broker_connected",
        "1 while the broker reaches the other nodes (always 1 without Redis).",
        lambda: int(stats.connected),
    )
    metrics.gauge(
        "siogate_cluster_peers", "Other live nodes seen in the registry.", lambda: stats.peers
    )
    metrics.counter(
        "siogate_broker_reconnects_total",
        "Reconnections to Redis after an outage.",
        lambda: stats.reconnects,
    )
    metrics.counter(
        "siogate_broker_publish_failures_total",
        "Messages Redis did not take (the API answered 503).",
        lambda: stats.publish_failures,
    )
    metrics.counter(
        "siogate_broker_messages_out_total",
        "Messages published by this node.",
        lambda: stats.messages_out,
    )
    metrics.counter(
        "siogate_broker_messages_in_total",
        "Messages received from other nodes.",
        lambda: stats.messages_in,
    )
    metrics.counter(
        "siogate_broker_messages_invalid_total",
        "Messages from the broker ignored as malformed.",
        lambda: stats.messages_invalid,
    )
    metrics.gauge(
        "siogate_broker_shards",
        "Room shard channels this node subscribes to (sharded routing).",
        lambda: stats.shards,
    )
    metrics.counter(
        "siogate_broker_ack_timeouts_total",
        "Joins/leaves/disconnects answered before every receiving node confirmed them, "
        "and connects answered before their rooms were subscribed here.",
        lambda: stats.ack_timeouts,
    )


def _emitter_metrics(metrics: Metrics, emitter: EmitterBridge) -> None:
    stats = emitter.stats
    metrics.gauge(
        "siogate_emitter_connected",
        "1 while subscribed to the @socket.io/redis-emitter channels (--emitter-compat).",
        lambda: int(stats.connected),
    )
    metrics.counter(
        "siogate_emitter_messages_total",
        "Emitter messages applied to this node's sockets.",
        lambda: stats.applied,
    )
    metrics.counter(
        "siogate_emitter_messages_invalid_total",
        "Emitter messages dropped as malformed or over --max-payload.",
        lambda: stats.invalid,
    )
    metrics.counter(
        "siogate_emitter_messages_unsupported_total",
        "Emitter messages dropped because they ask for an unsupported operation.",
        lambda: stats.unsupported,
    )


def _http_metrics(metrics: Metrics, http: HttpServerState) -> None:
    stats = http.stats
    metrics.counter(
        "siogate_http_connections_refused_total",
        "New TCP connections closed at once: --max-connections reached.",
        lambda: stats.refused_total,
    )
    metrics.counter(
        "siogate_http_connections_refused_per_ip_total",
        "New TCP connections closed at once: --max-connections-per-ip reached.",
        lambda: stats.refused_per_ip,
    )
    metrics.counter(
        "siogate_http_timeouts_total",
        "Requests answered 408: head or body not received within its timeout.",
        lambda: stats.timeouts,
    )
    metrics.counter(
        "siogate_http_heads_too_large_total",
        "Requests answered 431: head over --max-head-size or too many headers.",
        lambda: stats.heads_too_large,
    )
    metrics.counter(
        "siogate_http_errors_total",
        "HTTP connections or requests ended by an unexpected server error.",
        lambda: stats.errors,
    )


def _forwarder_metrics(metrics: Metrics, forwarder: Forwarder) -> None:
    metrics.counter(
        "siogate_forwarded_requests_total",
        "Long-polling requests relayed to the node that owns the session.",
        lambda: forwarder.requests,
    )
    metrics.counter(
        "siogate_forwarded_websockets_total",
        "WebSocket upgrades relayed to the node that owns the session.",
        lambda: forwarder.websockets,
    )
    metrics.counter(
        "siogate_forward_failures_total",
        "Requests for another node's session that could not be relayed (owner gone).",
        lambda: forwarder.failures,
    )


def install_event_loop() -> None:
    """Use uvloop when it is installed (it roughly halves per-write overhead)."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
