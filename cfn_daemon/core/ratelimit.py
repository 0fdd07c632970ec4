"""Token buckets per caller: the request rate limit (pure; the clock is passed in)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class Bucket:
    tokens: float
    at_s: float


class RateLimiter:
    """One token bucket per key: ``rate_per_s`` tokens a second, at most ``burst``.

    Memory is bounded: at most ``max_keys`` buckets, the least recently used dropped
    (a dropped bucket comes back full, which only errs towards letting a caller in).
    """

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 4096) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.max_keys = max_keys
        self._buckets: OrderedDict[int, Bucket] = OrderedDict()

    def take(self, key: int, now_s: float) -> float:
        """Spend one token of ``key``'s bucket: 0.0 when granted, else the seconds
        until a token is there (nothing is spent)."""
        b = self._buckets.get(key)
        if b is None:
            b = Bucket(self.burst, now_s)
            self._buckets[key] = b
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now_s - b.at_s)
            b.tokens = min(self.burst, b.tokens + elapsed * self.rate_per_s)
            b.at_s = now_s
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate_per_s if self.rate_per_s > 0 else float("inf")
