"""Every way a WebSocket connection ends, and the reason its cleanup receives and closed_total counts.

The server's own closes are ``closed`` (the handler returned, ``await ws.close()``),
the client's are ``peer``, an unanswered ping is ``ping_timeout``, a handler
that raised (1011) is ``error``, and the manager's reasons (idle, shutdown)
stay its own (idle: test_ws_timeouts).
"""

from __future__ import annotations

import asyncio

from aio_support import eventually
from ws_support import WsScenario, closed, reset_client

from conntable.aio import CloseReason

RESOLUTION = 0.05
CLOSE_TIMEOUT = 1.0


def _counted(sc: WsScenario) -> dict:
    return {reason: count for reason, count in sc.mgr.stats().closed_total.items() if count}


def test_each_way_a_websocket_ends_has_its_reason(run):
    async def scenario():
        sc = WsScenario(idle_timeout=None, resolution=RESOLUTION, close_timeout=CLOSE_TIMEOUT)

        async def handler(ws):
            command = await ws.recv()
            if command == "return":
                return
            if command == "close":
                await ws.close()
                return
            if command == "close-4000":
                await ws.close(4000, "app says bye")
                return
            if command == "raise":
                raise RuntimeError("the handler failed")
            await sc.echo(ws)  # "echo": stays until the client closes or vanishes

        await sc.start(handler, ping_interval=None)
        expected = {}
        for command, code, reason in [
            ("return", 1000, CloseReason.CLOSED),
            ("close", 1000, CloseReason.CLOSED),
            ("close-4000", 4000, CloseReason.CLOSED),
            ("raise", 1011, CloseReason.ERROR),
        ]:
            client, = await sc.connect(1)
            await client.send(command)
            assert await closed(client) == code, command
            expected[command] = reason
        peer, = await sc.connect(1)
        await peer.send("echo")
        await peer.close()  # the client starts the closing handshake
        reset, = await sc.connect(1)
        await reset.send("echo")
        reset_client(reset)  # gone without a closing handshake
        await eventually(lambda: sc.ended() == 6, "every connection ended")
        assert [sc.reasons[conn_id] for conn_id in sorted(sc.reasons)] == [
            CloseReason.CLOSED, CloseReason.CLOSED, CloseReason.CLOSED, CloseReason.ERROR,
            CloseReason.PEER, CloseReason.ERROR,
        ]
        assert _counted(sc) == {"closed": 3, "error": 2, "peer": 1}
        await sc.finish()

    run(scenario())


def test_ping_timeout_and_shutdown_keep_their_reasons(run):
    async def scenario():
        sc = WsScenario(idle_timeout=None, resolution=RESOLUTION, close_timeout=CLOSE_TIMEOUT)
        server = await sc.start(ping_interval=0.2, ping_timeout=0.2)
        stalled, staying = await sc.connect(2)
        stalled.transport.pause_reading()  # its pongs stop
        staying_task = asyncio.ensure_future(_chatter(staying))  # busy: neither idle nor pinged out
        await eventually(lambda: server.heartbeat.failures == 1, "the stalled peer failed")
        stalled.transport.resume_reading()
        assert await closed(stalled) == 1011
        await eventually(lambda: sc.ended() == 1, "the stalled peer ended")
        staying_task.cancel()
        await asyncio.gather(staying_task, return_exceptions=True)
        await sc.finish()  # the server closes the one left (a shared manager: its connections only)
        reasons = [sc.reasons[conn_id] for conn_id in sorted(sc.reasons)]
        assert reasons == [CloseReason.PING_TIMEOUT, CloseReason.SHUTDOWN]
        assert _counted(sc) == {"ping_timeout": 1, "shutdown": 1}

    run(scenario())


async def _chatter(client) -> None:
    while True:
        await client.send("x")
        await client.recv()
        await asyncio.sleep(0.05)
