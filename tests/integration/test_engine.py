"""Engine.IO behaviour of a real gateway, driven with raw HTTP and WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import Gateway


def ws_url(gw: Gateway, sid: str | None = None) -> str:
    url = f"ws://127.0.0.1:{gw.port}/socket.io/?EIO=4&transport=websocket"
    return url + (f"&sid={sid}" if sid else "")


def poll_url(gw: Gateway, sid: str | None = None) -> str:
    url = f"{gw.url}/socket.io/?EIO=4&transport=polling"
    return url + (f"&sid={sid}" if sid else "")


async def test_websocket_session_and_namespace_connect(gateway: Gateway) -> None:
    async with connect(ws_url(gateway)) as ws:
        handshake = json.loads(str(await ws.recv())[1:])
        assert handshake["upgrades"] == []
        assert handshake["pingInterval"] == 25000 and handshake["maxPayload"] == 1_000_000
        await ws.send("40")
        reply = str(await ws.recv())
        assert reply.startswith("40{") and "sid" in json.loads(reply[2:])


async def test_polling_then_upgrade_moves_queued_packets(
    start_gateway: Callable[..., Gateway],
) -> None:
    gw = start_gateway("--allow-anonymous")
    async with httpx.AsyncClient() as http:
        opened = (await http.get(poll_url(gw))).text
        sid = json.loads(opened[1:])["sid"]
        assert (await http.post(poll_url(gw, sid), content="40")).text == "ok"
        assert (await http.get(poll_url(gw, sid))).text.startswith("40{")
        # A poll is pending while the WebSocket probes.
        pending = asyncio.ensure_future(http.get(poll_url(gw, sid)))
        await asyncio.sleep(0.1)
        async with connect(ws_url(gw, sid)) as ws:
            await ws.send("2probe")
            assert await ws.recv() == "3probe"
            assert (await asyncio.wait_for(pending, 5)).text == "6"  # released with a NOOP
            await ws.send("5")
            await asyncio.sleep(0.05)
            assert gw.emit("after-upgrade", 1).status_code == 200
            assert await asyncio.wait_for(ws.recv(), 5) == '42["after-upgrade",1]'
            # Polling is refused once upgraded.
            assert (await http.get(poll_url(gw, sid))).status_code == 400


async def test_unknown_sid_and_bad_queries(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as http:
        r = await http.get(poll_url(gateway, "nope"))
        assert r.status_code == 400 and r.json() == {"code": 1, "message": "Session ID unknown"}
        r = await http.get(f"{gateway.url}/socket.io/?EIO=3&transport=polling")
        assert r.json()["code"] == 5
        r = await http.get(f"{gateway.url}/socket.io/?EIO=4&transport=carrier-pigeon")
        assert r.json()["code"] == 0
        r = await http.post(poll_url(gateway), content="40")
        assert r.json()["code"] == 2


async def test_concurrent_polls_close_the_session(gateway: Gateway) -> None:
    async with httpx.AsyncClient() as http:
        sid = json.loads((await http.get(poll_url(gateway))).text[1:])["sid"]
        first = asyncio.ensure_future(http.get(poll_url(gateway, sid)))
        await asyncio.sleep(0.1)
        second = await http.get(poll_url(gateway, sid))
        assert second.status_code == 400
        assert (await asyncio.wait_for(first, 5)).text == "1"  # CLOSE
        assert (await http.get(poll_url(gateway, sid))).status_code == 400


async def test_ping_timeout_closes_silent_client(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--allow-anonymous", "--ping-interval", "200", "--ping-timeout", "150")
    async with connect(ws_url(gw)) as ws:
        await ws.recv()
        assert await ws.recv() == "2"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 3)
        assert time.monotonic() - started < 2


async def test_connect_timeout_closes_session_without_namespace(
    start_gateway: Callable[..., Gateway],
) -> None:
    gw = start_gateway(
        "--allow-anonymous",
        "--ping-interval",
        "100",
        "--ping-timeout",
        "90",
        "--connect-timeout",
        "300",
    )
    async with connect(ws_url(gw)) as ws:
        await ws.recv()
        with pytest.raises(ConnectionClosed):
            while True:
                message = await asyncio.wait_for(ws.recv(), 3)
                if message == "2":
                    await ws.send("3")  # alive, but never joins a namespace


async def test_oversized_websocket_message_closes_with_1009(
    start_gateway: Callable[..., Gateway],
) -> None:
    gw = start_gateway("--allow-anonymous", "--max-payload", "2048")
    async with connect(ws_url(gw), max_size=None) as ws:
        await ws.recv()
        await ws.send("4" + "x" * 5000)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert httpx.get(f"{gw.url}/healthz").status_code == 200


async def test_invalid_socketio_packet_closes_session(gateway: Gateway) -> None:
    async with connect(ws_url(gateway)) as ws:
        await ws.recv()
        await ws.send('42["unterminated"')
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)


def test_slow_consumer_is_disconnected(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--allow-anonymous", "--max-payload", "100000", "--max-buffer", "200000")
    # A raw client that completes the handshake and then stops reading.
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    time.sleep(0.2)
    sock.sendall(bytes([0x81, 0x82, 0, 0, 0, 0]) + b"40")  # masked "40", zero mask
    time.sleep(0.2)
    big = "y" * 50_000
    for _ in range(200):
        assert gw.emit("flood", big).status_code == 200
        metrics = gw.api("GET", "/metrics").text
        if "siogate_slow_consumer_disconnects_total 1" in metrics:
            break
    else:
        pytest.fail("slow consumer was never disconnected")
    assert "siogate_sockets 0" in gw.api("GET", "/metrics").text
    sock.close()


async def test_shutdown_sends_close_packet(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--allow-anonymous")
    async with connect(ws_url(gw)) as ws:
        await ws.recv()
        await ws.send("40")
        await ws.recv()
        gw.proc.send_signal(signal.SIGTERM)
        received = []
        with pytest.raises(ConnectionClosed):
            while True:
                received.append(await asyncio.wait_for(ws.recv(), 5))
        assert "1" in received
    assert gw.proc.wait(10) == 0


async def test_namespace_limits(gateway: Gateway) -> None:
    async with connect(ws_url(gateway)) as ws:
        await ws.recv()
        await ws.send("40/" + "n" * 300 + ",")
        assert "Invalid namespace" in str(await ws.recv())
        for i in range(100):
            await ws.send(f"40/ns{i},")
            assert str(await ws.recv()).startswith(f"40/ns{i},{{")
        await ws.send("40/one-too-many,")
        assert await ws.recv() == '44/one-too-many,{"message":"Too many namespaces"}'


async def test_too_deep_json_is_refused_cleanly(gateway: Gateway) -> None:
    # Refused whether or not any socket would receive it (the limit is 512 levels).
    for depth in (512, 900, 100_000):
        body = '{"event":"e","data":' + "[" * depth + "]" * depth + "}"
        r = gateway.api("POST", "/v1/emit", content=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    body = '{"event":"e","data":' + "[" * 511 + "]" * 511 + "}"
    assert gateway.api("POST", "/v1/emit", content=body).status_code == 200
    async with connect(ws_url(gateway), max_size=None) as ws:
        await ws.recv()
        await ws.send("40")
        await ws.recv()
        await ws.send('42["a",' + "[" * 100_000 + "]" * 100_000 + "]")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert gateway.api("GET", "/healthz").status_code == 200


def _raw_upgrade(gw: Gateway, key: bytes, extra: bytes = b"") -> bytes:
    """Send a WebSocket upgrade by hand; returns everything the gateway answers."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n"
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize(
    "key",
    [
        "dGhlIHNhbXBsZSBub25jZQ\u00e9\u00e9".encode("latin-1"),  # not ASCII
        b"dGhlIHNhbXBsZSBub25jZQ",  # too short
        b"dGhlIHNhbXBsZSBub25jZQ=!",  # not base64
        b"dGhlIHNhbXBsZSBub25jZQ==dGhl",  # decodes to more than 16 bytes
    ],
)
def test_invalid_websocket_keys_are_refused_quietly(gateway: Gateway, key: bytes) -> None:
    for _ in range(50 if key.isascii() else 200):
        answer = _raw_upgrade(gateway, key)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert gateway.api("GET", "/healthz").status_code == 200
    log = gateway.log()
    assert "Traceback" not in log and len(log.splitlines()) < 5, log[-2000:]


async def test_refused_origin_is_logged_once(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--allow-anonymous", "--cors-origin", "https://app.example.com")
    async with httpx.AsyncClient() as http:
        for _ in range(20):
            r = await http.get(poll_url(gw), headers={"Origin": "https://evil.example.net"})
            assert r.status_code == 200
            assert "access-control-allow-origin" not in r.headers
        r = await http.get(poll_url(gw), headers={"Origin": "https://app.example.com"})
        assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    lines = [line for line in gw.log().splitlines() if "evil.example.net" in line]
    assert len(lines) == 1 and "--cors-origin" in lines[0], lines


async def test_a_post_of_tiny_packets_does_not_stall_other_clients(gateway: Gateway) -> None:
    # max_payload bytes of one-byte NOOP packets: 400,000 of them, no credential needed.
    # Handled all at once they held the loop for ~0.6 s here; now a slice per turn.
    body = b"\x1e".join([b"6"] * 400_000)
    latencies: list[float] = []
    async with httpx.AsyncClient() as http, httpx.AsyncClient() as other:
        sid = json.loads((await http.get(poll_url(gateway))).text[1:])["sid"]
        posting = asyncio.ensure_future(http.post(poll_url(gateway, sid), content=body))
        while not posting.done():
            started = time.perf_counter()
            assert (await other.get(f"{gateway.url}/healthz")).status_code == 200
            latencies.append(time.perf_counter() - started)
        assert (await posting).text == "ok"
    assert len(latencies) > 3, latencies
    assert max(latencies) < 0.25, f"/healthz took {max(latencies) * 1000:.0f} ms"


async def test_overlapping_posts_close_the_session(gateway: Gateway) -> None:
    body = b"\x1e".join([b"6"] * 400_000)
    async with httpx.AsyncClient() as first, httpx.AsyncClient() as second:
        sid = json.loads((await first.get(poll_url(gateway))).text[1:])["sid"]
        one = asyncio.ensure_future(first.post(poll_url(gateway, sid), content=body))
        await asyncio.sleep(0.02)
        two = await second.post(poll_url(gateway, sid), content=b"6")
        assert two.status_code == 400
        await one
        assert (await first.get(poll_url(gateway, sid))).status_code == 400  # closed
