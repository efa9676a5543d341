"""What both implementations of the table share.

The result type, the exception, the wheel's geometry and the argument checks
live here once, so that the compiled table and its pure-Python twin accept
the same arguments and fail with the same messages. The compiled table calls
these checks only on its cold paths (construction, per-entry timeouts, error
reporting); its hot paths do the equivalent test in C and come here only to
raise.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

__all__ = ("Expired", "TableFull", "MAX_KEY")

#: Keys are ints in ``[0, MAX_KEY]``: 63 bits, so that a key fits a C
#: ``uint64_t`` with the top bit free to mark unused slots.
MAX_KEY = 2**63 - 1

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

    key: int
    value: Any
    #: ``"idle"`` or ``"deadline"``: which of the two made the entry due.
    reason: str


class TableFull(Exception):
    """Raised by an insertion when the table already holds ``max_size`` entries."""


def check_key(key: object) -> int:
    """Return ``key`` as an int in range, or raise the error that says why not."""
    if isinstance(key, bool) or not hasattr(type(key), "__index__"):
        raise TypeError(
            f"connection table keys are ints, not {type(key).__name__}"
        )
    value = key.__index__()  # type: ignore[attr-defined]
    if not 0 <= value <= MAX_KEY:
        raise OverflowError(f"connection table key {value} is outside [0, 2**63)")
    return value


def _as_float(name: str, value: object) -> float:
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


def check_resolution(value: object) -> float:
    seconds = _as_float("resolution", value)
    if not 0.0 < seconds < math.inf:
        raise ValueError(f"resolution must be a positive finite number of seconds, got {seconds!r}")
    return seconds


def check_deadline(value: object) -> float:
    """An absolute time on the table's clock, or ``None`` for no deadline."""
    if value is None:
        return math.inf
    when = _as_float("deadline", value)
    if math.isnan(when):
        raise ValueError("deadline must be a time or None, got nan")
    return when


def check_start(value: object) -> float:
    now = _as_float("now", value)
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time, got {now!r}")
    return now


def check_now(value: object, current: float) -> float:
    """A new current time: finite and not earlier than the table's."""
    now = check_start(value)
    if now < current:
        raise ValueError(f"now={now!r} is earlier than the table's current time {current!r}")
    return now


def check_limit(limit: object) -> int:
    """``None`` (no cap) is returned as -1; a cap above any possible size as MAX_CAPACITY."""
    if limit is None:
        return -1
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    return min(limit, MAX_CAPACITY)


def check_size(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
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
    """The last tick at or before ``now`` (give or take TICK_SLACK)."""
    ticks = (now - origin) / resolution + TICK_SLACK
    return MAX_TICK if ticks >= MAX_TICK else math.floor(ticks)


def table_repr(table: Any) -> str:
    return (
        f"<{type(table).__module__}.{type(table).__qualname__} len={len(table)} "
        f"now={table.now!r} idle_timeout={table.idle_timeout!r} resolution={table.resolution!r}>"
    )
