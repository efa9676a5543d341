"""The timed loops: as plain as a server's own code, so that they measure the call, not the harness.

Every kernel walks ticks of operations; those that drive a clock move it once
per tick (``advance``), and return where it ended so that the next round
continues from there. Pre-bound callables come in as arguments (locals are
the cheapest lookups CPython has).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..traffic import TICK

Ticks = Sequence[Sequence[Any]]


def _no_advance(now: float) -> None:
    pass


def touch_each(ticks: Ticks, advance: Callable[[float], Any], touch: Callable[[int], Any], now: float) -> float:
    for keys in ticks:
        now += TICK
        advance(now)
        for k in keys:
            touch(k)
    return now


def touch_batches(ticks: Ticks, advance: Callable[[float], Any], touch_many: Callable[[Any], Any], now: float) -> float:
    for keys in ticks:
        now += TICK
        advance(now)
        touch_many(keys)
    return now


def store_each(ticks: Ticks, d: dict, v: Any) -> None:
    for keys in ticks:
        for k in keys:
            d[k] = v


def call_each(ticks: Ticks, call: Callable[[int], Any]) -> float:
    """The floor under any per-key method: the same loop calling a no-op METH_O method."""
    return touch_each(ticks, _no_advance, call, 0.0)


def visit_each(ticks: Ticks) -> None:
    for keys in ticks:
        for k in keys:
            pass


def add_remove_each(ticks: Ticks, advance: Callable[[float], Any], add: Callable[[int, Any], Any],
                    mapping: Any, v: Any, now: float) -> float:
    for pairs in ticks:
        now += TICK
        advance(now)
        for new, old in pairs:
            add(new, v)
            del mapping[old]
    return now


def store_delete_each(ticks: Ticks, d: dict, v: Any) -> None:
    for pairs in ticks:
        for new, old in pairs:
            d[new] = v
            del d[old]


def visit_pairs(ticks: Ticks) -> None:
    for pairs in ticks:
        for new, old in pairs:
            pass


def serve_ticks(ticks: Ticks, expire: Callable[[float], Any], touch: Callable[[int], Any],
                add: Callable[[int, Any], Any], mapping: Any, v: Any) -> int:
    """A server's ticks: an expiry pass, then the tick's activity, arrivals and closes."""
    expired = 0
    for now, touches, adds, removes in ticks:
        expired += len(expire(now))
        for k in touches:
            touch(k)
        for k in adds:
            add(k, v)
        for k in removes:
            del mapping[k]
    return expired
