# cython: language_level=3, binding=False, auto_pickle=False
"""The compiled connection table (see ``conntable`` for the API).

Four structures, each in its own ``.pxd`` with its invariant:

* ``_index``: open addressing over 16-byte slots (hash, activity epoch, slab
  index). An int ``touch`` is a probe and a 4-byte store in one cache line.
* ``_slab``: the cold fields (idle timeout, deadline, back-pointer to the
  slot), the values and the key objects, at stable indices.

Keys: any hashable object, with a dict's semantics. An exact int in
[0, 2**61 - 1) is its own hash, so the slot holds it and no key object is
kept (the fast path: no Python call, no second cache line). Every other key
(a str, a UUID, a larger or negative int, an object) is kept in the slab's
key array, and a lookup compares identity first, then ``==``, on each slot
of the same hash, as CPython's dict does. ``1``, ``1.0`` and ``True`` are one
key; the table hands back the key object it stored.

A key's ``__eq__`` runs Python code in the middle of a lookup, where it may
change the table. Every structural change bumps ``layout``; after each
``==`` the lookup checks it and starts again if it moved (as dict does), and
gives up with RuntimeError after MAX_RESTARTS. A lookup's result is only
used with no Python code between it and the write.
* ``_wheel``: the hierarchical timer wheel over 32-bit intrusive links.
* ``_clock``: the table's clock as a list of epochs.

The values are owned references in a C array, reachable from Python only
through the public methods; the tp_traverse and tp_clear installed at import
show them to the garbage collector (no list or other container of the table
can be reached, resized or cleared behind its back). The large arrays are on
transparent huge pages (``_memory``).

Rules that keep every call safe, whatever Python code runs around it (a
key's ``__index__``, an argument's ``__float__``, another thread at a GIL
switch, a value's ``__del__`` run by the garbage collector):

* Convert, then locate, then mutate. Every argument is converted and checked
  (the key hashed) before the table is looked at; the lookup may run a
  key's ``__eq__`` but restarts if the table changed meanwhile; from its
  answer to the end of the mutation no Python code runs, so nothing found
  can move under the write.
* Nothing between the first and last change of a mutation allocates a
  GC-tracked object (on CPython 3.11 such an allocation may run a
  collection, hence any ``__del__``). ``expire``, which must build its
  result while entries are half taken out, pauses the collector for that
  stretch instead; it runs no Python code there either.
* A value or key is only released (its ``__del__`` may run and call back
  into the table) once the table is consistent again.
* All or nothing under MemoryError: each operation allocates everything it
  may need before its first change, or undoes what it did. ``expire`` may
  have moved the clock when it raises; it never removes an entry then.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF, Py_XINCREF, PyObject, PyTypeObject
from libc.math cimport INFINITY, ceil, floor, isfinite, nextafter
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

from conntable._clock cimport Clock, clock_epoch, clock_now, clock_reserve
from conntable._index cimport (
    COLLIDED,
    EMPTY_KEY,
    FAST_LIMIT,
    INT_KEY,
    NO_SLOT,
    Index,
    Slot,
    index_alloc,
    index_find_int,
    index_find_same,
    index_free,
    index_home,
    index_insert,
    index_next,
    index_over_full,
    index_rehash,
    index_remove_at,
    index_size_for,
    slot_slab,
)
from conntable._memory cimport big_alloc, big_calloc, big_free
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
    wheel_take,
    wheel_unlink,
)

from collections.abc import ItemsView, KeysView, MutableMapping, ValuesView

from conntable import _common as c

cdef extern from "Python.h":
    bint PyLong_CheckExact(object o)
    bint PyFloat_CheckExact(object o)
    double PyFloat_AS_DOUBLE(object o)
    # Errors are checked by the caller (the result is then >= FAST_LIMIT).
    unsigned long long long_as_u64 "PyLong_AsUnsignedLongLong"(object o) noexcept
    PyObject *long_from_u64 "PyLong_FromUnsignedLongLong"(unsigned long long v) noexcept
    void PyErr_Clear() noexcept
    PyObject *list_new "PyList_New"(Py_ssize_t n) noexcept
    void list_set_raw "PyList_SET_ITEM"(PyObject *lst, Py_ssize_t i, PyObject *item) noexcept
    int PyGC_Disable() noexcept
    int PyGC_Enable() noexcept
    PyObject *tuple_new "PyTuple_New"(Py_ssize_t n) noexcept
    void tuple_set_raw "PyTuple_SET_ITEM"(PyObject *t, Py_ssize_t i, PyObject *item) noexcept
    void *PyMem_Calloc(size_t n, size_t size) noexcept
    int PyObject_RichCompareBool(PyObject *a, PyObject *b, int op) noexcept
    enum: Py_EQ


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
    /* An exact str's cached hash, or -1 (not an exact str, or not hashed yet). */
    static inline Py_hash_t ct_str_hash(PyObject *o) {
        return PyUnicode_CheckExact(o) ? ((PyASCIIObject *)o)->hash : -1;
    }
    """
    Py_hash_t str_hash "ct_str_hash"(object o) noexcept

cdef extern from *:
    """
    #if defined(_MSC_VER) && !defined(__clang__)
    #include <intrin.h>
    #if defined(_M_X64)
    #define ct_prefetch(p) _mm_prefetch((const char *)(p), _MM_HINT_T0)
    #else
    #define ct_prefetch(p) ((void)(p))
    #endif
    #else
    #define ct_prefetch(p) __builtin_prefetch((const void *)(p))
    #endif
    """
    void prefetch "ct_prefetch"(const void *p) noexcept nogil

cdef extern from *:
    """
    /* A tuple of a tuple subclass (the Expired named tuple), built without a
       call into Python. Steals ``key``, also on failure; borrows the rest. */
    static PyObject *ct_expired_new(PyTypeObject *tp, PyObject *key,
                                    PyObject *value, PyObject *reason) {
        PyObject *t;
        if (key == NULL) return NULL;
        t = tp->tp_alloc(tp, 3);
        if (t == NULL) {
            Py_DECREF(key);
            return NULL;
        }
        Py_INCREF(value);
        Py_INCREF(reason);
        PyTuple_SET_ITEM(t, 0, key);
        PyTuple_SET_ITEM(t, 1, value);
        PyTuple_SET_ITEM(t, 2, reason);
        return t;
    }
    """
    PyObject *ct_expired_new(PyTypeObject *tp, PyObject *key, PyObject *value, PyObject *reason) noexcept

cdef extern from *:
    """
    /* The type's traverse and clear are replaced at import (see the end of
       the module). Cython's generated traverse would only visit the type
       (when it is a heap type) and the anchor field, which is always None. */
    typedef int (*ct_visitproc)(PyObject *, void *);
    static int ct_visit_type(PyObject *o, ct_visitproc visit, void *arg) {
        if (PyType_GetFlags(Py_TYPE(o)) & Py_TPFLAGS_HEAPTYPE)
            return visit((PyObject *)Py_TYPE(o), arg);
        return 0;
    }
    static void ct_install_gc(PyObject *type, void *traverse, void *clear) {
        PyTypeObject *tp = (PyTypeObject *)type;
        tp->tp_traverse = (traverseproc)traverse;
        tp->tp_clear = (inquiry)clear;
    }
    """
    ctypedef int (*ct_visitproc)(PyObject *, void *) noexcept
    int ct_visit_type(PyObject *o, ct_visitproc visit, void *arg) noexcept
    void ct_install_gc(object type, void *traverse, void *clear) noexcept


cdef enum:
    MIN_CAPACITY = 16
    MIN_EPOCHS = 64
    MAX_CAPACITY = 1 << 30   # c.MAX_CAPACITY: slot positions and slab indices stay 32-bit
    WAKE_STEPS = 64          # c._WAKE_STEPS
    MAX_RESTARTS = 1000      # c.MAX_RESTARTS: lookups restarted by a changing table before RuntimeError

# A lookup's error return: neither a position, NO_SLOT nor COLLIDED.
cdef extern from *:
    const uint64_t LOOKUP_ERROR "(CT_EMPTY_KEY - 2)"
cdef int64_t MAX_TICK = c.MAX_TICK
cdef double MAX_TICK_F = <double>c.MAX_TICK
cdef double TICK_SLACK = c.TICK_SLACK

cdef object Expired = c.Expired
cdef object TableFull = c.TableFull
cdef str IDLE = "idle"
cdef str DEADLINE = "deadline"
cdef object _MISSING = object()


cdef inline uint64_t key_hash(object key, bint *fast) except 0xFFFFFFFFFFFFFFFF:
    """The key's hash as 64 bits; ``fast`` says whether it is an int of the fast path (then hash == key).

    Runs the key's ``__hash__`` (any exception propagates); an exact int in
    [0, FAST_LIMIT) is its own hash and is read in place.
    """
    cdef uint64_t k
    cdef Py_hash_t cached
    if PyLong_CheckExact(key):
        if small_key(key, &k) and k < FAST_LIMIT:
            fast[0] = True
            return k
        k = long_as_u64(key)
        if k < FAST_LIMIT:
            fast[0] = True
            return k
        PyErr_Clear()  # negative or too large: an int like any other key
    fast[0] = False
    cached = str_hash(key)  # a str that was hashed before (a connection id): read in place
    if cached != -1:
        return <uint64_t>cached
    return key_hash_slow(key)


cdef uint64_t key_hash_slow(object key) except 0xFFFFFFFFFFFFFFFF:
    cdef Py_hash_t h = hash(key)
    return <uint64_t>h  # never EMPTY_KEY: a hash is never -1


cdef inline uint32_t capacity_for(Py_ssize_t n) noexcept:
    cdef uint32_t cap = MIN_CAPACITY
    while cap < n:
        cap <<= 1
    return cap


cdef inline int64_t tick_of(double ticks, bint round_up) noexcept:
    if ticks >= MAX_TICK_F:
        return MAX_TICK
    return <int64_t>(ceil(ticks) if round_up else floor(ticks))


# -- storage: allocated whole, so that every failure leaves the table as it was ----

cdef void arrays_free(SlabArrays *a, uint32_t capacity) noexcept:
    """Free the arrays (not the values and keys: the caller has moved or released them)."""
    big_free(a.timers, capacity * sizeof(Timers))
    big_free(a.values, capacity * sizeof(PyObject *))
    big_free(a.keys, capacity * sizeof(PyObject *))
    big_free(a.pos, capacity * sizeof(uint32_t))
    big_free(a.next, (NHEADS + <size_t>capacity) * sizeof(uint32_t))
    big_free(a.prev, (NHEADS + <size_t>capacity) * sizeof(uint32_t))
    a.timers = NULL
    a.values = NULL
    a.keys = NULL
    a.pos = NULL
    a.next = NULL
    a.prev = NULL


cdef int arrays_alloc(SlabArrays *a, uint32_t capacity, bint with_keys) except -1:
    """Arrays for ``capacity`` entries, the values (and keys) NULL; MemoryError (and nothing allocated) if not."""
    a.timers = <Timers *>big_alloc(capacity * sizeof(Timers))
    a.values = <PyObject **>big_calloc(capacity * sizeof(PyObject *))
    a.keys = <PyObject **>big_calloc(capacity * sizeof(PyObject *)) if with_keys else NULL
    a.pos = <uint32_t *>big_alloc(capacity * sizeof(uint32_t))
    a.next = <uint32_t *>big_alloc((NHEADS + <size_t>capacity) * sizeof(uint32_t))
    a.prev = <uint32_t *>big_alloc((NHEADS + <size_t>capacity) * sizeof(uint32_t))
    if a.timers and a.values and a.pos and a.next and a.prev and (a.keys or not with_keys):
        return 0
    arrays_free(a, capacity)
    raise MemoryError()


cdef void storage_free(Storage *s) noexcept:
    index_free(&s.index)
    arrays_free(&s.arrays, s.capacity)
    big_free(s.times, s.epochs * sizeof(double))
    s.times = NULL


cdef int storage_alloc(Storage *s, uint32_t capacity, uint64_t index_size, uint32_t epochs,
                       bint with_keys) except -1:
    """Storage for ``capacity`` entries; MemoryError (and nothing allocated) if not."""
    s.index.slots = NULL
    s.index.size = 0
    s.capacity = capacity
    s.epochs = epochs
    s.times = NULL
    arrays_alloc(&s.arrays, capacity, with_keys)
    s.times = <double *>big_alloc(epochs * sizeof(double))
    if s.times == NULL or index_alloc(&s.index, index_size) < 0:
        storage_free(s)
        raise MemoryError()
    return 0


cdef void release_values(PyObject **values, uint32_t capacity) noexcept:
    """Drop the references of a values (or keys) array no table uses any more (each ``__del__`` may call back)."""
    cdef uint32_t i
    cdef PyObject *value
    if values == NULL:
        return
    for i in range(capacity):
        value = values[i]
        if value != NULL:
            values[i] = NULL
            Py_XDECREF(value)


cdef void storage_release(Storage *s) noexcept:
    """Release the values and keys of storage a table let go of, then free it."""
    release_values(s.arrays.values, s.capacity)
    release_values(s.arrays.keys, s.capacity)
    storage_free(s)


@cython.final
@cython.no_gc_clear
@cython.collection_type("mapping")
cdef class ConnectionTable:
    """Key -> value, with last activity, idle timeout and deadline per entry.

    ConnectionTable(idle_timeout=60.0, *, resolution=0.1, now=None, max_size=None, capacity=0)

    Keys are any hashable objects, with a dict's semantics; exact ints in
    [0, 2**61 - 1) take the fast path.

    ``now=None`` starts the clock at ``time.monotonic()``, read once here.
    """

    def __cinit__(self, *args, **kwargs):
        # Usable even if __init__ is skipped or fails: the defaults of ConnectionTable().
        cdef Storage fresh
        cdef double now = c.check_start(None)
        self.idle_timeout_ = 60.0
        self.resolution_ = 0.1
        self.max_size_ = -1
        self.min_capacity = MIN_CAPACITY
        self.origin = now
        storage_alloc(&fresh, MIN_CAPACITY, index_size_for(MIN_CAPACITY), MIN_EPOCHS, False)
        self._install(&fresh, now)
        storage_free(&fresh)  # the zeroed storage the object started with

    def __init__(self, idle_timeout=60.0, *, resolution=0.1, now=None, max_size=None, capacity=0):
        # Every argument is checked before anything changes: a failed __init__ changes nothing.
        cdef double idle = c.check_timeout("idle_timeout", idle_timeout)
        cdef double res = c.check_resolution(resolution)
        cdef double start = c.check_start(now)
        cdef Py_ssize_t max_size_ = c.check_max_size(max_size)
        cdef uint32_t min_capacity = capacity_for(c.check_size("capacity", capacity, minimum=0))
        cdef Storage fresh
        storage_alloc(&fresh, min_capacity, index_size_for(min_capacity), MIN_EPOCHS, False)
        self.idle_timeout_ = idle
        self.resolution_ = res
        self.origin = start
        self.max_size_ = max_size_
        self.min_capacity = min_capacity
        self.wheel.elapsed = 0
        self._install(&fresh, start)
        storage_release(&fresh)  # a table initialised twice drops its old values last

    def __dealloc__(self):
        cdef Storage own
        self._storage(&own)
        storage_release(&own)  # nothing can reach the table now: each __del__ runs on its own

    cdef void _storage(self, Storage *out) noexcept:
        """Describe the table's arrays as a Storage (nothing changes)."""
        out.index = self.index
        out.arrays.timers = self.slab.timers
        out.arrays.values = self.slab.values
        out.arrays.keys = self.slab.keys
        out.arrays.pos = self.slab.pos
        out.arrays.next = self.wheel.next
        out.arrays.prev = self.wheel.prev
        out.capacity = self.slab.capacity
        out.times = self.clock.times
        out.epochs = self.clock.capacity

    cdef void _install(self, Storage *fresh, double now) noexcept:
        """Make ``fresh`` the (empty) storage, clock at ``now``; hand the old storage back in ``fresh``."""
        cdef Storage old
        self._storage(&old)
        self.index = fresh.index
        self.slab.timers = fresh.arrays.timers
        self.slab.values = fresh.arrays.values
        self.slab.keys = fresh.arrays.keys
        self.slab.pos = fresh.arrays.pos
        self.slab.capacity = fresh.capacity
        self.slab.free_head = NIL
        slab_thread_free(&self.slab, 0, fresh.capacity)
        self.wheel.next = fresh.arrays.next
        self.wheel.prev = fresh.arrays.prev
        wheel_reset(&self.wheel, fresh.capacity)
        self.clock.times = fresh.times
        self.clock.capacity = fresh.epochs
        self.clock.count = 1
        self.clock.times[0] = now
        self.length = 0
        self.version += 1
        self.layout += 1
        fresh[0] = old

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
    cdef inline uint64_t _locate(self, object key, uint64_t h, bint fast) except 0xFFFFFFFFFFFFFFFD:
        """The position of the slot of ``key`` (hashed to ``h``), or NO_SLOT.

        An int of the fast path is one probe of C, and so is the very key
        object stored (a server touches the id it registered) or a key whose
        hash no stored key has; anything else (a slot of the same hash and
        another object) is compared as a dict does.
        """
        cdef uint64_t pos
        if fast:
            pos = index_find_int(&self.index, h)
        else:  # identity first: no call (keys is only read at a slot of another key object)
            pos = index_find_same(&self.index, h, <void *>key, <void **>self.slab.keys)
        if pos != COLLIDED:
            return pos
        return self._find_general(key, h)

    cdef uint64_t _find_general(self, object key, uint64_t h) except 0xFFFFFFFFFFFFFFFD:
        """The dict lookup: on each slot of hash ``h``, identity, then ``==`` (stored key first).

        ``==`` may run Python code that changes the table: the stored key is
        held meanwhile, and the probe starts again whenever ``layout`` moved.
        """
        cdef uint64_t pos, layout
        cdef uint32_t ref
        cdef int eq
        cdef int restarts = 0
        cdef PyObject *stored
        while True:
            layout = self.layout
            pos = index_home(&self.index, h)
            while True:
                found = self.index.slots[pos].hash
                if found == EMPTY_KEY:
                    return NO_SLOT
                if found == h:
                    ref = self.index.slots[pos].ref
                    if ref & INT_KEY:
                        stored = long_from_u64(h)  # the int the slot stands for
                        if stored == NULL:
                            raise MemoryError()
                    else:
                        stored = self.slab.keys[ref]
                        if stored == <PyObject *>key:
                            return pos
                        Py_XINCREF(stored)  # the comparison may remove it from the table
                    eq = PyObject_RichCompareBool(stored, <PyObject *>key, Py_EQ)
                    Py_XDECREF(stored)
                    if eq < 0:
                        return LOOKUP_ERROR
                    if self.layout != layout:
                        break
                    if eq:
                        return pos
                pos = index_next(&self.index, pos)
            restarts += 1
            if restarts > MAX_RESTARTS:
                c.refuse_restarts()

    cdef uint64_t _find(self, object key) except 0xFFFFFFFFFFFFFFFD:
        """The position of ``key``'s slot; KeyError if absent."""
        cdef bint fast
        cdef uint64_t h = key_hash(key, &fast)
        cdef uint64_t pos = self._locate(key, h, fast)
        if pos == NO_SLOT:
            raise KeyError(key)
        return pos

    cdef inline PyObject *_key_new(self, uint32_t i) noexcept:
        """A new reference to entry ``i``'s key; NULL (MemoryError set) when out of memory."""
        cdef Slot *slot = &self.index.slots[self.slab.pos[i]]
        cdef PyObject *key
        if slot.ref & INT_KEY:
            return long_from_u64(slot.hash)
        key = self.slab.keys[i]
        Py_XINCREF(key)
        return key

    cdef double _due(self, uint32_t i) noexcept:
        cdef Slot *slot = &self.index.slots[self.slab.pos[i]]
        cdef double idle_due = self.clock.times[slot.epoch] + self.slab.timers[i].idle
        cdef double deadline = self.slab.timers[i].deadline
        return idle_due if idle_due < deadline else deadline

    def __len__(self):
        return self.length

    def __contains__(self, key):
        cdef bint fast
        cdef uint64_t h = key_hash(key, &fast)
        return self._locate(key, h, fast) != NO_SLOT

    def __getitem__(self, key):
        return <object>self.slab.values[slot_slab(&self.index.slots[self._find(key)])]

    def get(self, key, default=None, /):
        cdef bint fast
        cdef uint64_t h = key_hash(key, &fast)
        cdef uint64_t pos = self._locate(key, h, fast)
        if pos == NO_SLOT:
            return default
        return <object>self.slab.values[slot_slab(&self.index.slots[pos])]

    def last_activity(self, key, /):
        """When the entry last saw activity, exactly as ``now`` was then."""
        return self.clock.times[self.index.slots[self._find(key)].epoch]

    def due(self, key, /):
        """``min(last_activity + idle_timeout, deadline)``; ``math.inf`` if never."""
        return self._due(slot_slab(&self.index.slots[self._find(key)]))

    cdef uint32_t _next_live(self, uint32_t i) noexcept:
        while i < self.slab.capacity:
            if not slab_is_free(&self.slab, i):
                return i
            i += 1
        return NIL

    def __iter__(self):
        """The keys, in an arbitrary order that stays the same while the table is not changed.

        Slab order: the order of the entries' storage, in which a new entry
        takes the lowest free place (not insertion order).
        """
        return _KeyIterator(self)

    def keys(self):
        return KeysView(self)

    def values(self):
        return ValuesView(self)

    def items(self):
        return ItemsView(self)

    # ``reversed(t)`` is a TypeError, as for any Mapping: without this the
    # sequence protocol would "reverse" t[len-1] .. t[0], values not keys.
    __reversed__ = None

    # -- activity: the hot path -------------------------------------------
    def touch(self, key, /):
        """Record activity on ``key`` at ``now``. KeyError if absent."""
        cdef bint fast
        cdef uint64_t h = key_hash(key, &fast)
        cdef uint64_t pos
        if fast:  # the hot path, inlined: one probe, one store
            pos = index_find_int(&self.index, h)
            if pos < COLLIDED:
                self.index.slots[pos].epoch = clock_epoch(&self.clock)
                return
        pos = self._locate(key, h, fast)
        if pos == NO_SLOT:
            raise KeyError(key)
        self.index.slots[pos].epoch = clock_epoch(&self.clock)

    def touch_many(self, keys, /):
        """Touch every present key of ``keys``; return how many were present.

        All or nothing: every key is taken from ``keys`` and hashed before any
        is looked up, and every one is looked up before any is touched (so an
        iterable or an ``__eq__`` that changes the table as it goes sees none
        of its keys touched yet, and one that raises leaves none touched).
        """
        cdef Py_ssize_t n = 0, room = 0, j, g, found = 0
        cdef uint64_t *batch = NULL   # per key: its hash, whether it is general, its slot's position
        cdef uint64_t *grown
        cdef uint64_t layout, pos
        cdef uint32_t epoch
        cdef bint fast
        cdef int restarts = 0
        cdef list general = []        # the keys that need ``==``, in order (the others are ints)
        try:
            for key in keys:  # may run Python code: only collect here
                if n == room:
                    room = room * 2 if room else 256
                    grown = <uint64_t *>PyMem_Realloc(batch, room * 3 * sizeof(uint64_t))
                    if grown == NULL:
                        raise MemoryError()
                    batch = grown
                batch[3 * n] = key_hash(key, &fast)
                batch[3 * n + 1] = not fast
                if not fast:
                    general.append(key)
                n += 1
            while True:  # locate every key, in order; again if the table moved under an __eq__
                layout = self.layout
                g = 0
                for j in range(n):
                    if batch[3 * j + 1]:
                        pos = self._find_general(general[g], batch[3 * j])
                        g += 1
                    else:
                        pos = index_find_int(&self.index, batch[3 * j])
                        if pos == COLLIDED:  # an int whose hash another key shares
                            pos = self._find_general(batch[3 * j], batch[3 * j])
                    batch[3 * j + 2] = pos
                if self.layout == layout:
                    break
                restarts += 1
                if restarts > MAX_RESTARTS:
                    c.refuse_restarts()
            # Every key is located and nothing moved since: no Python code runs from here.
            epoch = clock_epoch(&self.clock)
            for j in range(n):
                pos = batch[3 * j + 2]
                if pos != NO_SLOT:
                    self.index.slots[pos].epoch = epoch
                    found += 1
            return found
        finally:
            PyMem_Free(batch)

    # -- insertion and removal --------------------------------------------
    def add(self, key, value=None, *, idle_timeout=None, deadline=None):
        """Insert ``key``; KeyError if present, TableFull if ``len == max_size``."""
        cdef bint fast
        cdef uint64_t h = key_hash(key, &fast)
        cdef double idle = self.idle_timeout_ if idle_timeout is None else c.check_timeout("idle_timeout", idle_timeout)
        cdef double when = INFINITY if deadline is None else c.check_deadline(deadline)
        if self._locate(key, h, fast) != NO_SLOT:
            c.refuse_present(key)
        self._insert(h, fast, key, value, idle, when)

    def __setitem__(self, key, value):
        cdef bint fast
        cdef uint64_t h = key_hash(key, &fast)
        cdef uint64_t pos = self._locate(key, h, fast)
        cdef uint32_t i
        cdef PyObject *old
        if pos == NO_SLOT:
            self._insert(h, fast, key, value, self.idle_timeout_, INFINITY)
        else:
            i = slot_slab(&self.index.slots[pos])
            old = self.slab.values[i]
            Py_INCREF(value)
            self.slab.values[i] = <PyObject *>value
            Py_XDECREF(old)  # last: the table already holds the new value

    cdef uint32_t _insert(self, uint64_t h, bint fast, object key, object value,
                          double idle, double deadline) except 0xFFFFFFFF:
        """Insert a key known to be absent; return its slab index. Each step that may fail comes before the first change."""
        if self.length == self.max_size_:
            raise TableFull(f"the table holds max_size={self.max_size_} entries")
        if self.slab.free_head == NIL:
            self._grow_slab()
        if not fast and self.slab.keys == NULL:
            self._alloc_keys()
        if index_over_full(&self.index, self.length + 1):
            if index_rehash(&self.index, index_size_for(self.length + 1), self.slab.pos) < 0:
                raise MemoryError()
            self.layout += 1
        cdef uint32_t i = slab_pop_free(&self.slab)
        self.slab.timers[i].idle = idle
        self.slab.timers[i].deadline = deadline
        index_insert(&self.index, h, clock_epoch(&self.clock), (i | INT_KEY) if fast else i, self.slab.pos)
        if not fast:
            Py_INCREF(key)
            self.slab.keys[i] = <PyObject *>key
        Py_INCREF(value)
        self.slab.values[i] = <PyObject *>value
        self.length += 1
        self.version += 1
        self.layout += 1
        self._arm(i)
        return i

    cdef int _alloc_keys(self) except -1:
        """Make the key array (the first key that is not a fast-path int). MemoryError: nothing changes."""
        cdef PyObject **keys = <PyObject **>big_calloc(self.slab.capacity * sizeof(PyObject *))
        if keys == NULL:
            raise MemoryError()
        self.slab.keys = keys
        return 0

    cdef void _swap_arrays(self, SlabArrays *arrays, uint32_t capacity) noexcept:
        """Move the slab and the wheel links into ``arrays`` (sized ``capacity``); free the old ones.

        The first ``min(old, new)`` entries are copied: values move without a
        reference changing hands. New entries are unlinked (the caller
        threads them onto the free list).
        """
        cdef uint32_t old = self.slab.capacity
        cdef uint32_t keep = old if old < capacity else capacity
        cdef uint32_t i
        cdef SlabArrays previous
        memcpy(arrays.timers, self.slab.timers, keep * sizeof(Timers))
        memcpy(arrays.values, self.slab.values, keep * sizeof(PyObject *))
        if arrays.keys != NULL:
            memcpy(arrays.keys, self.slab.keys, keep * sizeof(PyObject *))
        memcpy(arrays.pos, self.slab.pos, keep * sizeof(uint32_t))
        memcpy(arrays.next, self.wheel.next, (NHEADS + <size_t>keep) * sizeof(uint32_t))
        memcpy(arrays.prev, self.wheel.prev, (NHEADS + <size_t>keep) * sizeof(uint32_t))
        for i in range(keep, capacity):
            arrays.next[NHEADS + i] = NIL
        previous.timers = self.slab.timers
        previous.values = self.slab.values
        previous.keys = self.slab.keys
        previous.pos = self.slab.pos
        previous.next = self.wheel.next
        previous.prev = self.wheel.prev
        self.slab.timers = arrays.timers
        self.slab.values = arrays.values
        self.slab.keys = arrays.keys
        self.slab.pos = arrays.pos
        self.wheel.next = arrays.next
        self.wheel.prev = arrays.prev
        self.slab.capacity = capacity
        self.layout += 1
        arrays_free(&previous, old)

    cdef int _grow_slab(self) except -1:
        """Double the slab. On MemoryError the table is unchanged."""
        cdef uint32_t old = self.slab.capacity
        cdef uint32_t cap = old * 2
        cdef SlabArrays arrays
        if cap > MAX_CAPACITY:
            raise MemoryError(f"a connection table holds at most {MAX_CAPACITY} entries")
        arrays_alloc(&arrays, cap, self.slab.keys != NULL)
        self._swap_arrays(&arrays, cap)
        slab_thread_free(&self.slab, old, cap)
        return 0

    cdef PyObject *_unindex(self, uint32_t i) noexcept:
        """Take unlinked entry ``i`` out of the index and the slab.

        Its value is the caller's business; its key object (NULL for an int
        key) is returned, owned, for the caller to release last.
        """
        cdef PyObject *key = NULL
        if self.slab.keys != NULL:
            key = self.slab.keys[i]
            self.slab.keys[i] = NULL
        index_remove_at(&self.index, self.slab.pos[i], self.slab.pos)
        self.slab.values[i] = NULL
        slab_push_free(&self.slab, i)
        self.length -= 1
        self.layout += 1
        return key

    cdef object _remove_at(self, uint64_t pos, PyObject **key):
        """Unlink the entry at slot ``pos`` from everything; return its value and (in ``key``) its key object, for the caller to drop last."""
        cdef uint32_t i = slot_slab(&self.index.slots[pos])
        cdef PyObject *taken = self.slab.values[i]
        wheel_unlink(&self.wheel, NHEADS + i)
        key[0] = self._unindex(i)
        self.version += 1
        self._maybe_shrink()
        value = <object>taken
        Py_DECREF(value)  # the table's reference now belongs to ``value``: nothing is released here
        return value

    cdef void _maybe_shrink(self) noexcept:
        """Give memory back once 7/8 of it is unused. Best effort: out of memory, nothing changes.

        The slab compacts into a quarter or less of its capacity: live entries
        above the new capacity move into free entries below it, taking their
        wheel links, values and index back-pointers along. The new arrays
        are allocated before anything moves.
        """
        cdef uint32_t cap = self.slab.capacity
        cdef uint32_t lo = 0
        cdef uint32_t hi, i
        cdef PyObject *moved
        cdef SlabArrays arrays
        cdef uint64_t size
        cdef Slot *slot
        if <uint64_t>self.length * 8 < self.index.size:
            size = max(index_size_for(self.length * 2), index_size_for(self.min_capacity))
            if size < self.index.size:
                if index_rehash(&self.index, size, self.slab.pos) == 0:
                    self.layout += 1
        if self.length * 8 >= cap or cap <= self.min_capacity:
            return
        cap = capacity_for(self.length * 2)
        if cap < self.min_capacity:
            cap = self.min_capacity
        try:
            arrays_alloc(&arrays, cap, self.slab.keys != NULL)
        except MemoryError:
            return  # keep the larger arrays
        for hi in range(cap, self.slab.capacity):
            if slab_is_free(&self.slab, hi):
                continue
            while not slab_is_free(&self.slab, lo):
                lo += 1
            self.slab.timers[lo] = self.slab.timers[hi]
            self.slab.pos[lo] = self.slab.pos[hi]
            slot = &self.index.slots[self.slab.pos[lo]]
            slot.ref = (slot.ref & INT_KEY) | lo
            wheel_move_node(&self.wheel, NHEADS + hi, NHEADS + lo)
            moved = self.slab.values[hi]  # a pointer move: no reference changes hands
            self.slab.values[hi] = NULL
            self.slab.values[lo] = moved
            if self.slab.keys != NULL:
                moved = self.slab.keys[hi]
                self.slab.keys[hi] = NULL
                self.slab.keys[lo] = moved
            lo += 1
        self._swap_arrays(&arrays, cap)
        self.slab.free_head = NIL
        i = cap
        while i > 0:
            i -= 1
            if slab_is_free(&self.slab, i):
                slab_push_free(&self.slab, i)

    def __delitem__(self, key):
        cdef PyObject *taken = NULL
        value = self._remove_at(self._find(key), &taken)
        del value  # the value, then the key: each __del__ finds the table consistent
        Py_XDECREF(taken)

    def pop(self, key, default=_MISSING, /):
        """Remove ``key`` and return its value; ``default`` (or KeyError) if absent."""
        cdef bint fast
        cdef uint64_t h = key_hash(key, &fast)
        cdef uint64_t pos = self._locate(key, h, fast)
        cdef PyObject *taken = NULL
        if pos != NO_SLOT:
            value = self._remove_at(pos, &taken)
            Py_XDECREF(taken)  # the caller holds the value: the key goes first
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def setdefault(self, key, default=None, /):
        """``t[key]`` if present, else insert ``default`` (the table's timers) and return it."""
        cdef bint fast
        cdef uint64_t h = key_hash(key, &fast)
        cdef uint64_t pos = self._locate(key, h, fast)
        if pos != NO_SLOT:
            return <object>self.slab.values[slot_slab(&self.index.slots[pos])]
        self._insert(h, fast, key, default, self.idle_timeout_, INFINITY)
        return default

    def popitem(self):
        """Remove and return a ``(key, value)`` pair: the first in iteration order. KeyError if empty."""
        cdef PyObject *pair = tuple_new(2)  # may run the GC: before looking
        cdef PyObject *number
        cdef PyObject *taken = NULL
        cdef uint32_t i
        if pair == NULL:
            raise MemoryError()
        i = self._next_live(0)
        if i == NIL:
            Py_XDECREF(pair)
            raise KeyError(c.POPITEM_EMPTY)
        number = self._key_new(i)  # an int is not GC-tracked; any other key is a new reference
        if number == NULL:
            Py_XDECREF(pair)
            raise MemoryError()
        tuple_set_raw(pair, 0, number)
        value = self._remove_at(self.slab.pos[i], &taken)  # nothing after this can fail
        Py_XDECREF(taken)  # the pair holds the key too: nothing is released
        Py_INCREF(value)
        tuple_set_raw(pair, 1, <PyObject *>value)
        result = <object>pair
        Py_DECREF(result)  # ``result`` owns the tuple now
        return result

    def update(self, other=(), /, **kwds):
        """Store each pair of ``other`` (a mapping or pairs) and ``kwds``, as ``MutableMapping.update``.

        All or nothing: every pair is collected and every key hashed first,
        then every key is located (and the new ones compared among
        themselves, as a dict would on its own insertions) with no change
        made; room for the new keys (and ``max_size``) is made sure of before
        the first store, and the values replaced are released last.
        """
        cdef list pairs = c.update_items(other, kwds)
        cdef Py_ssize_t n = len(pairs), j, fresh
        cdef Planned *plan = <Planned *>PyMem_Malloc(n * sizeof(Planned) + 1)
        cdef Planned *absent = <Planned *>PyMem_Malloc(n * sizeof(Planned) + 1)
        cdef PyObject **replaced = <PyObject **>PyMem_Calloc(n + 1, sizeof(PyObject *))
        cdef uint32_t i
        cdef bint general = False
        cdef tuple pair
        try:
            if plan == NULL or absent == NULL or replaced == NULL:
                raise MemoryError()
            for j in range(n):
                plan[j].hash = key_hash((<tuple>pairs[j])[0], &plan[j].fast)
                plan[j].j = j
            fresh = self._plan_update(pairs, plan, absent, n, &general)
            # Every key is located and nothing moved since: no Python code runs from here.
            if self.max_size_ >= 0 and self.length + fresh > self.max_size_:
                raise TableFull(f"the table holds max_size={self.max_size_} entries")
            while self.slab.capacity - self.length < fresh:
                self._grow_slab()
            if general and self.slab.keys == NULL:
                self._alloc_keys()
            if index_over_full(&self.index, self.length + fresh):
                if index_rehash(&self.index, index_size_for(self.length + fresh), self.slab.pos) < 0:
                    raise MemoryError()
                self.layout += 1
            for j in range(n):  # room is made: nothing here can fail
                pair = <tuple>pairs[j]
                if plan[j].first == j:
                    plan[j].slab = self._insert(plan[j].hash, plan[j].fast, pair[0], pair[1],
                                                self.idle_timeout_, INFINITY)
                else:
                    i = plan[j].slab if plan[j].first < 0 else plan[plan[j].first].slab
                    replaced[j] = self.slab.values[i]
                    Py_INCREF(pair[1])
                    self.slab.values[i] = <PyObject *>pair[1]
        finally:
            PyMem_Free(plan)
            PyMem_Free(absent)
            if replaced != NULL:
                for j in range(n):  # last: each __del__ finds the table consistent
                    Py_XDECREF(replaced[j])
                PyMem_Free(replaced)

    cdef Py_ssize_t _plan_update(self, list pairs, Planned *plan, Planned *absent, Py_ssize_t n,
                                 bint *general) except -1:
        """Say for each pair of an update where its value goes; return how many keys are new.

        ``plan[j].first`` is -1 for a present key (at ``plan[j].slab``), ``j``
        for a new key, and for a new key equal to an earlier new one, that
        one's index. Runs the keys' ``__eq__``: starts again whenever the
        table's layout moved meanwhile. ``general``: some new key needs the
        key array.
        """
        cdef uint64_t layout, pos
        cdef Py_ssize_t j, m, e, a, b, na, fresh
        cdef int eq
        cdef int restarts = 0
        while True:
            layout = self.layout
            na = 0
            for j in range(n):
                pos = self._locate((<tuple>pairs[j])[0], plan[j].hash, plan[j].fast)
                if pos == NO_SLOT:
                    plan[j].first = j
                    absent[na] = plan[j]
                    na += 1
                else:
                    plan[j].first = -1
                    plan[j].slab = slot_slab(&self.index.slots[pos])
            sort_planned(absent, na)
            a = 0
            while a < na:  # each run of new keys of one hash: which are equal?
                b = a + 1
                while b < na and absent[b].hash == absent[a].hash:
                    b += 1
                for m in range(a + 1, b):
                    for e in range(a, m):
                        if absent[e].first != absent[e].j:
                            continue  # itself equal to an earlier one
                        if absent[e].fast and absent[m].fast:
                            eq = 1  # two ints of one hash on the fast path are one int
                        else:
                            earlier = (<tuple>pairs[absent[e].j])[0]
                            later = (<tuple>pairs[absent[m].j])[0]
                            eq = PyObject_RichCompareBool(<PyObject *>earlier, <PyObject *>later, Py_EQ)
                            if eq < 0:
                                return -1
                        if eq:
                            absent[m].first = absent[e].j
                            plan[absent[m].j].first = absent[e].j
                            break
                a = b
            if self.layout == layout:
                break
            restarts += 1
            if restarts > MAX_RESTARTS:
                c.refuse_restarts()
        fresh = 0
        general[0] = False
        for m in range(na):
            if absent[m].first == absent[m].j:
                fresh += 1
                if not absent[m].fast:
                    general[0] = True
        return fresh

    def clear(self):
        """Remove every entry; the values are released after the table is empty."""
        self._empty(clock_now(&self.clock))

    cdef int _empty(self, double now) except -1:
        """Empty the table with its clock at ``now``; the old values are released last."""
        cdef Storage fresh
        storage_alloc(&fresh, self.min_capacity, index_size_for(self.min_capacity), MIN_EPOCHS, False)
        self._install(&fresh, now)
        storage_release(&fresh)
        return 0

    # -- copies --------------------------------------------------------------
    def copy(self):
        """A new, independent table with the same entries, timers, settings and clock.

        The copy is exact (its wheel is laid out as this table's is), so the
        two expire the same entries at the same calls from then on.
        """
        cdef ConnectionTable clone = ConnectionTable.__new__(ConnectionTable)  # may run the GC: first
        cdef Storage fresh, previous
        cdef uint32_t i
        storage_alloc(&fresh, self.slab.capacity, self.index.size, self.clock.capacity, self.slab.keys != NULL)
        # From here no Python code runs: the sizes read above still hold.
        memcpy(fresh.index.slots, self.index.slots, self.index.size * sizeof(Slot))
        memcpy(fresh.arrays.timers, self.slab.timers, self.slab.capacity * sizeof(Timers))
        memcpy(fresh.arrays.pos, self.slab.pos, self.slab.capacity * sizeof(uint32_t))
        memcpy(fresh.arrays.next, self.wheel.next, (NHEADS + <size_t>self.slab.capacity) * sizeof(uint32_t))
        memcpy(fresh.arrays.prev, self.wheel.prev, (NHEADS + <size_t>self.slab.capacity) * sizeof(uint32_t))
        memcpy(fresh.times, self.clock.times, self.clock.count * sizeof(double))
        for i in range(self.slab.capacity):
            fresh.arrays.values[i] = self.slab.values[i]
            Py_XINCREF(self.slab.values[i])
            if fresh.arrays.keys != NULL:
                fresh.arrays.keys[i] = self.slab.keys[i]
                Py_XINCREF(self.slab.keys[i])
        clone._storage(&previous)  # the clone's initial storage: empty, freed below
        clone.index = fresh.index
        clone.slab = self.slab  # capacity and free list (the arrays are replaced next)
        clone.slab.timers = fresh.arrays.timers
        clone.slab.values = fresh.arrays.values
        clone.slab.keys = fresh.arrays.keys
        clone.slab.pos = fresh.arrays.pos
        clone.wheel = self.wheel  # position, occupancy and bounds (the links are replaced next)
        clone.wheel.next = fresh.arrays.next
        clone.wheel.prev = fresh.arrays.prev
        clone.clock = self.clock
        clone.clock.times = fresh.times
        clone.length = self.length
        clone.max_size_ = self.max_size_
        clone.min_capacity = self.min_capacity
        clone.origin = self.origin
        clone.resolution_ = self.resolution_
        clone.idle_timeout_ = self.idle_timeout_
        storage_free(&previous)
        return clone

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo, /):
        return c.deepcopy_table(self, memo)

    def __reduce_ex__(self, protocol, /):
        return c.refuse_pickle(self)

    def __reduce__(self):
        return c.refuse_pickle(self)

    # -- timers ------------------------------------------------------------
    def set_deadline(self, key, when, /):
        """Set an absolute deadline on the table's clock; ``None`` clears it."""
        cdef bint fast
        cdef uint64_t h = key_hash(key, &fast)
        cdef double deadline = c.check_deadline(when)
        # Converted: from the lookup's answer on, no Python code runs.
        cdef uint64_t pos = self._locate(key, h, fast)
        if pos == NO_SLOT:
            raise KeyError(key)
        cdef uint32_t i = slot_slab(&self.index.slots[pos])
        self.slab.timers[i].deadline = deadline
        wheel_unlink(&self.wheel, NHEADS + i)
        self._arm(i)

    def set_idle_timeout(self, key, seconds, /):
        """Set the entry's own idle timeout; ``None`` restores the table's default."""
        cdef bint fast
        cdef uint64_t h = key_hash(key, &fast)
        cdef double idle = self.idle_timeout_ if seconds is None else c.check_timeout("idle_timeout", seconds)
        # Converted: from the lookup's answer on, no Python code runs.
        cdef uint64_t pos = self._locate(key, h, fast)
        if pos == NO_SLOT:
            raise KeyError(key)
        cdef uint32_t i = slot_slab(&self.index.slots[pos])
        self.slab.timers[i].idle = idle
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
        """Make ``now`` the current epoch, renumbering the epochs in use when the array is full.

        On MemoryError the clock is where it was (a renumbering that happened
        is invisible: every entry keeps its time).
        """
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
                if self.index.slots[pos].hash != EMPTY_KEY:
                    renumber[self.index.slots[pos].epoch] = 0
            count = 0
            for epoch in range(clock.count):  # keep the order: times stay increasing
                if renumber[epoch] != NIL:
                    clock.times[count] = clock.times[epoch]
                    renumber[epoch] = count
                    count += 1
            for pos in range(self.index.size):
                if self.index.slots[pos].hash != EMPTY_KEY:
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

    cdef int _check_time(self, double now) except -1:
        """The clock may move to ``now`` (finite): not back, not past the end of the tick space."""
        cdef double current = clock_now(&self.clock)
        if not (current <= now and (now - self.origin) / self.resolution_ < MAX_TICK_F):
            c.refuse_time(now, current, self.origin, self.resolution_)
        return 0

    def expire(self, now, limit=None):
        """Advance the clock to ``now``; remove and return the entries that are due.

        At most ``limit`` entries are returned; the rest come back on the next
        call. ``limit=0`` only advances the clock. Under MemoryError no entry
        is removed (the clock may have moved to ``now``).
        """
        cdef double t
        if PyFloat_CheckExact(now) and isfinite(PyFloat_AS_DOUBLE(now)):
            t = PyFloat_AS_DOUBLE(now)
        else:
            t = c.check_time("now", now)
        cdef Py_ssize_t cap = -1 if limit is None else c.check_limit(limit)
        # Every argument is converted: the clock is read only now, and no Python
        # code runs from here until the result is complete.
        self._check_time(t)
        self._advance_clock(t)
        # A loop may wake a hair before the time next_expiry() named: TICK_SLACK
        # lets that call still take the slot (dues are then checked exactly).
        cdef int64_t target = tick_of((t - self.origin) / self.resolution_ + TICK_SLACK, False)
        cdef Harvested *harvest = NULL
        cdef PyObject *result = NULL
        cdef Py_ssize_t n, j
        cdef uint32_t i
        # Building the Expired tuples allocates GC-tracked objects while the due
        # entries are half taken out: the collector (hence any __del__) waits.
        cdef bint collecting = PyGC_Disable()
        n = self._harvest(t, target, cap, &harvest)
        if n >= 0:
            result = list_new(n)
            if result == NULL:
                self._return_harvest(harvest, n)
                n = -1
        if n >= 0:
            for j in range(n):  # commit: nothing here can fail
                i = harvest[j].slab
                Py_XDECREF(self.slab.values[i])  # the tuple holds the value (and key) too: nothing is released
                Py_XDECREF(self._unindex(i))
                list_set_raw(result, j, harvest[j].item)
            if n:
                self.version += 1
        if collecting:
            PyGC_Enable()
        PyMem_Free(harvest)
        if n < 0:
            PyErr_Clear()
            raise MemoryError()
        self._maybe_shrink()
        expired = <object>result
        Py_DECREF(expired)  # ``expired`` owns the new list now
        return expired

    cdef Py_ssize_t _harvest(self, double t, int64_t target, Py_ssize_t cap, Harvested **out) noexcept:
        """Phase 1 of ``expire``: unlink the due entries and build their Expired tuples.

        The entries stay in the index (nothing can look, no Python code runs).
        Returns how many, or -1 when out of memory: then every entry taken is
        back on the PENDING list, as if this call had not examined it.
        """
        cdef Harvested *harvest = NULL
        cdef Harvested *grown
        cdef Py_ssize_t n = 0, room = 0
        cdef uint32_t node, head, i
        cdef int64_t start
        cdef double due
        cdef PyObject *item
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
                item = NULL
                if n == room:
                    grown = <Harvested *>PyMem_Realloc(harvest, (room * 2 if room else 64) * sizeof(Harvested))
                    if grown != NULL:
                        harvest = grown
                        room = room * 2 if room else 64
                if n < room:
                    item = ct_expired_new(
                        <PyTypeObject *>Expired, self._key_new(i), self.slab.values[i],
                        <PyObject *>(DEADLINE if self.slab.timers[i].deadline == due else IDLE))
                if item == NULL:  # out of memory: give back this entry, then the others
                    wheel_link(&self.wheel, node, PENDING)
                    self._return_harvest(harvest, n)
                    PyMem_Free(harvest)
                    out[0] = NULL
                    return -1
                harvest[n].slab = i
                harvest[n].item = item
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
        out[0] = harvest
        return n

    cdef void _return_harvest(self, Harvested *harvest, Py_ssize_t n) noexcept:
        """Undo ``_harvest``: the entries go back to PENDING in their order, their tuples are dropped.

        A tuple's release drops a reference to a key and to a value the
        table still holds (or an int it made): no Python code runs.
        """
        cdef Py_ssize_t j = n
        while j > 0:
            j -= 1
            wheel_link(&self.wheel, NHEADS + harvest[j].slab, PENDING)
            Py_XDECREF(harvest[j].item)
            harvest[j].item = NULL

    cdef inline void _prefetch_pending(self) noexcept:
        """Start loading what the next two PENDING entries will need (a mass expiry misses the cache on each)."""
        cdef uint32_t first = self.wheel.prev[PENDING]
        cdef uint32_t second
        if first == PENDING:
            return
        cdef PyObject **values = self.slab.values
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
        """When to call :meth:`expire` next; None if nothing can ever expire.

        ``now`` when work is waiting at the current time; otherwise the first
        time at which ``expire`` reaches the earliest armed tick, so a loop
        sleeping until it never spins (the twin computes the same float).
        """
        cdef int64_t start, earliest
        cdef uint32_t head
        cdef int steps
        cdef double now = clock_now(&self.clock)
        cdef double when
        if self.wheel.prev[PENDING] != PENDING:
            return now
        head = wheel_next_slot(&self.wheel, &start)
        if head == NIL:
            return None
        earliest = self.wheel.earliest[head]
        if earliest >= MAX_TICK:  # a due time past the end of the table's time never comes
            return None
        if earliest <= tick_of((now - self.origin) / self.resolution_ + TICK_SLACK, False):
            return now
        when = self.origin + <double>earliest * self.resolution_
        for steps in range(WAKE_STEPS):
            if tick_of((when - self.origin) / self.resolution_ + TICK_SLACK, False) >= earliest:
                break
            when = nextafter(when, INFINITY)
        return when

    # -- object protocol ---------------------------------------------------
    def __eq__(self, other):
        """Equal to any Mapping with the same keys and equal values, as a dict is."""
        return c.mapping_eq(self, other)

    def __ne__(self, other):
        equal = c.mapping_eq(self, other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # a mutable mapping, like dict

    def __repr__(self):
        return c.table_repr(self)

    def __sizeof__(self):
        return (
            sizeof(ConnectionTable)
            + self.index.size * sizeof(Slot)
            + self.slab.capacity * (sizeof(Timers) + sizeof(uint32_t) + sizeof(PyObject *))
            + (self.slab.capacity * sizeof(PyObject *) if self.slab.keys != NULL else 0)
            + (NHEADS + self.slab.capacity) * 2 * sizeof(uint32_t)
            + self.clock.capacity * sizeof(double)
        )


MutableMapping.register(ConnectionTable)


cdef int table_traverse(ConnectionTable self, ct_visitproc visit, void *arg) noexcept:
    """The collector sees each value and key object (in C arrays Cython knows nothing of)."""
    cdef int r = ct_visit_type(<PyObject *>self, visit, arg)
    cdef uint32_t i
    cdef PyObject **values = self.slab.values
    cdef PyObject **keys = self.slab.keys
    if r:
        return r
    for i in range(self.slab.capacity):
        if values[i] != NULL:
            r = visit(values[i], arg)
            if r:
                return r
        if keys != NULL and keys[i] != NULL:
            r = visit(keys[i], arg)
            if r:
                return r
    return 0


cdef int table_clear(ConnectionTable self) noexcept:
    """Break a garbage cycle through the table by emptying it, as clear() does.

    The table stays consistent (a value's ``__del__`` that calls back finds an
    empty table). Out of memory, nothing happens: the cycle waits for a later
    collection.
    """
    try:
        self._empty(clock_now(&self.clock))
    except MemoryError:
        pass
    return 0


ct_install_gc(ConnectionTable, <void *>table_traverse, <void *>table_clear)


@cython.final
cdef class _KeyIterator:
    """Iterator over a table's keys; exhausted for good once it has ended or raised."""

    cdef ConnectionTable table   # None once exhausted
    cdef uint32_t position
    cdef uint64_t version

    def __cinit__(self, ConnectionTable table not None):
        self.table = table
        self.version = table.version

    def __iter__(self):
        return self

    def __next__(self):
        cdef ConnectionTable table = self.table
        if table is None:
            raise StopIteration
        if table.version != self.version:
            self.table = None  # exhausted from now on, as a generator is after an error
            raise RuntimeError("ConnectionTable changed size during iteration")
        cdef uint32_t i = table._next_live(self.position)
        cdef PyObject *key
        if i == NIL:
            self.table = None
            raise StopIteration
        key = table._key_new(i)
        if key == NULL:
            raise MemoryError()
        self.position = i + 1
        result = <object>key
        Py_DECREF(result)  # ``result`` owns the new reference now
        return result

    def __reduce__(self):
        raise TypeError("cannot pickle '_KeyIterator' object")
