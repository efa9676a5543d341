"""Every allocation of every operation failing in turn: all or nothing, nothing lost.

``_testcapi.set_nomemory(k, k + 1)`` makes the (k+1)-th allocation from now
fail (the compiled table's own arrays come from ``PyMem_RawMalloc``, so
they are counted too). For each operation, k runs over every allocation
the operation makes, until it completes without reaching the failure
(beyond 300 allocations in strides, to bound the run). After each attempt:

* if the operation raised MemoryError, the table is exactly as before
  (``expire`` may have moved the clock to its ``now``; it removed nothing);
* if it succeeded (having absorbed the failure, or not met it), its result
  and the table are those of a run with no failure at all;
* either way the table is consistent, and draining it hands back every
  entry that can expire exactly once (``table_checks``).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest

from table_checks import check_consistent, drain

_testcapi = pytest.importorskip("_testcapi", reason="allocation failures are injected with CPython's _testcapi")

START = 100.0
EXHAUSTIVE = 300  # every k below this, then strides
STRIDE = 23
LIMIT = 6000

FAILED = object()


def run_failing(k: int, op: Callable[[], Any], probes: int) -> Tuple[Any, bool]:
    """``op()`` with allocation k+1 failing: (result or FAILED, whether the failure was met inside ``op``)."""
    _testcapi.set_nomemory(k, k + 1)
    try:
        result = op()
    except MemoryError:
        _testcapi.remove_mem_hooks()
        return FAILED, True
    except BaseException:
        _testcapi.remove_mem_hooks()
        raise
    met = True
    try:
        for i in range(probes):  # if op made fewer allocations, one of these fails
            probe = [i]
        del probe
    except MemoryError:
        met = False
    finally:
        _testcapi.remove_mem_hooks()
    return result, met


def filled(Table: type, n: int) -> Any:
    t = Table(10.0, resolution=0.5, now=START)
    for k in range(n):
        if k % 3 == 0:
            t.add(k, ("v", k), deadline=START + 1.0 + k * 0.25)
        elif k % 3 == 1:
            t.add(k, ("v", k), idle_timeout=2.0 + k % 7)
        else:
            t[k] = ("v", k)
    t.expire(START + 0.5, 0)
    t.touch_many(range(0, n, 5))
    return t


def key(k: int) -> Any:
    """The keys of a mixed table: ints on the fast path and off it, strs, tuples."""
    return (k, f"s{k}", (k, "t"), 2**64 + k)[k % 4]


def mixed(Table: type, n: int) -> Any:
    """``filled`` with every kind of key (the key array in use)."""
    t = Table(10.0, resolution=0.5, now=START)
    for k in range(n):
        if k % 3 == 0:
            t.add(key(k), ("v", k), deadline=START + 1.0 + k * 0.25)
        else:
            t.add(key(k), ("v", k), idle_timeout=2.0 + k % 7)
    t.expire(START + 0.5, 0)
    t.touch_many([key(k) for k in range(0, n, 5)])
    return t


#: Made once: tuples built inside the operation would start collections there (whose callbacks,
#: hypothesis's among them, may meet the injected failure and hide it).
MIXED_KEYS = [key(k) for k in range(80)]


def mixed_shrinking(Table: type) -> Any:
    t = mixed(Table, 300)
    for k in range(64, 300):
        del t[key(k)]
    return t


def shrinking(Table: type) -> Any:
    """64 entries left in a slab of 512: the next removal compacts it."""
    t = filled(Table, 300)
    for k in range(64, 300):
        del t[k]
    return t


def full_clock(Table: type) -> Any:
    """Every epoch slot in use: the next clock move renumbers them."""
    t = filled(Table, 30)
    for i in range(70):
        t.expire(START + 0.5 + i * 0.001, 0)
        t.touch(i % 30)
    return t


Setup = Callable[[type], Any]
OPS: Dict[str, Tuple[Setup, Callable[[Any], Any]]] = {
    "add-grow": (lambda T: filled(T, 16), lambda t: t.add(500, ("v", 500), idle_timeout=3.0, deadline=START + 2)),
    "add-rehash": (lambda T: filled(T, 18), lambda t: t.add(500, ("v", 500))),
    "setitem-new": (lambda T: filled(T, 16), lambda t: t.__setitem__(500, ("v", 500))),
    "setitem-replace": (lambda T: filled(T, 16), lambda t: t.__setitem__(3, ("new", 3))),
    "pop": (lambda T: filled(T, 16), lambda t: t.pop(3)),
    "pop-shrink": (shrinking, lambda t: t.pop(5)),
    "delitem": (lambda T: filled(T, 16), lambda t: t.__delitem__(4)),
    "popitem": (lambda T: filled(T, 16), lambda t: t.popitem()),
    "setdefault": (lambda T: filled(T, 16), lambda t: t.setdefault(600, ("v", 600))),
    "update": (lambda T: filled(T, 16), lambda t: t.update([(3, ("new", 3)), (700, ("v", 700))])),
    "touch": (lambda T: filled(T, 16), lambda t: t.touch(3)),
    "touch_many": (lambda T: filled(T, 40), lambda t: t.touch_many(list(range(0, 400)))),
    "set_deadline": (lambda T: filled(T, 16), lambda t: t.set_deadline(4, START + 30.5)),
    "set_idle_timeout": (lambda T: filled(T, 16), lambda t: t.set_idle_timeout(5, 0.75)),
    "expire-some": (lambda T: filled(T, 16), lambda t: t.expire(START + 3.0)),
    "expire-limit": (lambda T: filled(T, 40), lambda t: t.expire(START + 9.0, 4)),
    "expire-many": (lambda T: filled(T, 300), lambda t: t.expire(START + 100.0)),
    "expire-renumber": (full_clock, lambda t: t.expire(START + 2.0)),
    "next_expiry": (lambda T: filled(T, 16), lambda t: t.next_expiry()),
    "clear": (lambda T: filled(T, 40), lambda t: t.clear()),
    "copy": (lambda T: filled(T, 40), lambda t: t.copy()),
    "deepcopy": (lambda T: filled(T, 16), lambda t: copy.deepcopy(t)),
    "reinit": (lambda T: filled(T, 16), lambda t: t.__init__(5.0, resolution=0.25, now=50.0, capacity=100)),
    "construct": (lambda T: filled(T, 4), lambda t: type(t)(5.0, resolution=0.25, now=50.0, capacity=100)),
    "iterate": (lambda T: filled(T, 40), lambda t: list(t)),
    "items": (lambda T: filled(T, 16), lambda t: sorted(t.items())),
    "getitem": (lambda T: filled(T, 16), lambda t: t[3]),
    "contains": (lambda T: filled(T, 16), lambda t: 3 in t),
    "due": (lambda T: filled(T, 16), lambda t: t.due(3)),
    "last_activity": (lambda T: filled(T, 16), lambda t: t.last_activity(5)),
    # Keys that are not fast-path ints: the key array, made at the first of them.
    "add-first-str": (lambda T: filled(T, 16), lambda t: t.add("first", ("v", "first"))),
    "setitem-first-str": (lambda T: filled(T, 16), lambda t: t.__setitem__("first", "v")),
    "update-first-str": (lambda T: filled(T, 16), lambda t: t.update([("a", 1), (3, "new"), ("b", 2), ("a", 3)])),
    "add-str-grow": (lambda T: mixed(T, 16), lambda t: t.add("new", ("v", "new"), deadline=START + 2)),
    "setitem-str-replace": (lambda T: mixed(T, 16), lambda t: t.__setitem__("s5", ("new", 5))),
    "update-mixed": (lambda T: mixed(T, 16), lambda t: t.update([("s5", "new"), ("x", 1), (2.0, "two"), ((9, "t"), 9)])),
    "pop-str": (lambda T: mixed(T, 16), lambda t: t.pop("s5")),
    "pop-str-shrink": (mixed_shrinking, lambda t: t.pop("s5")),
    "popitem-mixed": (lambda T: mixed(T, 16), lambda t: t.popitem()),
    "touch_many-mixed": (lambda T: mixed(T, 40), lambda t: t.touch_many(MIXED_KEYS)),
    "expire-mixed": (lambda T: mixed(T, 40), lambda t: t.expire(START + 100.0)),
    "copy-mixed": (lambda T: mixed(T, 40), lambda t: t.copy()),
    "iterate-mixed": (lambda T: mixed(T, 40), lambda t: list(t)),
    "clear-mixed": (lambda T: mixed(T, 40), lambda t: t.clear()),
}


#: Operations that allocate (memory the injection reaches) in both implementations.
ALLOCATES = {
    "add-grow", "add-rehash", "setitem-new", "touch_many", "expire-some", "expire-limit", "expire-many",
    "expire-renumber", "clear", "copy", "deepcopy", "reinit", "construct", "iterate", "items",
    "add-first-str", "setitem-first-str", "update-first-str", "add-str-grow", "update-mixed",
    "touch_many-mixed", "expire-mixed", "copy-mixed", "iterate-mixed", "clear-mixed",
}


def state(t: Any) -> Dict[str, Any]:
    return {
        "items": sorted(t.items(), key=repr),
        "timers": {k: (t.last_activity(k), t.due(k)) for k in t},
        "now": t.now,
        "settings": (t.idle_timeout, t.resolution, t.max_size),
        "next": t.next_expiry(),
    }


def comparable(result: Any) -> Any:
    """A result in a form two runs can be compared by."""
    if type(result).__name__ == "ConnectionTable":
        return state(result)
    return result


def attempts() -> Iterator[int]:
    yield from range(EXHAUSTIVE)
    yield from range(EXHAUSTIVE, LIMIT, STRIDE)


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_allocation_failing_in_turn(Table: type, name: str) -> None:
    setup, op = OPS[name]
    reference = setup(Table)
    expected = comparable(op(reference))
    expected_state = state(reference)
    drained_after = sorted(drain(reference).items(), key=repr)
    drained_untouched = sorted(drain(setup(Table)).items(), key=repr)
    failures = 0
    for k in attempts():
        t = setup(Table)
        before = state(t)
        probes = 2 if k < EXHAUSTIVE else STRIDE + 1
        result, met = run_failing(k, lambda: op(t), probes)
        if result is FAILED:
            failures += 1
            after = state(t)
            if name.startswith("expire"):  # the clock may have moved; no entry changed
                assert after["now"] in (before["now"], expected_state["now"])
                assert after["items"] == before["items"] and after["timers"] == before["timers"]
            else:
                assert after == before, f"failed allocation {k} changed the table"
            check_consistent(t)
            assert sorted(drain(t).items(), key=repr) == drained_untouched, f"failed allocation {k}: entries lost"
        else:
            assert comparable(result) == expected, f"allocation {k} failing changed the result"
            assert state(t) == expected_state, f"allocation {k} failing changed the outcome"
            check_consistent(t)
            assert sorted(drain(t).items(), key=repr) == drained_after, f"allocation {k} failing: entries lost"
            if not met:
                break  # the operation completed before allocation k+1: every allocation was tried
    else:
        raise AssertionError(f"{name} still allocating after {LIMIT} allocations")
    # Some operations allocate nothing (compiled); these allocate in both, so failures must have shown.
    assert failures or name not in ALLOCATES, f"{name}: no injected failure ever reached the caller"


def test_a_mass_expiry_is_never_lost(Table: type) -> None:
    """The compiled table once dropped every entry of a mass expiry when building the result failed."""
    n = 3000
    for k in (1, 10, 100, 1000, 2500, 4000, 5500):  # allocations early and late in the result
        t = Table(1.0, resolution=0.1, now=0.0)
        for key in range(n):
            t[key] = ("v", key)
        result, met = run_failing(k, lambda: t.expire(5.0), 2)
        if result is FAILED:
            assert sorted(t.items()) == [(i, ("v", i)) for i in range(n)]
            assert sorted(drain(t)) == list(range(n))
        else:
            assert sorted(e.key for e in result) == list(range(n)) and len(t) == 0
