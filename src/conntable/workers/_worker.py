"""A worker process: its event loop, its listening socket, its manager, the user's ``main``, a graceful stop.

Life of a worker (the parent starts it with multiprocessing's ``spawn``):

1. Handlers for SIGTERM and SIGINT are installed first and the parent is
   told (HELLO): from then on a stop signal is never lost, even before the
   event loop exists.
2. The loop starts (uvloop or asyncio); the manager is built from the
   parent's options with this worker's share of ``max_connections``; the
   listening socket is bound with ``SO_REUSEPORT`` (or inherited); the
   sockets are counted (the baseline: connections left behind would be sockets).
3. ``main(worker)`` runs. The worker is serving (READY to the parent) as
   soon as the manager holds a server (``create_server``, ``add_server``:
   what ``conntable.websockets.serve`` calls), or ``main`` returns, or it
   awaits :meth:`Worker.serve_forever`, whichever comes first.
4. On SIGTERM or SIGINT (or when the parent's pipe closes), or if ``main``
   fails: ``manager.shutdown(grace)``, the one bounded grace, stops every
   server registered with the manager and closes every connection (1001 on
   WebSockets). Then :meth:`Worker.serve_forever` returns and ``main`` gets
   ``grace`` (at least ``close_timeout``) to finish, time for servers the
   manager does not hold to close their own connections; a ``main`` that
   never called it (one that awaits websockets' own ``serve_forever``, say)
   is cancelled at once instead, and gets ``close_timeout`` to end. The
   servers ``main`` returned are closed. The exit code is 0 only if all of
   that ended cleanly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import os
import signal
import stat
import sys
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Coroutine, List, Mapping, Optional

from conntable.aio import ConnectionManager

from ._control import HELLO, READY, STATS, STOPPED, tell
from ._log import default_handler, logger
from ._sockets import bind_socket

__all__ = ("Worker", "WorkerSpec", "worker_process", "STOP_SIGNALS")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class WorkerSpec:
    """What the parent tells a worker (pickled into the spawned process)."""

    index: int
    workers: int
    host: str
    port: int
    backlog: int
    #: True: bind a socket of our own with SO_REUSEPORT; False: use the inherited one.
    reuse_port: bool
    max_connections: Optional[int]
    manager_options: Mapping[str, Any]
    grace: float
    loop: str  # "uvloop" or "asyncio"
    #: Seconds between two copies of the stats into the metrics files; None: no metrics.
    metrics_interval: Optional[float]


class Worker:
    """What ``main`` receives, in each worker process: where to serve, and the manager to serve with.

    ``index`` (0 to ``workers - 1``) is the worker's slot: a restarted worker
    keeps it, and with it its share of ``max_connections``. ``socket`` is
    the listening socket, already bound and listening: pass it as ``sock=``
    (``manager.create_server(P, sock=worker.socket)``,
    ``conntable.websockets.serve(handler, sock=worker.socket,
    manager=worker.manager)``). ``manager`` is this worker's
    :class:`~conntable.aio.ConnectionManager`: the worker shuts it down when
    told to stop, so every server and connection of the worker should be
    held by it.
    """

    def __init__(self, spec: WorkerSpec, sock: Any, manager: ConnectionManager,
                 mark_ready: Callable[[], None], stopped: asyncio.Event, stopping: asyncio.Event) -> None:
        self.index = spec.index
        self.workers = spec.workers
        self.pid = os.getpid()
        self.host = spec.host
        self.port = spec.port
        self.socket = sock
        self.manager = manager
        self._mark_ready = mark_ready
        self._stopped = stopped
        self._stopping = stopping
        self._serving_forever = False

    @property
    def max_connections(self) -> int:
        """This worker's share of the server's ``max_connections`` (or its own limit, from its descriptors)."""
        return self.manager.max_connections

    @property
    def stopping(self) -> bool:
        """Whether this worker was told to stop."""
        return self._stopping.is_set()

    async def serve_forever(self) -> None:
        """Report this worker as serving, and return once it was told to stop and its manager shut down.

        For a ``main`` that keeps its servers in an ``async with``::

            async with serve(handler, sock=worker.socket, manager=worker.manager):
                await worker.serve_forever()

        By the time it returns every connection is gone, so leaving the
        ``async with`` has nothing left to wait for.
        """
        self._serving_forever = True
        self._mark_ready()
        await self._stopped.wait()

    def __repr__(self) -> str:
        return f"<Worker {self.index} of {self.workers} pid={self.pid} {self.host}:{self.port}>"


def open_sockets() -> Optional[int]:
    """How many sockets this process has open (None if it cannot tell): connections left behind are sockets.

    Costs a descriptor listing: for the start and the end of a worker, not per connection.
    """
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(path)
        except OSError:
            continue
        count = 0
        for name in names:
            try:
                count += stat.S_ISSOCK(os.fstat(int(name)).st_mode)
            except OSError:  # the listing's own descriptor, closed by now
                pass
        return count
    return None


class _EarlySignals:
    """Stop signals that arrive before the event loop can take them."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._note)

    def _note(self, signum: int, _frame: Any) -> None:
        self.received = signum


def _failed(task: "asyncio.Task[Any]") -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


def _servers_of(value: Any) -> List[Any]:
    """What ``main`` returned, as a list of servers to close (None: none)."""
    def is_server(obj: Any) -> bool:
        return callable(getattr(obj, "close", None)) and callable(getattr(obj, "wait_closed", None))

    if value is None:
        return []
    if is_server(value):
        return [value]
    if isinstance(value, (list, tuple)) and all(is_server(item) for item in value):
        return list(value)
    raise TypeError(f"main returned {type(value).__name__}: it may return None, a server (something with "
                    f"close() and wait_closed()) or a list of servers")


class _WorkerRun:
    """One worker's run inside its event loop (see the module docstring for the order of things)."""

    def __init__(self, main: Callable[[Worker], Awaitable[Any]], spec: WorkerSpec, pipe: Any,
                 inherited: Any, early: _EarlySignals) -> None:
        self.main = main
        self.spec = spec
        self.pipe = pipe
        self.inherited = inherited
        self.early = early
        self.servers: List[Any] = []
        self.ready_at: Optional[float] = None
        self.manager: Optional[ConnectionManager] = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        self.ready = loop.create_future()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self.stopping.set)
        if self.early.received is not None:
            self.stopping.set()
        loop.add_reader(self.pipe.fileno(), self._on_pipe)
        try:
            return await self._serve(loop)
        finally:
            loop.remove_reader(self.pipe.fileno())
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    def _on_pipe(self) -> None:
        try:
            while self.pipe.poll():
                message = self.pipe.recv()
                if message[0] == STATS:
                    tell(self.pipe, STATS, message[1], self._stats())
        except (EOFError, OSError):  # the parent is gone: stop as if told to
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
            self.stopping.set()

    def _stats(self) -> dict:
        stats = dataclasses.asdict(self.manager.stats())  # type: ignore[union-attr]
        uptime = 0.0 if self.ready_at is None else time.monotonic() - self.ready_at
        return {**stats, "closed_total": dict(stats["closed_total"]), "pid": os.getpid(), "uptime": uptime}

    def _mark_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    async def _call_main(self, worker: Worker) -> None:
        awaitable = self.main(worker)
        if not inspect.isawaitable(awaitable):
            raise TypeError(f"main must be an async function of the worker; it returned "
                            f"{type(awaitable).__name__}")
        self.servers = _servers_of(await awaitable)
        self._mark_ready()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> int:
        spec = self.spec
        manager = self.manager = ConnectionManager(**spec.manager_options, max_connections=spec.max_connections)
        manager.on_server(lambda _server: self._mark_ready())  # the worker serves once the manager holds a server
        metrics = None
        if spec.metrics_interval is not None:
            from ._metrics import WorkerMetrics

            metrics = WorkerMetrics()
            metrics.update(manager.stats())  # every metric's file is open from here: before the baseline
        if spec.reuse_port:
            sock = bind_socket(spec.host, spec.port, reuse_port=True, backlog=spec.backlog)
        else:
            sock = self.inherited
        sockets_before = open_sockets()
        worker = Worker(spec, sock, manager, self._mark_ready, self.stopped, self.stopping)
        main_task = loop.create_task(self._call_main(worker))
        stop_wait = loop.create_task(self.stopping.wait())
        try:
            await asyncio.wait([self.ready, main_task, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            if self.ready.done() and not _failed(main_task) and not self.stopping.is_set():
                self.ready_at = time.monotonic()
                tell(self.pipe, READY, {"pid": os.getpid(), "host": spec.host, "port": spec.port,
                                        "max_connections": manager.max_connections})
                reporter = loop.create_task(self._copy_metrics(metrics, manager)) if metrics else None
                # Serve until told to stop. A main that returns has started its servers; one that fails ends the worker.
                while not self.stopping.is_set() and not _failed(main_task):
                    watched = [stop_wait] if main_task.done() else [stop_wait, main_task]
                    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if reporter is not None:
                    reporter.cancel()
        finally:
            stop_wait.cancel()
        ok = await self._stop(manager, main_task, worker)
        if metrics is not None:
            metrics.update(manager.stats())
        if sock is not None:
            sock.close()
        report = {"sockets_before": None if sockets_before is None else sockets_before - 1,  # but the listening one
                  "sockets_after": open_sockets(), "ok": ok}
        tell(self.pipe, STOPPED, {**dataclasses.asdict(self.summary), **report})
        return 0 if ok else 1

    async def _stop(self, manager: ConnectionManager, main_task: "asyncio.Task[None]", worker: Worker) -> bool:
        """The graceful stop; whether everything in it ended cleanly."""
        spec, bound = self.spec, manager.close_timeout
        self.summary = await manager.shutdown(spec.grace)
        self.stopped.set()  # serve_forever returns
        if not main_task.done() and worker._serving_forever:
            # Servers the manager does not hold (plain websockets, say) close their connections now: a grace too.
            await asyncio.wait([main_task], timeout=max(spec.grace, bound))
        cancelled_here = False
        if not main_task.done():  # it awaits something else than serve_forever (websockets' own, say)
            main_task.cancel()
            cancelled_here = True
            await asyncio.wait([main_task], timeout=bound)
        ok = self.summary.tasks_still_running == 0
        if not main_task.done():
            logger.error("worker %d (pid %d): main ignored its cancellation", spec.index, os.getpid())
            ok = False
        elif main_task.cancelled():
            # Cancelling is the way out for a main that never called serve_forever; one that did overran its grace.
            ok = ok and cancelled_here and not worker._serving_forever
            if worker._serving_forever:
                logger.error("worker %d (pid %d): main did not return within %g s of the shutdown: cancelled",
                             spec.index, os.getpid(), max(spec.grace, bound))
        elif main_task.exception() is not None:
            logger.error("worker %d (pid %d): main failed", spec.index, os.getpid(),
                         exc_info=main_task.exception())
            ok = False
        if self.servers:
            for server in self.servers:
                server.close()
            closing = [asyncio.ensure_future(server.wait_closed()) for server in self.servers]
            _done, pending = await asyncio.wait(closing, timeout=bound)
            if pending:
                logger.error("worker %d (pid %d): %d servers did not finish closing", spec.index, os.getpid(),
                             len(pending))
                for task in pending:
                    task.cancel()
                ok = False
        return ok

    async def _copy_metrics(self, metrics: Any, manager: ConnectionManager) -> None:
        while True:
            await asyncio.sleep(self.spec.metrics_interval)  # type: ignore[arg-type]
            try:
                metrics.update(manager.stats())
            except Exception:
                logger.exception("worker %d (pid %d): metrics could not be written; no more updates",
                                 self.spec.index, os.getpid())
                return


def _run_loop(kind: str, coro: Coroutine[Any, Any, int]) -> int:
    if kind == "uvloop":
        import uvloop

        return uvloop.run(coro)  # type: ignore[no-any-return]
    return asyncio.run(coro)


def worker_process(main: Callable[[Worker], Awaitable[Any]], spec: WorkerSpec, pipe: Any, inherited: Any) -> None:
    """The spawned process's target: serve until told to stop; exit 0 if the stop was graceful."""
    early = _EarlySignals()
    tell(pipe, HELLO, os.getpid())
    with default_handler():
        try:
            code = _run_loop(spec.loop, _WorkerRun(main, spec, pipe, inherited, early).run())
        except Exception:
            logger.exception("worker %d (pid %d) failed", spec.index, os.getpid())
            code = 1
    pipe.close()
    sys.exit(code)
