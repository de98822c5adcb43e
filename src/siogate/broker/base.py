"""The broker contract.

A broker carries commands from the node that received them (through the HTTP API) to
every node, the sender included, and asks every node a question (which rooms, which
sockets) on behalf of one. It never looks at sockets: each node hands it a
:data:`MessageHandler` that applies commands to its own hub and a :data:`QueryHandler`
that answers questions about it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from ..errors import SiogateError
from ..types import Namespace, Room, Sid, UserId


@dataclass(frozen=True, slots=True)
class EmitCommand:
    """Send ``event(*args)`` to the sockets of ``namespace`` selected by rooms."""

    namespace: Namespace
    event: str
    args: list[Any]
    rooms: tuple[Room, ...] = ()
    exclude: tuple[Room, ...] = ()
    # Its place in the cluster's recovery log (siogate.broker.recovering), set by the
    # broker on the way in; None without cross-node recovery.
    offset: str | None = None


@dataclass(frozen=True, slots=True)
class SocketsCommand:
    """Join, leave or disconnect the sockets named by id or selected by rooms."""

    action: Literal["join", "leave", "disconnect"]
    namespace: Namespace
    sockets: tuple[Sid, ...] = ()
    rooms: tuple[Room, ...] = ()
    room: Room | None = None
    # Sockets in any of these rooms are left out of the selection by rooms.
    exclude: tuple[Room, ...] = ()
    # Disconnect: also the sockets of the same client connection in other namespaces,
    # then close that connection, as Socket.IO's disconnect(true) does.
    close: bool = False
    # As EmitCommand.offset.
    offset: str | None = None


Command = EmitCommand | SocketsCommand


def with_offset(command: Command, offset: str) -> Command:
    """``command`` at ``offset`` in the recovery log: the logged brokers set one on every
    command they apply. Built field by field: ``dataclasses.replace`` walks the fields
    by introspection, 1.7 us a call against 0.7 here, once per command on every node."""
    if isinstance(command, EmitCommand):
        c = command
        return EmitCommand(c.namespace, c.event, c.args, c.rooms, c.exclude, offset)
    s = command
    return SocketsCommand(
        s.action, s.namespace, s.sockets, s.rooms, s.room, s.exclude, s.close, offset
    )


MessageHandler = Callable[[Sequence[Command]], None]
"""Applies commands to the local hub, in order."""


# Paged queries carry ``after`` (answer only keys sorting after it) and ``limit`` (at most
# that many entries); None for both: the whole answer, as nodes without paging give it.


@dataclass(frozen=True, slots=True)
class RoomsQuery:
    """Rooms of ``namespace`` with their member counts, by room name."""

    namespace: Namespace
    after: Room | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class SocketsQuery:
    """Sockets of ``namespace`` in ``room``, as ``[id, user]`` pairs, by socket id."""

    namespace: Namespace
    room: Room
    after: Sid | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class PresenceQuery:
    """How many sockets of ``namespace`` each of ``users`` has (see siogate.presence)."""

    namespace: Namespace
    users: tuple[UserId, ...]


@dataclass(frozen=True, slots=True)
class RoomPresenceQuery:
    """Distinct users in ``room`` with their socket counts, by user id, and the number of
    anonymous sockets there."""

    namespace: Namespace
    room: Room
    after: UserId | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class CountQuery:
    """How many sockets ``emit`` would reach on the node (checked before an ack emit)."""

    emit: EmitCommand


@dataclass(frozen=True, slots=True)
class AckEmitQuery:
    """Apply ``emit`` with an ack id per socket; answer with the sockets' replies once
    every one answered or left, or ``timeout_ms`` passed. A node that would reach more
    than ``max_recipients`` sockets sends nothing and says so."""

    emit: EmitCommand
    timeout_ms: int
    max_recipients: int


@dataclass(frozen=True, slots=True)
class AdminQuery:
    """The node's stats and at most ``limit`` of its sockets with their rooms, for the
    admin UI (see siogate.admin_snapshot)."""

    limit: int


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """The node's metrics now and its samples of the last ``last`` seconds (all it
    keeps when None), for the dashboard (see siogate.stats)."""

    last: float | None = None


Query = (
    RoomsQuery
    | SocketsQuery
    | PresenceQuery
    | RoomPresenceQuery
    | CountQuery
    | AckEmitQuery
    | AdminQuery
    | StatsQuery
)

QueryHandler = Callable[[Query], Any]
"""Answers a query about the local hub with a JSON-safe value, or with an awaitable of
one (an ack emit answers once its replies are in)."""


@dataclass(frozen=True, slots=True)
class Answers:
    """What the nodes answered to one query."""

    # (node id, answer) for each node that answered in time, this node first.
    answers: list[tuple[str, Any]]
    # Nodes known to be alive that did not answer in time.
    missing: tuple[str, ...] = ()
    # False when the set of live nodes could not be read (the broker is unreachable).
    complete: bool = True


# How a broker asks the other live nodes: (this node's answer, the query, timeout).
AskOthers = Callable[[Any, "Query", float], Awaitable[Answers]]


async def gather_answers(
    node_id: str, own: Any, ask_others: AskOthers, query: Query, timeout: float
) -> Answers:
    """Every live node's answer, this node's first. ``own`` is what this node's query
    handler returned: an answer that takes time (an ack emit) runs while the others work
    on theirs."""
    if not inspect.isawaitable(own):
        return await ask_others(own, query, timeout)
    local: asyncio.Future[Any] = asyncio.ensure_future(own)
    others = await ask_others(None, query, timeout)
    value = await local
    return Answers([(node_id, value), *others.answers[1:]], others.missing, others.complete)


class BrokerUnavailable(SiogateError):
    """The broker cannot reach the other nodes; nothing was published."""


@dataclass(slots=True)
class BrokerStats:
    """Health and counters a broker reports (read by ``/healthz`` and ``/metrics``)."""

    connected: bool = True
    # Why the broker is disconnected, while it is.
    error: str | None = None
    # Unix time of the last change of ``connected``.
    since: float = 0.0
    reconnects: int = 0
    publish_failures: int = 0
    messages_out: int = 0
    messages_in: int = 0
    messages_invalid: int = 0
    # Other nodes seen alive at the last heartbeat.
    peers: int = 0
    # Room shard channels this node is subscribed to (siogate.broker.routing).
    shards: int = 0
    # Joins, leaves and disconnects answered before every node that received them
    # confirmed (a node died or stalled), and new sockets accepted before their rooms
    # were routed here (ROUTE_WAIT); see docs/cluster.md, "Routing".
    ack_timeouts: int = 0


class Guard(NamedTuple):
    """A condition on one publish: it happens only if ``key`` is free, and in the same
    atomic step ``key`` is set to ``value``, expiring after ``ttl_ms`` (see
    :class:`GuardedPublisher`). Idempotency keys use it to claim a key, record the
    answer and publish in one round trip. (A named tuple: one is made per request, and
    a frozen dataclass takes several times as long to make.)"""

    key: str
    value: str
    ttl_ms: int


@runtime_checkable
class GuardedPublisher(Protocol):
    """A broker that can publish under a :class:`Guard` (the Redis broker). Brokers
    without a shared keyspace need not: callers check for it."""

    async def publish_guarded(self, commands: Sequence[Command], guard: Guard) -> bytes | None:
        """Publish ``commands`` as :meth:`Broker.publish` does, but only if ``guard.key``
        is free. None: published (and applied on this node), the key now holds
        ``guard.value``. Otherwise the key's value: nothing was published.

        Raises :class:`BrokerUnavailable` as ``publish`` does; the key was then not set
        unless the batch was published too (the connection broke after Redis ran it).
        """


class Unrouted:
    """The routing half of :class:`Broker` for a broker that routes nothing by room: every
    command reaches every node (one process; recovery's single log)."""

    def room_opened(self, namespace: Namespace, room: Room) -> None:
        pass

    def room_closed(self, namespace: Namespace, room: Room) -> None:
        pass

    def routed(self) -> bool:
        return True

    async def route(self) -> None:
        pass


class Broker(Protocol):
    """Carries command batches to every node; a batch keeps its order on each node."""

    # This node's id: a short token, unique in the cluster.
    node_id: str
    stats: BrokerStats

    async def start(self, handler: MessageHandler, answer: QueryHandler) -> None:
        """Begin delivering published batches to ``handler`` and queries to ``answer``."""

    async def publish(self, commands: Sequence[Command]) -> None:
        """Send one batch to all nodes. Returns once the local node has applied it.

        The handler may be given the batch in consecutive segments (the Redis broker cuts
        it after each join, leave or disconnect), always in order.

        Raises :class:`BrokerUnavailable` when the batch could not be handed on; it has
        then not been applied on this node (nor, unless the connection broke after the
        broker received it, on any other).
        """

    async def query(self, query: Query, timeout: float) -> Answers:
        """Ask every live node, this one included; wait at most ``timeout`` seconds."""

    async def node_url(self, node_id: str) -> str | None:
        """The URL another node advertises (for forwarding requests), if it is alive."""

    async def close(self) -> None:
        """Stop delivering and release connections."""

    def room_opened(self, namespace: Namespace, room: Room) -> None:
        """A named room got its first member on this node (the hub's RoomWatcher)."""

    def room_closed(self, namespace: Namespace, room: Room) -> None:
        """A named room lost its last member on this node."""

    def routed(self) -> bool:
        """Whether commands for every room opened so far reach this node already (True
        where nothing is routed by room, or while the broker is disconnected)."""

    async def route(self) -> None:
        """Returns once :meth:`routed` holds; callers bound the wait. A new socket's
        CONNECT answer waits for it (``Node``), so that an emit to its rooms sent after
        the client is connected reaches it."""
