"""siogate's built-in dashboard (``GET /dashboard``) in Debian's Chromium.

``dashboard.mjs`` (playwright-core) opens the page and answers the browser's login
prompt with the admin credentials (``--admin-password-hash``, a bcrypt hash); the test
connects a stock socket.io-client (``tests/js``) and checks that the page shows it
within a few seconds, that the sockets chart draws a line that rises with it, and that
the page logs no console error (a CSP violation would be one) and never puts the API
key in a URL. Screenshots go to ``tests/results/``. Deselect with ``pytest -m 'not
browser'``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from test_nextjs_browser import CHROMIUM, RESULTS, Browser, DriverError, unavailable

from conftest import API_KEY, Gateway, spawn_gateway
from integration.jsclient import JsClient
from integration.webhook_receiver import Reply, WebhookReceiver

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

E2E = Path(__file__).resolve().parent
DRIVER = E2E / "dashboard.mjs"
PASSWORD = "a password for the dashboard"
# One sample a second and a poll every two seconds: a change shows within about 3 s.
SHOWS_WITHIN = 8.0


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    """A gateway with admin credentials and a webhook that answers events in ~40 ms."""
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    with WebhookReceiver(lambda _: Reply(body={"ack": ["pong"]}, delay=0.04)) as hook:
        gw = spawn_gateway(
            "--admin-password-hash", password_hash,
            "--webhook-url", hook.url,
            "--webhook-secret", "whsec-0123456789abcdef0123456789abcdef",
            log_dir=tmp_path,
        )  # fmt: skip
        yield gw
        gw.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    if shutil.which("node") is None:
        unavailable("node is missing")
    driver = Browser(tmp_path / "driver.log", DRIVER)
    try:
        yield driver
    finally:
        try:
            screenshot(driver, "last")
        except DriverError:
            pass
        driver.close()


def screenshot(page: Browser, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    page.call("screenshot", path=str(RESULTS / f"dashboard-{name}.png"))


def test_dashboard_shows_a_connected_client_and_draws_it(
    browser: Browser, gateway: Gateway
) -> None:
    gw = gateway
    opened = browser.call(
        "open",
        executablePath=str(CHROMIUM),
        url=f"{gw.url}/dashboard",
        username="admin",
        password=PASSWORD,
        timeout=60,
    )
    assert opened["status"] == 200
    empty = browser.call("shows", sockets=0, timeout=SHOWS_WITHIN)
    assert empty["nodes"] == "1"

    client = JsClient(gw.url, auth={"token": gw.token("alice")}).start()
    try:
        client.connected()
        seen = browser.call("shows", sockets=1, timeout=SHOWS_WITHIN)
        # Events answered by the webhook: their latency is charted.
        for _ in range(3):
            assert client.call("ping") == ["pong"]
        latency = browser.call("latency", timeout=SHOWS_WITHIN)
        screenshot(browser, "one-client")
    finally:
        client.close()

    # One row for the one node, with its socket.
    (row,) = seen["rows"]
    assert row[0].endswith("(this node)") and row[1] == "up" and row[2] == "1"
    # The sockets line rises to the client: its last point is above its first.
    (line,) = seen["charts"]["chart-sockets"]
    assert len(line["points"]) >= 2
    assert line["points"][-1][1] < line["points"][0][1]
    assert set(seen["charts"]) == {
        "chart-sockets",
        "chart-messages",
        "chart-latency",
        "chart-hooks",
    }

    assert "mean" in latency["series"]
    mean_ms = float(latency["card"].split(" / ")[0])
    assert 40 <= mean_ms < 1000, latency

    requests = browser.call("requests")["requests"]
    polls = [r for r in requests if "/v1/stats" in r["url"]]
    assert len(polls) >= 2
    # The credentials travel in the Authorization header, never in a URL.
    assert all(r["authorization"] and r["authorization"].startswith("Basic ") for r in polls)
    assert not [r["url"] for r in requests if API_KEY in r["url"] or PASSWORD in r["url"]]
    assert browser.call("errors")["errors"] == []
