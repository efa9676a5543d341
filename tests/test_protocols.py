"""The Python protocols around the table, the same on both implementations.

Copies (``copy()``, ``copy.copy``, ``copy.deepcopy``), pickling (refused),
subclassing (refused), ``operator.index`` key semantics, iterators (stable,
exhausted for good, not constructible from anything but a table), a failed
re-``__init__``, ``__new__`` alone, ``reversed``, ``match``, the default clock,
the resolution floor and the end of the tick space, ``next_expiry`` never
spinning, and what the garbage collector can reach.
"""

from __future__ import annotations

import collections.abc
import copy
import gc
import math
import pickle
import time
from typing import Any, List

import pytest

from table_checks import check_consistent, drain


def populated(Table: type) -> Any:
    t = Table(10.0, resolution=0.25, now=100.0)
    t[1] = ["one"]
    t.add(2, ["two"], idle_timeout=3.0)
    t.add(3, ["three"], deadline=104.0)
    t.add(4, ["four"], idle_timeout=math.inf)
    t.expire(101.0)
    t.touch(1)
    return t


def observed(t: Any) -> Any:
    return (sorted(t.items()), [(k, t.last_activity(k), t.due(k)) for k in sorted(t)], t.now,
            t.idle_timeout, t.resolution, t.max_size, t.next_expiry())


def expiries(t: Any) -> List[Any]:
    out = []
    for step in range(1, 40):
        out.append([(e.key, e.reason) for e in t.expire(t.now + 0.37 * step, limit=1 + step % 3)])
    return out


# -- copies and pickling -----------------------------------------------------------


@pytest.mark.parametrize("how", ["method", "copy.copy"])
def test_a_copy_is_independent_and_identical(Table: type, how: str) -> None:
    t = populated(Table)
    clone = t.copy() if how == "method" else copy.copy(t)
    assert type(clone) is Table and clone is not t
    assert observed(clone) == observed(t)
    assert clone[1] is t[1]  # shallow: the same values
    clone[9] = "only in the copy"
    del clone[2]
    t.touch(3)
    assert 9 not in t and 2 in t and clone.last_activity(3) == 100.0
    # Identical wheels: the same entries at the same calls from here on.
    t2, clone2 = populated(Table), populated(Table).copy()
    assert expiries(t2) == expiries(clone2)


def test_deepcopy_copies_values_and_maps_the_table_to_its_copy(Table: type) -> None:
    t = populated(Table)
    t[5] = {"table": t}
    clone = copy.deepcopy(t)
    assert observed(clone)[1] == observed(t)[1] and clone.now == t.now
    assert clone[1] == t[1] and clone[1] is not t[1]
    assert clone[5]["table"] is clone


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_is_refused_with_a_reason(Table: type, protocol: int) -> None:
    t = populated(Table)
    with pytest.raises(TypeError, match="cannot pickle 'ConnectionTable' object: its times are on this process"):
        pickle.dumps(t, protocol)
    with pytest.raises(TypeError, match="cannot pickle"):
        pickle.dumps(iter(t), protocol)


def test_subclassing_is_refused(Table: type) -> None:
    with pytest.raises(TypeError, match="is not an acceptable base type"):
        type("Sub", (Table,), {})


# -- keys --------------------------------------------------------------------------


def test_keys_have_a_dicts_semantics(Table: type) -> None:
    """The same operations on a table and a dict: the same keys (the objects stored first), values and calls."""

    class IntSubclass(int):
        calls = 0

        def __hash__(self) -> int:
            IntSubclass.calls += 1
            return int.__hash__(self)

        def __eq__(self, other: object) -> bool:
            IntSubclass.calls += 1
            return int.__eq__(self, other)

    class Index:
        def __index__(self) -> int:
            return 6

    index = Index()
    results = []
    for target in (Table(now=0.0), {}):
        IntSubclass.calls = 0
        target[IntSubclass(7)] = "seven"
        target[7] = "SEVEN"  # the same key: the IntSubclass object stays
        target[1] = "one"
        target[1.0] = "float"
        target[True] = "true"
        target[index] = "index"
        target[2**70] = "big"
        target[float(2**70)] = "float big"
        target["s"] = "str"
        target[("t", 1)] = "tuple"
        got = {
            "items": sorted(((repr(k), type(k).__name__), v) for k, v in target.items()),
            "lookups": (target.get(7.0), 6 in target, index in target, target.get(2**70 + 1)),
            "popped": (target.pop(IntSubclass(1)), target.pop(7)),
            "calls": IntSubclass.calls > 0,
        }
        results.append(got)
    assert results[0] == results[1]
    items = dict(results[0]["items"])
    assert len(items) == 6 and items[("7", "IntSubclass")] == "SEVEN" and items[("1", "int")] == "true"
    assert items[(repr(2**70), "int")] == "float big" and results[0]["lookups"] == ("SEVEN", False, True, None)
    assert results[0]["popped"] == ("true", "SEVEN") and results[0]["calls"]


def test_setdefault_hashes_its_key_once(Table: type) -> None:
    class Counted:
        calls = 0

        def __hash__(self) -> int:
            Counted.calls += 1
            return 3

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Counted)

    t = Table(now=0.0)
    assert t.setdefault(Counted(), "new") == "new" and t.setdefault(Counted(), "other") == "new"
    assert Counted.calls == 2 and len(t) == 1


def test_touch_many_reads_every_key_before_touching(Table: type) -> None:
    t = Table(now=0.0)
    t[1] = t[2] = None
    t.expire(5.0)

    def clears_after_the_first() -> Any:
        yield 1
        t.clear()
        yield 2

    assert t.touch_many(clears_after_the_first()) == 0 and len(t) == 0
    t[1] = None

    def adds_as_it_goes() -> Any:
        yield 1
        t[3] = None
        yield 3

    t.expire(6.0)
    assert t.touch_many(adds_as_it_goes()) == 2 and t.last_activity(3) == 6.0


def test_update_is_all_or_nothing(Table: type) -> None:
    t = Table(max_size=3, now=0.0)
    t[1] = "one"
    with pytest.raises(TypeError, match="unhashable"):
        t.update([(1, "ONE"), ("2", "two"), (["3"], "three")])
    with pytest.raises(Exception, match="max_size=3"):
        t.update({1: "ONE", 2: "two", 3: "three", 4: "four"})
    assert dict(t.items()) == {1: "one"}
    t.update({1: "ONE"}, **{})
    t.update([(2, "two"), (2.0, "TWO"), (1.0, "uno")])  # equal keys: one entry each, the first key object
    assert dict(t.items()) == {1: "uno", 2: "TWO"} and all(type(k) is int for k in t)
    t.update(three=3)  # four keys: the last is refused, the others not stored
    assert dict(t.items()) == {1: "uno", 2: "TWO", "three": 3}
    with pytest.raises(Exception, match="max_size=3"):
        t.update([("a", 1), ("a", 2), ("b", 3)])  # two new keys (one twice): too many
    t.update([("three", 1), (3, 2), ("three", 3)][:1] + [("three", 4)])
    assert t["three"] == 4


def test_popitem_takes_the_first_key_in_iteration_order(Table: type) -> None:
    t = populated(Table)
    first = next(iter(t))
    assert t.popitem() == (first, populated(Table)[first]) and first not in t
    t.clear()
    with pytest.raises(KeyError, match="popitem\\(\\): the connection table is empty"):
        t.popitem()


# -- iteration ----------------------------------------------------------------------


def test_iteration_order_is_stable_and_an_ended_iterator_stays_ended(Table: type) -> None:
    t = populated(Table)
    assert list(t) == list(t) == list(t.keys())
    it = iter(t)
    assert sorted(it) == [1, 2, 3, 4]
    t[10] = "after"
    assert list(it) == [] and list(it) == []
    it = iter(t)
    next(it)
    del t[10]
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        next(it)
    assert list(it) == []  # after the error, exhausted (like a generator)


def test_the_iterator_type_accepts_only_a_table(Table: type) -> None:
    t = populated(Table)
    kind = type(iter(t))
    for bad in ((None,), (), (object(),), ([1, 2],)):
        with pytest.raises(TypeError):
            list(kind(*bad))
    assert sorted(t) == [1, 2, 3, 4]


def test_reversed_is_a_type_error_and_match_works(Table: type) -> None:
    t = populated(Table)
    with pytest.raises(TypeError, match="not reversible"):
        reversed(t)
    assert not isinstance(t, collections.abc.Reversible)
    assert isinstance(t, collections.abc.MutableMapping)
    match t:
        case {1: first, 99: _}:
            pytest.fail("matched a key that is not there")
        case {1: first, 2: second}:
            assert first == ["one"] and second == ["two"]
        case _:
            pytest.fail("a mapping pattern did not match the table")


# -- construction ----------------------------------------------------------------------


def test_a_failed_reinit_changes_nothing(Table: type) -> None:
    t = populated(Table)
    before = observed(t)
    for kwargs in ({"resolution": -1.0}, {"now": math.nan}, {"max_size": 0}, {"capacity": -1},
                   {"resolution": 1e-9}):
        with pytest.raises(ValueError):
            t.__init__(5.0, **kwargs)
    with pytest.raises(TypeError):
        t.__init__("5")
    assert observed(t) == before
    t.__init__(5.0, now=1.0)  # a successful one starts afresh
    assert len(t) == 0 and t.now == 1.0 and t.idle_timeout == 5.0


def test_new_without_init_is_a_usable_empty_table(Table: type) -> None:
    before = time.monotonic()
    t = Table.__new__(Table)
    assert before <= t.now <= time.monotonic()
    assert (len(t), t.idle_timeout, t.resolution, t.max_size) == (0, 60.0, 0.1, None)
    t[1] = "one"
    t.touch(1)
    assert t.expire(t.now + 61.0) == [(1, "one", "idle")]
    check_consistent(t)


def test_the_clock_starts_at_time_monotonic(Table: type) -> None:
    """Issue 13: the default used to be now=0.0, so expire(time.monotonic()) expired everything."""
    before = time.monotonic()
    t = Table(idle_timeout=60)
    after = time.monotonic()
    assert before <= t.now <= after
    t[1] = "fresh"
    assert t.expire(time.monotonic()) == [] and 1 in t
    assert Table(now=5.0).now == 5.0 and Table(now=None).now >= after


def test_resolution_has_a_floor(Table: type) -> None:
    for bad in (1e-7, 5e-7, 1e-12):
        with pytest.raises(ValueError, match="resolution must be at least 1e-06 seconds"):
            Table(resolution=bad)
    assert Table(resolution=1e-6).resolution == 1e-6


def test_the_end_of_the_tick_space(Table: type) -> None:
    t = Table(math.inf, resolution=1e-6, now=0.0)
    t.add(1, deadline=1e12)  # 31,700 years of microseconds: inside
    t.add(2, deadline=1e14)  # past the end (2**62 microseconds is 4.6e12 s): never
    assert t.next_expiry() == 1e12
    with pytest.raises(ValueError, match="past the end of the table's time"):
        t.expire(1e13)
    assert t.now == 0.0
    assert [e.key for e in t.expire(1e12)] == [1]
    assert t.next_expiry() is None and t.due(2) == 1e14


# -- next_expiry never spins ------------------------------------------------------------------


def test_an_emptied_slot_does_not_keep_a_stale_bound(Table: type) -> None:
    """On main, a slot emptied by a removal kept its lower bound: next_expiry() then named a
    tick nothing waited for, and a loop sleeping until it woke one ulp later, for ever."""
    t = Table(1.0, resolution=0.25, now=0.0)
    t.add(0, 0)
    t.pop(0)  # empties the slot of tick 4
    t.expire(10_000.0)
    t.add(1, 1, deadline=10_001.0)  # the same slot, 40,000 ticks later
    t.expire(10_000.0)
    assert t.next_expiry() == 10_001.0
    wakeups = 0
    while len(t):
        t.expire(t.next_expiry())
        wakeups += 1
        assert wakeups < 10, "a sleeper spins"


@pytest.mark.parametrize("origin", [0.0, 7.3, 1e6, 1e9])
def test_sleeping_until_next_expiry_always_makes_progress(Table: type, origin: float) -> None:
    """Fine resolutions and large clocks, where a float time and a tick disagree by rounding."""
    for resolution in (1e-6, 1e-3, 0.1):
        t = Table(math.inf, resolution=resolution, now=origin)
        for k in range(200):
            t.add(k, k, deadline=origin + (k * 7919 % 1000) * resolution * 3.7 + k * 1e-7)
        wakeups = 0
        while len(t):
            when = t.next_expiry()
            assert when is not None and when >= t.now
            t.expire(when)
            wakeups += 1
            assert wakeups <= 200 + 11 * 64, "a sleeper spins"
        assert t.next_expiry() is None


def test_the_clock_never_moves_backwards(Table: type) -> None:
    t = Table(10.0, now=100.0)

    class Later:
        def __float__(self) -> float:
            t.expire(200.0)  # user code moving the clock on during the conversion
            return 150.0

    with pytest.raises(ValueError, match="earlier than the table's current time 200.0"):
        t.expire(Later())
    assert t.now == 200.0
    t[1] = None
    with pytest.raises(ValueError, match="earlier"):
        t.expire(199.0)
    assert t.now == 200.0 and t.last_activity(1) == 200.0


# -- what the garbage collector can reach ------------------------------------------------------


def test_the_collector_sees_the_values_and_nothing_else(Table: type) -> None:
    t = populated(Table)
    values = [t[k] for k in t]
    assert gc.is_tracked(t)
    referents = gc.get_referents(t)
    if Table.__module__.endswith("_ctable"):
        # Exactly the values: no internal container to resize or clear behind the table's back.
        assert sorted(map(id, referents)) == sorted(map(id, values))
        referents.clear()  # a new list: the table does not care
        assert [t[k] for k in t] == values
    # Every value is reachable for the collector (the twin through its own Python objects).
    seen, frontier = {id(t)}, [t]
    for _ in range(8):
        frontier = [r for o in frontier for r in gc.get_referents(o) if id(r) not in seen]
        seen.update(map(id, frontier))
    assert all(id(v) in seen for v in values)
    check_consistent(t)
    drain(t)


def test_a_cycle_through_a_tuple_is_collected(Table: type) -> None:
    import weakref

    t = Table(now=0.0)
    t[1] = (t,)  # a tuple cannot break the cycle (it has no tp_clear): the table must
    ref = weakref.ref(t)
    del t
    gc.collect()
    assert ref() is None
