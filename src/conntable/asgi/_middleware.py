"""``ConnectionMiddleware``: every WebSocket and HTTP request of an ASGI app in a connection table.

::

    app = ConnectionMiddleware(app, idle_timeout=60.0, max_websockets=10_000)

For any ASGI server (uvicorn, hypercorn, ...). WebSockets are held by one
:class:`~conntable.aio.ConnectionManager` (``middleware.manager``), HTTP
requests by another (``middleware.http_manager``, no idle timeout): their
ids, deadlines, limits, cleanups, tasks, shutdown and stats are the aio
layer's, so one timer wheel and one sweeper task serve every connection of
the process.

* Idle timeout on application activity: any message received or sent. The
  server's own WebSocket ping/pong is invisible at the ASGI level, so a
  client that only answers pings is idle. An idle WebSocket is closed with
  1001, the app's pending ``receive()`` returns ``websocket.disconnect``,
  and an app that does not return within ``close_timeout`` is cancelled.
* ``handshake_timeout``: a WebSocket the app has not accepted (or refused) by
  then is closed (before the accept: the server answers 403).
  ``max_lifetime``: any WebSocket is closed with 1001 this long after it
  arrived. ``http_timeout``: an HTTP request still running after this long
  is cancelled.
* ``max_websockets``: the WebSocket that would exceed it (or that arrives
  while the process is short of file descriptors, or during shutdown) is
  refused at the handshake with ``503 Service Unavailable`` and
  ``Retry-After`` through the ASGI WebSocket denial-response extension where
  the server offers it (uvicorn, hypercorn), else closed before the accept
  (``403`` from the server). The app never runs for it. HTTP requests are
  refused (503) only during shutdown or when descriptors run short.
* Cleanups and tasks per connection (``websocket_of(scope).add_cleanup``,
  ``.spawn``) run or are cancelled exactly once however it ends: client
  close or reset, app exception, a timeout, shutdown.
* Shutdown: on ``lifespan.shutdown`` (before the app's own shutdown handler
  runs), or :meth:`ConnectionMiddleware.shutdown`: every WebSocket is closed
  with 1001, HTTP requests may finish, both bounded by ``shutdown_grace``;
  what is left is cancelled, and a summary is logged and returned. uvicorn
  and hypercorn send ``lifespan.shutdown`` only after closing connections
  themselves (uvicorn with 1012, waiting without a bound by default; the
  close timeout above bounds each app then); to close with 1001 first, hand
  hypercorn :meth:`ConnectionMiddleware.shutdown_trigger`, or await
  :meth:`ConnectionMiddleware.shutdown` before the server stops.
* The live registry: ``middleware.websockets`` and ``middleware.requests``,
  read-only mappings from connection id to a record (``path``, ``client``,
  ``state``, ``opened_at``, ``last_activity``); :meth:`broadcast`;
  :meth:`stats` (the aio layer's ``ResourceStats``, so
  ``conntable.aio.PrometheusCollector(middleware)`` exports the same
  metrics).
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, Iterable, Iterator, List, Mapping, MutableMapping, Optional, Union

from conntable._common import check_size
from conntable.aio import CloseReason, ConnectionManager, ResourceStats, ShutdownSummary
from conntable.aio._arguments import grace_seconds, optional_seconds

from ._link import Link, register
from ._responses import respond as _respond
from ._websocket import WebSocket, WebSocketClosed

__all__ = ("ConnectionMiddleware", "HTTPRequest", "BroadcastResult", "ASGIShutdownSummary",
           "websocket_of", "WEBSOCKET_SCOPE_KEY")

logger = logging.getLogger("conntable.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where the middleware puts a WebSocket's registry record in the scope.
WEBSOCKET_SCOPE_KEY = "conntable.websocket"

_DENIAL_EXTENSION = "websocket.http.response"
_REFUSAL_BODY = b"Too many connections. Retry later.\n"


def websocket_of(scope: Scope) -> WebSocket:
    """The WebSocket's registry record; KeyError if no ConnectionMiddleware is in front of the app."""
    return scope[WEBSOCKET_SCOPE_KEY]  # type: ignore[no-any-return]


class HTTPRequest:
    """An in-flight HTTP request, as ``middleware.requests`` shows it."""

    __slots__ = ("path", "method", "client", "state", "link", "_task")

    def __init__(self, scope: Scope) -> None:
        self.path: str = scope.get("path", "")
        self.method: str = scope.get("method", "")
        client = scope.get("client")
        self.client = None if client is None else tuple(client)
        self.state = "running"
        self.link: Optional[Link] = None
        self._task = asyncio.current_task()

    @property
    def id(self) -> int:
        assert self.link is not None
        return self.link.id

    def close_requested(self, reason: CloseReason) -> None:
        # A lifetime (http_timeout) ends the request now; a shutdown lets it finish within the grace.
        if reason is not CloseReason.SHUTDOWN:
            self.abort()

    def abort(self) -> None:
        if self.state == "running" and self._task is not None and not self._task.done():
            self.state = "cancelled"
            self._task.cancel()

    def __repr__(self) -> str:
        return f"<HTTPRequest {self.method} {self.path!r} client={self.client!r} state={self.state}>"


class _Registry(Mapping[int, Any]):
    """A read-only view of the live records: connection id -> record."""

    __slots__ = ("_records",)

    def __init__(self, records: Dict[int, Any]) -> None:
        self._records = records

    def __getitem__(self, conn_id: int) -> Any:
        return self._records[conn_id]

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._records))

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"<registry of {len(self._records)} connections>"


@dataclass
class BroadcastResult:
    """What :meth:`ConnectionMiddleware.broadcast` did."""

    #: WebSockets the message was sent to.
    sent: int = 0
    #: WebSockets that failed or were too slow: they were closed and left out.
    dropped: List[int] = field(default_factory=list)


@dataclass
class ASGIShutdownSummary:
    """What :meth:`ConnectionMiddleware.shutdown` did: one aio summary per manager."""

    websockets: ShutdownSummary
    http: ShutdownSummary


class ConnectionMiddleware:
    """ASGI middleware that holds every WebSocket and HTTP request of ``app`` (see the module docstring).

    Arguments are the aio layer's, checked the same way: ``idle_timeout``,
    ``handshake_timeout``, ``max_lifetime``, ``close_timeout``,
    ``resolution`` (seconds or None); ``max_websockets`` (None: the file
    descriptor limit, as ``max_connections``); ``http_timeout`` (seconds or
    None); ``shutdown_grace`` (seconds); ``retry_after`` (whole seconds, in
    the 503); ``close_code`` (the code sent by :meth:`broadcast` to the
    WebSockets it drops, 1008 by default).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        idle_timeout: Optional[float] = 60.0,
        handshake_timeout: Optional[float] = 10.0,
        max_lifetime: Optional[float] = None,
        max_websockets: Optional[int] = None,
        http_timeout: Optional[float] = None,
        close_timeout: float = 5.0,
        shutdown_grace: float = 30.0,
        resolution: float = 0.5,
        retry_after: int = 5,
        drop_code: int = 1008,
    ) -> None:
        self.app = app
        self._shutdown_grace = grace_seconds("shutdown_grace", shutdown_grace)
        self._retry_after = str(check_size("retry_after", retry_after, minimum=0)).encode("ascii")
        self._drop_code = check_size("drop_code", drop_code, minimum=1000)
        #: The manager of the WebSockets.
        self.manager = ConnectionManager(
            idle_timeout, handshake_timeout=handshake_timeout, max_lifetime=max_lifetime,
            max_connections=max_websockets, close_timeout=close_timeout, resolution=resolution,
        )
        #: The manager of the in-flight HTTP requests: no idle timeout, ``http_timeout`` as their lifetime.
        self.http_manager = ConnectionManager(
            None, max_lifetime=optional_seconds("http_timeout", http_timeout),
            close_timeout=close_timeout, resolution=resolution,
        )
        self._websockets: Dict[int, WebSocket] = {}
        self._requests: Dict[int, HTTPRequest] = {}
        #: The live WebSockets: connection id -> :class:`~conntable.asgi.WebSocket`.
        self.websockets: Mapping[int, WebSocket] = _Registry(self._websockets)
        #: The in-flight HTTP requests: connection id -> :class:`HTTPRequest`.
        self.requests: Mapping[int, HTTPRequest] = _Registry(self._requests)
        self._shutdown: Optional["asyncio.Task[ASGIShutdownSummary]"] = None

    # -- ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        ws = WebSocket(scope, receive, send, self.manager.close_timeout)
        link = ws.link = register(self.manager, ws.client, ws.close_requested, ws.abort)
        if link.rejected:
            try:
                await self._deny(scope, receive, send)
            finally:
                ws.state = "closed"
                link.ended(CloseReason.REJECTED)
            return
        conn_id = link.id
        self._websockets[conn_id] = ws
        self.manager.add_cleanup(conn_id, lambda _reason: self._websockets.pop(conn_id, None))
        scope = dict(scope)
        scope[WEBSOCKET_SCOPE_KEY] = ws
        ending = CloseReason.CLOSED  # the app returned: a close this side made (unless one was decided)
        task = asyncio.current_task()
        try:
            await self.app(scope, ws.receive, ws.send)
        except asyncio.CancelledError:
            if task is None or not ws.aborted(task):
                ending = CloseReason.ERROR  # the server cancelled it
                raise
            # Ours (the close timeout passed): the app is over, the server's task goes on, and the
            # connection ends for the reason decided already (peer, idle, shutdown...), not as an error.
        except BaseException:
            ending = CloseReason.ERROR
            raise
        finally:
            try:
                await ws.finish()
            finally:
                ws.state = "closed"
                link.ended(ending)

    async def _deny(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a WebSocket at the handshake: 503 + Retry-After if the server can send it, else close."""
        try:
            message = await receive()
            if message.get("type") != "websocket.connect":
                return  # the client left already
            if _DENIAL_EXTENSION in (scope.get("extensions") or {}):
                await _respond(send, "websocket.http.response", 503, _REFUSAL_BODY, [(b"retry-after", self._retry_after)])
            else:
                await send({"type": "websocket.close", "code": 1013})
        except OSError:  # the client is gone: nothing to answer
            pass

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = HTTPRequest(scope)
        link = request.link = register(self.http_manager, request.client, request.close_requested, request.abort)
        if link.rejected:
            try:
                await _respond(send, "http.response", 503, _REFUSAL_BODY, [(b"retry-after", self._retry_after)])
            finally:
                link.ended(CloseReason.REJECTED)
            return
        conn_id = link.id
        self._requests[conn_id] = request
        self.http_manager.add_cleanup(conn_id, lambda _reason: self._requests.pop(conn_id, None))
        ending = CloseReason.CLOSED
        task = asyncio.current_task()
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            if request.state != "cancelled" or task is None or task.uncancel() != 0:
                ending = CloseReason.ERROR
                raise
        except BaseException:
            ending = CloseReason.ERROR
            raise
        finally:
            if request.state == "running":
                request.state = "done"
            link.ended(ending)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the lifespan through; on ``lifespan.shutdown``, shut the connections down first.

        An app that does not support the lifespan protocol (returns or raises
        before it answered anything, as many plain ASGI apps do) gets it
        answered here, so that the shutdown still happens.
        """
        pending: List[Message] = []  # what the app received and never answered
        answered = False

        async def lifespan_receive() -> Message:
            message = await receive()
            if message.get("type") == "lifespan.shutdown":
                await self.shutdown()
            pending[:] = [message]
            return message

        async def lifespan_send(message: Message) -> None:
            nonlocal answered
            answered = True
            pending.clear()
            await send(message)

        try:
            await self.app(scope, lifespan_receive, lifespan_send)
        except Exception:
            if answered:
                raise
        else:
            if answered:
                return
        # The app returned or raised without answering: it does not do lifespans.
        logger.debug("the app does not support the lifespan protocol: conntable answers it")
        await self._own_lifespan(pending, receive, send)

    async def _own_lifespan(self, pending: List[Message], receive: Receive, send: Send) -> None:
        while True:
            message = pending.pop() if pending else await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                await self.shutdown()  # (done already if the app received it)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- shutdown ------------------------------------------------------------------------------
    async def shutdown(self, grace: Optional[float] = None) -> ASGIShutdownSummary:
        """Close every WebSocket with 1001 and let HTTP requests finish, within ``grace``; then cancel.

        ``grace`` defaults to ``shutdown_grace``. New connections are refused
        from now on. Calling it again waits for the same shutdown. Logs and
        returns a summary.
        """
        seconds = self._shutdown_grace if grace is None else grace_seconds("grace", grace)
        if self._shutdown is None:
            self._shutdown = asyncio.ensure_future(self._shut_down(seconds))
        return await asyncio.shield(self._shutdown)

    async def _shut_down(self, grace: float) -> ASGIShutdownSummary:
        ws_summary, http_summary = await asyncio.gather(
            self.manager.shutdown(grace), self.http_manager.shutdown(grace))
        summary = ASGIShutdownSummary(ws_summary, http_summary)
        logger.info(
            "conntable.asgi shut down: %d WebSockets closed, %d cancelled after the grace; "
            "%d HTTP requests finished, %d cancelled; %d refused meanwhile",
            ws_summary.closed_gracefully, ws_summary.aborted, http_summary.closed_gracefully,
            http_summary.aborted, ws_summary.rejected + http_summary.rejected,
        )
        return summary

    def shutdown_trigger(self, trigger: Optional[Callable[[], Awaitable[Any]]] = None) -> Callable[[], Awaitable[None]]:
        """A ``shutdown_trigger`` for ``hypercorn.asyncio.serve`` that closes the connections first.

        ``trigger``: what starts the shutdown (an event's ``wait``, say); the
        returned coroutine function waits for it, then runs :meth:`shutdown`
        while hypercorn still serves, so WebSockets get 1001.
        """

        async def shutdown_first() -> None:
            if trigger is not None:
                await trigger()
            await self.shutdown()

        return shutdown_first

    # -- the registry's services ---------------------------------------------------------------
    async def broadcast(self, message: Union[str, bytes], *, timeout: float = 5.0,
                        to: Optional[Iterable[WebSocket]] = None) -> BroadcastResult:
        """Send ``message`` to every open WebSocket (or those of ``to``), all at once.

        Each send gets ``timeout`` seconds; a WebSocket whose send fails or
        takes longer is closed (``drop_code``) and reported in ``dropped``,
        and never holds up the others.
        """
        seconds = optional_seconds("timeout", timeout)
        if isinstance(message, str):
            frame: Message = {"type": "websocket.send", "text": message}
        elif isinstance(message, (bytes, bytearray, memoryview)):
            frame = {"type": "websocket.send", "bytes": bytes(message)}
        else:
            raise TypeError(f"broadcast() takes str or bytes, not {type(message).__name__}")
        targets = [ws for ws in (self._websockets.values() if to is None else to) if ws.state == "open"]
        result = BroadcastResult()
        if not targets:
            return result
        sends = {asyncio.ensure_future(ws.send(frame)): ws for ws in targets}
        try:
            done, pending = await asyncio.wait(sends, timeout=seconds)
        except BaseException:
            for task in sends:
                task.cancel()
            raise
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task, ws in sends.items():
            if task in done and not task.cancelled() and task.exception() is None:
                result.sent += 1
            else:
                if task in done and not isinstance(task.exception(), (WebSocketClosed, OSError)):
                    logger.warning("broadcast to WebSocket %d failed", ws.id, exc_info=task.exception())
                result.dropped.append(ws.id)
                ws.close(self._drop_code, "too slow" if task in pending else "")
        return result

    def stats(self) -> ResourceStats:
        """The WebSockets' :class:`~conntable.aio.ResourceStats` (the aio layer's, and its metrics)."""
        return self.manager.stats()

    def http_stats(self) -> ResourceStats:
        """The same for the HTTP requests (``active`` is the requests in flight)."""
        return self.http_manager.stats()

    def __repr__(self) -> str:
        return (f"<{type(self).__qualname__} websockets={len(self._websockets)} "
                f"requests={len(self._requests)} idle_timeout={self.manager.idle_timeout!r}>")
