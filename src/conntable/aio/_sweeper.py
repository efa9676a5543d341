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
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Callable, List, Optional

from conntable import Expired

from ._log import CALLBACK_ERRORS, logger

__all__ = ("Sweeper",)

# uvloop's timers and clock count whole milliseconds: a shorter sleep could
# wake before the due slot, find nothing, and spin until the clock ticks.
MIN_SLEEP = 0.001
#: Loop time one pass of a mass expiry aims to take, its follow-up work included.
BUDGET = 0.005
#: The size of the first pass of a burst (at most ``batch``).
FIRST_PASS = 64


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
        self._loop = loop
        self._table = table
        self._batch = batch
        self._on_due = on_due
        self._waiter: Optional[asyncio.Future[None]] = None
        # When the current sleep ends; -inf while awake (an awake sweeper
        # looks at the table again before sleeping, so nothing needs to wake it).
        self._sleeping_until = -math.inf
        self._task: Optional[asyncio.Task[None]] = None
        #: How many times the sweeper woke up: a test can check that an idle
        #: manager does not wake at all.
        self.wakeups = 0

    def start(self) -> None:
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
        task = self._task
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])

    async def _run(self) -> None:
        loop = self._loop
        table = self._table
        limit = min(FIRST_PASS, self._batch)
        while True:
            now = loop.time()
            when = table.next_expiry()
            if when is None or when > now:
                await self._sleep(when, now)
                continue
            started = time.perf_counter()
            expired = table.expire(now, limit)
            if expired:
                try:
                    self._on_due(expired, now)
                except CALLBACK_ERRORS:  # a bug, but expiry must go on; not this task's cancellation (no await)
                    logger.exception("handling expired connections failed")
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
            self._waiter = None
            self._sleeping_until = -math.inf
            if handle is not None:
                handle.cancel()
