"""Connection ids and the activity on them, as a server produces them.

Ids come from a counter, as servers hand them out. Activity picks live ids
at random, reusing the very int objects the registry was filled with (a
server touches ``self.conn_id``, the object it registered), so a dict finds
them by identity, as it would in a server. Work is cut into ticks: the
simulated clock (or the event loop) moves once per tick, not per operation.
"""

from __future__ import annotations

import random
from typing import Any, List, Sequence, Tuple

#: Simulated seconds per tick (conntable's default resolution).
TICK = 0.1
#: Operations per tick in the operation-cost workloads (touch, churn).
OPS_PER_TICK = 1000
#: The seed of every random choice, so that every implementation sees the same traffic.
SEED = 20240601
#: The value every benchmark stores: one shared object, so that no value's own size is measured.
VALUE = object()


def connection_ids(n: int, first: int = 1) -> List[int]:
    """``n`` ids from a counter starting at ``first``."""
    return list(range(first, first + n))


def random_picks(live: Sequence[int], k: int, rng: random.Random) -> List[int]:
    """``k`` live ids picked uniformly, with repetition."""
    return rng.choices(live, k=k)


def churn_pairs(live: List[int], next_id: int, k: int, rng: random.Random) -> Tuple[List[Tuple[int, int]], int]:
    """``k`` (new id, id to remove) pairs that keep the live count steady.

    ``live`` is updated in place; returns the pairs and the next unused id.
    """
    pairs = []
    size = len(live)
    for new in range(next_id, next_id + k):
        slot = rng.randrange(size)
        pairs.append((new, live[slot]))
        live[slot] = new
    return pairs, next_id + k


def ticks(items: Sequence[Any], per_tick: int = OPS_PER_TICK) -> List[Sequence[Any]]:
    """``items`` cut into consecutive ticks of ``per_tick``."""
    return [items[i:i + per_tick] for i in range(0, len(items), per_tick)]


def fill(subject: Any, ids: Sequence[int]) -> None:
    """Register every id, at the subject's current time."""
    add = subject.add
    for key in ids:
        add(key, VALUE)
