"""The manager's one expiry task.

It sleeps until ``table.next_expiry()``: one timer handle per sleep, none at
all while nothing can expire. A new connection that comes due earlier than
the current sleep wakes it through :meth:`Sweeper.wake_if_earlier` (one
comparison per call; a wake only when the due time really is earlier).

Mass expiry: each pass hands at most ``batch`` expired entries to the manager
and yields to the loop before the next pass, so tens of thousands of
connections coming due together are spread over many loop iterations. Within
that cap, the pass size follows what a pass really costs: closing a
connection also costs the loop work later in the iteration (the transport's
close, ``connection_lost``), so the sweeper measures the whole iteration, from
the start of its pass until the loop comes back to it, and sizes the next
pass to take about ``BUDGET`` seconds. It starts small and at most doubles
per pass (slow start), so the first pass of a burst cannot stall the loop
either. Measured on the benchmark (5000 connections due in the same
``resolution`` slot), a fixed 1000 per pass made 50 ms loop stalls.

Nothing stops it but :meth:`Sweeper.stop`: whatever ``on_due`` raises (its
owner contains failures per entry; this is the last line) is logged, and a
table whose ``next_expiry`` or ``expire`` raises (a custom table) is logged
and tried again after a pause that doubles from ``RETRY_FIRST`` up to
``RETRY_MAX`` while the failures go on, so a broken table costs a bounded
amount of CPU and expiry resumes as soon as it works again. KeyboardInterrupt
and SystemExit are handed to the loop (see ``_log``), the task carries on.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Callable, List, Optional

from conntable import Expired
from conntable._common import check_size

from ._log import EXITS, logger, propagate

__all__ = ("Sweeper",)

# uvloop's timers and clock count whole milliseconds: a shorter sleep could
# wake before the due slot, find nothing, and spin until the clock ticks.
MIN_SLEEP = 0.001
#: Loop time one pass of a mass expiry aims to take, its follow-up work included.
BUDGET = 0.005
#: The size of the first pass of a burst (at most ``batch``).
FIRST_PASS = 64
#: Pause after the table first fails, doubled per failure in a row up to RETRY_MAX.
RETRY_FIRST = 0.001
RETRY_MAX = 1.0


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


class Sweeper:
    """Calls ``on_due(expired, now)`` with every batch the table returns, at the right times."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        table: Any,
        batch: int,
        on_due: Callable[[List[Expired], float], None],
    ) -> None:
        self._batch = check_size("batch", batch, minimum=1)
        if not callable(on_due):
            raise TypeError(f"on_due must be callable, not {type(on_due).__name__}")
        self._loop = loop
        self._table = table
        self._on_due = on_due
        self._waiter: Optional[asyncio.Future[None]] = None
        # When the current sleep ends; -inf while awake (an awake sweeper
        # looks at the table again before sleeping, so nothing needs to wake it).
        self._sleeping_until = -math.inf
        self._task: Optional[asyncio.Task[None]] = None
        self._ending: List[asyncio.Task[None]] = []  # cancelled by stop_soon, not yet waited for
        #: How many times the sweeper woke up: a test can check that an idle
        #: manager does not wake at all.
        self.wakeups = 0

    def start(self) -> None:
        """Start the task, unless it is running already."""
        if not self.running:
            self._task = self._loop.create_task(self._run(), name="conntable-sweeper")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake_if_earlier(self, due: float) -> None:
        """Make the sleeping sweeper look again if something is due before it would wake."""
        if due < self._sleeping_until:
            waiter = self._waiter
            if waiter is not None:
                _wake(waiter)

    async def stop(self) -> None:
        """Cancel the task and wait until it is done."""
        self.stop_soon()
        ending = [task for task in self._ending if not task.done()]
        self._ending.clear()
        if ending:
            await asyncio.wait(ending)

    def stop_soon(self) -> None:
        """Cancel the task without waiting (it ends at the loop's next turn); :meth:`start` may follow at once."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            self._ending = [ending for ending in self._ending if not ending.done()]
            self._ending.append(task)

    async def _run(self) -> None:
        loop = self._loop
        table = self._table
        limit = min(FIRST_PASS, self._batch)
        retry = RETRY_FIRST
        while True:
            now = loop.time()
            # Only synchronous calls in here: a CancelledError they raise is theirs, never this
            # task's cancellation, which arrives at an await.
            try:
                when = table.next_expiry()
                if when is None or when > now:
                    expired = None
                else:
                    started = time.perf_counter()
                    expired = table.expire(now, limit)
            except BaseException as exc:
                logger.error("the sweeper's table failed; trying again in %g s", retry, exc_info=exc)
                propagate(exc if isinstance(exc, EXITS) else None)
                await asyncio.sleep(retry)
                retry = min(2 * retry, RETRY_MAX)
                continue
            retry = RETRY_FIRST
            if expired is None:
                await self._sleep(when, now)
                continue
            if expired:
                try:
                    self._on_due(expired, now)
                except BaseException as exc:  # a bug in on_due: expiry must go on
                    logger.error("handling expired entries failed", exc_info=exc)
                    propagate(exc if isinstance(exc, EXITS) else None)
            full = len(expired) >= limit
            del expired  # never keep the last batch (its connections) alive while sleeping
            if full:
                await asyncio.sleep(0)  # let the loop breathe between passes of a mass expiry
                limit = self._next_limit(limit, time.perf_counter() - started)

    def _next_limit(self, limit: int, iteration: float) -> int:
        """The next pass size: about BUDGET of loop time at this pass's cost, at most doubling."""
        fits = int(BUDGET * limit / iteration) if iteration > 0.0 else self._batch
        return max(1, min(fits, 2 * limit, self._batch))

    async def _sleep(self, when: Optional[float], now: float) -> None:
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        handle = None
        if when is None:
            self._sleeping_until = math.inf
        else:
            self._sleeping_until = when
            handle = loop.call_later(max(when - now, MIN_SLEEP), _wake, waiter)
        try:
            await waiter
            self.wakeups += 1
        finally:
            if self._waiter is waiter:  # not a task started since (see stop_soon)
                self._waiter = None
                self._sleeping_until = -math.inf
            if handle is not None:
                handle.cancel()
