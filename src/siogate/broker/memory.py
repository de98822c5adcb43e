"""The single-process broker: publishing is applying."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Broker, Command, MessageHandler


class MemoryBroker:
    """Delivers each batch synchronously to the one local node."""

    def __init__(self) -> None:
        self._handler: MessageHandler | None = None

    async def start(self, handler: MessageHandler) -> None:
        self._handler = handler

    async def publish(self, commands: Sequence[Command]) -> None:
        if self._handler is None:
            raise RuntimeError("broker is not started")
        # Applied before returning, so a 200 from the API means "done" on this node.
        self._handler(commands)

    async def close(self) -> None:
        self._handler = None


_: type[Broker] = MemoryBroker
