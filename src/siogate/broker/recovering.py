"""The Redis broker with cross-node connection state recovery (``--recovery-window``
with ``--redis-url``).

Every command is logged and published in one atomic step
(:meth:`siogate.broker.streams.RedisRecoveryLog.append_and_publish`) on the one channel
every node subscribes to, and every node — the publisher included — applies it when it
comes back from that subscription, with its offset set. So all nodes apply all commands
in the log's order, and a socket receives its events in offset order: the offset a
client reports is a point in the log before which it has seen everything meant for it.

This costs the routing of docs/cluster.md: per-room shard channels and node channels are
not used while recovery is on (a recovered socket keeps its id, which names the node it
was first on; and a single order is what makes offsets comparable). Every node receives
every command, as with ``--cluster-routing broadcast``.

A node's own command that does not come back within :data:`OWN_TIMEOUT` (its
subscription is down) is applied locally then, out of log order, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

from redis.exceptions import RedisError

from ..types import Namespace, Sid
from . import wire
from .base import (
    BrokerUnavailable,
    Command,
    Guard,
    MessageHandler,
    QueryHandler,
    Unrouted,
    with_offset,
)
from .redis import RedisBroker, Scripted
from .streams import (
    LetGo,
    Outbound,
    RedisRecoveryLog,
    apply_logged,
    decode_logged,
    let_go_message,
    own_message,
    parse_offset,
    split_append_reply,
    told_to_let_go,
)

logger = logging.getLogger("siogate.broker")

# Seconds a node waits for its own command to come back before applying it anyway.
OWN_TIMEOUT: Final = 2.0


# The tail of a node's own command message as it comes back from Redis: publish_logged
# appends the request id, the log script the offsets.
_REQ: Final = b',"req":"'
_OFFSETS: Final = b'","offsets":['


def own_echo(data: bytes) -> tuple[str, list[str]] | None:
    """(request id, offsets) read from the tail of this node's own message, without
    decoding the rest; None when the tail is not that shape (the caller decodes it all).
    The request id is matched against the node's own pending requests before use."""
    start = data.rfind(_REQ) + len(_REQ)
    end = start + 16  # streams.own_message's request ids
    if start < len(_REQ) or data[end : end + len(_OFFSETS)] != _OFFSETS:
        return None
    # The script writes the ids as '"<ms>-<seq>"' joined by commas; split by hand (a JSON
    # decode of the list was the largest part of reading the tail) and check each.
    quoted = data[end + len(_OFFSETS) : -2]
    if len(quoted) < 2 or quoted[:1] != b'"' or quoted[-1:] != b'"' or not quoted.isascii():
        return None
    offsets = quoted[1:-1].decode("ascii").split('","')
    if not data.endswith(b"]}") or not all(parse_offset(o) for o in offsets):
        return None
    return data[start:end].decode("ascii", "replace"), offsets


class RecoveringRedisBroker(Unrouted, RedisBroker):
    """:class:`~siogate.broker.redis.RedisBroker` whose commands go through the log.
    Shards are not used (:class:`~siogate.broker.base.Unrouted`): every command is on
    the command channel."""

    def __init__(
        self,
        url: str,
        *,
        window: float,
        max_log: int,
        max_missed: int,
        log_age: float | None = None,
        **options: Any,
    ) -> None:
        options["routing"] = "broadcast"
        super().__init__(url, **options)
        self._window, self._max_log, self._max_missed = window, max_log, max_missed
        self._log_age = log_age
        self.log: RedisRecoveryLog | None = None
        # Own commands published, waiting to come back: request id -> (future, commands,
        # the script that logged them).
        self._waiting: dict[str, tuple[asyncio.Future[list[str]], Sequence[Command], Scripted]] = {}
        self.let_go: LetGo | None = None
        self.applied_out_of_order = 0

    async def start(self, handler: MessageHandler, answer: QueryHandler) -> None:
        self.log = RedisRecoveryLog(
            self._client(),
            prefix=self._prefix,
            node=self.node_id,
            window=self._window,
            log_age=self._log_age,
            max_log=self._max_log,
            max_missed=self._max_missed,
        )
        await super().start(handler, answer)

    async def close(self) -> None:
        await super().close()
        if self.log is not None:
            await self.log.aclose()

    async def publish(self, commands: Sequence[Command]) -> None:
        await self.publish_logged(commands)

    async def publish_logged(self, commands: Sequence[Command]) -> list[str]:
        """Publish ``commands`` through the log; their offsets, once this node applied
        them."""
        if self._handler is None or self.log is None:
            raise RuntimeError("broker is not started")
        if not commands:
            return []
        request, data, message = own_message(self.node_id, commands)
        out = Outbound(self._commands_channel, False, message, tuple(range(len(commands))))
        # One command: its message is also its log entry (encoded once).
        entries = [data] if len(commands) == 1 else None
        now_ms = int(time.time() * 1000)
        # In the publish queue's pipeline, as plain publishes are: a script call through
        # redis-py cost about 65 us of CPU, several times the rest of a publish.
        packed, source = self.log.pack_append_publish(commands, [out], now_ms, entries=entries)
        script = Scripted(packed, source, settles=False)
        loop = asyncio.get_running_loop()
        # Settled with the offsets once this node applied the commands as they came back
        # (_dispatch), or failed by the queue (BrokerUnavailable, counted there).
        future: asyncio.Future[list[str]] = loop.create_future()
        self._waiting[request] = (future, commands, script)
        self._enqueue((script, b"", None, future, None))
        late = loop.call_later(OWN_TIMEOUT, self._not_back, request)
        try:
            return await future
        finally:
            late.cancel()
            self._waiting.pop(request, None)

    def _not_back(self, request: str) -> None:
        """Our command did not come back in time (the subscription is down): apply it
        here now, out of log order, rather than never."""
        waiting = self._waiting.get(request)
        if waiting is None or waiting[0].done() or self._handler is None:
            return
        future, commands, script = waiting
        if script.reply is None:
            # Redis has not answered the script yet: the queue fails it, or it comes back.
            asyncio.get_running_loop().call_later(OWN_TIMEOUT, self._not_back, request)
            return
        del self._waiting[request]
        offsets, _ = split_append_reply(script.reply, len(commands))
        self.applied_out_of_order += 1
        logger.warning("a published command did not come back; applied out of log order")
        pairs = zip(commands, offsets, strict=True)
        apply_logged(self._handler, [with_offset(c, o) for c, o in pairs], future)

    def tell_let_go(self, node: str, namespace: Namespace, sid: Sid) -> None:
        """Tell ``node`` (by the command channel) that this node took ``sid`` over."""
        body = let_go_message(node, namespace, sid)
        data = wire.prefix(self.node_id) + json.dumps(body).encode()[1:]
        self._enqueue((self._commands_channel, data, None, None, None))

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel.decode(errors="replace") != self._commands_channel:
            super()._dispatch(channel, data)
            return
        if data.startswith(self._own):
            echo = own_echo(data)
            if echo is not None:
                # One of ours: applied with the commands kept when it was published
                # (decoding the message again cost more than the rest of its way back).
                waiting = self._waiting.pop(echo[0], None)
                if waiting is None:
                    return  # applied already (it came back too late), or not one of ours
                if len(echo[1]) == len(waiting[1]):
                    pairs = zip(waiting[1], echo[1], strict=True)
                    echoed = [with_offset(c, o) for c, o in pairs]
                    apply_logged(self._handler, echoed, waiting[0])
                    return
                self._waiting[echo[0]] = waiting  # not as published: read it in full
        try:
            message, commands = decode_logged(data)
        except wire.WireError as exc:
            self.stats.messages_invalid += 1
            logger.warning("ignored a malformed message on %r: %s", channel, exc)
            return
        if commands is None:
            told_to_let_go(message["letgo"], self.node_id, self.let_go)
            return
        future = None
        if data.startswith(self._own):
            request = message.get("req")
            waiting = self._waiting.pop(request, None) if isinstance(request, str) else None
            if waiting is None:
                return  # applied already (it came back too late), or not one of ours
            future = waiting[0]
        else:
            self.stats.messages_in += 1
        apply_logged(self._handler, commands, future)

    async def publish_guarded(self, commands: Sequence[Command], guard: Guard) -> bytes | None:
        """The Idempotency-Key guard, then the publish through the log (RedisBroker's
        one-step script would publish outside the log): ``SET NX`` the key, publish, and
        take the key back if the publish failed. Not one atomic step: a node that dies
        between the two leaves the key holding a request that was not published."""
        assert self.log is not None
        redis = self.log.redis
        for _ in range(3):
            try:
                if await redis.set(guard.key, guard.value, nx=True, px=guard.ttl_ms):
                    break
                found = await redis.get(guard.key)
            except (RedisError, OSError) as exc:
                raise BrokerUnavailable(f"Redis did not answer the guard: {exc}") from exc
            if found is not None:
                return found if isinstance(found, bytes) else str(found).encode()
            # Expired between the two calls: try again.
        else:
            raise BrokerUnavailable("the idempotency key kept changing")
        try:
            await self.publish_logged(commands)
        except BaseException:
            with contextlib.suppress(RedisError, OSError):
                if await redis.get(guard.key) == guard.value.encode():
                    await redis.delete(guard.key)
            raise
        return None
