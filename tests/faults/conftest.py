"""The fault tests are leak-checked too (descriptors, tasks, managed connections)."""

from __future__ import annotations

from typing import Iterator

import pytest

from conntable.testing.plugin import leak_guard


@pytest.fixture(autouse=True)
def _no_leaks(request: pytest.FixtureRequest) -> Iterator[object]:
    yield from leak_guard(request)
