"""Keys of any hashable type, with a dict's semantics, on both implementations.

Which keys are one (``1``, ``1.0``, ``True``; an IntEnum and its int), which
object comes back (the first stored), what a raising ``__hash__`` or
``__eq__`` does (propagates, table unchanged), an ``__eq__`` that changes the
table in the middle of a lookup (the lookup starts again; RuntimeError after
``MAX_RESTARTS`` in a row), key objects kept alive exactly as long as their
entry and shown to the garbage collector, and the Mapping protocol a
registry leans on (``==``, ``reversed``, ``copy``, ``match``).
"""

from __future__ import annotations

import collections.abc
import enum
import gc
import sys
import uuid
import weakref
from typing import Any, List

import pytest

from conntable import _common
from table_checks import check_consistent, drain


class Color(enum.IntEnum):
    RED = 1
    BLUE = 2


class Key:
    """A key with a hash of its own choosing and equality by ``name``."""

    def __init__(self, name: str, h: int = 0) -> None:
        self.name, self.h = name, h

    def __hash__(self) -> int:
        return self.h

    def __eq__(self, other: object) -> Any:
        return self.name == other.name if isinstance(other, Key) else NotImplemented

    def __repr__(self) -> str:
        return f"Key({self.name!r})"


def test_equal_keys_are_one_key_and_the_first_object_stays(Table: type) -> None:
    t = Table(now=0.0)
    t[Color.RED] = "enum"
    t[1] = "int"
    t[1.0] = "float"
    t[True] = "bool"
    assert len(t) == 1 and t[1] == "bool" and type(next(iter(t))) is Color
    t[2.0] = "two"
    t.add(2**61 - 1)  # hashes to 0, off the fast path; not equal to 0
    t[0] = "zero"
    assert sorted(map(repr, t)) == ["0", "2.0", "2305843009213693951", "<Color.RED: 1>"]
    assert t.pop(Color.BLUE) == "two" and t.popitem()[0] is not None
    assert [type(k) for k in t] and all(k in t for k in list(t))


def test_strs_uuids_tuples_and_objects(Table: type) -> None:
    t = Table(now=0.0)
    ids = [uuid.uuid4().hex for _ in range(200)]
    for i, conn_id in enumerate(ids):
        t[conn_id] = i
    uid = uuid.uuid4()
    t[uid] = "uuid"
    t[("a", 1)] = "tuple"
    t[b"raw"] = "bytes"
    obj = object()
    t[obj] = "object"
    assert len(t) == 204
    assert all(t["".join(conn_id)] == i for i, conn_id in enumerate(ids))  # equal, not the same object
    assert t[uuid.UUID(str(uid))] == "uuid" and t[("a", 1)] == "tuple" and t[obj] == "object"
    assert "x" not in t and t.get(-1) is None and t.pop("x", None) is None and t.get(object(), 5) == 5
    t.touch(ids[3])
    assert t.touch_many([ids[0], "nope", obj, uid]) == 3
    for conn_id in ids[:150]:
        del t[conn_id]  # the table shrinks, moving entries (and their key objects)
    assert sorted(t[conn_id] for conn_id in ids[150:]) == list(range(150, 200))
    check_consistent(t)
    assert {e.key for e in t.expire(1000.0)} == {*ids[150:], uid, ("a", 1), b"raw", obj}


def test_raising_hash_and_eq_propagate_with_the_table_unchanged(Table: type) -> None:
    class Refused(Exception):
        pass

    class BadHash:
        def __hash__(self) -> int:
            raise Refused("hash")

    class BadEq(Key):
        __hash__ = Key.__hash__  # (defining __eq__ alone would make the class unhashable)

        def __eq__(self, other: object) -> bool:
            raise Refused("eq")

    t = Table(now=0.0)
    t[Key("a", 5)] = 1
    t[5] = 2
    before = sorted(map(repr, t.items()))
    for key, text in ((BadHash(), "hash"), (BadEq("b", 5), "eq")):
        for op in (lambda: t.__setitem__(key, 0), lambda: t[key], lambda: key in t, lambda: t.pop(key, None),
                   lambda: t.add(key), lambda: t.touch(key), lambda: t.touch_many([5, key]),
                   lambda: t.update([(5, 9), (key, 0)]), lambda: t.setdefault(key, 0)):
            with pytest.raises(Refused, match=text):
                op()
    assert sorted(map(repr, t.items())) == before and t.last_activity(5) == 0.0


def test_an_eq_that_changes_the_table_restarts_the_lookup(Table: type) -> None:
    t = Table(now=0.0)
    for k in range(40):
        t[Key(f"k{k}", 3)] = k  # forty keys of one hash: a long probe

    class Meddler(Key):
        __hash__ = Key.__hash__
        calls = 0

        def __eq__(self, other: object) -> Any:
            Meddler.calls += 1
            if Meddler.calls == 5:
                for k in range(100, 160):  # growth: every slot moves
                    t[k] = k
                del t[Key("k39", 3)]
            return super().__eq__(other)

    assert t.get(Meddler("k20", 3)) == 20 and Meddler.calls > 5
    assert Meddler("k39", 3) not in t and len(t) == 99
    check_consistent(t)
    drain(t)


def test_an_eq_that_always_changes_the_table_gives_up_with_runtime_error(Table: type) -> None:
    t = Table(now=0.0)
    t[Key("a", 7)] = 1

    class Churner(Key):
        __hash__ = Key.__hash__

        def __eq__(self, other: object) -> bool:
            t.pop(999, None)
            t[999] = None  # a structural change at every comparison
            return False

    for op in (lambda k: k in t, lambda k: t.__setitem__(k, 2), lambda k: t.touch_many([k]),
               lambda k: t.update([(k, 2)])):
        with pytest.raises(RuntimeError, match=f"{_common.MAX_RESTARTS} key comparisons"):
            op(Churner("b", 7))
    assert t[Key("a", 7)] == 1 and Churner("b", 7) not in list(t)
    check_consistent(t)


def test_key_objects_live_as_long_as_their_entry(Table: type) -> None:
    t = Table(now=0.0)
    keys: List[Any] = [Key(f"k{i}", i % 4) for i in range(50)]
    refs = [weakref.ref(k) for k in keys]
    for i, k in enumerate(keys):
        t[k] = i
    t[Key("k0", 0)] = "again"  # an equal key: the first object stays, this one is not kept
    del keys, k
    gc.collect()
    assert all(r() is not None for r in refs)
    del t[Key("k1", 1)]
    t.pop(Key("k2", 2))
    t.popitem()
    t.expire(30.0)
    gc.collect()
    assert refs[1]() is None and refs[2]() is None and sum(r() is None for r in refs) == 3
    t.expire(1000.0)
    assert all(r() is None for r in refs)


def test_a_cycle_through_a_key_is_collected(Table: type) -> None:
    class Cyclic(Key):
        table: Any = None

    t = Table(now=0.0)
    key = Cyclic("c", 1)
    key.table = t  # key -> table -> key
    t[key] = None
    ref = weakref.ref(key)
    del t, key
    gc.collect()
    assert ref() is None


def test_sizeof_counts_the_key_array(Table: type) -> None:
    t = Table(now=0.0, capacity=1000)
    for k in range(900):
        t[k] = None
    ints = sys.getsizeof(t)
    t["one"] = None
    assert sys.getsizeof(t) > ints


def test_mapping_parity(Table: type) -> None:
    t = Table(10.0, now=0.0)
    t["a"], t[1], t[("x",)] = "A", "one", "tuple"
    t.set_deadline("a", 5.0)
    assert t == {"a": "A", 1: "one", ("x",): "tuple"} == t and t != {"a": "A"}
    assert isinstance(t, collections.abc.MutableMapping)
    assert t == collections.OrderedDict(t.items()) and t == collections.ChainMap(dict(t.items()))
    with pytest.raises(TypeError, match="not reversible"):
        reversed(t)
    clone = t.copy()
    assert clone == t and clone is not t and clone.due("a") == 5.0 and clone.last_activity(1) == 0.0
    clone["b"] = "B"
    del clone["a"]
    assert "b" not in t and t["a"] == "A" and clone == {1: "one", ("x",): "tuple", "b": "B"}
    match t:
        case {"a": value, 1: one}:
            matched = (value, one)
        case _:
            matched = None
    assert matched == ("A", "one")
    match t:
        case {"zzz": _}:
            pytest.fail("matched a key the table does not hold")
    with pytest.raises(TypeError, match="unhashable"):
        {t: 1}
