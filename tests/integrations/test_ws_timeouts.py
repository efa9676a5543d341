"""Idle connections closed with 1001; peers that stop answering pings failed with 1011, then aborted."""

from __future__ import annotations

from aio_support import eventually
from websockets.protocol import State
from ws_support import WsScenario, closed

from conntable.aio import CloseReason

IDLE = 0.5
RESOLUTION = 0.05
CLOSE_TIMEOUT = 1.0


def test_idle_clients_are_closed_with_1001(run):
    async def scenario():
        sc = WsScenario(idle_timeout=IDLE, resolution=RESOLUTION, close_timeout=CLOSE_TIMEOUT)
        await sc.start(ping_interval=None)
        clients = await sc.connect(5)
        # Hang guard at the promised bound (plus slack for a loaded machine), not a timing assertion.
        bound = IDLE + RESOLUTION + CLOSE_TIMEOUT + 5.0
        assert [await closed(client, bound) for client in clients] == [1001] * 5
        await eventually(lambda: sc.ended() == 5, "cleanups of the idle connections")
        assert sc.ended(CloseReason.IDLE) == 5
        await eventually(lambda: len(sc.sent_codes) == 5, "the handlers returned")
        assert set(sc.sent_codes.values()) == {1001}
        await sc.finish()

    run(scenario())


def test_peers_that_stop_answering_pings(run):
    """A responsive client survives the pings; stalled ones get 1011, and one that never reads is aborted."""

    async def scenario():
        # No idle timeout: only the heartbeat may close anyone here.
        sc = WsScenario(idle_timeout=None, resolution=RESOLUTION, close_timeout=CLOSE_TIMEOUT)
        server = await sc.start(ping_interval=0.2, ping_timeout=0.2)
        heartbeat = server.heartbeat
        responsive, stalled, gone = await sc.connect(3)
        stalled.transport.pause_reading()  # alive, but its pongs stop: it no longer reads the pings
        gone.transport.pause_reading()
        await eventually(lambda: heartbeat.failures == 2, "the two stalled peers failed")
        stalled.transport.resume_reading()  # now it reads the ping and the close frame
        assert await closed(stalled) == 1011
        # The one that never reads again is aborted close_timeout after its failure.
        await eventually(lambda: sc.ended() == 2, "the failed connections ended")
        assert responsive.state is State.OPEN
        assert heartbeat.pings_sent >= 3 and heartbeat.failures == 2
        await responsive.send("still here")
        assert await responsive.recv() == "still here"
        await eventually(lambda: len(sc.sent_codes) == 2, "the failed connections' handlers returned")
        assert list(sc.sent_codes.values()) == [1011, 1011]
        assert len(heartbeat) == 1 and len(sc.mgr) == 1
        await sc.finish()
        assert responsive.close_code == 1001  # server shutdown

    run(scenario())


def test_ping_timeout_none_pings_but_never_fails(run):
    async def scenario():
        sc = WsScenario(idle_timeout=None, resolution=RESOLUTION, close_timeout=CLOSE_TIMEOUT)
        server = await sc.start(ping_interval=0.1, ping_timeout=None)
        client, = await sc.connect(1)
        client.transport.pause_reading()
        await eventually(lambda: server.heartbeat.pings_sent >= 3, "pings to the stalled client")
        assert server.heartbeat.failures == 0 and len(sc.mgr) == 1
        client.transport.resume_reading()
        await sc.finish()

    run(scenario())
