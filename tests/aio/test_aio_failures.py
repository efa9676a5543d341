"""Everything that can go wrong still ends each connection exactly once."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket

import pytest
from aio_support import HOST, FakeTransport, Scenario, Tracked, eventually, read_until_eof

from conntable.aio import CloseReason

LOGGER = "conntable.aio"


def failures(caplog, what):
    """Connection ids named by this layer's logged failures of ``what``."""
    return sorted(
        record.args[0] for record in caplog.records
        if record.name == LOGGER and record.args and what in record.getMessage()
    )


class FailsInConnectionMade(Tracked):
    def connection_made(self, transport):
        super().connection_made(transport)
        raise RuntimeError("connection_made fails")


class FailsInDataReceived(Tracked):
    def data_received(self, data):
        raise RuntimeError("data_received fails")


class FailsInConnectionLost(Tracked):
    def connection_lost(self, exc):
        raise RuntimeError("connection_lost fails")


def test_exceptions_in_protocol_methods(run, caplog):
    async def scenario():
        loop = asyncio.get_running_loop()
        reported = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context))
        sc = Scenario(idle_timeout=60.0)
        servers = [
            await sc.mgr.create_server(lambda cls=cls: cls(sc), HOST, 0)
            for cls in (FailsInConnectionMade, FailsInDataReceived, FailsInConnectionLost)
        ]
        made_fails, data_fails, lost_fails = [
            await sc.connect(server.sockets[0].getsockname()[1], 3, b"data") for server in servers
        ]
        await sc.connected(9)
        await eventually(lambda: sc.ended() == 6, "the failing protocols' connections ended")
        for sock in lost_fails:  # still open: echoing; now the peer leaves
            assert await loop.sock_recv(sock, 4) == b"data"
            sock.close()
        await eventually(lambda: sc.ended() == 9, "every connection ended")
        assert sc.ended(CloseReason.ERROR) == 6
        assert sc.ended(CloseReason.PEER) == 3
        assert len(failures(caplog, "connection_made failed")) == 3
        assert len(failures(caplog, "connection_lost failed")) == 3
        # The transport, not the manager, reports a failed data_received.
        assert len([c for c in reported if isinstance(c.get("exception"), RuntimeError)]) == 3
        for sock in made_fails + data_fails:
            assert await read_until_eof(sock) in (b"", b"data")
        await sc.finish()

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run(scenario())


def test_failing_cleanup_does_not_stop_the_others(run, caplog):
    async def scenario():
        sc = Scenario(idle_timeout=0.2, resolution=0.02)
        order = {}

        def broken(reason):
            raise RuntimeError("cleanup fails")

        class ThreeCleanups(Tracked):
            def connection_made(self, transport):
                conn_id = self.connection.id
                ran = order[conn_id] = []
                self.add_cleanup(lambda reason: ran.append(("first added", reason)))
                self.add_cleanup(broken)
                super().connection_made(transport)  # the probe
                self.add_cleanup(lambda reason: ran.append(("last added", reason)))

        port = await sc.serve(lambda: ThreeCleanups(sc))
        await sc.connect(port, 5)
        await sc.connected(5)
        await eventually(lambda: sc.ended() == 5, "idle")
        assert sorted(order) == sorted(sc.made)
        for ran in order.values():
            assert ran == [("last added", CloseReason.IDLE), ("first added", CloseReason.IDLE)]
        assert failures(caplog, "cleanup") == sorted(sc.made)
        await sc.finish()

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run(scenario())


def test_failing_task_is_logged_and_the_connection_stays(run, caplog):
    async def scenario():
        sc = Scenario(idle_timeout=60.0)

        async def fail():
            raise ValueError("task fails")

        class SpawnsFailure(Tracked):
            def connection_made(self, transport):
                super().connection_made(transport)
                sc.spawn(self.connection.id, fail())

        port = await sc.serve(lambda: SpawnsFailure(sc))
        await sc.connect(port, 4)
        await sc.connected(4)
        await eventually(lambda: all(task.done() for task in sc.spawned) and len(sc.spawned) == 4, "tasks done")
        await eventually(lambda: len(failures(caplog, "task")) == 4, "failures logged")
        assert failures(caplog, "task") == sorted(sc.made)
        assert len(sc.mgr) == 4 and sc.ended() == 0
        summary = await sc.finish()
        assert summary.tasks_cancelled == 0 and summary.closed_gracefully == 4

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run(scenario())


class IgnoresClose(Tracked):
    """A close hook that does nothing (or fails): the manager must abort in the end."""

    fail = False

    def close_requested(self, transport, reason):
        if self.fail:
            raise RuntimeError("close_requested fails")


class FailsToClose(IgnoresClose):
    fail = True


def test_close_hooks_that_ignore_or_fail(run, caplog):
    async def scenario():
        sc = Scenario(idle_timeout=0.2, close_timeout=0.2, resolution=0.02)
        port = await sc.serve(lambda: IgnoresClose(sc))
        failing_server = await sc.mgr.create_server(lambda: FailsToClose(sc), HOST, 0)
        await sc.connect(port, 4)
        await sc.connect(failing_server.sockets[0].getsockname()[1], 3)
        await sc.connected(7)
        await eventually(lambda: sc.ended() == 7, "idle")
        assert sc.ended(CloseReason.IDLE) == 7  # the first reason decided stays
        stats = sc.mgr.stats()
        assert stats.aborted_total == 4  # the ignored ones; the failed hooks fell back to close()
        assert len(failures(caplog, "close_requested failed")) == 3
        await sc.finish()

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run(scenario())


class PausedAndForgotten(Tracked):
    """Stops reading at once, so only the protocol (a cycle with its transport) holds the transport."""

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_transport_collected_without_connection_lost(run, loop_kind):
    async def scenario():
        sc = Scenario(idle_timeout=None)
        port = await sc.serve(lambda: PausedAndForgotten(sc))
        await sc.connect(port, 3)
        await sc.connected(3)
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0.01)
        if loop_kind == "asyncio":
            # asyncio keeps no strong reference to a paused transport: it is collected.
            await eventually(lambda: sc.ended() == 3, "abandoned connections reaped")
            assert sc.ended(CloseReason.ABANDONED) == 3
            expected_shutdown = 0
        else:
            # uvloop keeps its transports alive until they are closed: nothing is abandoned.
            assert len(sc.mgr) == 3 and sc.ended() == 0
            expected_shutdown = 3
        summary = await sc.finish()
        assert summary.closed_gracefully == expected_shutdown

    run(scenario())


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_accounting_ignores_garbage_from_before(run):
    """A descriptor that earlier garbage held and a collection closed mid-test is not missed at the end."""

    async def scenario():
        cycle = [socket.socket()]
        cycle.append(cycle)  # only the collector frees it, and its socket with it
        del cycle
        sc = Scenario(idle_timeout=None)
        port = await sc.serve()
        await sc.connect(port, 2)
        await sc.connected(2)
        gc.collect()
        await sc.finish()

    run(scenario())


def test_adapter_collected_is_reaped(run):
    async def scenario():
        sc = Scenario(idle_timeout=None)
        adapter = sc.mgr.protocol_factory(lambda: Tracked(sc))()
        adapter.connection_made(FakeTransport())
        conn = sc.mgr.get(sc.made[0])
        assert conn.transport is not None and conn.protocol is adapter.protocol
        del adapter  # the only reference: the transport and the protocol go with it
        gc.collect()
        await eventually(lambda: sc.ended() == 1, "reaped")
        assert sc.reasons == {conn.id: CloseReason.ABANDONED}
        assert conn.transport is None and conn.last_activity is None
        await sc.finish()

    run(scenario())


def test_transport_that_never_reports_loss_is_forgotten(run):
    async def scenario():
        sc = Scenario(idle_timeout=0.1, close_timeout=0.1, resolution=0.02)
        transport = FakeTransport()
        adapter = sc.mgr.protocol_factory(lambda: Tracked(sc))()
        adapter.connection_made(transport)
        await eventually(lambda: sc.ended() == 1, "forgotten after close and abort")
        assert (transport.closes, transport.aborts) == (1, 1)
        assert sc.ended(CloseReason.IDLE) == 1
        assert sc.mgr.stats().aborted_total == 1
        await sc.finish()
        assert adapter.protocol.connection.id == sc.made[0]

    run(scenario())
