"""Progress on stderr while the benchmarks run: which job, how far along, what it measured, and
an estimate of the time left.

The estimate prices each job still to run from the jobs already done: the same case (workload
and row) at a smaller size, grown as ``size ** e``, where ``e`` is how this workload's cases grew
with size so far (any workload's until it has two sizes; 1 until any has); else the mean of the
workload's cases at this size; else the seconds per connection of everything done so far. It is
shown once something has finished, and it is an estimate: sizes do not all scale alike, and the
machine may be busy.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, TextIO, Tuple

#: (workload, row, connection count): what a job's cost is estimated from.
Key = Tuple[str, str, int]


class Estimate:
    """Seconds the remaining jobs should take, learned from the finished ones."""

    def __init__(self) -> None:
        self._seconds: Dict[Key, float] = {}
        self._exponents: Optional[Dict[str, List[float]]] = None  # per workload, from _seconds

    def record(self, key: Key, seconds: float) -> None:
        self._seconds[key] = seconds
        self._exponents = None

    def _growth(self, workload: str, small: int, large: int) -> float:
        """How much longer a job takes at ``large`` than at ``small``.

        Cost grows as ``size ** e``; ``e`` is what the cases already measured at two sizes
        showed (this workload's if it has any, else any workload's), or 1 until some have.
        """
        if self._exponents is None:
            by_case: Dict[Tuple[str, str], List[Tuple[int, float]]] = {}
            for (w, row, size), seconds in self._seconds.items():
                by_case.setdefault((w, row), []).append((size, seconds))
            self._exponents = {}
            for (w, _), points in by_case.items():
                for size, seconds in points:
                    for size2, seconds2 in points:
                        if size2 > size and seconds > 0 and seconds2 > 0:
                            self._exponents.setdefault(w, []).append(
                                math.log(seconds2 / seconds) / math.log(size2 / size))
        observed = self._exponents.get(workload) or [e for es in self._exponents.values() for e in es]
        exponent = sum(observed) / len(observed) if observed else 1.0
        return (large / small) ** exponent

    def job(self, key: Key) -> Optional[float]:
        if key in self._seconds:
            return self._seconds[key]
        workload, row, size = key
        smaller = [k[2] for k in self._seconds if k[:2] == (workload, row) and k[2] < size]
        if smaller:  # the same case at a smaller size, grown as this workload's cases grew
            small = max(smaller)
            return self._seconds[(workload, row, small)] * self._growth(workload, small, size)
        same_size = [v for (w, _, n), v in self._seconds.items() if w == workload and n == size]
        if same_size:
            return sum(same_size) / len(same_size)
        if not self._seconds:
            return None
        per_connection = sum(self._seconds.values()) / sum(k[2] for k in self._seconds)
        return per_connection * size

    def remaining(self, keys: Sequence[Key]) -> Optional[float]:
        if not self._seconds:
            return None
        return sum(self.job(key) or 0.0 for key in keys)


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class Progress:
    def __init__(self, keys: Sequence[Key], stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.keys = list(keys)
        self.total = len(self.keys)
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.clock = clock
        self.started = clock()
        self.estimate = Estimate()
        self._label = ""
        self._job_started = self.started

    def left(self) -> str:
        """The estimated time left, counting the job that runs now as not started."""
        seconds = self.estimate.remaining(self.keys[self.done:])
        return "" if seconds is None else f"~{format_duration(seconds)} left"

    def _prefix(self) -> str:
        return (f"[{self.done + 1:>3}/{self.total}] {self.clock() - self.started:6.1f}s "
                f"{self.left():>12}  {self._label}")

    def begin(self, label: str) -> None:
        self._label = label
        self._job_started = self.clock()
        if self.tty:  # on a terminal, show what runs now; the line is completed by end()
            self.stream.write(self._prefix() + " ...")
            self.stream.flush()

    def end(self, outcome: str) -> None:
        line = f"{self._prefix()}  {outcome}"
        self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
        self.stream.flush()
        if self.done < self.total:
            self.estimate.record(self.keys[self.done], self.clock() - self._job_started)
        self.done += 1

    def note(self, message: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + f"note: {message}\n")
        self.stream.flush()
