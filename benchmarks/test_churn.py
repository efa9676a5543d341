"""churn (add + del): every implementation, beside a plain dict and the bare loop."""

import pytest

from conntable.bench.workloads import churn


@pytest.mark.parametrize("row", list(churn.ROWS))
def test_churn(measure, settings, size, row):
    measure(churn.ChurnCase(row, size, settings), group=f"churn n={size}")
