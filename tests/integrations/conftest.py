"""Fixtures for the integration tests: the same loops and leak checks as the asyncio layer's."""

import pytest
from server_fixtures import _no_leaks, loop_kind, run  # noqa: F401  (fixtures)


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of the test's own (see redis_support), killed at the end."""
    from redis_support import RedisServer

    server = RedisServer(str(tmp_path)).start()
    yield server
    server.kill()
