"""mixed: simulated seconds of a busy server, in CPU time per simulated second.

Per simulated second, with ``n`` connections live:

* 10 expiry passes (one per 0.1 s tick);
* activity on 10% of ``n`` (touches of random active connections);
* 1% of ``n`` new connections, 0.5% of ``n`` closed by the server;
* 0.5% of ``n`` fall silent, and are expired by the passes 60 s later.

In the steady state this starts from, 70% of the connections are active
(last seen within 10 s, registered up to a minute ago) and 30% are silent,
their last activity spread over the past minute, so about 0.5% of ``n`` time
out each second. A round is 6.4 simulated seconds, so that it contains
exactly one of the instants where conntable's wheel moves a second-level
slot down (see the sweep workload): the figure includes that cost.

Every subject gets the same traffic (same seed, same key objects); only
subjects that can run on simulated time take part (not uvloop).
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any, Deque, Dict, List, Tuple

from .. import subjects
from ..history import History
from ..traffic import SEED, TICK, VALUE, connection_ids
from . import kernels
from .base import IDLE_TIMEOUT, Job, Result, Settings, subject_job, timed

NAME = "mixed"
TITLE = "mixed: simulated seconds of a busy server"
LEGEND = ("per simulated second: 10% of n touched, 1% arrive, 0.5% closed, 0.5% time out after 60 s "
          "idle, 10 expiry passes; rounds of 6.4 s include one conntable wheel-level crossing.")
TICKS_PER_ROUND = 64
TOUCH, ARRIVE, CLOSE, FALL_SILENT = 0.10, 0.01, 0.005, 0.005  # of n, per second
ACTIVE_SHARE = 0.7
#: The driver stops touching a connection it has not touched for this long,
#: so that it never touches one a subject may have expired.
SILENT_AFTER_MS = 55_000
START_MS = 61_050

Tick = Tuple[float, List[int], List[int], List[int]]


class _Actives:
    """The connections the driver keeps active: random picks and removals in O(1)."""

    def __init__(self, keys: List[int], touched_ms: Dict[int, int]) -> None:
        self.keys = list(keys)
        self.where = {key: i for i, key in enumerate(self.keys)}
        self.touched_ms = touched_ms
        self.fifo: Deque[Tuple[int, int]] = deque(sorted((t, k) for k, t in touched_ms.items()))

    def insert(self, key: int, now_ms: int) -> None:
        self.where[key] = len(self.keys)
        self.keys.append(key)
        self.touch(key, now_ms)

    def touch(self, key: int, now_ms: int) -> None:
        self.touched_ms[key] = now_ms
        self.fifo.append((now_ms, key))

    def discard(self, key: int) -> None:
        i = self.where.pop(key)
        last = self.keys.pop()
        if last != key:
            self.keys[i] = last
            self.where[last] = i
        del self.touched_ms[key]

    def pop_random(self, rng: random.Random) -> int:
        key = self.keys[rng.randrange(len(self.keys))]
        self.discard(key)
        return key

    def silence_stale(self, now_ms: int) -> None:
        fifo = self.fifo
        while fifo and fifo[0][0] <= now_ms - SILENT_AFTER_MS:
            when, key = fifo.popleft()
            if self.touched_ms.get(key) == when:
                self.discard(key)


class MixedWorld:
    """The history and the traffic of a size, computed once and served to every subject."""

    def __init__(self, n: int, rounds: int) -> None:
        self.n = n
        rng = random.Random(SEED)
        ids = connection_ids(n)
        split = int(n * ACTIVE_SHARE)
        active, silent = ids[:split], ids[split:]
        start = START_MS - round(IDLE_TIMEOUT * 1000) + 300
        self.history = History()
        self.history.spread(silent, start, START_MS - 300)
        self.history.spread(active, start, START_MS - 10_000)
        self.history.spread(active, START_MS - 10_000, START_MS - 300, touch=True)
        actives = _Actives(active, self.history.last_touches())
        next_id = n + 1
        per_tick = {share: max(1, round(share * n * TICK)) for share in (TOUCH, ARRIVE, CLOSE, FALL_SILENT)}
        self.rounds: List[List[Tick]] = []
        now_ms = START_MS
        for _ in range(rounds):
            ticks: List[Tick] = []
            for _ in range(TICKS_PER_ROUND):
                now_ms += round(TICK * 1000)
                actives.silence_stale(now_ms)
                for _ in range(per_tick[FALL_SILENT]):
                    actives.pop_random(rng)
                closes = [actives.pop_random(rng) for _ in range(per_tick[CLOSE])]
                touches = rng.choices(actives.keys, k=per_tick[TOUCH])
                for key in touches:
                    actives.touch(key, now_ms)
                arrivals = list(range(next_id, next_id + per_tick[ARRIVE]))
                next_id += len(arrivals)
                for key in arrivals:
                    actives.insert(key, now_ms)
                ticks.append((now_ms / 1000, touches, arrivals, closes))
            self.rounds.append(ticks)


class MixedCase:
    timer = staticmethod(time.process_time)
    ops = TICKS_PER_ROUND * TICK  # simulated seconds per round

    def __init__(self, world: MixedWorld, subject_name: str) -> None:
        self.world = world
        self.subject_name = subject_name
        self.subject: Any = None
        self.detail: Dict[str, Any] = {"expired_per_round": []}
        self._round = 0

    def prepare(self) -> None:
        self.subject = subjects.create(self.subject_name, IDLE_TIMEOUT, simulated=True)
        self.world.history.replay(self.subject)
        self.subject.expire(START_MS / 1000)

    def setup(self) -> None:
        self._ticks = self.world.rounds[self._round]
        self._round += 1

    def run(self) -> None:
        s = self.subject
        self.detail["expired_per_round"].append(
            kernels.serve_ticks(self._ticks, s.expire, s.touch, s.add, s.mapping, VALUE))

    def close(self) -> None:
        if self.subject is not None:
            self.subject.close()
            self.subject = None


def jobs(size: int, settings: Settings) -> List[Job]:
    # Rounds are long (6.4 simulated s) and the state evolves: no warm-up round.
    rounds = Settings(rounds=1 if settings.quick else min(3, settings.rounds), warmup=0)
    world: List[MixedWorld] = []

    def job(name: str) -> Job:
        def run() -> List[Result]:
            if not world:
                world.append(MixedWorld(size, rounds.rounds))
            case = MixedCase(world[0], name)
            return [timed(case, rounds, workload=NAME, variant="", size=size, subject=name,
                          unit="CPU s/simulated s")]

        return subject_job(NAME, "", size, name, run)

    return [job(name) for name in subjects.NAMES]
