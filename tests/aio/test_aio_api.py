"""The manager's API contract: arguments, ids, errors, and the clock and sweeper economy."""

from __future__ import annotations

import asyncio
import itertools
import math
import tracemalloc

import pytest
from aio_support import FakeTransport, Scenario, Tracked, eventually

from conntable.aio import CloseReason, Connection, ConnectionManager, ConnectionState


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"idle_timeout": 0}, ValueError),
        ({"idle_timeout": -1.0}, ValueError),
        ({"handshake_timeout": 0.0}, ValueError),
        ({"max_lifetime": float("nan")}, ValueError),
        ({"close_timeout": math.inf}, ValueError),
        ({"close_timeout": None}, ValueError),
        ({"expire_batch": 0}, ValueError),
        ({"expire_batch": True}, TypeError),  # as the table's own int arguments
        ({"resolution": 0.0}, ValueError),
        ({"max_connections": 0}, ValueError),
    ],
)
def test_bad_arguments_raise(run, kwargs, error):
    async def scenario():
        with pytest.raises(error):
            ConnectionManager(**kwargs)

    run(scenario())


def test_settings_are_reported(run):
    async def scenario():
        mgr = ConnectionManager(idle_timeout=None, handshake_timeout=math.inf, max_lifetime=30,
                                max_connections=7, resolution=0.25, close_timeout=2)
        assert mgr.idle_timeout is None and mgr.handshake_timeout is None
        assert (mgr.max_lifetime, mgr.max_connections, mgr.resolution, mgr.close_timeout) == (30.0, 7, 0.25, 2.0)

    run(scenario())


class Sink(asyncio.Protocol):
    def data_received(self, data):
        pass


class BufferedSink(asyncio.BufferedProtocol):
    buffer = bytearray(16)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        pass


def test_receiving_data_allocates_nothing(run):
    """The hot path (data_received / buffer_updated -> touch) creates no Python object per call."""

    async def scenario():
        # A resolution longer than the test: the clock is read once, at the first byte.
        mgr = ConnectionManager(idle_timeout=60.0, resolution=3600.0)
        for factory, argument in ((Sink, b"x"), (BufferedSink, 5)):
            adapter = mgr.protocol_factory(factory)()
            adapter.connection_made(FakeTransport())
            receive = adapter.data_received if factory is Sink else adapter.buffer_updated
            receive(argument)  # the first byte takes the handshake path once
            calls = itertools.repeat(None, 10_000)
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                for _ in calls:
                    receive(argument)
                after, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert (after - before, peak - before) == (0, 0), factory.__name__
        assert mgr._clock_handle is not None and len(mgr) == 2
        await mgr.shutdown(grace=1.0)
        assert len(mgr) == 0

    run(scenario())


def test_unknown_ids(run):
    async def scenario():
        sc = Scenario()
        mgr = sc.mgr
        with pytest.raises(KeyError):
            mgr.touch(1)  # before the first connection
        port = await sc.serve()
        await sc.connect(port, 1)
        await sc.connected(1)
        conn = mgr.get(1)
        assert isinstance(conn, Connection) and conn.id == 1 and conn.state is ConnectionState.OPEN
        assert mgr.get(2) is None
        coro = asyncio.sleep(1)
        with pytest.raises(KeyError):
            mgr.spawn(2, coro)
        assert coro.cr_frame is None  # closed: no "never awaited" warning
        for call in (lambda: mgr.touch(2), lambda: mgr.add_cleanup(2, print)):
            with pytest.raises(KeyError):
                call()
        await sc.finish()
        assert conn.state is ConnectionState.CLOSED and conn.close_reason is CloseReason.SHUTDOWN
        with pytest.raises(KeyError):
            mgr.add_cleanup(1, print)  # ended connections take no more cleanups

    run(scenario())


def test_ids_are_never_reused_and_peers_are_known(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0)
        port = await sc.serve()
        for round_ in range(1, 4):
            socks = await sc.connect(port, 4)
            await sc.connected(4 * round_)
            assert {sc.mgr.get(i).peer for i in sc.made[-4:]} == {sock.getsockname() for sock in socks}
            for sock in socks:
                sock.close()
            await eventually(lambda: len(sc.mgr) == 0, "closed")
        assert sc.made == list(range(1, 13))
        await sc.finish()

    run(scenario())


def test_activity_reads_the_clock_once_per_resolution(run):
    async def scenario():
        # A resolution longer than the test: one clock read must serve every packet.
        sc = Scenario(idle_timeout=3600.0, resolution=60.0)
        reads = []
        advance = sc.mgr._advance_clock
        sc.mgr._advance_clock = lambda now: (reads.append(now), advance(now))
        port = await sc.serve()
        socks = await sc.connect(port, 10)
        await sc.connected(10)
        loop = asyncio.get_running_loop()
        for round_ in range(20):
            for sock in socks:
                await loop.sock_sendall(sock, b"x")
            for sock in socks:
                assert await loop.sock_recv(sock, 1) == b"x"
        assert len(reads) == 1
        conn = sc.mgr.get(sc.made[0])
        assert conn.last_activity == reads[0]  # recorded on the coarse clock
        await sc.finish()

    run(scenario())


def test_idle_manager_does_not_wake_up(run):
    async def scenario():
        sc = Scenario(idle_timeout=None, resolution=0.01)  # nothing can ever expire
        port = await sc.serve()
        socks = await sc.connect(port, 5, b"x")
        await sc.connected(5)
        loop = asyncio.get_running_loop()
        for sock in socks:
            assert await loop.sock_recv(sock, 1) == b"x"
        await eventually(lambda: sc.mgr._clock_handle is None, "the clock went stale")
        wakeups = sc.mgr._sweeper.wakeups
        await asyncio.sleep(0.2)  # twenty resolutions with no activity
        assert sc.mgr._sweeper.wakeups == wakeups
        assert sc.mgr._clock_handle is None and not sc.mgr._clock_fresh
        await sc.finish()

    run(scenario())


def test_new_connection_wakes_a_sleeping_sweeper(run):
    async def scenario():
        # A long-lived connection puts the sweeper to sleep for an hour; a new
        # one with a short handshake timeout must still be closed in time.
        sc = Scenario(idle_timeout=3600.0, handshake_timeout=0.1, resolution=0.02)
        port = await sc.serve()
        await sc.connect(port, 1, b"x")
        await sc.connected(1)
        await asyncio.sleep(0.2)
        assert sc.ended() == 0
        await sc.connect(port, 1)  # silent
        await eventually(lambda: sc.ended() == 1, "handshake timeout")
        assert sc.reasons == {2: CloseReason.HANDSHAKE}
        await sc.finish()

    run(scenario())


def test_stats_and_repr(run):
    async def scenario():
        sc = Scenario(idle_timeout=0.1, resolution=0.02)

        class WithTask(Tracked):
            def connection_made(self, transport):
                super().connection_made(transport)
                self.spawn(asyncio.sleep(3600))

        port = await sc.serve(lambda: WithTask(sc))
        await sc.connect(port, 3)
        await sc.connected(3)
        stats = sc.mgr.stats()
        assert (stats.active, stats.peak, stats.opened_total, stats.tasks_active) == (3, 3, 3, 3)
        assert stats.open_fds > 6 and stats.max_fds >= stats.open_fds and stats.resident_memory_bytes > 0
        assert "connections=3" in repr(sc.mgr) and "state=open" in repr(sc.mgr.get(1))
        await eventually(lambda: sc.ended() == 3, "idle")
        # A cancelled task leaves the count when it has run its cancellation, a loop turn or
        # more after the connection ended: wait for that, do not look one turn early.
        await eventually(lambda: sc.mgr.stats().tasks_active == 0, "tasks cancelled")
        stats = sc.mgr.stats()
        assert stats.closed_total["idle"] == 3 and stats.tasks_active == 0 and stats.peak == 3
        names = {metric.name for metric in stats.metrics()}
        assert {"conntable_connections_active", "conntable_connections_opened_total",
                "conntable_connections_closed_total", "conntable_connections_rejected_total",
                "conntable_tasks_active", "conntable_breaker_open", "conntable_open_fds",
                "conntable_max_fds", "conntable_resident_memory_bytes"} <= names
        await sc.finish()

    run(scenario())


def test_prometheus_collector(run):
    from prometheus_client import CollectorRegistry, generate_latest

    from conntable.aio import PrometheusCollector

    async def scenario():
        sc = Scenario(idle_timeout=0.1, resolution=0.02)
        registry = CollectorRegistry()
        PrometheusCollector(sc.mgr, registry=registry)
        port = await sc.serve()
        await sc.connect(port, 2)
        await sc.connected(2)
        assert registry.get_sample_value("conntable_connections_active") == 2
        await eventually(lambda: sc.ended() == 2, "idle")
        assert registry.get_sample_value("conntable_connections_closed_total", {"reason": "idle"}) == 2
        assert registry.get_sample_value("conntable_connections_opened_total") == 2
        assert registry.get_sample_value("conntable_breaker_open") == 0
        text = generate_latest(registry).decode()
        assert "# TYPE conntable_connections_closed_total counter" in text
        await sc.finish()

    run(scenario())
