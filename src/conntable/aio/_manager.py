"""ConnectionManager: every connection of a server or client in one connection table.

How the pieces fit:

* The table (``conntable.ConnectionTable`` unless ``table_factory`` says
  otherwise) maps connection ids to :class:`Connection` records and keeps
  their idle timeouts and deadlines on its timer wheel. Its clock is the
  loop's (``loop.time()``), and it moves only when the manager moves it.
* Activity (``data_received``, ``buffer_updated``, :meth:`touch`) is one
  ``table.touch``, recorded at the table's clock. To keep that clock fresh
  without reading the time per packet, the manager reads it at most once per
  ``resolution`` while there is activity, and arms one timer handle that
  marks it stale again; while nothing happens, nothing runs.
* One sweeper task (see ``_sweeper``) sleeps until the table's next expiry
  and hands due connections back in bounded batches.
* A due connection is asked to close (``transport.close()`` or the
  protocol's hook) and stays in the table, CLOSING, with a deadline
  ``close_timeout`` later; if it comes due again it is aborted; if even
  that brings no ``connection_lost``, it is forgotten. Close timeouts need no
  timers of their own, and an empty table means every connection is gone.
* Every way a connection ends goes through ``_end``, which runs once per
  connection: out of the table, tasks cancelled, cleanups run LIFO. What a
  user callback raises anywhere on the way is contained (see ``_log``): the
  record still ends, exactly once, and the sweeper never stops.
* TLS (``ssl=`` to :meth:`ConnectionManager.create_server` or
  :meth:`ConnectionManager.protocol_factory`): the loop listens in plain TCP,
  so a connection is registered at accept, and the manager upgrades it with
  ``loop.start_tls`` under its own deadline (see ``_tls``).
"""

from __future__ import annotations

import asyncio
import functools
import math
import weakref
from typing import Any, Callable, Coroutine, List, Optional, Set, Tuple, TypeVar

import conntable
from conntable import Expired
from conntable._common import check_resolution, check_size

from ._arguments import grace_seconds, optional_seconds
from ._breaker import CircuitBreaker
from ._connection import CloseReason, Connection, ConnectionState, new_connection
from ._lifecycle import LifecycleMixin
from ._listeners import DEFAULT_BACKLOG, Listeners
from ._log import EXITS, failed, logger, propagate
from ._protocol import adapter_for
from ._registry import register
from ._resources import rss_bytes
from ._stats import ResourceStats, ShutdownSummary, empty_closed_counts
from ._sweeper import Sweeper
from ._tls import TLSUpgrade, serves_tls_itself

__all__ = ("ConnectionManager",)

T = TypeVar("T")
ProtocolFactory = Callable[[], asyncio.BaseProtocol]

NEW = ConnectionState.NEW
OPEN = ConnectionState.OPEN
CLOSING = ConnectionState.CLOSING
ABORTING = ConnectionState.ABORTING
CLOSED = ConnectionState.CLOSED


def _collected_callback(manager_ref: "weakref.ref[ConnectionManager]") -> Callable[[Connection], None]:
    """The weak-reference callback of every record of one manager: one function, not one per connection.

    It reaches the manager weakly (a manager that holds it strongly would be in
    a reference cycle with itself). A record ends as CLOSED before its adapter
    is let go in the normal course, so for almost every connection this is
    one attribute check.
    """

    def collected(conn: Connection) -> None:
        if conn.state is not CLOSED:
            manager = manager_ref()
            if manager is not None:
                manager._adapter_collected(conn)

    return collected


def _is_server(server: Any) -> bool:
    return callable(getattr(server, "close", None)) and callable(getattr(server, "wait_closed", None))


class ConnectionManager(LifecycleMixin):
    """Tracks, times out, limits and shuts down the connections of one event loop.

    ``idle_timeout``: close a connection after this long without activity
    (None: never). ``handshake_timeout``: close a connection that sent no
    byte this long after it opened (None: no limit); with TLS run by the
    manager (``ssl=``), this covers the TLS handshake too. ``max_lifetime``: close
    any connection this long after it opened (None: no limit).
    ``max_connections``: open the circuit breaker at this many connections
    (None: the process's file-descriptor limit minus ``fd_reserve``, minus
    the descriptors open already and, on asyncio's selector event loop, twice
    the backlog of each listening socket: see ``_listeners``).
    ``resolution``: granularity of every timeout, in seconds; a connection
    can be closed up to ``resolution`` early or late. ``close_timeout``: how
    long a connection asked to close may take before it is aborted.
    ``expire_batch``: most expirations handled per loop iteration.
    ``table_factory``: builds the table, called as
    ``table_factory(idle_timeout, resolution=resolution, now=0.0)`` (default
    ``conntable.ConnectionTable``; ``conntable.PyConnectionTable`` works too).
    ``fd_reserve``: file descriptors kept free (default 5% of the limit, at
    least 16). Arguments are checked as the table checks its own: a wrong
    type raises TypeError, a value out of range ValueError, naming the
    argument. Nothing a user callback raises stops expiry or leaves a
    connection half ended (see ``_log``).

    A manager binds to the running loop at its first connection and serves
    that loop only. Use it through :meth:`protocol_factory`,
    :meth:`create_server` or :meth:`create_connection`, and end it with
    :meth:`shutdown` (or ``async with``). Integrations plug in through the
    life-cycle calls of :class:`~conntable.aio.LifecycleMixin` (``register``,
    ``established``, ``closing``, ``abort``, ``ended``, ``on_server``).
    """

    def __init__(
        self,
        idle_timeout: Optional[float] = 60.0,
        *,
        handshake_timeout: Optional[float] = None,
        max_lifetime: Optional[float] = None,
        max_connections: Optional[int] = None,
        resolution: float = 0.5,
        close_timeout: float = 5.0,
        expire_batch: int = 1000,
        table_factory: Optional[Callable[..., Any]] = None,
        fd_reserve: Optional[int] = None,
    ) -> None:
        # Every argument is checked before anything is built, with the table's own checks
        # (a custom table_factory may check nothing).
        idle = optional_seconds("idle_timeout", idle_timeout)
        self._handshake_timeout = optional_seconds("handshake_timeout", handshake_timeout)
        self._max_lifetime = optional_seconds("max_lifetime", max_lifetime)
        close = optional_seconds("close_timeout", close_timeout)
        if close is None:  # a connection that will not close must be aborted some time
            raise ValueError(f"close_timeout must be a finite number of seconds, got {close_timeout!r}")
        self._close_timeout = close
        check_resolution(resolution)
        self._expire_batch = check_size("expire_batch", expire_batch, minimum=1)
        if table_factory is not None and not callable(table_factory):
            raise TypeError(f"table_factory must be callable or None, not {type(table_factory).__name__}")
        self._breaker = CircuitBreaker(max_connections, fd_reserve=fd_reserve)  # checks both
        factory = conntable.ConnectionTable if table_factory is None else table_factory
        # now=0.0: the clock is the loop's from the first connection on (_register), and a loop's
        # clock (uvloop's) may lag time.monotonic(), the table's own default.
        self._table = factory(math.inf if idle is None else idle, resolution=resolution, now=0.0)
        self._resolution: float = self._table.resolution

        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._sweeper: Optional[Sweeper] = None
        # True while table.now is less than ``resolution`` old. Starts True so
        # that touch() before the first connection goes straight to a KeyError.
        self._clock_fresh = True
        self._clock_handle: Optional[asyncio.TimerHandle] = None
        self._last_id = 0
        self._servers: List[asyncio.AbstractServer] = []
        self._server_hooks: List[Callable[[Any], Any]] = []  # on_server()
        self._listeners = Listeners()  # paused while an accept burst would not fit (asyncio's loop)
        self._listeners_recheck: Optional[asyncio.TimerHandle] = None
        self._tasks: Set[asyncio.Task[Any]] = set()
        # Cancelled once already: a second cancel() would interrupt the task's own cleanup.
        self._cancelling: Set[asyncio.Task[Any]] = set()
        self._abandoned: List[int] = []  # ids queued by the weak-reference callback
        self._on_collected = _collected_callback(weakref.ref(self))
        self._empty_waiter: Optional[asyncio.Future[None]] = None
        self._stopping = False
        self._stopped = False  # shutdown finished: the sweeper runs only while late arrivals are held
        self._shutdown_task: Optional[asyncio.Task[ShutdownSummary]] = None
        self._summary: Optional[ShutdownSummary] = None  # set while shutting down

        self._peak = 0
        self._opened_total = 0
        self._rejected_total = 0
        self._aborted_total = 0
        self._closed_total = empty_closed_counts()
        register(self)  # weakly, for leak checks (conntable.testing)

    # -- settings ------------------------------------------------------------
    @property
    def idle_timeout(self) -> Optional[float]:
        idle: float = self._table.idle_timeout
        return None if idle == math.inf else idle

    @property
    def handshake_timeout(self) -> Optional[float]:
        return self._handshake_timeout

    @property
    def max_lifetime(self) -> Optional[float]:
        return self._max_lifetime

    @property
    def resolution(self) -> float:
        return self._resolution

    @property
    def close_timeout(self) -> float:
        return self._close_timeout

    @property
    def max_connections(self) -> int:
        return self._breaker.max_connections

    # -- wiring into asyncio ---------------------------------------------------
    def protocol_factory(
        self,
        factory: ProtocolFactory,
        *,
        ssl: Any = None,
        ssl_handshake_timeout: Optional[float] = None,
        ssl_shutdown_timeout: Optional[float] = None,
    ) -> ProtocolFactory:
        """Wrap a protocol factory so that each connection it serves is managed.

        Pass the result to ``loop.create_server`` or ``loop.create_connection``.
        The loop then sees an adapter (``transport.get_protocol()``), whose
        ``protocol`` attribute is the instance ``factory()`` returned. A
        factory that raises (or returns no protocol) is logged, and its
        connection is counted and aborted (reason ``error``).

        ``ssl``: a server-side ``ssl.SSLContext``. Give it here, not to the
        loop: the loop then serves plain TCP, so each connection is in the
        table from its accept, the breaker counts it, and the manager runs
        the TLS handshake (``loop.start_tls``) within ``handshake_timeout``
        (else ``ssl_handshake_timeout``, default 60 s) before the protocol's
        ``connection_made`` receives the TLS transport.
        ``ssl_shutdown_timeout`` is passed to ``start_tls``. A server made
        with ``loop.create_server(..., ssl=...)`` does its handshakes before
        the manager sees its connections: none of this covers them.
        """
        if not callable(factory):  # here, not inside the loop at the first accept
            raise TypeError(f"the protocol factory must be callable, not {type(factory).__name__}")
        tls = None if ssl is None else TLSUpgrade(ssl, ssl_handshake_timeout, ssl_shutdown_timeout)
        if tls is None and (ssl_handshake_timeout is not None or ssl_shutdown_timeout is not None):
            raise ValueError("ssl_handshake_timeout and ssl_shutdown_timeout are only meaningful with ssl")

        def managed_protocol() -> asyncio.BaseProtocol:
            return adapter_for(self, factory, tls)

        return managed_protocol

    async def create_server(
        self, factory: ProtocolFactory, host: Any = None, port: Any = None, **kwargs: Any
    ) -> asyncio.AbstractServer:
        """``loop.create_server`` with managed connections; the server is shut down with the manager.

        With ``ssl=``, the TLS handshake is the manager's (see :meth:`protocol_factory`):
        ``ssl``, ``ssl_handshake_timeout`` and ``ssl_shutdown_timeout`` go there,
        every other keyword argument to the loop.
        """
        loop = asyncio.get_running_loop()
        tls = {name: kwargs.pop(name) for name in ("ssl", "ssl_handshake_timeout", "ssl_shutdown_timeout")
               if name in kwargs}
        server = await loop.create_server(self.protocol_factory(factory, **tls), host, port, **kwargs)
        self._watch(server, kwargs.get("backlog", DEFAULT_BACKLOG))
        return server

    async def create_connection(
        self, factory: ProtocolFactory, host: Any = None, port: Any = None, **kwargs: Any
    ) -> Tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        """``loop.create_connection`` with a managed connection; returns ``(transport, your protocol)``."""
        loop = asyncio.get_running_loop()
        transport, adapter = await loop.create_connection(self.protocol_factory(factory), host, port, **kwargs)
        return transport, adapter.protocol  # type: ignore[attr-defined]

    def add_server(self, server: asyncio.AbstractServer) -> None:
        """Have :meth:`shutdown` stop ``server`` from accepting (for servers made without :meth:`create_server`).

        On asyncio's selector loop the manager also keeps descriptors free for
        the connections the server may accept before the manager sees them,
        and stops reading its listening sockets while they are not free.
        A server made with ``ssl=`` runs its TLS handshakes before the manager
        sees the connection (no handshake timeout, not counted by the
        breaker): give ``ssl`` to :meth:`protocol_factory` instead. Where the
        server shows it (asyncio's), that is logged as a warning.
        """
        self._watch(server, None)
        if serves_tls_itself(server):
            logger.warning(
                "server %r does its own TLS handshakes: the manager sees its connections only once "
                "the handshake is done (no handshake_timeout, not counted by the breaker). Pass "
                "ssl= to ConnectionManager.create_server or protocol_factory instead.", server,
            )

    def _watch(self, server: asyncio.AbstractServer, backlog: Optional[int]) -> None:
        if not _is_server(server):  # shutdown() would fail on it, every time
            raise TypeError(f"server must have close() and wait_closed(), like an asyncio server: "
                            f"not {type(server).__name__}")
        self._servers.append(server)
        for hook in list(self._server_hooks):  # what a hook raises is logged; the server is held anyway
            try:
                hook(server)
            except BaseException as exc:
                logger.error("server hook %r failed for %r", hook, server, exc_info=exc)
                propagate(exc if isinstance(exc, EXITS) else None)
        if self._stopping:
            self._close_server(server)
        elif self._listeners.add(server, backlog):
            self._reserve_accept_burst(server.get_loop())

    def _reserve_accept_burst(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep descriptors free for what the listening sockets accept before the manager sees it."""
        breaker, held = self._breaker, len(self._table)
        breaker.resync(held, loop.time())  # before the first accepts: nothing in flight is miscounted
        breaker.set_accept_burst(self._listeners.burst)
        if not breaker.burst_fits(held + 1):
            logger.warning(
                "asyncio's event loop can accept %d connections before the manager sees them (twice the "
                "backlog of each listening socket), but only %s file descriptors are free and fd_reserve=%d "
                "of them must stay free: every connection will be refused. Use a smaller backlog, uvloop, "
                "or a higher RLIMIT_NOFILE.",
                breaker.accept_burst, breaker.free_fds(held + 1), breaker.fd_reserve,
            )

    # -- per-connection API ---------------------------------------------------
    def __len__(self) -> int:
        """Connections held: open, closing, or refused and not yet gone."""
        return len(self._table)

    def get(self, conn_id: int) -> Optional[Connection]:
        """The record of a connection that is not gone yet, else None."""
        return self._table.get(conn_id)  # type: ignore[no-any-return]

    def touch(self, conn_id: int) -> None:
        """Record activity on a connection; KeyError if it is gone.

        Received data is recorded automatically; call this for anything
        else that should keep the connection from being idle. Activity is
        recorded on a clock refreshed at most once per ``resolution``, so it
        can be up to ``resolution`` earlier than the real event.
        """
        if not self._clock_fresh:
            self._advance_clock(self._loop.time())  # type: ignore[union-attr]
        self._table.touch(conn_id)

    def add_cleanup(self, conn_id: int, callback: Callable[[CloseReason], Any]) -> None:
        """Call ``callback(reason)`` exactly once when the connection ends.

        Callbacks run last added first; an exception in one is logged with
        the connection id and does not stop the others. KeyError if the
        connection is gone already.
        """
        if not callable(callback):  # here, not when the connection ends
            raise TypeError(f"a cleanup must be callable, not {type(callback).__name__}")
        conn = self._live(conn_id)
        if conn._cleanups is None:
            conn._cleanups = []
        conn._cleanups.append(callback)

    def spawn(self, conn_id: int, coro: Coroutine[Any, Any, T], *, name: Optional[str] = None) -> "asyncio.Task[T]":
        """Run ``coro`` as a task that is cancelled when the connection ends.

        An exception the task raises is logged with the connection id; it
        does not close the connection. KeyError if the connection is gone
        already, TypeError if ``coro`` is not a coroutine; a coroutine that
        is refused is closed (no "never awaited" warning).
        """
        if not asyncio.iscoroutine(coro):
            raise TypeError(f"spawn() takes a coroutine, not {type(coro).__name__}")
        try:
            conn = self._live(conn_id)
            task = self._loop.create_task(coro, name=name)  # type: ignore[union-attr]
        except BaseException:  # a bad or unknown id, a closed loop...: the coroutine never runs
            coro.close()
            raise
        self._adopt(conn, task)
        return task

    def _adopt(self, conn: Connection, task: "asyncio.Task[Any]") -> None:
        """Make ``task`` one of ``conn``'s: cancelled when it ends, waited for by shutdown."""
        if conn._tasks is None:
            conn._tasks = set()
        conn._tasks.add(task)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._task_done, conn))

    def _live(self, conn_id: int) -> Connection:
        conn: Optional[Connection] = self._table.get(conn_id)
        if conn is None:
            raise KeyError(f"connection {conn_id} is gone")
        return conn

    def _task_done(self, conn: Connection, task: "asyncio.Task[Any]") -> None:
        self._tasks.discard(task)
        self._cancelling.discard(task)
        if conn._tasks is not None:
            conn._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:  # any BaseException: asyncio raised KeyboardInterrupt/SystemExit already
                logger.error("connection %d: task %r failed", conn.id, task, exc_info=exc)

    # -- reports ---------------------------------------------------------------
    def stats(self) -> ResourceStats:
        """A snapshot of the connections and the process's resources.

        Counts the open file descriptors (at worst a directory listing: fine
        per scrape, not per request), corrects the breaker's estimate with it
        and lets the breaker close if it may.
        """
        held = len(self._table)
        breaker = self._breaker
        fds = breaker.resync(held, -math.inf if self._loop is None else self._loop.time())
        breaker.reconsider(held)
        return ResourceStats(
            active=held,
            peak=self._peak,
            opened_total=self._opened_total,
            closed_total={reason.value: count for reason, count in self._closed_total.items()},
            rejected_total=self._rejected_total,
            aborted_total=self._aborted_total,
            tasks_active=len(self._tasks),
            breaker_open=breaker.is_open,
            breaker_trips_total=breaker.trips,
            max_connections=breaker.max_connections,
            open_fds=fds,
            max_fds=breaker.fd_limit,
            resident_memory_bytes=rss_bytes(),
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__qualname__} connections={len(self._table)} "
            f"idle_timeout={self.idle_timeout!r} breaker={'open' if self._breaker.is_open else 'closed'}"
            f"{' stopping' if self._stopping else ''}>"
        )

    # -- shutdown ----------------------------------------------------------------
    async def shutdown(self, grace: float = 30.0) -> ShutdownSummary:
        """Stop accepting, close every connection, and wait for them; return what happened.

        Servers registered with the manager stop accepting, and connections
        that arrive meanwhile are refused. Every open connection is asked to
        close (its protocol's :meth:`~ManagedProtocol.close_requested`, else
        ``transport.close()``); after ``grace`` seconds the rest are aborted;
        then the remaining tasks are cancelled and waited for (up to
        ``close_timeout``), and every cleanup has run. No polling: the wait
        ends when the last connection goes. Calling it again waits for the
        same shutdown. ``grace`` is a number of seconds: 0 aborts at once,
        math.inf waits for ever; anything else raises before anything changes.
        """
        seconds = grace_seconds("grace", grace)
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(self._shut_down(seconds))
        # Shielded: a caller that gives up waiting does not leave a half-closed manager.
        return await asyncio.shield(self._shutdown_task)

    async def __aenter__(self) -> "ConnectionManager":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.shutdown()

    async def _shut_down(self, grace: float) -> ShutdownSummary:
        self._stopping = True
        if self._listeners_recheck is not None:
            self._listeners_recheck.cancel()
        summary = self._summary = ShutdownSummary()
        for server in self._servers:
            if self._close_server(server):
                summary.servers_closed += 1
        loop = self._loop
        if loop is not None:  # else no connection ever came
            deadline = loop.time() + grace
            for conn in list(self._table.values()):
                if conn.state is OPEN or conn.state is NEW:
                    self._guarded(conn, "closing for shutdown", self._begin_close, conn, CloseReason.SHUTDOWN, deadline)
            await self._until_empty(grace)
            now = loop.time()
            for conn in list(self._table.values()):
                if conn.state is not ABORTING:
                    self._guarded(conn, "aborting for shutdown", self._abort, conn, now)
            await self._until_empty(self._close_timeout)
            for conn in list(self._table.values()):  # aborted, and still no connection_lost
                self._end(conn, CloseReason.ABANDONED)
        # From here on, a connection that still arrives (accepted before the servers closed, or
        # from a server the manager does not know) is refused, and the sweeper runs only while
        # such connections are held (see _register and _end).
        self._stopped = True
        if self._sweeper is not None and not len(self._table):
            await self._sweeper.stop()
        if self._clock_handle is not None:
            self._clock_handle.cancel()
        self._clock_fresh = True  # no more clock timers
        for task in list(self._tasks):  # normally none: ended connections cancelled theirs
            if self._cancel(task):
                summary.tasks_cancelled += 1
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self._close_timeout)
        summary.tasks_still_running = len(self._tasks)
        if self._tasks:
            logger.warning("%d connection tasks ignored cancellation", len(self._tasks))
        await self._servers_closed()
        self._summary = None
        return summary

    async def _servers_closed(self) -> None:
        """Wait for every server's ``wait_closed()``, together, up to ``close_timeout``.

        Each runs as a task of its own, so what a server of the user's raises
        is that task's (asyncio lets KeyboardInterrupt and SystemExit out of
        the loop itself) and is logged here; shutdown goes on.
        """
        closing = {}
        for server in self._servers:
            try:
                closing[asyncio.ensure_future(server.wait_closed())] = server
            except BaseException as exc:  # not awaitable, or raised at once
                logger.error("server %r failed to finish closing", server, exc_info=exc)
                propagate(exc if isinstance(exc, EXITS) else None)
        if not closing:
            return
        done, pending = await asyncio.wait(closing, timeout=self._close_timeout)
        for task in pending:
            logger.warning("server %r did not finish closing", closing[task])
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=self._close_timeout)
        for task in done:
            if task.cancelled():  # its wait_closed() raised CancelledError: nobody cancelled it
                logger.error("server %r failed to finish closing: cancelled", closing[task])
            elif task.exception() is not None:
                logger.error("server %r failed to finish closing", closing[task], exc_info=task.exception())

    @staticmethod
    def _close_server(server: asyncio.AbstractServer) -> bool:
        """``server.close()``; what a server of the user's raises is logged, and shutdown goes on."""
        try:
            server.close()
        except BaseException as exc:
            logger.error("server %r failed to close", server, exc_info=exc)
            propagate(exc if isinstance(exc, EXITS) else None)
            return False
        return True

    async def _until_empty(self, timeout: float) -> None:
        """Wait until the table is empty (one future, completed by ``_end``) or ``timeout``."""
        if not len(self._table):
            return
        waiter = self._empty_waiter = self._loop.create_future()  # type: ignore[union-attr]
        try:
            await asyncio.wait([waiter], timeout=timeout)
        finally:
            self._empty_waiter = None

    # -- the connection life cycle (called by the adapters and the sweeper) ----
    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        sweeper = Sweeper(loop, self._table, self._expire_batch, self._on_due)
        self._loop, self._sweeper = loop, sweeper
        # From now on the table's clock is the loop's: the caller (_register) moves it first.
        self._clock_fresh = False
        sweeper.start()
        return loop

    def _advance_clock(self, now: float) -> None:
        """Move the table's clock to ``now`` and keep it there for one ``resolution``."""
        self._table.expire(now, 0)  # only moves the clock: processes nothing
        self._clock_fresh = True
        self._clock_handle = self._loop.call_at(now + self._resolution, self._clock_went_stale)  # type: ignore[union-attr]

    def _clock_went_stale(self) -> None:
        self._clock_fresh = False
        self._clock_handle = None

    def _register(self, adapter: Any, peer: Any, tls: Optional[TLSUpgrade] = None) -> Connection:
        """Put a new connection in the table: admitted, or refused and closing.

        All or nothing: if the table (a custom one) raises, nothing is left
        in it and the caller aborts the transport. ``adapter``: the protocol
        adapter, or an integration's ``Endpoint`` (held weakly: see ``_lifecycle``). ``tls``: the connection
        starts with a TLS handshake, due by ``handshake_timeout`` or, without
        one, by the upgrade's own handshake timeout.
        """
        loop = self._loop or self._bind()
        now = loop.time()
        if not self._clock_fresh:
            self._advance_clock(now)
        if self._stopped:
            self._sweeper.start()  # type: ignore[union-attr]  # a late arrival: see _shut_down
        table = self._table
        conn_id = self._last_id = self._last_id + 1
        conn = new_connection(adapter, self._on_collected, conn_id, peer, now, table)
        try:
            if self._stopping or not self._breaker.admit(len(table), now):
                # Refused. Held (CLOSING) for its protocol to answer, up to close_timeout, while
                # half the descriptor reserve stays free; else aborted at once (ABORTING: see _breaker).
                conn.state = CLOSING if self._breaker.can_answer(len(table)) else ABORTING
                conn.close_reason = CloseReason.REJECTED
                table.add(conn_id, conn, idle_timeout=math.inf, deadline=now + self._close_timeout)
                self._rejected_total += 1
                if self._summary is not None:
                    self._summary.rejected += 1
            else:
                deadline = None if self._max_lifetime is None else now + self._max_lifetime
                handshake = self._handshake_timeout
                if tls is not None:
                    handshake = tls.handshake_timeout if handshake is None else min(handshake, tls.handshake_timeout)
                if handshake is not None:
                    conn.state = NEW
                    first_byte_by = now + handshake
                    deadline = first_byte_by if deadline is None else min(deadline, first_byte_by)
                table.add(conn_id, conn, deadline=deadline)
                self._opened_total += 1
            due = table.due(conn_id)
        except BaseException:
            conn.state = CLOSED  # no callback for a connection that never was
            if conn_id in table:
                del table[conn_id]
            if self._stopped and not len(table):
                self._sweeper.stop_soon()  # type: ignore[union-attr]
            raise
        if len(table) > self._peak:
            self._peak = len(table)
        if self._listeners.burst:
            self._check_listeners()
        self._sweeper.wake_if_earlier(due)  # type: ignore[union-attr]
        return conn

    def _check_listeners(self) -> None:
        """Read the listening sockets only while a whole accept burst fits (asyncio's loop; see _listeners).

        Checked at every arrival and departure, so it reads again as soon as
        the descriptors of refused connections come back.
        """
        listeners = self._listeners
        fits = self._breaker.burst_fits(len(self._table))
        if fits and listeners.paused:
            listeners.resume()
        elif not fits and not listeners.paused and not self._stopping:
            listeners.pause()
            self._recheck_listeners_later()

    def _recheck_listeners_later(self) -> None:
        """While paused, measure the descriptors again once per ``remeasure_interval``.

        A measurement taken while accepted sockets were in flight counts them
        as the rest of the program's: until measured again, the estimate
        could keep the listening sockets paused with nothing left to wait for.
        """
        if self._listeners_recheck is None:
            self._listeners_recheck = self._loop.call_later(  # type: ignore[union-attr]
                self._breaker.remeasure_interval, self._recheck_listeners
            )

    def _recheck_listeners(self) -> None:
        self._listeners_recheck = None
        if self._listeners.paused and not self._stopping:
            self._breaker.resync(len(self._table), self._loop.time())  # type: ignore[union-attr]
            self._check_listeners()
            if self._listeners.paused:
                self._recheck_listeners_later()

    def _first_activity(self, conn: Connection) -> None:
        """The first byte arrived: the handshake deadline gives way to the lifetime one."""
        if conn.state is NEW:
            conn.state = OPEN
            lifetime = None if self._max_lifetime is None else conn.opened_at + self._max_lifetime
            self._table.set_deadline(conn.id, lifetime)

    def _tls_established(self, conn: Connection) -> None:
        """The TLS handshake is done: what is left is ``handshake_timeout``'s first byte, if any."""
        if conn.state is not NEW:
            return
        if self._handshake_timeout is None:
            self._first_activity(conn)
            return
        deadline = conn.opened_at + self._handshake_timeout
        if self._max_lifetime is not None:
            deadline = min(deadline, conn.opened_at + self._max_lifetime)
        self._table.set_deadline(conn.id, deadline)
        self._sweeper.wake_if_earlier(deadline)  # type: ignore[union-attr]

    def _on_due(self, expired: List[Expired], now: float) -> None:
        # The table gave these back already: each is handled on its own, so that one that fails
        # (a transport whose close() or abort() raises) is forgotten and the others still are handled.
        for conn_id, conn, why in expired:
            self._guarded(conn, "expiry", self._due, conn, why, now)

    def _guarded(self, conn: Connection, what: str, step: Callable[..., None], *args: Any) -> None:
        """Run one step of closing ``conn``; if it raises, log it, end the connection and abort its transport.

        User callbacks are contained where they are called; this catches what
        the transport (``close()``, ``abort()``) or a custom table raises.
        """
        try:
            step(*args)
        except BaseException as exc:
            pending = failed(conn.id, f"{what} (the connection is forgotten)", exc)
            adapter = conn._adapter()  # before _end lets go of it
            self._end(conn, CloseReason.ERROR)
            if adapter is not None:
                try:
                    adapter.abort()
                except BaseException as error:  # nothing more can be done for it
                    pending = failed(conn.id, "aborting the forgotten connection", error) or pending
            propagate(pending)

    def _due(self, conn: Connection, why: str, now: float) -> None:
        state = conn.state
        if state is OPEN or state is NEW:
            if why == "idle":
                reason = CloseReason.IDLE
            else:
                reason = CloseReason.HANDSHAKE if state is NEW else CloseReason.LIFETIME
            self._begin_close(conn, reason, now + self._close_timeout)
        elif state is CLOSING:
            self._abort(conn, now)
        else:  # ABORTING, and the transport never reported connection_lost
            self._end(conn, CloseReason.ABANDONED)

    def _hold_until(self, conn: Connection, deadline: float) -> None:
        """Keep ``conn`` in the table, immune to idleness, until ``deadline``."""
        table = self._table
        if conn.id in table:
            table.set_idle_timeout(conn.id, math.inf)
            table.set_deadline(conn.id, deadline)
        else:  # just expired: the table gave it back
            table.add(conn.id, conn, idle_timeout=math.inf, deadline=deadline)
        self._sweeper.wake_if_earlier(deadline)  # type: ignore[union-attr]

    def _begin_close(self, conn: Connection, reason: CloseReason, deadline: float) -> None:
        conn.state = CLOSING
        if conn.close_reason is None:
            conn.close_reason = reason
        self._hold_until(conn, deadline)
        adapter = conn._adapter()
        if adapter is None:  # collected: its weak-reference callback is on the way
            self._end(conn, CloseReason.ABANDONED)
        else:
            adapter.request_close(reason)

    def _abort(self, conn: Connection, now: float) -> None:
        conn.state = ABORTING
        self._aborted_total += 1
        self._hold_until(conn, now + self._close_timeout)
        adapter = conn._adapter()
        if adapter is None:
            self._end(conn, CloseReason.ABANDONED)
        else:
            adapter.abort()

    def _end(self, conn: Connection, reason: CloseReason) -> None:
        """The one way out, run once per connection: forget it, cancel its tasks, run its cleanups.

        Nothing stops it half way: what a cleanup (or a custom table, or a
        task's ``cancel``) raises is logged and the rest still runs;
        KeyboardInterrupt and SystemExit propagate once it is done.
        """
        was = conn.state
        if was is CLOSED:
            return
        conn.state = CLOSED
        reason = conn.close_reason = conn.close_reason or reason
        pending: Optional[BaseException] = None
        table = self._table
        try:
            if conn.id in table:
                del table[conn.id]
        except BaseException as exc:  # a custom table
            pending = failed(conn.id, "removal from the table", exc)
        self._closed_total[reason] += 1
        summary = self._summary
        if summary is not None and reason is not CloseReason.REJECTED:  # refusals are counted at arrival
            if was is ABORTING:
                summary.aborted += 1
            else:
                summary.closed_gracefully += 1
        if conn._tasks:
            for task in list(conn._tasks):
                try:
                    if self._cancel(task) and summary is not None:
                        summary.tasks_cancelled += 1
                except BaseException as exc:  # a task factory's task
                    pending = failed(conn.id, f"cancelling task {task!r}", exc) or pending
        cleanups = conn._cleanups
        if cleanups:
            conn._cleanups = None
            for callback in reversed(cleanups):
                try:
                    callback(reason)
                except BaseException as exc:
                    pending = failed(conn.id, f"cleanup {callback!r}", exc) or pending
        held = len(table)
        if self._breaker.is_open:
            self._breaker.reconsider(held)
        if self._listeners.burst:
            self._check_listeners()
        if not held:
            if self._empty_waiter is not None and not self._empty_waiter.done():
                self._empty_waiter.set_result(None)
            if self._stopped:
                self._sweeper.stop_soon()  # type: ignore[union-attr]  # the last late arrival is gone
        propagate(pending)

    def _cancel(self, task: "asyncio.Task[Any]") -> bool:
        """Cancel ``task`` unless it is done or was cancelled already; return whether it was."""
        if task.done() or task in self._cancelling:
            return False
        self._cancelling.add(task)
        task.cancel()
        return True

    def _adapter_collected(self, conn: Connection) -> None:
        """A live connection's adapter was garbage collected: its transport is gone.

        Runs wherever the collector runs (inside any allocation, in any
        thread), so it only queues the id and wakes the loop safely.
        """
        abandoned = self._abandoned
        abandoned.append(conn.id)
        loop = self._loop
        if len(abandoned) == 1 and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._reap_abandoned)

    def _reap_abandoned(self) -> None:
        ids, self._abandoned = self._abandoned, []
        for conn_id in ids:
            conn = self._table.get(conn_id)
            if conn is not None:
                self._end(conn, CloseReason.ABANDONED)
