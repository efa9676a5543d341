"""The aio layer's logger, and the one way it contains what a user callback raises.

The rule: a user callback (protocol method, hook, cleanup, ``on_expire``, a
custom table's method) can never stop expiry or leave a record half ended.
Whatever it raises, any ``BaseException``, is caught where the callback is
called, logged with the id of what it was called for, and the work around it
(ending that record, the other cleanups, the other records of the batch)
goes on. That includes ``GeneratorExit``, a framework's own BaseException
subclasses and ``asyncio.CancelledError``: a synchronous callback cannot
receive the cancellation of the task that runs it (that is delivered at an
``await``), so a CancelledError it raises is its own failure, typically from
reading the result of a cancelled future.

KeyboardInterrupt and SystemExit still stop the program, as asyncio lets
them, but only after the record has ended and with every task of the layer
still alive: they are handed to the event loop (:func:`propagate`), which
raises them out of ``run_forever``/``asyncio.run`` from a callback of its own.
A program that catches them and runs the loop again finds expiry working.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NoReturn, Optional

logger = logging.getLogger("conntable.aio")

#: What stops the program even when a user callback raises it (after the record ended).
EXITS = (KeyboardInterrupt, SystemExit)


def failed(conn_id: int, what: str, exc: BaseException, log: logging.Logger = logger) -> Optional[BaseException]:
    """Log ``exc``, raised by user code ``what`` for ``conn_id``; return it if it must still propagate.

    Called in ``except BaseException as exc:`` blocks around user code. The
    caller finishes what it was doing, then passes a returned exception to
    :func:`propagate`.
    """
    log.error("connection %d: %s failed", conn_id, what, exc_info=exc)
    return exc if isinstance(exc, EXITS) else None


def log_failure(conn_id: int, what: str) -> None:
    """Log the exception being handled (an ``except`` block's), naming the connection it belongs to."""
    logger.exception("connection %d: %s failed", conn_id, what)


def _reraise(exc: BaseException) -> NoReturn:
    raise exc


def propagate(exc: Optional[BaseException]) -> None:
    """Raise ``exc`` (KeyboardInterrupt or SystemExit, or None: nothing) out of the event loop, soon.

    From a callback of the running loop's own, which asyncio and uvloop both
    let out of ``run_forever``: no task of the caller's is stopped by it.
    Without a running loop (a synchronous caller) it is raised at once, after
    the caller's work, since that is where this is called.
    """
    if exc is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        raise exc from None
    loop.call_soon(_reraise, exc)
