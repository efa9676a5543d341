"""Random operation sequences against a plain dict model, checking the precision contract.

The model knows each entry's value, last activity, idle timeout and
deadline, so it knows each entry's due time exactly. The table may return an
entry from any ``expire(now)`` with ``now >= due`` (it rounds to its
resolution), must return it by the first call with ``now >= due + resolution``
(unless ``limit`` cut the call short), and ``next_expiry()`` must never be
later than any entry's ``due + resolution``. Which borderline entries a call
returns is the implementation's choice, so the model follows the table's
answers rather than predicting them.

Keys are drawn as a dict would see them in a server: ints (on and off the
fast path), strs, tuples, floats equal to ints (one key with the int), and
objects with their own hash and equality (colliding with each other and
with small ints). The model is a dict, so it decides which keys are one;
the table must agree, and hand back the key object that was stored first.

``HYPOTHESIS_PROFILE=long`` runs many more and longer sequences.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Optional

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from conntable import TableFull

settings.register_profile("default", max_examples=150, stateful_step_count=60, deadline=None)
settings.register_profile("long", max_examples=3000, stateful_step_count=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

TOLERANCE = 1e-9


class Token:
    """A key with its own hash (``k % 4``: collides with other Tokens and with the ints 0..3) and equality."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __hash__(self) -> int:
        return self.k % 4

    def __eq__(self, other: object) -> Any:
        return self.k == other.k if isinstance(other, Token) else NotImplemented

    def __repr__(self) -> str:
        return f"Token({self.k})"


INTS = st.one_of(st.integers(0, 40), st.sampled_from([2**63 - 1, 2**61 - 1, 2**40 + 3, 123_456_789_012, -7]))
KEYS = st.one_of(
    INTS,
    INTS,
    st.integers(0, 12).map(float),
    st.sampled_from(["a", "b", "conn-1", "conn-2", "", "0"]),
    st.tuples(st.integers(0, 5), st.sampled_from(["x", "y"])),
    st.integers(0, 12).map(Token),
)


def ordered(keys: Any) -> list:
    """Keys of any types in one order, each with its type (the table keeps the first key object)."""
    return sorted((type(k).__name__, repr(k)) for k in keys)
TIMEOUTS = st.one_of(
    st.none(), st.just(math.inf), st.floats(0.01, 30.0), st.sampled_from([0.1, 0.5, 1.0, 2.5])
)
OFFSETS = st.one_of(st.floats(-5.0, 40.0), st.sampled_from([0.0, 0.1, 1.0, 2.0]))


@dataclass
class Model:
    value: Any
    last: float
    idle: float
    deadline: float

    @property
    def due(self) -> float:
        return min(self.last + self.idle, self.deadline)


class TableMachine(RuleBasedStateMachine):
    Table: type

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[Any, Model] = {}
        self.t: Any = None

    @initialize(
        idle=st.sampled_from([0.5, 1.0, 3.0, 10.0, math.inf]),
        resolution=st.sampled_from([0.01, 0.1, 0.25, 1.0]),
        start=st.sampled_from([0.0, 7.5, 1e6]),
        max_size=st.sampled_from([None, None, 5, 30]),
    )
    def create(self, idle: float, resolution: float, start: float, max_size: Optional[int]) -> None:
        self.t = self.Table(idle, resolution=resolution, now=start, max_size=max_size)
        self.max_size = max_size

    # -- operations -----------------------------------------------------------
    def _full(self) -> bool:
        return self.max_size is not None and len(self.model) >= self.max_size

    @rule(key=KEYS, value=st.integers(), idle=TIMEOUTS, offset=st.one_of(st.none(), OFFSETS))
    def add(self, key: int, value: int, idle: Optional[float], offset: Optional[float]) -> None:
        deadline = None if offset is None else self.t.now + offset
        if key in self.model:
            with pytest.raises(KeyError):
                self.t.add(key, value, idle_timeout=idle, deadline=deadline)
        elif self._full():
            with pytest.raises(TableFull):
                self.t.add(key, value, idle_timeout=idle, deadline=deadline)
        else:
            self.t.add(key, value, idle_timeout=idle, deadline=deadline)
            self.model[key] = Model(
                value, self.t.now, self.t.idle_timeout if idle is None else idle,
                math.inf if deadline is None else deadline,
            )

    @rule(first=st.integers(0, 40), count=st.integers(1, 12), base=OFFSETS,
          spacing=st.sampled_from([0.003, 0.01, 0.07, 0.5]))
    def add_spread(self, first: int, count: int, base: float, spacing: float) -> None:
        """Several deadlines a few ticks apart, so that slots cascade with neighbours."""
        for i, key in enumerate(range(first, first + count)):
            if key not in self.model and not self._full():
                self.add(key, i, None, base + i * spacing)

    @rule(key=KEYS, value=st.integers())
    def set_item(self, key: int, value: int) -> None:
        if key in self.model:
            self.t[key] = value
            self.model[key].value = value
        elif self._full():
            with pytest.raises(TableFull):
                self.t[key] = value
        else:
            self.t[key] = value
            self.model[key] = Model(value, self.t.now, self.t.idle_timeout, math.inf)

    @rule(key=KEYS)
    def touch(self, key: int) -> None:
        if key in self.model:
            self.t.touch(key)
            self.model[key].last = self.t.now
        else:
            with pytest.raises(KeyError):
                self.t.touch(key)

    @rule(keys=st.lists(KEYS, max_size=8))
    def touch_many(self, keys: list[int]) -> None:
        assert self.t.touch_many(keys) == sum(k in self.model for k in keys)
        for k in keys:
            if k in self.model:
                self.model[k].last = self.t.now

    @rule(key=KEYS)
    def remove(self, key: int) -> None:
        if key in self.model:
            assert self.t.pop(key) == self.model.pop(key).value
        else:
            with pytest.raises(KeyError):
                del self.t[key]

    @rule(key=KEYS, offset=st.one_of(st.none(), OFFSETS))
    def set_deadline(self, key: int, offset: Optional[float]) -> None:
        when = None if offset is None else self.t.now + offset
        if key in self.model:
            self.t.set_deadline(key, when)
            self.model[key].deadline = math.inf if when is None else when
        else:
            with pytest.raises(KeyError):
                self.t.set_deadline(key, when)

    @rule(key=KEYS, seconds=TIMEOUTS)
    def set_idle_timeout(self, key: int, seconds: Optional[float]) -> None:
        if key in self.model:
            self.t.set_idle_timeout(key, seconds)
            self.model[key].idle = self.t.idle_timeout if seconds is None else seconds
        else:
            with pytest.raises(KeyError):
                self.t.set_idle_timeout(key, seconds)

    @rule(dt=st.one_of(st.floats(0.0, 5.0), st.sampled_from([0.0, 0.01, 0.1, 1.0, 30.0, 1e4])),
          limit=st.one_of(st.none(), st.integers(0, 4)))
    def expire(self, dt: float, limit: Optional[int]) -> None:
        now = self.t.now + dt
        expired = self.t.expire(now, limit)
        assert self.t.now == now
        if limit is not None:
            assert len(expired) <= limit
        for key, value, reason in expired:
            entry = self.model.pop(key)
            assert value == entry.value
            assert entry.due <= now + TOLERANCE, "expired early"
            assert reason == ("deadline" if entry.deadline <= entry.last + entry.idle else "idle")
        if limit is None or len(expired) < limit:
            self.check_complete(now)

    @rule()
    def sleep_until_next_expiry(self) -> None:
        """What a sweeper does: sleep until next_expiry(), then expire."""
        nxt = self.t.next_expiry()
        if nxt is not None and nxt - self.t.now < 1e6:
            self.expire(nxt - self.t.now, None)

    @rule()
    def clear(self) -> None:
        self.t.clear()
        self.model.clear()

    def check_complete(self, now: float) -> None:
        resolution = self.t.resolution
        for key, entry in self.model.items():
            assert entry.due + resolution > now - TOLERANCE, f"{key} expired late"
        nxt = self.t.next_expiry()
        finite = [e.due for e in self.model.values() if e.due != math.inf]
        if not finite:
            assert nxt is None
            return
        assert nxt is not None and nxt > now, "a loop sleeping until next_expiry() would spin"
        assert nxt <= min(finite) + resolution + TOLERANCE, "sleeping until next_expiry() would be late"

    # -- invariants ---------------------------------------------------------
    @invariant()
    def agrees_with_model(self) -> None:
        if self.t is None:
            return
        assert len(self.t) == len(self.model)
        assert ordered(self.t) == ordered(self.model)
        for key, entry in self.model.items():
            assert self.t[key] == entry.value
            assert self.t.last_activity(key) == entry.last
            assert self.t.due(key) == entry.due


def test_random_operation_sequences(Table: type) -> None:
    machine = type("Machine", (TableMachine,), {"Table": Table})
    run_state_machine_as_test(
        machine, settings=settings(settings(), suppress_health_check=[HealthCheck.too_slow])
    )
