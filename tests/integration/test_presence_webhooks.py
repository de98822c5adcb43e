"""user.online / user.offline webhooks (``--presence-webhooks``), end to end.

Real gateways (one process, then a two-node cluster on a private Redis), python-socketio
clients and a real webhook receiver. The cluster tests reuse ``test_cluster``'s nodes
and fixtures, so test parameters redefine their names on purpose.
"""

# ruff: noqa: F811

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sioclient import Recorder, uid
from test_cluster import (  # noqa: F401 (fixtures)
    NODE_TTL_MS,
    Cluster,
    Connect,
    cluster,
    connect,
    wait_peers,
    wait_until,
)
from webhook_receiver import Received, WebhookReceiver, of_type

from conftest import Gateway

SECRET = "whsec-presence-0123456789abcdef01234"


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def presence_of(user: str) -> Callable[[Received], bool]:
    def match(request: Received) -> bool:
        return of_type("user.online", user=user)(request) or of_type("user.offline", user=user)(
            request
        )

    return match


def kinds(hook: WebhookReceiver, user: str) -> list[str]:
    return [r.payload["type"] for r in hook.matching(presence_of(user))]


async def settle(seconds: float = 0.5) -> None:
    """Time for a duplicate webhook, if any were sent, to arrive."""
    await asyncio.sleep(seconds)


async def test_two_sockets_of_one_user_make_one_online_and_one_offline(
    start_gateway: Callable[..., Gateway], hook: WebhookReceiver
) -> None:
    gw = start_gateway(
        "--webhook-url", hook.url, "--webhook-secret", SECRET, "--presence-webhooks"
    )  # fmt: skip
    user = uid("ann")
    first = await Recorder(gw.url, auth={"token": gw.token(user)}).connect()
    online = await hook.wait(of_type("user.online", user=user))
    assert online.payload == {"type": "user.online", "namespace": "/", "user": user}
    assert online.signature_ok(SECRET)
    second = await Recorder(gw.url, auth={"token": gw.token(user)}).connect()
    await hook.wait(of_type("connect"), count=2)
    await first.close()
    await hook.wait(of_type("disconnect"))
    await settle()
    assert kinds(hook, user) == ["user.online"]  # one socket still there
    await second.close()
    offline = await hook.wait(of_type("user.offline", user=user))
    assert offline.payload == {"type": "user.offline", "namespace": "/", "user": user}
    await settle()
    assert kinds(hook, user) == ["user.online", "user.offline"]


async def test_presence_is_per_namespace_and_anonymous_sockets_have_none(
    start_gateway: Callable[..., Gateway], hook: WebhookReceiver
) -> None:
    gw = start_gateway(
        "--allow-anonymous", "--webhook-url", hook.url, "--webhook-secret", SECRET,
        "--presence-webhooks",
    )  # fmt: skip
    user = uid("bo")
    auth = {"token": gw.token(user)}
    both = await Recorder(gw.url, auth=auth, namespaces=["/", "/chat"]).connect()
    anonymous = await Recorder(gw.url).connect()
    await hook.wait(of_type("user.online", user=user, namespace="/"))
    await hook.wait(of_type("user.online", user=user, namespace="/chat"))
    await hook.wait(of_type("connect"), count=3)
    await both.close()
    await hook.wait(of_type("user.offline", user=user, namespace="/"))
    await hook.wait(of_type("user.offline", user=user, namespace="/chat"))
    await anonymous.close()
    await hook.wait(of_type("disconnect"), count=3)
    await settle()
    types = [r.payload["type"] for r in hook.requests]
    assert types.count("user.online") == 2 and types.count("user.offline") == 2


async def test_off_by_default(start_gateway: Callable[..., Gateway], hook: WebhookReceiver) -> None:
    gw = start_gateway("--webhook-url", hook.url, "--webhook-secret", SECRET)
    user = uid("cy")
    client = await Recorder(gw.url, auth={"token": gw.token(user)}).connect()
    await client.close()
    await hook.wait(of_type("disconnect"))
    await settle()
    assert kinds(hook, user) == []


async def test_sigterm_sends_offline_for_the_users_of_the_stopped_node(
    start_gateway: Callable[..., Gateway], hook: WebhookReceiver
) -> None:
    gw = start_gateway(
        "--webhook-url", hook.url, "--webhook-secret", SECRET, "--presence-webhooks"
    )  # fmt: skip
    user = uid("di")
    client = await Recorder(gw.url, auth={"token": gw.token(user)}).connect()
    await hook.wait(of_type("user.online", user=user))
    gw.stop()
    await hook.wait(of_type("user.offline", user=user))
    await client.close()


# ---------------------------------------------------------------- cluster


def counted(cluster: Cluster, user: str, nodes: int) -> None:
    """Until ``nodes`` nodes count sockets of ``user`` in Redis.

    A node writes its count a moment after the socket's connect webhook; a socket closed
    on another node within that moment would make a (correct) offline and online.
    """
    client = redis.Redis.from_url(cluster.redis.url)
    key = f'siogate:presence:["/","{user}"]'
    try:
        wait_until(lambda: client.hlen(key) == nodes, f"{nodes} nodes counting {user}")
    finally:
        client.close()


def presence_node(cluster: Cluster, hook: WebhookReceiver) -> Gateway:
    return cluster.start_node(
        "--webhook-url", hook.url, "--webhook-secret", SECRET, "--presence-webhooks"
    )


@pytest.mark.redis
async def test_cluster_one_online_one_offline_for_sockets_on_both_nodes(
    cluster: Cluster, connect: Connect, hook: WebhookReceiver
) -> None:
    a, b = presence_node(cluster, hook), presence_node(cluster, hook)
    wait_peers([a, b])
    user = uid("eve")
    on_a = await connect(a, token=a.token(user))
    await hook.wait(of_type("user.online", user=user))
    on_b = await connect(b, token=b.token(user))
    counted(cluster, user, 2)
    await on_a.close()
    await hook.wait(of_type("disconnect"))
    await settle()
    assert kinds(hook, user) == ["user.online"]
    await on_b.close()
    await hook.wait(of_type("user.offline", user=user))
    await settle()
    assert kinds(hook, user) == ["user.online", "user.offline"]


@pytest.mark.redis
async def test_cluster_sockets_connecting_at_once_on_both_nodes_make_one_online(
    cluster: Cluster, connect: Connect, hook: WebhookReceiver
) -> None:
    a, b = presence_node(cluster, hook), presence_node(cluster, hook)
    wait_peers([a, b])
    users = [uid(f"u{i}") for i in range(10)]
    await asyncio.gather(
        *(connect(node, token=node.token(user)) for user in users for node in (a, b))
    )
    await hook.wait(of_type("connect"), count=20)
    for user in users:
        await hook.wait(of_type("user.online", user=user))
    await settle()
    for user in users:
        assert kinds(hook, user) == ["user.online"], user


@pytest.mark.redis
async def test_cluster_killed_node_last_sockets_go_offline_once_after_the_ttl(
    cluster: Cluster, connect: Connect, hook: WebhookReceiver
) -> None:
    a = presence_node(cluster, hook)
    b = presence_node(cluster, hook)
    c = presence_node(cluster, hook)
    wait_peers([a, b, c])
    user, stays = uid("fay"), uid("gus")
    on_a = await connect(a, token=a.token(user))
    await connect(b, token=b.token(user))
    await connect(b, token=b.token(stays))
    await connect(a, token=a.token(stays))
    for name in (user, stays):
        await hook.wait(of_type("user.online", user=name))
        counted(cluster, name, 2)
    await on_a.close()  # the user's only socket left is on B
    await hook.wait(of_type("disconnect"))

    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait(5)
    killed_at = time.monotonic()
    await hook.wait(of_type("user.offline", user=user), timeout=NODE_TTL_MS / 1000 + 10)
    took = time.monotonic() - killed_at
    assert took < NODE_TTL_MS / 1000 + 5, took
    # A and C both watch the registry; only one of them reaps B.
    await settle(NODE_TTL_MS / 1000)
    assert kinds(hook, user) == ["user.online", "user.offline"]
    # A user with a socket left on A stays online.
    assert kinds(hook, stays) == ["user.online"]


@pytest.mark.redis
async def test_cluster_node_stopped_normally_sends_offline_for_its_last_sockets(
    cluster: Cluster, connect: Connect, hook: WebhookReceiver
) -> None:
    a, b = presence_node(cluster, hook), presence_node(cluster, hook)
    wait_peers([a, b])
    leaves, stays = uid("hal"), uid("ivy")
    await connect(b, token=b.token(leaves))
    await connect(b, token=b.token(stays))
    await connect(a, token=a.token(stays))
    await hook.wait(of_type("user.online", user=leaves))
    counted(cluster, stays, 2)
    b.stop()  # SIGTERM
    await hook.wait(of_type("user.offline", user=leaves))
    await settle()
    assert kinds(hook, leaves) == ["user.online", "user.offline"]
    assert kinds(hook, stays) == ["user.online"]


@pytest.mark.parametrize("flag", ["--presence-webhooks", "--room-webhooks"])
def test_presence_and_room_webhooks_need_a_webhook_url(tmp_path: Path, flag: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "siogate", "serve", flag, "--port", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f"{flag[2:].replace('-', '_')} needs webhook_url" in done.stderr


# ---------------------------------------------------------------- room webhooks


async def test_room_webhooks_report_changes_after_connect_once_each(
    start_gateway: Callable[..., Gateway], hook: WebhookReceiver
) -> None:
    gw = start_gateway(
        "--webhook-url", hook.url, "--webhook-secret", SECRET, "--room-webhooks"
    )  # fmt: skip
    user = uid("jo")
    client = await Recorder(gw.url, auth={"token": gw.token(user, rooms=["given"])}).connect()
    sid = client.sid()
    sock = {"id": sid, "user": user}
    for path, room in (("/v1/join", "extra"), ("/v1/join", "extra"), ("/v1/leave", "extra")):
        r = await asyncio.to_thread(gw.api, "POST", path, json={"room": room, "sockets": [sid]})
        assert r.status_code == 200, r.text
    await asyncio.to_thread(gw.api, "POST", "/v1/leave", json={"room": "nowhere", "sockets": [sid]})
    joined = await hook.wait(of_type("room.join"))
    assert joined.payload == {"type": "room.join", "namespace": "/", "socket": sock} | {
        "room": "extra"
    }
    left = await hook.wait(of_type("room.leave"))
    assert left.payload == {"type": "room.leave", "namespace": "/", "socket": sock} | {
        "room": "extra"
    }
    await client.close()
    await hook.wait(of_type("disconnect"))
    await settle()
    # Not the rooms given at connect (the token's, user:<sub>), nor those left by leaving.
    types = [r.payload["type"] for r in hook.requests]
    assert types.count("room.join") == 1 and types.count("room.leave") == 1, types
