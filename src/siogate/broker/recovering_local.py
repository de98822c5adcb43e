"""The workers' broker with connection state recovery (``serve --workers N
--recovery-window S`` without ``--redis-url``).

What :mod:`siogate.broker.recovering` does through Redis, through the primary's relay:
every command goes through the relay's log (:mod:`siogate.broker.relay_log`) and comes
back to every worker, the publisher included, with its offset; each worker applies it
then. So all workers apply all commands in the log's order, and a socket that recovers
on another worker is replayed from the same log it was served from. The relay's one
loop is the single order; the publisher's own command comes back on the same stream
before the relay's acknowledgement, so "applied here, then answered" holds as for any
publish, and a command published after that answer is behind it on every worker.

As with Redis, routing is off while recovery is on: every worker receives every command
(a recovered socket keeps its id, which names the worker it was first on).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

from ..types import Namespace, Sid
from . import routing, wire
from .base import BrokerUnavailable, Command, Unrouted
from .local import COMMANDS, LOGGED, PUBLISH, LocalBroker, destination, logged
from .relay_log import RelayLogClient
from .streams import (
    LetGo,
    apply_logged,
    decode_logged,
    let_go_message,
    own_message,
    told_to_let_go,
)

logger = logging.getLogger("siogate.broker")


class RecoveringLocalBroker(Unrouted, LocalBroker):
    """:class:`~siogate.broker.local.LocalBroker` whose commands go through the log.
    Shards are not used (:class:`~siogate.broker.base.Unrouted`): every command reaches
    every worker."""

    def __init__(
        self,
        path: str,
        *,
        advertise_url: str | None,
        window: float,
        max_missed: int,
        node_id: str | None = None,
    ) -> None:
        super().__init__(path, advertise_url=advertise_url, node_id=node_id)
        self.log = RelayLogClient(
            self.call, node=self.node_id, window=window, max_missed=max_missed
        )
        # Own commands sent, waiting to come back: request id -> (future, commands).
        self._waiting: dict[str, tuple[asyncio.Future[list[str]], Sequence[Command]]] = {}
        self.let_go: LetGo | None = None
        # Always 0 here (the relay passes every logged command back); kept for the
        # metric the Redis broker feeds.
        self.applied_out_of_order = 0

    async def publish(self, commands: Sequence[Command]) -> None:
        await self.publish_logged(commands)

    async def publish_logged(self, commands: Sequence[Command]) -> list[str]:
        """Publish ``commands`` through the log; their offsets, once this worker applied
        them."""
        if self._handler is None:
            raise RuntimeError("broker is not started")
        if not commands:
            return []
        request, data, message = own_message(self.node_id, commands)
        # One command: its message is also its log entry (encoded once).
        if len(commands) == 1:
            entries = [data]
        else:
            entries = [wire.encode_commands(self.node_id, [c]) for c in commands]
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[str]] = loop.create_future()
        acked: asyncio.Future[None] = loop.create_future()
        self._waiting[request] = (future, commands)
        try:
            self._send(LOGGED, logged(entries, message), None, acked)
        except BrokerUnavailable:
            self._waiting.pop(request, None)
            self.stats.publish_failures += 1
            raise
        self.stats.messages_out += 1
        try:
            # The relay passes the message back before it acknowledges the frame, on
            # the same stream: acknowledged and not back means it was not logged.
            await acked
            if not future.done():
                self.stats.publish_failures += 1
                raise BrokerUnavailable("the workers' relay did not log the publish")
            return await future
        finally:
            self._waiting.pop(request, None)

    def tell_let_go(self, node: str, namespace: Namespace, sid: Sid) -> None:
        """Tell worker ``node`` that this worker took ``sid`` over."""
        body = let_go_message(node, namespace, sid)
        data = wire.prefix(self.node_id) + json.dumps(body).encode()[1:]
        to = destination(routing.Destination("node", node))
        try:
            self._send(PUBLISH, to + data, None, None)
        except BrokerUnavailable:
            logger.warning("could not tell worker %s to let %s go", node, sid)

    def _receive(self, kind: int, body: bytes) -> None:
        if kind != COMMANDS:
            super()._receive(kind, body)
            return
        own = body.startswith(self._own)
        try:
            message, commands = decode_logged(body)
        except wire.WireError as exc:
            self.stats.messages_invalid += 1
            logger.warning("ignored a malformed message from the relay: %s", exc)
            return
        if commands is None:
            told_to_let_go(message["letgo"], self.node_id, self.let_go)
            return
        future = None
        if own:
            request = message.get("req")
            waiting = self._waiting.pop(request, None) if isinstance(request, str) else None
            if waiting is None:
                return  # not one of ours (a worker before us with our id?)
            future = waiting[0]
        else:
            self.stats.messages_in += 1
        apply_logged(self._handler, commands, future)

    def _lost(self, error: str) -> None:
        super()._lost(error)
        failure = BrokerUnavailable(error)
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(failure)
