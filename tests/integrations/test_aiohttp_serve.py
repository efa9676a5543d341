"""conntable.aiohttp: a real aiohttp.web app on 127.0.0.1, real aiohttp and websockets clients, asyncio and uvloop.

Every test ends with exact accounting: the manager's table empty, each
connection's cleanup run once, no task left, descriptors back (the
``_no_leaks`` fixture and the scenario's own checks).
"""

from __future__ import annotations

import asyncio
import collections
import gc
from typing import Any, Dict

import aiohttp
from aio_support import WAIT_TIMEOUT, eventually
from aiohttp import web
from websockets.asyncio.client import connect

from conntable.aio import CloseReason, ConnectionManager
from conntable.aiohttp import serve

HOST = "127.0.0.1"


def _app(reasons: Dict[int, Any], cleanups: "collections.Counter[int]", mgr_box: Dict[str, Any]) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()  # heartbeat=None: the server's one heartbeat pings it
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(message.data)
        return ws

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/ws", ws_echo)
    return app


class Scenario:
    def __init__(self, **serve_kwargs: Any) -> None:
        self.serve_kwargs = serve_kwargs
        self.reasons: Dict[int, Any] = {}
        self.cleanups: "collections.Counter[int]" = collections.Counter()

    async def start(self) -> None:
        gc.collect()
        self.server = await serve(_app(self.reasons, self.cleanups, {}), HOST, 0, **self.serve_kwargs)
        self.mgr: ConnectionManager = self.server.manager
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"

    def track(self) -> None:
        """Put the cleanup probe on every connection held now."""
        for conn_id in self._ids():
            if conn_id not in self.reasons:
                self.reasons[conn_id] = None
                self.mgr.add_cleanup(conn_id, lambda reason, i=conn_id: self._cleaned(i, reason))

    def _ids(self):
        return [conn_id for conn_id in range(1, 200) if self.mgr.get(conn_id) is not None]

    def _cleaned(self, conn_id: int, reason: CloseReason) -> None:
        self.cleanups[conn_id] += 1
        self.reasons[conn_id] = reason

    async def finish(self, grace: float = 5.0) -> None:
        await self.server.close(grace=grace)
        assert len(self.mgr) == 0
        assert all(count == 1 for count in self.cleanups.values())
        assert self.mgr.stats().tasks_active == 0


def test_http_and_websocket_idle_and_shutdown(run):
    async def scenario():
        sc = Scenario(idle_timeout=0.5, close_timeout=1.0, ping_interval=None)
        await sc.start()
        async with aiohttp.ClientSession() as session:
            async with session.get(sc.url + "/") as response:
                assert response.status == 200 and await response.text() == "hello"
            ws = await session.ws_connect(sc.url + "/ws")
            sc.track()
            await ws.send_str("ping?")
            assert (await ws.receive_str()) == "ping?"
            message = await asyncio.wait_for(ws.receive(), WAIT_TIMEOUT)  # idle: the server closes
            assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001
            await ws.close()
        await eventually(lambda: len(sc.mgr) == 0, "every connection ended")
        assert CloseReason.IDLE in sc.reasons.values()
        await sc.finish()

    run(scenario())


def test_shutdown_closes_websockets_with_1001(run):
    async def scenario():
        sc = Scenario(idle_timeout=None, close_timeout=1.0, ping_interval=None)
        await sc.start()
        clients = [await connect(f"ws://{HOST}:{sc.port}/ws", ping_interval=None) for _ in range(3)]
        sc.track()
        for client in clients:
            await client.send("x")
            assert await client.recv() == "x"
        summary = await sc.server.close(grace=5.0)
        for client in clients:
            await asyncio.wait_for(client.wait_closed(), WAIT_TIMEOUT)
            assert client.close_code == 1001
        assert summary.closed_gracefully == 3 and summary.aborted == 0
        assert [sc.reasons[i] for i in sorted(sc.reasons)] == [CloseReason.SHUTDOWN] * 3
        await sc.finish()

    run(scenario())


def test_limit_answers_503_before_any_handler(run):
    async def scenario():
        sc = Scenario(idle_timeout=None, max_connections=2, close_timeout=1.0, ping_interval=None, retry_after=7)
        await sc.start()
        held = [await connect(f"ws://{HOST}:{sc.port}/ws", ping_interval=None) for _ in range(2)]
        async with aiohttp.ClientSession() as session:
            async with session.get(sc.url + "/") as response:
                assert response.status == 503 and response.headers["Retry-After"] == "7"
        assert sc.mgr.stats().rejected_total == 1
        for client in held:
            await client.close()
        await eventually(lambda: len(sc.mgr) == 0, "the held connections ended")
        await sc.finish()

    run(scenario())


def test_heartbeat_fails_a_silent_peer_with_1011(run):
    async def scenario():
        sc = Scenario(idle_timeout=None, close_timeout=0.5, ping_interval=0.2, ping_timeout=0.2)
        await sc.start()
        alive = await connect(f"ws://{HOST}:{sc.port}/ws", ping_interval=None)
        silent = await connect(f"ws://{HOST}:{sc.port}/ws", ping_interval=None)
        sc.track()
        silent.transport.pause_reading()  # its pongs stop
        await eventually(lambda: sc.server.heartbeat.failures == 1, "the silent peer failed")
        silent.transport.resume_reading()
        await asyncio.wait_for(silent.wait_closed(), WAIT_TIMEOUT)
        assert silent.close_code == 1011
        await eventually(lambda: CloseReason.PING_TIMEOUT in sc.reasons.values(), "the silent peer ended")
        await alive.send("still here")
        assert await alive.recv() == "still here"
        assert sc.server.heartbeat.pings_sent >= 2
        await sc.finish()
        await asyncio.wait_for(alive.wait_closed(), WAIT_TIMEOUT)
        assert alive.close_code == 1001

    run(scenario())
