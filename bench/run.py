"""Benchmark siogate against the Node socket.io reference, following BENCH-METHOD.md.

    .venv/bin/python bench/run.py                    # full run (~20 min)
    .venv/bin/python bench/run.py --quick            # N/10, 1 rep: a smoke test
    .venv/bin/python bench/run.py --servers node --scenarios fanout --sizes 1000

For every (rep, case, server) it starts a fresh server pinned to core 0 and the load
generator (bench/loadgen.py) pinned to core 1, waits until both cores are quiet,
samples per-core busy time and the CPU of both process trees during the run
("foreign" CPU = a core's busy time minus ours), and reruns a run once when foreign CPU
was over the limit. Servers alternate inside each rep (A B A B ...). The result is a
markdown table of medians and siogate/node ratios on stdout, plus raw JSON (and the
table) under bench/results/<timestamp>/, with each server's log.
Stdlib only, so any Python 3.11 runs it; the load generator wants the venv (uvloop).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
SIOGATE = ROOT / ".venv" / "bin" / "siogate"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE = 0
LOADGEN_CORE = 1
NOFILE = 20000


# --- Servers ------------------------------------------------------------------------------


@dataclass
class ServerSpec:
    name: str
    argv: list[str]  # {port}, {api_key}, {jwt_secret} are filled in per run
    env: dict[str, str] = field(default_factory=dict)


SERVERS = {
    "node": ServerSpec(
        "node",
        ["node", str(BENCH / "node-ref" / "server.js"), "--port", "{port}"],
        {"API_KEY": "{api_key}", "JWT_SECRET": "{jwt_secret}"},
    ),
    "siogate": ServerSpec(
        "siogate",
        [
            str(SIOGATE),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--api-key",
            "{api_key}",
            "--jwt-secret",
            "{jwt_secret}",
            "--log-level",
            "warning",
            # Every load-generator client comes from 127.0.0.1, and the fan-out opens
            # 10,000 of them plus publishers: lift the per-address and total caps
            # (defaults 1,000 and 10,000), which Node does not have either.
            "--max-connections-per-ip",
            "0",
            "--max-connections",
            "30000",
        ],
    ),
    # siogate with connection state recovery on (bench/recovery_cost.py explains).
    "siogate-recovery": ServerSpec("siogate-recovery", []),
    # Not a contender: the cheapest possible sender, to measure the load generator.
    "floor": ServerSpec("floor", ["node", str(BENCH / "floor_server.js"), "--port", "{port}"]),
}


def set_recovery_window(seconds: float) -> None:
    """The ``--recovery-window`` of ``siogate-recovery`` (how long the offset log keeps
    each message: the log's memory grows for that long, then stays level)."""
    SERVERS["siogate-recovery"].argv = [
        *SERVERS["siogate"].argv,
        "--recovery-window",
        f"{seconds:g}",
    ]


set_recovery_window(120)


def set_base_src(src: str) -> None:
    """``siogate-base``: siogate from another checkout's ``src`` (say, a worktree of an
    earlier commit), run with this checkout's interpreter and packages, to compare two
    trees in one run."""
    SERVERS["siogate-base"] = ServerSpec(
        "siogate-base",
        [str(VENV_PY), "-m", "siogate", *SERVERS["siogate"].argv[1:]],
        {"PYTHONPATH": str(Path(src).resolve())},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


# --- CPU accounting from /proc --------------------------------------------------------------


def core_times() -> dict[int, tuple[int, int]]:
    """core -> (busy ticks, total ticks). Busy excludes idle and iowait; includes softirq."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                values = [int(v) for v in parts[1:]]
                idle = values[3] + values[4]
                total = sum(values[:8])  # user..steal; guest is already inside user
                out[int(parts[0][3:])] = (total - idle, total)
    return out


def tree_pids(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo and len(pids) < 1000:
        p = todo.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(x) for x in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return pids


def tree_ticks(*roots: int) -> int:
    total = 0
    for p in (p for root in roots for p in tree_pids(root)):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime (all threads)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


class CpuSampler(threading.Thread):
    """Samples both cores and both sides' process trees every `interval` seconds.

    The server side is every process on the server core: one server, or the nodes of a
    cluster and their Redis. ``side_pids``: our processes on the load generator's core
    besides it (a redis-server placed there with ``--redis-core``), not foreign there.
    """

    def __init__(
        self, server_pids: list[int], interval: float = 0.5, side_pids: list[int] | None = None
    ) -> None:
        super().__init__(daemon=True)
        self.server_pids = server_pids
        self.side_pids = side_pids or []
        self.loadgen_pid: int | None = None
        self.interval = interval
        self.stop_event = threading.Event()
        self.samples: list[dict[str, float]] = []
        # Per-process ticks are cumulative: remember the last reading per pid so a
        # process that exits between samples does not make the delta negative.
        self._last: dict[str, int] = {}

    def _proc_delta(self, key: str, pids: list[int]) -> int:
        if not pids:
            return 0
        now = tree_ticks(*pids)
        prev = self._last.get(key, now)
        self._last[key] = max(now, prev)
        return max(0, now - prev)

    def run(self) -> None:
        prev = core_times()
        self._proc_delta("server", self.server_pids)
        t_prev = time.monotonic()
        deadline = t_prev + 3600  # bounded even if never stopped
        while not self.stop_event.wait(self.interval) and time.monotonic() < deadline:
            cur = core_times()
            t_now = time.monotonic()
            if self.loadgen_pid is not None and "loadgen" not in self._last:
                self._proc_delta("loadgen", [self.loadgen_pid])  # baseline
            sample: dict[str, float] = {"t": round(t_now, 3), "dt": round(t_now - t_prev, 3)}
            for core in (SERVER_CORE, LOADGEN_CORE):
                busy = cur[core][0] - prev[core][0]
                total = max(1, cur[core][1] - prev[core][1])
                sample[f"core{core}_busy_pct"] = round(100 * busy / total, 1)
                sample[f"core{core}_total_ticks"] = total
            elapsed_ticks = (t_now - t_prev) * CLK_TCK
            sample["server_pct"] = round(
                100 * self._proc_delta("server", self.server_pids) / elapsed_ticks, 1
            )
            sample["loadgen_pct"] = round(
                100
                * self._proc_delta("loadgen", [self.loadgen_pid] if self.loadgen_pid else [])
                / elapsed_ticks,
                1,
            )
            sample["side_pct"] = round(
                100 * self._proc_delta("side", self.side_pids) / elapsed_ticks, 1
            )
            self.samples.append(sample)
            prev, t_prev = cur, t_now

    def summary(self, window: list[float] | None = None) -> dict[str, Any]:
        """Means over all samples, or over those whose middle falls inside `window`."""
        s = self.samples
        if window is not None:
            s = [x for x in s if window[0] <= x["t"] - x["dt"] / 2 <= window[1]]
        if not s:
            return {}

        def mean(key: str) -> float:
            weight = sum(x["dt"] for x in s)
            return round(sum(x[key] * x["dt"] for x in s) / weight, 1)

        core0, core1 = mean(f"core{SERVER_CORE}_busy_pct"), mean(f"core{LOADGEN_CORE}_busy_pct")
        server, loadgen = mean("server_pct"), mean("loadgen_pct")
        side = mean("side_pct")
        # Foreign CPU: what ran on a core besides our process pinned there. Loopback
        # softirq work is charged to the core, not always to a process, so a little
        # "foreign" CPU under heavy traffic is ours; the threshold leaves room for it.
        foreign0 = max(0.0, core0 - server)
        foreign1 = max(0.0, core1 - loadgen - side)
        return {
            "server_core_busy_pct": core0,
            "loadgen_core_busy_pct": core1,
            "server_cpu_pct": server,
            "loadgen_cpu_pct": loadgen,
            "loadgen_core_busy_max_pct": max(x[f"core{LOADGEN_CORE}_busy_pct"] for x in s),
            "server_core_busy_max_pct": max(x[f"core{SERVER_CORE}_busy_pct"] for x in s),
            "foreign_server_core_pct": round(foreign0, 1),
            "foreign_loadgen_core_pct": round(foreign1, 1),
            "foreign_pct": round(max(foreign0, foreign1), 1),
        }


def wait_quiet(limit_pct: float, timeout: float) -> dict[str, Any]:
    """Wait (bounded) until both cores are under limit_pct busy over one second."""
    t0 = time.monotonic()
    last: dict[int, float] = {}
    while True:
        a = core_times()
        time.sleep(1.0)
        b = core_times()
        last = {c: 100 * (b[c][0] - a[c][0]) / max(1, b[c][1] - a[c][1]) for c in b}
        if all(v < limit_pct for v in last.values()):
            return {
                "quiet": True,
                "waited_s": round(time.monotonic() - t0, 1),
                "busy_pct": {str(c): round(v, 1) for c, v in last.items()},
            }
        if time.monotonic() - t0 > timeout:
            return {
                "quiet": False,
                "waited_s": round(time.monotonic() - t0, 1),
                "busy_pct": {str(c): round(v, 1) for c, v in last.items()},
            }


# --- One run -------------------------------------------------------------------------------


@dataclass
class Case:
    scenario: str  # fanout | throughput | connect
    clients: int

    @property
    def key(self) -> str:
        return f"{self.scenario}-{self.clients}"


def loadgen_argv(
    case: Case, port: int, api_key: str, jwt_secret: str, pid: int, opts: argparse.Namespace
) -> list[str]:
    argv = [
        "taskset",
        "-c",
        str(LOADGEN_CORE),
        str(opts.python),
        str(BENCH / "loadgen.py"),
        case.scenario,
        "--port",
        str(port),
        "--api-key",
        api_key,
        "--jwt-secret",
        jwt_secret,
        "--server-pid",
        str(pid),
        "--clients",
        str(case.clients),
        "--inflight",
        str(opts.inflight),
    ]
    if case.scenario == "throughput":
        argv += ["--step", str(opts.step)]
        if opts.rates:
            argv += ["--rates", opts.rates]
    if case.scenario == "fanout":
        argv += ["--isolated", str(opts.isolated), "--burst", str(opts.burst)]
    if case.scenario == "ceiling":
        argv += ["--rounds", str(opts.rounds)]
    argv += [
        "--server-core",
        str(SERVER_CORE),
        "--loadgen-core",
        str(LOADGEN_CORE),
        "--foreign-limit",
        str(opts.foreign_limit),
    ]
    return argv


def tail(path: Path, lines: int = 15) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return []


def start_server(
    server: str,
    fill: dict[str, str],
    log_path: Path,
    extra_argv: list[str] | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `server` pinned to the server core; `fill` has port, api_key, jwt_secret."""
    spec = SERVERS[server]
    argv = ["taskset", "-c", str(SERVER_CORE)] + [a.format(**fill) for a in spec.argv]
    env = dict(os.environ)
    env.update({k: v.format(**fill) for k, v in spec.env.items()})
    env.update(extra_env or {})
    with open(log_path, "wb") as log_file:
        return subprocess.Popen(
            argv + (extra_argv or []),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=raise_nofile,
            cwd=ROOT,
        )


def wait_healthy(
    proc: subprocess.Popen[bytes], port: int, timeout: float, log_path: Path
) -> str | None:
    """None once GET /healthz answers 200; else what went wrong."""
    deadline = time.monotonic() + timeout
    while not healthy(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            return f"server did not become healthy (exit {proc.poll()}): {tail(log_path)}"
        time.sleep(0.1)
    return None


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process we started, then SIGKILL after 5 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_loadgen(
    record: dict[str, Any], lg_argv: list[str], sampler: CpuSampler, lg_err: Path, timeout: float
) -> None:
    """Run the load generator under `sampler`; put its result and the CPU into `record`."""
    sampler.start()
    t0 = time.monotonic()
    with open(lg_err, "wb") as err:
        lg = subprocess.Popen(
            lg_argv, stdout=subprocess.PIPE, stderr=err, preexec_fn=raise_nofile, cwd=ROOT
        )
        sampler.loadgen_pid = lg.pid
        try:
            out, _ = lg.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            lg.kill()
            out, _ = lg.communicate(timeout=10)
            record["problems"].append(f"load generator timed out after {timeout}s")
    sampler.stop_event.set()
    sampler.join(5)
    record["wall_s"] = round(time.monotonic() - t0, 1)
    record["cpu"] = sampler.summary()
    record["cpu_samples"] = sampler.samples
    try:
        record["result"] = json.loads(out.decode().strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        record["problems"].append(
            f"load generator gave no result (exit {lg.returncode}): {tail(lg_err)}"
        )
    else:
        # The load generator stamps its phases on the same monotonic clock.
        for phase, window in (record["result"].get("phases") or {}).items():
            if len(window) == 2:
                record[f"cpu_{phase}"] = sampler.summary(window)


def log_errors(paths: list[Path]) -> list[str]:
    """Lines of the servers' logs that look like errors (at most 20)."""
    errors = [
        line
        for path in paths
        for line in tail(path, 400)
        if any(w in line for w in ("Traceback", "ERROR", "Error", "Exception"))
    ]
    return errors[:20]


def run_once(
    server: str, case: Case, rep: int, opts: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    port = free_port()  # a fresh port per run keeps TIME_WAIT sockets of earlier runs apart
    api_key = secrets.token_hex(16)
    jwt_secret = secrets.token_hex(24)  # 48 bytes: no short-secret penalty anywhere
    fill = {"port": str(port), "api_key": api_key, "jwt_secret": jwt_secret}
    record: dict[str, Any] = {
        "server": server,
        "case": case.key,
        "scenario": case.scenario,
        "clients": case.clients,
        "rep": rep,
        "port": port,
        "problems": [],
    }
    record["quiet"] = wait_quiet(opts.quiet_pct, opts.quiet_timeout)
    log_path = logs / f"{server}-{case.key}-rep{rep}-{port}.log"
    record["server_log"] = str(log_path)
    proc = start_server(server, fill, log_path)
    try:
        problem = wait_healthy(proc, port, opts.start_timeout, log_path)
        if problem:
            record["problems"].append(problem)
            return record
        time.sleep(0.3)
        lg_argv = loadgen_argv(case, port, api_key, jwt_secret, proc.pid, opts)
        lg_err = logs / f"loadgen-{server}-{case.key}-rep{rep}-{port}.log"
        run_loadgen(record, lg_argv, CpuSampler([proc.pid]), lg_err, opts.run_timeout)
        if proc.poll() is not None:
            record["problems"].append(
                f"server exited during the run with code {proc.returncode}: {tail(log_path)}"
            )
    finally:
        stop_process(proc)
    record["problems"] += result_problems(record.get("result"))
    errors = log_errors([log_path])
    if errors:
        record["server_log_errors"] = errors
    return record


def result_problems(r: dict[str, Any] | None) -> list[str]:
    if not r:
        return []
    out = []
    c = r.get("connect", {})
    if c.get("connected") != c.get("clients"):
        out.append(
            f"connected {c.get('connected')}/{c.get('clients')}, failed {c.get('failed')}"
            f" {c.get('failures')}, unfinished {c.get('unfinished')}"
            f" {c.get('unfinished_states')}"
        )
    for key in ("missing", "duplicates", "dropped", "stray"):
        if r.get(key):
            out.append(
                f"{key}: {r[key]}" + (f" {r.get('drop_reasons')}" if key == "dropped" else "")
            )
    pub = r.get("publisher", {})
    if pub.get("errors"):
        out.append(f"publish errors: {pub['errors']}")
    return out


# --- Summary -------------------------------------------------------------------------------


def metric_rows(scenario: str) -> list[tuple[str, str, str]]:
    """(label, dotted path into the load generator result or 'cpu.*', better)."""
    if scenario == "fanout":
        return [
            ("isolated publish -> first client, ms", "isolated_first_ms", "lower"),
            ("isolated publish -> last client, ms", "isolated_last_ms", "lower"),
            ("isolated: last client on node A, ms", "isolated_last_by_node_ms.A", "lower"),
            ("isolated: last client on node B, ms", "isolated_last_by_node_ms.B", "lower"),
            ("20 x 200 ms: last client p50, ms", "burst.last_p50_ms", "lower"),
            ("20 x 200 ms: last client p99, ms", "burst.last_p99_ms", "lower"),
            ("missing deliveries (sum of reps)", "missing", "sum"),
            ("duplicate deliveries (sum of reps)", "duplicates", "sum"),
            ("server core busy % (measure phase)", "cpu_measure.server_core_busy_pct", "info"),
            ("load generator busy %, POST -> last client", "isolated_loadgen_busy_pct", "info"),
        ]
    if scenario == "throughput":
        return [
            ("peak delivered msgs/s (any step)", "peak_msgs_s", "higher"),
            ("p99 at the peak step, ms", "peak_step_p99_ms", "lower"),
            ("highest step kept up with, msgs/s", "sustained_msgs_s", "higher"),
            ("p99 at that step, ms", "sustained_p99_ms", "lower"),
            ("saturated at target msgs/s", "saturated_at_target", "info"),
            ("missing deliveries (sum of reps)", "missing", "sum"),
            ("load generator CPU % at the peak step", "peak_loadgen_cpu_pct", "info"),
        ]
    if scenario == "ceiling":
        return [
            ("messages/s received from the floor", "msgs_per_s", "info"),
            ("load generator busy %", "loadgen_busy_pct", "info"),
            ("load generator CPU per message, us", "cpu_us_per_msg", "info"),
            ("ceiling = 1 / CPU per message, msgs/s", "ceiling_msgs_per_s", "info"),
            ("missing deliveries (sum of reps)", "missing", "sum"),
        ]
    if scenario == "hop":
        return [
            ("same node: POST -> receive p50, ms", "same_p50_ms", "lower"),
            ("same node: POST -> receive p99, ms", "same_p99_ms", "lower"),
            ("other node: POST -> receive p50, ms", "other_p50_ms", "lower"),
            ("other node: POST -> receive p99, ms", "other_p99_ms", "lower"),
            ("hop: other - same node p50, ms", "hop_p50_ms", "lower"),
            ("hop: per publish, other - same node, p50, ms", "hop_paired_p50_ms", "lower"),
            ("missing deliveries (sum of reps)", "missing", "sum"),
            ("duplicate deliveries (sum of reps)", "duplicates", "sum"),
            ("server core busy % (measure phase)", "cpu_measure.server_core_busy_pct", "info"),
        ]
    return [
        ("connects/s (500 in flight, JWT verified)", "connect.rate_per_s", "higher"),
        ("failed handshakes (sum of reps)", "connect.failed", "sum"),
        ("RSS with 0 clients, MiB", "rss_0_clients_mib", "lower"),
        ("RSS 3 s after the last CONNECT ack, MiB", "rss_loaded_mib", "lower"),
        ("KiB per idle connection", "kib_per_conn", "lower"),
    ]


def lookup(run: dict[str, Any], path: str) -> Any:
    r = run.get("result") or {}
    if path == "peak_loadgen_cpu_pct":
        steps = r.get("steps") or []
        if not steps:
            return None
        return max(steps, key=lambda s: s["achieved_msgs_s"]).get("loadgen_cpu_pct")
    if path in ("rss_0_clients_mib", "rss_loaded_mib"):
        kib = r.get(path.replace("_mib", "_kib"))
        return None if kib is None else round(kib / 1024, 1)
    node: Any = run if path.split(".")[0] in ("cpu", "cpu_measure", "cpu_connect") else r
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# (case or scenario, metric) -> (goal text, test, what it tests: the ratio siogate/node,
# or siogate's own median).
Goal = tuple[str, Callable[[float], bool], str]
GOALS: dict[tuple[str, str], Goal] = {
    ("fanout-10000", "isolated_last_ms"): ("<= 0.5x", lambda r: r <= 0.5, "ratio"),
    ("throughput", "peak_msgs_s"): (">= 1x", lambda r: r >= 1.0, "ratio"),
    ("connect", "connect.rate_per_s"): (">= 1x", lambda r: r >= 1.0, "ratio"),
    ("connect", "kib_per_conn"): ("<= 8 KiB", lambda v: v <= 8, "value"),
}
# This tree against an earlier one (--base-src): within 10% (issue 13's "not to lose").
BASE_GOALS: dict[tuple[str, str], Goal] = {
    ("fanout", "isolated_last_ms"): ("<= 1.1x", lambda r: r <= 1.1, "ratio"),
    ("throughput", "peak_msgs_s"): (">= 0.9x", lambda r: r >= 0.9, "ratio"),
}
# Recovery on against off (issue #10): on may cost at most 15%.
RECOVERY_GOALS: dict[tuple[str, str], Goal] = {
    ("fanout", "isolated_last_ms"): ("<= 1.15x", lambda r: r <= 1.15, "ratio"),
    ("throughput", "peak_msgs_s"): (">= 0.87x", lambda r: r >= 1 / 1.15, "ratio"),
}


def compared_pair(servers: list[str]) -> tuple[str, str] | None:
    """The two servers whose medians get a ratio column: siogate against the Node
    reference, or, without Node in the run, siogate against an earlier tree, or siogate
    with recovery on against off."""
    pairs = (("siogate", "node"), ("siogate", "siogate-base"), ("siogate-recovery", "siogate"))
    for contender, base in pairs:
        if contender in servers and base in servers:
            return contender, base
    return None


def summarize(
    runs: list[dict[str, Any]], servers: list[str], goals: dict[tuple[str, str], Goal] = GOALS
) -> tuple[str, dict[str, Any]]:
    cases: list[str] = []
    for run in runs:
        if run["case"] not in cases:
            cases.append(run["case"])
    lines = []
    summary: dict[str, Any] = {}
    pair = compared_pair(servers)
    contender, base = pair or ("siogate", "node")
    show_ratio = pair is not None
    if pair == ("siogate-recovery", "siogate") and goals is GOALS:
        goals = RECOVERY_GOALS
    if pair == ("siogate", "siogate-base") and goals is GOALS:
        goals = BASE_GOALS
    head = ["case", "metric"] + [f"{s} (median [min-max])" for s in servers]
    if show_ratio:
        head += [f"{contender}/{base}", "goal"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for case in cases:
        scenario = case.split("-")[0]
        case_runs = [r for r in runs if r["case"] == case and not r.get("superseded")]
        summary[case] = {}
        for label, path, better in metric_rows(scenario):
            row = [case, label]
            medians: dict[str, Any] = {}
            for server in servers:
                values = [lookup(r, path) for r in case_runs if r["server"] == server]
                values = [v for v in values if isinstance(v, int | float)]
                if not values:
                    row.append("n/a")
                    medians[server] = None
                    continue
                if better == "sum":
                    total = sum(values)
                    medians[server] = total
                    row.append(fmt(total))
                    continue
                med = statistics.median(values)
                medians[server] = med
                cell = fmt(med)
                if len(values) > 1:
                    cell += f" [{fmt(min(values))}-{fmt(max(values))}]"
                row.append(cell)
            ratio = None
            if (
                show_ratio
                and medians.get(base)
                and medians.get(contender) is not None
                and better in ("lower", "higher")
            ):
                ratio = medians[contender] / medians[base]
            goal = goals.get((case, path)) or goals.get((scenario, path))
            if show_ratio:
                row.append("n/a" if ratio is None else f"{ratio:.2f}x")
                tested = None
                if goal is not None:
                    tested = ratio if goal[2] == "ratio" else medians.get(contender)
                if goal is not None and tested is not None:
                    row.append(f"{goal[0]}: {'met' if goal[1](tested) else 'NOT met'}")
                else:
                    row.append("")
            summary[case][label] = {"medians": medians, "ratio": ratio}
            if any(m is not None for m in medians.values()):
                # A metric this case does not have (a second node, say) gets no row.
                lines.append("| " + " | ".join(row) + " |")
    # Runs that went wrong, and noise.
    notes = []
    for run in runs:
        tag = f"{run['server']} {run['case']} rep {run['rep']}"
        if run.get("superseded"):
            notes.append(f"- {tag}: rerun (foreign CPU {run['cpu'].get('foreign_pct')}%)")
        for problem in run.get("problems", []):
            notes.append(f"- {tag}: {problem}")
        if run.get("superseded"):
            continue
        r = run.get("result") or {}
        if run["scenario"] == "fanout":
            busy = r.get("isolated_loadgen_busy_pct")
            where = "between POST and last delivery (isolated)"
        elif run["scenario"] == "throughput":
            busy = lookup(run, "peak_loadgen_cpu_pct")
            where = "at the peak step"
        elif run["scenario"] == "ceiling":
            busy = None
        else:
            busy = (run.get("cpu_connect") or {}).get("loadgen_core_busy_pct")
            where = "while connecting"
        discarded = len(r.get("discarded_isolated") or []) + (r.get("discarded_steps") or 0)
        if discarded:
            notes.append(
                f"- {tag}: {discarded} isolated publish(es)/step(s) repeated because of foreign CPU"
            )
        if busy is not None and busy > 80:
            notes.append(
                f"- {tag}: load generator {busy}% busy {where}: "
                "the number is a lower bound for the server"
            )
    if notes:
        lines += ["", "Notes:"] + notes
    # Throughput steps, per server: p99 and achieved rate of each step, median over reps.
    tp = [
        r
        for r in runs
        if r["scenario"] == "throughput" and not r.get("superseded") and r.get("result")
    ]
    if tp:
        lines += ["", "Throughput steps (median over reps: achieved msgs/s / p99 ms):", ""]
        targets = sorted({s["target_msgs_s"] for r in tp for s in r["result"]["steps"]})
        lines.append("| target msgs/s | " + " | ".join(servers) + " |")
        lines.append("|---|" + "---|" * len(servers))
        for t in targets:
            row = [f"{t:,}"]
            for server in servers:
                steps = [
                    s
                    for r in tp
                    if r["server"] == server
                    for s in r["result"]["steps"]
                    if s["target_msgs_s"] == t and not s.get("discarded")
                ]
                if not steps:
                    row.append("-")
                    continue
                ach = statistics.median(s["achieved_msgs_s"] for s in steps)
                p99 = statistics.median(s["p99_ms"] for s in steps if s["p99_ms"] is not None)
                row.append(f"{ach:,.0f} / {p99:,.1f} ({len(steps)} reps)")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines), summary


def headline(scenario: str, r: dict[str, Any]) -> str:
    if scenario == "fanout":
        burst = r.get("burst") or {}
        return (
            f"last {r.get('isolated_last_ms')} ms, burst p50/p99 "
            f"{burst.get('last_p50_ms')}/{burst.get('last_p99_ms')} ms"
        )
    if scenario == "throughput":
        return f"peak {r.get('peak_msgs_s')} msgs/s, kept up to {r.get('sustained_msgs_s')} msgs/s"
    if scenario == "connect":
        return f"{(r.get('connect') or {}).get('rate_per_s')}/s, {r.get('kib_per_conn')} KiB/conn"
    return (
        f"{r.get('msgs_per_s')} msgs/s at {r.get('loadgen_busy_pct')}% busy, "
        f"{r.get('cpu_us_per_msg')} us/msg"
    )


# --- Main ----------------------------------------------------------------------------------


def build_cases(opts: argparse.Namespace) -> list[Case]:
    def scaled(n: int, multiple: int = 1) -> int:
        return max(multiple, int(round(n * opts.scale / multiple)) * multiple)

    cases = []
    for scenario in opts.scenarios:
        if scenario == "fanout":
            cases += [Case("fanout", scaled(n)) for n in opts.sizes]
        elif scenario == "throughput":
            cases.append(Case("throughput", scaled(opts.throughput_clients, 10)))
        elif scenario == "connect":
            cases.append(Case("connect", scaled(opts.connect_clients)))
        elif scenario == "ceiling":
            cases += [Case("ceiling", scaled(n)) for n in opts.sizes]
    return cases


def environment() -> dict[str, Any]:
    def cmd(argv: list[str]) -> str:
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=10, cwd=ROOT
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "n/a"

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": next(
            (
                line.split(":", 1)[1].strip()
                for line in open("/proc/cpuinfo")
                if line.startswith("model name")
            ),
            "n/a",
        ),
        "node": cmd(["node", "--version"]),
        "python": cmd([str(VENV_PY), "--version"]),
        "socket.io": cmd(
            [
                "node",
                "-p",
                "require('./bench/node-ref/node_modules/socket.io/package.json').version",
            ]
        ),
        "siogate": cmd([str(SIOGATE), "--version"]),
        "git": cmd(["git", "rev-parse", "--short", "HEAD"]),
    }


def add_run_options(ap: argparse.ArgumentParser) -> None:
    """Options of every runner here: repetitions, quiet machine, time bounds, output."""
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--recovery-window",
        type=float,
        default=120.0,
        help="seconds, for siogate-recovery (default 120, the documented recommendation)",
    )
    ap.add_argument("--inflight", type=int, default=500, help="handshakes in flight")
    ap.add_argument("--isolated", type=int, default=3, help="isolated publishes per run")
    ap.add_argument("--burst", type=int, default=20, help="publishes 200 ms apart")
    ap.add_argument(
        "--quiet-pct",
        type=float,
        default=15.0,
        help="a core is quiet under this busy %% (before each run)",
    )
    ap.add_argument("--quiet-timeout", type=float, default=30.0)
    ap.add_argument(
        "--foreign-limit",
        type=float,
        default=20.0,
        help="rerun a run once when foreign CPU on a core was over this %%",
    )
    ap.add_argument("--start-timeout", type=float, default=30.0)
    ap.add_argument("--run-timeout", type=float, default=300.0)
    ap.add_argument("--python", default=str(VENV_PY), help="interpreter for the load generator")
    ap.add_argument("--out", default=str(BENCH / "results"))


def run_rerunning(
    once: Callable[[], dict[str, Any]], foreign_limit: float, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    """once(), and once more if it had too much foreign CPU; both records go to `runs`."""
    record = once()
    foreign = (record.get("cpu") or {}).get("foreign_pct", 0)
    if foreign > foreign_limit:
        print(f"  foreign CPU {foreign}%: rerunning once", file=sys.stderr)
        record["superseded"] = True
        runs.append(record)
        record = once()
        record["rerun"] = True
    runs.append(record)
    return record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--servers",
        default="node,siogate",
        help="comma list of node, siogate, siogate-recovery, siogate-base (with "
        "--base-src), floor (order = order inside a rep)",
    )
    ap.add_argument(
        "--base-src",
        default=None,
        help="another checkout's src directory, served as siogate-base (compare two trees)",
    )
    ap.add_argument(
        "--scenarios",
        default="fanout,throughput,connect",
        help="comma list of fanout, throughput, connect (connect = idle memory "
        "too), ceiling (floor server only: the load generator's own limit)",
    )
    ap.add_argument("--sizes", default="1000,5000,10000", help="fan-out client counts")
    ap.add_argument("--throughput-clients", type=int, default=1000)
    ap.add_argument("--connect-clients", type=int, default=10000)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every client count")
    ap.add_argument("--quick", action="store_true", help="--scale 0.1 --reps 1 --step 2")
    ap.add_argument("--step", type=float, default=5.0, help="throughput step, seconds")
    ap.add_argument("--rates", default=None, help="throughput targets, msgs/s, comma list")
    ap.add_argument(
        "--rounds",
        type=int,
        default=20,
        help="ceiling: back-to-back broadcasts the floor server writes",
    )
    add_run_options(ap)
    ap.add_argument(
        "--findings", default=None, help="append problems seen in runs to this markdown file"
    )
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.scale, opts.reps, opts.step = 0.1, 1, 2.0
    opts.servers = [s for s in opts.servers.split(",") if s]
    opts.scenarios = [s for s in opts.scenarios.split(",") if s]
    opts.sizes = [int(x) for x in opts.sizes.split(",") if x]
    if opts.base_src is not None:
        set_base_src(opts.base_src)
    for s in opts.servers:
        if s not in SERVERS:
            ap.error(f"unknown server {s}")
    set_recovery_window(opts.recovery_window)
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(opts.out) / stamp
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cases = build_cases(opts)
    meta = {
        "argv": sys.argv,
        "options": {k: v for k, v in vars(opts).items()},
        "environment": environment(),
        "cases": [c.key for c in cases],
    }
    print(
        f"# bench run {stamp}: servers {opts.servers}, {opts.reps} reps, cases {meta['cases']}",
        file=sys.stderr,
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    raw_path = out_dir / "raw.json"

    def save() -> None:
        raw_path.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))

    t_start = time.monotonic()
    for rep in range(1, opts.reps + 1):
        for case in cases:
            for server in opts.servers:
                record = run_rerunning(
                    partial(run_once, server, case, rep, opts, logs), opts.foreign_limit, runs
                )
                save()
                line = headline(case.scenario, record.get("result") or {})
                cpu = record.get("cpu") or {}
                print(
                    f"[{time.monotonic() - t_start:6.0f}s] rep {rep} {case.key:<16} "
                    f"{server:<8} {line}; cores {cpu.get('server_core_busy_pct')}%/"
                    f"{cpu.get('loadgen_core_busy_pct')}% foreign {cpu.get('foreign_pct')}%"
                    + (f"; PROBLEMS: {record['problems']}" if record["problems"] else ""),
                    file=sys.stderr,
                    flush=True,
                )
                if opts.findings and record["problems"]:
                    with open(opts.findings, "a") as f:
                        f.write(
                            f"\n- {time.strftime('%H:%M:%S')} {server} {case.key} rep {rep} "
                            f"(log {record['server_log']}):\n"
                        )
                        for p in record["problems"]:
                            f.write(f"  - {p}\n")
                        for line in record.get("server_log_errors", [])[:10]:
                            f.write(f"    `{line}`\n")
    table, summary = summarize(runs, opts.servers)
    meta["total_s"] = round(time.monotonic() - t_start)
    raw_path.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    header = (
        f"Run {stamp} ({meta['total_s']} s): {opts.reps} reps, servers pinned to core "
        f"{SERVER_CORE}, load generator to core {LOADGEN_CORE}; "
        f"{meta['environment']['socket.io']} socket.io, siogate "
        f"{meta['environment']['siogate']} @ {meta['environment']['git']}.\n"
    )
    (out_dir / "table.md").write_text(header + "\n" + table + "\n")
    print(header)
    print(table)
    print(f"\nraw results: {raw_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
