"""How a user's protocol is put under a manager: an adapter in front of it.

``ConnectionManager.protocol_factory(P)`` makes the loop build one adapter
per connection around a ``P()``. The adapter is what the transport talks to:
it registers the connection on ``connection_made``, records activity on every
``data_received`` / ``buffer_updated`` and forwards every call to the user's
protocol, and ends the connection on ``connection_lost``. Wrapping rather
than requiring a base class means any ``asyncio.Protocol`` or
``asyncio.BufferedProtocol`` works unchanged, third-party ones included; the
adapter's type (stream or buffered) follows the user's protocol.

Protocols that want the manager's services subclass :class:`ManagedProtocol`
or :class:`ManagedBufferedProtocol`: they get ``self.connection`` and
``self.manager`` before ``connection_made``, ``spawn``/``add_cleanup``/``touch``
shortcuts, and two hooks: :meth:`~ManagedProtocol.connection_rejected` (answer
a refused connection, e.g. with HTTP 503) and
:meth:`~ManagedProtocol.close_requested` (close politely, e.g. with a
WebSocket close frame, on expiry or shutdown).

Hot path: ``data_received`` costs one call to ``manager.touch`` (one C call
into the table, plus a clock read at most once per ``resolution``) and one
call through a bound method stored at ``connection_made``: no allocation and
no timer handle per call.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Coroutine, Optional

from ._connection import CloseReason, Connection, ConnectionState
from ._log import CALLBACK_ERRORS, log_failure, logger

if TYPE_CHECKING:
    from ._manager import ConnectionManager

__all__ = ("ManagedProtocol", "ManagedBufferedProtocol", "adapter_for")

# Where a refused connection's bytes go: they are never looked at, so one
# buffer can serve every refused BufferedProtocol connection.
_DISCARD_BUFFER = bytearray(64 * 1024)


def _discard(_data: Any) -> None:
    """Stands in for the user's protocol on a refused connection."""


def _discard_buffer(_sizehint: int) -> bytearray:
    return _DISCARD_BUFFER


class _ManagedMixin:
    """What :class:`ManagedProtocol` and :class:`ManagedBufferedProtocol` share."""

    #: This connection's record, set before ``connection_made`` (or ``connection_rejected``).
    connection: Connection
    #: The manager that holds this connection.
    manager: "ConnectionManager"

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: Optional[str] = None) -> "asyncio.Task[Any]":
        """Run ``coro`` as a task that is cancelled when this connection ends."""
        return self.manager.spawn(self.connection.id, coro, name=name)

    def add_cleanup(self, callback: Callable[[CloseReason], Any]) -> None:
        """Call ``callback(reason)`` once when this connection ends (LIFO)."""
        self.manager.add_cleanup(self.connection.id, callback)

    def touch(self) -> None:
        """Record activity that is not received data (e.g. a write that progressed)."""
        self.manager.touch(self.connection.id)

    def connection_rejected(self, transport: asyncio.BaseTransport) -> None:
        """Called instead of ``connection_made`` when the circuit breaker refuses the connection.

        The default closes the transport. Override it to answer first, e.g.
        write an HTTP 503 and close. ``connection_made`` and
        ``connection_lost`` are not called for a refused connection; received
        data is discarded; whatever is still open after the manager's
        ``close_timeout`` is aborted. Cleanups added here still run.
        """
        transport.close()

    def close_requested(self, transport: asyncio.BaseTransport, reason: CloseReason) -> None:
        """Called when the manager closes the connection (idle, handshake, lifetime, shutdown).

        The default closes the transport. Override it to close politely, e.g.
        send a WebSocket close frame and close once the peer answers: data
        keeps flowing to the protocol meanwhile, and the manager aborts the
        transport if it is not gone after ``close_timeout`` (or, on shutdown,
        after the grace period).
        """
        transport.close()


class ManagedProtocol(_ManagedMixin, asyncio.Protocol):
    """Base class for an ``asyncio.Protocol`` that uses the manager's services."""


class ManagedBufferedProtocol(_ManagedMixin, asyncio.BufferedProtocol):
    """Base class for an ``asyncio.BufferedProtocol`` that uses the manager's services."""


class _Adapter(asyncio.BaseProtocol):
    """Stands between a transport and the user's protocol; one per connection."""

    __slots__ = (
        "_manager", "protocol", "transport", "_conn", "_conn_id",
        "_deliver", "_started", "_eof", "__weakref__",
    )

    #: The name of the user protocol's method that receives data.
    _DELIVER: ClassVar[str]

    def __init__(self, manager: "ConnectionManager", protocol: asyncio.BaseProtocol) -> None:
        self._manager = manager
        #: The user's protocol.
        self.protocol = protocol
        self.transport: Optional[asyncio.Transport] = None
        self._conn: Optional[Connection] = None
        self._conn_id = 0
        self._deliver: Callable[[Any], None] = _discard
        self._started = False  # the user's connection_made was called
        self._eof = False      # the peer closed its end first

    # -- the transport's calls ----------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        try:
            conn = self._conn = self._manager._register(self, transport)
        except Exception:  # e.g. a custom table that is full: never leave a socket unmanaged
            logger.exception("could not register a new connection")
            transport.abort()
            return
        self._conn_id = conn.id
        protocol = self.protocol
        if isinstance(protocol, _ManagedMixin):
            protocol.connection = conn
            protocol.manager = self._manager
        if conn.close_reason is CloseReason.REJECTED:
            self._refuse()
            return
        deliver = getattr(protocol, self._DELIVER)
        # The first byte ends the handshake; after that the user's method is called directly.
        self._deliver = self._first_data if conn.state is ConnectionState.NEW else deliver
        self._started = True
        try:
            protocol.connection_made(transport)
        except CALLBACK_ERRORS:
            log_failure(conn.id, "connection_made")
            conn.close_reason = conn.close_reason or CloseReason.ERROR
            transport.abort()  # connection_lost follows and ends the connection

    def connection_lost(self, exc: Optional[Exception]) -> None:
        conn = self._conn
        try:
            if self._started:
                self.protocol.connection_lost(exc)
        except CALLBACK_ERRORS:
            log_failure(self._conn_id, "connection_lost")
        finally:
            if conn is not None:
                reason = CloseReason.ERROR if exc is not None else CloseReason.PEER if self._eof else CloseReason.CLOSED
                self._manager._end(conn, reason)

    def pause_writing(self) -> None:
        if self._started:
            self.protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._started:
            self.protocol.resume_writing()

    def eof_received(self) -> Optional[bool]:
        self._eof = True
        if self._started:
            return self.protocol.eof_received()  # type: ignore[attr-defined, no-any-return]
        return None

    # -- what the manager asks ----------------------------------------------
    def request_close(self, reason: CloseReason) -> None:
        """Close the connection through the protocol's ``close_requested`` hook, or plainly."""
        self._call_hook("close_requested", reason)

    # -- internals -----------------------------------------------------------
    def _refuse(self) -> None:
        self._call_hook("connection_rejected")

    def _call_hook(self, hook: str, *args: Any) -> None:
        """Call a :class:`ManagedProtocol` hook; a plain protocol, or a failed hook, gets ``close()``."""
        transport = self.transport
        assert transport is not None
        if isinstance(self.protocol, _ManagedMixin):
            try:
                getattr(self.protocol, hook)(transport, *args)
                return
            except CALLBACK_ERRORS:
                log_failure(self._conn_id, hook)
        transport.close()

    def _activity(self, data: Any) -> None:
        """``data_received`` / ``buffer_updated``: record activity, then hand the data on."""
        try:
            self._manager.touch(self._conn_id)
        except KeyError:  # already forgotten by a forced end: still deliver
            pass
        self._deliver(data)

    def _first_data(self, data: Any) -> None:
        self._deliver = getattr(self.protocol, self._DELIVER)
        self._manager._first_activity(self._conn)  # type: ignore[arg-type]
        self._deliver(data)


class _StreamAdapter(_Adapter, asyncio.Protocol):
    __slots__ = ()
    _DELIVER = "data_received"

    data_received = _Adapter._activity


class _BufferedAdapter(_Adapter, asyncio.BufferedProtocol):
    __slots__ = ("_get_buffer",)
    _DELIVER = "buffer_updated"

    def __init__(self, manager: "ConnectionManager", protocol: asyncio.BaseProtocol) -> None:
        super().__init__(manager, protocol)
        self._get_buffer: Callable[[int], Any] = protocol.get_buffer  # type: ignore[attr-defined]

    def _refuse(self) -> None:
        self._get_buffer = _discard_buffer
        super()._refuse()

    def get_buffer(self, sizehint: int) -> Any:
        return self._get_buffer(sizehint)

    buffer_updated = _Adapter._activity  # type: ignore[assignment]


def adapter_for(manager: "ConnectionManager", protocol: asyncio.BaseProtocol) -> _Adapter:
    """The adapter that fits ``protocol``: buffered for a BufferedProtocol, else stream."""
    if isinstance(protocol, asyncio.BufferedProtocol):
        return _BufferedAdapter(manager, protocol)
    return _StreamAdapter(manager, protocol)
