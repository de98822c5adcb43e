"""@socket.io/admin-ui 0.5.1, the build shipped in its npm package, in Debian's Chromium
against ``siogate serve --admin``.

A small static HTTP server on loopback serves the UI (``ui/dist`` of the package, as a
self-hosted copy would be served); ``admin_ui.mjs`` (playwright-core) fills its
connection form with the gateway's URL and the admin credentials, then the test checks
on the UI's own pages that stock socket.io-client sockets (``tests/js``), their rooms
and their disconnection appear, and that the UI's disconnect button disconnects a
socket (the client is told ``io server disconnect``). Screenshots go to
``tests/results/``. Deselect with ``pytest -m 'not browser'``.
"""

from __future__ import annotations

import functools
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from test_nextjs_browser import CHROMIUM, RESULTS, Browser, DriverError, unavailable

from conftest import Gateway, spawn_gateway
from integration.jsclient import JsClient

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

E2E = Path(__file__).resolve().parent
DRIVER = E2E / "admin_ui.mjs"
UI_DIST = E2E / "node_modules" / "@socket.io" / "admin-ui" / "ui" / "dist"
PASSWORD = "a password for the admin UI"
STEP_TIMEOUT = 20.0


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def ui_url() -> Iterator[str]:
    """The UI's files on a loopback port of their own (another origin than siogate's)."""
    if not (UI_DIST / "index.html").exists():
        unavailable(f"{UI_DIST} is missing: run npm ci in tests/e2e")
    handler = functools.partial(_QuietHandler, directory=str(UI_DIST))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def gateway(ui_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    gw = spawn_gateway(
        "--admin",
        "--admin-password-hash", password_hash,
        # The UI's page is on another origin; its long-polling requests need CORS.
        "--cors-origin", ui_url,
        log_dir=tmp_path_factory.mktemp("admin-ui"),
    )  # fmt: skip
    yield gw
    gw.stop()


@pytest.fixture
def page(ui_url: str, tmp_path: Path) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    if shutil.which("node") is None:
        unavailable("node is missing")
    browser = Browser(tmp_path / "driver.log", DRIVER)
    try:
        browser.call("open", executablePath=str(CHROMIUM), url=ui_url, timeout=60)
        yield browser
    finally:
        try:
            screenshot(browser, "last")
        except DriverError:
            pass
        browser.close()


def screenshot(page: Browser, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    page.call("screenshot", path=str(RESULTS / f"admin-ui-{name}.png"))


def test_ui_shows_sockets_rooms_and_disconnects_one(page: Browser, gateway: Gateway) -> None:
    gw = gateway
    alice = JsClient(gw.url, auth={"token": gw.token("alice", rooms=["ops-room"])}).start()
    bob = JsClient(gw.url, auth={"token": gw.token("bob")}).start()
    try:
        alice_id = alice.connected()
        login = page.call(
            "login", serverUrl=gw.url, username="admin", password=PASSWORD, timeout=STEP_TIMEOUT
        )
        assert login == {"connected": True}, login

        # A socket that was there before the login (all_sockets), with its transport.
        row = page.call("socket", sid=alice_id)["cells"]
        assert row[0] == alice_id and row[2] in ("WebSocket", "HTTP long-polling")
        # One that arrives afterwards (socket_connected).
        bob_id = bob.connected()
        page.call("socket", sid=bob_id)
        # Rooms from the token, and one joined later through the HTTP API (room_joined).
        assert page.call("room", name="ops-room")["cells"][0] == "ops-room"
        joined = gw.api("POST", "/v1/join", json={"sockets": [bob_id], "room": "late-room"})
        assert joined.is_success, joined.text
        page.call("room", name="late-room")
        screenshot(page, "rooms")

        # A client that leaves by itself disappears (socket_disconnected).
        alice.disconnect()
        alice.wait_disconnect()
        page.call("socket", sid=alice_id, present=False)
        page.call("room", name="ops-room", present=False)

        # The UI's disconnect button: the client is told by the server.
        page.call("socket", sid=bob_id)
        screenshot(page, "sockets")
        page.call("disconnect", sid=bob_id)
        assert bob.wait_disconnect()["reason"] == "io server disconnect"
        page.call("socket", sid=bob_id, present=False)

        servers = page.call("servers", count=1)["rows"]
        assert len(servers) == 1
        assert page.call("errors")["errors"] == []
    finally:
        alice.close()
        bob.close()
