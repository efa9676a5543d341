"""The sweeper: woken only for an earlier tick, and a paced mass expiry that always ends.

Counts and outcomes only (wake-ups, passes, who was closed and why), never
durations: the machine is shared.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, List

from aio_support import Scenario, eventually, read_until_eof

from conntable.aio import CloseReason, Sweeper
from conntable.aio._pacing import MIN_RATE

RESOLUTION = 0.05


async def sleeping(sweeper: Sweeper) -> None:
    await eventually(lambda: sweeper._waiter is not None and not sweeper._waiter.done(), "the sweeper sleeps")


def test_an_arrival_in_the_tick_it_sleeps_until_does_not_wake_it(run, Table):
    async def scenario():
        loop = asyncio.get_running_loop()
        table = Table(math.inf, resolution=RESOLUTION, now=loop.time())
        table.add(0, "first", deadline=loop.time() + 30.0)
        sweeper = Sweeper(loop, table, 100, lambda expired, now: None)
        sweeper.start()
        await sleeping(sweeper)
        wake = table.next_expiry()  # the start of the tick the sweeper sleeps until
        # Anywhere in that tick: handed back by the same wake-up, so no reason to wake now.
        for key, due in enumerate((wake, wake - 0.01 * RESOLUTION, wake - 0.5 * RESOLUTION,
                                   wake - 0.99 * RESOLUTION, table.due(0)), start=1):
            table.add(key, "same tick", deadline=due)
            sweeper.wake_if_earlier(table.due(key))
            await asyncio.sleep(0)
        assert sweeper.early_wakeups == 0 and sweeper.wakeups == 0
        assert table.next_expiry() == wake
        await sweeper.stop()

    run(scenario())


def test_an_arrival_in_an_earlier_tick_wakes_it_and_is_expired_first(run, Table):
    async def scenario():
        loop = asyncio.get_running_loop()
        table = Table(math.inf, resolution=RESOLUTION, now=loop.time())
        table.add(0, "late", deadline=loop.time() + 30.0)
        order: List[Any] = []
        sweeper = Sweeper(loop, table, 100, lambda expired, now: order.extend(e.value for e in expired))
        sweeper.start()
        await sleeping(sweeper)
        due = loop.time() + 4 * RESOLUTION  # ticks before the one it sleeps until
        table.add(1, "early", deadline=due)
        sweeper.wake_if_earlier(table.due(1))
        assert sweeper.early_wakeups == 1
        await eventually(lambda: order == ["early"], "the early entry expired")
        assert 0 in table  # the late one is still waiting
        await sweeper.stop()

    run(scenario())


def test_a_sweeper_sleeping_with_nothing_armed_wakes_for_anything_due(run, Table):
    async def scenario():
        loop = asyncio.get_running_loop()
        table = Table(math.inf, resolution=RESOLUTION, now=loop.time())
        done: List[Any] = []
        sweeper = Sweeper(loop, table, 100, lambda expired, now: done.extend(expired))
        sweeper.start()
        await sleeping(sweeper)
        table.add(1, "x", deadline=loop.time() + RESOLUTION)
        sweeper.wake_if_earlier(table.due(1))
        sweeper.wake_if_earlier(math.inf)  # already woken: counted once
        assert sweeper.early_wakeups == 1
        await eventually(lambda: len(done) == 1, "the entry expired")
        await sweeper.stop()

    run(scenario())


def test_an_accept_ramp_barely_wakes_the_sweeper(run):
    """The issue's target: at most 0.02 sweeper wake-ups per accepted connection (the first one wakes it)."""
    count = 300

    async def scenario():
        sc = Scenario(idle_timeout=60.0)  # resolution 0.5 s: a whole ramp shares a few ticks
        port = await sc.serve()
        await sc.connect(port, 1, b"x")
        await sc.connected(1)
        sweeper = sc.mgr._sweeper
        await sleeping(sweeper)
        before = sweeper.early_wakeups
        await sc.connect(port, count, b"x")
        await sc.connected(count + 1)
        assert sweeper.early_wakeups - before <= 0.02 * count, sweeper.early_wakeups - before
        await sc.finish()

    run(scenario())


def test_a_mass_expiry_beside_active_connections_closes_every_idle_one(run):
    """Paced passes, and still every idle connection closed, every active one kept, nothing left over."""
    idle, active = 2000, 40

    async def scenario():
        loop = asyncio.get_running_loop()
        sc = Scenario(idle_timeout=1.0, resolution=RESOLUTION)
        port = await sc.serve()
        talkers = await sc.connect(port, active, b"x")
        await sc.connected(active)
        talking = True

        async def talk() -> None:  # every active connection keeps sending, and reads its echo
            while talking:
                for sock in talkers:
                    await loop.sock_sendall(sock, b"y")
                    assert await loop.sock_recv(sock, 16)
                await asyncio.sleep(RESOLUTION)

        talker = asyncio.ensure_future(talk())
        sleepers = await sc.connect(port, idle, b"x")
        await sc.connected(active + idle)
        await eventually(lambda: sc.ended() == idle, "every idle connection expired", timeout=60)
        talking = False
        await talker
        assert sc.ended(CloseReason.IDLE) == idle
        assert len(sc.mgr) == active  # the active ones, and nothing else
        ended = {sc.made[i] for i in range(active)} & set(sc.reasons)
        assert not ended, "an active connection was closed"
        for sock in sleepers:  # each was really closed: the client reads its echo, then EOF
            assert await read_until_eof(sock) == b"x"
        pacer = sc.mgr._sweeper.pacer
        assert pacer.rate >= MIN_RATE
        assert pacer.passes >= 2  # spread over passes, not one batch
        await sc.finish()

    run(scenario(), timeout=120)
