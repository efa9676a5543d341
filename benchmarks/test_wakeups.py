"""wake-ups: one simulated minute per round; the callback counts are in extra_info."""

import pytest

from conntable.bench import subjects
from conntable.bench.workloads import wakeups


@pytest.mark.parametrize("minute", wakeups.MINUTES, ids=lambda m: m.name)
@pytest.mark.parametrize("name", subjects.NAMES)
def test_wakeups(benchmark, size, minute, name):
    benchmark.group = f"wake-ups [{minute.name}] n={size}"
    try:
        counts = benchmark.pedantic(wakeups.count_callbacks, args=(name, size, minute), rounds=1)
    except subjects.Unavailable as why:
        pytest.skip(str(why))
    benchmark.extra_info.update(counts)
