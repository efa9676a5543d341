# The table's clock as a list of epochs: activity stores a 32-bit epoch
# number, not a 64-bit time.
#
# Invariant: ``times[0 .. count)`` are the distinct values the table's clock
# has taken that some entry may still refer to, in increasing order; the
# current time is ``times[count - 1]``. An index slot records the epoch of
# its last activity, so ``last_activity`` is ``times[slot.epoch]``, exactly
# the float the clock had.
#
# Costs: a new epoch is appended when ``expire`` moves the clock (O(1)).
# When the array is full, the table renumbers the epochs still referenced
# (one pass over the index) and keeps at least len/8 spare, so the pass is
# amortised to O(1) per clock move. 8 bytes per epoch.
#
# Trade-off: a 4-byte epoch lets the index slot hold key, activity and slab
# index in 16 bytes, four to a cache line, so ``touch`` touches one line.

from libc.stdint cimport uint32_t

from conntable._memory cimport big_resize


cdef struct Clock:
    double *times
    uint32_t count
    uint32_t capacity


cdef inline double clock_now(const Clock *c) noexcept nogil:
    return c.times[c.count - 1]


cdef inline uint32_t clock_epoch(const Clock *c) noexcept nogil:
    return c.count - 1


cdef inline int clock_reserve(Clock *c, uint32_t capacity) noexcept nogil:
    """Room for ``capacity`` epochs; -1 when out of memory (unchanged)."""
    cdef double *times = <double *>big_resize(
        c.times, c.capacity * sizeof(double), c.count * sizeof(double), capacity * sizeof(double))
    if times == NULL:
        return -1
    c.times = times
    c.capacity = capacity
    return 0
