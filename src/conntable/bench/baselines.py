"""Connection registries written the way Python servers write them today.

Each is the best version of its design that plain Python allows, not a
strawman: records with ``__slots__``, pre-bound methods, no per-call
allocation beyond what the design needs. They share one interface with the
conntable subjects (see :mod:`.subjects`): ``add``, ``touch``,
``del registry[key]``, ``advance(now)``, ``expire(now)`` and ``next_due()``.

Activity is stamped with ``clock.read()``: ``time.monotonic()`` in a server,
a :class:`~conntable.bench.clocks.SimClock` when the workload simulates time.
Expiry uses the same rule as conntable: an entry is due when
``last_activity + idle_timeout <= now``.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

from .clocks import RealClock

Expired = List[Tuple[int, Any]]


class Conn:
    """A connection's record in a registry: its value and its last activity."""

    __slots__ = ("value", "last")

    def __init__(self, value: Any, last: float) -> None:
        self.value = value
        self.last = last


class _ClockedRegistry:
    """What the three table-style registries share: the clock, the timeout, removal."""

    def __init__(self, idle_timeout: float, clock: Any = None) -> None:
        self._timeout = idle_timeout
        self._clock = clock or RealClock()
        self._now = self._clock.read  # pre-bound: read on every touch
        self._conns: Dict[int, Conn] = self._new_index()

    def _new_index(self) -> Dict[int, Conn]:
        return {}

    def __len__(self) -> int:
        return len(self._conns)

    def __delitem__(self, key: int) -> None:
        del self._conns[key]

    def add(self, key: int, value: Any) -> None:
        self._conns[key] = Conn(value, self._now())

    def advance(self, now: float) -> None:
        """Move a simulated clock to ``now`` (nothing to do on a real one)."""
        self._clock.set(now)

    def next_due(self) -> Optional[float]:
        """When the earliest entry may be due, for a sweeper that sleeps until then."""
        return None


class ScanRegistry(_ClockedRegistry):
    """The seed design: ``dict`` id -> record, and a periodic sweep that walks every entry."""

    def touch(self, key: int) -> None:
        self._conns[key].last = self._now()

    def expire(self, now: float) -> Expired:
        self.advance(now)
        cutoff = now - self._timeout
        conns = self._conns
        due = [key for key, conn in conns.items() if conn.last <= cutoff]
        return [(key, conns.pop(key).value) for key in due]


class LRURegistry(_ClockedRegistry):
    """``OrderedDict`` in activity order (cachetools ``TTLCache`` style, one timeout).

    Every activity moves the entry to the end; expiry pops from the front
    while the front is due, so a pass costs O(expired).
    """

    def __init__(self, idle_timeout: float, clock: Any = None) -> None:
        super().__init__(idle_timeout, clock)
        self._move = self._conns.move_to_end  # type: ignore[attr-defined]

    def _new_index(self) -> Dict[int, Conn]:
        return OrderedDict()

    def touch(self, key: int) -> None:
        self._move(key)
        self._conns[key].last = self._now()

    def expire(self, now: float) -> Expired:
        self.advance(now)
        cutoff = now - self._timeout
        conns = self._conns
        expired = []
        while conns:
            key, conn = next(iter(conns.items()))
            if conn.last > cutoff:
                break
            del conns[key]
            expired.append((key, conn.value))
        return expired

    def next_due(self) -> Optional[float]:
        for conn in self._conns.values():
            return conn.last + self._timeout
        return None


class HeapRegistry(_ClockedRegistry):
    """``heapq`` of (due, id) with lazy deletion (cachetools ``TLRUCache``) and lazy re-arm.

    Removal leaves the heap item behind; it is dropped when it surfaces, and
    the heap is rebuilt when dead items make it more than twice the live
    count (as ``TLRUCache`` does). Activity only stamps the record: an item
    that surfaces early is pushed again at the entry's real due time (Go's
    runtime timers, HAProxy), so a touch is O(1) instead of a push.
    """

    def __init__(self, idle_timeout: float, clock: Any = None) -> None:
        super().__init__(idle_timeout, clock)
        self._heap: List[Tuple[float, int]] = []

    def add(self, key: int, value: Any) -> None:
        now = self._now()
        self._conns[key] = Conn(value, now)
        heapq.heappush(self._heap, (now + self._timeout, key))

    def touch(self, key: int) -> None:
        self._conns[key].last = self._now()

    def __delitem__(self, key: int) -> None:
        del self._conns[key]
        if len(self._heap) > 2 * len(self._conns) + 64:
            timeout = self._timeout
            self._heap = [(conn.last + timeout, k) for k, conn in self._conns.items()]
            heapq.heapify(self._heap)

    def expire(self, now: float) -> Expired:
        self.advance(now)
        heap = self._heap
        conns = self._conns
        timeout = self._timeout
        expired = []
        while heap and heap[0][0] <= now:
            key = heapq.heappop(heap)[1]
            conn = conns.get(key)
            if conn is None:  # removed: lazy deletion
                continue
            due = conn.last + timeout
            if due > now:  # active since it was pushed: lazy re-arm
                heapq.heappush(heap, (due, key))
            else:
                del conns[key]
                expired.append((key, conn.value))
        return expired

    def next_due(self) -> Optional[float]:
        return self._heap[0][0] if self._heap else None
