"""CPU that an Idempotency-Key adds to POST /v1/emit, without HTTP and without clients.

    /work/main/.venv/bin/python bench/idem_cpu.py                # memory and redis, 5 reps
    /work/main/.venv/bin/python bench/idem_cpu.py --modes redis --requests 40000

A companion to ``acks.py``'s idem part for a machine shared with other work: it builds a
gateway in this process (``siogate.app.build``; with ``redis`` a private redis-server on a
spare port, cluster mode, one node), then sends ``--requests`` emits straight to the API
object (``Api.handle``), 8 at a time, without a key and with a unique key per request,
alternating, and reads this process's CPU time (``time.process_time``) around each run:
time the process spent descheduled by other work does not count, unlike in a rate. The
room has no sockets, so what is measured is the request path alone (parse, key, publish
to Redis and back), not delivery. redis-server's own CPU (about 5 us more per emit with a
key: one SET with an expiry besides the PUBLISH) is not in these numbers. Minimum over
the reps, in us per request, and the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from run import free_port  # noqa: E402

from siogate.app import build  # noqa: E402
from siogate.config import Settings  # noqa: E402
from siogate.transport.http import Request  # noqa: E402

BODY = b'{"event":"m","data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","rooms":["r"]}'
CONCURRENCY = 8


async def measure(mode: str, requests: int, reps: int) -> dict[str, list[float]]:
    redis: subprocess.Popen[bytes] | None = None
    url = None
    if mode == "redis":
        port = free_port()
        redis = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{port}/0"
    api_key = secrets.token_hex(16)
    settings = Settings(api_key=api_key, jwt_secret=secrets.token_hex(24), redis_url=url, port=0)
    gateway = build(settings)
    await gateway.node.start()
    keys = itertools.count()
    run_id = secrets.token_hex(4)

    async def sender(n: int, keyed: bool) -> None:
        for _ in range(n):
            headers = {"authorization": f"Bearer {api_key}"}
            if keyed:
                headers["idempotency-key"] = f"{run_id}-{next(keys)}"
            response = await gateway.api.handle(Request("POST", "/v1/emit", "", headers, BODY))
            assert response.status == 200, response

    async def run(n: int, keyed: bool) -> float:
        started = time.process_time()
        await asyncio.gather(*(sender(n // CONCURRENCY, keyed) for _ in range(CONCURRENCY)))
        return (time.process_time() - started) / n * 1e6

    results: dict[str, list[float]] = {"without": [], "with": []}
    try:
        await run(2000, False)  # warm up both paths
        await run(2000, True)
        for rep in range(reps):
            for keyed in (False, True) if rep % 2 == 0 else (True, False):
                results["with" if keyed else "without"].append(await run(requests, keyed))
    finally:
        await gateway.stop()
        if redis is not None:
            redis.terminate()
            redis.wait()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--modes", default="memory,redis")
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=5)
    opts = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    print("| keys kept | CPU us per request without / with key (min of reps) | added | reps |")
    print("|---|---|---|---|")
    for mode in opts.modes.split(","):
        r = asyncio.run(measure(mode, opts.requests, opts.reps))
        off, on = min(r["without"]), min(r["with"])
        every = " / ".join(f"{a:.1f}-{b:.1f}" for a, b in zip(r["without"], r["with"], strict=True))
        print(f"| {mode} | {off:.1f} / {on:.1f} | {on - off:+.1f} | {every} |")


if __name__ == "__main__":
    main()
