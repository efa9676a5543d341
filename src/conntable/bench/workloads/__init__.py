"""The workloads, in the order the command runs them.

Each module has ``NAME``, ``TITLE`` and ``jobs(size, settings)``; the cases
inside are what ``benchmarks/`` (pytest-benchmark) measures too.
"""

from . import churn, keys, memory, mixed, sweep, touch, wakeups

ALL = {module.NAME: module for module in (touch, churn, sweep, mixed, memory, wakeups, keys)}
TITLES = {name: module.TITLE for name, module in ALL.items()}
LEGENDS = {name: module.LEGEND for name, module in ALL.items()}
