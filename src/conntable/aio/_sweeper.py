"""The manager's one expiry task.

It sleeps until ``table.next_expiry()``: one timer handle per sleep, none at
all while nothing can expire. A new connection that comes due earlier than
the current sleep wakes it through :meth:`Sweeper.wake_if_earlier` (one
comparison per call). The comparison is in the table's ticks, not in exact
times: the sleep ends at the start of the earliest armed tick (a time rounded
up to the tick), and an entry due anywhere in that same tick is handed back by
that same wake-up, so it must not wake the sweeper. Compared with the exact
due time, every arrival in the earliest tick woke it (in an accept ramp, most
of them: the table's coarse clock gives a whole ``resolution`` of arrivals the
same due time); compared in ticks, a wake-up happens only for an earlier tick.

Mass expiry: each pass hands at most ``batch`` expired entries to the
manager, and while work is left the sweeper pauses ``_pacing.INTERVAL``
between passes, so tens of thousands of connections coming due together are
spread over many loop iterations. How many each pass takes is a
:class:`~conntable.aio._pacing.Pacer`'s: it reads how late each pause ended
(the loop's lag, which holds the work the closes caused after the pass: the
peers' answers arriving together) and keeps it below a target, with a floor
rate so that a burst always ends (see ``_pacing``). A pass that leaves nothing
due is followed by the usual sleep, no pause.

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
from ._pacing import INTERVAL, Pacer

__all__ = ("Sweeper",)

# uvloop's timers and clock count whole milliseconds: a shorter sleep could
# wake before the due slot, find nothing, and spin until the clock ticks.
MIN_SLEEP = 0.001
#: Pause after the table first fails, doubled per failure in a row up to RETRY_MAX.
RETRY_FIRST = 0.001
RETRY_MAX = 1.0
# An entry due up to this fraction of a tick after the start of the tick
# before the sleep's still wakes the sweeper: ``next_expiry`` may answer up to
# 1e-6 of a tick early (the table's own slack, ``TICK_SLACK``), and waking for
# nothing is safe where sleeping past a due tick is not (at worst 1 arrival in
# 100,000 wakes it for nothing).
_TICK_SLACK = 1e-5


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
        # A due time before this is in an earlier tick than the one the current sleep ends at: it
        # wakes the sweeper. -inf while awake (an awake sweeper looks at the table again before
        # sleeping, so nothing needs to wake it), +inf while it sleeps with nothing armed.
        self._wake_before = -math.inf
        # The table's tick, to compare in ticks; a table that does not say (a custom one) is
        # compared in exact times, as if its ticks were infinitely fine.
        try:
            resolution = float(getattr(table, "resolution", 0.0))
        except Exception:
            resolution = 0.0
        self._tick = resolution if resolution > 0.0 and math.isfinite(resolution) else 0.0
        self._task: Optional[asyncio.Task[None]] = None
        self._ending: List[asyncio.Task[None]] = []  # cancelled by stop_soon, not yet waited for
        #: Sizes the passes of a mass expiry (see ``_pacing``); its counters are for tests and benchmarks.
        self.pacer = Pacer(self._batch)
        #: How many times the sweeper woke up: a test can check that an idle
        #: manager does not wake at all.
        self.wakeups = 0
        #: Of those, the ones :meth:`wake_if_earlier` caused (the accept path's cost).
        self.early_wakeups = 0

    def start(self) -> None:
        """Start the task, unless it is running already."""
        if not self.running:
            self._task = self._loop.create_task(self._run(), name="conntable-sweeper")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def wake_if_earlier(self, due: float) -> None:
        """Make the sleeping sweeper look again if ``due`` is in an earlier tick than the one it sleeps until."""
        if due < self._wake_before:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                self.early_wakeups += 1
                waiter.set_result(None)

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
        pacer = self.pacer
        retry = RETRY_FIRST
        burst_pass = -math.inf  # when the previous pass of the current burst began; -inf: no burst
        passed = None  # (entries, seconds) of a pass not yet followed by a pause or a sleep
        while True:
            now = loop.time()
            # Only synchronous calls in here: a CancelledError they raise is theirs, never this
            # task's cancellation, which arrives at an await.
            try:
                when = table.next_expiry()
                due = when is not None and when <= now
                if due and passed is None:
                    started = time.monotonic()
                    limit = pacer.size(started - burst_pass if burst_pass > -math.inf else math.inf)
                    expired = table.expire(now, limit)
                else:
                    expired = None
            except BaseException as exc:
                logger.error("the sweeper's table failed; trying again in %g s", retry, exc_info=exc)
                propagate(exc if isinstance(exc, EXITS) else None)
                passed, burst_pass = None, -math.inf
                await asyncio.sleep(retry)
                retry = min(2 * retry, RETRY_MAX)
                continue
            retry = RETRY_FIRST
            if not due:  # the burst, if any, is over
                passed, burst_pass = None, -math.inf
                pacer.restart()
                await self._sleep(when, now)
                continue
            if expired is None:
                # Work is left after a pass: pause, and size the next pass from how late the pause ends.
                await self._pause(*passed)  # type: ignore[misc]
                passed = None
                continue
            if expired:
                try:
                    self._on_due(expired, now)
                except BaseException as exc:  # a bug in on_due: expiry must go on
                    logger.error("handling expired entries failed", exc_info=exc)
                    propagate(exc if isinstance(exc, EXITS) else None)
            passed = (len(expired), time.monotonic() - started)
            burst_pass = started
            del expired  # never keep the last batch (its connections) alive while sleeping

    async def _pause(self, entries: int, took: float) -> None:
        """Let the loop breathe between passes; tell the pacer how late the loop came back."""
        until = time.monotonic() + INTERVAL
        await asyncio.sleep(INTERVAL)
        self.pacer.report(entries, took, max(0.0, time.monotonic() - until))

    async def _sleep(self, when: Optional[float], now: float) -> None:
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        handle = None
        if when is None:
            self._wake_before = math.inf
        else:
            # ``when`` is the start of the earliest armed tick: what is due after the start of the
            # tick before it (give or take the slack) is in that tick or later.
            self._wake_before = when - self._tick * (1.0 - _TICK_SLACK)
            handle = loop.call_later(max(when - now, MIN_SLEEP), _wake, waiter)
        try:
            await waiter
            self.wakeups += 1
        finally:
            if self._waiter is waiter:  # not a task started since (see stop_soon)
                self._waiter = None
                self._wake_before = -math.inf
            if handle is not None:
                handle.cancel()
