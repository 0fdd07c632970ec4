"""A burst of denied requests per uid: ``burst`` denials within ``window_s`` seconds.

Edge-triggered: ``hit`` answers True once when a uid's denials reach the burst, and
again only after that uid has fallen below it (one alert per burst, not one per
request). Bounded: at most ``burst`` timestamps per uid and ``max_keys`` uids (the
least recently denied is forgotten first). Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass
class _Uid:
    times: deque[float]
    in_burst: bool = False


@dataclass
class DenialWindow:
    """Sliding window of denials per uid (``[audit] denial_burst`` / ``denial_window_s``)."""

    burst: int
    window_s: float
    max_keys: int = 10_000
    _uids: OrderedDict[int, _Uid] = field(default_factory=OrderedDict)

    def hit(self, uid: int, now: float) -> bool:
        """Record one denial of ``uid`` at ``now`` (seconds); True when it starts a burst."""
        state = self._uids.pop(uid, None)
        if state is None:
            state = _Uid(deque(maxlen=max(1, self.burst)))
        self._uids[uid] = state  # most recently denied last
        while len(self._uids) > self.max_keys:
            self._uids.popitem(last=False)
        state.times.append(now)
        # The burst-th most recent denial still inside the window means a burst.
        bursting = len(state.times) >= self.burst and now - state.times[0] <= self.window_s
        started = bursting and not state.in_burst
        state.in_burst = bursting
        return started

    def count(self, uid: int, now: float) -> int:
        """Denials of ``uid`` within the window ending at ``now`` (at most ``burst``)."""
        state = self._uids.get(uid)
        if state is None:
            return 0
        return sum(1 for t in state.times if now - t <= self.window_s)
