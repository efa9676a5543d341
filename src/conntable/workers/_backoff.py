"""When to restart a worker that died: exponential backoff, capped, forgiven after a healthy run.

A worker that crashes as soon as it serves would otherwise be restarted in a
tight loop, each start costing a fresh interpreter. The n-th consecutive
failure waits ``initial * 2**(n-1)`` seconds, at most ``maximum``; a worker
that served for ``healthy_after`` seconds before it died starts the count
again, so an occasional crash is restarted at once, however long the server
has run.
"""

from __future__ import annotations

from conntable._common import check_timeout

__all__ = ("Backoff",)


class Backoff:
    """The restart delays of one worker slot."""

    __slots__ = ("initial", "maximum", "healthy_after", "failures")

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, healthy_after: float = 30.0) -> None:
        self.initial = check_timeout("restart_backoff", initial)
        self.maximum = check_timeout("restart_backoff_max", maximum)
        if self.maximum < self.initial:
            raise ValueError(f"restart_backoff_max ({maximum!r}) must not be below restart_backoff ({initial!r})")
        self.healthy_after = check_timeout("healthy_after", healthy_after)
        #: Consecutive failures so far.
        self.failures = 0

    def failed(self, served_for: float) -> float:
        """Note a failure after ``served_for`` seconds of serving (0: never served); the delay before the restart."""
        if served_for >= self.healthy_after:
            self.failures = 0
        self.failures += 1
        # The exponent is capped too: 2.0 ** 1100 overflows.
        return min(self.maximum, self.initial * 2.0 ** min(self.failures - 1, 64))
