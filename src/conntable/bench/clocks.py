"""Clocks the benchmarks drive: real time, simulated time, and an asyncio loop on simulated time.

Workloads that measure raw operation costs (touch, churn, memory) run the
baselines on ``time.monotonic()`` and on real event loops, as servers do.
Workloads that need time to pass (sweep, mixed, wake-ups) cannot wait for it:
they move a simulated clock instead. conntable needs no help there (it never
reads a clock), the dict/OrderedDict/heap registries read a :class:`SimClock`,
and the event-loop registries run on a :class:`VirtualClockLoop`. libuv's
clock cannot be simulated, so uvloop only takes part in the real-time workloads.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import selectors
import time
from typing import Callable, Optional, cast


class RealClock:
    """``time.monotonic``, as the baselines read it in a server; ``set`` does nothing."""

    read: Callable[[], float] = staticmethod(time.monotonic)

    def set(self, now: float) -> None:
        pass


class SimClock:
    """A clock the workload moves forward.

    ``read`` is a C-level callable (a ``partial`` of ``list.__getitem__``),
    which costs less than ``time.monotonic()`` on this project's machine: a
    baseline on simulated time is never slower for it.
    """

    def __init__(self, now: float = 0.0) -> None:
        self._cell = [now]
        self.read = cast(Callable[[], float], functools.partial(operator.getitem, self._cell, 0))

    def set(self, now: float) -> None:
        self._cell[0] = now


def run_once(loop: asyncio.AbstractEventLoop) -> None:
    """Run one iteration of a loop that is not running: its due timers and ready callbacks."""
    loop.call_soon(loop.stop)
    loop.run_forever()


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Polls the real selector without blocking, and turns a would-be sleep into a clock jump."""

    def __init__(self, loop: "VirtualClockLoop") -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: Optional[float] = None):  # type: ignore[override]
        if timeout is None:
            raise RuntimeError("the virtual-time loop would sleep forever: nothing is scheduled")
        if timeout > 0:
            self._loop.sleep()
        return super().select(0)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock moves only when it would sleep, or when told to.

    Everything else is the stock loop: the timer heap, cancelled-handle
    bookkeeping and callback dispatch cost what they cost in a server.
    """

    def __init__(self) -> None:
        self.virtual_now = 0.0
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self.virtual_now

    def sleep(self) -> None:
        """Wake at the earliest timer's own instant (``now + timeout`` could round below it)."""
        scheduled = self._scheduled  # type: ignore[attr-defined]  # asyncio's timer heap
        if scheduled and scheduled[0].when() > self.virtual_now:
            self.virtual_now = scheduled[0].when()

    def jump(self, when: float) -> None:
        """Move the clock to ``when`` at once and run one iteration, as a busy loop
        that wakes late does: every timer due by then runs in that iteration."""
        if when > self.virtual_now:
            self.virtual_now = when
        run_once(self)

    def run_until(self, when: float) -> None:
        """Let the loop sleep from timer to timer until ``when``, as an idle loop does."""
        self.call_at(when, self.stop)
        self.run_forever()
