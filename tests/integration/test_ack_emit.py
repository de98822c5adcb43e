"""``POST /v1/emit`` with ``ack``: the response carries every recipient's reply.

Clients are real: the official socket.io-client from Node (``tests/js/ack_clients.mjs``,
which answers as applications do, ``socket.on("ask", (data, cb) => cb(reply))``) and
python-socketio, against a real ``siogate serve``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from typing import Any

import httpx
import pytest
import socketio
from jsclient import JS_DIR, ensure_node_modules, node_path

from conftest import API_KEY, Gateway
from siogate.client import AckReply, AckResult, AsyncClient, Client

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


class AckClients:
    """N socket.io-client sockets in one Node process that answer ``ask`` acks."""

    def __init__(self, url: str, count: int, silent: tuple[int, ...] = ()) -> None:
        ensure_node_modules()
        config = {"url": url, "count": count, "silent": list(silent), "timeout": 90_000}
        self.proc = subprocess.Popen(
            [node_path(), str(JS_DIR / "ack_clients.mjs"), json.dumps(config)],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.ids: dict[int, str] = {}
        self.events: list[int] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(60):
            self.close()
            raise AssertionError(f"only {len(self.ids)} of {count} sockets connected")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            obs = json.loads(line)
            if obs["type"] == "connected":
                self.ids[obs["i"]] = obs["id"]
            elif obs["type"] == "event":
                self.events.append(obs["i"])
            elif obs["type"] == "ready":
                self._ready.set()

    def send(self, step: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(step) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"op": "exit"})
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def ack_emit(gw: Gateway, timeout_ms: int, data: Any = None, **body: Any) -> httpx.Response:
    payload = {"event": "ask", "data": data, "ack": {"timeout_ms": timeout_ms}, **body}
    return httpx.post(f"{gw.url}/v1/emit", json=payload, headers=HEADERS, timeout=90)


def replies(result: dict[str, Any]) -> dict[str, Any]:
    return {a["socket"]: a["args"] for a in result["acks"]}


# ---------------------------------------------------------------- socket.io-client


@pytest.mark.node
def test_one_js_socket_answers(gateway: Gateway) -> None:
    clients = AckClients(gateway.url, 1)
    try:
        started = time.monotonic()
        response = ack_emit(gateway, 10_000, {"q": "ping", "n": [1, 2]})
        elapsed = time.monotonic() - started
    finally:
        clients.close()
    assert response.status_code == 200, response.text
    result = response.json()
    sid = clients.ids[0]
    assert result["recipients"] == 1 and result["timeouts"] == []
    assert replies(result) == {sid: [{"i": 0, "id": sid, "echo": {"q": "ping", "n": [1, 2]}}]}
    assert elapsed < 5  # answered long before the 10 s timeout


@pytest.mark.node
def test_a_hundred_js_sockets_some_silent(start_gateway: Any) -> None:
    gw = start_gateway("--allow-anonymous", "--max-connections-per-ip", "0")
    silent = (3, 50, 97)
    clients = AckClients(gw.url, 100, silent)
    try:
        started = time.monotonic()
        response = ack_emit(gw, 3_000, "hello")
        elapsed = time.monotonic() - started
    finally:
        clients.close()
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["recipients"] == 100
    assert sorted(result["timeouts"]) == sorted(clients.ids[i] for i in silent)
    expected = {
        sid: [{"i": i, "id": sid, "echo": "hello"}]
        for i, sid in clients.ids.items()
        if i not in silent
    }
    assert replies(result) == expected
    # The silent ones are waited for until the timeout, not much longer.
    assert 2.9 < elapsed < 10


@pytest.mark.node
def test_disconnect_while_pending_is_a_timeout_at_once(gateway: Gateway) -> None:
    clients = AckClients(gateway.url, 2, silent=(1,))
    try:
        result: dict[str, Any] = {}

        def call() -> None:
            started = time.monotonic()
            response = ack_emit(gateway, 30_000, 1)
            result.update(response.json(), elapsed=time.monotonic() - started)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 10
        while 1 not in clients.events and time.monotonic() < deadline:
            time.sleep(0.02)
        assert 1 in clients.events, "the silent socket never got the emit"
        clients.send({"op": "disconnect", "i": 1})
        caller.join(40)
    finally:
        clients.close()
    assert result["timeouts"] == [clients.ids[1]]
    assert list(replies(result)) == [clients.ids[0]]
    assert result["elapsed"] < 10  # not the 30 s timeout


@pytest.mark.node
def test_over_the_cap_is_refused_before_anything_is_sent(start_gateway: Any) -> None:
    gw = start_gateway("--allow-anonymous", "--max-ack-recipients", "3")
    clients = AckClients(gw.url, 4)
    try:
        response = ack_emit(gw, 1_000, "no")
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "too_many_recipients"
        assert "4" in error["message"] and "3" in error["message"]
        # Three sockets are within the cap: that emit goes out (and is answered).
        ok = ack_emit(gw, 5_000, "yes", rooms=[clients.ids[0], clients.ids[1], clients.ids[2]])
        assert ok.status_code == 200 and ok.json()["recipients"] == 3
        deadline = time.monotonic() + 5
        while len(clients.events) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        clients.close()
    # Only the second emit's three deliveries: the refused one reached nobody.
    assert sorted(clients.events) == [0, 1, 2]


# ---------------------------------------------------------------- python-socketio


# Set at the end of each test (the python-socketio loop is per test): releases the
# handlers of sockets that never answer.
_hold: asyncio.Event | None = None


async def py_client(url: str, reply: Any = None) -> socketio.AsyncClient:
    """A python-socketio socket; ``reply(data)`` answers "ask". None: it never answers
    (python-socketio answers an event that has no handler with an empty ack, so the
    handler waits instead)."""
    sio = socketio.AsyncClient(reconnection=False)

    async def ask(data: Any) -> Any:
        if reply is None:
            assert _hold is not None
            await _hold.wait()
        return reply(data) if reply is not None else None

    sio.on("ask", ask)
    await sio.connect(url, transports=["websocket"])
    return sio


@pytest.fixture(autouse=True)
async def hold() -> Any:
    global _hold
    _hold = asyncio.Event()
    yield
    _hold.set()
    await asyncio.sleep(0.05)


async def post_ack(url: str, timeout_ms: int, **body: Any) -> httpx.Response:
    payload = {"event": "ask", "ack": {"timeout_ms": timeout_ms}, **body}
    async with httpx.AsyncClient(headers=HEADERS, timeout=90) as http:
        return await http.post(f"{url}/v1/emit", json=payload)


async def test_python_clients_answer_and_time_out(gateway: Gateway) -> None:
    answering = [
        await py_client(gateway.url, lambda d, i=i: {"from": i, "got": d}) for i in range(3)
    ]
    # A tuple answer is several ack arguments.
    several = await py_client(gateway.url, lambda d: ("a", 2, None))
    mute = await py_client(gateway.url)
    expected = {sio.get_sid(): [{"from": i, "got": [7]}] for i, sio in enumerate(answering)}
    expected[several.get_sid()] = ["a", 2, None]
    mute_sid = mute.get_sid()
    try:
        response = await post_ack(gateway.url, 1_500, data=[7])
    finally:
        for sio in [*answering, several, mute]:
            await sio.disconnect()
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["recipients"] == 5
    assert result["timeouts"] == [mute_sid]
    assert replies(result) == expected
    assert result["partial"] is False


async def test_no_recipient_answers_at_once(gateway: Gateway) -> None:
    started = time.monotonic()
    response = await post_ack(gateway.url, 20_000, rooms=["nobody-here"])
    assert response.status_code == 200
    assert response.json()["recipients"] == 0 and response.json()["acks"] == []
    assert time.monotonic() - started < 5


async def test_a_late_answer_is_not_taken_for_a_newer_emit(gateway: Gateway) -> None:
    release = asyncio.Event()

    async def slow(data: Any) -> Any:
        await release.wait()
        return {"for": data}

    sio = socketio.AsyncClient(reconnection=False)
    sio.on("ask", slow)
    await sio.connect(gateway.url, transports=["websocket"])
    sid = sio.get_sid()
    try:
        first = await post_ack(gateway.url, 300, data=1)
        assert first.json()["timeouts"] == [sid]
        second = asyncio.ensure_future(post_ack(gateway.url, 5_000, data=2))
        await asyncio.sleep(0.3)
        # Now the socket answers both: first the emit that already timed out.
        release.set()
        result = (await second).json()
        assert result["acks"] == [{"socket": sid, "args": [{"for": 2}]}]
    finally:
        await sio.disconnect()


async def test_pending_cap(start_gateway: Any) -> None:
    gw = start_gateway("--allow-anonymous", "--max-pending-acks", "1")
    mute = await py_client(gw.url)
    mute_sid = mute.get_sid()
    try:
        waiting = asyncio.ensure_future(post_ack(gw.url, 3_000))
        await asyncio.sleep(0.5)
        refused = await post_ack(gw.url, 1_000)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "too_many_pending_acks"
        assert (await waiting).json()["timeouts"] == [mute_sid]
        # Released once the first one ended.
        assert (await post_ack(gw.url, 100)).status_code == 200
    finally:
        await mute.disconnect()


@pytest.mark.parametrize(
    "ack",
    [{}, {"timeout_ms": 0}, {"timeout_ms": 60_001}, {"timeout_ms": 1.5}, {"timeout_ms": True}, 5,
     {"timeout_ms": 10, "volatile": True}],
)  # fmt: skip
def test_invalid_ack_terms(gateway: Gateway, ack: Any) -> None:
    response = gateway.api("POST", "/v1/emit", json={"event": "e", "ack": ack})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_field"


def test_batch_refuses_ack(gateway: Gateway) -> None:
    body = {"emits": [{"event": "a"}, {"event": "b", "ack": {"timeout_ms": 10}}]}
    response = gateway.api("POST", "/v1/batch", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ack_in_batch"


def test_openapi_and_help_show_the_cap(start_gateway: Any) -> None:
    gw = start_gateway("--allow-anonymous", "--max-ack-recipients", "77")
    doc = gw.api("GET", "/v1/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "77" in schemas["Emit"]["properties"]["ack"]["description"]
    assert schemas["AckResult"]["properties"]["recipients"]["maximum"] == 77


# ---------------------------------------------------------------- SDK and CLI


async def test_python_sdk_sync_and_async(gateway: Gateway) -> None:
    answering = await py_client(gateway.url, lambda d: {"got": d})
    mute = await py_client(gateway.url)
    sid, mute_sid = answering.get_sid(), mute.get_sid()
    try:
        # The client's own timeout (1 s) is shorter than the ack wait: the SDK waits longer.
        async with AsyncClient(gateway.url, API_KEY, timeout=1) as sdk:
            result = await sdk.emit_with_ack("ask", 1_500, data="async")
        assert isinstance(result, AckResult)
        assert result.recipients == 2 and result.timeouts == (mute_sid,)
        assert result.replies() == {sid: [{"got": "async"}]}
        assert result.acks == (AckReply(sid, [{"got": "async"}]),)

        def blocking() -> AckResult:
            with Client(gateway.url, API_KEY, timeout=1) as sdk:
                return sdk.emit_with_ack("ask", 1_500, data="sync", rooms=[sid])

        result = await asyncio.to_thread(blocking)
        assert result.recipients == 1 and result.replies() == {sid: [{"got": "sync"}]}
        assert result.partial is False and result.timeouts == ()

        with pytest.raises(ValueError, match="timeout_ms"):
            Client(gateway.url, API_KEY).emit_with_ack("ask", 0)
        # The CLI prints the gateway's answer.
        out = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "siogate", "emit", "--url", gateway.url, "--api-key",
             API_KEY, "--ack-timeout", "1500", "--room", sid, "ask", '"cli"'],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        printed = json.loads(out.stdout)
        assert printed["acks"] == [{"socket": sid, "args": [{"got": "cli"}]}]
    finally:
        await answering.disconnect()
        await mute.disconnect()
