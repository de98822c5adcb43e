"""Where the CPU that an Idempotency-Key adds to POST /v1/emit with Redis goes.

    /work/main/.venv/bin/python bench/idem_split.py              # every variant, 4 reps
    /work/main/.venv/bin/python bench/idem_split.py --variants key,hashless --redis-core 1

A diagnostic beside ``idem_cpu.py`` (same in-process set-up: ``siogate.app.build`` in
cluster mode with a private redis-server, emits straight to ``Api.handle``, 8 at a time,
no sockets in the room, ``time.process_time`` around each run). Each variant runs in a
fresh process, which first replaces one part of the key's path, then measures emits
without a key and with a unique key per request, alternating, and prints the minimum
over the reps of each and their difference. The replacements are for measuring only
(they break idempotency):

* ``key``: nothing replaced, the real path.
* ``hashless``: no sha256 of the request (a constant fingerprint) nor of the key (the
  key itself names the Redis key), no key validation.
* ``noset``: the guarded publish's script publishes without the ``SET NX PX``.
* ``plain``: the guarded publish is sent as the plain ``SPUBLISH``/``PUBLISH`` it
  carries, not as ``EVALSHA`` (its integer reply wrapped as the script's list).
* ``hashless+plain``: both.

What remains with ``hashless+plain`` is the rest of the Python path (the plan, the
store's ``apply_once``, the guard objects, one more coroutine or two).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from run import free_port  # noqa: E402

BODY = b'{"event":"m","data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","rooms":["r"]}'
CONCURRENCY = 8
VARIANTS = ("key", "hashless", "noset", "plain", "hashless+plain")
NOSET_SCRIPT = """
local counts = {}
for i = 3, #ARGV, 3 do
  counts[#counts + 1] = redis.call(ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
return counts
"""


def patch(variant: str) -> None:
    """Replace the parts of the key's path that ``variant`` leaves out."""
    import siogate.api.idempotent as idempotent
    import siogate.broker.redis as broker_redis
    import siogate.idempotency as idempotency

    parts = set(variant.split("+"))
    if "hashless" in parts:
        idempotent.fingerprint = lambda method, path, body: "f" * 64  # type: ignore[assignment]
        idempotent.valid_key = lambda key: True  # type: ignore[assignment]
        idempotency.RedisIdempotencyStore._key = (  # type: ignore[method-assign]
            lambda self, key: "siogate:idempotency:" + key
        )
    if "noset" in parts:
        broker_redis.GUARDED_PUBLISH = NOSET_SCRIPT
        broker_redis.GUARDED_PUBLISH_SHA = hashlib.sha1(NOSET_SCRIPT.encode()).hexdigest().encode()
    if "plain" in parts:
        broker = broker_redis.RedisBroker
        pack, unguarded = broker._pack, broker._unguarded

        def plain_pack(self: Any, item: Any) -> bytes:
            channel = item[0]
            if isinstance(channel, broker_redis._Guarded):
                kind, name, data = channel.args[:3]
                args = (kind, name, data)
                return b"*3\r\n" + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)
            return pack(self, item)

        async def listed(self: Any, batch: Any, receivers: list[Any]) -> Any:
            listed = [[r] if isinstance(r, int) else r for r in receivers]
            return await unguarded(self, batch, listed)

        broker._pack = plain_pack  # type: ignore[method-assign]
        broker._unguarded = listed  # type: ignore[method-assign]


async def measure(requests: int, reps: int, redis_core: str) -> tuple[list[float], list[float]]:
    from siogate.app import build
    from siogate.config import Settings
    from siogate.transport.http import Request

    port = free_port()
    argv = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
    if redis_core:
        argv = ["taskset", "-c", redis_core, *argv]
    redis = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    api_key = secrets.token_hex(16)
    settings = Settings(
        api_key=api_key,
        jwt_secret=secrets.token_hex(24),
        redis_url=f"redis://127.0.0.1:{port}/0",
        port=0,
    )
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

    without: list[float] = []
    with_key: list[float] = []
    try:
        await run(2000, False)
        await run(2000, True)
        for rep in range(reps):
            for keyed in (False, True) if rep % 2 == 0 else (True, False):
                (with_key if keyed else without).append(await run(requests, keyed))
    finally:
        await gateway.stop()
        redis.terminate()
        redis.wait()
    return without, with_key


def child(variant: str, requests: int, reps: int, redis_core: str) -> None:
    patch(variant)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    without, with_key = asyncio.run(measure(requests, reps, redis_core))
    off, on = min(without), min(with_key)
    every = " / ".join(f"{a:.1f}-{b:.1f}" for a, b in zip(without, with_key, strict=True))
    print(f"| {variant} | {off:.1f} / {on:.1f} | {on - off:+.1f} | {every} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--redis-core", default="", help="taskset core of redis-server")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.child:
        child(opts.child, opts.requests, opts.reps, opts.redis_core)
        return
    print("| variant | CPU us per request without / with key (min of reps) | added | reps |")
    print("|---|---|---|---|")
    for variant in opts.variants.split(","):
        if variant not in VARIANTS:
            sys.exit(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}")
        argv = [sys.executable, __file__, "--child", variant, "--requests", str(opts.requests)]
        argv += ["--reps", str(opts.reps), "--redis-core", opts.redis_core]
        subprocess.run(argv, check=True)


if __name__ == "__main__":
    main()
