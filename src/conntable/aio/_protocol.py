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
into the table, plus a clock read at most once per ``resolution``) and the
call of the user's method: no allocation and no timer handle per call.

Accept path: the adapter and the manager's record are the only objects the
garbage collector tracks that conntable adds per connection. So the adapter
stores no bound method (one per connection, and ``self._first_data`` would be
a reference cycle): where data goes is ``None`` (the user's protocol,
called directly) or a plain function taking the adapter, and the peer address
is read only when asked for (``Connection.peer``).

What the user's code raises (see ``_log``): the factory, ``connection_made``,
``connection_lost`` and the two hooks are called here, and whatever they
raise is logged with the connection id; the connection is aborted (or, for a
hook, closed) and still ends exactly once. The calls the transport makes
straight through (``data_received``, ``buffer_updated``, ``get_buffer``,
``eof_received``, ``pause_writing``, ``resume_writing``) are not wrapped, to
keep the hot path as it is: the transport reports what they raise to the
loop's exception handler, whose report names the adapter (and so the
connection id), and (when receiving failed) aborts the connection, which then
ends as usual with ``connection_lost``. KeyboardInterrupt and SystemExit from
those leave the loop on asyncio, the connection still open and under its
timeouts; uvloop reports them like the others and aborts the connection.

TLS (``_TLSStreamAdapter``, ``_TLSBufferedAdapter``): registered at accept,
upgraded by the manager, then handed to the user's protocol (see ``_tls``).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Coroutine, List, Optional

from ._connection import UNREAD, CloseReason, Connection, ConnectionState
from ._log import EXITS, failed, logger, propagate
from ._tls import TLSUpgrade, handshake_failure, start_now

if TYPE_CHECKING:
    from ._manager import ConnectionManager

__all__ = ("ManagedProtocol", "ManagedBufferedProtocol", "adapter_for")

# Where a refused connection's bytes go: they are never looked at, so one
# buffer can serve every refused BufferedProtocol connection.
_DISCARD_BUFFER = bytearray(64 * 1024)


def _discard(_adapter: Any, _data: Any) -> None:
    """Stands in for the user's protocol on a refused connection."""


def _discard_buffer(_adapter: Any, _sizehint: int) -> bytearray:
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
        # Where received data goes: None for the user's protocol, else deliver(adapter, data).
        self._deliver: Optional[Callable[[Any, Any], None]] = _discard
        self._started = False  # the user's connection_made was called
        self._eof = False      # the peer closed its end first

    # -- the transport's calls ----------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        conn = self._admit(transport, None)
        if conn is not None:
            self._start(conn, transport)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        conn = self._conn
        pending = None
        if self._started:
            try:
                self.protocol.connection_lost(exc)
            except BaseException as error:
                pending = failed(self._conn_id, "connection_lost", error)
        if conn is not None:
            reason = CloseReason.ERROR if exc is not None else CloseReason.PEER if self._eof else CloseReason.CLOSED
            self._manager._end(conn, reason)
        propagate(pending)

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

    def abort(self) -> None:
        """Drop the connection now."""
        self.transport.abort()  # type: ignore[union-attr]  # set before the manager knows the adapter

    def __repr__(self) -> str:
        # Named in the loop's reports of what the protocol's methods raise.
        return f"<conntable connection {self._conn_id}: {type(self.protocol).__qualname__}>"

    # -- internals -----------------------------------------------------------
    def _admit(self, transport: asyncio.BaseTransport, tls: Optional[TLSUpgrade]) -> Optional[Connection]:
        """Register with the manager; None, with the transport aborted, if that failed."""
        try:
            conn = self._conn = self._manager._register(self, UNREAD, tls)
        except BaseException as exc:  # e.g. a custom table that is full: never leave a socket unmanaged
            logger.error("could not register a new connection; aborting it", exc_info=exc)
            transport.abort()
            propagate(exc if isinstance(exc, EXITS) else None)
            return None
        self._conn_id = conn.id
        protocol = self.protocol
        if isinstance(protocol, _ManagedMixin):
            protocol.connection = conn
            protocol.manager = self._manager
        return conn

    def _start(self, conn: Connection, transport: asyncio.BaseTransport) -> None:
        """Hand the connection to the user's protocol: ``connection_rejected``, or ``connection_made``."""
        if conn.close_reason is CloseReason.REJECTED:
            self._refuse()
            return
        protocol = self.protocol
        self._started = True
        try:
            getattr(protocol, self._DELIVER)  # no such method: a factory that made no protocol
            # The first byte ends the handshake; after that the user's method is called directly.
            self._deliver = _Adapter._first_data if conn.state is ConnectionState.NEW else None
            protocol.connection_made(transport)
        except BaseException as exc:
            pending = failed(conn.id, "connection_made", exc)
            conn.close_reason = conn.close_reason or CloseReason.ERROR
            transport.abort()  # connection_lost follows and ends the connection
            propagate(pending)

    def _refuse(self) -> None:
        conn = self._conn
        if conn is not None and conn.state is ConnectionState.ABORTING:  # no room to wait for an answer
            assert self.transport is not None
            self.transport.abort()
            return
        self._call_hook("connection_rejected")

    def _call_hook(self, hook: str, *args: Any) -> None:
        """Call a :class:`ManagedProtocol` hook; a plain protocol, or a failed hook, gets ``close()``."""
        transport = self.transport
        assert transport is not None
        pending = None
        if isinstance(self.protocol, _ManagedMixin):
            try:
                getattr(self.protocol, hook)(transport, *args)
                return
            except BaseException as exc:
                pending = failed(self._conn_id, hook, exc)
        transport.close()
        propagate(pending)

    def _first_data(self, data: Any) -> None:
        self._deliver = None
        self._manager._first_activity(self._conn)  # type: ignore[arg-type]
        getattr(self.protocol, self._DELIVER)(data)


class _StreamAdapter(_Adapter, asyncio.Protocol):
    __slots__ = ()
    _DELIVER = "data_received"

    def data_received(self, data: bytes) -> None:
        """Record activity, then hand the data on."""
        try:
            self._manager.touch(self._conn_id)
        except KeyError:  # already forgotten by a forced end: still deliver
            pass
        deliver = self._deliver
        if deliver is None:
            self.protocol.data_received(data)  # type: ignore[attr-defined]
        else:
            deliver(self, data)


class _BufferedAdapter(_Adapter, asyncio.BufferedProtocol):
    __slots__ = ("_get_buffer",)
    _DELIVER = "buffer_updated"

    def __init__(self, manager: "ConnectionManager", protocol: asyncio.BaseProtocol) -> None:
        super().__init__(manager, protocol)
        # Where the transport's buffer comes from: None for the user's protocol, else get(adapter, sizehint).
        self._get_buffer: Optional[Callable[[Any, int], Any]] = None

    def _refuse(self) -> None:
        self._get_buffer = _discard_buffer
        super()._refuse()

    def get_buffer(self, sizehint: int) -> Any:
        get = self._get_buffer
        if get is None:
            return self.protocol.get_buffer(sizehint)  # type: ignore[attr-defined]
        return get(self, sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        """Record activity, then hand the data on."""
        try:
            self._manager.touch(self._conn_id)
        except KeyError:  # already forgotten by a forced end: still deliver
            pass
        deliver = self._deliver
        if deliver is None:
            self.protocol.buffer_updated(nbytes)  # type: ignore[attr-defined]
        else:
            deliver(self, nbytes)


class _FactoryFailed(ManagedProtocol):
    """Stands in for the protocol that a factory failed to build: its connection is counted, then aborted.

    Without it, asyncio would keep the accepted socket open until the garbage
    collector found it. What the factory raised is logged with the id the
    connection gets, and KeyboardInterrupt/SystemExit propagate once it ended.
    """

    def __init__(self, error: BaseException) -> None:
        self.error: Optional[BaseException] = error

    def _report(self) -> None:
        error, self.error = self.error, None
        if error is not None:
            pending = failed(self.connection.id, "the protocol factory", error)
            if pending is not None:
                self.add_cleanup(lambda _reason: propagate(pending))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._report()
        self.connection.close_reason = CloseReason.ERROR
        transport.abort()

    def connection_rejected(self, transport: asyncio.BaseTransport) -> None:
        self._report()
        transport.close()


def _answers_refusals(protocol: asyncio.BaseProtocol) -> bool:
    """Whether ``protocol`` has a ``connection_rejected`` of its own (that may want to write)."""
    return isinstance(protocol, _ManagedMixin) and type(protocol).connection_rejected is not (
        _ManagedMixin.connection_rejected
    )


class _TLSMixin:
    """The TLS adapters' part: register at accept, upgrade, then start the user's protocol (see ``_tls``).

    The TLS layer hands over the first application data (and an EOF) in the
    same call that completes the handshake, before ``start_tls`` returns:
    until the user's protocol has started, what arrives is held and then
    replayed to it, in order, after its ``connection_made``.
    """

    __slots__ = ()
    # Provided by _Adapter, and by the concrete classes' slots:
    _tls: TLSUpgrade
    _handshake: Optional["asyncio.Task[None]"]
    _early: Optional[List[bytes]]  # data that arrived before the user's protocol started
    _scratch: memoryview  # where the TLS layer writes it (buffered adapters)

    def _setup_tls(self, tls: TLSUpgrade) -> None:
        adapter: Any = self
        self._tls = tls
        self._handshake = None
        self._early = None
        adapter._deliver = _TLSMixin._hold
        if isinstance(self, _BufferedAdapter):
            adapter._get_buffer = _TLSMixin._hold_buffer

    def _hold(self, data: Any) -> None:
        chunk = bytes(self._scratch[:data]) if isinstance(self, _BufferedAdapter) else bytes(data)
        if self._early is None:
            self._early = []
        self._early.append(chunk)

    def _hold_buffer(self, sizehint: int) -> memoryview:
        self._scratch = memoryview(bytearray(sizehint if sizehint > 0 else 65536))
        return self._scratch

    def _replay(self, conn: Connection, transport: asyncio.BaseTransport, early: List[bytes]) -> None:
        """Hand the held data, as the transport would have, to the protocol it now feeds.

        That is this adapter (which passes it on to the user's protocol, or
        discards it for a refused connection), or whatever a refusal hook put
        on the transport (``conntable.websockets`` puts its 503 responder).
        """
        adapter: Any = self
        target: Any = transport.get_protocol()
        try:
            for chunk in early:
                if conn.state is ConnectionState.CLOSED or transport.is_closing():
                    return
                if isinstance(target, asyncio.BufferedProtocol):
                    view = memoryview(chunk)
                    while view:
                        buffer = memoryview(target.get_buffer(len(view))).cast("B")
                        size = min(len(buffer), len(view))
                        if not size:
                            raise RuntimeError("get_buffer() returned an empty buffer")
                        buffer[:size] = view[:size]
                        view = view[size:]
                        target.buffer_updated(size)
                else:
                    target.data_received(chunk)
            if adapter._eof and not transport.is_closing():
                target.eof_received()
        except BaseException as exc:  # as the transport does when the protocol fails: abort
            pending = failed(conn.id, "receiving the first data", exc)
            transport.abort()
            propagate(pending)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        adapter: Any = self
        adapter.transport = transport
        conn = adapter._admit(transport, self._tls)
        if conn is None:
            return
        if isinstance(adapter.protocol, _FactoryFailed):  # no protocol to hand it to: no TLS work
            adapter._start(conn, transport)
            return
        if conn.close_reason is CloseReason.REJECTED and (
            conn.state is ConnectionState.ABORTING or not _answers_refusals(adapter.protocol)
        ):
            adapter._refuse()  # closed before any TLS work: nobody would answer it, or no room to
            return
        manager = adapter._manager
        try:
            self._handshake = start_now(manager._loop, self._upgrade(transport, conn), f"conntable-tls-{conn.id}")
        except BaseException as exc:  # start_tls refused the transport
            pending = failed(conn.id, "starting TLS", exc)
            conn.close_reason = conn.close_reason or CloseReason.ERROR
            transport.abort()  # connection_lost (still ours) ends the connection
            propagate(pending)
            return
        manager._adopt(conn, self._handshake)  # cancelled if the connection ends another way

    async def _upgrade(self, raw: asyncio.Transport, conn: Connection) -> None:
        adapter: Any = self
        manager = adapter._manager
        tls = self._tls
        try:
            # asyncio's own handshake timeout is a backstop: the manager's deadline comes first.
            secure = await manager._loop.start_tls(
                raw, self, tls.context, server_side=True,
                ssl_handshake_timeout=tls.handshake_timeout + manager.close_timeout,
                ssl_shutdown_timeout=tls.shutdown_timeout,
            )
        except BaseException as exc:
            self._handshake = None
            logger.debug("connection %d: TLS handshake failed: %r", conn.id, exc)
            manager._end(conn, handshake_failure(exc))
            if isinstance(exc, (asyncio.CancelledError, *EXITS)):
                raise
            return
        self._handshake = None
        early, self._early = self._early, None
        adapter._deliver = _discard  # _start sets the user's
        if isinstance(self, _BufferedAdapter):
            adapter._get_buffer = None  # the user's protocol's
        # Closed during the handshake: asyncio returns None, uvloop a transport already closing.
        if secure is None or secure.is_closing() or conn.state in (ConnectionState.ABORTING, ConnectionState.CLOSED):
            if secure is not None and not secure.is_closing():
                secure.abort()
            manager._end(conn, handshake_failure(None))
            return
        adapter.transport = secure
        if conn.close_reason is not None and conn.close_reason is not CloseReason.REJECTED:
            secure.close()  # asked to close during the handshake, which still got done
            return
        manager._tls_established(conn)
        adapter._start(conn, secure)
        if early or adapter._eof:
            self._replay(conn, secure, early or [])

    def request_close(self, reason: CloseReason) -> None:
        adapter: Any = self
        if self._handshake is not None:  # the user's protocol has not started: nothing to say
            adapter.transport.close()
        else:
            _Adapter.request_close(adapter, reason)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        adapter: Any = self
        if self._handshake is not None:  # the TLS layer gave up on the handshake (its task ends it too)
            adapter._manager._end(adapter._conn, handshake_failure(exc))
        else:
            _Adapter.connection_lost(adapter, exc)


class _TLSStreamAdapter(_TLSMixin, _StreamAdapter):
    __slots__ = ("_tls", "_handshake", "_early")

    def __init__(self, manager: "ConnectionManager", protocol: asyncio.BaseProtocol, tls: TLSUpgrade) -> None:
        super().__init__(manager, protocol)
        self._setup_tls(tls)


class _TLSBufferedAdapter(_TLSMixin, _BufferedAdapter):
    __slots__ = ("_tls", "_handshake", "_early", "_scratch")

    def __init__(self, manager: "ConnectionManager", protocol: asyncio.BaseProtocol, tls: TLSUpgrade) -> None:
        super().__init__(manager, protocol)
        self._setup_tls(tls)

    def get_buffer(self, sizehint: int) -> memoryview:
        # asyncio's TLS layer fills the buffer through slices of it (buf[offset:]); the slices of
        # a bytearray, which get_buffer commonly returns, are copies: without the view, data is lost.
        return memoryview(_BufferedAdapter.get_buffer(self, sizehint))


def adapter_for(
    manager: "ConnectionManager", factory: Callable[[], asyncio.BaseProtocol], tls: Optional[TLSUpgrade] = None
) -> _Adapter:
    """The adapter for one connection, around ``factory()``: buffered for a BufferedProtocol, else stream."""
    try:
        protocol = factory()
    except BaseException as exc:  # the stand-in reports it with the connection's id
        protocol = _FactoryFailed(exc)
    # (A factory that returns something that is no protocol fails in _start, aborted and logged.)
    buffered = isinstance(protocol, asyncio.BufferedProtocol)
    if tls is not None:
        return (_TLSBufferedAdapter if buffered else _TLSStreamAdapter)(manager, protocol, tls)
    return _BufferedAdapter(manager, protocol) if buffered else _StreamAdapter(manager, protocol)
