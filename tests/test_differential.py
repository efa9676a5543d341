"""Differential fuzzing: the compiled table, the twin and a dict model, side by side.

Random operation sequences (hypothesis) run on both tables with the same
arguments, including hostile ones. Keys of every kind, with a dict's
semantics: ints on and off the fast path, floats and bools equal to ints,
strs, tuples, int subclasses, objects equal to ints (as an IntEnum is),
objects with their own hash and equality (colliding with ints and with each
other), keys whose ``__hash__`` or ``__eq__`` changes the table they are
used on (in the middle of a lookup) or raises, unhashable keys. Times and
durations: ``__float__`` objects (some raising, some changing the table),
wrong types, NaN, infinities. After each step the two tables must agree on everything
observable: each call's result, or its exception's type and message; the
contents, activity times, due times, clock and ``next_expiry()``. The only
differences allowed are the ones the README names: the module in a class
name (``conntable._ctable.`` / ``conntable._pytable.``) and the iteration
order, so contents are compared, not orders (``popitem`` takes the first key
in iteration order: one table's pick is popped from the other by key).

The dict model checks the mapping itself: the keys and values the tables
hold are those a dict would after the same successful calls.

``HYPOTHESIS_PROFILE=long`` runs many more and longer sequences.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

import conntable

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
SETTINGS = settings(
    max_examples=2000 if LONG else 80,
    stateful_step_count=200 if LONG else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# -- hostile arguments, built afresh for each table ------------------------------

HOOKS = st.one_of(
    st.tuples(st.just("pop"), st.integers(0, 12)),
    st.just(("clear",)),
    st.tuples(st.just("expire"), st.sampled_from([0.0, 0.3, 5.0])),
    st.tuples(st.just("add"), st.integers(0, 12)),
    st.just(("touch-all",)),
)


def run_hook(hook: Tuple[Any, ...], t: Any) -> None:
    kind = hook[0]
    if kind == "pop":
        t.pop(hook[1], None)
    elif kind == "clear":
        t.clear()
    elif kind == "expire":
        t.expire(t.now + hook[1])
    elif kind == "add":
        if hook[1] not in t:
            t.add(hook[1], ("hooked", hook[1]))
    else:
        t.touch_many(list(t))


class IntSub(int):
    """An int-subclass key: equal to its int, and stored as itself."""

    def __repr__(self) -> str:
        return f"IntSub({int(self)})"


class Obj:
    """A key with its own hash (colliding with the ints 0..2 and with other Objs) and equality."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __hash__(self) -> int:
        return self.k % 3

    def __eq__(self, other: object) -> Any:
        return other.k == self.k if type(other) is Obj else NotImplemented

    def __repr__(self) -> str:
        return f"Obj({self.k})"


class EqInt:
    """Equal to the int ``k`` and hashed as it (as an IntEnum member is)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __hash__(self) -> int:
        return hash(self.k)

    def __eq__(self, other: object) -> Any:
        if isinstance(other, EqInt):
            return other.k == self.k
        return other == self.k if isinstance(other, (int, float)) else NotImplemented

    def __repr__(self) -> str:
        return f"EqInt({self.k})"


class Hostile:
    """A stand-in whose conversion first runs a hook on its table (once), then answers or raises."""

    def __init__(self, result: Any, hook: Optional[Tuple[Any, ...]] = None, table: Any = None) -> None:
        self.result, self.hook, self.table = result, hook, table

    def _answer(self) -> Any:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            run_hook(hook, self.table)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result


class HookedKey(EqInt):
    """An EqInt whose ``__hash__`` (or ``__eq__``, met inside the lookup) runs a hook on its table first, once; or raises."""

    #: The keys made for the call under way: disarmed once it returns (a stored key
    #: must not go on to change a table from inside a later call, or from the checks).
    armed: List["HookedKey"] = []

    def __init__(self, k: int, where: str, hook: Any, table: Any) -> None:
        super().__init__(k)
        self.where, self.hostile = where, Hostile(None, hook, table)
        HookedKey.armed.append(self)

    @classmethod
    def disarm(cls) -> None:
        for key in cls.armed:
            key.where = "disarmed"
        cls.armed.clear()

    def __hash__(self) -> int:
        if self.where == "hash":
            self.hostile._answer()
        elif self.where == "hash-raises":
            raise ValueError("no hash")
        return hash(self.k)

    def __eq__(self, other: object) -> Any:
        if self.where == "eq":
            self.hostile._answer()
        elif self.where == "eq-raises":
            self.where = "raised"  # once: a stored key that always raised would poison every later call
            raise ValueError("no eq")
        return super().__eq__(other)


class Number(Hostile):
    __float__ = Hostile._answer


SMALL = st.integers(0, 12)
KEYS = st.one_of(
    st.tuples(st.just("int"), SMALL),
    st.tuples(st.just("int"), SMALL),
    st.tuples(st.just("int"), st.sampled_from([2**63 - 1, 2**61 - 1, 2**61, 2**40 + 1, -1, -2, 2**64, -(10**30)])),
    st.tuples(st.just("float"), SMALL),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("str"), st.sampled_from(["a", "b", "0", "", "é"])),
    st.tuples(st.just("tuple"), SMALL),
    st.tuples(st.just("intsub"), SMALL),
    st.tuples(st.just("obj"), SMALL),
    st.tuples(st.just("eqint"), SMALL),
    st.tuples(st.just("hash-hook"), SMALL, HOOKS),
    st.tuples(st.just("eq-hook"), SMALL, HOOKS),
    st.tuples(st.sampled_from(["hash-raises", "eq-raises"]), SMALL),
    st.sampled_from([("bad", [1]), ("bad", {}), ("bad", (1, [2])), ("value", None), ("value", b"1")]),
)
# Times are offsets from the clock when the step starts; durations are plain.
OFFSETS = st.one_of(st.floats(-2.0, 8.0), st.sampled_from([0.0, 0.25, 1.0, 3.0]))
TIMES = st.one_of(
    st.tuples(st.just("float"), OFFSETS),
    st.tuples(st.just("float"), OFFSETS),
    st.tuples(st.just("int"), st.integers(-1, 6)),
    st.tuples(st.just("number"), OFFSETS),
    st.tuples(st.just("number-hook"), OFFSETS, HOOKS),
    st.sampled_from([("none",), ("nan",), ("inf",), ("-inf",), ("str",), ("huge",), ("number-nan",),
                     ("number-raises",), ("number-str",)]),
)
DURATIONS = st.one_of(
    st.none(),
    st.tuples(st.just("plain"), st.sampled_from([0.1, 0.5, 1.0, 2.5, math.inf, 0.0, -1.0, math.nan])),
    st.tuples(st.just("number"), st.sampled_from([0.5, 2.0])),
    st.tuples(st.just("number-hook"), st.sampled_from([0.5, 2.0]), HOOKS),
    st.sampled_from([("str",), ("huge",)]),
)
LIMITS = st.one_of(st.none(), st.integers(0, 4), st.sampled_from([-1, 2**64, 2.0, True, "3"]))


def make_key(spec: Tuple[Any, ...], t: Any) -> Any:
    """A fresh key object for ``t`` (each table gets its own: it keeps the first object of a key)."""
    kind = spec[0]
    if kind in ("int", "str", "bad", "value"):
        return spec[1]
    if kind == "float":
        return float(spec[1])
    if kind == "bool":
        return bool(spec[1])
    if kind == "tuple":
        return (spec[1], "t")
    if kind == "intsub":
        return IntSub(spec[1])
    if kind == "obj":
        return Obj(spec[1])
    if kind == "eqint":
        return EqInt(spec[1])
    if kind in ("hash-hook", "eq-hook"):
        return HookedKey(spec[1], kind[:-5], spec[2], t)
    return HookedKey(spec[1], kind, None, t)  # hash-raises, eq-raises


def make_time(spec: Tuple[Any, ...], t: Any, now: float) -> Any:
    kind = spec[0]
    if kind == "float":
        return now + spec[1]
    if kind == "int":
        return int(now) + spec[1]
    if kind == "number":
        return Number(now + spec[1])
    if kind == "number-hook":
        return Number(now + spec[1], spec[2], t)
    return {"none": None, "nan": math.nan, "inf": math.inf, "-inf": -math.inf, "str": "1", "huge": 10**400,
            "number-nan": Number(math.nan), "number-raises": Number(ValueError("no float")),
            "number-str": Number("1")}[kind]


def make_duration(spec: Optional[Tuple[Any, ...]], t: Any) -> Any:
    if spec is None:
        return None
    kind = spec[0]
    if kind == "plain":
        return spec[1]
    if kind == "number":
        return Number(spec[1])
    if kind == "number-hook":
        return Number(spec[1], spec[2], t)
    return {"str": "1", "huge": 10**400}[kind]


def hooked(*specs: Any) -> bool:
    """Whether an argument may change the table (then the model is re-read from the tables)."""
    return any(isinstance(s, tuple) and s and str(s[0]).endswith("hook") for s in specs)


# -- comparing outcomes -------------------------------------------------------------

_MODULES = re.compile(r"conntable\._(?:ctable|pytable)\.| at 0x[0-9a-f]+")


def normalized(value: Any) -> Any:
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, tuple):
        return tuple(normalized(v) for v in value)
    if isinstance(value, str):
        return _MODULES.sub("", value)
    if type(value).__name__ == "ConnectionTable":
        return observed(value)
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def outcome(call: Callable[[], Any]) -> Tuple[Any, ...]:
    try:
        return ("ok", normalized(call()))
    except AssertionError:
        raise
    except Exception as error:  # noqa: BLE001 - the point is to compare whatever was raised
        return ("raised", type(error).__name__, _MODULES.sub("", str(error)))


def by_key(key: Any) -> Tuple[str, str]:
    """An order on keys of any type (and the key's type: both tables keep the first key object)."""
    return (type(key).__name__, repr(key))


def observed(t: Any) -> Dict[str, Any]:
    return {
        "items": sorted(((by_key(k), normalized(v)) for k, v in t.items())),
        "timers": sorted((by_key(k), t.last_activity(k), t.due(k)) for k in t),
        "len": len(t),
        "now": t.now,
        "settings": (t.idle_timeout, t.resolution, t.max_size),
        "next_expiry": t.next_expiry(),
        "repr": _MODULES.sub("", repr(t)),
    }


class Differential(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.c: Any = None
        self.p: Any = None
        self.model: Dict[int, Any] = {}

    @initialize(
        idle=st.sampled_from([0.5, 1.0, 3.0, math.inf]),
        resolution=st.sampled_from([1e-6, 0.01, 0.25, 1.0]),
        start=st.sampled_from([0.0, 7.5, 1e6, 1e9]),
        max_size=st.sampled_from([None, None, 4, 9]),
    )
    def create(self, idle: float, resolution: float, start: float, max_size: Optional[int]) -> None:
        from conntable import _ctable

        self.c = _ctable.ConnectionTable(idle, resolution=resolution, now=start, max_size=max_size)
        self.p = conntable.PyConnectionTable(idle, resolution=resolution, now=start, max_size=max_size)

    def both(self, call: Callable[[Any], Any], *specs: Any) -> Tuple[Any, ...]:
        """Run ``call`` on each table (its arguments built for that table); the outcomes must agree."""
        ours = outcome(lambda: call(self.c))
        HookedKey.disarm()
        theirs = outcome(lambda: call(self.p))
        HookedKey.disarm()
        assert ours == theirs, f"compiled {ours!r} != twin {theirs!r}"
        if hooked(*specs):
            self.model = dict(self.c.items())
        return ours

    # -- the mapping --------------------------------------------------------------
    @rule(key=KEYS, value=st.integers(0, 5))
    def setitem(self, key: Any, value: int) -> None:
        result = self.both(lambda t: t.__setitem__(make_key(key, t), value), key)
        if result[0] == "ok" and not hooked(key):
            self.model[self.plain(key)] = value

    @rule(key=KEYS)
    def lookups(self, key: Any) -> None:
        for call in (lambda t: t[make_key(key, t)], lambda t: t.get(make_key(key, t), "absent"),
                     lambda t: make_key(key, t) in t, lambda t: t.last_activity(make_key(key, t)),
                     lambda t: t.due(make_key(key, t))):
            self.both(call, key)
        if key[0] == "int" and 0 <= key[1] < 2**63:
            assert self.c.get(key[1], "absent") == self.model.get(key[1], "absent")

    @rule(key=KEYS, default=st.booleans())
    def pop(self, key: Any, default: bool) -> None:
        if default:
            result = self.both(lambda t: t.pop(make_key(key, t), "absent"), key)
        else:
            result = self.both(lambda t: t.pop(make_key(key, t)), key)
        if result[0] == "ok" and not hooked(key):
            self.model.pop(self.plain(key), None)

    @rule(key=KEYS)
    def delitem(self, key: Any) -> None:
        result = self.both(lambda t: t.__delitem__(make_key(key, t)), key)
        if result[0] == "ok" and not hooked(key):
            del self.model[self.plain(key)]

    @rule(key=KEYS, value=st.integers(0, 5))
    def setdefault(self, key: Any, value: int) -> None:
        result = self.both(lambda t: t.setdefault(make_key(key, t), value), key)
        if result[0] == "ok" and not hooked(key):
            assert result[1] == self.model.setdefault(self.plain(key), value)

    @rule(pairs=st.lists(st.tuples(KEYS, st.integers(0, 5)), max_size=4), as_mapping=st.booleans())
    def update(self, pairs: List[Any], as_mapping: bool) -> None:
        def call(t: Any) -> Any:
            items = [(make_key(k, t), v) for k, v in pairs]
            if as_mapping and all(k[0] == "int" for k, _ in pairs):
                return t.update(dict(items))
            return t.update(items)

        result = self.both(call, *[k for k, _ in pairs])
        if result[0] == "ok" and not hooked(*[k for k, _ in pairs]):
            self.model.update((self.plain(k), v) for k, v in pairs)

    @rule(compiled_first=st.booleans())
    def popitem(self, compiled_first: bool) -> None:
        first, second = (self.c, self.p) if compiled_first else (self.p, self.c)
        try:
            key, value = first.popitem()
        except KeyError as error:
            with pytest.raises(KeyError) as other:
                second.popitem()
            assert str(other.value) == str(error) and not self.model
            return
        assert self.model.pop(key) == value
        assert second.pop(key) == value  # iteration orders differ: the same key from the other

    @rule()
    def iterate(self) -> None:
        keys = sorted(map(by_key, self.c))
        assert keys == sorted(map(by_key, self.p)) and len(keys) == len(self.model)
        assert sorted(map(repr, self.c.values())) == sorted(map(repr, self.p.values()))
        iterator_c, iterator_p = iter(self.c), iter(self.p)
        assert sorted(map(by_key, iterator_c)) == sorted(map(by_key, iterator_p)) == keys
        assert self.c == self.p and self.p == self.c and self.c == self.model
        if self.c.max_size is None or len(self.c) < self.c.max_size:
            self.c[10**6] = self.p[10**6] = "late"  # an exhausted iterator stays exhausted
            assert list(iterator_c) == list(iterator_p) == []
            del self.c[10**6], self.p[10**6]

    @rule()
    def clear(self) -> None:
        self.both(lambda t: t.clear())
        self.model.clear()

    @rule()
    def copy(self) -> None:
        self.c, self.p = self.c.copy(), self.p.copy()

    # -- timers -------------------------------------------------------------------
    @rule(key=KEYS, value=st.integers(0, 5), idle=DURATIONS, deadline=st.one_of(st.none(), TIMES))
    def add(self, key: Any, value: int, idle: Any, deadline: Any) -> None:
        now = self.c.now

        def call(t: Any) -> Any:
            kwargs = {}
            if idle is not None:
                kwargs["idle_timeout"] = make_duration(idle, t)
            if deadline is not None:
                kwargs["deadline"] = make_time(deadline, t, now)
            return t.add(make_key(key, t), value, **kwargs)

        result = self.both(call, key, idle, deadline)
        if result[0] == "ok" and not hooked(key, idle, deadline):
            self.model[self.plain(key)] = value

    @rule(key=KEYS)
    def touch(self, key: Any) -> None:
        self.both(lambda t: t.touch(make_key(key, t)), key)

    @rule(keys=st.lists(KEYS, max_size=5))
    def touch_many(self, keys: List[Any]) -> None:
        self.both(lambda t: t.touch_many([make_key(k, t) for k in keys]), *keys)

    @rule(key=st.sampled_from([1, 2, 3]), hook=HOOKS)
    def touch_many_while_changing(self, key: int, hook: Tuple[Any, ...]) -> None:
        def call(t: Any) -> Any:
            def keys() -> Any:
                yield key
                run_hook(hook, t)
                yield key + 1
            return t.touch_many(keys())

        self.both(call, ("iterable-hook",))

    @rule(key=KEYS, when=TIMES)
    def set_deadline(self, key: Any, when: Any) -> None:
        now = self.c.now
        self.both(lambda t: t.set_deadline(make_key(key, t), make_time(when, t, now)), key, when)

    @rule(key=KEYS, seconds=DURATIONS)
    def set_idle_timeout(self, key: Any, seconds: Any) -> None:
        self.both(lambda t: t.set_idle_timeout(make_key(key, t), make_duration(seconds, t)), key, seconds)

    @rule(when=TIMES, limit=LIMITS)
    def expire(self, when: Any, limit: Any) -> None:
        now = self.c.now
        result = self.both(lambda t: t.expire(make_time(when, t, now), limit), when)
        if result[0] == "ok" and not hooked(when):
            for key, value, reason in result[1]:
                assert self.model.pop(key) == value

    @rule()
    def sleep_until_next_expiry(self) -> None:
        when = self.c.next_expiry()
        if when is not None and when - self.c.now < 1e6:
            result = self.both(lambda t: t.expire(when))
            for key, value, reason in result[1]:
                assert self.model.pop(key) == value

    # -- helpers and invariants -----------------------------------------------------
    @staticmethod
    def plain(spec: Tuple[Any, ...]) -> Any:
        """The key for the dict model (equal to the tables' key, so the dict agrees on which key it is)."""
        if spec[0] in ("hash-raises", "eq-raises"):
            return HookedKey(spec[1], "disarmed", None, None)  # the same key without the hostility
        return make_key(spec, None)

    @invariant()
    def the_tables_agree(self) -> None:
        if self.c is None:
            return
        assert observed(self.c) == observed(self.p)
        assert dict(self.c.items()) == self.model
        assert all(type(k) is type(m) for k, m in zip(sorted(self.c, key=by_key), sorted(self.model, key=by_key)))


def test_compiled_and_twin_agree_on_random_sequences(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("c_extensions"):
        pytest.skip("--no-c-extensions: there is no compiled table to compare")
    run_state_machine_as_test(Differential, settings=SETTINGS)
