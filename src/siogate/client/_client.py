"""``Client`` (blocking) and ``AsyncClient`` (asyncio): the I/O half of the SDK.

Each public method is one line: build a call with ``_core``, then ``_send`` it.
``_send`` is the only logic written twice, because one version sleeps and sends
with blocking calls and the other awaits them; the decisions it makes (retry or
not, value or exception) are ``BaseClient``'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TypeVar, Unpack

import httpx

from siogate.client import _core
from siogate.client._core import BaseClient, Call, Outcome
from siogate.client._models import (
    AckResult,
    Emit,
    EmitOptions,
    PresenceListing,
    RoomHistory,
    RoomPresenceListing,
    RoomsListing,
    Selector,
    SocketsListing,
)

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")


class Client(BaseClient[httpx.Client]):
    """A blocking client of the siogate HTTP API.

    ``Client(url, api_key)``; keyword options: ``jwt_secret`` (for :meth:`token`),
    ``timeout`` (seconds, or an ``httpx.Timeout``), ``retries`` and ``backoff``.
    Each POST method sends an ``Idempotency-Key`` on every attempt (its
    ``idempotency_key``, or a random one per call), so a retried call is applied
    once. One client holds a pool of keep-alive connections and may be
    shared between threads; close it, or use it as a context manager.
    """

    def _open(self, headers: dict[str, str]) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout)

    def _send(self, call: Call[T]) -> T:
        request = self._request(call)
        attempt = 0
        while True:
            try:
                outcome: Outcome = self._http.send(request)
            except httpx.RequestError as exc:
                outcome = exc
            delay = self._retry_delay(call, attempt, outcome)
            if delay is None:
                return self._result(call, outcome)
            time.sleep(delay)
            attempt += 1

    def emit(
        self, event: str, *, idempotency_key: str | None = None, **options: Unpack[EmitOptions]
    ) -> None:
        """``POST /v1/emit``: send ``event`` to the selected sockets of a namespace."""
        self._send(_core.emit_call(event, options, idempotency_key))

    def emit_with_ack(
        self,
        event: str,
        timeout_ms: int,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EmitOptions],
    ) -> AckResult:
        """``POST /v1/emit`` with ``ack``: send ``event`` and wait until every recipient
        answered (or left), or ``timeout_ms`` passed; their answers and who was silent."""
        return self._send(_core.emit_with_ack_call(event, timeout_ms, options, idempotency_key))

    def batch(self, emits: Iterable[Emit], *, idempotency_key: str | None = None) -> int:
        """``POST /v1/batch``: several emits, validated together, applied in order."""
        return self._send(_core.batch_call(emits, idempotency_key))

    def join(
        self, room: str, *, idempotency_key: str | None = None, **selector: Unpack[Selector]
    ) -> None:
        """``POST /v1/join``: add the selected sockets to ``room``."""
        self._send(_core.select_call("join", room, selector, idempotency_key))

    def leave(
        self, room: str, *, idempotency_key: str | None = None, **selector: Unpack[Selector]
    ) -> None:
        """``POST /v1/leave``: remove the selected sockets from ``room``."""
        self._send(_core.select_call("leave", room, selector, idempotency_key))

    def disconnect(
        self, *, idempotency_key: str | None = None, **selector: Unpack[Selector]
    ) -> None:
        """``POST /v1/disconnect``: disconnect the selected sockets from the namespace."""
        self._send(_core.select_call("disconnect", None, selector, idempotency_key))

    def rooms(
        self, namespace: str = "/", *, limit: int | None = None, cursor: str | None = None
    ) -> RoomsListing:
        """``GET /v1/rooms``: the namespace's rooms by name, with their socket counts.

        Without ``limit`` and ``cursor``: every room, or ``ApiError("too_many_results")``
        over 1,000; with them: one page, and ``next_cursor`` for the next.
        """
        return self._send(_core.rooms_call(namespace, limit, cursor))

    def sockets(
        self,
        room: str,
        namespace: str = "/",
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> SocketsListing:
        """``GET /v1/rooms/<room>/sockets``: the sockets in ``room``, by id (paged as
        :meth:`rooms`)."""
        return self._send(_core.sockets_call(room, namespace, limit, cursor))

    def presence(self, users: Iterable[str], namespace: str = "/") -> PresenceListing:
        """``GET /v1/presence``: whether each of ``users`` (at most 100) is connected."""
        return self._send(_core.presence_call(users, namespace))

    def room_presence(
        self,
        room: str,
        namespace: str = "/",
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RoomPresenceListing:
        """``GET /v1/rooms/<room>/presence``: distinct users in ``room`` with their socket
        counts, and its anonymous sockets (paged as :meth:`rooms`)."""
        return self._send(_core.room_presence_call(room, namespace, limit, cursor))

    def history(
        self,
        room: str,
        namespace: str = "/",
        *,
        limit: int | None = None,
        since: str | None = None,
    ) -> RoomHistory:
        """``GET /v1/rooms/<room>/history``: the room's recent events, oldest first (the
        last ``limit``, default 100; with ``since``, the first ``limit`` after that
        offset). Needs ``--history-size`` on the gateway."""
        return self._send(_core.history_call(room, namespace, limit, since))

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(BaseClient[httpx.AsyncClient]):
    """:class:`Client` for asyncio: the same arguments, and methods to ``await``.

    :meth:`token` makes no request and is not a coroutine. Close the client with
    ``await client.aclose()``, or use it with ``async with``.
    """

    def _open(self, headers: dict[str, str]) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=self.timeout)

    async def _send(self, call: Call[T]) -> T:
        request = self._request(call)
        attempt = 0
        while True:
            try:
                outcome: Outcome = await self._http.send(request)
            except httpx.RequestError as exc:
                outcome = exc
            delay = self._retry_delay(call, attempt, outcome)
            if delay is None:
                return self._result(call, outcome)
            await asyncio.sleep(delay)
            attempt += 1

    async def emit(
        self, event: str, *, idempotency_key: str | None = None, **options: Unpack[EmitOptions]
    ) -> None:
        """``POST /v1/emit``: send ``event`` to the selected sockets of a namespace."""
        await self._send(_core.emit_call(event, options, idempotency_key))

    async def emit_with_ack(
        self,
        event: str,
        timeout_ms: int,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[EmitOptions],
    ) -> AckResult:
        """``POST /v1/emit`` with ``ack``: send ``event`` and wait until every recipient
        answered (or left), or ``timeout_ms`` passed; their answers and who was silent."""
        return await self._send(
            _core.emit_with_ack_call(event, timeout_ms, options, idempotency_key)
        )

    async def batch(self, emits: Iterable[Emit], *, idempotency_key: str | None = None) -> int:
        """``POST /v1/batch``: several emits, validated together, applied in order."""
        return await self._send(_core.batch_call(emits, idempotency_key))

    async def join(
        self, room: str, *, idempotency_key: str | None = None, **selector: Unpack[Selector]
    ) -> None:
        """``POST /v1/join``: add the selected sockets to ``room``."""
        await self._send(_core.select_call("join", room, selector, idempotency_key))

    async def leave(
        self, room: str, *, idempotency_key: str | None = None, **selector: Unpack[Selector]
    ) -> None:
        """``POST /v1/leave``: remove the selected sockets from ``room``."""
        await self._send(_core.select_call("leave", room, selector, idempotency_key))

    async def disconnect(
        self, *, idempotency_key: str | None = None, **selector: Unpack[Selector]
    ) -> None:
        """``POST /v1/disconnect``: disconnect the selected sockets from the namespace."""
        await self._send(_core.select_call("disconnect", None, selector, idempotency_key))

    async def rooms(
        self, namespace: str = "/", *, limit: int | None = None, cursor: str | None = None
    ) -> RoomsListing:
        """``GET /v1/rooms``: the namespace's rooms by name, with their socket counts.

        Without ``limit`` and ``cursor``: every room, or ``ApiError("too_many_results")``
        over 1,000; with them: one page, and ``next_cursor`` for the next.
        """
        return await self._send(_core.rooms_call(namespace, limit, cursor))

    async def sockets(
        self,
        room: str,
        namespace: str = "/",
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> SocketsListing:
        """``GET /v1/rooms/<room>/sockets``: the sockets in ``room``, by id (paged as
        :meth:`rooms`)."""
        return await self._send(_core.sockets_call(room, namespace, limit, cursor))

    async def presence(self, users: Iterable[str], namespace: str = "/") -> PresenceListing:
        """``GET /v1/presence``: whether each of ``users`` (at most 100) is connected."""
        return await self._send(_core.presence_call(users, namespace))

    async def room_presence(
        self,
        room: str,
        namespace: str = "/",
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> RoomPresenceListing:
        """``GET /v1/rooms/<room>/presence``: distinct users in ``room`` with their socket
        counts, and its anonymous sockets (paged as :meth:`rooms`)."""
        return await self._send(_core.room_presence_call(room, namespace, limit, cursor))

    async def history(
        self,
        room: str,
        namespace: str = "/",
        *,
        limit: int | None = None,
        since: str | None = None,
    ) -> RoomHistory:
        """As :meth:`Client.history`."""
        return await self._send(_core.history_call(room, namespace, limit, since))

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
