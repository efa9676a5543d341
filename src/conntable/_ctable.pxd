# The compiled connection table: the index (hot fields), the slab (cold
# fields and values), the wheel and the clock held together.

cimport cython
from cpython.ref cimport PyObject
from libc.stdint cimport int64_t, uint32_t, uint64_t

from conntable._clock cimport Clock
from conntable._index cimport Index
from conntable._slab cimport Slab, Timers
from conntable._wheel cimport Wheel


# The slab's arrays and the wheel's links, which grow and shrink together.
cdef struct SlabArrays:
    Timers *timers
    PyObject **values
    PyObject **keys      # NULL: no key objects (the table has none, or this storage is fresh)
    uint32_t *pos
    uint32_t *next
    uint32_t *prev


# update()'s plan for one pair.
cdef extern from *:
    """
    /* update()'s plan for one pair: its key's hash, and where its value goes. */
    typedef struct {
        uint64_t hash;
        Py_ssize_t j;      /* the pair's index in the update */
        Py_ssize_t first;  /* -1: the key is present (at ``slab``); j: new; else the earlier new pair it equals */
        uint32_t slab;
        int fast;          /* an int of the index's fast path */
    } ct_planned;
    static int ct_cmp_planned(const void *a, const void *b) {
        const ct_planned *x = (const ct_planned *)a, *y = (const ct_planned *)b;
        if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
        return x->j < y->j ? -1 : x->j > y->j;
    }
    /* Sort ``a[0 .. n)`` by hash, then by pair index. */
    static void ct_sort_planned(ct_planned *a, Py_ssize_t n) {
        qsort(a, (size_t)n, sizeof(ct_planned), ct_cmp_planned);
    }
    """
    ctypedef struct Planned "ct_planned":
        uint64_t hash
        Py_ssize_t j
        Py_ssize_t first
        uint32_t slab
        bint fast
    void sort_planned "ct_sort_planned"(Planned *a, Py_ssize_t n) noexcept


# An entry ``expire`` has judged due: still in the table until the result is complete.
cdef struct Harvested:
    uint32_t slab
    PyObject *item       # its Expired tuple (owned)


# Everything a table allocates, allocated at once so that a failure leaves
# the table as it was.
cdef struct Storage:
    Index index
    SlabArrays arrays
    uint32_t capacity
    double *times
    uint32_t epochs


@cython.final
@cython.no_gc_clear   # the module installs its own tp_clear, which empties the table consistently
@cython.collection_type("mapping")
cdef class ConnectionTable:
    cdef Index index
    cdef Slab slab
    cdef Wheel wheel
    cdef Clock clock
    cdef uint32_t min_capacity   # the slab never shrinks below this
    cdef Py_ssize_t length
    cdef Py_ssize_t max_size_    # -1: unbounded
    cdef uint64_t version        # bumped whenever the size changes
    cdef uint64_t layout         # bumped whenever a slot or entry may have moved (a lookup restarts)
    cdef double origin
    cdef double resolution_
    cdef double idle_timeout_
    # Always None. A Python object field is what makes Cython give the type
    # garbage-collector support (HAVE_GC, untracking in dealloc); the values
    # live in a C array, shown to the collector by the tp_traverse the
    # module installs at import (which does not visit this field).
    cdef object _gc_anchor
    cdef object __weakref__

    cdef uint64_t _locate(self, object key, uint64_t h, bint fast) except 0xFFFFFFFFFFFFFFFD
    cdef uint64_t _find_general(self, object key, uint64_t h) except 0xFFFFFFFFFFFFFFFD
    cdef uint64_t _find(self, object key) except 0xFFFFFFFFFFFFFFFD
    cdef PyObject *_key_new(self, uint32_t i) noexcept
    cdef void _storage(self, Storage *out) noexcept
    cdef void _install(self, Storage *fresh, double now) noexcept
    cdef void _swap_arrays(self, SlabArrays *arrays, uint32_t capacity) noexcept
    cdef int _empty(self, double now) except -1
    cdef uint32_t _insert(self, uint64_t h, bint fast, object key, object value,
                          double idle, double deadline) except 0xFFFFFFFF
    cdef int _alloc_keys(self) except -1
    cdef Py_ssize_t _plan_update(self, list pairs, Planned *plan, Planned *absent, Py_ssize_t n,
                                 bint *general) except -1
    cdef int _grow_slab(self) except -1
    cdef int _advance_clock(self, double now) except -1
    cdef object _remove_at(self, uint64_t pos, PyObject **key)
    cdef PyObject *_unindex(self, uint32_t i) noexcept
    cdef void _maybe_shrink(self) noexcept
    cdef void _arm(self, uint32_t i) noexcept
    cdef void _prefetch_pending(self) noexcept
    cdef double _due(self, uint32_t i) noexcept
    cdef uint32_t _next_live(self, uint32_t i) noexcept
    cdef int _check_time(self, double now) except -1
    cdef Py_ssize_t _harvest(self, double t, int64_t target, Py_ssize_t cap, Harvested **out) noexcept
    cdef void _return_harvest(self, Harvested *harvest, Py_ssize_t n) noexcept
