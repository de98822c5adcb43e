"""The broker contract.

A broker carries commands from the node that received them (through the HTTP API) to
every node, the sender included. It never looks at sockets: each node hands it a
:data:`MessageHandler` that applies the commands to its own hub.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..types import Namespace, Room, Sid


@dataclass(frozen=True, slots=True)
class EmitCommand:
    """Send ``event(*args)`` to the sockets of ``namespace`` selected by rooms."""

    namespace: Namespace
    event: str
    args: list[Any]
    rooms: tuple[Room, ...] = ()
    exclude: tuple[Room, ...] = ()


@dataclass(frozen=True, slots=True)
class SocketsCommand:
    """Join, leave or disconnect the sockets named by id or selected by rooms."""

    action: Literal["join", "leave", "disconnect"]
    namespace: Namespace
    sockets: tuple[Sid, ...] = ()
    rooms: tuple[Room, ...] = ()
    room: Room | None = None


Command = EmitCommand | SocketsCommand

MessageHandler = Callable[[Sequence[Command]], None]
"""Applies commands to the local hub, in order."""


class Broker(Protocol):
    """Carries command batches to every node; a batch keeps its order on each node."""

    async def start(self, handler: MessageHandler) -> None:
        """Begin delivering published batches to ``handler``."""

    async def publish(self, commands: Sequence[Command]) -> None:
        """Send one batch to all nodes. Returns once the local node has applied it."""

    async def close(self) -> None:
        """Stop delivering and release connections."""
