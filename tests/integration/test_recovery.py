"""Connection state recovery (--recovery-window) with the stock socket.io-client 4.8.

The client drops its Engine.IO connection (``socket.io.engine.close()``) and connects
again; within the window it must get ``socket.recovered``, the same id, its rooms (as
changed over the API while it was away) and every event it missed, once, in order,
before anything newer. Past the window, or with a forged pid or offset, it gets a new
socket and nothing of the old one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import jwt
import pytest
import socketio
from jsclient import JsClient
from recovery_race import emits_while_dropping
from test_token_expiry import TokenEndpoint, run_refreshing_client
from webhook_receiver import WebhookReceiver

from conftest import Gateway
from siogate.client import Client

pytestmark = pytest.mark.node

SECRET = "whsec-recovery-0123456789abcdef0123456789"


def client(gw: Gateway, token: str, **options: Any) -> JsClient:
    # Reconnection by hand (the driver's "connect" step after a "drop"), unless a test
    # turns the client's own reconnection on.
    opts = {"transports": ["websocket"], **options}
    return JsClient(gw.url, auth={"token": token}, options=opts)


def payloads(args: list[list[Any]]) -> list[Any]:
    """Event arguments without the trailing offset; checks that each has one."""
    for a in args:
        assert isinstance(a[-1], str) and "-" in a[-1], a
    return [a[0] if len(a) == 2 else a[:-1] for a in args]


def batch(gw: Gateway, emits: list[dict[str, Any]]) -> None:
    r = gw.api("POST", "/v1/batch", json={"emits": emits})
    assert r.status_code == 200, r.text


def wait_parked(gw: Gateway, sid: str, room: str = "news") -> None:
    """Until the gateway lists ``sid`` in ``room`` as disconnected (it noticed the loss)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = gw.api("GET", f"/v1/rooms/{room}/sockets")
        for s in r.json()["sockets"]:
            if s["id"] == sid and s.get("connected") is False:
                return
        time.sleep(0.02)
    raise AssertionError(f"{sid} never listed as disconnected: {r.json()}")


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


def test_recovers_id_rooms_and_missed_events_in_order(
    start_gateway: Callable[..., Gateway], hook: WebhookReceiver
) -> None:
    gw = start_gateway(
        "--recovery-window", "30", "--webhook-url", hook.url, "--webhook-secret", SECRET
    )
    with client(gw, gw.token("alice", rooms=["news"])) as js:
        first = js.connect()
        sid = first["id"]
        assert first["recovered"] is False
        assert gw.api("POST", "/v1/join", json={"sockets": [sid], "room": "extra"}).is_success
        gw.emit("e", "before", rooms=["news"])
        assert payloads(js.wait_events("e", 1)) == ["before"]

        js.send(op="drop")
        js.wait_disconnect()
        wait_parked(gw, sid)
        # While away: a room left and one joined over the API, and events of every kind.
        assert gw.api("POST", "/v1/leave", json={"sockets": [sid], "room": "extra"}).is_success
        assert gw.api("POST", "/v1/join", json={"sockets": [sid], "room": "late"}).is_success
        gw.emit("e", "room", rooms=["news"])
        gw.emit("e", "not-mine", rooms=["extra"])  # left above
        gw.emit("e", "joined", rooms=["late"])
        gw.emit("e", "user", rooms=["user:alice"])
        gw.emit("e", "direct", rooms=[sid])
        gw.emit("e", "everyone")
        gw.emit("e", "excluded", rooms=["news"], **{"except": ["late"]})
        batch(gw, [{"event": "n", "args": [i], "rooms": ["news"]} for i in range(1000)])
        # Emits with an ack request are not kept (nobody could answer them).
        r = gw.api(
            "POST", "/v1/emit", json={"event": "e", "args": ["ack"], "ack": {"timeout_ms": 200}}
        )
        assert r.status_code == 200 and r.json()["recipients"] == 0, r.text

        again = js.connect()
        assert again["type"] == "connected", again
        assert again["id"] == sid and again["recovered"] is True
        gw.emit("e", "after", rooms=["late"])
        got = payloads(js.wait_events("e", 7))
        assert got == ["before", "room", "joined", "user", "direct", "everyone", "after"]
        numbers = payloads(js.wait_events("n", 1000))
        assert numbers == list(range(1000))
        # Replayed before "after": every missed event came first.
        kinds = [o.get("event") for o in js.observations if o.get("type") == "event"]
        assert kinds.index("e", kinds.index("n") + 999) > max(
            i for i, k in enumerate(kinds) if k == "n"
        )
        # Its rooms are the ones it has now.
        members = gw.api("GET", "/v1/rooms/late/sockets").json()["sockets"]
        assert [(s["id"], s.get("connected", True)) for s in members] == [(sid, True)]
        assert gw.api("GET", "/v1/rooms/extra/sockets").json()["sockets"] == []

        metrics = gw.api("GET", "/metrics").text
        assert "siogate_recovered_sockets_total 1" in metrics, metrics

    # No disconnect/connect pair for the recovered loss: one connect, and the
    # disconnect of the client leaving for good at the end.
    time.sleep(0.5)
    kinds = [json.loads(r.body)["type"] for r in hook.requests]
    assert kinds.count("connect") == 1, kinds
    disconnects = [json.loads(r.body) for r in hook.requests if b'"disconnect"' in r.body]
    assert [d["reason"] for d in disconnects] == ["client namespace disconnect"]


def test_polling_client_recovers(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--recovery-window", "30")
    with client(gw, gw.token("bob", rooms=["news"]), transports=["polling"]) as js:
        sid = js.connected()
        js.send(op="drop")
        js.wait_disconnect()
        wait_parked(gw, sid)
        for i in range(3):
            gw.emit("e", i, rooms=["news"])
        again = js.connect()
        assert (again["id"], again["recovered"]) == (sid, True)
        assert payloads(js.wait_events("e", 3)) == [0, 1, 2]


def test_past_the_window_is_a_new_socket(
    start_gateway: Callable[..., Gateway], hook: WebhookReceiver
) -> None:
    gw = start_gateway(
        "--recovery-window", "1", "--webhook-url", hook.url, "--webhook-secret", SECRET
    )
    with client(gw, gw.token("carol", rooms=["news"])) as js:
        sid = js.connected()
        js.send(op="drop")
        js.wait_disconnect()
        wait_parked(gw, sid)
        gw.emit("e", "missed", rooms=["news"])
        hook.wait_for(lambda r: b'"disconnect"' in r.body, timeout=10)
        again = js.connect()
        assert again["recovered"] is False and again["id"] != sid
        gw.emit("e", "new", rooms=["news"])
        assert payloads(js.wait_events("e", 1)) == ["new"]
        time.sleep(0.2)
        assert payloads(js.events("e")) == ["new"]
    ended = [json.loads(r.body) for r in hook.requests if b'"disconnect"' in r.body][0]
    assert ended["socket"]["id"] == sid
    assert (ended["reason"], ended["recovery"]) == ("transport close", "expired")


class Polling:
    """A raw Engine.IO long-polling session (to send hand-made CONNECT auth)."""

    opened: list[Polling] = []

    def __init__(self, gw: Gateway) -> None:
        self.http = httpx.Client(base_url=gw.url, timeout=10)
        r = self.http.get("/socket.io/", params={"EIO": "4", "transport": "polling"})
        self.path = f"/socket.io/?EIO=4&transport=polling&sid={json.loads(r.text[1:])['sid']}"
        self.buffered: list[str] = []
        Polling.opened.append(self)

    def connect(self, auth: dict[str, Any]) -> dict[str, Any]:
        """CONNECT to "/"; the answer's packet type and data."""
        assert self.http.post(self.path, content=("40" + json.dumps(auth)).encode()).text == "ok"
        answer, *self.buffered = self.http.get(self.path).text.split("\x1e")
        return {"type": answer[:2], **json.loads(answer[2:])}

    def packets(self) -> list[str]:
        """Packets received after the CONNECT answer (one poll)."""
        if self.buffered:
            got, self.buffered = self.buffered, []
            return got
        return self.http.get(self.path).text.split("\x1e")

    def drop(self) -> None:
        self.http.post(self.path, content=b"1")
        self.http.close()


@pytest.fixture(autouse=True)
def close_polling() -> Iterator[None]:
    yield
    for p in Polling.opened:
        p.http.close()
    Polling.opened.clear()


def test_forged_pid_or_offset_gets_a_new_socket(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--recovery-window", "30")
    victim = Polling(gw)
    first = victim.connect({"token": gw.token("dave", rooms=["secret"])})
    assert first["type"] == "40" and len(first["pid"]) >= 20
    gw.emit("e", "seen", rooms=["secret"])
    offset = json.loads(victim.packets()[0][2:])[-1]
    victim.drop()
    wait_parked(gw, first["sid"], "secret")
    gw.emit("e", "private", rooms=["secret"])

    forged = [
        {"pid": "x" * 22, "offset": offset},  # unknown pid
        {"pid": first["pid"], "offset": offset + "0"},  # offset never handed out
        {"pid": first["pid"], "offset": "0-1"},  # offset of another run
        {"pid": first["pid"], "offset": 7},  # not a string
    ]
    for auth in forged:
        other = Polling(gw)
        answer = other.connect({"token": gw.token("dave"), **auth})
        assert answer["type"] == "40" and answer["sid"] != first["sid"], (auth, answer)
        assert answer["pid"] != first["pid"]
        gw.emit("e", "probe", rooms=[answer["sid"]])
        assert all("private" not in p for p in other.packets())
    # Another user with the right pid and offset: a new socket, nothing leaks.
    mallory = Polling(gw)
    answer = mallory.connect({"token": gw.token("mallory"), "pid": first["pid"], "offset": offset})
    assert answer["sid"] != first["sid"]
    # The victim can still recover (the forgeries did not end its session).
    back = Polling(gw)
    answer = back.connect({"token": gw.token("dave"), "pid": first["pid"], "offset": offset})
    assert (answer["sid"], answer["pid"]) == (first["sid"], first["pid"])
    assert json.loads(back.packets()[0][2:])[:2] == ["e", "private"]


def test_token_is_checked_again_on_recovery(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--recovery-window", "30")
    p = Polling(gw)
    first = p.connect({"token": gw.token("erin", rooms=["news"])})
    p.drop()
    wait_parked(gw, first["sid"])
    expired = jwt.encode(
        {"sub": "erin", "exp": int(time.time()) - 60}, gw.jwt_secret, algorithm="HS256"
    )
    refused = Polling(gw).connect({"token": expired, "pid": first["pid"]})
    assert refused["type"] == "44", refused


def test_emits_while_reconnecting_are_neither_lost_nor_duplicated(
    start_gateway: Callable[..., Gateway],
) -> None:
    gw = start_gateway("--recovery-window", "30")
    total = 600
    options = {"reconnection": True, "reconnectionDelay": 50, "randomizationFactor": 0}
    with client(gw, gw.token("frank", rooms=["race"]), **options) as js:
        sid = js.connected()
        emits_while_dropping(
            js, sid, [gw.url], gw.api_key, "race", total, interval=0.15, connects_at_least=2
        )


def test_server_disconnect_or_shutdown_ends_a_waiting_socket(
    start_gateway: Callable[..., Gateway], hook: WebhookReceiver
) -> None:
    gw = start_gateway(
        "--recovery-window", "60", "--webhook-url", hook.url, "--webhook-secret", SECRET
    )
    first, second = Polling(gw), Polling(gw)
    a = first.connect({"token": gw.token("hank", rooms=["news"])})
    b = second.connect({"token": gw.token("ivy", rooms=["news"])})
    first.drop()
    second.drop()
    wait_parked(gw, a["sid"])
    wait_parked(gw, b["sid"])
    with Client(gw.url, gw.api_key) as sdk:
        listed = {s.id: s.connected for s in sdk.sockets("news").sockets}
    assert listed == {a["sid"]: False, b["sid"]: False}
    r = gw.api("POST", "/v1/disconnect", json={"sockets": [a["sid"]]})
    assert r.status_code == 200
    ended = json.loads(hook.wait_for(lambda r: b'"disconnect"' in r.body).body)
    assert ended["socket"]["id"] == a["sid"]
    assert (ended["reason"], ended["recovery"]) == ("server namespace disconnect", "disconnected")
    # It is gone: a claim with its pid gets a new socket.
    again = Polling(gw).connect({"token": gw.token("hank"), "pid": a["pid"]})
    assert again["sid"] != a["sid"]

    gw.stop()
    hook.wait_for(lambda r: b'"disconnect"' in r.body, count=3)
    ends = [json.loads(r.body) for r in hook.requests if b'"disconnect"' in r.body]
    [waiting] = [e for e in ends if e["socket"]["id"] == b["sid"]]
    assert (waiting["reason"], waiting["recovery"]) == ("server shutting down", "disconnected")


async def test_python_socketio_client_sees_the_trailing_offset(
    start_gateway: Callable[..., Gateway],
) -> None:
    """python-socketio (5.x) does not implement recovery: it connects normally, and with
    recovery on its handlers get the offset as one more argument (the documented caveat)."""
    gw = start_gateway("--recovery-window", "30")
    got: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    sio = socketio.AsyncClient()
    sio.on("e", lambda *args: got.put_nowait(args))
    await sio.connect(gw.url, auth={"token": gw.token("judy", rooms=["news"])})
    try:
        r = await asyncio.to_thread(gw.emit, "e", 1, 2, rooms=["news"])
        assert r.status_code == 200
        args = await asyncio.wait_for(got.get(), 5)
        assert args[:2] == (1, 2) and len(args) == 3 and r.json()["offset"] == args[2]
    finally:
        await sio.disconnect()


def test_a_socket_closed_at_its_token_exp_keeps_its_id_with_a_fresh_token(
    start_gateway: Callable[..., Gateway],
) -> None:
    """The session is closed at exp ("token expired", a loss); the stock client fetches a
    fresh token from its auth function and gets its socket back."""
    gw = start_gateway("--recovery-window", "30")
    endpoint = TokenEndpoint(gw.jwt_secret, first_ttl=2.0)
    proc = None
    try:
        seen, proc = run_refreshing_client(gw, endpoint, None)
        kinds = [o["type"] for o in seen]
        assert kinds == ["token", "connect", "disconnect", "token", "connect", "ready"], seen
        assert seen[4]["id"] == seen[1]["id"]
        assert len(endpoint.issued) == 2
        sockets = gw.api("GET", "/v1/rooms/user:alice/sockets").json()["sockets"]
        assert [(s["id"], s.get("connected", True)) for s in sockets] == [(seen[1]["id"], True)]
    finally:
        if proc is not None:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            proc.wait(10)
            proc.stdout.close()
        endpoint.close()
