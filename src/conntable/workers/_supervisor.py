"""The parent process: starts the workers, restarts those that die, forwards the stop, serves the metrics.

The parent runs no event loop and imports nothing that starts threads
before the workers exist (the metrics endpoint's thread comes later, and is
harmless: workers are spawned, not forked). It waits, in one
``multiprocessing.connection.wait``, on three kinds of event: a signal (its
handlers only make ``signal.set_wakeup_fd`` write the signal's number to a
socket pair), a message on a worker's pipe, and a worker's exit (its
process sentinel). Restart delays, stats requests and the kill deadline
are the wait's timeout. Nothing polls.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import socket
import tempfile
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Tuple

from conntable._common import check_size, check_timeout
from conntable.aio import ConnectionManager

from . import _metrics
from ._backoff import Backoff
from ._control import HELLO, READY, STATS, STOPPED, tell
from ._log import default_handler, logger
from ._sockets import REUSE_PORT_BALANCES, bind_socket, bound_port
from ._summary import shutdown_line, total_line, worker_line
from ._worker import STOP_SIGNALS, Worker, WorkerSpec, worker_process

__all__ = ("run", "split_limit")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How long the parent waits for the workers' answers to a stats request.
STATS_TIMEOUT = 2.0
LOOPS = ("auto", "uvloop", "asyncio")


def split_limit(total: int, workers: int) -> List[int]:
    """``total`` split over ``workers``: ``total // workers`` each, and one more for the first ``total % workers``."""
    share, extra = divmod(total, workers)
    return [share + (1 if index < extra else 0) for index in range(workers)]


def _describe_exit(code: Optional[int]) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Slot:
    """One worker position: its current process, and what the parent knows of it."""

    def __init__(self, index: int, share: Optional[int], backoff: Backoff) -> None:
        self.index = index
        self.share = share
        self.backoff = backoff
        self.process: Any = None
        self.pipe: Any = None
        self.pid: Optional[int] = None
        self.said_hello = False
        self.ready_at: Optional[float] = None
        self.ever_ready = False
        self.restarts = 0
        self.restart_at: Optional[float] = 0.0  # due at once
        #: A stop signal to forward once the worker can take it (it had not said HELLO yet).
        self.forward: Optional[int] = None
        self.killed = False  # by the parent, still running at the kill deadline
        self.report: Optional[Dict[str, Any]] = None  # its STOPPED report


class _SignalInbox:
    """SIGTERM, SIGINT and SIGUSR1 as bytes on a socket pair the supervisor waits on."""

    SIGNALS = (*STOP_SIGNALS, signal.SIGUSR1)

    def __enter__(self) -> "_SignalInbox":
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous = {signum: signal.signal(signum, self._note) for signum in self.SIGNALS}
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        return self

    @staticmethod
    def _note(_signum: int, _frame: Any) -> None:
        """Nothing: the C-level handler has written the signal's number to the wakeup socket already."""

    def fileno(self) -> int:
        return self.reader.fileno()

    def received(self) -> bytes:
        try:
            return self.reader.recv(4096)
        except BlockingIOError:
            return b""

    def __exit__(self, *exc_info: Any) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self.reader.close()
        self._writer.close()


class _Supervisor:
    def __init__(self, main: Callable[[Worker], Awaitable[Any]], specs: List[WorkerSpec], *,
                 reuse_port: bool, backoff: Tuple[float, float, float], kill_timeout: Optional[float],
                 metrics: Optional[Tuple[str, int]], stats_interval: Optional[float]) -> None:
        self.main = main
        self.specs = specs
        self.reuse_port = reuse_port
        self.kill_timeout = kill_timeout
        self.metrics = metrics
        self.stats_interval = stats_interval
        self.ctx = multiprocessing.get_context("spawn")
        self.slots = [_Slot(spec.index, spec.max_connections, Backoff(*backoff)) for spec in specs]
        self.stop_signal: Optional[int] = None
        self.kill_at: Optional[float] = None
        self.failures: List[str] = []
        self.announced = False
        self.restarts_total = 0
        self.listening: Any = None  # the shared listening socket, or the SO_REUSEPORT port holder
        self.metrics_dir: Optional[str] = None
        self.httpd: Any = None
        self._stats_token = 0
        self._stats_pending: Optional[Dict[str, Any]] = None
        self._next_stats_at = math.inf

    # -- the whole run ---------------------------------------------------------------
    def run(self) -> int:
        spec = self.specs[0]
        made_dir = False
        previous_env = os.environ.get(MULTIPROC_ENV)
        try:
            if self.reuse_port:  # bound, never listening: the kernel routes nothing to it
                self.listening = bind_socket(spec.host, spec.port, reuse_port=True, backlog=None)
            else:
                self.listening = bind_socket(spec.host, spec.port, reuse_port=False, backlog=spec.backlog)
            port = bound_port(self.listening)
            self.specs = [_with_port(s, port) for s in self.specs]
            if self.metrics is not None:
                self.metrics_dir = previous_env
                if self.metrics_dir is None:
                    self.metrics_dir = tempfile.mkdtemp(prefix="conntable-metrics-")
                    made_dir = True
                os.environ[MULTIPROC_ENV] = self.metrics_dir  # before any worker starts
                self.httpd = _metrics.serve_metrics(self.metrics_dir, *self.metrics, self._workers_metric)
                host, metrics_port = self.httpd.server_address[:2]
                logger.info("metrics of every worker on http://%s:%d/metrics", host, metrics_port)
            if self.stats_interval is not None:
                self._next_stats_at = time.monotonic() + self.stats_interval
            with _SignalInbox() as inbox:
                self._supervise(inbox)
        finally:
            self._end_everything()
            if self.httpd is not None:
                _metrics.stop_serving(self.httpd)
            if self.listening is not None:
                self.listening.close()
            if self.metrics is not None:
                if previous_env is None:
                    os.environ.pop(MULTIPROC_ENV, None)
                if made_dir:
                    shutil.rmtree(self.metrics_dir, ignore_errors=True)  # type: ignore[arg-type]
        for failure in self.failures:
            logger.error("%s", failure)
        if self.failures:
            logger.error("%d of %d workers did not shut down gracefully", len(self.failures), len(self.slots))
            return 1
        logger.info("all %d workers shut down gracefully", len(self.slots))
        return 0

    def _supervise(self, inbox: _SignalInbox) -> None:
        while True:
            now = time.monotonic()
            if self.stop_signal is None:
                for slot in self.slots:
                    if slot.process is None and slot.restart_at is not None and slot.restart_at <= now:
                        self._start(slot)
            elif not any(slot.process is not None for slot in self.slots):
                return
            if self.kill_at is not None and now >= self.kill_at:
                self._kill_stragglers()
            if self._stats_pending is not None and now >= self._stats_pending["deadline"]:
                self._print_stats()
            if now >= self._next_stats_at:
                self._next_stats_at = now + self.stats_interval  # type: ignore[operator]
                self._request_stats()
            waiting: List[Any] = [inbox]
            for slot in self.slots:
                if slot.process is not None:
                    waiting.append(slot.process.sentinel)
                    if slot.pipe is not None:
                        waiting.append(slot.pipe)
            timeout = self._next_timer() - now
            for ready in multiprocessing.connection.wait(waiting, max(0.0, timeout)):
                if ready is inbox:
                    for signum in inbox.received():
                        self._on_signal(signum)
                else:
                    for slot in self.slots:
                        if slot.pipe is ready:
                            self._read(slot)
                        elif slot.process is not None and slot.process.sentinel == ready:
                            self._exited(slot)

    def _next_timer(self) -> float:
        times = [self._next_stats_at]
        if self.stop_signal is None:
            times += [slot.restart_at for slot in self.slots if slot.process is None and slot.restart_at is not None]
        if self.kill_at is not None:
            times.append(self.kill_at)
        if self._stats_pending is not None:
            times.append(self._stats_pending["deadline"])
        return min(min(times), time.monotonic() + 3600.0)

    # -- workers come and go -------------------------------------------------------------
    def _start(self, slot: _Slot) -> None:
        spec = self.specs[slot.index]
        ours, theirs = self.ctx.Pipe(duplex=True)
        inherited = None if self.reuse_port else self.listening
        process = self.ctx.Process(target=worker_process, args=(self.main, spec, theirs, inherited),
                                   name=f"conntable-worker-{slot.index}")
        try:
            process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        slot.process, slot.pipe, slot.pid = process, ours, process.pid
        slot.said_hello, slot.ready_at, slot.restart_at, slot.report, slot.killed = False, None, None, None, False
        if slot.restarts:
            logger.info("worker %d restarted as pid %d (restart %d)", slot.index, process.pid, slot.restarts)

    def _read(self, slot: _Slot) -> None:
        try:
            while slot.pipe.poll():
                self._on_message(slot, slot.pipe.recv())
        except (EOFError, OSError):  # the worker is gone or going: its sentinel says when
            slot.pipe.close()
            slot.pipe = None

    def _on_message(self, slot: _Slot, message: Tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == HELLO:
            slot.said_hello = True
            if slot.forward is not None:
                self._signal(slot, slot.forward)
                slot.forward = None
        elif kind == READY:
            info = message[1]
            slot.ready_at, slot.ever_ready = time.monotonic(), True
            logger.info("worker %d (pid %d) serving on %s:%d, up to %s connections", slot.index, info["pid"],
                        info["host"], info["port"], f"{info['max_connections']:,}")
            if not self.announced and all(s.ever_ready for s in self.slots):
                self.announced = True
                pids = ", ".join(str(s.pid) for s in self.slots)
                logger.info("serving on %s:%d with %d workers (pids %s)", info["host"], info["port"],
                            len(self.slots), pids)
        elif kind == STATS:
            pending = self._stats_pending
            if pending is not None and message[1] == pending["token"]:
                pending["answers"][slot.index] = message[2]
                if len(pending["answers"]) == len(pending["asked"]):
                    self._print_stats()
        elif kind == STOPPED:
            slot.report = message[1]

    def _exited(self, slot: _Slot) -> None:
        process, pid = slot.process, slot.pid
        process.join()
        code = process.exitcode
        process.close()
        if slot.pipe is not None:
            self._read(slot)  # the STOPPED report may still be in the pipe
        if slot.pipe is not None:
            slot.pipe.close()
        slot.process = slot.pipe = None
        if self.metrics_dir is not None and self.metrics is not None:
            _metrics.mark_process_dead(pid, self.metrics_dir)  # type: ignore[arg-type]
        now = time.monotonic()
        if self.stop_signal is not None:
            self._stopped(slot, pid, code)  # type: ignore[arg-type]
            return
        if not slot.ever_ready:
            self.failures.append(f"worker {slot.index} (pid {pid}) ended before it served ({_describe_exit(code)}); "
                                 f"not restarting a worker that cannot start")
            self._stop(signal.SIGTERM, "a worker could not start")
            return
        served = 0.0 if slot.ready_at is None else now - slot.ready_at
        delay = slot.backoff.failed(served)
        slot.restarts += 1
        self.restarts_total += 1
        slot.ready_at = None
        slot.restart_at = now + delay
        logger.warning("worker %d (pid %d) died (%s) after serving %.1f s; restarting it in %.2f s (restart %d)",
                       slot.index, pid, _describe_exit(code), served, delay, slot.restarts)

    def _stopped(self, slot: _Slot, pid: int, code: Optional[int]) -> None:
        """A worker ended after the stop began: gracefully, or a failure to report."""
        report = slot.report
        if report is not None:
            logger.info("%s", shutdown_line(slot.index, pid, report))
        if code == 0 and report is not None and report["ok"]:
            return
        if slot.killed:
            self.failures.append(f"worker {slot.index} (pid {pid}) was still running {self.kill_timeout:g} s "
                                 f"after the stop: killed")
            return
        if not slot.said_hello and slot.forward is not None:
            logger.info("worker %d (pid %d) was still starting when the stop came (%s)", slot.index, pid,
                        _describe_exit(code))
            return
        self.failures.append(f"worker {slot.index} (pid {pid}) did not shut down gracefully: {_describe_exit(code)}")

    # -- stopping ------------------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGUSR1:
            self._request_stats()
        elif self.stop_signal is None:
            self._stop(signum, f"received {signal.Signals(signum).name}")
        else:
            logger.info("received %s: already stopping", signal.Signals(signum).name)

    def _stop(self, signum: int, why: str) -> None:
        self.stop_signal = signum
        alive = [slot for slot in self.slots if slot.process is not None]
        grace = self.specs[0].grace
        logger.info("%s: stopping %d workers (grace %g s)", why, len(alive), grace)
        for slot in alive:
            if slot.said_hello:
                self._signal(slot, signum)
            else:  # its handlers are not installed yet: the signal would kill it or be lost
                slot.forward = signum
        if self.kill_timeout is not None:
            self.kill_at = time.monotonic() + self.kill_timeout

    @staticmethod
    def _signal(slot: _Slot, signum: int) -> None:
        try:
            os.kill(slot.pid, signum)  # type: ignore[arg-type]
        except ProcessLookupError:  # it just died: its sentinel tells
            pass

    def _kill_stragglers(self) -> None:
        self.kill_at = None
        for slot in self.slots:
            if slot.process is not None:
                slot.killed = True
                slot.process.kill()

    def _end_everything(self) -> None:
        """On the way out, whatever happened: no worker outlives the parent."""
        for slot in self.slots:
            if slot.process is None:
                continue
            try:
                slot.process.terminate()
                slot.process.join(self.kill_timeout or 30.0)
                if slot.process.exitcode is None:
                    slot.process.kill()
                    slot.process.join()
                slot.process.close()
            except (ValueError, OSError):
                pass
            slot.process = None
            if slot.pipe is not None:
                slot.pipe.close()
                slot.pipe = None

    # -- stats on request ------------------------------------------------------------------------
    def _request_stats(self) -> None:
        if self._stats_pending is not None:
            return  # the answers to the last request are still coming
        self._stats_token += 1
        asked = [slot.index for slot in self.slots if slot.ready_at is not None and slot.pipe is not None]
        self._stats_pending = {"token": self._stats_token, "asked": asked, "answers": {},
                               "deadline": time.monotonic() + STATS_TIMEOUT}
        for index in asked:
            tell(self.slots[index].pipe, STATS, self._stats_token)
        if not asked:
            self._print_stats()

    def _print_stats(self) -> None:
        pending, self._stats_pending = self._stats_pending, None
        answers = pending["answers"]  # type: ignore[index]
        for slot in self.slots:
            if slot.index in answers:
                logger.info("%s", worker_line(slot.index, answers[slot.index], slot.restarts))
            elif slot.process is None:
                logger.info("worker %d: not running (restart %d due)", slot.index, slot.restarts)
            else:
                logger.info("worker %d pid %d: %s", slot.index, slot.pid,
                            "no answer" if slot.index in pending["asked"] else "starting")  # type: ignore[index]
        if answers:
            logger.info("%s", total_line(answers.values()))

    def _workers_metric(self) -> Tuple[int, int]:
        """For the metrics thread: workers serving, and restarts so far (plain reads of ints)."""
        return sum(1 for slot in self.slots if slot.ready_at is not None), self.restarts_total


def _with_port(spec: WorkerSpec, port: int) -> WorkerSpec:
    from dataclasses import replace

    return replace(spec, port=port)


def _check_grace(grace: Any) -> float:
    return 0.0 if grace == 0 else check_timeout("grace", grace)


def _resolve_loop(loop: str) -> str:
    import importlib.util

    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, got {loop!r}")
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    if loop == "uvloop" and not has_uvloop:
        raise ValueError("loop='uvloop' needs uvloop installed (the uvloop extra)")
    return "uvloop" if loop == "uvloop" or (loop == "auto" and has_uvloop) else "asyncio"


def _check_caller() -> None:
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("conntable.workers.run() must be called from the main thread (it handles signals)")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError("conntable.workers.run() blocks until the server stops: call it from plain code, "
                       "not from a running event loop")


def run(
    main: Callable[[Worker], Awaitable[Any]],
    *,
    workers: Optional[int] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    backlog: int = 100,
    reuse_port: Optional[bool] = None,
    max_connections: Optional[int] = None,
    grace: float = 30.0,
    manager_options: Optional[Mapping[str, Any]] = None,
    loop: str = "auto",
    metrics_port: Optional[int] = None,
    metrics_host: str = "127.0.0.1",
    metrics_interval: float = 1.0,
    stats_interval: Optional[float] = None,
    restart_backoff: float = 0.5,
    restart_backoff_max: float = 30.0,
    healthy_after: float = 30.0,
    kill_timeout: Optional[float] = None,
) -> int:
    """Serve ``main`` on ``workers`` processes sharing one port; return the exit status (0: all stopped gracefully).

    Blocks until the server is stopped (SIGTERM or SIGINT), then returns 0
    if every worker shut down gracefully, else 1 (each failure is logged).
    Use it as ``sys.exit(run(main, ...))`` under ``if __name__ ==
    "__main__":`` (workers are spawned: they import your module). See the
    ``conntable.workers`` module documentation for every argument.
    """
    _check_caller()
    if not callable(main):
        raise TypeError(f"main must be an async function of the worker, not {type(main).__name__}")
    count = (os.cpu_count() or 1) if workers is None else check_size("workers", workers, minimum=1)
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, got {port!r}")
    check_size("backlog", backlog, minimum=1)
    if reuse_port is None:
        reuse_port = REUSE_PORT_BALANCES
    elif reuse_port and not REUSE_PORT_BALANCES:
        raise ValueError("reuse_port=True needs Linux: elsewhere SO_REUSEPORT does not spread connections")
    options = dict(manager_options or {})
    if "max_connections" in options:
        raise TypeError("max_connections is the whole server's: pass it to run(), which splits it over the workers")
    shares: List[Optional[int]] = [None] * count
    if max_connections is not None:
        check_size("max_connections", max_connections, minimum=count)
        shares = list(split_limit(max_connections, count))
    probe = ConnectionManager(**options)  # the manager's own checks, here rather than in every worker
    if shares[0] is not None and shares[0] > probe.max_connections:
        logger.warning("max_connections=%s gives each worker up to %s connections, but a worker's descriptor "
                       "limit leaves room for about %s: use more workers or raise RLIMIT_NOFILE",
                       f"{max_connections:,}", f"{shares[0]:,}", f"{probe.max_connections:,}")
    close_timeout = probe.close_timeout
    grace = _check_grace(grace)
    if kill_timeout is None:
        kill_timeout = math.inf if grace == math.inf else 2 * grace + 6 * close_timeout + 5.0
    else:
        kill_timeout = check_timeout("kill_timeout", kill_timeout)
    metrics = None
    if metrics_port is not None:
        if isinstance(metrics_port, bool) or not isinstance(metrics_port, int) or not 0 <= metrics_port <= 65535:
            raise ValueError(f"metrics_port must be an int from 0 to 65535 or None, got {metrics_port!r}")
        import prometheus_client  # noqa: F401  (the prometheus extra; fail here, not in the workers)

        metrics = (metrics_host, metrics_port)
        check_timeout("metrics_interval", metrics_interval)
    if stats_interval is not None:
        check_timeout("stats_interval", stats_interval)
    backoff = (restart_backoff, restart_backoff_max, healthy_after)
    Backoff(*backoff)  # checks them
    kind = _resolve_loop(loop)
    specs = [
        WorkerSpec(index=index, workers=count, host=host, port=port, backlog=backlog, reuse_port=reuse_port,
                   max_connections=shares[index], manager_options=options, grace=grace, loop=kind,
                   metrics_interval=metrics_interval if metrics is not None else None)
        for index in range(count)
    ]
    try:
        pickle.dumps((main, specs[0]))
    except Exception as exc:
        raise TypeError(f"main and manager_options must be picklable (workers are spawned processes that import "
                        f"them): define main at the top level of a module; {exc}") from exc
    supervisor = _Supervisor(main, specs, reuse_port=reuse_port, backoff=backoff,
                             kill_timeout=None if kill_timeout == math.inf else kill_timeout,
                             metrics=metrics, stats_interval=stats_interval)
    with default_handler():
        return supervisor.run()
