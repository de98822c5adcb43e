"""A token bucket (Sans-I/O: the caller passes the clock in).

The bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second; each
admitted event takes one. So a sender may go ``burst`` events ahead at once, and
``rate`` per second on average after that. Nothing runs in the background: the tokens
earned since the last call are added when the next one comes, which makes a bucket
two floats and costs nothing while its sender is quiet.
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; starts full."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError("rate must be a positive number of tokens per second")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are that many; False (and none taken) otherwise.

        ``now`` is a monotonic time in seconds. A clock that goes back adds nothing.
        """
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._stamp = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (without taking any)."""
        elapsed = max(0.0, now - self._stamp)
        return min(self.burst, self._tokens + elapsed * self.rate)
