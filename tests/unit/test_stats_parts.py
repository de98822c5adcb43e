"""siogate.stats (samples and the check of other nodes' answers), the stats question on
the wire, and the dashboard's HTTP Basic check (siogate.auth.basic)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import bcrypt
import pytest

from siogate.auth.basic import REMEMBER_SECONDS, BasicAuth, parse_basic
from siogate.broker import Answers, StatsQuery, wire
from siogate.metrics import Metrics
from siogate.stats import SAMPLE_FIELDS, Recorder, merge, metrics_json, parse
from siogate.webhooks import WebhookStats


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def recorder() -> tuple[Recorder, Metrics, Clock]:
    metrics = Metrics()
    metrics.webhooks = WebhookStats()
    sockets = [0]
    metrics.gauge("siogate_sockets", "", lambda: sockets[0])
    clock = Clock()
    return Recorder(metrics, size=5, wall_clock=clock), metrics, clock


def test_samples_hold_gauges_and_rates_per_second() -> None:
    rec, metrics, clock = recorder()
    rec.record(0.0)
    metrics.packets_out_total += 30
    metrics.client_events_total += 4
    metrics.api_request("/v1/emit", 200, 0.001)
    hooks = metrics.webhooks
    assert hooks is not None
    for seconds in (0.02, 0.02, 0.02, 0.4):
        hooks.calls += 1
        hooks.observe_latency(seconds)
    hooks.failures += 1
    clock.now += 2
    sample = rec.record(2.0)
    assert list(sample) == list(SAMPLE_FIELDS)
    assert sample["t"] == 1_002.0
    assert sample["packets_out_per_s"] == 15.0
    assert sample["client_events_per_s"] == 2.0
    assert sample["api_requests_per_s"] == 0.5
    assert sample["webhook_calls_per_s"] == 2.0
    assert sample["webhook_errors_per_s"] == 0.5
    assert sample["webhook_ms"] == pytest.approx(115.0)
    # 4 calls: the 95th percentile is the 4th, in the (0.25, 0.5] bucket.
    assert sample["webhook_p95_ms"] == 500.0
    # An interval without webhook calls has no latency.
    quiet = rec.record(3.0)
    assert quiet["webhook_ms"] is None and quiet["webhook_p95_ms"] is None
    assert quiet["packets_out_per_s"] == 0.0


def test_ring_is_bounded_and_last_filters_by_time() -> None:
    rec, _, clock = recorder()
    for i in range(8):
        clock.now = 1_000.0 + i
        rec.record(float(i))
    assert [s["t"] for s in rec.samples] == [1_003.0, 1_004.0, 1_005.0, 1_006.0, 1_007.0]
    answer = rec.answer(StatsQuery(2.5))
    assert [s["t"] for s in answer["samples"]] == [1_005.0, 1_006.0, 1_007.0]
    assert answer["metrics"]["siogate_sockets"] == 0
    json.dumps(answer, allow_nan=False)  # JSON-safe, as it crosses Redis


async def test_timer_samples_on_its_own_and_stops() -> None:
    rec, _, _ = recorder()
    rec.interval = 0.02
    rec.start()
    await asyncio.sleep(0.15)
    rec.stop()
    taken = len(rec.samples)
    assert taken >= 3
    await asyncio.sleep(0.06)
    assert len(rec.samples) == taken


def good_answer() -> dict[str, Any]:
    rec, _, _ = recorder()
    rec.record(0.0)
    return rec.answer(StatsQuery())


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"metrics": {}, "samples": [], "time": 1.0},  # no interval
        {"metrics": [], "samples": [], "time": 1.0, "interval": 1.0},
        {"metrics": {}, "samples": {}, "time": 1.0, "interval": 1.0},
        {"metrics": {}, "samples": [], "time": "1", "interval": 1.0},
    ],
)
def test_malformed_answers_are_dropped(bad: Any) -> None:
    assert parse("n2", bad) is None
    merged = merge(Answers([("n1", good_answer()), ("n2", bad)]))
    assert [n.node for n in merged] == ["n1"]


def test_odd_members_of_an_answer_are_dropped_not_passed_on() -> None:
    answer = good_answer()
    answer["metrics"]["evil"] = "<script>"
    answer["samples"].append({"t": "soon"})
    answer["samples"].append({"t": 5.0, "sockets": "many", "extra": 1})
    parsed = parse("n2", answer)
    assert parsed is not None
    assert "evil" not in parsed.metrics
    assert parsed.samples[-1] == {**dict.fromkeys(SAMPLE_FIELDS), "t": 5.0}
    assert len(parsed.samples) == 2


def test_this_node_first_then_by_id() -> None:
    answers = Answers([("m", good_answer()), ("z", good_answer()), ("a", good_answer())])
    assert [n.node for n in merge(answers)] == ["m", "a", "z"]


@pytest.mark.parametrize("last", [None, 0.0, 10.0, 600.5])
def test_stats_query_round_trips_over_the_wire(last: float | None) -> None:
    data = wire.encode_query("n1", "rid", StatsQuery(last))
    assert wire.decode_query(wire.decode(data)) == ("rid", StatsQuery(last))


@pytest.mark.parametrize("last", ["10", -1, 1e9, True, [1]])
def test_bad_stats_query_from_the_wire_is_refused(last: Any) -> None:
    obj = wire.decode(wire.encode_query("n1", "rid", StatsQuery(1.0)))
    obj["last"] = last
    with pytest.raises(wire.WireError):
        wire.decode_query(obj)


# HTTP Basic


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("ops", "pw:with:colons"), ("ops", b"pw:with:colons")),
        (basic("", ""), ("", b"")),
        ("basic " + base64.b64encode(b"a:b").decode(), ("a", b"b")),
        ("Basic " + base64.b64encode(b"no colon").decode(), None),
        ("Basic !!!", None),
        ("Bearer abc", None),
        ("Basic " + base64.b64encode(b"\xff:x").decode(), None),
        (None, None),
        ("Basic " + "A" * 2000, None),
    ],
)
def test_parse_basic(header: str | None, expected: Any) -> None:
    assert parse_basic(header) == expected


async def test_api_key_or_admin_password_and_a_memory_of_both() -> None:
    clock = Clock()
    auth = BasicAuth(api_key="key-1", username="ops", password_hash=HASH, clock=clock)
    assert await auth.check(basic("anyone", "key-1"))
    assert await auth.check(basic("ops", "s3cret"))
    assert not await auth.check(basic("admin", "s3cret"))
    assert not await auth.check(basic("ops", "S3cret"))
    assert not await auth.check(basic("ops", "x" * 100))  # over bcrypt's 72 bytes
    assert not await auth.check("Bearer key-1")  # Basic only; Bearer is checked elsewhere
    assert auth.remembered(basic("ops", "s3cret"))
    clock.now += REMEMBER_SECONDS + 1
    assert not auth.remembered(basic("ops", "s3cret"))
    assert await auth.check(basic("ops", "s3cret"))


async def test_without_a_hash_only_the_api_key_opens() -> None:
    auth = BasicAuth(api_key="key-1", username="admin", password_hash=None)
    assert not await auth.check(basic("admin", "admin"))
    assert not await auth.check(basic("admin", ""))
    assert await auth.check(basic("", "key-1"))
    empty = BasicAuth(api_key="", username="admin", password_hash=None)
    assert not await empty.check(basic("", ""))


def test_metrics_json_reads_the_prometheus_text() -> None:
    metrics = Metrics()
    metrics.webhooks = WebhookStats()
    metrics.gauge("siogate_sockets", "", lambda: 3)
    metrics.gauge("siogate_odd", "", lambda: float("nan"))
    metrics.api_request("/v1/rooms/{room}/sockets", 404, 0.002)
    metrics.webhooks.observe_latency(0.03)
    out = metrics_json(metrics.render())
    assert out["siogate_sockets"] == 3 and type(out["siogate_sockets"]) is int
    assert out["siogate_odd"] is None  # JSON has no NaN
    assert out["siogate_api_requests_total"] == [
        [{"route": "/v1/rooms/{room}/sockets", "status": "404"}, 1]
    ]
    hook = out["siogate_webhook_latency_seconds"]
    assert hook["count"] == 1 and hook["sum"] == 0.03
    assert hook["buckets"][0] == [0.005, 0] and hook["buckets"][-1] == ["+Inf", 1]
    assert [0.05, 1] in hook["buckets"]
    assert out["siogate_api_latency_seconds"]["count"] == 1
    assert not [name for name in out if name.endswith(("_bucket", "_sum", "_count"))]
