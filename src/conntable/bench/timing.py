"""The harness: best of N timed rounds, warmed up, with the garbage collector out of the way.

A *case* is one implementation on one workload at one size. It is prepared
once (untimed: build the table), then run round after round; ``setup``
readies each round (untimed) and ``run`` is the timed body. The figure is the
fastest round divided by the operations in a round: on a shared, noisy
machine the minimum is the estimate least disturbed by other work.

The collector is frozen after ``prepare`` and disabled while a round runs:
a full collection over a million records in the middle of a round would
measure the collector, not the registry.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from typing import Callable, Iterator, List, Protocol


class Case(Protocol):
    @property
    def ops(self) -> float:
        """Operations in one round; the figure is seconds per round / ops."""

    def prepare(self) -> None: ...

    def setup(self) -> None: ...

    def run(self) -> None: ...

    def close(self) -> None: ...


def without_gc(body: Callable[[], None]) -> Callable[[], None]:
    """``body`` with the cyclic garbage collector disabled while it runs."""

    def run() -> None:
        enabled = gc.isenabled()
        gc.disable()
        try:
            body()
        finally:
            if enabled:
                gc.enable()

    return run


def settle() -> None:
    """Collect now, then keep what survives out of later collections."""
    gc.collect()
    gc.freeze()


@contextmanager
def prepared(case: Case) -> Iterator[Callable[[], None]]:
    """Prepare ``case``; yield its timed body (collector off); close it after."""
    case.prepare()
    settle()
    try:
        yield without_gc(case.run)
    finally:
        case.close()
        gc.unfreeze()


def measure(case: Case, *, rounds: int, warmup: int = 1,
            timer: Callable[[], float] = time.perf_counter) -> List[float]:
    """Seconds taken by each of ``rounds`` timed rounds, after ``warmup`` untimed ones."""
    samples = []
    with prepared(case) as body:
        for i in range(warmup + rounds):
            case.setup()
            start = timer()
            body()
            elapsed = timer() - start
            if i >= warmup:
                samples.append(elapsed)
    return samples


def calibrate(probe: Callable[[int], float], *, target: float, lo: int, hi: int, start: int = 2000) -> int:
    """How many operations make a round of about ``target`` seconds.

    ``probe(k)`` runs ``k`` operations and returns the seconds they took; the
    probe doubles as a warm-up.
    """
    per_op = max(probe(start), 1e-9) / start
    return max(lo, min(hi, int(target / per_op)))


def stopwatch(body: Callable[[], None], timer: Callable[[], float] = time.perf_counter) -> float:
    start = timer()
    body()
    return timer() - start
