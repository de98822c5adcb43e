"""The attacks of bench/hostile.py. Each one is bounded in bytes, connections and time,
talks to 127.0.0.1 only, and returns a dict whose "outcome" is one line for the table.

Run one by hand (the runner does this, niced, on the load generator's core):

    .venv/bin/python bench/hostile_attacks.py frag --port P --api-key K --jwt-secret S \\
        --server-pid PID [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import statistics
import sys
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hostile_net import (
    SioProto,
    Stream,
    describe_reply,
    fd_count,
    mono,
    open_sio,
    set_rst,
    stream_ws_open,
    upgrade_request,
    ws_frame,
)
from loadgen import TokenMinter, percentile

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

MB = 1_000_000


@dataclass
class Ctx:
    port: int
    api_key: str
    minter: TokenMinter
    server_pid: int
    quick: bool
    max_payload: int = 1_000_000
    _started: bool = False

    def start(self) -> None:
        """Tell the runner the attack begins now (payloads built, nothing sent yet)."""
        if not self._started:
            self._started = True
            print("start", flush=True)

    def size(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def token(self, sub: str = "attacker", rooms: list[str] | None = None) -> str:
        return self.minter.mint(sub, rooms or [])


def mb(n: float) -> str:
    return f"{n / MB:.1f} MB" if n >= 100_000 else f"{n / 1000:.1f} kB"


def tally(items: list[str]) -> str:
    """'3x close 1009, 1x no reply' (most common first)."""
    return ", ".join(f"{n}x {k}" for k, n in collections.Counter(items).most_common(4))


async def gather_bounded(n: int, conc: int, job: Callable[[int], Awaitable[Any]]) -> list[Any]:
    """Run job(0..n-1) with at most `conc` in flight; exceptions are returned, not raised."""
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> Any:
        async with sem:
            try:
                return await job(i)
            except Exception as exc:  # an attack's connection failing is a result
                return exc

    return await asyncio.gather(*(one(i) for i in range(n)))


def err_name(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:60]}" if str(exc) else type(exc).__name__


# --- 1. fragmented message ------------------------------------------------------------------


async def frag(ctx: Ctx) -> dict[str, Any]:
    """40,000 one-byte frames (text + continuations) making one 40 kB event, per message."""
    frames_per_msg = 40_000
    conns, repeats = ctx.size((8, 3), (2, 1))
    body = b'42["f","' + b"a" * (frames_per_msg - 10) + b'"]'
    assert len(body) == frames_per_msg
    parts = [ws_frame(body[:1], 0x1, fin=False)]
    parts += [ws_frame(body[i : i + 1], 0x0, fin=False) for i in range(1, frames_per_msg - 1)]
    parts.append(ws_frame(body[-1:], 0x0, fin=True))
    message = b"".join(parts)
    ctx.start()
    deadline = mono() + ctx.size(10, 5)

    async def one(i: int) -> dict[str, Any]:
        s = await stream_ws_open(ctx.port, ctx.token(f"frag{i}"))
        why = await s.pump(message, len(message) * repeats, deadline)
        reply = await s.reply(1 << 20, 1.0, ws=True)
        s.abort()
        return {"why": why, "accepted": s.accepted(), "reply": reply}

    res = await gather_bounded(conns, conns, one)
    ok = [r for r in res if isinstance(r, dict)]
    return {
        "outcome": f"{conns} conns x {repeats} msgs of {frames_per_msg:,} frames: "
        + tally(
            [f"{r['why']}; {r['reply']}" for r in ok] + [err_name(r) for r in res if r not in ok]
        )
        + f"; accepted {mb(sum(r['accepted'] for r in ok))}"
        + f" of {mb(len(message) * repeats * conns)}",
        "connections": [r if isinstance(r, dict) else err_name(r) for r in res],
    }


# --- 2. pipelined HTTP requests --------------------------------------------------------------


async def pipeline(ctx: Ctx) -> dict[str, Any]:
    """GET /healthz written back to back (keep-alive) without reading any response."""
    conns, per_conn = ctx.size((4, 4 * MB), (1, int(2.5 * MB)))
    req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    chunk = req * (65536 // len(req))
    ctx.start()
    deadline = mono() + ctx.size(8, 4)

    async def one(i: int) -> dict[str, Any]:
        s = await Stream.open(ctx.port)
        why = await s.pump(chunk, per_conn, deadline)
        reply = await s.read_some(32 * MB, 2.0)
        s.abort()
        return {
            "why": why,
            "accepted": s.accepted(),
            "requests_written": s.sent // len(req),
            "responses_read": reply.count(b"HTTP/1.1 "),
            "reply": describe_reply(reply, ws=False),
        }

    res = await gather_bounded(conns, conns, one)
    ok = [r for r in res if isinstance(r, dict)]
    return {
        "outcome": f"{conns} conns: "
        + tally([r["why"] for r in ok] + [err_name(r) for r in res if r not in ok])
        + f"; accepted {mb(sum(r['accepted'] for r in ok))} of {mb(conns * per_conn)}"
        + f"; {sum(r['responses_read'] for r in ok):,} responses read after"
        + f" {sum(r['requests_written'] for r in ok):,} requests",
        "connections": [r if isinstance(r, dict) else err_name(r) for r in res],
    }


# --- 3. ping flood --------------------------------------------------------------------------


async def pingflood(ctx: Ctx) -> dict[str, Any]:
    """WebSocket pings (125-byte payloads) on a joined socket, never reading the pongs."""
    total = ctx.size(300 * MB, 30 * MB)
    ping = ws_frame(b"p" * 125, 0x9)
    chunk = ping * (MB // len(ping))
    ctx.start()
    deadline = mono() + ctx.size(10, 4)
    s = await stream_ws_open(ctx.port, ctx.token("pinger"))
    t0 = mono()
    why = await s.pump(chunk, total, deadline)
    elapsed = mono() - t0
    reply = await s.reply(8 * MB, 1.5, ws=True)
    s.abort()
    return {
        "outcome": f"{why} after {mb(s.accepted())} of {mb(total)} ({elapsed:.1f} s);"
        f" then read: {reply}",
        "accepted": s.accepted(),
        "elapsed_s": round(elapsed, 2),
    }


# --- 4. huge request head -------------------------------------------------------------------


async def bighead(ctx: Ctx) -> dict[str, Any]:
    """A request head with one header value streamed for up to 160 MB."""
    conns, total = ctx.size((2, 160 * MB), (1, 16 * MB))
    start = b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    chunk = b"a" * MB
    ctx.start()
    deadline = mono() + ctx.size(10, 4)

    async def one(i: int) -> dict[str, Any]:
        s = await Stream.open(ctx.port)
        reader = asyncio.ensure_future(s.reply(1 << 16, deadline - mono() + 1.5, ws=False))
        s.writer.write(start)
        why = await s.pump(chunk, total, deadline)
        reply = await reader
        s.abort()
        return {"why": why, "accepted": s.accepted(), "reply": reply}

    res = await gather_bounded(conns, conns, one)
    ok = [r for r in res if isinstance(r, dict)]
    return {
        "outcome": f"{conns} conns: "
        + tally(
            [f"{r['why']}; {r['reply']}" for r in ok] + [err_name(r) for r in res if r not in ok]
        )
        + f"; accepted {mb(max([r['accepted'] for r in ok] or [0]))} max per conn",
        "connections": [r if isinstance(r, dict) else err_name(r) for r in res],
    }


# --- 5. malformed parser inputs -------------------------------------------------------------


async def malformed(ctx: Ctx) -> dict[str, Any]:
    """A stream of inputs that are expensive or odd to parse, each on its own connection."""
    n = ctx.size(60, 8)
    depth = 50_000
    kinds: dict[str, Callable[[], Awaitable[str]]] = {}

    async def after_join(payloads: list[tuple[bytes, int]]) -> str:
        s = await stream_ws_open(ctx.port, ctx.token("malformed"))
        for p, op in payloads:
            s.writer.write(ws_frame(p, op))
        reply = await s.reply(1 << 20, 1.0, ws=True)
        s.abort()
        return reply

    ack = b"42" + b"1" * 5000 + b'["e"]'
    kinds["ack id of 5,000 digits (x20)"] = lambda: after_join([(ack, 0x1)] * 20)
    nested = b'451-["e",' + b"[" * depth + b'{"_placeholder":true,"num":0}' + b"]" * depth + b"]"
    kinds[f"BINARY_EVENT placeholder nested {depth:,} deep"] = lambda: after_join(
        [(nested, 0x1), (b"x", 0x2)]
    )
    deep = b'42["e",' + b"[" * depth + b"]" * depth + b"]"
    kinds[f"EVENT with JSON nested {depth:,} deep"] = lambda: after_join([(deep, 0x1)])

    async def bad_key() -> str:
        s = await Stream.open(ctx.port)
        s.writer.write(upgrade_request(key="\u00ff\u00e9\u4e2d\u6587==".encode("utf-8")))
        reply = await s.reply(1 << 16, 1.0, ws=False)
        s.abort()
        return reply

    kinds["non-ASCII Sec-WebSocket-Key"] = bad_key

    names = list(kinds)
    results: dict[str, list[str]] = {k: [] for k in names}

    async def job(i: int) -> None:
        name = names[i % len(names)]
        try:
            results[name].append(await kinds[name]())
        except Exception as exc:
            results[name].append(err_name(exc))

    ctx.start()
    await gather_bounded(n * len(names), 8, job)
    return {
        "outcome": "; ".join(f"{k}: {tally(v)}" for k, v in results.items()),
        "kinds": results,
    }


# --- 6. slowloris and connection floods --------------------------------------------------------


async def _watch_cut(s: Stream, t0: float, until: float) -> tuple[float | None, bytes]:
    """When the server cut the connection (None: still open at `until`) and what it said."""
    reply = await s.read_some(1 << 16, until - mono())
    if s.reader.at_eof():
        return mono() - t0, reply
    return None, reply


async def slowloris(ctx: Ctx) -> dict[str, Any]:
    """Connections that send a request head one byte at a time, a byte a second."""
    conns, duration = ctx.size((1000, 15.0), (200, 5.0))
    head = b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: "
    head += b"b" * 200
    t_end = mono() + duration

    async def one(i: int) -> dict[str, Any]:
        s = await Stream.open(ctx.port)
        t0 = mono()
        watcher = asyncio.ensure_future(_watch_cut(s, t0, t_end))
        await asyncio.sleep((i % 100) / 100)  # spread the writes over each second
        k = 0
        while not watcher.done() and mono() < t_end and k < len(head):
            try:
                s.writer.write(head[k : k + 1])
            except (ConnectionError, RuntimeError):
                break
            k += 1
            await asyncio.sleep(1.0)
        cut, reply = await watcher
        s.abort()
        return {"cut_s": cut, "bytes": k, "reply": describe_reply(reply, ws=False)}

    ctx.start()
    res = await gather_bounded(conns, conns, one)
    ok = [r for r in res if isinstance(r, dict)]
    cuts = sorted(r["cut_s"] for r in ok if r["cut_s"] is not None)
    cut_txt = f"cut by server {len(cuts)}/{conns}" + (
        f" after {statistics.median(cuts):.1f} s median (max {cuts[-1]:.1f} s)" if cuts else ""
    )
    return {
        "outcome": f"{cut_txt} within {duration:.0f} s; replies: "
        + tally([r["reply"] for r in ok] + [err_name(r) for r in res if r not in ok]),
        "cut_s": cuts,
    }


async def connflood(ctx: Ctx) -> dict[str, Any]:
    """As many idle TCP connections as allowed, opened fast, held a few seconds."""
    conns, hold = ctx.size((12_000, 6.0), (1000, 3.0))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    conns = min(conns, hard - 200)
    t_end = mono() + hold
    opened: list[Stream] = []
    failures: list[str] = []

    async def one(i: int) -> None:
        try:
            opened.append(await Stream.open(ctx.port, timeout=5))
        except Exception as exc:
            failures.append(err_name(exc))

    ctx.start()
    t0 = mono()
    await gather_bounded(conns, 500, one)
    open_s = mono() - t0
    watchers = [_watch_cut(s, t0, t_end) for s in opened]
    res = await asyncio.gather(*watchers)
    for s in opened:
        s.abort()
    cut = [r for r in res if r[0] is not None]
    replies = [describe_reply(r[1], ws=False) for r in cut]
    return {
        "outcome": f"{len(opened):,}/{conns:,} opened in {open_s:.1f} s"
        + (f" ({tally(failures)})" if failures else "")
        + f"; {len(cut):,} cut by server ({tally(replies) or 'none'})",
        "opened": len(opened),
        "cut": len(cut),
    }


# --- 7. binary attachments before auth --------------------------------------------------------


async def attachments(ctx: Ctx) -> dict[str, Any]:
    """BINARY_EVENT announcing 100 attachments, then 100 x max_payload binary frames."""
    sessions = ctx.size(16, 4)
    count = 100
    placeholders = ",".join(f'{{"_placeholder":true,"num":{i}}}' for i in range(count))
    header = f'5{count}-["e",{placeholders}]'.encode()
    blob = ws_frame(b"\0" * ctx.max_payload, 0x2)
    ctx.start()
    deadline = mono() + ctx.size(10, 4)

    async def one(i: int) -> dict[str, Any]:
        authed = i % 2 == 1  # half before any CONNECT, half after joining "/"
        s = await stream_ws_open(ctx.port, ctx.token(f"att{i}") if authed else None)
        s.writer.write(ws_frame(header))
        why = await s.pump(blob, count * len(blob), deadline)
        reply = await s.reply(1 << 16, 1.0, ws=True)
        s.abort()
        label = "after CONNECT" if authed else "before CONNECT"
        return {
            "label": label,
            "why": why,
            "accepted": s.accepted(),
            "reply": reply,
        }

    res = await gather_bounded(sessions, sessions, one)
    ok = [r for r in res if isinstance(r, dict)]
    parts = []
    for label in ("before CONNECT", "after CONNECT"):
        mine = [r for r in ok if r["label"] == label]
        if mine:
            parts.append(
                f"{label}: {tally([r['why'] + '; ' + r['reply'] for r in mine])},"
                f" accepted {mb(max(r['accepted'] for r in mine))} max per session"
            )
    errors = [err_name(r) for r in res if r not in ok]
    return {
        "outcome": f"{sessions} sessions x {count} x {mb(ctx.max_payload)}: "
        + " | ".join(parts)
        + (f" | errors: {tally(errors)}" if errors else ""),
        "sessions": [r if isinstance(r, dict) else err_name(r) for r in res],
    }


# --- 8. stalled consumers ---------------------------------------------------------------------


async def stalled(ctx: Ctx) -> dict[str, Any]:
    """Healthy clients + clients that stop reading, under a steady stream of 2 kB events.

    Every publish goes to room "stall" (the would-be stalled clients) and to one room of
    10 healthy clients, round-robin: in phase A everyone reads (the unloaded p99), in
    phase B the stalled ones pause reading. Latency is from when a publish was due to
    when a healthy client got it.
    """
    healthy_n, stalled_n = ctx.size((1000, 100), (200, 20))
    rate, size = 200, 2000
    phase_a, phase_b = ctx.size((10.0, 30.0), (3.0, 8.0))
    rooms = max(1, healthy_n // 10)
    due: list[float] = []
    lat = {"A": array("d"), "B": array("d")}
    first_b = [1 << 62]  # the first sequence number published in phase B

    def on_event(payload: bytes) -> None:
        i = payload.find(b"S:")
        if i >= 0:
            j = payload.find(b":", i + 2)
            seq = int(payload[i + 2 : j])
            lat["B" if seq >= first_b[0] else "A"].append(mono() - due[seq])

    async def client(i: int) -> SioProto:
        if i < healthy_n:
            return await open_sio(ctx.port, ctx.token(f"h{i}", [f"h{i % rooms}"]), on_event)
        # A fixed 64 kB receive buffer (no autotuning): what the kernel holds for a
        # stalled client stays small, so the server has to deal with the backlog itself.
        return await open_sio(ctx.port, ctx.token(f"s{i}", ["stall"]), None, rcvbuf=65536)

    ctx.start()
    clients = await gather_bounded(healthy_n + stalled_n, 200, client)
    failed = [c for c in clients if not isinstance(c, SioProto)]
    if failed:
        return {
            "outcome": f"connect failed for {len(failed)}: {tally([err_name(e) for e in failed])}"
        }
    stall_clients: list[SioProto] = clients[healthy_n:]

    from hostile_net import Poster

    posters = [Poster(ctx.port, ctx.api_key) for _ in range(16)]
    idle: asyncio.Queue[Poster] = asyncio.Queue()
    for p in posters:
        idle.put_nowait(p)
    statuses: collections.Counter[int] = collections.Counter()
    pad = "x" * size

    async def publish(seq: int) -> None:
        p = await idle.get()
        try:
            body = {"event": "m", "data": f"S:{seq}:{pad}", "rooms": ["stall", f"h{seq % rooms}"]}
            statuses[await p.post(body)] += 1
        finally:
            idle.put_nowait(p)

    fds: list[tuple[float, int]] = []

    async def run_phase(seconds: float) -> None:
        t0 = mono()
        k = 0
        tasks = []
        while True:
            t_due = t0 + k / rate
            if t_due > t0 + seconds:
                break
            now = mono()
            if t_due > now:
                await asyncio.sleep(t_due - now)
            due.append(t_due)
            tasks.append(asyncio.ensure_future(publish(len(due) - 1)))
            k += 1
            if k % 20 == 0:
                fds.append((mono(), fd_count(ctx.server_pid)))
        await asyncio.gather(*tasks)
        await asyncio.sleep(0.5)  # stragglers

    await run_phase(phase_a)
    fd_before = fd_count(ctx.server_pid)
    first_b[0] = len(due)
    t_pause = mono()
    for c in stall_clients:
        assert c.transport is not None
        c.transport.pause_reading()
    await run_phase(phase_b)
    # When did the server let go of the stalled sockets? Its fd count falls by that much.
    cut_half = cut_all = None
    for t, n in fds:
        if t < t_pause:
            continue
        if cut_half is None and n <= fd_before - stalled_n // 2:
            cut_half = t - t_pause
        if cut_all is None and n <= fd_before - int(stalled_n * 0.95):
            cut_all = t - t_pause
    # Resume reading: a stalled client the server cut now sees its data end and the EOF.
    for c in stall_clients:
        if c.transport is not None and not c.transport.is_closing():
            c.transport.resume_reading()
    await asyncio.sleep(2.0)
    ended = sum(1 for c in stall_clients if c.closed.done())
    healthy_dropped = sum(1 for c in clients[:healthy_n] if c.closed.done())
    for c in clients:
        if c.transport is not None:
            set_rst(c.transport.get_extra_info("socket"))
            c.transport.abort()

    def pct(a: array, p: float) -> float | None:
        v = percentile(list(a), p)
        return None if v is None else round(v * 1000, 2)

    p99a, p99b = pct(lat["A"], 99), pct(lat["B"], 99)
    expected_b = (len(due) - first_b[0]) * 10
    ratio = round(p99b / p99a, 2) if p99a and p99b else None
    cut_txt = (
        f"stalled cut after {cut_half:.1f} s (half) / {cut_all:.1f} s (95%)"
        if cut_all is not None
        else (f"half cut after {cut_half:.1f} s" if cut_half is not None else "stalled not cut")
    )
    return {
        "outcome": f"{healthy_n:,} healthy + {stalled_n} stalled, {rate}/s x {size} B,"
        f" {phase_a:.0f} s + {phase_b:.0f} s: healthy p99 {p99a} -> {p99b} ms ({ratio}x),"
        f" {len(lat['B']):,}/{expected_b:,} delivered in B; {cut_txt};"
        f" {ended}/{stalled_n} stalled saw EOF on resume; healthy dropped {healthy_dropped};"
        f" HTTP {dict(statuses)}",
        "healthy_p50_ms": {"A": pct(lat["A"], 50), "B": pct(lat["B"], 50)},
        "healthy_p99_ms": {"A": p99a, "B": p99b},
        "p99_ratio": ratio,
        "delivered": {"A": len(lat["A"]), "B": len(lat["B"])},
        "cut_half_s": cut_half,
        "cut_95_s": cut_all,
        "stalled_eof": ended,
        "healthy_dropped": healthy_dropped,
    }


# --- 9. churn ---------------------------------------------------------------------------------


async def churn(ctx: Ctx) -> dict[str, Any]:
    """Connect/abort (RST) cycles; half aborted mid-handshake at one of three stages."""
    cycles, conc = ctx.size((20_000, 200), (2000, 100))
    stages: collections.Counter[str] = collections.Counter()
    token = ctx.token("churn")

    async def one(i: int) -> None:
        stage = ("tcp", "partial head", "before CONNECT", "joined")[i % 4 if i % 2 == 0 else 3]
        s = await Stream.open(ctx.port)
        try:
            if stage == "partial head":
                s.writer.write(upgrade_request()[:40])
                await s.writer.drain()
            elif stage == "before CONNECT":
                s.writer.write(upgrade_request())
                await asyncio.wait_for(s.reader.readuntil(b"\r\n\r\n"), 10)
                await asyncio.wait_for(s.read_frame(), 10)
            elif stage == "joined":
                s.abort()
                s = await stream_ws_open(ctx.port, token)
            stages[stage] += 1
        finally:
            s.abort()

    ctx.start()
    t0 = mono()
    res = await gather_bounded(cycles, conc, one)
    errors = [err_name(r) for r in res if isinstance(r, BaseException)]
    return {
        "outcome": f"{cycles:,} cycles at {conc} concurrent in {mono() - t0:.1f} s"
        f" ({', '.join(f'{k} {v:,}' for k, v in stages.items())})"
        + (f"; errors {tally(errors)}" if errors else ""),
        "errors": len(errors),
    }


# --- siogate-only: HTTP API --------------------------------------------------------------------


async def api(ctx: Ctx) -> dict[str, Any]:
    """Slow bodies, unauthenticated big bodies, deep JSON and a huge Content-Length."""
    n = ctx.size(200, 20)
    until = mono() + ctx.size(10, 4)
    key = ctx.api_key.encode()

    def post_head(length: int, auth: bool) -> bytes:
        return (
            b"POST /v1/emit HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + (b"Authorization: Bearer " + key + b"\r\n" if auth else b"")
            + b"Content-Length: "
            + str(length).encode()
            + b"\r\n\r\n"
        )

    async def slow_body(i: int) -> str:
        s = await Stream.open(ctx.port)
        t0 = mono()
        watcher = asyncio.ensure_future(_watch_cut(s, t0, until))
        s.writer.write(post_head(MB, auth=i % 2 == 0))
        while not watcher.done() and mono() < until:
            s.writer.write(b"{")
            await asyncio.sleep(0.5)
        cut, reply = await watcher
        s.abort()
        when = f" at {cut:.1f} s" if cut is not None else ", open at the end"
        return f"{'auth' if i % 2 == 0 else 'no auth'}: {describe_reply(reply, False)}{when}"

    async def one_shot(body_head: bytes, body: bytes) -> str:
        s = await Stream.open(ctx.port)
        s.writer.write(body_head)
        why = await s.pump(body, len(body), mono() + 5)
        reply = await s.reply(1 << 16, 2.0, ws=False)
        s.abort()
        return f"{reply} ({why})"

    deep = b"[" * 400_000 + b"]" * 400_000
    big = b'{"event":"e","data":"' + b"x" * (MB - 30) + b'"}'
    slow = gather_bounded(n, n, slow_body)
    shots = gather_bounded(
        n,
        16,
        lambda i: (
            one_shot(post_head(len(deep), True), deep)
            if i % 3 == 0
            else one_shot(post_head(len(big), False), big)
            if i % 3 == 1
            else one_shot(post_head(10**12, True), b"{")
        ),
    )
    ctx.start()
    slow_res, shot_res = await asyncio.gather(slow, shots)
    labels = ["deep JSON 800 kB (auth)", "1 MB body (no auth)", "Content-Length 10^12 (auth)"]
    by_kind: dict[str, list[str]] = {k: [] for k in labels}
    for i, r in enumerate(shot_res):
        by_kind[labels[i % 3]].append(r if isinstance(r, str) else err_name(r))
    slow_txt = [r if isinstance(r, str) else err_name(r) for r in slow_res]
    return {
        "outcome": f"slow bodies x{n}: {tally(slow_txt)}; "
        + "; ".join(f"{k}: {tally(v)}" for k, v in by_kind.items()),
    }


ATTACKS: dict[str, Callable[[Ctx], Awaitable[dict[str, Any]]]] = {
    "frag": frag,
    "pipeline": pipeline,
    "pingflood": pingflood,
    "bighead": bighead,
    "malformed": malformed,
    "slowloris": slowloris,
    "connflood": connflood,
    "attachments": attachments,
    "stalled": stalled,
    "churn": churn,
    "api": api,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("attack", choices=sorted(ATTACKS))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--jwt-secret", required=True)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = Ctx(args.port, args.api_key, TokenMinter(args.jwt_secret), args.server_pid, args.quick)
    if uvloop is not None:
        uvloop.install()
    t0 = mono()
    result = asyncio.run(ATTACKS[args.attack](ctx))
    result["attack_s"] = round(mono() - t0, 2)
    print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    sys.exit(main())
