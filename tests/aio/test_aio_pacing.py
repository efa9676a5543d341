"""The mass-expiry pacer, fed synthetic loop lag: deterministic, no loop, no clock.

A plant stands in for the loop: the answers to a pass of ``n`` connections
cost ``n * reply`` seconds of loop time, and land in the pause ``delay``
passes later (0: in the pause right after the pass). The pacer must settle
near what the target allows without swinging (the old controller went from 1
to 128 and back), shrug off one late pause but not two, keep its floor rate
whatever the lag (the old one once collapsed to a pass of 1), and recover
once the loop is free again.
"""

from __future__ import annotations

import math
from typing import Callable, List, Tuple

import pytest

from conntable.aio._pacing import FIRST, HOLD, INTERVAL, MIN_RATE, PASS_BUDGET, START_RATE, TARGET_LAG, Pacer

#: The pass's own cost per entry in the plant (a cheap close).
PASS_COST = 20e-6

Lag = Callable[[int, List[int]], float]


def answers(reply: float, delay: int, base: float = 0.0) -> Lag:
    """The lag after pass ``n``: ``base``, plus the answers to the pass ``delay`` passes earlier."""
    return lambda n, sizes: base + (reply * sizes[n - delay] if n >= delay else 0.0)


def simulate(pacer: Pacer, lag: Lag, passes: int, cost: float = PASS_COST,
             sizes: List[int] = None) -> Tuple[List[int], List[float], List[float]]:
    """Run ``passes`` passes of one burst; the sizes, the lags, and the simulated time each pass began."""
    sizes = [] if sizes is None else sizes
    lags: List[float] = []
    began: List[float] = []
    clock = 0.0
    elapsed = math.inf if not sizes else INTERVAL
    for _ in range(passes):
        began.append(clock)
        size = pacer.size(elapsed)
        assert 1 <= size <= pacer.most
        sizes.append(size)
        took = size * cost
        late = lag(len(sizes) - 1, sizes)
        lags.append(late)
        pacer.report(size, took, late)
        elapsed = took + INTERVAL + late
        clock += elapsed
    return sizes, lags, began


def test_a_burst_starts_small_and_every_pass_is_within_bounds():
    pacer = Pacer(1000)
    assert pacer.size(math.inf) == FIRST
    assert Pacer(5).size(math.inf) == 5  # never more than the batch
    for elapsed in (0.0, 1e-9, INTERVAL, 1.0, 1e6):
        assert 1 <= Pacer(1000).size(elapsed) <= 1000


@pytest.mark.parametrize("delay", [0, 1, 2])
@pytest.mark.parametrize("reply", [50e-6, 100e-6, 200e-6])
def test_settles_near_the_target_without_swinging(reply, delay):
    pacer = Pacer(1000)
    sizes, lags, _ = simulate(pacer, answers(reply, delay), 400)
    settled, settled_lags = sizes[100:], lags[100:]
    # What the target allows: answers that take TARGET_LAG.
    fits = TARGET_LAG / reply
    assert 0.5 * fits <= min(settled) and max(settled) <= 1.5 * fits, (min(settled), max(settled), fits)
    assert max(settled) <= 1.5 * min(settled), settled  # a narrow band, not 1 <-> 128
    assert max(settled_lags) <= 1.5 * TARGET_LAG


def test_feedback_three_passes_late_still_does_not_swing_to_the_ends():
    pacer = Pacer(1000)
    sizes, _, _ = simulate(pacer, answers(100e-6, 3), 400)
    settled = sizes[100:]
    fits = TARGET_LAG / 100e-6
    assert 0.25 * fits <= min(settled) and max(settled) <= 2.5 * fits, (min(settled), max(settled))


def test_the_old_controllers_swing_from_late_answers_is_gone():
    """Answers that cost 150 us each and land a pass late, on top of 1 ms of other work in every pause."""
    pacer = Pacer(1000)
    sizes, _, _ = simulate(pacer, answers(150e-6, 1, base=0.001), 400)
    settled = sizes[100:]
    assert min(settled) >= 8 and max(settled) <= 1.5 * min(settled), settled


def test_a_busy_loop_slows_expiry_to_the_floor_rate_never_below():
    """Whatever the lag (50 ms in every pause, none of it this burst's), at least MIN_RATE entries a second."""
    pacer = Pacer(1000)
    entries = 10_000
    sizes, _, began = simulate(pacer, answers(100e-6, 1, base=0.050), 2000)
    assert pacer.rate >= MIN_RATE
    done = next(n for n in range(len(sizes)) if sum(sizes[:n + 1]) >= entries)
    # Simulated seconds to hand back 10,000 entries: what the floor promises, plus one pass.
    assert began[done] <= entries / MIN_RATE + 0.1


def test_it_recovers_once_the_loop_is_free():
    pacer = Pacer(1000)
    sizes, _, _ = simulate(pacer, answers(100e-6, 1, base=0.050), 100)
    assert pacer.rate == MIN_RATE
    free = answers(100e-6, 1)
    simulate(pacer, lambda n, s: free(n, s), 60, sizes=sizes)
    fits = TARGET_LAG / 100e-6
    assert 0.5 * fits <= sizes[-1] <= 1.5 * fits, sizes[-60:]


def test_one_late_pause_is_not_cut_for_two_in_a_row_are_by_at_most_half():
    pacer = Pacer(1000)
    plant = answers(100e-6, 0)
    sizes, _, _ = simulate(pacer, plant, 200)
    rate, cuts = pacer.rate, pacer.cuts
    pacer.report(30, 30 * PASS_COST, 0.001)
    pacer.report(30, 30 * PASS_COST, 0.001)
    grown = pacer.rate
    pacer.report(30, 30 * PASS_COST, 0.100)  # the process waited 100 ms for a core: one late pause
    assert pacer.rate >= grown and pacer.cuts == cuts
    pacer.report(30, 30 * PASS_COST, 0.100)  # again: now it is cut, by half at most
    assert grown / 2 <= pacer.rate < grown and pacer.cuts == cuts + 1
    # The next reports are held: the lag they show may still be the answers to the passes before the cut.
    held = pacer.rate
    for _ in range(HOLD):
        pacer.report(30, 30 * PASS_COST, 0.050)
    assert pacer.rate == held and pacer.cuts == cuts + 1
    simulate(pacer, plant, 60, sizes=sizes)
    assert 0.5 * TARGET_LAG / 100e-6 <= sizes[-1] and rate > 0


def test_a_costly_pass_is_cut_to_the_pass_budget():
    pacer = Pacer(1000)
    cost = 200e-6  # 200 us per entry: at most PASS_BUDGET / cost = 10 entries in a pass
    sizes, _, _ = simulate(pacer, answers(0.0, 0), 100, cost=cost)
    assert max(sizes[1:]) <= max(PASS_BUDGET / cost, MIN_RATE * (INTERVAL + max(sizes) * cost)) + 1
    assert max(sizes[1:]) <= 12


def test_restart_starts_the_next_burst_small_and_keeps_the_cost():
    pacer = Pacer(1000)
    simulate(pacer, answers(10e-6, 0), 100)
    cost = pacer.cost
    assert pacer.rate > START_RATE and cost > 0.0
    pacer.restart()
    assert pacer.rate == START_RATE and pacer.cost == cost and pacer.hold == 0
    assert pacer.size(math.inf) == FIRST


def test_the_rate_does_not_run_away_past_the_batch():
    pacer = Pacer(100)
    simulate(pacer, answers(0.0, 0), 500, cost=1e-7)
    assert pacer.rate <= 100 / INTERVAL
