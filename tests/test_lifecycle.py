"""Values that call back into the table, garbage collection, growth and shrink."""

from __future__ import annotations

import gc
import sys
import weakref
from typing import Any, Callable

import pytest


class CallsBack:
    """A value whose ``__del__`` mutates the table that held it."""

    deleted: list[int] = []

    def __init__(self, table: Any, key: int, action: Callable[[Any, int], None]) -> None:
        self.table = table
        self.key = key
        self.action = action

    def __del__(self) -> None:
        CallsBack.deleted.append(self.key)
        self.action(self.table, self.key)


def churn(table: Any, key: int) -> None:
    """Delete a neighbour, add new entries (forcing growth), touch and expire."""
    table.pop(key + 1, None)
    for k in range(1000 + key * 100, 1000 + key * 100 + 40):
        table[k] = None
    table.touch_many(list(table))
    table.expire(table.now)


def check_consistent(table: Any) -> None:
    keys = list(table)
    assert len(keys) == len(table) == len(set(keys))
    for k in keys:
        assert k in table
        table.touch(k)
        assert table.last_activity(k) == table.now


@pytest.fixture(autouse=True)
def _reset_deleted() -> None:
    CallsBack.deleted = []


REMOVALS: dict[str, Callable[[Any, int], Any]] = {
    "del": lambda t, k: t.__delitem__(k),
    "pop": lambda t, k: t.pop(k),
    "replace": lambda t, k: t.__setitem__(k, "plain"),
    "clear": lambda t, k: t.clear(),
}


@pytest.mark.parametrize("removal", sorted(REMOVALS))
def test_del_of_a_value_may_mutate_the_table(Table: type, removal: str) -> None:
    t = Table(10.0)
    for k in range(0, 20, 2):
        t[k] = CallsBack(t, k, churn)
        t[k + 1] = None
    REMOVALS[removal](t, 4)
    assert 4 in CallsBack.deleted
    check_consistent(t)
    assert 5 not in t
    t.clear()
    gc.collect()
    check_consistent(t)


def test_expired_values_are_released_after_the_table_is_consistent(Table: type) -> None:
    t = Table(1.0, resolution=0.1, now=0.0)
    for k in range(0, 200, 2):
        t[k] = CallsBack(t, k, churn)
        t[k + 1] = None
    expired = t.expire(5.0)
    assert len(expired) == 200 and CallsBack.deleted == []
    del expired  # each __del__ adds entries, deletes one, touches and expires
    assert len(CallsBack.deleted) == 100
    check_consistent(t)


def test_gc_during_expire_phases(Table: type) -> None:
    """Collections triggered while expire builds its result see a consistent table."""
    t = Table(1.0, resolution=0.1)
    old = gc.get_threshold()
    gc.set_threshold(1, 1, 1)  # collect at almost every allocation
    try:
        for round_ in range(5):
            for k in range(300):
                key = round_ * 1000 + k
                value = CallsBack(t, key, lambda table, _k: table.pop(_k + 1, None))
                value.cycle = value  # only the collector can free it
                t[key] = value
            del value
            expired = t.expire(t.now + 2.0)
            assert len(expired) == 300
            del expired
            gc.collect()
            check_consistent(t)
    finally:
        gc.set_threshold(*old)
    assert len(CallsBack.deleted) == 1500


def test_a_cycle_through_a_value_is_collected(Table: type) -> None:
    class Holder:
        pass

    t = Table()
    holder = Holder()
    holder.table = t
    t[1] = holder
    t[2] = [t]
    ref = weakref.ref(t)
    del t, holder
    gc.collect()
    assert ref() is None


def test_sizeof_counts_the_storage(Table: type) -> None:
    t = Table()
    empty = sys.getsizeof(t)
    for k in range(100_000):
        t[k] = None
    full = sys.getsizeof(t)
    assert full - empty >= 100_000 * 32  # at least the per-entry records
    t.clear()
    assert sys.getsizeof(t) < full / 100


def test_grow_to_a_million_and_shrink_back(Table: type) -> None:
    n = 1_000_000
    t = Table(10.0, resolution=1.0, now=0.0)
    empty = sys.getsizeof(t)
    for k in range(n):
        t[k] = None
    assert len(t) == n
    peak = sys.getsizeof(t)
    if Table.__module__.endswith("_ctable"):
        assert peak / n <= 64  # the memory budget: at most 64 bytes an entry
    for k in range(0, n, 2):  # holes everywhere, then shrink through them
        del t[k]
    assert len(t) == n // 2 and t[1] is None and 0 not in t
    t.expire(3.0)
    t.touch_many(range(1, n, 4))
    expired = t.expire(12.0)
    assert {e.key % 4 for e in expired} == {3} and len(expired) == n // 4
    assert len(t) == n // 4
    for k in range(1, n, 4):
        assert t.last_activity(k) == 3.0
    del expired
    for k in list(t):
        del t[k]
    assert len(t) == 0 and list(t) == []
    assert sys.getsizeof(t) <= empty * 2  # the storage went back
    t[5] = "again"
    assert t[5] == "again" and len(t) == 1


def test_capacity_presizes_and_is_kept(Table: type) -> None:
    t = Table(capacity=50_000)
    presized = sys.getsizeof(t)
    for k in range(50_000):
        t[k] = None
    for k in range(50_000):
        del t[k]
    assert len(t) == 0
    if Table.__module__.endswith("_ctable"):
        assert sys.getsizeof(t) == presized  # never shrinks below the hint


def test_entries_survive_compaction_with_their_timers(Table: type) -> None:
    t = Table(100.0, resolution=1.0, now=0.0)
    for k in range(4096):
        t.add(k, ("v", k), deadline=float(k % 50) + 0.5 if k % 3 == 0 else None)
    for k in range(4096):
        if k % 64:
            del t[k]  # leaves 64 entries spread over the slab: the compiled table compacts
    survivors = sorted(t)
    assert survivors == list(range(0, 4096, 64))
    for k in survivors:
        assert t[k] == ("v", k)
    expired = t.expire(60.0)
    assert {e.key for e in expired} == {k for k in survivors if k % 3 == 0}
    assert all(e.reason == "deadline" for e in expired)
    assert {e.key for e in t.expire(101.0)} == {k for k in survivors if k % 3}
