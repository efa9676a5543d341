"""The per-connection record the manager keeps in its table, and its vocabulary.

The record holds no strong reference to the transport or the protocol: only a
weak reference to the manager's protocol adapter. So a transport that its
owner drops without ``connection_lost`` can still be garbage collected, and
the manager learns of it through the weak reference's callback (reason
``abandoned``) instead of keeping the dead socket's object graph alive.
"""

from __future__ import annotations

import asyncio
import enum
import weakref
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Set

if TYPE_CHECKING:
    from ._protocol import _Adapter

__all__ = ("Connection", "ConnectionState", "CloseReason")


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


class AdapterRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a connection's protocol adapter that knows the connection id.

    The callback receives this object, so it learns which connection was
    abandoned without the reference pointing back at the record (which
    would make a reference cycle per connection).
    """

    __slots__ = ("conn_id",)
    conn_id: int

    def __new__(cls, adapter: "_Adapter", callback: Callable[["AdapterRef"], None], conn_id: int) -> "AdapterRef":
        self = super().__new__(cls, adapter, callback)
        self.conn_id = conn_id
        return self

    def __init__(self, adapter: "_Adapter", callback: Callable[["AdapterRef"], None], conn_id: int) -> None:
        super().__init__(adapter, callback)  # type: ignore[call-arg]


class Connection:
    """One connection of a :class:`ConnectionManager`.

    Attributes: ``id`` (never reused by the manager), ``peer`` (the
    transport's ``peername``), ``opened_at`` (``loop.time()`` at
    ``connection_made``), ``state`` (a :class:`ConnectionState`) and
    ``close_reason`` (None until the manager decides or learns why it ends).
    """

    __slots__ = (
        "id", "peer", "opened_at", "state", "close_reason",
        "_table", "_adapter_ref", "_cleanups", "_tasks",
    )

    def __init__(self, conn_id: int, peer: Any, opened_at: float, table: Any, adapter_ref: AdapterRef) -> None:
        self.id = conn_id
        self.peer = peer
        self.opened_at = opened_at
        self.state = ConnectionState.OPEN
        self.close_reason: Optional[CloseReason] = None
        self._table = table
        self._adapter_ref: Optional[AdapterRef] = adapter_ref
        # Created on first use: most connections never add a cleanup or spawn a task.
        self._cleanups: Optional[List[Callable[[CloseReason], Any]]] = None
        self._tasks: Optional[Set["asyncio.Task[Any]"]] = None

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
        ref = self._adapter_ref
        return None if ref is None else ref()

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
