"""A python-socketio ``AsyncClient`` that records what it receives, for the API tests.

Negative checks ("this socket must not receive X") are closed with a sentinel: the API
applies emits in order and a socket receives them in order, so once a later emit has
reached a socket, an earlier one that has not arrived never will.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import socketio

WAIT = 5.0  # seconds for one delivery


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Recorder:
    """A python-socketio ``AsyncClient`` that keeps every event it receives, in order."""

    def __init__(
        self,
        url: str,
        *,
        auth: dict[str, Any] | None = None,
        namespaces: list[str] | None = None,
        transports: list[str] | None = None,
    ) -> None:
        """``transports`` None: python-socketio's default, polling first, then an upgrade."""
        namespaces = namespaces or ["/"]
        self.url = url
        self.auth = auth
        self.namespaces = namespaces
        self.transports = transports
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, str, list[Any]]] = []  # (namespace, event, args)
        self.disconnects: list[tuple[str, Any]] = []  # (namespace, reason)
        self.connect_errors: list[Any] = []  # the CONNECT_ERROR data, any namespace
        self._changed = asyncio.Event()
        for ns in namespaces:
            self.sio.on("*", partial(self._on_event, ns), namespace=ns)
            self.sio.on("disconnect", partial(self._on_disconnect, ns), namespace=ns)
            self.sio.on("connect_error", self._on_connect_error, namespace=ns)

    async def _on_event(self, ns: str, event: str, *args: Any) -> None:
        self.events.append((ns, event, list(args)))
        self._changed.set()

    async def _on_connect_error(self, data: Any = None) -> None:
        self.connect_errors.append(data)

    async def _on_disconnect(self, ns: str, reason: Any = None) -> None:
        self.disconnects.append((ns, reason))
        self._changed.set()

    async def connect(self) -> Recorder:
        await self.sio.connect(
            self.url,
            auth=self.auth,
            namespaces=self.namespaces,
            transports=self.transports,
            wait_timeout=WAIT,
        )
        return self

    def sid(self, namespace: str = "/") -> str:
        sid = self.sio.get_sid(namespace)
        assert sid, f"not connected to {namespace}"
        return sid

    def received(self, event: str, namespace: str = "/") -> list[list[Any]]:
        return [args for ns, ev, args in self.events if ev == event and ns == namespace]

    async def until(self, done: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        async def wait() -> None:
            while not done():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"{what} within {timeout}s; saw {self.events}") from None

    async def wait_event(self, event: str, namespace: str = "/", count: int = 1) -> list[Any]:
        """The args of the ``count``-th ``event`` received on ``namespace``."""
        await self.until(
            lambda: len(self.received(event, namespace)) >= count,
            f"no {count}x {event!r} on {namespace}",
        )
        return self.received(event, namespace)[count - 1]

    async def call(
        self, event: str, *args: Any, namespace: str = "/", timeout: float = WAIT
    ) -> list[Any]:
        """Emit with an ack callback; the ack's arguments as a list."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self.sio.emit(
            event, args, namespace=namespace, callback=lambda *ack: future.set_result(list(ack))
        )
        return await asyncio.wait_for(future, timeout)

    async def wait_disconnect(self) -> tuple[str, Any]:
        await self.until(lambda: bool(self.disconnects), "no disconnect")
        return self.disconnects[0]

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()
        await self.sio.shutdown()
