"""conntable.aio: the asyncio layer, a connection manager for asyncio and uvloop servers.

::

    mgr = ConnectionManager(idle_timeout=60.0, handshake_timeout=10.0)
    server = await mgr.create_server(MyProtocol, "127.0.0.1", 8888)
    ...
    summary = await mgr.shutdown(grace=30.0)

Every connection gets an id (never reused), lives in a
``conntable.ConnectionTable``, is closed when idle or overdue, has its tasks
cancelled and its cleanups run exactly once however it ends (whatever its
callbacks raise), and is refused when the process is short of file
descriptors. With ``ssl=`` the manager runs the TLS handshakes itself, so TLS
connections are counted and timed out from their TCP accept. See
:class:`ConnectionManager`.

Integrations (``conntable.websockets``, ``conntable.aiohttp``,
``conntable.asgi``, your own) plug in through one public seam: the manager's
life-cycle calls (``register``, ``established``, ``closing``, ``abort``,
``ended``, ``on_server``; see ``_lifecycle``) and :class:`Heartbeat`, one
timer wheel that pings every connection of any protocol that can ping.

``PrometheusCollector`` (prometheus_client required, imported on first use)
exposes :meth:`ConnectionManager.stats` to a Prometheus registry.
"""

from typing import TYPE_CHECKING, Any

from ._breaker import CircuitBreaker
from ._connection import CloseReason, Connection, ConnectionState
from ._heartbeat import Heartbeat, heartbeat_resolution
from ._lifecycle import Endpoint, LifecycleMixin, check_count, check_seconds
from ._manager import ConnectionManager
from ._protocol import ManagedBufferedProtocol, ManagedProtocol
from ._refusal import answer_unavailable, unavailable_response
from ._stats import Metric, ResourceStats, ShutdownSummary
from ._sweeper import Sweeper

if TYPE_CHECKING:
    from ._prometheus import PrometheusCollector

__all__ = (
    "ConnectionManager",
    "Connection",
    "ConnectionState",
    "CloseReason",
    "ManagedProtocol",
    "ManagedBufferedProtocol",
    "ResourceStats",
    "ShutdownSummary",
    "Metric",
    "CircuitBreaker",
    "Sweeper",
    "Heartbeat",
    "heartbeat_resolution",
    "Endpoint",
    "LifecycleMixin",
    "check_seconds",
    "check_count",
    "answer_unavailable",
    "unavailable_response",
    "PrometheusCollector",
)


def __getattr__(name: str) -> Any:
    # prometheus_client is optional: import it only when the collector is asked for.
    if name == "PrometheusCollector":
        from ._prometheus import PrometheusCollector

        return PrometheusCollector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
