"""touch: every implementation, a plain dict store, the METH_O floor and the bare loop."""

import pytest

from conntable.bench.workloads import touch


@pytest.mark.parametrize("row", list(touch.ROWS))
def test_touch(measure, settings, size, row):
    measure(touch.TouchCase(row, size, settings), group=f"touch n={size}")
