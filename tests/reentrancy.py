"""Re-entrancy harness: user code that runs inside a table's call and changes the table.

Three parts, combined by ``attack`` and parametrized by the tests:

* a **channel** is how user code gets to run inside a call: a key's
  ``__hash__``, a key's ``__eq__`` in the middle of the lookup (a key that
  shares its hash with a stored key), an int-subclass key's
  ``__hash__``/``__eq__``, a time or duration's ``__float__``, a value's
  ``__del__`` when the call releases it, or the garbage collector
  (threshold 1, cyclic garbage whose ``__del__`` runs at any allocation
  inside the call);
* a **hook** is what that user code does to the table: clear it, add many
  entries (growth, rehash), delete the entry the call is about (and
  others), move the clock on with ``expire``, touch everything, re-arm
  everything, delete and re-add the call's key;
* a **call** is a public method, with the arguments a channel can stand in
  for (``key``, ``time``) and whether it releases values.

``attack(Table, call, channel, hook)`` builds a table, arms the channel,
makes the call and accepts only success or a documented exception (the key
vanished: KeyError; the clock moved past the argument: the "earlier than"
ValueError; the size changed under an iterator: RuntimeError), then checks
the table (``table_checks``): no crash, no internal error, nothing lost or
duplicated, no sleeper spinning.

Tests using it should freeze the heap they start with (``frozen_heap``):
the collections the harness forces then cost what they would in a small
program, not in a test runner holding thousands of collected tests.

Keys have a dict's semantics: a key's ``__hash__`` runs before the table
is looked at, its ``__eq__`` during the lookup, where the table restarts the
lookup if the hook changed it (``attack`` asserts that the key channels'
methods did run, so the attack happened).
"""

from __future__ import annotations

import gc
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional

from table_checks import check_consistent, drain

#: The entry every call is about; present unless the call adds.
KEY = 7
NEW_KEY = 1000
START = 100.0
SIZE = 40

Hook = Callable[[Any, int], None]


def _delete(t: Any, key: int) -> None:
    for k in (key, key + 1, key + 2):
        t.pop(k, None)


def _readd(t: Any, key: int) -> None:
    t.pop(key, None)
    t.add(key, "re-added", deadline=t.now + 0.5)


def _expire_later(t: Any, key: int) -> None:
    t.expire(t.now + 1000.0)


def _grow(t: Any, key: int) -> None:
    base = 10_000 + len(t) * 100
    for k in range(base, base + 60):
        if k not in t:
            t[k] = ("grown", k)


def _rearm(t: Any, key: int) -> None:
    for k in list(t):
        t.set_deadline(k, t.now + (hash(k) % 5) * 0.3)
        t.set_idle_timeout(k, 0.7 + (hash(k) % 3))


HOOKS: Dict[str, Hook] = {
    "clear": lambda t, key: t.clear(),
    "grow": _grow,
    "delete": _delete,
    "readd": _readd,
    "expire-later": _expire_later,
    "touch-all": lambda t, key: t.touch_many(list(t)),
    "rearm": _rearm,
}


class Once:
    """Runs a hook on its table the first time it is triggered (and records that it was)."""

    def __init__(self, table: Any, hook: Hook, key: int) -> None:
        self.table, self.hook, self.key = table, hook, key
        self.fired = 0
        self.clock_after = -math.inf  # the table's clock when the hook was done

    def __call__(self) -> None:
        if self.fired or self.table is None:
            return
        self.fired += 1
        self.hook(self.table, self.key)
        self.clock_after = self.table.now


class Converted:
    """An argument whose conversion runs the hook, then answers ``value``."""

    def __init__(self, value: Any, trigger: Once) -> None:
        self.value, self.trigger = value, trigger

    def _convert(self) -> Any:
        self.trigger()
        return self.value


class HashedKey:
    """A key equal to the int ``value`` (and hashed as it) whose ``__hash__`` runs the hook."""

    called = 0

    def __init__(self, value: int, trigger: Once) -> None:
        self.value, self.trigger = value, trigger

    def __hash__(self) -> int:
        type(self).called += 1
        self.trigger()
        return hash(self.value)

    def __eq__(self, other: object) -> bool:
        return other is self or (type(other) is int and other == self.value)


class ComparedKey:
    """A key whose ``__eq__`` runs the hook, met in the middle of a lookup.

    It hashes as ``KEY`` (so a lookup compares it with the stored ``KEY``)
    and equals the int ``value``: for ``KEY`` the lookup finds that entry
    after the hook, for a new key it goes on past it and inserts this key.
    """

    called = 0

    def __init__(self, value: int, trigger: Once) -> None:
        self.value, self.trigger = value, trigger

    def __hash__(self) -> int:
        return hash(KEY)

    def __eq__(self, other: object) -> bool:
        type(self).called += 1
        self.trigger()
        return other is self or (type(other) is int and other == self.value)


class FloatArg(Converted):
    """A time or duration whose ``__float__`` runs the hook."""

    __float__ = Converted._convert


class HashKey(int):
    """An int subclass whose ``__hash__`` and ``__eq__`` run the hook (a dict calls both)."""

    trigger: Optional[Once] = None
    called = 0

    def _noticed(self) -> None:
        type(self).called += 1
        if self.trigger:
            self.trigger()

    def __hash__(self) -> int:
        self._noticed()
        return int.__hash__(self)

    def __eq__(self, other: object) -> bool:
        self._noticed()
        return int.__eq__(self, other)


class DelValue:
    """A value whose ``__del__`` runs the hook."""

    def __init__(self, trigger: Optional[Once]) -> None:
        self.trigger = trigger

    def __del__(self) -> None:
        if self.trigger:
            self.trigger()


class Garbage:
    """Cyclic garbage: only the collector frees it, and its ``__del__`` runs the hook."""

    def __init__(self, trigger: Once) -> None:
        self.trigger = trigger
        self.cycle = self

    def __del__(self) -> None:
        self.trigger()


@dataclass(frozen=True)
class Call:
    run: Callable[[Any, Any, Any], Any]  # (table, key, time) -> result
    takes: FrozenSet[str]  # which of "key", "time" a channel may stand in for
    releases: bool = False  # drops one of the table's values (a __del__ channel)
    key: int = KEY
    time: Callable[[Any], float] = lambda t: t.now + 5.0


def _iterate(t: Any, key: Any, when: Any) -> List[int]:
    keys = []
    for k in t:
        keys.append(k)
        t.get(key)  # converts the key inside the iteration
    return keys


CALLS: Dict[str, Call] = {
    "getitem": Call(lambda t, k, x: t[k], frozenset({"key"})),
    "get": Call(lambda t, k, x: t.get(k, "default"), frozenset({"key"})),
    "contains": Call(lambda t, k, x: k in t, frozenset({"key"})),
    "last_activity": Call(lambda t, k, x: t.last_activity(k), frozenset({"key"})),
    "due": Call(lambda t, k, x: t.due(k), frozenset({"key"})),
    "touch": Call(lambda t, k, x: t.touch(k), frozenset({"key"})),
    "touch_many": Call(lambda t, k, x: t.touch_many([k, KEY + 1, k]), frozenset({"key"})),
    "setitem-replace": Call(lambda t, k, x: t.__setitem__(k, "new"), frozenset({"key"}), releases=True),
    "setitem-insert": Call(lambda t, k, x: t.__setitem__(k, "new"), frozenset({"key"}), key=NEW_KEY),
    "add": Call(lambda t, k, x: t.add(k, "new", idle_timeout=x, deadline=x), frozenset({"key", "time"}),
                key=NEW_KEY, time=lambda t: t.now + 3.0),
    "delitem": Call(lambda t, k, x: t.__delitem__(k), frozenset({"key"}), releases=True),
    "pop": Call(lambda t, k, x: t.pop(k), frozenset({"key"}), releases=True),
    "pop-default": Call(lambda t, k, x: t.pop(k, "default"), frozenset({"key"}), releases=True),
    "setdefault": Call(lambda t, k, x: t.setdefault(k, "new"), frozenset({"key"}), key=NEW_KEY),
    "update": Call(lambda t, k, x: t.update([(k, "new")]), frozenset({"key"}), releases=True),
    "popitem": Call(lambda t, k, x: t.popitem(), frozenset(), releases=True),
    "set_deadline": Call(lambda t, k, x: t.set_deadline(k, x), frozenset({"key", "time"})),
    "set_idle_timeout": Call(lambda t, k, x: t.set_idle_timeout(k, x), frozenset({"key", "time"}),
                             time=lambda t: 2.5),
    "expire": Call(lambda t, k, x: t.expire(x), frozenset({"time"}), releases=True),
    "expire-limit": Call(lambda t, k, x: t.expire(x, 3), frozenset({"time"}), releases=True),
    "next_expiry": Call(lambda t, k, x: t.next_expiry(), frozenset()),
    "clear": Call(lambda t, k, x: t.clear(), frozenset(), releases=True),
    "iterate": Call(_iterate, frozenset({"key"})),
    "copy": Call(lambda t, k, x: t.copy(), frozenset()),
    "reinit": Call(lambda t, k, x: t.__init__(x, now=START), frozenset({"time"}), releases=True,
                   time=lambda t: 4.0),
}

CHANNELS = ("__hash__", "__eq__", "int-subclass", "__float__", "__del__", "gc")
KEY_CHANNELS = {"__hash__": HashedKey, "__eq__": ComparedKey}


def applies(call: Call, channel: str) -> bool:
    if channel in ("__hash__", "__eq__", "int-subclass"):
        return "key" in call.takes
    if channel == "__float__":
        return "time" in call.takes
    if channel == "__del__":
        return call.releases
    return True


def populated(Table: type, values: Callable[[int], Any]) -> Any:
    """Entries of every kind: default timers, own idle timeouts, deadlines past and future, never."""
    t = Table(10.0, resolution=0.25, now=START)
    for k in range(SIZE):
        if k % 4 == 0:
            t.add(k, values(k), deadline=START + k * 0.1)
        elif k % 4 == 1:
            t.add(k, values(k), idle_timeout=1.0 + k)
        elif k % 4 == 2:
            t.add(k, values(k), idle_timeout=math.inf)
        else:
            t[k] = values(k)
    t.expire(START + 0.5, limit=2)  # some entries left pending
    return t


#: What a call may raise when the hook changed the table under it (and nothing else).
ALLOWED = (
    (KeyError, ""),
    (ValueError, "is earlier than the table's current time"),
    (RuntimeError, "changed size during iteration"),
)


def attack(Table: type, call_name: str, channel: str, hook_name: str) -> None:
    call = CALLS[call_name]
    hook = HOOKS[hook_name]
    table_box: List[Any] = []
    trigger = Once(None, hook, call.key)
    if channel == "__del__":
        t = populated(Table, lambda k: DelValue(trigger))
    else:
        t = populated(Table, lambda k: ("value", k))
    trigger.table = t
    table_box.append(t)
    key: Any = call.key
    when: Any = call.time(t)
    if channel in KEY_CHANNELS:
        key = KEY_CHANNELS[channel](call.key, trigger)
        KEY_CHANNELS[channel].called = 0
    elif channel == "int-subclass":
        key = HashKey(call.key)
        HashKey.trigger, HashKey.called = trigger, 0
    elif channel == "__float__":
        when = FloatArg(when, trigger)
    old_threshold = gc.get_threshold()
    old_hook = sys.unraisablehook
    unraisable: List[str] = []
    sys.unraisablehook = lambda args: unraisable.append(f"{args.exc_type.__name__}: {args.exc_value}")
    garbage: List[Garbage] = []
    if channel == "gc":
        garbage = [Garbage(trigger) for _ in range(3)]
        del garbage[:]  # cyclic: waits for the collector
        gc.set_threshold(1, *old_threshold[1:])  # a young collection at every allocation
    try:
        try:
            result = call.run(t, key, when)
        except ALLOWED_TYPES as error:
            assert any(isinstance(error, kind) and text in str(error) for kind, text in ALLOWED), repr(error)
            result = None
        del result
        gc.set_threshold(*old_threshold)
        if channel == "gc":
            gc.collect()  # whatever garbage the call did not collect: its hook runs now
    finally:
        gc.set_threshold(*old_threshold)
        sys.unraisablehook = old_hook
        HashKey.trigger = None
    # A hook that failed inside a __del__ is reported, not raised: it must not have failed.
    assert not unraisable, unraisable
    if call_name != "reinit":
        assert t.now >= trigger.clock_after, "the clock moved backwards"
    if channel == "int-subclass":
        assert HashKey.called > 0, "an int-subclass key was never hashed: keys have a dict's semantics"
    if channel in KEY_CHANNELS:
        assert KEY_CHANNELS[channel].called > 0, f"the key's {channel} never ran"
    if channel == "__del__":
        trigger.fired = 1  # draining releases more DelValues: the hook ran once, enough
    check_consistent(t)
    drain(t)


ALLOWED_TYPES = tuple(kind for kind, _ in ALLOWED)


def cases() -> List[Any]:
    return [(call, channel) for call, spec in CALLS.items() for channel in CHANNELS if applies(spec, channel)]


def frozen_heap() -> Any:
    """A fixture body: freeze what exists (pytest's own objects), unfreeze after."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
