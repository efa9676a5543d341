"""Every way an aiohttp WebSocket ends under conntable.aiohttp, and the reason its cleanup receives and closed_total counts.

The server's own closes are ``closed`` (the handler returned, ``await ws.close()``),
the client's are ``peer``, a handler that raised is ``error`` (aiohttp drops the
connection: the client sees 1006), a reset is ``error``, and the manager's
reasons stay its own: ``idle`` (1001), ``ping_timeout`` (1011), ``shutdown`` (1001).
A real aiohttp server on 127.0.0.1, real ``websockets`` clients (and aiohttp's
own, for a client's close), asyncio and uvloop; each test ends with the table empty, every cleanup run once, no task
left (and the descriptors back: the ``_no_leaks`` fixture).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Dict, List

import aiohttp
from aio_support import HOST, WAIT_TIMEOUT, eventually
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from ws_support import closed, reset_client

from conntable.aio import CloseReason
from conntable.aiohttp import serve

CLOSE_TIMEOUT = 1.0


async def handler(request: web.Request) -> web.WebSocketResponse:
    """The client's first message says how this WebSocket ends."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    command = (await ws.receive()).data
    if command == "close":
        await ws.close()
    elif command == "close-4000":
        await ws.close(code=4000, message=b"app says bye")
    elif command == "raise":
        raise RuntimeError("the handler failed (expected by the test)")
    elif command == "echo":  # stays until the client closes, vanishes or the server closes it
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(message.data)
    return ws  # "return": aiohttp closes it with 1000


class Reasons:
    """A server of ``handler``, its clients, and each connection's cleanup probe (by connection id)."""

    def __init__(self, **serve_kwargs: Any) -> None:
        self.serve_kwargs = serve_kwargs
        self.reasons: Dict[int, CloseReason] = {}
        self.cleanups: "collections.Counter[int]" = collections.Counter()
        self.clients: List[ClientConnection] = []
        self.opened = 0

    async def start(self) -> "Reasons":
        app = web.Application()
        app.router.add_get("/ws", handler)
        self.server = await serve(app, HOST, 0, close_timeout=CLOSE_TIMEOUT, **self.serve_kwargs)
        self.mgr = self.server.manager
        self.uri = f"ws://{HOST}:{self.server.sockets[0].getsockname()[1]}/ws"
        return self

    async def connect(self) -> ClientConnection:
        """A silent ``websockets`` client (no keepalive of its own), its connection's probe on."""
        client = await asyncio.wait_for(connect(self.uri, ping_interval=None), WAIT_TIMEOUT)
        self.clients.append(client)
        self.probe()
        return client

    def probe(self) -> None:
        """Put the probe on the connection just opened (one client at a time)."""
        self.opened += 1
        conn_id = self.opened  # a fresh manager numbers its connections from 1, in accept order
        assert self.mgr.get(conn_id) is not None
        self.mgr.add_cleanup(conn_id, lambda reason: self._cleaned(conn_id, reason))

    def _cleaned(self, conn_id: int, reason: CloseReason) -> None:
        self.cleanups[conn_id] += 1
        self.reasons[conn_id] = reason

    def in_order(self) -> List[CloseReason]:
        return [self.reasons[conn_id] for conn_id in sorted(self.reasons)]

    def counted(self) -> Dict[str, int]:
        return {reason: count for reason, count in self.mgr.stats().closed_total.items() if count}

    async def finish(self) -> None:
        await self.server.close(grace=5.0)
        for client in self.clients:
            client.transport.abort()
            await asyncio.wait_for(client.wait_closed(), WAIT_TIMEOUT)
        stats = self.mgr.stats()
        assert len(self.mgr) == 0 and stats.active == 0 and stats.tasks_active == 0, stats
        assert len(self.cleanups) == stats.opened_total == self.opened, (self.cleanups, stats)
        assert set(self.cleanups.values()) == {1}, self.cleanups
        assert self.server.heartbeat is None or len(self.server.heartbeat) == 0


def test_the_handlers_and_the_clients_closes(run):
    async def scenario():
        sc = await Reasons(idle_timeout=None, ping_interval=None).start()
        for command, code in [("return", 1000), ("close", 1000), ("close-4000", 4000), ("raise", 1006)]:
            client = await sc.connect()
            await client.send(command)
            assert await closed(client) == code, command
        peer = await sc.connect()
        await peer.send("echo")
        await peer.close()  # the client starts the closing handshake
        assert peer.close_code == 1000
        reset = await sc.connect()
        await reset.send("echo")
        await reset.send("echo")
        assert await reset.recv() == "echo"  # the handler is in its loop
        reset_client(reset)  # gone without a closing handshake
        await eventually(lambda: len(sc.reasons) == 6, "the websockets clients' connections ended")
        async with aiohttp.ClientSession() as session:  # aiohttp's own client: it closes the same way
            theirs = await session.ws_connect(sc.uri, autoping=True)
            sc.probe()
            await theirs.send_str("echo")
            await theirs.send_str("echo")
            assert await theirs.receive_str(timeout=WAIT_TIMEOUT) == "echo"
            await theirs.close()
        await eventually(lambda: len(sc.reasons) == 7, "every connection ended")
        assert sc.in_order() == [
            CloseReason.CLOSED, CloseReason.CLOSED, CloseReason.CLOSED, CloseReason.ERROR,
            CloseReason.PEER, CloseReason.ERROR, CloseReason.PEER,
        ]
        assert sc.counted() == {"closed": 3, "error": 2, "peer": 2}
        await sc.finish()

    run(scenario())


def test_idle_closes_with_1001(run):
    async def scenario():
        sc = await Reasons(idle_timeout=0.5, ping_interval=None).start()
        idle = await sc.connect()
        await idle.send("echo")
        assert await closed(idle) == 1001 and idle.close_reason == "idle timeout"
        await eventually(lambda: len(sc.reasons) == 1, "the idle connection ended")
        assert sc.in_order() == [CloseReason.IDLE] and sc.counted() == {"idle": 1}
        await sc.finish()

    run(scenario())


def test_ping_timeout_1011_and_shutdown_1001(run):
    async def scenario():
        sc = await Reasons(idle_timeout=None, ping_interval=0.2, ping_timeout=0.2).start()
        stalled = await sc.connect()
        staying = await sc.connect()
        for client in (stalled, staying):
            await client.send("echo")
        stalled.transport.pause_reading()  # its pongs stop
        await eventually(lambda: sc.server.heartbeat.failures == 1, "the stalled client failed")
        stalled.transport.resume_reading()
        assert await closed(stalled) == 1011 and stalled.close_reason == "keepalive ping timeout"
        await eventually(lambda: len(sc.reasons) == 1, "the stalled client ended")
        await staying.send("still here")  # it answered every ping meanwhile (websockets does by itself)
        assert await staying.recv() == "still here"
        summary = await sc.server.close(grace=5.0)
        assert await closed(staying) == 1001
        assert summary.closed_gracefully == 1 and summary.aborted == 0
        assert sc.in_order() == [CloseReason.PING_TIMEOUT, CloseReason.SHUTDOWN]
        assert sc.counted() == {"ping_timeout": 1, "shutdown": 1}
        await sc.finish()

    run(scenario())
