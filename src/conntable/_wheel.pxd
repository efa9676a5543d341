# Hierarchical timer wheel over intrusive 32-bit links (Tokio's
# ``time/wheel``, Linux's ``kernel/time/timer.c``).
#
# Invariant: LEVELS levels of 64 slots; level L slots are 64**L ticks wide.
# An entry armed for tick ``when`` (> elapsed) sits at the level of the
# highest bit in which ``when`` differs from ``elapsed``, divided by 6. It
# therefore shares every higher bit with ``elapsed`` and lies at or after the
# wheel's position in its level, so the first level with an occupied slot
# holds the earliest slot, found with one count-trailing-zeros on the level's
# occupancy mask. Every slot, plus the PENDING list, is a circular doubly
# linked list through a head node; node NHEADS + i is slab entry i, and an
# entry in no list has next == NIL.
#
# Each slot also keeps ``earliest``, a lower bound on the ticks armed in it
# (exact until an entry leaves; reset when the slot empties), so a sleeper
# wakes when the first entry can be due, not when a coarse slot merely
# starts: no wake-up only to cascade. A non-empty slot is never behind the
# wheel's position, so its bound is never behind it either.
#
# Costs: link, unlink and taking a whole slot are O(1); finding the next
# occupied slot is O(LEVELS), independent of the number of entries. 8 bytes
# of links per entry (the table allocates the link arrays with the slab's).
#
# Trade-off: the wheel knows only ticks. The table decides what is due when a
# slot comes round: entries that saw activity since they were armed are
# re-armed lower down or later (lazy re-arm and cascading), so ``touch``
# never relinks anything, and an entry moves at most once per level.

from libc.stdint cimport INT64_MAX, int64_t, uint32_t, uint64_t

from conntable._slab cimport NIL

cdef extern from *:
    """
    #if defined(_MSC_VER) && !defined(__clang__)
    #include <intrin.h>
    /* MSVC has no __builtin_ctzll/clzll; like them, undefined for 0 (never passed). */
    static __forceinline int ct_ctz64(uint64_t x) { unsigned long i = 0; _BitScanForward64(&i, x); return (int)i; }
    static __forceinline int ct_clz64(uint64_t x) { unsigned long i = 0; _BitScanReverse64(&i, x); return 63 - (int)i; }
    #else
    #define ct_ctz64(x) ((int)__builtin_ctzll(x))
    #define ct_clz64(x) ((int)__builtin_clzll(x))
    #endif
    """
    int ctz64 "ct_ctz64"(uint64_t x) noexcept nogil
    int clz64 "ct_clz64"(uint64_t x) noexcept nogil

cdef enum:
    LEVEL_BITS = 6
    SLOTS = 64
    SLOT_MASK = 63
    LEVELS = 11          # 6 * 11 bits cover every tick below MAX_TICK = 2**62
    NSLOTS = 704         # LEVELS * SLOTS
    PENDING = 704        # the list of entries to examine before any slot
    NHEADS = 705


cdef struct Wheel:
    int64_t elapsed              # the wheel's position, in ticks
    uint64_t occupied[LEVELS]    # bit s of level L: slot s is not empty
    int64_t earliest[NSLOTS]     # no entry of slot h is armed before earliest[h]
    uint32_t *next               # NHEADS heads, then one node per slab entry
    uint32_t *prev


cdef inline void wheel_reset(Wheel *w, uint32_t capacity) noexcept nogil:
    """Empty every list; ``elapsed`` stays."""
    cdef uint32_t h
    for h in range(NHEADS):
        w.next[h] = h
        w.prev[h] = h
    for h in range(NHEADS, NHEADS + capacity):
        w.next[h] = NIL
    for h in range(LEVELS):
        w.occupied[h] = 0
    for h in range(NSLOTS):
        w.earliest[h] = INT64_MAX


cdef inline uint32_t wheel_head_for(const Wheel *w, int64_t when) noexcept nogil:
    """The slot for tick ``when``; the caller guarantees elapsed < when <= MAX_TICK."""
    cdef uint64_t differ = (<uint64_t>w.elapsed ^ <uint64_t>when) | SLOT_MASK
    cdef int level = (63 - clz64(differ)) // LEVEL_BITS
    return level * SLOTS + <uint32_t>((<uint64_t>when >> (level * LEVEL_BITS)) & SLOT_MASK)


cdef inline void wheel_arm(Wheel *w, uint32_t node, int64_t when) noexcept nogil:
    """Link ``node`` into the slot for tick ``when`` (elapsed < when <= MAX_TICK + 1)."""
    cdef uint32_t head = wheel_head_for(w, when)
    wheel_link(w, node, head)
    if when < w.earliest[head]:
        w.earliest[head] = when


cdef inline void wheel_link(Wheel *w, uint32_t node, uint32_t head) noexcept nogil:
    cdef uint32_t tail = w.prev[head]
    w.next[tail] = node
    w.prev[node] = tail
    w.next[node] = head
    w.prev[head] = node
    if head < NSLOTS:
        w.occupied[head >> LEVEL_BITS] |= (<uint64_t>1) << (head & SLOT_MASK)


cdef inline void wheel_unlink(Wheel *w, uint32_t node) noexcept nogil:
    cdef uint32_t before = w.prev[node]
    cdef uint32_t after = w.next[node]
    if after == NIL:
        return
    w.next[before] = after
    w.prev[after] = before
    w.next[node] = NIL
    if before == after and before < NSLOTS:  # only the head is left: the slot is empty
        w.occupied[before >> LEVEL_BITS] &= ~((<uint64_t>1) << (before & SLOT_MASK))
        w.earliest[before] = INT64_MAX  # a stale bound would name a tick nothing waits for


cdef inline int64_t window_start(int64_t elapsed, int bits) noexcept nogil:
    """``elapsed`` with its low ``bits`` bits cleared (the top level's window is everything)."""
    return 0 if bits >= 63 else elapsed & ~((<int64_t>1 << bits) - 1)


cdef inline uint32_t wheel_next_slot(const Wheel *w, int64_t *start) noexcept nogil:
    """The earliest occupied slot and, in ``start``, its first tick; NIL if none."""
    cdef int level, shift, slot, current
    cdef uint64_t occupied
    for level in range(LEVELS):
        occupied = w.occupied[level]
        if occupied == 0:
            continue
        shift = level * LEVEL_BITS
        current = <int>((<uint64_t>w.elapsed >> shift) & SLOT_MASK)
        slot = current + ctz64(occupied >> current)  # slots behind ``current`` are empty
        start[0] = window_start(w.elapsed, shift + LEVEL_BITS) + (<int64_t>slot << shift)
        return level * SLOTS + slot
    return NIL


cdef inline void wheel_take(Wheel *w, uint32_t head) noexcept nogil:
    """Move every entry of slot ``head`` to the end of the PENDING list."""
    cdef uint32_t first = w.next[head]
    cdef uint32_t last = w.prev[head]
    cdef uint32_t tail = w.prev[PENDING]
    w.next[tail] = first
    w.prev[first] = tail
    w.next[last] = PENDING
    w.prev[PENDING] = last
    w.next[head] = head
    w.prev[head] = head
    w.occupied[head >> LEVEL_BITS] &= ~((<uint64_t>1) << (head & SLOT_MASK))
    w.earliest[head] = INT64_MAX


cdef inline uint32_t wheel_pop_pending(Wheel *w) noexcept nogil:
    """Unlink and return the last PENDING node; NIL when the list is empty."""
    cdef uint32_t node = w.prev[PENDING]
    if node == PENDING:
        return NIL
    wheel_unlink(w, node)
    return node


cdef inline void wheel_move_node(Wheel *w, uint32_t src, uint32_t dst) noexcept nogil:
    """Give node ``src``'s place in its list (if any) to the unlinked node ``dst``."""
    cdef uint32_t before = w.prev[src]
    cdef uint32_t after = w.next[src]
    w.next[dst] = after
    w.next[src] = NIL
    if after == NIL:
        return
    w.prev[dst] = before
    w.next[before] = dst
    w.prev[after] = dst
