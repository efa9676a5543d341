"""Graceful shutdown: stop accepting, ask, wait up to the grace period, abort the rest."""

from __future__ import annotations

import asyncio
import math
import socket

from aio_support import HOST, Scenario, Tracked, eventually, read_until_eof

from conntable.aio import CloseReason, ConnectionManager, ConnectionState

PAYLOAD = b"z" * (1 << 20)


class Streaming(Tracked):
    """Starts two tasks per connection; on a b"big" request, writes more than the peer will read."""

    def connection_made(self, transport):
        super().connection_made(transport)
        # A tiny send buffer keeps the unsent bytes in the transport, where close() waits for them.
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        self.scenario.spawn(self.connection.id, asyncio.sleep(3600))
        self.scenario.spawn(self.connection.id, self.ticker())

    async def ticker(self):
        while True:
            await asyncio.sleep(0.01)

    def data_received(self, data):
        if data == b"big":
            self.transport.write(PAYLOAD)
        else:
            super().data_received(data)


def test_shutdown_with_writes_in_flight_and_tasks_running(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0)
        port = await sc.serve(lambda: Streaming(sc))
        polite = await sc.connect(port, 10, b"hi")
        await sc.connect(port, 5, b"big", rcvbuf=4096)  # never read
        await sc.connected(15)
        loop = asyncio.get_running_loop()
        for sock in polite:
            assert await loop.sock_recv(sock, 2) == b"hi"
        stuck_ids = sc.made[10:]
        await eventually(
            lambda: all(sc.mgr.get(i).transport.get_write_buffer_size() > 0 for i in stuck_ids),
            "writes stuck in the transports",
        )
        assert len(sc.spawned) == 30 and not any(task.done() for task in sc.spawned)
        summary = await sc.finish(grace=0.5)
        assert summary.closed_gracefully == 10
        assert summary.aborted == 5
        assert summary.tasks_cancelled == 30 and summary.tasks_still_running == 0
        assert all(task.cancelled() for task in sc.spawned)
        assert sc.ended(CloseReason.SHUTDOWN) == 15
        assert sc.mgr.stats().aborted_total == 5

    run(scenario())


class SaysGoodbye(Tracked):
    """Closes politely, as a WebSocket server would send a close frame."""

    def close_requested(self, transport, reason):
        transport.write(f"bye ({reason})\n".encode())
        transport.close()


def test_shutdown_uses_the_close_hook_and_refuses_newcomers(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0)
        port = await sc.serve(lambda: SaysGoodbye(sc))
        socks = await sc.connect(port, 5, b"hi")
        # A server the manager does not know of keeps accepting during the shutdown.
        loop = asyncio.get_running_loop()
        unregistered = await loop.create_server(sc.mgr.protocol_factory(lambda: SaysGoodbye(sc)), HOST, 0)
        await sc.connected(5)
        # One connection ignores the hook's close: keeps the shutdown in its grace period.
        blocker = sc.mgr.get(sc.made[0])
        blocker.protocol.close_requested = lambda transport, reason: None
        shutting = asyncio.ensure_future(sc.mgr.shutdown(grace=1.0))
        await eventually(lambda: sc.ended() == 4, "polite ones gone")
        assert not sc.server.is_serving()
        assert blocker.state is ConnectionState.CLOSING
        await sc.connect(unregistered.sockets[0].getsockname()[1], 2)
        await sc.connected(7)
        assert await shutting is await sc.mgr.shutdown()  # a second call waits for the same one
        unregistered.close()
        await unregistered.wait_closed()
        for sock in socks[1:]:
            assert await read_until_eof(sock) == b"hi" + b"bye (shutdown)\n"
        assert await read_until_eof(socks[0]) == b"hi"  # aborted: no goodbye
        summary = await sc.finish()
        assert (summary.closed_gracefully, summary.aborted, summary.rejected) == (4, 1, 2)
        assert sc.ended(CloseReason.REJECTED) == 2 and sc.ended(CloseReason.SHUTDOWN) == 5

    run(scenario())


def test_context_manager_and_tasks_that_resist_cancellation(run):
    async def scenario():
        finished = []

        async def stubborn():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # cleans up for a while, then lets go
                finished.append(True)
                raise

        async with ConnectionManager(idle_timeout=60.0) as mgr:
            sc = Scenario()
            sc.mgr = mgr

            class WithTask(Tracked):
                def connection_made(self, transport):
                    super().connection_made(transport)
                    self.scenario.spawn(self.connection.id, stubborn())

            port = await sc.serve(lambda: WithTask(sc))
            await sc.connect(port, 3)
            await sc.connected(3)
        # __aexit__ ran the shutdown; finish() finds it done.
        summary = await sc.finish()
        assert summary.tasks_cancelled == 3 and summary.tasks_still_running == 0
        assert finished == [True] * 3

    run(scenario())


def test_shutdown_of_an_unused_manager(run):
    async def scenario():
        mgr = ConnectionManager()
        summary = await mgr.shutdown()
        assert (summary.closed_gracefully, summary.aborted, summary.tasks_cancelled) == (0, 0, 0)
        assert len(mgr) == 0 and "stopping" in repr(mgr)

    run(scenario())


class ClosesALittleLater(Tracked):
    def close_requested(self, transport, reason):
        asyncio.get_running_loop().call_later(0.1, transport.close)


def test_infinite_grace_waits_for_every_connection(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0)
        port = await sc.serve(lambda: ClosesALittleLater(sc))
        await sc.connect(port, 3)
        await sc.connected(3)
        summary = await sc.finish(grace=math.inf)
        assert (summary.closed_gracefully, summary.aborted) == (3, 0)
        assert sc.ended(CloseReason.SHUTDOWN) == 3

    run(scenario())
