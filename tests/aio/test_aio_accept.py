"""What the manager adds to each accepted connection: objects the garbage collector tracks, counted.

The count is of ``gc.get_objects()`` with the collector off, for the same
connections accepted by a bare server and by a managed one running the same
protocol, on real sockets: the difference per connection is what conntable
keeps (its adapter and its record, nothing else), and every one of those is an
object the collector walks for as long as the connection lives. Counts, not
durations.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any, List

from aio_support import HOST, eventually

import conntable
from conntable.aio import CloseReason, Connection, ConnectionManager, Endpoint
from conntable.aio._connection import UNREAD

CONNECTIONS = 200
#: The manager's own objects per connection: the adapter and the Connection record.
MANAGER_OBJECTS = 2


class Counted(asyncio.Protocol):
    made: List["Counted"] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        Counted.made.append(self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def tracked_per_table_entry() -> float:
    """GC-tracked objects the default table keeps per entry: none in the compiled
    core (its slab is C memory), one ``_Entry`` in the pure-Python twin."""
    table = conntable.ConnectionTable()
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for key in range(CONNECTIONS):
            table.add(key, None, idle_timeout=60.0)
        after = len(gc.get_objects())
    finally:
        gc.enable()
    return (after - before) / CONNECTIONS


async def tracked_per_connection(managed: bool) -> float:
    """GC-tracked objects per connection held by a server (bare or managed) and its CONNECTIONS clients."""
    loop = asyncio.get_running_loop()
    Counted.made = []
    manager = ConnectionManager(idle_timeout=60.0) if managed else None
    if manager is not None:
        server = await manager.create_server(Counted, HOST, 0, backlog=1024)
    else:
        server = await loop.create_server(Counted, HOST, 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    clients: List[socket.socket] = []
    try:
        # A first connection outside the count: it starts the manager's sweeper and clock.
        for count in (1, CONNECTIONS + 1):
            while len(clients) < count:
                sock = socket.socket()
                sock.setblocking(False)
                clients.append(sock)
                await loop.sock_connect(sock, (HOST, port))
            await eventually(lambda: len(Counted.made) >= count, f"{count} connections made")
            await asyncio.sleep(0.05)  # let the loop settle (accept callbacks, clock timers)
            if count == 1:
                gc.collect()
                gc.disable()
                before = len(gc.get_objects())
        after = len(gc.get_objects())
    finally:
        gc.enable()
        for sock in clients:
            sock.close()
        if manager is not None:
            await manager.shutdown(grace=1.0)
        else:
            server.close()
            for protocol in Counted.made:
                protocol.transport.close()
            await server.wait_closed()
        Counted.made = []
    return (after - before) / CONNECTIONS


def test_the_manager_adds_at_most_two_tracked_objects_per_connection(run):
    # What the table itself keeps per entry is the core's business (the
    # compiled table's count is checked on its own just below); the manager
    # adds its two objects on top of it, whichever table is in use.
    expected = MANAGER_OBJECTS + round(tracked_per_table_entry())

    async def scenario():
        bare = await tracked_per_connection(managed=False)
        managed = await tracked_per_connection(managed=True)
        added = managed - bare
        assert added <= expected + 0.1, (bare, managed, expected)  # + noise: a few objects for the whole run
        assert added >= expected - 0.1, (bare, managed, expected)  # and they are there: the count is real

    run(scenario())


def test_the_compiled_table_keeps_no_tracked_object_per_entry():
    if conntable.ConnectionTable is conntable.PyConnectionTable:
        # The twin keeps one _Entry per key: that is its design, counted above.
        assert round(tracked_per_table_entry(), 1) == 1.0  # + the table's own arrays growing
    else:
        assert round(tracked_per_table_entry(), 1) == 0.0


def test_the_record_reads_its_peer_when_first_asked_and_keeps_it(run):
    async def scenario():
        loop = asyncio.get_running_loop()
        Counted.made = []
        manager = ConnectionManager(idle_timeout=60.0)
        server = await manager.create_server(Counted, HOST, 0)
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, (HOST, server.sockets[0].getsockname()[1]))
        await eventually(lambda: len(manager) == 1, "the connection is held")
        (conn,) = manager._table.values()
        address = sock.getsockname()
        assert conn._peer is UNREAD  # nothing read at accept
        assert conn.peer == address
        assert f"peer={address!r}" in repr(conn)
        sock.close()
        await eventually(lambda: len(manager) == 0, "the connection ended")
        assert conn.peer == address  # kept once read
        assert conn.transport is None and conn.protocol is None  # closed: no way back to the adapter
        await manager.shutdown(grace=1.0)
        Counted.made = []

    run(scenario())


class Quiet(Endpoint):
    def request_close(self, reason: CloseReason) -> None:
        pass

    def abort(self) -> None:
        pass


def test_the_record_is_an_ordinary_object_to_its_users(run):
    """It is the manager's weak reference to the adapter, but compares, hashes and prints as any record."""

    async def scenario():
        manager = ConnectionManager(idle_timeout=60.0)
        endpoint, other = Quiet(), Quiet()
        conn = manager.register(endpoint, peer=("10.0.0.1", 5))
        second = manager.register(other, peer=None)
        assert conn != second and conn == conn and len({conn, second, conn}) == 2
        code = hash(conn)
        del endpoint  # collected without ended(): abandoned, and the record stays usable
        gc.collect()
        await eventually(lambda: conn.close_reason is CloseReason.ABANDONED, "the endpoint's end was noticed")
        assert hash(conn) == code and conn in {conn} and conn != second
        assert conn.peer == ("10.0.0.1", 5) and conn.protocol is None
        assert "state=closed" in repr(conn)
        try:
            Connection(object())
        except TypeError:
            pass
        else:
            raise AssertionError("a record made outside the manager")
        manager.ended(second, CloseReason.CLOSED)
        await manager.shutdown(grace=1.0)

    run(scenario())
