"""Issue #11's measurements: emit-with-ack round trip, and the idempotency check's cost.

    /work/main/.venv/bin/python bench/acks.py                 # both parts, 3 reps (~6-10 min)
    /work/main/.venv/bin/python bench/acks.py --quick         # 200 clients, 1 rep, 2 s rates
    /work/main/.venv/bin/python bench/acks.py --parts ack --systems siogate --reps 1

Part "ack": 1,000 clients (raw WebSocket Socket.IO clients in one load-generator
process) that answer every event carrying an ack id at once (`42<id>[...]` ->
`43<id>[{"ok":true}]`). The publisher sends 20 `POST /v1/emit` with
`"ack": {"timeout_ms": N}` one after another (the next when the previous answered) and
times each HTTP round trip: request written -> whole response read, one clock. One
uncounted warm-up emit first. Topologies: one node; two nodes + Redis (clients split
over both, every POST to node A). Systems: siogate, and Node socket.io 4.8 answering the
same route with `io.to(room).timeout(N).emitWithAck(...)` (bench/node-ref/ack_server.js).

Part "idem": emits per second through one siogate node, `POST /v1/emit` to a room of 10
clients over 8 keep-alive HTTP/1.1 connections (each sends its next request when the
previous answered), without and with an `Idempotency-Key` header (a unique key per
request). Once alone (in-memory keys) and once in cluster mode with a private Redis
(keys in Redis), one node.

Method (bench/README.md, "Method"): every server and redis-server on core 0, the load
generator on core 1; a fresh server per run; systems / variants alternate inside each
rep; median of the reps; foreign CPU sampled per run and a run over the limit rerun once.
The load generator is this file's `gen` subcommand. Raw JSON and the table go to
bench/results/<timestamp>-acks/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import run
from cluster import Redis
from loadgen import TokenMinter, cpu_seconds, masked_frame, percentile
from run import (
    BENCH,
    LOADGEN_CORE,
    ROOT,
    SERVER_CORE,
    CpuSampler,
    free_port,
    log_errors,
    raise_nofile,
    run_loadgen,
    stop_process,
    tail,
    wait_healthy,
    wait_quiet,
)

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None

perf = time.perf_counter
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
ACK_REPLY = b'[{"ok":true}]'


def log(msg: str) -> None:
    print(f"[acks {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# === Load generator (runs on core 1) =======================================================


class Stats:
    acks_sent = 0  # ack replies written by the clients
    events = 0  # EVENTs without an ack id
    pings = 0
    closed = 0
    stray = 0


class Sock(asyncio.Protocol):
    """A Socket.IO v5 client over WebSocket, namespace "/": answers every ack at once."""

    def __init__(self, token: str, host: bytes, done: asyncio.Future[str | None]) -> None:
        self.token = token
        self.host = host
        self.done = done
        self.key = base64.b64encode(os.urandom(16))
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(  # type: ignore[attr-defined]
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: " + self.host + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + self.key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )

    def send(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked_frame(payload))

    def finish(self, error: str | None) -> None:
        if not self.done.done():
            self.done.set_result(error)

    def data_received(self, data: bytes) -> None:
        data = self.buf + data
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            accept = base64.b64encode(hashlib.sha1(self.key + WS_GUID).digest())
            if not data.startswith(b"HTTP/1.1 101") or accept not in data[:end]:
                self.finish(f"upgrade refused: {data[:80]!r}")
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded = True
            data = data[end + 4 :]
        off, n = 0, len(data)
        while off + 2 <= n:
            b0, length, start = data[off], data[off + 1] & 0x7F, off + 2
            if length == 126:
                if off + 4 > n:
                    break
                length, start = int.from_bytes(data[off + 2 : off + 4], "big"), off + 4
            elif length == 127:
                if off + 10 > n:
                    break
                length, start = int.from_bytes(data[off + 2 : off + 10], "big"), off + 10
            if start + length > n:
                break
            off = start + length
            opcode = b0 & 0x0F
            if opcode == 0x1:
                self.packet(data[start:off])
            elif opcode == 0x8:
                Stats.closed += 1
                self.transport.close()  # type: ignore[union-attr]
            elif opcode == 0x9:
                self.transport.write(masked_frame(data[start:off], 0xA))  # type: ignore[union-attr]
            else:
                Stats.stray += 1
        self.buf = data[off:]

    def packet(self, p: bytes) -> None:
        if p[:2] == b"42":
            i = 2
            while p[i : i + 1].isdigit():
                i += 1
            if i > 2:  # an ack id: answer at once
                self.send(b"43" + p[2:i] + ACK_REPLY)
                Stats.acks_sent += 1
            else:
                Stats.events += 1
        elif p == b"2":
            Stats.pings += 1
            self.send(b"3")
        elif p[:1] == b"0":
            self.send(b"40" + json.dumps({"token": self.token}).encode())
        elif p[:2] == b"40":
            self.finish(None)
        elif p[:2] == b"44":
            self.finish(f"connect_error {p[2:120]!r}")
        else:
            Stats.stray += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            Stats.closed += 1
        self.finish(f"lost: {exc!r}")


async def open_clients(ports: list[int], tokens: list[str], inflight: int) -> list[Sock]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(inflight)
    socks: list[Sock] = []

    async def one(i: int) -> None:
        async with gate:
            port = ports[i % len(ports)]
            done: asyncio.Future[str | None] = loop.create_future()
            sock = Sock(tokens[i], f"127.0.0.1:{port}".encode(), done)
            await loop.create_connection(lambda: sock, "127.0.0.1", port)
            error = await asyncio.wait_for(done, 30)
            if error:
                raise RuntimeError(error)
            socks.append(sock)

    await asyncio.gather(*(one(i) for i in range(len(tokens))))
    return socks


class Http(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time; Content-Length bodies."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes, float]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buf[:end].decode("latin-1").lower()
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip() == "content-length":
                length = int(value)
            elif name.strip() == "transfer-encoding":
                raise RuntimeError("chunked responses are not expected here")
        if len(self.buf) < end + 4 + length:
            return
        t = perf()  # the whole response is in: stop the clock here, not after a wake-up
        status = int(head.split(" ", 2)[1])
        body = self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body, t))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    async def call(self, request: bytes) -> tuple[int, bytes, float, float]:
        self.waiter = asyncio.get_running_loop().create_future()
        t0 = perf()
        self.transport.write(request)  # type: ignore[union-attr]
        status, body, t1 = await self.waiter
        return status, body, t0, t1


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_request(port: int, api_key: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        (
            f"POST /v1/emit HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode()
        + extra
        + b"\r\n"
        + body
    )


async def http_conn(port: int) -> Http:
    _, conn = await asyncio.get_running_loop().create_connection(Http, "127.0.0.1", port)
    return conn


def check_ack_answer(status: int, body: bytes, expected: int) -> str | None:
    """None when every recipient answered; else what is wrong (both systems' shapes)."""
    if status != 200:
        return f"{status} {body[:200]!r}"
    doc = json.loads(body)
    acks, timeouts = doc.get("acks"), doc.get("timeouts")
    if doc.get("recipients") != expected or not isinstance(acks, list) or len(acks) != expected:
        return f"recipients {doc.get('recipients')} acks {len(acks or [])} of {expected}"
    if timeouts not in ([], 0) or doc.get("partial"):
        return f"timeouts {timeouts!r} partial {doc.get('partial')!r}"
    return None


async def gen_ack(args: argparse.Namespace) -> dict[str, Any]:
    minter = TokenMinter(args.jwt_secret)
    tokens = [minter.mint(f"u{i}", ["acks"]) for i in range(args.clients)]
    t = perf()
    socks = await open_clients(args.ports, tokens, args.inflight)
    connect_s = perf() - t
    await asyncio.sleep(args.settle)
    conn = await http_conn(args.ports[0])
    body = json.dumps(
        {
            "event": "evt",
            "data": {"n": 1},
            "rooms": ["acks"],
            "ack": {"timeout_ms": args.ack_timeout},
        }
    ).encode()
    request = http_request(args.ports[0], args.api_key, body)
    problems: collections.Counter[str] = collections.Counter()
    status, answer, t0, t1 = await conn.call(request)  # warm-up, not counted
    warmup_ms = (t1 - t0) * 1000
    if (err := check_ack_answer(status, answer, args.clients)) is not None:
        problems[f"warm-up: {err}"] += 1
    await asyncio.sleep(0.2)
    acks_before = Stats.acks_sent
    rtts: list[float] = []
    servers_before = sum(proc_cpu_s(p) for p in args.server_pids)
    self_before, w0 = cpu_seconds(), perf()
    m0 = time.monotonic()
    for _ in range(args.emits):
        status, answer, t0, t1 = await conn.call(request)
        rtts.append((t1 - t0) * 1000)
        if (err := check_ack_answer(status, answer, args.clients)) is not None:
            problems[err[:200]] += 1
    m1 = time.monotonic()
    wall = perf() - w0
    loadgen_pct = 100 * (cpu_seconds() - self_before) / wall
    servers_pct = 100 * (sum(proc_cpu_s(p) for p in args.server_pids) - servers_before) / wall
    acks = Stats.acks_sent - acks_before
    for s in socks:
        s.transport.abort()  # type: ignore[union-attr]
    return {
        "clients": len(socks),
        "connect_s": round(connect_s, 2),
        "warmup_ms": round(warmup_ms, 2),
        "rtt_ms": [round(x, 2) for x in rtts],
        "p50_ms": round(percentile(rtts, 50) or 0, 2),
        "p99_ms": round(percentile(rtts, 99) or 0, 2),
        # CPU during the 20 emits: this process (its ceiling: near 100% means the
        # round trip is partly the load generator's), and the server processes together.
        "loadgen_cpu_pct": round(loadgen_pct, 1),
        "servers_cpu_pct": round(servers_pct, 1),
        "acks_answered": acks,
        "acks_expected": args.clients * args.emits,
        "problems": dict(problems),
        "closed": Stats.closed,
        "phases": {"emits": [m0, m1]},
    }


async def gen_rate(args: argparse.Namespace) -> dict[str, Any]:
    minter = TokenMinter(args.jwt_secret)
    tokens = [minter.mint(f"u{i}", ["r"]) for i in range(args.clients)]
    socks = await open_clients(args.ports, tokens, args.inflight)
    await asyncio.sleep(args.settle)
    conns = [await http_conn(args.ports[0]) for _ in range(args.conns)]
    body = b'{"event":"m","data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","rooms":["r"]}'
    plain = http_request(args.ports[0], args.api_key, body)
    run_id = secrets.token_hex(6)
    counts = {"ok": 0, "err": 0}
    errors: collections.Counter[str] = collections.Counter()
    lat: list[float] = []
    measuring = False
    stop = False

    async def worker(k: int, conn: Http) -> None:
        n = 0
        while not stop:
            n += 1
            if args.idem:
                extra = f"Idempotency-Key: {run_id}-{k}-{n}\r\n".encode()
                request = http_request(args.ports[0], args.api_key, body, extra)
            else:
                request = plain
            status, answer, t0, t1 = await conn.call(request)
            if not measuring:
                continue
            if status == 200:
                counts["ok"] += 1
                lat.append(t1 - t0)
            else:
                counts["err"] += 1
                errors[f"{status} {answer[:160]!r}"] += 1

    tasks = [asyncio.ensure_future(worker(k, c)) for k, c in enumerate(conns)]
    await asyncio.sleep(args.warmup)
    events_before = Stats.events
    watched = {"server": args.server_pids, "redis": [args.redis_pid] if args.redis_pid else []}
    cpu_before = {k: sum(proc_cpu_s(p) for p in v) for k, v in watched.items()}
    measuring = True
    m0, t0 = time.monotonic(), perf()
    await asyncio.sleep(args.duration)
    measuring = False
    elapsed = perf() - t0
    m1 = time.monotonic()
    cpu = {k: sum(proc_cpu_s(p) for p in v) - cpu_before[k] for k, v in watched.items()}
    events = Stats.events - events_before
    stop = True
    await asyncio.wait(tasks, timeout=10)
    for s in socks:
        s.transport.abort()  # type: ignore[union-attr]
    return {
        "clients": len(socks),
        "idempotency_key": bool(args.idem),
        "conns": args.conns,
        "seconds": round(elapsed, 3),
        "ok": counts["ok"],
        "errors": dict(errors.most_common(5)),
        "emits_per_s": round(counts["ok"] / elapsed, 1),
        "deliveries_per_s": round(events / elapsed, 1),
        # CPU per emit during the measured seconds (clock ticks: ~10 ms resolution).
        "server_cpu_us_per_emit": round(cpu["server"] / max(1, counts["ok"]) * 1e6, 1),
        "redis_cpu_us_per_emit": round(cpu["redis"] / max(1, counts["ok"]) * 1e6, 1),
        "server_cpu_pct": round(100 * cpu["server"] / elapsed, 1),
        "redis_cpu_pct": round(100 * cpu["redis"] / elapsed, 1),
        "response_p50_ms": round((percentile(lat, 50) or 0) * 1000, 3),
        "response_p99_ms": round((percentile(lat, 99) or 0) * 1000, 3),
        "phases": {"measure": [m0, m1]},
    }


def gen_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="acks.py gen")
    ap.add_argument("scenario", choices=["ack", "rate"])
    ap.add_argument("--ports", required=True, help="comma list; POSTs go to the first")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--jwt-secret", required=True)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--inflight", type=int, default=200)
    ap.add_argument("--settle", type=float, default=0.5)
    ap.add_argument("--emits", type=int, default=20)
    ap.add_argument("--ack-timeout", type=int, default=10000)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--idem", type=int, default=0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--server-pids", default="", help="comma list: CPU per emit (rate)")
    ap.add_argument("--redis-pid", type=int, default=0)
    args = ap.parse_args(argv)
    args.server_pids = [int(p) for p in args.server_pids.split(",") if p]
    args.ports = [int(p) for p in args.ports.split(",")]
    scenario = gen_ack if args.scenario == "ack" else gen_rate
    if uvloop is not None:
        uvloop.install()
    result = asyncio.run(scenario(args))
    print(json.dumps(result), flush=True)


# === Runner ================================================================================


def start_server(
    system: str,
    port: int,
    secrets_: dict[str, str],
    log_path: Path,
    opts: argparse.Namespace,
    redis_url: str | None,
    prefix: str,
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if system == "siogate":
        argv = [opts.python, "-m", "siogate", "serve", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--api-key", secrets_["api_key"], "--jwt-secret", secrets_["jwt_secret"]]
        argv += ["--allow-anonymous", "--log-level", "warning", "--max-connections-per-ip", "0"]
        argv += ["--max-connections", "30000", "--event-rate", "0"]
        if redis_url:
            argv += ["--redis-url", redis_url, "--redis-prefix", prefix]
        env["PYTHONPATH"] = str(ROOT / "src")
    else:
        argv = ["node", str(BENCH / "node-ref" / "ack_server.js"), "--port", str(port)]
        env.update(API_KEY=secrets_["api_key"], JWT_SECRET=secrets_["jwt_secret"])
        if redis_url:
            env.update(REDIS_URL=redis_url, REDIS_PREFIX=prefix)
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            ["taskset", "-c", str(SERVER_CORE), *argv],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=raise_nofile,
            cwd=ROOT,
        )


def run_once(
    part: str,
    system: str,
    variant: str,
    rep: int,
    opts: argparse.Namespace,
    logs: Path,
    redis: Redis,
) -> dict[str, Any]:
    """One fresh server set, one load-generator run. variant: single | cluster (ack);
    memory | redis + "-key"/"-nokey" (idem)."""
    nodes = 2 if variant == "cluster" else 1
    clustered = variant in ("cluster",) or variant.startswith("redis")
    ports = [free_port() for _ in range(nodes)]
    sec = {"api_key": secrets.token_hex(16), "jwt_secret": secrets.token_hex(24)}
    prefix = f"acks-{secrets.token_hex(4)}"
    record: dict[str, Any] = {
        "part": part,
        "system": system,
        "variant": variant,
        "rep": rep,
        "ports": ports,
        "problems": [],
    }
    record["quiet"] = wait_quiet(opts.quiet_pct, opts.quiet_timeout)
    procs: list[subprocess.Popen[bytes]] = []
    log_paths = [logs / f"{part}-{system}-{variant}-rep{rep}-{p}.log" for p in ports]
    try:
        for port, path in zip(ports, log_paths, strict=True):
            url = redis.url if clustered else None
            procs.append(start_server(system, port, sec, path, opts, url, prefix))
        for proc, port, path in zip(procs, ports, log_paths, strict=True):
            problem = wait_healthy(proc, port, 30, path)
            if problem:
                record["problems"].append(problem)
                return record
        time.sleep(0.3)
        argv = ["taskset", "-c", str(LOADGEN_CORE), opts.python, str(BENCH / "acks.py"), "gen"]
        argv += ["ack" if part == "ack" else "rate", "--ports", ",".join(map(str, ports))]
        argv += ["--api-key", sec["api_key"], "--jwt-secret", sec["jwt_secret"]]
        if part == "ack":
            argv += ["--clients", str(opts.clients), "--emits", str(opts.emits)]
            argv += ["--ack-timeout", str(opts.ack_timeout)]
            argv += ["--server-pids", ",".join(str(p.pid) for p in procs)]
        else:
            argv += ["--clients", str(opts.room), "--conns", str(opts.conns)]
            argv += ["--duration", str(opts.duration), "--warmup", str(opts.warmup)]
            argv += ["--idem", "1" if variant.endswith("-key") else "0"]
            argv += ["--server-pids", ",".join(str(p.pid) for p in procs)]
            if clustered:
                argv += ["--redis-pid", str(redis.pid)]
        record["loadgen_argv"] = argv
        pids = [p.pid for p in procs]
        side = [redis.pid] if clustered and opts.redis_core != SERVER_CORE else []
        if clustered and not side:
            pids.append(redis.pid)
        lg_err = logs / f"gen-{part}-{system}-{variant}-rep{rep}.log"
        run_loadgen(record, argv, CpuSampler(pids, side_pids=side), lg_err, opts.run_timeout)
        for proc, path in zip(procs, log_paths, strict=True):
            if proc.poll() is not None:
                record["problems"].append(f"server exited ({proc.returncode}): {tail(path)}")
    finally:
        for proc in procs:
            stop_process(proc)
    result = record.get("result") or {}
    if result.get("problems"):
        record["problems"].append(f"answers: {result['problems']}")
    if result.get("errors"):
        record["problems"].append(f"HTTP errors: {result['errors']}")
    errors = log_errors(log_paths)
    if errors:
        record["server_log_errors"] = errors
    return record


def run_checked(*args: Any) -> list[dict[str, Any]]:
    """A run, and once more if foreign CPU during its measured phase was over the limit."""
    opts = args[4]
    out = []
    for attempt in range(2):
        rec = run_once(*args)
        rec["attempt"] = attempt
        out.append(rec)
        cpu = rec.get("cpu_emits") or rec.get("cpu_measure") or rec.get("cpu") or {}
        rec["foreign_pct"] = cpu.get("foreign_pct")
        result = rec.get("result") or {}
        log(
            f"{rec['part']} {rec['system']} {rec['variant']} rep{rec['rep']}: "
            + (
                f"p50 {result.get('p50_ms')} p99 {result.get('p99_ms')} ms"
                if rec["part"] == "ack"
                else f"{result.get('emits_per_s')} emits/s"
            )
            + f", foreign {rec['foreign_pct']}%, loadgen core {cpu.get('loadgen_core_busy_pct')}%"
            + (f", PROBLEMS {rec['problems']}" if rec["problems"] else "")
        )
        if (rec["foreign_pct"] or 0) <= opts.foreign_limit:
            break
    return out


def last_good(records: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    """Per rep, the last attempt of the runs matching `match`."""
    by_rep: dict[int, dict[str, Any]] = {}
    for r in records:
        if all(r.get(k) == v for k, v in match.items()):
            by_rep[r["rep"]] = r
    return [by_rep[k] for k in sorted(by_rep)]


def med(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    m = statistics.median(values)
    span = f" [{min(values):,.1f}-{max(values):,.1f}]" if len(values) > 1 else ""
    return f"{m:,.1f}{span}"


def median_or_none(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def total(record: dict[str, Any]) -> float:
    """siogate's and redis-server's CPU us per emit in a rate run (0 if not measured)."""
    result = record.get("result") or {}
    return float(result.get("server_cpu_us_per_emit") or 0) + float(
        result.get("redis_cpu_us_per_emit") or 0
    )


def summarize(records: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    lines: list[str] = []
    if "ack" in opts.parts:
        lines += [
            f"### Emit with ack to {opts.clients:,} sockets: HTTP round trip, "
            f"{opts.emits} emits one after another (ms; median [min-max] of reps)",
            "",
            "| topology | system | p50 | p99 | siogate/node p50 | siogate/node p99 "
            "| loadgen CPU % | server(s) CPU % | foreign % |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for variant in ("single", "cluster"):
            meds: dict[str, tuple[float | None, float | None]] = {}
            for system in opts.systems:
                rs = last_good(records, part="ack", system=system, variant=variant)
                p50 = [(r.get("result") or {}).get("p50_ms") for r in rs]
                p99 = [(r.get("result") or {}).get("p99_ms") for r in rs]
                meds[system] = (median_or_none(p50), median_or_none(p99))
                lg = [(r.get("result") or {}).get("loadgen_cpu_pct") for r in rs]
                sv = [(r.get("result") or {}).get("servers_cpu_pct") for r in rs]
                fo = [r.get("foreign_pct") for r in rs]
                ratio50 = ratio99 = ""
                if system == "siogate" and "node" in meds:
                    a, b = meds["siogate"], meds["node"]
                    ratio50 = f"{a[0] / b[0]:.2f}" if a[0] and b[0] else ""
                    ratio99 = f"{a[1] / b[1]:.2f}" if a[1] and b[1] else ""
                topo = "1 node" if variant == "single" else "2 nodes + Redis"
                lines.append(
                    f"| {topo} | {system} | {med(p50)} | {med(p99)} | {ratio50} | {ratio99} "
                    f"| {med(lg)} | {med(sv)} | {med(fo)} |"
                )
        lines.append("")
    if "idem" in opts.parts:
        lines += [
            f"### POST /v1/emit throughput, one siogate node, room of {opts.room}, "
            f"{opts.conns} keep-alive connections (emits/s; median [min-max] of reps)",
            "",
            "| keys kept | without Idempotency-Key | with (unique per request) | with/without "
            "(median of per-rep ratios) | p50 response ms without / with "
            "| CPU us per emit without / with: siogate, redis "
            "| CPU-bound ratio (median of per-rep ratios) |",
            "|---|---|---|---|---|---|---|",
        ]
        for mode in ("memory", "redis"):
            off = last_good(records, part="idem", variant=f"{mode}-nokey")
            on = last_good(records, part="idem", variant=f"{mode}-key")
            r_off = [(r.get("result") or {}).get("emits_per_s") for r in off]
            r_on = [(r.get("result") or {}).get("emits_per_s") for r in on]
            ratios = [b / a for a, b in zip(r_off, r_on, strict=False) if a and b]
            l_off = [(r.get("result") or {}).get("response_p50_ms") for r in off]
            l_on = [(r.get("result") or {}).get("response_p50_ms") for r in on]
            label = "in memory (alone)" if mode == "memory" else "Redis (cluster mode, 1 node)"
            ratio = f"{statistics.median(ratios):.3f}" if ratios else "n/a"
            if len(ratios) > 1:
                ratio += f" [{min(ratios):.3f}-{max(ratios):.3f}]"
            lm_off, lm_on = median_or_none(l_off), median_or_none(l_on)
            lat = f"{lm_off:.2f} / {lm_on:.2f}" if lm_off and lm_on else "n/a"
            cpu_cells = []
            for proc in ("server", "redis"):
                a = median_or_none(
                    [(r.get("result") or {}).get(f"{proc}_cpu_us_per_emit") for r in off]
                )
                b = median_or_none(
                    [(r.get("result") or {}).get(f"{proc}_cpu_us_per_emit") for r in on]
                )
                if a is not None and b is not None and (a or b):
                    cpu_cells.append(
                        f"{'siogate' if proc == 'server' else 'redis'} {a:.0f} / {b:.0f}"
                    )
            cpu = ", ".join(cpu_cells) or "n/a"
            # What the rate ratio would be on a core that does nothing else: siogate and
            # redis-server share core 0, so an emit costs their CPU per emit together.
            # Less sensitive to other work on the machine than the rates.
            bound = [
                total(a) / total(b) for a, b in zip(off, on, strict=False) if total(a) and total(b)
            ]
            cpu_ratio = f"{statistics.median(bound):.3f}" if bound else "n/a"
            if len(bound) > 1:
                cpu_ratio += f" [{min(bound):.3f}-{max(bound):.3f}]"
            lines.append(
                f"| {label} | {med(r_off)} | {med(r_on)} | {ratio} | {lat} | {cpu} | {cpu_ratio} |"
            )
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--parts", default="ack,idem", help="comma list of ack, idem")
    ap.add_argument("--systems", default="node,siogate", help="ack part: node, siogate")
    ap.add_argument("--topologies", default="single,cluster", help="ack part")
    ap.add_argument("--clients", type=int, default=1000, help="ack part: sockets")
    ap.add_argument("--emits", type=int, default=20)
    ap.add_argument("--ack-timeout", type=int, default=10000, help="timeout_ms of each emit")
    ap.add_argument("--room", type=int, default=10, help="idem part: clients in the room")
    ap.add_argument("--conns", type=int, default=8, help="idem part: HTTP connections")
    ap.add_argument("--duration", type=float, default=5.0, help="idem part: measured seconds")
    ap.add_argument("--warmup", type=float, default=1.0, help="idem part: uncounted seconds")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="200 clients, 1 rep, 2 s rates")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--quiet-pct", type=float, default=15.0)
    ap.add_argument("--quiet-timeout", type=float, default=20.0)
    ap.add_argument("--foreign-limit", type=float, default=20.0)
    ap.add_argument(
        "--redis-core",
        type=int,
        default=SERVER_CORE,
        help=f"core of redis-server (default {SERVER_CORE}, with the servers; "
        f"{LOADGEN_CORE}: beside the load generator, so that the rates measure siogate's "
        "own CPU, as where Redis is a server of its own)",
    )
    ap.add_argument("--run-timeout", type=float, default=180.0)
    ap.add_argument("--out", default=str(BENCH / "results"))
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.clients, opts.reps, opts.duration, opts.warmup = 200, 1, 2.0, 0.5
    opts.parts = opts.parts.split(",")
    opts.systems = opts.systems.split(",")
    opts.topologies = opts.topologies.split(",")
    return opts


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    out_dir = Path(opts.out) / f"{time.strftime('%Y%m%d-%H%M%S')}-acks"
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    redis = Redis(logs / "redis-server.log", opts.redis_core)
    records: list[dict[str, Any]] = []
    meta = {"argv": sys.argv, "opts": vars(opts)}
    try:
        meta["environment"] = run.environment() | {"redis-server": redis.version()}
        for rep in range(opts.reps):
            if "ack" in opts.parts:
                # Alternate the order of systems from rep to rep as well.
                systems = opts.systems if rep % 2 == 0 else opts.systems[::-1]
                for variant in opts.topologies:
                    for system in systems:
                        records += run_checked("ack", system, variant, rep, opts, logs, redis)
            if "idem" in opts.parts:
                order = ("nokey", "key") if rep % 2 == 0 else ("key", "nokey")
                for mode in ("memory", "redis"):
                    for k in order:
                        records += run_checked(
                            "idem", "siogate", f"{mode}-{k}", rep, opts, logs, redis
                        )
            (out_dir / "raw.json").write_text(json.dumps({"meta": meta, "runs": records}, indent=1))
    finally:
        redis.stop()
    table = summarize(records, opts)
    (out_dir / "table.md").write_text(table)
    print(table)
    problems = [(r["part"], r["system"], r["variant"], r["rep"], r["problems"]) for r in records]
    problems = [p for p in problems if p[-1]]
    for p in problems:
        print(f"problem: {p}")
    print(f"raw JSON and logs: {out_dir}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "gen":
        gen_main(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))
