"""What both implementations of the table share.

The result type, the exception, the wheel's geometry and the argument checks
live here once, so that the compiled table and its pure-Python twin accept
the same arguments and fail with the same messages. The compiled table calls
these checks only on its cold paths (construction, per-entry timeouts, error
reporting); its hot paths do the equivalent test in C and come here only to
raise.
"""

from __future__ import annotations

import copy
import math
import operator
import time
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

__all__ = ("Expired", "TableFull", "FAST_LIMIT")

#: Exact ints in ``[0, FAST_LIMIT)`` are the int fast path: such an int is
#: its own hash (CPython's hash modulus is ``2**61 - 1``), so the compiled
#: index stores it in place of its hash and keeps no key object. Every other
#: hashable key (a larger or negative int too) takes the general path.
FAST_LIMIT = 2**61 - 1

#: How many times one lookup starts again because a key's ``__eq__`` (or a
#: ``__del__`` it set off) changed the table under it, before RuntimeError.
MAX_RESTARTS = 1000

#: The most entries a table can hold: slot positions and slab indices are 32-bit.
MAX_CAPACITY = 2**30

# Wheel geometry (mirrored by the enum in ``_wheel.pxd``): 64 slots a level,
# each level 64 times coarser, and enough levels that any tick below
# MAX_TICK has a place, so no deadline ever needs an overflow list.
LEVEL_BITS = 6
SLOTS = 1 << LEVEL_BITS
SLOT_MASK = SLOTS - 1
LEVELS = 11
MAX_TICK = 1 << 62
#: How far (in ticks) ``expire`` looks past ``now`` when it decides which
#: slots to take: event loops fire timers up to their clock's resolution
#: early, and the slot named by ``next_expiry`` must still be taken then.
#: Harmless, because each entry's due time is then checked exactly.
TICK_SLACK = 1e-6


class Expired(NamedTuple):
    """An entry that :meth:`ConnectionTable.expire` removed."""

    #: The key object the table stored (the first of the equal keys it was given).
    key: Any
    value: Any
    #: ``"idle"`` or ``"deadline"``: which of the two made the entry due.
    reason: str


class TableFull(Exception):
    """Raised by an insertion when the table already holds ``max_size`` entries."""


def refuse_present(key: object) -> None:
    """``add``'s KeyError for a key already in the table."""
    raise KeyError(f"key {key!r} is already in the table")


def refuse_restarts() -> None:
    """A lookup gave up: the table kept changing under a key's ``__eq__``."""
    raise RuntimeError(
        f"the connection table changed during {MAX_RESTARTS} key comparisons in a row "
        "(a key's __eq__ keeps changing it)"
    )


_NO_VALUE = object()


def mapping_eq(table: Any, other: object) -> Any:
    """``table == other``, as a dict compares: any Mapping with the same keys and equal values.

    The table's pairs are taken first (its iteration refuses a change of
    size): the comparisons below run user code, which may change it.
    """
    if not isinstance(other, Mapping):
        return NotImplemented
    if other is table:
        return True
    pairs = list(table.items())
    if len(pairs) != len(other):
        return False
    for key, value in pairs:
        theirs = other.get(key, _NO_VALUE)  # not other[key]: a defaultdict would insert it
        if theirs is _NO_VALUE or not (theirs is value or value == theirs):
            return False
    return True


def _as_float(name: str, value: object) -> float:
    if type(value) is float:
        return value  # type: ignore[return-value]
    if isinstance(value, (str, bytes, bytearray)) or not (
        hasattr(type(value), "__float__") or hasattr(type(value), "__index__")
    ):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    return float(value)  # type: ignore[arg-type]


def check_timeout(name: str, value: object) -> float:
    """A duration that must be positive; ``math.inf`` means never."""
    seconds = _as_float(name, value)
    if not seconds > 0.0:  # also catches NaN
        raise ValueError(f"{name} must be positive (math.inf for never), got {seconds!r}")
    return seconds


#: The finest resolution a table accepts. Ticks are counted below MAX_TICK
#: (2**62), so at this floor a table's clock spans 2**62 microseconds, about
#: 146,000 years, after its start: no uptime reaches the end of tick space.
MIN_RESOLUTION = 1e-6


def check_resolution(value: object) -> float:
    seconds = _as_float("resolution", value)
    if not 0.0 < seconds < math.inf:
        raise ValueError(f"resolution must be a positive finite number of seconds, got {seconds!r}")
    if seconds < MIN_RESOLUTION:
        raise ValueError(
            f"resolution must be at least 1e-06 seconds (a table counts at most 2**62 ticks: "
            f"about 146,000 years at 1e-06), got {seconds!r}"
        )
    return seconds


def check_deadline(value: object) -> float:
    """An absolute time on the table's clock, or ``None`` for no deadline."""
    if value is None:
        return math.inf
    when = _as_float("deadline", value)
    if math.isnan(when):
        raise ValueError("deadline must be a time or None, got nan")
    return when


def check_time(name: str, value: object) -> float:
    """A finite time, as a float."""
    now = _as_float(name, value)
    if not math.isfinite(now):
        raise ValueError(f"{name} must be a finite time, got {now!r}")
    return now


def check_start(value: object) -> float:
    """The constructor's ``now``: ``None`` reads ``time.monotonic()`` (asyncio's clock) once."""
    return time.monotonic() if value is None else check_time("now", value)


def time_in_range(now: float, current: float, origin: float, resolution: float) -> bool:
    """Whether the clock may move to ``now``: not back, and not past the end of the table's ticks."""
    return current <= now and (now - origin) / resolution < MAX_TICK


def refuse_time(now: float, current: float, origin: float, resolution: float) -> None:
    """Raise the ValueError for a ``now`` that ``time_in_range`` refused."""
    if now < current:
        raise ValueError(f"now={now!r} is earlier than the table's current time {current!r}")
    raise ValueError(
        f"now={now!r} is past the end of the table's time: its clock counts at most 2**62 ticks "
        f"of resolution={resolution!r} after its start at {origin!r}"
    )


def _exact_int(name: str, value: object) -> int:
    if type(value) is bool or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return operator.index(value)  # an int subclass becomes a plain int; none of its methods run


def check_limit(limit: object) -> int:
    """``None`` (no cap) is returned as -1; a cap above any possible size as MAX_CAPACITY."""
    if limit is None:
        return -1
    if type(limit) is bool or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    limit = operator.index(limit)
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    return min(limit, MAX_CAPACITY)


def check_size(name: str, value: object, *, minimum: int) -> int:
    value = _exact_int(name, value)
    if value < minimum or value > MAX_CAPACITY:
        raise ValueError(f"{name} must be between {minimum} and 2**30, got {value}")
    return value


def check_max_size(value: Optional[object]) -> int:
    """``None`` (unbounded) is returned as -1."""
    return -1 if value is None else check_size("max_size", value, minimum=1)


def ceil_tick(when: float, origin: float, resolution: float) -> int:
    """The first tick at or after ``when``: rounding up is what keeps expiry from being early."""
    ticks = (when - origin) / resolution
    return MAX_TICK if ticks >= MAX_TICK else math.ceil(ticks)


def floor_tick(now: float, origin: float, resolution: float) -> int:
    """The last tick at or before ``now`` (give or take TICK_SLACK): what ``expire(now)`` reaches."""
    ticks = (now - origin) / resolution + TICK_SLACK
    return MAX_TICK if ticks >= MAX_TICK else math.floor(ticks)


#: ``wake_time`` gives up rounding after this many steps (it needs one or two).
_WAKE_STEPS = 64


def next_expiry(now: float, earliest: int, origin: float, resolution: float) -> Optional[float]:
    """``next_expiry()`` once nothing is pending, the earliest armed tick being ``earliest``.

    ``now`` when ``expire(now)`` would already reach that tick (a call cut
    short by ``limit``, or one that only moved the clock); None when the tick
    is the last of the table's time (a due time past its end never comes);
    else the first float time whose tick reaches it, so that ``expire`` at
    the returned time always takes the slot: a loop sleeping until
    ``next_expiry()`` never spins, whatever the rounding. The compiled table
    does the same arithmetic in C, so both return the same float.
    """
    if earliest >= MAX_TICK:
        return None
    if earliest <= floor_tick(now, origin, resolution):
        return now
    when = origin + earliest * resolution
    for _ in range(_WAKE_STEPS):
        if floor_tick(when, origin, resolution) >= earliest:
            break
        when = math.nextafter(when, math.inf)
    return when


def update_items(other: Any, kwds: dict) -> list:
    """The ``(key, value)`` pairs ``MutableMapping.update(other, **kwds)`` would store, in its order.

    Both tables collect them all (running ``other``'s code) before changing
    anything, then store them all or none.
    """
    if isinstance(other, Mapping):
        items = [(key, other[key]) for key in other]
    elif hasattr(other, "keys"):
        items = [(key, other[key]) for key in other.keys()]
    else:
        items = [(key, value) for key, value in other]
    items.extend(kwds.items())
    return items


POPITEM_EMPTY = "popitem(): the connection table is empty"


def refuse_pickle(table: Any) -> Any:
    raise TypeError(
        "cannot pickle 'ConnectionTable' object: its times are on this process's clock and its "
        "values are live connections (copy() and copy.deepcopy() copy a table within the process)"
    )


def deepcopy_table(table: Any, memo: dict) -> Any:
    """``copy.deepcopy(table)``: a copy (same timers, clock and wheel), each value deep-copied.

    Shared by both implementations, through their public API only: a value's
    ``__deepcopy__`` sees (through ``memo``) the copy, never a half-built one.
    """
    clone = table.copy()
    memo[id(table)] = clone
    for key in list(clone):
        if key in clone:
            value = copy.deepcopy(clone[key], memo)
            if key in clone:  # the copy above ran Python code: the entry may be gone
                clone[key] = value
    return clone


def table_repr(table: Any) -> str:
    return (
        f"<{type(table).__module__}.{type(table).__qualname__} len={len(table)} "
        f"now={table.now!r} idle_timeout={table.idle_timeout!r} resolution={table.resolution!r}>"
    )
