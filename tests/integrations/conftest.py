"""Fixtures for the integration tests: the same loops and leak checks as the asyncio layer's."""

from server_fixtures import _no_leaks, loop_kind, run  # noqa: F401  (fixtures)
