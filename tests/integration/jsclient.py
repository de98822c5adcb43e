"""Run ``tests/js/client.mjs`` (the official socket.io-client) from Python tests.

A :class:`JsClient` is one Node process holding one socket. It is long-lived and
line-oriented: steps go in on stdin, observations come out on stdout, and a reader
thread collects them so a test can connect, call the HTTP API, then wait for what
the socket saw::

    with JsClient(gw.url, auth={"token": tok}) as js:
        sid = js.connect()["id"]
        gw.emit("hello", 1, rooms=["user:alice"])
        assert js.wait_event("hello") == [1]

Values cross the process boundary with the driver's two escapes (see client.mjs):
``bytes`` <-> ``{"$bin": base64}``, and an object key starting with ``$`` gains one
more ``$``. :func:`encode` and :func:`decode` apply them, so tests deal in plain
Python values, with ``bytes`` for binary attachments.
"""

from __future__ import annotations

import base64
import fcntl
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).resolve().parent.parent / "js"
DRIVER = JS_DIR / "client.mjs"

Observation = dict[str, Any]


class JsClientError(AssertionError):
    """The driver did not report what the test waited for (an assertion failure)."""


# ---------------------------------------------------------------- setup


def node_path() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node (>= 18) is required for the socket.io-client tests")
    return node


def ensure_node_modules() -> None:
    """Install tests/js/node_modules from the lockfile unless it is already there.

    A file lock makes this safe when several pytest workers start at once.
    """
    marker = JS_DIR / "node_modules" / "socket.io-client" / "package.json"
    if marker.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is required to install tests/js (npm ci)")
    with (JS_DIR / ".install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=JS_DIR,
                check=True,
                timeout=300,
            )


# ---------------------------------------------------------------- value codec


def encode(value: Any) -> Any:
    """A Python value -> its JSON form for the driver."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bin": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {("$" + k if k.startswith("$") else k): encode(v) for k, v in value.items()}
    return value


def decode(value: Any) -> Any:
    """The driver's JSON form -> a Python value (``bytes`` for binary)."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1 and "$bin" in value:
            return base64.b64decode(value["$bin"])
        return {(k[1:] if k.startswith("$$") else k): decode(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- client


def _matches(obs: Observation, socket: str, fields: dict[str, Any]) -> bool:
    return obs.get("socket", "main") == socket and all(obs.get(k) == v for k, v in fields.items())


class JsClient:
    """One socket.io-client socket in its own Node process."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "/",
        transports: list[str] | None = None,
        auth: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        timeout: float = 60.0,
    ) -> None:
        opts: dict[str, Any] = dict(options or {})
        if transports is not None:
            opts["transports"] = transports
        if auth is not None:
            opts["auth"] = encode(auth)
        self.scenario: dict[str, Any] = {
            "url": url,
            "namespace": namespace,
            "options": opts,
            "interactive": True,
            # The driver exits on its own after this, whatever the test does.
            "timeout": int(timeout * 1000),
        }
        self.observations: list[Observation] = []
        self._cond = threading.Condition()
        self._stderr: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._threads: list[threading.Thread] = []
        self._tags = 0

    # -- lifecycle

    def start(self) -> JsClient:
        ensure_node_modules()
        self._proc = subprocess.Popen(
            [node_path(), str(DRIVER), "-"],
            cwd=JS_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()
        self._write(self.scenario)
        self.wait_for("ready")
        return self

    def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.poll() is None:
            try:
                self._write_to(proc, {"op": "exit"})
            except OSError:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for t in self._threads:
            t.join(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def __enter__(self) -> JsClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    # -- I/O threads

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                obs = json.loads(line)
            except ValueError:
                obs = {"type": "raw", "line": line}
            if "args" in obs:
                obs["args"] = decode(obs["args"])
            with self._cond:
                self.observations.append(obs)
                self._cond.notify_all()
        with self._cond:
            self.observations.append({"type": "exit"})
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)

    def _write_to(self, proc: subprocess.Popen[str], obj: Any) -> None:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(obj, ensure_ascii=False) + "\n")
        proc.stdin.flush()

    def _write(self, obj: Any) -> None:
        if self._proc is None:
            raise RuntimeError("JsClient is not started")
        self._write_to(self._proc, obj)

    # -- waiting

    def wait_until(
        self,
        predicate: Callable[[list[Observation]], Any],
        timeout: float = 10.0,
        what: str = "condition",
    ) -> Any:
        """Wait until ``predicate(observations)`` is truthy and return its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate(self.observations)
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise JsClientError(f"timed out waiting for {what}\n{self.describe()}")
                self._cond.wait(remaining)

    def find(
        self, type_: str, start: int = 0, socket: str = "main", **fields: Any
    ) -> Observation | None:
        """The first observation of ``type_`` (from index ``start``) matching ``fields``."""
        with self._cond:
            for obs in self.observations[start:]:
                if obs.get("type") == type_ and _matches(obs, socket, fields):
                    return obs
        return None

    def wait_for(
        self,
        type_: str | Iterable[str],
        timeout: float = 10.0,
        start: int = 0,
        socket: str = "main",
        **fields: Any,
    ) -> Observation:
        """The first observation whose type is ``type_`` (or one of them) matching ``fields``.

        ``socket`` names the driver socket (see :meth:`connect`); observations about the
        connection itself (open, upgrade, transport) belong to ``"main"``.
        """
        types = {type_} if isinstance(type_, str) else set(type_)

        def pred(observations: list[Observation]) -> Observation | None:
            for obs in observations[start:]:
                if obs.get("type") in types and _matches(obs, socket, fields):
                    return obs
                if obs.get("type") == "exit":
                    raise JsClientError(f"driver exited before {types}\n{self.describe()}")
            return None

        return self.wait_until(pred, timeout, what=f"{sorted(types)} {fields or ''}")

    @staticmethod
    def _event_args(
        observations: list[Observation], name: str | None, socket: str
    ) -> list[list[Any]]:
        return [
            o["args"]
            for o in observations
            if o.get("type") == "event"
            and (name is None or o["event"] == name)
            and o.get("socket", "main") == socket
        ]

    def events(self, name: str | None = None, socket: str = "main") -> list[list[Any]]:
        """Args of every event received so far (named ``name``, or all)."""
        with self._cond:
            return self._event_args(self.observations, name, socket)

    def wait_events(
        self, name: str, count: int = 1, timeout: float = 10.0, socket: str = "main"
    ) -> list[list[Any]]:
        """Wait until ``count`` events named ``name`` have arrived; return all their args."""

        def pred(observations: list[Observation]) -> list[list[Any]] | None:
            got = self._event_args(observations, name, socket)
            return got if len(got) >= count else None

        return self.wait_until(pred, timeout, what=f"{count} x event {name!r} on {socket}")

    def wait_event(self, name: str, timeout: float = 10.0, socket: str = "main") -> list[Any]:
        """Args of the first event named ``name``."""
        return self.wait_events(name, 1, timeout, socket)[0]

    # -- steps

    def send(self, **step: Any) -> None:
        """Queue one driver step (see client.mjs for the list)."""
        self._write(step)

    def next_tag(self) -> str:
        self._tags += 1
        return f"t{self._tags}"

    def connect(
        self,
        timeout: float = 10.0,
        socket: str = "main",
        namespace: str | None = None,
        auth: dict[str, Any] | None = None,
    ) -> Observation:
        """Open a socket; return the ``connected`` or ``connect_error`` observation.

        The first socket uses the constructor's namespace and auth. Another ``socket``
        name with a ``namespace`` opens a second socket on the same Manager: the same
        Engine.IO connection, multiplexed.
        """
        step: dict[str, Any] = {"op": "connect", "timeout": int(timeout * 1000)}
        if socket != "main":
            step["socket"] = socket
        if namespace is not None:
            step["namespace"] = namespace
        if auth is not None:
            step["auth"] = encode(auth)
        start = len(self.observations)
        self.send(**step)
        return self.wait_for(
            ("connected", "connect_error", "connect_timeout"), timeout + 2, start, socket
        )

    def connected(self, timeout: float = 10.0, socket: str = "main", **kw: Any) -> str:
        """Open a socket, insist that it connects, and return its id."""
        obs = self.connect(timeout, socket, **kw)
        if obs["type"] != "connected":
            raise JsClientError(f"expected to connect, got {obs}\n{self.describe()}")
        return str(obs["id"])

    def emit(self, event: str, *args: Any, socket: str = "main") -> None:
        self.send(op="emit", event=event, args=encode(list(args)), socket=socket)

    def call(self, event: str, *args: Any, timeout: float = 5.0, socket: str = "main") -> list[Any]:
        """Emit with an ack callback and return the ack arguments."""
        tag = self.next_tag()
        self.send(
            op="emit",
            event=event,
            args=encode(list(args)),
            ack=True,
            tag=tag,
            timeout=int(timeout * 1000),
            wait=False,
            socket=socket,
        )
        obs = self.wait_for(("ack", "ack_timeout"), timeout + 2, socket=socket, tag=tag)
        if obs["type"] != "ack":
            raise JsClientError(f"no ack for {event!r}: {obs}\n{self.describe()}")
        return list(obs["args"])

    def transport(self) -> str | None:
        tag = self.next_tag()
        self.send(op="transport", tag=tag)
        return self.wait_for("transport", tag=tag).get("name")

    def wait_transport(self, name: str, timeout: float = 10.0) -> None:
        tag = self.next_tag()
        self.send(op="wait_transport", name=name, timeout=int(timeout * 1000), tag=tag)
        obs = self.wait_for(("transport", "wait_timeout"), timeout + 2, tag=tag)
        if obs["type"] != "transport":
            raise JsClientError(f"transport did not become {name}: {obs}\n{self.describe()}")

    def disconnect(self, socket: str = "main") -> None:
        self.send(op="disconnect", socket=socket)

    def wait_disconnect(self, timeout: float = 10.0, socket: str = "main") -> Observation:
        return self.wait_for("disconnect", timeout, socket=socket)

    # -- diagnostics

    def describe(self, last: int = 30) -> str:
        lines = [json.dumps(o, default=repr)[:300] for o in self.observations[-last:]]
        text = f"driver observations (last {last}):\n  " + "\n  ".join(lines)
        if self._stderr:
            text += "\ndriver stderr:\n" + "".join(self._stderr[-20:])
        return text
