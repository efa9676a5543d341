"""The aio layer's logger and the one way it reports a failed user callback."""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger("conntable.aio")

#: What a user callback (cleanup, protocol hook) may raise without stopping the
#: manager: any Exception, and ``asyncio.CancelledError``, a BaseException that
#: a plain function raises by reading the result of a cancelled future. Such a
#: synchronous call cannot be the cancellation of the task it runs in (that is
#: delivered at an ``await``), so isolating it loses no cancellation.
#: KeyboardInterrupt and SystemExit still stop the program.
CALLBACK_ERRORS = (Exception, asyncio.CancelledError)


def log_failure(conn_id: int, what: str) -> None:
    """Log the exception being handled, naming the connection it belongs to.

    Called from ``except CALLBACK_ERRORS`` blocks around user code (protocol
    hooks, cleanup callbacks, spawned tasks), so that one failing callback is
    reported and the manager goes on with the others.
    """
    logger.exception("connection %d: %s failed", conn_id, what)
