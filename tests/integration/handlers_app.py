"""In-process handlers used by test_handlers.py (loaded by the gateway subprocess)."""

from __future__ import annotations

from typing import Any

from siogate import HandlerSocket, Refuse


class Handlers:
    async def on_connect(self, socket: HandlerSocket, auth: dict[str, Any] | None) -> None:
        auth = auth or {}
        if auth.get("refuse"):
            raise Refuse("go away", {"reason": auth["refuse"]})
        if auth.get("kick"):
            socket.disconnect()
        for room in auth.get("join", []):
            socket.join(room)
        for room in auth.get("leave", []):
            socket.leave(room)
        socket.emit("welcome", sorted(socket.rooms))

    async def on_event(self, socket: HandlerSocket, event: str, args: list[Any]) -> Any:
        if event == "boom":
            raise RuntimeError("handler bug")
        if event == "whoami":
            return [socket.id, socket.user, sorted(socket.rooms)]
        return None


class NoConnect:
    async def on_event(self, socket: HandlerSocket, event: str, args: list[Any]) -> Any:
        return args
