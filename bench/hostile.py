"""Hostile-input benchmark: each attack against a fresh server, siogate and the Node
socket.io reference side by side, while a canary client measures how the server serves
everyone else.

    .venv/bin/python bench/hostile.py                 # every attack, full size (~7 min)
    .venv/bin/python bench/hostile.py --quick         # small sizes, short phases (~2 min)
    .venv/bin/python bench/hostile.py --attacks frag,pingflood --servers siogate
    .venv/bin/python bench/hostile.py --siogate-src /path/to/checkout/src

Per (attack, server) run: start the server pinned to core 0 (fresh port, fresh secrets),
start the canary on core 1 (a Socket.IO client over a raw WebSocket in room "canary";
every 20 ms it POSTs /v1/emit to that room and times the round trip to the frame's
arrival), sample the server's RSS, fds and CPU from /proc every 100 ms, wait 1 s, run
the attack (bench/hostile_attacks.py, niced, on core 1; bounded in bytes and time),
then let 1 s pass (for churn: until the fds are back, bounded) and stop everything.

Reported per run: loop stall (the longest time the canary went without a completed
round trip, minus its 20 ms period; a round trip still pending at the end counts with
its age), canary round trip p50/p99/max, RSS growth (max during the attack and cooldown
minus the idle baseline), fds (baseline -> peak -> end), server CPU, and the attack's
own outcome. A markdown table goes to stdout, the raw JSON and server logs to
bench/results/hostile-<timestamp>/ (gitignored).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hostile_net import Poster, cpu_seconds, fd_count, mono, open_sio, rss_bytes
from loadgen import TokenMinter, percentile
from run import free_port, healthy, stop_process, tail, wait_quiet

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SERVER_CORE, CLIENT_CORE = 0, 1
MIB = 1024 * 1024
CANARY_PERIOD = 0.020
ROUND_TRIP_LIMIT = 30.0  # s; a canary POST or delivery slower than this counts as failed
LOST, PENDING = -2, -1

# Goals of issue #9.
GOAL_STALL_MS = 50.0
GOAL_RSS_MIB = 64.0
GOAL_P99_MS = 100.0

BOTH = [
    "frag",
    "pipeline",
    "pingflood",
    "bighead",
    "malformed",
    "slowloris",
    "connflood",
    "attachments",
    "stalled",
    "churn",
]
SIOGATE_ONLY = ["api"]
TITLES = {
    "frag": "1. fragmented message (40,000 one-byte frames)",
    "pipeline": "2. pipelined HTTP requests, never read",
    "pingflood": "3. ping flood, pongs never read",
    "bighead": "4. huge request head",
    "malformed": "5. malformed parser inputs",
    "slowloris": "6a. slowloris (byte-a-second heads)",
    "connflood": "6b. connection count flood",
    "attachments": "7. binary attachments before auth",
    "stalled": "8. stalled consumers",
    "churn": "9. churn: connect/abort cycles",
    "api": "10. HTTP API bodies (siogate only)",
}


def default_python() -> Path:
    candidate = ROOT / ".venv" / "bin" / "python"
    return candidate if candidate.exists() else Path(sys.executable)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- The canary (a subprocess: its own event loop, its own core time) -------------------------


async def canary_main(port: int, api_key: str, jwt_secret: str) -> None:
    token = TokenMinter(jwt_secret).mint("canary", ["canary"])
    waiting: dict[int, asyncio.Future[float]] = {}

    def on_event(payload: bytes) -> None:
        i = payload.find(b"C:")
        if i >= 0:
            j = payload.find(b":", i + 2)
            fut = waiting.pop(int(payload[i + 2 : j]), None)
            if fut is not None and not fut.done():
                fut.set_result(mono())

    client = await open_sio(port, token, on_event)
    poster = Poster(port, api_key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # (sent, round trip or age s, code): code 200 = delivered; else the HTTP status of a
    # failed POST (0: no response), LOST (POST answered, event never came), PENDING.
    samples: list[tuple[float, float, int]] = []

    async def round_trip(seq: int, fut: asyncio.Future[float]) -> tuple[int, float]:
        status = await poster.post(
            {"event": "c", "data": f"C:{seq}:", "rooms": ["canary"]}, timeout=ROUND_TRIP_LIMIT
        )
        if status != 200:
            return status, mono()
        try:
            return 200, await asyncio.wait_for(fut, ROUND_TRIP_LIMIT)
        except TimeoutError:
            return LOST, mono()

    print("ready", flush=True)
    seq = 0
    next_tick = mono()
    stopper = asyncio.ensure_future(stop.wait())
    while not stop.is_set():
        seq += 1
        fut: asyncio.Future[float] = loop.create_future()
        waiting[seq] = fut
        t_sent = mono()
        rt = asyncio.ensure_future(round_trip(seq, fut))
        await asyncio.wait({rt, stopper}, return_when="FIRST_COMPLETED")
        if rt.done():
            code, t_done = rt.result()
            samples.append((t_sent, t_done - t_sent, code))
        else:  # still pending at the stop: counts with its age
            samples.append((t_sent, mono() - t_sent, PENDING))
            rt.cancel()
        waiting.pop(seq, None)
        next_tick = max(next_tick + CANARY_PERIOD, mono())
        await asyncio.sleep(max(0.0, next_tick - mono()))
    closed = client.closed.result() if client.closed.done() else None
    print(json.dumps({"samples": samples, "closed": closed}), flush=True)


# --- Server processes ---------------------------------------------------------------------------


def server_command(
    name: str, opts: argparse.Namespace, fill: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    if name == "node":
        env.update(API_KEY=fill["api_key"], JWT_SECRET=fill["jwt_secret"])
        return ["node", str(BENCH / "node-ref" / "server.js"), "--port", fill["port"]], env
    env["PYTHONPATH"] = str(opts.siogate_src)
    argv = [
        str(opts.python), "-m", "siogate", "serve", "--host", "127.0.0.1",
        "--port", fill["port"], "--api-key", fill["api_key"], "--jwt-secret", fill["jwt_secret"],
        "--allow-anonymous", "--log-level", "warning",
    ]  # fmt: skip
    # 1,000+ loopback clients share one address: the per-IP cap (where this checkout
    # has one) would refuse them.
    if "--max-connections-per-ip" in opts.siogate_help:
        argv += ["--max-connections-per-ip", "0"]
    return argv, env


class Sampler(threading.Thread):
    """RSS, open fds and CPU seconds of the server every 100 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, int, int, float]] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        deadline = mono() + 900
        while not self.stop_event.is_set() and mono() < deadline:
            self.samples.append(
                (mono(), rss_bytes(self.pid), fd_count(self.pid), cpu_seconds(self.pid))
            )
            self.stop_event.wait(0.1)

    def window(self, t0: float, t1: float) -> list[tuple[float, int, int, float]]:
        return [s for s in self.samples if t0 <= s[0] <= t1]


def canary_stats(samples: list[list[float]], t0: float, t1: float) -> dict[str, Any]:
    """Round trips sent in [t0, t1].

    Percentiles are over every round trip, a failed or pending one with its age. The
    stall is the longest time without a delivered round trip: between t0, the
    deliveries, and the end of the last round trip if it did not deliver.
    """
    mine = [s for s in samples if t0 <= s[0] <= t1]
    if not mine:
        return {"n": 0}
    rtts = [s[1] for s in mine]
    marks = [t0] + [s[0] + s[1] for s in mine if s[2] == 200]
    if mine[-1][2] != 200:
        marks.append(mine[-1][0] + mine[-1][1])
    marks.sort()
    gap = max([b - a for a, b in zip(marks, marks[1:], strict=False)] or [0.0])
    return {
        "n": len(mine),
        "p50_ms": round(1000 * statistics.median(rtts), 2),
        "p99_ms": round(1000 * (percentile(rtts, 99) or 0), 2),
        "max_ms": round(1000 * max(rtts), 2),
        "stall_ms": round(1000 * max(0.0, gap - CANARY_PERIOD), 1),
        "failed_posts": sum(1 for s in mine if s[2] not in (200, LOST, PENDING)),
        "lost_events": sum(1 for s in mine if s[2] == LOST),
        "pending_at_end": sum(1 for s in mine if s[2] == PENDING),
    }


def run_attack(attack: str, server: str, opts: argparse.Namespace, logs: Path) -> dict[str, Any]:
    port = free_port()
    fill = {
        "port": str(port),
        "api_key": secrets.token_hex(16),
        "jwt_secret": secrets.token_hex(24),
    }
    rec: dict[str, Any] = {"attack": attack, "server": server, "port": port, "problems": []}
    rec["quiet"] = wait_quiet(opts.quiet_pct, opts.quiet_timeout)
    log_path = logs / f"{server}-{attack}-{port}.log"
    argv, env = server_command(server, opts, fill)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            ["taskset", "-c", str(SERVER_CORE), *argv],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, preexec_fn=raise_nofile, cwd=ROOT,
        )  # fmt: skip
    canary: subprocess.Popen[bytes] | None = None
    sampler = Sampler(proc.pid)
    try:
        deadline = mono() + 20
        while not healthy(port):
            if proc.poll() is not None or mono() > deadline:
                rec["problems"].append(f"server did not start: {tail(log_path)}")
                return rec
            time.sleep(0.1)
        sampler.start()
        me = [str(opts.python), str(Path(__file__).resolve())]
        canary = subprocess.Popen(
            ["taskset", "-c", str(CLIENT_CORE), *me, "_canary", "--port", str(port),
             "--api-key", fill["api_key"], "--jwt-secret", fill["jwt_secret"]],
            stdout=subprocess.PIPE, preexec_fn=raise_nofile, cwd=ROOT,
        )  # fmt: skip
        assert canary.stdout is not None
        if canary.stdout.readline().strip() != b"ready":
            rec["problems"].append("canary did not join")
            return rec
        time.sleep(1.0)  # idle baseline
        t_base = mono()
        attack_argv = [
            "nice", "-n", "10", "taskset", "-c", str(CLIENT_CORE), str(opts.python),
            str(BENCH / "hostile_attacks.py"), attack, "--port", str(port),
            "--api-key", fill["api_key"], "--jwt-secret", fill["jwt_secret"],
            "--server-pid", str(proc.pid),
        ] + (["--quick"] if opts.quick else [])  # fmt: skip
        t0 = mono()
        with open(logs / f"attack-{server}-{attack}-{port}.log", "wb") as err:
            atk = subprocess.Popen(
                attack_argv, stdout=subprocess.PIPE, stderr=err, preexec_fn=raise_nofile, cwd=ROOT
            )
            out, t_started = watch_attack(atk, sampler, rec, opts)
        t1 = mono()
        t0 = t_started or t0
        try:
            rec["result"] = json.loads(out.decode().strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            rec["problems"].append(f"attack gave no result (exit {atk.returncode})")
        rec["answers_again_after_s"] = cooldown(attack, port, sampler, t_base, opts)
        t2 = mono()
        canary.send_signal(signal.SIGTERM)
        try:
            c_out, _ = canary.communicate(timeout=10)
            c = json.loads(c_out.decode().strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError):
            canary.kill()
            c = {"samples": [], "closed": "canary gave no result"}
        if c.get("closed"):
            rec["problems"].append(f"canary connection ended: {c['closed']}")
        if proc.poll() is not None:
            rec["problems"].append(f"SERVER EXITED (code {proc.returncode}): {tail(log_path, 5)}")
        rec["canary_idle"] = canary_stats(c["samples"], t_base - 1.0, t_base)
        rec["canary"] = canary_stats(c["samples"], t0, t2)
        rec["window_s"] = [round(t0 - t_base, 2), round(t1 - t_base, 2), round(t2 - t_base, 2)]
        summarize_proc(rec, sampler, t_base, t0, t2)
    finally:
        sampler.stop_event.set()
        if canary is not None and canary.poll() is None:
            canary.kill()
            canary.wait(5)
        stop_process(proc)
    errors = [
        line for line in tail(log_path, 400)
        if any(w in line for w in ("Traceback", "ERROR", "Error", "Exception"))
    ]  # fmt: skip
    rec["server_log_lines"] = len(tail(log_path, 100000))
    if errors:
        rec["server_log_errors"] = errors[:10]
    return rec


def watch_attack(
    atk: subprocess.Popen[bytes], sampler: Sampler, rec: dict[str, Any], opts: argparse.Namespace
) -> tuple[bytes, float | None]:
    """Wait for the attack; kill it (our own child, by PID) at the RSS cap or time limit."""
    base = sampler.samples[-1][1] if sampler.samples else 0
    result: list[bytes] = []
    started: list[float] = []

    def read() -> None:
        assert atk.stdout is not None
        for line in atk.stdout:
            if line.strip() == b"start" and not started:
                started.append(mono())  # the attack's payloads are built: the window opens
            else:
                result.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = mono() + opts.attack_timeout
    while atk.poll() is None:
        rss = sampler.samples[-1][1] if sampler.samples else 0
        if rss - base > opts.rss_cap * MIB:
            rec["problems"].append(f"RSS cap: server grew over {opts.rss_cap} MiB, attack stopped")
            atk.kill()
        elif mono() > deadline:
            rec["problems"].append(f"attack ran over {opts.attack_timeout} s, stopped")
            atk.kill()
        time.sleep(0.05)
    reader.join(10)
    return b"".join(result), (started[0] if started else None)


def cooldown(
    attack: str, port: int, sampler: Sampler, t_base: float, opts: argparse.Namespace
) -> float | None:
    """Until the server answers /healthz again (bounded), then 1 s; after churn, also
    until its fds are back at the baseline (bounded). Returns when it answered again
    (s after the attack), None if it did not within --recover-wait."""
    t_end = mono()
    recovered = None
    while mono() - t_end < opts.recover_wait:
        if healthy(port):
            recovered = round(mono() - t_end, 2)
            break
        time.sleep(0.2)
    time.sleep(1.0)
    if attack == "churn":
        base = baseline(sampler, t_base)[1]
        limit = t_end + opts.fd_wait
        while mono() < limit:
            time.sleep(0.2)
            if sampler.samples and sampler.samples[-1][2] <= base + 2:
                break
    return recovered


def baseline(sampler: Sampler, t_base: float) -> tuple[int, int, float]:
    idle = sampler.window(t_base - 1.0, t_base) or sampler.samples[:1]
    return (
        int(statistics.median(s[1] for s in idle)),
        int(statistics.median(s[2] for s in idle)),
        idle[-1][3],
    )


def summarize_proc(
    rec: dict[str, Any], sampler: Sampler, t_base: float, t0: float, t2: float
) -> None:
    rss0, fd0, cpu0 = baseline(sampler, t_base)
    win = sampler.window(t0, t2)
    if not win:
        return
    rss = [s[1] for s in win if s[1] > 0]
    fds = [s[2] for s in win if s[2] >= 0]
    rec["rss_base_mib"] = round(rss0 / MIB, 1)
    rec["rss_delta_mib"] = round((max(rss or [rss0]) - rss0) / MIB, 1)
    rec["rss_end_delta_mib"] = round(((rss or [rss0])[-1] - rss0) / MIB, 1)
    rec["fds"] = {"base": fd0, "peak": max(fds or [fd0]), "end": (fds or [fd0])[-1]}
    rec["fds"]["end_minus_base"] = rec["fds"]["end"] - fd0
    rec["server_cpu_s"] = round(win[-1][3] - cpu0, 2)
    if rec["attack"] == "churn":
        end_attack = t0 + rec["window_s"][1] - rec["window_s"][0]
        after = [s for s in win if s[0] >= end_attack]
        first_back = next((s[0] for s in after if s[2] <= fd0 + 2), None)
        rec["fds"]["back_after_s"] = (
            None if first_back is None else round(first_back - end_attack, 2)
        )


# --- Report -------------------------------------------------------------------------------------


def fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        v = f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return f"{v}{unit}"


def verdict(rec: dict[str, Any] | None) -> str:
    if rec is None or "canary" not in rec:
        return "n/a"
    c = rec["canary"]
    bad = []
    if c.get("stall_ms", 1e9) > GOAL_STALL_MS:
        bad.append("stall")
    if rec.get("rss_delta_mib", 1e9) > GOAL_RSS_MIB:
        bad.append("RSS")
    if c.get("p99_ms", 1e9) > GOAL_P99_MS:
        bad.append("p99")
    if any("SERVER EXITED" in p or "canary connection ended" in p for p in rec["problems"]):
        bad.append("died")
    if rec.get("answers_again_after_s") is None:
        bad.append("hung")
    return "met" if not bad else "missed: " + ", ".join(bad)


def table(records: list[dict[str, Any]], servers: list[str]) -> str:
    by = {(r["attack"], r["server"]): r for r in records}
    attacks = list(dict.fromkeys(r["attack"] for r in records))
    head = "| attack | metric | " + " | ".join(servers) + " |"
    lines = [head, "|---|---|" + "---|" * len(servers)]

    def row(attack: str, label: str, get: Any) -> None:
        cells = []
        for s in servers:
            r = by.get((attack, s))
            cells.append("" if r is None else str(get(r)).replace("|", "/"))
        if any(cells):
            lines.append(f"| {TITLES.get(attack, attack)} | {label} | " + " | ".join(cells) + " |")

    for a in attacks:
        row(
            a,
            f"loop stall, ms (goal <= {GOAL_STALL_MS:.0f})",
            lambda r: fmt(r.get("canary", {}).get("stall_ms")),
        )
        row(
            a,
            f"RSS growth, MiB (goal <= {GOAL_RSS_MIB:.0f})",
            lambda r: fmt(r.get("rss_delta_mib")),
        )
        row(
            a,
            f"canary p50 / p99 / max, ms (goal p99 <= {GOAL_P99_MS:.0f})",
            lambda r: " / ".join(
                fmt(r.get("canary", {}).get(k)) for k in ("p50_ms", "p99_ms", "max_ms")
            ),
        )
        row(
            a,
            "fds base -> peak -> end" + (" (back after)" if a == "churn" else ""),
            lambda r: (
                "{base} -> {peak} -> {end}".format(**r["fds"])
                + (
                    f" ({fmt(r['fds'].get('back_after_s'), ' s')})"
                    if "back_after_s" in r["fds"]
                    else ""
                )
                if "fds" in r
                else "n/a"
            ),
        )
        row(a, "server CPU, s", lambda r: fmt(r.get("server_cpu_s")))
        row(
            a,
            "/healthz answers again after the attack, s",
            lambda r: fmt(r.get("answers_again_after_s"), "") if "canary" in r else "n/a",
        )
        row(a, "outcome", lambda r: (r.get("result") or {}).get("outcome", "no result"))
        row(a, "problems", lambda r: "; ".join(r["problems"])[:300] or "none")
        row(a, "goals", verdict)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes and short phases")
    ap.add_argument("--attacks", default=",".join(BOTH + SIOGATE_ONLY))
    ap.add_argument("--servers", default="node,siogate")
    ap.add_argument("--siogate-src", type=Path, default=ROOT / "src", help="siogate tree to test")
    ap.add_argument("--python", type=Path, default=default_python())
    ap.add_argument("--rss-cap", type=float, default=1024, help="MiB; stop an attack beyond it")
    ap.add_argument("--attack-timeout", type=float, default=120)
    ap.add_argument(
        "--fd-wait", type=float, default=None, help="s after churn (default 50, quick 10)"
    )
    ap.add_argument("--recover-wait", type=float, default=30, help="s for /healthz after")
    ap.add_argument("--quiet-pct", type=float, default=25)
    ap.add_argument("--quiet-timeout", type=float, default=10)
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    # Internal: the canary subprocess.
    if len(sys.argv) > 1 and sys.argv[1] == "_canary":
        cp = argparse.ArgumentParser()
        cp.add_argument("_canary")
        cp.add_argument("--port", type=int)
        cp.add_argument("--api-key")
        cp.add_argument("--jwt-secret")
        c = cp.parse_args()
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(canary_main(c.port, c.api_key, c.jwt_secret))
        return
    opts = ap.parse_args()
    if opts.fd_wait is None:
        opts.fd_wait = 10.0 if opts.quick else 50.0
    opts.siogate_src = opts.siogate_src.resolve()
    raise_nofile()
    servers = [s for s in opts.servers.split(",") if s]
    attacks = [a for a in opts.attacks.split(",") if a]
    opts.siogate_help = ""
    if "siogate" in servers:
        opts.siogate_help = subprocess.run(
            [str(opts.python), "-m", "siogate", "serve", "--help"],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(opts.siogate_src)},
        ).stdout  # fmt: skip
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = opts.out / f"hostile-{stamp}"
    logs = out_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(opts.siogate_src), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    records = []
    t_start = time.monotonic()
    for attack in attacks:
        for server in servers:
            if attack in SIOGATE_ONLY and server != "siogate":
                continue
            print(f"[hostile] {attack} vs {server} ...", file=sys.stderr, flush=True)
            rec = run_attack(attack, server, opts, logs)
            records.append(rec)
            print(
                f"[hostile]   {verdict(rec)}; {'; '.join(rec['problems'])}",
                file=sys.stderr,
                flush=True,
            )
    text = table(records, servers)
    meta = {
        "stamp": stamp,
        "quick": opts.quick,
        "siogate_src": str(opts.siogate_src),
        "siogate_commit": commit,
        "wall_s": round(time.monotonic() - t_start, 1),
        "python": platform.python_version(),
        "node": subprocess.run(
            ["node", "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "argv": sys.argv,
    }
    (out_dir / "hostile.json").write_text(
        json.dumps({"meta": meta, "runs": records}, indent=1, default=str)
    )
    (out_dir / "table.md").write_text(text + "\n")
    print(f"Run hostile-{stamp} ({'quick' if opts.quick else 'full'}), {meta['wall_s']:.0f} s,"
          f" siogate {opts.siogate_src} at {commit or '?'}, node {meta['node']}:\n")  # fmt: skip
    print(text)
    print(f"\nraw: {out_dir / 'hostile.json'}")


if __name__ == "__main__":
    main()
