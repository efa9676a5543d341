"""Consistency checks of a connection table through its public API, shared by the attack tests.

``check_consistent(t)`` looks without changing anything: the size, the keys
(each once, each found), every entry's timers, and ``next_expiry()``
coherent with them. ``drain(t)`` then runs the clock on until nothing can
expire and checks that ``expire`` handed back every entry that can expire
exactly once, with the value the table held, and left the others in place.
Together they catch a table that lost an entry (in the index but not on the
wheel, or the other way round), duplicated one, or would spin a sleeper.
"""

from __future__ import annotations

import math
from typing import Any, Dict

#: Float slack for comparisons of times the table computed.
TOLERANCE = 1e-9


def snapshot(t: Any) -> Dict[int, Any]:
    """Everything observable about the entries: key -> (value, last activity, due)."""
    return {key: (t[key], t.last_activity(key), t.due(key)) for key in list(t)}


def check_consistent(t: Any) -> Dict[int, Any]:
    """Assert that the table agrees with itself; return its snapshot."""
    keys = list(t)
    assert len(keys) == len(t) == len(set(keys)), "iteration and len disagree"
    entries = snapshot(t)
    assert set(entries) == set(keys)
    now = t.now
    assert math.isfinite(now)
    for key, (value, last, due) in entries.items():
        assert key in t and t.get(key, entries) is value
        assert last <= now, f"entry {key} saw activity after the clock ({last} > {now})"
        assert due == math.inf or not math.isnan(due)
    nxt = t.next_expiry()
    finite = [due for (_, _, due) in entries.values() if due != math.inf]
    if nxt is None:
        # Nothing can ever expire (a due time past the end of the table's time counts as never).
        assert all(t.due(key) - t.now > 2**61 * t.resolution for key in entries if t.due(key) != math.inf), (
            "next_expiry() is None while an entry is due"
        )
    else:
        assert nxt >= now, "next_expiry() is in the past"
        assert finite, "next_expiry() names a time though nothing can expire"
        assert nxt <= max(now, min(finite) + t.resolution) + TOLERANCE, "sleeping until next_expiry() would be late"
    return entries


def drain(t: Any, *, max_calls: int = 5000) -> Dict[int, Any]:
    """Run the clock on until nothing can expire; return key -> value of what was expired.

    Every entry with a finite due time comes back exactly once, with its
    value, from some ``expire`` at or after its due time; the others stay.
    Bounded: a sleeper that spins fails here.
    """
    before = check_consistent(t)
    expired: Dict[int, Any] = {}
    for _ in range(max_calls):
        nxt = t.next_expiry()
        if nxt is None:
            break
        now = max(nxt, t.now)
        for key, value, reason in t.expire(now):
            assert key not in expired, f"entry {key} expired twice"
            assert key in before, f"entry {key} expired but was never in the table"
            assert value is before[key][0], f"entry {key} came back with another value"
            assert before[key][2] <= now + TOLERANCE, f"entry {key} expired early"
            assert reason in ("idle", "deadline")
            expired[key] = value
    else:
        raise AssertionError(f"a sleeper would spin: next_expiry() still not None after {max_calls} calls")
    left = check_consistent(t)
    assert set(left) | set(expired) == set(before) and not set(left) & set(expired), "an entry was lost"
    for key in left:
        assert t.due(key) == math.inf or t.due(key) - t.now > 2**61 * t.resolution, f"entry {key} never expired"
    return expired
