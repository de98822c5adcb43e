"""The single-process broker: publishing is applying, asking is answering."""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Sequence

from .base import (
    Answers,
    Broker,
    BrokerStats,
    Command,
    MessageHandler,
    Query,
    QueryHandler,
    Unrouted,
)


class MemoryBroker(Unrouted):
    """Delivers each batch synchronously to the one local node."""

    def __init__(self) -> None:
        self.node_id = secrets.token_hex(4)
        self.stats = BrokerStats()
        self._handler: MessageHandler | None = None
        self._answer: QueryHandler | None = None

    async def start(self, handler: MessageHandler, answer: QueryHandler) -> None:
        self._handler = handler
        self._answer = answer

    async def publish(self, commands: Sequence[Command]) -> None:
        if self._handler is None:
            raise RuntimeError("broker is not started")
        # Applied before returning, so a 200 from the API means "done" on this node.
        self._handler(commands)
        self.stats.messages_out += 1

    async def query(self, query: Query, timeout: float) -> Answers:
        if self._answer is None:
            raise RuntimeError("broker is not started")
        answer = self._answer(query)
        if inspect.isawaitable(answer):
            answer = await answer
        return Answers([(self.node_id, answer)])

    async def node_url(self, node_id: str) -> str | None:
        return None

    async def close(self) -> None:
        self._handler = None
        self._answer = None


_: type[Broker] = MemoryBroker
