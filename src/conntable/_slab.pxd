# The slab: every entry of the table in one C array, at an index that never
# changes while the entry lives.
#
# Invariant: an entry is free iff its key has the top bit (FREE_BIT) set; the
# low 32 bits of a free entry's key hold the index of the next free entry, so
# the free list costs no memory of its own. Live keys are < 2**63.
#
# Costs: allocate and free are O(1) pops and pushes; iteration is O(capacity).
# Stable indices are what let the index, the wheel links and the values list
# refer to an entry by a 32-bit number instead of a pointer; compaction
# (``slab_move``) is left to the table, which knows who else holds indices.
#
# Trade-off: 32 bytes an entry, two to a cache line. ``last`` sits next to
# ``key`` so that ``touch`` (compare the key, store the time) writes the line
# it has just read.

from libc.stdint cimport uint32_t, uint64_t

cdef extern from *:
    """
    #define CT_NIL ((uint32_t)0xFFFFFFFFu)
    #define CT_FREE_BIT ((uint64_t)1 << 63)
    """
    const uint32_t NIL "CT_NIL"
    const uint64_t FREE_BIT "CT_FREE_BIT"


cdef struct Entry:
    uint64_t key        # the connection id, or FREE_BIT | next free index
    double last         # the table's clock at the last activity
    double idle         # idle timeout in seconds (inf: never)
    double deadline     # absolute time on the table's clock (inf: none)


cdef inline bint entry_is_free(const Entry *e) noexcept nogil:
    return (e.key & FREE_BIT) != 0


cdef inline double entry_due(const Entry *e) noexcept nogil:
    cdef double idle_due = e.last + e.idle
    return idle_due if idle_due < e.deadline else e.deadline


cdef inline void slab_push_free(Entry *entries, uint32_t *free_head, uint32_t i) noexcept nogil:
    entries[i].key = FREE_BIT | free_head[0]
    free_head[0] = i


cdef inline uint32_t slab_pop_free(Entry *entries, uint32_t *free_head) noexcept nogil:
    """Take the first free entry; NIL when the slab is full."""
    cdef uint32_t i = free_head[0]
    if i != NIL:
        free_head[0] = <uint32_t>(entries[i].key & 0xFFFFFFFFu)
    return i


cdef inline void slab_thread_free(Entry *entries, uint32_t *free_head,
                                  uint32_t start, uint32_t stop) noexcept nogil:
    """Mark entries [start, stop) free, lowest first in the free list."""
    cdef uint32_t i = stop
    while i > start:
        i -= 1
        slab_push_free(entries, free_head, i)
