"""In-process handlers: refuse, rooms during on_connect, acks, errors, --auth handlers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import socketio

from conftest import API_KEY, JWT_SECRET, ROOT, Gateway, free_port, without_node

HANDLERS = "tests.integration.handlers_app:Handlers"


async def connect(gw: Gateway, auth: dict[str, Any]) -> tuple[socketio.AsyncClient, list[Any]]:
    client = socketio.AsyncClient(reconnection=False)
    welcome: asyncio.Queue[Any] = asyncio.Queue()
    client.on("welcome", welcome.put_nowait)
    await client.connect(gw.url, auth=auth, transports=["websocket"], wait_timeout=5)
    return client, await asyncio.wait_for(welcome.get(), 5)


async def test_rooms_joined_in_on_connect_take_effect(
    start_gateway: Callable[..., Gateway],
) -> None:
    gw = start_gateway("--handlers", HANDLERS)
    token = gw.token("alice", rooms=["news", "sports"])
    client, welcome = await connect(gw, {"token": token, "join": ["vip"], "leave": ["sports"]})
    try:
        assert welcome == ["news", "user:alice", "vip"]
        got: asyncio.Queue[Any] = asyncio.Queue()
        client.on("ping-vip", got.put_nowait)
        assert gw.emit("ping-vip", 1, rooms=["vip"]).status_code == 200
        assert await asyncio.wait_for(got.get(), 5) == 1
        sid, user, rooms = await client.call("whoami", timeout=5)
        assert user == "alice" and rooms == ["news", "user:alice", "vip"]
        listing = gw.api("GET", "/v1/rooms/vip/sockets").json()["sockets"]
        assert without_node(listing) == [{"id": sid, "user": "alice"}]
    finally:
        await client.disconnect()


async def test_refuse_and_disconnect_in_on_connect(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--handlers", HANDLERS, "--allow-anonymous")
    for auth, message in (({"refuse": "banned"}, "go away"), ({"kick": True}, "refused")):
        client = socketio.AsyncClient(reconnection=False)
        errors: asyncio.Queue[Any] = asyncio.Queue()
        client.on("connect_error", errors.put_nowait)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(gw.url, auth=auth, transports=["websocket"], wait_timeout=5)
        error = await asyncio.wait_for(errors.get(), 5)
        assert error["message"] == message
    assert gw.api("GET", "/v1/rooms").json()["rooms"] == []


async def test_failing_handler_acks_an_error(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--handlers", HANDLERS, "--allow-anonymous")
    client, _ = await connect(gw, {})
    try:
        ack = await client.call("boom", timeout=5)
        assert ack == {"error": {"code": "handler_failed", "message": "RuntimeError"}}
        assert await client.call("nothing", timeout=5) is None  # None -> an empty ack
    finally:
        await client.disconnect()


def test_auth_handlers_needs_on_connect() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "siogate", "serve", "--port", str(free_port()),
         "--api-key", API_KEY, "--jwt-secret", JWT_SECRET,
         "--auth", "handlers", "--handlers", "tests.integration.handlers_app:NoConnect"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "on_connect" in result.stderr
