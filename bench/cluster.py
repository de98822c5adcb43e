"""Two nodes + Redis vs one node: siogate's cluster mode against Node's socket.io with
@socket.io/redis-adapter, following BENCH-METHOD.md.

    .venv/bin/python bench/cluster.py                # full run (~10-15 min)
    .venv/bin/python bench/cluster.py --quick        # 1,000 clients, 1 rep: a smoke test
    .venv/bin/python bench/cluster.py --systems node --nodes 2 --reps 1

It starts its own redis-server on a spare port (no persistence) and, for every
(rep, case, system), a fresh set of servers: one node, or two nodes sharing that Redis
under a prefix new to the run. The clients are split evenly over the nodes (client i
to node i mod 2); every publish is a POST to node A. Two cases per node count:

- fanout-N: the fan-out scenario of bench/loadgen.py (isolated publishes, then 20 x
  200 ms) to N clients in one room: publish -> last client, over all nodes.
- hop-M: M clients (default 2: one per node) in one room, 20 publishes a second:
  POST -> receive latency of the clients on node A (same node) and on node B (other
  node); the difference is the cost of the Redis hop.

`--nodes 1+redis` adds one node in cluster mode (with Redis, no peer): what the cluster
mode costs a node before there is a second one.

Placement: every server node and redis-server on core 0, the load generator alone on
core 1 (see bench/README.md, "Two nodes + Redis"). Systems alternate inside each rep;
each case's table row is the median over reps, with siogate/node ratios, plus the
ratio 2 nodes / 1 node per system. Raw JSON and the table go to
bench/results/<timestamp>-cluster/. The start/measure/stop machinery is run.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import run
from run import (
    BENCH,
    LOADGEN_CORE,
    ROOT,
    SERVER_CORE,
    SIOGATE,
    CpuSampler,
    free_port,
    log_errors,
    result_problems,
    run_loadgen,
    start_server,
    stop_process,
    tail,
    wait_healthy,
    wait_quiet,
)

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CORE = SERVER_CORE


# --- Redis --------------------------------------------------------------------------------


class Redis:
    """A redis-server of our own on a spare port: no RDB, no AOF, pinned with the nodes
    (or on ``core``)."""

    def __init__(self, log_path: Path, core: int = REDIS_CORE) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_path
        argv = [
            "taskset",
            "-c",
            str(core),
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        with open(log_path, "wb") as log_file:
            self.proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command("PING") == b"+PONG":
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start: {tail(log_path)}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self, *words: str) -> bytes:
        """One command in RESP, the first line of the reply (enough for PING, FLUSHALL)."""
        request = f"*{len(words)}\r\n".encode()
        for word in words:
            raw = word.encode()
            request += b"$%d\r\n%s\r\n" % (len(raw), raw)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(request)
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                reply += chunk
        return reply.split(b"\r\n", 1)[0]

    def version(self) -> str:
        try:
            out = subprocess.run(
                [REDIS_SERVER, "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "n/a"
        return next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), out.strip())

    def stop(self) -> None:
        stop_process(self.proc)


# --- Systems and cases --------------------------------------------------------------------


def cluster_options(system: str, redis_url: str, prefix: str) -> tuple[list[str], dict[str, str]]:
    """Extra argv and environment that make `system` a node of a Redis cluster."""
    if system.startswith("siogate"):
        return ["--redis-url", redis_url, "--redis-prefix", prefix], {}
    return [], {"REDIS_URL": redis_url, "REDIS_PREFIX": prefix}


def siogate_has_cluster_mode() -> bool:
    try:
        out = subprocess.run(
            [str(SIOGATE), "serve", "--help"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--redis-url" in out


@dataclass
class ClusterCase:
    scenario: str  # fanout | hop | throughput
    clients: int
    nodes: int
    # One node in cluster mode all the same: what Redis costs before any second node.
    redis: bool = False

    @property
    def clustered(self) -> bool:
        return self.nodes > 1 or self.redis

    @property
    def key(self) -> str:
        nodes = f"{self.nodes}node{'s' if self.nodes > 1 else ''}"
        return f"{self.scenario}-{self.clients}-{nodes}{'+redis' if self.redis else ''}"


def build_cases(opts: argparse.Namespace) -> list[ClusterCase]:
    cases = []
    for nodes, redis in opts.nodes:
        cases += [ClusterCase("fanout", n, nodes, redis) for n in opts.sizes]
        if opts.hop_clients:
            cases.append(ClusterCase("hop", opts.hop_clients, nodes, redis))
        if opts.throughput_clients:
            cases.append(ClusterCase("throughput", opts.throughput_clients, nodes, redis))
    return cases


# --- One run ------------------------------------------------------------------------------


def loadgen_argv(
    case: ClusterCase,
    ports: list[int],
    api_key: str,
    jwt_secret: str,
    pids: list[int],
    opts: argparse.Namespace,
) -> list[str]:
    """run.py's load generator command, with the clients spread over every node."""
    argv = run.loadgen_argv(
        run.Case(case.scenario, case.clients), ports[0], api_key, jwt_secret, pids[0], opts
    )
    argv += ["--client-ports", ",".join(map(str, ports))]
    for pid in pids[1:]:
        argv += ["--also-pid", str(pid)]
    if case.scenario == "hop":
        argv += [
            "--hop-rate",
            str(opts.hop_rate),
            "--hop-seconds",
            str(opts.hop_seconds),
            "--hop-warmup",
            str(opts.hop_warmup),
        ]
    return argv


def run_cluster_once(
    system: str, case: ClusterCase, rep: int, opts: argparse.Namespace, logs: Path, redis: Redis
) -> dict[str, Any]:
    ports = [free_port() for _ in range(case.nodes)]
    api_key = secrets.token_hex(16)
    jwt_secret = secrets.token_hex(24)
    # A prefix no earlier run used: nothing a previous cluster left in Redis can match.
    prefix = f"bench-{secrets.token_hex(4)}"
    record: dict[str, Any] = {
        "server": system,
        "case": case.key,
        "scenario": case.scenario,
        "clients": case.clients,
        "nodes": case.nodes,
        "cluster_mode": case.clustered,
        "rep": rep,
        "ports": ports,
        "redis_prefix": prefix,
        "problems": [],
    }
    record["quiet"] = wait_quiet(opts.quiet_pct, opts.quiet_timeout)
    redis.command("FLUSHALL")
    procs: list[tuple[subprocess.Popen[bytes], int, Path]] = []
    try:
        for i, port in enumerate(ports):
            fill = {"port": str(port), "api_key": api_key, "jwt_secret": jwt_secret}
            extra_argv, extra_env = (
                cluster_options(system, redis.url, prefix) if case.clustered else ([], {})
            )
            log_path = logs / f"{system}-{case.key}-rep{rep}-node{'AB'[i]}-{port}.log"
            procs.append(
                (start_server(system, fill, log_path, extra_argv, extra_env), port, log_path)
            )
        for proc, port, log_path in procs:
            problem = wait_healthy(proc, port, opts.start_timeout, log_path)
            if problem:
                record["problems"].append(problem)
                return record
        time.sleep(0.3)
        nodes = [proc.pid for proc, _, _ in procs]
        lg_argv = loadgen_argv(case, ports, api_key, jwt_secret, nodes + [redis.pid], opts)
        lg_err = logs / f"loadgen-{system}-{case.key}-rep{rep}-{ports[0]}.log"
        sampler = (
            CpuSampler(nodes + [redis.pid])
            if opts.redis_core == SERVER_CORE
            else CpuSampler(nodes, side_pids=[redis.pid])
        )
        run_loadgen(record, lg_argv, sampler, lg_err, opts.run_timeout)
        for proc, _, log_path in procs:
            if proc.poll() is not None:
                record["problems"].append(
                    f"server exited during the run with code {proc.returncode}: {tail(log_path)}"
                )
        if redis.proc.poll() is not None:
            record["problems"].append(f"redis-server exited: {tail(redis.log_path)}")
    finally:
        for proc, _, _ in procs:
            stop_process(proc)
        record["server_log"] = [str(log_path) for _, _, log_path in procs]
    record["problems"] += result_problems(record.get("result"))
    errors = log_errors([log_path for _, _, log_path in procs])
    if errors:
        record["server_log_errors"] = errors
    return record


# --- Summary ------------------------------------------------------------------------------


SCALING_ROWS = [
    ("fanout", "isolated publish -> last client, ms"),
    ("fanout", "20 x 200 ms: last client p50, ms"),
    ("fanout", "20 x 200 ms: last client p99, ms"),
    ("hop", "same node: POST -> receive p50, ms"),
]


def scaling_table(summary: dict[str, Any], cases: list[ClusterCase], systems: list[str]) -> str:
    """Per system: the 2-node median over the 1-node median of the same case."""
    lines = [
        "| case | metric | " + " | ".join(f"{s}: 1 node / 2 nodes / ratio" for s in systems) + " |",
        "|---|---|" + "---|" * len(systems),
    ]
    for case in cases:
        if case.nodes == 1:
            continue
        one = ClusterCase(case.scenario, case.clients, 1).key
        if one not in summary:
            continue
        for scenario, label in SCALING_ROWS:
            if scenario != case.scenario:
                continue
            row = [f"{case.scenario}-{case.clients}", label]
            for system in systems:
                a = (summary[one].get(label) or {}).get("medians", {}).get(system)
                b = (summary[case.key].get(label) or {}).get("medians", {}).get(system)
                ratio = f"{b / a:.2f}x" if a and b is not None else "n/a"
                row.append(f"{run.fmt(a)} / {run.fmt(b)} / {ratio}")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def median_of(summary: dict[str, Any], case: ClusterCase, label: str, system: str) -> Any:
    return ((summary.get(case.key) or {}).get(label) or {}).get("medians", {}).get(system)


def goals_table(summary: dict[str, Any], cases: list[ClusterCase], systems: list[str]) -> str:
    """The issue's goals on the largest fan-out and on the hop, with the cross-node cost
    measured two ways: against a same-node client of the cluster, and against one node
    without Redis (which also counts what the cluster adds before the local delivery)."""
    rows = []
    fanouts = [c for c in cases if c.scenario == "fanout" and c.nodes == 2]
    if fanouts:
        big = max(fanouts, key=lambda c: c.clients)
        label = "isolated publish -> last client, ms"
        values = {s: median_of(summary, big, label, s) for s in systems}
        rows.append(
            (
                f"2 nodes, {big.clients:,} clients, isolated publish -> last client "
                "(ms): siogate/node <= 1x",
                values,
                "ratio",
                lambda r: r <= 1.0,
            )
        )
    hops = {c.nodes: c for c in cases if c.scenario == "hop" and not c.redis}
    if 2 in hops:
        label = "hop: other - same node p50, ms"
        values = {s: median_of(summary, hops[2], label, s) for s in systems}
        rows.append(
            (
                "hop p50 (ms): other-node client - same-node client, 2 nodes: < 2 ms",
                values,
                "value",
                lambda v: v < 2.0,
            )
        )
        if 1 in hops:
            values = {}
            for s in systems:
                other = median_of(summary, hops[2], "other node: POST -> receive p50, ms", s)
                alone = median_of(summary, hops[1], "same node: POST -> receive p50, ms", s)
                values[s] = (
                    round(other - alone, 2) if other is not None and alone is not None else None
                )
            rows.append(
                (
                    "cross-node p50 (ms): other-node client with 2 nodes - client of a "
                    "single node: < 2 ms",
                    values,
                    "value",
                    lambda v: v < 2.0,
                )
            )
    lines = [
        "| goal | " + " | ".join(systems) + " | siogate/node | |",
        "|---|" + "---|" * (len(systems) + 2),
    ]
    for text, values, kind, test in rows:
        contender, base = values.get("siogate"), values.get("node")
        ratio = contender / base if contender is not None and base else None
        tested = ratio if kind == "ratio" else contender
        verdict = "" if tested is None else ("met" if test(tested) else "NOT met")
        cells = [run.fmt(values.get(s)) for s in systems]
        ratio_cell = "n/a" if ratio is None or kind != "ratio" else f"{ratio:.2f}x"
        lines.append(f"| {text} | " + " | ".join(cells) + f" | {ratio_cell} | {verdict} |")
    return "\n".join(lines)


def goals_for(cases: list[ClusterCase], systems: list[str]) -> dict[tuple[str, str], run.Goal]:
    """The issue's goals, on the 2-node cases; recovery on against off where the run
    compares those two instead of siogate against Node."""
    if run.compared_pair(systems) == ("siogate-recovery", "siogate"):
        return run.RECOVERY_GOALS
    goals: dict[tuple[str, str], run.Goal] = {}
    for case in cases:
        if case.nodes < 2:
            continue
        if case.scenario == "fanout":
            goals[(case.key, "isolated_last_ms")] = ("<= 1x", lambda r: r <= 1.0, "ratio")
        elif case.scenario == "hop":
            goals[(case.key, "hop_p50_ms")] = ("< 2 ms", lambda v: v < 2.0, "value")
    return goals


def headline(case: ClusterCase, r: dict[str, Any]) -> str:
    if case.scenario == "hop":
        return (
            f"same node p50 {r.get('same_p50_ms')} ms, other node p50 "
            f"{r.get('other_p50_ms')} ms, hop {r.get('hop_p50_ms')} ms"
        )
    return run.headline(case.scenario, r)


def environment(redis: Redis) -> dict[str, Any]:
    env = run.environment()
    env["redis-server"] = redis.version()
    for package in ("redis", "@socket.io/redis-adapter"):
        try:
            env[package] = json.loads(
                (BENCH / "node-ref" / "node_modules" / package / "package.json").read_text()
            )["version"]
        except (OSError, ValueError, KeyError):
            env[package] = "n/a"
    return env


# --- Main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--systems",
        default="node,siogate",
        help="comma list of node, siogate, siogate-recovery (order = order inside a rep)",
    )
    ap.add_argument(
        "--nodes",
        default="1,2",
        help="node counts to compare, comma list; 1+redis: one node in cluster mode",
    )
    ap.add_argument("--sizes", default="10000", help="fan-out client counts, comma list")
    ap.add_argument(
        "--hop-clients",
        type=int,
        default=2,
        help="clients in the hop case, split over the nodes (0: no hop case)",
    )
    ap.add_argument(
        "--throughput-clients",
        type=int,
        default=0,
        help="clients of run.py's throughput scenario (rooms of 10, rate rising in 5 s "
        "steps), split over the nodes (0: no throughput case)",
    )
    ap.add_argument("--hop-rate", type=float, default=20.0, help="hop publishes per second")
    ap.add_argument("--hop-seconds", type=float, default=10.0)
    ap.add_argument("--hop-warmup", type=int, default=20, help="uncounted first publishes")
    ap.add_argument(
        "--rates",
        default=None,
        help="throughput: delivered msgs/s targets, comma list, one per step (default: "
        "loadgen.py's rising steps; e.g. 20000,20000,20000 holds one rate to read CPU per "
        "publish with step_cpu.py)",
    )
    ap.add_argument("--step", type=float, default=5.0, help="throughput: seconds per step")
    ap.add_argument(
        "--redis-core",
        type=int,
        default=REDIS_CORE,
        help=f"core of redis-server (default {REDIS_CORE}, with the nodes; {LOADGEN_CORE}: "
        "beside the load generator, so that the nodes' core measures the nodes alone, as "
        "where Redis is a server of its own)",
    )
    ap.add_argument("--quick", action="store_true", help="1,000 clients, 1 rep, 3 s of hop")
    run.add_run_options(ap)
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.sizes, opts.reps, opts.hop_seconds = "1000", 1, 3.0
    opts.systems = [s for s in opts.systems.split(",") if s]
    opts.nodes = [
        (int(x.removesuffix("+redis")), x.endswith("+redis")) for x in opts.nodes.split(",") if x
    ]
    opts.sizes = [int(x) for x in opts.sizes.split(",") if x]
    run.set_recovery_window(opts.recovery_window)
    for s in opts.systems:
        if s not in ("node", "siogate", "siogate-recovery"):
            ap.error(f"unknown system {s}")
    # run.loadgen_argv reads these; they only matter to other scenarios.
    opts.rounds = 20
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(opts.out) / f"{stamp}-cluster"
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cases = build_cases(opts)
    clustered = siogate_has_cluster_mode()
    redis = Redis(logs / "redis-server.log", opts.redis_core)
    runs: list[dict[str, Any]] = []
    raw_path = out_dir / "raw.json"
    try:
        meta = {
            "argv": sys.argv,
            "options": vars(opts),
            "environment": environment(redis),
            "cases": [c.key for c in cases],
            "redis_port": redis.port,
            "siogate_cluster_mode": clustered,
            "loadavg_start": os.getloadavg(),
            "placement": {
                "servers": SERVER_CORE,
                "redis": opts.redis_core,
                "loadgen": LOADGEN_CORE,
            },
        }
        print(
            f"# cluster bench {stamp}: systems {opts.systems}, {opts.reps} reps, cases "
            f"{meta['cases']}, redis on port {redis.port}",
            file=sys.stderr,
            flush=True,
        )
        if "siogate" in opts.systems and not clustered:
            print(
                "  siogate serve has no --redis-url yet: its multi-node cases are skipped",
                file=sys.stderr,
                flush=True,
            )

        def save() -> None:
            raw_path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))

        t_start = time.monotonic()
        for rep in range(1, opts.reps + 1):
            for case in cases:
                for system in opts.systems:
                    if system.startswith("siogate") and case.clustered and not clustered:
                        continue
                    record = run.run_rerunning(
                        partial(run_cluster_once, system, case, rep, opts, logs, redis),
                        opts.foreign_limit,
                        runs,
                    )
                    save()
                    cpu = record.get("cpu") or {}
                    print(
                        f"[{time.monotonic() - t_start:6.0f}s] rep {rep} {case.key:<20} "
                        f"{system:<8} {headline(case, record.get('result') or {})}; cores "
                        f"{cpu.get('server_core_busy_pct')}%/"
                        f"{cpu.get('loadgen_core_busy_pct')}% foreign "
                        f"{cpu.get('foreign_pct')}%"
                        + (f"; PROBLEMS: {record['problems']}" if record["problems"] else ""),
                        file=sys.stderr,
                        flush=True,
                    )
        meta["total_s"] = round(time.monotonic() - t_start)
    finally:
        redis.stop()
    table, summary = run.summarize(runs, opts.systems, goals_for(cases, opts.systems))
    scaling = scaling_table(summary, cases, opts.systems)
    goals = goals_table(summary, cases, opts.systems)
    busy_starts = sum(1 for r in runs if not (r.get("quiet") or {}).get("quiet", True))
    meta["loadavg_end"] = os.getloadavg()
    env = meta["environment"]
    header = (
        f"Cluster run {stamp} ({meta['total_s']} s): {opts.reps} reps; server nodes on core "
        f"{SERVER_CORE}, redis-server {env['redis-server']} on core {opts.redis_core}, load "
        f"generator on core {LOADGEN_CORE}; socket.io {env['socket.io']} + "
        f"@socket.io/redis-adapter {env['@socket.io/redis-adapter']} + redis {env['redis']}, "
        f"siogate {env['siogate'].split()[-1]} @ {env['git']}; "
        f"{busy_starts} of {len(runs)} runs started without a quiet machine; load "
        f"average {meta['loadavg_start'][0]:.2f} at the start, "
        f"{meta['loadavg_end'][0]:.2f} at the end.\n"
    )
    text = (
        header
        + "\nGoals (medians over reps):\n\n"
        + goals
        + "\n\n"
        + table
        + "\n\n2 nodes / 1 node (medians):\n\n"
        + scaling
        + "\n"
    )
    raw_path.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    (out_dir / "table.md").write_text(text)
    print(text)
    print(f"raw results: {raw_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
