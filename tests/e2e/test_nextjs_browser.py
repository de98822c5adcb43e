"""The Next.js example (examples/nextjs) in Debian's Chromium.

Starts a gateway and ``next start`` on free loopback ports, then drives
``/usr/bin/chromium`` through ``browser.mjs`` (playwright-core, which downloads no
browser) along the example's two flows, then through a gateway restart:

1. the page's button makes an API route publish a large nested object through the
   TypeScript SDK, and the object the page's socket received equals the one the
   route sent (compared here, after both went through JSON);
2. the chat box emits with an ack, the gateway forwards it to the example's webhook
   route, and the route's reply comes back as the ack;
3. after the gateway is killed and started again on the same port, the stock
   client reconnects with a fresh token and the next publish arrives.

The example is built (``npm ci``, ``next build``) when its build is missing or older
than its sources; ``scripts/test`` does that beforehand. Screenshots are written to
``tests/results/``. Deselect with ``pytest -m 'not browser'``.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import API_KEY, JWT_SECRET, ROOT, Gateway, free_port

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

EXAMPLE = ROOT / "examples" / "nextjs"
E2E = Path(__file__).resolve().parent
DRIVER = E2E / "browser.mjs"
RESULTS = ROOT / "tests" / "results"
CHROMIUM = Path("/usr/bin/chromium")
WEBHOOK_SECRET = "test-webhook-secret-0123456789abcdef0123"

# Bounds for each wait, in seconds.
INSTALL_TIMEOUT = 300
BUILD_TIMEOUT = 300
START_TIMEOUT = 30
STEP_TIMEOUT = 20
# socket.io-client's reconnection backoff tops out at 5 s (+50 % jitter).
RECONNECT_TIMEOUT = 30

QUIET_NPM = ["--no-audit", "--no-fund", "--loglevel=error"]


def unavailable(reason: str) -> None:
    """Skip for a missing prerequisite, except in CI, where it is a failure."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without SIOGATE_* settings of the developer's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIOGATE_")}
    env["NEXT_TELEMETRY_DISABLED"] = "1"
    env.update(extra)
    return env


# ---------------------------------------------------------------- build


def newest_mtime(paths: list[Path]) -> float:
    newest = 0.0
    for path in paths:
        files = path.rglob("*") if path.is_dir() else [path]
        newest = max([newest, *(f.stat().st_mtime for f in files if f.is_file())])
    return newest


def build_is_current() -> bool:
    build_id = EXAMPLE / ".next" / "BUILD_ID"
    if not build_id.exists():
        return False
    sources = [
        EXAMPLE / name
        for name in ("app", "lib", "next.config.ts", "tsconfig.json", "package-lock.json")
    ]
    # The SDK is linked from clients/js: a rebuilt SDK needs a rebuilt app.
    sources.append((EXAMPLE / "node_modules" / "siogate").resolve() / "dist")
    return build_id.stat().st_mtime >= newest_mtime([p for p in sources if p.exists()])


def run_bounded(cmd: list[str], cwd: Path, timeout: float, quiet: bool = False) -> None:
    """Run ``cmd`` to completion; past ``timeout``, kill it and all it started."""
    # npm and next build start workers of their own: a process group of their
    # own lets a timeout end them all, and nothing else.
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.DEVNULL if quiet else None,
        start_new_session=True,
    )
    try:
        returncode = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        raise
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, cmd)


def npm_ci(directory: Path, marker: str) -> None:
    if not (directory / "node_modules" / marker).exists():
        run_bounded(["npm", "ci", *QUIET_NPM], directory, INSTALL_TIMEOUT)


@pytest.fixture(scope="module")
def example_build() -> None:
    """node_modules for the example and the driver, and a current ``next build``."""
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium (scripts/test does)")
    if shutil.which("node") is None or shutil.which("npm") is None:
        unavailable("node and npm are needed for the Next.js example")
    # A file lock keeps concurrent pytest processes from building at once.
    with (E2E / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        npm_ci(EXAMPLE, "next/package.json")
        npm_ci(E2E, "playwright-core/package.json")
        sdk = (EXAMPLE / "node_modules" / "siogate").resolve()
        if sdk == ROOT / "clients" / "js" and not (sdk / "dist").is_dir():
            unavailable("clients/js is not built: (cd clients/js && npm ci && npm run build)")
        if not build_is_current():
            run_bounded(["npm", "run", "build"], EXAMPLE, BUILD_TIMEOUT, quiet=True)


# ---------------------------------------------------------------- servers


def wait_http_ok(url: str, proc: subprocess.Popen[Any], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url} within {START_TIMEOUT}s:\n{log.read_text()}")


def start_gateway(port: int, app_port: int, log_dir: Path, generation: int) -> Gateway:
    """``siogate serve`` on ``port``, sending webhooks to the app on ``app_port``."""
    app_origin = f"http://127.0.0.1:{app_port}"
    cmd = [
        sys.executable, "-m", "siogate", "serve",
        "--port", str(port),
        "--api-key", API_KEY,
        "--jwt-secret", JWT_SECRET,
        "--webhook-url", f"{app_origin}/api/siogate/webhook",
        "--webhook-secret", WEBHOOK_SECRET,
        "--cors-origin", app_origin,
    ]  # fmt: skip
    log_path = log_dir / f"siogate-{generation}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=ROOT
        )
    gateway = Gateway(port=port, proc=proc, log_path=log_path)
    try:
        wait_http_ok(f"{gateway.url}/healthz", proc, "siogate", log_path)
    except BaseException:
        gateway.stop()
        raise
    return gateway


class GatewayProcess:
    """The gateway under test; ``crash_and_restart`` keeps its port and secrets."""

    def __init__(self, app_port: int, log_dir: Path) -> None:
        self.port = free_port()
        self.app_port = app_port
        self.log_dir = log_dir
        self.generation = 0
        self.current = start_gateway(self.port, app_port, log_dir, self.generation)

    @property
    def url(self) -> str:
        return self.current.url

    def kill(self) -> None:
        # SIGKILL: the page sees the connection drop as it would in a crash.
        self.current.client.close()
        self.current.proc.kill()
        self.current.proc.wait(10)

    def start(self) -> None:
        self.generation += 1
        self.current = start_gateway(self.port, self.app_port, self.log_dir, self.generation)

    def stop(self) -> None:
        self.current.stop()


@dataclass
class NextApp:
    """``next start`` in its own process group (it runs child processes)."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def start_next(port: int, gateway_url: str, log_dir: Path) -> NextApp:
    env = clean_env(
        SIOGATE_URL=gateway_url,
        SIOGATE_PUBLIC_URL=gateway_url,
        SIOGATE_API_KEY=API_KEY,
        SIOGATE_JWT_SECRET=JWT_SECRET,
        SIOGATE_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    log_path = log_dir / "next.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(EXAMPLE / "node_modules" / ".bin" / "next"), "start"]
            + ["--port", str(port), "--hostname", "127.0.0.1"],
            cwd=EXAMPLE,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = NextApp(port=port, proc=proc, log_path=log_path)
    try:
        wait_http_ok(f"{app.url}/api/token", proc, "next start", log_path)
    except BaseException:
        app.stop()
        raise
    return app


# ---------------------------------------------------------------- browser


class DriverError(AssertionError):
    """The browser driver could not do what the test asked (an assertion failure)."""


class Browser:
    """``browser.mjs`` (or another ``driver`` of the same protocol): one Node process,
    one Chromium, one page."""

    def __init__(self, log_path: Path, driver: Path = DRIVER) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                ["node", str(driver)],
                cwd=E2E,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,  # Chromium's processes join the group
            )
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.next_id = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.replies.put(json.loads(line))

    def call(self, op: str, timeout: float = STEP_TIMEOUT, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.next_id += 1
        request = {"id": self.next_id, "op": op, "timeoutMs": int(timeout * 1000), **args}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        try:
            # The driver bounds its own waits; this one covers a stuck driver.
            reply = self.replies.get(timeout=timeout + 15)
        except queue.Empty:
            raise DriverError(f"{op}: no reply from the driver in {timeout + 15}s") from None
        if reply["id"] != self.next_id:
            raise DriverError(f"{op}: reply out of order: {reply}")
        if not reply["ok"]:
            raise DriverError(f"{op}: {reply['error']}")
        return dict(reply["result"])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("close", timeout=10)
            except (DriverError, OSError):
                pass
            if self.proc.stdin:
                self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # The reader stops at end of file; then its pipe can be closed.
        self.reader.join(5)
        if self.proc.stdout:
            self.proc.stdout.close()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nextjs-e2e")


@pytest.fixture(scope="module")
def app_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gateway(example_build: None, app_port: int, logs: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(app_port, logs)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def app(gateway: GatewayProcess, app_port: int, logs: Path) -> Iterator[NextApp]:
    started = start_next(app_port, gateway.url, logs)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def page(app: NextApp, logs: Path) -> Iterator[Browser]:
    browser = Browser(logs / "browser.log")
    try:
        browser.call("open", executablePath=str(CHROMIUM), url=f"{app.url}/", timeout=60)
        yield browser
    finally:
        browser.close()


def screenshot(page: Browser, name: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    page.call("screenshot", path=str(path))
    return path


def count_properties(value: Any) -> int:
    """Properties of all objects at every depth (the page counts the same way)."""
    if isinstance(value, list):
        return sum(count_properties(v) for v in value)
    if isinstance(value, dict):
        return sum(1 + count_properties(v) for v in value.values())
    return 0


def assert_publish_arrives_intact(page: Browser) -> dict[str, Any]:
    result = page.call("publish")
    sent = result["sent"]
    received = json.loads(result["receivedJson"])
    assert received == sent
    # ...and it is the object that breaks socket.io-client inside an API route.
    assert count_properties(sent) >= 60
    assert len(sent["note"].encode()) >= 256 * 1024  # bytes of UTF-8
    assert sent["customer"]["address"]["geo"] == {"lat": 47.3769, "lng": 8.5417}
    assert sent["text"]["emoji"] == "🚀🎉👩‍💻🏳️‍🌈"
    assert sent["text"]["escapes"] == 'quote " backslash \\ tab \t newline \n end'
    assert sent["items"][2]["title"] == "抹茶ラテ (matcha latte)"
    assert "Identical to what the API route sent" in result["summary"]
    return dict(sent)


# ---------------------------------------------------------------- tests


def test_published_object_arrives_intact(page: Browser) -> None:
    page.call("status", status="connected", minConnects=1)
    assert_publish_arrives_intact(page)


def test_chat_ack_comes_from_the_webhook_route(page: Browser) -> None:
    user = page.call("status", status="connected")["user"]
    text = 'Grüße aus Chromium 👋 — 東京 "quoted"'
    result = page.call("chat", text=text)
    assert result["state"] == "acked", result
    ack = json.loads(result["ackJson"])
    assert ack["ok"] is True
    assert ack["echo"] == text
    assert ack["user"] == user
    assert screenshot(page, "nextjs-example.png").stat().st_size > 0
    # Nothing has failed yet: no console errors, no uncaught exceptions.
    assert page.call("errors")["errors"] == []


def test_webhook_route_refuses_bad_signatures(app: NextApp) -> None:
    body = json.dumps(
        {
            "type": "event",
            "namespace": "/",
            "socket": {"id": "s1", "user": "u1"},
            "event": "chat",
            "args": [{"text": "hi"}],
        },
        separators=(",", ":"),
    ).encode()
    url = f"{app.url}/api/siogate/webhook"
    ts = str(int(time.time()))
    signed = ts.encode() + b"." + body
    good = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    bad = "sha256=" + hmac.new(b"wrong secret", signed, hashlib.sha256).hexdigest()
    headers = {"X-Siogate-Timestamp": ts}

    assert httpx.post(url, content=body).status_code == 401
    reply = httpx.post(url, content=body, headers={**headers, "X-Siogate-Signature": bad})
    assert reply.status_code == 401
    tampered = body.replace(b"hi", b"ho")
    reply = httpx.post(url, content=tampered, headers={**headers, "X-Siogate-Signature": good})
    assert reply.status_code == 401
    # A signature of these bytes made 10 minutes ago: a replay.
    old_ts = str(int(ts) - 600)
    old = hmac.new(WEBHOOK_SECRET.encode(), old_ts.encode() + b"." + body, hashlib.sha256)
    replay = {"X-Siogate-Timestamp": old_ts, "X-Siogate-Signature": "sha256=" + old.hexdigest()}
    assert httpx.post(url, content=body, headers=replay).status_code == 401

    reply = httpx.post(url, content=body, headers={**headers, "X-Siogate-Signature": good})
    assert reply.status_code == 200
    [ack] = reply.json()["ack"]
    assert (ack["ok"], ack["echo"], ack["user"]) == (True, "hi", "u1")


def test_page_recovers_after_gateway_restart(page: Browser, gateway: GatewayProcess) -> None:
    before = page.call("status", status="connected")
    gateway.kill()
    page.call("status", status="disconnected")
    # Meanwhile the API route reports the failed emit, and the page shows it.
    down = page.call("publish", expectError=True)
    assert down["status"] == 502
    assert down["shown"] == down["reply"]["error"]
    assert down["shown"].startswith("siogate network_error")
    gateway.start()
    after = page.call(
        "status",
        status="connected",
        minConnects=before["connects"] + 1,
        timeout=RECONNECT_TIMEOUT,
    )
    # The client's auth callback asked the app for a fresh token to reconnect.
    assert after["tokenRequests"] > before["tokenRequests"]
    assert_publish_arrives_intact(page)
    ack = json.loads(page.call("chat", text="back again")["ackJson"])
    assert ack["echo"] == "back again"
    screenshot(page, "nextjs-example-after-restart.png")
    # Failed WebSocket attempts while the gateway was down are logged as console
    # errors; uncaught exceptions in the page are not expected at all.
    errors = page.call("errors")["errors"]
    assert [e for e in errors if e.startswith("pageerror:")] == []
