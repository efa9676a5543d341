"""A websockets ``ServerConnection`` that a ``ConnectionManager`` holds.

It is websockets' own connection class with conntable's protocol hooks mixed
in (``ManagedProtocol``), so a handler gets everything websockets offers plus
``ws.connection`` (the manager's record), ``ws.spawn(coro)`` and
``ws.add_cleanup(fn)``. The manager reaches it through its usual adapter
(see ``_server``), and it answers the manager's three questions:

* the breaker refused the connection: :meth:`connection_rejected` answers
  the request with HTTP 503 and ``Retry-After``; websockets never sees the
  connection (no handshake, no handler task);
* the manager closes it (idle, lifetime, shutdown): :meth:`close_requested`
  starts the WebSocket closing handshake with code 1001;
* websockets asks for keepalive once the opening handshake succeeded:
  :meth:`start_keepalive` hands the connection to the server's
  :class:`conntable.aio.Heartbeat` instead of starting a task (the
  connection is its ``Pingable``: ``heartbeat_ping``, ``heartbeat_failed``,
  ``heartbeat_open``).

When it ends, :meth:`connection_lost` tells the manager why
(``manager.closing``), read from the closing handshake: a close the server
started (the handler returned, ``await ws.close()``) is ``closed``, one the
client started is ``peer``, a failure the server sent (1011 after the
handler raised, a protocol error) is ``error``; the manager's own reasons
(``idle``, ``shutdown``, ...) and the heartbeat's ``ping_timeout`` were
decided earlier and win.

Writes here never await: they go through the Sans-I/O protocol
(``protocol.send_*``) and ``send_data()``, the two calls websockets' own
``ping()`` and ``close()`` make inside their send context, so that no task
is needed for them. The heartbeat's ping, a constant frame, goes straight to
the transport (``PING_FRAME``) while the connection is open with nothing
queued before it, which is always the case between two of websockets' own
sends; otherwise (or with websockets' debug logging on) it takes the
Sans-I/O path. Flow control does not apply to these few bytes; the
manager's ``close_timeout`` bounds what follows.
"""

from __future__ import annotations

import asyncio
from typing import Dict, Optional, Tuple

from websockets.asyncio.server import ServerConnection as _WebSocketsServerConnection
from websockets.frames import CloseCode
from websockets.protocol import Protocol, State

from conntable.aio import CloseReason, Heartbeat, ManagedProtocol, answer_unavailable, unavailable_response

__all__ = ("ServerConnection", "ServerPolicy")

#: Close frames for the reasons the manager closes a connection. 1001 (going
#: away) is what websockets sends on server shutdown and what clients treat as
#: a normal end (``ConnectionClosedOK``): the server leaves, the client may
#: reconnect when it needs to. The shutdown entry can be changed per server.
CLOSE_FRAMES: Dict[CloseReason, Tuple[int, str]] = {
    CloseReason.IDLE: (CloseCode.GOING_AWAY, "idle timeout"),
    CloseReason.LIFETIME: (CloseCode.GOING_AWAY, "connection lifetime reached"),
    CloseReason.SHUTDOWN: (CloseCode.GOING_AWAY, ""),  # websockets' own: no reason text
}

# The empty payload: pongs to it are unsolicited for websockets, which ignores
# them; the heartbeat only needs to see that the peer sent something.
PING_PAYLOAD = b""
#: That ping as a server writes it: FIN and opcode 9, unmasked, no payload. What
#: ``protocol.send_ping(PING_PAYLOAD)`` serializes: extensions (permessage-deflate)
#: leave control frames alone.
PING_FRAME = b"\x89\x00"


class ServerPolicy:
    """What every connection of one server shares: its heartbeat, its refusal, its close frames."""

    __slots__ = ("heartbeat", "unavailable", "close_frames")

    def __init__(self, heartbeat: Optional[Heartbeat], retry_after: int) -> None:
        self.heartbeat = heartbeat
        self.unavailable = unavailable_response(retry_after)
        #: Per reason, the close code and text; ``Server.close(code, reason)`` changes the shutdown entry.
        self.close_frames: Dict[CloseReason, Tuple[int, str]] = dict(CLOSE_FRAMES)


#: Close codes a server sends when it closes normally; any other it sends is a failure.
_NORMAL_CODES = (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)


def close_reason(protocol: Protocol) -> Optional[CloseReason]:
    """Why a WebSocket ended, from its closing handshake; None if there was none (a reset, a lost peer)."""
    if protocol.close_rcvd_then_sent:  # the client closed first
        return CloseReason.PEER
    sent = protocol.close_sent
    if sent is None:
        return CloseReason.PEER if protocol.close_rcvd is not None else None
    code = sent.code
    return CloseReason.CLOSED if code in _NORMAL_CODES or code >= 3000 else CloseReason.ERROR


class ServerConnection(_WebSocketsServerConnection, ManagedProtocol):
    """websockets' ``ServerConnection``, held by a conntable ``ConnectionManager``.

    Everything of websockets' class works as documented there (``recv``,
    ``send``, ``async for``, ``close``, ``request``, ...), except that
    ``latency`` is not measured: the heartbeat's pings do not wait for their
    pongs. Added: ``connection`` (the manager's :class:`~conntable.aio.Connection`
    record), ``manager``, ``spawn(coro)`` (a task cancelled when the
    connection ends), ``add_cleanup(fn)`` (``fn(reason)`` once, when it ends)
    and ``touch()``.

    Subclass it and pass the subclass as ``create_connection`` to
    :func:`conntable.websockets.serve` to customise connections.
    """

    _policy: ServerPolicy  # set by serve() right after construction

    # -- the manager's hooks ---------------------------------------------------
    def connection_rejected(self, transport: asyncio.BaseTransport) -> None:
        """The breaker is open: answer HTTP 503 before any WebSocket state exists.

        websockets never sees this connection: no handshake, no handler
        task. The response waits for the request's head (a response that
        arrives before the request is sent trips some clients, websockets'
        own among them), then the write side is shut; the peer reads the
        response and closes, and one that does not is aborted by the manager
        after its ``close_timeout``.
        """
        answer_unavailable(transport, self._policy.unavailable)

    def close_requested(self, transport: asyncio.BaseTransport, reason: CloseReason) -> None:
        """The manager closes the connection: a close frame if it is open, else a plain close."""
        state = self.protocol.state
        if state is State.OPEN:
            code, text = self._policy.close_frames.get(reason, (CloseCode.GOING_AWAY, str(reason)))
            self._write_close(code, text)
        elif state is State.CONNECTING:  # no WebSocket yet: nothing to say
            transport.close()
        # CLOSING or CLOSED: a closing handshake is under way; the manager
        # aborts the transport if it is still there after close_timeout.

    # -- websockets' hooks -------------------------------------------------------
    def start_keepalive(self) -> None:
        """Called by websockets once the opening handshake succeeded: join the server's heartbeat."""
        heartbeat = self._policy.heartbeat
        if heartbeat is not None:
            heartbeat.watch(self.connection.id, self)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        super().connection_lost(exc)
        heartbeat = self._policy.heartbeat
        if heartbeat is not None:
            heartbeat.forget(self.connection.id)
        reason = close_reason(self.protocol)
        if reason is not None:
            self.manager.closing(self.connection, reason)

    # -- the heartbeat's hooks (conntable.aio.Heartbeat) ------------------------------
    def heartbeat_ping(self) -> None:
        self._write_ping()

    def heartbeat_failed(self) -> None:
        self._write_failure(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")

    def heartbeat_open(self) -> bool:
        return self.protocol.state is State.OPEN

    # -- writes that need no task --------------------------------------------------
    def _write_close(self, code: int, reason: str) -> None:
        """Start the closing handshake now (what ``close()`` does before it waits)."""
        if self.send_in_progress is not None:  # a fragmented message cannot be finished
            self.protocol.fail(CloseCode.INTERNAL_ERROR, "close during fragmented message")
        else:
            self.protocol.send_close(code, reason)
        self._flush()

    def _write_ping(self) -> None:
        protocol = self.protocol
        if protocol.state is State.OPEN and not protocol.writes and not protocol.debug:
            # The Sans-I/O call would build a Frame, serialize it and hand the same 2 bytes over.
            self.transport.write(PING_FRAME)
            return
        protocol.send_ping(PING_PAYLOAD)
        self._flush()

    def _write_failure(self, code: int, reason: str) -> None:
        """Fail the connection: a close frame, then end of stream (websockets' keepalive timeout path)."""
        self.protocol.fail(code, reason)
        self._flush()

    def _flush(self) -> None:
        try:
            self.send_data()
        except Exception:  # the transport is failing: let it go now
            self.logger.debug("! error while sending data", exc_info=True)
            self.transport.abort()
