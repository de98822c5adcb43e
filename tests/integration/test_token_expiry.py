"""A socket does not outlive its handshake token: its session is closed at ``exp``.

The gateway ends the whole Engine.IO session (a CLOSE packet, reason "token expired")
rather than leaving the namespace, so that the stock socket.io-client reconnects by
itself and, when its ``auth`` option is a function, fetches a fresh token first.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from jsclient import JS_DIR, ensure_node_modules, node_path
from webhook_receiver import WebhookReceiver, of_type

from conftest import Gateway

WEBHOOK_SECRET = "whsec-expiry-0123456789abcdef0123456789"
HANDLERS = "tests.integration.handlers_app:Handlers"
# How early or late (seconds) the close may come: generous, the machine may be loaded.
EARLY = 0.25
LATE = 3.0


# ---------------------------------------------------------------- raw polling client


class Polling:
    """One Engine.IO long-polling session, driven by hand."""

    def __init__(self, gw: Gateway) -> None:
        self.client = httpx.Client(base_url=gw.url, timeout=30)
        r = self.client.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert r.status_code == 200 and r.text.startswith("0"), r.text
        self.sid = json.loads(r.text[1:])["sid"]
        self.path = f"/socket.io/?EIO=4&transport=polling&sid={self.sid}"

    def post(self, packet: str) -> None:
        assert self.client.post(self.path, content=packet.encode()).text == "ok"

    def poll(self) -> str:
        return self.client.get(self.path).text

    def connect(self, token: str) -> str:
        """CONNECT to "/" with ``token``; the socket id."""
        self.post("40" + json.dumps({"token": token}))
        answer = self.poll().split("\x1e")[0]
        assert answer.startswith("40{"), answer
        return str(json.loads(answer[2:])["sid"])

    def wait_close(self) -> tuple[list[str], float]:
        """Poll until the server sends CLOSE; every packet received, and when it came."""
        packets: list[str] = []
        while "1" not in packets:
            packets += self.poll().split("\x1e")
            assert len(packets) < 10, packets
        return packets, time.time()

    def close(self) -> None:
        self.client.close()


def token(gw: Gateway, exp: float, sub: str = "alice") -> str:
    return jwt.encode({"sub": sub, "exp": exp}, gw.jwt_secret, algorithm="HS256")


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def with_hook(start_gateway: Callable[..., Gateway], hook: WebhookReceiver, *args: str) -> Gateway:
    return start_gateway("--webhook-url", hook.url, "--webhook-secret", WEBHOOK_SECRET, *args)


@pytest.mark.parametrize(
    ("leeway", "handlers"),
    [(0.0, None), (1.0, None), (0.0, HANDLERS)],
    ids=["exp", "exp+leeway", "on_connect-handler"],
)
def test_session_closes_at_exp_with_reason_token_expired(
    start_gateway: Callable[..., Gateway],
    hook: WebhookReceiver,
    leeway: float,
    handlers: str | None,
) -> None:
    extra = ["--handlers", handlers] if handlers else []
    gw = with_hook(start_gateway, hook, "--jwt-leeway", str(leeway), *extra)
    client = Polling(gw)
    try:
        exp = time.time() + 1.5
        sid = client.connect(token(gw, exp))
        # The long poll stays open until the server has something to say: the CLOSE.
        packets, closed_at = client.wait_close()
    finally:
        client.close()
    # An Engine.IO CLOSE ("1"), not a namespace DISCONNECT ("41").
    assert packets[-1] == "1" and "41" not in packets, packets
    deadline = exp + leeway
    assert deadline - EARLY <= closed_at <= deadline + LATE, closed_at - deadline
    gone = hook.wait_for(of_type("disconnect", socket={"id": sid, "user": "alice"}))
    assert gone.payload["reason"] == "token expired"
    assert gw.api("GET", "/v1/rooms/user:alice/sockets").json()["sockets"] == []


def test_a_socket_that_left_does_not_close_its_session_later(
    start_gateway: Callable[..., Gateway], hook: WebhookReceiver
) -> None:
    gw = with_hook(start_gateway, hook)
    client = Polling(gw)
    try:
        exp = time.time() + 1.0
        first = client.connect(token(gw, exp))
        client.post("41")  # leave "/" but keep the Engine.IO session
        hook.wait_for(of_type("disconnect", socket={"id": first, "user": "alice"}))
        time.sleep(max(0.0, exp - time.time()) + 0.5)
        # Still open: a second CONNECT on the same session works, with a longer token.
        second = client.connect(token(gw, time.time() + 60, sub="bob"))
    finally:
        client.close()
    assert second != first
    reasons = [
        r.payload["reason"]
        for r in hook.matching(of_type("disconnect"))
        if r.payload["socket"]["id"] == first
    ]
    assert reasons == ["client namespace disconnect"]
    assert [s["id"] for s in gw.api("GET", "/v1/rooms/user:bob/sockets").json()["sockets"]] == [
        second
    ]
    assert "Traceback" not in gw.log()


def test_sockets_without_a_token_are_not_timed(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--allow-anonymous")
    client = Polling(gw)
    try:
        client.post("40")
        assert client.poll().startswith("40{")
        client.post("42" + json.dumps(["still-here"]))  # no webhook: just accepted
        assert client.client.get("/healthz").status_code == 200
    finally:
        client.close()


# ---------------------------------------------------------------- the stock client


class TokenEndpoint:
    """``GET /api/token`` as an app backend would serve it: a fresh token per call.

    The first token lives ``first_ttl`` seconds, the later ones a minute.
    """

    def __init__(self, secret: str, first_ttl: float) -> None:
        self.issued: list[float] = []  # exp of each token handed out
        lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server naming scheme
                with lock:
                    ttl = first_ttl if not endpoint.issued else 60.0
                    exp = time.time() + ttl
                    endpoint.issued.append(exp)
                body = json.dumps(
                    {"token": jwt.encode({"sub": "alice", "exp": exp}, secret, "HS256")}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/token"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def run_refreshing_client(
    gw: Gateway, endpoint: TokenEndpoint, transports: str | None
) -> tuple[list[dict[str, Any]], subprocess.Popen[str]]:
    """Start tests/js/token_refresh.mjs; return its observations up to its second connect."""
    ensure_node_modules()
    args = [node_path(), str(JS_DIR / "token_refresh.mjs"), gw.url, endpoint.url, "2", "30000"]
    if transports:
        args.append(transports)
    proc = subprocess.Popen(
        args, cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["type"] in ("ready", "timeout"):
            break
    return seen, proc


@pytest.mark.node
@pytest.mark.parametrize("transports", [None, "polling"], ids=["upgrade", "polling"])
def test_stock_client_reconnects_with_a_fresh_token(
    start_gateway: Callable[..., Gateway], transports: str | None
) -> None:
    gw = start_gateway()
    endpoint = TokenEndpoint(gw.jwt_secret, first_ttl=2.0)
    proc: subprocess.Popen[str] | None = None
    try:
        seen, proc = run_refreshing_client(gw, endpoint, transports)
        kinds = [o["type"] for o in seen]
        assert kinds == ["token", "connect", "disconnect", "token", "connect", "ready"], seen
        first, dropped, second = seen[1], seen[2], seen[4]
        # Dropped as a lost connection (which the client retries), not kicked out of the
        # namespace ("io server disconnect", which it would not retry).
        assert dropped["reason"] == "transport close", dropped
        exp = endpoint.issued[0]
        assert exp - EARLY <= dropped["t"] <= exp + LATE, dropped["t"] - exp
        assert second["id"] != first["id"]
        assert len(endpoint.issued) == 2  # one fetch per handshake
        sockets = gw.api("GET", "/v1/rooms/user:alice/sockets").json()["sockets"]
        assert [s["id"] for s in sockets] == [second["id"]]
    finally:
        if proc is not None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        endpoint.close()
