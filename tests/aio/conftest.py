"""Fixtures for the asyncio layer's tests.

Every test that uses ``run`` runs twice: on asyncio's default loop and on
uvloop (a test dependency: without it the uvloop cases fail, they do not
skip). Sockets are real, on 127.0.0.1 only. Every test is also leak-checked
by ``conntable.testing`` (descriptors, tasks, registered connections), on top
of the exact accounting of ``Scenario.finish``.
"""

from server_fixtures import _no_leaks, loop_kind, run  # noqa: F401  (fixtures)
