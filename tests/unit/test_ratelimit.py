"""The token bucket behind the per-connection event rate (Sans-I/O: the clock is given)."""

from __future__ import annotations

import math

import pytest

from siogate.ratelimit import TokenBucket


def test_starts_full_and_admits_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=100.0)
    assert [bucket.take(100.0) for _ in range(7)] == [True] * 5 + [False] * 2


def test_refills_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    for _ in range(5):
        assert bucket.take(0.0)
    assert not bucket.take(0.05)  # half a token earned
    assert bucket.take(0.1)  # one token
    assert not bucket.take(0.1)
    assert bucket.tokens(60.0) == 5  # a long pause earns no more than the burst
    assert [bucket.take(60.0) for _ in range(6)] == [True] * 5 + [False]


def test_average_rate_over_a_long_flood() -> None:
    bucket = TokenBucket(rate=100, burst=20, now=0.0)
    # 10,000 attempts over 10 s: the burst plus 100/s get through.
    admitted = sum(bucket.take(i / 1000) for i in range(10_000))
    assert 20 + 999 - 1 <= admitted <= 20 + 1000


def test_a_refused_take_costs_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=0.0)
    assert bucket.take(0.0)
    for _ in range(100):
        assert not bucket.take(0.5)
    assert bucket.take(1.0)


def test_a_clock_going_back_earns_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=2, now=10.0)
    assert bucket.take(10.0) and bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


@pytest.mark.parametrize(
    ("rate", "burst"), [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0), (1, math.inf)]
)
def test_invalid_settings_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)
