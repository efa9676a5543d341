"""memory: the time to register n connections; bytes per connection (fresh process) in extra_info."""

import pytest

from conntable.bench import subjects
from conntable.bench.workloads import memory


@pytest.mark.parametrize("name", subjects.NAMES)
def test_memory(measure, benchmark, size, name):
    probed = memory.probe_in_subprocess(name, size, traced=size <= memory.TRACED_UP_TO)
    if "unavailable" in probed:
        pytest.skip(probed["unavailable"])
    benchmark.extra_info.update({f"bytes_per_connection[{k}]": v for k, v in probed.items()})
    measure(memory.FillCase(name, size), group=f"memory: register n connections, n={size}", rounds=3)
