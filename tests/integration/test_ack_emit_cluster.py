"""Emits with ack in cluster mode: two real nodes on one real Redis, sockets on both."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_ack_emit import AckClients, ack_emit, replies
from test_cluster import Cluster, wait_peers

from conftest import Gateway, RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.node]


@pytest.fixture
def two(redis_server: RedisServer, tmp_path: Path) -> Iterator[tuple[Gateway, Gateway]]:
    cluster = Cluster(redis_server, tmp_path)
    try:
        a = cluster.start_node("--max-ack-recipients", "5")
        b = cluster.start_node("--max-ack-recipients", "5")
        wait_peers([a, b])
        yield a, b
    finally:
        cluster.stop()


def test_replies_from_both_nodes_come_back_through_one(two: tuple[Gateway, Gateway]) -> None:
    a, b = two
    on_a = AckClients(a.url, 3, silent=(2,))
    on_b = AckClients(b.url, 3, silent=(1,))
    try:
        # Six sockets, five allowed: counted over both nodes (3 + 3) and refused.
        refused = ack_emit(a, 1_000, "all")
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "too_many_recipients"

        # Leave one out: five recipients, two of which (one per node) never answer.
        started = time.monotonic()
        response = ack_emit(a, 2_000, "five", **{"except": [on_b.ids[2]]})
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        result = response.json()
        assert result["recipients"] == 5
        assert sorted(result["timeouts"]) == sorted([on_a.ids[2], on_b.ids[1]])
        expected = {
            sid: [{"i": i, "id": sid, "echo": "five"}]
            for clients, answering in ((on_a, (0, 1)), (on_b, (0,)))
            for i, sid in clients.ids.items()
            if i in answering
        }
        assert replies(result) == expected
        assert result["partial"] is False and result["nodes"]["answered"] == 2
        assert 1.9 < elapsed < 8

        # A socket on the other node that leaves while it owes an answer is reported at
        # once, through the broker, long before the timeout.
        outcome: dict[str, Any] = {}

        def call() -> None:
            t0 = time.monotonic()
            r = ack_emit(a, 30_000, "x", rooms=[on_b.ids[1], on_a.ids[0]])
            outcome.update(r.json(), elapsed=time.monotonic() - t0)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 10
        while on_b.events.count(1) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        on_b.send({"op": "disconnect", "i": 1})
        caller.join(40)
        assert outcome["timeouts"] == [on_b.ids[1]]
        assert list(replies(outcome)) == [on_a.ids[0]]
        assert outcome["elapsed"] < 10
    finally:
        on_a.close()
        on_b.close()
    # The refused emit reached nobody: only the two later emits were delivered.
    assert sorted(on_a.events) == [0, 0, 1, 2]
    assert sorted(on_b.events) == [0, 1, 1]
