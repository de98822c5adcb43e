"""Handlers that make siogate behave as the Socket.IO protocol test suite expects.

Start siogate for the suite (see docs/handlers.md)::

    siogate serve --port 3000 --handlers examples.conformance:handlers --auth handlers \\
        --ping-interval 300 --ping-timeout 200 --namespace / --namespace /custom \\
        --allow-anonymous
"""

from __future__ import annotations

from typing import Any

from siogate.handlers import HandlerSocket


class ConformanceHandlers:
    """On connect emit ``auth`` with the CONNECT payload; echo ``message``; ack with args."""

    async def on_connect(self, socket: HandlerSocket, auth: dict[str, Any] | None) -> None:
        socket.emit("auth", auth if auth is not None else {})

    async def on_event(self, socket: HandlerSocket, event: str, args: list[Any]) -> list[Any]:
        if event == "message":
            socket.emit("message-back", *args)
        return args


handlers = ConformanceHandlers()
