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

import pytest

from aio_support import HOST, eventually

from conntable.aio import ConnectionManager

CONNECTIONS = 200
#: conntable's objects per connection: the adapter and the Connection record.
MOST_ADDED = 2


class Counted(asyncio.Protocol):
    made: List["Counted"] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        Counted.made.append(self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


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


@pytest.mark.parametrize("attempt", [1])
def test_the_manager_adds_at_most_two_tracked_objects_per_connection(run, attempt):
    async def scenario():
        bare = await tracked_per_connection(managed=False)
        managed = await tracked_per_connection(managed=True)
        added = managed - bare
        assert added <= MOST_ADDED + 0.1, (bare, managed)  # + noise: a few objects for the whole run
        assert added >= MOST_ADDED - 0.1, (bare, managed)  # and the two are there: the count is real

    run(scenario())
