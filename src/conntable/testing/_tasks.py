"""The asyncio tasks that are alive in the process, on any event loop.

``asyncio.all_tasks(loop)`` sees one loop, and only while it can be named; a
leak check runs between tests, when the test's loop may be closed already.
asyncio keeps every task in a weak set for ``all_tasks``: ``_all_tasks`` up
to Python 3.11, ``_scheduled_tasks`` plus ``_eager_tasks`` from 3.12. Those
are private names, so they are looked up defensively; where none exists,
only the running loop's tasks are seen.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Set

__all__ = ("live_tasks", "describe_task")

_REGISTRIES = ("_all_tasks", "_scheduled_tasks", "_eager_tasks")
# How deep to follow a coroutine's ``cr_await`` chain to where it waits.
_MAX_AWAIT_DEPTH = 20


def live_tasks() -> Set["asyncio.Task[Any]"]:
    """Every task that is not done, whichever loop it belongs to (closed ones included)."""
    tasks: Set["asyncio.Task[Any]"] = set()
    for name in _REGISTRIES:
        registry = getattr(asyncio.tasks, name, None)
        if registry is not None:
            tasks.update(list(registry))  # list(): the weak set may shrink meanwhile
    try:
        tasks.update(asyncio.all_tasks())
    except RuntimeError:  # no running loop
        pass
    return {task for task in tasks if not task.done()}


def _where(frame: Any) -> str:
    """``file:line`` of a frame, the file relative to the working directory when it is below it."""
    filename = frame.f_code.co_filename
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        relative = filename
    return f"{filename if relative.startswith('..') else relative}:{frame.f_lineno}"


def _frame(coro: Any) -> Any:
    return getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)


def _innermost(coro: Any) -> Any:
    """The coroutine (or generator) at the bottom of an await chain: what the task waits in."""
    for _ in range(_MAX_AWAIT_DEPTH):
        inner = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if inner is None or _frame(inner) is None:
            break
        coro = inner
    return coro


def _name(coro: Any) -> str:
    return getattr(coro, "__qualname__", None) or type(coro).__name__


def describe_task(task: "asyncio.Task[Any]") -> str:
    """``task 'echo-3': Echo.echo() at examples/echo_server.py:52, awaiting Queue.get()``."""
    coro = task.get_coro()
    text = f"task {task.get_name()!r}: {_name(coro)}()"
    frame = _frame(coro)
    if frame is not None:
        text += f" at {_where(frame)}"
        inner = _innermost(coro)
        if inner is not coro:
            text += f", awaiting {_name(inner)}()"
    if task.get_loop().is_closed():
        text += " (its loop is closed: it can never finish)"
    return text
