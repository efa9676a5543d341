"""Cases whose rounds are ticks of operations on ``n`` live connections (touch, churn).

A row is either a subject from :mod:`..subjects` or a reference loop (a
plain dict, the bare loop). A workload maps each row to the subject it needs
(or None) and a factory of its timed kernel. The number of operations in a
round is calibrated per row, so that a slow baseline does not take minutes
and a fast one is not lost in timer noise; the figure is per operation.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from .. import subjects, timing
from ..traffic import SEED, VALUE, connection_ids, fill, ticks
from .base import IDLE_TIMEOUT, Job, Result, Settings, subject_job, timed

Kernel = Callable[[Sequence[Sequence[Any]]], Any]
#: row -> (the subject it runs on, or None; its kernel, given the case and that subject)
Rows = Dict[str, Tuple[Optional[str], Callable[[Any, Any], Kernel]]]


def clocked(kernel: Callable[..., float], *args: Any) -> Kernel:
    """A kernel that carries its simulated clock from one round to the next."""
    clock = [0.0]

    def run(work: Sequence[Sequence[Any]]) -> None:
        clock[0] = kernel(work, *args, clock[0])

    return run


def subject_rows(make: Callable[[Any], Kernel]) -> Rows:
    """One row per subject, each timed by the kernel ``make(subject)``."""
    return {name: (name, lambda case, subject: make(subject)) for name in subjects.NAMES}


def dict_row(kernel: Callable[[Any, dict, Any], Any]) -> Tuple[None, Callable[[Any, Any], Kernel]]:
    """A row timing ``kernel(work, d, VALUE)`` on a plain dict of the same key objects."""

    def make(case: Any, subject: None) -> Kernel:
        d = dict.fromkeys(case.ids, VALUE)
        return lambda work: kernel(work, d, VALUE)

    return None, make


def loop_row(kernel: Kernel) -> Tuple[None, Callable[[Any, Any], Kernel]]:
    """A row timing ``kernel(work)`` alone (the bare loop, a call floor)."""
    return None, lambda case, subject: kernel


class OpsCase:
    workload = ""
    ROWS: Rows = {}

    def __init__(self, row: str, n: int, settings: Settings) -> None:
        self.row = row
        self.n = n
        self.settings = settings
        self.ops = settings.min_ops
        self.subject: Any = None
        self._kernel: Optional[Kernel] = None
        self._ticks: List[Sequence[Any]] = []

    def _start(self) -> None:
        """Set up the traffic, once ``self.ids`` (the live ids) and ``self.rng`` exist."""

    def _operations(self, k: int) -> List[Any]:
        """The next ``k`` operations (untimed), drawn with ``self.rng``."""
        raise NotImplementedError

    def prepare(self) -> None:
        self.rng = random.Random(SEED)
        self.ids = connection_ids(self.n)
        self._start()
        subject_name, make = self.ROWS[self.row]
        if subject_name is not None:
            self.subject = subjects.create(subject_name, IDLE_TIMEOUT)
            fill(self.subject, self.ids)
        self._kernel = make(self, self.subject)
        if self.settings.round_target is None:  # fixed: rows of one table must do the same work
            self.ops = self.settings.max_ops
        else:
            self.ops = timing.calibrate(self._probe, target=self.settings.round_target,
                                        lo=self.settings.min_ops, hi=self.settings.max_ops)

    def _probe(self, k: int) -> float:
        work = ticks(self._operations(k))
        return timing.stopwatch(lambda: self._kernel(work))  # type: ignore[misc]

    def setup(self) -> None:
        self._ticks = ticks(self._operations(self.ops))

    def run(self) -> None:
        self._kernel(self._ticks)  # type: ignore[misc]

    def close(self) -> None:
        if self.subject is not None:
            self.subject.close()
        self.subject = self._kernel = None
        self._ticks = []


def ops_jobs(case_type: Type[OpsCase], size: int, settings: Settings) -> List[Job]:
    """One job per row of ``case_type``, each a best-of-N per operation."""

    def job(row: str) -> Job:
        def run() -> List[Result]:
            case = case_type(row, size, settings)
            return [timed(case, settings, workload=case_type.workload, variant="", size=size,
                          subject=row, unit="s/op")]

        return subject_job(case_type.workload, "", size, row, run)

    return [job(row) for row in case_type.ROWS]
