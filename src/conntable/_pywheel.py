"""Hierarchical timer wheel, pure-Python twin of ``_wheel.pxd``.

Invariant: ``LEVELS`` levels of 64 slots; level ``L`` slots are ``64**L``
ticks wide. An entry armed for tick ``when`` sits at the level of the highest
bit in which ``when`` differs from ``elapsed`` (divided by 6), so every entry
shares all higher bits with ``elapsed`` and lies at or after the wheel's
current position in its level. Hence the first level with an occupied slot
holds the earliest slot, and the slot is found from a 64-bit occupancy mask
with a count-trailing-zeros, never by walking empty slots (Tokio's
``wheel/level.rs``, Linux's ``kernel/time/timer.c``).

Each slot also keeps ``earliest``, a lower bound on the ticks armed in it
(exact until an entry leaves), so a sleeper wakes when the first entry can be
due, not when a coarse slot merely starts: no wake-up only to cascade.

Costs: link and unlink O(1); finding the next slot O(LEVELS); a slot that
comes due is moved whole to the ``PENDING`` list, where the table examines
each entry and either fires it or re-arms it lower down (cascading). An entry
moves at most once per level on its way down.

Trade-off: the wheel knows ticks, not times or entries' deadlines; the table
decides what is due. Here each slot is a dict keyed by connection id (O(1)
unlink without linked-list nodes); the compiled wheel uses intrusive 32-bit
links instead.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from ._common import LEVEL_BITS, LEVELS, MAX_TICK, SLOT_MASK, SLOTS

NSLOTS = LEVELS * SLOTS
#: The list of entries to examine before any slot: already due at arming, or
#: taken from a slot that came due.
PENDING = NSLOTS
#: ``entry.head`` of an entry that is in no list (never due).
UNLINKED = -1


class Wheel:
    __slots__ = ("elapsed", "occupied", "heads", "earliest")

    def __init__(self) -> None:
        self.elapsed = 0
        self.occupied = [0] * LEVELS
        self.heads: list[dict[int, Any]] = [{} for _ in range(NSLOTS + 1)]
        self.earliest = [MAX_TICK * 2] * NSLOTS  # no entry of slot h is armed before earliest[h]

    def arm(self, entry: Any, when: int) -> None:
        """Link ``entry`` into the slot for tick ``when`` (> elapsed)."""
        head = self.head_for(when)
        self.link(entry, head)
        if when < self.earliest[head]:
            self.earliest[head] = when

    def head_for(self, when: int) -> int:
        """The slot for tick ``when``; the caller guarantees ``when > elapsed``."""
        level = ((self.elapsed ^ when) | SLOT_MASK).bit_length() - 1
        level //= LEVEL_BITS
        return level * SLOTS + ((when >> (level * LEVEL_BITS)) & SLOT_MASK)

    def link(self, entry: Any, head: int) -> None:
        self.heads[head][entry.key] = entry
        entry.head = head
        if head < NSLOTS:
            self.occupied[head >> LEVEL_BITS] |= 1 << (head & SLOT_MASK)

    def unlink(self, entry: Any) -> None:
        head = entry.head
        if head == UNLINKED:
            return
        members = self.heads[head]
        del members[entry.key]
        entry.head = UNLINKED
        if not members:
            self.heads[head] = {}  # an emptied dict would keep its peak size
            if head < NSLOTS:
                self.occupied[head >> LEVEL_BITS] &= ~(1 << (head & SLOT_MASK))

    def next_slot(self) -> Optional[Tuple[int, int]]:
        """``(head, first tick of the slot)`` of the earliest occupied slot, or None."""
        elapsed = self.elapsed
        for level in range(LEVELS):
            occupied = self.occupied[level]
            if not occupied:
                continue
            shift = level * LEVEL_BITS
            current = (elapsed >> shift) & SLOT_MASK
            ahead = occupied >> current  # slots behind ``current`` are empty (invariant)
            slot = current + ((ahead & -ahead).bit_length() - 1)
            window = elapsed & ~((1 << (shift + LEVEL_BITS)) - 1)
            return level * SLOTS + slot, window + (slot << shift)
        return None

    def take(self, head: int) -> None:
        """Move every entry of slot ``head`` to the pending list."""
        members = self.heads[head]
        pending = self.heads[PENDING]
        for entry in members.values():
            entry.head = PENDING
        pending.update(members)
        members.clear()
        self.occupied[head >> LEVEL_BITS] &= ~(1 << (head & SLOT_MASK))
        self.earliest[head] = MAX_TICK * 2

    def clear(self) -> None:
        """Forget every entry; the wheel's position (``elapsed``) stays."""
        heads = self.heads  # in place: an expire() further up the stack holds this list
        for head in range(len(heads)):
            heads[head] = {}
        self.occupied[:] = [0] * LEVELS
        self.earliest[:] = [MAX_TICK * 2] * NSLOTS

    def sizeof(self) -> int:
        import sys

        return sys.getsizeof(self.heads) + sum(sys.getsizeof(h) for h in self.heads)
