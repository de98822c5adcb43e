"""Peers that send without reading, or stop reading, cost the gateway bounded memory.

Raw sockets play the misbehaving peers (a library client would read for us); the
gateway's memory is read from /proc. Timing bounds are generous (a loaded machine) but
fail clearly on a gateway without the time bound or without read back-pressure.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.sync.client import connect as connect_sync

from conftest import Gateway

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the gateway's memory from /proc"
)

MIB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match.group(1)) * 1024


def masked(opcode: int, payload: bytes) -> bytes:
    """One client frame with a zero mask (so the payload goes as is)."""
    assert len(payload) < 126
    return bytes((0x80 | opcode, 0x80 | len(payload), 0, 0, 0, 0)) + payload


def raw_websocket(port: int, rcvbuf: int | None = None) -> socket.socket:
    """A WebSocket session opened by hand; returns once the 101 has arrived."""
    sock = socket.socket()
    if rcvbuf is not None:
        # Before connect(), so that the advertised window is small from the start.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # Segments of an Ethernet link rather than loopback's 64 KiB: the kernel sizes
        # the gateway's send buffer from them, and with loopback's it would take megabytes
        # of a peer that does not read before the gateway's own buffer sees any.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def metric(gw: Gateway, name: str) -> float:
    text = gw.api("GET", "/metrics").text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, name
    return float(match.group(1))


def round_trip(gw: Gateway) -> float:
    """Seconds for a well-behaved client to open a session and join ``/``."""
    started = time.monotonic()
    url = f"ws://127.0.0.1:{gw.port}/socket.io/?EIO=4&transport=websocket"
    with connect_sync(url, open_timeout=10) as ws:
        assert str(ws.recv(timeout=10)).startswith("0{")
        ws.send("40")
        assert str(ws.recv(timeout=10)).startswith("40{")
    return time.monotonic() - started


def test_ping_flood_costs_bounded_memory(start_gateway: Callable[..., Gateway]) -> None:
    # Two bounds meet here: the frame parser keeps one pong pending (the answer to the
    # latest ping, RFC 6455 5.5.3), and a WebSocket whose write buffer stays over its
    # high-water mark is not read and is cut after --slow-timeout. Which one ends the
    # flood depends on how the kernel splits the reads; memory stays bounded either way.
    gw = start_gateway("--allow-anonymous", "--slow-timeout", "4000")
    round_trip(gw)  # warm up, so that the baseline holds what any session needs
    before = rss(gw.proc.pid)
    # 125-byte pings: each is answered with a 127-byte pong that the flooder never reads.
    chunk = masked(0x9, b"p" * 125) * 8000  # about 1 MB
    view = memoryview(chunk)
    sent, peak, cut = 0, before, False
    sock = raw_websocket(gw.port, rcvbuf=4096)
    rtt: list[float] = []

    def check() -> None:
        # While the flood is on: the loop must still serve others.
        time.sleep(1)
        rtt.append(round_trip(gw))

    checker = threading.Thread(target=check)
    checker.start()
    try:
        sock.settimeout(0.2)
        pos = 0
        deadline = time.monotonic() + 20
        while sent < 128 * MIB and time.monotonic() < deadline:
            try:
                n = sock.send(view[pos:])
            except TimeoutError:
                # Not read any more: the gateway holds us back.
                peak = max(peak, rss(gw.proc.pid))
                continue
            except OSError:
                cut = True
                break
            sent += n
            pos = (pos + n) % len(chunk)
            if sent % (8 * MIB) < n:
                peak = max(peak, rss(gw.proc.pid))
        peak = max(peak, rss(gw.proc.pid))
        if not cut:
            # Still open after sending it all: see whether a slow-consumer cut follows.
            sock.settimeout(6)
            try:
                while sock.recv(65536):
                    pass
                cut = True
            except TimeoutError:
                pass
            except OSError:
                cut = True
    finally:
        sock.close()
        checker.join(30)
    growth = peak - before
    assert growth < 64 * MIB, f"RSS grew by {growth / MIB:.0f} MiB after {sent / MIB:.0f} MiB"
    assert rtt and rtt[0] < 3.0, rtt
    # Either all of it was read (and answered with few pongs) or the flooder was cut.
    assert cut or sent >= 128 * MIB
    assert metric(gw, "siogate_slow_consumer_disconnects_total") == (1 if cut else 0)


async def _reader(ws: ClientConnection, want: int, got: list[int]) -> None:
    """Collect the sequence numbers of ``want`` "tick" events from a websockets client."""
    while len(got) < want:
        message = str(await asyncio.wait_for(ws.recv(), 20))
        if message == "2":
            await ws.send("3")
        elif message.startswith('42["tick",'):
            got.append(json.loads(message[2:])[1])


async def test_stalled_websockets_are_cut_and_healthy_ones_keep_up(
    start_gateway: Callable[..., Gateway],
) -> None:
    # --max-buffer as it used to be: the byte cap alone would take ~20 s to cut them.
    gw = start_gateway("--allow-anonymous", "--max-buffer", "4000000", "--slow-timeout", "2000")
    token = gw.token(rooms=["feed"])
    join = "40" + json.dumps({"token": token})
    events, size, rate = 600, 2000, 120.0
    healthy = []
    for _ in range(50):
        ws = await connect(
            f"ws://127.0.0.1:{gw.port}/socket.io/?EIO=4&transport=websocket", max_size=None
        )
        await ws.recv()
        await ws.send(join)
        assert str(await ws.recv()).startswith("40{")
        healthy.append(ws)
    stalled = []
    for _ in range(20):
        sock = raw_websocket(gw.port, rcvbuf=4096)
        sock.sendall(masked(0x1, join.encode()) if len(join) < 126 else _long_text(join))
        stalled.append(sock)
    for _ in range(100):
        if metric(gw, "siogate_sockets") == 70:
            break
        await asyncio.sleep(0.05)
    assert metric(gw, "siogate_sockets") == 70
    before = rss(gw.proc.pid)
    peak = before
    received: list[list[int]] = [[] for _ in healthy]
    readers = [
        asyncio.ensure_future(_reader(ws, events, got))
        for ws, got in zip(healthy, received, strict=True)
    ]
    started = time.monotonic()
    cut_after: float | None = None
    async with httpx.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {gw.api_key}"}, timeout=10
    ) as api:
        for i in range(events):
            body = {"event": "tick", "args": [i, "x" * size], "rooms": ["feed"]}
            assert (await api.post("/v1/emit", json=body)).status_code == 200
            if i % 20 == 0:
                peak = max(peak, rss(gw.proc.pid))
                if cut_after is None:
                    text = (await api.get("/metrics")).text
                    if "siogate_slow_consumer_disconnects_total 20\n" in text:
                        cut_after = time.monotonic() - started
            await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
        while cut_after is None and time.monotonic() - started < 8:
            if metric(gw, "siogate_slow_consumer_disconnects_total") == 20:
                cut_after = time.monotonic() - started
            await asyncio.sleep(0.1)
    await asyncio.wait_for(asyncio.gather(*readers), 30)
    for ws in healthy:
        await ws.close()
    for sock in stalled:
        sock.close()
    assert cut_after is not None, "the stalled clients were not all cut"
    # Their buffers reach the high-water mark in about 1.5 s (at 240 KB/s), then 2 s of
    # grace; with only the 4 MB cap they would not be cut at all in this test.
    assert cut_after < 2.0 + 5.0, cut_after
    assert (peak - before) < 32 * MIB, f"RSS grew by {(peak - before) / MIB:.0f} MiB"
    assert all(got == list(range(events)) for got in received)
    assert "slow consumer" in gw.log()


def _long_text(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 65536
    return bytes((0x81, 0x80 | 126)) + len(data).to_bytes(2, "big") + b"\0\0\0\0" + data


def test_polling_client_that_stops_polling_is_cut(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--allow-anonymous", "--slow-timeout", "1000")
    base = f"{gw.url}/socket.io/?EIO=4&transport=polling"
    with httpx.Client(timeout=10) as http:
        sid = json.loads(http.get(base).text[1:])["sid"]
        assert http.post(f"{base}&sid={sid}", content="40").text == "ok"
        assert http.get(f"{base}&sid={sid}").text.startswith("40{")
        # It never polls again while events keep coming.
        started = time.monotonic()
        while time.monotonic() - started < 5:
            assert gw.emit("tick", 1).status_code == 200
            if metric(gw, "siogate_slow_consumer_disconnects_total") == 1:
                break
            time.sleep(0.1)
        assert metric(gw, "siogate_slow_consumer_disconnects_total") == 1
        assert time.monotonic() - started < 3.5
        assert metric(gw, "siogate_sessions") == 0
        r = http.get(f"{base}&sid={sid}")
        assert r.status_code == 400 and r.json()["code"] == 1
