# cython: language_level=3, binding=False, auto_pickle=False
"""The compiled connection table (see ``conntable`` for the API).

Three structures, each in its own ``.pxd`` with its invariant: the slab
(``_slab``: one 32-byte C entry per connection, stable indices), the index
(``_index``: open addressing over 32-bit slab indices) and the timer wheel
(``_wheel``: 32-bit intrusive links, one occupancy mask per level). Values
live in a Python list indexed like the slab, so the garbage collector sees
them through Cython's generated ``tp_traverse``.

Re-entrancy rule: a value is only ever released (its ``__del__`` may run and
call back into the table) after the table is consistent again, and nothing
between the first and last change of a mutation allocates a GC-tracked
object, because on CPython 3.11 such an allocation may run a collection.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject, PyTypeObject
from libc.math cimport INFINITY, ceil, floor, nextafter
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc

from conntable._index cimport (
    Index,
    index_alloc,
    index_find,
    index_free,
    index_insert,
    index_remove,
)
from conntable._slab cimport (
    FREE_BIT,
    NIL,
    Entry,
    entry_due,
    entry_is_free,
    slab_pop_free,
    slab_push_free,
    slab_thread_free,
)
from conntable._wheel cimport (
    NHEADS,
    PENDING,
    Wheel,
    wheel_head_for,
    wheel_link,
    wheel_move_node,
    wheel_next_slot,
    wheel_pop_pending,
    wheel_reset,
    wheel_resize,
    wheel_take,
    wheel_unlink,
)

from collections.abc import ItemsView, KeysView, MutableMapping, ValuesView

from conntable import _common as c

cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    bint PyFloat_CheckExact(object o)
    double PyFloat_AS_DOUBLE(object o)
    # Errors are checked by the caller (the result is > MAX_KEY).
    unsigned long long long_as_u64 "PyLong_AsUnsignedLongLong"(object o) noexcept
    void PyErr_Clear() noexcept
    int PyList_Append(object lst, object item) except -1
    int PyList_SetSlice(object lst, Py_ssize_t low, Py_ssize_t high, PyObject *items) noexcept
    Py_ssize_t PyList_GET_SIZE(object lst)
    PyObject *list_item "PyList_GET_ITEM"(object lst, Py_ssize_t i)
    void list_set_raw "PyList_SET_ITEM"(object lst, Py_ssize_t i, PyObject *item)

cdef extern from *:
    """
    /* A tuple of a tuple subclass (the Expired named tuple), built without a
       call into Python. Steals ``value`` on success only. */
    static PyObject *ct_expired_new(PyTypeObject *tp, PyObject *key,
                                    PyObject *value, PyObject *reason) {
        PyObject *t = tp->tp_alloc(tp, 3);
        if (t == NULL) return NULL;
        Py_INCREF(key);
        Py_INCREF(reason);
        PyTuple_SET_ITEM(t, 0, key);
        PyTuple_SET_ITEM(t, 1, value);
        PyTuple_SET_ITEM(t, 2, reason);
        return t;
    }
    """
    object ct_expired_new(PyTypeObject *tp, object key, PyObject *value, object reason)


cdef enum:
    MIN_CAPACITY = 16

cdef uint64_t MAX_KEY = 0x7FFFFFFFFFFFFFFF
cdef uint64_t BAD_KEY = 0xFFFFFFFFFFFFFFFF
cdef int64_t MAX_TICK = c.MAX_TICK
cdef double MAX_TICK_F = <double>c.MAX_TICK

cdef object Expired = c.Expired
cdef object TableFull = c.TableFull
cdef str IDLE = "idle"
cdef str DEADLINE = "deadline"
cdef object _MISSING = object()


cdef inline uint64_t key_of(object key) except 0xFFFFFFFFFFFFFFFF:
    """The key as a C integer; the shared check raises for anything else."""
    cdef uint64_t k
    if PyLong_CheckExact(key):
        k = long_as_u64(key)
        if k <= MAX_KEY:
            return k
        PyErr_Clear()  # negative or too large: let the shared check say which
    return <uint64_t>c.check_key(key)


cdef inline uint32_t capacity_for(Py_ssize_t n) noexcept:
    cdef uint32_t cap = MIN_CAPACITY
    while cap < n:
        cap <<= 1
    return cap


cdef inline int log2_u32(uint32_t n) noexcept:
    cdef int bits = 0
    while (<uint32_t>1 << bits) < n:
        bits += 1
    return bits


cdef struct Harvested:
    uint64_t key
    PyObject *value      # owned
    bint by_deadline


@cython.final
@cython.no_gc_clear
cdef class ConnectionTable:
    """Connection id -> value, with last activity, idle timeout and deadline per entry.

    ConnectionTable(idle_timeout=60.0, *, resolution=0.1, now=0.0, max_size=None, capacity=0)
    """

    def __cinit__(self, *args, **kwargs):
        # Usable even if __init__ is skipped or fails: every method may assume storage.
        self.idle_timeout_ = 60.0
        self.resolution_ = 0.1
        self.max_size_ = -1
        self.min_capacity = MIN_CAPACITY
        self.objects = []
        self._reset_storage(MIN_CAPACITY)

    def __init__(self, idle_timeout=60.0, *, resolution=0.1, now=0.0, max_size=None, capacity=0):
        self.idle_timeout_ = c.check_timeout("idle_timeout", idle_timeout)
        self.resolution_ = c.check_resolution(resolution)
        self.now_ = self.origin = c.check_start(now)
        self.max_size_ = c.check_max_size(max_size)
        self.min_capacity = capacity_for(c.check_size("capacity", capacity, minimum=0))
        self.wheel.elapsed = 0
        self.clear()

    def __dealloc__(self):
        free(self.entries)
        index_free(&self.index)
        free(self.wheel.next)
        free(self.wheel.prev)

    cdef int _reset_storage(self, uint32_t capacity) except -1:
        """Empty storage of ``capacity`` entries; on MemoryError nothing changed."""
        cdef Entry *entries = <Entry *>malloc(capacity * sizeof(Entry))
        cdef uint32_t *nxt = <uint32_t *>malloc((NHEADS + capacity) * sizeof(uint32_t))
        cdef uint32_t *prv = <uint32_t *>malloc((NHEADS + capacity) * sizeof(uint32_t))
        cdef Index index
        if entries == NULL or nxt == NULL or prv == NULL or index_alloc(&index, log2_u32(capacity) + 1) < 0:
            free(entries)
            free(nxt)
            free(prv)
            raise MemoryError()
        free(self.entries)
        index_free(&self.index)
        free(self.wheel.next)
        free(self.wheel.prev)
        self.entries = entries
        self.index = index
        self.wheel.next = nxt
        self.wheel.prev = prv
        wheel_reset(&self.wheel, capacity)
        self.free_head = NIL
        slab_thread_free(entries, &self.free_head, 0, capacity)
        self.capacity = capacity
        self.length = 0
        return 0

    # -- read-only settings ------------------------------------------------
    @property
    def now(self):
        """The table's clock: set by the constructor, moved forward by :meth:`expire`."""
        return self.now_

    @property
    def idle_timeout(self):
        return self.idle_timeout_

    @property
    def resolution(self):
        return self.resolution_

    @property
    def max_size(self):
        return None if self.max_size_ < 0 else self.max_size_

    # -- lookup ------------------------------------------------------------
    cdef uint32_t _find(self, object key) except? 0xFFFFFFFF:
        cdef uint32_t i = index_find(&self.index, self.entries, key_of(key))
        if i == NIL:
            raise KeyError(key)
        return i

    def __len__(self):
        return self.length

    def __contains__(self, key):
        return index_find(&self.index, self.entries, key_of(key)) != NIL

    def __getitem__(self, key):
        return <object>list_item(self.objects, self._find(key))

    def get(self, key, default=None, /):
        cdef uint32_t i = index_find(&self.index, self.entries, key_of(key))
        return default if i == NIL else <object>list_item(self.objects, i)

    def last_activity(self, key, /):
        """When the entry last saw activity, exactly as ``now`` was then."""
        return self.entries[self._find(key)].last

    def due(self, key, /):
        """``min(last_activity + idle_timeout, deadline)``; ``math.inf`` if never."""
        return entry_due(&self.entries[self._find(key)])

    cdef uint32_t _next_live(self, uint32_t i) noexcept:
        while i < self.capacity:
            if not entry_is_free(&self.entries[i]):
                return i
            i += 1
        return NIL

    def __iter__(self):
        return _KeyIterator(self)

    def keys(self):
        return KeysView(self)

    def values(self):
        return ValuesView(self)

    def items(self):
        return ItemsView(self)

    # -- activity: the hot path -------------------------------------------
    def touch(self, key, /):
        """Record activity on ``key`` at ``now``. KeyError if absent."""
        self.entries[self._find(key)].last = self.now_

    def touch_many(self, keys, /):
        """Touch every present key of ``keys``; return how many were present."""
        cdef Py_ssize_t found = 0
        cdef uint32_t i
        for key in keys:
            i = index_find(&self.index, self.entries, key_of(key))
            if i != NIL:
                self.entries[i].last = self.now_
                found += 1
        return found

    # -- insertion and removal --------------------------------------------
    def add(self, key, value=None, *, idle_timeout=None, deadline=None):
        """Insert ``key``; KeyError if present, TableFull if ``len == max_size``."""
        cdef uint64_t k = key_of(key)
        cdef double idle = self.idle_timeout_ if idle_timeout is None else c.check_timeout("idle_timeout", idle_timeout)
        cdef double when = INFINITY if deadline is None else c.check_deadline(deadline)
        if index_find(&self.index, self.entries, k) != NIL:
            raise KeyError(f"connection {k} is already in the table")
        self._insert(k, value, idle, when)

    def __setitem__(self, key, value):
        cdef uint64_t k = key_of(key)
        cdef uint32_t i = index_find(&self.index, self.entries, k)
        if i == NIL:
            self._insert(k, value, self.idle_timeout_, INFINITY)
        else:
            # The list releases the old value after the new one is in place.
            self.objects[i] = value

    cdef int _insert(self, uint64_t key, object value, double idle, double deadline) except -1:
        if self.length == self.max_size_:
            raise TableFull(f"the table holds max_size={self.max_size_} entries")
        if self.free_head == NIL:
            self._grow()
        cdef uint32_t i = slab_pop_free(self.entries, &self.free_head)
        cdef Entry *e = &self.entries[i]
        e.key = key
        e.last = self.now_
        e.idle = idle
        e.deadline = deadline
        index_insert(&self.index, key, i)
        self.objects[i] = value
        self.length += 1
        self.version += 1
        self._arm(i)
        return 0

    cdef int _grow(self) except -1:
        """Double the capacity. On MemoryError the table is unchanged."""
        cdef uint32_t old = self.capacity
        cdef uint32_t cap = old * 2
        cdef Entry *entries
        cdef Index index
        cdef uint32_t i
        if cap == 0 or NHEADS + <uint64_t>cap >= NIL:
            raise MemoryError("connection table capacity exhausted")
        while PyList_GET_SIZE(self.objects) < cap:  # values may be longer than capacity, never shorter
            PyList_Append(self.objects, None)
        entries = <Entry *>realloc(self.entries, cap * sizeof(Entry))
        if entries == NULL:
            raise MemoryError()
        self.entries = entries
        if wheel_resize(&self.wheel, cap) < 0 or index_alloc(&index, log2_u32(cap) + 1) < 0:
            raise MemoryError()
        for i in range(old, cap):
            self.wheel.next[NHEADS + i] = NIL
        slab_thread_free(entries, &self.free_head, old, cap)
        for i in range(old):
            index_insert(&index, entries[i].key, i)  # the slab was full: every entry is live
        index_free(&self.index)
        self.index = index
        self.capacity = cap
        return 0

    cdef object _remove_at(self, uint32_t i):
        """Unlink entry ``i`` from everything; return its value for the caller to drop last."""
        cdef Entry *e = &self.entries[i]
        index_remove(&self.index, self.entries, e.key)
        wheel_unlink(&self.wheel, NHEADS + i)
        value = <object>list_item(self.objects, i)
        self.objects[i] = None  # ``value`` still holds a reference: nothing is released here
        slab_push_free(self.entries, &self.free_head, i)
        self.length -= 1
        self.version += 1
        self._maybe_shrink()
        return value

    cdef void _maybe_shrink(self) noexcept:
        """Compact into a quarter or less of the capacity once 7/8 of it is free.

        Live entries above the new capacity move down into free entries
        below it (their wheel links and values move with them), then the
        index is rebuilt. Best effort: out of memory, the table stays as it is.
        """
        cdef uint32_t cap = self.capacity
        cdef uint32_t lo = 0
        cdef uint32_t hi, i
        cdef Index index
        cdef PyObject *moved
        if self.length * 8 >= cap or cap <= self.min_capacity:
            return
        cap = capacity_for(self.length * 2)
        if cap < self.min_capacity:
            cap = self.min_capacity
        if index_alloc(&index, log2_u32(cap) + 1) < 0:
            return
        for hi in range(cap, self.capacity):
            if entry_is_free(&self.entries[hi]):
                continue
            while not entry_is_free(&self.entries[lo]):
                lo += 1
            self.entries[lo] = self.entries[hi]
            wheel_move_node(&self.wheel, NHEADS + hi, NHEADS + lo)
            moved = list_item(self.objects, hi)  # a pointer swap: no reference changes hands
            list_set_raw(self.objects, hi, list_item(self.objects, lo))
            list_set_raw(self.objects, lo, moved)
            lo += 1
        self.free_head = NIL
        i = cap
        while i > 0:
            i -= 1
            if entry_is_free(&self.entries[i]):
                slab_push_free(self.entries, &self.free_head, i)
            else:
                index_insert(&index, self.entries[i].key, i)
        index_free(&self.index)
        self.index = index
        entries = <Entry *>realloc(self.entries, cap * sizeof(Entry))
        if entries != NULL:
            self.entries = entries
        wheel_resize(&self.wheel, cap)  # shrinking: a failure keeps the larger arrays
        if PyList_SetSlice(self.objects, cap, PyList_GET_SIZE(self.objects), NULL) < 0:
            PyErr_Clear()  # the list may stay longer than the capacity
        self.capacity = cap

    def __delitem__(self, key):
        self._remove_at(self._find(key))

    def pop(self, key, default=_MISSING, /):
        """Remove ``key`` and return its value; ``default`` (or KeyError) if absent."""
        cdef uint32_t i = index_find(&self.index, self.entries, key_of(key))
        if i != NIL:
            return self._remove_at(i)
        if default is _MISSING:
            raise KeyError(key)
        return default

    # The rest of the MutableMapping protocol, from the standard library's own code.
    popitem = MutableMapping.popitem
    setdefault = MutableMapping.setdefault
    update = MutableMapping.update

    def clear(self):
        """Remove every entry; the values are released after the table is empty."""
        new_values = [None] * self.min_capacity  # may run the GC: do it before any change
        self._reset_storage(self.min_capacity)
        old_values = self.objects
        self.objects = new_values
        self.version += 1
        del old_values

    # -- timers ------------------------------------------------------------
    def set_deadline(self, key, when, /):
        """Set an absolute deadline on the table's clock; ``None`` clears it."""
        cdef uint32_t i = self._find(key)
        cdef double deadline = c.check_deadline(when)
        self.entries[i].deadline = deadline
        wheel_unlink(&self.wheel, NHEADS + i)
        self._arm(i)

    def set_idle_timeout(self, key, seconds, /):
        """Set the entry's own idle timeout; ``None`` restores the table's default."""
        cdef uint32_t i = self._find(key)
        cdef double idle = self.idle_timeout_ if seconds is None else c.check_timeout("idle_timeout", seconds)
        self.entries[i].idle = idle
        wheel_unlink(&self.wheel, NHEADS + i)
        self._arm(i)

    cdef void _arm(self, uint32_t i) noexcept:
        """Link an unlinked entry where its due time will be examined."""
        cdef double due = entry_due(&self.entries[i])
        cdef double ticks
        cdef int64_t when
        if due == INFINITY:
            return
        if due <= self.now_:
            wheel_link(&self.wheel, NHEADS + i, PENDING)
            return
        ticks = (due - self.origin) / self.resolution_
        when = MAX_TICK if ticks >= MAX_TICK_F else <int64_t>ceil(ticks)
        if when <= self.wheel.elapsed:
            when = self.wheel.elapsed + 1
        wheel_link(&self.wheel, NHEADS + i, wheel_head_for(&self.wheel, when))

    def expire(self, now, limit=None):
        """Advance the clock to ``now``; remove and return the entries that are due.

        At most ``limit`` entries are returned; the rest come back on the next call.
        """
        cdef double t
        if PyFloat_CheckExact(now) and self.now_ <= PyFloat_AS_DOUBLE(now) < INFINITY:
            t = PyFloat_AS_DOUBLE(now)
        else:
            t = c.check_now(now, self.now_)
        cdef Py_ssize_t cap = -1 if limit is None else c.check_limit(limit)
        self.now_ = t
        cdef double ticks = (t - self.origin) / self.resolution_
        cdef int64_t target = MAX_TICK if ticks >= MAX_TICK_F else <int64_t>floor(ticks)
        cdef Harvested *harvest = NULL
        cdef Harvested *grown
        cdef Py_ssize_t n = 0, room = 0, j = 0
        cdef bint starved = False
        cdef uint32_t node, head
        cdef int64_t start
        cdef Entry *e
        # Phase 1: take the due entries out, allocating no Python object.
        while True:
            while n != cap:
                node = wheel_pop_pending(&self.wheel)
                if node == NIL:
                    break
                e = &self.entries[node - NHEADS]
                if entry_due(e) > t:
                    self._arm(node - NHEADS)
                    continue
                if n == room:
                    room = room * 2 if room else 64
                    grown = <Harvested *>PyMem_Realloc(harvest, room * sizeof(Harvested))
                    if grown == NULL:  # out of memory: the rest waits for the next call
                        wheel_link(&self.wheel, node, PENDING)
                        starved = True
                        cap = n
                        break
                    harvest = grown
                harvest[n].key = e.key
                harvest[n].by_deadline = e.deadline <= e.last + e.idle
                value = self._remove_at(node - NHEADS)
                Py_INCREF(value)
                harvest[n].value = <PyObject *>value
                n += 1
            if n == cap:
                break
            head = wheel_next_slot(&self.wheel, &start)
            if head == NIL or start > target:
                if target > self.wheel.elapsed:
                    self.wheel.elapsed = target
                break
            self.wheel.elapsed = start
            wheel_take(&self.wheel, head)
        value = None
        # Phase 2: build the result; a collection that runs here sees a consistent table.
        try:
            if starved and n == 0:
                raise MemoryError()
            result = []
            while j < n:
                PyList_Append(result, ct_expired_new(
                    <PyTypeObject *>Expired, harvest[j].key, harvest[j].value,
                    DEADLINE if harvest[j].by_deadline else IDLE))
                j += 1
            return result
        finally:
            while j < n:  # only after an error: release what was not handed out
                Py_DECREF(<object>harvest[j].value)
                j += 1
            PyMem_Free(harvest)

    def next_expiry(self):
        """When to call :meth:`expire` next; None if nothing can ever expire."""
        cdef int64_t start
        if self.wheel.prev[PENDING] != PENDING:
            return self.now_
        if wheel_next_slot(&self.wheel, &start) == NIL:
            return None
        cdef double when = self.origin + <double>start * self.resolution_
        # Mathematically later than now; the guard keeps rounding from making it not so.
        return when if when > self.now_ else nextafter(self.now_, INFINITY)

    # -- object protocol ---------------------------------------------------
    def __repr__(self):
        return c.table_repr(self)

    def __sizeof__(self):
        return (
            sizeof(ConnectionTable)
            + self.capacity * sizeof(Entry)
            + (NHEADS + self.capacity) * 2 * sizeof(uint32_t)
            + (self.index.mask + 1) * sizeof(uint32_t)
            + self.objects.__sizeof__()
        )


MutableMapping.register(ConnectionTable)


@cython.final
cdef class _KeyIterator:
    cdef ConnectionTable table
    cdef uint32_t position
    cdef uint64_t version

    def __cinit__(self, ConnectionTable table):
        self.table = table
        self.version = table.version

    def __iter__(self):
        return self

    def __next__(self):
        cdef ConnectionTable table = self.table
        if table.version != self.version:
            raise RuntimeError("ConnectionTable changed size during iteration")
        cdef uint32_t i = table._next_live(self.position)
        if i == NIL:
            raise StopIteration
        self.position = i + 1
        return table.entries[i].key
