"""Metrics for the whole server through prometheus_client's multiprocess mode (needs the ``prometheus`` extra).

The documented mechanism, used as documented (prometheus_client's
"Multiprocess Mode" section, the way gunicorn setups use it):

* the parent sets ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before
  it starts any worker, so that every worker's prometheus_client keeps its
  values in memory-mapped files there;
* each worker mirrors its manager's :meth:`~conntable.aio.ConnectionManager.stats`
  into real ``Gauge`` and ``Counter`` objects (:class:`WorkerMetrics`) every
  ``metrics_interval`` seconds: custom collectors do not work in that mode;
* the parent serves one registry holding a ``MultiProcessCollector``, which
  reads every worker's files at each scrape and aggregates them (counters are
  summed, dead workers included; each gauge as its ``multiprocess_mode`` says,
  :data:`GAUGE_MODES`), plus its own collector for the workers themselves;
* when a worker exits, the parent calls ``mark_process_dead(pid)``, which
  drops that worker's ``live*`` gauges.

The metric names are those of ``ResourceStats.metrics()``, the same as a
single process's ``PrometheusCollector``: a dashboard reads either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Tuple

if TYPE_CHECKING:
    from conntable.aio import ResourceStats

__all__ = ("GAUGE_MODES", "WorkerMetrics", "serve_metrics", "mark_process_dead")

#: How each gauge of ``ResourceStats.metrics()`` is aggregated over the live workers.
GAUGE_MODES: Dict[str, str] = {
    "conntable_connections_active": "livesum",  # the server's connections
    "conntable_connections_peak": "livemax",  # the busiest worker's peak
    "conntable_tasks_active": "livesum",
    "conntable_breaker_open": "livesum",  # how many workers are refusing
    "conntable_max_connections": "livesum",  # the server's limit: the sum of the shares
    "conntable_resident_memory_bytes": "livesum",  # pages shared by workers are counted once per worker
    "conntable_open_fds": "liveall",  # per worker (a ``pid`` label): the descriptor limit is per process
    "conntable_max_fds": "livemin",
}

_Key = Tuple[str, Tuple[Tuple[str, str], ...]]


class WorkerMetrics:
    """A worker's side: its manager's stats as prometheus_client metrics in the multiprocess directory.

    Every metric (and every label value) is made by the first :meth:`update`,
    so that the files holding them are open from then on.
    """

    def __init__(self) -> None:
        self._families: Dict[str, Any] = {}
        self._children: Dict[_Key, Any] = {}
        self._counted: Dict[_Key, float] = {}  # counters: the stats' totals already added

    def update(self, stats: "ResourceStats") -> None:
        for metric in stats.metrics():
            for labels, value in metric.samples:
                key = (metric.name, labels)
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = self._child(metric, labels)
                if metric.kind == "gauge":
                    child.set(value)
                else:  # prometheus counters only go up by increments: add what is new since the last update
                    new = value - self._counted.get(key, 0.0)
                    if new > 0:
                        child.inc(new)
                        self._counted[key] = value

    def _child(self, metric: Any, labels: Tuple[Tuple[str, str], ...]) -> Any:
        from prometheus_client import Counter, Gauge

        family = self._families.get(metric.name)
        if family is None:
            names = [name for name, _value in labels]
            if metric.kind == "gauge":
                family = Gauge(metric.name, metric.help, names, registry=None,
                               multiprocess_mode=GAUGE_MODES.get(metric.name, "livesum"))  # type: ignore[arg-type]
            else:
                family = Counter(metric.name, metric.help, names, registry=None)
            self._families[metric.name] = family
        return family.labels(*[value for _name, value in labels]) if labels else family


class _WorkersCollector:
    """The parent's own metrics: how many workers serve, and how often they were restarted."""

    def __init__(self, read: Callable[[], Tuple[int, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        serving, restarts = self._read()
        yield GaugeMetricFamily("conntable_workers", "Worker processes serving.", value=serving)
        yield CounterMetricFamily("conntable_worker_restarts", "Worker processes restarted after they died.",
                                  value=restarts)


def serve_metrics(path: str, host: str, port: int, read_workers: Callable[[], Tuple[int, int]]) -> Any:
    """The parent's side: one HTTP endpoint (a prometheus_client thread) for every worker's metrics."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    registry.register(_WorkersCollector(read_workers))  # type: ignore[arg-type]
    httpd, _thread = start_http_server(port, addr=host, registry=registry)
    return httpd


def mark_process_dead(pid: int, path: str) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)


def stop_serving(httpd: Any) -> None:
    httpd.shutdown()
    httpd.server_close()
