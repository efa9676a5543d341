"""Every BaseException from the user callbacks of SessionStore and the WebSocket heartbeat.

SessionStore: ``on_expire`` (run by the sweeper, by ``delete`` and by
``shutdown``), an ``async def`` ``on_expire``, and ``bind`` with a connection
whose ``add_cleanup`` raises. The heartbeat: a beat that raises (a
``create_connection`` subclass, a failing transport). The exceptions:
GeneratorExit, CancelledError, a framework's own BaseException,
KeyboardInterrupt and SystemExit. After each: no half-ended session (gone
from ``in``, ``[]``, ``len`` and the ``max_sessions`` count), the failure
logged, later sessions still expiring and later connections still pinged;
KeyboardInterrupt and SystemExit leave the loop once, after the session ended.
Real sockets and real websockets clients, on both loops.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any, List

import pytest
from aio_support import BASE_EXCEPTIONS, EXITS, FrameworkExit, Scenario, eventually
from server_fixtures import run_on
from ws_support import WsScenario, closed

from conntable.sessions import SessionLimitReached, SessionStore

TTL = 0.2
RESOLUTION = 0.02


KINDS = BASE_EXCEPTIONS


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> type:
    return KINDS[request.param]


def expected_escapes(kind: type, count: int = 1) -> List[type]:
    return [kind] * count if issubclass(kind, EXITS) else []


def fully_gone(store: SessionStore, token: str) -> bool:
    if token in store or store.get(token) is not None:
        return False
    with pytest.raises(KeyError):
        store[token]
    return True


class RaisesOnce:
    """An on_expire that raises ``kind`` for the session holding ``victim``, and records every call."""

    def __init__(self, kind: type, victim: Any = "victim") -> None:
        self.kind = kind
        self.victim = victim
        self.calls: List[Any] = []

    def __call__(self, token: str, data: Any) -> None:
        self.calls.append(data)
        if data == self.victim:
            raise self.kind("on_expire")


def test_on_expire_raising_in_the_sweeper(loop_kind, kind, caplog):
    """The batch it is in still ends whole; no zombie session; capacity is freed; expiry goes on."""
    on_expire = RaisesOnce(kind)
    escaped: List[BaseException] = []

    async def scenario():
        store = SessionStore(TTL, resolution=RESOLUTION, max_sessions=3, on_expire=on_expire)
        tokens = [store.create(data) for data in ("victim", "second", "third")]  # one batch
        await eventually(lambda: len(on_expire.calls) == 3, "every session's on_expire ran")
        assert sorted(on_expire.calls) == ["second", "third", "victim"]
        assert len(store) == 0 and all(fully_gone(store, token) for token in tokens)
        later = [store.create(i) for i in range(3)]  # max_sessions counts none of the old ones
        with pytest.raises(SessionLimitReached):
            store.create("one too many")
        await eventually(lambda: len(on_expire.calls) == 6, "later sessions still expire")
        assert all(fully_gone(store, token) for token in later)
        await store.shutdown()
        assert on_expire.calls.count("victim") == 1

    with caplog.at_level(logging.ERROR, logger="conntable.sessions"):
        run_on(loop_kind, scenario(), escaped=escaped)
    assert caplog.text.count("session on_expire callback failed") == 1
    assert [type(exc) for exc in escaped] == expected_escapes(kind)


def test_on_expire_raising_in_delete_and_shutdown(loop_kind, kind, caplog):
    on_expire = RaisesOnce(kind, victim=None)
    escaped: List[BaseException] = []

    async def scenario():
        store = SessionStore(60.0, resolution=RESOLUTION, on_expire=on_expire)
        deleted, kept = store.create("deleted"), store.create("kept")
        on_expire.victim = "deleted"
        store.delete(deleted)  # inside the loop: an exit is raised from the loop, not from delete()
        assert fully_gone(store, deleted) and kept in store
        on_expire.victim = "kept"
        await store.shutdown()
        assert fully_gone(store, kept) and on_expire.calls == ["deleted", "kept"]

    with caplog.at_level(logging.ERROR, logger="conntable.sessions"):
        run_on(loop_kind, scenario(), escaped=escaped)
    assert caplog.text.count("session on_expire callback failed") == 2
    assert [type(exc) for exc in escaped] == expected_escapes(kind, 2)


def test_on_expire_exit_without_a_running_loop_propagates_after_the_end(loop_kind, kind):
    """Called from plain code (no running loop), delete() ends the session, then lets the exit out."""
    on_expire = RaisesOnce(kind, victim=None)

    async def make():
        store = SessionStore(60.0, resolution=RESOLUTION, on_expire=on_expire)
        return store, store.create("victim")

    store, token = run_on(loop_kind, make())
    on_expire.victim = "victim"
    if issubclass(kind, EXITS):
        with pytest.raises(kind):
            store.delete(token)
    else:
        store.delete(token)
    assert fully_gone(store, token) and on_expire.calls == ["victim"]


def test_async_on_expire_runs_as_a_task_that_shutdown_waits_for(loop_kind, caplog):
    ran: List[str] = []
    release = None

    async def on_expire(token: str, data: Any) -> None:
        await asyncio.sleep(0)
        if data == "slow":
            await release.wait()
        if data == "fails":
            raise FrameworkExit("async on_expire")
        ran.append(data)

    async def scenario():
        nonlocal release
        release = asyncio.Event()
        store = SessionStore(TTL, resolution=RESOLUTION, on_expire=on_expire)
        for data in ("quick", "fails", "slow"):
            store.create(data)
        await eventually(lambda: ran == ["quick"], "the quick one awaited")
        assert len(store) == 0
        stopping = asyncio.ensure_future(store.shutdown())
        await asyncio.sleep(0.05)
        assert not stopping.done()  # it waits for the slow one
        release.set()
        await stopping
        assert ran == ["quick", "slow"]
        # One that never returns: cancelled once the grace is over.
        store = SessionStore(60.0, resolution=RESOLUTION, on_expire=on_expire)
        release = asyncio.Event()
        store.create("slow")
        await store.shutdown(grace=0.05)
        assert ran == ["quick", "slow"]

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited" would fail
        with caplog.at_level(logging.ERROR, logger="conntable.sessions"):
            run_on(loop_kind, scenario())
    assert caplog.text.count("session on_expire callback failed") == 1 and "FrameworkExit" in caplog.text


class RaisingCleanable:
    """A connection whose add_cleanup raises (a half-built object of the user's)."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def add_cleanup(self, callback: Any) -> None:
        raise self.kind("add_cleanup")


def test_bind_to_a_connection_whose_add_cleanup_raises(loop_kind, kind):
    """The caller gets the exception, and the session is not left held: it still idle-expires."""
    expired: List[Any] = []

    async def scenario():
        store = SessionStore(TTL, resolution=RESOLUTION, on_expire=lambda token, data: expired.append(data))
        token = store.create("bound")
        with pytest.raises(kind):
            store.bind(token, RaisingCleanable(kind))
        await eventually(lambda: expired == ["bound"], "the session idle-expired")
        await store.shutdown()

    run_on(loop_kind, scenario())


def test_bound_session_released_even_when_another_cleanup_raises(loop_kind, kind, caplog):
    """The manager runs every cleanup of a connection: the session's hold is released whatever the others raise."""
    expired: List[Any] = []
    escaped: List[BaseException] = []

    async def scenario():
        store = SessionStore(TTL, resolution=RESOLUTION, on_expire=lambda token, data: expired.append(data))
        sc = Scenario(idle_timeout=60.0)
        port = await sc.serve()
        socks = await sc.connect(port, 1)
        await sc.connected(1)
        token = store.create("bound")
        protocol = sc.mgr.get(sc.made[0]).protocol
        def raising(reason: Any) -> None:
            raise kind("a cleanup")

        protocol.add_cleanup(raising)  # runs after the session's (cleanups run last added first)
        store.bind(token, protocol)
        protocol.add_cleanup(raising)  # runs before it
        await asyncio.sleep(2 * TTL)
        assert token in store  # held
        socks[0].close()
        await eventually(lambda: expired == ["bound"], "expired once its connection ended")
        await store.shutdown()
        await sc.finish()

    with caplog.at_level(logging.ERROR, logger="conntable.aio"):
        run_on(loop_kind, scenario(), escaped=escaped)
    assert caplog.text.count("connection 1: cleanup") == 2
    assert [type(exc) for exc in escaped] == expected_escapes(kind)  # one per connection that ended


# -- the WebSocket heartbeat -----------------------------------------------------------------

def test_a_beat_that_raises_aborts_that_connection_only(loop_kind, kind, caplog):
    """The failing connection is aborted and logged; the others are still pinged, failed and closed."""
    escaped: List[BaseException] = []

    async def scenario():
        sc = WsScenario(idle_timeout=None, resolution=RESOLUTION, close_timeout=1.0)
        armed = {"count": 1}

        class FailsToPing(sc.connection_class):  # type: ignore[name-defined, misc]
            def _write_ping(self) -> None:
                if armed["count"]:
                    armed["count"] -= 1
                    raise kind("ping")
                super()._write_ping()

        sc.connection_class = FailsToPing
        server = await sc.start(ping_interval=0.1, ping_timeout=0.1)
        heartbeat = server.heartbeat
        victim, = await sc.connect(1)
        assert await closed(victim) == 1006  # aborted: no close frame
        await eventually(lambda: sc.ended() == 1, "the failing connection ended")
        # A later connection that stops answering is still pinged, failed with 1011, and aborted.
        stalled, = await sc.connect(1)
        stalled.transport.pause_reading()
        await eventually(lambda: heartbeat.failures == 1, "the later connection failed by the heartbeat")
        stalled.transport.resume_reading()
        assert await closed(stalled) == 1011
        await eventually(lambda: sc.ended() == 2, "both ended")
        assert heartbeat.pings_sent >= 1
        await sc.finish()

    with caplog.at_level(logging.ERROR, logger="conntable.websockets"):
        run_on(loop_kind, scenario(), escaped=escaped)
    assert "connection 1: heartbeat (aborting the connection) failed" in caplog.text
    assert [type(exc) for exc in escaped] == expected_escapes(kind)

