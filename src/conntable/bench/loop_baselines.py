"""Registries that give every connection its own event-loop timer.

* :class:`CallLaterRegistry` -- one ``loop.call_later`` handle per connection,
  cancelled and re-armed on every activity (uvicorn's keep-alive, aiocache).
* :class:`LazyCallAtRegistry` -- one ``loop.call_at`` handle per connection;
  activity only moves the close time, and the handle re-arms itself when it
  fires early (aiohttp's keep-alive).

The loop runs the timers, so an "expiry pass" is one loop iteration
(``advance``); the timer callbacks collect what expired, as a server's would
close the transports. ``timer_callbacks`` counts every callback the loop ran.
"""

from __future__ import annotations

import asyncio
from typing import Any, Dict, List, Optional, Tuple

from .clocks import VirtualClockLoop, run_once


class Timed:
    """A connection's record: its value, its timer handle, and (lazy re-arm) its close time."""

    __slots__ = ("value", "handle", "close_at")

    def __init__(self, value: Any, handle: Optional[asyncio.TimerHandle], close_at: float = 0.0) -> None:
        self.value = value
        self.handle = handle
        self.close_at = close_at


class _LoopRegistry:
    """What both timer-per-connection registries share: the loop, removal, expiry collection."""

    def __init__(self, idle_timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        self._timeout = idle_timeout
        self._loop = loop
        self._conns: Dict[int, Timed] = {}
        self._fire = self._on_timer  # bound once, not per timer
        self._expired: List[Tuple[int, Any]] = []
        self.timer_callbacks = 0

    def __len__(self) -> int:
        return len(self._conns)

    def __delitem__(self, key: int) -> None:
        self._conns.pop(key).handle.cancel()  # type: ignore[union-attr]

    def _on_timer(self, key: int) -> None:
        raise NotImplementedError

    def _close(self, key: int) -> None:
        """The connection timed out: a server would close its transport here."""
        self._expired.append((key, self._conns.pop(key).value))

    def advance(self, now: float) -> None:
        """Give the loop one iteration (at ``now`` on a virtual clock): due timers run."""
        loop = self._loop
        if isinstance(loop, VirtualClockLoop):
            loop.jump(now)
        else:
            run_once(loop)

    def expire(self, now: float) -> List[Tuple[int, Any]]:
        self.advance(now)
        expired, self._expired = self._expired, []
        return expired

    def next_due(self) -> Optional[float]:
        return None  # the loop's own timers wake it


class CallLaterRegistry(_LoopRegistry):
    """One ``call_later`` handle per connection, cancelled and re-armed on every activity."""

    def __init__(self, idle_timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(idle_timeout, loop)
        self._call_later = loop.call_later

    def add(self, key: int, value: Any) -> None:
        self._conns[key] = Timed(value, self._call_later(self._timeout, self._fire, key))

    def touch(self, key: int) -> None:
        conn = self._conns[key]
        conn.handle.cancel()  # type: ignore[union-attr]
        conn.handle = self._call_later(self._timeout, self._fire, key)

    def _on_timer(self, key: int) -> None:
        self.timer_callbacks += 1
        self._close(key)


class LazyCallAtRegistry(_LoopRegistry):
    """One ``call_at`` handle per connection that re-arms itself if it fires early."""

    def __init__(self, idle_timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(idle_timeout, loop)
        self._call_at = loop.call_at
        self._time = loop.time

    def add(self, key: int, value: Any) -> None:
        close_at = self._time() + self._timeout
        self._conns[key] = Timed(value, self._call_at(close_at, self._fire, key), close_at)

    def touch(self, key: int) -> None:
        self._conns[key].close_at = self._time() + self._timeout

    def _on_timer(self, key: int) -> None:
        self.timer_callbacks += 1
        conn = self._conns[key]
        if conn.close_at > self._time():  # active since: sleep again until the new close time
            conn.handle = self._call_at(conn.close_at, self._fire, key)
        else:
            self._close(key)
