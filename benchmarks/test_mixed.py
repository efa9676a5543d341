"""mixed: rounds of 6.4 simulated server seconds (see conntable.bench.workloads.mixed)."""

import functools

import pytest

from conntable.bench import subjects
from conntable.bench.workloads import mixed

ROUNDS = 2


@functools.lru_cache(maxsize=None)
def world(size):
    """The same traffic for every implementation, computed once per size."""
    return mixed.MixedWorld(size, ROUNDS)


@pytest.mark.parametrize("name", subjects.NAMES)
def test_mixed(measure, size, name):
    measure(mixed.MixedCase(world(size), name), group=f"mixed n={size}", rounds=ROUNDS, warmup=0)
