"""The per-connection record the manager keeps in its table, and its vocabulary.

The record holds no strong reference to the transport or the protocol: it is
itself a weak reference to the manager's protocol adapter (a ``weakref.ref``
subclass). So a transport that its owner drops without ``connection_lost``
can still be garbage collected, and the manager learns of it through the
weak reference's callback (reason ``abandoned``) instead of keeping the dead
socket's object graph alive.

Cost per connection (what the collector walks for as long as it lives): this
record and the adapter, nothing else. The weak reference is the record
rather than an object of its own, its callback is one function per manager
(not a bound method per connection), and the peer address is read from the
transport when first asked for, not at accept.
"""

from __future__ import annotations

import asyncio
import enum
import weakref
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Set

if TYPE_CHECKING:
    from ._protocol import _Adapter

__all__ = ("Connection", "ConnectionState", "CloseReason", "new_connection", "UNREAD")


class ConnectionState(enum.Enum):
    """Where a connection is in its life."""

    #: Open, no byte received yet (only when a handshake timeout is set), or
    #: still in its TLS handshake (when the manager runs TLS).
    NEW = "new"
    #: Open and admitted.
    OPEN = "open"
    #: Asked to close (``transport.close()`` or the protocol's hook); aborted
    #: if still there after ``close_timeout``.
    CLOSING = "closing"
    #: ``transport.abort()`` was called; forgotten if the transport still does
    #: not report ``connection_lost`` within ``close_timeout``.
    ABORTING = "aborting"
    #: Gone: out of the table, tasks cancelled, cleanups run.
    CLOSED = "closed"


class CloseReason(str, enum.Enum):
    """Why a connection ended: the value cleanup callbacks receive.

    A ``str`` subclass, so ``reason == "idle"`` works and the value is the
    ``reason`` label of ``conntable_connections_closed_total``. The first
    reason decided for a connection wins: an idle connection that the peer
    then resets still ended as ``idle``.
    """

    #: Closed by the server's side: the protocol closed its transport, or an
    #: integration's handler returned or closed the connection itself.
    CLOSED = "closed"
    #: The peer closed its end (``eof_received`` came first).
    PEER = "peer"
    #: ``connection_lost`` with an exception: a reset, or an exception raised
    #: by the protocol that made the transport abort.
    ERROR = "error"
    #: No activity for ``idle_timeout``.
    IDLE = "idle"
    #: No first byte within ``handshake_timeout``, or a TLS handshake not done in time.
    HANDSHAKE = "handshake"
    #: Open for ``max_lifetime``.
    LIFETIME = "lifetime"
    #: Closed by :meth:`ConnectionManager.shutdown`.
    SHUTDOWN = "shutdown"
    #: The peer did not answer a heartbeat ping within its timeout (:class:`Heartbeat`).
    PING_TIMEOUT = "ping_timeout"
    #: Refused by the circuit breaker, or accepted while shutting down.
    REJECTED = "rejected"
    #: The transport was garbage collected without ever calling ``connection_lost``.
    ABANDONED = "abandoned"

    __str__ = str.__str__


class _Unread:
    """The peer address of a connection that nobody has asked for yet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unread>"


#: ``Connection._peer`` until it is read from the transport.
UNREAD: Any = _Unread()


class Connection(weakref.ref):  # type: ignore[type-arg]
    """One connection of a :class:`ConnectionManager`.

    Attributes: ``id`` (never reused by the manager), ``peer`` (the
    transport's ``peername``, read from it when first asked for: None if
    first asked once the transport is gone), ``opened_at`` (``loop.time()``
    at ``connection_made``), ``state`` (a :class:`ConnectionState`) and
    ``close_reason`` (None until the manager decides or learns why it ends).

    The record is also the manager's weak reference to the connection's
    protocol adapter (calling it is not part of its API); it compares and
    hashes by identity, as any object.
    """

    __slots__ = ("id", "_peer", "opened_at", "state", "close_reason", "_table", "_cleanups", "_tasks")

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __init__(self, *_args: Any) -> None:
        # Built by new_connection() (weakref.ref's own __new__, then the fields); weakref.ref's
        # __init__ would refuse the arguments of a direct call.
        raise TypeError("Connection records are made by the manager")

    @property
    def peer(self) -> Any:
        peer = self._peer
        if peer is UNREAD:
            adapter = self()
            transport = None if adapter is None else adapter.transport
            peer = self._peer = None if transport is None else transport.get_extra_info("peername")
        return peer

    @property
    def last_activity(self) -> Optional[float]:
        """The loop time of the last recorded activity; None once the connection is closed.

        Activity is recorded on the table's coarse clock, so this can be up
        to the manager's ``resolution`` earlier than the real event. Once
        closing starts, it is the time closing started or any later activity.
        """
        table = self._table
        return table.last_activity(self.id) if self.state is not ConnectionState.CLOSED and self.id in table else None

    def _adapter(self) -> Optional["_Adapter"]:
        """The adapter while the connection is not closed (and the adapter not collected)."""
        return None if self.state is ConnectionState.CLOSED else self()

    @property
    def transport(self) -> Optional[asyncio.Transport]:
        """The connection's transport while it exists, else None."""
        adapter = self._adapter()
        return None if adapter is None else adapter.transport

    @property
    def protocol(self) -> Optional[asyncio.BaseProtocol]:
        """The user's protocol instance (not the manager's adapter) while it exists."""
        adapter = self._adapter()
        return None if adapter is None else adapter.protocol

    def __repr__(self) -> str:
        return f"<Connection id={self.id} peer={self.peer!r} state={self.state.value}>"

    def __reduce__(self) -> Any:  # weakref.ref's would rebuild a bare reference
        raise TypeError("Connection records cannot be pickled")


_new_ref = weakref.ref.__new__
_OPEN = ConnectionState.OPEN


def new_connection(
    adapter: Any, on_collected: Callable[[Connection], None], conn_id: int, peer: Any, opened_at: float, table: Any
) -> Connection:
    """A record for ``adapter``'s connection; ``on_collected(record)`` runs if the adapter is collected first.

    ``peer``: the address, or ``UNREAD`` to read it from the adapter's transport when asked.
    One C-level allocation and the field stores: no Python-level ``__new__``/``__init__``.
    """
    conn: Connection = _new_ref(Connection, adapter, on_collected)
    conn.id = conn_id
    conn._peer = peer
    conn.opened_at = opened_at
    conn.state = _OPEN
    conn.close_reason = None
    conn._table = table
    # Created on first use: most connections never add a cleanup or spawn a task.
    conn._cleanups = None
    conn._tasks = None
    return conn
