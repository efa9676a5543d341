"""Bad input to ConnectionManager: a clear error, and the manager and its connections as they were.

The constructor is swept over every argument and kind of bad value. The
per-connection API is swept on a live manager serving real connections on
127.0.0.1: after each refused call the manager's state is unchanged, its
connections still echo, it still admits newcomers, and its shutdown ends
every connection with each cleanup run once. (The first run of this sweep
found 40 defects; all are fixed, and these cases now guard the fixes.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from typing import Any, Callable, Dict, List, Tuple

import pytest
from faults_support import HOST, run

from conntable.aio import ConnectionManager, ManagedProtocol

NAN, INF = math.nan, math.inf

# -- the constructor ------------------------------------------------------------------

# Each kind of bad value: a wrong type, out of range, NaN or an infinity where none makes sense.
WRONG_TYPES = {"str": "1", "bytes": b"1", "list": [1]}
BAD_SECONDS = {**WRONG_TYPES, "zero": 0, "negative": -1.0, "nan": NAN, "-inf": -INF}
BAD_COUNTS = {**WRONG_TYPES, "float": 1.5, "bool": True, "nan": NAN, "inf": INF, "negative": -1}
CONSTRUCTOR_CASES = {
    "idle_timeout": BAD_SECONDS,
    "handshake_timeout": BAD_SECONDS,
    "max_lifetime": BAD_SECONDS,
    "close_timeout": {**BAD_SECONDS, "inf": INF},
    "resolution": {**BAD_SECONDS, "inf": INF},
    "max_connections": {**BAD_COUNTS, "zero": 0},
    "expire_batch": {**BAD_COUNTS, "zero": 0},
    "fd_reserve": {**BAD_COUNTS, "no-room": 2**30},  # more than the descriptor limit
    "table_factory": {"int": 5, "str": "table"},
}


def constructor_cases() -> List[Any]:
    return [
        pytest.param(argument, value, id=f"{argument}-{kind}")
        for argument, bad in CONSTRUCTOR_CASES.items()
        for kind, value in bad.items()
    ]


@pytest.mark.parametrize(("argument", "value"), constructor_cases())
def test_constructor_refuses_bad_arguments_by_name(argument, value):
    """A clear error: TypeError or ValueError, with a message that names the argument."""
    with pytest.raises((TypeError, ValueError), match=argument):
        ConnectionManager(**{argument: value})


# -- the per-connection API on a live manager ---------------------------------------------


class Echo(ManagedProtocol):
    """Echoes; counts its connection's cleanups in ``ended`` (conn id -> runs)."""

    ended: Dict[int, int] = {}

    def connection_made(self, transport):
        self.transport = transport
        conn_id = self.connection.id
        self.add_cleanup(lambda reason: Echo.ended.__setitem__(conn_id, Echo.ended.get(conn_id, 0) + 1))

    def data_received(self, data):
        self.transport.write(data)


async def forever():
    await asyncio.sleep(3600)


def manager_state(mgr: ConnectionManager) -> Tuple[Any, ...]:
    stats = mgr.stats()
    connections = [mgr.get(conn_id) for conn_id in range(1, stats.opened_total + 1)]
    return (
        [(c.id, c.state, c.close_reason) for c in connections if c is not None],
        stats.active, stats.opened_total, dict(stats.closed_total), stats.rejected_total,
        stats.aborted_total, stats.tasks_active, stats.breaker_open, repr(mgr),
    )


async def echoes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> bool:
    writer.write(line)
    return await reader.readexactly(len(line)) == line


def _spawn_with_a_str_id(mgr: ConnectionManager) -> None:
    """An id of no connection (a str: the table keys by any hashable, as a dict) must close the coroutine."""
    coro = forever()
    try:
        mgr.spawn("1", coro)  # type: ignore[arg-type]
    except KeyError:
        left_open = coro.cr_frame is not None
        coro.close()
        assert not left_open, "spawn() refused the id but left the coroutine open (a 'never awaited' warning)"
        raise


def _get_absent(conn_id: Any) -> Callable[[ConnectionManager], Any]:
    def call(mgr: ConnectionManager) -> None:
        assert mgr.get(conn_id) is None  # as a dict's get answers for a key it does not hold
        raise KeyError(f"absent: {conn_id!r}")

    return call


BadCall = Callable[[ConnectionManager], Any]
API_CASES: List[Any] = [
    # Ids are looked up as a dict would (the table takes any hashable key): an id of the
    # wrong type is an id of no connection; an unhashable one is a TypeError.
    pytest.param(_get_absent("1"), KeyError, "absent", id="get-str"),
    pytest.param(_get_absent(NAN), KeyError, "absent", id="get-nan"),
    pytest.param(_get_absent(-1), KeyError, "absent", id="get-negative"),
    pytest.param(lambda m: m.get([1]), TypeError, "unhashable", id="get-unhashable"),
    pytest.param(lambda m: m.touch(None), KeyError, "None", id="touch-none"),
    pytest.param(lambda m: m.touch(2**64), KeyError, "18446744073709551616", id="touch-2**64"),
    pytest.param(lambda m: m.touch(99), KeyError, "99", id="touch-unknown"),
    pytest.param(lambda m: m.add_cleanup("1", print), KeyError, "gone", id="add_cleanup-str-id"),
    pytest.param(lambda m: m.add_cleanup(99, print), KeyError, "99", id="add_cleanup-unknown"),
    pytest.param(lambda m: m.add_cleanup(1, 5), TypeError, "callable", id="add_cleanup-not-callable"),
    pytest.param(lambda m: m.spawn(1, 42), TypeError, "coroutine", id="spawn-not-a-coroutine"),
    # The argument's type is checked before the id is looked up: the same error whatever the id.
    pytest.param(lambda m: m.spawn(99, 42), TypeError, "coroutine", id="spawn-unknown-not-a-coroutine"),
    pytest.param(_spawn_with_a_str_id, KeyError, "gone", id="spawn-str-id-closes-the-coroutine"),
    # Not parsed by float(), as the constructor's durations are not.
    pytest.param(lambda m: m.shutdown("soon"), TypeError, "grace", id="shutdown-str"),
    pytest.param(lambda m: m.shutdown(None), TypeError, "None", id="shutdown-none"),
    pytest.param(lambda m: m.shutdown(NAN), ValueError, "grace", id="shutdown-nan"),
    pytest.param(lambda m: m.shutdown(-1.0), ValueError, "grace", id="shutdown-negative"),
    pytest.param(lambda m: m.add_server(None), TypeError, "server", id="add_server-none"),
    pytest.param(lambda m: m.protocol_factory(5), TypeError, "callable", id="protocol_factory-not-callable"),
]


@pytest.mark.parametrize(("bad_call", "error", "pattern"), API_CASES)
def test_bad_calls_on_a_live_manager_change_nothing(bad_call, error, pattern, caplog):
    async def scenario():
        Echo.ended = {}
        mgr = ConnectionManager(idle_timeout=60.0, resolution=0.05)
        server = await mgr.create_server(Echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        clients = [await asyncio.open_connection(HOST, port) for _ in range(2)]
        assert [await echoes(r, w, b"before\n") for r, w in clients] == [True, True]
        before = manager_state(mgr)

        with pytest.raises(error, match=pattern):
            result = bad_call(mgr)
            if inspect.isawaitable(result):
                await result

        assert manager_state(mgr) == before
        assert [await echoes(r, w, b"after\n") for r, w in clients] == [True, True]
        clients.append(await asyncio.open_connection(HOST, port))
        assert await echoes(*clients[-1], b"newcomer\n")
        summary = await mgr.shutdown(grace=5.0)
        assert summary.closed_gracefully == 3 and len(mgr) == 0
        assert Echo.ended == {1: 1, 2: 1, 3: 1}
        for reader, writer in clients:
            assert await reader.read() == b""  # closed by the shutdown
            writer.close()

    with caplog.at_level(logging.ERROR, logger="conntable.aio"):
        run("asyncio", scenario())
    assert [r.getMessage() for r in caplog.records if r.name == "conntable.aio"] == []
