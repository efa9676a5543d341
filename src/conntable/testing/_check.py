"""LeakCheck: snapshot the process's resources, then report what grew.

The check compares four things between its start and its end: open file
descriptors (by identity, so a reused number is still noticed), live asyncio
tasks, connections registered in live connection managers, and optionally
memory traced by tracemalloc. Before it reports, it gives the program up to
``settle`` seconds (collecting garbage, and letting a running event loop
turn when used with ``async with``) for things that are already on their
way out. That wait is a grace period for cleanup, never a time limit on the
code under test: a check that finds nothing returns at once.

A task that is pending when the settling starts is held (a strong
reference) until the check is done: one whose loop is closed can never
finish, and would otherwise be destroyed by the settle's own garbage
collection, still pending, and slip out of the report. So :meth:`check`
reports every task :meth:`leaks` shows, unless it finishes meanwhile.
"""

from __future__ import annotations

import asyncio
import fnmatch
import gc
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Generator, Iterable, List, Optional, Type

from ._connections import describe_connections, new_connections, registered_connections
from ._fds import describe_fds, open_fds
from conntable.aio._arguments import grace_seconds

from ._memory import MemoryTrace, format_size
from ._tasks import describe_task, live_tasks
from ._warmup import warm_up

__all__ = ("LeakCheck", "LeakError", "Leaks")

#: Longest single wait between two looks while settling.
_MAX_STEP = 0.1


class LeakError(AssertionError):
    """Something the code under test opened or started outlived the check."""

    __module__ = "conntable.testing"  # where users import it from, as reports show it


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


@dataclass
class Leaks:
    """What grew during a check; false when nothing did."""

    #: One line per descriptor opened and not closed.
    fds: List[str] = field(default_factory=list)
    #: One line per task started and not finished.
    tasks: List[str] = field(default_factory=list)
    #: How many connections were registered and never ended.
    connection_count: int = 0
    #: Their managers and the connections, one line each.
    connections: List[str] = field(default_factory=list)
    #: Net traced memory growth in bytes (0 unless memory is checked).
    memory_growth: int = 0
    #: The lines that grew most, when the growth is over the limit.
    memory: List[str] = field(default_factory=list)
    memory_limit: int = 0
    #: Set when the check ran inside an event loop that it could not let turn.
    note: Optional[str] = None

    def __bool__(self) -> bool:
        return bool(self.fds or self.tasks or self.connection_count or self.memory)

    def render(self, label: Optional[str] = None) -> str:
        """The report: a title, then a section per kind of resource that grew."""
        out = [f"conntable.testing: resources leaked{f' by {label}' if label else ''}"]

        def section(title: str, lines: List[str]) -> None:
            out.append(f"  {title}:")
            out.extend(f"    {line}" for line in lines)

        if self.fds:
            section(f"{_plural(len(self.fds), 'file descriptor')} opened and not closed", self.fds)
        if self.tasks:
            section(f"{_plural(len(self.tasks), 'asyncio task')} still pending", self.tasks)
        if self.connection_count:
            section(f"{_plural(self.connection_count, 'connection')} still registered", self.connections)
        if self.memory:
            section(
                f"traced memory grew by {format_size(self.memory_growth)}"
                f" (allowed {format_size(self.memory_limit)}); largest growth by line",
                self.memory,
            )
        if self.note:
            out.append(f"  note: {self.note}")
        return "\n".join(out)


class LeakCheck:
    """A context manager (``with`` or ``async with``) that fails if resources leak inside it.

    ``fds``, ``tasks``, ``connections``: which resources to watch (all by
    default). ``memory``: also trace memory with tracemalloc and fail when
    it grows by more than ``memory_limit`` bytes. ``ignore_fds``: descriptors
    that may stay open, each a substring of the description or a shell-style
    pattern for all of it (``"/dev/urandom"``, ``"tcp 127.0.0.1:* (LISTEN)"``).
    ``settle``: seconds to wait for resources already on their way out
    before reporting (0: none). ``label`` names the checked code in the report.

    ``start()``, ``leaks()`` and ``check()`` serve runners that have no
    context managers around a test.
    """

    def __init__(
        self,
        *,
        fds: bool = True,
        tasks: bool = True,
        connections: bool = True,
        memory: bool = False,
        memory_limit: int = 1 << 20,
        ignore_fds: Iterable[str] = (),
        settle: float = 1.0,
        label: Optional[str] = None,
    ) -> None:
        # Bytes, which may well pass the table's 2**30 cap on sizes: the same type rule, no cap.
        if isinstance(memory_limit, bool) or not isinstance(memory_limit, int):
            raise TypeError(f"memory_limit must be an int, not {type(memory_limit).__name__}")
        if memory_limit < 0:
            raise ValueError(f"memory_limit must not be negative, got {memory_limit}")
        self.watch_fds = fds
        self.watch_tasks = tasks
        self.watch_connections = connections
        self.ignore_fds = tuple(ignore_fds)
        self.settle = grace_seconds("settle", settle)
        self.label = label
        self._memory = MemoryTrace(memory_limit) if memory else None
        self._fds: Dict[int, str] = {}
        self._tasks: "weakref.WeakSet[asyncio.Task[Any]]" = weakref.WeakSet()
        self._connections: Any = {}
        self._started = False

    # -- the three steps -----------------------------------------------------------
    def start(self) -> "LeakCheck":
        """Take the snapshot everything is compared with."""
        warm_up()  # once per process: what loops open for good is not this check's doing
        if self._memory is not None:
            self._memory.start()
        if self.watch_fds:
            self._fds = open_fds()
        if self.watch_tasks:
            self._tasks = weakref.WeakSet(live_tasks())
        if self.watch_connections:
            self._connections = registered_connections()
        self._started = True
        return self

    def leaks(self) -> Leaks:
        """What grew since :meth:`start`, as it is right now (no waiting, no garbage collection)."""
        if not self._started:
            raise RuntimeError("LeakCheck.leaks() before start()")
        found = Leaks()
        if self.watch_fds:
            now = open_fds()
            grown = [fd for fd, identity in now.items() if self._fds.get(fd) != identity]
            if grown:
                found.fds = [line for line in describe_fds(now, grown) if not self._ignored(line)]
        if self.watch_tasks:
            found.tasks = sorted(describe_task(task) for task in self._new_tasks())
        if self.watch_connections:
            grown_connections = new_connections(self._connections, registered_connections())
            found.connection_count = sum(map(len, grown_connections.values()))
            found.connections = describe_connections(grown_connections)
        if self._memory is not None:
            found.memory_growth, found.memory = self._memory.growth()
            found.memory_limit = self._memory.limit
        return found

    def check(self) -> None:
        """Wait up to ``settle`` for leftovers to go, then raise :class:`LeakError` if any remain."""
        __tracebackhide__ = True  # pytest: show the report, not this frame
        steps = self._settle()
        try:
            while True:
                time.sleep(next(steps))
        except StopIteration as done:
            leaks: Leaks = done.value
        if leaks and _loop_running():
            leaks.note = ("checked synchronously inside a running event loop, which could not finish "
                          "closing things meanwhile: use `async with LeakCheck()` in coroutines")
        self._finish(leaks)

    async def check_async(self) -> None:
        """:meth:`check` for coroutines: the event loop keeps running while it settles."""
        __tracebackhide__ = True  # pytest: show the report, not this frame
        steps = self._settle()
        try:
            while True:
                await asyncio.sleep(next(steps))
        except StopIteration as done:
            leaks: Leaks = done.value
        self._finish(leaks)

    def stop(self) -> None:
        """End the check without judging (stops tracemalloc if the check started it)."""
        if self._memory is not None:
            self._memory.stop()

    # -- context managers -------------------------------------------------------------
    def __enter__(self) -> "LeakCheck":
        return self.start()

    def __exit__(self, exc_type: Optional[Type[BaseException]], *_: Any) -> None:
        __tracebackhide__ = True
        if exc_type is not None:  # the block failed: its error matters more than its leftovers
            self.stop()
            return
        self.check()

    async def __aenter__(self) -> "LeakCheck":
        return self.start()

    async def __aexit__(self, exc_type: Optional[Type[BaseException]], *_: Any) -> None:
        __tracebackhide__ = True
        if exc_type is not None:
            self.stop()
            return
        await self.check_async()

    # -- internals ----------------------------------------------------------------------
    def _new_tasks(self) -> List["asyncio.Task[Any]"]:
        return [task for task in live_tasks() if task not in self._tasks]

    def _ignored(self, line: str) -> bool:
        description = line.split(": ", 1)[1]
        return any(
            pattern in description or fnmatch.fnmatchcase(description, pattern) for pattern in self.ignore_fds
        )

    def _settle(self) -> Generator[float, None, Leaks]:
        """Yields how long to wait before each new look; returns what is left when time is up.

        One generator serves the blocking and the asyncio waits. The first
        look after a leak is seen comes at once (after a garbage
        collection); the waits then double up to ``_MAX_STEP``.
        """
        leaks = self.leaks()
        # Held until the end: the collections below must not destroy a pending task (one whose
        # loop is closed can never finish) and so hide it.
        held = self._new_tasks() if leaks.tasks else []
        give_up = time.monotonic() + self.settle
        delay = 0.0
        while leaks:
            yield delay
            gc.collect()
            leaks = self.leaks()
            if time.monotonic() >= give_up:
                break
            delay = min(max(2 * delay, 0.005), _MAX_STEP)
        del held
        return leaks

    def _finish(self, leaks: Leaks) -> None:
        __tracebackhide__ = True  # pytest: show the report, not this frame
        self.stop()
        if leaks:
            raise LeakError(leaks.render(self.label))


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
