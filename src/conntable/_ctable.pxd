# The compiled connection table: the index (hot fields), the slab (cold
# fields), the wheel and the clock held together, and the values in a list
# the garbage collector can see.

cimport cython
from libc.stdint cimport uint32_t, uint64_t

from conntable._clock cimport Clock
from conntable._index cimport Index
from conntable._slab cimport Slab
from conntable._wheel cimport Wheel


@cython.final
@cython.no_gc_clear   # values must stay reachable for a __del__ that calls back in
cdef class ConnectionTable:
    cdef Index index
    cdef Slab slab
    cdef Wheel wheel
    cdef Clock clock
    cdef list objects            # objects[i] is the value of slab entry i; None when free
    cdef uint32_t min_capacity   # the slab never shrinks below this
    cdef Py_ssize_t length
    cdef Py_ssize_t max_size_    # -1: unbounded
    cdef uint64_t version        # bumped whenever the size changes
    cdef double origin
    cdef double resolution_
    cdef double idle_timeout_
    cdef object __weakref__

    cdef uint64_t _find(self, object key) except 0xFFFFFFFFFFFFFFFF
    cdef void _free_storage(self) noexcept
    cdef int _reset_storage(self, uint32_t capacity, double now) except -1
    cdef int _empty(self, double now) except -1
    cdef int _insert(self, uint64_t key, object value, double idle, double deadline) except -1
    cdef int _grow_slab(self) except -1
    cdef int _advance_clock(self, double now) except -1
    cdef object _remove_at(self, uint64_t pos)
    cdef void _maybe_shrink(self) noexcept
    cdef void _arm(self, uint32_t i) noexcept
    cdef void _prefetch_pending(self) noexcept
    cdef double _due(self, uint32_t i) noexcept
    cdef uint32_t _next_live(self, uint32_t i) noexcept
