"""keys: touch, churn and a sweep pass with int, str and object keys, every row beside the compiled table."""

import pytest

from conntable.bench.workloads import keys


@pytest.mark.parametrize("row", keys.ROWS)
@pytest.mark.parametrize("kind", keys.KINDS)
@pytest.mark.parametrize("operation", keys.OPERATIONS)
def test_keys(measure, settings, size, operation, kind, row):
    measure(keys.KeysCase(operation, kind, row, size, settings), group=f"keys {operation}, {kind} keys n={size}")
