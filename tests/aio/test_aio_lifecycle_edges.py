"""Lifecycle edges: connections that arrive after shutdown, and every duration and size argument checked alike.

After :meth:`ConnectionManager.shutdown` (whether or not a connection ever
came before it), a connection that still arrives (from a server the manager
does not know, or an outgoing one) is refused, still bounded by
``close_timeout``, and leaves no sweeper or other task behind once it is gone.

Every public constructor and function of the asyncio layer, the WebSocket
integration, the session store, the ASGI middleware and the leak check
checks its durations and sizes with the table's own checks
(``conntable._common``): the same values are refused with the same exception
type and message as the table refuses them, and the same values accepted.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Callable, List

import pytest
from aio_support import HOST, Scenario, Tracked, eventually, tls_contexts

from conntable._common import check_resolution, check_size, check_timeout
from conntable.aio import CircuitBreaker, CloseReason, ConnectionManager, Sweeper
from conntable.asgi import SessionMiddleware
from conntable.sessions import SessionStore
from conntable.testing import LeakCheck
from conntable.websockets import Heartbeat, serve


def sweepers() -> List[asyncio.Task]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "conntable-sweeper" and not task.done()]


async def refused_late_arrival(sc: Scenario, before_first_connection: bool) -> None:
    """Shut down, then let a connection in through a server the manager does not know of."""
    loop = asyncio.get_running_loop()
    if not before_first_connection:
        port = await sc.serve()
        await sc.connect(port, 1)
        await sc.connected(1)
    await sc.mgr.shutdown(grace=1.0)
    assert sweepers() == []
    rogue = await loop.create_server(sc.mgr.protocol_factory(lambda: Tracked(sc)), HOST, 0)
    reader, writer = await asyncio.open_connection(HOST, rogue.sockets[0].getsockname()[1])
    assert await reader.read() == b""  # refused: closed at once
    await eventually(lambda: len(sc.mgr) == 0, "the late arrival ended")
    assert sc.reasons[sc.made[-1]] is CloseReason.REJECTED
    await eventually(lambda: sweepers() == [], "the sweeper it needed stopped")
    writer.close()
    rogue.close()
    await rogue.wait_closed()


@pytest.mark.parametrize("before_first_connection", [True, False], ids=["unused", "used"])
def test_a_connection_after_shutdown_is_refused_and_leaves_nothing_running(run, before_first_connection):
    async def scenario():
        sc = Scenario(idle_timeout=60.0, close_timeout=0.5)
        await refused_late_arrival(sc, before_first_connection)
        await sc.finish()  # shutdown again: the same summary, everything accounted for

    run(scenario())


class Unread(Tracked):
    """Refused, it writes more than the peer will read: only the abort after close_timeout ends it."""

    def connection_rejected(self, transport: Any) -> None:
        self.scenario.track(self.connection.id)
        transport.write(b"x" * (8 << 20))
        transport.close()


def test_a_late_arrival_that_never_goes_is_still_aborted(run):
    """The sweeper that runs for late arrivals still enforces close_timeout."""

    async def scenario():
        sc = Scenario(idle_timeout=60.0, close_timeout=0.3, resolution=0.05)
        await sc.mgr.shutdown(grace=0.1)
        loop = asyncio.get_running_loop()
        rogue = await loop.create_server(sc.mgr.protocol_factory(lambda: Unread(sc)), HOST, 0)
        socks = await sc.connect(rogue.sockets[0].getsockname()[1], 1, rcvbuf=4096)  # and never read
        await eventually(lambda: sc.ended() == 1, "aborted after close_timeout")
        assert sc.mgr.stats().aborted_total == 1
        await eventually(lambda: sweepers() == [], "the sweeper stopped")
        rogue.close()
        await rogue.wait_closed()
        for sock in socks:
            sock.close()
        await sc.finish()

    run(scenario())


def test_outgoing_connection_after_shutdown(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0, close_timeout=0.5)
        await sc.mgr.shutdown()
        server = await asyncio.start_server(lambda r, w: w.close(), HOST, 0)
        transport, _protocol = await sc.mgr.create_connection(
            lambda: Tracked(sc), HOST, server.sockets[0].getsockname()[1])
        await eventually(lambda: len(sc.mgr) == 0 and transport.is_closing(), "refused and closed")
        await eventually(lambda: sweepers() == [], "no sweeper left")
        server.close()
        await server.wait_closed()
        await sc.finish()

    run(scenario())


# -- one rule for every duration and size ---------------------------------------------------

def timeout_rule(name: str, optional: bool = False) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if optional and value is None:
            return None
        return check_timeout(name, value)

    return check


def size_rule(name: str, minimum: int) -> Callable[[Any], Any]:
    return lambda value: check_size(name, value, minimum=minimum)


def resolution_rule(value: Any) -> Any:
    return check_resolution(value)


async def _serve(**kwargs: Any) -> None:
    server = await serve(lambda ws: None, HOST, 0, **kwargs)
    server.close()
    await server.wait_closed()


def _store_shutdown(grace: Any) -> Any:
    return SessionStore(1.0).shutdown(grace=grace)


def _manager_shutdown(grace: Any) -> Any:
    return ConnectionManager().shutdown(grace=grace)


def _sweeper(batch: Any) -> Any:
    return Sweeper(asyncio.get_running_loop(), None, batch, lambda expired, now: None)


def _heartbeat(**kwargs: Any) -> Any:
    values = {"ping_interval": 20.0, "ping_timeout": 20.0, "close_timeout": 10.0, **kwargs}
    return Heartbeat(ConnectionManager(), **values)


async def _protocol_factory(**kwargs: Any) -> Any:
    return ConnectionManager().protocol_factory(asyncio.Protocol, ssl=tls_contexts()[0], **kwargs)


#: (what, how to call it with one argument, that argument, the shared check it must agree with)
ARGUMENTS = [
    ("ConnectionManager", ConnectionManager, "idle_timeout", timeout_rule("idle_timeout", True)),
    ("ConnectionManager", ConnectionManager, "handshake_timeout", timeout_rule("handshake_timeout", True)),
    ("ConnectionManager", ConnectionManager, "max_lifetime", timeout_rule("max_lifetime", True)),
    ("ConnectionManager", ConnectionManager, "close_timeout", timeout_rule("close_timeout")),
    ("ConnectionManager", ConnectionManager, "resolution", resolution_rule),
    ("ConnectionManager", ConnectionManager, "expire_batch", size_rule("expire_batch", 1)),
    ("ConnectionManager", ConnectionManager, "max_connections", size_rule("max_connections", 1)),
    ("ConnectionManager.shutdown", _manager_shutdown, "grace", timeout_rule("grace")),
    ("protocol_factory", _protocol_factory, "ssl_handshake_timeout", timeout_rule("ssl_handshake_timeout", True)),
    ("protocol_factory", _protocol_factory, "ssl_shutdown_timeout", timeout_rule("ssl_shutdown_timeout", True)),
    ("CircuitBreaker", CircuitBreaker, "max_connections", size_rule("max_connections", 1)),
    ("Sweeper", _sweeper, "batch", size_rule("batch", 1)),
    ("serve", _serve, "idle_timeout", timeout_rule("idle_timeout", True)),
    ("serve", _serve, "close_timeout", timeout_rule("close_timeout")),
    ("serve", _serve, "ping_interval", timeout_rule("ping_interval", True)),
    ("serve", _serve, "ping_timeout", timeout_rule("ping_timeout", True)),
    ("serve", _serve, "max_connections", size_rule("max_connections", 1)),
    ("serve", _serve, "retry_after", size_rule("retry_after", 0)),
    ("Heartbeat", _heartbeat, "ping_interval", timeout_rule("ping_interval")),
    ("Heartbeat", _heartbeat, "ping_timeout", timeout_rule("ping_timeout", True)),
    ("Heartbeat", _heartbeat, "close_timeout", timeout_rule("close_timeout")),
    ("SessionStore", lambda **kw: SessionStore(**{"idle_ttl": 1.0, **kw}), "idle_ttl", timeout_rule("idle_ttl")),
    ("SessionStore", lambda **kw: SessionStore(1.0, **kw), "absolute_ttl", timeout_rule("absolute_ttl", True)),
    ("SessionStore", lambda **kw: SessionStore(1.0, **kw), "max_sessions", size_rule("max_sessions", 1)),
    ("SessionStore", lambda **kw: SessionStore(1.0, **kw), "resolution", resolution_rule),
    ("SessionStore.shutdown", _store_shutdown, "grace", timeout_rule("grace")),
    ("SessionMiddleware", lambda **kw: SessionMiddleware(None, SessionStore(1.0), **kw), "retry_after",
     size_rule("retry_after", 0)),
    ("LeakCheck", LeakCheck, "settle", timeout_rule("settle")),  # memory_limit: bytes, tested with the plugin
]

#: Wrong types and values out of range, as the table's own tests use them.
BAD_VALUES = ["5", b"5", [5], object(), True, 0, -1, -0.5, math.nan, 0.0]


def outcome(call: Callable[[], Any]) -> Any:
    try:
        result = call()
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    if asyncio.iscoroutine(result):
        result.close()
    return "accepted"


async def outcome_async(call: Callable[[], Any]) -> Any:
    try:
        result = call()
        if asyncio.iscoroutine(result):
            await result
    except (TypeError, ValueError) as exc:
        return type(exc), str(exc)
    return "accepted"


@pytest.mark.parametrize(("what", "target", "name", "rule"), ARGUMENTS, ids=[f"{a[0]}-{a[2]}" for a in ARGUMENTS])
def test_every_duration_and_size_follows_the_tables_rule(run, what, target, name, rule):
    """Each bad value gets exactly what the shared check gives it (a zero grace or settle aside: "at once")."""

    async def scenario():
        for value in BAD_VALUES:
            zero = isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0
            if zero and name in ("grace", "settle"):
                continue  # 0: at once, documented
            expected = outcome(lambda: rule(value))
            got = await outcome_async(lambda: target(**{name: value}))
            if expected == "accepted" and got != "accepted":
                # The argument's own range may be narrower than the rule's (e.g. a finite close_timeout);
                # it must still be a ValueError naming the argument.
                assert got[0] is ValueError and name in got[1], (what, name, value, got)
            else:
                assert got == expected, (what, name, value)

    run(scenario())


def test_durations_given_as_strings_are_refused_everywhere(run):
    """The issue's example: "5" is a TypeError, wherever a duration is taken."""

    async def scenario():
        for what, target, name, rule in ARGUMENTS:
            got = await outcome_async(lambda: target(**{name: "5"}))
            assert got != "accepted" and got[0] is TypeError, (what, name, got)

    run(scenario())
