"""Fixtures shared by the test directories that run servers (aio, faults, integrations).

Each of those conftests imports what it uses from here, so that there is one
definition: pytest shares fixtures only down a directory tree, and conftest
modules cannot import each other by name.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Iterator, List, Optional

import pytest

from aio_support import HOST, TEST_TIMEOUT
from conntable.testing.plugin import leak_guard

#: How many KeyboardInterrupt/SystemExit ``run_on`` lets out of a loop before it gives up.
MAX_ESCAPES = 10


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[object]:
    """Fail a test that leaves a descriptor open, a task pending or a connection registered.

    Uses the plugin's fixture body directly, so it works whether or not the
    plugin is registered (it is, through the entry point, once installed).
    """
    yield from leak_guard(request)


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    if kind == "uvloop":
        import uvloop  # required: a missing uvloop fails these cases

        return uvloop.new_event_loop()
    return asyncio.SelectorEventLoop()


async def _open_loop_resources() -> None:
    """Make the loop open what it keeps for its lifetime before a test counts descriptors.

    libuv opens a spare descriptor (/dev/null, for its EMFILE recovery) at
    the first listen and keeps it until the loop closes.
    """
    server = await asyncio.start_server(lambda reader, writer: None, HOST, 0)
    server.close()
    await server.wait_closed()


def run_on(kind: str, coro: Any, timeout: float = TEST_TIMEOUT, escaped: Optional[List[BaseException]] = None) -> Any:
    """Run ``coro`` on a fresh loop of ``kind`` under a hang guard, then clean the loop up.

    ``escaped``: collect the KeyboardInterrupt and SystemExit that leave the
    loop (raised by a callback of its own, not by ``coro``) and run it on, as
    a program that catches them at ``run_until_complete`` would (at most
    ``MAX_ESCAPES`` times).
    """
    loop = new_loop(kind)
    try:
        loop.run_until_complete(_open_loop_resources())
        main = loop.create_task(asyncio.wait_for(coro, timeout))
        while True:
            try:
                return loop.run_until_complete(main)
            except (KeyboardInterrupt, SystemExit) as exc:
                raised_by_coro = main.done() and not main.cancelled() and main.exception() is exc
                if escaped is None or raised_by_coro or len(escaped) >= MAX_ESCAPES:
                    raise
                escaped.append(exc)  # (it may come in the loop turn that completes main: then it is done)
    finally:
        # After a failure, tasks may be left: cancel them as asyncio.run does.
        leftovers = asyncio.all_tasks(loop)
        if leftovers:
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.wait(leftovers))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture
def run(loop_kind: str) -> Callable[..., Any]:
    """``run(coroutine, timeout=...)``: run it on a fresh loop of the kind under test."""

    def runner(coro: Any, timeout: float = TEST_TIMEOUT) -> Any:
        return run_on(loop_kind, coro, timeout)

    return runner
