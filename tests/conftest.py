"""Shared fixtures: a real siogate process on a free loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "test-api-key-0123456789abcdef0123456789"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gateway:
    """A running ``siogate serve`` subprocess."""

    port: int
    proc: subprocess.Popen[bytes]
    api_key: str = API_KEY
    jwt_secret: str = JWT_SECRET
    log_path: Path | None = None
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(
        self,
        sub: str | None = "alice",
        rooms: list[str] | None = None,
        ttl: int = 3600,
        **claims: Any,
    ) -> str:
        payload: dict[str, Any] = {"exp": int(time.time()) + ttl, **claims}
        if sub is not None:
            payload["sub"] = sub
        if rooms is not None:
            payload["rooms"] = rooms
        return jwt.encode(payload, self.jwt_secret, algorithm="HS256")

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, **kw)

    def emit(self, event: str, *args: Any, **body: Any) -> httpx.Response:
        payload = {"event": event, "args": list(args), **body}
        return self.client.post("/v1/emit", json=payload)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def spawn_gateway(
    *args: str, log_dir: Path, env: dict[str, str] | None = None, with_defaults: bool = True
) -> Gateway:
    """Start ``siogate serve`` with ``args`` and wait until /healthz answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "siogate", "serve", "--port", str(port)]
    if with_defaults:
        cmd += ["--api-key", API_KEY, "--jwt-secret", JWT_SECRET, "--log-level", "info"]
    cmd += list(args)
    log_path = log_dir / f"siogate-{port}.log"
    full_env = {**os.environ, **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
    gw = Gateway(port=port, proc=proc, log_path=log_path)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"siogate exited with {proc.returncode}:\n{gw.log()}")
        try:
            if httpx.get(f"{gw.url}/healthz", timeout=1).status_code == 200:
                return gw
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    gw.stop()
    raise RuntimeError(f"siogate did not become healthy:\n{gw.log()}")


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    """Factory fixture: ``start_gateway("--allow-anonymous")`` -> a running Gateway."""
    started: list[Gateway] = []

    def start(*args: str, env: dict[str, str] | None = None, with_defaults: bool = True) -> Gateway:
        gw = spawn_gateway(*args, log_dir=tmp_path, env=env, with_defaults=with_defaults)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway]) -> Gateway:
    """A gateway with the test API key and JWT secret, anonymous sockets allowed."""
    return start_gateway("--allow-anonymous")


@dataclass
class RedisServer:
    """A ``redis-server`` this test run started on a free loopback port."""

    port: int
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port) and wait until it answers PING."""
        assert self.proc is None or self.proc.poll() is not None
        cmd = [
            REDIS_SERVER or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no",
        ]  # fmt: skip
        assert self.log_path is not None
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        """Stop it by its PID (SIGTERM, then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)


def need_redis_server() -> None:
    """Skip (or, in CI, fail) when redis-server is not installed."""
    if REDIS_SERVER is None:
        message = "redis-server is not installed (scripts/test installs Debian's redis-server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test (tests may stop and restart it)."""
    need_redis_server()
    server = RedisServer(port=free_port(), log_path=tmp_path / "redis.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for a module whose tests only read and publish."""
    need_redis_server()
    log = tmp_path_factory.mktemp("redis") / "redis.log"
    server = RedisServer(port=free_port(), log_path=log)
    server.start()
    yield server
    server.stop()


def without_node(sockets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A sockets listing without the ``node`` each entry names (one node: always the same)."""
    assert len({s["node"] for s in sockets}) <= 1
    return [{k: v for k, v in s.items() if k != "node"} for s in sockets]
