"""How one ASGI connection is put under a :class:`~conntable.aio.ConnectionManager`: the life-cycle seam.

This is the only module of ``conntable.asgi`` that talks to the manager's
life cycle (``conntable/aio/_lifecycle.py``: ``register``, ``established``,
``touch``, ``closing``, ``ended``); the rest talks to a :class:`Link`. An
ASGI connection has no transport of the manager's (the server owns the
socket), so it is an :class:`~conntable.aio.Endpoint`: the manager calls
``request_close(reason)`` when it closes it (idle, handshake, lifetime,
shutdown) and ``abort()`` when the polite close took longer than
``close_timeout`` (at shutdown: the grace). Through it the manager does for
an ASGI connection what it does for a socket: an id, the deadlines on its
timer wheel, the circuit breaker, cleanups and tasks ended exactly once,
shutdown, stats.

The handshake deadline (``handshake_timeout``) runs from registration until
:meth:`Link.opened` (the WebSocket was accepted), as the aio layer's runs
until the first byte.
"""

from __future__ import annotations

from typing import Any, Callable

from conntable.aio import CloseReason, Connection, ConnectionManager, Endpoint

__all__ = ("Link", "register")


class _Endpoint(Endpoint):
    """The manager's handle on the connection: its two calls go to the middleware's callbacks."""

    __slots__ = ("_on_close_requested", "_on_abort")

    def __init__(self, on_close_requested: Callable[[CloseReason], None], on_abort: Callable[[], None]) -> None:
        self._on_close_requested = on_close_requested
        self._on_abort = on_abort

    def request_close(self, reason: CloseReason) -> None:
        self._on_close_requested(reason)

    def abort(self) -> None:
        self._on_abort()


class Link:
    """One connection's registration with the manager."""

    __slots__ = ("manager", "_endpoint", "connection", "id")

    def __init__(self, manager: ConnectionManager, endpoint: _Endpoint, connection: Connection) -> None:
        self.manager = manager
        self._endpoint = endpoint  # the strong reference the manager needs: it holds the endpoint weakly
        #: The manager's record (``id``, ``state``, ``close_reason``, ``opened_at``, ``last_activity``).
        self.connection = connection
        self.id: int = connection.id

    @property
    def rejected(self) -> bool:
        """The breaker refused the connection (or the manager is shutting down): answer, then end it."""
        return self.connection.close_reason is CloseReason.REJECTED

    def activity(self) -> None:
        """A message was received or sent: one touch on the table."""
        try:
            self.manager.touch(self.id)
        except KeyError:  # ended already (abandoned): nothing left to time out
            pass

    def opened(self) -> None:
        """The handshake is done: its deadline gives way to the lifetime one."""
        self.manager.established(self.connection)

    def closing(self, reason: CloseReason) -> None:
        """This side or the client started closing: the app gets ``close_timeout`` to return, then ``abort``."""
        self.manager.closing(self.connection, reason)

    def ended(self, reason: CloseReason) -> None:
        """The application returned: end the record (the first reason decided wins), run cleanups, once."""
        self.manager.ended(self.connection, reason)


def register(
    manager: ConnectionManager,
    peer: Any,
    on_close_requested: Callable[[CloseReason], None],
    on_abort: Callable[[], None],
) -> Link:
    """Register a new connection; check :attr:`Link.rejected` before serving it."""
    endpoint = _Endpoint(on_close_requested, on_abort)
    return Link(manager, endpoint, manager.register(endpoint, peer=peer))
