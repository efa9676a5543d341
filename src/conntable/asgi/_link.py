"""How one ASGI connection is put under a :class:`~conntable.aio.ConnectionManager`.

This is the only module of ``conntable.asgi`` that knows how a connection is
registered with the manager; the rest talks to a :class:`Link`. It uses the
manager's public API only: ``protocol_factory`` builds the manager's adapter
around a :class:`_Endpoint` (a ``ManagedProtocol``), and a :class:`_Handle`
stands in for the transport the adapter expects (an ASGI app has none: the
server owns the socket). Through that pair the manager does for an ASGI
connection what it does for a socket: an id, the idle, handshake and lifetime
deadlines on its timer wheel, the circuit breaker, cleanups and tasks ended
exactly once, the close timeout and the abort after it, shutdown, stats.

What each manager call means here:

* ``connection_rejected``: the breaker refused it; the middleware answers
  (503, or a close before accept) and then ends the link;
* ``close_requested(reason)`` (idle, handshake, lifetime, shutdown): the
  middleware's ``on_close_requested(reason)`` closes politely;
* ``transport.abort()`` (the close timeout passed): ``on_abort()`` cancels
  the application;
* ``connection_lost``, called by :meth:`Link.ended`: the record ends, once
  (reason ``closed``, ``peer`` after :meth:`Link.peer_closed`, ``error``
  with an exception, unless the manager decided a reason first).

The handshake deadline (``handshake_timeout``) runs from registration until
:meth:`Link.opened` (the WebSocket was accepted), as the aio layer's runs
until the first byte.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from conntable.aio import CloseReason, Connection, ConnectionManager, ManagedProtocol

__all__ = ("Link", "register")


class _Handle(asyncio.BaseTransport):
    """What the manager's adapter takes for the transport: the middleware's hooks."""

    __slots__ = ("_peer", "on_abort", "_closing")

    def __init__(self, peer: Any) -> None:
        super().__init__()
        self._peer = peer
        #: Set once registered: an abort during registration (refused with no room to answer,
        #: or registering failed) must not cancel the middleware that is registering.
        self.on_abort: Optional[Callable[[], None]] = None
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._peer if name == "peername" else default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        # The adapter's fallback when a hook failed: the most the middleware can do is stop the app.
        self.abort()

    def abort(self) -> None:
        self._closing = True
        if self.on_abort is not None:
            self.on_abort()


class _Endpoint(ManagedProtocol):
    """The manager's view of the connection: its hooks call the middleware's."""

    def __init__(self, on_close_requested: Callable[[CloseReason], None]) -> None:
        self._on_close_requested = on_close_requested
        self.rejected = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def connection_rejected(self, transport: asyncio.BaseTransport) -> None:
        self.rejected = True  # answered by the middleware, which then ends the link

    def close_requested(self, transport: asyncio.BaseTransport, reason: CloseReason) -> None:
        self._on_close_requested(reason)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        pass


class Link:
    """One connection's registration with the manager (see the module docstring)."""

    __slots__ = ("manager", "_adapter", "_endpoint", "connection", "id")

    def __init__(self, manager: ConnectionManager, adapter: Any, endpoint: _Endpoint) -> None:
        self.manager = manager
        self._adapter = adapter  # the only strong reference: the manager holds it weakly
        self._endpoint = endpoint
        #: The manager's record (``id``, ``state``, ``close_reason``, ``last_activity``).
        self.connection: Connection = endpoint.connection
        self.id: int = self.connection.id

    @property
    def rejected(self) -> bool:
        """The breaker refused the connection (or the manager is shutting down)."""
        return self._endpoint.rejected

    def activity(self) -> None:
        """A message was received or sent: one touch on the table."""
        try:
            self.manager.touch(self.id)
        except KeyError:  # ended already (an abandoned record): nothing to time out
            pass

    def opened(self) -> None:
        """The handshake is done: its deadline gives way to the lifetime one."""
        self._adapter.data_received(b"")

    def peer_closed(self) -> None:
        """The client went away first: the record ends as ``peer`` (unless a reason was decided)."""
        self._adapter.eof_received()

    def ended(self, exc: Optional[BaseException] = None) -> None:
        """The application returned (or raised ``exc``): end the record, run cleanups, once."""
        if exc is not None and not isinstance(exc, Exception):  # cancelled, or exiting: not a clean end
            exc = ConnectionAbortedError(f"the application ended with {type(exc).__name__}")
        self._adapter.connection_lost(exc)


def register(
    manager: ConnectionManager,
    peer: Any,
    on_close_requested: Callable[[CloseReason], None],
    on_abort: Callable[[], None],
) -> Link:
    """Register a new connection; check :attr:`Link.rejected` before serving it."""
    endpoint = _Endpoint(on_close_requested)
    adapter = manager.protocol_factory(lambda: endpoint)()
    handle = _Handle(peer)
    adapter.connection_made(handle)
    if getattr(endpoint, "connection", None) is None:  # registering failed (logged by the manager)
        raise RuntimeError("the connection manager could not register the connection")
    handle.on_abort = on_abort
    return Link(manager, adapter, endpoint)
