"""Exceptions in user code the manager calls: logged, and nothing else lost.

tests/aio/test_aio_failures.py covers connection_made, data_received,
connection_lost, close_requested, cleanups raising Exception and failing
tasks. Here: the other protocol methods (eof_received, get_buffer,
pause_writing/resume_writing, connection_rejected), and a cleanup that raises
``asyncio.CancelledError``, a BaseException that ``except Exception`` does
not catch and that a cleanup raises as soon as it reads the result of a
cancelled future. Each case runs on both loops, with real sockets.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Tuple

import pytest
from faults_support import HOST, LOOP_KINDS, run

from conntable.aio import CloseReason, ConnectionManager, ManagedBufferedProtocol, ManagedProtocol

LOGGER = "conntable.aio"
BIG = 8 << 20  # far more than the socket buffers hold: the server's writes must pause


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


class Probe:
    """Counts, per connection, the cleanups that ran and the reasons they saw."""

    def __init__(self) -> None:
        self.reasons: Dict[int, List[CloseReason]] = {}

    def track(self, protocol: Any) -> None:
        conn_id = protocol.connection.id
        self.reasons[conn_id] = []
        protocol.add_cleanup(self.reasons[conn_id].append)


class Recorded:
    """What the loop's exception handler was given (transports report protocol errors there)."""

    def __init__(self) -> None:
        self.contexts: List[Dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: self.contexts.append(context))

    def messages(self) -> List[str]:
        return [str(c.get("exception") or c.get("message")) for c in self.contexts]


class Tracked:
    """Puts the probe's cleanup on every connection it serves."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.probe.track(self)


class FailsAtEof(Tracked, ManagedProtocol):
    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        raise RuntimeError("eof_received fails")


class FailsToBuffer(Tracked, ManagedBufferedProtocol):
    def get_buffer(self, sizehint: int) -> Any:
        raise RuntimeError("get_buffer fails")

    def buffer_updated(self, nbytes: int) -> None:
        raise AssertionError("no buffer, no data")


class FailsAtFlowControl(Tracked, ManagedProtocol):
    """Writes far more than the socket buffers hold, so that its writes pause and resume."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        transport.write(bytes(range(256)) * (BIG // 256))
        transport.write_eof()

    def pause_writing(self) -> None:
        raise RuntimeError("pause_writing fails")

    def resume_writing(self) -> None:
        raise RuntimeError("resume_writing fails")


class FailsToRefuse(Tracked, ManagedProtocol):
    def connection_rejected(self, transport: Any) -> None:
        self.probe.track(self)
        raise RuntimeError("connection_rejected fails")


async def serving(protocol: Any, **manager_options: Any) -> Tuple[Recorded, Probe, ConnectionManager, int]:
    """A manager serving ``protocol(probe)`` on 127.0.0.1, with the loop's error reports recorded."""
    recorded, probe = Recorded(), Probe()
    mgr = ConnectionManager(idle_timeout=60.0, **manager_options)
    server = await mgr.create_server(lambda: protocol(probe), HOST, 0)
    return recorded, probe, mgr, server.sockets[0].getsockname()[1]


async def ended(mgr: ConnectionManager, probe: Probe, count: int) -> None:
    """Wait (under the test's hang guard) until ``count`` connections ended."""
    while sum(map(bool, probe.reasons.values())) < count or len(mgr) > len(probe.reasons) - count:
        await asyncio.sleep(0.01)


def test_eof_received_that_raises(loop_kind):
    async def scenario():
        recorded, probe, mgr, port = await serving(FailsAtEof)
        failing = await asyncio.open_connection(HOST, port)
        bystander = await asyncio.open_connection(HOST, port)
        failing[1].write(b"last words")
        failing[1].write_eof()
        assert await failing[0].read() == b"last words"  # echoed, then closed: no hang
        await ended(mgr, probe, 1)
        assert probe.reasons[1] == [CloseReason.ERROR]
        assert "eof_received fails" in recorded.messages()
        bystander[1].write(b"still here")
        assert await bystander[0].readexactly(10) == b"still here"
        await mgr.shutdown(grace=5.0)
        assert probe.reasons == {1: [CloseReason.ERROR], 2: [CloseReason.SHUTDOWN]}
        for _, writer in (failing, bystander):
            writer.close()

    run(loop_kind, scenario())


def test_get_buffer_that_raises(loop_kind):
    async def scenario():
        recorded, probe, mgr, port = await serving(FailsToBuffer)
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"data")
        try:
            assert await reader.read() == b""  # the server side is gone...
        except ConnectionResetError:  # ...aborted, as the transport does on a protocol error
            pass
        await ended(mgr, probe, 1)
        assert probe.reasons == {1: [CloseReason.ERROR]}
        assert any("get_buffer" in message for message in recorded.messages())  # uvloop rewords it
        assert len(mgr) == 0
        await mgr.shutdown(grace=1.0)
        writer.close()

    run(loop_kind, scenario())


def test_pause_and_resume_writing_that_raise(loop_kind):
    """Flow control hooks that fail are reported; the data still all arrives, in order."""

    async def scenario():
        recorded, probe, mgr, port = await serving(FailsAtFlowControl)
        reader, writer = await asyncio.open_connection(HOST, port, limit=BIG)
        while "pause_writing fails" not in recorded.messages():  # the client is not reading yet
            await asyncio.sleep(0.01)
        received = await reader.read()
        assert received == bytes(range(256)) * (BIG // 256)
        assert "resume_writing fails" in recorded.messages()
        writer.close()
        await ended(mgr, probe, 1)
        assert probe.reasons == {1: [CloseReason.PEER]}
        await mgr.shutdown(grace=1.0)

    run(loop_kind, scenario())


def test_connection_rejected_that_raises(loop_kind, caplog):
    async def scenario():
        _, probe, mgr, port = await serving(FailsToRefuse, max_connections=1)
        admitted = await asyncio.open_connection(HOST, port)
        refused = [await asyncio.open_connection(HOST, port) for _ in range(3)]
        for reader, _ in refused:
            assert await reader.read() == b""  # closed anyway
        await ended(mgr, probe, 3)
        assert probe.reasons == {1: [], 2: [CloseReason.REJECTED], 3: [CloseReason.REJECTED],
                                 4: [CloseReason.REJECTED]}
        logged = [r.args[0] for r in caplog.records if "connection_rejected failed" in r.getMessage()]
        assert sorted(logged) == [2, 3, 4]
        await mgr.shutdown(grace=5.0)
        assert probe.reasons[1] == [CloseReason.SHUTDOWN]
        for _, writer in [admitted, *refused]:
            writer.close()

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run(loop_kind, scenario())


def raise_cancelled(reason: CloseReason) -> None:
    """What a cleanup does when it reads the result of a future that was cancelled."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    future.result()


def test_cleanup_raising_cancelled_error_when_the_peer_leaves(loop_kind, caplog):
    async def scenario():
        mgr = ConnectionManager(idle_timeout=60.0)
        ran: List[str] = []

        class ThreeCleanups(ManagedProtocol):
            def connection_made(self, transport):
                self.add_cleanup(lambda reason: ran.append("added first"))
                self.add_cleanup(raise_cancelled)
                self.add_cleanup(lambda reason: ran.append("added last"))

        server = await mgr.create_server(ThreeCleanups, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(HOST, port)
        while not len(mgr):
            await asyncio.sleep(0.01)
        writer.close()
        while len(mgr):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the cleanups run in connection_lost: let it finish
        await mgr.shutdown(grace=1.0)
        assert ran == ["added last", "added first"]
        assert any("cleanup" in r.getMessage() and r.args[0] == 1 for r in caplog.records)

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run(loop_kind, scenario())


class Unresponsive(asyncio.Transport):
    """Owns no socket and never reports connection_lost: only the sweeper can end its connection."""

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def test_cleanup_raising_cancelled_error_in_the_sweeper(loop_kind):
    async def scenario():
        mgr = ConnectionManager(idle_timeout=0.1, close_timeout=0.1, resolution=0.02)
        ran: List[int] = []
        factory = mgr.protocol_factory(asyncio.Protocol)
        first, second = factory(), factory()
        first.connection_made(Unresponsive(extra={"peername": (HOST, 1)}))
        mgr.add_cleanup(1, lambda reason: ran.append(1))
        mgr.add_cleanup(1, raise_cancelled)
        while mgr.get(1) is not None:  # idle, asked to close, aborted, then forgotten by the sweeper
            await asyncio.sleep(0.02)
        second.connection_made(Unresponsive(extra={"peername": (HOST, 2)}))
        mgr.add_cleanup(2, lambda reason: ran.append(2))
        while len(mgr) and mgr._sweeper.running:  # a dead sweeper would leave it there for ever
            await asyncio.sleep(0.02)
        assert ran == [1, 2]  # the second connection expired too: the sweeper survived
        await mgr.shutdown(grace=0.5)

    run(loop_kind, scenario())


class CancelledWhenMade(ManagedProtocol):
    def connection_made(self, transport):
        raise_cancelled(CloseReason.ERROR)

    def connection_lost(self, exc):
        raise_cancelled(CloseReason.ERROR)


class CancelledWhenClosing(ManagedProtocol):
    def close_requested(self, transport, reason):
        raise_cancelled(reason)

    def connection_rejected(self, transport):
        raise_cancelled(CloseReason.REJECTED)


async def closed_by_the_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await reader.read() == b""
    except ConnectionResetError:  # aborted
        return True


def test_hooks_raising_cancelled_error(loop_kind, caplog):
    """Each hook's CancelledError is logged with the connection id, and the connection still ends."""

    async def scenario():
        mgr = ConnectionManager(idle_timeout=0.2, resolution=0.02, max_connections=1)
        made = (await mgr.create_server(CancelledWhenMade, HOST, 0)).sockets[0].getsockname()[1]
        closing = (await mgr.create_server(CancelledWhenClosing, HOST, 0)).sockets[0].getsockname()[1]
        clients = [await asyncio.open_connection(HOST, made)]  # 1: aborted after connection_made fails
        assert await closed_by_the_server(clients[0][0])
        while len(mgr):
            await asyncio.sleep(0.01)
        clients.append(await asyncio.open_connection(HOST, closing))  # 2: admitted, closed when idle
        while not len(mgr):
            await asyncio.sleep(0.01)
        clients.append(await asyncio.open_connection(HOST, closing))  # 3: refused (max_connections=1)
        assert [await closed_by_the_server(reader) for reader, _ in clients[1:]] == [True, True]
        while len(mgr):
            await asyncio.sleep(0.01)
        closed = mgr.stats().closed_total
        assert (closed["error"], closed["idle"], closed["rejected"]) == (1, 1, 1)
        await mgr.shutdown(grace=1.0)
        for _, writer in clients:
            writer.close()

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run(loop_kind, scenario())
    logged = sorted(tuple(r.args) for r in caplog.records if r.name == LOGGER and "failed" in r.getMessage())
    assert logged == [(1, "connection_lost"), (1, "connection_made"), (2, "close_requested"),
                      (3, "connection_rejected")]
