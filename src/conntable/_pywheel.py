"""Hierarchical timer wheel, pure-Python twin of ``_wheel.pxd``.

Invariant: ``LEVELS`` levels of 64 slots; level ``L`` slots are ``64**L``
ticks wide. An entry armed for tick ``when`` sits at the level of the highest
bit in which ``when`` differs from ``elapsed`` (divided by 6), so every entry
shares all higher bits with ``elapsed`` and lies at or after the wheel's
current position in its level. Hence the first level with an occupied slot
holds the earliest slot, found in the level's occupancy bytes with one
``bytearray.find`` from the current position, never by walking empty slots
(Tokio's ``wheel/level.rs``, Linux's ``kernel/time/timer.c``).

Each slot, the ``pending`` list and each ``expire`` call's harvest is a
circular doubly linked list through a :class:`Head`; an entry (any object
with ``prev``, ``next`` and ``head`` attributes) is in at most one list, and
``entry.head`` says which (None: in none). Each slot also keeps
``earliest``, a lower bound on the ticks armed in it (exact until an entry
leaves; reset when the slot empties), so a sleeper wakes when the first entry can be due, not when a
coarse slot merely starts.

Costs: link and unlink O(1); finding the next slot O(LEVELS); a slot that
comes due moves whole to ``pending`` (O(its size): each entry's ``head``
changes), where the table examines each entry and either fires it or re-arms
it lower down (cascading). An entry moves at most once per level.

Why links and bytes rather than dicts and int masks: every change of a list
is a few attribute stores and at most one bytearray store, which allocate
nothing, so they cannot fail (MemoryError) or run the garbage collector
halfway. The table computes whatever may fail first (the tick, the head),
then changes the lists. The same order as the compiled wheel's lists, so
both tables return expired entries in the same order.

Trade-off: the wheel knows ticks, not times or entries' deadlines; the table
decides what is due. The lists are reference cycles: the table cuts them
(:func:`cut`) when it lets go of a wheel, so values are released at once,
not at the next collection.
"""

from __future__ import annotations

from typing import Any, List, Optional

from ._common import LEVEL_BITS, LEVELS, MAX_TICK, SLOT_MASK, SLOTS

NSLOTS = LEVELS * SLOTS
#: ``Head.index`` of the list of entries to examine before any slot: already
#: due at arming, or taken from a slot that came due.
PENDING = NSLOTS
#: ``Head.index`` of an ``expire`` call's harvest (entries judged due, not yet removed).
HARVEST = -1
#: ``earliest`` of a slot with nothing armed.
NEVER = MAX_TICK * 2
#: What ``tick_for`` answers for "due now" and "never".
DUE_NOW = -1
NO_TICK = -2


class Head:
    """The sentinel node of one list."""

    __slots__ = ("prev", "next", "index", "occupied", "slot", "earliest")

    def __init__(self, index: int, occupied: Optional[bytearray] = None) -> None:
        self.prev: Any = self
        self.next: Any = self
        self.index = index
        #: The occupancy bytes of the slot's level (None: not a slot).
        self.occupied = occupied
        self.slot = index & SLOT_MASK
        self.earliest = NEVER


def unlink(entry: Any) -> None:
    """Take ``entry`` out of its list, if any. Allocates nothing."""
    head = entry.head
    if head is None:
        return
    before = entry.prev
    after = entry.next
    before.next = after
    after.prev = before
    entry.prev = entry.next = entry.head = None
    if head.next is head and head.occupied is not None:
        head.occupied[head.slot] = 0
        head.earliest = NEVER  # a stale bound would name a tick nothing waits for


def link(entry: Any, head: Head) -> None:
    """Append an unlinked ``entry`` to ``head``'s list. Allocates nothing."""
    tail = head.prev
    tail.next = entry
    entry.prev = tail
    entry.next = head
    entry.head = head
    head.prev = entry
    if head.occupied is not None:
        head.occupied[head.slot] = 1


def cut(head: Head) -> None:
    """Break the cycles of a list nobody uses any more, so refcounting frees its entries."""
    node = head.next
    while node is not head and node is not None:
        after = node.next
        node.prev = node.next = node.head = None
        node = after
    head.prev = head.next = None


class Wheel:
    __slots__ = ("elapsed", "occupied", "heads", "pending", "found_start")

    def __init__(self) -> None:
        self.elapsed = 0
        self.occupied = [bytearray(SLOTS) for _ in range(LEVELS)]
        self.heads: List[Head] = [Head(h, self.occupied[h >> LEVEL_BITS]) for h in range(NSLOTS)]
        self.pending = Head(PENDING)
        #: The first tick of the slot ``next_slot`` found last.
        self.found_start = 0

    def head_of(self, when: int) -> Optional[Head]:
        """The list for tick ``when`` (> elapsed), or ``DUE_NOW`` / ``NO_TICK``. May allocate (ints)."""
        if when == NO_TICK:
            return None
        if when == DUE_NOW:
            return self.pending
        level = (((self.elapsed ^ when) | SLOT_MASK).bit_length() - 1) // LEVEL_BITS
        return self.heads[level * SLOTS + ((when >> (level * LEVEL_BITS)) & SLOT_MASK)]

    def place(self, entry: Any, head: Optional[Head], when: int) -> None:
        """Move ``entry`` (linked or not) to ``head`` (None: no list), armed for ``when``. Allocates nothing."""
        unlink(entry)
        if head is not None:
            link(entry, head)
            if when >= 0 and when < head.earliest:
                head.earliest = when

    def next_slot(self) -> Optional[Head]:
        """The earliest occupied slot, or None; its first tick goes to ``found_start``."""
        elapsed = self.elapsed
        for level in range(LEVELS):
            shift = level * LEVEL_BITS
            slot = self.occupied[level].find(1, (elapsed >> shift) & SLOT_MASK)  # behind: empty (invariant)
            if slot < 0:
                continue
            self.found_start = (elapsed & ~((1 << (shift + LEVEL_BITS)) - 1)) + (slot << shift)
            return self.heads[level * SLOTS + slot]
        return None

    def take(self, head: Head) -> None:
        """Move every entry of slot ``head`` to the end of ``pending``. Allocates nothing."""
        first = head.next
        if first is head:
            return
        pending = self.pending
        last = head.prev
        node = first
        while node is not head:
            node.head = pending
            node = node.next
        tail = pending.prev
        tail.next = first
        first.prev = tail
        last.next = pending
        pending.prev = last
        head.next = head.prev = head
        if head.occupied is not None:
            head.occupied[head.slot] = 0
        head.earliest = NEVER

    def cut(self) -> None:
        """Break every list's cycles (the wheel is being let go of)."""
        for head in self.heads:
            cut(head)
        cut(self.pending)

    def sizeof(self) -> int:
        import sys

        return (
            sys.getsizeof(self.heads) + len(self.heads) * sys.getsizeof(self.pending)
            + sum(sys.getsizeof(level) for level in self.occupied)
        )
