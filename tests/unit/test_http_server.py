"""The HTTP server's handling of unexpected exceptions, on a real asyncio server.

A bug that a peer can trigger at will must end that peer's connection only, and must
not flood the log: one line per kind of error per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest

from siogate.transport.http import (
    HttpConnection,
    HttpLimits,
    HttpServerState,
    Request,
    Response,
    UpgradedProtocol,
)


class Exploding:
    """An upgraded protocol whose input handling has a bug."""

    def data_received(self, data: bytes) -> None:
        raise RuntimeError("bug in the upgraded protocol")

    def connection_lost(self, exc: Exception | None) -> None:
        pass

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass


async def handle(request: Request) -> Response:
    if request.path == "/boom":
        raise RuntimeError("bug in a handler")
    return Response(200, b'{"ok":true}')


def upgrade(request: Request, transport: asyncio.Transport) -> UpgradedProtocol | Response:
    if request.path == "/explode":
        raise ValueError("bug in the upgrade handler")
    transport.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    return Exploding()


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, HttpServerState]]:
    state = HttpServerState(HttpLimits())
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: HttpConnection(handle, upgrade, state), "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1], state
    srv.close()
    for connection in list(state.connections):
        connection.close()
    await srv.wait_closed()


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def healthz_seconds(port: int) -> float:
    started = time.perf_counter()
    reply = await exchange(port, b"GET /ok HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ")
    return time.perf_counter() - started


async def test_handler_errors_are_500_and_logged_once(
    server: tuple[int, HttpServerState], caplog: pytest.LogCaptureFixture
) -> None:
    port, state = server
    caplog.set_level(logging.ERROR, logger="siogate.http")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(200):
        writer.write(b"GET /boom HTTP/1.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 500 ")
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    writer.close()
    assert len(caplog.records) <= 2, [r.getMessage() for r in caplog.records]
    assert state.stats.errors == 200
    assert await healthz_seconds(port) < 0.5


async def test_callback_and_upgrade_errors_close_that_connection_only(
    server: tuple[int, HttpServerState], caplog: pytest.LogCaptureFixture
) -> None:
    port, state = server
    caplog.set_level(logging.ERROR, logger="siogate.http")
    request = b"GET /explode HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    for _ in range(200):
        reply = await exchange(port, request)
        assert reply.startswith(b"HTTP/1.1 400 "), reply
        assert b"connection: close" in reply
    assert await healthz_seconds(port) < 0.5
    # The upgraded protocol's bug: the connection is dropped, nothing else.
    for _ in range(50):
        reply = await exchange(
            port, b"GET /up HTTP/1.1\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nhi"
        )
        assert reply == b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    assert await healthz_seconds(port) < 0.5
    messages = [r.getMessage() for r in caplog.records]
    assert 2 <= len(messages) <= 4, messages
    assert state.stats.errors == 250
