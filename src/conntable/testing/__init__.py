"""conntable.testing: fail a test that leaks descriptors, tasks or connections.

::

    from conntable.testing import LeakCheck

    with LeakCheck():                 # any test runner; `async with` inside coroutines
        run_the_code_under_test()

With pytest, the plugin (``conntable.testing.plugin``, registered through the
``pytest11`` entry point) adds the ``leak_check`` fixture, the
``conntable_leaks`` marker and the ``--conntable-leaks`` option; it does
nothing unless one of them asks for a check.

A check compares, between its start and its end, the process's open file
descriptors (described as paths, or sockets with their addresses), the live
asyncio tasks (with their coroutines), the connections still registered in
live :class:`conntable.aio.ConnectionManager` objects, and optionally the
memory traced by tracemalloc, and raises :class:`LeakError` with a report of
what grew.
"""

from ._check import LeakCheck, LeakError, Leaks

__all__ = ("LeakCheck", "LeakError", "Leaks")
