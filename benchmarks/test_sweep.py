"""sweep (expire): one pass per round, by scenario; the wheel-boundary pass for conntable only."""

import pytest

from conntable.bench import subjects
from conntable.bench.workloads import sweep


@pytest.mark.parametrize("scenario", sweep.SCENARIOS, ids=lambda s: s.name)
@pytest.mark.parametrize("name", subjects.NAMES)
def test_sweep(measure, settings, size, scenario, name):
    timeline = sweep.SweepTimeline(name, size, [scenario], settings.warmup + settings.rounds)
    try:
        measure(sweep.SweepCase(timeline, scenario), group=f"sweep [{scenario.name}] n={size}",
                rounds=settings.rounds, warmup=settings.warmup)
    finally:
        timeline.close()


@pytest.mark.parametrize("name", [kind.name for kind in subjects.KINDS if kind.wheel])
def test_sweep_wheel_boundary(measure, size, name):
    measure(sweep.BoundaryCase(name, size), group=f"sweep [{sweep.BOUNDARY}] n={size}", rounds=3, warmup=0)
