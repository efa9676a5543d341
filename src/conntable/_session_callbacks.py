"""How the session stores call user code (``on_expire``, cleanups): contained, and awaited at shutdown.

Shared by :mod:`conntable.sessions` and :mod:`conntable.redis_sessions`.
Whatever a callback raises (any BaseException) is logged and the caller's
work goes on; KeyboardInterrupt and SystemExit are then handed to the event
loop (as in :mod:`conntable.aio`). A callback that returns an awaitable (an
``async def``) runs as a task; :meth:`Callbacks.wait` waits for those tasks,
then cancels what is left.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from typing import Any, Callable, Optional, Set

from conntable.aio._log import EXITS, propagate

#: How long ``wait`` waits for cancelled async callbacks to finish.
CANCEL_TIMEOUT = 5.0


class Callbacks:
    """Calls user callbacks for a store; ``what`` names them in the log (never the token: a credential)."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self.running: Set["asyncio.Task[Any]"] = set()  # async callbacks not finished yet
        self.loop: Optional[asyncio.AbstractEventLoop] = None  # where their tasks run

    def call(self, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)``; nothing it raises comes out (see the module docstring)."""
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                self._run_later(result)
        except BaseException as exc:
            self._log.error("%s failed", self._what, exc_info=exc)
            propagate(exc if isinstance(exc, EXITS) else None)

    async def wait(self, seconds: float, cancel_timeout: float = CANCEL_TIMEOUT) -> None:
        """Wait up to ``seconds`` (``math.inf``: for ever) for the async callbacks, then cancel those left."""
        if not self.running:
            return
        timeout = None if seconds == math.inf else seconds
        _done, pending = await asyncio.wait(list(self.running), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=cancel_timeout)
        if self.running:
            self._log.warning("%d of them (%s) ignored cancellation", len(self.running), self._what)

    def _run_later(self, awaitable: Any) -> None:
        try:
            task = asyncio.ensure_future(awaitable, loop=self.loop)
        except BaseException:  # a closed loop
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # no "never awaited" warning
            raise
        self.running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: "asyncio.Task[Any]") -> None:
        self.running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s failed", self._what, exc_info=task.exception())
