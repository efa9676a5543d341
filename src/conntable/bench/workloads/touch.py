"""touch: activity on random live connections, the hot path of a server.

The timed loop is ``for k in keys: touch(k)`` with ``touch`` pre-bound,
beside ``for k in keys: d[k] = v`` on a dict of the same key objects, the
same loop calling a no-op METH_O builtin (the floor of any method call), and
the bare loop (subtract it to get the cost of the call alone). Keys are
picked uniformly from the live set, a fresh stretch of them every round.
conntable's clock moves once per tick of 1,000 touches; the baselines read
``time.monotonic()`` (or their loop's clock) on every touch, as servers do,
and the event loops run one iteration per tick.
"""

from __future__ import annotations

from typing import List

from .. import subjects
from ..traffic import random_picks
from . import kernels
from .base import Job, Settings
from .ops import OpsCase, Rows, clocked, dict_row, loop_row, ops_jobs, subject_rows

NAME = "touch"
TITLE = "touch: one activity on a random live connection"
LEGEND = ("ids from a counter, picked at random over the live set; the loop is `for k in keys: touch(k)`. "
          "conntable's clock moves once per 1,000 touches; the baselines read time.monotonic() or "
          "loop.time() per touch. Subtract the bare loop to get the call alone.")
#: Keys drawn once per case; rounds take consecutive stretches of them.
POOL_ROUNDS = 4


ROWS: Rows = {
    **subject_rows(lambda subject: clocked(kernels.touch_each, subject.advance, subject.touch)),
    "conntable-touch_many": (subjects.REFERENCE, lambda case, subject: clocked(
        kernels.touch_batches, subject.advance, subject.touch_many)),
    "dict-store": dict_row(kernels.store_each),
    "call-floor": loop_row(lambda work: kernels.call_each(work, ().count)),
    "bare-loop": loop_row(kernels.visit_each),
}


class TouchCase(OpsCase):
    workload = NAME
    ROWS = ROWS

    def _start(self) -> None:
        self._pool = random_picks(self.ids, self.settings.max_ops * POOL_ROUNDS, self.rng)
        self._offset = 0

    def _operations(self, k: int) -> List[int]:
        if self._offset + k > len(self._pool):
            self._offset = 0
        keys = self._pool[self._offset:self._offset + k]
        self._offset += k
        return keys


def jobs(size: int, settings: Settings) -> List[Job]:
    return ops_jobs(TouchCase, size, settings)
