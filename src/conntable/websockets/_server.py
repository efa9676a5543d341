"""``serve()``: websockets' ``serve`` with every connection held by a ConnectionManager.

The seam. ``websockets.asyncio.server.serve`` builds one asyncio protocol per
TCP connection by calling its ``create_connection`` argument (documented as
the escape hatch for customising connections) and hands whatever that returns
to ``loop.create_server``. Our ``create_connection`` builds a
:class:`ServerConnection` and returns it wrapped in the manager's adapter
(``manager.protocol_factory``). So the transport talks to the adapter, which
registers the connection, records activity on every ``data_received`` (every
frame, pongs included, costs one table touch and no allocation) and forwards
everything to websockets' connection unchanged; websockets itself only ever
sees its own connection object (its handler task and ``Server`` get it
through ``connection_made``). Nothing of websockets is patched.

Two consequences of the wrapping are handled here: websockets' keepalive is
turned off (``ping_interval=None`` underneath; the heartbeat replaces it), and
a ``select_subprotocol`` callback is bound on the Sans-I/O protocol directly,
because websockets' own binding would receive the adapter.

TLS: ``ssl`` is not passed on to websockets (whose loop would run the
handshake before anyone counts the connection) but to the manager's adapter
(``protocol_factory(..., ssl=...)``): the connection is in the manager's table
from its TCP accept, the breaker counts it, and its TLS handshake is bounded
by ``ssl_handshake_timeout`` (default: ``open_timeout``, as websockets does).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Awaitable, Callable, Dict, Generator, Optional, Set, cast

import websockets.asyncio.server as ws_server

from conntable.aio import (
    CloseReason, ConnectionManager, Heartbeat, ResourceStats, ShutdownSummary, check_count, check_seconds,
    heartbeat_resolution,
)

from ._connection import ServerConnection, ServerPolicy

__all__ = ("serve", "unix_serve", "Server")

_LOGGER = logging.getLogger("conntable.websockets")

Handler = Callable[[ServerConnection], Awaitable[None]]


class _Unset:
    def __repr__(self) -> str:
        return "<the manager's>"


#: Default of ``idle_timeout`` and ``close_timeout``: the manager's, when you pass one.
MANAGER_DEFAULT: Any = _Unset()
DEFAULT_IDLE_TIMEOUT = 60.0
#: Default of ``close_timeout`` on a manager ``serve`` makes: websockets' default.
DEFAULT_CLOSE_TIMEOUT = 10.0
#: The resolution of a manager ``serve`` makes, unless the heartbeat needs a finer one.
DEFAULT_RESOLUTION = 0.5
#: websockets' default ``open_timeout``, which also bounds the TLS handshake there.
DEFAULT_OPEN_TIMEOUT = 10.0


def serve(
    handler: Handler,
    host: Any = None,
    port: Any = None,
    *,
    manager: Optional[ConnectionManager] = None,
    idle_timeout: Optional[float] = MANAGER_DEFAULT,
    ping_interval: Optional[float] = 20.0,
    ping_timeout: Optional[float] = 20.0,
    max_connections: Optional[int] = None,
    close_timeout: float = MANAGER_DEFAULT,
    retry_after: int = 5,
    create_connection: Optional[type] = None,
    select_subprotocol: Optional[Callable[..., Any]] = None,
    **kwargs: Any,
) -> "Server":
    """A WebSocket server like ``websockets.asyncio.server.serve``, its connections held by a manager.

    Use it as websockets' (``async with serve(handler, host, port) as server:``
    or ``server = await serve(...)``); every other keyword argument is
    websockets' and means what it means there (``process_request``,
    ``compression``, ``max_size``, ``open_timeout``, ``ssl``, ...).

    ``manager``: the :class:`~conntable.aio.ConnectionManager` to use (it may
    serve other servers too). By default ``serve`` makes one, configured by
    ``idle_timeout`` (default 60 s; None: never), ``max_connections`` (default:
    from the file-descriptor limit) and ``close_timeout`` (default 10 s), and
    shuts it down when the server closes. With your own manager, set those on
    it (and its ``resolution``, the precision of every timeout).

    ``idle_timeout``: close (code 1001) a connection whose peer sent nothing,
    not even a pong, for this long. With the heartbeat on, a peer that answers
    pings is never idle: dead peers are found by the heartbeat, and this
    timeout matters for ``ping_interval=None`` or when shorter than
    ``ping_interval``.

    ``ping_interval``, ``ping_timeout``: one heartbeat for all connections
    instead of websockets' task per connection: a connection quiet for
    ``ping_interval`` gets a ping; if the peer sends nothing within
    ``ping_timeout``, it is closed with code 1011. None turns either off.

    ``max_connections``: the circuit breaker's limit; while it is open, new
    connections get ``HTTP 503`` with ``Retry-After: <retry_after>``.

    ``close_timeout``: how long a closing handshake may take before the
    connection is aborted; also passed to websockets as its ``close_timeout``.

    ``create_connection``: as websockets' (a subclass of websockets'
    ``ServerConnection``, or a function called as websockets calls it that
    returns one); conntable's :class:`ServerConnection` is mixed into the
    class it builds, so the handler gets both.

    ``ping_interval`` below twice the manager's ``resolution`` (0.5 s by
    default): a manager ``serve`` makes gets a finer resolution
    (``ping_interval / 2``); with your own manager, that is a ValueError.

    ``ssl``: a server ``ssl.SSLContext``. The manager runs the TLS handshake
    (see :meth:`~conntable.aio.ConnectionManager.protocol_factory`), so a
    connection is counted by the breaker from its TCP accept and a client
    that never finishes the handshake is closed after
    ``ssl_handshake_timeout`` (default ``open_timeout``, 10 s; the manager's
    ``handshake_timeout`` if shorter). ``ssl_shutdown_timeout`` defaults to
    ``close_timeout``.

    Durations and counts are checked as the table checks its own: a wrong
    type raises TypeError, a value out of range ValueError.
    """
    check_count("retry_after", retry_after, minimum=0)
    interval = check_seconds("ping_interval", ping_interval)
    timeout = check_seconds("ping_timeout", ping_timeout)
    owns_manager = manager is None
    if manager is None:
        manager = ConnectionManager(
            DEFAULT_IDLE_TIMEOUT if idle_timeout is MANAGER_DEFAULT else idle_timeout,
            max_connections=max_connections,
            close_timeout=DEFAULT_CLOSE_TIMEOUT if close_timeout is MANAGER_DEFAULT else close_timeout,
            resolution=heartbeat_resolution(interval, timeout, DEFAULT_RESOLUTION),
        )
    elif idle_timeout is not MANAGER_DEFAULT or close_timeout is not MANAGER_DEFAULT or max_connections is not None:
        raise TypeError("idle_timeout, close_timeout and max_connections belong to the manager you passed: "
                        "set them there")
    close_timeout = manager.close_timeout
    if create_connection is None:
        build: Callable[..., Any] = ServerConnection
    elif isinstance(create_connection, type):
        build = managed_class(create_connection)  # TypeError unless a websockets ServerConnection
    elif callable(create_connection):
        build = functools.partial(_build_with, create_connection)
    else:
        raise TypeError(f"create_connection must be a ServerConnection class or a function, got {create_connection!r}")
    tls = _tls_options(kwargs, close_timeout)
    manager.protocol_factory(ServerConnection, **tls)  # checks the TLS arguments now, not at the first accept
    heartbeat = None if interval is None else Heartbeat(manager, interval, timeout, close_timeout, logger=_LOGGER)
    policy = ServerPolicy(heartbeat, retry_after)
    factory = functools.partial(_managed_connection, manager, build, policy, select_subprotocol, tls)
    websockets_server = ws_server.serve(
        handler, host, port,  # type: ignore[arg-type]  # it receives our subclass of its connection
        ping_interval=None,  # the heartbeat replaces websockets' keepalive task
        close_timeout=close_timeout,
        create_connection=factory,  # type: ignore[arg-type]
        **kwargs,
    )
    return Server(websockets_server, manager, owns_manager, policy, close_timeout)


def _tls_options(kwargs: Dict[str, Any], close_timeout: float) -> Dict[str, Any]:
    """Take ``ssl`` and its timeouts out of websockets' arguments, for the manager's adapter."""
    context = kwargs.pop("ssl", None)
    handshake = kwargs.pop("ssl_handshake_timeout", kwargs.get("open_timeout", DEFAULT_OPEN_TIMEOUT))
    shutdown = kwargs.pop("ssl_shutdown_timeout", close_timeout)
    if context is None:
        return {}
    return {"ssl": context, "ssl_handshake_timeout": handshake, "ssl_shutdown_timeout": shutdown}


@functools.lru_cache(maxsize=None)
def managed_class(cls: type) -> type:
    """``cls`` (a subclass of websockets' ``ServerConnection``) with conntable's :class:`ServerConnection` mixed in.

    ``cls`` comes first in the new class's MRO, so its overrides win and
    reach conntable's through ``super()``. TypeError for any other class.
    """
    if issubclass(cls, ServerConnection):
        return cls
    if cls is ws_server.ServerConnection:  # ours is its subclass already
        return ServerConnection
    if not issubclass(cls, ws_server.ServerConnection):
        raise TypeError(f"create_connection must build a websockets.asyncio.server.ServerConnection, got {cls!r}")
    return type(cls.__name__, (cls, ServerConnection), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})


def _build_with(factory: Callable[..., Any], *args: Any, **kwargs: Any) -> ServerConnection:
    """A ``create_connection`` function's connection, made conntable's by mixing its class."""
    connection = factory(*args, **kwargs)
    connection.__class__ = managed_class(type(connection))  # TypeError unless a websockets ServerConnection
    return connection  # type: ignore[no-any-return]


def _managed_connection(
    manager: ConnectionManager,
    build: Callable[..., Any],
    policy: ServerPolicy,
    select_subprotocol: Optional[Callable[..., Any]],
    tls: Dict[str, Any],
    protocol: Any,
    server: Any,
    **kwargs: Any,
) -> asyncio.BaseProtocol:
    """websockets' ``create_connection``: our connection, behind the manager's adapter."""
    connection = build(protocol, server, **kwargs)
    connection._policy = policy
    if select_subprotocol is not None:
        # Shadows the Sans-I/O method, as websockets' own binding does, but with our connection.
        protocol.select_subprotocol = functools.partial(select_subprotocol, connection)
    return manager.protocol_factory(lambda: connection, **tls)()


def unix_serve(handler: Handler, path: Optional[str] = None, **kwargs: Any) -> "Server":
    """:func:`serve` on a Unix socket, as ``websockets.asyncio.server.unix_serve``."""
    return serve(handler, unix=True, path=path, **kwargs)


class Server:
    """The server :func:`serve` returns: websockets' ``Server`` API, plus the manager.

    ``sockets``, ``connections``, ``is_serving()``, ``start_serving()``,
    ``serve_forever()``, ``close()``, ``wait_closed()`` and ``async with``
    behave as in websockets; other attributes are websockets' server's.
    ``close()`` closes open connections with code 1001 (``code``/``reason``
    change that), aborts those still there after ``close_timeout``, waits for
    the handlers (cancelling any still running ``close_timeout`` after their
    connection ended) and, if ``serve`` made the manager, shuts it down.
    """

    def __init__(
        self,
        websockets_server: ws_server.Server,
        manager: ConnectionManager,
        owns_manager: bool,
        policy: ServerPolicy,
        close_timeout: float,
    ) -> None:
        self._server = websockets_server
        self._owns_manager = owns_manager
        self._policy = policy
        self._close_timeout = close_timeout
        self._close_task: Optional[asyncio.Task[None]] = None
        self._closed: Optional[asyncio.Future[None]] = None
        #: The manager holding this server's connections.
        self.manager = manager
        #: The manager's shutdown summary, once ``close()`` shut it down.
        self.shutdown_summary: Optional[ShutdownSummary] = None

    # -- websockets' API -----------------------------------------------------------
    @property
    def heartbeat(self) -> Optional[Heartbeat]:
        """The heartbeat (None with ``ping_interval=None``)."""
        return self._policy.heartbeat

    @property
    def sockets(self) -> Any:
        return self._server.sockets

    @property
    def connections(self) -> Set[ServerConnection]:
        """Connections that completed the opening handshake and are not closing (for ``broadcast``)."""
        return self._server.connections  # type: ignore[return-value]

    def stats(self) -> ResourceStats:
        """The manager's :meth:`~conntable.aio.ConnectionManager.stats`."""
        return self.manager.stats()

    def is_serving(self) -> bool:
        return self._server.is_serving()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._server.get_loop()

    async def start_serving(self) -> None:
        await self._server.start_serving()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called; cancelling it closes the server."""
        try:
            if not self.is_serving():
                await self.start_serving()
            await self.wait_closed()
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise

    def close(self, close_connections: bool = True, code: int = 1001, reason: str = "") -> None:
        """Stop accepting and close connections (see the class docstring); idempotent."""
        if self._close_task is None:
            self._policy.close_frames[CloseReason.SHUTDOWN] = (code, reason)
            self._close_task = self.get_loop().create_task(self._close(close_connections))

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` is done: connections gone, handlers returned."""
        if self._closed is None:
            self._closed = self.get_loop().create_future()
        await asyncio.shield(self._closed)

    def __getattr__(self, name: str) -> Any:
        # Only called for names this class lacks: websockets' handler_tasks, all_connections, logger, server...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._server, name)

    def __await__(self) -> Generator[Any, None, "Server"]:
        return self._start().__await__()

    async def __aenter__(self) -> "Server":
        return await self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.close()
        await self.wait_closed()

    # -- internals -------------------------------------------------------------------
    async def _start(self) -> "Server":
        if not hasattr(self._server, "server"):
            await self._server
            self.manager.add_server(self._server.server)
        return self

    async def _close(self, close_connections: bool) -> None:
        listener = self._server.server
        listener.close()  # stop accepting; handshakes under way are answered 503 by websockets
        if close_connections:
            if self._owns_manager:
                self.shutdown_summary = await self.manager.shutdown(grace=self._close_timeout)
            else:
                await self._close_connections_of_this_server()
            await self._finish_handlers(self._close_timeout)
        else:
            await self._finish_handlers(None)
        if self._owns_manager and self.shutdown_summary is None:
            self.shutdown_summary = await self.manager.shutdown(grace=self._close_timeout)
        self._server.close(close_connections=False)
        await self._server.wait_closed()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self._closed is None:
            self._closed = self.get_loop().create_future()
        self._closed.set_result(None)

    async def _close_connections_of_this_server(self) -> None:
        """With a shared manager: close ours only, like the manager's shutdown would."""
        ours = cast(Set[ServerConnection], self._server.all_connections)
        for ws in list(ours):
            self.manager.closing(ws.connection, CloseReason.SHUTDOWN)  # counted as the manager's shutdown would
            ws.close_requested(ws.transport, CloseReason.SHUTDOWN)
        await self._finish_handlers(self._close_timeout, cancel=False)
        for ws in list(ours):  # still there: their peers did not finish the closing handshake
            ws.transport.abort()

    async def _finish_handlers(self, timeout: Optional[float], cancel: bool = True) -> None:
        """Wait for the handler tasks; cancel those still running after ``timeout``."""
        tasks = set(self._server.handler_tasks)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        if pending and cancel:
            self._server.logger.warning("%d connection handlers still running: cancelling them", len(pending))
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=timeout)

