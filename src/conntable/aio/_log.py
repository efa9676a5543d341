"""The aio layer's logger and the one way it reports a failed user callback."""

from __future__ import annotations

import logging

logger = logging.getLogger("conntable.aio")


def log_failure(conn_id: int, what: str) -> None:
    """Log the exception being handled, naming the connection it belongs to.

    Called from ``except`` blocks around user code (protocol hooks, cleanup
    callbacks, spawned tasks), so that one failing callback is reported and
    the manager goes on with the others.
    """
    logger.exception("connection %d: %s failed", conn_id, what)
