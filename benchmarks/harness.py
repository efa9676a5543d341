"""What the end-to-end benchmarks share: settings, child processes, resource readers, the lag probe, tables.

Used by ``e2e_manager.py``, ``e2e_websockets.py``, ``load_ws.py`` and
``soak.py`` (run as scripts from this folder, so ``import harness`` finds it,
in the parent and in the spawned children alike).

Times that cross processes are ``time.monotonic()``: CLOCK_MONOTONIC on
Linux, one clock for every process on the machine (``time.perf_counter`` is
the same clock there).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import resource
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

HOST = "127.0.0.1"
#: The lag probe's period: short enough to see a 5 ms stall, cheap enough not to cause one.
PROBE_PERIOD = 0.005
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Config:
    """Connection counts and the traffic of the active ones, with a steady window before the idle ones expire."""

    idle: int
    active: int
    rate: float
    steady: float
    warmup: float = 1.0

    @property
    def total(self) -> int:
        return self.idle + self.active

    @property
    def idle_timeout(self) -> float:
        # Long enough that the mass expiry starts after the steady-state window.
        return self.warmup + self.steady + 2.0


# -- resources ----------------------------------------------------------------------


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: Any = "self") -> float:
    """User plus system CPU seconds of a process (this one by default)."""
    if pid == "self":
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat", "rb") as stat:
        # Fields after the command name, which may contain spaces: utime and stime are the 12th and 13th.
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def rss_bytes(pid: Any = "self") -> int:
    with open(f"/proc/{pid}/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def open_fds(pid: int) -> int:
    """Descriptors another process has open (read from outside, so it costs that process nothing)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- child processes ------------------------------------------------------------------


def die_with_parent() -> None:
    """Have the kernel kill this process if its parent dies, however the parent ends."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _child_main(target: Callable[..., None], args: Tuple[Any, ...]) -> None:
    die_with_parent()
    target(*args)


class Children:
    """Spawned child processes, every one ended when the ``with`` block is left, whichever way.

    On the way out each gets ``grace`` seconds to finish (none if the block
    raised), then is killed; a parent killed outright takes its children
    with it (PR_SET_PDEATHSIG).
    """

    def __init__(self, grace: float = 30.0) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.grace = grace
        self.processes: List[Any] = []

    def start(self, target: Callable[..., None], *args: Any, name: str) -> Any:
        process = self.ctx.Process(target=_child_main, args=(target, args), name=name, daemon=True)
        process.start()
        self.processes.append(process)
        return process

    def pipe(self, duplex: bool = True) -> Tuple[Any, Any]:
        return self.ctx.Pipe(duplex)  # type: ignore[no-any-return]

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, exc_type: Any, *exc_info: Any) -> None:
        # After a failure the children may be waiting for a word that will never come: no grace.
        deadline = time.monotonic() + (self.grace if exc_type is None else 0.0)
        for process in self.processes:
            process.join(max(0.1, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(5)


def ask(pipe: Any, timeout: float, what: str) -> Any:
    """The next message from a child, or TimeoutError after ``timeout`` seconds (EOFError if it died)."""
    if not pipe.poll(timeout):
        raise TimeoutError(f"no word from {what} within {timeout:g} s")
    return pipe.recv()


async def receive(pipe: Any) -> Any:
    """A blocking pipe read, off the loop (a thread that sleeps in recv costs no CPU)."""
    return await asyncio.get_running_loop().run_in_executor(None, pipe.recv)


class ErrorCount(logging.Handler):
    """Counts what a server process logs at ERROR or above, and what reaches the loop's exception handler.

    Both are server errors for the load and soak checks; the first few are
    kept, to be printed.
    """

    KEEP = 5

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self._note(f"{record.name}: {record.getMessage()}")

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: Dict[str, Any]) -> None:
        self._note(f"loop: {context.get('message')} {context.get('exception')!r}")

    def _note(self, text: str) -> None:
        self.count += 1
        if len(self.first) < self.KEEP:
            self.first.append(text)

    @classmethod
    def install(cls) -> "ErrorCount":
        """Count on the root logger and on the running loop (nothing is printed: the report shows the first few)."""
        counter = cls()
        root = logging.getLogger()
        root.addHandler(counter)
        root.setLevel(logging.ERROR)
        asyncio.get_running_loop().set_exception_handler(counter.loop_exception)
        return counter


# -- the event loop's lag --------------------------------------------------------------


class LagProbe:
    """A callback every ``period`` seconds that notes how late it ran: the event loop's lag.

    Each run schedules the next with ``call_later(period)`` and remembers when
    that is due; the next run compares its actual time with it. Samples are
    ``(ran at, lag)`` in ``time.monotonic()`` seconds.
    """

    def __init__(self, period: float = PROBE_PERIOD) -> None:
        self.samples: List[Tuple[float, float]] = []
        self._period = period
        self._loop = asyncio.get_running_loop()
        self._handle: Optional[asyncio.TimerHandle] = None
        self._schedule()

    def _schedule(self) -> None:
        self._due = time.monotonic() + self._period
        self._handle = self._loop.call_later(self._period, self._run)

    def _run(self) -> None:
        now = time.monotonic()
        self.samples.append((now, max(0.0, now - self._due)))
        self._schedule()

    def lags(self, since: float = -float("inf"), until: float = float("inf")) -> List[float]:
        return [lag for ran, lag in self.samples if since <= ran <= until]

    def worst(self, since: float, until: float) -> float:
        return max(self.lags(since, until), default=0.0)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class GcWatch:
    """Notes every garbage collection, ``(started at, seconds, generation)``: its pauses are loop lag too."""

    def __init__(self) -> None:
        self.collections: List[Tuple[float, float, int]] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: Dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.monotonic()
        else:
            self.collections.append((self._started, time.monotonic() - self._started, info["generation"]))

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# -- results ----------------------------------------------------------------------------


def median(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per field, the median over the rounds (text and other fields from the first)."""
    return {key: statistics.median(r[key] for r in results)
            if isinstance(value, (int, float)) and not isinstance(value, bool) else value
            for key, value in results[0].items()}


def markdown(results: Iterable[Mapping[str, Any]], columns: Mapping[str, Tuple[str, str]]) -> str:
    """The results as a markdown table, a row per result; ``columns``: key -> (title, format)."""
    def row(cells: List[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    header = [row([title for title, _ in columns.values()]), "|" + "---|" * len(columns)]
    return "\n".join(header + [row([fmt.format(r[key]) for key, (_, fmt) in columns.items()]) for r in results])


def exit_status(problems: List[str]) -> int:
    """Print each failed check on stderr; the process's exit status: 1 if any failed, else 0."""
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    return 1 if problems else 0
