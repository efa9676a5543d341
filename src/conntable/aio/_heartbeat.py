"""One heartbeat for every connection that can ping, on one timer wheel: no task or timer per connection.

websockets' keepalive runs a task per connection, aiohttp's a timer handle
per connection. A :class:`Heartbeat` keeps, for each watched connection, the
one moment something must happen to it in a ``conntable.ConnectionTable``
(a deadline per entry), and one :class:`Sweeper` sleeps until the earliest.
Per connection, a small state machine:

* quiet: due ``ping_interval`` after the last activity the manager recorded
  (every ``data_received`` is one). A busy connection is not pinged: when its
  deadline comes, the heartbeat finds newer activity and moves the deadline
  (lazy re-arm: one callback per ``ping_interval`` at most, none per frame).
  A connection quiet for the whole interval gets ``peer.heartbeat_ping()``.
* pinged: looked at again ``min(ping_interval, ping_timeout)`` after the
  ping, then ``ping_timeout`` after it. Any byte from the peer since the ping
  (the pong, or anything else) proves it alive: quiet again. Unanswered after
  ``ping_timeout``: ``peer.heartbeat_failed()`` (a close frame 1011) and
  ``manager.closing(conn, CloseReason.PING_TIMEOUT)``, so the manager aborts
  the connection if it is still there ``close_timeout`` later, and counts it
  under ``ping_timeout``. The heartbeat forgets it.

What a protocol must offer (:class:`Pingable`): ``heartbeat_ping()`` and
``heartbeat_failed()``, which write at once and never await, and
``heartbeat_open()``, whether pinging makes sense now (False while a closing
handshake is under way: whoever started it times it out). The answer is read
from the manager's activity record rather than from a pong waiter, so a pong
needs no code at all.

A connection whose beat raises (any BaseException) is logged with its id
and aborted through the manager; the other connections' beats go on, and so
does the sweeper (KeyboardInterrupt and SystemExit propagate from the loop
afterwards, see ``_log``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, List, Optional

import conntable
from conntable import Expired
from conntable._common import check_timeout

from ._arguments import optional_seconds
from ._connection import CloseReason
from ._log import failed, logger as aio_logger, propagate
from ._sweeper import Sweeper

if TYPE_CHECKING:
    from typing import Protocol

    from ._manager import ConnectionManager

    class Pingable(Protocol):
        def heartbeat_ping(self) -> None: ...
        def heartbeat_failed(self) -> None: ...
        def heartbeat_open(self) -> bool: ...

__all__ = ("Heartbeat", "heartbeat_resolution")

#: Most connections handled per sweeper pass (the sweeper adapts below this).
EXPIRE_BATCH = 1000

# Where a watched connection is in its cycle (kept in the heartbeat's own entry).
_QUIET = 0
_PINGED = 1


class _Beat:
    """The heartbeat's entry for one connection."""

    __slots__ = ("peer", "state", "mark", "sent")

    def __init__(self, peer: "Pingable") -> None:
        self.peer = peer
        self.state = _QUIET
        self.mark = 0.0  # the recorded activity when the last ping went out
        self.sent = 0.0  # when it went out


def heartbeat_resolution(ping_interval: Optional[float], ping_timeout: Optional[float], default: float) -> float:
    """The ``resolution`` of a manager made for a heartbeat: ``default``, or finer for sub-second pings.

    :class:`Heartbeat` needs ``ping_interval`` at least twice the manager's
    resolution; so that ``ping_timeout`` is timed as finely, it gets the same
    room: half the shortest of the two (None: off), at most ``default``. The
    arguments are checked already (``check_seconds``).
    """
    finest = min(t for t in (ping_interval, ping_timeout, 2 * default) if t is not None)
    return finest / 2


class Heartbeat:
    """Pings quiet connections of one manager and fails unresponsive ones.

    ``ping_interval``: ping a connection after this long without a byte from
    the peer; it must be at least twice the manager's ``resolution`` (the
    precision of recorded activity). ``ping_timeout``: fail it if nothing
    arrives this long after the ping (None: never). ``close_timeout``: abort a
    failed connection whose peer does not close within this long (default:
    the manager's). ``logger``: where a failing beat is reported.
    """

    def __init__(
        self,
        manager: "ConnectionManager",
        ping_interval: float,
        ping_timeout: Optional[float],
        close_timeout: Optional[float] = None,
        *,
        logger: logging.Logger = aio_logger,
    ) -> None:
        ping_interval = check_timeout("ping_interval", ping_interval)
        ping_timeout = optional_seconds("ping_timeout", ping_timeout)
        close_timeout = manager.close_timeout if close_timeout is None else check_timeout("close_timeout", close_timeout)
        # A pong is recognised by activity recorded after the ping's mark; the
        # manager records activity up to one ``resolution`` early, so the
        # interval must leave room for that (see _beat).
        if not ping_interval >= 2 * manager.resolution:
            raise ValueError(
                f"ping_interval must be at least twice the manager's resolution "
                f"({manager.resolution} s), got {ping_interval!r}"
            )
        self._manager = manager
        self._logger = logger
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self._table: Optional[conntable.ConnectionTable] = None
        self._sweeper: Optional[Sweeper] = None
        #: Pings sent and connections failed.
        self.pings_sent = 0
        self.failures = 0

    def __len__(self) -> int:
        """Connections watched."""
        return 0 if self._table is None else len(self._table)

    def watch(self, conn_id: int, peer: "Pingable") -> None:
        """Start the cycle of connection ``conn_id`` of the manager (its handshake just succeeded)."""
        loop = asyncio.get_running_loop()
        if self._table is None:
            self._start(loop)
        assert self._table is not None and self._sweeper is not None
        due = loop.time() + self.ping_interval
        self._table.add(conn_id, _Beat(peer), deadline=due)  # idle: the table's, math.inf
        self._sweeper.wake_if_earlier(due)

    def forget(self, conn_id: int) -> None:
        """Stop watching a connection (a no-op if it is not watched)."""
        if self._table is not None:
            self._table.pop(conn_id, None)

    async def stop(self) -> None:
        """Stop the sweeper (every connection has been forgotten by then); ``watch`` starts it again."""
        if self._sweeper is not None:
            await self._sweeper.stop()
        self._table = self._sweeper = None

    # -- the cycle ---------------------------------------------------------------
    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._table = conntable.ConnectionTable(math.inf, resolution=self._manager.resolution, now=loop.time())
        self._sweeper = Sweeper(loop, self._table, EXPIRE_BATCH, self._on_due)
        self._sweeper.start()

    def _on_due(self, expired: List[Expired], now: float) -> None:
        table = self._table
        assert table is not None
        for conn_id, beat, _why in expired:
            try:
                due = self._beat(conn_id, beat, now)
            except BaseException as exc:  # do not let one connection stop the others' heartbeat
                pending = failed(conn_id, "heartbeat (aborting the connection)", exc, self._logger)
                conn = self._manager.get(conn_id)
                if conn is not None:
                    self._manager.abort(conn)
                propagate(pending)
                continue
            if due is not None:
                # The sweeper is awake and looks at the table again before it sleeps: no wake-up needed.
                # (The table's own idle timeout is math.inf: no keyword to parse per re-arm.)
                table.add(conn_id, beat, deadline=due)

    def _beat(self, conn_id: int, beat: _Beat, now: float) -> Optional[float]:
        """Advance one connection's cycle; return when it is due next, or None to forget it."""
        manager = self._manager
        try:
            # One lookup: a connection in the manager's table is not closed (an ended one leaves it).
            last = manager._table.last_activity(conn_id)
        except KeyError:  # gone; the integration forgets it too, this covers the rest
            return None
        peer = beat.peer
        if not peer.heartbeat_open():  # closing: whoever started it times it out
            return None
        # Activity is recorded on the manager's clock, which lags by up to
        # ``resolution``; the mark is a recorded value that is at least
        # ``ping_interval`` old when the ping goes out, so anything the peer
        # sends after the ping is recorded later than the mark.
        if beat.state == _PINGED and last > beat.mark:
            beat.state = _QUIET
        if beat.state == _QUIET:
            quiet_until = last + self.ping_interval
            if quiet_until > now:
                return quiet_until
            peer.heartbeat_ping()
            self.pings_sent += 1
            beat.mark, beat.sent = last, now
            if self.ping_timeout is None:
                return now + self.ping_interval
            beat.state = _PINGED
            # Look again after ping_interval at the latest: an answer by then
            # puts the connection back on the ping_interval cycle, as
            # websockets' keepalive does after a pong, however long ping_timeout is.
            return now + min(self.ping_interval, self.ping_timeout)
        # Pinged, and not a byte since the ping.
        fail_at = beat.sent + self.ping_timeout  # type: ignore[operator]
        if now < fail_at:
            return fail_at
        self.failures += 1
        conn = manager.get(conn_id)
        if conn is not None:  # before the close frame: the reason wins
            manager.closing(conn, CloseReason.PING_TIMEOUT, timeout=self.close_timeout)
        peer.heartbeat_failed()
        return None
