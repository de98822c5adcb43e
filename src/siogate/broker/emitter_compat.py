"""Messages of the Node ``@socket.io/redis-emitter`` (5.x), applied to this node's sockets.

A Socket.IO cluster on ``@socket.io/redis-adapter`` (8.x) listens on these channels, per
namespace ``<nsp>`` (``<key>`` is the emitter's ``key`` option, ``--emitter-key``):

* ``<key>#<nsp>#`` and ``<key>#<nsp>#<room>#`` (the latter when exactly one room is
  targeted): a broadcast, MessagePack ``[uid, packet, opts]`` where ``packet`` is
  ``{type: 2, data: [event, ...args], nsp}`` and ``opts`` is
  ``{rooms: [...], except: [...], flags: {...}}``.
* ``<key>-request#<nsp>#``: a request, JSON (the emitter) or MessagePack (the adapter),
  ``{type, opts: {rooms, except}, rooms | close}`` for socketsJoin, socketsLeave and
  disconnectSockets, ``{type: 6, data: [event, ...args]}`` for serverSideEmit.

Every node subscribes to both with one pattern each (``<key>#*`` and ``<key>-request#*``;
no channel matches both, so each message arrives once) and hands the commands it decodes
straight to its own hub, never to the broker: each node applies a message to its own
sockets exactly once, and nothing is published again.

Whatever arrives is untrusted: sizes are bounded before decoding, MessagePack is decoded
with ``msgpack`` (never pickle) and each field is checked. A message that does not fit is
dropped and counted (:class:`Malformed`); one that fits but asks for something siogate
does not do (a request that wants an answer; ``serverSideEmit`` when no handler has
``on_server_event``) is dropped and counted too (:class:`Unsupported`). Neither ends the
subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgpack  # type: ignore[import-untyped]  # ships no type hints
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..errors import ProtocolError, SiogateError
from ..protocol.socketio import MAX_DEPTH, RESERVED_EVENTS, PacketType, loads
from ..ratelog import RateLimitedLog
from ..types import Namespace, Room
from .base import Command, EmitCommand, MessageHandler, SocketsCommand
from .redis import SOCKET_TIMEOUT, _Backoff, redacted

logger = logging.getLogger("siogate.emitter")
peer_log = RateLimitedLog(logger)

# Longest namespace and room name taken (as the HTTP API), and rooms per list.
MAX_NAME = 256
MAX_ROOMS = 1_000
# Seconds between PINGs on the subscription (a dead connection is noticed within this
# plus SOCKET_TIMEOUT).
PING_INTERVAL = 5.0

# The adapter's request types (RequestType in @socket.io/redis-adapter).
REQUEST_NAMES = {
    0: "fetchSockets/allSockets (SOCKETS)",
    1: "allRooms (ALL_ROOMS)",
    2: "socketsJoin (REMOTE_JOIN)",
    3: "socketsLeave (REMOTE_LEAVE)",
    4: "disconnectSockets (REMOTE_DISCONNECT)",
    5: "fetchSockets (REMOTE_FETCH)",
    6: "serverSideEmit (SERVER_SIDE_EMIT)",
    7: "emit with ack (BROADCAST)",
    8: "BROADCAST_CLIENT_COUNT",
    9: "BROADCAST_ACK",
}
REMOTE_JOIN, REMOTE_LEAVE, REMOTE_DISCONNECT, SERVER_SIDE_EMIT = 2, 3, 4, 6


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """An emitter's ``serverSideEmit(event, ...args)`` to the servers of ``namespace``."""

    namespace: Namespace
    event: str
    args: list[Any]


ServerEventHandler = Callable[[Namespace, str, list[Any]], bool]
"""Takes a server event on this node; False when nothing here listens for them."""

Decoded = list[Command] | ServerEvent


class EmitterError(SiogateError):
    """A message on the emitter's channels that is not applied."""


class Malformed(EmitterError):
    """The message does not follow the emitter's format."""


class Unsupported(EmitterError):
    """A well-formed message asking for something siogate does not do."""


@dataclass(slots=True)
class EmitterStats:
    """Counters for ``/metrics``."""

    connected: bool = False
    # Messages decoded and applied to this node's sockets.
    applied: int = 0
    invalid: int = 0
    unsupported: int = 0


def pattern(text: str) -> str:
    """``text`` with Redis glob characters escaped, for a PSUBSCRIBE pattern."""
    out = []
    for ch in text:
        if ch in "\\*?[]":
            out.append("\\")
        out.append(ch)
    return "".join(out)


# Values


def _timestamp(value: datetime.datetime) -> str:
    # A JavaScript Date travels as a MessagePack timestamp; Socket.IO would send it as
    # JSON, that is Date.prototype.toJSON(): milliseconds, UTC, "Z".
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
        f"{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )


def _ext(code: int, data: bytes) -> Any:
    raise Malformed(f"MessagePack extension type {code} is not a value Socket.IO sends")


def unpack(data: bytes) -> Any:
    """Decode one MessagePack value (the whole of ``data``)."""
    try:
        # Lengths inside are bounded by len(data) (msgpack's default for unpackb).
        return msgpack.unpackb(data, raw=False, timestamp=3, ext_hook=_ext, strict_map_key=True)
    except Malformed:
        raise
    except Exception as exc:  # msgpack raises ValueError subclasses, UnicodeDecodeError...
        raise Malformed(f"not MessagePack: {type(exc).__name__}: {exc}") from None


def value(item: Any, depth: int = 1) -> Any:
    """A decoded argument as siogate sends it: JSON values and bytes (attachments).

    As Socket.IO's JSON encoding does, a NaN or infinite number becomes null and a Date
    its ISO string. ``depth`` counts containers, the packet's data being 1 (as the
    Socket.IO decoder counts); recursion is one frame per level, up to MAX_DEPTH.
    """
    if item is None or isinstance(item, bool | int | str | bytes):
        return item
    if isinstance(item, float):
        return item if math.isfinite(item) else None
    if isinstance(item, list | dict) and depth > MAX_DEPTH:
        raise Malformed(f"arguments nested deeper than {MAX_DEPTH} levels")
    if isinstance(item, list):
        items = []
        for v in item:
            items.append(value(v, depth + 1))
        return items
    if isinstance(item, dict):
        members = {}
        for k, v in item.items():
            if not isinstance(k, str):
                raise Malformed("an object key is not a string")
            members[k] = value(v, depth + 1)
        return members
    if isinstance(item, datetime.datetime):
        return _timestamp(item)
    raise Malformed(f"unexpected value of type {type(item).__name__}")


def _namespace(text: Any) -> Namespace:
    if not isinstance(text, str) or not text.startswith("/") or len(text) > MAX_NAME:
        raise Malformed("the namespace must be a string starting with '/'")
    return Namespace(text)


def _room(item: Any) -> Room:
    # Node rooms may be numbers (io.to(42)); siogate's are strings.
    if isinstance(item, int) and not isinstance(item, bool):
        item = str(item)
    if not isinstance(item, str) or len(item) > MAX_NAME:
        raise Malformed(f"a room must be a string of at most {MAX_NAME} characters")
    return Room(item)


def _rooms(obj: dict[str, Any], key: str) -> tuple[Room, ...]:
    items = obj.get(key)
    if items is None:
        return ()
    if not isinstance(items, list) or len(items) > MAX_ROOMS:
        raise Malformed(f"{key!r} must be a list of at most {MAX_ROOMS} rooms")
    rooms = []
    for item in items:
        rooms.append(_room(item))
    return tuple(rooms)


def _selection(request: dict[str, Any]) -> tuple[tuple[Room, ...], tuple[Room, ...]]:
    opts = request.get("opts")
    if not isinstance(opts, dict):
        raise Malformed("'opts' must be an object")
    return _rooms(opts, "rooms"), _rooms(opts, "except")


# Messages


def decode_broadcast(key: str, channel: str, data: bytes) -> EmitCommand:
    """A message published on ``<key>#<nsp>#[<room>#]`` as an emit."""
    message = unpack(data)
    if not isinstance(message, list) or len(message) != 3:
        raise Malformed("a broadcast must be [uid, packet, opts]")
    uid, packet, opts = message
    if not isinstance(uid, str):
        raise Malformed("the uid must be a string")
    if not isinstance(packet, dict):
        raise Malformed("the packet must be an object")
    if not isinstance(opts, dict):
        raise Malformed("opts must be an object")
    kind = packet.get("type")
    if not isinstance(kind, int) or isinstance(kind, bool) or not 0 <= kind <= 6:
        raise Malformed(f"unknown packet type {kind!r}")
    if kind not in (PacketType.EVENT, PacketType.BINARY_EVENT):
        raise Unsupported(f"broadcast of a packet of type {kind} (only events are sent)")
    if packet.get("id") is not None:
        raise Unsupported("broadcast with an ack id")
    namespace = _namespace(packet.get("nsp", "/"))
    args = packet.get("data")
    if not isinstance(args, list) or not args:
        raise Malformed("the packet's data must be [event, ...args]")
    event = args[0]
    if not isinstance(event, str) or not event or len(event) > MAX_NAME:
        raise Malformed(f"the event name must be a string of 1-{MAX_NAME} characters")
    if event in RESERVED_EVENTS:
        raise Malformed(f"event name {event!r} is reserved by Socket.IO")
    rooms = _rooms(opts, "rooms")
    exclude = _rooms(opts, "except")
    flags = opts.get("flags", {})
    if flags is not None and not isinstance(flags, dict):
        raise Malformed("flags must be an object")
    # The channel names the namespace, and the room when there is exactly one.
    base = f"{key}#{namespace}#"
    if not channel.startswith(base):
        raise Malformed("the channel does not name the packet's namespace")
    rest = channel[len(base) :]
    if rest and not (len(rooms) == 1 and rest == rooms[0] + "#"):
        raise Malformed("the channel names a room the message does not target")
    return EmitCommand(namespace, event, value(args[1:]), rooms, exclude)


def decode_request(key: str, channel: str, data: bytes) -> Decoded:
    """A message published on ``<key>-request#<nsp>#``: join/leave/disconnect commands,
    or a server event."""
    base = f"{key}-request#"
    if not channel.startswith(base) or not channel.endswith("#"):
        raise Malformed("not a request channel")
    namespace = _namespace(channel[len(base) : -1])
    if data[:1] == b"{":
        try:
            request = loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ProtocolError) as exc:
            raise Malformed(f"not JSON: {exc}") from None
    else:
        request = unpack(data)
    if not isinstance(request, dict):
        raise Malformed("a request must be an object")
    kind = request.get("type")
    if not isinstance(kind, int) or isinstance(kind, bool):
        raise Malformed("the request type must be an integer")
    name = REQUEST_NAMES.get(kind, f"request type {kind}")
    if kind == SERVER_SIDE_EMIT:
        return _server_event(namespace, request)
    if kind not in (REMOTE_JOIN, REMOTE_LEAVE, REMOTE_DISCONNECT):
        raise Unsupported(name)
    if request.get("opts") is None:
        # The adapter's remoteJoin(sid, room) and the like: a Node server waits for an
        # answer on the response channel, which siogate does not give.
        raise Unsupported(f"{name} of one socket id, with an answer")
    rooms, exclude = _selection(request)
    if kind == REMOTE_DISCONNECT:
        close = request.get("close", False)
        if not isinstance(close, bool):
            raise Malformed("'close' must be a boolean")
        return [SocketsCommand("disconnect", namespace, rooms=rooms, exclude=exclude, close=close)]
    targets = _rooms(request, "rooms")
    action: Literal["join", "leave"] = "join" if kind == REMOTE_JOIN else "leave"
    commands: list[Command] = []
    for room in targets:
        commands.append(SocketsCommand(action, namespace, rooms=rooms, room=room, exclude=exclude))
    return commands


def _server_event(namespace: Namespace, request: dict[str, Any]) -> ServerEvent:
    if request.get("requestId") is not None:
        # The adapter's serverSideEmit with an ack: the sender waits for answers.
        raise Unsupported("serverSideEmit with an acknowledgement")
    data = request.get("data")
    if not isinstance(data, list) or not data:
        raise Malformed("serverSideEmit data must be [event, ...args]")
    event = data[0]
    if not isinstance(event, str) or not event or len(event) > MAX_NAME:
        raise Malformed(f"the event name must be a string of 1-{MAX_NAME} characters")
    return ServerEvent(namespace, event, value(data[1:]))


def decode(key: str, channel: str, data: bytes) -> Decoded:
    """The commands one message on the emitter's channels stands for."""
    if channel.startswith(f"{key}-request#"):
        return decode_request(key, channel, data)
    return [decode_broadcast(key, channel, data)]


# The subscription


class EmitterBridge:
    """Subscribes to the emitter's channels and applies what arrives to this node."""

    def __init__(self, url: str, *, key: str = "socket.io", max_message: int = 1_000_000) -> None:
        self.stats = EmitterStats()
        self._url = url
        self._key = key
        self._max = max_message
        self._patterns = (pattern(f"{key}#") + "*", pattern(f"{key}-request#") + "*")
        self._handler: MessageHandler | None = None
        self._server_event: ServerEventHandler | None = None
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    async def start(
        self,
        handler: MessageHandler,
        server_event: ServerEventHandler | None = None,
        wait: float = 3.0,
    ) -> None:
        """Subscribe (waiting at most ``wait`` seconds for it) and keep subscribed:
        commands go to ``handler``, serverSideEmit to ``server_event``."""
        self._handler = handler
        self._server_event = server_event
        self._task = asyncio.create_task(self._subscribe_forever(), name="siogate-emitter")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), wait)

    async def close(self) -> None:
        self._handler = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def receive(self, channel: bytes, data: bytes) -> None:
        """Decode, check and apply one message; count and log what is dropped."""
        try:
            if len(data) > self._max:
                raise Malformed(f"{len(data)} bytes, over the limit of {self._max}")
            try:
                name = channel.decode("utf-8")
            except UnicodeDecodeError:
                raise Malformed("the channel name is not UTF-8") from None
            decoded = decode(self._key, name, data)
        except Unsupported as exc:
            self.stats.unsupported += 1
            peer_log.warning(
                "emitter-unsupported",
                "ignored an emitter message on %r: %s is not supported (docs/emitter.md)",
                channel[:300],
                exc,
            )
            return
        except Malformed as exc:
            self.stats.invalid += 1
            peer_log.warning(
                "emitter-malformed",
                "dropped a malformed emitter message on %r: %s",
                channel[:300],
                exc,
            )
            return
        if self._handler is None:
            return
        try:
            if isinstance(decoded, ServerEvent):
                if not self._take_server_event(decoded):
                    return
            else:
                self._handler(decoded)
        except Exception as exc:
            peer_log.error("emitter-apply", "applying an emitter message failed", exc_info=exc)
            return
        self.stats.applied += 1

    def _take_server_event(self, event: ServerEvent) -> bool:
        taken = self._server_event is not None and self._server_event(
            event.namespace, event.event, event.args
        )
        if not taken:
            self.stats.unsupported += 1
            peer_log.warning(
                "emitter-unsupported",
                "ignored serverSideEmit(%r) in %s: no handler has on_server_event "
                "(docs/emitter.md)",
                event.event,
                event.namespace,
            )
        return taken

    async def _subscribe_forever(self) -> None:
        backoff = _Backoff()
        while True:
            client = Redis.from_url(
                self._url,
                socket_timeout=SOCKET_TIMEOUT,
                socket_connect_timeout=SOCKET_TIMEOUT,
                socket_keepalive=True,
                retry=Retry(NoBackoff(), 0),
            )
            pubsub: PubSub = client.pubsub()
            try:
                await self._listen(pubsub, backoff)
            except (RedisError, OSError) as exc:
                if self.stats.connected:
                    logger.warning(
                        "emitter subscription lost (%s); messages published meanwhile "
                        "are missed, retrying",
                        exc,
                    )
                self.stats.connected = False
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            await backoff.wait()

    async def _listen(self, pubsub: PubSub, backoff: _Backoff) -> None:
        """Subscribe on ``pubsub`` and apply what arrives until the connection fails."""
        await pubsub.psubscribe(*self._patterns)
        confirmed = 0
        next_ping = time.monotonic() + PING_INTERVAL
        ping_sent: float | None = None
        while True:
            message = await pubsub.get_message(timeout=0.5)
            now = time.monotonic()
            if message is None:
                # Only a quiet connection is suspect: one that delivers is alive, and its
                # PONG may be queued behind a burst that takes this node longer than
                # SOCKET_TIMEOUT to work through (or the node was paused); dropping the
                # connection then would lose the rest of the burst.
                if ping_sent is not None and now - ping_sent > SOCKET_TIMEOUT:
                    raise RedisConnectionError("no answer to PING on the subscription")
                if ping_sent is None and now >= next_ping:
                    await pubsub.ping()
                    ping_sent, next_ping = now, now + PING_INTERVAL
                continue
            if ping_sent is not None:
                ping_sent = now
            kind = message["type"]
            if kind == "pmessage":
                self.receive(message["channel"], message["data"])
            elif kind == "pong":
                ping_sent = None
            elif kind == "psubscribe":
                confirmed += 1
                if confirmed == len(self._patterns):
                    if not self.stats.connected:
                        logger.info(
                            "listening for @socket.io/redis-emitter messages on %s (key %r)",
                            redacted(self._url),
                            self._key,
                        )
                    self.stats.connected = True
                    self._subscribed.set()
                    backoff.reset()


__all__ = [
    "EmitterBridge",
    "EmitterError",
    "EmitterStats",
    "Malformed",
    "ServerEvent",
    "ServerEventHandler",
    "Unsupported",
    "decode",
    "decode_broadcast",
    "decode_request",
    "pattern",
    "unpack",
    "value",
]
