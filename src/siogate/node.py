"""The node: composition of hub, broker, auth, webhooks and handlers.

Transports report session events here; the HTTP API sends commands here. Commands go
through the broker (so that, with several nodes, every node applies them) and come back
through :meth:`Node.apply`, which acts on the local hub.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from . import admin_snapshot, listings, presence
from .ack_emits import AckEmits
from .acks import AckRegistry, AckResult
from .auth import ANONYMOUS, Identity, JwtVerifier
from .broker import (
    AdminQuery,
    Answers,
    Broker,
    BrokerUnavailable,
    Command,
    EmitCommand,
    PresenceQuery,
    Query,
    RoomPresenceQuery,
    RoomsQuery,
    SocketsCommand,
    SocketsQuery,
    StatsQuery,
)
from .broker.streams import LoggedBroker, parse_offset
from .client_events import ClientEvents, EventRateAction, webhook_payload
from .errors import AuthError
from .handlers import Handlers, Refuse, call
from .history import HistoryOptions, Message, Offsets, RoomHistory
from .hub import Hub, Link, Outgoing, Socket, is_socket_id, new_socket_id
from .listings import Listing, Page
from .metrics import Metrics
from .presence_events import Kind as PresenceKind
from .presence_events import PresenceEvents
from .presence_tracker import PresenceTracker, Transition
from .protocol import socketio
from .protocol.events import (
    AckReceived,
    ConnectRequested,
    Event,
    EventReceived,
    NamespaceLeft,
    SessionClosed,
)
from .protocol.session import (
    REASON_FORCED_CLOSE,
    REASON_SERVER_NAMESPACE,
    REASON_SERVER_SHUTDOWN,
    State,
)
from .ratelog import RateLimitedLog
from .recovery import Ended, Parked, RecoveryOptions, RecoveryStore
from .recovery_cluster import ClusterSessions
from .stats import NodeStats, Recorder
from .stats import merge as merge_stats
from .types import Namespace, Room, Sid, UserId
from .webhooks import WebhookDispatcher

logger = logging.getLogger("siogate.node")
# For lines a client can cause at will (floods, full queues).
peer_log = RateLimitedLog(logger)

# Limits on what one client connection may ask for.
MAX_NAME = 256
MAX_NAMESPACES_PER_CLIENT = 100

# on_server_event calls one node runs at once; an emitter's serverSideEmit beyond that
# is dropped (and logged).
MAX_SERVER_EVENTS = 256

# Seconds between the CONNECT answer and the emits an on_connect handler made.
EARLY_EMIT_DELAY = 0.002
# Seconds a new socket's CONNECT answer waits at most for its rooms to be routed to this
# node (cluster or workers: a room shard subscribed; see Broker.route).
ROUTE_WAIT = 2.0

# Why a session was closed when its token's exp passed (the disconnect webhook's reason).
REASON_TOKEN_EXPIRED = "token expired"


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """What the node needs to decide about sockets."""

    allow_anonymous: bool = False
    # False: handshakes are left to the handlers' on_connect (``--auth handlers``).
    verify_tokens: bool = True
    # None: any namespace may be joined.
    namespaces: frozenset[str] | None = None
    # Webhook calls one client connection may have running at once, all its namespaces
    # together (the name is older than that rule).
    webhook_per_socket: int = 4
    # Events per second one client connection may send (token bucket); 0: no limit.
    event_rate: float = 0.0
    # Events a connection may send at once above the rate (the bucket's size).
    event_burst: int = 200
    # Over the rate: "drop" the event (its ack, if asked, carries a rate_limited
    # error), or "disconnect" the connection.
    event_rate_action: EventRateAction = "drop"
    # Seconds a rooms or sockets listing waits for the other nodes' answers.
    query_timeout: float = 1.0
    # Sockets one emit with ack may reach (cluster-wide), and emits with ack this node
    # may wait on at once (see siogate.acks).
    max_ack_recipients: int = 1_000
    max_pending_acks: int = 100
    # room.join / room.leave webhooks for membership changes after connect.
    room_webhooks: bool = False


class SocketObserver(Protocol):
    """Told of every change to this node's sockets (siogate.admin watches them)."""

    def socket_connected(self, socket: Socket) -> None: ...
    def socket_disconnected(self, socket: Socket, reason: str) -> None: ...
    def room_joined(self, socket: Socket, room: Room) -> None: ...
    def room_left(self, socket: Socket, room: Room) -> None: ...


class NamespaceService(Protocol):
    """Owns one namespace (siogate.admin): its connects, events and leaves go to the
    service instead of auth, hub, handlers and webhooks."""

    def connect(self, link: Link, event: ConnectRequested) -> None: ...
    def event(self, link: Link, event: EventReceived) -> None: ...
    def left(self, link: Link, reason: str) -> None: ...


class ServerSocket:
    """A socket as in-process handlers see it (see :mod:`siogate.handlers`).

    During ``on_connect`` the socket is not connected yet: emits, joins and leaves are
    recorded and applied right after the CONNECT answer, and ``disconnect()`` refuses it.
    """

    __slots__ = ("_node", "_socket", "_link", "_connected", "_early", "_rooms", "_refused")

    def __init__(self, node: Node, socket: Socket, link: Link, rooms: set[Room]) -> None:
        self._node = node
        self._socket = socket
        self._link = link
        self._connected = False
        # Emits made by on_connect, sent right after the CONNECT answer.
        self._early: list[socketio.Packet] = []
        # Rooms to join on connect (from the token, changed by on_connect).
        self._rooms = rooms
        self._refused = False

    @property
    def id(self) -> str:
        return self._socket.id

    @property
    def namespace(self) -> str:
        return self._socket.namespace

    @property
    def user(self) -> str | None:
        return self._socket.user

    @property
    def rooms(self) -> frozenset[str]:
        return frozenset(self._socket.rooms if self._connected else self._rooms)

    def emit(self, event: str, *args: Any) -> None:
        packet = socketio.event_packet(self._socket.namespace, event, list(args))
        if not self._connected:
            self._early.append(packet)
            return
        self._link.session.send(packet)
        self._link.flush()

    def join(self, room: str) -> None:
        """Join ``room``; ValueError for a name shaped like a socket id (those address
        one socket and cannot be joined, see :func:`siogate.hub.is_socket_id`)."""
        if is_socket_id(room):
            raise ValueError(f"room {room!r} has the shape of a socket id and cannot be joined")
        if self._connected:
            self._node.join_room(self._socket, Room(room))
        else:
            self._rooms.add(Room(room))

    def leave(self, room: str) -> None:
        if self._connected:
            self._node.leave_room(self._socket, Room(room))
        else:
            self._rooms.discard(Room(room))

    def disconnect(self) -> None:
        if self._connected:
            self._node.disconnect_socket(self._socket, REASON_SERVER_NAMESPACE)
        else:
            self._refused = True


class Node:
    """One gateway process."""

    def __init__(
        self,
        *,
        hub: Hub,
        broker: Broker,
        verifier: JwtVerifier,
        options: NodeOptions,
        metrics: Metrics,
        webhooks: WebhookDispatcher | None = None,
        handlers: Handlers | None = None,
        presence_tracker: PresenceTracker | None = None,
        presence_events: PresenceEvents | None = None,
        recovery: RecoveryOptions | None = None,
        history: HistoryOptions | None = None,
        cluster_recovery: LoggedBroker | None = None,
    ) -> None:
        # hub holds this node's sockets and rooms.
        self.hub = hub
        # broker carries commands to every node (this one included).
        self.broker = broker
        # verifier turns handshake tokens into identities.
        self.verifier = verifier
        self.options = options
        self.metrics = metrics
        # webhooks forwards client events to the backend and brings back acks.
        self.webhooks = webhooks
        # handlers run application logic in process (optional).
        self.handlers = handlers
        # presence_tracker sends user.online / user.offline webhooks (optional).
        self.presence_tracker = presence_tracker
        # presence_events tells room members who came and went (optional).
        self.presence_events = presence_events
        self._tasks: set[asyncio.Task[Any]] = set()
        # on_server_event calls running (an emitter can publish faster than they finish).
        self._server_events = 0
        # ServerSocket wrappers, only kept while handlers are loaded.
        self._handles: dict[Sid, ServerSocket] = {}
        # What clients send: rate limits, webhook lanes, handler calls, acks.
        self.events = ClientEvents(
            limits=options,
            metrics=metrics,
            webhooks=webhooks,
            handlers=handlers,
            handle_of=self._handles.get,
            spawn=self._spawn,
        )
        # Timers that end each token-authenticated socket's session at its token's exp.
        self._expiry: dict[Sid, asyncio.TimerHandle] = {}
        # Emits with ack waiting on this node's sockets, and those asked through this node.
        self.acks = AckRegistry()
        self.ack_emits = AckEmits(
            hub=hub,
            broker=broker,
            registry=self.acks,
            metrics=metrics,
            limits=options,
            recovery=recovery is not None,
        )
        # Told of socket changes; namespaces owned by a service (both: siogate.admin).
        self.observers: list[SocketObserver] = []
        self.services: dict[str, NamespaceService] = {}
        # Connection state recovery (optional; siogate.recovery).
        # Offsets for emits (with recovery or room history; siogate.history).
        self.offsets = None if recovery is None and history is None else Offsets()
        self.recovery = None
        if recovery is not None and self.offsets is not None:
            self.recovery = RecoveryStore(recovery, self._ended, self.offsets)
        self.history = None if history is None else RoomHistory(history)
        # Recovery across nodes (siogate.recovery_cluster): session records in Redis;
        # the offsets are the log's. Commands that arrive while a recovery reads the log
        # wait in _held (_hold counts the recoveries under way).
        self.cluster = None
        if cluster_recovery is not None and self.recovery is not None:
            self.cluster = ClusterSessions(cluster_recovery, self._spawn, self._let_go)
            cluster_recovery.let_go = self._let_go
            self.recovery.keeps = False
        self._hold = 0
        self._held: list[Command] = []
        # The offset of the last emit applied here (the API answers it).
        self.last_offset: str | None = None
        # stats samples this node's metrics for /v1/stats and the dashboard.
        self.stats = Recorder(metrics)

    async def start(self) -> None:
        await self.broker.start(self.apply, self.answer)
        if self.cluster is not None:
            await self.cluster.start()
        self.stats.start()
        if self.presence_tracker is not None:
            await self.presence_tracker.start(self._presence_changed)

    async def close(self) -> None:
        self.stats.stop()
        if self.recovery is not None:
            # Sockets waiting for their clients end now, with their disconnect webhooks.
            self.recovery.end_all(REASON_SERVER_SHUTDOWN)
        if self.cluster is not None:
            # Their records are ended before the broker's connections close.
            await self.cluster.drain(2.0)
        if self.presence_tracker is not None:
            # Before the broker leaves the registry: this node drops its own counts
            # rather than leave them for another node to reap.
            await self.presence_tracker.close()
        await self.broker.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self.webhooks is not None:
            await self.webhooks.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task failed", exc_info=task.exception())

    # Session events (called by transports)

    def handle_events(self, link: Link, events: list[Event]) -> None:
        """React to session events; the caller flushes the link afterwards."""
        for event in events:
            service = self.services.get(getattr(event, "namespace", ""))
            if service is not None:
                if isinstance(event, EventReceived):
                    service.event(link, event)
                elif isinstance(event, ConnectRequested):
                    service.connect(link, event)
                elif isinstance(event, NamespaceLeft):
                    service.left(link, event.reason)
                continue
            if isinstance(event, EventReceived):
                self._on_event(link, event)
            elif isinstance(event, ConnectRequested):
                self._on_connect(link, event)
            elif isinstance(event, NamespaceLeft):
                self._on_left(event.namespace, event.sid, event.reason)
            elif isinstance(event, SessionClosed):
                self.events.closed(link)
                for namespace, sid in list(link.session.namespaces.items()):
                    service = self.services.get(namespace)
                    if service is not None:
                        service.left(link, event.reason)
                    else:
                        self._on_left(namespace, sid, event.reason)
            elif isinstance(event, AckReceived):
                socket = self._socket_of(link, event.namespace)
                if socket is not None:
                    # A late, repeated or made-up answer is ignored.
                    self.acks.received(socket.id, event.ack_id, event.args)

    def _on_connect(self, link: Link, event: ConnectRequested) -> None:
        namespace = event.namespace
        allowed = self.options.namespaces
        if (allowed is not None and namespace not in allowed) or len(namespace) > MAX_NAME:
            self._refuse(link, namespace, "Invalid namespace")
            return
        if len(link.session.namespaces) >= MAX_NAMESPACES_PER_CLIENT:
            self._refuse(link, namespace, "Too many namespaces")
            return
        try:
            identity = self._authenticate(event.auth)
        except AuthError as exc:
            self._refuse(link, namespace, str(exc))
            return
        if identity.namespaces is not None and namespace not in identity.namespaces:
            self._refuse(link, namespace, "namespace not allowed by token")
            return
        if self.recovery is not None and event.auth is not None and "pid" in event.auth:
            if self.cluster is not None and (
                self.handlers is None or self.handlers.on_connect is None
            ):
                self._hold += 1
                self._spawn(self._recover_across(link, namespace, event.auth, identity))
                return
            if self._recover(link, namespace, event.auth, identity):
                return
        self._connect_new(link, namespace, event, identity)

    def _connect_new(
        self, link: Link, namespace: str, event: ConnectRequested, identity: Identity
    ) -> None:
        socket = Socket(
            new_socket_id(self.broker.node_id), Namespace(namespace), identity.user, link
        )
        rooms = set(identity.rooms)
        if identity.user is not None:
            rooms.add(Room(f"user:{identity.user}"))
        if self.handlers is None or self.handlers.on_connect is None:
            since = None if event.auth is None else event.auth.get("since")
            if self.history is not None and self.cluster is not None and since is not None:
                # Across nodes: from the Redis log, before anything newer.
                self._hold += 1
                self._spawn(self._accept_since(link, socket, rooms, identity.expires, since))
                return
            if not self._routed(socket.namespace, rooms):
                self._spawn(self._accept_routed(link, socket, rooms, identity.expires))
                return
            self._accept(link, socket, rooms, None, identity.expires)
            if self.history is not None and event.auth is not None and "since" in event.auth:
                self._send_history(link, socket, event.auth["since"])
        else:
            handle = ServerSocket(self, socket, link, rooms)
            self._spawn(
                self._connect_with_handler(link, socket, handle, event.auth, identity.expires)
            )

    def _recover(
        self, link: Link, namespace: str, auth: dict[str, Any], identity: Identity
    ) -> bool:
        """Give the client its socket back if ``auth`` names one parked here (with the
        token checked again above); False: it gets a new socket.

        With an on_connect handler nothing is recovered: the handler decides each
        connect. The socket's rooms are those it has now (API joins and leaves while
        away included); the replay is queued right after the CONNECT answer, before
        this call returns, so nothing newer can come first.
        """
        assert self.recovery is not None
        if self.handlers is not None and self.handlers.on_connect is not None:
            return False
        session = link.session
        if session.state is not State.OPEN:
            return False
        parked = self.recovery.claim(auth, namespace, identity.user)
        if parked is None:
            return False
        socket = parked.socket
        socket.link = link
        session.accept(namespace, socket.id, parked.pid)
        for messages in parked.replay:
            session.send_encoded(list(messages))
        parked.replay = []
        if identity.expires is not None:
            self._expire_at(link, socket, identity.expires)
        handle = self._handles.get(socket.id)
        if handle is not None:
            handle._link = link
        self.metrics.connections_total += 1
        return True

    async def _recover_across(
        self, link: Link, namespace: str, auth: dict[str, Any], identity: Identity
    ) -> None:
        """Recovery across nodes: claim the socket ``auth`` names from Redis and replay
        what it missed from the log (siogate.broker.streams); a new socket when that
        fails. Commands arriving meanwhile wait (``_hold``) and are applied after."""
        assert self.cluster is not None and self.recovery is not None
        try:
            got = await self.cluster.recover(auth, namespace, identity.user)
            session = link.session
            if session.state is not State.OPEN:
                if got is not None:
                    # Gone again while it was being recovered: it may try once more.
                    await self.cluster.park_now(str(auth["pid"]))
                return
            if got is None:
                self._connect_new(link, namespace, ConnectRequested(namespace, auth), identity)
                link.flush()
                return
            claimed, replay = got
            record = claimed.session
            sid, ns, pid = record.sid, record.namespace, str(auth["pid"])
            if self.presence_tracker is not None and identity.user is not None:
                # Counted here before the old socket stops counting (no offline/online).
                self.presence_tracker.add(ns, identity.user)
            old = self.hub.get(ns, sid)
            if old is not None:
                self._drop_moved(old)
            socket = Socket(sid, ns, identity.user, link)
            self.hub.add(socket)
            for room in replay.rooms:
                self.hub.join(socket, room)
            self.recovery.adopt(socket, pid)
            session.accept(ns, sid, pid)
            for offset, name, args in replay.events:
                session.send(socketio.event_packet(ns, name, [*args, offset]))
                self.cluster.written[sid] = offset
            self.cluster.skip[sid] = replay.last
            for change in replay.changes:
                record.changed(*change)
            record.at = max(record.at, replay.last, key=_offset_key)
            self.cluster.adopted(sid, pid, record)
            if claimed.previous_node not in ("", self.broker.node_id):
                self.cluster.broker.tell_let_go(claimed.previous_node, ns, sid)
            if identity.expires is not None:
                self._expire_at(link, socket, identity.expires)
            for observer in self.observers:
                observer.socket_connected(socket)
            self.metrics.connections_total += 1
            link.flush()
        finally:
            self._hold -= 1
            if self._hold == 0 and self._held:
                held, self._held = self._held, []
                self.apply(held)

    async def _accept_since(
        self, link: Link, socket: Socket, rooms: set[Room], expires: float | None, since: Any
    ) -> None:
        """A new socket with ``auth.since`` across nodes: accepted once the events of its
        rooms after ``since`` are read from the Redis log, and sent those first (commands
        arriving meanwhile wait, as for a recovery)."""
        assert self.cluster is not None
        try:
            events = await self.cluster.events_since(socket, rooms, since)
            self._accept(link, socket, rooms, None, expires)
            if self.hub.get(socket.namespace, socket.id) is not socket:
                return
            session = link.session
            for offset, name, args in events:
                session.send(socketio.event_packet(socket.namespace, name, [*args, offset]))
                self.cluster.written[socket.id] = offset
            link.flush()
        finally:
            self._hold -= 1
            if self._hold == 0 and self._held:
                held, self._held = self._held, []
                self.apply(held)

    def _let_go(self, namespace: Namespace, sid: Sid) -> None:
        """Another node recovered ``sid``: drop it here without a word."""
        socket = self.hub.get(namespace, sid)
        if socket is not None:
            self._drop_moved(socket)

    def _drop_moved(self, socket: Socket) -> None:
        """Forget a socket that goes on at another node (or on a new connection here):
        no webhook, no presence event; its old connection, if still open, loses it."""
        link = socket.link
        if isinstance(link, Parked):
            link.store.drop(link)
        else:
            link.session.disconnect(socket.namespace)
            link.flush()
        for observer in self.observers:
            observer.socket_disconnected(socket, "recovered elsewhere")
        self.hub.remove(socket)
        self.acks.gone(socket.id)
        timer = self._expiry.pop(socket.id, None)
        if timer is not None:
            timer.cancel()
        self._handles.pop(socket.id, None)
        if self.recovery is not None:
            self.recovery.forget(socket.id)
        if self.cluster is not None:
            self.cluster.forget(socket.id)
        if self.presence_tracker is not None and socket.user is not None:
            self.presence_tracker.remove(socket.namespace, socket.user)

    def _send_history(self, link: Link, socket: Socket, since: Any) -> None:
        """Right after a CONNECT with ``auth.since`` (an offset): the events its rooms
        got after it, from room history, before anything newer (render, then subscribe
        without a gap; docs/recovery.md)."""
        assert self.history is not None and self.offsets is not None
        after = self.offsets.parse(since)
        if after is None or link.session.namespaces.get(socket.namespace) != socket.id:
            return
        messages = self.history.since(
            socket.namespace, socket.id, socket.rooms, after, time.monotonic()
        )
        for m in messages:
            args = m.args if self.recovery is None else [*m.args, self.offsets.format(m.seq)]
            link.session.send(socketio.event_packet(socket.namespace, m.event, args))

    def _ended(self, socket: Socket, reason: str, why: Ended) -> None:
        """A parked socket ended for good (siogate.recovery): it leaves now."""
        if self.cluster is not None and reason != REASON_SERVER_SHUTDOWN:
            # Unless another node recovered it meanwhile (then: not a word).
            self._spawn(self._end_across(socket, reason, why))
            return
        self._forget(socket, reason, why)

    async def _end_across(self, socket: Socket, reason: str, why: Ended) -> None:
        assert self.cluster is not None
        owned = await self.cluster.end_now(socket.id)
        if self.hub.get(socket.namespace, socket.id) is not socket:
            return
        if owned:
            self._forget(socket, reason, why)
        else:
            self._drop_moved(socket)

    def _authenticate(self, auth: dict[str, Any] | None) -> Identity:
        if not self.options.verify_tokens:
            return ANONYMOUS
        token = None if auth is None else auth.get("token")
        if token is None:
            if self.options.allow_anonymous:
                return ANONYMOUS
            raise AuthError("missing token")
        return self.verifier.verify(token)

    def _refuse(self, link: Link, namespace: str, message: str, data: Any = None) -> None:
        self.metrics.connect_refused_total += 1
        link.session.refuse(namespace, message, data)

    async def _connect_with_handler(
        self,
        link: Link,
        socket: Socket,
        handle: ServerSocket,
        auth: dict[str, Any] | None,
        expires: float | None,
    ) -> None:
        assert self.handlers is not None and self.handlers.on_connect is not None
        try:
            await call(self.handlers.on_connect, handle, auth)
        except Refuse as exc:
            self._refuse(link, socket.namespace, exc.message, exc.data)
            link.flush()
            return
        except Exception:
            logger.exception("on_connect handler failed")
            self._refuse(link, socket.namespace, "Internal error")
            link.flush()
            return
        if handle._refused:
            self._refuse(link, socket.namespace, "refused")
        elif self._routed(socket.namespace, handle._rooms):
            self._accept(link, socket, handle._rooms, handle, expires)
        else:
            await self._accept_routed(link, socket, handle._rooms, expires, handle)
        link.flush()

    def _routed(self, namespace: Namespace, rooms: set[Room]) -> bool:
        """Whether commands for ``rooms`` reach this node already. If not, the rooms
        stay opened in the broker ahead of the socket (``_accept_routed`` closes them)."""
        if not rooms:
            return True
        for room in rooms:
            self.broker.room_opened(namespace, room)
        if self.broker.routed():
            for room in rooms:
                self.broker.room_closed(namespace, room)
            return True
        return False

    async def _accept_routed(
        self,
        link: Link,
        socket: Socket,
        rooms: set[Room],
        expires: float | None,
        handle: ServerSocket | None = None,
    ) -> None:
        """Accept ``socket`` once its rooms' shards are subscribed (bounded): the CONNECT
        answer, the connect webhook and presence come after, so that an emit to its
        rooms sent by whoever learned of the connect reaches it, as after a join."""
        try:
            async with asyncio.timeout(ROUTE_WAIT):
                await self.broker.route()
        except TimeoutError:
            self.broker.stats.ack_timeouts += 1
            logger.warning("a new socket's rooms were not routed here within %.1f s", ROUTE_WAIT)
        try:
            self._accept(link, socket, rooms, handle, expires)
        finally:
            for room in rooms:
                self.broker.room_closed(socket.namespace, room)
        link.flush()

    def _accept(
        self,
        link: Link,
        socket: Socket,
        rooms: set[Room],
        handle: ServerSocket | None,
        expires: float | None = None,
    ) -> None:
        session = link.session
        if session.state is not State.OPEN:
            session.pending.discard(socket.namespace)
            return
        self.hub.add(socket)
        for room in rooms:
            self.hub.join(socket, room)
        pid = None if self.recovery is None else self.recovery.connected(socket)
        if self.cluster is not None and pid is not None:
            self.cluster.connected(socket, pid, expires)
        session.accept(socket.namespace, socket.id, pid)
        self._announce("presence:join", socket, socket.rooms)
        for observer in self.observers:
            observer.socket_connected(socket)
        self.metrics.connections_total += 1
        if expires is not None:
            self._expire_at(link, socket, expires)
        if self.handlers is not None:
            handle = handle or ServerSocket(self, socket, link, set())
            self._handles[socket.id] = handle
            handle._connected = True
            if handle._early:
                # Sent a moment after the CONNECT answer, as the reference server's
                # write-then-drain cycle does: raw WebSocket clients that read one
                # message per wake-up (the protocol test suite) would miss the second
                # of two frames that arrive in the same read.
                loop = asyncio.get_running_loop()
                loop.call_later(EARLY_EMIT_DELAY, self._send_early, link, handle)
        if self.webhooks is not None:
            self.webhooks.notify(webhook_payload("connect", socket))
        if self.presence_tracker is not None and socket.user is not None:
            self.presence_tracker.add(socket.namespace, socket.user)

    def _expire_at(self, link: Link, socket: Socket, expires: float) -> None:
        """Close ``socket``'s whole session once its token has expired (plus the leeway).

        The session gets an Engine.IO CLOSE rather than a namespace DISCONNECT: the stock
        socket.io-client treats the first as a lost connection and reconnects by itself
        (calling an ``auth`` function again, so it can fetch a fresh token), while the
        second reads as "the server kicked me out" and stops it from reconnecting.
        """
        # exp is wall-clock time; the timer runs on the loop's monotonic clock.
        delay = max(0.0, expires + self.verifier.leeway - time.time())
        loop = asyncio.get_running_loop()
        self._expiry[socket.id] = loop.call_later(delay, self._token_expired, link, socket)

    def _token_expired(self, link: Link, socket: Socket) -> None:
        self._expiry.pop(socket.id, None)
        if self.hub.get(socket.namespace, socket.id) is not socket:
            return
        logger.debug("closing session of %s: its token expired", socket.id)
        link.close(REASON_TOKEN_EXPIRED)

    def _send_early(self, link: Link, handle: ServerSocket) -> None:
        for packet in handle._early:
            link.session.send(packet)
        handle._early.clear()
        link.flush()

    def _socket_of(self, link: Link, namespace: str) -> Socket | None:
        sid = link.session.namespaces.get(namespace)
        return None if sid is None else self.hub.get(Namespace(namespace), Sid(sid))

    def _on_left(self, namespace: str, sid: str, reason: str) -> None:
        socket = self.hub.get(Namespace(namespace), Sid(sid))
        if socket is None:
            return
        if self.recovery is not None and self._park(socket, reason):
            return
        self._forget(socket, reason)

    def _park(self, socket: Socket, reason: str) -> bool:
        """Keep a socket whose transport was lost for the recovery window: in the hub
        with its rooms, still counted as present, with no disconnect webhook yet."""
        assert self.recovery is not None
        if not self.recovery.park(socket, reason):
            return False
        if self.cluster is not None:
            self.cluster.parked(socket.id)
        self.acks.gone(socket.id)
        timer = self._expiry.pop(socket.id, None)
        if timer is not None:
            timer.cancel()
        return True

    def _forget(self, socket: Socket, reason: str, recovery: Ended | None = None) -> None:
        for observer in self.observers:
            observer.socket_disconnected(socket, reason)  # rooms still as they were
        rooms = list(socket.rooms)
        self.hub.remove(socket)
        self._announce("presence:leave", socket, rooms)
        self.acks.gone(socket.id)
        timer = self._expiry.pop(socket.id, None)
        if timer is not None:
            timer.cancel()
        self.metrics.disconnections_total += 1
        handle = self._handles.pop(socket.id, None)
        if self.recovery is not None:
            self.recovery.forget(socket.id)
        if self.cluster is not None:
            self.cluster.ended(socket.id)
        if self.webhooks is not None:
            payload = webhook_payload("disconnect", socket)
            payload["reason"] = reason
            if recovery is not None:
                # Ended after a transport loss: not recovered within the window.
                payload["recovery"] = recovery
            self.webhooks.notify(payload)
        if self.presence_tracker is not None and socket.user is not None:
            self.presence_tracker.remove(socket.namespace, socket.user)
        if handle is not None and self.handlers is not None and self.handlers.on_disconnect:
            self._spawn(self._run_hook(self.handlers.on_disconnect, handle, reason))

    async def _run_hook(self, hook: Any, *args: Any) -> None:
        try:
            await call(hook, *args)
        except Exception:
            logger.exception("handler %s failed", getattr(hook, "__name__", hook))

    def server_event(self, namespace: Namespace, event: str, args: list[Any]) -> bool:
        """Hand an emitter's serverSideEmit to the handlers' ``on_server_event`` (in a
        task); False when there is no such handler."""
        hook = self.handlers.on_server_event if self.handlers is not None else None
        if hook is None:
            return False
        if self._server_events >= MAX_SERVER_EVENTS:
            peer_log.warning(
                "server-events-full",
                "dropping serverSideEmit(%r): %d on_server_event calls are running",
                event,
                self._server_events,
            )
            return True
        self._server_events += 1
        self._spawn(self._server_event(hook, namespace, event, args))
        return True

    async def _server_event(
        self, hook: Any, namespace: Namespace, event: str, args: list[Any]
    ) -> None:
        try:
            await self._run_hook(hook, namespace, event, args)
        finally:
            self._server_events -= 1

    def disconnect_socket(self, socket: Socket, reason: str) -> None:
        """Server-side namespace disconnect of one local socket."""
        link = socket.link
        if isinstance(link, Parked):
            link.store.end(link, reason, "disconnected")
            return
        if link.session.disconnect(socket.namespace):
            self._forget(socket, reason)
        link.flush()

    def _on_event(self, link: Link, event: EventReceived) -> None:
        self.metrics.client_events_total += 1
        if link.session.state is not State.OPEN:
            return  # closed earlier in this batch (say, by the rate limit)
        socket = self._socket_of(link, event.namespace)
        if socket is not None:
            self.events.received(link, socket, event)

    def _presence_changed(self, kind: Transition, namespace: Namespace, user: UserId) -> None:
        if self.webhooks is not None:
            self.webhooks.notify({"type": kind, "namespace": namespace, "user": user})

    # Commands (called by the HTTP API)

    async def publish(self, commands: Sequence[Command]) -> None:
        if self.cluster is not None:
            offsets = await self.cluster.broker.publish_logged(commands)
            emits = [
                o for c, o in zip(commands, offsets, strict=True) if isinstance(c, EmitCommand)
            ]
            if emits:
                # Read by the API right after this returns (no await in between).
                self.last_offset = emits[-1]
            return
        await self.broker.publish(commands)

    def apply(self, commands: Sequence[Command]) -> None:
        """Apply commands to the local hub, in order (the broker's message handler)."""
        if self._hold:
            self._held.extend(commands)  # a recovery is reading the log (siogate.recovery_cluster)
            return
        for command in commands:
            if self.cluster is not None:
                self.cluster.applying(command.offset)
            if isinstance(command, EmitCommand):
                self._apply_emit(command)
            else:
                self._apply_sockets(command)

    def _apply_emit(self, command: EmitCommand) -> None:
        self.metrics.emits_total += 1
        seq, offset = 0, None
        if self.cluster is not None:
            offset = command.offset
        elif self.offsets is not None:
            seq, offset = self.offsets.next()
            self.last_offset = offset
            if self.history is not None:
                self.history.record(seq, int(time.time() * 1000), time.monotonic(), command)
        targets = self.hub.select(command.namespace, command.rooms, command.exclude)
        if self.cluster is not None and self.cluster.skip:
            skipped = self.cluster.skipped(command.offset)
            targets = [s for s in targets if s.id not in skipped]
        if not targets:
            # Common in a cluster: every node sees every emit, few hold its recipients.
            return
        recovery = self.recovery
        packet = socketio.event_packet(command.namespace, command.event, command.args)
        if recovery is None or offset is None:
            out = Outgoing(socketio.encode_messages(packet))
        else:
            # The offset goes last, where the stock client looks for it.
            out = Outgoing(socketio.encode_messages(packet, offset))
            if self.cluster is None:
                recovery.log(seq, command, out)
        # Encoded once above; each recipient gets the same objects (and, on WebSocket,
        # the same frame bytes, built by the first WebSocket recipient).
        for socket in targets:
            socket.link.write_broadcast(out)
        if self.cluster is not None and offset is not None:
            written = self.cluster.written
            for socket in targets:
                written[socket.id] = offset
        size = sum(len(m.encode()) if isinstance(m, str) else len(m) for m in out.messages)
        self.metrics.packets_out_total += len(targets)
        self.metrics.bytes_out_total += len(targets) * size

    def join_room(self, socket: Socket, room: Room) -> None:
        """Put a connected socket in ``room`` (a room.join webhook if that is new)."""
        was_in = room in socket.rooms
        self.hub.join(socket, room)
        if not was_in and room in socket.rooms:
            if self.cluster is not None:
                self.cluster.room_changed(socket, room, True)
            for observer in self.observers:
                observer.room_joined(socket, room)
            self._room_changed("room.join", socket, room)
            self._announce("presence:join", socket, (room,))

    def leave_room(self, socket: Socket, room: Room) -> None:
        """Take a connected socket out of ``room`` (a room.leave webhook if it was in)."""
        if room in socket.rooms:
            self.hub.leave(socket, room)
            if self.cluster is not None:
                self.cluster.room_changed(socket, room, False)
            for observer in self.observers:
                observer.room_left(socket, room)
            self._room_changed("room.leave", socket, room)
            self._announce("presence:leave", socket, (room,))

    def _room_changed(self, kind: str, socket: Socket, room: Room) -> None:
        # Rooms given at connect and dropped at disconnect are implied by those webhooks.
        if self.webhooks is not None and self.options.room_webhooks:
            payload = webhook_payload(kind, socket)
            payload["room"] = room
            self.webhooks.notify(payload)

    def _announce(self, kind: PresenceKind, socket: Socket, rooms: Iterable[Room]) -> None:
        """presence:join / presence:leave to the room's other members (siogate.presence_events)."""
        if self.presence_events is None:
            return
        commands = self.presence_events.commands(kind, socket, rooms, self.hub)
        if commands:
            # Through the broker, as an API emit: every node delivers to its own members.
            # In a task: this runs inside session events and command application.
            self._spawn(self._publish_presence(commands))

    async def _publish_presence(self, commands: list[EmitCommand]) -> None:
        try:
            await self.broker.publish(commands)
        except (BrokerUnavailable, RuntimeError) as exc:  # Redis down; the node closing
            peer_log.warning("presence-events", "presence events not sent: %s", exc)

    def _targets(self, command: SocketsCommand) -> list[Socket]:
        if command.sockets:
            found = (self.hub.get(command.namespace, sid) for sid in command.sockets)
            return [s for s in found if s is not None]
        return self.hub.select(command.namespace, command.rooms, command.exclude)

    def _apply_sockets(self, command: SocketsCommand) -> None:
        targets = self._targets(command)
        if self.cluster is not None and self.cluster.skip:
            skipped = self.cluster.skipped(command.offset)
            targets = [s for s in targets if s.id not in skipped]
        if command.action == "join":
            assert command.room is not None
            for socket in targets:
                self.join_room(socket, command.room)
        elif command.action == "leave":
            assert command.room is not None
            for socket in targets:
                self.leave_room(socket, command.room)
        elif command.close:
            for socket in targets:
                # As Socket.IO's disconnect(true): every socket of the connection, in
                # whatever namespace, is disconnected (the client will not reconnect
                # them), then the connection itself is closed.
                link = socket.link
                for namespace, sid in list(link.session.namespaces.items()):
                    other = self.hub.get(Namespace(namespace), Sid(sid))
                    if other is not None:
                        self.disconnect_socket(other, REASON_SERVER_NAMESPACE)
                link.close(REASON_FORCED_CLOSE)
        else:
            for socket in targets:
                self.disconnect_socket(socket, REASON_SERVER_NAMESPACE)

    # Queries: every node answers about its own hub; the asking node merges
    # (siogate.listings and siogate.presence). A paged query asks each node for one entry
    # more than the page, to learn whether another page follows.

    def answer(self, query: Query) -> Any:
        """This node's part of a cluster-wide query (the broker's query handler)."""
        if isinstance(query, RoomsQuery):
            return listings.local_rooms(self.hub, query)
        if isinstance(query, SocketsQuery):
            return listings.local_sockets(self.hub, query)
        if isinstance(query, PresenceQuery):
            return presence.local_presence(self.hub, query)
        if isinstance(query, RoomPresenceQuery):
            return presence.local_room_presence(self.hub, query)
        if isinstance(query, AdminQuery):
            return admin_snapshot.local(self.hub, query)
        if isinstance(query, StatsQuery):
            return self.stats.answer(query)
        return self.ack_emits.answer(query)

    async def emit_with_ack(
        self, command: EmitCommand, timeout_ms: int
    ) -> tuple[AckResult, Listing]:
        """Emit ``command`` with an ack id per recipient on every node, and wait
        (siogate.ack_emits)."""
        return await self.ack_emits.emit(command, timeout_ms)

    async def room_history(
        self, namespace: Namespace, room: Room, since: str | None, limit: int
    ) -> tuple[list[tuple[str, Message]], bool] | None:
        """Recent events of ``room`` (offset, message), oldest first, and whether they
        are complete; None when ``since`` is not an offset of this run (or history is
        off: check ``self.history`` first). Across nodes: from the Redis log."""
        assert self.history is not None and self.offsets is not None
        if self.cluster is not None:
            return await self.cluster.room_history(
                namespace, room, since, min(limit, self.history.options.size)
            )
        after = None
        if since is not None:
            after = self.offsets.parse(since)
            if after is None:
                return None
        messages, complete = self.history.query(namespace, room, after, limit, time.monotonic())
        offsets = self.offsets
        return [(offsets.format(m.seq), m) for m in messages], complete

    async def _ask(self, query: Query) -> Answers:
        return await self.broker.query(query, self.options.query_timeout)

    async def rooms(
        self, namespace: Namespace, after: Room | None = None, limit: int | None = None
    ) -> tuple[Page[tuple[Room, int]], Listing]:
        """Rooms of ``namespace`` over all nodes, by name, with summed member counts."""
        answers = await self._ask(RoomsQuery(namespace, after, _plus_one(limit)))
        return listings.merge_rooms(answers, after, limit), Listing.of(answers)

    async def sockets_in(
        self,
        namespace: Namespace,
        room: Room,
        after: Sid | None = None,
        limit: int | None = None,
    ) -> tuple[Page[tuple[Sid, UserId | None, str, bool]], Listing]:
        """Sockets in ``room`` over all nodes, by id: (id, user, node id, connected).

        Not connected: in its recovery window (see siogate.recovery)."""
        answers = await self._ask(SocketsQuery(namespace, room, after, _plus_one(limit)))
        return listings.merge_sockets(answers, after, limit), Listing.of(answers)

    async def presence(
        self, namespace: Namespace, users: tuple[UserId, ...]
    ) -> tuple[dict[UserId, int], Listing]:
        """Sockets of each of ``users`` over all nodes."""
        answers = await self._ask(PresenceQuery(namespace, users))
        return presence.merge_presence(answers, users), Listing.of(answers)

    async def room_presence(
        self,
        namespace: Namespace,
        room: Room,
        after: UserId | None = None,
        limit: int | None = None,
    ) -> tuple[Page[tuple[UserId, int]], int, Listing]:
        """Distinct users in ``room`` with their socket counts, and its anonymous sockets."""
        answers = await self._ask(RoomPresenceQuery(namespace, room, after, _plus_one(limit)))
        page, anonymous = presence.merge_room_presence(answers, after, limit)
        return page, anonymous, Listing.of(answers)

    async def cluster_stats(self, last: float | None = None) -> tuple[list[NodeStats], Listing]:
        """Every node's metrics and its samples of the last ``last`` seconds (siogate.stats)."""
        answers = await self._ask(StatsQuery(last))
        return merge_stats(answers), Listing.of(answers)


def _offset_key(offset: str) -> tuple[int, int]:
    return parse_offset(offset) or (0, 0)


def _plus_one(limit: int | None) -> int | None:
    return None if limit is None else limit + 1
