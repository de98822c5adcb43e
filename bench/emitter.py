"""Emits per second from the stock @socket.io/redis-emitter into siogate (--emitter-compat)
and into Node's socket.io 4.8 on @socket.io/redis-adapter 8.3, following BENCH-METHOD.md.

    python bench/emitter.py                      # 3 reps, 10,000 emits, 100 clients
    python bench/emitter.py --quick              # 1 rep, 2,000 emits: a smoke test
    python bench/emitter.py --emits 20000 --clients 200 --room-size 10 --reps 5

For every (rep, system), systems alternating inside a rep: a fresh server pinned to core
0 (one node, on this run's own redis-server, also on core 0), then N clients of
bench/loadgen.py in rooms of --room-size (client i in room r<i // room size>), all in
this process on core 1. The publisher, bench/node-ref/emitter_pub.js (the npm emitter,
also on core 1), connects, then publishes --emits events as fast as the emitter and
Redis take them, event i to room r<i mod rooms>. Measured: from the "go" to the last
delivery; emits/s = emits / that time, and whether every delivery arrived exactly once.
The server's CPU seconds over the same span tell what each emit cost it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cluster
import loadgen
import run
from run import BENCH, LOADGEN_CORE, ROOT, SERVER_CORE, free_port, stop_process, wait_healthy

PUBLISHER = BENCH / "node-ref" / "emitter_pub.js"


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pid(proc: subprocess.Popen[bytes]) -> int:
    """The server itself: `taskset` execs it, so the PID is the same."""
    return proc.pid


def start(system: str, redis_url: str, prefix: str, log: Path) -> tuple[Any, int, str, str]:
    port = free_port()
    fill = {
        "port": str(port),
        "api_key": secrets.token_hex(16),
        "jwt_secret": secrets.token_hex(32),
    }
    if system == "siogate":
        # This checkout's code (run.py's SIOGATE is ROOT/.venv's entry point).
        argv = ["taskset", "-c", str(SERVER_CORE), sys.executable, "-m", "siogate"]
        argv += [a.format(**fill) for a in run.SERVERS["siogate"].argv[1:]]
        argv += ["--redis-url", redis_url, "--redis-prefix", prefix, "--emitter-compat"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=run.raise_nofile
            )
    else:
        proc = run.start_server(
            "node", fill, log, extra_env={"REDIS_URL": redis_url, "REDIS_PREFIX": "socket.io"}
        )
    problem = wait_healthy(proc, port, 20, log)
    if problem:
        stop_process(proc)
        raise RuntimeError(problem)
    return proc, port, fill["api_key"], fill["jwt_secret"]


async def measure(
    args: argparse.Namespace, port: int, jwt_secret: str, redis_url: str, pids: list[int]
) -> dict[str, Any]:
    """One run; ``pids``: the server's, then redis-server's (both on the server core)."""
    pid = pids[0]
    meter = loadgen.CoreMeter(pids, SERVER_CORE, LOADGEN_CORE)
    loadgen.LEDGER = ledger = loadgen.Ledger()
    loadgen.STATS = loadgen.Stats()
    rooms = args.clients // args.room_size
    minter = loadgen.TokenMinter(jwt_secret)
    tokens = [minter.mint(f"b{i}", [f"r{i // args.room_size}"]) for i in range(args.clients)]
    clients, conn = await loadgen.connect_clients("127.0.0.1", [port], tokens, 100, 30)
    if conn["connected"] != args.clients:
        raise RuntimeError(f"only {conn['connected']}/{args.clients} clients connected: {conn}")
    for _ in range(args.emits):
        ledger.new_seq(args.room_size)
    pub = subprocess.Popen(
        ["taskset", "-c", str(LOADGEN_CORE), "node", str(PUBLISHER), redis_url,
         str(args.emits), str(rooms), str(args.pad)],
        cwd=PUBLISHER.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert pub.stdin is not None and pub.stdout is not None
    loop = asyncio.get_running_loop()
    ready = await loop.run_in_executor(None, pub.stdout.readline)
    if not ready.startswith(b'{"ready"'):
        raise RuntimeError(f"publisher did not start: {ready!r}")
    await asyncio.sleep(0.5)  # settle
    expected = args.emits * args.room_size
    cpu0 = proc_cpu_s(pid)
    before = meter.read()
    t0 = loadgen.perf()
    pub.stdin.write(b"go\n")
    pub.stdin.close()
    done = loop.run_in_executor(None, pub.stdout.readline)
    # Until every delivery arrived, or nothing more arrived for 30 s (a server starved by
    # other work on its core is slow, not lossy: that shows in foreign_cpu_pct).
    last_count, last_change = 0, time.monotonic()
    while True:
        got = sum(ledger.count)
        if got >= expected:
            break
        if got != last_count:
            last_count, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > 30:
            break
        await asyncio.sleep(0.01)
    cpu = proc_cpu_s(pid) - cpu0
    foreign = meter.foreign(before)["server_core"]
    summary = json.loads(await done)
    pub.wait(10)
    pub.stdout.close()
    t_last = max(ledger.last)
    for client in clients:
        client.close()
    elapsed = t_last - t0
    got = sum(ledger.count)
    return {
        "emits": args.emits,
        "deliveries": got,
        "missing": expected - got,
        "duplicates": ledger.dups,
        # Clients the server (or the network) closed during the run, and why.
        "dropped": loadgen.STATS.dropped,
        "drop_reasons": dict(loadgen.STATS.drop_reasons),
        "elapsed_s": round(elapsed, 3),
        "emits_per_s": round(args.emits / elapsed, 1),
        "publish_s": round(summary["publish_s"], 3),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_us_per_emit": round(cpu * 1e6 / args.emits, 1),
        # Busy time of the server core not spent by the server or redis-server.
        "foreign_cpu_pct": foreign,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--systems", default="node,siogate")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--emits", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--room-size", type=int, default=10)
    ap.add_argument("--pad", type=int, default=16, help="bytes of padding in each event")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.emits = 1, 2_000
    systems = args.systems.split(",")
    os.sched_setaffinity(0, {LOADGEN_CORE})
    run.raise_nofile()
    out = BENCH / "results" / (time.strftime("%Y%m%d-%H%M%S") + "-emitter")
    out.mkdir(parents=True, exist_ok=True)
    redis = cluster.Redis(out / "redis.log")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    try:
        for rep in range(args.reps):
            for system in systems:
                log = out / f"{system}-{rep}.log"
                proc, port, _, secret = start(system, redis.url, f"bench{rep}", log)
                try:
                    pids = [server_pid(proc), redis.pid]
                    r = asyncio.run(measure(args, port, secret, redis.url, pids))
                finally:
                    stop_process(proc)
                results[system].append(r)
                print(f"rep {rep} {system}: {json.dumps(r)}", flush=True)
    finally:
        redis.stop()
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n{args.emits} emits, {args.clients} clients in rooms of {args.room_size}, "
          f"{args.reps} reps (median [min-max])")  # fmt: skip
    medians = {}
    for system in systems:
        rates = [r["emits_per_s"] for r in results[system]]
        cpu = [r["server_cpu_us_per_emit"] for r in results[system]]
        medians[system] = statistics.median(rates)
        lost = sum(r["missing"] for r in results[system])
        foreign = max(r["foreign_cpu_pct"] for r in results[system])
        dups = sum(r["duplicates"] for r in results[system])
        print(
            f"  {system:8} {medians[system]:>9,.0f} emits/s [{min(rates):,.0f}-{max(rates):,.0f}]"
            f"  server CPU {statistics.median(cpu)} us/emit  missing {lost}  duplicates {dups}"
            f"  foreign CPU on its core up to {foreign}%"
        )
    if "node" in medians and "siogate" in medians:
        print(f"  siogate/node: {medians['siogate'] / medians['node']:.2f}x emits/s")
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
