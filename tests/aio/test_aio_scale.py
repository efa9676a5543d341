"""Thousands of real connections: a mass expiry spread over many loop iterations, a mass shutdown."""

from __future__ import annotations

import asyncio

from aio_support import Scenario, Tracked, eventually

from conntable.aio import CloseReason

CONNECTIONS = 5000
BATCH = 250


class Ticker:
    """Counts loop iterations while it runs."""

    def __init__(self):
        self.ticks = 0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self):
        while True:
            self.ticks += 1
            await asyncio.sleep(0)

    async def stop(self):
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def test_mass_expiry_of_thousands(run, Table):
    """On both table implementations (the core suite's ``Table`` fixture)."""

    async def scenario():
        sc = Scenario(idle_timeout=1.0, resolution=0.05, expire_batch=BATCH, table_factory=Table)
        ticker = Ticker()
        closed_at_tick = []

        class Stamped(Tracked):
            def connection_made(self, transport):
                super().connection_made(transport)
                self.add_cleanup(lambda reason: closed_at_tick.append(ticker.ticks))

        port = await sc.serve(lambda: Stamped(sc))
        await sc.connect(port, CONNECTIONS, b"x")
        await sc.connected(CONNECTIONS)
        await eventually(lambda: sc.ended() == CONNECTIONS, "every connection expired", timeout=120)
        await ticker.stop()
        assert sc.ended(CloseReason.IDLE) == CONNECTIONS
        assert sc.mgr.stats().peak <= CONNECTIONS
        # However bunched the expiries, no more than a batch was handled per loop iteration.
        assert len(set(closed_at_tick)) >= CONNECTIONS // BATCH
        await sc.finish()

    run(scenario(), timeout=180)


def test_mass_shutdown_of_thousands(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0)
        port = await sc.serve()
        await sc.connect(port, 2000)
        await sc.connected(2000)
        assert len(sc.mgr) == 2000
        summary = await sc.finish(grace=30.0)
        assert (summary.closed_gracefully, summary.aborted) == (2000, 0)
        assert sc.ended(CloseReason.SHUTDOWN) == 2000

    run(scenario(), timeout=180)
