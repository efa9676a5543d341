# cython: language_level=3, binding=False, auto_pickle=False
"""The compiled connection table (see ``conntable`` for the API).

Four structures, each in its own ``.pxd`` with its invariant:

* ``_index``: open addressing over 16-byte slots (key, activity epoch, slab
  index). ``touch`` is a probe and a 4-byte store in one cache line.
* ``_slab``: the cold fields (idle timeout, deadline, back-pointer to the
  slot) at stable indices.
* ``_wheel``: the hierarchical timer wheel over 32-bit intrusive links.
* ``_clock``: the table's clock as a list of epochs.

Values live in a Python list indexed like the slab, so the garbage collector
sees them through Cython's generated ``tp_traverse``. The large arrays are on
transparent huge pages (``_memory``).

Re-entrancy rule: a value is only ever released (its ``__del__`` may run and
call back into the table) after the table is consistent again, and nothing
between the first and last change of a mutation allocates a GC-tracked
object, because on CPython 3.11 such an allocation may run a collection.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject, PyTypeObject
from libc.math cimport INFINITY, ceil, floor, nextafter
from libc.stdint cimport int64_t, uint32_t, uint64_t

from conntable._clock cimport Clock, clock_epoch, clock_now, clock_reserve
from conntable._index cimport (
    EMPTY_KEY,
    NO_SLOT,
    Index,
    Slot,
    index_alloc,
    index_find,
    index_free,
    index_insert,
    index_over_full,
    index_rehash,
    index_remove_at,
    index_size_for,
)
from conntable._memory cimport big_alloc, big_free, big_resize
from conntable._slab cimport (
    NIL,
    Slab,
    Timers,
    slab_is_free,
    slab_pop_free,
    slab_push_free,
    slab_thread_free,
)
from conntable._wheel cimport (
    NHEADS,
    PENDING,
    Wheel,
    wheel_arm,
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
    PyObject **list_items "PySequence_Fast_ITEMS"(object lst)
    void list_set_raw "PyList_SET_ITEM"(object lst, Py_ssize_t i, PyObject *item)

cdef extern from *:
    """
    /* The value of an exact int that fits in a machine word and is not
       negative, read in place; 0 (and no error) for any other int. */
    static inline int ct_small_key(PyObject *o, uint64_t *out) {
    #if PY_VERSION_HEX >= 0x030C0000
        if (!_PyLong_IsCompact((PyLongObject *)o)) return 0;
        Py_ssize_t v = _PyLong_CompactValue((PyLongObject *)o);
        if (v < 0) return 0;
        *out = (uint64_t)v;
        return 1;
    #else
        switch (Py_SIZE(o)) {
        case 0: *out = 0; return 1;
        case 1: *out = ((PyLongObject *)o)->ob_digit[0]; return 1;
        case 2: *out = ((uint64_t)((PyLongObject *)o)->ob_digit[1] << PyLong_SHIFT)
                       | ((PyLongObject *)o)->ob_digit[0]; return 1;
        default: return 0;
        }
    #endif
    }
    """
    bint small_key "ct_small_key"(object o, uint64_t *out) noexcept

cdef extern from *:
    """
    #define ct_prefetch(p) __builtin_prefetch((const void *)(p))
    """
    void prefetch "ct_prefetch"(const void *p) noexcept nogil

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
    MIN_EPOCHS = 64
    MAX_CAPACITY = 1 << 30   # c.MAX_CAPACITY: slot positions and slab indices stay 32-bit

cdef uint64_t MAX_KEY = 0x7FFFFFFFFFFFFFFF
cdef int64_t MAX_TICK = c.MAX_TICK
cdef double MAX_TICK_F = <double>c.MAX_TICK
cdef double TICK_SLACK = c.TICK_SLACK

cdef object Expired = c.Expired
cdef object TableFull = c.TableFull
cdef str IDLE = "idle"
cdef str DEADLINE = "deadline"
cdef object _MISSING = object()


cdef inline uint64_t key_of(object key) except 0xFFFFFFFFFFFFFFFF:
    """The key as a C integer: an exact int in range here, anything else out of line."""
    cdef uint64_t k
    if PyLong_CheckExact(key):
        if small_key(key, &k):
            return k
        k = long_as_u64(key)
        if k <= MAX_KEY:
            return k
        PyErr_Clear()  # negative or too large: let the shared check say which
    return key_of_slow(key)


cdef uint64_t key_of_slow(object key) except 0xFFFFFFFFFFFFFFFF:
    """An int subclass or ``__index__`` object, or a bad key: the shared check decides."""
    return <uint64_t>c.check_key(key)


cdef inline uint32_t capacity_for(Py_ssize_t n) noexcept:
    cdef uint32_t cap = MIN_CAPACITY
    while cap < n:
        cap <<= 1
    return cap


cdef inline int64_t tick_of(double ticks, bint round_up) noexcept:
    if ticks >= MAX_TICK_F:
        return MAX_TICK
    return <int64_t>(ceil(ticks) if round_up else floor(ticks))


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
        self.objects = [None] * MIN_CAPACITY
        self._reset_storage(MIN_CAPACITY, 0.0)

    def __init__(self, idle_timeout=60.0, *, resolution=0.1, now=0.0, max_size=None, capacity=0):
        self.idle_timeout_ = c.check_timeout("idle_timeout", idle_timeout)
        self.resolution_ = c.check_resolution(resolution)
        self.origin = c.check_start(now)
        self.max_size_ = c.check_max_size(max_size)
        self.min_capacity = capacity_for(c.check_size("capacity", capacity, minimum=0))
        self.wheel.elapsed = 0
        self._empty(self.origin)  # a table initialised twice drops its values last

    def __dealloc__(self):
        self._free_storage()

    cdef void _free_storage(self) noexcept:
        index_free(&self.index)
        big_free(self.slab.timers)
        big_free(self.slab.pos)
        big_free(self.wheel.next)
        big_free(self.wheel.prev)
        big_free(self.clock.times)

    cdef int _reset_storage(self, uint32_t capacity, double now) except -1:
        """Empty storage for ``capacity`` entries, clock at ``now``; on MemoryError nothing changed."""
        cdef Index index
        cdef Timers *timers = <Timers *>big_alloc(capacity * sizeof(Timers))
        cdef uint32_t *pos = <uint32_t *>big_alloc(capacity * sizeof(uint32_t))
        cdef uint32_t *nxt = <uint32_t *>big_alloc((NHEADS + capacity) * sizeof(uint32_t))
        cdef uint32_t *prv = <uint32_t *>big_alloc((NHEADS + capacity) * sizeof(uint32_t))
        cdef double *times = <double *>big_alloc(MIN_EPOCHS * sizeof(double))
        cdef bint indexed = index_alloc(&index, index_size_for(capacity)) == 0
        if not (indexed and timers and pos and nxt and prv and times):
            if indexed:
                index_free(&index)
            big_free(timers)
            big_free(pos)
            big_free(nxt)
            big_free(prv)
            big_free(times)
            raise MemoryError()
        self._free_storage()
        self.index = index
        self.slab.timers = timers
        self.slab.pos = pos
        self.slab.capacity = capacity
        self.slab.free_head = NIL
        slab_thread_free(&self.slab, 0, capacity)
        self.wheel.next = nxt
        self.wheel.prev = prv
        wheel_reset(&self.wheel, capacity)
        self.clock.times = times
        self.clock.capacity = MIN_EPOCHS
        self.clock.count = 1
        times[0] = now
        self.length = 0
        return 0

    # -- read-only settings ------------------------------------------------
    @property
    def now(self):
        """The table's clock: set by the constructor, moved forward by :meth:`expire`."""
        return clock_now(&self.clock)

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
    cdef uint64_t _find(self, object key) except 0xFFFFFFFFFFFFFFFF:
        """The position of ``key``'s slot; KeyError if absent."""
        cdef uint64_t pos = index_find(&self.index, key_of(key))
        if pos == NO_SLOT:
            raise KeyError(key)
        return pos

    cdef double _due(self, uint32_t i) noexcept:
        cdef Slot *slot = &self.index.slots[self.slab.pos[i]]
        cdef double idle_due = self.clock.times[slot.epoch] + self.slab.timers[i].idle
        cdef double deadline = self.slab.timers[i].deadline
        return idle_due if idle_due < deadline else deadline

    def __len__(self):
        return self.length

    def __contains__(self, key):
        return index_find(&self.index, key_of(key)) != NO_SLOT

    def __getitem__(self, key):
        return <object>list_item(self.objects, self.index.slots[self._find(key)].slab)

    def get(self, key, default=None, /):
        cdef uint64_t pos = index_find(&self.index, key_of(key))
        if pos == NO_SLOT:
            return default
        return <object>list_item(self.objects, self.index.slots[pos].slab)

    def last_activity(self, key, /):
        """When the entry last saw activity, exactly as ``now`` was then."""
        return self.clock.times[self.index.slots[self._find(key)].epoch]

    def due(self, key, /):
        """``min(last_activity + idle_timeout, deadline)``; ``math.inf`` if never."""
        return self._due(self.index.slots[self._find(key)].slab)

    cdef uint32_t _next_live(self, uint32_t i) noexcept:
        while i < self.slab.capacity:
            if not slab_is_free(&self.slab, i):
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
        self.index.slots[self._find(key)].epoch = clock_epoch(&self.clock)

    def touch_many(self, keys, /):
        """Touch every present key of ``keys``; return how many were present.

        All or nothing: every key is checked before any is touched.
        """
        cdef Py_ssize_t n = 0, room = 0, j, found = 0
        cdef uint64_t *batch = NULL
        cdef uint64_t *grown
        cdef uint64_t pos
        cdef uint32_t epoch
        try:
            for key in keys:  # may run Python code: only collect here
                if n == room:
                    room = room * 2 if room else 256
                    grown = <uint64_t *>PyMem_Realloc(batch, room * sizeof(uint64_t))
                    if grown == NULL:
                        raise MemoryError()
                    batch = grown
                batch[n] = key_of(key)
                n += 1
            epoch = clock_epoch(&self.clock)
            for j in range(n):
                pos = index_find(&self.index, batch[j])
                if pos != NO_SLOT:
                    self.index.slots[pos].epoch = epoch
                    found += 1
            return found
        finally:
            PyMem_Free(batch)

    # -- insertion and removal --------------------------------------------
    def add(self, key, value=None, *, idle_timeout=None, deadline=None):
        """Insert ``key``; KeyError if present, TableFull if ``len == max_size``."""
        cdef uint64_t k = key_of(key)
        cdef double idle = self.idle_timeout_ if idle_timeout is None else c.check_timeout("idle_timeout", idle_timeout)
        cdef double when = INFINITY if deadline is None else c.check_deadline(deadline)
        if index_find(&self.index, k) != NO_SLOT:
            raise KeyError(f"connection {k} is already in the table")
        self._insert(k, value, idle, when)

    def __setitem__(self, key, value):
        cdef uint64_t k = key_of(key)
        cdef uint64_t pos = index_find(&self.index, k)
        if pos == NO_SLOT:
            self._insert(k, value, self.idle_timeout_, INFINITY)
        else:
            # The list releases the old value after the new one is in place.
            self.objects[self.index.slots[pos].slab] = value

    cdef int _insert(self, uint64_t key, object value, double idle, double deadline) except -1:
        if self.length == self.max_size_:
            raise TableFull(f"the table holds max_size={self.max_size_} entries")
        if self.slab.free_head == NIL:
            self._grow_slab()
        if index_over_full(&self.index, self.length + 1):
            if index_rehash(&self.index, index_size_for(self.length + 1), self.slab.pos) < 0:
                raise MemoryError()
        cdef uint32_t i = slab_pop_free(&self.slab)
        self.slab.timers[i].idle = idle
        self.slab.timers[i].deadline = deadline
        index_insert(&self.index, key, clock_epoch(&self.clock), i, self.slab.pos)
        self.objects[i] = value
        self.length += 1
        self.version += 1
        self._arm(i)
        return 0

    cdef int _grow_slab(self) except -1:
        """Double the slab. On MemoryError the table is unchanged."""
        cdef uint32_t old = self.slab.capacity
        cdef uint32_t cap = old * 2
        cdef Timers *timers
        cdef uint32_t *pos
        cdef uint32_t i
        if cap > MAX_CAPACITY:
            raise MemoryError(f"a connection table holds at most {MAX_CAPACITY} entries")
        while PyList_GET_SIZE(self.objects) < cap:  # values may be longer than capacity, never shorter
            PyList_Append(self.objects, None)
        timers = <Timers *>big_resize(self.slab.timers, old * sizeof(Timers), cap * sizeof(Timers))
        if timers == NULL:
            raise MemoryError()
        self.slab.timers = timers
        pos = <uint32_t *>big_resize(self.slab.pos, old * sizeof(uint32_t), cap * sizeof(uint32_t))
        if pos == NULL:
            raise MemoryError()
        self.slab.pos = pos
        if wheel_resize(&self.wheel, old, cap) < 0:
            raise MemoryError()
        for i in range(old, cap):
            self.wheel.next[NHEADS + i] = NIL
        slab_thread_free(&self.slab, old, cap)
        self.slab.capacity = cap
        return 0

    cdef object _remove_at(self, uint64_t pos):
        """Unlink the entry at slot ``pos`` from everything; return its value for the caller to drop last."""
        cdef uint32_t i = self.index.slots[pos].slab
        index_remove_at(&self.index, pos, self.slab.pos)
        wheel_unlink(&self.wheel, NHEADS + i)
        value = <object>list_item(self.objects, i)
        self.objects[i] = None  # ``value`` still holds a reference: nothing is released here
        slab_push_free(&self.slab, i)
        self.length -= 1
        self.version += 1
        self._maybe_shrink()
        return value

    cdef void _maybe_shrink(self) noexcept:
        """Give memory back once 7/8 of it is unused. Best effort: out of memory, nothing changes.

        The slab compacts into a quarter or less of its capacity: live entries
        above the new capacity move into free entries below it, taking their
        wheel links, values and index back-pointers along.
        """
        cdef uint32_t cap = self.slab.capacity
        cdef uint32_t lo = 0
        cdef uint32_t hi, i
        cdef PyObject *moved
        cdef Timers *timers
        cdef uint32_t *pos
        cdef uint64_t size
        if <uint64_t>self.length * 8 < self.index.size:
            size = max(index_size_for(self.length * 2), index_size_for(self.min_capacity))
            if size < self.index.size:
                index_rehash(&self.index, size, self.slab.pos)
        if self.length * 8 >= cap or cap <= self.min_capacity:
            return
        cap = capacity_for(self.length * 2)
        if cap < self.min_capacity:
            cap = self.min_capacity
        for hi in range(cap, self.slab.capacity):
            if slab_is_free(&self.slab, hi):
                continue
            while not slab_is_free(&self.slab, lo):
                lo += 1
            self.slab.timers[lo] = self.slab.timers[hi]
            self.slab.pos[lo] = self.slab.pos[hi]
            self.index.slots[self.slab.pos[lo]].slab = lo
            wheel_move_node(&self.wheel, NHEADS + hi, NHEADS + lo)
            moved = list_item(self.objects, hi)  # a pointer swap: no reference changes hands
            list_set_raw(self.objects, hi, list_item(self.objects, lo))
            list_set_raw(self.objects, lo, moved)
            lo += 1
        self.slab.free_head = NIL
        i = cap
        while i > 0:
            i -= 1
            if slab_is_free(&self.slab, i):
                slab_push_free(&self.slab, i)
        timers = <Timers *>big_resize(self.slab.timers, cap * sizeof(Timers), cap * sizeof(Timers))
        if timers != NULL:  # out of memory: keep the larger arrays
            self.slab.timers = timers
        pos = <uint32_t *>big_resize(self.slab.pos, cap * sizeof(uint32_t), cap * sizeof(uint32_t))
        if pos != NULL:
            self.slab.pos = pos
        wheel_resize(&self.wheel, cap, cap)
        if PyList_SetSlice(self.objects, cap, PyList_GET_SIZE(self.objects), NULL) < 0:
            PyErr_Clear()  # the list may stay longer than the capacity
        self.slab.capacity = cap

    def __delitem__(self, key):
        self._remove_at(self._find(key))

    def pop(self, key, default=_MISSING, /):
        """Remove ``key`` and return its value; ``default`` (or KeyError) if absent."""
        cdef uint64_t pos = index_find(&self.index, key_of(key))
        if pos != NO_SLOT:
            return self._remove_at(pos)
        if default is _MISSING:
            raise KeyError(key)
        return default

    # The rest of the MutableMapping protocol, from the standard library's own code.
    popitem = MutableMapping.popitem
    setdefault = MutableMapping.setdefault
    update = MutableMapping.update

    def clear(self):
        """Remove every entry; the values are released after the table is empty."""
        self._empty(clock_now(&self.clock))

    cdef int _empty(self, double now) except -1:
        """Empty the table with its clock at ``now``; the old values are released last."""
        objects = [None] * self.min_capacity  # may run the GC: do it before any change
        self._reset_storage(self.min_capacity, now)
        self.objects, objects = objects, self.objects
        self.version += 1
        del objects
        return 0

    # -- timers ------------------------------------------------------------
    def set_deadline(self, key, when, /):
        """Set an absolute deadline on the table's clock; ``None`` clears it."""
        cdef uint32_t i = self.index.slots[self._find(key)].slab
        self.slab.timers[i].deadline = c.check_deadline(when)
        wheel_unlink(&self.wheel, NHEADS + i)
        self._arm(i)

    def set_idle_timeout(self, key, seconds, /):
        """Set the entry's own idle timeout; ``None`` restores the table's default."""
        cdef uint32_t i = self.index.slots[self._find(key)].slab
        self.slab.timers[i].idle = self.idle_timeout_ if seconds is None else c.check_timeout("idle_timeout", seconds)
        wheel_unlink(&self.wheel, NHEADS + i)
        self._arm(i)

    cdef void _arm(self, uint32_t i) noexcept:
        """Link an unlinked entry where its due time will be examined."""
        cdef double due = self._due(i)
        cdef int64_t when
        if due == INFINITY:
            return
        if due <= clock_now(&self.clock):
            wheel_link(&self.wheel, NHEADS + i, PENDING)
            return
        when = tick_of((due - self.origin) / self.resolution_, True)
        if when <= self.wheel.elapsed:
            when = self.wheel.elapsed + 1
        wheel_arm(&self.wheel, NHEADS + i, when)

    cdef int _advance_clock(self, double now) except -1:
        """Make ``now`` the current epoch, renumbering the epochs in use when the array is full."""
        cdef Clock *clock = &self.clock
        cdef uint32_t *renumber
        cdef uint32_t epoch, count
        cdef uint64_t pos
        cdef uint64_t spare
        if now == clock_now(clock):
            return 0
        if clock.count == clock.capacity:
            renumber = <uint32_t *>PyMem_Malloc(clock.count * sizeof(uint32_t))
            if renumber == NULL:
                raise MemoryError()
            for epoch in range(clock.count):
                renumber[epoch] = NIL
            renumber[clock.count - 1] = 0  # the current epoch stays, and stays last
            for pos in range(self.index.size):
                if self.index.slots[pos].key != EMPTY_KEY:
                    renumber[self.index.slots[pos].epoch] = 0
            count = 0
            for epoch in range(clock.count):  # keep the order: times stay increasing
                if renumber[epoch] != NIL:
                    clock.times[count] = clock.times[epoch]
                    renumber[epoch] = count
                    count += 1
            for pos in range(self.index.size):
                if self.index.slots[pos].key != EMPTY_KEY:
                    self.index.slots[pos].epoch = renumber[self.index.slots[pos].epoch]
            PyMem_Free(renumber)
            clock.count = count
            spare = max(<uint64_t>MIN_EPOCHS, 2 * <uint64_t>count, <uint64_t>self.length // 8)
            if clock.capacity < spare or clock.capacity > 4 * spare:
                if clock_reserve(clock, <uint32_t>min(spare, <uint64_t>NIL - 1)) < 0 and clock.count == clock.capacity:
                    raise MemoryError()
        clock.times[clock.count] = now
        clock.count += 1
        return 0

    def expire(self, now, limit=None):
        """Advance the clock to ``now``; remove and return the entries that are due.

        At most ``limit`` entries are returned; the rest come back on the next
        call. ``limit=0`` only advances the clock.
        """
        cdef double current = clock_now(&self.clock)
        cdef double t
        if PyFloat_CheckExact(now) and current <= PyFloat_AS_DOUBLE(now) < INFINITY:
            t = PyFloat_AS_DOUBLE(now)
        else:
            t = c.check_now(now, current)
        cdef Py_ssize_t cap = -1 if limit is None else c.check_limit(limit)
        self._advance_clock(t)
        # A loop may wake a hair before the time next_expiry() named: TICK_SLACK
        # lets that call still take the slot (dues are then checked exactly).
        cdef int64_t target = tick_of((t - self.origin) / self.resolution_ + TICK_SLACK, False)
        cdef Harvested *harvest = NULL
        cdef Harvested *grown
        cdef Py_ssize_t n = 0, room = 0, j = 0
        cdef bint starved = False
        cdef uint32_t node, head, i
        cdef int64_t start
        cdef double due
        cdef Slot *slot
        # Phase 1: take the due entries out, allocating no Python object.
        while True:
            while n != cap:
                node = wheel_pop_pending(&self.wheel)
                if node == NIL:
                    break
                self._prefetch_pending()
                i = node - NHEADS
                due = self._due(i)
                if due > t:
                    self._arm(i)
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
                slot = &self.index.slots[self.slab.pos[i]]
                harvest[n].key = slot.key
                harvest[n].by_deadline = self.slab.timers[i].deadline == due
                value = self._remove_at(self.slab.pos[i])
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

    cdef inline void _prefetch_pending(self) noexcept:
        """Start loading what the next two PENDING entries will need (a mass expiry misses the cache on each)."""
        cdef uint32_t first = self.wheel.prev[PENDING]
        cdef uint32_t second
        if first == PENDING:
            return
        cdef PyObject **values = list_items(self.objects)
        # Their addresses were prefetched last time: the slot, and the value (its refcount changes).
        prefetch(&self.index.slots[self.slab.pos[first - NHEADS]])
        prefetch(values[first - NHEADS])
        second = self.wheel.prev[first]
        if second == PENDING:
            return
        prefetch(&self.slab.pos[second - NHEADS])
        prefetch(&self.slab.timers[second - NHEADS])
        prefetch(&self.wheel.prev[second])
        prefetch(&self.wheel.next[second])
        prefetch(&values[second - NHEADS])

    def next_expiry(self):
        """When to call :meth:`expire` next; None if nothing can ever expire."""
        cdef int64_t start
        cdef uint32_t head
        cdef double now = clock_now(&self.clock)
        if self.wheel.prev[PENDING] != PENDING:
            return now
        head = wheel_next_slot(&self.wheel, &start)
        if head == NIL:
            return None
        cdef double when = self.origin + <double>self.wheel.earliest[head] * self.resolution_
        # Mathematically later than now; the guard keeps rounding from making it not so.
        return when if when > now else nextafter(now, INFINITY)

    # -- object protocol ---------------------------------------------------
    def __repr__(self):
        return c.table_repr(self)

    def __sizeof__(self):
        return (
            sizeof(ConnectionTable)
            + self.index.size * sizeof(Slot)
            + self.slab.capacity * (sizeof(Timers) + sizeof(uint32_t))
            + (NHEADS + self.slab.capacity) * 2 * sizeof(uint32_t)
            + self.clock.capacity * sizeof(double)
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
        return table.index.slots[table.slab.pos[i]].key
