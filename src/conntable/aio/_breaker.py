"""Admission control: refuse new connections before the process runs out of them.

Two conditions open the breaker: the manager holds ``max_connections``, or
fewer than ``fd_reserve`` file descriptors are left under the process's
limit. It closes again only below a low-water mark (90% of
``max_connections``, and the reserve plus the same margin of free
descriptors), so that it does not flap at the edge.

Counting descriptors by listing ``/proc/self/fd`` costs O(open descriptors),
too much per accept at 100k connections. The breaker instead keeps an
estimate: the descriptors the process had that are not the manager's
connections (measured), plus one per connection the manager holds (known
exactly). The measurement is refreshed at most once per
``remeasure_interval`` seconds of accepts, and whenever asked (the manager
asks on every :meth:`ConnectionManager.stats`), so descriptors the rest of
the program opens are noticed too.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from ._resources import count_open_fds, fd_limit as process_fd_limit

__all__ = ("CircuitBreaker", "default_fd_reserve")

#: Accepting resumes below this fraction of the limits.
RESUME_RATIO = 0.9
#: Without a descriptor limit to derive it from (Windows), the default cap.
FALLBACK_MAX_CONNECTIONS = 10_000


def default_fd_reserve(limit: int) -> int:
    """Descriptors kept free for everything but connections: 5% of the limit, at least 16."""
    return max(16, limit // 20)


class CircuitBreaker:
    """Decides, per new connection, whether to admit it.

    ``fd_limit`` and ``count_fds`` default to the process's soft
    RLIMIT_NOFILE and a count of its open descriptors; tests inject others.
    """

    __slots__ = (
        "max_connections", "resume_below", "fd_limit", "fd_reserve", "fd_resume_free",
        "is_open", "trips", "_count_fds", "_other_fds", "_measured_at", "_remeasure_interval",
    )

    def __init__(
        self,
        max_connections: Optional[int] = None,
        *,
        fd_reserve: Optional[int] = None,
        fd_limit: Optional[int] = None,
        count_fds: Callable[[], Optional[int]] = count_open_fds,
        remeasure_interval: float = 1.0,
    ) -> None:
        limit = process_fd_limit() if fd_limit is None else fd_limit
        self._count_fds = count_fds
        self._remeasure_interval = remeasure_interval
        self._measured_at = -math.inf
        self._other_fds = count_fds() or 0
        #: The process's descriptor limit, or None where there is none to watch.
        self.fd_limit = limit
        #: Free descriptors below which the breaker opens.
        self.fd_reserve = 0 if limit is None else default_fd_reserve(limit) if fd_reserve is None else fd_reserve
        if max_connections is None:
            if limit is None:
                max_connections = FALLBACK_MAX_CONNECTIONS
            else:
                max_connections = max(1, limit - self.fd_reserve - self._other_fds)
        elif max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections}")
        #: Connections held at which the breaker opens.
        self.max_connections = max_connections
        #: Connections held below which an open breaker may close.
        self.resume_below = max(1, int(max_connections * RESUME_RATIO))
        #: Free descriptors above which an open breaker may close.
        self.fd_resume_free = self.fd_reserve + (max_connections - self.resume_below)
        #: Whether new connections are being refused.
        self.is_open = False
        #: How many times the breaker opened.
        self.trips = 0

    def free_fds(self, held: int) -> Optional[int]:
        """Estimated free descriptors while the manager holds ``held`` connections."""
        if self.fd_limit is None:
            return None
        return self.fd_limit - self._other_fds - held

    def resync(self, held: int, now: float = math.inf) -> Optional[int]:
        """Measure the open descriptors; return the count (None if unknown).

        ``held`` is the number of descriptors the manager's connections hold
        at the moment of measuring, including one just accepted.
        """
        fds = self._count_fds()
        if fds is not None:
            self._other_fds = max(0, fds - held)
            self._measured_at = now
        return fds

    def admit(self, held: int, now: float) -> bool:
        """Whether to admit a connection just accepted, the manager holding ``held`` others."""
        if now - self._measured_at >= self._remeasure_interval:
            self.resync(held + 1, now)
        # The new connection's descriptor already exists: count it.
        free = self.free_fds(held + 1)
        if self.is_open:
            if held < self.resume_below and (free is None or free >= self.fd_resume_free):
                self.is_open = False
                return True
            return False
        if held >= self.max_connections or (free is not None and free < self.fd_reserve):
            self.is_open = True
            self.trips += 1
            return False
        return True
