"""The official socket.io-client (Node) against a running gateway.

Each test drives one or more real ``socket.io-client`` sockets through
``tests/js/client.mjs`` (see ``jsclient.py``) and pushes events through the HTTP
API of a real ``siogate serve`` process. Negative checks ("this socket must not
receive X") are closed by a sentinel: the API applies emits in order, so once a
later emit to the same socket has arrived, an earlier one that did not arrive
never will.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from jsclient import JsClient, encode

from conftest import Gateway, spawn_gateway, without_node

pytestmark = pytest.mark.node

TRANSPORTS = {"polling": ["polling"], "websocket": ["websocket"]}
CONFORMANCE_HANDLERS = "examples.conformance:handlers"

# Binary attachments in several positions: top level, nested in an object and a list.
MIXED_ARGS: list[Any] = [
    1,
    "two",
    {"three": [3, None, True], "bin": b"\x00\x01\xfe\xff"},
    b"top-level binary",
    [b"", {"deep": [b"\x7f" * 300]}],
    "😀 𝄞",
]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """JWT required (no --allow-anonymous); namespaces / and /custom only."""
    g = spawn_gateway(
        "--namespace",
        "/",
        "--namespace",
        "/custom",
        log_dir=tmp_path_factory.mktemp("gw"),
    )
    yield g
    g.stop()


@pytest.fixture(scope="module")
def conf_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The conformance handlers: auth echo on connect, message-back, message-with-ack."""
    g = spawn_gateway(
        "--handlers",
        CONFORMANCE_HANDLERS,
        "--namespace",
        "/",
        "--namespace",
        "/custom",
        "--allow-anonymous",
        log_dir=tmp_path_factory.mktemp("conf-gw"),
    )
    yield g
    g.stop()


@pytest.fixture
def js() -> Iterator[Callable[..., JsClient]]:
    """Factory: ``js(url, auth=..., transports=...)`` -> a started JsClient, closed afterwards."""
    clients: list[JsClient] = []

    def make(url: str, **kw: Any) -> JsClient:
        client = JsClient(url, **kw).start()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(params=sorted(TRANSPORTS))
def transports(request: pytest.FixtureRequest) -> list[str]:
    return TRANSPORTS[request.param]


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def emit(gw: Gateway, event: str, *args: Any, **body: Any) -> None:
    assert ok(gw.emit(event, *args, **body)) == {"ok": True}


def sentinel(gw: Gateway, client: JsClient, room: str, namespace: str = "/") -> None:
    """Emit to ``room`` and wait for it on ``client``: every earlier emit has landed."""
    name = uid("sentinel")
    emit(gw, name, rooms=[room], namespace=namespace)
    client.wait_event(name)


def log_tail(gw: Gateway, lines: int = 40) -> str:
    return "\n".join(gw.log().splitlines()[-lines:])


# ---------------------------------------------------------------- transports


def test_polling_only(gw: Gateway, js: Callable[..., JsClient]) -> None:
    sub = uid("poll")
    client = js(gw.url, transports=["polling"], auth={"token": gw.token(sub)})
    obs = client.connect()
    assert obs["type"] == "connected", log_tail(gw)
    assert obs["transport"] == "polling"

    for i in range(3):
        emit(gw, "tick", i, {"i": i}, rooms=[f"user:{sub}"])
    assert client.wait_events("tick", 3) == [[0, {"i": 0}], [1, {"i": 1}], [2, {"i": 2}]]

    # Stays on polling: no upgrade is even attempted.
    time.sleep(0.3)
    assert client.transport() == "polling"
    assert client.find("upgrade") is None


def test_websocket_only(gw: Gateway, js: Callable[..., JsClient]) -> None:
    sub = uid("ws")
    client = js(gw.url, transports=["websocket"], auth={"token": gw.token(sub)})
    obs = client.connect()
    assert obs["type"] == "connected", log_tail(gw)
    assert obs["transport"] == "websocket"

    emit(gw, "tick", "over websocket", rooms=[f"user:{sub}"])
    assert client.wait_event("tick") == ["over websocket"]


def test_default_transports_upgrade_to_websocket(gw: Gateway, js: Callable[..., JsClient]) -> None:
    sub = uid("upg")
    client = js(gw.url, auth={"token": gw.token(sub)})
    obs = client.connect()
    assert obs["type"] == "connected", log_tail(gw)
    # The engine opens on polling; whether the CONNECT reply beats the upgrade is a race.
    assert client.find("open")["transport"] == "polling"

    client.wait_transport("websocket")
    assert client.find("upgrade", transport="websocket") is not None
    assert client.transport() == "websocket"

    # The session survives the upgrade: same socket, events flow on the new transport.
    emit(gw, "after-upgrade", {"n": 1}, rooms=[f"user:{sub}"])
    assert client.wait_event("after-upgrade") == [{"n": 1}]
    assert client.find("disconnect") is None


def test_upgrade_keeps_events_in_order(gw: Gateway, js: Callable[..., JsClient]) -> None:
    """Emits racing the polling -> websocket switch arrive once each, in order."""
    sub = uid("race")
    client = js(gw.url, auth={"token": gw.token(sub)})
    client.connected()
    for i in range(30):
        emit(gw, "seq", i, rooms=[f"user:{sub}"])
    client.wait_transport("websocket")
    for i in range(30, 40):
        emit(gw, "seq", i, rooms=[f"user:{sub}"])
    assert client.wait_events("seq", 40) == [[i] for i in range(40)]
    time.sleep(0.2)
    assert len(client.events("seq")) == 40


# ---------------------------------------------------------------- JWT


def test_jwt_user_and_claim_rooms(
    gw: Gateway, js: Callable[..., JsClient], transports: list[str]
) -> None:
    sub, claim, other = uid("alice"), uid("claim"), uid("other")
    client = js(gw.url, transports=transports, auth={"token": gw.token(sub, rooms=[claim])})
    assert client.connect()["type"] == "connected", log_tail(gw)

    emit(gw, "to-user", "for", sub, rooms=[f"user:{sub}"])
    emit(gw, "to-claim", {"room": claim}, rooms=[claim])
    emit(gw, "to-other", "nope", rooms=[other])
    emit(gw, "to-other-user", "nope", rooms=["user:someone-else"])
    sentinel(gw, client, f"user:{sub}")

    assert client.events("to-user") == [["for", sub]]
    assert client.events("to-claim") == [[{"room": claim}]]
    assert client.events("to-other") == []
    assert client.events("to-other-user") == []


def _b64(obj: Any) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _hmac_token(
    header: dict[str, Any], payload: dict[str, Any], secret: str, digest: str = "sha256"
) -> str:
    # Hand-made, so that PyJWT neither refuses the odd header nor warns about key length.
    signing_input = f"{_b64(header)}.{_b64(payload)}"
    sig = hmac.new(secret.encode(), signing_input.encode(), digest).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


def _refused_token(case: str, gw: Gateway) -> str:
    claims = {"sub": "mallory", "rooms": ["vault"], "exp": int(time.time()) + 3600}
    if case == "bad-signature":
        return jwt.encode(claims, "not-the-secret-0123456789abcdef0123", algorithm="HS256")
    if case == "expired":
        return gw.token("mallory", rooms=["vault"], ttl=-60)
    if case == "missing-exp":
        return jwt.encode({"sub": "mallory"}, gw.jwt_secret, algorithm="HS256")
    if case == "alg-none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    if case == "alg-hs512":
        # Right secret, wrong algorithm: the algorithm is pinned to HS256.
        return _hmac_token({"alg": "HS512", "typ": "JWT"}, claims, gw.jwt_secret, "sha512")
    if case == "alg-rs256-header":
        # RS/HS confusion: claims RS256 but carries an HMAC made with the secret.
        return _hmac_token({"alg": "RS256", "typ": "JWT"}, claims, gw.jwt_secret)
    if case == "garbage":
        return "not.a.jwt"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "bad-signature",
        "expired",
        "missing-exp",
        "alg-none",
        "alg-hs512",
        "alg-rs256-header",
        "garbage",
    ],
)
def test_jwt_refused(gw: Gateway, js: Callable[..., JsClient], case: str) -> None:
    client = js(gw.url, transports=["websocket"], auth={"token": _refused_token(case, gw)})
    obs = client.connect()
    assert obs["type"] == "connect_error", f"{obs}\n{log_tail(gw)}"
    assert isinstance(obs["message"], str) and obs["message"]

    # No events, even for the rooms the forged claims name.
    emit(gw, "leak", 1, rooms=["vault", "user:mallory"])
    emit(gw, "leak", 2)
    time.sleep(0.3)
    assert client.events() == []
    assert client.find("connected") is None


@pytest.mark.parametrize(
    "auth", [None, {}, {"token": ""}, {"token": None}], ids=["none", "empty", "blank", "null"]
)
def test_no_token_refused_without_allow_anonymous(
    gw: Gateway, js: Callable[..., JsClient], auth: dict[str, Any] | None
) -> None:
    client = js(gw.url, transports=["polling"], auth=auth)
    obs = client.connect()
    assert obs["type"] == "connect_error", f"{obs}\n{log_tail(gw)}"
    assert isinstance(obs["message"], str) and obs["message"]
    emit(gw, "leak", 1)
    time.sleep(0.3)
    assert client.events() == []


def test_anonymous_allowed_with_flag(conf_gw: Gateway, js: Callable[..., JsClient]) -> None:
    client = js(conf_gw.url, transports=["websocket"])
    client.connected()
    emit(conf_gw, "broadcast", "hello", namespace="/")
    assert client.wait_event("broadcast") == ["hello"]


# ---------------------------------------------------------------- acks and binary


def test_connect_payload_is_echoed(
    conf_gw: Gateway, js: Callable[..., JsClient], transports: list[str]
) -> None:
    auth = {"hello": "world", "n": [1, 2.5], "$key": "kept"}
    client = js(conf_gw.url, transports=transports, auth=auth)
    client.connected()
    assert client.wait_event("auth") == [auth]


def test_message_echo_with_binary(
    conf_gw: Gateway, js: Callable[..., JsClient], transports: list[str]
) -> None:
    client = js(conf_gw.url, transports=transports)
    client.connected()
    client.emit("message", *MIXED_ARGS)
    client.emit("message")
    client.emit("message", "plain", 2)
    assert client.wait_events("message-back", 3) == [MIXED_ARGS, [], ["plain", 2]]


def test_ack_round_trip_with_binary(
    conf_gw: Gateway, js: Callable[..., JsClient], transports: list[str]
) -> None:
    client = js(conf_gw.url, transports=transports)
    client.connected()
    assert client.call("message-with-ack", *MIXED_ARGS) == MIXED_ARGS
    assert client.call("message-with-ack") == []
    assert client.call("message-with-ack", b"\xff" * 5000) == [b"\xff" * 5000]
    assert client.call("message-with-ack", {"only": "json"}, None) == [{"only": "json"}, None]


def test_many_acks_in_flight(conf_gw: Gateway, js: Callable[..., JsClient]) -> None:
    """Acks are matched by id, not by order of arrival."""
    client = js(conf_gw.url, transports=["websocket"])
    client.connected()
    tags = []
    for i in range(25):
        tag = client.next_tag()
        tags.append(tag)
        client.send(
            op="emit",
            event="message-with-ack",
            args=[i, f"n{i}"],
            ack=True,
            tag=tag,
            wait=False,
            timeout=5000,
        )
    for i, tag in enumerate(tags):
        assert client.wait_for("ack", tag=tag)["args"] == [i, f"n{i}"]


# ---------------------------------------------------------------- namespaces


def test_namespace_allowlist(gw: Gateway, js: Callable[..., JsClient]) -> None:
    token = gw.token(uid("ns"))
    custom = js(gw.url, namespace="/custom", transports=["websocket"], auth={"token": token})
    assert custom.connect()["type"] == "connected", log_tail(gw)

    other = js(gw.url, namespace="/other", transports=["websocket"], auth={"token": token})
    obs = other.connect()
    assert obs["type"] == "connect_error", f"{obs}\n{log_tail(gw)}"
    assert isinstance(obs["message"], str) and obs["message"]


def test_custom_namespace_gets_connect_payload(
    conf_gw: Gateway, js: Callable[..., JsClient], transports: list[str]
) -> None:
    client = js(conf_gw.url, namespace="/custom", transports=transports, auth={"a": "b"})
    client.connected()
    assert client.wait_event("auth") == [{"a": "b"}]
    assert client.call("message-with-ack", 1, b"\x01") == [1, b"\x01"]


def test_emit_to_namespace(gw: Gateway, js: Callable[..., JsClient]) -> None:
    sub = uid("nsemit")
    token = gw.token(sub)
    root = js(gw.url, namespace="/", transports=["websocket"], auth={"token": token})
    custom = js(gw.url, namespace="/custom", transports=["polling"], auth={"token": token})
    root.connected()
    custom.connected()

    emit(gw, "custom-only", "x", namespace="/custom", rooms=[f"user:{sub}"])
    emit(gw, "custom-all", "y", namespace="/custom")
    emit(gw, "root-only", "z", rooms=[f"user:{sub}"])
    sentinel(gw, custom, f"user:{sub}", namespace="/custom")
    sentinel(gw, root, f"user:{sub}")

    assert custom.events("custom-only") == [["x"]]
    assert custom.events("custom-all") == [["y"]]
    assert custom.events("root-only") == []
    assert root.events("custom-only") == []
    assert root.events("custom-all") == []
    assert root.events("root-only") == [["z"]]


# ---------------------------------------------------------------- rooms


def test_emit_with_except(gw: Gateway, js: Callable[..., JsClient]) -> None:
    team, alice, bob = uid("team"), uid("alice"), uid("bob")
    a = js(gw.url, transports=["websocket"], auth={"token": gw.token(alice, rooms=[team])})
    b = js(gw.url, transports=["polling"], auth={"token": gw.token(bob, rooms=[team])})
    a.connected()
    b.connected()

    emit(gw, "not-bob", 1, rooms=[team], **{"except": [f"user:{bob}"]})
    emit(gw, "everyone", 2, rooms=[team])
    sentinel(gw, a, f"user:{alice}")
    sentinel(gw, b, f"user:{bob}")

    assert a.events("not-bob") == [[1]]
    assert b.events("not-bob") == []
    assert a.events("everyone") == [[2]]
    assert b.events("everyone") == [[2]]


def test_socket_in_two_target_rooms_receives_once(
    gw: Gateway, js: Callable[..., JsClient], transports: list[str]
) -> None:
    sub, r1, r2 = uid("twice"), uid("r1"), uid("r2")
    client = js(gw.url, transports=transports, auth={"token": gw.token(sub, rooms=[r1, r2])})
    client.connected()

    emit(gw, "once", "a", rooms=[r1, r2])
    emit(gw, "once", "b", rooms=[r1, r2, f"user:{sub}", r1])
    sentinel(gw, client, f"user:{sub}")
    assert client.events("once") == [["a"], ["b"]]


def test_api_join_then_emit_then_leave(
    gw: Gateway, js: Callable[..., JsClient], transports: list[str]
) -> None:
    sub, room = uid("joiner"), uid("r")
    client = js(gw.url, transports=transports, auth={"token": gw.token(sub)})
    sid = client.connected()

    ok(gw.api("POST", "/v1/join", json={"namespace": "/", "room": room, "sockets": [sid]}))
    emit(gw, "joined", room, rooms=[room])
    assert client.wait_event("joined") == [room]

    ok(gw.api("POST", "/v1/leave", json={"namespace": "/", "room": room, "sockets": [sid]}))
    emit(gw, "after-leave", 1, rooms=[room])
    sentinel(gw, client, f"user:{sub}")
    assert client.events("after-leave") == []
    assert client.events("joined") == [[room]]


def test_api_disconnect(gw: Gateway, js: Callable[..., JsClient], transports: list[str]) -> None:
    sub = uid("kicked")
    client = js(gw.url, transports=transports, auth={"token": gw.token(sub)})
    sid = client.connected()

    ok(gw.api("POST", "/v1/disconnect", json={"namespace": "/", "sockets": [sid]}))
    obs = client.wait_disconnect()
    assert obs["reason"] == "io server disconnect", f"{obs}\n{log_tail(gw)}"

    emit(gw, "after-kick", 1, rooms=[f"user:{sub}"])
    time.sleep(0.3)
    assert client.events("after-kick") == []


def test_api_disconnect_by_room(gw: Gateway, js: Callable[..., JsClient]) -> None:
    room, keep = uid("doomed"), uid("keep")
    doomed = js(gw.url, transports=["websocket"], auth={"token": gw.token(uid("d"), rooms=[room])})
    kept = js(gw.url, transports=["websocket"], auth={"token": gw.token(keep)})
    doomed.connected()
    kept.connected()

    ok(gw.api("POST", "/v1/disconnect", json={"namespace": "/", "rooms": [room]}))
    assert doomed.wait_disconnect()["reason"] == "io server disconnect"
    sentinel(gw, kept, f"user:{keep}")
    assert kept.find("disconnect") is None


def test_client_disconnect_then_emit(gw: Gateway, js: Callable[..., JsClient]) -> None:
    """A socket that leaves is forgotten: the room empties, the gateway keeps serving."""
    sub = uid("leaver")
    client = js(gw.url, transports=["websocket"], auth={"token": gw.token(sub)})
    client.connected()
    client.disconnect()
    assert client.wait_disconnect()["reason"] == "io client disconnect"
    emit(gw, "after", 1, rooms=[f"user:{sub}"])

    other = js(gw.url, transports=["polling"], auth={"token": gw.token(sub)})
    other.connected()
    sentinel(gw, other, f"user:{sub}")


def test_room_listing_follows_connect_and_disconnect(
    gw: Gateway, js: Callable[..., JsClient]
) -> None:
    sub = uid("listed")
    path = f"/v1/rooms/user:{sub}/sockets"
    client = js(gw.url, transports=["websocket"], auth={"token": gw.token(sub)})
    sid = client.connected()
    listing = ok(gw.api("GET", path, params={"namespace": "/"}))["sockets"]
    assert {"id": sid, "user": sub} in without_node(listing)

    client.disconnect()
    client.wait_disconnect()

    def gone() -> bool:
        r = gw.api("GET", path, params={"namespace": "/"})
        return r.status_code == 404 or all(s["id"] != sid for s in r.json()["sockets"])

    deadline = time.monotonic() + 5
    while not gone():
        assert time.monotonic() < deadline, "the socket is still listed after it left"
        time.sleep(0.05)


# ---------------------------------------------------------------- one connection


def test_multiplexed_namespaces_on_one_connection(gw: Gateway, js: Callable[..., JsClient]) -> None:
    """socket.io-client shares one Engine.IO connection between namespaces of a Manager."""
    sub = uid("mux")
    token = {"token": gw.token(sub)}
    client = js(gw.url, auth=token)
    root_id = client.connected()
    custom_id = client.connected(socket="c", namespace="/custom", auth=token)
    assert root_id != custom_id
    client.wait_transport("websocket")

    emit(gw, "ns-root", 1, rooms=[f"user:{sub}"])
    emit(gw, "ns-custom", 2, rooms=[f"user:{sub}"], namespace="/custom")
    sentinel(gw, client, f"user:{sub}")
    name = uid("sentinel")
    emit(gw, name, rooms=[f"user:{sub}"], namespace="/custom")
    client.wait_event(name, socket="c")

    assert client.events("ns-root") == [[1]]
    assert client.events("ns-custom") == []
    assert client.events("ns-custom", socket="c") == [[2]]
    assert client.events("ns-root", socket="c") == []

    # Leaving one namespace keeps the connection and the other namespace.
    client.disconnect(socket="c")
    assert client.wait_disconnect(socket="c")["reason"] == "io client disconnect"
    emit(gw, "still-here", 3, rooms=[f"user:{sub}"])
    assert client.wait_event("still-here") == [3]
    assert client.find("disconnect") is None


def test_multiplexed_acks_and_binary(conf_gw: Gateway, js: Callable[..., JsClient]) -> None:
    client = js(conf_gw.url, transports=["polling"], auth={"n": "root"})
    client.connected()
    client.connected(socket="c", namespace="/custom", auth={"n": "custom"})
    assert client.wait_event("auth") == [{"n": "root"}]
    assert client.wait_event("auth", socket="c") == [{"n": "custom"}]
    assert client.call("message-with-ack", b"root", 1) == [b"root", 1]
    assert client.call("message-with-ack", b"custom", 2, socket="c") == [b"custom", 2]


# ---------------------------------------------------------------- heartbeat and limits


def test_heartbeat_keeps_sockets_alive(
    start_gateway: Callable[..., Gateway], js: Callable[..., JsClient], transports: list[str]
) -> None:
    """With a 300 ms ping interval, several ping/pong rounds pass without a disconnect.

    The timeout is generous (and longer than the interval, a case of its own) so that a
    loaded CI machine does not turn a late pong into a failure.
    """
    g = start_gateway("--ping-interval", "300", "--ping-timeout", "1000")
    sub = uid("beat")
    client = js(g.url, transports=transports, auth={"token": g.token(sub)})
    client.connected()
    time.sleep(2.0)
    emit(g, "alive", True, rooms=[f"user:{sub}"])
    assert client.wait_event("alive") == [True]
    assert client.find("disconnect") is None, log_tail(g)


def test_oversized_client_message_closes_only_that_connection(
    conf_gw: Gateway, js: Callable[..., JsClient], transports: list[str]
) -> None:
    """A packet over --max-payload (1 MB here) closes that connection, nothing else."""
    bystander = js(conf_gw.url, transports=["websocket"])
    bystander.connected()
    client = js(conf_gw.url, transports=transports)
    client.connected()

    client.emit("message", "x" * 1_200_000)
    obs = client.wait_disconnect()
    assert obs["reason"] in ("transport close", "transport error"), obs
    assert client.events("message-back") == []

    assert bystander.call("message-with-ack", "still served") == ["still served"]
    assert conf_gw.api("GET", "/healthz").status_code == 200


# ---------------------------------------------------------------- ordering under load


def test_burst_and_batch_arrive_in_order(
    gw: Gateway, js: Callable[..., JsClient], transports: list[str]
) -> None:
    """Hundreds of packets, several per polling response, keep their order."""
    sub = uid("burst")
    room = f"user:{sub}"
    client = js(gw.url, transports=transports, auth={"token": gw.token(sub)})
    client.connected()

    for i in range(100):
        emit(gw, "n", i, rooms=[room])
    body = {"emits": [{"event": "n", "args": [i], "rooms": [room]} for i in range(100, 300)]}
    assert ok(gw.api("POST", "/v1/batch", json=body)) == {"ok": True, "count": 200}
    assert client.wait_events("n", 300) == [[i] for i in range(300)]


def test_client_emits_during_upgrade(conf_gw: Gateway, js: Callable[..., JsClient]) -> None:
    """Acks fired while the transport switches from polling to WebSocket all come back."""
    client = js(conf_gw.url)
    client.connected()
    tags = []
    for i in range(40):
        tag = client.next_tag()
        tags.append(tag)
        args = encode([i, {"bin": b"\x01\x02"}])
        client.send(op="emit", event="message-with-ack", args=args, ack=True, tag=tag, wait=False)
    client.wait_transport("websocket")
    for i, tag in enumerate(tags):
        obs = client.wait_for(("ack", "ack_timeout"), tag=tag)
        assert obs["type"] == "ack" and obs["args"] == [i, {"bin": b"\x01\x02"}], obs
