"""The inbound event rate per client connection (``--event-rate``, ``--event-burst``,
``--event-rate-action``) against a real gateway and python-socketio clients."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sioclient import Recorder
from webhook_receiver import Reply, WebhookReceiver, of_type

from conftest import Gateway

SECRET = "whsec-rate-0123456789abcdef0123456789"


@pytest.fixture
async def recorders() -> AsyncIterator[list[Recorder]]:
    made: list[Recorder] = []
    yield made
    for recorder in made:
        await recorder.close()


async def connect(
    gw: Gateway, made: list[Recorder], namespaces: list[str] | None = None
) -> Recorder:
    recorder = Recorder(
        gw.url,
        auth={"token": gw.token("flooder")},
        namespaces=namespaces or ["/"],
        transports=["websocket"],
    )
    made.append(recorder)
    return await recorder.connect()


def counter(gw: Gateway, name: str) -> float:
    metrics = gw.api("GET", "/metrics").text
    found = re.search(rf"^{name} (\S+)$", metrics, re.M)
    assert found, metrics
    return float(found.group(1))


def error_code(ack: list[Any]) -> str | None:
    match ack:
        case [{"error": {"code": str(code)}}]:
            return code
    return None


async def test_a_burst_over_the_limit_is_partly_dropped_with_acked_errors(
    start_gateway: Callable[..., Gateway], recorders: list[Recorder]
) -> None:
    # No webhook: events within the rate are acked "no_handler", the others
    # "rate_limited". 40 events at once against a bucket of 10 refilled at 2/s.
    gw = start_gateway("--event-rate", "2", "--event-burst", "10")
    client = await connect(gw, recorders, ["/", "/other"])
    acks = await asyncio.gather(
        *(client.call("flood", i, namespace="/" if i % 2 else "/other") for i in range(40))
    )
    codes = [error_code(ack) for ack in acks]
    assert set(codes) == {"no_handler", "rate_limited"}, acks
    passed, dropped = codes.count("no_handler"), codes.count("rate_limited")
    # The burst, plus what 2/s earns while the 40 are read (well under 2 s here).
    assert 10 <= passed <= 14, codes
    assert passed + dropped == 40
    # The first events used the burst: the drops are at the end, and the limit is per
    # connection (both namespaces drew on the one bucket).
    assert codes[:10] == ["no_handler"] * 10
    [message] = {a[0]["error"]["message"] for a in acks if error_code(a) == "rate_limited"}
    assert "2 events per second" in message
    assert counter(gw, "siogate_client_events_rate_limited_total") == dropped
    assert counter(gw, "siogate_client_events_total") == 40

    # The connection stays open and the bucket refills: one second later, 2 more pass.
    await asyncio.sleep(1.1)
    assert error_code(await client.call("later")) == "no_handler"
    assert client.sio.connected


async def test_other_connections_keep_their_own_budget(
    start_gateway: Callable[..., Gateway], recorders: list[Recorder]
) -> None:
    gw = start_gateway("--event-rate", "1", "--event-burst", "3")
    flooder = await connect(gw, recorders)
    quiet = await connect(gw, recorders)
    flood = await asyncio.gather(*(flooder.call("flood", i) for i in range(10)))
    assert [error_code(a) for a in flood].count("rate_limited") >= 6
    assert error_code(await quiet.call("hello")) == "no_handler"


async def test_rate_zero_turns_the_limit_off(
    start_gateway: Callable[..., Gateway], recorders: list[Recorder]
) -> None:
    gw = start_gateway("--event-rate", "0", "--event-burst", "1")
    client = await connect(gw, recorders)
    acks = await asyncio.gather(*(client.call("flood", i) for i in range(50)))
    assert {error_code(ack) for ack in acks} == {"no_handler"}
    assert counter(gw, "siogate_client_events_rate_limited_total") == 0


async def test_disconnect_action_closes_the_connection(
    start_gateway: Callable[..., Gateway], recorders: list[Recorder]
) -> None:
    with WebhookReceiver() as hook:
        hook.respond = lambda request: Reply(body={"ack": ["ok"]})
        gw = start_gateway(
            "--event-rate", "1", "--event-burst", "5", "--event-rate-action", "disconnect",
            "--webhook-url", hook.url, "--webhook-secret", SECRET,
        )  # fmt: skip
        client = await connect(gw, recorders)
        sid = client.sid()
        for i in range(20):
            await client.sio.emit("flood", i)
        await client.wait_disconnect()
        # The backend hears why; the events within the burst are forwarded (those
        # waiting for the connection's webhook lane too), none after it.
        gone = await hook.wait(of_type("disconnect", socket={"id": sid, "user": "flooder"}))
        assert gone.payload["reason"] == "rate limited"
        await hook.wait(of_type("event", event="flood"), count=5)
        await asyncio.sleep(0.3)
        forwarded = hook.matching(of_type("event", event="flood"))
        assert 5 <= len(forwarded) <= 7, [r.payload["args"] for r in forwarded]
        assert counter(gw, "siogate_client_events_rate_limited_total") >= 1
