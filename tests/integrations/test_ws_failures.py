"""Peers that reset, a full server answering 503, and shutdown with code 1001."""

from __future__ import annotations

import asyncio

import pytest
from aio_support import eventually
from websockets.exceptions import ConnectionClosed, InvalidStatus
from ws_support import WsScenario, closed, reset_client

from conntable.aio import CloseReason


def test_reset_peers_clean_up(run):
    async def scenario():
        sc = WsScenario(idle_timeout=60.0)

        async def handler(ws):
            sc.spawn(ws.connection.id, asyncio.sleep(3600))
            await sc.echo(ws)

        await sc.start(handler)
        clients = await sc.connect(10)
        for client in clients:
            await client.send("hi")
            assert await client.recv() == "hi"
        for client in clients[:6]:
            reset_client(client)
        await eventually(lambda: sc.ended() == 6, "the reset connections ended")
        assert sc.ended(CloseReason.ERROR) == 6
        await eventually(lambda: sum(task.done() for task in sc.spawned) == 6, "their tasks cancelled")
        assert len(sc.mgr) == 4 and len(sc.ws_server.heartbeat) == 4
        await sc.finish()
        assert all(task.cancelled() for task in sc.spawned)

    run(scenario())


def test_breaker_answers_503_and_recovers_below_low_water(run):
    async def scenario():
        sc = WsScenario()
        await sc.start(own_manager=True, max_connections=4, retry_after=7, close_timeout=2.0)
        admitted = await sc.connect(4)
        for _ in range(3):
            with pytest.raises(InvalidStatus) as refused:
                await sc.connect(1)
            assert refused.value.response.status_code == 503
            assert refused.value.response.headers["Retry-After"] == "7"
        await eventually(lambda: sc.ended(CloseReason.REJECTED) == 3, "the refused connections gone")
        assert sc.mgr.stats().breaker_open
        await admitted[0].close()  # 3 held: not below the low-water mark of 3
        await eventually(lambda: len(sc.mgr) == 3, "one left")
        with pytest.raises(InvalidStatus):
            await sc.connect(1)
        await eventually(lambda: sc.ended(CloseReason.REJECTED) == 4, "refused again")
        await admitted[1].close()  # 2 held: accepting again
        await eventually(lambda: len(sc.mgr) == 2, "two left")
        late, = await sc.connect(1)
        await late.send("in")
        assert await late.recv() == "in"
        stats = sc.mgr.stats()
        assert not stats.breaker_open and (stats.opened_total, stats.rejected_total) == (5, 4)
        await sc.finish()

    run(scenario())


def test_shutdown_closes_everyone_with_1001_then_aborts(run):
    async def scenario():
        sc = WsScenario()

        async def handler(ws):
            sc.spawn(ws.connection.id, asyncio.sleep(3600))
            try:
                await ws.wait_closed()  # a handler that only waits: the close must come from the server
            finally:
                sc.sent_codes[ws.connection.id] = ws.protocol.close_sent.code

        server = await sc.start(handler, own_manager=True, close_timeout=0.5)
        polite = await sc.connect(8)
        deaf, = await sc.connect(1)
        deaf.transport.pause_reading()  # never reads the close frame: aborted after close_timeout
        await eventually(lambda: len(sc.spawned) == 9, "handlers running")
        server.close()
        assert [await closed(client) for client in polite] == [1001] * 8
        await asyncio.wait_for(server.wait_closed(), 30)
        summary = server.shutdown_summary
        assert (summary.closed_gracefully, summary.aborted, summary.tasks_cancelled) == (8, 1, 9)
        assert sc.ended(CloseReason.SHUTDOWN) == 9
        assert list(sc.sent_codes.values()) == [1001] * 9
        assert all(task.cancelled() for task in sc.spawned)
        with pytest.raises((ConnectionClosed, OSError)):
            await sc.connect(1)
        await sc.finish()

    run(scenario())
