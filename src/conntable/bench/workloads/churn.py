"""churn: a connection arrives and another leaves, the count staying steady.

The timed loop is ``add(new, v); del table[old]`` for each pair, ``new``
from the id counter and ``old`` a random live connection, beside the same
loop on a plain dict and the bare loop. The figure is per pair.
"""

from __future__ import annotations

from typing import List, Tuple

from ..traffic import VALUE, churn_pairs
from . import kernels
from .base import Job, Settings
from .ops import OpsCase, Rows, clocked, dict_row, loop_row, ops_jobs, subject_rows

NAME = "churn"
TITLE = "churn: add one connection and remove another"
LEGEND = "per pair: add(new id, v) then del table[random live id]; the count stays n."


ROWS: Rows = {
    **subject_rows(lambda subject: clocked(
        kernels.add_remove_each, subject.advance, subject.add, subject.mapping, VALUE)),
    "dict-store": dict_row(kernels.store_delete_each),
    "bare-loop": loop_row(kernels.visit_pairs),
}


class ChurnCase(OpsCase):
    workload = NAME
    ROWS = ROWS

    def _start(self) -> None:
        self._live = list(self.ids)  # the same int objects the registry holds, evolving with the churn
        self._next_id = self.n + 1

    def _operations(self, k: int) -> List[Tuple[int, int]]:
        pairs, self._next_id = churn_pairs(self._live, self._next_id, k, self.rng)
        return pairs


def jobs(size: int, settings: Settings) -> List[Job]:
    return ops_jobs(ChurnCase, size, settings)
