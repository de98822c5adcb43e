"""Server CPU per publish at each throughput step of a ``run.py`` or ``cluster.py`` run.

    .venv/bin/python bench/step_cpu.py bench/results/<run>/raw.json [more raw.json ...]

``run.py``'s throughput scenario raises the publish rate in steps; its table reports the
peak delivered rate, which depends on where a server starts to fall behind (a step
boundary, and the p99 > 1 s rule). The server's CPU per publish at the steps every
server kept up with is the steadier number for comparing two configurations of one
server (``siogate`` and ``siogate-recovery``, say). It comes from the run's CPU samples
(``/proc`` every 0.5 s): the server's busy share of its core over the middle of each
step (its first second and last half second left out), divided by the publishes
per second. Steps that reached under 90% of their target are left out. Prints, per
target rate, the median over reps and each rep's value, in us per publish (one publish
= one room of ``room_size`` deliveries).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any


def step_cpu(runs: list[dict[str, Any]]) -> dict[int, dict[str, list[float]]]:
    out: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        result = run.get("result")
        if run.get("scenario") != "throughput" or run.get("superseded") or not result:
            continue
        start, step = result["phases"]["measure"][0], result["step_s"]
        per_publish = result["room_size"]
        for i, s in enumerate(result["steps"]):
            if s["achieved_msgs_s"] < 0.9 * s["target_msgs_s"]:
                continue
            lo, hi = start + i * step + 1.0, start + (i + 1) * step - 0.5
            busy = [x["server_pct"] for x in run["cpu_samples"] if lo <= x["t"] <= hi]
            if not busy:
                continue
            publishes_s = s["achieved_msgs_s"] / per_publish
            us = statistics.mean(busy) / 100 / publishes_s * 1e6
            out[s["target_msgs_s"]][run["server"]].append(round(us, 1))
    return out


def main(paths: list[str]) -> int:
    runs = [r for p in paths for r in json.loads(open(p).read())["runs"]]
    table = step_cpu(runs)
    servers = sorted({s for row in table.values() for s in row})
    print("| target msgs/s | " + " | ".join(f"{s}: us per publish" for s in servers) + " |")
    print("|---|" + "---|" * len(servers))
    for target in sorted(table):
        cells = []
        for s in servers:
            values = table[target].get(s)
            cells.append(f"{statistics.median(values):.1f} {values}" if values else "-")
        print(f"| {target:,} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
