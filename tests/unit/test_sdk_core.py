"""The SDK's I/O-free half: calls built from arguments, answers read into values.

Responses here are real ``httpx.Response`` objects built in memory; nothing is sent.
The same behaviour over real sockets is in ``tests/integration/test_sdk_python.py``.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import httpx
import pytest

import siogate.client
from siogate.auth import JwtVerifier
from siogate.client import (
    ApiError,
    AsyncClient,
    Client,
    ConfigError,
    ListingNodes,
    RequestError,
    RequestTimeout,
    RoomInfo,
    RoomPresenceListing,
    RoomsListing,
    SocketInfo,
    SocketsListing,
    UserCount,
    UserPresence,
    _core,
)

SECRET = "unit-jwt-secret-0123456789abcdef0123456789"


@pytest.fixture
def client() -> Any:
    with Client("http://gateway.test/prefix/", "the-key", jwt_secret=SECRET) as c:
        yield c


def body(call: _core.Call[Any]) -> Any:
    assert call.content is not None
    return json.loads(call.content)


def test_the_sdk_surface_is_locked() -> None:
    assert sorted(siogate.client.__all__) == [
        "AckReply",
        "AckResult",
        "ApiError",
        "AsyncClient",
        "Client",
        "ConfigError",
        "DEFAULT_BACKOFF",
        "DEFAULT_RETRIES",
        "DEFAULT_TIMEOUT",
        "DEFAULT_TOLERANCE",
        "Emit",
        "EmitOptions",
        "HistoryMessage",
        "Listing",
        "ListingNodes",
        "PresenceListing",
        "RequestError",
        "RequestTimeout",
        "RoomHistory",
        "RoomInfo",
        "RoomPresenceListing",
        "RoomsListing",
        "SIGNATURE_HEADER",
        "Selector",
        "SiogateError",
        "SocketInfo",
        "SocketsListing",
        "TIMESTAMP_HEADER",
        "UserCount",
        "UserPresence",
        "WebhookVerificationError",
        "verify_webhook",
    ]
    for name in siogate.client.__all__:
        assert hasattr(siogate.client, name), name


def test_both_clients_have_the_same_methods() -> None:
    def public(cls: type) -> dict[str, inspect.Signature]:
        names = [n for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))]
        return {n: inspect.signature(getattr(cls, n)) for n in names}

    sync, aio = public(Client), public(AsyncClient)
    assert sync.pop("close") == aio.pop("aclose")
    assert sync == aio
    methods = [
        "batch",
        "disconnect",
        "emit",
        "emit_with_ack",
        "history",
        "join",
        "leave",
        "presence",
        "room_presence",
        "rooms",
        "sockets",
        "token",
    ]
    assert sorted(sync) == methods
    for name in set(sync) - {"token"}:
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


def test_emit_bodies_mirror_the_api() -> None:
    assert body(_core.emit_call("e", {})) == {"event": "e"}
    assert body(_core.emit_call("e", {"data": None})) == {"event": "e", "data": None}
    call = _core.emit_call(
        "e", {"args": (1, "x"), "rooms": ("a",), "except_": ["b"], "namespace": "/n"}
    )
    assert body(call) == {
        "event": "e",
        "args": [1, "x"],
        "rooms": ["a"],
        "except": ["b"],
        "namespace": "/n",
    }
    assert (call.method, call.path) == ("POST", "/v1/emit")
    # Data the API refuses as well is passed on as given: the gateway's message says why.
    assert body(_core.emit_call("e", {"data": 1, "args": [2]})) == {
        "event": "e",
        "data": 1,
        "args": [2],
    }


def test_batch_and_selector_bodies() -> None:
    call = _core.batch_call(iter([{"event": "a", "except_": ["x"]}, {"event": "b", "data": 2}]))
    assert body(call) == {"emits": [{"event": "a", "except": ["x"]}, {"event": "b", "data": 2}]}
    join = _core.select_call("join", "vip", {"rooms": ["user:a"], "namespace": "/"})
    assert (join.path, body(join)) == (
        "/v1/join",
        {"rooms": ["user:a"], "namespace": "/", "room": "vip"},
    )
    gone = _core.select_call("disconnect", None, {"sockets": ["s1"]})
    assert (gone.path, body(gone)) == ("/v1/disconnect", {"sockets": ["s1"]})


def test_room_names_are_escaped_in_the_path() -> None:
    call = _core.sockets_call("a/b c?d%e#é", "/chat")
    assert call.path == "/v1/rooms/a%2Fb%20c%3Fd%25e%23%C3%A9/sockets"
    assert (call.method, call.params) == ("GET", {"namespace": "/chat"})


def test_listing_calls_carry_paging_and_users(client: Client) -> None:
    call = _core.rooms_call("/", limit=50, cursor="abc")
    assert call.params == {"namespace": "/", "limit": "50", "cursor": "abc"}
    call = _core.room_presence_call("a/b", "/chat", limit=10)
    assert call.path == "/v1/rooms/a%2Fb/presence"
    assert call.params == {"namespace": "/chat", "limit": "10"}
    url = str(client._request(_core.presence_call(["a", "b&c"], "/")).url)
    assert url == "http://gateway.test/prefix/v1/presence?user=a&user=b%26c&namespace=%2F"
    with pytest.raises(TypeError):
        _core.presence_call("alice", "/")
    answer = httpx.Response(
        200,
        json={
            "users": {"a": {"online": True, "sockets": 2}, "b": {"online": False, "sockets": 0}},
            "partial": False,
            "nodes": {"answered": 1, "missing": []},
        },
    )
    presence = client._result(_core.presence_call(["a", "b"], "/"), answer)
    assert presence.users == {"a": UserPresence(True, 2), "b": UserPresence(False, 0)}
    answer = httpx.Response(
        200, json={"users": [{"user": "a", "sockets": 2}], "anonymous": 3, "next_cursor": "n"}
    )
    room = client._result(_core.room_presence_call("r", "/"), answer)
    assert room == RoomPresenceListing(users=(UserCount("a", 2),), anonymous=3, next_cursor="n")


# mypy refuses these calls in typed code; untyped callers get the same refusal at run time.
@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: _core.emit_call("e", {"room": ["a"]}), TypeError),
        (lambda: _core.emit_call("e", {"rooms": "news"}), TypeError),
        (lambda: _core.emit_call("e", {"args": None}), TypeError),
        (lambda: _core.emit_call("e", {"data": float("inf")}), ValueError),
        (lambda: _core.emit_call("e", {"data": {"b": b"x"}}), TypeError),
        (lambda: _core.batch_call([{"event": "a", "room": ["x"]}]), TypeError),
        (lambda: _core.select_call("join", "r", {"room": "x"}), TypeError),
    ],
)
def test_arguments_checked_locally(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


def test_request_carries_key_prefix_and_json(client: Client) -> None:
    request = client._request(_core.emit_call("e", {}))
    assert str(request.url) == "http://gateway.test/prefix/v1/emit"
    assert request.headers["authorization"] == "Bearer the-key"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("siogate-python/")
    get = client._request(_core.rooms_call("/"))
    assert str(get.url) == "http://gateway.test/prefix/v1/rooms?namespace=%2F"
    assert "content-type" not in get.headers
    assert "the-key" not in repr(client)


@pytest.mark.parametrize(
    ("call", "attempt", "outcome", "delay"),
    [
        (_core.rooms_call("/"), 0, httpx.ConnectError("refused"), 0.5),
        (_core.rooms_call("/"), 1, httpx.ReadTimeout("slow"), 1.0),
        (_core.rooms_call("/"), 2, httpx.ConnectError("refused"), None),  # retries=2 spent
        (_core.rooms_call("/"), 0, httpx.Response(503), 0.5),
        (_core.rooms_call("/"), 0, httpx.Response(500), None),
        (_core.rooms_call("/"), 0, httpx.Response(401), None),
        (_core.rooms_call("/"), 0, httpx.Response(200), None),
        # POSTs carry an idempotency key, so they are repeated like GETs, and also
        # while the gateway is still applying an earlier attempt (409).
        (_core.emit_call("e", {}), 0, httpx.ConnectError("refused"), 0.5),
        (_core.emit_call("e", {}), 1, httpx.Response(503), 1.0),
        (_core.emit_call("e", {}), 0, httpx.Response(409), 0.5),
        (_core.emit_call("e", {}), 2, httpx.Response(503), None),
        (_core.emit_call("e", {}), 0, httpx.Response(422), None),
        (_core.emit_call("e", {}), 0, httpx.Response(500), None),
        (_core.rooms_call("/"), 0, httpx.Response(409), None),
        (_core.Call("POST", "/v1/emit", _core._ok, b"{}"), 0, httpx.Response(503), None),
    ],
)
def test_retry_policy(call: Any, attempt: int, outcome: Any, delay: float | None) -> None:
    with Client("http://gateway.test", "k", retries=2, backoff=0.5) as c:
        assert c._retry_delay(call, attempt, outcome) == delay


def test_answers_become_values(client: Client) -> None:
    # A gateway without cluster support: no partial, nodes or node fields.
    rooms = httpx.Response(200, json={"rooms": [{"name": "a", "sockets": 2}]})
    assert client._result(_core.rooms_call("/"), rooms) == RoomsListing(rooms=(RoomInfo("a", 2),))
    sockets = httpx.Response(200, json={"sockets": [{"id": "s", "user": None}]})
    assert client._result(_core.sockets_call("a", "/"), sockets) == SocketsListing(
        sockets=(SocketInfo("s", None),)
    )
    count = httpx.Response(200, json={"ok": True, "count": 3})
    assert client._result(_core.batch_call([{"event": "a"}]), count) == 3


def test_listings_say_how_complete_they_are(client: Client) -> None:
    body = {
        "sockets": [{"id": "s", "user": "u", "node": "n1"}],
        "partial": True,
        "nodes": {"answered": 1, "missing": ["n2"]},
    }
    listing = client._result(_core.sockets_call("a", "/"), httpx.Response(200, json=body))
    assert listing == SocketsListing(
        sockets=(SocketInfo("s", "u", node="n1"),),
        partial=True,
        nodes=ListingNodes(answered=1, missing=("n2",)),
    )
    for bad in ({"partial": "no"}, {"nodes": {"answered": "1", "missing": []}}, {"nodes": []}):
        response = httpx.Response(200, json={"rooms": [], **bad})
        with pytest.raises(ApiError) as info:
            client._result(_core.rooms_call("/"), response)
        assert info.value.code == "unexpected_response"


@pytest.mark.parametrize(
    ("response", "status", "code", "message"),
    [
        (
            httpx.Response(401, json={"error": {"code": "unauthorized", "message": "no"}}),
            401,
            "unauthorized",
            "no",
        ),
        (httpx.Response(502, text="<html>bad gateway</html>"), 502, "unexpected_response", "502"),
        (httpx.Response(500, json={"error": "boom"}), 500, "unexpected_response", "500"),
        (httpx.Response(200, json={"ok": False}), 200, "unexpected_response", "/v1/emit"),
        (httpx.Response(200, content=b"\xff"), 200, "unexpected_response", "/v1/emit"),
    ],
)
def test_error_answers(
    client: Client, response: httpx.Response, status: int, code: str, message: str
) -> None:
    with pytest.raises(ApiError) as info:
        client._result(_core.emit_call("e", {}), response)
    assert (info.value.status, info.value.code) == (status, code)
    assert message in info.value.message


def test_no_answer(client: Client) -> None:
    call = _core.emit_call("e", {})
    with pytest.raises(RequestTimeout) as timeout:
        client._result(call, httpx.WriteTimeout("slow"))
    assert isinstance(timeout.value.__cause__, httpx.WriteTimeout)
    with pytest.raises(RequestError) as refused:
        client._result(call, httpx.ConnectError(""))
    assert not isinstance(refused.value, RequestTimeout)
    assert "POST /v1/emit: ConnectError" in str(refused.value)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="retries"):
        Client("http://gateway.test", "k", retries=-1)
    with pytest.raises(ValueError, match="backoff"):
        AsyncClient("http://gateway.test", "k", backoff=-0.1)
    with Client("http://gateway.test", "k", timeout=None) as c:
        assert c.timeout == httpx.Timeout(None)


def test_token(client: Client) -> None:
    identity = JwtVerifier(SECRET).verify(client.token("alice", rooms=["news"], ttl=30))
    assert (identity.user, identity.rooms) == ("alice", ("news",))
    assert JwtVerifier(SECRET).verify(client.token(None)).user is None
    with pytest.raises(ValueError):
        client.token("")
    with Client("http://gateway.test", "k") as keyless, pytest.raises(ConfigError):
        keyless.token("alice")


def test_every_post_carries_an_idempotency_key(client: Client) -> None:
    calls = [
        _core.emit_call("e", {}),
        _core.batch_call([{"event": "e"}]),
        _core.select_call("join", "r", {"sockets": ["s"]}),
        _core.select_call("leave", "r", {"sockets": ["s"]}),
        _core.select_call("disconnect", None, {"sockets": ["s"]}),
    ]
    keys = [client._request(call).headers["idempotency-key"] for call in calls]
    # One fresh key per call (a UUID), the same on every attempt of that call.
    assert len(set(keys)) == len(keys) and all(len(k) == 36 for k in keys)
    assert client._request(calls[0]).headers["idempotency-key"] == keys[0]
    assert "idempotency-key" not in client._request(_core.rooms_call("/")).headers
    mine = _core.emit_call("e", {}, "order-42:shipped")
    assert client._request(mine).headers["idempotency-key"] == "order-42:shipped"


@pytest.mark.parametrize("key", ["", "x" * 257, "é", "a\nb"])
def test_an_idempotency_key_is_checked_locally(key: str) -> None:
    with pytest.raises(ValueError, match="idempotency_key"):
        _core.emit_call("e", {}, key)
