# Open-addressing index: key -> slot holding the key's hash, its last
# activity (as a clock epoch) and a reference to its slab entry.
#
# Invariant: ``size`` slots (not necessarily a power of two) at load <= 3/4;
# every key sits at its home slot or after it with no empty slot in between
# (linear probing, wrapping at ``size``). The home slot is the high part of
# (hash * 2**64/phi) * size (Fibonacci hashing, with a multiply instead of a
# mask as the range reduction), which spreads sequential ids evenly.
# ``hash`` is the key's Python hash as 64 bits (never -1, so EMPTY_KEY is
# never a hash). ``ref`` is the slab index, with INT_KEY set when the key is
# an exact int in [0, FAST_LIMIT): such an int is its own hash, so ``hash``
# *is* the key and no key object is stored (the int fast path: one compare
# on one cache line). Any other key's object is in the slab's ``keys``
# array; equal hashes are settled there (identity, then ``==``) by the table.
# Deletion shifts later members of the run back into the hole (Knuth's
# Algorithm R, as in khashl): no tombstones, so churn never lengthens probes.
# Whenever a slot moves, ``owner_pos[slot_slab(slot)]`` is updated, so the slab
# always knows where its entry's slot is.
#
# Costs: an int ``touch`` reads and writes one 16-byte slot: the key compare and
# the activity store hit the same cache line, the only line it touches.
# find/insert/remove are O(1) expected. 16 bytes a slot; sizes step by
# quarter powers of two, so between 21 and 32 bytes per live entry.
#
# Trade-off: the hot fields are here and the cold ones (timeouts, value,
# wheel links) in the slab, one indirection away; moving a slot costs a
# write to the slab's back-pointer.

from libc.stdint cimport uint32_t, uint64_t

from conntable._memory cimport big_alloc, big_free

cdef extern from *:
    """
    #define CT_EMPTY_KEY ((uint64_t)0xFFFFFFFFFFFFFFFFull)
    #define CT_NO_SLOT ((uint64_t)0xFFFFFFFFFFFFFFFFull)
    #if defined(_MSC_VER) && !defined(__clang__)
    #include <intrin.h>
    /* MSVC has no 128-bit integer; __umulh is the same instruction (x64 and ARM64). */
    static __forceinline uint64_t ct_mulhi(uint64_t a, uint64_t b) { return __umulh(a, b); }
    #else
    static inline uint64_t ct_mulhi(uint64_t a, uint64_t b) {
        return (uint64_t)(((unsigned __int128)a * b) >> 64);
    }
    #endif
    """
    const uint64_t EMPTY_KEY "CT_EMPTY_KEY"   # never a hash: a Python hash is never -1
    const uint64_t NO_SLOT "CT_NO_SLOT"
    uint64_t mulhi "ct_mulhi"(uint64_t a, uint64_t b) noexcept nogil


cdef extern from *:
    """
    #define CT_INT_KEY ((uint32_t)0x80000000u)
    /* 2**61 - 1, CPython's hash modulus: below it an int is its own hash. */
    #define CT_FAST_LIMIT ((uint64_t)0x1FFFFFFFFFFFFFFFull)
    """
    const uint32_t INT_KEY "CT_INT_KEY"       # ref bit: the key is the int ``hash`` (no key object)
    const uint64_t FAST_LIMIT "CT_FAST_LIMIT"
    # A slot that might hold the int key but holds another key of the same
    # hash: the caller settles it with ``==`` (``index_find_int``'s third answer).
    const uint64_t COLLIDED "(CT_EMPTY_KEY - 1)"


cdef struct Slot:
    uint64_t hash       # EMPTY_KEY when the slot is free
    uint32_t epoch      # the clock epoch of the last activity
    uint32_t ref        # the entry's slab index, | INT_KEY for an int key


cdef inline uint32_t slot_slab(const Slot *slot) noexcept nogil:
    return slot.ref & ~INT_KEY


cdef struct Index:
    Slot *slots
    uint64_t size


cdef inline uint64_t index_size_for(uint64_t count) noexcept nogil:
    """The smallest size of the form 2**k * (4, 5, 6 or 7) / 4 that holds ``count`` at load <= 3/4."""
    cdef uint64_t need = count + count // 3 + 1
    cdef uint64_t base = 8
    cdef uint64_t quarter
    while base * 2 <= need:
        base *= 2
    for quarter in range(4, 8):
        if base * quarter // 4 >= need:
            return base * quarter // 4
    return base * 2


cdef inline bint index_over_full(const Index *ix, uint64_t count) noexcept nogil:
    return count * 4 > ix.size * 3


cdef inline uint64_t index_home(const Index *ix, uint64_t h) noexcept nogil:
    return mulhi(h * <uint64_t>0x9E3779B97F4A7C15, ix.size)


cdef inline uint64_t index_next(const Index *ix, uint64_t pos) noexcept nogil:
    pos += 1
    return 0 if pos == ix.size else pos


cdef inline int index_alloc(Index *ix, uint64_t size) noexcept nogil:
    """An empty index of ``size`` slots; -1 when out of memory (``ix`` untouched)."""
    cdef Slot *slots = <Slot *>big_alloc(size * sizeof(Slot))
    cdef uint64_t pos
    if slots == NULL:
        return -1
    for pos in range(size):
        slots[pos].hash = EMPTY_KEY
    ix.slots = slots
    ix.size = size
    return 0


cdef inline void index_free(Index *ix) noexcept nogil:
    big_free(ix.slots, ix.size * sizeof(Slot))
    ix.slots = NULL
    ix.size = 0


cdef inline uint64_t index_find_int(const Index *ix, uint64_t key) noexcept nogil:
    """The position of int key ``key``'s slot (``key`` < FAST_LIMIT), NO_SLOT, or COLLIDED.

    COLLIDED: a slot of another kind of key with the same hash (``1.0``, an
    IntEnum, an object whose hash is ``key``) was met first; only ``==`` can
    say whether it is this key, so the caller takes the general path.
    """
    cdef uint64_t pos = index_home(ix, key)
    cdef uint64_t found
    while True:
        found = ix.slots[pos].hash
        if found == key:
            return pos if ix.slots[pos].ref & INT_KEY else COLLIDED
        if found == EMPTY_KEY:
            return NO_SLOT
        pos = index_next(ix, pos)


cdef inline uint64_t index_find_same(const Index *ix, uint64_t h, const void *key,
                                     void **keys) noexcept nogil:
    """The position of the slot holding the very object ``key`` (hashed to ``h``), NO_SLOT, or COLLIDED.

    Identity only, as the first step of a dict lookup: a slot of hash ``h``
    holding another object (which ``==`` might find equal) is COLLIDED, and
    the caller compares. NO_SLOT means no slot has hash ``h``: no key can be
    equal to ``key``.
    """
    cdef uint64_t pos = index_home(ix, h)
    cdef uint64_t found
    cdef uint32_t ref
    while True:
        found = ix.slots[pos].hash
        if found == h:
            ref = ix.slots[pos].ref
            if ref & INT_KEY or keys[ref] != key:
                return COLLIDED
            return pos
        if found == EMPTY_KEY:
            return NO_SLOT
        pos = index_next(ix, pos)


cdef inline void index_insert(Index *ix, uint64_t h, uint32_t epoch, uint32_t ref,
                              uint32_t *owner_pos) noexcept nogil:
    """Insert a key known to be absent (the caller keeps the load <= 3/4)."""
    cdef uint64_t pos = index_home(ix, h)
    while ix.slots[pos].hash != EMPTY_KEY:
        pos = index_next(ix, pos)
    ix.slots[pos].hash = h
    ix.slots[pos].epoch = epoch
    ix.slots[pos].ref = ref
    owner_pos[ref & ~INT_KEY] = <uint32_t>pos


cdef inline void index_remove_at(Index *ix, uint64_t hole, uint32_t *owner_pos) noexcept nogil:
    """Empty slot ``hole``, shifting the rest of its run back over it."""
    cdef uint64_t pos = hole
    cdef uint64_t home, from_home, from_hole
    while True:
        pos = index_next(ix, pos)
        if ix.slots[pos].hash == EMPTY_KEY:
            break
        home = index_home(ix, ix.slots[pos].hash)
        from_home = pos - home if pos >= home else pos + ix.size - home
        from_hole = pos - hole if pos >= hole else pos + ix.size - hole
        # The member at ``pos`` may fill the hole unless its home lies
        # cyclically in (hole, pos]: then it would move before its home.
        if from_home >= from_hole:
            ix.slots[hole] = ix.slots[pos]
            owner_pos[slot_slab(&ix.slots[hole])] = <uint32_t>hole
            hole = pos
    ix.slots[hole].hash = EMPTY_KEY


cdef inline int index_rehash(Index *ix, uint64_t size, uint32_t *owner_pos) noexcept nogil:
    """Move every slot into a new index of ``size`` slots; -1 when out of memory (unchanged).

    The slots are visited from just after an empty one, so each run is read
    from its start, even one that wraps past the end: keys of one hash keep
    their order (their insertion order, which the table's lookups compare
    them in, as the twin's chains do).
    """
    cdef Index fresh
    cdef uint64_t pos, start = 0, step
    cdef Slot *slot
    if index_alloc(&fresh, size) < 0:
        return -1
    while ix.slots[start].hash != EMPTY_KEY:  # the load is <= 3/4: there is an empty slot
        start += 1
    pos = start
    for step in range(ix.size):
        pos = index_next(ix, pos)
        slot = &ix.slots[pos]
        if slot.hash != EMPTY_KEY:
            index_insert(&fresh, slot.hash, slot.epoch, slot.ref, owner_pos)
    index_free(ix)
    ix[0] = fresh
    return 0
