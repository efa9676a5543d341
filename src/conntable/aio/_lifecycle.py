"""The one seam between the manager and an integration: a connection's life cycle, in public calls.

Every integration (``conntable.websockets``, ``conntable.aiohttp``,
``conntable.asgi``, or a user's own protocol) plugs into a
:class:`ConnectionManager` through these calls and nothing else: nothing
private of ``conntable.aio`` is used outside it.

Two ways in:

* **An asyncio protocol** (the connection has a transport): wrap its factory
  with :meth:`ConnectionManager.protocol_factory` (or use
  :meth:`~ConnectionManager.create_server`). The manager's adapter makes the
  calls below itself; the protocol answers through the
  :class:`ManagedProtocol` hooks (``connection_rejected``,
  ``close_requested``). It may still call :meth:`~LifecycleMixin.closing` to
  say why it is ending (a WebSocket close initiated by the server is
  ``closed``, by the peer ``peer``).
* **Anything else** (an ASGI connection, a stream the integration drives):
  an :class:`Endpoint`, registered and ended by the integration.

What an integration with an :class:`Endpoint` must call, in this order:

1. ``conn = manager.register(endpoint, peer=...)``, from the loop's thread.
   The connection is in the table, under ``handshake_timeout`` (``NEW``) or
   open. If ``conn.close_reason is CloseReason.REJECTED``, the breaker (or a
   shutdown) refused it: answer (HTTP 503) without running any user code,
   then call ``ended`` (step 4). Keep a strong reference to the endpoint:
   the manager holds it weakly, and one collected before ``ended`` ends as
   ``abandoned``.
2. ``manager.established(conn)`` once the protocol's handshake is done (the
   WebSocket accepted): the handshake deadline gives way to ``max_lifetime``.
   ``manager.touch(conn.id)`` for every activity (a message in or out): it
   restarts the idle timeout (one C call).
3. Closing, either way round:

   * the manager decides (idle, handshake, lifetime, shutdown): it calls
     ``endpoint.request_close(reason)`` once; close politely (a WebSocket
     close frame 1001). If the connection has not ended ``close_timeout``
     later (at shutdown: after the grace period), the manager calls
     ``endpoint.abort()``; ``close_timeout`` after that it ends the
     connection itself (``abandoned``).
   * the integration or the peer decides: ``manager.closing(conn, reason)``
     (``closed`` for a close the server started, ``peer`` for the peer's,
     ``ping_timeout``, ``error``...). The same bound applies from then on.

4. ``manager.ended(conn, reason)`` when the connection is gone (socket
   closed, the app returned).

What the manager guarantees, however the connection ends (and whatever user
callbacks raise, see ``_log``): it leaves the table once; its tasks
(:meth:`~ConnectionManager.spawn`) are cancelled; its cleanups
(:meth:`~ConnectionManager.add_cleanup`) run exactly once, last added first;
its close reason is the first one decided (by the manager, ``closing`` or
``ended``) and is counted once in ``stats().closed_total`` and the
Prometheus metrics. Calls for a connection that has ended already are
no-ops (``touch`` raises KeyError).

Servers: :meth:`~LifecycleMixin.on_server` registers ``callback(server)``,
called for every server the manager starts holding
(:meth:`~ConnectionManager.create_server`, :meth:`~ConnectionManager.add_server`),
so that a supervisor (``conntable.workers``) learns when serving starts
without subclassing the manager.

Pings: :class:`conntable.aio.Heartbeat` pings every quiet connection of any
protocol that can ping, on one timer wheel (see ``_heartbeat``).

Argument checks the integrations share
(:func:`check_seconds`, :func:`check_count`) are here too, so their errors
read like the manager's.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, List, Optional

from conntable._common import check_size, check_timeout

from ._arguments import optional_seconds
from ._connection import CloseReason, Connection, ConnectionState

if TYPE_CHECKING:
    import asyncio

__all__ = ("Endpoint", "LifecycleMixin", "check_seconds", "check_count")


class Endpoint:
    """What an integration registers for a connection that has no transport of the manager's.

    Subclass it and implement :meth:`request_close` and :meth:`abort`; both
    are called from the loop, must not block and must not await (start a
    task with :meth:`ConnectionManager.spawn` if closing needs one).
    """

    __slots__ = ("__weakref__",)

    #: ``Connection.transport`` of an endpoint's connection: none.
    transport: Any = None

    @property
    def protocol(self) -> Any:
        """``Connection.protocol`` of an endpoint's connection: the endpoint itself."""
        return self

    def request_close(self, reason: CloseReason) -> None:
        """The manager closes the connection (``reason``): start a polite close now."""
        raise NotImplementedError

    def abort(self) -> None:
        """The polite close took too long: drop the connection now."""
        raise NotImplementedError


class LifecycleMixin:
    """The public life-cycle calls of :class:`ConnectionManager` (see the module docstring)."""

    __slots__ = ()

    # Provided by ConnectionManager:
    _server_hooks: List[Callable[[Any], Any]]
    _close_timeout: float
    _loop: Optional["asyncio.AbstractEventLoop"]

    def register(self, endpoint: Endpoint, *, peer: Any = None) -> Connection:
        """Put a new connection in the table (step 1); see ``conn.close_reason`` for a refusal.

        Must be called from a coroutine or callback of the loop the manager
        serves. TypeError if ``endpoint`` is not an :class:`Endpoint`.
        """
        if not isinstance(endpoint, Endpoint):
            raise TypeError(f"register() takes a conntable.aio.Endpoint, not {type(endpoint).__name__}")
        return self._register(endpoint, peer)  # type: ignore[attr-defined, no-any-return]

    def established(self, conn: Connection) -> None:
        """The protocol's handshake is done (step 2): ``handshake_timeout`` no longer applies."""
        if conn.state is ConnectionState.NEW:
            self._first_activity(conn)  # type: ignore[attr-defined]

    def closing(self, conn: Connection, reason: CloseReason, *, timeout: Optional[float] = None) -> None:
        """The connection is closing for ``reason`` (step 3, the integration's side).

        The first reason decided wins. An open connection becomes
        ``CLOSING``, immune to idleness, and is aborted if it has not ended
        ``timeout`` (default: ``close_timeout``) from now. TypeError if
        ``reason`` is no CloseReason.
        """
        if not isinstance(reason, CloseReason):
            raise TypeError(f"reason must be a CloseReason, not {type(reason).__name__}")
        bound = self._close_timeout if timeout is None else check_timeout("timeout", timeout)
        state = conn.state
        if state is ConnectionState.CLOSED:
            return
        if conn.close_reason is None:
            conn.close_reason = reason
        if state is ConnectionState.OPEN or state is ConnectionState.NEW:
            conn.state = ConnectionState.CLOSING
            self._hold_until(conn, self._loop.time() + bound)  # type: ignore[attr-defined, union-attr]

    def abort(self, conn: Connection) -> None:
        """Drop the connection now (its endpoint's or transport's ``abort()``); it ends when that is reported.

        If nothing reports the end, the manager ends it (``abandoned``)
        ``close_timeout`` later.
        """
        if conn.state is not ConnectionState.CLOSED and conn.state is not ConnectionState.ABORTING:
            if conn.close_reason is None:
                conn.close_reason = CloseReason.ERROR
            self._guarded(conn, "aborting", self._abort, conn, self._loop.time())  # type: ignore[attr-defined, union-attr]

    def ended(self, conn: Connection, reason: CloseReason) -> None:
        """The connection is gone (step 4): out of the table, tasks cancelled, cleanups run; once."""
        if not isinstance(reason, CloseReason):
            raise TypeError(f"reason must be a CloseReason, not {type(reason).__name__}")
        self._end(conn, reason)  # type: ignore[attr-defined]

    def on_server(self, callback: Callable[[Any], Any]) -> None:
        """Call ``callback(server)`` for every server the manager holds: now for those it holds, later for new ones.

        Later calls are contained: what the callback raises is logged, and the
        server is held anyway.
        """
        if not callable(callback):
            raise TypeError(f"the server hook must be callable, not {type(callback).__name__}")
        self._server_hooks.append(callback)
        for server in list(self._servers):  # type: ignore[attr-defined]
            callback(server)


def check_seconds(name: str, value: Optional[float]) -> Optional[float]:
    """A positive duration, or None (also for ``math.inf``) for no limit; errors name ``name``."""
    result = optional_seconds(name, value)
    return None if result is None or result == math.inf else result


def check_count(name: str, value: int, minimum: int = 0) -> int:
    """An int at least ``minimum``; TypeError or ValueError naming ``name``."""
    return check_size(name, value, minimum=minimum)  # type: ignore[no-any-return]
