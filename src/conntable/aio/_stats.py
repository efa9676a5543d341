"""What the manager reports: a snapshot of its resources, and the result of a shutdown.

Metric names follow Prometheus conventions: the ``conntable_`` prefix, base
units (bytes, seconds), ``_total`` on counters, one low-cardinality label
(``reason``). :meth:`ResourceStats.metrics` lists them in a neutral form that
the optional prometheus_client collector (``conntable.aio.PrometheusCollector``)
turns into metric families; nothing here formats exposition text by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

from ._connection import CloseReason

__all__ = ("ResourceStats", "ShutdownSummary", "Metric")


class Metric(NamedTuple):
    """One metric family: name, ``"gauge"`` or ``"counter"``, help, and samples."""

    name: str
    kind: str
    help: str
    #: ``(labels, value)`` pairs; labels is a tuple of ``(name, value)`` pairs.
    samples: List[Tuple[Tuple[Tuple[str, str], ...], float]]


def _single(name: str, kind: str, help: str, value: float) -> Metric:
    return Metric(name, kind, help, [((), float(value))])


@dataclass(frozen=True)
class ResourceStats:
    """A snapshot of a :class:`ConnectionManager` and of the process's resources."""

    #: Connections held: open, closing, or refused and not yet gone.
    active: int
    #: The highest ``active`` seen.
    peak: int
    #: Connections admitted since the manager started.
    opened_total: int
    #: Connections ended, by :class:`CloseReason` value (every reason present, zeros included).
    closed_total: Mapping[str, int]
    #: Connections refused (by the circuit breaker or during shutdown).
    rejected_total: int
    #: Connections whose transport had to be aborted after ``close_timeout``.
    aborted_total: int
    #: Tasks started with :meth:`ConnectionManager.spawn` that have not finished.
    tasks_active: int
    #: Whether the circuit breaker is refusing new connections.
    breaker_open: bool
    #: How many times the breaker opened.
    breaker_trips_total: int
    #: Connections held at which the breaker opens.
    max_connections: int
    #: File descriptors the process has open (None where unknown).
    open_fds: Optional[int]
    #: The process's soft file descriptor limit (None where there is none).
    max_fds: Optional[int]
    #: Resident set size of the process.
    resident_memory_bytes: int

    def metrics(self) -> List[Metric]:
        """The snapshot as Prometheus-style metric families."""
        metrics = [
            _single("conntable_connections_active", "gauge", "Connections held (open, closing or refused).", self.active),
            _single("conntable_connections_peak", "gauge", "Highest number of connections held.", self.peak),
            _single("conntable_connections_opened_total", "counter", "Connections admitted.", self.opened_total),
            Metric(
                "conntable_connections_closed_total", "counter", "Connections ended, by reason.",
                [((("reason", reason),), float(count)) for reason, count in self.closed_total.items()],
            ),
            _single("conntable_connections_rejected_total", "counter", "Connections refused.", self.rejected_total),
            _single("conntable_connections_aborted_total", "counter",
                    "Connections aborted after the close timeout.", self.aborted_total),
            _single("conntable_tasks_active", "gauge", "Connection tasks running.", self.tasks_active),
            _single("conntable_breaker_open", "gauge", "1 while new connections are refused.", self.breaker_open),
            _single("conntable_breaker_trips_total", "counter", "Times the circuit breaker opened.",
                    self.breaker_trips_total),
            _single("conntable_max_connections", "gauge", "Connections held at which the breaker opens.",
                    self.max_connections),
            _single("conntable_resident_memory_bytes", "gauge", "Resident memory of the process.",
                    self.resident_memory_bytes),
        ]
        if self.open_fds is not None:
            metrics.append(_single("conntable_open_fds", "gauge", "Open file descriptors of the process.",
                                   self.open_fds))
        if self.max_fds is not None:
            metrics.append(_single("conntable_max_fds", "gauge", "File descriptor limit of the process.",
                                   self.max_fds))
        return metrics


def empty_closed_counts() -> Dict[CloseReason, int]:
    """``closed_total`` with every reason at zero, so label sets never change."""
    return {reason: 0 for reason in CloseReason}


@dataclass
class ShutdownSummary:
    """What :meth:`ConnectionManager.shutdown` did."""

    #: Connections that ended within the grace period.
    closed_gracefully: int = 0
    #: Connections aborted because they were still there after the grace period.
    aborted: int = 0
    #: Connection tasks cancelled during the shutdown.
    tasks_cancelled: int = 0
    #: Tasks that ignored their cancellation and were still running at the end.
    tasks_still_running: int = 0
    #: Connections refused because they arrived during the shutdown.
    rejected: int = 0
    #: Servers that stopped accepting.
    servers_closed: int = 0
