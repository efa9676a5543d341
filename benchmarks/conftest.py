"""pytest-benchmark suite: the cases of ``python -m conntable bench``, grouped by workload.

Run it with::

    python -m pytest benchmarks/ [--bench-sizes=10000,100000] [--benchmark-columns=min,median,rounds]

Every implementation of a workload at one size lands in one pytest-benchmark
group (``--benchmark-group-by=group``, the default), so that each table is a
side-by-side comparison; every row of a table does the same amount of work
per round. Ops per round and the figure per operation are in each
benchmark's ``extra_info`` (``--benchmark-json``). The default size, 100k
connections, gives the core micro-benchmarks (touch, add+del and expire of
both implementations beside a plain dict); CI runs ``--bench-sizes=1000``
so that the suite cannot rot. Speed is only ever measured here, never
asserted.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from conntable.__main__ import parse_size
from conntable.bench import subjects, timing
from conntable.bench.workloads.base import Settings


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conntable benchmarks")
    group.addoption("--bench-sizes", default="100000", metavar="N[,N...]",
                    help="connection counts to benchmark at, comma-separated (default 100000)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "size" in metafunc.fixturenames:
        sizes = [parse_size(text) for text in metafunc.config.getoption("bench_sizes").split(",")]
        metafunc.parametrize("size", sizes, ids=lambda n: f"n={n}", scope="session")


@pytest.fixture
def settings(size: int) -> Settings:
    """Fixed work per round (no calibration), so that rows of a group compare directly."""
    return Settings(rounds=5, warmup=1, round_target=None, max_ops=min(size, 20_000), min_ops=1)


@pytest.fixture
def measure(benchmark: Any) -> Callable[..., None]:
    """``measure(case, group, rounds=5, warmup=1)``: time ``case`` with pytest-benchmark."""

    def run(case: Any, group: str, rounds: int = 5, warmup: int = 1) -> None:
        benchmark.group = group
        try:
            session = timing.prepared(case)
            body = session.__enter__()
        except subjects.Unavailable as why:
            pytest.skip(str(why))
        try:
            benchmark.pedantic(body, setup=case.setup, rounds=rounds, warmup_rounds=warmup)
        finally:
            session.__exit__(None, None, None)
        benchmark.extra_info["ops_per_round"] = case.ops
        benchmark.extra_info.update(getattr(case, "detail", {}))
        if benchmark.stats is not None:  # None under --benchmark-disable
            benchmark.extra_info["best_seconds_per_op"] = benchmark.stats.stats.min / case.ops

    return run
