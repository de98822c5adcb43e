"""A real HTTP webhook receiver for end-to-end tests: ``http.server`` in a thread.

The gateway runs in another process, so the receiver must answer while the test's
own event loop is busy (or blocked); a thread of its own does that. Each test sets
``respond``, a plain function from the received request to a :class:`Reply`, the
way httpx's ``MockTransport`` takes a handler, but the bytes really cross a socket::

    with WebhookReceiver() as hook:
        hook.respond = lambda req: Reply(body={"ack": [req.payload["event"]]})
        gw = start_gateway("--webhook-url", hook.url, "--webhook-secret", SECRET)
        ...
        event = await hook.wait(of_type("event"))
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SIGNATURE_HEADER = "x-siogate-signature"
TIMESTAMP_HEADER = "x-siogate-timestamp"


@dataclass(frozen=True)
class Received:
    """One request as the receiver read it off the socket."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes  # the raw bytes, exactly as signed
    at: float = field(default_factory=time.monotonic)

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    def signature_ok(self, secret: str, tolerance: float = 300.0) -> bool:
        """True when ``X-Siogate-Signature`` is ``sha256=<hex HMAC of "<timestamp>.<raw
        body>">`` and ``X-Siogate-Timestamp`` is within ``tolerance`` s of this clock.

        Computed here with :mod:`hmac`, independently of siogate's own signing code.
        """
        timestamp = self.headers.get(TIMESTAMP_HEADER, "")
        if not timestamp.isascii() or not timestamp.isdigit():
            return False
        if abs(time.time() - int(timestamp)) > tolerance:
            return False
        signed = timestamp.encode() + b"." + self.body
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get(SIGNATURE_HEADER, ""), f"sha256={expected}")


@dataclass(frozen=True)
class Reply:
    """What the receiver answers: ``body`` (JSON-encoded unless bytes) after ``delay`` s."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"ack": []})
    delay: float = 0.0


Responder = Callable[[Received], Reply]


class _Server(ThreadingHTTPServer):
    # The default backlog (5) drops connections when the gateway opens many at once
    # (say, ten connect notifications), and a dropped SYN costs a 1 s retransmit.
    request_queue_size = 128
    daemon_threads = True


class WebhookReceiver:
    """Listens on 127.0.0.1, port 0; records every request; answers with ``respond``."""

    def __init__(self, respond: Responder | None = None) -> None:
        self.respond: Responder = respond or (lambda _request: Reply())
        self.requests: list[Received] = []
        self._changed = threading.Condition()
        # Set at close: a delayed reply stops waiting, so no thread outlives the test.
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server naming scheme
                length = int(self.headers.get("Content-Length") or 0)
                request = Received(
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length),
                )
                receiver._record(request)
                reply = receiver.respond(request)
                if reply.delay and receiver._closing.wait(reply.delay):
                    return
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
                data = body if isinstance(body, bytes) else body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the gateway gave up on us (its timeout); nothing to tell it

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean; requests are recorded instead

        self._server = _Server(("127.0.0.1", 0), Handler)
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _record(self, request: Received) -> None:
        with self._changed:
            self.requests.append(request)
            self._changed.notify_all()

    def matching(self, predicate: Callable[[Received], bool]) -> list[Received]:
        with self._changed:
            return [r for r in self.requests if predicate(r)]

    def wait_for(
        self, predicate: Callable[[Received], bool], *, count: int = 1, timeout: float = 5.0
    ) -> Received:
        """Block until ``count`` requests match; return the last of them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [r for r in self.requests if predicate(r)]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [r.body[:200] for r in self.requests]
                    raise AssertionError(f"webhook: no {count} matching request(s); got {seen}")
                self._changed.wait(left)

    async def wait(
        self, predicate: Callable[[Received], bool], *, count: int = 1, timeout: float = 5.0
    ) -> Received:
        """:meth:`wait_for` without blocking the caller's event loop (its clients keep going)."""
        return await asyncio.to_thread(self.wait_for, predicate, count=count, timeout=timeout)

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def of_type(kind: str, **fields: Any) -> Callable[[Received], bool]:
    """A predicate: a JSON request with ``"type": kind`` and these top-level fields."""

    def match(request: Received) -> bool:
        try:
            payload = request.payload
        except ValueError:
            return False
        if not isinstance(payload, dict) or payload.get("type") != kind:
            return False
        return all(payload.get(key) == value for key, value in fields.items())

    return match
