"""Emit and wait for acknowledgements across the cluster (``POST /v1/emit`` with
``ack``; docs/http-api.md).

The asking node counts the recipients on every node first (over the cap: refused before
anything is sent), then every node sends the event to its own recipients, each with an
ack id from this node's :class:`~siogate.acks.AckRegistry`, and answers with the replies
once all came or its timeout passed. A socket that leaves meanwhile is reported at once.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from . import acks as acks_module
from .acks import AckRegistry, AckResult, TooManyPending, TooManyRecipients
from .broker import AckEmitQuery, Answers, Broker, CountQuery, EmitCommand
from .hub import Hub, Socket
from .listings import Listing
from .metrics import Metrics
from .protocol import socketio
from .recovery import is_parked

logger = logging.getLogger("siogate.node")


class AckLimits(Protocol):
    """The node's options this module reads (siogate.node.NodeOptions)."""

    @property
    def max_ack_recipients(self) -> int: ...
    @property
    def max_pending_acks(self) -> int: ...
    @property
    def query_timeout(self) -> float: ...


class AckEmits:
    """A node's side of emits with ack: those it asks for, and its part of any node's."""

    def __init__(
        self,
        *,
        hub: Hub,
        broker: Broker,
        registry: AckRegistry,
        metrics: Metrics,
        limits: AckLimits,
        recovery: bool,
    ) -> None:
        self._hub = hub
        self._broker = broker
        self._registry = registry
        self._metrics = metrics
        self._limits = limits
        # With connection state recovery, sockets in their window are left out.
        self._recovery = recovery
        # Emits with ack asked through this node and not answered yet.
        self._asking = 0

    async def emit(self, command: EmitCommand, timeout_ms: int) -> tuple[AckResult, Listing]:
        """Emit ``command`` with an ack id per recipient, on every node; wait until each
        recipient answered or left, or ``timeout_ms`` passed.

        Raises :class:`~siogate.acks.TooManyPending` or
        :class:`~siogate.acks.TooManyRecipients` before anything is sent.
        """
        limits = self._limits
        if self._asking >= limits.max_pending_acks:
            raise TooManyPending(limits.max_pending_acks)
        self._asking += 1
        try:
            counted = await self._broker.query(CountQuery(command), limits.query_timeout)
            total = sum(n for _, n in counted.answers if type(n) is int)
            if total > limits.max_ack_recipients:
                raise TooManyRecipients(total, limits.max_ack_recipients)
            query = AckEmitQuery(command, timeout_ms, limits.max_ack_recipients)
            # The other nodes answer once their own timeout has passed, at the latest.
            answers = await self._broker.query(query, timeout_ms / 1000 + limits.query_timeout)
        finally:
            self._asking -= 1
        return _result(answers)

    def answer(self, query: CountQuery | AckEmitQuery) -> Any:
        """This node's part: its recipient count, or (a coroutine) its replies."""
        emit = query.emit
        targets = self._hub.select(emit.namespace, emit.rooms, emit.exclude)
        if self._recovery:
            # A socket in its recovery window cannot answer; emits with ack are not
            # kept for it (as in Socket.IO).
            targets = [s for s in targets if not is_parked(s)]
        if isinstance(query, CountQuery):
            return len(targets)
        if len(targets) > query.max_recipients:
            # Grown past the cap since the cluster-wide count: send nothing here.
            return {"refused": len(targets)}
        return self._emit_here(query, targets)

    async def _emit_here(self, query: AckEmitQuery, targets: list[Socket]) -> Any:
        """Send ``query``'s emit to ``targets``, each with its own ack id; the replies."""
        emit = query.emit
        pending, ids = self._registry.open(s.id for s in targets)
        for socket, ack_id in zip(targets, ids, strict=True):
            link = socket.link
            link.session.send(socketio.event_packet(emit.namespace, emit.event, emit.args, ack_id))
            link.flush()
        self._metrics.emits_total += 1
        self._metrics.packets_out_total += len(targets)
        await self._registry.wait(pending, query.timeout_ms / 1000)
        # Binary replies become {"_binary": base64}, as in webhook bodies.
        return socketio.json_safe(acks_module.answer_json(pending))


def _result(answers: Answers) -> tuple[AckResult, Listing]:
    result = AckResult()
    for node, answer in answers.answers:
        if not result.add(node, answer):
            logger.warning("node %s sent a malformed ack emit answer", node)
    if result.refused:
        logger.warning(
            "ack emit: nodes %s sent nothing (their recipients grew past the cap)",
            ", ".join(result.refused),
        )
    missing = tuple(sorted({*answers.missing, *result.refused}))
    return result, Listing(len(answers.answers) - len(result.refused), missing, answers.complete)
