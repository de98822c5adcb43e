"""Counters and histograms rendered in the Prometheus text format.

Written by hand rather than with prometheus-client because the fan-out loop bumps these
counters once per broadcast with plain integer additions; a labelled client-library
metric costs a lock and a dict lookup per call on that path.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable

from .webhooks import WebhookStats

# Seconds; suits both HTTP API handling (sub-ms) and webhook round trips (up to timeout).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """A cumulative-bucket latency histogram."""

    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(self.buckets, seconds)
        if i < len(self.counts):
            self.counts[i] += 1
        self.sum += seconds
        self.count += 1

    def render(self, name: str) -> Iterable[str]:
        pairs = list(zip(self.buckets, itertools.accumulate(self.counts), strict=True))
        return histogram_samples(name, [*pairs, (math.inf, self.count)], self.sum, self.count)


def histogram_samples(
    name: str, cumulative: Iterable[tuple[float, int]], total: float, count: int
) -> list[str]:
    """Prometheus lines for a histogram given ``(le, cumulative count)`` pairs."""
    samples = [
        f'{name}_bucket{{le="{"+Inf" if bound == math.inf else bound}"}} {n}'
        for bound, n in cumulative
    ]
    samples += [f"{name}_sum {total}", f"{name}_count {count}"]
    return samples


class Metrics:
    """Every number ``GET /metrics`` reports. Gauges are read through callbacks."""

    def __init__(self) -> None:
        self.connections_total = 0
        self.connect_refused_total = 0
        self.disconnections_total = 0
        self.emits_total = 0
        self.packets_out_total = 0
        self.bytes_out_total = 0
        self.client_events_total = 0
        self.client_events_unhandled_total = 0
        self.client_events_dropped_total = 0
        self.slow_consumer_disconnects_total = 0
        self.client_events_rate_limited_total = 0
        # Read from the webhook dispatcher when one is configured.
        self.webhooks: WebhookStats | None = None
        self.api_requests_total: dict[tuple[str, int], int] = {}
        self.api_latency = Histogram()
        self.gauges: dict[str, tuple[str, Callable[[], float]]] = {}
        self.counters: dict[str, tuple[str, Callable[[], float]]] = {}

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges[name] = (help_text, read)

    def counter(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        """A counter kept elsewhere, read when rendering."""
        self.counters[name] = (help_text, read)

    def api_request(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.api_requests_total[key] = self.api_requests_total.get(key, 0) + 1
        self.api_latency.observe(seconds)

    def render(self) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: Iterable[str]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)

        for name, (help_text, read) in sorted(self.gauges.items()):
            metric(name, "gauge", help_text, [f"{name} {read()}"])
        for name, (help_text, read) in sorted(self.counters.items()):
            metric(name, "counter", help_text, [f"{name} {read()}"])
        counters = [
            ("connections_total", "Sockets accepted.", self.connections_total),
            ("connect_refused_total", "Socket CONNECTs refused.", self.connect_refused_total),
            ("disconnections_total", "Sockets that left.", self.disconnections_total),
            ("emits_total", "Emit commands applied on this node.", self.emits_total),
            ("packets_out_total", "Event packets written to sockets.", self.packets_out_total),
            ("bytes_out_total", "Bytes of event packets written to sockets.", self.bytes_out_total),
            ("client_events_total", "Events received from clients.", self.client_events_total),
            (
                "client_events_unhandled_total",
                "Client events with neither webhook nor handler.",
                self.client_events_unhandled_total,
            ),
            (
                "client_events_dropped_total",
                "Client events dropped because their socket's webhook queue was full.",
                self.client_events_dropped_total,
            ),
            (
                "slow_consumer_disconnects_total",
                "Sockets closed because their outgoing buffer overflowed.",
                self.slow_consumer_disconnects_total,
            ),
            (
                "client_events_rate_limited_total",
                "Client events over their connection's event rate (dropped, or closed it).",
                self.client_events_rate_limited_total,
            ),
        ]
        hooks = self.webhooks
        if hooks is not None:
            counters += [
                (
                    "webhook_calls_total",
                    "Webhook calls (events, connects, disconnects).",
                    hooks.calls,
                ),
                ("webhook_failures_total", "Webhook calls that failed.", hooks.failures),
                ("webhook_timeouts_total", "Webhook calls that timed out.", hooks.timeouts),
                (
                    "webhook_overloaded_total",
                    "Webhook calls refused: too many in flight and queued.",
                    hooks.overloaded,
                ),
            ]
        for short, help_text, value in counters:
            metric(f"siogate_{short}", "counter", help_text, [f"siogate_{short} {value}"])
        if hooks is not None:
            name = "siogate_webhook_latency_seconds"
            samples = histogram_samples(
                name, hooks.cumulative_buckets(), hooks.latency_sum_seconds, hooks.latency_count
            )
            metric(name, "histogram", "Webhook round-trip time.", samples)
        metric(
            "siogate_api_requests_total",
            "counter",
            "HTTP API requests by route and status.",
            [
                f'siogate_api_requests_total{{route="{route}",status="{status}"}} {n}'
                for (route, status), n in sorted(self.api_requests_total.items())
            ],
        )
        metric(
            "siogate_api_latency_seconds",
            "histogram",
            "HTTP API handling time.",
            self.api_latency.render("siogate_api_latency_seconds"),
        )
        return "\n".join(lines) + "\n"
