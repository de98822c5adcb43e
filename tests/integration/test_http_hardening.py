"""Abuse of siogate's own HTTP/1.1 server by unauthenticated peers, against a real gateway.

Each test plays one attack over loopback, checks the bound that stops it, and checks that
a well-behaved client is still served meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from conftest import Gateway, RedisServer

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
WS_OPEN = (
    b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
POLL_OPEN = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_all(s: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything until the peer closes (or resets) the connection."""
    s.settimeout(timeout)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def served(gw: Gateway, local: str | None = None) -> bool:
    """A fresh, well-behaved client gets /healthz quickly."""
    transport = httpx.HTTPTransport(local_address=local) if local else None
    with httpx.Client(transport=transport, timeout=3) as client:
        return client.get(f"{gw.url}/healthz").status_code == 200


def metric(gw: Gateway, name: str) -> float:
    for line in gw.api("GET", "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


# ---------------------------------------------------------------- pipelining


def test_pipelined_requests_from_a_peer_that_never_reads_stay_bounded(
    gateway: Gateway,
) -> None:
    # Each 34-byte request asks for the ~30 kB OpenAPI document (no key needed): before
    # the fix, 2.5 MB of them queued every response in the gateway (RSS +800 MiB).
    pid = gateway.proc.pid
    before = rss_mib(pid)
    burst = b"GET /v1/openapi.json HTTP/1.1\r\n\r\n" * 2000
    sent = 0
    with socket.socket() as s:
        # A small window on our side, and we never read.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", gateway.port))
        s.settimeout(0.5)
        deadline = time.monotonic() + 10
        while sent < 2_600_000 and time.monotonic() < deadline:
            try:
                sent += s.send(burst)
            except TimeoutError:
                continue  # the gateway stopped reading: keep pushing until the deadline
        grown = 0.0
        for _ in range(6):
            time.sleep(0.5)
            grown = max(grown, rss_mib(pid) - before)
            assert served(gateway)
        assert grown < 64, f"RSS grew {grown:.0f} MiB after {sent} bytes of pipelined GETs"
    assert served(gateway)


def test_pipelined_requests_are_all_answered_in_order(gateway: Gateway) -> None:
    # Reading stops and resumes; nothing is lost or reordered on the way.
    n = 300
    requests = b"".join(
        f"GET /v1/rooms/r{i}/sockets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        f"{gateway.api_key}\r\n\r\n".encode()
        for i in range(n)
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(requests + b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
        reply = read_all(s, timeout=10)
    assert reply.count(b"HTTP/1.1 200 OK") == n + 1
    assert reply.endswith(b'{"status":"ok"}')


# ---------------------------------------------------------------- huge head


def test_huge_header_line_is_cut_at_max_head_size(gateway: Gateway) -> None:
    total = 50 * 1024 * 1024
    sent = [0]
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:

        def push() -> None:
            piece = b"a" * 65536
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nX-Big: ")
                while sent[0] < total:
                    sent[0] += s.send(piece)
            except OSError:
                pass  # the gateway closed the connection: what we want

        started = time.monotonic()
        sender = threading.Thread(target=push, daemon=True)
        sender.start()
        reply = b""
        s.settimeout(5)
        try:
            while b"\r\n\r\n" not in reply and (chunk := s.recv(4096)):
                reply += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        elapsed = time.monotonic() - started
        assert served(gateway)
        sender.join(10)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert elapsed < 3, elapsed
    # Cut early: far from the 50 MB (the rest sat in kernel buffers at most).
    assert sent[0] < 20 * 1024 * 1024, sent[0]
    assert metric(gateway, "siogate_http_heads_too_large_total") >= 1


def test_head_of_many_small_headers_is_cut_too(gateway: Gateway) -> None:
    head = b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(90))
    head += b"X-Pad: " + b"p" * 20_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(head)
        assert read_all(s).startswith(b"HTTP/1.1 431 ")


# ---------------------------------------------------------------- slowloris


@pytest.fixture
def slow_gw(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway("--allow-anonymous", "--head-timeout", "500", "--body-timeout", "500")


def _timed_reply(gw: Gateway, first: bytes, dribble: bytes = b"") -> tuple[bytes, float]:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        started = time.monotonic()
        s.sendall(first)
        for byte in dribble:
            # One byte every 100 ms: the deadline is not pushed back by traffic.
            time.sleep(0.1)
            try:
                s.sendall(bytes([byte]))
            except OSError:
                break
        reply = read_all(s)
        return reply, time.monotonic() - started


def test_slow_head_gets_408(slow_gw: Gateway) -> None:
    reply, took = _timed_reply(slow_gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert b'"code":"request_timeout"' in reply and b"connection: close" in reply
    assert 0.4 < took < 3, took
    assert served(slow_gw)


def test_dribbled_head_gets_408(slow_gw: Gateway) -> None:
    reply, took = _timed_reply(slow_gw, b"GET /healthz HTTP/1.1\r\n", b"X-Slow: " + b"a" * 40)
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert took < 3, took


def test_slow_body_gets_408(slow_gw: Gateway) -> None:
    head = b'POST /v1/emit HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"ev'
    reply, took = _timed_reply(slow_gw, head)
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert 0.4 < took < 3, took
    assert served(slow_gw)


def test_silent_connection_is_closed_after_head_timeout(slow_gw: Gateway) -> None:
    reply, took = _timed_reply(slow_gw, b"")
    assert reply == b""
    assert 0.4 < took < 3, took


def test_idle_keep_alive_outlives_the_head_timeout(slow_gw: Gateway) -> None:
    # Between requests the 75 s keep-alive applies, not the head timeout.
    with socket.create_connection(("127.0.0.1", slow_gw.port), timeout=5) as s:
        for _ in range(2):
            s.sendall(HEALTHZ)
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
            time.sleep(1.0)


# ---------------------------------------------------------------- connection caps


def _hold(gw: Gateway, n: int, local: str = "127.0.0.1") -> list[socket.socket]:
    """``n`` open keep-alive connections, each answered once (so surely accepted)."""
    held = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", gw.port), timeout=5, source_address=(local, 0))
        s.sendall(HEALTHZ)
        assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
        held.append(s)
    return held


def _refused(gw: Gateway, local: str = "127.0.0.1") -> bytes:
    with socket.create_connection(
        ("127.0.0.1", gw.port), timeout=5, source_address=(local, 0)
    ) as s:
        return read_all(s)


def _expect_503(reply: bytes) -> None:
    assert reply.startswith(b"HTTP/1.1 503 "), reply
    head, body = reply.split(b"\r\n\r\n", 1)
    assert b"connection: close" in head
    assert json.loads(body)["error"]["code"] == "too_many_connections"


def test_max_connections_per_ip(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--allow-anonymous", "--max-connections-per-ip", "5")
    held = _hold(gw, 5)
    try:
        _expect_503(_refused(gw))
        # Another address is still served.
        assert served(gw, local="127.0.0.2")
        assert metric_from(gw, "127.0.0.2", "siogate_http_connections_refused_per_ip_total") == 1
        # The log names the address and the flag to raise (behind a proxy, every client
        # has the proxy's address), once per interval however many are refused.
        _expect_503(_refused(gw))
        log = gw.log()
        assert log.count("refusing connections from 127.0.0.1") == 1, log
        assert "--max-connections-per-ip" in log
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    assert served(gw)


def test_max_connections_total(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway(
        "--allow-anonymous", "--max-connections", "6", "--max-connections-per-ip", "0"
    )
    held = _hold(gw, 6)
    try:
        _expect_503(_refused(gw))
        _expect_503(_refused(gw, local="127.0.0.2"))
        held.pop().close()
        time.sleep(0.3)
        # One slot is free again: a well-behaved client gets it.
        assert served(gw)
        held.pop().close()
        time.sleep(0.3)
        assert gw.api("GET", "/healthz").status_code == 200
        assert metric(gw, "siogate_http_connections_refused_total") == 2
    finally:
        for s in held:
            s.close()


def metric_from(gw: Gateway, local: str, name: str) -> float:
    transport = httpx.HTTPTransport(local_address=local)
    headers = {"Authorization": f"Bearer {gw.api_key}"}
    with httpx.Client(transport=transport, headers=headers, timeout=3) as client:
        text = client.get(f"{gw.url}/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


# ---------------------------------------------------------------- descriptors


def test_open_files_limit_is_raised(gateway: Gateway) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = Path(f"/proc/{gateway.proc.pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    assert line.split()[3] == line.split()[4], line  # soft == hard
    assert f"open files limit: {line.split()[3]}" in gateway.log()


async def _churn_one(port: int, i: int, held: list[asyncio.StreamWriter]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    kind = i % 5
    if kind == 0:  # part of a request head
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A")
    elif kind == 1:  # nothing at all
        pass
    elif kind == 2:  # a WebSocket, up to the Engine.IO open packet
        writer.write(WS_OPEN)
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
    elif kind == 3:  # part of a request body
        writer.write(b"POST /v1/emit HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    else:  # mid long-poll
        writer.write(POLL_OPEN)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        sid = json.loads((await reader.readexactly(length))[1:])["sid"]
        poll = f"GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\n\r\n"
        writer.write(poll.encode())
    await writer.drain()
    await asyncio.sleep(random.random() * 0.01)
    if i % 2 and kind != 4:
        # Gone without a word: the peer keeps its socket but never sends or reads again.
        held.append(writer)
        return
    sock = writer.get_extra_info("socket")
    if i % 4 == 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _churn(port: int, n: int, concurrency: int, held: list[asyncio.StreamWriter]) -> int:
    gate = asyncio.Semaphore(concurrency)
    failures = 0

    async def run(i: int) -> None:
        nonlocal failures
        async with gate:
            try:
                await asyncio.wait_for(_churn_one(port, i, held), 10)
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                failures += 1

    await asyncio.gather(*(run(i) for i in range(n)))
    return failures


def test_descriptors_return_to_baseline_after_churn(
    start_gateway: Callable[..., Gateway],
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gw = start_gateway(
        "--allow-anonymous",
        "--ping-interval", "1000",
        "--ping-timeout", "1000",
        "--head-timeout", "1000",
        "--body-timeout", "1000",
    )  # fmt: skip
    pid = gw.proc.pid
    baseline = fd_count(pid)
    held: list[asyncio.StreamWriter] = []

    async def main() -> tuple[int, list[int]]:
        failures = await _churn(gw.port, 2000, 100, held)
        # Every peer is gone or silent; the gateway must let go of all of them by itself
        # (head/body timeout, ping timeout), while the silent ones still hold theirs.
        counts = []
        deadline = time.monotonic() + 2 + 1 + 4  # ping interval + timeout, head, margin
        while time.monotonic() < deadline:
            counts.append(fd_count(pid))
            if counts[-1] <= baseline:
                break
            await asyncio.sleep(0.25)
        assert await asyncio.to_thread(served, gw)
        for writer in held:
            writer.transport.abort()
        return failures, counts

    failures, counts = asyncio.run(main())
    assert failures < 100, failures
    assert len(held) > 500
    assert counts[-1] <= baseline, f"baseline {baseline}, then {counts}"


# ---------------------------------------------------------------- HEAD, /healthz


def test_head_has_headers_but_no_body(gateway: Gateway) -> None:
    get = httpx.get(f"{gateway.url}/v1/openapi.json")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
        s.sendall(
            b"HEAD /v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /v1/emit HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        reply = read_all(s)
    first, rest = reply.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 200 ")
    assert f"content-length: {len(get.content)}".encode() in first
    # The next bytes are the next response's head, not a body.
    second, rest = rest.split(b"\r\n\r\n", 1)
    assert second.startswith(b"HTTP/1.1 405 "), second
    assert rest.startswith(b"HTTP/1.1 200 "), rest[:100]
    assert rest.endswith(b'{"status":"ok"}')


def test_healthz_does_not_show_the_redis_address(
    start_gateway: Callable[..., Gateway], redis_server: RedisServer
) -> None:
    gw = start_gateway("--redis-url", redis_server.url, "--allow-anonymous")
    assert httpx.get(f"{gw.url}/healthz").json()["broker"]["error"] is None
    redis_server.stop()
    deadline = time.monotonic() + 15
    body = httpx.get(f"{gw.url}/healthz").json()
    while body["status"] != "degraded" and time.monotonic() < deadline:
        time.sleep(0.1)
        body = httpx.get(f"{gw.url}/healthz").json()
    assert body["status"] == "degraded"
    assert body["broker"]["error"] == "broker unreachable"
    text = json.dumps(body)
    assert "127.0.0.1" not in text and str(redis_server.port) not in text
    # The detail is in the log, for the operator.
    assert str(redis_server.port) in gw.log()
