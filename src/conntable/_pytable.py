"""The connection table in pure Python: the same algorithm and API as ``_ctable.pyx``.

A dict maps each connection id to a slotted entry (value, last activity,
idle timeout, deadline, wheel links); the timer wheel in ``_pywheel`` finds
due entries in O(expired). ``touch`` stores ``now`` into the entry and never
relinks it: when the entry's slot comes due, an entry that saw activity is
re-armed at its new due time (lazy re-arm). This is the best registry plain
Python can build, and the package's fallback where the extension is not built.

Python code may run inside any call: a key's ``__index__``, an argument's
``__float__``, another thread at any bytecode, and, whenever an allocation
starts a collection, any garbage object's ``__del__``, which may call back
into this table. The twin keeps the compiled table's guarantees under all
of them with these rules:

* Convert first. Every argument is converted and checked (user code may
  run) before the table is looked at.
* One lock. Each call that reads more than one field, or changes anything,
  holds the table's re-entrant lock from the lookup to the last change, so
  other threads never see a change halfway. ``touch`` needs none (a lookup
  and one store). The lock is re-entrant because the collector may run a
  ``__del__`` that calls back into the table from inside a call; the next
  rules make that harmless.
* Nothing between the first and the last change of a mutation allocates a
  GC-tracked object (no collection, hence no ``__del__``, can start there),
  calls user code, or releases a value (values are released after the lock).
* The first change of a mutation is its only step that can fail
  (MemoryError): everything else it needs (ticks, list heads, version
  numbers) is computed before, and the changes after it are attribute and
  bytearray stores, which cannot fail. Every operation is all or nothing.
* What had to allocate with the table half-way (``expire`` builds its result
  while the due entries sit in its harvest list; ``__setitem__`` creates the
  entry it may need) is revalidated after the allocation: a ``__del__`` may
  have removed, touched or re-added an entry, moved the clock, or cleared
  the table meanwhile.

Python-level signal handlers that call into the table are not covered: the
interpreter may run them between any two bytecodes, inside the lock.

The wheel's lists are reference cycles. ``clear()`` and a second
``__init__`` cut them, so the values go at once, as the compiled table's
do; a table that is simply dropped leaves them to the next garbage
collection (a ``__del__`` that cut them would run Python code inside
deallocations, where CPython 3.11 can lose an exception under memory
pressure: the allocation-failure tests found it).
"""

from __future__ import annotations

import functools
import math
import sys
import threading
from collections.abc import ItemsView, KeysView, MutableMapping, ValuesView
from typing import Any, Dict, Iterable, Iterator, List, Optional

from . import _common as c
from ._pywheel import DUE_NOW, HARVEST, NO_TICK, Head, Wheel, link, unlink

_MISSING = object()
_expired = functools.partial(tuple.__new__, c.Expired)  # Expired((key, value, reason)), without its __new__
_INSERTED = object()  # an update's undo record: the store was an insertion
_MAX_KEY = c.MAX_KEY


class _Entry:
    __slots__ = ("key", "value", "last", "idle", "deadline", "prev", "next", "head")

    def __init__(self, key: int, value: Any, idle: float, deadline: float) -> None:
        self.key = key
        self.value = value
        self.last = 0.0
        self.idle = idle
        self.deadline = deadline
        self.prev: Any = None
        self.next: Any = None
        self.head: Optional[Head] = None

    def due(self) -> float:
        idle_due = self.last + self.idle
        return idle_due if idle_due < self.deadline else self.deadline


def _release(entries: Dict[int, _Entry], wheel: Wheel) -> None:
    """Let go of storage no table uses any more: the lists' cycles first, then the values.

    After the operation is complete, so it must not fail: out of memory, the
    cycles are left to the garbage collector.
    """
    try:
        wheel.cut()
    except MemoryError:
        pass
    entries.clear()  # allocates nothing; each value's __del__ may call back: the table is consistent


def _key(key: object) -> int:
    """``key`` as an exact int in range (the cheap test first)."""
    if type(key) is int and 0 <= key <= _MAX_KEY:  # type: ignore[operator]
        return key  # type: ignore[return-value]
    return c.check_key(key)


class ConnectionTable:
    """Connection id -> value, with last activity, idle timeout and deadline per entry.

    ConnectionTable(idle_timeout=60.0, *, resolution=0.1, now=None, max_size=None, capacity=0)

    Pure-Python twin of the compiled table; see :mod:`conntable` for the API.
    ``now=None`` starts the clock at ``time.monotonic()``, read once here.
    """

    __slots__ = (
        "_entries", "_wheel", "_now", "_origin", "_resolution", "_idle_timeout",
        "_max_size", "_version", "_peak", "_lock", "__weakref__",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # The compiled class is final; so is this one.
        raise TypeError(f"type '{__name__}.ConnectionTable' is not an acceptable base type")

    def __new__(cls, *args: Any, **kwargs: Any) -> "ConnectionTable":
        # Usable even if __init__ is skipped or fails: the defaults of ConnectionTable().
        self = object.__new__(cls)
        now = c.check_start(None)
        try:
            self._lock = threading.RLock()
        except RuntimeError as error:  # "can't allocate lock": CPython's word for out of memory here
            raise MemoryError(str(error)) from None
        self._idle_timeout = 60.0
        self._resolution = 0.1
        self._now = self._origin = now
        self._max_size = -1
        self._entries: Dict[int, _Entry] = {}
        self._wheel = Wheel()
        self._version = 0
        self._peak = 0  # the most entries since the dict was last rebuilt
        return self

    def __init__(
        self,
        idle_timeout: float = 60.0,
        *,
        resolution: float = 0.1,
        now: Optional[float] = None,
        max_size: Optional[int] = None,
        capacity: int = 0,
    ) -> None:
        # Every argument is checked before anything changes: a failed __init__ changes nothing.
        idle = c.check_timeout("idle_timeout", idle_timeout)
        res = c.check_resolution(resolution)
        start = c.check_start(now)
        size = c.check_max_size(max_size)
        c.check_size("capacity", capacity, minimum=0)  # a dict needs no presizing
        entries: Dict[int, _Entry] = {}
        wheel = Wheel()
        with self._lock:
            version = self._version + 1
            old_entries, old_wheel = self._entries, self._wheel
            self._idle_timeout = idle
            self._resolution = res
            self._now = self._origin = start
            self._max_size = size
            self._entries = entries
            self._wheel = wheel
            self._version = version
            self._peak = 0
        _release(old_entries, old_wheel)  # a table initialised twice drops its old values last

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

        Only an exact int goes to the dict as given: anything else is made an
        exact int first, so a key's own ``__hash__`` and ``__eq__`` never run.
        """
        if type(key) is int:
            entry = self._entries.get(key)  # type: ignore[call-overload]
            if entry is not None:
                return entry
        return self._entries.get(c.check_key(key))

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
        """The keys, in an arbitrary order that stays the same while the table is not changed.

        Changing the size meanwhile makes the next step raise RuntimeError;
        after that, or once exhausted, the iterator stays exhausted.
        """
        with self._lock:
            return self._keys_from(self._version, iter(self._entries))

    def _keys_from(self, version: int, keys: Iterator[int]) -> Iterator[int]:
        # A generator, not a class with __next__: CPython can turn a MemoryError
        # in a Python-level __next__ into a SystemError (the allocation-failure
        # tests found it on 3.11 to 3.13); a generator's steps never go that way.
        while True:
            with self._lock:
                if self._version != version:
                    raise RuntimeError("ConnectionTable changed size during iteration")
                key = next(keys, _MISSING)
            if key is _MISSING:
                return
            yield key

    def keys(self) -> KeysView[int]:
        return KeysView(self)  # type: ignore[arg-type]

    def values(self) -> ValuesView[Any]:
        return ValuesView(self)  # type: ignore[arg-type]

    def items(self) -> ItemsView[int, Any]:
        return ItemsView(self)  # type: ignore[arg-type]

    # ``reversed(t)`` is a TypeError, as for any Mapping.
    __reversed__ = None

    # -- activity: the hot path -------------------------------------------
    def touch(self, key: int, /) -> None:
        """Record activity on ``key`` at ``now``. KeyError if absent."""
        entry = self._entries.get(key) if type(key) is int else None  # type: ignore[call-overload]
        if entry is None:  # a miss, or not a plain int: the full check
            entry = self._lookup(key)
        entry.last = self._now

    def touch_many(self, keys: Iterable[int], /) -> int:
        """Touch every present key of ``keys``; return how many were present.

        All or nothing: every key is taken from ``keys`` and checked before
        any is touched (so an iterable that changes the table as it goes
        sees none of its keys touched yet).
        """
        batch = [_key(key) for key in keys]
        hits: List[_Entry] = []
        with self._lock:
            entries = self._entries
            for key in batch:
                entry = entries.get(key)
                if entry is not None:
                    hits.append(entry)
            now = self._now
            for entry in hits:  # nothing here can fail
                entry.last = now
        return len(hits)

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
        key = _key(key)
        idle = self._idle_timeout if idle_timeout is None else c.check_timeout("idle_timeout", idle_timeout)
        when = c.check_deadline(deadline)
        entry = _Entry(key, value, idle, when)  # may run the collector: before the lookup
        with self._lock:
            if key in self._entries:
                raise KeyError(f"connection {key} is already in the table")
            self._insert(entry)

    def _insert(self, entry: _Entry) -> None:
        """Insert an entry whose key is absent. The dict store is the first change, and the only one that may fail."""
        entries = self._entries
        if len(entries) == self._max_size:
            raise c.TableFull(f"the table holds max_size={self._max_size} entries")
        entry.last = self._now
        tick = self._tick_for(entry.due())
        wheel = self._wheel
        head = wheel.head_of(tick)
        version = self._version + 1
        size = len(entries) + 1
        peak = size if size > self._peak else self._peak
        entries[entry.key] = entry
        wheel.place(entry, head, tick)
        self._version = version
        self._peak = peak

    def __setitem__(self, key: int, value: Any) -> None:
        key = _key(key)
        old = None
        with self._lock:
            entry = self._entry_or_insert(key, value)
            if entry is not None:
                old = entry.value
                entry.value = value
        del old  # the old value's __del__ runs with the table consistent and unlocked

    def _entry_or_insert(self, key: int, value: Any, undo: Optional[List[Any]] = None) -> Optional[_Entry]:
        """The entry of ``key``; if absent, insert ``value`` (the table's timers) and return None.

        With the lock held. An insertion is recorded in ``undo`` (if given)
        before it happens.
        """
        entry = self._entries.get(key)
        if entry is None:
            fresh = _Entry(key, value, self._idle_timeout, math.inf)  # may run the collector
            entry = self._entries.get(key)  # which may have added the key meanwhile
            if entry is None:
                if undo is not None:
                    undo.append(fresh)
                    undo.append(_INSERTED)
                self._insert(fresh)
        return entry

    def _take(self, key: int) -> Optional[_Entry]:
        """Remove the entry of ``key`` (None if absent); the caller drops it (and its value) last."""
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            return None
        version = self._version + 1
        unlink(entry)
        del entries[key]
        self._version = version
        self._maybe_shrink()
        return entry

    def _maybe_shrink(self) -> None:
        """A dict never gives memory back on deletion: rebuild it once 7/8 of its peak is gone.

        Best effort, after the operation is complete: out of memory, the dict stays.
        """
        entries = self._entries
        try:
            if not (len(entries) * 8 < self._peak and self._peak > 64):
                return
            rebuilt = dict(entries)  # may run the collector, which may replace the dict meanwhile
            peak = len(rebuilt)
        except MemoryError:
            return
        if self._entries is entries:
            self._entries = rebuilt
            self._peak = peak

    def __delitem__(self, key: int) -> None:
        k = _key(key)
        with self._lock:
            entry = self._take(k)
        if entry is None:
            raise KeyError(key)

    def pop(self, key: int, default: Any = _MISSING, /) -> Any:
        """Remove ``key`` and return its value; ``default`` (or KeyError) if absent."""
        k = _key(key)
        with self._lock:
            entry = self._take(k)
        if entry is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return entry.value

    def setdefault(self, key: int, default: Any = None, /) -> Any:
        """``t[key]`` if present, else insert ``default`` (the table's timers) and return it."""
        key = _key(key)
        with self._lock:
            entry = self._entry_or_insert(key, default)
            return default if entry is None else entry.value

    def popitem(self) -> Any:
        """Remove and return a ``(key, value)`` pair: the first in iteration order. KeyError if empty."""
        with self._lock:
            while True:
                entries = self._entries
                key = next(iter(entries), _MISSING)  # may run the collector
                if key is _MISSING:
                    raise KeyError(c.POPITEM_EMPTY)
                entry = entries[key]
                pair = (key, entry.value)  # before the entry goes: may run the collector
                if self._entries.get(key) is entry and entry.value is pair[1]:
                    break  # still the first key and its value: else look again
            self._take(key)
        return pair

    def update(self, other: Any = (), /, **kwds: Any) -> None:
        """Store each pair of ``other`` (a mapping or pairs) and ``kwds``, as ``MutableMapping.update``.

        All or nothing: every pair is collected and every key checked first;
        if a store fails (MemoryError, TableFull), the ones before it are
        undone. The values replaced are released last.
        """
        pairs = [(_key(key), value) for key, value in c.update_items(other, kwds)]
        undo: List[Any] = []  # (entry, old value or _INSERTED) per store, flat
        with self._lock:
            try:
                for key, value in pairs:
                    entry = self._entry_or_insert(key, value, undo)
                    if entry is not None:
                        undo.append(entry)
                        undo.append(entry.value)
                        entry.value = value
            except BaseException:
                self._undo(undo)
                raise
        del undo  # the replaced values go last, the table unlocked

    def _undo(self, undo: List[Any]) -> None:
        """Take back the stores of a failed update, last first (list.pop from the end allocates nothing)."""
        if len(undo) % 2:
            undo.pop()  # a record whose store never happened
        while undo:
            old = undo.pop()
            entry = undo.pop()
            if self._entries.get(entry.key) is not entry:
                continue  # gone meanwhile (a __del__ called back): nothing to undo
            if old is _INSERTED:
                version = self._version + 1
                unlink(entry)
                del self._entries[entry.key]
                self._version = version
            else:
                entry.value = old

    def clear(self) -> None:
        """Remove every entry; the values are released after the table is empty."""
        entries: Dict[int, _Entry] = {}
        wheel = Wheel()
        with self._lock:
            wheel.elapsed = self._wheel.elapsed
            version = self._version + 1
            old_entries, old_wheel = self._entries, self._wheel
            self._entries = entries
            self._wheel = wheel
            self._version = version
            self._peak = 0
        _release(old_entries, old_wheel)

    # -- copies --------------------------------------------------------------
    def copy(self) -> "ConnectionTable":
        """A new, independent table with the same entries, timers, settings and clock.

        The copy is exact (its wheel is laid out as this table's is), so the
        two expire the same entries at the same calls from then on.
        """
        clone = ConnectionTable.__new__(ConnectionTable)
        fields: List[Any] = []  # a snapshot taken without allocating a GC-tracked object
        order: List[Any] = []
        bounds: List[int] = []
        with self._lock:
            for entry in self._entries.values():
                fields.append(entry)
                fields.append(entry.value)
                fields.append(entry.last)
                fields.append(entry.idle)
                fields.append(entry.deadline)
            wheel = self._wheel
            for head in wheel.heads:
                order.append(head)
                bounds.append(head.earliest)
                node = head.next
                while node is not head:
                    order.append(node)
                    node = node.next
            order.append(wheel.pending)
            node = wheel.pending.next
            while node is not wheel.pending:
                order.append(node)
                node = node.next
            settings = (self._idle_timeout, self._resolution, self._now, self._origin,
                        self._max_size, wheel.elapsed)
        # Build the copy from the snapshot; only the copy changes from here.
        twins: Dict[_Entry, _Entry] = {}
        entries = clone._entries
        for i in range(0, len(fields), 5):
            old, value, last, idle, deadline = fields[i:i + 5]
            entry = _Entry(old.key, value, idle, deadline)
            entry.last = last
            entries[old.key] = entry
            twins[old] = entry
        (clone._idle_timeout, clone._resolution, clone._now, clone._origin,
         clone._max_size, clone._wheel.elapsed) = settings
        heads = {old: new for old, new in zip(wheel.heads, clone._wheel.heads)}
        heads[wheel.pending] = clone._wheel.pending
        for new, earliest in zip(clone._wheel.heads, bounds):
            new.earliest = earliest
        current = None
        for node in order:
            if type(node) is Head:
                current = heads[node]
            elif node in twins:
                link(twins.pop(node), current)
        for entry in twins.values():  # in no wheel list: in an expire() further up the stack, or never due
            if entry.due() != math.inf:
                link(entry, clone._wheel.pending)
        clone._peak = len(entries)
        return clone

    def __copy__(self) -> "ConnectionTable":
        return self.copy()

    def __deepcopy__(self, memo: dict, /) -> "ConnectionTable":
        return c.deepcopy_table(self, memo)

    def __reduce_ex__(self, protocol: object, /) -> Any:
        return c.refuse_pickle(self)

    def __reduce__(self) -> Any:
        return c.refuse_pickle(self)

    # -- timers ------------------------------------------------------------
    def set_deadline(self, key: int, when: Optional[float], /) -> None:
        """Set an absolute deadline on the table's clock; ``None`` clears it."""
        k = _key(key)
        self._retime(key, k, None, c.check_deadline(when))

    def set_idle_timeout(self, key: int, seconds: Optional[float], /) -> None:
        """Set the entry's own idle timeout; ``None`` restores the table's default."""
        k = _key(key)
        idle = self._idle_timeout if seconds is None else c.check_timeout("idle_timeout", seconds)
        self._retime(key, k, idle, None)

    def _retime(self, key: Any, k: int, idle: Optional[float], deadline: Optional[float]) -> None:
        """Give entry ``k`` a new idle timeout or deadline (None: keep its own) and re-arm it.

        On Python 3.12+ a pending collection runs at the next call, not at
        the allocation that asked for it, so a ``__del__`` may call into this
        table at any call below and remove, replace or retime the entry, move
        the clock or reinitialise the table. The plan is therefore made, then
        checked with no call between the check and the first change (a
        comparison or an attribute load runs no Python code), and remade if
        anything it was made from changed.
        """
        with self._lock:
            while True:
                entry = self._entries.get(k)
                if entry is None:
                    raise KeyError(key)
                last, old_idle, old_deadline = entry.last, entry.idle, entry.deadline
                wheel, now, elapsed = self._wheel, self._now, self._wheel.elapsed
                new_idle = old_idle if idle is None else idle
                new_deadline = old_deadline if deadline is None else deadline
                idle_due = last + new_idle
                tick = self._tick_for(idle_due if idle_due < new_deadline else new_deadline)
                head = wheel.head_of(tick)
                if (k in self._entries and self._entries[k] is entry and self._wheel is wheel
                        and entry.last == last and entry.idle == old_idle and entry.deadline == old_deadline
                        and self._now == now and wheel.elapsed == elapsed):
                    break
            entry.idle = new_idle  # the first change: nothing after it can fail
            entry.deadline = new_deadline
            wheel.place(entry, head, tick)

    def _tick_for(self, due: float) -> int:
        """Where an entry due at ``due`` is armed: a tick, ``DUE_NOW`` or ``NO_TICK``."""
        if due == math.inf:
            return NO_TICK
        if due <= self._now:
            return DUE_NOW
        return max(c.ceil_tick(due, self._origin, self._resolution), self._wheel.elapsed + 1)

    def expire(self, now: float, limit: Optional[int] = None) -> List[c.Expired]:
        """Advance the clock to ``now``; remove and return the entries that are due.

        At most ``limit`` entries are returned; the rest come back on the next
        call. ``limit=0`` only advances the clock. Under MemoryError no entry
        is removed (the clock may have moved to ``now``).
        """
        now = c.check_time("now", now)
        cap = c.check_limit(limit)
        harvest = Head(HARVEST)
        due: List[_Entry] = []
        with self._lock:
            if not c.time_in_range(now, self._now, self._origin, self._resolution):
                c.refuse_time(now, self._now, self._origin, self._resolution)
            self._now = now
            whole = True  # every harvested entry is still to be returned
            try:
                self._harvest(harvest, due, cap)
                while True:
                    # GC-tracked allocations: a __del__ may call back and change what was harvested.
                    expired = [_expired((e.key, e.value, "deadline" if e.deadline <= e.last + e.idle else "idle"))
                               for e in due]
                    entries = self._entries
                    now = self._now  # a __del__'s expire may have moved the clock on
                    for e in due:  # each still harvested, still in the table, still due?
                        if e.head is not harvest or entries.get(e.key) is not e or (
                                e.deadline > now and e.last + e.idle > now):
                            break
                    else:
                        break
                    due = [e for e in due if e.head is harvest and entries.get(e.key) is e and e.due() <= now]
                    whole = False
                version = self._version + 1
                if whole:  # the harvest holds exactly ``due``: drop the list as a whole
                    for e in due:  # commit: nothing here can fail (once the loop has begun)
                        e.prev = e.next = e.head = None
                        del entries[e.key]
                    harvest.prev = harvest.next = harvest
                else:
                    for e in due:
                        unlink(e)
                        del entries[e.key]
                if due:
                    self._version = version
            finally:
                self._give_back(harvest)
            self._maybe_shrink()
        return expired

    def _harvest(self, harvest: Head, due: List[_Entry], cap: int) -> None:
        """Move the due entries (at most ``cap``) from the wheel to ``harvest``, and list them in ``due``.

        Allocates no GC-tracked object. The entries stay in the dict until
        the result is built.
        """
        wheel = self._wheel
        pending = wheel.pending
        now = self._now
        target = c.floor_tick(now, self._origin, self._resolution)
        while True:
            while pending.prev is not pending and len(due) != cap:
                entry = pending.prev
                when = entry.last + entry.idle  # entry.due(), inlined: this loop is the mass expiry
                if entry.deadline < when:
                    when = entry.deadline
                if when > now:
                    tick = self._tick_for(when)
                    wheel.place(entry, wheel.head_of(tick), tick)
                    continue
                due.append(entry)  # if this fails, the entry is still pending
                # unlink(entry) from the tail of PENDING, then put it first in the harvest
                # (which so keeps the order the entries had), inlined: this loop is the mass expiry.
                before = entry.prev
                before.next = pending
                pending.prev = before
                first = harvest.next
                first.prev = entry
                entry.next = first
                entry.prev = harvest
                entry.head = harvest
                harvest.next = entry
            if len(due) == cap:
                break
            head = wheel.next_slot()
            if head is None or wheel.found_start > target:
                if target > wheel.elapsed:
                    wheel.elapsed = target
                break
            wheel.elapsed = wheel.found_start
            wheel.take(head)

    def _give_back(self, harvest: Head) -> None:
        """What is left in ``harvest`` goes back to PENDING, in its order; what left the table meanwhile is dropped."""
        entries = self._entries
        pending = self._wheel.pending  # a __del__ may have cleared the table: the current wheel
        node = harvest.next
        while node is not harvest:
            after = node.next
            unlink(node)
            if entries.get(node.key) is node:
                link(node, pending)
            node = after
        harvest.prev = harvest.next = None

    def next_expiry(self) -> Optional[float]:
        """When to call :meth:`expire` next; None if nothing can ever expire.

        ``now`` when work is waiting at the current time; otherwise the first
        time at which ``expire`` reaches the earliest armed tick, so a loop
        sleeping until it never spins (the compiled table computes the same float).
        """
        with self._lock:
            wheel = self._wheel
            if wheel.pending.next is not wheel.pending:
                return self._now
            head = wheel.next_slot()
            if head is None:
                return None
            return c.next_expiry(self._now, head.earliest, self._origin, self._resolution)

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
            + len(entries) * sys.getsizeof(_Entry(0, None, 0.0, 0.0))
            + self._wheel.sizeof()
        )


MutableMapping.register(ConnectionTable)
