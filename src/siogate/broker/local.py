"""The workers' broker: processes of one machine exchange commands through a relay.

``siogate serve --workers N`` without ``--redis-url`` runs N worker processes, each one a
node of a small cluster. Their coordinator is not Redis but :class:`LocalRelay`, a Unix
socket server in the primary process that does what Redis pub/sub does for nodes:

* a worker's commands go to the other workers that may hold a recipient (see
  "Routing" below), its listing questions to every other worker, in the order the relay
  received them (one stream per worker, one loop in the relay);
* an answer goes to the worker that asked;
* the relay keeps the registry: which workers are connected and the URL each one
  advertises (its private listener, for forwarded long-polling requests). Every change is
  sent to every worker, in line with the messages, so a worker that dies stops being
  expected by the listings at once.

The relay never parses the messages: they are the cluster's wire format
(:mod:`siogate.broker.wire`), produced and checked by the workers. With recovery on
(``--recovery-window``) every command goes through the relay's log instead
(:mod:`siogate.broker.relay_log`): a ``LOGGED`` frame carries the log entries and the
message, and the relay appends the entries' offsets to the message's end before it
passes it on to every worker, the sender included.

Routing (as cluster mode routes through Redis channels, :mod:`siogate.broker.routing`):
a worker tags each part of a batch with its destination (a room shard, the worker that
holds a socket, or every worker) and the relay passes it only to the workers that want
it. A worker tells the relay which shards it wants (``SUBSCRIBE``/``UNSUBSCRIBE``
frames, kept by :class:`~siogate.broker.shards.ShardSubscriptions`) when a room gets its
first local member, and lets a shard go :data:`~siogate.broker.shards.LINGER` seconds
after its last one left. The relay reads each worker's frames in order, so a worker's
subscribe is in force for every message the relay reads after it.

"Join, then emit" holds with one round trip more than before: a part that joins, leaves
or disconnects is sent as ``PUBLISH_SYNC``; the relay passes it on as ``COMMANDS_SYNC``
and each receiving worker, once it has applied it (and so written its subscribes, ahead
on its own stream), answers ``CONFIRM``. When every receiver confirmed (or left) the
relay sends the publisher ``SETTLED``, and only then does the publish return. A batch is
published in segments cut after each join (:func:`~siogate.broker.routing.segments`),
so that a command following a join in one batch finds the joined socket's worker
subscribed. The publisher's own subscribes count as in force once the relay acknowledged
them. No subscription needs its own confirmation: the single relay is the only place
that routes.

Frames, both ways: a 4-byte big-endian body length, a 1-byte kind, the body. The relay
answers every frame a worker sends with a cumulative count (``ACK``), sent after it has
passed the frame on. :meth:`LocalBroker.publish` returns (and applies the batch on its own
worker) only then, so a command answered ``200`` by one worker is ahead, on every worker
it reaches, of any command published after that answer through any worker; with the
confirmation of joins (above), a join through one worker followed by an emit through
another reaches the joined socket, as with Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import secrets
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from ..types import Namespace, Room
from . import routing, wire
from .base import (
    Answers,
    Broker,
    BrokerStats,
    BrokerUnavailable,
    Command,
    MessageHandler,
    Query,
    QueryHandler,
    gather_answers,
)
from .relay_log import RelayLog
from .shards import LINGER, ShardSubscriptions

logger = logging.getLogger("siogate.broker")

# Frame kinds. Worker -> relay: HELLO, PUBLISH, QUERY, ANSWER, CALL. Relay -> worker:
# MEMBERS, ACK, COMMANDS, QUERY, ANSWER, REPLY. A CALL (8-byte id, then a request) goes
# to the primary's own service (the shared idempotency store); its REPLY carries the id.
HELLO, PUBLISH, QUERY, ANSWER, MEMBERS, ACK, COMMANDS, CALL, REPLY = range(1, 10)
# Routing (see the module's docstring). Worker -> relay: PUBLISH_SYNC (an 8-byte id after
# the destination), SUBSCRIBE and UNSUBSCRIBE (4-byte shard numbers), CONFIRM (the relay's
# 8-byte token). Relay -> worker: COMMANDS_SYNC (token, then the message), SETTLED (id).
PUBLISH_SYNC, SUBSCRIBE, UNSUBSCRIBE, CONFIRM, COMMANDS_SYNC, SETTLED = range(10, 16)
# Recovery (siogate.broker.relay_log). Worker -> relay: LOGGED (a 4-byte count n, n log
# entries each after its 4-byte length, then the message); the relay appends the entries
# to its log and passes the message, with their offsets, to every worker, the sender too.
LOGGED = 16
# A PUBLISH's destination: its first byte, then a 4-byte shard or a 1-byte-long node id.
TO_ALL, TO_SHARD, TO_NODE, TO_NOBODY = range(4)
_SHARD = struct.Struct(">I")
_LENGTH = struct.Struct(">I")
_CALL_ID = struct.Struct(">Q")

Service = Callable[[bytes], Awaitable[bytes]]
"""What the primary answers a worker's call with (bytes in, bytes out)."""
_HEADER = struct.Struct(">IB")
_COUNT = struct.Struct(">Q")
# The largest frame either side accepts (a command batch is at most an API body).
MAX_FRAME = 64 << 20
# Bytes the relay may have queued for one worker that does not read; over it the worker
# is cut off (as Redis cuts a subscriber 32 MB behind), and the supervisor restarts it.
MAX_BEHIND = 64 << 20
# Seconds a worker waits at start for the relay's first registry.
START_WAIT = 5.0
# Seconds a join, leave or disconnect waits for the workers that received it to confirm
# (a stalled worker; a dead one is not waited for): then answered anyway and counted in
# ``ack_timeouts``, as with Redis.
ACK_TIMEOUT = 2.0


def frame(kind: int, body: bytes) -> bytes:
    return _HEADER.pack(len(body), kind) + body


def destination(to: routing.Destination) -> bytes:
    """A PUBLISH's destination header."""
    if to.kind == "shard":
        return bytes([TO_SHARD]) + _SHARD.pack(int(to.key))
    if to.kind == "node":
        key = to.key.encode()
        return bytes([TO_NODE, len(key)]) + key
    return bytes([TO_ALL])


_NOBODY = bytes([TO_NOBODY])


def logged(entries: Sequence[bytes], message: bytes) -> bytes:
    """A LOGGED frame's body: ``entries`` to log, ``message`` (a wire object) to pass on."""
    sized = b"".join(_LENGTH.pack(len(e)) + e for e in entries)
    return _LENGTH.pack(len(entries)) + sized + message


def split_logged(body: bytes) -> tuple[list[bytes], bytes]:
    """:func:`logged` undone; raises ValueError (or struct.error) when malformed."""
    count = _LENGTH.unpack_from(body)[0]
    at = _LENGTH.size
    entries = []
    for _ in range(count):
        size = _LENGTH.unpack_from(body, at)[0]
        at += _LENGTH.size
        if at + size > len(body):
            raise ValueError("an entry runs past the frame")
        entries.append(body[at : at + size])
        at += size
    message = body[at:]
    if not entries or not message.endswith(b"}"):
        raise ValueError("a logged publish carries entries and a wire object")
    return entries, message


class FrameReader:
    """Splits a byte stream into ``(kind, body)`` frames (sans-I/O)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, bytes]] = []
        start = 0
        while len(buffer) - start >= _HEADER.size:
            length, kind = _HEADER.unpack_from(buffer, start)
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes")
            end = start + _HEADER.size + length
            if len(buffer) < end:
                break
            frames.append((kind, bytes(buffer[start + _HEADER.size : end])))
            start = end
        del buffer[:start]
        return frames


# The relay (in the primary process)


class _RelayPeer(asyncio.Protocol):
    """One worker's connection to the relay."""

    def __init__(self, relay: LocalRelay) -> None:
        self.relay = relay
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None
        self.node: str | None = None
        self.received = 0
        self.shards: set[int] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except ValueError as exc:
            logger.warning("relay: closing a worker's connection: %s", exc)
            self.close()
            return
        if not frames:
            return
        for kind, body in frames:
            self.relay.route(self, kind, body)
            self.received += 1
        # One acknowledgement for everything this read brought, after passing it on.
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(ACK, _COUNT.pack(self.received)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.leave(self)

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_BEHIND:
            logger.warning("relay: worker %s is %d bytes behind; cut off", self.node, MAX_BEHIND)
            transport.abort()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class LocalRelay:
    """Passes the workers' messages between them and keeps who is connected."""

    def __init__(
        self,
        path: str,
        service: Service | None = None,
        on_leave: Callable[[str], None] | None = None,
        log: RelayLog | None = None,
    ) -> None:
        self.path = path
        self._service = service
        # With recovery: the command log that LOGGED frames go through.
        self.log = log
        # Told the node id of each worker whose connection closed.
        self._on_leave = on_leave
        self._calls: set[asyncio.Task[None]] = set()
        self._peers: dict[str, _RelayPeer] = {}
        self._urls: dict[str, str | None] = {}
        self._server: asyncio.AbstractServer | None = None
        # shard -> the workers subscribed to it.
        self._shards: dict[int, set[_RelayPeer]] = {}
        # token -> (publisher, its id, receivers that have not confirmed yet).
        self._syncs: dict[int, tuple[_RelayPeer, bytes, set[_RelayPeer]]] = {}
        self._next_token = 0
        # Messages passed on to workers, and messages that nobody wanted (a room shard
        # no other worker subscribes to, a gone worker's socket).
        self.forwarded = 0
        self.unrouted = 0

    @property
    def nodes(self) -> dict[str, str | None]:
        """Connected workers: node id -> advertised URL."""
        return dict(self._urls)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _RelayPeer(self), self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._calls:
            task.cancel()
        for peer in list(self._peers.values()):
            peer.close()
        if self._server is not None:
            await self._server.wait_closed()

    def route(self, peer: _RelayPeer, kind: int, body: bytes) -> None:
        if peer.node is None:
            if kind != HELLO:
                peer.close()
                return
            self._hello(peer, body)
        elif kind == PUBLISH or kind == PUBLISH_SYNC:
            self._publish(peer, kind == PUBLISH_SYNC, body)
        elif kind == LOGGED:
            self._logged(peer, body)
        elif kind == SUBSCRIBE or kind == UNSUBSCRIBE:
            self._subscribe(peer, kind == SUBSCRIBE, body)
        elif kind == CONFIRM:
            self._confirm(peer, _COUNT.unpack(body)[0])
        elif kind == QUERY:
            out = frame(QUERY, body)
            for node, other in self._peers.items():
                if node != peer.node:
                    other.send(out)
        elif kind == CALL:
            task = asyncio.ensure_future(self._call(peer, body))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        elif kind == ANSWER:
            size = body[0]
            target = self._peers.get(body[1 : 1 + size].decode("utf-8", "replace"))
            if target is not None:
                target.send(frame(ANSWER, body[1 + size :]))
        else:
            logger.warning("relay: unknown frame kind %d from worker %s", kind, peer.node)

    def _receivers(self, peer: _RelayPeer, body: bytes) -> tuple[list[_RelayPeer], int]:
        """The workers a PUBLISH's destination names, and where its message starts."""
        to = body[0]
        if to == TO_SHARD:
            wanting = self._shards.get(_SHARD.unpack_from(body, 1)[0], ())
            return [p for p in wanting if p is not peer], 1 + _SHARD.size
        if to == TO_NODE:
            size = body[1]
            target = self._peers.get(body[2 : 2 + size].decode("utf-8", "replace"))
            return ([target] if target is not None and target is not peer else []), 2 + size
        if to == TO_ALL:
            return [p for p in self._peers.values() if p is not peer], 1
        return [], 1

    def _publish(self, peer: _RelayPeer, sync: bool, body: bytes) -> None:
        try:
            receivers, start = self._receivers(peer, body)
        except (IndexError, struct.error):
            logger.warning("relay: a malformed publish from worker %s", peer.node)
            return
        if not sync:
            if receivers:
                out = frame(COMMANDS, body[start:])
                for other in receivers:
                    other.send(out)
                self.forwarded += 1
            else:
                self.unrouted += 1
            return
        request = body[start : start + _COUNT.size]
        if not receivers:
            self.unrouted += 1
            peer.send(frame(SETTLED, request))
            return
        self._next_token += 1
        token = self._next_token
        self._syncs[token] = (peer, request, set(receivers))
        out = frame(COMMANDS_SYNC, _COUNT.pack(token) + body[start + _COUNT.size :])
        for other in receivers:
            other.send(out)
        self.forwarded += 1

    def _logged(self, peer: _RelayPeer, body: bytes) -> None:
        """Log a worker's commands and pass them, with their offsets, to every worker."""
        if self.log is None:
            logger.warning("relay: a logged publish from worker %s, and no log", peer.node)
            return
        try:
            entries, message = split_logged(body)
        except (IndexError, ValueError, struct.error):
            logger.warning("relay: a malformed logged publish from worker %s", peer.node)
            return
        offsets = self.log.append(entries)
        tail = b',"offsets":[' + b",".join(b'"%s"' % o.encode() for o in offsets) + b"]}"
        out = frame(COMMANDS, message[:-1] + tail)
        for other in self._peers.values():
            other.send(out)
        self.forwarded += 1

    def _confirm(self, peer: _RelayPeer, token: int) -> None:
        sync = self._syncs.get(token)
        if sync is None:
            return
        publisher, request, waiting = sync
        waiting.discard(peer)
        if not waiting:
            del self._syncs[token]
            publisher.send(frame(SETTLED, request))

    def _subscribe(self, peer: _RelayPeer, subscribe: bool, body: bytes) -> None:
        for offset in range(0, len(body) - len(body) % _SHARD.size, _SHARD.size):
            shard = _SHARD.unpack_from(body, offset)[0]
            if subscribe:
                self._shards.setdefault(shard, set()).add(peer)
                peer.shards.add(shard)
            else:
                wanting = self._shards.get(shard)
                if wanting is not None:
                    wanting.discard(peer)
                    if not wanting:
                        del self._shards[shard]
                peer.shards.discard(shard)

    def subscribers(self, shard: int) -> set[str]:
        """The node ids of the workers subscribed to ``shard`` (for tests and stats)."""
        return {p.node for p in self._shards.get(shard, ()) if p.node is not None}

    async def _call(self, peer: _RelayPeer, body: bytes) -> None:
        call_id, request = body[: _CALL_ID.size], body[_CALL_ID.size :]
        result = b""  # empty: no service, or it failed (the worker raises)
        if self._service is not None:
            try:
                result = await self._service(request)
            except Exception:
                logger.exception("relay: a worker's call failed")
        peer.send(frame(REPLY, call_id + result))

    def _hello(self, peer: _RelayPeer, body: bytes) -> None:
        try:
            hello = json.loads(body)
            node, url = hello["node"], hello["url"]
            if not isinstance(node, str) or not isinstance(url, str | None):
                raise TypeError("node and url must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            logger.warning("relay: bad hello from a worker: %s", exc)
            peer.close()
            return
        if node in self._peers:
            logger.warning("relay: node id %s is taken; refusing the second one", node)
            peer.close()
            return
        peer.node = node
        self._peers[node] = peer
        self._urls[node] = url
        self._announce()

    def leave(self, peer: _RelayPeer) -> None:
        for shard in peer.shards:
            wanting = self._shards.get(shard)
            if wanting is not None:
                wanting.discard(peer)
                if not wanting:
                    del self._shards[shard]
        peer.shards.clear()
        # A gone worker will not confirm, nor hear that others did.
        for token, (publisher, _request, waiting) in list(self._syncs.items()):
            if publisher is peer:
                del self._syncs[token]
            elif peer in waiting:
                self._confirm(peer, token)
        if peer.node is not None and self._peers.get(peer.node) is peer:
            del self._peers[peer.node]
            del self._urls[peer.node]
            self._announce()
            if self._on_leave is not None:
                self._on_leave(peer.node)

    def _announce(self) -> None:
        members = frame(MEMBERS, json.dumps(self._urls).encode())
        for peer in self._peers.values():
            peer.send(members)


# The broker (in each worker)


class _Pending:
    """Answers to one question, as they arrive."""

    __slots__ = ("expected", "answers", "complete")

    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.answers: dict[str, Any] = {}
        self.complete = asyncio.Event()

    def add(self, node: str, answer: Any) -> None:
        if node in self.expected and node not in self.answers:
            self.answers[node] = answer
        self.check()

    def check(self) -> None:
        if self.expected <= self.answers.keys():
            self.complete.set()


class LocalBroker:
    """A :class:`~siogate.broker.base.Broker` for one worker, through the primary's relay."""

    def __init__(self, path: str, *, advertise_url: str | None, node_id: str | None = None) -> None:
        self.node_id = node_id or secrets.token_hex(4)
        self.stats = BrokerStats(connected=False, error="not started", since=time.time())
        self._path = path
        self._advertise_url = advertise_url
        self._own = wire.prefix(self.node_id)
        self._handler: MessageHandler | None = None
        self._answer: QueryHandler | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        # Frames sent and not yet acknowledged, in order: (commands to apply, future).
        self._unacked: deque[tuple[Sequence[Command] | None, asyncio.Future[None] | None]] = deque()
        self._acked = 0
        self._members: dict[str, str | None] = {}
        self._registered = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._answering: set[asyncio.Task[None]] = set()
        self._closing = False
        self._calls: dict[int, asyncio.Future[bytes]] = {}
        self._next_call = 0
        # Routing: the shards this worker wants, the relay's acknowledgement of the last
        # SUBSCRIBE, published room changes waiting for SETTLED.
        self._shards = ShardSubscriptions()
        self._flush_soon = False
        self._subscribed: asyncio.Future[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._closed_since = False
        self._syncs: dict[int, asyncio.Future[None]] = {}
        self._next_sync = 0
        # Set when the relay connection ends other than by close().
        self.lost = asyncio.Event()

    @property
    def members(self) -> dict[str, str | None]:
        """Live workers (this one included) with their URLs, as the relay last said."""
        return dict(self._members)

    async def start(self, handler: MessageHandler, answer: QueryHandler) -> None:
        self._handler = handler
        self._answer = answer
        reader, self._writer = await asyncio.open_unix_connection(self._path)
        hello = json.dumps({"node": self.node_id, "url": self._advertise_url}).encode()
        self._send(HELLO, hello, None, None)
        self._reader_task = asyncio.create_task(self._read(reader), name="siogate-local-broker")
        async with asyncio.timeout(START_WAIT):
            await self._registered.wait()
        self.stats.connected = True
        self.stats.error = None
        self.stats.since = time.time()

    def room_opened(self, namespace: Namespace, room: Room) -> None:
        self._shards.room_opened(namespace, room)
        if not self._flush_soon:
            # Once per loop iteration (a connect storm's rooms share one SUBSCRIBE), or
            # sooner where a publish or a confirmation needs it (_subscribe_now).
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._subscribe_now)

    def room_closed(self, namespace: Namespace, room: Room) -> None:
        self._shards.room_closed(namespace, room, time.monotonic())
        self._closed_since = True
        if self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(LINGER, self._let_go)

    def routed(self) -> bool:
        self._subscribe_now()
        subscribed = self._subscribed
        return subscribed is None or subscribed.done()

    async def route(self) -> None:
        # The relay passes a worker what it publishes after reading its SUBSCRIBE, and
        # acknowledges frames in order: once acknowledged, this worker is routed to.
        self._subscribe_now()
        subscribed = self._subscribed
        if subscribed is not None and not subscribed.done():
            await subscribed

    def _subscribe_now(self) -> None:
        """Send a SUBSCRIBE for the wanted shards the relay does not know of yet."""
        self._flush_soon = False
        shards = self._shards.to_subscribe()
        if not shards:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self._send(SUBSCRIBE, b"".join(_SHARD.pack(s) for s in shards), None, future)
        except BrokerUnavailable:
            return  # the worker stops on a lost relay (``lost``)
        self._subscribed = future
        for shard in shards:
            # In force for whatever the relay reads from anyone after this frame.
            self._shards.confirmed(shard, True)
        self.stats.shards = len(self._shards.subscribed)

    def _let_go(self) -> None:
        """Unsubscribe the shards unwanted for LINGER seconds; look again later if
        rooms closed meanwhile."""
        self._linger = None
        shards = self._shards.to_unsubscribe(time.monotonic(), LINGER)
        if shards:
            with contextlib.suppress(BrokerUnavailable):
                self._send(UNSUBSCRIBE, b"".join(_SHARD.pack(s) for s in shards), None, None)
            for shard in shards:
                self._shards.confirmed(shard, False)
            self.stats.shards = len(self._shards.subscribed)
        if self._closed_since and not self._closing:
            self._closed_since = False
            self._linger = asyncio.get_running_loop().call_later(LINGER, self._let_go)

    async def close(self) -> None:
        for task in self._answering:
            task.cancel()
        self._closing = True
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._handler = None
        self._answer = None

    # Sending

    def _send(
        self,
        kind: int,
        body: bytes,
        commands: Sequence[Command] | None,
        future: asyncio.Future[None] | None,
    ) -> None:
        writer = self._writer
        if writer is None or writer.is_closing() or not self.stats.connected and kind != HELLO:
            raise BrokerUnavailable("the workers' relay is gone")
        writer.write(frame(kind, body))
        self._unacked.append((commands, future))

    async def publish(self, commands: Sequence[Command]) -> None:
        if self._handler is None:
            raise RuntimeError("broker is not started")
        for segment in routing.segments(commands):
            await self._publish_segment(segment)

    async def _publish_segment(self, segment: Sequence[Command]) -> None:
        """Send ``segment``'s parts to their destinations; return once it is applied here
        and, if it changes rooms, every worker that received it has confirmed."""
        loop = asyncio.get_running_loop()
        applied: asyncio.Future[None] = loop.create_future()
        parts = routing.route(segment, self.node_id)
        syncs: list[int] = []
        try:
            if not parts:
                # Nobody else: the relay only acknowledges it, keeping this worker's order.
                self._send(PUBLISH, _NOBODY, segment, applied)
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                own, future = (segment, applied) if last else (None, None)
                body = wire.encode_commands(self.node_id, part.commands)
                if part.changes_rooms:
                    self._next_sync += 1
                    syncs.append(self._next_sync)
                    self._syncs[self._next_sync] = loop.create_future()
                    head = destination(part.destination) + _COUNT.pack(self._next_sync)
                    self._send(PUBLISH_SYNC, head + body, own, future)
                else:
                    self._send(PUBLISH, destination(part.destination) + body, own, future)
                self.stats.messages_out += 1
        except BrokerUnavailable:
            self.stats.publish_failures += 1
            for sync in syncs:
                self._syncs.pop(sync, None)
            raise
        try:
            await applied
            # Rooms this worker just opened: subscribed before an emit can follow.
            self._subscribe_now()
            subscribed = self._subscribed
            if subscribed is not None and not subscribed.done():
                await subscribed
            if syncs:
                try:
                    async with asyncio.timeout(ACK_TIMEOUT):
                        for sync in syncs:
                            await self._syncs[sync]
                except TimeoutError:
                    self.stats.ack_timeouts += 1
                    logger.warning(
                        "a join/leave/disconnect was not confirmed by every worker within %.1f s",
                        ACK_TIMEOUT,
                    )
        finally:
            for sync in syncs:
                self._syncs.pop(sync, None)

    def _acknowledged(self, count: int) -> None:
        """The relay passed on every frame up to ``count``: apply own commands, in order."""
        while self._acked < count and self._unacked:
            self._acked += 1
            commands, future = self._unacked.popleft()
            try:
                if commands is not None and self._handler is not None:
                    self._handler(commands)
            except Exception as exc:
                if future is not None and not future.done():
                    future.set_exception(exc)
                continue
            if future is not None and not future.done():
                future.set_result(None)

    async def call(self, request: bytes) -> bytes:
        """The primary's answer to ``request`` (see :class:`LocalRelay`'s service)."""
        self._next_call += 1
        call_id = self._next_call
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        try:
            self._send(CALL, _CALL_ID.pack(call_id) + request, None, None)
            reply = await future
        finally:
            self._calls.pop(call_id, None)
        if not reply:
            raise BrokerUnavailable("the primary did not answer the call")
        return reply

    # Receiving

    async def _read(self, reader: asyncio.StreamReader) -> None:
        frames = FrameReader()
        error: str = "the workers' relay closed the connection"
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                for kind, body in frames.feed(data):
                    self._dispatch(kind, body)
        except (OSError, ValueError) as exc:
            error = f"the workers' relay failed: {exc}"
        self._lost(error)

    def _lost(self, error: str) -> None:
        if not self._closing:
            logger.warning("%s", error)
            self.lost.set()
        self.stats.connected = False
        self.stats.error = error
        self.stats.since = time.time()
        failure = BrokerUnavailable(error)
        while self._unacked:
            _, future = self._unacked.popleft()
            if future is not None and not future.done():
                future.set_exception(failure)
        for call in self._calls.values():
            if not call.done():
                call.set_exception(failure)
        for sync in self._syncs.values():
            if not sync.done():
                sync.set_exception(failure)
        self._members = {self.node_id: self._advertise_url}
        for pending in self._pending.values():
            pending.expected.clear()
            pending.check()

    def _dispatch(self, kind: int, body: bytes) -> None:
        if kind == ACK:
            self._acknowledged(_COUNT.unpack(body)[0])
            return
        if kind == MEMBERS:
            self._set_members(body)
            return
        if kind == REPLY:
            future = self._calls.get(_CALL_ID.unpack_from(body)[0])
            if future is not None and not future.done():
                future.set_result(body[_CALL_ID.size :])
            return
        if kind == SETTLED:
            settled = self._syncs.get(_COUNT.unpack(body)[0])
            if settled is not None and not settled.done():
                settled.set_result(None)
            return
        token = None
        if kind == COMMANDS_SYNC:
            token, body = body[: _COUNT.size], body[_COUNT.size :]
        try:
            self._receive(kind, body)
        finally:
            if token is not None:
                # After the SUBSCRIBE its joins call for, on the same stream.
                self._subscribe_now()
                with contextlib.suppress(BrokerUnavailable):
                    self._send(CONFIRM, token, None, None)

    def _receive(self, kind: int, body: bytes) -> None:
        if body.startswith(self._own):
            return
        self.stats.messages_in += 1
        try:
            message = wire.decode(body)
            if kind == COMMANDS or kind == COMMANDS_SYNC:
                commands = wire.decode_commands(message)
                if self._handler is not None:
                    self._handler(commands)
            elif kind == QUERY:
                self._answer_query(message)
            elif kind == ANSWER:
                request_id, answer = wire.decode_answer(message)
                pending = self._pending.get(request_id)
                if pending is not None:
                    pending.add(message["node"], answer)
        except wire.WireError as exc:
            self.stats.messages_invalid += 1
            logger.warning("ignored a malformed message from the relay: %s", exc)
        except Exception:
            logger.exception("applying a message from the relay failed")

    def _set_members(self, body: bytes) -> None:
        members = json.loads(body)
        self._members = {str(k): v for k, v in members.items()}
        self.stats.peers = max(0, len(self._members) - 1)
        self._registered.set()
        # A worker that left will not answer: stop waiting for it.
        for pending in self._pending.values():
            pending.expected &= self._members.keys()
            pending.check()

    def _answer_query(self, message: dict[str, Any]) -> None:
        request_id, query = wire.decode_query(message)
        if self._answer is None:
            return
        asker = str(message["node"])
        answer = self._answer(query)
        if inspect.isawaitable(answer):
            task = asyncio.ensure_future(self._answer_later(asker, request_id, answer))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        else:
            self._send_answer(asker, request_id, answer)

    async def _answer_later(self, asker: str, request_id: str, answer: Any) -> None:
        try:
            value = await answer
        except Exception:
            logger.exception("answering a query failed")
            return
        self._send_answer(asker, request_id, value)

    def _send_answer(self, asker: str, request_id: str, value: Any) -> None:
        target = asker.encode()
        body = bytes([len(target)]) + target + wire.encode_answer(self.node_id, request_id, value)
        with contextlib.suppress(BrokerUnavailable):
            self._send(ANSWER, body, None, None)

    # Questions

    async def query(self, query: Query, timeout: float) -> Answers:
        if self._answer is None:
            raise RuntimeError("broker is not started")
        return await gather_answers(
            self.node_id, self._answer(query), self._ask_others, query, timeout
        )

    async def _ask_others(self, own: Any, query: Query, timeout: float) -> Answers:
        answers: list[tuple[str, Any]] = [(self.node_id, own)]
        if not self.stats.connected:
            return Answers(answers, complete=False)
        expected = set(self._members) - {self.node_id}
        if not expected:
            return Answers(answers)
        request_id = secrets.token_hex(8)
        pending = _Pending(expected)
        self._pending[request_id] = pending
        try:
            self._send(QUERY, wire.encode_query(self.node_id, request_id, query), None, None)
            async with asyncio.timeout(timeout):
                await pending.complete.wait()
        except BrokerUnavailable:
            return Answers(answers, complete=False)
        except TimeoutError:
            pass
        finally:
            del self._pending[request_id]
        answers += list(pending.answers.items())
        missing = tuple(sorted(pending.expected - pending.answers.keys()))
        return Answers(answers, missing, complete=self.stats.connected)

    async def node_url(self, node_id: str) -> str | None:
        if node_id == self.node_id:
            return None
        return self._members.get(node_id)


_: type[Broker] = LocalBroker
