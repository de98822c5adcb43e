"""``GET /v1/stats`` over a two-node cluster (real nodes, a private Redis): every node's
numbers from whichever node is asked, and a killed node reported as missing.

The nodes and clients are those of ``test_cluster``.
"""

# ruff: noqa: F811

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import pytest
from test_cluster import (  # noqa: F401 (fixtures)
    NODE_TTL_MS,
    Cluster,
    Connect,
    Gateway,
    cluster,
    connect,
    get,
    health,
    ok,
    two,
    wait_peers,
)

pytestmark = pytest.mark.redis


def by_node(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["node"]: entry for entry in body["stats"]}


async def test_either_node_reports_both_with_their_own_sockets(
    two: tuple[Gateway, Gateway], connect: Connect
) -> None:
    a, b = two
    a_id, b_id = health(a)["node"], health(b)["node"]
    await connect(a, token=a.token("on-a"))
    for n in range(2):
        await connect(b, token=b.token(f"on-b{n}"))
    await ok(a, "/v1/emit", {"event": "hello"})  # one packet per socket, on its node

    for asked, other in ((a, b_id), (b, a_id)):
        body = await get(asked, "/v1/stats")
        assert body["partial"] is False
        assert body["nodes"] == {"answered": 2, "missing": []}
        # The asked node first.
        assert body["stats"][0]["node"] == health(asked)["node"]
        assert body["stats"][1]["node"] == other
        nodes = by_node(body)
        assert nodes[a_id]["metrics"]["siogate_sockets"] == 1
        assert nodes[b_id]["metrics"]["siogate_sockets"] == 2
        assert nodes[a_id]["metrics"]["siogate_packets_out_total"] == 1
        assert nodes[b_id]["metrics"]["siogate_packets_out_total"] == 2
        assert nodes[b_id]["metrics"]["siogate_cluster_peers"] == 1

    # Each node's samples come with it; ?last= reaches through Redis too.
    deadline = time.monotonic() + 8
    while True:
        nodes = by_node(await get(a, "/v1/stats?last=3"))
        last_b = nodes[b_id]["samples"]
        if last_b and last_b[-1]["sockets"] == 2 and nodes[a_id]["samples"][-1]["sockets"] == 1:
            break
        assert time.monotonic() < deadline, nodes
        await asyncio.sleep(0.2)
    assert all(nodes[b_id]["time"] - s["t"] < 3 for s in last_b)


async def test_a_killed_node_is_reported_missing(cluster: Cluster, connect: Connect) -> None:
    a, b = cluster.start_node(), cluster.start_node()
    wait_peers([a, b])
    b_id = health(b)["node"]
    assert (await get(a, "/v1/stats"))["nodes"] == {"answered": 2, "missing": []}

    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    body = await get(a, "/v1/stats")
    assert body["partial"] is True
    assert body["nodes"] == {"answered": 1, "missing": [b_id]}
    assert [entry["node"] for entry in body["stats"]] == [health(a)["node"]]
    # Once its registration expires the answer is whole again.
    deadline = time.monotonic() + NODE_TTL_MS / 1000 + 3
    while (await get(a, "/v1/stats"))["partial"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
