# The slab: each entry's cold fields and its value, at an index that never
# changes while the entry lives (a "slab index").
#
# Invariant: parallel arrays of ``capacity`` elements: ``timers[i]`` (idle
# timeout and deadline), ``values[i]`` (an owned reference to the entry's
# value; NULL when entry i is free) and ``pos[i]``, the position of the
# entry's slot in the index, or FREE_BIT | the next free slab index
# (FREE_END ends the list) when entry i is free. The free list therefore
# costs no memory of its own. ``keys[i]`` is an owned reference to the key
# object of an entry whose key is not an int of the index's fast path, NULL
# otherwise; the whole array is NULL until the first such key arrives, so a
# table of int ids never pays for it.
#
# Costs: allocate and free are O(1) pops and pushes; iteration is
# O(capacity). 28 bytes an entry, in three arrays (a struct would pad),
# and 8 more once ``keys`` exists.
# Stable indices let the wheel links refer to an entry by a 32-bit number;
# compaction is left to the table, which knows everyone who holds one.
# The values are in a C array the table owns, not in a Python list: no
# Python code can reach (and resize) the container, and the table's own
# tp_traverse shows each value to the garbage collector.
#
# Trade-off: the hot fields (key, last activity) live in the index slot, so
# ``touch`` never comes here; expiry, which is rarer, pays the indirection.

from cpython.ref cimport PyObject
from libc.stdint cimport uint32_t

cdef extern from *:
    """
    #define CT_NIL ((uint32_t)0xFFFFFFFFu)
    #define CT_FREE_BIT ((uint32_t)0x80000000u)
    #define CT_FREE_END ((uint32_t)0x7FFFFFFFu)
    """
    const uint32_t NIL "CT_NIL"
    const uint32_t FREE_BIT "CT_FREE_BIT"
    const uint32_t FREE_END "CT_FREE_END"


cdef struct Timers:
    double idle         # idle timeout in seconds (inf: never)
    double deadline     # absolute time on the table's clock (inf: none)


cdef struct Slab:
    Timers *timers
    PyObject **values
    PyObject **keys     # NULL until a key needs its object kept
    uint32_t *pos
    uint32_t capacity
    uint32_t free_head  # NIL when every entry is in use


cdef inline bint slab_is_free(const Slab *s, uint32_t i) noexcept nogil:
    return (s.pos[i] & FREE_BIT) != 0


cdef inline void slab_push_free(Slab *s, uint32_t i) noexcept nogil:
    s.pos[i] = FREE_BIT | (FREE_END if s.free_head == NIL else s.free_head)
    s.free_head = i


cdef inline uint32_t slab_pop_free(Slab *s) noexcept nogil:
    """Take the first free entry; NIL when the slab is full."""
    cdef uint32_t i = s.free_head
    cdef uint32_t after
    if i != NIL:
        after = s.pos[i] & ~FREE_BIT
        s.free_head = NIL if after == FREE_END else after
    return i


cdef inline void slab_thread_free(Slab *s, uint32_t start, uint32_t stop) noexcept nogil:
    """Mark entries [start, stop) free, lowest first in the free list."""
    cdef uint32_t i = stop
    while i > start:
        i -= 1
        slab_push_free(s, i)
