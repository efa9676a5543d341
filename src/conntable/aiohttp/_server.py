"""An ``aiohttp.web`` application served with its connections held by a ConnectionManager.

aiohttp's low-level ``web.Server`` (what ``AppRunner`` builds) is an asyncio
protocol factory: one ``RequestHandler`` per connection. :func:`serve` puts a
small :class:`_Front` (a ``ManagedProtocol``) before each one and gives the
factory to ``ConnectionManager.create_server``, so every connection is in the
manager's table from its accept:

* idle timeout and handshake timeout (no first byte) are the manager's; the
  refused connections of an open breaker get HTTP 503 with ``Retry-After``
  from :func:`conntable.aio.answer_unavailable`: aiohttp never sees them, so
  no handler runs;
* each ``WebSocketResponse`` is found when it is prepared (the app's
  ``on_response_prepare`` signal) and joins one :class:`conntable.aio.Heartbeat`
  for the whole server: a ping when quiet for ``ping_interval``, close code
  1011 when unanswered for ``ping_timeout``, abort ``close_timeout`` later.
  Leave aiohttp's own per-connection heartbeat off (``heartbeat=None``, its
  default);
* the manager closes a WebSocket (idle, lifetime, shutdown) with 1001
  (``ws.close()``, in a task of the connection), a plain HTTP connection
  with aiohttp's ``RequestHandler.close()`` (after the request in flight);
  :meth:`Server.close` is bounded by its grace, then aborts.

* why a WebSocket ended (the reason its cleanups get and ``closed_total``
  counts) is decided when its handler is done, by a middleware of ours put
  first in the app's: the handler raised, ``error``; the client's close frame
  came first, ``peer``; the handler closed it or returned (aiohttp then closes
  it with 1000), ``closed`` (``error`` for a close code other than 1000, 1001
  or 3000 and up); no closing handshake at all, the transport's reason (a
  reset, ``error``). Reasons decided before (idle, shutdown, ping timeout)
  win. "The client's close came first" is read from aiohttp's
  ``WebSocketResponse._closing`` (aiohttp has no public word for it), which a
  ``ws.close()`` from *another* task than the handler's also sets while the
  handler waits in ``receive()``: such a close counts as ``peer``.

Pings and the 1011 close are written straight to the transport as whole
frames (a server's frames are not masked, control frames not compressed):
aiohttp writes each of its frames in one ``transport.write``, with no await
between its parts, so a frame of ours never lands inside one of its.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import weakref
from typing import Any, Optional

from aiohttp import web

from conntable.aio import (
    CloseReason, ConnectionManager, Heartbeat, ManagedProtocol, ShutdownSummary, answer_unavailable,
    check_count, check_seconds, heartbeat_resolution, unavailable_response,
)

__all__ = ("serve", "Server")

logger = logging.getLogger("conntable.aiohttp")

#: An empty ping frame, as a server sends it (FIN, opcode 9, no mask, no payload).
PING_FRAME = b"\x89\x00"
DEFAULT_RESOLUTION = 0.5


def close_frame(code: int, reason: bytes = b"") -> bytes:
    """A server's close frame (FIN, opcode 8, no mask)."""
    payload = struct.pack("!H", code) + reason[:123]
    return bytes((0x88, len(payload))) + payload


PING_TIMEOUT_FRAME = close_frame(1011, b"keepalive ping timeout")
#: Close codes of a server's close that are no error (as ``conntable.websockets`` counts them; 3000 and up too).
NORMAL_CODES = (1000, 1001)
#: aiohttp's code when there was no closing handshake (the transport went first).
ABNORMAL_CLOSURE = 1006


def ending_reason(ws: web.WebSocketResponse) -> Optional[CloseReason]:
    """Why a WebSocket whose handler returned ends; None to leave it to the transport (no closing handshake)."""
    if not ws.closed:
        return CloseReason.CLOSED  # aiohttp closes it now, with 1000
    code = ws.close_code
    if code is None or code == ABNORMAL_CLOSURE:
        return None
    if getattr(ws, "_closing", False):  # the client's close frame was received before ours went out
        return CloseReason.PEER
    return CloseReason.CLOSED if code in NORMAL_CODES or code >= 3000 else CloseReason.ERROR
CLOSE_MESSAGES = {CloseReason.IDLE: b"idle timeout", CloseReason.LIFETIME: b"connection lifetime reached"}


class _Front(ManagedProtocol):
    """The manager's protocol for one aiohttp connection: passes everything to aiohttp's RequestHandler."""

    def __init__(self, server: "Server") -> None:
        self._server = server
        self.handler = server.web_server()
        self.ws: Optional[web.WebSocketResponse] = None
        self._transport: Optional[asyncio.Transport] = None

    # -- the transport's calls, passed on --------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._server._fronts[transport] = self
        self.data_received = self.handler.data_received  # type: ignore[method-assign]  # no hop per packet
        self.handler.connection_made(transport)

    def data_received(self, data: bytes) -> None:  # replaced in connection_made
        self.handler.data_received(data)

    def eof_received(self) -> Optional[bool]:
        return self.handler.eof_received()  # type: ignore[func-returns-value]

    def pause_writing(self) -> None:
        self.handler.pause_writing()

    def resume_writing(self) -> None:
        self.handler.resume_writing()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        heartbeat = self._server.heartbeat
        if heartbeat is not None:
            heartbeat.forget(self.connection.id)
        self.handler.connection_lost(exc)
        self.handler = None  # type: ignore[assignment]

    # -- the manager's hooks ------------------------------------------------------------
    def connection_rejected(self, transport: asyncio.BaseTransport) -> None:
        answer_unavailable(transport, self._server.unavailable)

    def close_requested(self, transport: asyncio.BaseTransport, reason: CloseReason) -> None:
        ws = self.ws
        if ws is not None and not ws.closed:
            message = CLOSE_MESSAGES.get(reason, b"")
            self.spawn(ws.close(code=1001, message=message), name=f"conntable-aiohttp-close-{self.connection.id}")
        else:
            self.handler.close()  # after the request in flight, if any

    # -- the heartbeat's hooks --------------------------------------------------------------
    def heartbeat_ping(self) -> None:
        self._transport.write(PING_FRAME)  # type: ignore[union-attr]

    def heartbeat_failed(self) -> None:
        self._transport.write(PING_TIMEOUT_FRAME)  # type: ignore[union-attr]

    def heartbeat_open(self) -> bool:
        ws = self.ws
        return ws is not None and not ws.closed and not self._transport.is_closing()  # type: ignore[union-attr]

    # -- found by the app's on_response_prepare, and by our middleware ---------------------------
    def websocket_prepared(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        heartbeat = self._server.heartbeat
        if heartbeat is not None:
            heartbeat.watch(self.connection.id, self)

    def websocket_done(self, reason: Optional[CloseReason]) -> None:
        """The WebSocket's handler is done: the connection ends for ``reason`` (unless one was decided)."""
        if reason is not None:
            self.manager.closing(self.connection, reason)


class Server:
    """What :func:`serve` returns: the manager, the heartbeat, and a bounded :meth:`close`."""

    def __init__(self, runner: web.AppRunner, manager: ConnectionManager, owns_manager: bool,
                 heartbeat: Optional[Heartbeat], retry_after: int) -> None:
        self.runner = runner
        self.manager = manager
        self.heartbeat = heartbeat
        self.unavailable = unavailable_response(retry_after)
        self.web_server: Any = runner.server
        self.server: Optional[asyncio.AbstractServer] = None
        self.shutdown_summary: Optional[ShutdownSummary] = None
        self._owns_manager = owns_manager
        self._fronts: "weakref.WeakKeyDictionary[Any, _Front]" = weakref.WeakKeyDictionary()
        self._closed = False

    @property
    def sockets(self) -> Any:
        return self.server.sockets if self.server is not None else ()

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            front = self._fronts.get(request.transport)
            if front is not None:
                front.websocket_prepared(response)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> Any:
        try:
            response = await handler(request)
        except Exception:
            front = self._fronts.get(request.transport)
            if front is not None and front.ws is not None:  # a WebSocket's handler failed: aiohttp drops it
                front.websocket_done(CloseReason.ERROR)
            raise
        if isinstance(response, web.WebSocketResponse):
            front = self._fronts.get(request.transport)
            if front is not None and front.ws is response:
                front.websocket_done(ending_reason(response))
        return response

    async def close(self, grace: Optional[float] = None) -> ShutdownSummary:
        """Stop accepting; close every WebSocket with 1001 and every connection within ``grace``; clean up the app.

        ``grace`` defaults to the manager's ``close_timeout``. Connections
        still there after it are aborted. Then the app's ``on_shutdown`` and
        ``on_cleanup`` run (``AppRunner.cleanup``). Idempotent.
        """
        if not self._closed:
            self._closed = True
            seconds = self.manager.close_timeout if grace is None else grace
            if self._owns_manager:
                self.shutdown_summary = await self.manager.shutdown(grace=seconds)
            else:
                assert self.server is not None
                self.server.close()
                for front in list(self._fronts.values()):
                    self.manager.closing(front.connection, CloseReason.SHUTDOWN, timeout=seconds)
                    front.close_requested(front._transport, CloseReason.SHUTDOWN)  # type: ignore[arg-type]
            await self.runner.cleanup()
            if self.heartbeat is not None:
                await self.heartbeat.stop()
        return self.shutdown_summary or ShutdownSummary()

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()


async def serve(
    app: web.Application,
    host: Any = None,
    port: Any = None,
    *,
    manager: Optional[ConnectionManager] = None,
    idle_timeout: Optional[float] = 60.0,
    handshake_timeout: Optional[float] = 10.0,
    max_connections: Optional[int] = None,
    close_timeout: float = 10.0,
    retry_after: int = 5,
    ping_interval: Optional[float] = 20.0,
    ping_timeout: Optional[float] = 20.0,
    **kwargs: Any,
) -> Server:
    """Serve ``app`` on ``host:port`` (or ``sock=``...: ``loop.create_server``'s arguments) under a manager.

    ``manager``: share a :class:`~conntable.aio.ConnectionManager` (then set
    ``idle_timeout``, ``handshake_timeout``, ``max_connections`` and
    ``close_timeout`` on it); by default one is made from those arguments and
    shut down by :meth:`Server.close`. ``ping_interval``/``ping_timeout``: the
    heartbeat of every WebSocketResponse (None turns either off).
    ``retry_after``: the ``Retry-After`` of the 503 a refused connection gets.
    Arguments are checked as the manager checks its own.
    """
    check_count("retry_after", retry_after)
    interval = check_seconds("ping_interval", ping_interval)
    timeout = check_seconds("ping_timeout", ping_timeout)
    owns_manager = manager is None
    if manager is None:
        manager = ConnectionManager(idle_timeout, handshake_timeout=handshake_timeout,
                                    max_connections=max_connections, close_timeout=close_timeout,
                                    resolution=heartbeat_resolution(interval, timeout, DEFAULT_RESOLUTION))
    heartbeat = None if interval is None else Heartbeat(manager, interval, timeout, logger=logger)
    runner = web.AppRunner(app, handle_signals=False, access_log=kwargs.pop("access_log", None))
    server = Server(runner, manager, owns_manager, heartbeat, retry_after)
    app.on_response_prepare.append(server._on_prepare)
    app.middlewares.insert(0, server._middleware)  # outermost: it sees what the others raise too
    await runner.setup()
    server.web_server = runner.server
    try:
        server.server = await manager.create_server(lambda: _Front(server), host, port, **kwargs)
    except BaseException:
        await runner.cleanup()
        raise
    return server
