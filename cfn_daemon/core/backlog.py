"""The dispatcher's backlog: queue entries read but not yet placed, kept in order. Pure.

Placement order (``placement.order_backlog``): tasks waiting longer than the aging limit
first (oldest first), then high before normal before low, each first-in first-out. The
dispatcher used to sort the whole backlog on every pass, which is quadratic while a
backlog drains one task per pass. Here each priority keeps its own list sorted by
(enqueued, arrival), so a pass walks the order lazily and stops as soon as the agents
are full; aging is found at the heads (a list's aged tasks are its prefix).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Iterator, MutableMapping

from cfn_daemon.core.placement import PRIORITIES, Pending

_Key = tuple[int, int, str]  # (enqueued ms, arrival number, entry id)


class Backlog(MutableMapping[str, Pending]):
    """``Pending.key`` (priority and entry id) → Pending, plus per-priority order (see
    the module docstring)."""

    def __init__(self) -> None:
        self._by_entry: dict[str, Pending] = {}
        self._keys: dict[str, _Key] = {}
        self._lists: dict[str, list[_Key]] = {p: [] for p in PRIORITIES}
        self._arrivals = itertools.count()

    @staticmethod
    def _priority(p: Pending) -> str:
        return p.priority if p.priority in PRIORITIES else "normal"  # as order_backlog ranks it

    def __getitem__(self, entry_id: str) -> Pending:
        return self._by_entry[entry_id]

    def __setitem__(self, entry_id: str, pending: Pending) -> None:
        if entry_id in self._by_entry:
            del self[entry_id]
        key = (pending.enqueued_ms, next(self._arrivals), entry_id)
        self._by_entry[entry_id] = pending
        self._keys[entry_id] = key
        lst = self._lists[self._priority(pending)]
        if not lst or lst[-1] <= key:
            lst.append(key)  # the usual case: entries arrive in enqueue order
        else:
            bisect.insort(lst, key)

    def __delitem__(self, entry_id: str) -> None:
        pending = self._by_entry.pop(entry_id)
        key = self._keys.pop(entry_id)
        lst = self._lists[self._priority(pending)]
        i = bisect.bisect_left(lst, key)
        del lst[i]  # present: every key in _keys is in its list

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_entry)

    def __len__(self) -> int:
        return len(self._by_entry)

    def ordered(self, now_ms: int, aging_ms: float) -> Iterator[Pending]:
        """The entries in placement order, lazily. The backlog must not change while
        the iterator is in use."""
        lists = [self._lists[p] for p in PRIORITIES]
        # Aged: now - enqueued > aging, i.e. enqueued < now - aging: a prefix of each list.
        cut = [bisect.bisect_left(lst, (_aged_before(now_ms, aging_ms),)) for lst in lists]
        aged = heapq.merge(*(itertools.islice(lst, n) for lst, n in zip(lists, cut, strict=True)))
        for key in aged:
            yield self._by_entry[key[2]]
        for lst, n in zip(lists, cut, strict=True):
            for key in itertools.islice(lst, n, None):
                yield self._by_entry[key[2]]


def _aged_before(now_ms: int, aging_ms: float) -> float:
    """Tasks enqueued before this (strictly) have waited longer than the aging limit."""
    return now_ms - aging_ms
