"""The Redis broker: nodes of one cluster exchange commands and queries over pub/sub.

Channels (``<prefix>`` is ``--redis-prefix``, so several clusters can share a Redis):

* ``<prefix>:commands``: command batches published through any node; every node
  subscribes and applies them (skipping its own, which it applied itself). With
  sharded routing (the default) only commands for a whole namespace go there:
* ``<prefix>:r:<shard>`` (sharded pub/sub, ``SPUBLISH``/``SSUBSCRIBE``): commands for
  named rooms of that shard; a node subscribes while it holds members of one of its
  rooms (``siogate.broker.routing``, ``siogate.broker.shards``).
* ``<prefix>:n:<node>``: commands for sockets of that node, by socket id.
* ``<prefix>:queries`` and ``<prefix>:answers:<node>``: a query goes to every node, each
  answers on the asking node's own channel.

Live nodes are kept in the sorted set ``<prefix>:nodes`` (member: node id, score: the
Redis time at which its registration expires) and ``<prefix>:node:<id>`` (what it
advertises, with the same expiry). Each node renews both every third of the TTL.

Pub/sub is at most once: a node that is disconnected from Redis misses what is published
meanwhile. A publish that Redis did not confirm is reported to the caller
(:class:`BrokerUnavailable`) and not applied locally. Usually no node has it then; only
when the connection broke after Redis received it can other nodes have it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import random
import secrets
import time
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from ..errors import ConfigError
from ..types import Namespace, Room, is_node_id
from . import resp, routing, wire
from .base import (
    Answers,
    Broker,
    BrokerStats,
    BrokerUnavailable,
    Command,
    Guard,
    GuardedPublisher,
    MessageHandler,
    Query,
    QueryHandler,
    SocketsCommand,
    gather_answers,
)
from .shards import ShardSubscriptions

logger = logging.getLogger("siogate.broker")

# Seconds between reconnection attempts: doubled after each failure, with jitter.
BACKOFF_MIN = 0.1
BACKOFF_MAX = 5.0
# Seconds a Redis round trip may take before the connection counts as failed.
SOCKET_TIMEOUT = 2.0
# Seconds to wait in start() for the first subscription (the node serves meanwhile anyway).
START_WAIT = 3.0
# Node URLs looked up by session-id prefix are cached: a found one for node_ttl (a node
# that vanishes is found out by its forward failing), an unknown one only this many
# seconds (a node that has just started is found soon after), and at most URL_CACHE_SIZE
# of them (clients choose the prefixes, so random ones must not grow memory).
URL_MISS_SECONDS = 1.0
URL_CACHE_SIZE = 1024
# Seconds a join, leave or disconnect waits for the nodes that received it to confirm.
ACK_TIMEOUT = 2.0
# Seconds between looks for shards unwanted long enough to unsubscribe.
SWEEP_INTERVAL = 0.5

RoutingMode = Literal["sharded", "broadcast"]


class _Acks:
    """Confirmations of one routed batch: one per node that received one of its parts."""

    __slots__ = ("expected", "got", "sealed", "done")

    def __init__(self) -> None:
        self.expected = 0
        self.got = 0
        self.sealed = False
        self.done = asyncio.Event()

    def expect(self, receivers: int) -> None:
        self.expected += receivers
        self._check()

    def add(self) -> None:
        self.got += 1
        self._check()

    def seal(self) -> None:
        """Every part is published: ``expected`` is final."""
        self.sealed = True
        self._check()

    def _check(self) -> None:
        if self.sealed and self.got >= self.expected:
            self.done.set()


# A guarded publish (see base.Guard): take the key and publish every part, in one atomic
# step, or answer what holds the key. ARGV after the key's value and TTL: (PUBLISH or
# SPUBLISH, channel, data) per part. Answers the receiver counts when it published. Run
# by EVALSHA; loaded again on NOSCRIPT (a Redis that restarted has forgotten it).
GUARDED_PUBLISH = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('GET', KEYS[1])
end
local counts = {}
for i = 3, #ARGV, 3 do
  counts[#counts + 1] = redis.call(ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
return counts
"""
GUARDED_PUBLISH_SHA = hashlib.sha1(GUARDED_PUBLISH.encode()).hexdigest().encode()
# The packed start of an EVALSHA of the script, by the number of part arguments.
_GUARDED_HEADS: dict[int, bytes] = {}
# The rest of a one-part guarded publish: key, value, TTL, then PUBLISH, channel, data.
_GUARDED_ONE = b"$%d\r\n%b\r\n" * 6


class _Guarded:
    """The parts of one guarded publish, sent as one script."""

    __slots__ = ("guard", "args", "asking")

    def __init__(self, guard: Guard) -> None:
        self.guard = guard
        # (PUBLISH | SPUBLISH, channel, data) for each part, flattened.
        self.args: list[bytes] = []
        # Whether each part asks for confirmations (its receivers count for them).
        self.asking: list[bool] = []


class Scripted:
    """A packed ``EVALSHA`` to run in the publish queue, in order with the publishes
    (siogate.broker.recovering logs and publishes this way); its reply is kept here."""

    __slots__ = ("packed", "source", "settles", "reply")

    def __init__(self, packed: bytes, source: str, *, settles: bool = True) -> None:
        self.packed = packed
        # The script's text, to load it again on NOSCRIPT.
        self.source = source
        # Whether the item's future is settled (None) once Redis answered; if not, the
        # queue only fails it (its owner settles it on success).
        self.settles = settles
        self.reply: Any = None


# (channel, or the parts of a guarded publish, or a script, or None for local only;
# data; commands to apply here after publishing; future of the publish; confirmations
# the message asks for)
_Outgoing = tuple[
    str | _Guarded | Scripted | None,
    bytes,
    Sequence[Command] | None,
    asyncio.Future[Any] | None,
    _Acks | None,
]


def redacted(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


class _Backoff:
    """Waits between reconnection attempts: doubling from BACKOFF_MIN, with jitter."""

    __slots__ = ("delay",)

    def __init__(self) -> None:
        self.delay = BACKOFF_MIN

    def reset(self) -> None:
        self.delay = BACKOFF_MIN

    async def wait(self) -> None:
        await asyncio.sleep(self.delay * random.uniform(0.5, 1.0))
        self.delay = min(self.delay * 2, BACKOFF_MAX)


def _seconds(reply: tuple[int, int]) -> float:
    """A Redis ``TIME`` reply (seconds, microseconds) as float seconds."""
    seconds, micros = reply
    return float(seconds) + micros / 1e6


class _Pending:
    """Answers to one query, as they arrive."""

    __slots__ = ("expected", "answers", "complete")

    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.answers: dict[str, Any] = {}
        self.complete = asyncio.Event()

    def add(self, node: str, answer: Any) -> None:
        if node in self.answers:
            return
        self.answers[node] = answer
        if self.expected <= self.answers.keys():
            self.complete.set()


class RedisBroker:
    """A :class:`~siogate.broker.base.Broker` on Redis (or Valkey) pub/sub."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "siogate",
        advertise_url: str | None = None,
        node_ttl: float = 5.0,
        node_id: str | None = None,
        start_wait: float = START_WAIT,
        routing: RoutingMode = "sharded",
    ) -> None:
        self.node_id = node_id or secrets.token_hex(4)
        if routing == "sharded" and not is_node_id(self.node_id):
            # Socket ids start with the node id, and commands for a socket go to the node
            # its id names: an id of another shape would route them nowhere.
            raise ValueError(f"node id {self.node_id!r} is not 8 of A-Z a-z 0-9 _ -")
        self.stats = BrokerStats(connected=False, error="not started", since=time.time())
        self._url = url
        self._prefix = prefix
        self._advertise_url = advertise_url
        self._ttl = node_ttl
        self._start_wait = start_wait
        self._own = wire.prefix(self.node_id)
        self._commands_channel = f"{prefix}:commands"
        self._queries_channel = f"{prefix}:queries"
        self._answers_channel = self._answers_of(self.node_id)
        self._nodes_key = f"{prefix}:nodes"
        self._handler: MessageHandler | None = None
        self._answer: QueryHandler | None = None
        self._redis: Redis | None = None
        self._outbox: list[_Outgoing] = []
        self._writer: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[str, _Pending] = {}
        # Answers still being computed for other nodes (ack emits wait for replies).
        self._answering: set[asyncio.Task[None]] = set()
        self._subscribed = asyncio.Event()
        self._sub_ok = False
        self._pub_ok = False
        self._was_connected = False
        # node id -> (monotonic expiry, URL or None), oldest first.
        self._urls: dict[str, tuple[float, str | None]] = {}
        self._lookups: dict[str, asyncio.Future[str | None]] = {}
        # Routing (docs/cluster.md, "Routing"): shard subscriptions and confirmations.
        self._sharded = routing == "sharded"
        self._shard_prefix = f"{prefix}:r:"
        self._node_channel = f"{prefix}:n:{self.node_id}"
        self._shards = ShardSubscriptions()
        self._pubsub: PubSub | None = None
        self._settle_waiters: list[asyncio.Future[None]] = []
        self._acks: dict[str, _Acks] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._reconcile_soon = False

    def _answers_of(self, node: str) -> str:
        return f"{self._prefix}:answers:{node}"

    def _node_key(self, node: str) -> str:
        return f"{self._prefix}:node:{node}"

    def _client(self) -> Redis:
        return Redis.from_url(
            self._url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            socket_keepalive=True,
            # Failures are reported at once; the loops below reconnect with backoff.
            retry=Retry(NoBackoff(), 0),
        )

    # Lifecycle

    async def start(self, handler: MessageHandler, answer: QueryHandler) -> None:
        self._handler = handler
        self._answer = answer
        self._redis = self._client()
        await self._refuse_redis_cluster()
        self._tasks = [
            asyncio.create_task(self._subscribe_forever(), name="siogate-redis-subscriber"),
            asyncio.create_task(self._heartbeat_forever(), name="siogate-redis-heartbeat"),
        ]
        try:
            await asyncio.wait_for(self._subscribed.wait(), self._start_wait)
        except TimeoutError:
            logger.warning(
                "Redis at %s is not reachable yet (%s); serving local sockets, retrying",
                redacted(self._url),
                self.stats.error,
            )

    async def _refuse_redis_cluster(self) -> None:
        """A Redis Cluster node is used only as siogate serve located it (hash-tagged
        prefix, the primary owning its slot: siogate.broker.redis_cluster); anything else
        is refused at start rather than retried forever on MOVED replies. A Redis that
        cannot be reached yet is checked no further."""
        assert self._redis is not None
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT):
                info = await self._redis.info("cluster")
        except (RedisError, OSError, TimeoutError):
            return
        from .redis_cluster import check_node  # it imports this module

        try:
            await check_node(self._redis, self._url, self._prefix, info)
        except ConfigError:
            await self._redis.aclose()
            raise

    async def close(self) -> None:
        for task in [*self._tasks, *self._answering, *self._side_tasks]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer, SOCKET_TIMEOUT)
        if self._redis is not None:
            # Leave the registry at once rather than when the TTL runs out.
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(SOCKET_TIMEOUT):
                    await self._redis.zrem(self._nodes_key, self.node_id)
                    await self._redis.delete(self._node_key(self.node_id))
            await self._redis.aclose()
        self._handler = None
        self._answer = None

    # Health

    def _set_health(self, *, sub: bool | None = None, pub: bool | None = None, error: Any) -> None:
        if sub is not None:
            self._sub_ok = sub
        if pub is not None:
            self._pub_ok = pub
        connected = self._sub_ok and self._pub_ok
        if connected == self.stats.connected:
            return
        self.stats.connected = connected
        self.stats.since = time.time()
        if connected:
            self.stats.error = None
            if self._was_connected:
                self.stats.reconnects += 1
                logger.warning("Redis connection restored; cross-node delivery resumes")
            else:
                logger.info("connected to Redis as node %s", self.node_id)
            self._was_connected = True
        else:
            self.stats.error = str(error) or type(error).__name__
            logger.warning(
                "Redis unreachable (%s): serving local sockets only, retrying", self.stats.error
            )

    # Publishing

    async def publish(self, commands: Sequence[Command]) -> None:
        if self._handler is None:
            raise RuntimeError("broker is not started")
        if self._sharded:
            for segment in routing.segments(commands):
                await self._publish_routed(segment)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        data = wire.encode_commands(self.node_id, commands)
        self._enqueue((self._commands_channel, data, commands, future, None))
        await future

    async def publish_guarded(self, commands: Sequence[Command], guard: Guard) -> bytes | None:
        if self._handler is None:
            raise RuntimeError("broker is not started")
        # In the same queue and pipeline as plain publishes: the order of this node's
        # publishes holds, and the guard costs no round trip of its own.
        if not self._sharded:
            future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
            guarded = _Guarded(guard)
            data = wire.encode_commands(self.node_id, commands)
            guarded.args += (b"PUBLISH", self._commands_channel.encode(), data)
            guarded.asking.append(False)
            self._enqueue((guarded, b"", commands, future, None))
            return await future
        first, *rest = routing.segments(commands)
        found = await self._publish_routed(first, guard)
        if found is None:
            # Only a batch with a join, leave or disconnect before its end has more
            # segments (none of the API's one-step requests does): the key holds once
            # the first went out, as a plain publish's later segments may fail too.
            for segment in rest:
                await self._publish_routed(segment)
        return found

    def _channel(self, destination: routing.Destination) -> str:
        if destination.kind == "shard":
            return self._shard_prefix + destination.key
        if destination.kind == "node":
            return f"{self._prefix}:n:{destination.key}"
        return self._commands_channel

    async def _publish_routed(
        self, commands: Sequence[Command], guard: Guard | None = None
    ) -> bytes | None:
        """Publish one segment (siogate.broker.routing.segments) and, if it changes rooms,
        wait until every node that received it applied it and subscribed accordingly.
        Under ``guard``: only if its key is free; else the key's value, and nothing is
        published."""
        parts = routing.route(commands, self.node_id)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        acks: _Acks | None = None
        ack_id: str | None = None
        if any(p.changes_rooms for p in parts):
            ack_id = secrets.token_hex(8)
            acks = self._acks[ack_id] = _Acks()
        try:
            if guard is not None:
                # Every part in one script, after the key (none: the key alone).
                guarded = _Guarded(guard)
                for part in parts:
                    asks = part.changes_rooms
                    channel = self._channel(part.destination)
                    kind = b"SPUBLISH" if channel.startswith(self._shard_prefix) else b"PUBLISH"
                    data = wire.encode_commands(
                        self.node_id, part.commands, ack_id if asks else None
                    )
                    guarded.args += (kind, channel.encode(), data)
                    guarded.asking.append(asks)
                self._enqueue((guarded, b"", commands, future, acks))
                parts = []
            elif not parts:
                # Only this node's sockets: nothing to publish, applied in call order.
                self._enqueue((None, b"", commands, future, None))
            for i, part in enumerate(parts):
                last = i == len(parts) - 1
                asks = part.changes_rooms
                data = wire.encode_commands(self.node_id, part.commands, ack_id if asks else None)
                self._enqueue(
                    (
                        self._channel(part.destination),
                        data,
                        commands if last else None,
                        future if last else None,
                        acks if asks else None,
                    )
                )
            found: bytes | None = await future
            if found is not None:
                return found  # the key was taken: nothing was published
            if not any(isinstance(c, SocketsCommand) for c in commands):
                return None
            async with asyncio.timeout(ACK_TIMEOUT):
                # This node's own joins, then the other nodes' confirmations.
                if self._sub_ok:
                    await self._settled()
                if acks is not None:
                    acks.seal()
                    await acks.done.wait()
        except TimeoutError:
            self.stats.ack_timeouts += 1
            logger.warning(
                "a join/leave/disconnect was not confirmed by every node within %.1f s", ACK_TIMEOUT
            )
        finally:
            if ack_id is not None:
                del self._acks[ack_id]
        return None

    def _enqueue(self, item: _Outgoing) -> None:
        self._outbox.append(item)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        """Publish queued messages in order, pipelined, then apply local commands."""
        while self._outbox:
            batch, self._outbox = self._outbox, []
            assert self._redis is not None
            try:
                published = [item for item in batch if item[0] is not None]
                receivers = await self._send(published) if published else []
                batch, receivers = await self._unguarded(batch, receivers)
            except (RedisError, OSError) as exc:
                self.stats.publish_failures += len(batch)
                await self._connection_lost(exc)
                failure = BrokerUnavailable(f"Redis did not take the message: {exc}")
                for _, _, _, future, _ in batch:
                    if future is not None and not future.done():
                        future.set_exception(failure)
                continue
            self.stats.messages_out += len(receivers)
            if receivers:
                self._set_health(pub=True, error=None)
            sent = iter(receivers)
            for channel, _, _, _, acks in batch:
                if channel is not None:
                    count = next(sent)
                    if acks is not None:
                        if isinstance(channel, _Guarded):
                            counts = zip(channel.asking, count, strict=True)
                            acks.expect(sum(int(n) for asks, n in counts if asks))
                        else:
                            acks.expect(int(count))
            for channel, _, commands, future, _ in batch:
                try:
                    if commands is not None and self._handler is not None:
                        self._handler(commands)
                except Exception as exc:
                    if future is not None and not future.done():
                        future.set_exception(exc)
                    continue
                if isinstance(channel, Scripted) and not channel.settles:
                    continue
                if future is not None and not future.done():
                    future.set_result(None)

    def _pack(self, item: _Outgoing) -> bytes:
        channel, data, _, _, _ = item
        if isinstance(channel, Scripted):
            return channel.packed
        if isinstance(channel, _Guarded):
            guard = channel.guard
            key, value, ttl = guard.key.encode(), guard.value.encode(), b"%d" % guard.ttl_ms
            head = _GUARDED_HEADS.get(len(channel.args))
            if head is None:
                head = _GUARDED_HEADS[len(channel.args)] = resp.head(
                    6 + len(channel.args), b"EVALSHA", GUARDED_PUBLISH_SHA, b"1"
                )
            args = channel.args
            if len(args) == 3:
                # One part (every one-step request but a batch across shards): one
                # format call instead of a list of pieces.
                kind, name, data = args
                return head + _GUARDED_ONE % (
                    len(key), key, len(value), value, len(ttl), ttl,
                    len(kind), kind, len(name), name, len(data), data,
                )  # fmt: skip
            pieces = [
                head,
                b"$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                % (len(key), key, len(value), value, len(ttl), ttl),
            ]
            pieces += [b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in args]
            return b"".join(pieces)
        assert channel is not None
        name = channel.encode()
        if channel.startswith(self._shard_prefix):
            return b"*3\r\n$8\r\nSPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
                len(name),
                name,
                len(data),
                data,
            )
        return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
            len(name),
            name,
            len(data),
            data,
        )

    async def _send(self, items: list[_Outgoing]) -> list[Any]:
        """Write items in one go on a pooled connection and read the replies (an error
        reply as its exception). What a redis-py pipeline does, without its per-argument
        packing and per-call bookkeeping: this runs for every publish."""
        assert self._redis is not None
        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(b"".join([self._pack(i) for i in items]))
            replies: list[Any] = []
            for _ in items:
                try:
                    replies.append(await connection.read_response())
                except ResponseError as exc:
                    replies.append(exc)
            return replies
        except BaseException:
            # Replies may be left unread: the connection is not reusable.
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)

    async def _unguarded(
        self, batch: list[_Outgoing], receivers: list[Any]
    ) -> tuple[list[_Outgoing], list[Any]]:
        """The items of a written batch that were published, with their replies. A
        guarded one whose key was taken is answered with the key's value here; one that
        met NOSCRIPT goes back to the front of the queue once the script is loaded."""
        kept: list[_Outgoing] = []
        replies: list[Any] = []
        again: list[_Outgoing] = []
        sent = iter(receivers)
        for item in batch:
            channel, future = item[0], item[3]
            if channel is None:
                kept.append(item)
                continue
            reply = next(sent)
            if isinstance(reply, NoScriptError):
                again.append(item)
            elif isinstance(reply, Exception):
                # An error reply (none is expected) fails the whole batch, as it did when
                # execute() raised it.
                raise reply
            elif isinstance(channel, _Guarded) and not isinstance(reply, list):
                if future is not None and not future.done():
                    future.set_result(reply)
            else:
                if isinstance(channel, Scripted):
                    channel.reply = reply
                kept.append(item)
                replies.append(reply)
        if again:
            assert self._redis is not None
            scripts = {
                i[0].source if isinstance(i[0], Scripted) else GUARDED_PUBLISH for i in again
            }
            for script in scripts:
                await self._redis.script_load(script)
            self._outbox[:0] = again
        return kept, replies

    # Receiving

    async def _subscribe_forever(self) -> None:
        backoff = _Backoff()
        channels: tuple[str, ...] = (
            self._commands_channel,
            self._queries_channel,
            self._answers_channel,
        )
        if self._sharded:
            channels += (self._node_channel,)
        while True:
            client = self._client()
            pubsub: PubSub = client.pubsub()
            try:
                await pubsub.subscribe(*channels)
                # Shards are subscribed on this connection anew (what the node wants now).
                self._shards.reset()
                self._pubsub = pubsub
                self._reconcile()
                confirmed = 0
                # A subscriber only reads, so a connection that died without a FIN (a
                # balancer's idle timeout, a host gone) would look quiet forever; a PING
                # every third of the TTL must be answered within SOCKET_TIMEOUT, unless
                # other messages keep arriving meanwhile.
                interval = self._ttl / 3
                next_ping = time.monotonic() + interval
                ping_sent: float | None = None
                next_sweep = time.monotonic() + SWEEP_INTERVAL
                while True:
                    now = time.monotonic()
                    if ping_sent is not None and now - ping_sent > SOCKET_TIMEOUT:
                        raise RedisConnectionError("no answer to PING on the subscription")
                    if ping_sent is None and now >= next_ping:
                        await pubsub.ping()
                        ping_sent, next_ping = now, now + interval
                    if self._sharded and now >= next_sweep:
                        self._reconcile()  # unsubscribes shards unwanted for a while
                        next_sweep = now + SWEEP_INTERVAL
                    message = await pubsub.get_message(timeout=min(interval, 0.5))
                    if message is None:
                        continue
                    if ping_sent is not None:
                        # Anything read proves the connection alive: under a flood the
                        # PONG waits behind the messages, which must not end the connection.
                        ping_sent = now
                    kind = message["type"]
                    if kind in ("message", "smessage"):
                        self._dispatch(message["channel"], message["data"])
                    elif kind in ("ssubscribe", "sunsubscribe"):
                        self._shard_confirmed(message["channel"], kind == "ssubscribe")
                    elif message["type"] == "pong":
                        ping_sent = None
                    elif message["type"] == "subscribe":
                        confirmed += 1
                        if confirmed == len(channels):
                            if self._was_connected:
                                # Pooled connections may predate a Redis restart.
                                assert self._redis is not None
                                await self._redis.connection_pool.disconnect(
                                    inuse_connections=False
                                )
                            # Registered again at once: Redis may have restarted empty.
                            await self._heartbeat()
                            self._set_health(sub=True, error=None)
                            self._subscribed.set()
                            backoff.reset()
            except (RedisError, OSError) as exc:
                self._set_health(sub=False, error=exc)
            finally:
                self._pubsub = None
                self._shards.reset()
                self.stats.shards = 0
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            await backoff.wait()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if data.startswith(self._own):
            if self._acks:
                self._own_ack(data)
            return
        self.stats.messages_in += 1
        try:
            message = wire.decode(data)
            name = channel.decode()
            if (
                name == self._commands_channel
                or name.startswith(self._shard_prefix)
                or name == self._node_channel
            ):
                commands = wire.decode_commands(message)
                ack = wire.decode_ack(message)
                if self._handler is not None:
                    self._handler(commands)
                if ack is not None:
                    self._confirm(message["node"], ack)
            elif name == self._queries_channel:
                request_id, query = wire.decode_query(message)
                if self._answer is not None:
                    answer = self._answer(query)
                    channel_out = self._answers_of(message["node"])
                    if inspect.isawaitable(answer):
                        task = asyncio.ensure_future(
                            self._answer_later(channel_out, request_id, answer)
                        )
                        self._answering.add(task)
                        task.add_done_callback(self._answering.discard)
                    else:
                        reply = wire.encode_answer(self.node_id, request_id, answer)
                        self._enqueue((channel_out, reply, None, None, None))
            else:
                request_id, answer = wire.decode_answer(message)
                acks = self._acks.get(request_id)
                if acks is not None:
                    acks.add()
                pending = self._pending.get(request_id)
                if pending is not None:
                    pending.add(message["node"], answer)
        except wire.WireError as exc:
            self.stats.messages_invalid += 1
            logger.warning("ignored a malformed message on %r: %s", channel, exc)
        except Exception:
            logger.exception("applying a message from %r failed", channel)

    # Routing: shard subscriptions and confirmations of room changes

    def room_opened(self, namespace: Namespace, room: Room) -> None:
        if self._sharded:
            self._shards.room_opened(namespace, room)
            if not self._reconcile_soon:
                # Once per loop iteration: a connect storm's rooms share one SSUBSCRIBE.
                self._reconcile_soon = True
                asyncio.get_running_loop().call_soon(self._reconcile)

    def room_closed(self, namespace: Namespace, room: Room) -> None:
        if self._sharded:
            # Unsubscribed by _reconcile() once the shard stayed unwanted for a while.
            self._shards.room_closed(namespace, room, time.monotonic())

    def routed(self) -> bool:
        # Disconnected, nothing reaches this node; waiting would only delay connects.
        return not self._sharded or self._pubsub is None or self._shards.settled()

    async def route(self) -> None:
        if not self.routed():
            await self._settled()

    def _reconcile(self) -> None:
        """Send the SSUBSCRIBE / SUNSUBSCRIBE that the wanted shards call for."""
        self._reconcile_soon = False
        pubsub = self._pubsub
        if pubsub is None:
            return  # subscribed to all wanted shards once connected
        subscribe = self._shards.to_subscribe()
        unsubscribe = self._shards.to_unsubscribe(time.monotonic())
        if subscribe or unsubscribe:
            self._side_task(self._send_subscriptions(pubsub, subscribe, unsubscribe))

    def _side_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _send_subscriptions(
        self, pubsub: PubSub, subscribe: list[int], unsubscribe: list[int]
    ) -> None:
        try:
            # Sent from here while the subscriber loop reads: a write does not read.
            if unsubscribe:
                await pubsub.sunsubscribe(*(f"{self._shard_prefix}{s}" for s in unsubscribe))
            if subscribe:
                await pubsub.ssubscribe(*(f"{self._shard_prefix}{s}" for s in subscribe))
        except (RedisError, OSError) as exc:
            # The subscriber loop finds the connection broken and subscribes anew.
            logger.warning("shard subscription failed: %s", exc)

    def _shard_confirmed(self, channel: bytes, subscribed: bool) -> None:
        name = channel.decode()
        if not name.startswith(self._shard_prefix):
            return
        try:
            shard = int(name[len(self._shard_prefix) :])
        except ValueError:
            return
        self._shards.confirmed(shard, subscribed)
        self.stats.shards = len(self._shards.subscribed)
        if not subscribed:
            self._reconcile()  # wanted again while it was being unsubscribed
        if self._shards.settled():
            waiters, self._settle_waiters = self._settle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _settled(self) -> None:
        """Returns once every shard this node wants is subscribed (callers bound the wait)."""
        if self._shards.settled():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._settle_waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._settle_waiters:
                self._settle_waiters.remove(waiter)

    def _confirm(self, node: str, ack: str) -> None:
        """Tell ``node`` its batch is applied here, once this node's shards are settled."""
        channel = self._answers_of(node)
        reply = wire.encode_answer(self.node_id, ack, True)
        if self._shards.settled():
            self._enqueue((channel, reply, None, None, None))
        else:
            self._side_task(self._confirm_later(channel, reply))

    async def _confirm_later(self, channel: str, reply: bytes) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ACK_TIMEOUT):
                await self._settled()
        self._enqueue((channel, reply, None, None, None))

    def _own_ack(self, data: bytes) -> None:
        """One of this node's own batches came back on a channel it subscribes to: Redis
        counted this node among its receivers, so it confirms itself."""
        with contextlib.suppress(wire.WireError):
            ack = wire.decode_ack(wire.decode(data))
            acks = None if ack is None else self._acks.get(ack)
            if acks is not None:
                acks.add()

    async def _answer_later(self, channel: str, request_id: str, answer: Any) -> None:
        try:
            value = await answer
        except Exception:
            logger.exception("answering a query failed")
            return
        self._enqueue(
            (channel, wire.encode_answer(self.node_id, request_id, value), None, None, None)
        )

    # Registry

    async def _connection_lost(self, exc: Exception) -> None:
        self._set_health(pub=False, error=exc)
        # The other pooled connections are most likely dead too (Redis restarted): drop
        # them now rather than fail one more request on each.
        assert self._redis is not None
        with contextlib.suppress(Exception):
            await self._redis.connection_pool.disconnect(inuse_connections=False)

    async def _heartbeat_forever(self) -> None:
        backoff = _Backoff()
        while True:
            try:
                await self._heartbeat()
                self._set_health(pub=True, error=None)
                backoff.reset()
                await asyncio.sleep(self._ttl / 3)
            except (RedisError, OSError) as exc:
                await self._connection_lost(exc)
                await backoff.wait()

    async def _heartbeat(self) -> None:
        assert self._redis is not None
        # Redis's clock, not this node's: the registry works across skewed machines.
        now = _seconds(await self._redis.time())
        expires = now + self._ttl
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self._nodes_key, {self.node_id: expires})
            pipe.set(
                self._node_key(self.node_id),
                wire.encode_node(self._advertise_url),
                px=int(self._ttl * 1000),
            )
            pipe.zremrangebyscore(self._nodes_key, "-inf", now)
            pipe.zcard(self._nodes_key)
            results = await pipe.execute()
        self.stats.peers = max(0, int(results[3]) - 1)

    async def _live_nodes(self) -> set[str]:
        assert self._redis is not None
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.time()
            pipe.zrange(self._nodes_key, 0, -1, withscores=True)
            reply, members = await pipe.execute()
        now = _seconds(reply)
        return {m.decode() for m, expires in members if expires > now}

    async def node_url(self, node_id: str) -> str | None:
        cached = self._urls.get(node_id)
        if cached is not None:
            if cached[0] > time.monotonic():
                return cached[1]
            del self._urls[node_id]
        # Concurrent lookups of one node (a burst of forwarded polls) share one request.
        lookup = self._lookups.get(node_id)
        if lookup is None:
            lookup = asyncio.ensure_future(self._fetch_url(node_id))
            self._lookups[node_id] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(node_id, None))
        return await asyncio.shield(lookup)

    async def _fetch_url(self, node_id: str) -> str | None:
        assert self._redis is not None
        data = await self._redis.get(self._node_key(node_id))
        url = None
        if data is not None:
            with contextlib.suppress(wire.WireError):
                url = wire.decode_node(data)
        self._remember(node_id, url)
        return url

    def _remember(self, node_id: str, url: str | None) -> None:
        now = time.monotonic()
        urls = self._urls
        urls.pop(node_id, None)
        if len(urls) >= URL_CACHE_SIZE:
            for key in [k for k, (expires, _) in urls.items() if expires <= now]:
                del urls[key]
            while len(urls) >= URL_CACHE_SIZE:
                del urls[next(iter(urls))]  # the oldest
        urls[node_id] = (now + (self._ttl if url is not None else URL_MISS_SECONDS), url)

    # Queries

    async def query(self, query: Query, timeout: float) -> Answers:
        if self._answer is None:
            raise RuntimeError("broker is not started")
        return await gather_answers(
            self.node_id, self._answer(query), self._ask_others, query, timeout
        )

    async def _ask_others(self, own: Any, query: Query, timeout: float) -> Answers:
        """``query``'s answers from the other live nodes, after ``own`` (this node's)."""
        answers: list[tuple[str, Any]] = [(self.node_id, own)]
        request_id = secrets.token_hex(8)
        pending = _Pending(set())
        self._pending[request_id] = pending
        try:
            async with asyncio.timeout(timeout):
                try:
                    pending.expected = await self._live_nodes() - {self.node_id}
                except (RedisError, OSError) as exc:
                    await self._connection_lost(exc)
                    return Answers(answers, complete=False)
                if pending.expected:
                    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                    data = wire.encode_query(self.node_id, request_id, query)
                    self._enqueue((self._queries_channel, data, None, future, None))
                    await future
                    await pending.complete.wait()
        except BrokerUnavailable:
            return Answers(answers, complete=False)
        except TimeoutError:
            if not pending.expected:
                return Answers(answers, complete=False)
        finally:
            del self._pending[request_id]
        answers += [(node, a) for node, a in pending.answers.items()]
        missing = tuple(sorted(pending.expected - pending.answers.keys()))
        return Answers(answers, missing)


_: type[Broker] = RedisBroker
_guarded: type[GuardedPublisher] = RedisBroker
