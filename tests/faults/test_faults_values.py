"""A value whose ``__del__`` raises: reported through ``sys.unraisablehook``, nothing else lost.

Whichever way the table lets go of such values (delete, pop, replace, clear,
expire, its own deallocation, the garbage collector), each failing
``__del__`` is reported exactly once, no exception escapes into the caller,
every other value is released or kept as it should be, and the table goes on
working with its remaining entries and their timers intact.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import weakref
from typing import Any, Callable, Dict, Iterator, List

import pytest

EXPLODING = range(0, 20)
PLAIN = range(100, 105)


class Explodes:
    """A value whose ``__del__`` raises."""

    def __init__(self, key: int) -> None:
        self.key = key

    def __del__(self) -> None:
        raise RuntimeError(f"__del__ of value {self.key}")


class Plain:
    """A value whose release a weak reference can see."""


@contextlib.contextmanager
def unraisable() -> Iterator[List[str]]:
    """The messages of the exceptions reported to ``sys.unraisablehook`` meanwhile."""
    reported: List[str] = []
    previous = sys.unraisablehook
    # Keep only the message: the hook's argument references the exception and its frames.
    sys.unraisablehook = lambda hook_args: reported.append(str(hook_args.exc_value))
    try:
        yield reported
    finally:
        sys.unraisablehook = previous


def expected(keys: Any) -> List[str]:
    return sorted(f"__del__ of value {key}" for key in keys)


def fill(Table: type) -> Any:
    t = Table(1.0, resolution=0.1, now=0.0)
    for key in EXPLODING:
        t[key] = Explodes(key)
    for key in PLAIN:
        t.add(key, Plain(), idle_timeout=100.0)
    return t


def expire_and_drop(t: Any) -> None:
    expired = t.expire(5.0)
    assert sorted(e.key for e in expired) == list(EXPLODING)
    del expired  # the values go with the list


# How each removal lets go of the exploding values, and which of them it drops.
REMOVALS: Dict[str, Callable[[Any], Any]] = {
    "delitem": lambda t: [t.__delitem__(key) for key in EXPLODING],
    "pop": lambda t: [t.pop(key) for key in EXPLODING],
    "replace": lambda t: [t.__setitem__(key, "replaced") for key in EXPLODING],
    "update": lambda t: t.update({key: "replaced" for key in EXPLODING}),
    "expire": expire_and_drop,
}


@pytest.mark.parametrize("removal", sorted(REMOVALS))
def test_raising_del_is_reported_once_per_value_and_the_rest_survives(Table, removal):
    t = fill(Table)
    plain_refs = {key: weakref.ref(t[key]) for key in PLAIN}
    timers = {key: t.due(key) for key in PLAIN}
    with unraisable() as reported:
        REMOVALS[removal](t)
        gc.collect()
    assert sorted(reported) == expected(EXPLODING)
    kept = set(PLAIN) | (set(EXPLODING) if removal in ("replace", "update") else set())
    assert set(t) == kept
    assert all(ref() is t[key] for key, ref in plain_refs.items())
    assert {key: t.due(key) for key in PLAIN} == timers
    # Still a working table.
    t.add(500, "late")
    t.touch(100)
    assert t.due(100) == t.now + 100.0 and 500 in t


@pytest.mark.parametrize("how", ["clear", "dealloc", "cycle"])
def test_raising_del_when_the_table_lets_go_of_everything(Table, how):
    t = fill(Table)
    plain_refs = [weakref.ref(t[key]) for key in PLAIN]
    table_ref = weakref.ref(t)
    with unraisable() as reported:
        if how == "clear":
            t.clear()
            assert len(t) == 0 and list(t) == []
        else:
            if how == "cycle":
                t[999] = [t]  # only the collector can free the table now
            del t
        gc.collect()
    assert sorted(reported) == expected(EXPLODING)
    assert all(ref() is None for ref in plain_refs)
    assert (table_ref() is None) == (how != "clear")
