"""Admission control: refuse new connections before the process runs out of them.

Two conditions open the breaker: the manager holds ``max_connections``, or
fewer than ``fd_reserve`` (plus ``accept_burst``, below) file descriptors are
left under the process's limit. It closes again only below a low-water mark
(90% of ``max_connections``, and the reserve plus the same margin of free
descriptors), so that it does not flap at the edge. It is looked at when a
connection arrives, when one ends, and when the stats are read.

Counting descriptors by listing ``/proc/self/fd`` costs O(open descriptors),
too much per accept at 100k connections. The breaker instead keeps an
estimate: the descriptors the process had that are not the manager's
connections (measured), plus one per connection the manager holds (known
exactly). The measurement is refreshed at most once per
``remeasure_interval`` seconds of accepts, and whenever asked (the manager
asks on every :meth:`ConnectionManager.stats`), so descriptors the rest of
the program opens are noticed too. A measurement that fails (a listing needs
a descriptor of its own) leaves the estimate as it was.

Accept bursts: the breaker decides in ``connection_made``, but asyncio's
selector event loop accepts up to ``backlog`` sockets per listening socket
each time one is readable, and runs their ``connection_made`` two loop
iterations later. So up to twice the backlog of every listening socket can be
open before the manager sees one of them. ``accept_burst`` is that many
descriptors (set by the manager for its servers on that loop, 0 elsewhere):
they are kept free on top of ``fd_reserve``, and the manager stops reading
its listening sockets whenever they are not (:meth:`burst_fits`).

Refusals: a refused connection is still a descriptor until it is closed,
and a protocol that answers refusals (an HTTP 503, after a TLS handshake)
holds it until the peer has read the answer, up to ``close_timeout``. A flood
of silent clients would fill the reserve with such refusals. So a refusal
is answered only while at least half the reserve would stay free
(:meth:`can_answer`); otherwise the manager aborts it at once. A refusal that
answers and closes at once never gets near that; silent ones held for their
answer cannot take more than half the reserve.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

from conntable._common import check_size

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
        "max_connections", "resume_below", "fd_limit", "fd_reserve", "fd_resume_free", "accept_burst",
        "remeasure_interval", "is_open", "trips",
        "_default_max", "_count_fds", "_other_fds", "_measured", "_measured_at",
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
        if max_connections is not None:
            check_size("max_connections", max_connections, minimum=1)
        if fd_reserve is not None:
            check_size("fd_reserve", fd_reserve, minimum=0)
        limit = process_fd_limit() if fd_limit is None else fd_limit
        self._count_fds = count_fds
        #: Seconds of accepts between two measurements of the open descriptors.
        self.remeasure_interval = remeasure_interval
        self._measured_at = -math.inf
        fds = count_fds()
        self._measured = fds is not None  # a count succeeded once: the estimate means something
        self._other_fds = fds or 0
        #: The process's descriptor limit, or None where there is none to watch.
        self.fd_limit = limit
        #: Free descriptors below which the breaker opens.
        self.fd_reserve = 0 if limit is None else default_fd_reserve(limit) if fd_reserve is None else fd_reserve
        if limit is not None and fd_reserve is not None and fd_reserve >= limit - self._other_fds:
            raise ValueError(
                f"fd_reserve={fd_reserve} leaves no file descriptor for connections: the limit "
                f"(RLIMIT_NOFILE) is {limit} and {self._other_fds} are open already"
            )
        #: Descriptors kept free, on top of ``fd_reserve``, for sockets the loop accepts before
        #: the manager sees them (see the module docstring).
        self.accept_burst = 0
        self._default_max = max_connections is None
        #: Connections held at which the breaker opens.
        self.max_connections = FALLBACK_MAX_CONNECTIONS if max_connections is None else max_connections
        #: Connections held below which an open breaker may close.
        self.resume_below = 0
        #: Free descriptors above which an open breaker may close.
        self.fd_resume_free = 0
        self._derive()
        #: Whether new connections are being refused.
        self.is_open = False
        #: How many times the breaker opened.
        self.trips = 0

    def _derive(self) -> None:
        """The thresholds that follow from the limits, the reserve and the accept burst."""
        if self._default_max and self.fd_limit is not None:
            self.max_connections = max(1, self.fd_limit - self.fd_reserve - self.accept_burst - self._other_fds)
        self.resume_below = max(1, int(self.max_connections * RESUME_RATIO))
        self.fd_resume_free = self.fd_reserve + self.accept_burst + (self.max_connections - self.resume_below)

    def set_accept_burst(self, burst: int) -> None:
        """Keep ``burst`` more descriptors free, for sockets accepted before the manager sees them.

        A default ``max_connections`` shrinks by as much: it is what the
        descriptors leave room for.
        """
        self.accept_burst = burst
        self._derive()

    def can_answer(self, held: int) -> bool:
        """Whether a connection refused now may wait for its answer (``held`` others held, it not counted)."""
        free = self.free_fds(held + 1)  # its descriptor exists already
        return free is None or free >= self.fd_reserve // 2

    def free_fds(self, held: int) -> Optional[int]:
        """Estimated free descriptors while the manager holds ``held`` connections."""
        if self.fd_limit is None:
            return None
        return self.fd_limit - self._other_fds - held

    def burst_fits(self, held: int) -> bool:
        """Whether a whole accept burst fits above the reserve while the manager holds ``held`` connections."""
        free = self.free_fds(held)
        return free is None or free >= self.fd_reserve + self.accept_burst

    def resync(self, held: int, now: float = math.inf) -> Optional[int]:
        """Measure the open descriptors; return the count.

        ``held`` is the number of descriptors the manager's connections hold
        at the moment of measuring, including one just accepted. If counting
        fails (listing ``/proc/self/fd`` needs a descriptor, and there may be
        none left), the estimate is returned instead: the descriptors last
        measured that are not the manager's, plus ``held``. None only where
        no count ever succeeded.
        """
        fds = self._count_fds()
        if fds is None:
            return self._other_fds + held if self._measured else None
        self._other_fds = max(0, fds - held)
        self._measured = True
        self._measured_at = now
        return fds

    def admit(self, held: int, now: float) -> bool:
        """Whether to admit a connection just accepted, the manager holding ``held`` others."""
        if now - self._measured_at >= self.remeasure_interval:
            self.resync(held + 1, now)
        if self.is_open:
            if self._resumes(held):
                self.is_open = False
                return True
            return False
        # The new connection's descriptor already exists: count it.
        free = self.free_fds(held + 1)
        if held >= self.max_connections or (free is not None and free < self.fd_reserve + self.accept_burst):
            self.is_open = True
            self.trips += 1
            return False
        return True

    def reconsider(self, held: int) -> None:
        """Close an open breaker that a connection arriving now would find below the low-water marks.

        Called when a connection ends and when the stats are read, so that
        ``is_open`` does not wait for the next arrival to be right.
        """
        if self.is_open and self._resumes(held):
            self.is_open = False

    def _resumes(self, held: int) -> bool:
        free = self.free_fds(held + 1)  # a connection arriving now
        return held < self.resume_below and (free is None or free >= self.fd_resume_free)
