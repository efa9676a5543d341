"""Helpers for the asyncio layer's tests (fixtures live in ``conftest.py``).

:class:`Scenario` bundles what nearly every test needs: a manager, a probe
that counts the cleanups of each connection, client sockets, and the final
check that everything is gone (table empty, each cleanup run once, no task
left, file descriptors back where they started). Time limits here are hang
guards, never assertions: the machine is shared and its timing is noisy.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import os
import socket
import ssl
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

from conntable.aio import CloseReason, ConnectionManager, ManagedProtocol, ShutdownSummary

HOST = "127.0.0.1"
#: Hang guard for a whole test coroutine.
TEST_TIMEOUT = 60.0
#: Hang guard for one awaited condition.
WAIT_TIMEOUT = 20.0


class FrameworkExit(BaseException):
    """A framework's own BaseException subclass (as trio's Cancelled or gevent's GreenletExit are)."""


#: What user callbacks are attacked with: BaseExceptions that ``except Exception`` does not catch.
BASE_EXCEPTIONS = {
    "GeneratorExit": GeneratorExit,
    "CancelledError": asyncio.CancelledError,
    "FrameworkExit": FrameworkExit,
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": SystemExit,
}
#: Those that still stop the program, once the record has ended.
EXITS = (KeyboardInterrupt, SystemExit)


@functools.lru_cache(maxsize=None)
def tls_contexts() -> Tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts with real certificates for 127.0.0.1, from a test CA (trustme)."""
    import trustme

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd")) - 1  # minus the listing's own descriptor


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = WAIT_TIMEOUT) -> None:
    """Wait until ``predicate()`` holds; fail (not hang) if it never does."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while not predicate():
        if loop.time() > give_up:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def read_until_eof(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    loop = asyncio.get_running_loop()
    chunks = []
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), WAIT_TIMEOUT)
        except ConnectionResetError:
            break
        if not chunk or sum(map(len, chunks)) > limit:
            break
        chunks.append(chunk)
    return b"".join(chunks)


class Scenario:
    """A manager under test, its probes, its clients, and the final accounting."""

    def __init__(self, **manager_kwargs: Any) -> None:
        # Garbage left by earlier tests (a failed test's traceback and its frames, say) may hold
        # descriptors: counted here and closed by a collection during the test (an explicit one,
        # or the collector's own), they would leave the count below this for good.
        gc.collect()
        self.fds_at_start = open_fds()
        self.tasks_at_start = asyncio.all_tasks()
        self.mgr = ConnectionManager(**manager_kwargs)
        #: conn id -> how many times its cleanup probe ran.
        self.cleanups: Dict[int, int] = collections.Counter()
        #: conn id -> the reason its cleanup probe received.
        self.reasons: Dict[int, CloseReason] = {}
        #: conn id -> the order in which connections were made (accepted or refused).
        self.made: List[int] = []
        self.spawned: List[asyncio.Task[Any]] = []
        self.clients: List[socket.socket] = []
        self.server: Optional[asyncio.AbstractServer] = None

    # -- probes ----------------------------------------------------------------
    def track(self, conn_id: int) -> None:
        """Count the cleanups of ``conn_id`` (call once per connection)."""
        self.made.append(conn_id)
        self.mgr.add_cleanup(conn_id, functools.partial(self._cleaned, conn_id))

    def _cleaned(self, conn_id: int, reason: CloseReason) -> None:
        self.cleanups[conn_id] += 1
        self.reasons[conn_id] = reason

    def ended(self, reason: Optional[CloseReason] = None) -> int:
        """How many tracked connections ended (with ``reason``, if given)."""
        return sum(1 for r in self.reasons.values() if reason is None or r is reason)

    def spawn(self, conn_id: int, coro: Any) -> None:
        self.spawned.append(self.mgr.spawn(conn_id, coro))

    # -- server and clients ------------------------------------------------------
    async def serve(self, factory: Optional[Callable[[], asyncio.BaseProtocol]] = None, **kwargs: Any) -> int:
        """Start a managed server on 127.0.0.1; return its port."""
        self.server = await self.mgr.create_server(
            factory or (lambda: Tracked(self)), HOST, 0, backlog=4096, **kwargs
        )
        return self.server.sockets[0].getsockname()[1]  # type: ignore[no-any-return]

    async def connect(self, port: int, count: int, payload: bytes = b"", rcvbuf: int = 0) -> List[socket.socket]:
        """Open ``count`` client sockets (sending ``payload`` on each, if any)."""
        loop = asyncio.get_running_loop()
        socks = []
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.clients.append(sock)
            await loop.sock_connect(sock, (HOST, port))
            if payload:
                await loop.sock_sendall(sock, payload)
            socks.append(sock)
            if i % 200 == 199:
                await asyncio.sleep(0)  # let the server accept as we go
        return socks

    async def connected(self, total: int) -> None:
        """Wait until the server has made (accepted or refused) ``total`` connections."""
        await eventually(lambda: len(self.made) >= total, f"{total} connections made")

    # -- the end -------------------------------------------------------------------
    async def finish(self, grace: float = 5.0) -> ShutdownSummary:
        """Shut down, close the clients, and check that nothing is left behind."""
        mgr = self.mgr
        summary = await mgr.shutdown(grace)
        for sock in self.clients:
            sock.close()
        self.clients.clear()
        stats = mgr.stats()
        assert len(mgr) == 0 and stats.active == 0
        every = stats.opened_total + stats.rejected_total
        assert len(self.made) == every, (len(self.made), every)
        assert sorted(self.cleanups) == sorted(self.made)
        assert set(self.cleanups.values()) <= {1}, "a cleanup ran more than once"
        assert sum(stats.closed_total.values()) == every
        assert stats.tasks_active == 0 and all(task.done() for task in self.spawned)
        assert asyncio.all_tasks() == self.tasks_at_start, "a task outlived the manager"
        await eventually(lambda: open_fds() == self.fds_at_start, "file descriptors released")
        assert open_fds() == self.fds_at_start
        return summary


class Tracked(ManagedProtocol):
    """Echoes, and registers the scenario's cleanup probe for every connection, refused ones too."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.scenario.track(self.connection.id)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connection_rejected(self, transport: asyncio.BaseTransport) -> None:
        self.scenario.track(self.connection.id)
        super().connection_rejected(transport)


class FakeTransport(asyncio.Transport):
    """A transport that owns no socket and never reports connection_lost."""

    def __init__(self) -> None:
        super().__init__()
        self.closes = self.aborts = 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (HOST, 1) if name == "peername" else default

    def close(self) -> None:
        self.closes += 1

    def abort(self) -> None:
        self.aborts += 1

    def is_closing(self) -> bool:
        return self.closes > 0 or self.aborts > 0
