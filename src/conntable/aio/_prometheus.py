"""A prometheus_client collector for a ConnectionManager (needs the ``prometheus`` extra).

Imported only through ``conntable.aio.PrometheusCollector``, so that
prometheus_client stays an optional dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry
except ModuleNotFoundError as missing:  # say which extra brings it
    raise ModuleNotFoundError("conntable.aio.PrometheusCollector needs prometheus_client: "
                              "pip install 'conntable[prometheus]'", name=missing.name) from missing

if TYPE_CHECKING:
    from ._manager import ConnectionManager

__all__ = ("PrometheusCollector",)

_FAMILIES = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}


class PrometheusCollector(Collector):
    """Reports :meth:`ConnectionManager.stats` at every scrape.

    ``PrometheusCollector(mgr)`` registers itself with prometheus_client's
    default registry; pass ``registry=`` to use another, or
    ``registry=None`` to register it yourself.
    """

    def __init__(
        self,
        manager: "ConnectionManager",
        *,
        registry: Optional[CollectorRegistry] = REGISTRY,
    ) -> None:
        self._manager = manager
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for metric in self._manager.stats().metrics():
            labels = [name for name, _value in metric.samples[0][0]] if metric.samples else []
            family = _FAMILIES[metric.kind](metric.name, metric.help, labels=labels)
            for label_pairs, value in metric.samples:
                family.add_metric([v for _name, v in label_pairs], value)
            yield family
