"""Helpers for the ASGI tests: real uvicorn and hypercorn servers on 127.0.0.1, and the final accounting.

:class:`AsgiServer` runs an ASGI app on one of ``SERVERS``: uvicorn with each
of its WebSocket implementations (``ws="websockets"``, ``ws="wsproto"``, and
``ws="websockets-sansio"`` where the installed uvicorn has it) and
hypercorn, each with the lifespan protocol on, on the test's event loop.
:class:`AsgiScenario` puts a :class:`~conntable.asgi.ConnectionMiddleware`
in front of the app under test, counts each WebSocket's cleanups, and ends
with the exact accounting every test checks: registries empty, every
cleanup run once, closed counts adding up, no task left, descriptors back.
Time limits are hang guards, never assertions.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import os
import socket
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

from aio_support import HOST, WAIT_TIMEOUT, eventually, open_fds
from websockets.asyncio.client import ClientConnection, connect

from conntable.aio import CloseReason
from conntable.asgi import ConnectionMiddleware, websocket_of

def _uvicorn_implementations() -> Tuple[str, ...]:
    """uvicorn's WebSocket implementations: websockets and wsproto, and websockets-sansio where it has it (0.35+)."""
    from uvicorn.config import WS_PROTOCOLS

    return tuple(name for name in ("websockets", "wsproto", "websockets-sansio") if name in WS_PROTOCOLS)


#: The servers every ASGI test runs on.
SERVERS = tuple(f"uvicorn-{name}" for name in _uvicorn_implementations()) + ("hypercorn",)

ASGIApp = Callable[..., Awaitable[None]]


class AsgiServer:
    """One real ASGI server on 127.0.0.1 (an ephemeral port), started and stopped on the running loop."""

    def __init__(self, kind: str, app: ASGIApp, shutdown_first: Optional[ConnectionMiddleware] = None) -> None:
        self.kind = kind
        self.app = app
        #: For hypercorn: a middleware whose shutdown runs before hypercorn closes anything.
        self.shutdown_first = shutdown_first
        self.port = 0
        self._task: Optional["asyncio.Task[Any]"] = None
        self._server: Any = None
        self._stop: Optional[asyncio.Event] = None

    async def start(self) -> "AsgiServer":
        if self.kind.startswith("uvicorn"):
            import uvicorn

            config = uvicorn.Config(self.app, host=HOST, port=0, ws=self.kind.split("-", 1)[1],
                                    lifespan="on", log_config=None, timeout_graceful_shutdown=10)
            # log_config=None: uvicorn would otherwise run logging.config.dictConfig, which closes every
            # handler there is (pytest's own, and its descriptor, included).
            self._server = uvicorn.Server(config)
            self._server.install_signal_handlers = lambda: None  # (older uvicorn) the test owns the signals
            self._task = asyncio.ensure_future(self._serve_uvicorn())
            await eventually(lambda: self._server.started or self._task.done(), "uvicorn started")
            if self._task.done():
                self._task.result()
            self.port = self._server.servers[0].sockets[0].getsockname()[1]
        elif self.kind == "hypercorn":
            from hypercorn.asyncio import serve
            from hypercorn.config import Config

            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            self.port = sock.getsockname()[1]
            sock.close()  # hypercorn binds the port itself; nothing else on 127.0.0.1 takes it meanwhile
            config = Config()
            config.bind = [f"{HOST}:{self.port}"]
            config.graceful_timeout = 10
            config.loglevel = "WARNING"
            config.accesslog = None
            self._stop = asyncio.Event()
            trigger = self._stop.wait
            if self.shutdown_first is not None:
                trigger = self.shutdown_first.shutdown_trigger(trigger)  # type: ignore[assignment]
            self._task = asyncio.ensure_future(serve(self.app, config, shutdown_trigger=trigger))
            await self._wait_listening()
        else:
            raise ValueError(self.kind)
        return self

    async def _serve_uvicorn(self) -> None:
        # uvicorn's serve() captures SIGINT/SIGTERM while it runs, and restores them after.
        await self._server.serve()

    async def _wait_listening(self) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + WAIT_TIMEOUT
        while True:
            if self._task is not None and self._task.done():
                self._task.result()
            try:
                _reader, writer = await asyncio.open_connection(HOST, self.port)
            except OSError:
                if loop.time() > give_up:
                    raise AssertionError(f"{self.kind} never listened")
                await asyncio.sleep(0.02)
                continue
            writer.close()
            await writer.wait_closed()
            return

    @property
    def uri(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    async def stop(self) -> None:
        """Stop as on SIGTERM: the server closes, then sends ``lifespan.shutdown``."""
        if self._task is None:
            return
        if self._server is not None:
            self._server.should_exit = True
        if self._stop is not None:
            self._stop.set()
        await asyncio.wait_for(self._task, WAIT_TIMEOUT)
        self._task = None


class AsgiScenario:
    """A middleware under test on a real server, its probes and clients, and the final accounting."""

    def __init__(self, server_kind: str, **middleware_kwargs: Any) -> None:
        gc.collect()
        self.fds_at_start = open_fds()
        self.fd_names_at_start = fd_names()
        self.tasks_at_start = asyncio.all_tasks()
        self.server_kind = server_kind
        self.middleware_kwargs = middleware_kwargs
        self.mw: Optional[ConnectionMiddleware] = None
        #: conn id -> how many times its cleanup probe ran, and the reason it got.
        self.cleanups: Dict[int, int] = collections.Counter()
        self.reasons: Dict[int, CloseReason] = {}
        #: How many times the app under test was called for a WebSocket.
        self.app_calls = 0
        #: conn id -> what the app's receive() returned last.
        self.last_received: Dict[int, Dict[str, Any]] = {}
        self.clients: List[ClientConnection] = []
        self.server: Optional[AsgiServer] = None
        #: The app under test does lifespans (a Starlette or FastAPI app): pass them on.
        self.app_lifespan = False

    def _cleaned(self, conn_id: int, reason: CloseReason) -> None:
        self.cleanups[conn_id] += 1
        self.reasons[conn_id] = reason

    def probe(self, app: ASGIApp) -> ASGIApp:
        """Wrap ``app`` so that every WebSocket it serves gets the cleanup probe (and is counted)."""

        async def probed(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "websocket":
                self.app_calls += 1
                ws = websocket_of(scope)
                conn_id = ws.id
                ws.add_cleanup(lambda reason: self._cleaned(conn_id, reason))

                async def noted_receive() -> Any:
                    message = await receive()
                    self.last_received[conn_id] = message
                    return message

                await app(scope, noted_receive, send)
                return
            if scope["type"] == "http" or self.app_lifespan:
                await app(scope, receive, send)
            # Else a lifespan, and a plain app that does not do them: the middleware answers it.

        return probed

    async def start(self, app: ASGIApp, *, outer: Optional[Callable[[ASGIApp], ASGIApp]] = None,
                    shutdown_first: bool = False, app_lifespan: bool = False) -> AsgiServer:
        """Serve ``ConnectionMiddleware(probe(app))`` (inside ``outer``, if given) on the scenario's server."""
        self.app_lifespan = app_lifespan
        self.mw = ConnectionMiddleware(self.probe(app), **self.middleware_kwargs)
        served: ASGIApp = self.mw if outer is None else outer(self.mw)
        self.server = await AsgiServer(self.server_kind, served, self.mw if shutdown_first else None).start()
        return self.server

    async def connect(self, count: int = 1, path: str = "/ws", **kwargs: Any) -> List[ClientConnection]:
        assert self.server is not None
        kwargs.setdefault("ping_interval", None)
        clients = []
        for _ in range(count):
            client = await asyncio.wait_for(connect(self.server.uri + path, **kwargs), WAIT_TIMEOUT)
            self.clients.append(client)
            clients.append(client)
        return clients

    async def settled(self, count: int) -> None:
        """Wait until ``count`` WebSockets have ended (their cleanups ran)."""
        await eventually(lambda: sum(self.cleanups.values()) >= count, f"{count} WebSockets ended")

    async def finish(self) -> None:
        """Stop the server (``lifespan.shutdown``), close the clients, and check that nothing is left."""
        for client in self.clients:
            await client.close()
        if self.server is not None:
            await self.server.stop()
        mw = self.mw
        assert mw is not None
        await mw.shutdown(5.0)  # done by lifespan.shutdown already: the same shutdown
        for stats in (mw.stats(), mw.http_stats()):
            assert stats.active == 0 and stats.tasks_active == 0, stats
            assert sum(stats.closed_total.values()) == stats.opened_total + stats.rejected_total, stats
        assert len(mw.websockets) == 0 and len(mw.requests) == 0
        assert len(mw.manager) == 0 and len(mw.http_manager) == 0
        opened = mw.stats().opened_total
        assert self.app_calls == opened, (self.app_calls, opened)  # the app never ran for a refused one
        assert len(self.cleanups) == opened and set(self.cleanups.values()) <= {1}, self.cleanups
        await eventually(lambda: asyncio.all_tasks() == self.tasks_at_start, "every task finished")
        gc.collect()
        try:
            await eventually(lambda: open_fds() == self.fds_at_start, "file descriptors released")
        except AssertionError:
            now = fd_names()
            raise AssertionError(f"descriptors: {open_fds()} now, {self.fds_at_start} at start; new {sorted(set(now.items()) - set(self.fd_names_at_start.items()))}, gone {sorted(set(self.fd_names_at_start.items()) - set(now.items()))}")


def fd_names() -> Dict[str, str]:
    """What each open descriptor is (for the report of a leak)."""
    names = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            names[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor
            pass
    return names


def quiet_server_logs() -> None:
    """uvicorn and hypercorn report an app's exception at ERROR: expected in the tests that raise."""
    for name in ("uvicorn.error", "hypercorn.error"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
