"""What a worker and its parent say to each other over the worker's pipe.

Stopping is not among them: the parent stops a worker with a signal
(SIGTERM or SIGINT, forwarded), so ``kill -TERM <worker pid>`` does exactly
what the parent does. A worker whose pipe reaches end-of-file (its parent
is gone) stops as if signalled.

Worker to parent::

    (HELLO, pid)              its signal handlers are installed: a forwarded signal is no longer lost
    (READY, info)             serving: {"pid", "host", "port", "max_connections"}
    (STATS, token, stats)     the answer to a STATS request: ResourceStats fields plus "pid", "uptime"
    (STOPPED, report)         the shutdown: ShutdownSummary fields plus "sockets_before", "sockets_after", "ok"

Parent to worker::

    (STATS, token)
"""

from __future__ import annotations

from typing import Any

__all__ = ("HELLO", "READY", "STATS", "STOPPED", "tell")

HELLO = "hello"
READY = "ready"
STATS = "stats"
STOPPED = "stopped"


def tell(pipe: Any, *message: Any) -> bool:
    """Send a message on a worker's pipe; False if the other side is gone (nothing to do about it)."""
    try:
        pipe.send(message)
        return True
    except (OSError, EOFError, ValueError):  # a broken pipe, or our end closed already
        return False
