"""``serve --admin``: the namespace @socket.io/admin-ui speaks, checked with the stock
socket.io-client playing the UI's part (what it sends and what it reads is taken from
@socket.io/admin-ui 0.5.1; tests/e2e/test_admin_ui_browser.py drives the UI itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from jsclient import JsClient, JsClientError

from conftest import API_KEY, JWT_SECRET, ROOT, Gateway, RedisServer, spawn_gateway

pytestmark = pytest.mark.node

PASSWORD = "correct horse battery staple"
# Cost 4: the lowest bcrypt allows, so that the tests do not wait on the hash.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
LOGIN = {"username": "admin", "password": PASSWORD}


@pytest.fixture
def admin_gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    return start_gateway("--allow-anonymous", "--admin", "--admin-password-hash", HASH)


@pytest.fixture
def clients() -> Iterator[Callable[..., JsClient]]:
    made: list[JsClient] = []

    def make(url: str, **kw: Any) -> JsClient:
        client = JsClient(url, **kw).start()
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def event_where(client: JsClient, name: str, check: Callable[[list[Any]], bool]) -> list[Any]:
    """Wait for an event named ``name`` whose args pass ``check``."""

    def pred(_: object) -> list[Any] | None:
        return next((a for a in client.events(name) if check(a)), None)

    return client.wait_until(pred, 10, f"{name} matching")  # type: ignore[no-any-return]


def test_admin_sees_sockets_rooms_and_disconnects_them(
    admin_gateway: Gateway, clients: Callable[..., JsClient]
) -> None:
    gw = admin_gateway
    early = clients(gw.url, auth={"token": gw.token("alice", rooms=["lobby"])})
    early_id = early.connected()

    admin = clients(gw.url, namespace="/admin", auth=LOGIN)
    admin.connected()
    [session_id] = admin.wait_event("session")
    assert isinstance(session_id, str) and len(session_id) >= 16
    [config] = admin.wait_event("config")
    assert {"JOIN", "LEAVE", "DISCONNECT"} <= set(config["supportedFeatures"])
    [sockets] = admin.wait_event("all_sockets")
    [listed] = [s for s in sockets if s["id"] == early_id]
    assert listed["nsp"] == "/"
    assert set(listed["rooms"]) == {early_id, "lobby", "user:alice"}
    assert listed["data"] == {"user": "alice"}
    [stats] = admin.wait_event("server_stats")
    assert stats["serverId"] and stats["pid"] > 0 and stats["uptime"] >= 0
    assert stats["clientsCount"] >= 1
    assert {"name": "/", "socketsCount": 1} in stats["namespaces"]

    # Live: a new socket, a room joined through the HTTP API, one joined from the UI.
    late = clients(gw.url)
    late_id = late.connected()
    [connected, when] = event_where(admin, "socket_connected", lambda a: a[0]["id"] == late_id)
    assert connected["rooms"] == [late_id] and when.endswith("Z")
    # It connected over long-polling and upgrades: the next stats poll reports that.
    assert connected["transport"] == "polling"
    late.wait_transport("websocket")
    event_where(
        admin,
        "socket_updated",
        lambda a: a[0] == {"id": late_id, "nsp": "/", "transport": "websocket"},
    )
    assert gw.api("POST", "/v1/join", json={"sockets": [late_id], "room": "api-room"}).is_success
    event_where(admin, "room_joined", lambda a: a[:3] == ["/", "api-room", late_id])
    admin.emit("join", "/", "ui-room", late_id)
    event_where(admin, "room_joined", lambda a: a[:3] == ["/", "ui-room", late_id])
    assert gw.emit("to-ui-room", 7, rooms=["ui-room"]).is_success
    assert late.wait_event("to-ui-room") == [7]
    admin.emit("leave", "/", "ui-room", late_id)
    event_where(admin, "room_left", lambda a: a[:3] == ["/", "ui-room", late_id])

    # "disconnect" in the UI: the client is told by the server, the UI sees it go.
    admin.emit("_disconnect", "/", False, late_id)
    assert late.wait_disconnect()["reason"] == "io server disconnect"
    gone = event_where(admin, "socket_disconnected", lambda a: a[1] == late_id)
    assert gone[0] == "/" and gone[2] == "server namespace disconnect"
    event_where(admin, "room_left", lambda a: a[:3] == ["/", "api-room", late_id])

    # A room as the filter: every socket in it.
    admin.emit("_disconnect", "/", True, "lobby")
    assert early.wait_disconnect()["reason"] == "io server disconnect"

    # The session id logs in again without the password; a made-up one does not.
    again = clients(gw.url, namespace="/admin", auth={"sessionId": session_id})
    again.connected()
    again.wait_event("all_sockets")
    forged = clients(gw.url, namespace="/admin", auth={"sessionId": "0" * 32})
    assert forged.connect()["message"] == "invalid credentials"


@pytest.mark.parametrize(
    "auth",
    [
        {"username": "admin", "password": "wrong"},
        {"username": "root", "password": PASSWORD},
        {"username": "admin", "password": PASSWORD + "x" * 100},  # past bcrypt's 72 bytes
        {"username": "admin"},
        None,
    ],
)
def test_bad_credentials_are_refused(
    admin_gateway: Gateway, clients: Callable[..., JsClient], auth: dict[str, Any] | None
) -> None:
    admin = clients(admin_gateway.url, namespace="/admin", auth=auth)
    obs = admin.connect()
    assert obs["type"] == "connect_error" and obs["message"] == "invalid credentials"
    assert admin.events("all_sockets") == []


def test_admin_namespace_is_not_an_ordinary_namespace(
    admin_gateway: Gateway, clients: Callable[..., JsClient]
) -> None:
    """A JWT does not open /admin, and API emits to /admin reach no admin."""
    gw = admin_gateway
    admin = clients(gw.url, namespace="/admin", auth={"token": gw.token("alice")})
    assert admin.connect()["type"] == "connect_error"
    admin = clients(gw.url, namespace="/admin", auth=LOGIN)
    admin.connected()
    admin.wait_event("all_sockets")
    assert gw.emit("sneaky", 1, namespace="/admin").is_success
    with pytest.raises(JsClientError):
        admin.wait_event("sneaky", timeout=1)


def test_no_auth_on_loopback(
    start_gateway: Callable[..., Gateway], clients: Callable[..., JsClient]
) -> None:
    gw = start_gateway("--allow-anonymous", "--admin", "--admin-no-auth", "--host", "127.0.0.1")
    admin = clients(gw.url, namespace="/admin")
    admin.connected()
    assert admin.wait_event("all_sockets") == [[]]
    assert admin.events("session") == []


def serve_fails(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "siogate", "serve", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SIOGATE_API_KEY": API_KEY, "SIOGATE_JWT_SECRET": JWT_SECRET},
    )
    assert proc.returncode == 2, proc.stderr  # EXIT_CONFIG
    return proc.stderr


def test_no_auth_refused_off_loopback() -> None:
    err = serve_fails("--host", "0.0.0.0", "--admin", "--admin-no-auth")
    assert "refusing --admin-no-auth" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--admin"], "admin needs admin_password_hash"),
        (["--admin", "--admin-password-hash", "hunter2"], "not a bcrypt hash"),
        (["--admin", "--admin-password-hash", HASH, "--admin-no-auth"], "exclude each other"),
    ],
)
def test_admin_settings_are_checked(args: list[str], message: str) -> None:
    assert message in serve_fails(*args)


@pytest.mark.redis
def test_cluster_admin_sees_and_acts_on_the_other_nodes_sockets(
    redis_server: RedisServer, tmp_path: Path, clients: Callable[..., JsClient]
) -> None:
    common = ["--allow-anonymous", "--redis-url", redis_server.url, "--cluster-timeout", "500"]
    a = spawn_gateway(*common, "--admin", "--admin-password-hash", HASH, log_dir=tmp_path)
    # Node B does not serve the admin namespace; it still answers for its sockets.
    b = spawn_gateway(*common, log_dir=tmp_path)
    try:
        on_b = clients(b.url, transports=["websocket"], auth={"token": b.token("bob")})
        b_id = on_b.connected()
        admin = clients(a.url, namespace="/admin", auth=LOGIN)
        admin.connected()
        [sockets] = admin.wait_event("all_sockets")
        assert b_id in {s["id"] for s in sockets}
        servers: set[str] = set()

        def two_servers(_: object) -> bool:
            servers.update(s[0]["serverId"] for s in admin.events("server_stats"))
            return len(servers) == 2

        admin.wait_until(two_servers, 10, "server_stats from both nodes")

        # A socket that arrives on B later shows up within a stats interval.
        later = clients(b.url, transports=["websocket"])
        later_id = later.connected()
        event_where(admin, "socket_connected", lambda x: x[0]["id"] == later_id)

        # Actions from the admin on A reach B's sockets.
        admin.emit("join", "/", "from-a", later_id)
        event_where(admin, "room_joined", lambda x: x[:3] == ["/", "from-a", later_id])
        admin.emit("_disconnect", "/", False, b_id)
        assert on_b.wait_disconnect()["reason"] == "io server disconnect"
        event_where(admin, "socket_disconnected", lambda x: x[1] == b_id)
    finally:
        a.stop()
        b.stop()
