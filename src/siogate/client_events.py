"""Events a client sends: past its connection's rate limit, to the in-process handler
or the webhook, and the acks back.

The node finds the socket an event is for and hands it here. Webhook calls run in one
lane per client connection (``webhook_per_socket`` at once, all its namespaces together):
the dispatcher's slots are shared by every connection, and a client flooding events at
a slow webhook must not take them all. Events beyond that wait in the lane's own queue
(bounded); past it they are refused with an ack error, never dropped silently.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Literal, Protocol

from .errors import WebhookError
from .handlers import Handlers, call
from .hub import Link, Socket
from .metrics import Metrics
from .protocol import socketio
from .protocol.events import EventReceived
from .ratelimit import TokenBucket
from .ratelog import RateLimitedLog
from .types import Sid
from .webhooks import WebhookDispatcher

logger = logging.getLogger("siogate.node")
# For lines a client can cause at will (floods, full queues).
peer_log = RateLimitedLog(logger)

# What happens to a client event over the connection's rate.
EventRateAction = Literal["drop", "disconnect"]
# The disconnect reason for a connection closed by the "disconnect" action.
REASON_RATE_LIMITED = "rate limited"
# Events of one connection waiting for its webhook lane (all namespaces together).
MAX_WAITING_PER_SOCKET = 256


class EventLimits(Protocol):
    """The node's options this module reads (siogate.node.NodeOptions)."""

    @property
    def webhook_per_socket(self) -> int: ...
    @property
    def event_rate(self) -> float: ...
    @property
    def event_burst(self) -> int: ...
    @property
    def event_rate_action(self) -> EventRateAction: ...


def webhook_payload(kind: str, socket: Socket) -> dict[str, Any]:
    """The part every webhook about a socket starts with."""
    return {
        "type": kind,
        "namespace": socket.namespace,
        "socket": {"id": socket.id, "user": socket.user},
    }


def event_payload(socket: Socket, event: EventReceived) -> dict[str, Any]:
    payload = webhook_payload("event", socket)
    payload["event"] = event.event
    try:
        payload["args"] = socketio.json_safe(event.args)
    except RecursionError:
        raise WebhookError("webhook_bad_payload", "event arguments nested too deeply") from None
    return payload


def ack(link: Link, socket: Socket, ack_id: int, args: list[Any]) -> None:
    """Answer a client's ack request, unless the socket left meanwhile."""
    if link.session.namespaces.get(socket.namespace) != socket.id:
        return
    packet = socketio.Packet(socketio.PacketType.ACK, socket.namespace, args, ack_id)
    link.session.send(packet)
    link.flush()


class _Lane:
    """Webhook calls of one client connection: how many run, and the events waiting."""

    __slots__ = ("running", "waiting")

    def __init__(self) -> None:
        self.running = 0
        self.waiting: deque[tuple[Socket, EventReceived]] = deque()


class ClientEvents:
    """Rate limits, webhook lanes and handler calls for the events of one node's
    client connections."""

    def __init__(
        self,
        *,
        limits: EventLimits,
        metrics: Metrics,
        webhooks: WebhookDispatcher | None,
        handlers: Handlers | None,
        handle_of: Callable[[Sid], object | None],
        spawn: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self._limits = limits
        self._metrics = metrics
        self._webhooks = webhooks
        self._handlers = handlers
        # The handlers' socket object (siogate.node.ServerSocket) of a socket, if any.
        self._handle_of = handle_of
        self._spawn = spawn
        # Per-connection webhook queues, only while a connection has calls running.
        self._lanes: dict[Link, _Lane] = {}
        # Per-connection rate buckets (only with a rate), from the connection's first
        # event to its end.
        self._buckets: dict[Link, TokenBucket] = {}
        # Monotonic seconds, for the rate buckets (tests may replace it).
        self.clock = time.monotonic

    def received(self, link: Link, socket: Socket, event: EventReceived) -> None:
        """An event from ``socket``, one of ``link``'s open sockets."""
        if self._limits.event_rate > 0 and not self._within_rate(link):
            self._over_rate(link, socket, event)
            return
        handlers = self._handlers
        if handlers is not None and handlers.on_event is not None:
            handle = self._handle_of(socket.id)
            if handle is not None:
                self._spawn(self._with_handler(handle, link, socket, event))
                if self._webhooks is not None:
                    try:
                        self._webhooks.notify(event_payload(socket, event))
                    except WebhookError as exc:
                        logger.warning("event %r not forwarded: %s", event.event, exc.message)
                return
        if self._webhooks is not None:
            self._submit_webhook(link, socket, event)
            return
        self._metrics.client_events_unhandled_total += 1
        logger.debug("event %r from %s has no handler or webhook", event.event, socket.id)
        if event.ack_id is not None:
            error = {"code": "no_handler", "message": "the gateway has no webhook for events"}
            ack(link, socket, event.ack_id, [{"error": error}])

    def closed(self, link: Link) -> None:
        """``link``'s client connection ended."""
        self._buckets.pop(link, None)

    def _within_rate(self, link: Link) -> bool:
        now = self.clock()
        bucket = self._buckets.get(link)
        if bucket is None:
            limits = self._limits
            bucket = self._buckets[link] = TokenBucket(limits.event_rate, limits.event_burst, now)
        return bucket.take(now)

    def _over_rate(self, link: Link, socket: Socket, event: EventReceived) -> None:
        self._metrics.client_events_rate_limited_total += 1
        if self._limits.event_rate_action == "disconnect":
            peer_log.warning("rate-disconnect", "closing %s: over the event rate", link.session.sid)
            link.close(REASON_RATE_LIMITED)
            return
        peer_log.warning(
            "rate-drop", "dropping events from %s: over the event rate", link.session.sid
        )
        if event.ack_id is not None:
            error = {
                "code": "rate_limited",
                "message": f"over {self._limits.event_rate:g} events per second",
            }
            ack(link, socket, event.ack_id, [{"error": error}])

    async def _with_handler(
        self, handle: object, link: Link, socket: Socket, event: EventReceived
    ) -> None:
        assert self._handlers is not None and self._handlers.on_event is not None
        try:
            result = await call(self._handlers.on_event, handle, event.event, event.args)
        except Exception as exc:
            logger.exception("on_event handler failed")
            result = [{"error": {"code": "handler_failed", "message": type(exc).__name__}}]
        if event.ack_id is not None:
            if result is None:
                args = []
            elif isinstance(result, list | tuple):
                args = list(result)
            else:
                args = [result]
            ack(link, socket, event.ack_id, args)

    def _submit_webhook(self, link: Link, socket: Socket, event: EventReceived) -> None:
        """Run the webhook call for a client event in the connection's lane (see the
        module docstring). The cap is per connection, not per socket, so that opening
        more namespaces buys no more calls."""
        lane = self._lanes.get(link)
        if lane is None:
            lane = self._lanes[link] = _Lane()
        if lane.running < self._limits.webhook_per_socket:
            lane.running += 1
            self._spawn(self._drain_lane(lane, link, socket, event))
        elif len(lane.waiting) < MAX_WAITING_PER_SOCKET:
            lane.waiting.append((socket, event))
        else:
            self._metrics.client_events_dropped_total += 1
            peer_log.warning(
                "webhook-queue-full",
                "dropping event %r from %s: its webhook queue is full",
                event.event,
                socket.id,
            )
            if event.ack_id is not None:
                error = {"code": "webhook_overloaded", "message": "too many events waiting"}
                ack(link, socket, event.ack_id, [{"error": error}])

    async def _drain_lane(
        self, lane: _Lane, link: Link, socket: Socket, event: EventReceived
    ) -> None:
        try:
            work: tuple[Socket, EventReceived] | None = (socket, event)
            while work is not None:
                await self._with_webhook(link, *work)
                work = lane.waiting.popleft() if lane.waiting else None
        finally:
            lane.running -= 1
            if lane.running == 0 and self._lanes.get(link) is lane:
                del self._lanes[link]

    async def _with_webhook(self, link: Link, socket: Socket, event: EventReceived) -> None:
        assert self._webhooks is not None
        try:
            args = await self._webhooks.call(event_payload(socket, event))
        except WebhookError as exc:
            logger.warning("webhook failed for event %r: %s", event.event, exc.message)
            args = [{"error": {"code": exc.code, "message": exc.message}}]
        if event.ack_id is not None:
            ack(link, socket, event.ack_id, args)
