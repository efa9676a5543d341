"""Several threads calling every public method at random on one table, with GIL switches forced.

``sys.setswitchinterval(1e-6)`` makes the interpreter hand the GIL to
another thread at nearly every chance, so a method that runs Python code
(an argument check, a ``__del__``) between finding an entry and writing it
gets interleaved with others doing the same. Each run is bounded in time
and in operations. Afterwards the table must be consistent and complete
(``table_checks``), no thread may have seen anything but a documented
exception, and, in the accounting run, every value ever added must be
either still in the table or handed back exactly once (by ``pop``,
``popitem``, ``__delitem__`` seen through ``pop`` or ``expire``).

Each run is made with int keys (the fast path), str keys (connection ids)
and object keys whose ``__eq__`` is Python code (the GIL changes hands in
the middle of a lookup, and another thread changes the table under it).
"""

from __future__ import annotations

import math
import random
import sys
import threading
import time
from typing import Any, Callable, Dict, List

import pytest

from table_checks import check_consistent, drain

THREADS = 6
SECONDS = 0.6  # per run; a bound, not an assertion
MAX_OPS = 4000  # per thread
KEYS = 120

#: Exceptions a call may raise when another thread changed the table first.
EXPECTED = (
    (KeyError, ""),
    (ValueError, "is earlier than the table's current time"),
    (RuntimeError, "changed size during iteration"),
)


class Conn:
    """An object key: a Python ``__eq__`` (a GIL switch point inside the lookup), hashes colliding (eight keys a hash)."""

    __slots__ = ("n",)

    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return self.n % 15

    def __eq__(self, other: object) -> bool:
        return type(other) is Conn and other.n == self.n

    def __repr__(self) -> str:
        return f"Conn({self.n})"


POOLS: Dict[str, List[Any]] = {
    "int-keys": list(range(KEYS)),
    "str-keys": [f"{n:032x}" for n in range(KEYS)],  # uuid4().hex-like connection ids
    "object-keys": [Conn(n) for n in range(KEYS)],
}


class Token:
    """A value whose identity says which add() it came from."""

    __slots__ = ("key", "serial", "__weakref__")

    def __init__(self, key: Any, serial: int) -> None:
        self.key, self.serial = key, serial


class Backtalk(Token):
    """A value whose release calls back into its table (from whichever thread releases it)."""

    __slots__ = ("table", "near")

    def __del__(self) -> None:
        table = self.table
        table.touch_many(self.near)
        table.get(self.key)


def worker(t: Any, seed: int, accounting: bool, added: List[Any], handed_back: List[Any], errors: List[str],
           stop: float, pool: List[Any]) -> None:
    rng = random.Random(seed)
    serial = seed * 1_000_000
    ops: List[Callable[[], Any]]

    def add() -> None:
        nonlocal serial
        serial += 1
        key = rng.choice(pool)
        value = Token(key, serial)
        t.add(key, value, idle_timeout=rng.choice([0.5, 2.0, math.inf]),
              deadline=rng.choice([None, t.now + rng.random() * 3.0]))
        added.append(value)

    def add_backtalk() -> None:
        nonlocal serial
        serial += 1
        key = rng.choice(pool)
        value = Backtalk(key, serial)
        value.table = t
        value.near = rng.sample(pool, 3)
        t.add(key, value)
        added.append(value)

    def pop() -> None:
        value = t.pop(rng.choice(pool), None)
        if value is not None:
            handed_back.append(value)

    def popitem() -> None:
        handed_back.append(t.popitem()[1])

    def expire() -> None:
        # now from t.now: another thread may move the clock past it first (a documented ValueError)
        for e in t.expire(t.now + rng.choice([0.0, 0.01, 0.2, 1.0]), rng.choice([None, 1, 5])):
            handed_back.append(e.value)

    def iterate() -> None:
        for key in t:
            t.get(key)

    def set_deadline() -> None:
        t.set_deadline(rng.choice(pool), rng.choice([None, t.now + rng.random() * 2.0, t.now - 1.0]))

    def set_idle_timeout() -> None:
        t.set_idle_timeout(rng.choice(pool), rng.choice([None, 0.3 + rng.random(), math.inf]))

    def replace() -> None:
        key = rng.choice(pool)
        if key in t:
            t[key] = Token(key, -1)

    ops = [
        add, add, add_backtalk, pop, pop, popitem, expire, expire, iterate, set_deadline, set_deadline,
        set_idle_timeout,
        lambda: t.touch(rng.choice(pool)),
        lambda: t.touch_many(rng.sample(pool, 8)),
        lambda: t.get(rng.choice(pool)),
        lambda: rng.choice(pool) in t,
        lambda: t.due(rng.choice(pool)),
        lambda: t.last_activity(rng.choice(pool)),
        lambda: t.next_expiry(),
        lambda: len(t),
        lambda: t.setdefault(rng.choice(pool), Token(-1, -1)) if not accounting else None,
        lambda: t.update([(rng.choice(pool), Token(-1, -1))]) if not accounting else None,
        lambda: replace() if not accounting else None,
        lambda: t.copy() if rng.random() < 0.05 else None,
        lambda: t.clear() if not accounting and rng.random() < 0.02 else None,
    ]
    try:
        for _ in range(MAX_OPS):
            if time.monotonic() > stop:
                break
            try:
                rng.choice(ops)()
            except EXPECTED_TYPES as error:
                if not any(isinstance(error, kind) and text in str(error) for kind, text in EXPECTED):
                    errors.append(repr(error))
    except BaseException as error:  # anything else is a failure of the table
        errors.append(f"{type(error).__name__}: {error}")


EXPECTED_TYPES = tuple(kind for kind, _ in EXPECTED)


@pytest.fixture
def switch_often() -> Any:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("keys", sorted(POOLS))
@pytest.mark.parametrize("accounting", [True, False], ids=["accounting", "chaos"])
def test_threads_calling_every_method_at_random(Table: type, switch_often: Any, accounting: bool, keys: str) -> None:
    t = Table(1.0, resolution=0.05, now=1000.0)
    added: List[Any] = []
    handed_back: List[Any] = []
    errors: List[str] = []
    unraisable: List[str] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda args: unraisable.append(f"{args.exc_type.__name__}: {args.exc_value}")
    stop = time.monotonic() + SECONDS
    try:
        threads = [threading.Thread(target=worker, args=(t, seed, accounting, added, handed_back, errors, stop, POOLS[keys]))
                   for seed in range(1, THREADS + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60.0)  # a hang guard
        assert not any(thread.is_alive() for thread in threads), "a thread never finished"
    finally:
        sys.setswitchinterval(0.005)
        sys.unraisablehook = old_hook
    assert not errors, errors[:10]
    assert not unraisable, unraisable[:10]
    check_consistent(t)
    if accounting:
        tokens = [value for value in handed_back if type(value) in (Token, Backtalk)]
        assert len({id(v) for v in tokens}) == len(tokens), "a value was handed back twice"
        present: Dict[Any, Any] = {key: t[key] for key in t}
        assert not {id(v) for v in present.values()} & {id(v) for v in tokens}, "a value handed back is still in"
        assert all(v.key == k for k, v in present.items()), "a value sits under another key"
        ids = {id(v) for v in added}
        assert len(ids) == len(added)
        assert {id(v) for v in tokens} | {id(v) for v in present.values()} == ids, "a value was lost"
    drain(t)


def test_deadlines_and_removals_from_several_threads(Table: type, switch_often: Any) -> None:
    """The pattern that crashed the compiled table: set_deadline (a Python-level float check
    between its lookup and its write) on keys that other threads remove and re-add."""
    t = Table(10.0, resolution=0.01, now=0.0)
    keys = range(64)
    for key in keys:
        t[key] = key
    errors: List[str] = []
    stop = time.monotonic() + SECONDS

    def retime(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            try:
                t.set_deadline(rng.choice(keys), t.now + rng.random())
                t.set_idle_timeout(rng.choice(keys), 0.5 + rng.random())
            except KeyError:
                pass
            except BaseException as error:
                errors.append(repr(error))
                return

    def churn(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            try:
                key = rng.choice(keys)
                if t.pop(key, None) is None:
                    t.add(key, key)
                for i in range(1000 * seed, 1000 * seed + 8):  # growth and shrink move every entry's storage
                    t[i] = i
                for i in range(1000 * seed, 1000 * seed + 8):
                    del t[i]
            except KeyError:
                pass
            except BaseException as error:
                errors.append(repr(error))
                return

    threads = [threading.Thread(target=retime, args=(1,)), threading.Thread(target=retime, args=(2,)),
               threading.Thread(target=churn, args=(3,)), threading.Thread(target=churn, args=(4,))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60.0)
    sys.setswitchinterval(0.005)
    assert not any(thread.is_alive() for thread in threads), "a thread never finished"
    assert not errors, errors[:10]
    assert set(t) <= set(keys)
    drain(t)
