"""Fixtures for the integration tests: the asyncio layer's, not copies of them.

``run`` and ``loop_kind`` (every test on asyncio's loop and on uvloop) and the
helpers of ``tests/aio/aio_support.py`` are the asyncio layer's. pytest only
shares fixtures down a directory tree, and ``tests/aio/conftest.py`` is not
importable by name (every conftest is a module called ``conftest``), so this
file loads it from its path under a name of its own and re-exports its
fixtures. (Were they moved to a shared module, this would be one import.)
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

AIO_TESTS = pathlib.Path(__file__).resolve().parent.parent / "aio"
if str(AIO_TESTS) not in sys.path:  # tests/aio/conftest.py imports aio_support by name
    sys.path.insert(0, str(AIO_TESTS))


def _load_aio_conftest():
    spec = importlib.util.spec_from_file_location("conntable_aio_test_fixtures", AIO_TESTS / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_aio = _load_aio_conftest()
# Its fixtures, under the same names so that pytest finds them here too (the
# autouse ones included, so these tests get the same per-test checks).
for _name in ("loop_kind", "run", "_no_leaks"):
    if hasattr(_aio, _name):
        globals()[_name] = getattr(_aio, _name)
