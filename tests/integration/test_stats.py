"""``GET /v1/stats`` and ``GET /dashboard`` on one real gateway: who may read them, what
they answer, and that the samples follow what clients and webhooks really do.

Clients are python-socketio sockets; the webhook target is the threaded receiver of
``webhook_receiver.py``. The browser side is in ``tests/e2e/test_dashboard_browser.py``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import bcrypt
import httpx
import pytest
from sioclient import Recorder
from webhook_receiver import Reply, WebhookReceiver

from conftest import API_KEY, Gateway, spawn_gateway

ADMIN_PASSWORD = "a dashboard password"
WEBHOOK_SECRET = "whsec-0123456789abcdef0123456789abcdef"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


BEARER = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway with admin credentials (without --admin: they serve the dashboard too)."""
    password_hash = bcrypt.hashpw(ADMIN_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    gateway = spawn_gateway(
        "--allow-anonymous",
        "--admin-username", "ops",
        "--admin-password-hash", password_hash,
        log_dir=tmp_path_factory.mktemp("stats"),
    )  # fmt: skip
    yield gateway
    gateway.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str], Any]]:
    made: list[Recorder] = []

    async def make(url: str) -> Recorder:
        client = Recorder(url, transports=["websocket"])
        made.append(client)
        return await client.connect()

    yield make
    await asyncio.gather(*(c.close() for c in made))


def stats(gw: Gateway, query: str = "", **headers: str) -> dict[str, Any]:
    r = httpx.get(f"{gw.url}/v1/stats{query}", headers=headers or BEARER, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    return body


async def wait_for(check: Callable[[], Any], what: str, timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- who may read


@pytest.mark.parametrize("path", ["/v1/stats", "/dashboard"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Bearer {API_KEY}x"},
        basic("anyone", "wrong-key"),
        basic("ops", "not the password"),
        basic("admin", ADMIN_PASSWORD),  # right password, wrong user name
        {"Authorization": "Basic not-base64!"},
        {"Authorization": f"Token {API_KEY}"},
    ],
    ids=[
        "none",
        "bearer",
        "bearer-longer",
        "basic-key",
        "basic-pw",
        "basic-user",
        "junk",
        "scheme",
    ],
)
def test_refused_without_the_key_or_admin_credentials(
    gw: Gateway, path: str, headers: dict[str, str]
) -> None:
    r = httpx.get(f"{gw.url}{path}", headers=headers, timeout=5)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    # The browser's login prompt, in UTF-8.
    assert r.headers["www-authenticate"] == 'Basic realm="siogate", charset="UTF-8"'
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/v1/stats", "/dashboard"])
@pytest.mark.parametrize(
    "headers",
    [BEARER, basic("", API_KEY), basic("anyone", API_KEY), basic("ops", ADMIN_PASSWORD)],
    ids=["bearer", "basic-key-no-user", "basic-key", "basic-admin"],
)
def test_open_with_the_key_or_admin_credentials(
    gw: Gateway, path: str, headers: dict[str, str]
) -> None:
    for _ in range(2):  # the second time from the remembered check
        r = httpx.get(f"{gw.url}{path}", headers=headers, timeout=5)
        assert r.status_code == 200, r.text


def test_admin_password_is_not_enough_without_a_hash(start_gateway: Callable[..., Gateway]) -> None:
    plain = start_gateway("--allow-anonymous")
    r = httpx.get(f"{plain.url}/dashboard", headers=basic("admin", "admin"), timeout=5)
    assert r.status_code == 401
    assert httpx.get(f"{plain.url}/dashboard", headers=BEARER, timeout=5).status_code == 200


# ---------------------------------------------------------------- what /v1/stats says


async def test_stats_follow_a_connected_client_and_its_messages(
    gw: Gateway, connect: Callable[[str], Any]
) -> None:
    before = stats(gw)
    (node,) = before["stats"]
    assert before["partial"] is False and before["nodes"] == {"answered": 1, "missing": []}
    assert node["interval"] == 1.0
    base = node["metrics"]["siogate_sockets"]

    client = await connect(gw.url)
    for i in range(20):
        assert gw.emit("tick", i, rooms=[client.sid()]).status_code == 200
    await client.wait_event("tick", count=20)

    def seen() -> dict[str, Any] | None:
        (now,) = stats(gw)["stats"]
        recent = [s for s in now["samples"] if s["sockets"] == base + 1]
        # Rates times the interval add up to the counter once every packet is sampled.
        sent = sum(s["packets_out_per_s"] for s in now["samples"])
        whole = abs(sent - now["metrics"]["siogate_packets_out_total"]) < 0.5
        return now if recent and whole else None

    now = await wait_for(seen, "a sample with the socket and its packets")
    metrics = now["metrics"]
    assert metrics["siogate_sockets"] == base + 1
    assert metrics["siogate_packets_out_total"] >= 20
    # The same numbers as /metrics.
    text = httpx.get(f"{gw.url}/metrics", headers=BEARER, timeout=5).text
    prom = {
        line.split()[0]: float(line.split()[1])
        for line in text.splitlines()
        if line and not line.startswith("#") and "{" not in line
    }
    for name in ("siogate_sockets", "siogate_connections_total", "siogate_packets_out_total"):
        assert prom[name] == metrics[name], name
    # Every unlabelled metric, and the histograms and labelled ones in their own forms.
    plain = {n for n, v in metrics.items() if isinstance(v, int | float)}
    histograms = {"siogate_api_latency_seconds"}
    assert plain == {n for n in prom if n.rpartition("_")[0] not in histograms}
    assert metrics["siogate_api_latency_seconds"]["buckets"][-1][0] == "+Inf"
    assert {"route": "/v1/emit", "status": "200"} in [
        labels for labels, _ in metrics["siogate_api_requests_total"]
    ]
    # Samples are a second apart, in order, with every documented member.
    times = [s["t"] for s in now["samples"]]
    assert times == sorted(times)
    assert all(0.5 < b - a < 2.5 for a, b in zip(times, times[1:], strict=False))
    assert set(now["samples"][-1]) >= {"t", "sockets", "rooms", "webhook_ms", "webhook_p95_ms"}

    await client.close()
    await wait_for(
        lambda: stats(gw, "?last=2")["stats"][0]["samples"][-1]["sockets"] == base,
        "the socket gone from the samples",
    )


async def test_last_keeps_only_recent_samples(gw: Gateway) -> None:
    await wait_for(lambda: len(stats(gw)["stats"][0]["samples"]) >= 4, "four samples")
    (node,) = stats(gw, "?last=1.5")["stats"]
    assert 1 <= len(node["samples"]) <= 2
    assert all(node["time"] - s["t"] < 1.5 for s in node["samples"])
    assert stats(gw, "?last=0")["stats"][0]["samples"] == []


@pytest.mark.parametrize("query", ["?last=abc", "?last=-1", "?last=nan", "?last=1e9", "?x=1"])
def test_bad_query_is_refused(gw: Gateway, query: str) -> None:
    r = httpx.get(f"{gw.url}/v1/stats{query}", headers=BEARER, timeout=5)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_field"


async def test_webhook_latency_and_errors_show_in_the_samples(
    start_gateway: Callable[..., Gateway], connect: Callable[[str], Any]
) -> None:
    def reply(request: Any) -> Reply:
        if request.payload.get("event") == "fail":
            return Reply(status=500)
        return Reply(body={"ack": ["ok"]}, delay=0.06)

    with WebhookReceiver(reply) as hook:
        gw = start_gateway(
            "--allow-anonymous", "--webhook-url", hook.url, "--webhook-secret", WEBHOOK_SECRET
        )
        client = await connect(gw.url)
        for _ in range(3):
            assert await client.call("slow") == ["ok"]
        answer = await client.call("fail")
        assert answer[0]["error"]["code"]

        def seen() -> dict[str, Any] | None:
            (node,) = stats(gw)["stats"]
            slow = [s for s in node["samples"] if (s["webhook_ms"] or 0) >= 50]
            failed = [s for s in node["samples"] if s["webhook_errors_per_s"] > 0]
            return node if slow and failed else None

        node = await wait_for(seen, "webhook latency and an error in the samples")
        slow = [s for s in node["samples"] if s["webhook_ms"]]
        # p95 is a bucket bound: 100 ms for calls of 60-100 ms.
        assert max(s["webhook_p95_ms"] for s in slow) >= 100
        assert node["metrics"]["siogate_webhook_failures_total"] >= 1
        latency = node["metrics"]["siogate_webhook_latency_seconds"]
        assert latency["count"] >= 4 and latency["buckets"][-1][0] == "+Inf"


# ---------------------------------------------------------------- the page


def test_page_headers_and_assets(gw: Gateway) -> None:
    r = httpx.get(f"{gw.url}/dashboard", headers=basic("ops", ADMIN_PASSWORD), timeout=5)
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    html = r.text
    # Nothing inline for the CSP to refuse.
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    total = len(r.content)
    for asset, kind in [
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        assert f'"dashboard/{asset}"' in html
        # No secret in them: served without credentials.
        a = httpx.get(f"{gw.url}/dashboard/{asset}", timeout=5)
        assert a.status_code == 200 and a.headers["content-type"].startswith(kind)
        assert a.headers["content-security-policy"] == csp
        total += len(a.content)
    assert total < 20_000
    assert httpx.get(f"{gw.url}/dashboard/other.js", timeout=5).status_code == 404
    assert httpx.post(f"{gw.url}/dashboard", headers=BEARER, timeout=5).status_code == 405
