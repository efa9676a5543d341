"""Every core test runs against both implementations (propcache's pattern).

By default each test runs on the compiled table and on the pure-Python twin;
``--no-c-extensions`` runs only the twin, and ``--c-extensions`` insists on
both. When the compiled table is asked for but missing, its tests fail rather
than skip: a silent fallback would let the suite pass without testing it.

The one exception is a pure-Python install (``CONNTABLE_NO_EXTENSIONS=1 pip
install .``): there no extension was meant to be built, and the installer
recorded it (the wheel is ``py3-none-any``, ``Root-Is-Purelib: true``), so
the default becomes ``--no-c-extensions`` and the report header says so. A
normal install (a platform wheel) whose extension is missing still fails.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import urllib.parse
import urllib.request

import pytest

import conntable


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conntable")
    group.addoption(
        "--c-extensions",
        action="store_true",
        default=None,
        help="test the compiled table as well as the pure-Python twin "
             "(the default, except after a pure-Python install)",
    )
    group.addoption(
        "--no-c-extensions",
        action="store_false",
        dest="c_extensions",
        help="test only the pure-Python twin",
    )


def built_without_extensions() -> bool:
    """Whether the conntable under test was installed from a pure-Python build.

    True only when the installed distribution is the one imported and its
    wheel says it has no compiled part; a source tree on ``sys.path`` or an
    install whose metadata cannot be read counts as a normal build.
    """
    try:
        dist = importlib.metadata.distribution("conntable")
        wheel = dist.read_text("WHEEL") or ""
    except importlib.metadata.PackageNotFoundError:
        return False
    imported = os.path.realpath(conntable.__file__)
    installed = os.path.realpath(str(dist.locate_file("conntable/__init__.py")))
    if installed != imported:  # an editable install imports from the source tree it names
        url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
        source = urllib.request.url2pathname(urllib.parse.urlparse(url).path) if url else ""
        if not source or not imported.startswith(os.path.realpath(source) + os.sep):
            return False
    return "Root-Is-Purelib: true" in wheel


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("c_extensions") is None:
        config.option.c_extensions = not built_without_extensions()
        config.stash[_auto_twin_only] = not config.option.c_extensions


_auto_twin_only = pytest.StashKey[bool]()


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.stash.get(_auto_twin_only, False):
        return ("conntable: pure-Python install (CONNTABLE_NO_EXTENSIONS at build time): "
                "testing the twin only, as with --no-c-extensions")
    return None


def _implementations(config: pytest.Config) -> list[str]:
    return ["cython", "python"] if config.getoption("c_extensions") else ["python"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "Table" in metafunc.fixturenames:
        metafunc.parametrize("Table", _implementations(metafunc.config), indirect=True)


@pytest.fixture
def pure_python_install() -> bool:
    """Whether conntable was installed from a pure-Python build (see ``built_without_extensions``)."""
    return built_without_extensions()


@pytest.fixture
def Table(request: pytest.FixtureRequest) -> type:
    """The connection table class under test."""
    if request.param == "python":
        return conntable.PyConnectionTable
    from conntable import _ctable  # ImportError here means the extension was not built

    return _ctable.ConnectionTable
