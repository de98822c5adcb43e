"""Payload fidelity: JSON values posted to /v1/emit arrive unchanged at real clients.

One gateway serves the whole module, and three long-lived clients listen on it:
the official socket.io-client over polling only and over WebSocket only (Node,
through ``tests/js/client.mjs``), and a python-socketio ``AsyncClient`` (polling,
then upgraded). Every hypothesis example is emitted once, under an event name of
its own, and must arrive equal at all three.

"Equal" is strict JSON equality (``json_equal``): ``True`` is not ``1`` and a
list is not a tuple, but an integral float may come back as an int, because
JavaScript has one number type (``1e16`` is printed as ``10000000000000000``);
such a pair is compared as doubles.
Integers stay within +-(2**53 - 1) so JavaScript holds them exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import socketio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsclient import JsClient

from conftest import Gateway, spawn_gateway

pytestmark = pytest.mark.node

MAX_SAFE_INTEGER = 2**53 - 1
WAIT = 10.0  # seconds for one event to reach one client

# ---------------------------------------------------------------- strategies

ASTRAL = ["😀", "𝄞", "👍🏽", "🇺🇳", "\U0001f9d1\u200d\U0001f4bb", "\U0010fffd", "𐍈"]
TRICKY_STRINGS = [
    "",
    "\x00",
    "\u2028\u2029",
    '"\\/\b\f\n\r\t',
    "ÿ",
    "\ufeff",
    "1e3",
    "null",
    '{"not":"json object"}',
    "😀𝄞",
    "🎵" * 50,
]
# Keys that collide with JavaScript internals or with the test driver's own escapes.
TRICKY_KEYS = ["", "$bin", "$", "$$bin", "__proto__", "constructor", "toString", "😀", "a.b", "0"]
EXTREME_NUMBERS = [
    1.7976931348623157e308,
    -1.7976931348623157e308,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    MAX_SAFE_INTEGER,
    -MAX_SAFE_INTEGER,
    0,
    0.1,
    1e21,
    1e-7,
    123456789.123456789,
]

text = st.text(max_size=40) | st.sampled_from(TRICKY_STRINGS)
keys = st.text(max_size=12) | st.sampled_from(TRICKY_KEYS)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(EXTREME_NUMBERS)
    | text
)
nested = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6),
    max_leaves=40,
)


def nest(leaf: Any, depth: int) -> Any:
    """``leaf`` wrapped in ``depth`` containers, alternating list and object."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value, "level": level}
    return value


deep = st.builds(nest, scalars, st.integers(20, 150))
wide = st.dictionaries(keys, scalars | st.lists(scalars, max_size=3), min_size=50, max_size=80)
empty = st.sampled_from([[], {}, [[]], [{}], {"a": []}, {"": {}}, ""])


def long_string(chunk: str, length: int) -> str:
    return (chunk * (length // len(chunk) + 1))[:length]


# 100,000+ characters; an astral chunk makes that 400 KB of UTF-8, well under the
# gateway's 1 MB body limit even once wrapped.
long_strings = st.builds(
    long_string,
    st.text(min_size=1, max_size=8) | st.sampled_from(ASTRAL + ["a", "😀x", "é𝄞"]),
    st.integers(100_000, 110_000),
)
with_long_string = st.builds(lambda small, big: {"small": small, "big": big}, nested, long_strings)

# One value: sized so that a body holding one of them stays under the payload limit.
json_values = nested | deep | wide | empty | with_long_string


@st.composite
def args_lists(draw: st.DrawFn) -> list[Any]:
    """Several arguments, at most one of them holding a long string."""
    args = draw(st.lists(nested | deep | empty, max_size=6))
    if draw(st.booleans()) and draw(st.booleans()):
        args.insert(draw(st.integers(0, len(args))), draw(long_strings))
    return args


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values that keeps types apart (bool vs number, list vs object)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) or isinstance(b, int | float):
        if not (isinstance(a, int | float) and isinstance(b, int | float)):
            return False
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        # JavaScript prints an integral double with its shortest digits padded with
        # zeros (1.905509080064917e16 -> 19055090800649170), which Python then reads
        # as an int that is not the double's exact value; compare as doubles.
        return float(a) == float(b)
    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    return False


# ---------------------------------------------------------------- python-socketio receiver


class PyClient:
    """A python-socketio ``AsyncClient`` on an event loop of its own (a thread).

    The hypothesis tests are synchronous; the client's loop keeps running between
    examples so the connection (and its heartbeat) lives for the whole module.
    """

    def __init__(self, url: str, transports: list[str] | None = None) -> None:
        self.url = url
        self.transports = transports
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.received: dict[str, list[list[Any]]] = {}
        self.cond = threading.Condition()
        self.sio: socketio.AsyncClient | None = None

    def _run(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _connect(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.sio.on("*", self._on_any)
        await self.sio.connect(self.url, transports=self.transports, wait_timeout=10)

    async def _on_any(self, event: str, *args: Any) -> None:
        with self.cond:
            self.received.setdefault(event, []).append(list(args))
            self.cond.notify_all()

    def start(self) -> PyClient:
        self.thread.start()
        self._run(self._connect())
        return self

    def wait_event(self, name: str, timeout: float = WAIT) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.received.get(name):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"python-socketio client: no event {name!r}")
                self.cond.wait(remaining)
            return self.received.pop(name)[0]

    def close(self) -> None:
        if self.sio is not None:
            self._run(self.sio.disconnect())
            self._run(self.sio.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = spawn_gateway("--allow-anonymous", log_dir=tmp_path_factory.mktemp("fidelity"))
    yield gw
    gw.stop()


class Receivers:
    """The three clients; ``deliver`` emits once and collects what each one got."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.js = {
            name: JsClient(gateway.url, transports=[name], timeout=900)
            for name in ("polling", "websocket")
        }
        self.py = PyClient(gateway.url)
        self.names = (f"e{i}" for i in itertools.count())

    def start(self) -> Receivers:
        for client in self.js.values():
            client.start().connected()
        self.py.start()
        return self

    def close(self) -> None:
        for client in self.js.values():
            client.close()
        self.py.close()

    def deliver(self, body: dict[str, Any]) -> dict[str, list[Any]]:
        """POST ``body`` (under a fresh event name) and return each client's args."""
        name = next(self.names)
        raw = json.dumps({**body, "event": name}, ensure_ascii=False).encode()
        response = self.gateway.client.post(
            "/v1/emit", content=raw, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 200, (len(raw), response.text)
        got = {f"js-{t}": c.wait_event(name, WAIT) for t, c in self.js.items()}
        got["python-socketio"] = self.py.wait_event(name)
        # Drop what the JS clients saw, so the observation lists stay small.
        for client in self.js.values():
            with client._cond:
                client.observations[:] = [o for o in client.observations if o.get("event") != name]
        return got


@pytest.fixture(scope="module")
def receivers(gateway: Gateway) -> Iterator[Receivers]:
    r = Receivers(gateway).start()
    yield r
    r.close()


def check(got: dict[str, list[Any]], expected: list[Any]) -> None:
    for client, args in got.items():
        assert json_equal(args, expected), (
            f"{client} received something else\n"
            f"  expected: {repr(expected)[:500]}\n  received: {repr(args)[:500]}"
        )


FIDELITY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------- tests


@FIDELITY_SETTINGS
@given(value=json_values)
@example(value=EXTREME_NUMBERS)
@example(value={"😀": "𝄞", "𝄞": ["😀" * 3, "a😀b"], "mixed": "naïve 日本語 😀 𝄞"})
@example(value=long_string("😀", 100_000))
@example(value=long_string("abcdefghij", 102_400))
@example(value={f"key{i}": i for i in range(75)})
@example(value=nest("bottom", 300))
@example(value={"": [], "a": {}, "b": [[], {}], "c": ""})
@example(value={"$bin": "AAAA"})
@example(value=None)
def test_emit_data_arrives_equal(receivers: Receivers, value: Any) -> None:
    check(receivers.deliver({"data": value}), [value])


@FIDELITY_SETTINGS
@given(args=args_lists())
@example(args=[])
@example(args=[None, False, 0, "", [], {}])
@example(args=[[1, 2], {"a": 1}, "😀", MAX_SAFE_INTEGER, 5e-324, long_string("𝄞", 100_000)])
def test_emit_args_arrive_equal(receivers: Receivers, args: list[Any]) -> None:
    check(receivers.deliver({"args": args}), args)


def test_json_equal_is_strict() -> None:
    assert json_equal([1, 2.0, {"a": None}], [1.0, 2, {"a": None}])
    assert not json_equal(True, 1)
    assert not json_equal([0], [False])
    assert not json_equal({"a": 1}, {"a": 1, "b": 2})
    assert not json_equal("1", 1)
    assert not json_equal([None], [])
    assert not json_equal(MAX_SAFE_INTEGER, MAX_SAFE_INTEGER + 1)
    assert json_equal(19055090800649170, 1.905509080064917e16)
    assert not json_equal(19055090800649170, 1.9055090800649e16)
