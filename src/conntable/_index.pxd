# Open-addressing index: connection id -> slab index.
#
# Invariant: a power-of-two array of 32-bit slab indices (NIL = empty) at
# load factor <= 1/2; every key sits at its home slot (Fibonacci hashing:
# multiply by 2**64/phi, keep the top bits) or after it with no empty slot
# in between (linear probing). Deletion shifts later members of the run back
# into the hole (Knuth's Algorithm R, as in khashl), so there are no
# tombstones and churn never degrades probes.
#
# Costs: find, insert and remove are O(1) expected, a few probes in one or
# two cache lines, then one read of the slab to compare keys. 4 bytes per
# slot, so 8 to 16 bytes per live entry.
#
# Trade-off: keys live in the slab, not here: half the memory of storing
# them twice, at the price of one more cache line per probe. The multiply
# spreads sequential ids (the common case: a counter) evenly.

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from conntable._slab cimport NIL, Entry


cdef struct Index:
    uint32_t *slots
    uint64_t mask      # size - 1
    int shift          # 64 - log2(size)


cdef inline uint64_t index_home(const Index *ix, uint64_t key) noexcept nogil:
    return (key * <uint64_t>0x9E3779B97F4A7C15) >> ix.shift


cdef inline int index_alloc(Index *ix, int bits) noexcept nogil:
    """An empty index of 2**bits slots; -1 when out of memory (``ix`` untouched)."""
    cdef size_t size = (<size_t>1) << bits
    cdef uint32_t *slots = <uint32_t *>malloc(size * sizeof(uint32_t))
    if slots == NULL:
        return -1
    memset(slots, 0xFF, size * sizeof(uint32_t))  # every slot NIL
    ix.slots = slots
    ix.mask = size - 1
    ix.shift = 64 - bits
    return 0


cdef inline void index_free(Index *ix) noexcept nogil:
    free(ix.slots)
    ix.slots = NULL


cdef inline uint32_t index_find(const Index *ix, const Entry *entries, uint64_t key) noexcept nogil:
    cdef uint64_t pos = index_home(ix, key)
    cdef uint32_t i
    while True:
        i = ix.slots[pos]
        if i == NIL or entries[i].key == key:
            return i
        pos = (pos + 1) & ix.mask


cdef inline void index_insert(Index *ix, uint64_t key, uint32_t i) noexcept nogil:
    """Insert a key known to be absent, at slab index ``i``."""
    cdef uint64_t pos = index_home(ix, key)
    while ix.slots[pos] != NIL:
        pos = (pos + 1) & ix.mask
    ix.slots[pos] = i


cdef inline void index_remove(Index *ix, const Entry *entries, uint64_t key) noexcept nogil:
    """Remove a key known to be present, shifting its run back over the hole."""
    cdef uint64_t hole = index_home(ix, key)
    cdef uint64_t pos, home
    cdef uint32_t i
    while entries[ix.slots[hole]].key != key:
        hole = (hole + 1) & ix.mask
    pos = hole
    while True:
        pos = (pos + 1) & ix.mask
        i = ix.slots[pos]
        if i == NIL:
            break
        home = index_home(ix, entries[i].key)
        # The member at ``pos`` may fill the hole unless its home lies
        # cyclically in (hole, pos]: then it would move before its home.
        if ((pos - home) & ix.mask) >= ((pos - hole) & ix.mask):
            ix.slots[hole] = i
            hole = pos
    ix.slots[hole] = NIL
