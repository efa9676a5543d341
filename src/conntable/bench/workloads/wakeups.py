"""wake-ups: timer callbacks an event loop runs in a simulated minute when nothing is due.

Everything runs on a virtual-time asyncio loop. The event-loop registries
arm their own timers on it; the others get the sweeper a server would give
them, a timer that calls ``expire`` and re-arms itself:

* conntable: sleeps until ``next_expiry()``;
* dict + full scan: every second;
* OrderedDict, heapq: until the earliest possible due time, at most every 0.1 s.

Two minutes, ``n`` connections, nothing due in either:

* *idle minute*: idle timeout 5 min, no activity; the connections were last
  active evenly over the 4 minutes before, so the first is due right after
  the minute ends;
* *busy minute*: idle timeout 60 s; every connection is active every 45 s,
  so none is ever due, but lazily re-armed timers still come round.

The figure is the number of timer callbacks run in the minute (sweeper
wake-ups plus per-connection timers). The schedule is the loop's, not the
loop implementation's: uvloop would run the same callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from .. import subjects
from ..clocks import VirtualClockLoop
from ..history import History
from ..traffic import connection_ids
from .base import Job, Result, Settings, subject_job

NAME = "wakeups"
TITLE = "wake-ups: timer callbacks in a simulated minute with nothing due"
LEGEND = ("idle minute: timeout 5 min, no activity, first due just after the minute. busy minute: "
          "timeout 60 s, every connection active every 45 s. conntable sleeps until next_expiry().")
SWEEPER_LEAD_MS = 10_000


@dataclass(frozen=True)
class Minute:
    name: str
    idle_timeout: float
    #: When the minute starts; connections arrive evenly before it.
    start_ms: int
    #: Each connection is active again this long after it arrived, then as long again.
    active_every_ms: Optional[int] = None
    #: The granularity of arrivals and activity.
    grid_ms: int = 100
    #: Activity falls between the 0.1 s instants timers are rounded to, as
    #: it does in a server (the loop woken by I/O exactly at a slot boundary,
    #: a hair before the timer, would be an artefact of the simulation).
    offset_ms: int = 37

    @property
    def end_ms(self) -> int:
        return self.start_ms + 60_000

    def history(self, n: int) -> History:
        history = History()
        ids = connection_ids(n)
        first, last = self.offset_ms, self.start_ms - self.grid_ms + self.offset_ms
        history.spread(ids, first, last, grid_ms=self.grid_ms)
        lag = self.active_every_ms
        while lag is not None and lag < self.end_ms:
            history.spread(ids, first + lag, last + lag, touch=True, grid_ms=self.grid_ms)
            lag += self.active_every_ms  # type: ignore[operator]
        return history


MINUTES = [
    # Arrivals only matter for where they leave the timers: one instant a second is enough.
    Minute("idle minute", 300.0, 240_000, grid_ms=1000),
    Minute("busy minute", 60.0, 60_000, active_every_ms=45_000),
]


class Sweeper:
    """The timer a server arms to call ``expire``: re-armed after each wake-up."""

    def __init__(self, loop: VirtualClockLoop, subject: Any) -> None:
        self.loop = loop
        self.subject = subject
        self.handle: Optional[Any] = None
        self.wakeups = 0
        self.expired = 0

    def resync(self, now: float) -> None:
        """Wake earlier if the subject now needs it (after new connections)."""
        when = self.subject.next_wakeup(now)
        if when is None or (self.handle is not None and self.handle.when() <= when):
            return
        if self.handle is not None:
            self.handle.cancel()
        self.handle = self.loop.call_at(max(when, now), self._wake)

    def _wake(self) -> None:
        self.handle = None
        self.wakeups += 1
        now = self.loop.time()
        self.expired += len(self.subject.expire(now))
        self.resync(now)


def count_callbacks(name: str, n: int, minute: Minute) -> Dict[str, int]:
    """Run up to the end of ``minute`` on a fresh subject; count the callbacks within it."""
    subject = subjects.create(name, minute.idle_timeout, simulated=True)
    own_loop = subject.loop is None
    loop = VirtualClockLoop() if own_loop else subject.loop
    sweeper = Sweeper(loop, subject)
    history = minute.history(n)
    before = (0, 0)
    try:
        # From instant to instant of the history, the loop sleeping (and its timers firing) between.
        for when_ms in sorted({t for t in history.instants() if t < minute.end_ms} | {minute.start_ms}):
            if when_ms == minute.start_ms:
                before = (sweeper.wakeups, subject.timer_callbacks)
            loop.run_until(when_ms / 1000)
            subject.advance(when_ms / 1000)
            history.play(subject, when_ms)
            if when_ms >= minute.start_ms - SWEEPER_LEAD_MS:
                sweeper.resync(when_ms / 1000)
        loop.run_until((minute.end_ms - 1) / 1000)  # the minute, its last instant excluded
        # Nothing should have been due, in the minute or before it: check.
        expired = sweeper.expired + len(subject.expire(loop.time()))
        return {"sweeper_wakeups": sweeper.wakeups - before[0],
                "connection_timers": subject.timer_callbacks - before[1],
                "expired": expired}
    finally:
        subject.close()
        if own_loop:
            loop.close()


def jobs(size: int, settings: Settings) -> List[Job]:
    def job(name: str) -> Job:
        def run() -> List[Result]:
            results = []
            for minute in MINUTES:
                counts = count_callbacks(name, size, minute)
                total = counts["sweeper_wakeups"] + counts["connection_timers"]
                results.append(Result(NAME, minute.name, size, name, total, "callbacks/min", detail=counts))
            return results

        return subject_job(NAME, "", size, name, run)

    return [job(name) for name in subjects.NAMES]
