"""Property-based fuzzing of the HTTP API body parsers (``siogate.api.schemas``).

Property: any body ends in a command or an :class:`~siogate.errors.ApiError` (a 4xx
answer), never another exception (which the server would turn into a 500). Bodies are
drawn as random bytes, as JSON text, and as objects built from the real field names so
that the fuzzer reaches the checks behind the first one.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siogate.api import schemas
from siogate.broker import EmitCommand, SocketsCommand
from siogate.errors import ApiError
from siogate.protocol import socketio

fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ALLOWED = frozenset({"/", "/chat"})

names = st.one_of(
    st.sampled_from(["/", "/chat", "/other", "chat", "room1", "connect", "", "a" * 257]),
    st.text(max_size=10),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    names,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(names, children, max_size=4),
    max_leaves=15,
)
name_lists = st.one_of(
    st.lists(names, max_size=4), st.just([]), json_values, st.lists(json_values, max_size=3)
)

FIELDS = ("event", "data", "args", "namespace", "rooms", "except", "sockets", "room", "emits")


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    """An object with some of the API's fields (and maybe unknown ones)."""
    body: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        if key in ("rooms", "except", "sockets"):
            body[key] = draw(name_lists)
        elif key == "emits":
            body[key] = draw(st.lists(st.deferred(bodies) | json_values, max_size=3) | json_values)
        elif key in ("args", "data"):
            body[key] = draw(json_values)
        else:
            body[key] = draw(names | json_values)
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=5))] = draw(json_values)
    return body


def _body_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(_body_bytes, json_values),
    st.builds(_body_bytes, bodies()),
    st.sampled_from(
        [
            b"",
            b"{",
            b'{"a": NaN}',
            b'{"a": 1e999}',
            b"\xff\xfe{}",
            b'{"a": "\\ud800"}',
            b"[" * 5000 + b"]" * 5000,
            b'{"a":' + b"[" * 600 + b"]" * 600 + b"}",
            b'{"a":' + b"9" * 5000 + b"}",
            b'{"event":"e","data":1e999}',
            b'{"event":"e","args":[-1E400]}',
        ]
    ),
)


def _encodable(command: EmitCommand) -> None:
    """An accepted emit can be written to the sockets (no error later in the emit path)."""
    assert isinstance(command, EmitCommand)
    packet = socketio.event_packet(command.namespace, command.event, command.args)
    assert socketio.encode_messages(packet)


def test_out_of_range_numbers_are_invalid_json() -> None:
    # 1e999 parses as infinity, which the encoders refuse later with a ValueError.
    for body in [b'{"event":"e","data":1e999}', b'{"event":"e","args":[[-1E400]]}']:
        try:
            schemas.parse_body(body)
        except ApiError as exc:
            assert exc.code == "invalid_json"
        else:
            raise AssertionError("accepted")


@fuzz
@given(raw_bodies)
def test_parse_body(body: bytes) -> None:
    try:
        value = schemas.parse_body(body)
    except ApiError as exc:
        assert 400 <= exc.status < 500
        return
    assert isinstance(value, dict)


@fuzz
@given(bodies() | st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_emit_and_batch(body: dict[str, Any]) -> None:
    for allowed in (None, ALLOWED):
        try:
            _encodable(schemas.emit(body, allowed))
        except ApiError as exc:
            assert exc.status == 400
        try:
            commands = schemas.batch(body, allowed)
            assert commands
            for command in commands:
                _encodable(command)
        except ApiError as exc:
            assert exc.status == 400


@fuzz
@given(
    bodies() | st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    st.sampled_from(["join", "leave", "disconnect"]),
)
def test_sockets_command(
    body: dict[str, Any], action: Literal["join", "leave", "disconnect"]
) -> None:
    for allowed in (None, ALLOWED):
        try:
            command = schemas.sockets_command(action, body, allowed)
        except ApiError as exc:
            assert exc.status == 400
            continue
        assert isinstance(command, SocketsCommand) and command.action == action


@fuzz
@given(raw_bodies, st.sampled_from(["emit", "batch", "join", "leave", "disconnect"]))
def test_bodies_end_to_end(body: bytes, route: str) -> None:
    # What a route does: parse the body, then build its command(s).
    try:
        value = schemas.parse_body(body)
        if route == "emit":
            _encodable(schemas.emit(value, ALLOWED))
        elif route == "batch":
            for command in schemas.batch(value, ALLOWED):
                _encodable(command)
        else:
            schemas.sockets_command(route, value, ALLOWED)  # type: ignore[arg-type]
    except ApiError:
        pass
