"""The fault tests are leak-checked too (descriptors, tasks, managed connections)."""

from server_fixtures import _no_leaks  # noqa: F401  (an autouse fixture)
