"""The connection table in pure Python: the same algorithm and API as ``_ctable.pyx``.

A dict maps each connection id to a slotted entry (value, last activity,
idle timeout, deadline, wheel slot); the timer wheel in ``_pywheel`` finds due
entries in O(expired). ``touch`` stores ``now`` into the entry and never
relinks it: when the entry's slot comes due, an entry that saw activity is
re-armed at its new due time (lazy re-arm). This is the best registry plain
Python can build, and the package's fallback where the extension is not built.
"""

from __future__ import annotations

import math
import sys
from collections.abc import ItemsView, KeysView, MutableMapping, ValuesView
from typing import Any, Iterable, Iterator, List, Optional

from . import _common as c
from ._pywheel import PENDING, UNLINKED, Wheel

_MISSING = object()


class _Entry:
    __slots__ = ("key", "value", "last", "idle", "deadline", "head")

    def __init__(self, key: int, value: Any, last: float, idle: float, deadline: float) -> None:
        self.key = key
        self.value = value
        self.last = last
        self.idle = idle
        self.deadline = deadline
        self.head = UNLINKED

    def due(self) -> float:
        idle_due = self.last + self.idle
        return idle_due if idle_due < self.deadline else self.deadline


class ConnectionTable:
    """Connection id -> value, with last activity, idle timeout and deadline per entry.

    Pure-Python twin of the compiled table; see :mod:`conntable` for the API.
    """

    __slots__ = (
        "_entries", "_wheel", "_now", "_origin", "_resolution", "_idle_timeout",
        "_max_size", "_version", "_peak", "__weakref__",
    )

    def __init__(
        self,
        idle_timeout: float = 60.0,
        *,
        resolution: float = 0.1,
        now: float = 0.0,
        max_size: Optional[int] = None,
        capacity: int = 0,
    ) -> None:
        self._idle_timeout = c.check_timeout("idle_timeout", idle_timeout)
        self._resolution = c.check_resolution(resolution)
        self._now = self._origin = c.check_start(now)
        self._max_size = c.check_max_size(max_size)
        c.check_size("capacity", capacity, minimum=0)  # a dict needs no presizing
        self._entries: dict[int, _Entry] = {}
        self._wheel = Wheel()
        self._version = 0
        self._peak = 0  # the most entries since the dict was last rebuilt

    # -- read-only settings ------------------------------------------------
    @property
    def now(self) -> float:
        """The table's clock: set by the constructor, moved forward by :meth:`expire`."""
        return self._now

    @property
    def idle_timeout(self) -> float:
        return self._idle_timeout

    @property
    def resolution(self) -> float:
        return self._resolution

    @property
    def max_size(self) -> Optional[int]:
        return None if self._max_size < 0 else self._max_size

    # -- lookup ------------------------------------------------------------
    def _probe(self, key: object) -> Optional[_Entry]:
        """The entry of ``key`` or None; TypeError/OverflowError for a bad key.

        The dict is asked first with the key as given; only a miss or a key
        that is not a plain int (1.0 and True find the entry of 1) goes
        through the shared check.
        """
        entry = self._entries.get(key)  # type: ignore[call-overload]
        if entry is None or type(key) is not int:
            entry = self._entries.get(c.check_key(key))
        return entry

    def _lookup(self, key: object) -> _Entry:
        entry = self._probe(key)
        if entry is None:
            raise KeyError(key)
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return self._probe(key) is not None

    def __getitem__(self, key: int) -> Any:
        return self._lookup(key).value

    def get(self, key: int, default: Any = None, /) -> Any:
        entry = self._probe(key)
        return default if entry is None else entry.value

    def last_activity(self, key: int, /) -> float:
        """When the entry last saw activity, exactly as ``now`` was then."""
        return self._lookup(key).last

    def due(self, key: int, /) -> float:
        """``min(last_activity + idle_timeout, deadline)``; ``math.inf`` if never."""
        return self._lookup(key).due()

    def __iter__(self) -> Iterator[int]:
        version = self._version
        for key in self._entries:
            yield key
            if self._version != version:
                raise RuntimeError("ConnectionTable changed size during iteration")

    def keys(self) -> KeysView[int]:
        return KeysView(self)  # type: ignore[arg-type]

    def values(self) -> ValuesView[Any]:
        return ValuesView(self)  # type: ignore[arg-type]

    def items(self) -> ItemsView[int, Any]:
        return ItemsView(self)  # type: ignore[arg-type]

    # -- activity: the hot path -------------------------------------------
    def touch(self, key: int, /) -> None:
        """Record activity on ``key`` at ``now``. KeyError if absent."""
        entry = self._entries.get(key)
        if entry is None or type(key) is not int:  # inlined _lookup: this is the hot path
            entry = self._lookup(key)
        entry.last = self._now

    def touch_many(self, keys: Iterable[int], /) -> int:
        """Touch every present key of ``keys``; return how many were present.

        All or nothing: every key is checked before any is touched.
        """
        entries = self._entries
        batch = []
        for key in keys:
            entry = entries.get(key)
            if entry is None or type(key) is not int:  # a miss, or not a plain int: check it
                entry = entries.get(c.check_key(key))
            batch.append(entry)
        now = self._now
        found = 0
        for entry in batch:
            if entry is not None:
                entry.last = now
                found += 1
        return found

    # -- insertion and removal --------------------------------------------
    def add(
        self,
        key: int,
        value: Any = None,
        *,
        idle_timeout: Optional[float] = None,
        deadline: Optional[float] = None,
    ) -> None:
        """Insert ``key``; KeyError if present, TableFull if ``len == max_size``."""
        key = c.check_key(key)
        idle = self._idle_timeout if idle_timeout is None else c.check_timeout("idle_timeout", idle_timeout)
        when = c.check_deadline(deadline)
        if key in self._entries:
            raise KeyError(f"connection {key} is already in the table")
        self._insert(key, value, idle, when)

    def _insert(self, key: int, value: Any, idle: float, deadline: float) -> None:
        if len(self._entries) == self._max_size:
            raise c.TableFull(f"the table holds max_size={self._max_size} entries")
        entry = _Entry(key, value, self._now, idle, deadline)
        entries = self._entries
        entries[key] = entry
        self._version += 1
        if len(entries) > self._peak:
            self._peak = len(entries)
        self._arm(entry)

    def __setitem__(self, key: int, value: Any) -> None:
        entry = self._entries.get(key)  # type: ignore[call-overload]
        if entry is None or type(key) is not int:
            key = c.check_key(key)
            entry = self._entries.get(key)
        if entry is None:
            self._insert(key, value, self._idle_timeout, math.inf)
        else:
            old = entry.value
            entry.value = value
            del old  # the old value's __del__ runs with the table consistent

    def _remove(self, key: object) -> _Entry:
        entry = self._lookup(key)
        self._wheel.unlink(entry)
        del self._entries[entry.key]
        self._version += 1
        self._maybe_shrink()
        return entry

    def _maybe_shrink(self) -> None:
        """A dict never gives memory back on deletion: rebuild it once 7/8 of its peak is gone."""
        if len(self._entries) * 8 < self._peak and self._peak > 64:
            self._entries = dict(self._entries)
            self._peak = len(self._entries)

    def __delitem__(self, key: int) -> None:
        self._remove(key)

    def pop(self, key: int, default: Any = _MISSING, /) -> Any:
        """Remove ``key`` and return its value; ``default`` (or KeyError) if absent."""
        if key not in self:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return self._remove(key).value

    # The rest of the MutableMapping protocol, from the standard library's own code.
    popitem = MutableMapping.popitem
    setdefault = MutableMapping.setdefault
    update = MutableMapping.update

    def clear(self) -> None:
        old = self._entries
        self._entries = {}
        self._wheel.clear()
        self._version += 1
        self._peak = 0
        old.clear()  # values' __del__ run last, on an empty, consistent table

    # -- timers ------------------------------------------------------------
    def set_deadline(self, key: int, when: Optional[float], /) -> None:
        """Set an absolute deadline on the table's clock; ``None`` clears it."""
        entry = self._lookup(key)
        entry.deadline = c.check_deadline(when)
        self._rearm(entry)

    def set_idle_timeout(self, key: int, seconds: Optional[float], /) -> None:
        """Set the entry's own idle timeout; ``None`` restores the table's default."""
        entry = self._lookup(key)
        entry.idle = self._idle_timeout if seconds is None else c.check_timeout("idle_timeout", seconds)
        self._rearm(entry)

    def _rearm(self, entry: _Entry) -> None:
        self._wheel.unlink(entry)
        self._arm(entry)

    def _arm(self, entry: _Entry) -> None:
        """Link an unlinked entry where its due time will be examined."""
        due = entry.due()
        if due == math.inf:
            return
        wheel = self._wheel
        if due <= self._now:
            wheel.link(entry, PENDING)
            return
        wheel.arm(entry, max(c.ceil_tick(due, self._origin, self._resolution), wheel.elapsed + 1))

    def expire(self, now: float, limit: Optional[int] = None) -> List[c.Expired]:
        """Advance the clock to ``now``; remove and return the entries that are due.

        At most ``limit`` entries are returned; the rest come back on the next call.
        """
        now = c.check_now(now, self._now)
        cap = c.check_limit(limit)
        self._now = now
        wheel = self._wheel
        heads = wheel.heads
        target = c.floor_tick(now, self._origin, self._resolution)
        expired: List[c.Expired] = []
        while True:
            # ``heads[PENDING]`` is read afresh each time: a value's __del__, run
            # by a collection during this loop, may unlink and so replace it.
            while heads[PENDING] and len(expired) != cap:
                entry = heads[PENDING].popitem()[1]
                entry.head = UNLINKED
                if entry.due() <= now:
                    del self._entries[entry.key]
                    self._version += 1
                    reason = "deadline" if entry.deadline <= entry.last + entry.idle else "idle"
                    expired.append(c.Expired(entry.key, entry.value, reason))
                else:
                    self._arm(entry)
            if len(expired) == cap:
                break
            found = wheel.next_slot()
            if found is None or found[1] > target:
                wheel.elapsed = max(wheel.elapsed, target)
                break
            wheel.elapsed = found[1]
            wheel.take(found[0])
        if not heads[PENDING]:
            heads[PENDING] = {}  # a drained dict keeps its peak size
        self._maybe_shrink()
        return expired

    def next_expiry(self) -> Optional[float]:
        """When to call :meth:`expire` next; None if nothing can ever expire."""
        wheel = self._wheel
        if wheel.heads[PENDING]:
            return self._now
        found = wheel.next_slot()
        if found is None:
            return None
        when = self._origin + wheel.earliest[found[0]] * self._resolution
        # Mathematically later than now; the guard keeps rounding from making it not so.
        return when if when > self._now else math.nextafter(self._now, math.inf)

    # -- object protocol ---------------------------------------------------
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return c.table_repr(self)

    def __sizeof__(self) -> int:
        entries = self._entries
        return (
            object.__sizeof__(self)
            + sys.getsizeof(entries)
            + len(entries) * sys.getsizeof(_Entry(0, None, 0.0, 0.0, 0.0))
            + self._wheel.sizeof()
        )


MutableMapping.register(ConnectionTable)
