"""sweep: the cost of one expiry pass, by how much of the table is due.

Every subject replays the same history on simulated time (idle timeout 60 s,
resolution 0.1 s) and then runs a series of passes, 0.3 s apart:

* *nothing due*: no connection is due and no timer comes round;
* *0% due, 0.1% re-armed*: the timers of 0.1% of the connections come round,
  but those connections were active since, so nothing expires (conntable,
  the heap and aiohttp-style handles re-arm them; call_later pops the
  cancelled handles). Their activity comes just before the pass: had it come
  before the wheel moved them down a level, conntable would have re-armed
  them then (see the boundary pass below), and this pass would be free;
* *0.1% due* and *10% due*: that many connections have been idle for 60 s.

Before each timed pass an untimed pass runs 0.2 s earlier, as a server
calling ``expire`` every tick would, so the timed pass sees only the last
0.2 s. After a pass that expired connections, as many new ones arrive
(untimed), so the table keeps its size. The connections not due were last
active evenly over the preceding minute.

A hierarchical wheel also does work when time crosses into a new 6.4 s span
of its second level: the entries due in that span move down a level. The
timed passes above avoid those instants; *nothing due, wheel level
boundary* measures a pass that crosses one, with the table freshly built
each round (only conntable has levels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Tuple

from .. import subjects
from ..history import History
from ..traffic import VALUE, connection_ids
from .base import IDLE_TIMEOUT, Job, Result, Settings, subject_job, timed

NAME = "sweep"
TITLE = "sweep: one expiry pass"
LEGEND = ("idle timeout 60 s, one untimed pass 0.2 s before each timed one; see `conntable.bench.workloads.sweep`. "
          "uvloop cannot run on simulated time.")
TIMEOUT_MS = round(IDLE_TIMEOUT * 1000)
TICK_MS = 100
#: Wheel ticks in a level-0 span: crossing a multiple of it cascades a level-1 slot.
SPAN_TICKS = 64


@dataclass(frozen=True)
class Scenario:
    name: str
    due: float = 0.0
    rearmed: float = 0.0


SCENARIOS = [
    Scenario("nothing due"),
    Scenario("0% due, 0.1% re-armed", rearmed=0.001),
    Scenario("0.1% due", due=0.001),
    Scenario("10% due", due=0.1),
]
BOUNDARY = "nothing due, wheel level boundary"


def pass_ms(tick: int) -> int:
    """A pass in the middle of ``tick``: float rounding cannot move it to a neighbour."""
    return tick * TICK_MS + TICK_MS // 2


def window_size(fraction: float, n: int) -> int:
    return max(1, round(fraction * n)) if fraction else 0


def pass_ticks(count: int, first: int = 610) -> List[int]:
    """Ticks for ``count`` passes, 3 apart, none of whose last two ticks starts a 64-tick span."""
    ticks: List[int] = []
    tick = first
    while len(ticks) < count:
        if tick % SPAN_TICKS not in (0, 1):
            ticks.append(tick)
        tick += 3
    return ticks


class SweepTimeline:
    """One subject, one history, and a series of timed passes through it."""

    def __init__(self, subject_name: str, n: int, scenarios: List[Scenario], rounds: int) -> None:
        self.subject_name = subject_name
        self.n = n
        self.plan: List[Tuple[Scenario, int]] = []
        ticks = iter(pass_ticks(len(scenarios) * rounds))
        for scenario in scenarios:
            self.plan.extend((scenario, next(ticks)) for _ in range(rounds))
        self.subject: Any = None
        self.active_again: List[List[int]] = []  # per pass: who is active just before it
        self.expired: List[Tuple[str, int]] = []  # (scenario, connections expired) per timed pass
        self.stray = 0  # connections the untimed passes expired: none, if the plan is right
        self._next = 0
        self._refill = 0

    def build(self) -> None:
        if self.subject is not None:
            return
        self.subject = subjects.create(self.subject_name, IDLE_TIMEOUT, simulated=True)
        ids = iter(connection_ids(self.n))
        history = History()
        for scenario, tick in self.plan:
            at = pass_ms(tick)
            keys = [next(ids) for _ in range(window_size(scenario.due + scenario.rearmed, self.n))]
            # Last active (and armed) so as to be due in the 0.2 s the timed pass covers.
            history.spread(keys, at - 190 - TIMEOUT_MS, at - 110 - TIMEOUT_MS)
            self.active_again.append(keys if scenario.rearmed else [])
        first, last = pass_ms(self.plan[0][1]), pass_ms(self.plan[-1][1])
        history.spread(list(ids), last + 300 - TIMEOUT_MS, first - 300)
        history.replay(self.subject)
        self._next_id = self.n + 1

    def expected(self, scenario: Scenario) -> int:
        return window_size(scenario.due, self.n)

    def before_pass(self, scenario: Scenario) -> None:
        """Untimed: replace what the last pass expired, then a pass 0.2 s before the next."""
        if self._next >= len(self.plan) or self.plan[self._next][0] != scenario:
            raise RuntimeError(f"sweep passes out of order: {scenario.name}")
        subject = self.subject
        for key in range(self._next_id, self._next_id + self._refill):
            subject.add(key, VALUE)
        self._next_id += self._refill
        self.stray += len(subject.expire((pass_ms(self.plan[self._next][1]) - 200) / 1000))
        touch = subject.touch
        for key in self.active_again[self._next]:
            touch(key)

    def timed_pass(self) -> None:
        expired = self.subject.expire(pass_ms(self.plan[self._next][1]) / 1000)
        self._refill = len(expired)
        self.expired.append((self.plan[self._next][0].name, self._refill))
        self._next += 1

    def close(self) -> None:
        if self.subject is not None:
            self.subject.close()


class SweepCase:
    """The passes of one scenario in a shared :class:`SweepTimeline`."""

    ops = 1

    def __init__(self, timeline: SweepTimeline, scenario: Scenario) -> None:
        self.timeline = timeline
        self.scenario = scenario

    @property
    def detail(self) -> dict:
        """What the passes expired: a check that every implementation saw the same scenario."""
        expected = self.timeline.expected(self.scenario)
        counts = [count for name, count in self.timeline.expired if name == self.scenario.name]
        return {"expired_per_pass": counts, "expected": expected,
                "valid": self.timeline.stray == 0 and all(count == expected for count in counts)}

    def prepare(self) -> None:
        self.timeline.build()

    def setup(self) -> None:
        self.timeline.before_pass(self.scenario)

    def run(self) -> None:
        self.timeline.timed_pass()

    def close(self) -> None:
        pass


class BoundaryCase:
    """A pass that crosses a 6.4 s span of the wheel, on a table built afresh each round."""

    ops = 1
    TICK = 10 * SPAN_TICKS  # 64.0 s into the history

    def __init__(self, subject_name: str, n: int) -> None:
        self.subject_name = subject_name
        self.n = n
        self.subject: Any = None
        self.detail: dict = {}

    def prepare(self) -> None:
        pass

    def setup(self) -> None:
        self.close()
        self.subject = subjects.create(self.subject_name, IDLE_TIMEOUT, simulated=True)
        at = pass_ms(self.TICK)
        history = History()
        history.spread(connection_ids(self.n), at + 300 - TIMEOUT_MS, at - 300)
        history.replay(self.subject)
        self.subject.expire((at - 200) / 1000)

    def run(self) -> None:
        expired = len(self.subject.expire(pass_ms(self.TICK) / 1000))
        self.detail = {"expired_per_pass": [expired], "expected": 0, "valid": expired == 0}

    def close(self) -> None:
        if self.subject is not None:
            self.subject.close()
            self.subject = None


def _result(scenario: str, size: int, name: str, case: Any, settings: Settings) -> Result:
    return timed(case, settings, workload=NAME, variant=scenario, size=size, subject=name, unit="s/pass")


def jobs(size: int, settings: Settings) -> List[Job]:
    def series(name: str) -> Job:
        def run() -> List[Result]:
            timeline = SweepTimeline(name, size, SCENARIOS, settings.warmup + settings.rounds)
            try:
                return [_result(s.name, size, name, SweepCase(timeline, s), settings) for s in SCENARIOS]
            finally:
                timeline.close()

        return subject_job(NAME, "", size, name, run)

    def boundary(name: str) -> Job:
        # Each round builds the table afresh: no warm-up round, and fewer rounds.
        rounds = Settings(rounds=2 if settings.quick else min(3, settings.rounds), warmup=0)
        return subject_job(NAME, BOUNDARY, size, name,
                           lambda: [_result(BOUNDARY, size, name, BoundaryCase(name, size), rounds)])

    wheels = [kind.name for kind in subjects.KINDS if kind.wheel]
    return [series(name) for name in subjects.NAMES] + [boundary(name) for name in wheels]
