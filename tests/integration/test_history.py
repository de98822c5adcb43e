"""Room history (--history-size): GET /v1/rooms/<room>/history, offsets from /v1/emit,
and a stock socket.io-client that connects with ``auth.since`` (render, then subscribe)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from jsclient import JsClient

from conftest import Gateway
from siogate.client import Client


def emit(gw: Gateway, data: Any, room: str = "chat", **body: Any) -> str:
    r = gw.api("POST", "/v1/emit", json={"event": "msg", "data": data, "rooms": [room], **body})
    assert r.status_code == 200, r.text
    offset = r.json()["offset"]
    assert isinstance(offset, str)
    return str(offset)


def history(gw: Gateway, room: str = "chat", **params: Any) -> dict[str, Any]:
    r = gw.api("GET", f"/v1/rooms/{room}/history", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_history_keeps_the_last_events_of_a_room(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--history-size", "5")
    offsets = [emit(gw, {"n": i}) for i in range(7)]
    assert len(set(offsets)) == 7
    # Not history: a broadcast, another room, a socket id (private).
    gw.emit("other")
    emit(gw, "elsewhere", room="news")
    emit(gw, "direct", room="A" * 20)

    got = history(gw)
    # "data" is the event's argument list.
    assert [m["data"] for m in got["messages"]] == [[{"n": i}] for i in range(2, 7)]
    assert [m["offset"] for m in got["messages"]] == offsets[2:]
    assert all(m["event"] == "msg" and isinstance(m["ts"], int) for m in got["messages"])
    assert got["complete"] is False  # two were dropped

    after = history(gw, since=offsets[4])
    assert [m["data"][0]["n"] for m in after["messages"]] == [5, 6]
    assert after["complete"] is True
    assert history(gw, since=offsets[0])["complete"] is False
    assert history(gw, since=offsets[6]) == {"messages": [], "complete": True}
    page = history(gw, since=offsets[1], limit=2)
    assert [m["data"][0]["n"] for m in page["messages"]] == [2, 3] and page["complete"] is False
    assert [m["data"][0]["n"] for m in history(gw, limit=1)["messages"]] == [6]
    assert history(gw, room="news")["messages"][0]["data"] == ["elsewhere"]

    for bad in ({"since": "0-1"}, {"since": offsets[0] + "9"}, {"limit": "0"}, {"x": "1"}):
        assert gw.api("GET", "/v1/rooms/chat/history", params=bad).status_code == 400, bad


def test_history_ttl(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--history-size", "10", "--history-ttl", "0.5")
    emit(gw, "old")
    time.sleep(0.8)
    new = emit(gw, "new")
    got = history(gw)
    assert [m["offset"] for m in got["messages"]] == [new] and got["complete"] is False


def test_history_off_by_default(gateway: Gateway) -> None:
    r = gateway.api("GET", "/v1/rooms/chat/history")
    assert r.status_code == 400 and r.json()["error"]["code"] == "history_off"
    r = gateway.emit("e", 1, rooms=["chat"])
    assert r.json() == {"ok": True}


@pytest.mark.node
def test_render_then_subscribe_with_since(start_gateway: Callable[..., Gateway]) -> None:
    """A page rendered the history up to an offset; events emitted before its socket
    connected reach it first, once, then the live ones."""
    gw = start_gateway("--history-size", "100")
    emit(gw, "rendered")
    rendered_up_to = history(gw)["messages"][-1]["offset"]
    emit(gw, "between-1")
    emit(gw, "between-2")
    emit(gw, "not-for-me", room="other")
    auth = {"token": gw.token("gina", rooms=["chat"]), "since": rendered_up_to}
    with JsClient(gw.url, auth=auth, options={"transports": ["websocket"]}) as js:
        js.connected()
        emit(gw, "live")
        got = js.wait_events("msg", 3)
        assert [a[0] for a in got] == ["between-1", "between-2", "live"]
        time.sleep(0.2)
        assert len(js.events("msg")) == 3


def test_python_sdk_history(start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway("--history-size", "3")
    offsets = [emit(gw, i) for i in range(4)]
    with Client(gw.url, gw.api_key) as sdk:
        got = sdk.history("chat")
        assert [(m.offset, m.event, m.data) for m in got.messages] == [
            (offsets[i], "msg", [i]) for i in (1, 2, 3)
        ]
        assert got.complete is False
        after = sdk.history("chat", since=offsets[2], limit=5)
        assert [m.data for m in after.messages] == [[3]] and after.complete is True
