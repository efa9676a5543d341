# The compiled connection table: the slab, the index and the wheel held
# together, and the Python objects (values) in a list the GC can see.

cimport cython
from libc.stdint cimport uint32_t, uint64_t

from conntable._index cimport Index
from conntable._slab cimport Entry
from conntable._wheel cimport Wheel


@cython.final
@cython.no_gc_clear   # values must stay reachable for a __del__ that calls back in
cdef class ConnectionTable:
    cdef Entry *entries
    cdef Index index
    cdef Wheel wheel
    cdef list objects            # objects[i] is the value of entries[i]; None when free
    cdef uint32_t capacity       # entries allocated (a power of two)
    cdef uint32_t min_capacity   # never shrink below this
    cdef uint32_t free_head
    cdef Py_ssize_t length
    cdef Py_ssize_t max_size_    # -1: unbounded
    cdef uint64_t version        # bumped whenever the size changes
    cdef double now_
    cdef double origin
    cdef double resolution_
    cdef double idle_timeout_
    cdef object __weakref__

    cdef uint32_t _find(self, object key) except? 0xFFFFFFFF
    cdef int _insert(self, uint64_t key, object value, double idle, double deadline) except -1
    cdef int _reset_storage(self, uint32_t capacity) except -1
    cdef int _grow(self) except -1
    cdef object _remove_at(self, uint32_t i)
    cdef void _maybe_shrink(self) noexcept
    cdef void _arm(self, uint32_t i) noexcept
    cdef uint32_t _next_live(self, uint32_t i) noexcept
