"""Bad input to every public method of the table: a clear error, and the table exactly as it was.

A systematic sweep, on both implementations (the ``Table`` fixture): each
method, each argument, each kind of bad value (wrong type, out of range,
NaN, infinities). "A clear error" means the expected exception type, and a
message that names the argument (a key that cannot be hashed or compared
raises what a dict raises: Python's "unhashable type", or the key's own
exception from ``__hash__`` or ``__eq__``). "Exactly as it was" means everything the public API can observe,
and what the table hands back as its clock runs on afterwards, equal those
of a twin table that never saw the bad call. tests/test_table.py checks many
of these cases one by one; this sweep makes sure none is missing.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Tuple

import pytest

NAN, INF = math.nan, math.inf
LARGEST_KEY = 2**63 - 1
HUGE_INT = 10**400  # too large for a float


def populated(Table: type) -> Any:
    """A table with entries of every kind: default timers, own idle timeout, deadline, never expiring."""
    t = Table(10.0, resolution=0.5, now=100.0)
    t[1] = "one"
    t.add(2, "two", idle_timeout=3.0)
    t.add(3, "three", deadline=104.0)
    t.add(LARGEST_KEY, "largest", idle_timeout=INF)
    t.expire(101.0)
    t.touch(1)
    return t


def observed(t: Any) -> Dict[str, Any]:
    """Everything the public API says about a table."""
    return {
        "items": sorted(t.items()),
        "len": len(t),
        "settings": (t.now, t.idle_timeout, t.resolution, t.max_size),
        "timers": {key: (t.last_activity(key), t.due(key)) for key in t},
        "next_expiry": t.next_expiry(),
    }


def drained(t: Any) -> List[Tuple[int, str, float]]:
    """What the table hands back as its clock runs on: the wheel, not only the index, is intact."""
    handed_back = []
    now = t.now
    for _ in range(40):
        now += 0.75
        handed_back.extend((e.key, e.reason, now) for e in t.expire(now))
    return handed_back


Call = Callable[[Any, Any], Any]

# -- keys: every method that takes one ----------------------------------------------

KEY_CALLS: Dict[str, Call] = {
    "getitem": lambda t, k: t[k],
    "setitem": lambda t, k: t.__setitem__(k, "new"),
    "delitem": lambda t, k: t.__delitem__(k),
    "contains": lambda t, k: k in t,
    "get": lambda t, k: t.get(k),
    "get-default": lambda t, k: t.get(k, "default"),
    "pop": lambda t, k: t.pop(k),
    "pop-default": lambda t, k: t.pop(k, "default"),
    "setdefault": lambda t, k: t.setdefault(k, "new"),
    "update": lambda t, k: t.update({k: "new"}),
    "add": lambda t, k: t.add(k, "new"),
    "touch": lambda t, k: t.touch(k),
    "touch_many": lambda t, k: t.touch_many([k]),
    "set_deadline": lambda t, k: t.set_deadline(k, 200.0),
    "set_idle_timeout": lambda t, k: t.set_idle_timeout(k, 5.0),
    "last_activity": lambda t, k: t.last_activity(k),
    "due": lambda t, k: t.due(k),
}
class Refused(Exception):
    """What a hostile key's ``__hash__`` or ``__eq__`` raises."""


class RaisingHash:
    def __hash__(self) -> int:
        raise Refused("__hash__ refused")


class RaisingEq:
    """Hashes as the stored key 1, so every lookup compares with it: and ``__eq__`` raises."""

    def __hash__(self) -> int:
        return hash(1)

    def __eq__(self, other: object) -> bool:
        raise Refused("__eq__ refused")


class RaisingEqLarge(RaisingEq):
    """The same against LARGEST_KEY, an int outside the fast path (a stored key object)."""

    def __hash__(self) -> int:
        return hash(LARGEST_KEY)


UNHASHABLE = (TypeError, "unhashable type")
BAD_KEYS = {
    "list": ([1], *UNHASHABLE),
    "dict": ({}, *UNHASHABLE),
    "set": ({1}, *UNHASHABLE),
    "tuple-of-list": ((1, [2]), *UNHASHABLE),
    "raising-hash": (RaisingHash(), Refused, "__hash__ refused"),
    "raising-eq": (RaisingEq(), Refused, "__eq__ refused"),
    "raising-eq-large": (RaisingEqLarge(), Refused, "__eq__ refused"),
}

# -- times, durations, counts --------------------------------------------------------------

ARGUMENT_CALLS: Dict[str, Tuple[str, Call]] = {
    # name: (the argument the message must name, the call)
    "Table-idle_timeout": ("idle_timeout", lambda t, v: type(t)(v)),
    "add-idle_timeout": ("idle_timeout", lambda t, v: t.add(9, idle_timeout=v)),
    "set_idle_timeout": ("idle_timeout", lambda t, v: t.set_idle_timeout(1, v)),
    "add-deadline": ("deadline", lambda t, v: t.add(9, deadline=v)),
    "set_deadline": ("deadline", lambda t, v: t.set_deadline(1, v)),
    "expire-now": ("now", lambda t, v: t.expire(v)),
    "Table-now": ("now", lambda t, v: type(t)(now=v)),
    "expire-limit": ("limit", lambda t, v: t.expire(t.now + 1.0, v)),
    "Table-resolution": ("resolution", lambda t, v: type(t)(resolution=v)),
    "Table-max_size": ("max_size", lambda t, v: type(t)(max_size=v)),
    "Table-capacity": ("capacity", lambda t, v: type(t)(capacity=v)),
}
WRONG_TYPES = {"str": ("1", TypeError), "list": ([1], TypeError)}
BAD_DURATIONS = {
    **WRONG_TYPES, "zero": (0, ValueError), "negative": (-1.0, ValueError),
    "nan": (NAN, ValueError), "-inf": (-INF, ValueError), "huge-int": (HUGE_INT, OverflowError),
}
BAD_TIMES = {**WRONG_TYPES, "nan": (NAN, ValueError), "huge-int": (HUGE_INT, OverflowError)}
BAD_STARTS = {**BAD_TIMES, "inf": (INF, ValueError), "-inf": (-INF, ValueError)}  # None: time.monotonic()
BAD_NOWS = {**BAD_STARTS, "none": (None, TypeError)}
BAD_COUNTS = {
    **WRONG_TYPES, "float": (2.0, TypeError), "nan": (NAN, TypeError), "inf": (INF, TypeError),
    "bool": (True, TypeError), "negative": (-1, ValueError),
}
BAD_VALUES = {
    "Table-idle_timeout": {**BAD_DURATIONS, "none": (None, TypeError)},
    "add-idle_timeout": BAD_DURATIONS,
    "set_idle_timeout": BAD_DURATIONS,
    "add-deadline": BAD_TIMES,
    "set_deadline": BAD_TIMES,
    "expire-now": {**BAD_NOWS, "earlier": (50.0, ValueError)},
    "Table-now": BAD_STARTS,
    "expire-limit": {**BAD_COUNTS, "-2**64": (-(2**64), ValueError)},
    "Table-resolution": {
        **WRONG_TYPES, "zero": (0.0, ValueError), "negative": (-0.5, ValueError),
        "nan": (NAN, ValueError), "inf": (INF, ValueError),
    },
    "Table-max_size": {**BAD_COUNTS, "zero": (0, ValueError), "2**64": (2**64, ValueError)},
    "Table-capacity": {**BAD_COUNTS, "none": (None, TypeError), "2**40": (2**40, ValueError)},
}
ITERABLE_CALLS: Dict[str, Call] = {
    "touch_many-int": lambda t, _: t.touch_many(5),
    "touch_many-none": lambda t, _: t.touch_many(None),
    "update-int": lambda t, _: t.update(5),
}


def cases() -> List[Any]:
    params = []
    for call_name, call in KEY_CALLS.items():
        for kind, (value, error, pattern) in BAD_KEYS.items():
            params.append(pytest.param(call, value, error, pattern, id=f"{call_name}-key-{kind}"))
    for call_name, (argument, call) in ARGUMENT_CALLS.items():
        for kind, (value, error) in BAD_VALUES[call_name].items():
            # Python's own int-to-float overflow does not name the argument; everything else must.
            pattern = None if kind == "huge-int" else argument
            params.append(pytest.param(call, value, error, pattern, id=f"{call_name}-{kind}"))
    for call_name, call in ITERABLE_CALLS.items():
        params.append(pytest.param(call, None, TypeError, "not iterable", id=call_name))
    return params


@pytest.mark.parametrize(("call", "value", "error", "pattern"), cases())
def test_bad_input_is_refused_and_changes_nothing(Table, call, value, error, pattern):
    t = populated(Table)
    with pytest.raises(error, match=pattern):
        call(t, value)
    untouched = populated(Table)
    assert observed(t) == observed(untouched)
    assert drained(t) == drained(untouched)


def test_touch_many_with_one_bad_key_changes_nothing(Table):
    t = populated(Table)
    t.expire(102.0)
    with pytest.raises(TypeError, match="unhashable"):
        t.touch_many([2, ["x"]])
    with pytest.raises(Refused):
        t.touch_many([2, 3, RaisingEq()])  # located after 2 and 3: neither is touched
    reference = populated(Table)
    reference.expire(102.0)
    assert observed(t) == observed(reference)


@pytest.mark.parametrize("limit", [2**63, 2**64])
def test_a_huge_limit_means_no_limit_in_both_implementations(Table, limit):
    t = populated(Table)
    reference = populated(Table)
    assert t.expire(110.0, limit) == reference.expire(110.0)
    assert observed(t) == observed(reference)
