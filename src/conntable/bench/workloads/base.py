"""What every workload shares: run settings, results, and jobs the runner schedules."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from .. import subjects, timing

#: The idle timeout of every table in the benchmarks, unless a workload says otherwise.
IDLE_TIMEOUT = 60.0


@dataclass(frozen=True)
class Settings:
    rounds: int = 5          # timed rounds; the figure is the fastest
    warmup: int = 1          # untimed rounds first
    #: Seconds a timed round should take (operations are calibrated per case);
    #: None: every round does ``max_ops`` operations.
    round_target: Optional[float] = 0.1
    max_ops: int = 300_000   # operations in a round, at most
    min_ops: int = 5_000     # operations in a round, at least
    quick: bool = False

    @classmethod
    def quick_run(cls) -> "Settings":
        return cls(rounds=3, warmup=1, round_target=0.015, max_ops=30_000, min_ops=2_000, quick=True)


@dataclass
class Result:
    workload: str
    variant: str
    size: int
    subject: str
    #: seconds (per operation, per pass or per simulated second), bytes, or a count, as ``unit`` says
    value: Optional[float]
    unit: str
    samples: List[float] = field(default_factory=list)
    detail: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    """One unit of work for the runner: a progress line, and the results it yields."""

    label: str
    run: Callable[[], List[Result]]


def timed(case: timing.Case, settings: Settings, **result: Any) -> Result:
    """Measure ``case`` and return its best round, per operation."""
    timer = getattr(case, "timer", None) or time.perf_counter
    samples = timing.measure(case, rounds=settings.rounds, warmup=settings.warmup, timer=timer)
    ops = case.ops
    detail = dict(getattr(case, "detail", {}), ops=ops)
    return Result(value=min(samples) / ops, samples=[s / ops for s in samples], detail=detail, **result)


def subject_job(workload: str, variant: str, size: int, name: str,
                run: Callable[[], List[Result]]) -> Job:
    return Job(f"{workload} {variant} n={size:,} {subjects.label(name)}".replace("  ", " "), run)
