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
    uint32_t *pos
    uint32_t *next
    uint32_t *prev


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
    cdef double origin
    cdef double resolution_
    cdef double idle_timeout_
    # Always None. A Python object field is what makes Cython give the type
    # garbage-collector support (HAVE_GC, untracking in dealloc); the values
    # live in a C array, shown to the collector by the tp_traverse the
    # module installs at import (which does not visit this field).
    cdef object _gc_anchor
    cdef object __weakref__

    cdef uint64_t _find(self, object key) except 0xFFFFFFFFFFFFFFFF
    cdef void _storage(self, Storage *out) noexcept
    cdef void _install(self, Storage *fresh, double now) noexcept
    cdef void _swap_arrays(self, SlabArrays *arrays, uint32_t capacity) noexcept
    cdef int _empty(self, double now) except -1
    cdef int _insert(self, uint64_t key, object value, double idle, double deadline) except -1
    cdef int _grow_slab(self) except -1
    cdef int _advance_clock(self, double now) except -1
    cdef object _remove_at(self, uint64_t pos)
    cdef void _unindex(self, uint32_t i) noexcept
    cdef void _maybe_shrink(self) noexcept
    cdef void _arm(self, uint32_t i) noexcept
    cdef void _prefetch_pending(self) noexcept
    cdef double _due(self, uint32_t i) noexcept
    cdef uint32_t _next_live(self, uint32_t i) noexcept
    cdef int _check_time(self, double now) except -1
    cdef Py_ssize_t _harvest(self, double t, int64_t target, Py_ssize_t cap, Harvested **out) noexcept
    cdef void _return_harvest(self, Harvested *harvest, Py_ssize_t n) noexcept
