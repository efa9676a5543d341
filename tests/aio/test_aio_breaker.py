"""The circuit breaker: refuse at the limit, resume below the low-water mark, never reach EMFILE."""

from __future__ import annotations

import asyncio
import errno
import resource
import socket

import pytest
from aio_support import HOST, FakeTransport, Scenario, Tracked, eventually, open_fds, read_until_eof

from conntable.aio import CircuitBreaker, CloseReason, ConnectionManager, ManagedProtocol
from conntable.aio._listeners import Listeners

# -- the state machine, with an injected descriptor count -----------------------


class Fds:
    """A fake descriptor count the test moves by hand."""

    def __init__(self, count):
        self.count = count
        self.measures = 0

    def __call__(self):
        self.measures += 1
        return self.count


def test_breaker_hysteresis_on_connection_count(run):
    async def scenario():
        breaker = CircuitBreaker(10, fd_limit=1000, count_fds=Fds(5))
        assert breaker.resume_below == 9
        admitted = [breaker.admit(held, now=0.0) for held in range(10)]
        assert admitted == [True] * 10 and not breaker.is_open
        assert breaker.admit(10, now=0.0) is False and breaker.is_open and breaker.trips == 1
        assert breaker.admit(9, now=0.0) is False  # 9 is not below the low-water mark
        assert breaker.admit(8, now=0.0) is True and not breaker.is_open
        assert breaker.admit(9, now=0.0) is True  # closed again: admits up to the limit
        assert breaker.trips == 1

    run(scenario())


def test_breaker_opens_on_the_descriptor_reserve(run):
    async def scenario():
        fds = Fds(100)  # the process's descriptors, as the test sets them
        breaker = CircuitBreaker(10_000, fd_limit=200, fd_reserve=20, count_fds=fds, remeasure_interval=1.0)
        assert breaker.free_fds(0) == 100 and fds.measures == 1

        def admit(other, held, now):
            fds.count = other + held + 1  # the new connection's descriptor exists already
            return breaker.admit(held, now)

        assert admit(150, 0, now=0.5) is True  # first accept: measures, sees 150 others
        assert breaker.free_fds(1) == 49 and fds.measures == 2
        assert admit(180, 10, now=0.6) is True  # 30 more others, unseen until the next measure
        assert fds.measures == 2
        assert admit(180, 11, now=2.0) is False and breaker.is_open  # measured: 200-180-12 < 20
        assert fds.measures == 3 and breaker.trips == 1
        # Descriptors come back, but the resume margin is 10% of max_connections: 1000.
        assert admit(60, 0, now=4.0) is False
        small = CircuitBreaker(10, fd_limit=200, fd_reserve=20, count_fds=Fds(0))
        assert small.fd_resume_free == 21

    run(scenario())


def test_accept_burst_is_kept_free(run):
    """Sockets the loop accepts before the manager sees them need descriptors on top of the reserve."""

    async def scenario():
        breaker = CircuitBreaker(fd_limit=1000, fd_reserve=50, count_fds=Fds(40))
        assert breaker.max_connections == 910
        breaker.set_accept_burst(200)
        assert breaker.max_connections == 710  # a default max_connections leaves room for the burst
        assert breaker.burst_fits(710) and not breaker.burst_fits(711)
        assert all(breaker.admit(held, now=0.0) for held in range(710))
        assert breaker.admit(710, now=0.0) is False and breaker.is_open
        explicit = CircuitBreaker(100, fd_limit=1000, fd_reserve=50, count_fds=Fds(40))
        explicit.set_accept_burst(200)
        assert explicit.max_connections == 100 and explicit.fd_resume_free == 50 + 200 + 10

    run(scenario())


def test_breaker_closes_when_connections_end(run):
    async def scenario():
        breaker = CircuitBreaker(10, fd_limit=1000, count_fds=Fds(5))
        assert breaker.admit(10, now=0.0) is False and breaker.is_open
        breaker.reconsider(9)  # not below the low-water mark of 9
        assert breaker.is_open
        breaker.reconsider(8)
        assert not breaker.is_open and breaker.trips == 1

    run(scenario())


def test_a_failed_count_falls_back_on_the_estimate(run):
    async def scenario():
        fds = Fds(40)
        breaker = CircuitBreaker(fd_limit=1000, count_fds=fds)
        fds.count = None  # e.g. /proc/self/fd cannot be listed without a free descriptor
        assert breaker.resync(10) == 50  # the 40 others last measured, plus the manager's 10
        assert CircuitBreaker(fd_limit=1000, count_fds=lambda: None).resync(10) is None  # never known

    run(scenario())


def test_stats_count_descriptors_at_emfile(run):
    """With no descriptor left, stats() still says how many are open (a count that needs none, or the estimate)."""

    async def scenario():
        mgr = ConnectionManager(idle_timeout=None)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        taken = []
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 20, hard))
            with pytest.raises(OSError) as exhausted:
                while True:
                    taken.append(socket.socket())
            assert exhausted.value.errno == errno.EMFILE
            assert mgr.stats().open_fds is not None
        finally:
            for sock in taken:
                sock.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        await mgr.shutdown()

    run(scenario())


def test_listening_sockets_pause_and_resume(run, loop_kind):
    """On asyncio's selector loop the manager can stop a server accepting; uvloop needs no pause."""

    async def scenario():
        loop = asyncio.get_running_loop()
        accepted = []
        server = await asyncio.start_server(lambda reader, writer: accepted.append(writer), HOST, 0)
        listeners = Listeners()
        if loop_kind == "uvloop":
            assert listeners.add(server) is False and listeners.burst == 0
        else:
            assert listeners.add(server) is True and listeners.burst == 200  # twice the default backlog
            listeners.pause()
            client = socket.socket()
            client.setblocking(False)
            await loop.sock_connect(client, server.sockets[0].getsockname())  # waits in the accept queue
            for _ in range(20):  # a listening socket being read accepts within a few turns
                await asyncio.sleep(0)
            assert accepted == []
            listeners.resume()
            await eventually(lambda: len(accepted) == 1, "accepted once resumed")
            listeners.pause()
            server.close()
            listeners.resume()  # the socket is closed: nothing is added back
            client.close()
            accepted[0].close()
        server.close()
        await server.wait_closed()

    run(scenario())


def test_default_max_connections_comes_from_the_descriptor_limit(run):
    async def scenario():
        breaker = CircuitBreaker(fd_limit=1000, count_fds=Fds(40))
        assert breaker.fd_reserve == 50
        assert breaker.max_connections == 1000 - 50 - 40
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        manager = ConnectionManager()
        assert manager.max_connections < soft
        assert manager.stats().max_fds == soft

    run(scenario())


# -- on real sockets -------------------------------------------------------------


def test_flood_past_max_connections(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0, max_connections=50)
        port = await sc.serve()
        admitted = await sc.connect(port, 50)
        await sc.connected(50)
        flood = await sc.connect(port, 150)
        await sc.connected(200)
        await eventually(lambda: sc.ended() == 150, "refused connections gone")
        assert sc.ended(CloseReason.REJECTED) == 150
        assert all([await read_until_eof(sock) == b"" for sock in flood])
        stats = sc.mgr.stats()
        assert (stats.opened_total, stats.rejected_total, stats.active) == (50, 150, 50)
        assert stats.breaker_open and stats.breaker_trips_total == 1

        async def leave(socks):
            for sock in socks:
                sock.close()
            before = sc.ended()
            await eventually(lambda: sc.ended() == before + len(socks), "peers gone")

        async def newcomer():
            before = len(sc.made)
            await sc.connect(port, 1)
            await sc.connected(before + 1)
            return sc.mgr.get(sc.made[-1])

        await leave(admitted[:3])   # 47 held: not below the low-water mark of 45
        late = await newcomer()
        assert late is None or late.close_reason is CloseReason.REJECTED
        await eventually(lambda: sc.ended(CloseReason.REJECTED) == 151, "refused")
        await leave(admitted[3:8])  # 42 held: accepting again, and reported so before anyone arrives
        assert not sc.mgr.stats().breaker_open
        late = await newcomer()
        assert late.close_reason is None and not sc.mgr.stats().breaker_open
        stats = sc.mgr.stats()
        assert (stats.opened_total, stats.rejected_total, stats.active) == (51, 151, 43)
        await sc.finish()

    run(scenario())


class Busy(Tracked):
    """Answers a refused connection before closing it, as an HTTP server would with a 503."""

    def connection_rejected(self, transport):
        self.scenario.track(self.connection.id)
        transport.write(b"503 busy\n")
        transport.close()


def test_rejection_hook_answers(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0, max_connections=2)
        port = await sc.serve(lambda: Busy(sc))
        await sc.connect(port, 2)
        await sc.connected(2)
        refused = await sc.connect(port, 3, b"hello?")
        await sc.connected(5)
        assert [await read_until_eof(sock) for sock in refused] == [b"503 busy\n"] * 3
        await eventually(lambda: sc.ended() == 3, "refused")
        assert sc.ended(CloseReason.REJECTED) == 3
        await sc.finish()

    run(scenario())


def test_descriptor_reserve_on_real_sockets(run):
    """With a descriptor limit close by, the breaker opens before the process would hit EMFILE."""

    async def scenario():
        loop = asyncio.get_running_loop()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            limit = open_fds() + 100
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
            sc = Scenario(idle_timeout=60.0, max_connections=1000, fd_reserve=30)
            errors = []
            loop.set_exception_handler(lambda _loop, context: errors.append(context))
            # 40 clients connect before the server accepts any: their
            # descriptors are not the manager's, and its measurement at the
            # first accept must see them.
            listening = socket.create_server((HOST, 0), backlog=64)
            await sc.connect(listening.getsockname()[1], 40)
            spare = limit - open_fds()
            await sc.mgr.create_server(lambda: Tracked(sc), sock=listening)
            await sc.connected(40)
            stats = sc.mgr.stats()
            # The loop may accept many sockets before the first connection_made,
            # so how many get in depends on its batching; never more than the
            # reserve leaves, and never EMFILE.
            assert stats.opened_total <= spare - 30
            assert stats.rejected_total > 0
            assert stats.opened_total + stats.rejected_total == 40
            assert stats.breaker_open
            assert errors == []  # no EMFILE anywhere
            await eventually(lambda: sc.ended() == stats.rejected_total, "refused")
            await sc.finish()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    run(scenario())


def test_refusals_are_answered_only_while_half_the_reserve_is_free(run):
    async def scenario():
        fds = Fds(100)
        breaker = CircuitBreaker(10_000, fd_limit=200, fd_reserve=20, count_fds=fds)
        # 100 other descriptors: free = 200 - 100 - (held + 1).
        assert breaker.can_answer(88)  # 11 free
        assert breaker.can_answer(89)  # 10 free: half the reserve
        assert not breaker.can_answer(90)

    run(scenario())



class WaitsForTheRequest(ManagedProtocol):
    """Refused, it would answer once the request arrives (as an HTTP 503 would): a silent peer holds it."""

    answered = 0

    def connection_rejected(self, transport):
        WaitsForTheRequest.answered += 1


def test_silent_refused_peers_cannot_take_the_descriptor_reserve(run):
    """Past half the descriptor reserve, a refusal is aborted at once instead of waiting for its answer.

    Transports that own no socket and a descriptor count derived from the
    connections held (100 others), so that the policy is seen exactly; the
    child-process floods (tests/faults) show it against real descriptors.
    """

    async def scenario():
        mgr = ConnectionManager(idle_timeout=60.0, max_connections=10, close_timeout=30.0)
        accepted = []  # one descriptor per accepted connection, on top of 100 others
        mgr._breaker = CircuitBreaker(10, fd_limit=200, fd_reserve=40, count_fds=lambda: 100 + len(accepted))
        WaitsForTheRequest.answered = 0
        factory = mgr.protocol_factory(WaitsForTheRequest)
        adapters, transports = [], []
        for _ in range(100):
            transports.append(FakeTransport())
            accepted.append(transports[-1])
            adapters.append(factory())
            adapters[-1].connection_made(transports[-1])
        stats = mgr.stats()
        assert stats.opened_total == 10 and stats.rejected_total == 90
        # Free descriptors: 200 - 100 - held. Refusals wait for their answer while 20 (half the reserve) stay free.
        assert WaitsForTheRequest.answered == 200 - 100 - 20 - 10
        aborted = [t for t in transports if t.aborts]
        assert len(aborted) == 90 - WaitsForTheRequest.answered
        assert all(t.closes == 0 for t in transports)  # the answered ones wait (close_timeout)
        await mgr.shutdown(grace=0)
        assert len(mgr) == 0

    run(scenario())
