"""The public life-cycle seam: a fourth integration built on ``register`` / ``closing`` / ``ended``, nothing private.

The endpoint here has no transport of the manager's (as an ASGI connection):
every way it can end is driven through the public calls, and each ends once,
with its reason counted, its cleanups run once and its tasks cancelled.
"""

from __future__ import annotations

import asyncio
import gc
from typing import List

import pytest
from aio_support import eventually

from conntable.aio import CloseReason, ConnectionManager, ConnectionState, Endpoint, Heartbeat


class Recorder(Endpoint):
    """An endpoint that records what the manager asks, and optionally ends when asked."""

    __slots__ = ("mgr", "conn", "asked", "aborted", "ends_when_asked")

    def __init__(self, mgr: ConnectionManager, ends_when_asked: bool = True) -> None:
        self.mgr = mgr
        self.asked: List[CloseReason] = []
        self.aborted = 0
        self.ends_when_asked = ends_when_asked
        self.conn = mgr.register(self, peer=("127.0.0.1", 1))

    def request_close(self, reason: CloseReason) -> None:
        self.asked.append(reason)
        if self.ends_when_asked:
            self.mgr.ended(self.conn, CloseReason.CLOSED)

    def abort(self) -> None:
        self.aborted += 1
        self.mgr.ended(self.conn, CloseReason.ERROR)


def _cleanups(mgr: ConnectionManager, endpoint: Recorder, log: List[str]) -> None:
    mgr.add_cleanup(endpoint.conn.id, lambda reason: log.append(str(reason)))


def test_every_way_an_endpoint_ends(run):
    async def scenario():
        mgr = ConnectionManager(idle_timeout=0.2, resolution=0.05, close_timeout=0.2, handshake_timeout=5.0)
        log: List[str] = []
        # 1. the integration ends it (the app returned): closed.
        done = Recorder(mgr)
        assert done.conn.state is ConnectionState.NEW and done.conn.peer == ("127.0.0.1", 1)
        mgr.established(done.conn)
        assert done.conn.state is ConnectionState.OPEN
        _cleanups(mgr, done, log)
        task = mgr.spawn(done.conn.id, asyncio.sleep(3600))
        mgr.ended(done.conn, CloseReason.CLOSED)
        mgr.ended(done.conn, CloseReason.ERROR)  # a second end is a no-op
        await asyncio.sleep(0)
        assert task.cancelled() and log == ["closed"]
        # 2. idle: the manager asks, the endpoint ends.
        idle = Recorder(mgr)
        mgr.established(idle.conn)
        _cleanups(mgr, idle, log)
        await eventually(lambda: idle.conn.state is ConnectionState.CLOSED, "the idle endpoint ended")
        assert idle.asked == [CloseReason.IDLE] and idle.conn.close_reason is CloseReason.IDLE
        # 3. an endpoint that does not close when asked is aborted close_timeout later.
        stuck = Recorder(mgr, ends_when_asked=False)
        mgr.established(stuck.conn)
        await eventually(lambda: stuck.conn.state is ConnectionState.CLOSED, "the stuck endpoint was aborted")
        assert stuck.asked == [CloseReason.IDLE] and stuck.aborted == 1 and stuck.conn.close_reason is CloseReason.IDLE
        # 4. the integration starts closing (ping timeout): the reason it gives wins over the end's.
        pinged = Recorder(mgr)
        mgr.closing(pinged.conn, CloseReason.PING_TIMEOUT)
        assert pinged.conn.state is ConnectionState.CLOSING
        mgr.ended(pinged.conn, CloseReason.PEER)
        assert pinged.conn.close_reason is CloseReason.PING_TIMEOUT
        # ...and one that then never ends is aborted by the manager.
        lingering = Recorder(mgr, ends_when_asked=False)
        mgr.closing(lingering.conn, CloseReason.CLOSED)
        await eventually(lambda: lingering.aborted == 1, "the lingering endpoint was aborted")
        assert lingering.conn.close_reason is CloseReason.CLOSED
        # 5. shutdown asks every open endpoint.
        last = Recorder(mgr)
        mgr.established(last.conn)
        summary = await mgr.shutdown(grace=1.0)
        assert last.asked == [CloseReason.SHUTDOWN] and summary.closed_gracefully == 1
        # 6. after shutdown, a registration is refused.
        late = Recorder(mgr)
        assert late.conn.close_reason is CloseReason.REJECTED
        mgr.ended(late.conn, CloseReason.CLOSED)
        assert log == ["closed", "idle"]
        closed = mgr.stats().closed_total
        assert {k: v for k, v in closed.items() if v} == {
            "closed": 2, "idle": 2, "ping_timeout": 1, "shutdown": 1, "rejected": 1,
        }
        assert len(mgr) == 0 and mgr.stats().tasks_active == 0

    run(scenario())


def test_seam_arguments_are_checked(run):
    async def scenario():
        mgr = ConnectionManager()
        with pytest.raises(TypeError):
            mgr.register(object())  # type: ignore[arg-type]
        endpoint = Recorder(mgr)
        with pytest.raises(TypeError):
            mgr.closing(endpoint.conn, "closed")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            mgr.closing(endpoint.conn, CloseReason.CLOSED, timeout=0)
        with pytest.raises(TypeError):
            mgr.ended(endpoint.conn, None)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            mgr.on_server(42)  # type: ignore[arg-type]
        assert endpoint.conn.state is ConnectionState.OPEN  # nothing changed
        mgr.ended(endpoint.conn, CloseReason.CLOSED)
        # Dropped without ended(): abandoned (the manager holds endpoints weakly).
        Recorder(mgr)
        gc.collect()
        await eventually(lambda: len(mgr) == 0, "the dropped endpoint was reaped")
        assert mgr.stats().closed_total["abandoned"] == 1
        await mgr.shutdown()

    run(scenario())


def test_on_server_is_called_for_every_server_held(run, caplog):
    async def scenario():
        mgr = ConnectionManager()
        seen: List[object] = []

        def broken(_server: object) -> None:
            raise RuntimeError("hook")

        mgr.on_server(broken)  # what a hook raises is logged; the servers are still held and shut down
        mgr.on_server(seen.append)
        server = await mgr.create_server(asyncio.Protocol, "127.0.0.1", 0)
        other = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
        mgr.add_server(other)
        late: List[object] = []
        mgr.on_server(late.append)  # told about the servers held already
        assert seen == [server, other] and late == [server, other]
        assert caplog.text.count("server hook") == 2
        summary = await mgr.shutdown()
        assert summary.servers_closed == 2

    run(scenario())


class Pinger(Endpoint):
    """A pingable endpoint whose peer answers (``touch``) or not."""

    __slots__ = ("mgr", "conn", "pings", "failed", "answers")

    def __init__(self, mgr: ConnectionManager, answers: bool) -> None:
        self.mgr, self.answers, self.pings, self.failed = mgr, answers, 0, 0
        self.conn = mgr.register(self)

    def heartbeat_ping(self) -> None:
        self.pings += 1
        if self.answers:
            asyncio.get_running_loop().call_later(0.01, self.mgr.touch, self.conn.id)

    def heartbeat_failed(self) -> None:
        self.failed += 1

    def heartbeat_open(self) -> bool:
        return self.conn.state is ConnectionState.OPEN

    def request_close(self, reason: CloseReason) -> None:
        self.mgr.ended(self.conn, CloseReason.CLOSED)

    def abort(self) -> None:
        self.mgr.ended(self.conn, CloseReason.ERROR)


def test_heartbeat_for_any_pingable(run):
    async def scenario():
        mgr = ConnectionManager(idle_timeout=None, resolution=0.02, close_timeout=0.2)
        heartbeat = Heartbeat(mgr, 0.1, 0.1)
        alive, dead = Pinger(mgr, answers=True), Pinger(mgr, answers=False)
        heartbeat.watch(alive.conn.id, alive)
        heartbeat.watch(dead.conn.id, dead)
        await eventually(lambda: dead.conn.state is ConnectionState.CLOSED, "the silent peer was failed and aborted")
        assert dead.failed == 1 and dead.conn.close_reason is CloseReason.PING_TIMEOUT
        await eventually(lambda: alive.pings >= 3, "the answering peer is pinged again and again")
        assert alive.failed == 0 and alive.conn.state is ConnectionState.OPEN
        assert len(heartbeat) == 1 and heartbeat.failures == 1
        heartbeat.forget(alive.conn.id)
        await mgr.shutdown()
        await heartbeat.stop()
        assert mgr.stats().closed_total["ping_timeout"] == 1

    run(scenario())


@pytest.mark.parametrize("interval, timeout, expected", [
    (20.0, 20.0, 0.5),   # the default, where pings are seconds apart
    (0.1, 20.0, 0.05),   # a sub-second ping_interval: half of it
    (20.0, 0.3, 0.15),   # a short ping_timeout is timed as finely
    (None, 0.4, 0.2),    # no pings of our own: the timeout alone
    (None, None, 0.5),   # no heartbeat at all: the default
])
def test_heartbeat_resolution_rule(interval, timeout, expected):
    from conntable.aio import heartbeat_resolution

    resolution = heartbeat_resolution(interval, timeout, 0.5)
    assert resolution == pytest.approx(expected)
    if interval is not None:  # what the rule is for: a manager of that resolution takes the heartbeat
        Heartbeat(ConnectionManager(None, resolution=resolution), interval, timeout)
