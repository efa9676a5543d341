"""Every core test runs against both implementations (propcache's pattern).

``--c-extensions`` (the default) runs each test on the compiled table and on
the pure-Python twin; ``--no-c-extensions`` runs only the twin. When the
compiled table is asked for but was not built, its tests fail rather than
skip: a silent fallback would let the suite pass without testing it.
"""

from __future__ import annotations

import pytest

import conntable


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conntable")
    group.addoption(
        "--c-extensions",
        action="store_true",
        default=True,
        help="test the compiled table as well as the pure-Python twin (default)",
    )
    group.addoption(
        "--no-c-extensions",
        action="store_false",
        dest="c_extensions",
        help="test only the pure-Python twin",
    )


def _implementations(config: pytest.Config) -> list[str]:
    return ["cython", "python"] if config.getoption("c_extensions") else ["python"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "Table" in metafunc.fixturenames:
        metafunc.parametrize("Table", _implementations(metafunc.config), indirect=True)


@pytest.fixture
def Table(request: pytest.FixtureRequest) -> type:
    """The connection table class under test."""
    if request.param == "python":
        return conntable.PyConnectionTable
    from conntable import _ctable  # ImportError here means the extension was not built

    return _ctable.ConnectionTable
