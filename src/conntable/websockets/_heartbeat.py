"""One heartbeat for every connection of a server, on a timer wheel.

websockets' own keepalive runs a task per connection that sleeps
``ping_interval``, pings, and waits up to ``ping_timeout`` for the pong. Here
one :class:`Heartbeat` per server keeps, for each open WebSocket, the one
moment something must happen to it in a ``conntable.ConnectionTable`` (a
deadline per entry) and the manager's sweeper class sleeps until the earliest
one. What happens, per connection, is a small state machine:

* ``QUIET``: due ``ping_interval`` after the last byte the peer sent. The
  manager records that activity on every ``data_received``, so a busy
  connection is not pinged: when its deadline comes, the heartbeat finds
  newer activity and moves the deadline (lazy re-arm: one callback per
  ``ping_interval`` at most, none per frame). A connection quiet for the whole
  interval gets a ping and becomes ``PINGED``.
* ``PINGED``: due ``min(ping_interval, ping_timeout)`` after the ping, then
  (if still unanswered) ``ping_timeout`` after it. Any byte from the peer
  since the ping (the pong, or anything else) proves it alive: back to
  ``QUIET``, so an answered connection is pinged every ``ping_interval`` or
  so, as with websockets. Unanswered after ``ping_timeout``, the connection
  is failed with close code 1011, as websockets' keepalive does, and
  becomes ``FAILED``.
* ``FAILED``: due ``close_timeout`` later; if the transport is still there,
  it is aborted.

No task per connection and no task per ping: pings and close frames are
written synchronously through the Sans-I/O protocol (see
``ServerConnection._write_ping`` and ``_write_failure``), and the answer is
read from the manager's activity record rather than from a pong waiter.

A connection whose beat raises (a ``create_connection`` subclass, a failing
transport, a custom table of the manager's: any BaseException) is logged
with its id and aborted; the other connections' beats go on, and so does the
heartbeat's sweeper (KeyboardInterrupt and SystemExit propagate from the loop
afterwards, as in ``conntable.aio``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from typing import TYPE_CHECKING, List, Optional

import conntable
from conntable import Expired
from conntable._common import check_timeout
from conntable.aio import ConnectionManager, Sweeper
from conntable.aio._arguments import optional_seconds
from conntable.aio._log import failed, propagate
from websockets.protocol import State

if TYPE_CHECKING:
    from ._connection import ServerConnection

__all__ = ("Heartbeat", "Beat")

logger = logging.getLogger("conntable.websockets")

#: Most connections handled per sweeper pass (the sweeper adapts below this).
EXPIRE_BATCH = 1000


class Beat(enum.Enum):
    """Where a connection is in the heartbeat's cycle."""

    QUIET = "quiet"
    PINGED = "pinged"
    FAILED = "failed"


class Heartbeat:
    """Pings quiet connections and fails unresponsive ones, for all connections of one server.

    ``ping_interval``: ping a connection after this long without a byte from
    the peer. ``ping_timeout``: fail it (close code 1011) if nothing arrives
    this long after the ping (None: never). ``close_timeout``: abort a failed
    connection whose peer does not close within this long.
    """

    def __init__(
        self,
        manager: ConnectionManager,
        ping_interval: float,
        ping_timeout: Optional[float],
        close_timeout: float,
    ) -> None:
        ping_interval = check_timeout("ping_interval", ping_interval)
        ping_timeout = optional_seconds("ping_timeout", ping_timeout)
        close_timeout = check_timeout("close_timeout", close_timeout)
        # A pong is recognised by activity recorded after the ping's mark; the
        # manager records activity up to one ``resolution`` early, so the
        # interval must leave room for that (see _beat).
        if not ping_interval >= 2 * manager.resolution:
            raise ValueError(
                f"ping_interval must be at least twice the manager's resolution "
                f"({manager.resolution} s), got {ping_interval!r}"
            )
        self._manager = manager
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self._table: Optional[conntable.ConnectionTable] = None
        self._sweeper: Optional[Sweeper] = None
        #: Pings sent and connections failed, for tests and stats.
        self.pings_sent = 0
        self.failures = 0

    def __len__(self) -> int:
        return 0 if self._table is None else len(self._table)

    # -- what connections call -------------------------------------------------
    def watch(self, ws: "ServerConnection") -> None:
        """Start the cycle of a connection whose opening handshake just succeeded."""
        loop = ws.loop
        if self._table is None:
            self._start(loop)
        assert self._table is not None and self._sweeper is not None
        ws._beat = Beat.QUIET
        due = loop.time() + self.ping_interval
        self._table.add(ws.connection.id, ws, idle_timeout=math.inf, deadline=due)
        self._sweeper.wake_if_earlier(due)

    def forget(self, ws: "ServerConnection") -> None:
        """Stop watching a connection that is gone (a no-op if it was never watched)."""
        if self._table is not None:
            self._table.pop(ws.connection.id, None)

    async def stop(self) -> None:
        """Stop the sweeper (when the server closed: every connection has been forgotten by then)."""
        if self._sweeper is not None:
            await self._sweeper.stop()

    # -- the cycle ---------------------------------------------------------------
    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._table = conntable.ConnectionTable(math.inf, resolution=self._manager.resolution, now=loop.time())
        self._sweeper = Sweeper(loop, self._table, EXPIRE_BATCH, self._on_due)
        self._sweeper.start()

    def _on_due(self, expired: List[Expired], now: float) -> None:
        table = self._table
        assert table is not None
        for conn_id, ws, _why in expired:
            try:
                due = self._beat(conn_id, ws, now)
            except BaseException as exc:  # do not let one connection stop the others' heartbeat
                pending = failed(conn_id, "heartbeat (aborting the connection)", exc, logger)
                self._abort(conn_id, ws)
                propagate(pending)
                continue
            if due is not None:
                # The sweeper is awake and looks at the table again before it
                # sleeps: re-adding needs no wake-up.
                table.add(conn_id, ws, idle_timeout=math.inf, deadline=due)

    @staticmethod
    def _abort(conn_id: int, ws: "ServerConnection") -> None:
        try:
            ws.transport.abort()
        except BaseException as exc:
            propagate(failed(conn_id, "aborting after a heartbeat failure", exc, logger))

    def _beat(self, conn_id: int, ws: "ServerConnection", now: float) -> Optional[float]:
        """Advance one connection's cycle; return when it is due next, or None to forget it."""
        record = self._manager.get(conn_id)
        last = None if record is None else record.last_activity
        if last is None:  # gone; connection_lost forgets it too, this covers the rest
            return None
        if ws._beat is Beat.FAILED:  # failed close_timeout ago, and still there
            ws.transport.abort()
            return None
        if ws.protocol.state is not State.OPEN:  # closing: whoever started it times it out
            return None
        # Activity is recorded on the manager's clock, which lags by up to
        # ``resolution``; the mark is a recorded value that is at least
        # ``ping_interval`` old when the ping goes out, so anything the peer
        # sends after the ping is recorded later than the mark.
        if ws._beat is Beat.PINGED and last > ws._beat_mark:
            ws._beat = Beat.QUIET
        if ws._beat is Beat.QUIET:
            quiet_until = last + self.ping_interval
            if quiet_until > now:
                return quiet_until
            ws._write_ping()
            self.pings_sent += 1
            ws._beat_mark, ws._beat_sent = last, now
            if self.ping_timeout is None:
                return now + self.ping_interval
            ws._beat = Beat.PINGED
            # Look again after ping_interval at the latest: an answer by then
            # puts the connection back on the ping_interval cycle, as
            # websockets' keepalive does after a pong, however long ping_timeout is.
            return now + min(self.ping_interval, self.ping_timeout)
        # PINGED, and not a byte since the ping.
        fail_at = ws._beat_sent + self.ping_timeout  # type: ignore[operator]
        if now < fail_at:
            return fail_at
        ws._write_failure(1011, "keepalive ping timeout")
        self.failures += 1
        ws._beat = Beat.FAILED
        return now + self.close_timeout
