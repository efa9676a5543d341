"""Every BaseException from every user callback of the asyncio layer: logged, the record ends once, expiry goes on.

The callbacks: the protocol factory, the protocol's methods
(``connection_made``, ``data_received``, ``buffer_updated``, ``get_buffer``,
``eof_received``, ``pause_writing``, ``connection_lost``), the two hooks
(``close_requested``, ``connection_rejected``), cleanups (run from
``connection_lost`` and from the sweeper), spawned tasks, the methods of a
custom table (``table_factory``), a transport of the user's whose ``close``
raises, and servers given to ``add_server`` whose ``close`` raises.

The exceptions: GeneratorExit, CancelledError, a framework's own BaseException
subclass, KeyboardInterrupt and SystemExit. After each, a later silent
connection must still be closed by its idle timeout (the sweeper is alive),
the connection that raised must have ended exactly once, and the failure must
be logged with its connection id. KeyboardInterrupt and SystemExit raised
where the manager calls user code must leave the loop (from a callback of the
loop's own, once the record ended), and the loop, run again, must still
expire. Raised from the methods the transport calls directly, they do what
the loop does: asyncio lets them out and keeps the connection, uvloop aborts
the connection and reports them to the exception handler.

Each case runs on both loops with real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from typing import Any, Callable, Dict, List, Optional

import pytest
from aio_support import BASE_EXCEPTIONS, EXITS, FrameworkExit
from faults_support import HOST, LOOP_KINDS
from server_fixtures import run_on

import conntable
from conntable.aio import CloseReason, ConnectionManager, ManagedBufferedProtocol, ManagedProtocol

LOGGER = "conntable.aio"
HANG_GUARD = 30.0
IDLE = 0.2
RESOLUTION = 0.02


KINDS = BASE_EXCEPTIONS


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> type:
    return KINDS[request.param]


class Case:
    """One attack: raise ``kind`` once from the callback named ``where``; probe every connection's end."""

    def __init__(self, where: str, kind: type) -> None:
        self.where = where
        self.kind = kind
        self.armed = True
        self.victim: Optional[int] = None  # the connection it was raised for
        self.ended: Dict[int, List[CloseReason]] = collections.defaultdict(list)
        self.contexts: List[Dict[str, Any]] = []  # what transports reported to the loop
        self.escaped: List[BaseException] = []  # KeyboardInterrupt/SystemExit that left the loop
        self.mgr: Optional[ConnectionManager] = None

    def fire(self, where: str, conn_id: Optional[int] = None) -> None:
        if where == self.where and self.armed:
            self.armed = False
            if conn_id is not None:
                self.victim = conn_id
            raise self.kind("raised by " + where)

    def track(self, conn_id: int, mgr: ConnectionManager) -> None:
        mgr.add_cleanup(conn_id, self.ended[conn_id].append)

    def record_loop_reports(self) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: self.contexts.append(context))

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        for _ in range(int(HANG_GUARD / 0.01)):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"never happened: {what} ({self.where}, {self.kind.__name__})")

    def victim_ended_once(self) -> bool:
        return self.victim is not None and len(self.ended[self.victim]) == 1


class Victim(ManagedProtocol):
    """Every method can be the one that raises."""

    def __init__(self, case: Case) -> None:
        self.case = case

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.case.track(self.connection.id, self.manager)
        self.add_cleanup(self._cleanup)
        if self.case.where == "spawned task" and self.case.armed:
            self.case.armed = False
            self.case.victim = self.connection.id
            self.spawn(self._raise_later())
        self.case.fire("connection_made", self.connection.id)

    async def _raise_later(self) -> None:
        await asyncio.sleep(0)
        raise self.case.kind("raised by a spawned task")

    def _cleanup(self, reason: CloseReason) -> None:
        self.case.fire("cleanup", self.connection.id)

    def data_received(self, data: bytes) -> None:
        self.case.fire("data_received", self.connection.id)
        if data == b"flood":  # write far more than the buffers hold: writing pauses
            self.transport.write(b"x" * (8 << 20))

    def eof_received(self) -> None:
        self.case.fire("eof_received", self.connection.id)

    def pause_writing(self) -> None:
        self.case.fire("pause_writing", self.connection.id)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.case.fire("connection_lost", self.connection.id)

    def close_requested(self, transport: Any, reason: CloseReason) -> None:
        self.case.fire("close_requested", self.connection.id)
        transport.close()

    def connection_rejected(self, transport: Any) -> None:
        self.case.track(self.connection.id, self.manager)
        self.case.fire("connection_rejected", self.connection.id)
        transport.close()


class BufferedVictim(ManagedBufferedProtocol):
    def __init__(self, case: Case) -> None:
        self.case = case
        self.buffer = bytearray(65536)

    def connection_made(self, transport: Any) -> None:
        self.case.track(self.connection.id, self.manager)

    def get_buffer(self, sizehint: int) -> bytearray:
        self.case.fire("get_buffer", self.connection.id)
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.case.fire("buffer_updated", self.connection.id)


async def chatter(writer: asyncio.StreamWriter) -> None:
    """Keep a connection from going idle."""
    while True:
        writer.write(b".")
        await asyncio.sleep(0.05)


def failures_logged(caplog: pytest.LogCaptureFixture, conn_id: int) -> List[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.args and r.args[0] == conn_id and "failed" in r.getMessage()]


async def a_later_connection_still_expires(case: Case, port: int) -> None:
    """A new silent connection is closed by its idle timeout: the sweeper survived."""
    mgr = case.mgr
    assert mgr is not None
    known = set(case.ended)
    reader, writer = await asyncio.open_connection(HOST, port)
    await case.until(lambda: set(case.ended) - known, "the later connection registered")
    (later,) = set(case.ended) - known
    assert await reader.read() == b""  # closed by the server
    await case.until(lambda: case.ended[later] == [CloseReason.IDLE], "the later connection idle-expired")
    writer.close()
    assert mgr._sweeper is not None and mgr._sweeper.running


async def finish(case: Case, *clients: Any) -> None:
    mgr = case.mgr
    assert mgr is not None
    summary = await mgr.shutdown(grace=1.0)
    for client in clients:
        client.close()
    assert len(mgr) == 0 and summary.tasks_still_running == 0
    assert all(len(reasons) == 1 for reasons in case.ended.values()), dict(case.ended)


# -- callbacks the manager calls: logged with the id, exits propagate after the end ----

MANAGER_CALLED = ["connection_made", "connection_lost", "close_requested", "connection_rejected", "cleanup"]


@pytest.mark.parametrize("where", MANAGER_CALLED)
def test_callbacks_the_manager_calls(loop_kind, kind, where, caplog):
    case = Case(where, kind)

    async def scenario():
        case.record_loop_reports()
        refusing = where == "connection_rejected"
        mgr = case.mgr = ConnectionManager(
            idle_timeout=1.0 if refusing else IDLE, resolution=RESOLUTION, close_timeout=0.5,
            max_connections=1 if refusing else None,
        )
        port = (await mgr.create_server(lambda: Victim(case), HOST, 0)).sockets[0].getsockname()[1]
        clients = [await asyncio.open_connection(HOST, port)]
        if refusing:  # the first is admitted (and kept busy); the second is refused
            await case.until(lambda: len(case.ended) == 1, "the first connection registered")
            keep_busy = asyncio.ensure_future(chatter(clients[0][1]))
            clients.append(await asyncio.open_connection(HOST, port))
            await case.until(case.victim_ended_once, "the refused connection ended")
            keep_busy.cancel()
            clients[0][1].close()
        elif where in ("connection_lost", "cleanup"):
            await case.until(lambda: len(case.ended) == 1, "the connection registered")
            clients[0][1].close()  # the peer leaves: connection_lost, then the cleanups
        await case.until(case.victim_ended_once, "the connection that raised ended")
        if where == "close_requested":
            assert case.ended[case.victim] == [CloseReason.IDLE]
        await case.until(lambda: len(mgr) == 0, "every connection gone")
        await a_later_connection_still_expires(case, port)
        await finish(case, *(writer for _, writer in clients))

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run_on(loop_kind, scenario(), HANG_GUARD, escaped=case.escaped)
    assert any(f"{where} " in message or message.startswith(f"connection {case.victim}: {where}")
               for message in failures_logged(caplog, case.victim)), caplog.text
    if issubclass(kind, EXITS):
        assert [type(exc) for exc in case.escaped] == [kind]
    else:
        assert case.escaped == []


def test_protocol_factory(loop_kind, kind, caplog):
    case = Case("factory", kind)

    def factory() -> Victim:
        case.fire("factory")
        return Victim(case)

    async def scenario():
        mgr = case.mgr = ConnectionManager(idle_timeout=IDLE, resolution=RESOLUTION, close_timeout=0.5)
        port = (await mgr.create_server(factory, HOST, 0)).sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            assert await reader.read() == b""  # aborted: no socket left open
        except ConnectionResetError:
            pass
        await case.until(lambda: mgr.stats().closed_total["error"] == 1 and len(mgr) == 0, "aborted")
        await a_later_connection_still_expires(case, port)
        await finish(case, writer)

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run_on(loop_kind, scenario(), HANG_GUARD, escaped=case.escaped)
    assert failures_logged(caplog, 1) == ["connection 1: the protocol factory failed"]
    assert [type(exc) for exc in case.escaped] == ([kind] if issubclass(kind, EXITS) else [])


# -- methods the transport calls: the loop's own handling, and the record still ends once ---

TRANSPORT_CALLED = ["data_received", "eof_received", "pause_writing", "get_buffer", "buffer_updated"]


@pytest.mark.parametrize("where", TRANSPORT_CALLED)
def test_methods_the_transport_calls(loop_kind, kind, where):
    case = Case(where, kind)
    protocol = BufferedVictim if where in ("get_buffer", "buffer_updated") else Victim

    async def scenario():
        case.record_loop_reports()
        mgr = case.mgr = ConnectionManager(idle_timeout=IDLE, resolution=RESOLUTION, close_timeout=0.5)
        port = (await mgr.create_server(lambda: protocol(case), HOST, 0)).sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"flood" if where == "pause_writing" else b"data")
        if where == "eof_received":
            writer.write_eof()
        await case.until(lambda: not case.armed, "the method raised")
        await case.until(case.victim_ended_once, "the connection that raised ended")
        await a_later_connection_still_expires(case, port)
        await finish(case, writer)
        return mgr

    run_on(loop_kind, scenario(), HANG_GUARD, escaped=case.escaped)
    if case.escaped:  # asyncio lets KeyboardInterrupt and SystemExit out of the loop...
        assert issubclass(kind, EXITS) and [type(exc) for exc in case.escaped] == [kind]
    else:  # ...else the loop reports the failure, naming the connection
        reports = [c for c in case.contexts if isinstance(c.get("exception"), kind)
                   or where in str(c.get("exception"))]  # uvloop rewords get_buffer's failures
        assert reports, case.contexts
        assert f"conntable connection {case.victim}:" in repr(reports[0].get("protocol")), reports[0]


def test_spawned_task(loop_kind, kind, caplog):
    """A task's BaseException is logged with the id; asyncio lets its exits out; the connection stays."""
    case = Case("spawned task", kind)

    async def scenario():
        mgr = case.mgr = ConnectionManager(idle_timeout=IDLE, resolution=RESOLUTION, close_timeout=0.5)
        port = (await mgr.create_server(lambda: Victim(case), HOST, 0)).sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        await case.until(case.victim_ended_once, "the connection idle-expired")
        assert case.ended[case.victim] == [CloseReason.IDLE]  # a failing task does not close it
        await a_later_connection_still_expires(case, port)
        await finish(case, writer)

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run_on(loop_kind, scenario(), HANG_GUARD, escaped=case.escaped)
    if issubclass(kind, asyncio.CancelledError):  # the task ends cancelled: nothing to report
        assert failures_logged(caplog, 1) == []
    else:
        assert any("task" in message for message in failures_logged(caplog, 1)), caplog.text
    assert [type(exc) for exc in case.escaped] == ([kind] if issubclass(kind, EXITS) else [])


# -- cleanups run by the sweeper, transports and servers of the user's -----------------

class Unresponsive(asyncio.Transport):
    """Owns no socket and never reports connection_lost: only the sweeper can end its connection."""

    def __init__(self, peer: int, case: Optional[Case] = None) -> None:
        super().__init__(extra={"peername": (HOST, peer)})
        self.case = case

    def close(self) -> None:
        if self.case is not None:
            self.case.fire("transport close")

    def abort(self) -> None:
        pass


def test_cleanup_and_transport_close_in_the_sweeper(loop_kind, kind, caplog):
    """Raised inside the sweeper's own pass: a cleanup of a forgotten connection, a transport's close()."""
    cases = [Case("cleanup", kind), Case("transport close", kind)]

    async def scenario():
        mgr = ConnectionManager(idle_timeout=0.1, close_timeout=0.1, resolution=RESOLUTION)
        factory = mgr.protocol_factory(asyncio.Protocol)
        adapters = [factory() for _ in range(3)]  # kept: a collected adapter would end its connection at once
        for number, case in enumerate(cases, 1):
            adapters[number - 1].connection_made(Unresponsive(number, case))
            case.track(number, mgr)
            mgr.add_cleanup(number, lambda reason, case=case, number=number: case.fire("cleanup", number))
            case.victim = number
        # idle, asked to close (close raises for the second), aborted, forgotten (the cleanup raises for the first)
        for case in cases:
            await case.until(case.victim_ended_once, "ended")
        adapters[2].connection_made(Unresponsive(3))
        probe = Case("nothing", kind)
        probe.track(3, mgr)
        await probe.until(lambda: len(probe.ended[3]) == 1, "a later connection still expires")
        assert mgr._sweeper is not None and mgr._sweeper.running
        await mgr.shutdown(grace=0.5)
        assert len(mgr) == 0

    escaped: List[BaseException] = []
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run_on(loop_kind, scenario(), HANG_GUARD, escaped=escaped)
    assert any("cleanup" in m for m in failures_logged(caplog, 1)), caplog.text
    assert any("expiry" in m for m in failures_logged(caplog, 2)), caplog.text
    assert [type(exc) for exc in escaped] == ([kind, kind] if issubclass(kind, EXITS) else [])


class BrokenServer:
    """A server of the user's (add_server) whose close() and wait_closed() raise."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def close(self) -> None:
        raise self.kind("close")

    async def wait_closed(self) -> None:
        raise self.kind("wait_closed")


def test_servers_whose_close_raises_do_not_stop_shutdown(loop_kind, kind, caplog):
    async def scenario():
        mgr = ConnectionManager(idle_timeout=60.0, resolution=RESOLUTION)
        port = (await mgr.create_server(asyncio.Protocol, HOST, 0)).sockets[0].getsockname()[1]
        mgr.add_server(BrokenServer(kind))  # type: ignore[arg-type]
        reader, writer = await asyncio.open_connection(HOST, port)
        while not len(mgr):
            await asyncio.sleep(0.01)
        summary = await mgr.shutdown(grace=1.0)
        assert summary.servers_closed == 1 and summary.closed_gracefully == 1 and len(mgr) == 0
        assert await reader.read() == b""
        writer.close()

    escaped: List[BaseException] = []
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run_on(loop_kind, scenario(), HANG_GUARD, escaped=escaped)
    assert "failed to close" in caplog.text and "failed to finish closing" in caplog.text
    assert [type(exc) for exc in escaped] == ([kind, kind] if issubclass(kind, EXITS) else [])


# -- a custom table (table_factory) that raises ------------------------------------------

class FlakyTable:
    """A connection table of the user's that raises ``kind`` once from the method named ``where``."""

    def __init__(self, case: Case, idle_timeout: float, resolution: float, now: float) -> None:
        self._case = case
        self._table = conntable.ConnectionTable(idle_timeout, resolution=resolution, now=now)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._table, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            self._case.fire(name)
            return method(*args, **kwargs)

        return call

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, key: object) -> bool:
        return key in self._table

    def __iter__(self) -> Any:
        return iter(self._table)

    def __delitem__(self, key: int) -> None:
        self._case.fire("__delitem__")
        del self._table[key]


#: attack: (the method that raises, armed only once the first connection registered, what the layer logs)
TABLE_ATTACKS = {
    "next_expiry": ("next_expiry", False, ["the sweeper's table failed"]),
    "expire": ("expire", False, ["could not register a new connection", "the sweeper's table failed"]),
    "add": ("add", False, ["could not register a new connection"]),
    "due": ("due", False, ["could not register a new connection"]),
    "add when closing": ("add", True, ["connection 1: expiry (the connection is forgotten) failed"]),
    "__delitem__": ("__delitem__", False, ["connection 1: removal from the table failed"]),
    "touch": ("touch", False, []),
}


@pytest.mark.parametrize("attack", TABLE_ATTACKS)
def test_custom_table_that_raises(loop_kind, kind, attack, caplog):
    where, later, logged = TABLE_ATTACKS[attack]
    case = Case(where, kind)

    async def scenario():
        mgr = case.mgr = ConnectionManager(
            idle_timeout=IDLE, resolution=RESOLUTION, close_timeout=0.5,
            table_factory=lambda idle, resolution, now: FlakyTable(case, idle, resolution, now),
        )
        case.armed = False  # the manager's own set-up calls are not the attack
        port = (await mgr.create_server(lambda: Victim(case), HOST, 0)).sockets[0].getsockname()[1]
        case.armed = not later
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(b"data")  # touch
        if later:
            await case.until(lambda: len(case.ended) == 1, "the connection registered")
            case.armed = True
        await case.until(lambda: not case.armed, "the table raised")
        await case.until(lambda: len(mgr) == 0 and all(len(r) == 1 for r in case.ended.values()),
                         "every connection ended once")
        await a_later_connection_still_expires(case, port)
        await finish(case, writer)

    with caplog.at_level(logging.ERROR):
        run_on(loop_kind, scenario(), HANG_GUARD, escaped=case.escaped)
    if where == "touch":  # inside data_received: the transport's report, and exits as the loop lets them
        assert "Fatal error" in caplog.text or case.escaped, caplog.text
        return
    assert any(message in caplog.text for message in logged), caplog.text
    assert [type(exc) for exc in case.escaped] == ([kind] if issubclass(kind, EXITS) else [])


def test_the_sweeper_retries_a_failing_table_without_spinning(loop_kind, caplog):
    """A table whose expire keeps failing costs a bounded number of tries; expiry resumes once it works."""

    class Failing:
        resolution = RESOLUTION
        failures = 0
        broken = True

        def __init__(self, now: float) -> None:
            self.table = conntable.ConnectionTable(math.inf, resolution=RESOLUTION, now=now)

        def next_expiry(self) -> Optional[float]:
            return self.table.next_expiry()

        def expire(self, now: float, limit: Optional[int] = None) -> Any:
            if self.broken:
                self.failures += 1
                raise FrameworkExit("expire")
            return self.table.expire(now, limit)

    async def scenario():
        loop = asyncio.get_running_loop()
        failing = Failing(loop.time())
        failing.table.add(1, "entry", deadline=loop.time())
        done: List[Any] = []
        sweeper = conntable.aio.Sweeper(loop, failing, 10, lambda expired, now: done.extend(expired))
        sweeper.start()
        await asyncio.sleep(0.5)
        # Backing off (1 ms doubling to 1 s): about ten tries in half a second, not thousands.
        assert 1 <= failing.failures <= 20, failing.failures
        failing.broken = False
        while not done:
            await asyncio.sleep(0.01)
        assert [entry.key for entry in done] == [1]
        await sweeper.stop()

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        run_on(loop_kind, scenario(), HANG_GUARD)
    assert "the sweeper's table failed" in caplog.text

