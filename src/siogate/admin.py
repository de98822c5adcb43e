"""The namespace that @socket.io/admin-ui (0.5.x) speaks to (``serve --admin``).

The UI connects a stock socket.io-client to ``/admin`` with ``auth: {username,
password}`` (or ``{sessionId}`` once it has one) and then reads:

- ``session`` (a session id, after a password login), ``config``
  (``{supportedFeatures}``), ``all_sockets`` (every socket, once);
- ``socket_connected``, ``room_joined``, ``room_left``, ``socket_disconnected`` as they
  happen, and ``server_stats`` from every node every few seconds.

It sends ``join`` / ``leave`` (``nsp, room, filter``), ``_disconnect``
(``nsp, close, filter``) and ``emit`` (``nsp, filter, event, *args``), with no ack;
``filter`` is a room or a socket id, absent for the whole namespace. Those become the
node's ordinary commands, published through the broker, so they reach sockets on any
node.

This node's socket changes are reported live (the node's observer hooks). Other nodes'
sockets come from :class:`~siogate.broker.AdminQuery` answers every ``stats_interval``
seconds, diffed against the previous answer: with ``--redis-url`` the UI sees a socket on
another node within that interval.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import bcrypt

from . import admin_snapshot
from .admin_snapshot import BadSnapshot, SocketView
from .broker import AdminQuery, BrokerUnavailable, Command, EmitCommand, SocketsCommand
from .hub import Link, Socket, is_socket_id
from .node import MAX_NAME, Node
from .protocol import socketio
from .protocol.events import ConnectRequested, EventReceived
from .protocol.session import State
from .ratelog import RateLimitedLog
from .types import Namespace, Room, Sid, new_socket_id

logger = logging.getLogger("siogate.admin")
peer_log = RateLimitedLog(logger)

DEFAULT_NAMESPACE = "/admin"
# The UI refuses to log in again unless the error says exactly this.
INVALID_CREDENTIALS = "invalid credentials"
# bcrypt reads at most 72 bytes of a password; longer ones are refused, not cut.
MAX_PASSWORD_BYTES = 72
# Password checks running at once (each costs a bcrypt hash, ~0.1 s of a core at cost
# 10, in a thread); a login beyond that is refused rather than queued.
MAX_CHECKS = 4
# Session ids handed out after a password login (the UI reconnects with one); the
# oldest is forgotten first.
MAX_SESSIONS = 1_000
SESSION_TTL = 24 * 3600.0
# Admin connections at once, on this node.
MAX_ADMINS = 50

# What the UI may ask for. No AGGREGATED_EVENTS (packet and byte counts per second) and
# no ALL_EVENTS (every event in and out): without both the UI shows its socket, room and
# client views, which is what this serves.
FEATURES = ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]


@dataclass(frozen=True, slots=True)
class AdminOptions:
    namespace: str = DEFAULT_NAMESPACE
    username: str = "admin"
    # A bcrypt hash ("$2b$..."); None: no authentication (loopback only, see app).
    password_hash: bytes | None = None
    # Seconds between server_stats (and polls of the other nodes).
    stats_interval: float = 2.0
    # Sockets each node lists at most. The asking node checks every answer on its loop
    # every stats_interval: 10,000 sockets took 18 ms to list and 78 ms to check on a
    # 2-vCPU VM, 2,000 stay well under the 50 ms stall siogate holds itself to.
    max_sockets: int = 2_000


def check_hash(password_hash: str) -> bytes:
    """The hash as bytes; ValueError when it is not a bcrypt hash."""
    raw = password_hash.encode()
    try:
        # A wrong password against a well-formed hash is False; a malformed hash raises.
        bcrypt.checkpw(b"", raw)
    except ValueError:
        raise ValueError("not a bcrypt hash (expected $2a$, $2b$ or $2y$...)") from None
    return raw


def _now() -> str:
    # The UI reads a JavaScript Date; JSON carries it as an ISO 8601 string.
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _serialize(view: SocketView) -> dict[str, Any]:
    # The UI's SerializedSocket. siogate keeps no request headers per socket, so the
    # handshake is empty; data carries the authenticated user, if any.
    return {
        "id": view.id,
        "clientId": view.client[:12],
        "transport": view.transport,
        "nsp": view.namespace,
        "data": {} if view.user is None else {"user": view.user},
        "handshake": {"address": "", "headers": {}, "query": {}, "issued": 0},
        # A socket is in the room named by its own id, as in Socket.IO.
        "rooms": [view.id, *view.rooms],
    }


def _view(socket: Socket) -> SocketView:
    return SocketView(
        socket.namespace,
        socket.id,
        socket.link.session.sid,
        admin_snapshot.transport_of(socket.link),
        socket.user,
        tuple(sorted(socket.rooms)),
    )


class Admin:
    """Serves the admin namespace on one node."""

    def __init__(self, node: Node, options: AdminOptions) -> None:
        self.node = node
        self.options = options
        self.namespace = options.namespace
        # Admin connections, with their socket ids.
        self._admins: dict[Link, Sid] = {}
        self._checks = 0
        self._sessions: OrderedDict[str, float] = OrderedDict()
        # Other nodes' sockets at the last poll, by node id.
        self._remote: dict[str, dict[tuple[Namespace, Sid], SocketView]] = {}
        # This node's sockets' transports as last reported (an upgrade is seen at a poll).
        self._transports: dict[Socket, str] = {}
        self._poll_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def install(self) -> None:
        self.node.services[self.namespace] = self
        self.node.observers.append(self)

    async def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._stats_loop())

    async def close(self) -> None:
        for task in [self._loop_task, *self._tasks]:
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(t for t in [self._loop_task, *self._tasks] if t is not None),
            return_exceptions=True,
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("admin task failed", exc_info=task.exception())

    # NamespaceService (called by the node)

    def connect(self, link: Link, event: ConnectRequested) -> None:
        auth = event.auth or {}
        if len(self._admins) >= MAX_ADMINS:
            self._refuse(link, "too many admin connections")
            return
        if self.options.password_hash is None:
            self._accept(link, None)
            return
        session_id = auth.get("sessionId")
        if isinstance(session_id, str) and self._session_valid(session_id):
            self._accept(link, None)
            return
        username, password = auth.get("username"), auth.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            self._refuse(link, INVALID_CREDENTIALS)
            return
        secret = password.encode("utf-8", "surrogatepass")
        if len(secret) > MAX_PASSWORD_BYTES or len(username) > MAX_NAME:
            self._refuse(link, INVALID_CREDENTIALS)
            return
        if self._checks >= MAX_CHECKS:
            self._refuse(link, "too many logins at once, try again")
            return
        self._checks += 1
        self._spawn(self._login(link, username, secret))

    async def _login(self, link: Link, username: str, secret: bytes) -> None:
        assert self.options.password_hash is not None
        try:
            # The hash runs even for a wrong user name, so timing does not tell which.
            matches = await asyncio.to_thread(bcrypt.checkpw, secret, self.options.password_hash)
        finally:
            self._checks -= 1
        expected = self.options.username.encode()
        if matches and hmac.compare_digest(username.encode(), expected):
            self._accept(link, self._new_session())
        else:
            peer_log.warning("admin-login", "admin login refused for %s", link.session.sid)
            self._refuse(link, INVALID_CREDENTIALS)
        link.flush()

    def _session_valid(self, session_id: str) -> bool:
        expires = self._sessions.get(session_id)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._sessions[session_id]
            return False
        return True

    def _new_session(self) -> str:
        session_id = secrets.token_hex(16)
        self._sessions[session_id] = time.monotonic() + SESSION_TTL
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session_id

    def _refuse(self, link: Link, message: str) -> None:
        self.node.metrics.connect_refused_total += 1
        link.session.refuse(self.namespace, message)

    def _accept(self, link: Link, session_id: str | None) -> None:
        session = link.session
        if session.state is not State.OPEN:
            session.pending.discard(self.namespace)
            return
        sid = new_socket_id()
        session.accept(self.namespace, sid)
        self._admins[link] = sid
        if session_id is not None:
            self._send(link, "session", session_id)
        self._send(link, "config", {"supportedFeatures": FEATURES})
        self._spawn(self._welcome(link))

    async def _welcome(self, link: Link) -> None:
        try:
            await self._poll()
        except Exception:
            # Redis unreachable, say: the UI still gets this node's sockets.
            logger.exception("admin poll failed; listing this node's sockets only")
        if link not in self._admins:
            return
        # This node's sockets as they are now (live events since were already sent);
        # the others' as of the poll just made.
        hub = self.node.hub
        views: list[SocketView] = []
        for socket in [s for ns in hub.namespaces() for s in hub.select(ns)]:
            if len(views) >= self.options.max_sockets:
                break
            view = _view(socket)
            self._transports[socket] = view.transport
            views.append(view)
        for sockets in self._remote.values():
            views.extend(sockets.values())
        self._send(link, "all_sockets", [_serialize(v) for v in views])

    def event(self, link: Link, event: EventReceived) -> None:
        if link not in self._admins or not isinstance(event.event, str):
            return
        try:
            command = self._command(event.event, event.args)
        except ValueError as exc:
            peer_log.warning("admin-action", "admin action %r refused: %s", event.event, exc)
            return
        if command is not None:
            self._spawn(self._publish([command]))
        if event.ack_id is not None:
            packet = socketio.Packet(socketio.PacketType.ACK, self.namespace, [], event.ack_id)
            link.session.send(packet)
            link.flush()

    def left(self, link: Link, reason: str) -> None:
        self._admins.pop(link, None)

    # Actions

    def _command(self, name: str, args: list[Any]) -> Command | None:
        if name in ("join", "leave"):
            nsp, room, target = _args(args, 2, 3)
            room = _name(room, "room")
            if is_socket_id(room):
                raise ValueError("a room named like a socket id cannot be joined or left")
            sockets, rooms = _filter(target)
            action: Literal["join", "leave"] = "join" if name == "join" else "leave"
            return SocketsCommand(action, _namespace(nsp), sockets, rooms, Room(room))
        if name == "_disconnect":
            # close=True (end the whole connection) is served as a namespace disconnect.
            nsp, _close, target = _args(args, 2, 3)
            sockets, rooms = _filter(target)
            return SocketsCommand("disconnect", _namespace(nsp), sockets, rooms)
        if name == "emit":
            if len(args) < 3:
                raise ValueError("emit needs a namespace, a filter and an event")
            nsp, target, event = args[:3]
            if target is not None and not isinstance(target, str):
                raise ValueError("the filter must be a string")
            rooms = () if not target else (Room(_name(target, "filter")),)
            return EmitCommand(_namespace(nsp), _name(event, "event"), list(args[3:]), rooms)
        return None

    async def _publish(self, commands: Sequence[Command]) -> None:
        try:
            await self.node.publish(commands)
        except BrokerUnavailable as exc:
            logger.warning("admin action not applied: %s", exc)

    # SocketObserver (this node's sockets)

    def socket_connected(self, socket: Socket) -> None:
        if self._admins:
            view = _view(socket)
            self._transports[socket] = view.transport
            self._broadcast("socket_connected", _serialize(view), _now())

    def socket_disconnected(self, socket: Socket, reason: str) -> None:
        self._transports.pop(socket, None)
        if self._admins:
            now = _now()
            for room in [socket.id, *sorted(socket.rooms)]:
                self._broadcast("room_left", socket.namespace, room, socket.id, now)
            self._broadcast("socket_disconnected", socket.namespace, socket.id, reason, now)

    def room_joined(self, socket: Socket, room: Room) -> None:
        if self._admins:
            self._broadcast("room_joined", socket.namespace, room, socket.id, _now())

    def room_left(self, socket: Socket, room: Room) -> None:
        if self._admins:
            self._broadcast("room_left", socket.namespace, room, socket.id, _now())

    # Sending

    def _send(self, link: Link, event: str, *args: Any) -> None:
        link.session.send(socketio.event_packet(self.namespace, event, list(args)))
        link.flush()

    def _broadcast(self, event: str, *args: Any) -> None:
        for link in list(self._admins):
            self._send(link, event, *args)

    # Stats and the other nodes

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.stats_interval)
            if self._admins:
                try:
                    await self._poll()
                except Exception:
                    logger.exception("admin poll failed")

    async def _poll(self) -> None:
        """Ask every node; send each one's server_stats and the changes of other
        nodes' sockets since the last poll."""
        async with self._poll_lock:
            node = self.node
            query = AdminQuery(self.options.max_sockets)
            answers = await node.broker.query(query, node.options.query_timeout)
            seen = {node.broker.node_id}
            for node_id, answer in answers.answers:
                try:
                    snapshot = admin_snapshot.parse(answer)
                except BadSnapshot as exc:
                    peer_log.warning("admin-answer", "node %s: bad admin answer: %s", node_id, exc)
                    continue
                seen.add(node_id)
                if snapshot.truncated:
                    peer_log.warning(
                        "admin-truncated",
                        "node %s lists only %d of its sockets to the admin UI",
                        node_id,
                        len(snapshot.sockets),
                    )
                self._broadcast("server_stats", self._stats(node_id, snapshot))
                if node_id != node.broker.node_id:
                    self._update_remote(node_id, snapshot)
            if answers.complete:
                seen.update(answers.missing)
                for gone in [n for n in self._remote if n not in seen]:
                    self._update_remote(gone, None)
            self._update_transports()

    def _update_transports(self) -> None:
        """socket_updated for this node's sockets whose transport changed (an upgrade)."""
        hub = self.node.hub
        for socket in [s for ns in hub.namespaces() for s in hub.select(ns)]:
            transport = admin_snapshot.transport_of(socket.link)
            if self._transports.get(socket) != transport:
                known = socket in self._transports
                self._transports[socket] = transport
                if known and self._admins:
                    update = {"id": socket.id, "nsp": socket.namespace, "transport": transport}
                    self._broadcast("socket_updated", update)

    def _stats(self, node_id: str, snapshot: admin_snapshot.Snapshot) -> dict[str, Any]:
        namespaces = dict(snapshot.namespaces)
        if node_id == self.node.broker.node_id:
            namespaces[self.namespace] = len(self._admins)
        return {
            "serverId": node_id,
            "hostname": snapshot.hostname,
            "pid": snapshot.pid,
            "uptime": snapshot.uptime,
            "clientsCount": snapshot.clients,
            "pollingClientsCount": snapshot.polling,
            "namespaces": [{"name": n, "socketsCount": c} for n, c in namespaces.items()],
        }

    def _update_remote(self, node_id: str, snapshot: admin_snapshot.Snapshot | None) -> None:
        before = self._remote.get(node_id, {})
        after = {} if snapshot is None else {(v.namespace, v.id): v for v in snapshot.sockets}
        if snapshot is None:
            self._remote.pop(node_id, None)
        else:
            self._remote[node_id] = after
        if not self._admins:
            return
        now = _now()
        for key, view in after.items():
            old = before.get(key)
            if old is None:
                self._broadcast("socket_connected", _serialize(view), now)
                continue
            if view.transport != old.transport:
                update = {"id": view.id, "nsp": view.namespace, "transport": view.transport}
                self._broadcast("socket_updated", update)
            for room in sorted(set(view.rooms) - set(old.rooms)):
                self._broadcast("room_joined", view.namespace, room, view.id, now)
            for room in sorted(set(old.rooms) - set(view.rooms)):
                self._broadcast("room_left", view.namespace, room, view.id, now)
        for key, old in before.items():
            if key not in after:
                for gone in [old.id, *old.rooms]:
                    self._broadcast("room_left", old.namespace, gone, old.id, now)
                self._broadcast("socket_disconnected", old.namespace, old.id, "gone", now)


def _args(args: list[Any], least: int, most: int) -> list[Any]:
    if not least <= len(args) <= most:
        raise ValueError(f"expected {least} to {most} arguments, got {len(args)}")
    return [*args, *[None] * (most - len(args))]


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise ValueError(f"the {what} must be a string of 1 to {MAX_NAME} characters")
    return value


def _namespace(value: Any) -> Namespace:
    name = _name(value, "namespace")
    if not name.startswith("/"):
        raise ValueError("a namespace starts with '/'")
    return Namespace(name)


def _filter(target: Any) -> tuple[tuple[Sid, ...], tuple[Room, ...]]:
    """A socket id selects that socket, another name a room, none the whole namespace."""
    if target is None or target == "":
        return (), ()
    name = _name(target, "filter")
    if is_socket_id(name):
        return (Sid(name),), ()
    return (), (Room(name),)
