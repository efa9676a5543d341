"""CPython's own mapping-protocol tests (``test.mapping_tests``) on both tables.

``BasicTestMappingProtocol``, ``TestMappingProtocol`` and
``TestHashMappingProtocol`` run as CPython runs them on dict and
``UserDict``, against the compiled table and the twin, with these overrides
and no others (each says why):

* ``type2test``: the class under test. Its constructor takes the table's
  settings (``idle_timeout``, ``resolution``, ...), not a mapping or
  keyword pairs, so ``type2test()`` (an empty table with the defaults)
  works and the tests that build a table from pairs fill it with
  ``update`` instead:
* ``test_constructor`` (TestMappingProtocol): ``type2test(x=1, y=2)``
  would pass ``x`` and ``y`` as settings; the same pairs are given to
  ``update`` and compared with the dict, as the original compares.
* ``test_fromkeys`` (TestMappingProtocol, TestHashMappingProtocol):
  ``dict.fromkeys`` builds a mapping from the constructor alone, and the
  tests subclass ``type2test``; a table's constructor takes settings and
  the class is final (subclassing is a TypeError, as for the compiled
  class), so the override checks exactly that, and ``fromkeys`` is absent.
* ``test_repr`` and ``test_repr_deep`` (TestHashMappingProtocol): a table's
  repr is a summary (its class, ``len``, clock and settings), never its
  contents, so that logging a registry of a million connections does not
  print them. The override checks the summary, and that a table holding
  itself still has a repr.

Everything else (reading, writing, ``update`` from every kind of source
including failing ones, ``get``, ``setdefault``, ``pop``, ``popitem``,
``==`` with dicts and with raising keys, keys whose ``__hash__`` or
``__eq__`` raise, mutation during iteration, ``copy``) runs unchanged.
"""

from __future__ import annotations

import unittest
from typing import Any, List

import pytest

mapping_tests = pytest.importorskip("test.mapping_tests", reason="CPython's test package is not installed")


class Overrides:
    """The overrides the table's constructor and finality force (see the module docstring)."""

    type2test: type

    def test_constructor(self: Any) -> None:
        mapping_tests.BasicTestMappingProtocol.test_constructor(self)
        self.assertTrue(self._empty_mapping() is not self._empty_mapping())
        t = self.type2test()
        t.update(x=1, y=2)
        self.assertEqual(t, {"x": 1, "y": 2})

    def test_fromkeys(self: Any) -> None:
        self.assertFalse(hasattr(self.type2test, "fromkeys"))
        with self.assertRaises(TypeError):
            type("dictlike", (self.type2test,), {})

    def test_repr(self: Any) -> None:
        d = self._empty_mapping()
        self.assertIn("len=0", repr(d))
        d[1] = d
        self.assertIn("len=1", repr(d))
        d.clear()

    def test_repr_deep(self: Any) -> None:
        d = self._empty_mapping()
        for _ in range(100):
            d0, d = d, self._empty_mapping()
            d[1] = d0
        self.assertIn("len=1", repr(d))


BASES = {
    "BasicTestMappingProtocol": (mapping_tests.BasicTestMappingProtocol,),
    "TestMappingProtocol": (Overrides, mapping_tests.TestMappingProtocol),
    "TestHashMappingProtocol": (Overrides, mapping_tests.TestHashMappingProtocol),
}


def suite_class(suite: str, Table: Any) -> type:
    return type(suite, BASES[suite], {"type2test": Table})


CASES: List[Any] = [
    pytest.param(suite, method, id=f"{suite}.{method}")
    for suite in BASES
    for method in unittest.TestLoader().getTestCaseNames(suite_class(suite, None))
]


@pytest.mark.parametrize(("suite", "method"), CASES)
def test_cpython_mapping_protocol(Table: type, suite: str, method: str) -> None:
    result = unittest.TestResult()
    suite_class(suite, Table)(method).run(result)
    problems = [text for _, text in result.failures + result.errors]
    assert result.testsRun == 1 and not problems and not result.skipped, "\n".join(problems)


def test_every_override_is_listed_in_the_docstring() -> None:
    overridden = [name for name in vars(Overrides) if name.startswith("test_")]
    assert overridden and all(f"``{name}``" in __doc__ for name in overridden)
