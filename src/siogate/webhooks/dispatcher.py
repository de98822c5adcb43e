"""Outgoing webhook calls: one signed JSON POST per event, with bounds.

A webhook is someone else's server, so every call is bounded three ways:

* time: one deadline of ``timeout`` seconds covers waiting for a free slot,
  connecting, sending and reading the reply;
* concurrency: at most ``max_in_flight`` requests run at once and at most
  ``max_queued`` callers wait for a slot; beyond that a call fails at once
  with ``webhook_overloaded`` instead of growing memory and latency;
* size: a reply larger than ``max_response_bytes`` is refused while it is
  being read.

Failures raise :class:`~siogate.errors.WebhookError` with one of these codes
(the messages never contain the URL or the secret, so they may be shown to a
client):

======================  ====================================================
code                    meaning
======================  ====================================================
``webhook_timeout``     no complete reply within ``timeout`` seconds
``webhook_unreachable`` connection refused or broken, or dispatcher closed
``webhook_status``      the reply status was not 2xx (redirects included)
``webhook_bad_reply``   not JSON, not an object, ``ack`` not a list, too big
``webhook_overloaded``  ``max_in_flight`` running and ``max_queued`` waiting
``webhook_bad_payload`` the payload cannot be encoded as JSON (a caller bug)
======================  ====================================================
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NoReturn

import httpx

from siogate._version import __version__
from siogate.errors import ConfigError, WebhookError
from siogate.webhooks.signing import signed_headers

__all__ = [
    "LATENCY_BUCKETS",
    "WebhookDispatcher",
    "WebhookSettings",
    "WebhookStats",
]

logger = logging.getLogger("siogate.webhooks")

LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds (seconds, inclusive) of the webhook latency histogram buckets."""


@dataclass(frozen=True)
class WebhookSettings:
    """Where webhooks go and how much of the gateway they may use."""

    url: str
    secret: str = field(repr=False)  # kept out of logs
    # Timeouts
    timeout: float = 5.0
    # Limits
    max_in_flight: int = 64
    max_queued: int = 10_000
    max_response_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        try:
            scheme = httpx.URL(self.url).scheme
        except (httpx.InvalidURL, TypeError):
            scheme = ""
        if scheme not in ("http", "https"):
            raise ConfigError("webhook url must be an http:// or https:// URL")
        if not self.secret:
            raise ConfigError("webhook secret must not be empty")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError("webhook timeout must be a positive number of seconds")
        if self.max_in_flight < 1:
            raise ConfigError("webhook max_in_flight must be at least 1")
        if self.max_queued < 0:
            raise ConfigError("webhook max_queued must not be negative")
        if self.max_response_bytes < 0:
            raise ConfigError("webhook max_response_bytes must not be negative")


class WebhookStats:
    """Counters for the metrics endpoint; plain attributes, read them directly.

    Every :meth:`WebhookDispatcher.call` and every notification counts once in
    ``calls``; each one that fails counts in ``failures`` and, for those two
    causes, in ``timeouts`` or ``overloaded`` as well. Latency is observed for
    every call that was admitted (successful or not), from the call to its
    end, so it includes time spent waiting for a free slot.
    """

    __slots__ = (
        "calls",
        "failures",
        "timeouts",
        "overloaded",
        "latency_sum_seconds",
        "latency_count",
        "latency_buckets",
    )

    bucket_bounds: tuple[float, ...] = LATENCY_BUCKETS
    """Upper bounds of ``latency_buckets`` (the last bucket is +Inf)."""

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.timeouts = 0
        self.overloaded = 0
        self.latency_sum_seconds = 0.0
        self.latency_count = 0
        # Per-bucket counts, NOT cumulative: index i counts observations in
        # (bounds[i-1], bounds[i]]; the extra last index counts those above all.
        self.latency_buckets: list[int] = [0] * (len(LATENCY_BUCKETS) + 1)

    def observe_latency(self, seconds: float) -> None:
        self.latency_sum_seconds += seconds
        self.latency_count += 1
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """``(le, count)`` pairs in Prometheus form, ending with ``(inf, total)``."""
        pairs: list[tuple[float, int]] = []
        total = 0
        for bound, count in zip((*LATENCY_BUCKETS, math.inf), self.latency_buckets, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs


def _reject_constant(name: str) -> NoReturn:
    # NaN and Infinity are not JSON; they could not be relayed to a client.
    raise ValueError(f"{name} is not valid JSON")


class WebhookDispatcher:
    """POST signed JSON payloads to one webhook URL.

    ``call`` waits for the reply and returns its ``ack`` list; ``notify``
    sends without waiting. Pass ``client`` to share an
    :class:`httpx.AsyncClient` (it is then not closed by :meth:`aclose`);
    redirects are never followed and every request gets ``timeout`` whatever
    the client's own settings are.
    """

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.stats = WebhookStats()
        self._http_timeout = httpx.Timeout(settings.timeout)
        self._owns_client = client is None
        if client is None:
            client = httpx.AsyncClient(
                timeout=self._http_timeout,
                limits=httpx.Limits(
                    max_connections=settings.max_in_flight,
                    max_keepalive_connections=settings.max_in_flight,
                ),
                follow_redirects=False,
            )
        self._client = client
        self._headers = {
            "Content-Type": "application/json",
            "User-Agent": f"siogate/{__version__}",
        }
        # Admission: the semaphore holds the running requests; _queued counts
        # callers blocked on it, which max_queued bounds.
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._in_flight = 0
        self._queued = 0
        # Strong references to notify() tasks: the event loop keeps only weak
        # ones, so an unreferenced task may be garbage collected mid-flight.
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Requests running now."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Callers waiting for a free request slot."""
        return self._queued

    async def call(self, payload: Mapping[str, Any]) -> list[Any]:
        """POST ``payload`` and return the reply's ``ack`` list.

        A 2xx reply with an empty body, or a JSON object without ``ack`` (or
        with ``"ack": null``), gives ``[]``. Raises WebhookError otherwise.
        """
        if self._closed:
            self.stats.calls += 1
            self.stats.failures += 1
            raise WebhookError("webhook_unreachable", "webhook dispatcher is closed")
        return await self._send(self._encode(payload))

    def notify(self, payload: Mapping[str, Any]) -> None:
        """Send ``payload`` in the background; failures are logged, never raised.

        The payload is encoded before this returns, so the caller may reuse
        or change it afterwards. Must be called from the event loop's thread.
        """
        if self._closed:
            logger.warning("webhook notification dropped: dispatcher is closed")
            return
        try:
            body = self._encode(payload)
            loop = asyncio.get_running_loop()
        except WebhookError as exc:
            logger.warning("webhook notification failed: %s (%s)", exc.code, exc.message)
            return
        except RuntimeError:
            logger.error("webhook notification dropped: no running event loop")
            return
        task = loop.create_task(self._notify(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop accepting work, let pending notifications finish, close the client.

        Notifications still running after ``timeout`` seconds are cancelled.
        Calling it again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        pending = set(self._tasks)
        if pending:
            _, unfinished = await asyncio.wait(pending, timeout=self.settings.timeout)
            if unfinished:
                logger.warning(
                    "cancelling %d webhook notifications still running at close",
                    len(unfinished),
                )
                for task in unfinished:
                    task.cancel()
                await asyncio.gather(*unfinished, return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> WebhookDispatcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # Internals

    def _encode(self, payload: Mapping[str, Any]) -> bytes:
        # The body is encoded once: the signature and the request use these
        # exact bytes.
        obj = payload if isinstance(payload, dict) else dict(payload)
        try:
            try:
                text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
                return text.encode("utf-8")
            except UnicodeEncodeError:
                # A lone surrogate (say, half of an emoji cut by a client) has
                # no UTF-8 form; \u escapes carry it through unchanged.
                text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
                return text.encode("ascii")
        except (TypeError, ValueError, RecursionError) as exc:
            self.stats.calls += 1
            self.stats.failures += 1
            raise WebhookError(
                "webhook_bad_payload", f"payload is not JSON-encodable: {type(exc).__name__}"
            ) from exc

    async def _notify(self, body: bytes) -> None:
        try:
            await self._send(body)
        except WebhookError as exc:
            logger.warning("webhook notification failed: %s (%s)", exc.code, exc.message)
        except Exception:
            logger.exception("webhook notification failed unexpectedly")

    async def _send(self, body: bytes) -> list[Any]:
        stats = self.stats
        stats.calls += 1
        if self._slots.locked() and self._queued >= self.settings.max_queued:
            stats.failures += 1
            stats.overloaded += 1
            raise WebhookError(
                "webhook_overloaded",
                f"too many webhook calls pending ({self._in_flight} running, "
                f"{self._queued} waiting)",
            )

        started = time.perf_counter()
        try:
            # One deadline for the wait and the request: a caller is never
            # kept longer than `timeout`, however busy the webhook is.
            async with asyncio.timeout(self.settings.timeout):
                self._queued += 1
                try:
                    await self._slots.acquire()
                finally:
                    self._queued -= 1
                self._in_flight += 1
                try:
                    return await self._post(body)
                finally:
                    self._in_flight -= 1
                    self._slots.release()
        except TimeoutError:
            stats.failures += 1
            stats.timeouts += 1
            raise WebhookError(
                "webhook_timeout", f"webhook did not answer within {self.settings.timeout:g}s"
            ) from None
        except WebhookError as exc:
            stats.failures += 1
            if exc.code == "webhook_timeout":
                stats.timeouts += 1
            raise
        finally:
            stats.observe_latency(time.perf_counter() - started)

    async def _post(self, body: bytes) -> list[Any]:
        headers = dict(self._headers)
        # Signed with the time of this attempt: receivers refuse stale timestamps.
        headers.update(signed_headers(body, self.settings.secret, time.time()))
        try:
            async with self._client.stream(
                "POST",
                self.settings.url,
                content=body,
                headers=headers,
                timeout=self._http_timeout,
                follow_redirects=False,
            ) as response:
                status = response.status_code
                if not 200 <= status < 300:
                    raise WebhookError("webhook_status", f"webhook answered HTTP {status}")
                content = await self._read_limited(response)
        except httpx.TimeoutException:
            raise WebhookError(
                "webhook_timeout", f"webhook did not answer within {self.settings.timeout:g}s"
            ) from None
        except httpx.DecodingError:
            raise WebhookError("webhook_bad_reply", "webhook reply could not be decoded") from None
        except httpx.HTTPError as exc:
            raise WebhookError(
                "webhook_unreachable", f"webhook unreachable ({type(exc).__name__})"
            ) from None
        return self._parse_ack(content)

    async def _read_limited(self, response: httpx.Response) -> bytes:
        limit = self.settings.max_response_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise WebhookError("webhook_bad_reply", f"webhook reply larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        # Counted after decoding, so a compressed reply cannot expand past it.
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise WebhookError("webhook_bad_reply", f"webhook reply larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse_ack(content: bytes) -> list[Any]:
        if not content.strip():
            return []
        try:
            reply = json.loads(content, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise WebhookError("webhook_bad_reply", "webhook reply is not JSON") from None
        if not isinstance(reply, dict):
            raise WebhookError("webhook_bad_reply", "webhook reply is not a JSON object")
        ack = reply.get("ack")
        if ack is None:
            return []
        if not isinstance(ack, list):
            raise WebhookError("webhook_bad_reply", "webhook reply ack is not a list")
        return ack
