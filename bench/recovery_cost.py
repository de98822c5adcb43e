"""What connection state recovery (--recovery-window) costs the node, in process.

Three measurements, each with recovery off and on in the same run (alternating reps):

Times are this process's CPU time (``time.process_time``), not wall-clock time, so that
other load on a shared machine counts as little as possible.

1. fan-out: one emit applied to 10,000 sockets (``Node.apply`` -> hub selection ->
   encode once -> each socket's ``write_broadcast``), median time per emit;
2. peak msgs/s: emits to a room of 10 sockets, applied back to back for 2 s of CPU;
3. memory (tracemalloc): per message kept in the offset log, per parked (disconnected)
   socket, and per missed event kept for a parked socket;
4. end to end: the CPU time a real ``siogate serve`` process spends per ``POST /v1/emit``
   to a room of 10 python-socketio clients (read from /proc, so other load on the
   machine does not count), off and on.

The links are in-process stand-ins for ``transport.engine.Client``: they build the
WebSocket frame bytes once per emit (as the first WebSocket recipient does) and append
them to a list that is cleared after each emit, so what is measured is the node's work,
not the kernel's. The end-to-end fan-out over loopback is ``bench/run.py``'s.

    .venv/bin/python bench/recovery_cost.py [--sockets 10000] [--reps 5]
    .venv/bin/python bench/recovery_cost.py --peak-only 10   # ~10 s, the peak alone
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence

import httpx
import jwt
import socketio

from siogate.auth import JwtVerifier
from siogate.broker import EmitCommand, MemoryBroker
from siogate.hub import Hub, Outgoing, Socket, new_socket_id
from siogate.metrics import Metrics
from siogate.node import Node, NodeOptions
from siogate.protocol.session import Session
from siogate.recovery import RecoveryOptions
from siogate.transport.websocket import frames
from siogate.types import Namespace, Room

NS = Namespace("/")


class FakeLink:
    """Writes like a WebSocket client: frame bytes built once per emit, then shared."""

    __slots__ = ("session", "written")

    def __init__(self) -> None:
        self.session = Session("bench")
        self.written: list[bytes] = []

    def flush(self) -> None:
        pass

    def write_broadcast(self, outgoing: Outgoing) -> None:
        data = outgoing.ws_bytes
        if data is None:
            data = outgoing.ws_bytes = frames(outgoing.messages)
        self.written.append(data)

    def close(self, reason: str) -> None:
        pass


def make_node(recovery: bool, sockets: int, room_size: int) -> tuple[Node, list[FakeLink]]:
    options = RecoveryOptions(120.0, max_messages=10_000_000) if recovery else None
    node = Node(
        hub=Hub(),
        broker=MemoryBroker(),
        verifier=JwtVerifier("x" * 32),
        options=NodeOptions(),
        metrics=Metrics(),
        recovery=options,
    )
    links = []
    for i in range(sockets):
        link = FakeLink()
        socket = Socket(new_socket_id(), NS, None, link)
        node.hub.add(socket)
        node.hub.join(socket, Room("all"))
        if i < room_size:
            node.hub.join(socket, Room("small"))
        if node.recovery is not None:
            node.recovery.connected(socket)
        links.append(link)
    return node, links


def fanout_ms(node: Node, links: list[FakeLink], emits: int) -> float:
    times = []
    for i in range(emits):
        command = EmitCommand(NS, "news", [{"n": i, "text": "x" * 64}], (Room("all"),))
        t0 = time.process_time()
        node.apply([command])
        times.append(time.process_time() - t0)
        for link in links:
            link.written.clear()
    return statistics.median(times) * 1000


def peak_rate(node: Node, links: list[FakeLink], seconds: float) -> float:
    command = EmitCommand(NS, "chat", [{"text": "y" * 64}], (Room("small"),))
    n, start = 0, time.process_time()
    while time.process_time() < start + seconds:
        for _ in range(100):
            node.apply([command])
        n += 100
        for link in links[:10]:
            link.written.clear()
    return n / (time.process_time() - start)


async def memory() -> dict[str, float]:
    """Bytes per logged message, per parked socket, per missed event kept."""
    node, _ = make_node(True, 1_000, 0)
    store = node.recovery
    assert store is not None
    sockets = node.hub.select(NS, [Room("all")])
    gc.collect()
    tracemalloc.start()
    # 1. log entries: emits to a room with one (live) member, 100 B of arguments.
    lone, others = sockets[0], sockets[1:]
    node.hub.join(lone, Room("lone"))
    before = tracemalloc.get_traced_memory()[0]
    for i in range(10_000):
        node.apply([EmitCommand(NS, "e", [{"n": i, "text": "z" * 90}], (Room("lone"),))])
    logged = (tracemalloc.get_traced_memory()[0] - before) / 10_000
    # 2. parked sockets (the other 999): what parking adds.
    before = tracemalloc.get_traced_memory()[0]
    for away in others:
        node._on_left(away.namespace, away.id, "transport close")
    parked = (tracemalloc.get_traced_memory()[0] - before) / len(others)
    # 3. missed events: each emit to "all" is kept by 999 parked sockets (one shared
    # message, one reference each); per reference, the message's own cost excluded.
    before = tracemalloc.get_traced_memory()[0]
    for i in range(100):
        node.apply([EmitCommand(NS, "e", [{"n": i}], (Room("all"),))])
    grown = tracemalloc.get_traced_memory()[0] - before
    per_ref = (grown - 100 * logged) / (100 * len(others))
    tracemalloc.stop()
    for p in list(store._parked.values()):
        store.end(p, "transport close", "expired")
    return {"log_entry": logged, "parked_socket": parked, "missed_ref": per_ref}


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def http_cpu_per_emit(
    recovery: bool, emits: int, clients: int = 10, extra: Sequence[str] = ()
) -> float:
    """Server CPU microseconds per POST /v1/emit reaching ``clients`` sockets (``extra``:
    more ``serve`` options, e.g. ``--redis-url``)."""
    port, key, secret = _free_port(), secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    cmd = [sys.executable, "-m", "siogate", "serve", "--port", str(port), "--api-key", key]
    cmd += ["--jwt-secret", secret, "--log-level", "warning", "--event-rate", "0"]
    if recovery:
        cmd += ["--recovery-window", "120"]
    cmd += extra
    proc = subprocess.Popen(cmd)
    if proc.poll() is not None:
        raise RuntimeError("siogate serve did not start")
    url = f"http://127.0.0.1:{port}"
    sockets: list[socketio.AsyncClient] = []
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            for _ in range(100):
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            received = [0]

            def count(*args: object) -> None:
                received[0] += 1

            claims = {"sub": "b", "rooms": ["r"], "exp": int(time.time()) + 3600}
            token = jwt.encode(claims, secret, algorithm="HS256")
            for _ in range(clients):
                sio = socketio.AsyncClient()
                sio.on("e", count)
                await sio.connect(url, auth={"token": token}, transports=["websocket"])
                sockets.append(sio)
            headers = {"Authorization": f"Bearer {key}"}
            body = {"event": "e", "data": {"text": "x" * 64}, "rooms": ["r"]}
            for _ in range(200):  # warm up
                await http.post("/v1/emit", json=body, headers=headers)
            before = _cpu_seconds(proc.pid)
            for _ in range(emits):
                await http.post("/v1/emit", json=body, headers=headers)
            used = _cpu_seconds(proc.pid) - before
            while received[0] < (emits + 200) * clients:
                await asyncio.sleep(0.05)
            return used / emits * 1e6
    finally:
        for sio in sockets:
            await sio.disconnect()
        proc.terminate()
        proc.wait(10)


def peak_only(reps: int) -> None:
    """CPU per emit to a room of 10, off and on, each on one node for all its reps (the
    log grows through the run, as in the first minutes of a 120 s window)."""
    nodes = {recovery: make_node(recovery, 200, 10) for recovery in (False, True)}
    us: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(reps):
        for recovery in (False, True):
            gc.collect()
            us[recovery].append(1e6 / peak_rate(*nodes[recovery], 0.3))
    for name, pick in (("min", min), ("median", statistics.median)):
        off, on = pick(us[False]), pick(us[True])
        print(f"{name}: CPU per emit off {off:.2f} us, on {on:.2f} us, on/off {on / off:.3f}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--emits", type=int, default=30)
    parser.add_argument("--http-emits", type=int, default=3000)
    parser.add_argument(
        "--peak-only",
        type=int,
        metavar="REPS",
        help="only the in-process peak: REPS alternating reps of 0.3 s on one node each",
    )
    args = parser.parse_args()
    if args.peak_only:
        peak_only(args.peak_only)
        return
    fan: dict[bool, list[float]] = {False: [], True: []}
    rate: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.reps):
        for recovery in (False, True):
            node, links = make_node(recovery, args.sockets, 10)
            gc.collect()
            fan[recovery].append(fanout_ms(node, links, args.emits))
            rate[recovery].append(peak_rate(node, links, 2.0))
    off_f, on_f = statistics.median(fan[False]), statistics.median(fan[True])
    off_r, on_r = statistics.median(rate[False]), statistics.median(rate[True])
    print(f"fan-out to {args.sockets:,} sockets, median of {args.reps} reps x {args.emits} emits")
    print(f"  off {off_f:.2f} ms  on {on_f:.2f} ms  on/off {on_f / off_f:.3f}")
    print("peak emits/s to a room of 10 sockets (2 s each rep), median")
    print(f"  off {off_r:,.0f}  on {on_r:,.0f}  on/off {on_r / off_r:.3f}")
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.reps):
        for recovery in (False, True):
            cpu[recovery].append(await http_cpu_per_emit(recovery, args.http_emits))
    off_c, on_c = statistics.median(cpu[False]), statistics.median(cpu[True])
    print(f"server CPU per POST /v1/emit to 10 sockets, median of {args.reps} x {args.http_emits}")
    print(f"  off {off_c:.1f} us  on {on_c:.1f} us  on/off {on_c / off_c:.3f}")
    mem = await memory()
    print("memory (tracemalloc):")
    print(f"  per message in the offset log (~100 B of arguments): {mem['log_entry']:.0f} B")
    print(f"  per parked (disconnected) socket: {mem['parked_socket']:.0f} B")
    print(f"  per missed event kept for a parked socket: {mem['missed_ref']:.1f} B")


if __name__ == "__main__":
    asyncio.run(main())
