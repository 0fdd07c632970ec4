"""When to start the replacement of a dead local agent: a budget that refills.

At most ``per_minute`` replacements start in any 60 s window, each after an
exponential backoff capped at ``backoff_max_s`` (as systemd's StartLimitBurst and
Kubernetes' CrashLoopBackOff do). A spent budget only delays the next start until
the window has room again; it never stops replacing for good.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

WINDOW_S = 60.0


@dataclass
class RestartBudget:
    """Replacement starts of one swarm, on a monotonic clock (seconds)."""

    per_minute: int
    backoff_s: float
    backoff_max_s: float
    starts: collections.deque[float] = field(default_factory=collections.deque)

    def _prune(self, now: float) -> None:
        while self.starts and now - self.starts[0] >= WINDOW_S:
            self.starts.popleft()

    def next_start(self, now: float) -> float | None:
        """The earliest time a replacement asked for at ``now`` may start (None: never,
        with a budget of 0 per minute)."""
        if self.per_minute <= 0:
            return None
        self._prune(now)
        backoff = min(self.backoff_max_s, self.backoff_s * float(2 ** min(len(self.starts), 30)))
        at = now + backoff
        if len(self.starts) >= self.per_minute:
            # Full window: wait for its oldest start to leave it.
            at = max(at, self.starts[-self.per_minute] + WINDOW_S)
        return at

    def take(self, now: float) -> bool:
        """Spend one start at ``now`` if the window has room."""
        if self.per_minute <= 0:
            return False
        self._prune(now)
        if len(self.starts) >= self.per_minute:
            return False
        self.starts.append(now)
        return True

    def waiting_for_window(self, now: float) -> bool:
        """True when the budget, not the backoff, is what delays the next start."""
        self._prune(now)
        return len(self.starts) >= self.per_minute

    def starts_in_window(self, now: float) -> int:
        """Replacement starts spent in the 60 s window ending at ``now``."""
        self._prune(now)
        return len(self.starts)
