"""Behaviour of the connection table, run against both implementations."""

from __future__ import annotations

import collections.abc
import math

import pytest

import conntable
from conntable import Expired, TableFull


def keys_of(expired: list[Expired]) -> set[int]:
    return {e.key for e in expired}


# -- the mapping protocol ----------------------------------------------------


def test_mapping_protocol(Table: type) -> None:
    t = Table(10.0, now=0.0)
    assert isinstance(t, collections.abc.MutableMapping)
    assert len(t) == 0 and list(t) == [] and 5 not in t
    t[5] = "five"
    t[7] = "seven"
    assert len(t) == 2
    assert t[5] == "five" and t.get(7) == "seven" and t.get(8) is None and t.get(8, "x") == "x"
    assert 5 in t and 6 not in t
    assert sorted(t) == [5, 7] and sorted(t.keys()) == [5, 7]
    assert sorted(t.values()) == ["five", "seven"]
    assert sorted(t.items()) == [(5, "five"), (7, "seven")]
    t[5] = "FIVE"  # replace: same entry, new value
    assert t[5] == "FIVE" and len(t) == 2
    assert t.pop(5) == "FIVE" and 5 not in t
    assert t.pop(5, "gone") == "gone"
    with pytest.raises(KeyError):
        t.pop(5)
    assert t.setdefault(9, "nine") == "nine" and t.setdefault(9, "other") == "nine"
    t.update({11: "eleven"}, **{})
    assert t[11] == "eleven"
    key, value = t.popitem()
    assert key not in t and value in ("seven", "nine", "eleven") and len(t) == 2
    del t[next(iter(t))]
    assert len(t) == 1
    t.clear()
    assert len(t) == 0 and list(t) == []
    with pytest.raises(KeyError):
        t.popitem()
    with pytest.raises(KeyError):
        t[1]
    with pytest.raises(KeyError):
        del t[1]


def test_tables_compare_by_contents_like_a_dict(Table: type) -> None:
    a, b = Table(), Table(now=5.0)
    assert a == b and not a != b and a == {} and {} == a  # contents only: not timers or settings
    a["x"] = [1]
    assert a != b and a == {"x": [1]} and {"x": [1]} == a and a != {"x": [2]} and a != {"y": [1]}
    b["x"] = [1]
    assert a == b and a == a.copy()
    assert a != [("x", [1])] and (a == 1) is False  # only a Mapping compares equal
    with pytest.raises(TypeError, match="unhashable"):
        hash(a)  # mutable, like a dict


def test_settings_are_read_only_properties(Table: type) -> None:
    t = Table(5.0, resolution=0.25, now=100.0, max_size=3)
    assert (t.idle_timeout, t.resolution, t.now, t.max_size) == (5.0, 0.25, 100.0, 3)
    assert Table().max_size is None and Table().idle_timeout == 60.0
    for name in ("now", "idle_timeout", "resolution", "max_size"):
        with pytest.raises(AttributeError):
            setattr(t, name, 1.0)
    assert "len=0" in repr(t)


def test_add_records_now_and_timeouts(Table: type) -> None:
    t = Table(10.0, now=3.25)
    t.add(1)
    t.add(2, "v", idle_timeout=2.5, deadline=4.0)
    assert t[1] is None and t[2] == "v"
    assert t.last_activity(1) == 3.25 and t.due(1) == 13.25
    assert t.due(2) == 4.0
    with pytest.raises(KeyError):
        t.add(1)
    assert t[1] is None  # a failed add leaves the entry alone


def test_touch_records_the_exact_clock(Table: type) -> None:
    t = Table(10.0, resolution=1.0, now=0.0)
    t[1] = None
    t.expire(0.123456789)
    t.touch(1)
    assert t.last_activity(1) == 0.123456789  # exact, not rounded to a tick
    assert t.due(1) == 0.123456789 + 10.0
    with pytest.raises(KeyError):
        t.touch(2)


def test_touch_many_counts_present_keys(Table: type) -> None:
    t = Table(10.0, now=0.0)
    for k in range(10):
        t[k] = k
    t.expire(1.5)
    assert t.touch_many([1, 3, 100, 5, 3]) == 4
    assert t.touch_many(iter(range(20, 30))) == 0
    assert [t.last_activity(k) for k in (1, 3, 5, 2)] == [1.5, 1.5, 1.5, 0.0]
    assert t.touch_many([1, "2", 3.0, True]) == 3  # "2" is not a key here; 3.0 and True are 3 and 1
    t.expire(2.0)
    with pytest.raises(TypeError, match="unhashable"):
        t.touch_many([1, ["2"]])
    assert t.last_activity(1) == 1.5  # all or nothing


def test_set_idle_timeout_and_deadline(Table: type) -> None:
    t = Table(10.0, now=0.0)
    t[1] = None
    t.set_idle_timeout(1, 3.0)
    assert t.due(1) == 3.0
    t.set_deadline(1, 2.0)
    assert t.due(1) == 2.0
    t.set_deadline(1, None)
    assert t.due(1) == 3.0
    t.set_idle_timeout(1, None)
    assert t.due(1) == 10.0
    t.set_idle_timeout(1, math.inf)
    assert t.due(1) == math.inf
    assert t.next_expiry() is None  # nothing can ever expire
    t.set_deadline(1, 5.0)
    assert t.next_expiry() is not None
    assert keys_of(t.expire(5.0 + t.resolution)) == {1}


# -- expiry ------------------------------------------------------------------


def test_idle_expiry_and_reasons(Table: type) -> None:
    t = Table(10.0, resolution=0.5, now=0.0)
    t[1] = "a"
    t[2] = "b"
    t.add(3, "c", deadline=4.0)
    assert t.expire(3.9) == []
    assert t.expire(4.5) == [Expired(3, "c", "deadline")]
    t.touch(1)  # at 4.5: due 14.5
    assert t.expire(9.99) == []
    assert t.expire(10.5) == [Expired(2, "b", "idle")]
    assert t.expire(14.4) == []
    assert t.expire(15.0) == [Expired(1, "a", "idle")]
    assert len(t) == 0 and t.next_expiry() is None


def test_expire_never_early_and_at_most_one_resolution_late(Table: type) -> None:
    res = 0.1
    t = Table(math.inf, resolution=res, now=0.0)
    dues = {}
    for k in range(200):
        t.add(k, deadline=0.05 + k * 0.037)
        dues[k] = 0.05 + k * 0.037
    now = 0.0
    gone: set[int] = set()
    while len(t):
        now += 0.013
        for e in t.expire(now):
            assert e.reason == "deadline"
            assert dues[e.key] <= now  # never early
            gone.add(e.key)
        late = {k for k, d in dues.items() if d + res <= now - 1e-9}
        assert late <= gone  # never more than one resolution late
    assert gone == set(dues)


def test_limit_caps_and_leftovers_come_back(Table: type) -> None:
    t = Table(1.0, resolution=0.1, now=0.0)
    for k in range(1000):
        t[k] = k
    first = t.expire(2.0, limit=300)
    assert len(first) == 300
    assert t.next_expiry() == 2.0  # more is due right now
    second = t.expire(2.0, limit=300)
    rest = t.expire(2.0)
    assert len(second) == 300 and len(rest) == 400
    assert keys_of(first) | keys_of(second) | keys_of(rest) == set(range(1000))
    assert t.expire(2.0, limit=0) == [] and len(t) == 0


def test_limit_zero_only_advances_the_clock(Table: type) -> None:
    t = Table(1.0, resolution=0.1, now=0.0)
    t[1] = None
    assert t.expire(5.0, limit=0) == []
    assert t.now == 5.0 and 1 in t
    t.touch(1)
    assert t.last_activity(1) == 5.0
    assert t.expire(5.5) == [] and 1 in t


def test_next_expiry_lets_a_loop_sleep_exactly(Table: type) -> None:
    t = Table(3.0, resolution=0.25, now=100.0)
    for k in range(50):
        t.add(k, deadline=100.0 + k * 0.7)
    wakeups = 0
    assert [e.key for e in t.expire(100.0)] == [0]  # due exactly now
    while len(t):
        nxt = t.next_expiry()
        assert nxt is not None and nxt > t.now
        expired = t.expire(nxt)
        wakeups += 1
        for e in expired:
            assert t.now >= min(100.0 + e.key * 0.7, 103.0)
    assert t.next_expiry() is None
    assert wakeups <= 50 + 11  # one wake-up per due slot plus cascades, never a spin


def test_busy_entry_is_not_relinked_by_touch(Table: type) -> None:
    """Lazy re-arm: a touched entry survives its old due time and expires after the new one."""
    t = Table(10.0, resolution=1.0, now=0.0)
    t[1] = None
    for step in range(1, 30):
        now = float(step)
        assert t.expire(now) == []
        t.touch(1)
    assert t.due(1) == 39.0
    assert t.expire(38.5) == []
    assert keys_of(t.expire(40.0)) == {1}


def test_long_and_huge_timeouts(Table: type) -> None:
    t = Table(math.inf, resolution=0.001, now=0.0)
    t.add(1, deadline=86_400.0 * 365)  # a year of milliseconds: upper wheel levels
    t.add(2, deadline=1e300)  # beyond the wheel's range: clamped, checked when reached
    t.add(3)
    assert t.expire(86_400.0 * 365 - 1) == []
    assert keys_of(t.expire(86_400.0 * 365 + 0.001)) == {1}
    assert len(t) == 2
    t.add(4, deadline=1e14)  # far, but within the table's time: armed high up
    assert t.expire(1e12) == []
    assert t.next_expiry() == 1e14
    assert keys_of(t.expire(1e14)) == {4}
    # 1e300 is past the end of the table's time (2**62 ticks of 1 ms after its start,
    # about 146 million years): it never comes, and no clock reaches it.
    assert t.next_expiry() is None and t.due(2) == 1e300
    with pytest.raises(ValueError, match="past the end of the table's time"):
        t.expire(1e300)
    assert t.now == 1e14 and len(t) == 2


def test_deadline_in_the_past_comes_back_at_once(Table: type) -> None:
    t = Table(10.0, now=50.0)
    t[1] = None
    t.set_deadline(1, 10.0)
    assert t.next_expiry() == 50.0
    assert t.expire(50.0) == [Expired(1, None, "deadline")]


# -- bad input ---------------------------------------------------------------


@pytest.mark.parametrize("key", [[1], {}, {1}, bytearray(b"1"), (1, [2])])
def test_unhashable_keys_raise_type_error(Table: type, key: object) -> None:
    t = Table()
    t[1] = None
    for op in (
        lambda: t.__setitem__(key, 1), lambda: t[key], lambda: key in t, lambda: t.touch(key),
        lambda: t.add(key), lambda: t.get(key), lambda: t.last_activity(key), lambda: t.pop(key, None),
        lambda: t.set_deadline(key, 1.0), lambda: t.__delitem__(key), lambda: t.setdefault(key),
    ):
        with pytest.raises(TypeError, match="unhashable"):
            op()
    assert list(t) == [1]


@pytest.mark.parametrize("key", [-1, 2**61 - 2, 2**61 - 1, 2**61, 2**63 - 1, 2**63, 2**64, 2**100, -(2**70)])
def test_ints_on_and_off_the_fast_path_are_keys(Table: type, key: int) -> None:
    t = Table(now=0.0)
    t[key] = "k"
    t[hash(key)] = "its hash"  # 2**61 - 1 hashes to 0, -1 to -2: another key unless equal
    assert t[key] == ("k" if key != hash(key) else "its hash") and key in t and t.get(key + 1) is None
    t.touch(key)
    assert t.touch_many([key, key]) == 2 and t.last_activity(key) == 0.0
    assert [k for k in t if k == key] == [key] and type(next(k for k in t if k == key)) is int
    assert t.pop(key) in ("k", "its hash") and key not in t


def test_index_like_objects_are_keys_of_their_own(Table: type) -> None:
    class Index:
        def __index__(self) -> int:
            return 42

    t = Table()
    index = Index()
    t[index] = "index"
    t[42] = "int"
    assert t[index] == "index" and t[42] == "int" and len(t) == 2 and index in list(t)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, -math.inf])
def test_bad_timeouts_raise_value_error(Table: type, bad: float) -> None:
    with pytest.raises(ValueError, match="idle_timeout must be positive"):
        Table(bad)
    t = Table(now=0.0)
    t[1] = None
    with pytest.raises(ValueError, match="idle_timeout"):
        t.set_idle_timeout(1, bad)
    with pytest.raises(ValueError, match="idle_timeout"):
        t.add(2, idle_timeout=bad)
    assert t.due(1) == 60.0 and 2 not in t


@pytest.mark.parametrize("bad", ["60", b"1", [1], None])
def test_wrong_types_for_times_raise_type_error(Table: type, bad: object) -> None:
    if bad is not None:
        with pytest.raises(TypeError):
            Table(bad)
        with pytest.raises(TypeError):
            Table(resolution=bad)
        with pytest.raises(TypeError):
            Table(now=bad)
    t = Table(now=0.0)
    t[1] = None
    if bad is not None:
        with pytest.raises(TypeError):
            t.set_deadline(1, bad)
        with pytest.raises(TypeError):
            t.set_idle_timeout(1, bad)
    with pytest.raises(TypeError):
        t.expire(bad)
    assert t.due(1) == 60.0 and t.now == 0.0


def test_nan_deadline_and_bad_resolution(Table: type) -> None:
    t = Table(now=0.0)
    t[1] = None
    with pytest.raises(ValueError, match="deadline"):
        t.set_deadline(1, math.nan)
    with pytest.raises(ValueError, match="deadline"):
        t.add(2, deadline=math.nan)
    assert t.due(1) == 60.0 and 2 not in t
    for bad in (0, -0.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="resolution"):
            Table(resolution=bad)
    inf_deadline = Table()
    inf_deadline.add(1, deadline=math.inf)
    assert inf_deadline.due(1) == inf_deadline.now + 60.0


def test_bad_now(Table: type) -> None:
    t = Table(now=10.0)
    for bad in (math.nan, 9.999, math.inf, -math.inf):
        with pytest.raises(ValueError, match="now"):
            t.expire(bad)
    assert t.now == 10.0
    assert t.expire(10) == [] and t.now == 10.0  # an int time is fine
    for bad in (math.nan, math.inf):
        with pytest.raises(ValueError, match="now"):
            Table(now=bad)


def test_bad_limit(Table: type) -> None:
    t = Table()
    with pytest.raises(ValueError, match="limit"):
        t.expire(1.0, -1)
    with pytest.raises(TypeError, match="limit"):
        t.expire(1.0, 2.0)
    with pytest.raises(TypeError, match="limit"):
        t.expire(1.0, "3")


def test_table_full(Table: type) -> None:
    assert issubclass(TableFull, Exception) and conntable.TableFull is TableFull
    t = Table(max_size=2)
    t[1] = None
    t.add(2)
    with pytest.raises(TableFull):
        t.add(3)
    with pytest.raises(TableFull):
        t[3] = None
    t[2] = "replace is fine when full"
    assert len(t) == 2 and 3 not in t
    del t[1]
    t[3] = None
    assert sorted(t) == [2, 3]
    for bad in (0, -1):
        with pytest.raises(ValueError, match="max_size"):
            Table(max_size=bad)
    with pytest.raises(TypeError, match="max_size"):
        Table(max_size=2.0)
    for bad in (-1, 2**30 + 1, 2**31):
        with pytest.raises(ValueError, match="capacity must be between 0 and 2\\*\\*30"):
            Table(capacity=bad)


def test_iteration_detects_size_changes(Table: type) -> None:
    t = Table()
    for k in range(10):
        t[k] = k
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        for k in t:
            del t[k]
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        for k in t:
            t[k + 100] = None
    for k in t:  # replacing values and touching do not change the size
        t[k] = "x"
        t.touch(k)
    assert set(t.values()) == {"x"}


def test_iteration_is_complete_with_holes(Table: type) -> None:
    t = Table()
    for k in range(1000):
        t[k * 7919] = k
    for k in range(0, 1000, 3):
        del t[k * 7919]
    assert sorted(t) == sorted(k * 7919 for k in range(1000) if k % 3)


def test_activity_times_survive_many_clock_moves(Table: type) -> None:
    """Thousands of distinct clock values, some still referenced, many not."""
    t = Table(math.inf, resolution=0.5, now=0.0)
    for k in range(300):
        t[k] = None
    expected = {k: 0.0 for k in range(300)}
    now = 0.0
    for step in range(5000):
        now += 0.001 * (1 + step % 7)
        t.expire(now, limit=0 if step % 2 else None)
        key = (step * 37) % 300
        if step % 3 == 0:
            t.touch(key)
            expected[key] = now
        if step % 11 == 0:
            del t[key]
            t.add(key, step)
            expected[key] = now
    assert {k: t.last_activity(k) for k in t} == expected
    assert t.now == now


def test_a_sleeper_never_wakes_for_nothing(Table: type) -> None:
    """next_expiry() names the first tick an entry can be due, not the start of a coarse slot."""
    t = Table(60.0, resolution=0.1, now=0.0)
    for k in range(200):
        t.expire(k * 0.37, limit=0)
        t[k] = k
    wakeups = empty = 0
    while len(t):
        nxt = t.next_expiry()
        assert nxt is not None
        expired = t.expire(nxt)
        wakeups += 1
        empty += not expired
    assert empty == 0 and wakeups <= 200
    assert t.next_expiry() is None


def test_a_loop_that_wakes_a_hair_early_still_makes_progress(Table: type) -> None:
    """asyncio runs a timer up to its clock resolution before the time it was set for."""
    t = Table(math.inf, resolution=0.1, now=1000.0)
    for k in range(50):
        t.add(k, deadline=1000.0 + k * 1.37 + 0.013 + (k % 3) * 40.0)  # levels 0 and 1
    gone: set[int] = set()
    for _ in range(200):  # bounded: a loop that cannot take the slot would spin here
        nxt = t.next_expiry()
        if nxt is None:
            break
        gone |= {e.key for e in t.expire(max(t.now, nxt - 1e-9))}
    assert gone == set(range(50)) and len(t) == 0
