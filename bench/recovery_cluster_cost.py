"""What recovery across nodes (--recovery-window with --redis-url) costs, end to end.

Starts its own redis-server on a free loopback port, then, alternating rep by rep, one
``siogate serve --redis-url`` node with recovery off and on, and measures what a
``POST /v1/emit`` to a room of 10 python-socketio clients costs the node's process (CPU
from /proc, so other load on the machine counts little) and redis-server's process. With
recovery on every command is logged (XADD) and published in one script, and comes back
through the node's subscription before it is applied.

    .venv/bin/python bench/recovery_cluster_cost.py [--reps 3] [--emits 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from recovery_cost import _cpu_seconds, _free_port, http_cpu_per_emit


async def main(args: argparse.Namespace) -> None:
    port = _free_port()
    tmp = tempfile.mkdtemp()
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
         "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(0.3)
    extra = ["--redis-url", f"redis://127.0.0.1:{port}/0"]
    node: dict[bool, list[float]] = {False: [], True: []}
    server: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(args.reps):
            for recovery in (False, True):
                before = _cpu_seconds(redis.pid)
                node[recovery].append(await http_cpu_per_emit(recovery, args.emits, extra=extra))
                # Warm-up emits (200) count here too.
                used = _cpu_seconds(redis.pid) - before
                server[recovery].append(used / (args.emits + 200) * 1e6)
    finally:
        redis.terminate()
        redis.wait(5)
        shutil.rmtree(Path(tmp), ignore_errors=True)
    off, on = statistics.median(node[False]), statistics.median(node[True])
    r_off, r_on = statistics.median(server[False]), statistics.median(server[True])
    print(f"POST /v1/emit to 10 sockets, one node on Redis, median of {args.reps} x {args.emits}")
    print(f"  node CPU per emit:  off {off:.1f} us  on {on:.1f} us  on/off {on / off:.3f}")
    print(f"  redis CPU per emit: off {r_off:.1f} us  on {r_on:.1f} us  (incl. connects)")
    print(f"  reps off {[round(x) for x in node[False]]} on {[round(x) for x in node[True]]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--emits", type=int, default=2000)
    asyncio.run(main(parser.parse_args()))
