"""``siogate serve --workers N`` against Node socket.io on N cores (node:cluster with
@socket.io/sticky and @socket.io/cluster-adapter): peak delivered msgs/s.

    python bench/workers.py --quick                      # this 2-core VM: a smoke test
    python bench/workers.py --workers 1,2,4,8 --server-cores 0-7 \\
        --loadgen-cores 8,9,10,11,12,13,14,15 --reps 3   # a 16-core machine

For every (rep, system, worker count) it starts a fresh server pinned to
``--server-cores`` (``taskset``) and one ``bench/loadgen.py throughput`` per core of
``--loadgen-cores``, side by side, each with its own ``--clients`` clients in its own
rooms of 10 (so one publish = 10 deliveries) and the same rate steps per load
generator. A load generator tops out near 85k received msgs/s per core (see
bench/README.md, "Ceiling"), so a server that can take more needs several. Reported per
run: the sum over load generators of their peak delivered msgs/s, and the server's CPU
(cores busy, its whole process tree) over the run. The ratios in the table are against
the same system with one worker and against Node with as many workers, medians over
reps. Raw JSON goes to bench/results/<timestamp>-workers/.

- siogate: ``siogate serve --workers N`` (N = 1: one process, no supervisor);
  siogate-recovery: the same with ``--recovery-window 120``.
- node: N = 1: ``node-ref/server.js``; N > 1: ``node-ref/cluster.js`` with WORKERS=N,
  socket.io's documented multi-core setup on one machine.
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

import run
from run import BENCH, CLK_TCK, ROOT, free_port, raise_nofile, stop_process, tail, tree_ticks


def cpu_list(text: str) -> list[int]:
    """``0-3,8`` -> [0, 1, 2, 3, 8]."""
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += range(int(lo), int(hi) + 1)
        elif part:
            out.append(int(part))
    return out


def server_argv(system: str, workers: int, port: int, key: str, secret: str) -> list[str]:
    if system.startswith("siogate"):
        argv = [
            sys.executable, "-m", "siogate", "serve", "--host", "127.0.0.1",
            "--port", str(port), "--api-key", key, "--jwt-secret", secret,
            "--log-level", "warning", "--max-connections-per-ip", "0",
            "--max-connections", "60000", "--workers", str(workers),
        ]  # fmt: skip
        if system == "siogate-recovery":
            # Every command through the recovery log (the primary's, with workers).
            argv += ["--recovery-window", "120"]
        return argv
    script = "server.js" if workers == 1 else "cluster.js"
    return ["node", str(BENCH / "node-ref" / script), "--port", str(port)]


def wait_ready(system: str, workers: int, port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Until /healthz answers (and, for siogate, a worker sees all the others)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            body = json.loads(conn.getresponse().read())
            conn.close()
            siogate = system.startswith("siogate")
            peers = body.get("broker", {}).get("peers", 0) if siogate else 0
            if not siogate or workers == 1 or peers == workers - 1:
                return True
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    return False


def run_once(
    system: str, workers: int, rep: int, opts: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    port = free_port()
    key, secret = secrets.token_hex(16), secrets.token_hex(24)
    record: dict[str, Any] = {"system": system, "workers": workers, "rep": rep, "problems": []}
    record["quiet"] = run.wait_quiet(opts.quiet_pct, opts.quiet_timeout)
    log_path = logs / f"{system}-w{workers}-rep{rep}-{port}.log"
    env = {**os.environ, "API_KEY": key, "JWT_SECRET": secret, "WORKERS": str(workers)}
    cores = ",".join(map(str, opts.server_cores))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["taskset", "-c", cores, *server_argv(system, workers, port, key, secret)],
            stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=raise_nofile, cwd=ROOT,
        )  # fmt: skip
    gens: list[subprocess.Popen[bytes]] = []
    try:
        if not wait_ready(system, workers, port, proc):
            record["problems"].append(f"server not ready: {tail(log_path)}")
            return record
        time.sleep(0.5)
        ticks0, t0 = tree_ticks(proc.pid), time.monotonic()
        for k, core in enumerate(opts.loadgen_cores):
            argv = [
                "taskset", "-c", str(core), sys.executable, str(BENCH / "loadgen.py"),
                opts.scenario, "--port", str(port), "--api-key", key, "--jwt-secret", secret,
                "--server-pid", str(proc.pid), "--clients", str(opts.clients),
                "--server-core", str(opts.server_cores[0]), "--loadgen-core", str(core),
                "--foreign-limit", str(opts.foreign_limit),
            ]  # fmt: skip
            if opts.scenario == "fanout":
                argv += ["--room", f"g{k}", "--isolated", "3", "--burst", "20"]
            else:
                argv += ["--room-prefix", f"g{k}r", "--step", str(opts.step)]
                if opts.rates:
                    argv += ["--rates", opts.rates]
            err = open(logs / f"loadgen{k}-{system}-w{workers}-rep{rep}.log", "wb")  # noqa: SIM115
            gens.append(
                subprocess.Popen(
                    argv, stdout=subprocess.PIPE, stderr=err, preexec_fn=raise_nofile, cwd=ROOT
                )  # fmt: skip
            )
        results = []
        for k, gen in enumerate(gens):
            out, _ = gen.communicate(timeout=opts.run_timeout)
            try:
                results.append(json.loads(out.decode().strip().splitlines()[-1]))
            except (IndexError, ValueError):
                record["problems"].append(f"load generator {k} gave no result")
        seconds = time.monotonic() - t0
        record["server_cores_busy"] = round((tree_ticks(proc.pid) - ticks0) / CLK_TCK / seconds, 2)
        record["loadgens"] = results
        peaks = [r.get("peak_msgs_s") for r in results]
        if peaks and all(isinstance(p, int | float) for p in peaks):
            record["peak_msgs_s"] = sum(peaks)
        # Fan-out: the slowest load generator's (each is its own room of --clients).
        lasts = [r.get("isolated_last_ms") for r in results]
        if lasts and all(isinstance(v, int | float) for v in lasts):
            record["isolated_last_ms"] = max(lasts)
            p99s = [r.get("burst", {}).get("last_p99_ms") or 0 for r in results]
            record["burst_p99_ms"] = max(p99s)
        for field in ("missing", "duplicates", "dropped"):
            count = sum(r.get(field, 0) or 0 for r in results)
            if count:
                record["problems"].append(f"{count} {field}")
        if proc.poll() is not None:
            record["problems"].append(f"server exited during the run: {tail(log_path)}")
    finally:
        for gen in gens:
            if gen.poll() is None:
                gen.kill()
                gen.wait(5)
        stop_process(proc)
    return record


def _relay_side(path: str, size: int, count: int, go: Any, finish: Any) -> None:
    """The primary's relay and a publishing worker, together on the server core."""
    os.sched_setaffinity(0, {run.SERVER_CORE})
    from broker_cost import command

    from siogate.broker import EmitCommand
    from siogate.broker.local import LocalBroker, LocalRelay
    from siogate.types import Namespace

    async def main() -> None:
        relay = LocalRelay(path)
        await relay.start()
        go.set()
        publisher = LocalBroker(path, advertise_url=None)
        await publisher.start(lambda _c: None, lambda _q: None)
        while publisher.stats.peers < 1:
            await asyncio.sleep(0.01)
        batches = [[command(size, i)] for i in range(count)]
        for start in range(0, count, 200):
            await asyncio.gather(*(publisher.publish(b) for b in batches[start : start + 200]))
        # Namespace-wide, so it reaches the measured worker whether or not the relay routes.
        await publisher.publish([EmitCommand(Namespace("/"), "end", [])])
        while not finish.is_set():
            await asyncio.sleep(0.05)
        await publisher.close()
        await relay.close()

    asyncio.run(main())


def relay_cost(messages: int) -> dict[int, tuple[float, float]]:
    """(CPU us per message, messages/s) for a worker absorbing commands it has no
    recipients for, through the relay: bench/broker_cost.py's "through Redis", here.

    The commands emit to a room nobody joined: a relay that routes by room passes them
    to no worker, so the measured worker's CPU is counted from its start to a final
    namespace-wide command that reaches it either way, divided by the commands sent."""
    import multiprocessing
    import tempfile

    from broker_cost import SIZES

    from siogate.broker.local import LocalBroker

    os.sched_setaffinity(0, {run.LOADGEN_CORE})
    out = {}
    for size in SIZES:
        # The relay cuts off a worker 64 MB behind: keep each burst well under that.
        count = min(messages, 5_000_000 // size)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "relay.sock")
            go, finish = multiprocessing.Event(), multiprocessing.Event()
            side = multiprocessing.Process(target=_relay_side, args=(path, size, count, go, finish))
            side.start()
            go.wait(10)

            async def absorb(path: str = path, count: int = count) -> tuple[float, float]:
                done = asyncio.Event()

                def handler(commands: Any) -> None:
                    if commands[-1].event == "end":
                        done.set()

                broker = LocalBroker(path, advertise_url=None)
                first = [time.process_time(), time.perf_counter()]
                await broker.start(handler, lambda _q: None)
                await asyncio.wait_for(done.wait(), 120)
                cpu, wall = time.process_time() - first[0], time.perf_counter() - first[1]
                await broker.close()
                return cpu / count * 1e6, count / wall

            out[size] = asyncio.run(absorb())
            finish.set()
            side.join(10)
    return out


def fanout_table(records: list[dict[str, Any]], systems: list[str], counts: list[int]) -> str:
    lines = [
        "| system | workers | isolated publish -> last client (median) | 20 x 200 ms: p99 "
        "-> last client | vs node, same workers (isolated) |",
        "|---|---|---|---|---|",
    ]
    for system in systems:
        for n in counts:

            def median(field: str, system: str = system, n: int = n) -> float | None:
                values = [
                    r[field] for r in records
                    if r["system"] == system and r["workers"] == n and field in r
                ]  # fmt: skip
                return statistics.median(values) if values else None

            last, p99 = median("isolated_last_ms"), median("burst_p99_ms")
            node = median("isolated_last_ms", "node")
            vs = f"{last / node:.2f}x" if last and node and system != "node" else "-"
            shown = f"{last:.0f} ms" if last else "-"
            lines.append(f"| {system} | {n} | {shown} | {p99 and f'{p99:.0f} ms'} | {vs} |")
    return "\n".join(lines)


def table(records: list[dict[str, Any]], systems: list[str], counts: list[int]) -> str:
    def median(system: str, workers: int, field: str) -> float | None:
        values = [
            r[field] for r in records
            if r["system"] == system and r["workers"] == workers and field in r
        ]  # fmt: skip
        return statistics.median(values) if values else None

    lines = [
        "| system | workers | peak delivered msgs/s (median) | server cores busy | "
        "vs 1 worker | vs node, same workers |",
        "|---|---|---|---|---|---|",
    ]
    for system in systems:
        one = median(system, 1, "peak_msgs_s")
        for n in counts:
            peak = median(system, n, "peak_msgs_s")
            busy = median(system, n, "server_cores_busy")
            node = median("node", n, "peak_msgs_s")
            scale = f"{peak / one:.2f}x" if peak and one else "-"
            vs = f"{peak / node:.2f}x" if peak and node and system != "node" else "-"
            shown = f"{peak:,.0f}" if peak else "-"
            lines.append(f"| {system} | {n} | {shown} | {busy} | {scale} | {vs} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--systems", default="node,siogate")
    ap.add_argument(
        "--scenario",
        choices=["throughput", "fanout"],
        default="throughput",
        help="fanout: --clients clients per load generator in one room (10,000 for the "
        "issue's fan-out), isolated publishes then 20 x 200 ms",
    )
    ap.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    ap.add_argument("--server-cores", type=cpu_list, default=cpu_list("0"))
    ap.add_argument("--loadgen-cores", type=cpu_list, default=cpu_list("1"))
    ap.add_argument("--clients", type=int, default=1000, help="per load generator")
    ap.add_argument("--step", type=float, default=5.0)
    ap.add_argument("--rates", default=None, help="per load generator (loadgen's default)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 s steps, 1 rep")
    ap.add_argument(
        "--relay-cost",
        type=int,
        metavar="MESSAGES",
        default=0,
        help="only measure what a command without local recipients costs a worker",
    )
    ap.add_argument("--foreign-limit", type=float, default=20.0)
    ap.add_argument("--quiet-pct", type=float, default=15.0)
    ap.add_argument("--quiet-timeout", type=float, default=30.0)
    ap.add_argument("--run-timeout", type=float, default=600.0)
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.step, opts.reps = 2.0, 1
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.relay_cost:
        from broker_cost import SIZES

        costs = relay_cost(opts.relay_cost)
        print(
            "| payload | through the relay: worker CPU per message | received (publisher-bound) |"
        )
        print("|---|---|---|")
        for size in SIZES:
            cpu, rate = costs[size]
            print(f"| {size:,} B | {cpu:.1f} us | {rate:,.0f} msg/s |")
        return 0
    systems = opts.systems.split(",")
    counts = [int(n) for n in opts.workers.split(",")]
    out = BENCH / "results" / (time.strftime("%Y%m%d-%H%M%S") + "-workers")
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    records = []
    for rep in range(opts.reps):
        for n in counts:
            for system in systems:
                record = run_once(system, n, rep, opts, logs)
                records.append(record)
                print(
                    f"rep {rep} {system} x{n}: peak {record.get('peak_msgs_s')} msgs/s, "
                    f"server cores busy {record.get('server_cores_busy')}, "
                    f"problems {record['problems']}",
                    file=sys.stderr,
                )
    text = (fanout_table if opts.scenario == "fanout" else table)(records, systems, counts)
    (out / "results.json").write_text(json.dumps({"argv": sys.argv, "records": records}))
    (out / "table.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
