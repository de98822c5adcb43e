"""Live numbers for ``GET /v1/stats`` and the dashboard: each node's metrics now, and a
bounded ring of samples taken every :data:`SAMPLE_INTERVAL` seconds.

A sample holds this node's gauges (sockets, rooms) at that moment and, for the counters,
their rate per second since the sample before (messages out, client events, webhook
calls and errors, API requests), plus the mean and 95th percentile of the webhook calls
that ended in that interval. Rates are computed here, on the node, so the page needs no
state to draw them and a node that restarted starts a fresh series instead of showing a
negative rate.

Every node answers :class:`~siogate.broker.StatsQuery` from its own recorder; answers
from other nodes come through Redis, and :func:`merge` checks them and drops what does
not fit.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .broker import Answers, StatsQuery
from .metrics import Metrics

logger = logging.getLogger("siogate.stats")

# Seconds between two samples, and samples kept (10 minutes).
SAMPLE_INTERVAL = 1.0
HISTORY = 600

# The members of a sample, in the order the JSON gives them. "t" is the node's Unix time;
# "*_per_s" are rates over the interval before it; "webhook_ms" and "webhook_p95_ms" are
# null when no webhook call ended in that interval.
SAMPLE_FIELDS = (
    "t",
    "sockets",
    "rooms",
    "connects_per_s",
    "disconnects_per_s",
    "emits_per_s",
    "packets_out_per_s",
    "bytes_out_per_s",
    "client_events_per_s",
    "api_requests_per_s",
    "webhook_calls_per_s",
    "webhook_errors_per_s",
    "webhook_ms",
    "webhook_p95_ms",
)


@dataclass(frozen=True, slots=True)
class _Counters:
    """The counters a rate is computed from, read at one moment."""

    at: float
    connects: int
    disconnects: int
    emits: int
    packets_out: int
    bytes_out: int
    client_events: int
    api_requests: int
    webhook_calls: int
    webhook_failures: int
    webhook_latency_sum: float
    webhook_latency_count: int
    # Per-bucket (not cumulative) webhook latency counts; the last is above all bounds.
    webhook_buckets: tuple[int, ...]


def _read(metrics: Metrics, at: float) -> _Counters:
    hooks = metrics.webhooks
    return _Counters(
        at=at,
        connects=metrics.connections_total,
        disconnects=metrics.disconnections_total,
        emits=metrics.emits_total,
        packets_out=metrics.packets_out_total,
        bytes_out=metrics.bytes_out_total,
        client_events=metrics.client_events_total,
        api_requests=sum(metrics.api_requests_total.values()),
        webhook_calls=0 if hooks is None else hooks.calls,
        webhook_failures=0 if hooks is None else hooks.failures,
        webhook_latency_sum=0.0 if hooks is None else hooks.latency_sum_seconds,
        webhook_latency_count=0 if hooks is None else hooks.latency_count,
        webhook_buckets=() if hooks is None else tuple(hooks.latency_buckets),
    )


def _p95_ms(bounds: tuple[float, ...], counts: list[int]) -> float | None:
    """The upper bound (ms) of the bucket holding the 95th percentile; None if empty.

    Above the last bound the answer is that bound: the histogram knows no more.
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = math.ceil(0.95 * total)
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return round(bounds[min(i, len(bounds) - 1)] * 1000, 3)
    return round(bounds[-1] * 1000, 3)


def sample(metrics: Metrics, before: _Counters, now: _Counters, t: float) -> dict[str, Any]:
    """One sample at Unix time ``t``: gauges now, rates between ``before`` and ``now``."""
    span = max(now.at - before.at, 1e-6)

    def rate(a: float, b: float) -> float:
        # A counter never goes back; max() guards against a replaced metrics object.
        return round(max(b - a, 0) / span, 3)

    calls = now.webhook_latency_count - before.webhook_latency_count
    mean = None
    p95 = None
    if calls > 0:
        mean = round((now.webhook_latency_sum - before.webhook_latency_sum) / calls * 1000, 3)
        hooks = metrics.webhooks
        if hooks is not None and len(now.webhook_buckets) == len(before.webhook_buckets):
            counts = [
                b - a for a, b in zip(before.webhook_buckets, now.webhook_buckets, strict=True)
            ]
            p95 = _p95_ms(hooks.bucket_bounds, counts)
    gauges = metrics.gauges
    return {
        "t": round(t, 3),
        "sockets": _gauge(gauges, "siogate_sockets"),
        "rooms": _gauge(gauges, "siogate_rooms"),
        "connects_per_s": rate(before.connects, now.connects),
        "disconnects_per_s": rate(before.disconnects, now.disconnects),
        "emits_per_s": rate(before.emits, now.emits),
        "packets_out_per_s": rate(before.packets_out, now.packets_out),
        "bytes_out_per_s": rate(before.bytes_out, now.bytes_out),
        "client_events_per_s": rate(before.client_events, now.client_events),
        "api_requests_per_s": rate(before.api_requests, now.api_requests),
        "webhook_calls_per_s": rate(before.webhook_calls, now.webhook_calls),
        "webhook_errors_per_s": rate(before.webhook_failures, now.webhook_failures),
        "webhook_ms": mean,
        "webhook_p95_ms": p95,
    }


def _gauge(gauges: dict[str, tuple[str, Callable[[], float]]], name: str) -> float:
    entry = gauges.get(name)
    return 0 if entry is None else entry[1]()


class Recorder:
    """Samples one node's metrics on a timer into a ring of at most ``size`` samples.

    No task: one ``TimerHandle`` at a time, rescheduled on a fixed grid of the loop's
    clock so that a slow tick does not shift later ones.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        interval: float = SAMPLE_INTERVAL,
        size: int = HISTORY,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics
        self.interval = interval
        self.samples: deque[dict[str, Any]] = deque(maxlen=size)
        self._wall_clock = wall_clock
        self._last: _Counters | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._next = 0.0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._last = _read(self.metrics, loop.time())
        self._next = loop.time() + self.interval
        self._timer = loop.call_at(self._next, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.record(loop.time())
        except Exception:  # a gauge callback failed; keep sampling
            logger.exception("stats sample failed")
        self._next += self.interval
        now = loop.time()
        if self._next <= now:  # the loop was blocked for more than an interval
            self._next = now + self.interval
        self._timer = loop.call_at(self._next, self._tick)

    def record(self, at: float) -> dict[str, Any]:
        """Take a sample now (``at``: monotonic seconds, for the rates)."""
        now = _read(self.metrics, at)
        before = self._last if self._last is not None else now
        self._last = now
        taken = sample(self.metrics, before, now, self._wall_clock())
        self.samples.append(taken)
        return taken

    def answer(self, query: StatsQuery) -> dict[str, Any]:
        """This node's answer to ``query`` (JSON-safe)."""
        samples: list[dict[str, Any]] = list(self.samples)
        if query.last is not None:
            since = self._wall_clock() - query.last
            samples = [s for s in samples if s["t"] > since]
        return {
            "time": round(self._wall_clock(), 3),
            "interval": self.interval,
            "metrics": metrics_json(self.metrics.render()),
            "samples": samples,
        }


_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _value(text: str) -> float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def metrics_json(text: str) -> dict[str, Any]:
    """``GET /metrics`` as JSON, read from the very text it serves (so both always agree).

    An unlabelled sample becomes ``name: value``; a histogram ``name: {"buckets": [[le,
    cumulative count], ...], "sum": s, "count": n}`` (the last ``le`` is ``"+Inf"``); any
    other labelled metric ``name: [[{label: value, ...}, value], ...]``.
    """
    histograms = {
        line.split()[2]
        for line in text.splitlines()
        if line.startswith("# TYPE ")
        if line.endswith(" histogram")
    }
    out: dict[str, Any] = {}
    for line in text.splitlines():
        found = _SAMPLE_LINE.match(line)
        if found is None:
            continue  # a comment or a blank line
        name, labels_text, raw = found.groups()
        value = _value(raw)
        labels = dict(_LABEL.findall(labels_text or ""))
        base, _, suffix = name.rpartition("_")
        if base in histograms and suffix in ("bucket", "sum", "count"):
            histogram = out.setdefault(base, {"buckets": [], "sum": 0, "count": 0})
            if suffix == "bucket":
                le = labels.get("le", "+Inf")
                histogram["buckets"].append([le if le == "+Inf" else _value(le), value])
            else:
                histogram[suffix] = value
        elif labels_text is not None:
            out.setdefault(name, []).append([labels, value])
        else:
            out[name] = value
    return out


@dataclass(frozen=True, slots=True)
class NodeStats:
    """One node's answer, checked."""

    node: str
    time: float
    interval: float
    metrics: dict[str, Any]
    samples: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "time": self.time,
            "interval": self.interval,
            "metrics": self.metrics,
            "samples": self.samples,
        }


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _metric_ok(value: Any) -> bool:
    if _number(value):
        return True
    if isinstance(value, dict):  # a histogram
        return _number(value.get("sum")) and _number(value.get("count"))
    return isinstance(value, list)  # requests by route


def _samples(raw: list[Any]) -> Iterator[dict[str, Any]]:
    for entry in raw:
        if not isinstance(entry, dict) or not _number(entry.get("t")):
            continue
        out: dict[str, Any] = {}
        for key in SAMPLE_FIELDS:
            value = entry.get(key)
            out[key] = value if _number(value) else None
        yield out


def parse(node: str, answer: Any) -> NodeStats | None:
    """Check a node's answer (it may come from another node through Redis)."""
    if not isinstance(answer, dict):
        return None
    metrics, samples = answer.get("metrics"), answer.get("samples")
    at, interval = answer.get("time"), answer.get("interval")
    if not isinstance(metrics, dict) or not isinstance(samples, list):
        return None
    if not isinstance(at, int | float) or not isinstance(interval, int | float):
        return None
    if not _number(at) or not _number(interval):
        return None
    checked = {k: v for k, v in metrics.items() if isinstance(k, str) and _metric_ok(v)}
    return NodeStats(node, float(at), float(interval), checked, list(_samples(samples)))


def merge(answers: Answers) -> list[NodeStats]:
    """The nodes' answers that fit, this node first, then by node id."""
    found: list[NodeStats] = []
    for node, answer in answers.answers:
        parsed = parse(node, answer)
        if parsed is None:
            logger.warning("node %s sent a malformed stats answer", node)
        else:
            found.append(parsed)
    return found[:1] + sorted(found[1:], key=lambda s: s.node)
