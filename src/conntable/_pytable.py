"""The connection table in pure Python: the same algorithm and API as ``_ctable.pyx``.

A dict maps each key's hash to a slotted entry (key, value, last activity,
idle timeout, deadline, wheel links), and the entries of one hash form a
chain in insertion order; the timer wheel in ``_pywheel`` finds due entries
in O(expired).

Keys are any hashable objects, with a dict's semantics, by the compiled
table's algorithm: the dict is only ever indexed by an exact int (a hash),
so no key's ``__eq__`` runs inside a dict operation; a lookup walks the
chain comparing identity, then ``stored == key``. An exact int in
[0, 2**61 - 1) is its own hash and is found with one dict probe and one int
compare. ``==`` may run Python code that changes the table: every
structural change bumps ``_layout``, and a lookup that sees it moved after a
comparison starts again (RuntimeError after ``MAX_RESTARTS``), as dict does. ``touch`` stores ``now`` into the entry and never
relinks it: when the entry's slot comes due, an entry that saw activity is
re-armed at its new due time (lazy re-arm). This is the best registry plain
Python can build, and the package's fallback where the extension is not built.

Python code may run inside any call: a key's ``__index__``, an argument's
``__float__``, another thread at any bytecode, and, whenever an allocation
starts a collection, any garbage object's ``__del__``, which may call back
into this table. The twin keeps the compiled table's guarantees under all
of them with these rules:

* Convert first. Every argument is converted and checked, the key hashed
  (user code may run), before the table is looked at. The lookup may run a
  key's ``__eq__``; from its answer to the last change no user code runs.
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
_FAST_LIMIT = c.FAST_LIMIT
_MAX_RESTARTS = c.MAX_RESTARTS
_U64 = 2**64 - 1


class _Entry:
    # ``fast`` is the key when it is an int of the fast path, else None (so
    # ``entry.fast == key`` never runs user code); ``chain`` is the next
    # entry of the same hash.
    __slots__ = ("key", "hash", "fast", "chain", "value", "last", "idle", "deadline", "prev", "next", "head")

    def __init__(self, key: Any, h: int, value: Any, idle: float, deadline: float) -> None:
        self.key = key
        self.hash = h
        self.fast = key if type(key) is int and 0 <= key < _FAST_LIMIT else None
        self.chain: Optional[_Entry] = None
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


def _hash(key: object) -> int:
    """The key's hash as the index uses it: an int of the fast path is its own (no call)."""
    if type(key) is int and 0 <= key < _FAST_LIMIT:  # type: ignore[operator]
        return key  # type: ignore[return-value]
    return hash(key)


def _entries_of(index: Dict[int, _Entry]) -> Iterator[_Entry]:
    """Every entry of ``index``: its chains in the dict's order (the iteration order)."""
    for entry in index.values():
        while entry is not None:
            yield entry
            entry = entry.chain


class ConnectionTable:
    """Key -> value, with last activity, idle timeout and deadline per entry.

    ConnectionTable(idle_timeout=60.0, *, resolution=0.1, now=None, max_size=None, capacity=0)

    Pure-Python twin of the compiled table; see :mod:`conntable` for the API.
    Keys are any hashable objects, with a dict's semantics.
    ``now=None`` starts the clock at ``time.monotonic()``, read once here.
    """

    __slots__ = (
        "_index", "_count", "_layout", "_wheel", "_now", "_origin", "_resolution", "_idle_timeout",
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
        self._index: Dict[int, _Entry] = {}  # hash -> the first entry of that hash
        self._count = 0
        self._layout = 0  # bumped by every structural change: a lookup that sees it move starts again
        self._wheel = Wheel()
        self._version = 0
        self._peak = 0  # the most buckets since the dict was last rebuilt
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
        index: Dict[int, _Entry] = {}
        wheel = Wheel()
        with self._lock:
            version = self._version + 1
            layout = self._layout + 1
            old_index, old_wheel = self._index, self._wheel
            self._idle_timeout = idle
            self._resolution = res
            self._now = self._origin = start
            self._max_size = size
            self._index = index
            self._count = 0
            self._wheel = wheel
            self._version = version
            self._layout = layout
            self._peak = 0
        _release(old_index, old_wheel)  # a table initialised twice drops its old values last

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
    def _find(self, key: object, h: int) -> Optional[_Entry]:
        """The entry of ``key`` (hashed to ``h``) or None: the compiled table's lookup.

        The chain of ``h`` is walked in insertion order (the compiled table's
        probe order among keys of one hash); an entry whose ``fast`` is the
        key is it, else identity, then ``stored == key`` (which may run user
        code: if the table's layout moved meanwhile, the walk starts again).
        """
        restarts = 0
        while True:
            layout = self._layout
            entry = self._index.get(h)
            while entry is not None:
                stored = entry.key
                if stored is key or (type(key) is int and entry.fast == key):
                    return entry
                equal = True if stored == key else False
                if self._layout != layout:
                    break
                if equal:
                    return entry
                entry = entry.chain
            else:
                return None
            restarts += 1
            if restarts > _MAX_RESTARTS:
                c.refuse_restarts()

    def _probe(self, key: object) -> Optional[_Entry]:
        """The entry of ``key`` or None; hashes it first (TypeError for an unhashable key)."""
        if type(key) is int and 0 <= key < _FAST_LIMIT:  # type: ignore[operator]
            entry = self._index.get(key)  # type: ignore[call-overload]
            if entry is None or entry.fast == key:
                return entry
            return self._find(key, key)  # type: ignore[arg-type]
        return self._find(key, hash(key))

    def _lookup(self, key: object) -> _Entry:
        entry = self._probe(key)
        if entry is None:
            raise KeyError(key)
        return entry

    def _holds(self, entry: _Entry) -> bool:
        """Whether ``entry`` is in the table (identity only: no user code)."""
        node = self._index.get(entry.hash)
        while node is not None:
            if node is entry:
                return True
            node = node.chain
        return False

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        return self._probe(key) is not None

    def __getitem__(self, key: Any) -> Any:
        return self._lookup(key).value

    def get(self, key: Any, default: Any = None, /) -> Any:
        entry = self._probe(key)
        return default if entry is None else entry.value

    def last_activity(self, key: Any, /) -> float:
        """When the entry last saw activity, exactly as ``now`` was then."""
        return self._lookup(key).last

    def due(self, key: Any, /) -> float:
        """``min(last_activity + idle_timeout, deadline)``; ``math.inf`` if never."""
        return self._lookup(key).due()

    def __iter__(self) -> Iterator[Any]:
        """The keys, in an arbitrary order that stays the same while the table is not changed.

        Changing the size meanwhile makes the next step raise RuntimeError;
        after that, or once exhausted, the iterator stays exhausted.
        """
        with self._lock:
            return self._keys_from(self._version, _entries_of(self._index))

    def _keys_from(self, version: int, entries: Iterator[_Entry]) -> Iterator[Any]:
        # A generator, not a class with __next__: CPython can turn a MemoryError
        # in a Python-level __next__ into a SystemError (the allocation-failure
        # tests found it on 3.11 to 3.13); a generator's steps never go that way.
        while True:
            with self._lock:
                if self._version != version:
                    raise RuntimeError("ConnectionTable changed size during iteration")
                entry = next(entries, None)
            if entry is None:
                return
            yield entry.key

    def keys(self) -> KeysView[Any]:
        return KeysView(self)

    def values(self) -> ValuesView[Any]:
        return ValuesView(self)

    def items(self) -> ItemsView[Any, Any]:
        return ItemsView(self)

    # ``reversed(t)`` is a TypeError, as for any Mapping.
    __reversed__ = None

    # -- activity: the hot path -------------------------------------------
    def touch(self, key: Any, /) -> None:
        """Record activity on ``key`` at ``now``. KeyError if absent."""
        entry = self._index.get(key) if type(key) is int else None  # type: ignore[call-overload]
        if entry is None or entry.fast != key:  # a miss, a collision, or not a plain int: the full lookup
            entry = self._lookup(key)
        entry.last = self._now

    def touch_many(self, keys: Iterable[Any], /) -> int:
        """Touch every present key of ``keys``; return how many were present.

        All or nothing: every key is taken from ``keys`` and hashed before any
        is looked up, and every one is looked up before any is touched (so an
        iterable or an ``__eq__`` that changes the table as it goes sees none
        of its keys touched yet, and one that raises leaves none touched).
        """
        batch = list(keys)  # the iterable may run code (and change the table): only collect here
        hashes = [_hash(key) for key in batch]  # ints: no GC-tracked allocation, so no collection starts here
        restarts = 0
        with self._lock:
            while True:
                layout = self._layout
                hits: List[_Entry] = []
                index = self._index
                for key, h in zip(batch, hashes):
                    entry = index.get(h)
                    if entry is not None and not (type(key) is int and entry.fast == key):
                        entry = self._find(key, h)  # anything but an int of the fast path found at once
                        index = self._index
                    if entry is not None:
                        hits.append(entry)
                if self._layout == layout:
                    break
                restarts += 1
                if restarts > _MAX_RESTARTS:
                    c.refuse_restarts()
            now = self._now
            for entry in hits:  # nothing here can fail
                entry.last = now
        return len(hits)

    # -- insertion and removal --------------------------------------------
    def add(
        self,
        key: Any,
        value: Any = None,
        *,
        idle_timeout: Optional[float] = None,
        deadline: Optional[float] = None,
    ) -> None:
        """Insert ``key``; KeyError if present, TableFull if ``len == max_size``."""
        h = _hash(key)
        idle = self._idle_timeout if idle_timeout is None else c.check_timeout("idle_timeout", idle_timeout)
        when = c.check_deadline(deadline)
        entry = _Entry(key, h, value, idle, when)  # may run the collector: before the lookup
        with self._lock:
            if self._find(key, h) is not None:
                c.refuse_present(key)
            self._insert(entry)

    def _insert(self, entry: _Entry) -> None:
        """Insert an entry whose key is absent. Its first change is the only one that may fail."""
        if self._count == self._max_size:
            raise c.TableFull(f"the table holds max_size={self._max_size} entries")
        entry.last = self._now
        tick = self._tick_for(entry.due())
        wheel = self._wheel
        head = wheel.head_of(tick)
        version = self._version + 1
        layout = self._layout + 1
        count = self._count + 1
        index = self._index
        size = len(index) + 1
        peak = size if size > self._peak else self._peak
        entry.chain = None
        last = index.get(entry.hash)
        if last is None:
            index[entry.hash] = entry  # the first change: the only one that may fail
        else:
            while last.chain is not None:
                last = last.chain
            last.chain = entry
        wheel.place(entry, head, tick)
        self._count = count
        self._version = version
        self._layout = layout
        self._peak = peak

    def _unplace(self, entry: _Entry) -> None:
        """Take ``entry`` (in the table, unlinked from the wheel) out of its chain. Cannot fail."""
        index = self._index
        first = index[entry.hash]
        if first is entry:
            if entry.chain is None:
                del index[entry.hash]
            else:
                index[entry.hash] = entry.chain  # replaces a present key's value: cannot fail
        else:
            while first.chain is not entry:
                first = first.chain
            first.chain = entry.chain

    def __setitem__(self, key: Any, value: Any) -> None:
        h = _hash(key)
        fresh = _Entry(key, h, value, self._idle_timeout, math.inf)  # may run the collector: before the lookup
        old = None
        with self._lock:
            entry = self._find(key, h)
            if entry is None:
                self._insert(fresh)
            else:
                old = entry.value
                entry.value = value
        del old  # the old value's __del__ runs with the table consistent and unlocked

    def _take(self, entry: _Entry) -> None:
        """Remove ``entry`` (found with the lock held, no user code since); the caller drops it (and its value) last."""
        version = self._version + 1
        layout = self._layout + 1
        count = self._count - 1
        unlink(entry)
        self._unplace(entry)
        self._count = count
        self._version = version
        self._layout = layout
        self._maybe_shrink()

    def _maybe_shrink(self) -> None:
        """A dict never gives memory back on deletion: rebuild it once 7/8 of its peak is gone.

        Best effort, after the operation is complete: out of memory, the dict stays.
        """
        index = self._index
        try:
            if not (len(index) * 8 < self._peak and self._peak > 64):
                return
            rebuilt = dict(index)  # may run the collector, which may replace the dict meanwhile
            peak = len(rebuilt)
            layout = self._layout + 1
        except MemoryError:
            return
        if self._index is index:
            self._index = rebuilt
            self._peak = peak
            self._layout = layout

    def __delitem__(self, key: Any) -> None:
        h = _hash(key)
        with self._lock:
            entry = self._find(key, h)
            if entry is not None:
                self._take(entry)
        if entry is None:
            raise KeyError(key)

    def pop(self, key: Any, default: Any = _MISSING, /) -> Any:
        """Remove ``key`` and return its value; ``default`` (or KeyError) if absent."""
        h = _hash(key)
        with self._lock:
            entry = self._find(key, h)
            if entry is not None:
                self._take(entry)
        if entry is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        return entry.value

    def setdefault(self, key: Any, default: Any = None, /) -> Any:
        """``t[key]`` if present, else insert ``default`` (the table's timers) and return it."""
        h = _hash(key)
        fresh = _Entry(key, h, default, self._idle_timeout, math.inf)  # may run the collector: before the lookup
        with self._lock:
            entry = self._find(key, h)
            if entry is None:
                self._insert(fresh)
                return default
            return entry.value

    def popitem(self) -> Any:
        """Remove and return a ``(key, value)`` pair: the first in iteration order. KeyError if empty."""
        with self._lock:
            while True:
                first = next(iter(self._index.values()), None)  # may run the collector
                if first is None:
                    raise KeyError(c.POPITEM_EMPTY)
                pair = (first.key, first.value)  # before the entry goes: may run the collector
                if next(iter(self._index.values()), None) is first and first.value is pair[1]:
                    break  # still the first entry and its value: else look again
            self._take(first)
        return pair

    def update(self, other: Any = (), /, **kwds: Any) -> None:
        """Store each pair of ``other`` (a mapping or pairs) and ``kwds``, as ``MutableMapping.update``.

        All or nothing, by the compiled table's plan: every pair is collected
        and every key hashed first, then every key is located (and the new
        ones compared among themselves, by hash, then in pair order) with no
        change made, starting again if the table's layout moved meanwhile;
        then every store is made (the first insertion's dict store is the
        only step that can fail: undone if it does). The values replaced
        are released last.
        """
        pairs = c.update_items(other, kwds)
        hashes = [_hash(key) for key, _ in pairs]
        fresh = [_Entry(key, h, value, self._idle_timeout, math.inf) for (key, value), h in zip(pairs, hashes)]
        undo: List[Any] = []  # (entry, old value or _INSERTED) per store, flat, recorded before it
        with self._lock:
            plan, new = self._plan_update(pairs, hashes)
            if self._max_size >= 0 and self._count + new > self._max_size:
                raise c.TableFull(f"the table holds max_size={self._max_size} entries")
            try:
                for j in range(len(plan)):
                    where = plan[j]
                    if where is None:
                        undo.append(fresh[j])
                        undo.append(_INSERTED)
                        self._insert(fresh[j])
                        plan[j] = fresh[j]
                    else:
                        if type(where) is int:
                            where = plan[where]  # the entry inserted for an earlier equal key
                        undo.append(where)
                        undo.append(where.value)
                        where.value = pairs[j][1]
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
            if not self._holds(entry):
                continue  # never inserted (its store failed), or gone meanwhile
            if old is _INSERTED:
                version = self._version + 1
                layout = self._layout + 1
                count = self._count - 1
                unlink(entry)
                self._unplace(entry)
                self._count = count
                self._version = version
                self._layout = layout
            else:
                entry.value = old

    def _plan_update(self, pairs: List[Any], hashes: List[int]) -> Any:
        """For each pair: its present entry, None (a new key) or the index of the earlier new pair it equals.

        Returns the plan and how many keys are new. The same comparisons, in
        the same order, as the compiled table's ``_plan_update``.
        """
        restarts = 0
        while True:
            layout = self._layout
            plan: List[Any] = [self._find(key, h) for (key, _), h in zip(pairs, hashes)]
            runs: Dict[int, List[int]] = {}
            for j, where in enumerate(plan):
                if where is None:
                    runs.setdefault(hashes[j] & _U64, []).append(j)
            for h in sorted(runs):
                run = runs[h]
                firsts: List[int] = []
                for m in run:
                    key = pairs[m][0]
                    fast = type(key) is int and 0 <= key < _FAST_LIMIT
                    for e in firsts:
                        earlier = pairs[e][0]
                        if fast and type(earlier) is int and 0 <= earlier < _FAST_LIMIT:
                            equal = True  # two ints of one hash on the fast path are one int
                        else:
                            equal = True if earlier == key else False
                        if equal:
                            plan[m] = e
                            break
                    else:
                        firsts.append(m)
            if self._layout == layout:
                break
            restarts += 1
            if restarts > _MAX_RESTARTS:
                c.refuse_restarts()
        return plan, plan.count(None)  # (not a generator: CPython 3.12 can crash making one out of memory)

    def clear(self) -> None:
        """Remove every entry; the values are released after the table is empty."""
        index: Dict[int, _Entry] = {}
        wheel = Wheel()
        with self._lock:
            wheel.elapsed = self._wheel.elapsed
            version = self._version + 1
            layout = self._layout + 1
            old_index, old_wheel = self._index, self._wheel
            self._index = index
            self._count = 0
            self._wheel = wheel
            self._version = version
            self._layout = layout
            self._peak = 0
        _release(old_index, old_wheel)

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
            for entry in _entries_of(self._index):
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
        index = clone._index
        for i in range(0, len(fields), 5):
            old, value, last, idle, deadline = fields[i:i + 5]
            entry = _Entry(old.key, old.hash, value, idle, deadline)
            entry.last = last
            first = index.get(old.hash)  # the chains in the same order
            if first is None:
                index[old.hash] = entry
            else:
                while first.chain is not None:
                    first = first.chain
                first.chain = entry
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
        clone._count = len(fields) // 5
        clone._peak = len(index)
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
        h = _hash(key)
        self._retime(key, h, None, c.check_deadline(when))

    def set_idle_timeout(self, key: int, seconds: Optional[float], /) -> None:
        """Set the entry's own idle timeout; ``None`` restores the table's default."""
        h = _hash(key)
        idle = self._idle_timeout if seconds is None else c.check_timeout("idle_timeout", seconds)
        self._retime(key, h, idle, None)

    def _retime(self, key: Any, h: int, idle: Optional[float], deadline: Optional[float]) -> None:
        """Give the entry of ``key`` (hashed to ``h``) a new idle timeout or deadline (None: keep its own) and re-arm it.

        On Python 3.12+ a pending collection runs at the next call, not at
        the allocation that asked for it, so a ``__del__`` may call into this
        table at any call below and remove, replace or retime the entry, move
        the clock or reinitialise the table. The plan is therefore made, then
        checked with no call between the check and the first change (a
        comparison or an attribute load runs no Python code), and remade if
        anything it was made from changed.
        """
        with self._lock:
            entry = self._find(key, h)  # the one lookup (it may run the key's __eq__)
            while True:
                if entry is None or not self._holds(entry):
                    entry = self._find(key, h)  # taken out meanwhile: look again
                if entry is None:
                    raise KeyError(key)
                last, old_idle, old_deadline = entry.last, entry.idle, entry.deadline
                wheel, now, elapsed = self._wheel, self._now, self._wheel.elapsed
                new_idle = old_idle if idle is None else idle
                new_deadline = old_deadline if deadline is None else deadline
                idle_due = last + new_idle
                tick = self._tick_for(idle_due if idle_due < new_deadline else new_deadline)
                head = wheel.head_of(tick)
                if (self._holds(entry) and self._wheel is wheel
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
                    now = self._now  # a __del__'s expire may have moved the clock on
                    for e in due:  # each still harvested, still in the table, still due?
                        if e.head is not harvest or not self._holds(e) or (
                                e.deadline > now and e.last + e.idle > now):
                            break
                    else:
                        break
                    due = [e for e in due if e.head is harvest and self._holds(e) and e.due() <= now]
                    whole = False
                version = self._version + 1
                layout = self._layout + 1
                count = self._count - len(due)
                if whole:  # the harvest holds exactly ``due``: drop the list as a whole
                    for e in due:  # commit: nothing here can fail (once the loop has begun)
                        e.prev = e.next = e.head = None
                        self._unplace(e)
                    harvest.prev = harvest.next = harvest
                else:
                    for e in due:
                        unlink(e)
                        self._unplace(e)
                if due:
                    self._count = count
                    self._version = version
                    self._layout = layout
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
        pending = self._wheel.pending  # a __del__ may have cleared the table: the current wheel
        node = harvest.next
        while node is not harvest:
            after = node.next
            unlink(node)
            if self._holds(node):
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
    def __eq__(self, other: object) -> Any:
        """Equal to any Mapping with the same keys and equal values, as a dict is."""
        return c.mapping_eq(self, other)

    def __ne__(self, other: object) -> Any:
        equal = c.mapping_eq(self, other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # a mutable mapping, like dict

    def __repr__(self) -> str:
        return c.table_repr(self)

    def __sizeof__(self) -> int:
        index = self._index
        return (
            object.__sizeof__(self)
            + sys.getsizeof(index)
            + self._count * sys.getsizeof(_Entry(0, 0, None, 0.0, 0.0))
            + self._wheel.sizeof()
        )


MutableMapping.register(ConnectionTable)
