"""The race both recovery suites run (across nodes, across workers): events emitted all
along through several gateways while a stock client keeps dropping its transport and
reconnecting on its own."""

from __future__ import annotations

import threading
import time

import httpx
from jsclient import JsClient


def emits_while_dropping(
    js: JsClient,
    sid: str,
    urls: list[str],
    api_key: str,
    room: str,
    total: int = 600,
    interval: float = 0.2,
    connects_at_least: int = 3,
) -> None:
    """Emit ``total`` events to ``room`` through ``urls`` in turn while ``js`` drops up to
    8 times, every ``interval`` seconds; it must get each once, in order, and come back
    as ``sid``, recovered, every time."""
    from test_recovery import payloads

    done = threading.Event()
    failures: list[str] = []

    def emitter() -> None:
        headers = {"Authorization": f"Bearer {api_key}"}
        https = [httpx.Client(base_url=url, headers=headers, timeout=10) for url in urls]
        try:
            for i in range(total):
                body = {"event": "n", "args": [i], "rooms": [room]}
                r = https[i % len(https)].post("/v1/emit", json=body)
                if r.status_code != 200:
                    failures.append(r.text)
        finally:
            for h in https:
                h.close()
            done.set()

    thread = threading.Thread(target=emitter)
    thread.start()
    drops = 0
    while not done.is_set() and drops < 8:
        time.sleep(interval)
        js.send(op="drop")
        drops += 1
    thread.join(60)
    assert failures == []
    js.wait_events("n", total, timeout=30)
    time.sleep(0.3)
    assert payloads(js.events("n")) == list(range(total))
    connects = [o for o in js.observations if o.get("type") == "connected"]
    assert len(connects) >= connects_at_least, "the client never dropped while events were sent"
    assert all(c["id"] == sid for c in connects), connects
    assert all(c["recovered"] for c in connects[1:]), connects
