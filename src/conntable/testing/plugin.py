"""The pytest plugin: leak checks that tests ask for.

Registered through the ``pytest11`` entry point, so it is loaded wherever
conntable is installed, and it stays out of the way: no test is checked
unless

* it uses the ``leak_check`` fixture (which yields the running
  :class:`~conntable.testing.LeakCheck`), or
* it is marked ``@pytest.mark.conntable_leaks`` (keyword arguments are
  ``LeakCheck``'s options: ``@pytest.mark.conntable_leaks(memory=True)``;
  ``@pytest.mark.conntable_leaks(False)`` exempts a test, from the
  ``leak_check`` fixture and from :func:`leak_guard` too), or
* the run says ``--conntable-leaks`` (or ``conntable_leaks = true`` in the ini
  file), which checks every test.

``conntable_leaks_settle`` (ini, seconds, default 1.0) is how long a check
waits for leftovers that are on their way out before it reports them.

A leak makes the test's teardown fail with the report. A test that already
failed, or is marked xfail, is not judged: its own error explains more than
its leftovers.

Conftest files that want the checks without depending on the plugin being
registered can use :func:`leak_guard` in a fixture of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional

import pytest

if TYPE_CHECKING:
    from ._check import LeakCheck

__all__ = ("leak_guard",)

MARKER = "conntable_leaks"
#: The check running for a test, so that a second guard on the same test joins it.
_RUNNING = pytest.StashKey["LeakCheck"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conntable", "conntable leak checks")
    group.addoption(
        "--conntable-leaks",
        action="store_true",
        default=False,
        dest="conntable_leaks",
        help="fail every test that leaks file descriptors, asyncio tasks or managed connections",
    )
    parser.addini("conntable_leaks", type="bool", default=False, help="check every test for leaks (conntable)")
    parser.addini(
        "conntable_leaks_settle",
        default="1.0",
        help="seconds a leak check waits for leftovers to go before it reports them (conntable; default 1.0)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(enabled=True, **options): fail the test if it leaks file descriptors, asyncio tasks "
        "or managed connections; options are conntable.testing.LeakCheck's keyword arguments",
    )


def _ini(config: pytest.Config, name: str, default: Any) -> Any:
    """An ini value of this plugin, or ``default`` when the plugin is not registered (see leak_guard)."""
    try:
        return config.getini(name)
    except ValueError:  # unknown ini key: the plugin's pytest_addoption did not run
        return default


def _marker_options(node: pytest.Item) -> Optional[Dict[str, Any]]:
    """The marker's options, or None if the marker switches the check off."""
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return {}
    options = dict(marker.kwargs)
    enabled = options.pop("enabled", marker.args[0] if marker.args else True)
    return options if enabled else None


def _requested(request: pytest.FixtureRequest) -> bool:
    config = request.config
    if request.node.get_closest_marker(MARKER) is not None:
        return _marker_options(request.node) is not None
    return bool(config.getoption("conntable_leaks", False) or _ini(config, "conntable_leaks", False))


def leak_guard(request: pytest.FixtureRequest, **options: Any) -> Iterator["LeakCheck"]:
    """The body of a leak-check fixture: snapshot, yield the check, judge at teardown.

    ``options`` are :class:`~conntable.testing.LeakCheck`'s keyword
    arguments; a ``conntable_leaks`` marker on the test overrides them.
    """
    __tracebackhide__ = True  # pytest: show the report, not the plugin's frames
    from ._check import LeakCheck  # here, not at import: the plugin loads in every pytest run

    running = request.node.stash.get(_RUNNING, None)
    if running is not None:  # a conftest's guard and the plugin's fixture on one test: one check
        yield running
        return
    marker_options = _marker_options(request.node)
    options.setdefault("settle", float(_ini(request.config, "conntable_leaks_settle", 1.0)))
    options.update(marker_options or {})
    check = request.node.stash[_RUNNING] = LeakCheck(label=request.node.nodeid, **options).start()
    failed_before = request.session.testsfailed
    yield check
    del request.node.stash[_RUNNING]
    # Not judged: a test exempted by its marker, and one that failed or is expected to (xfail),
    # whose own error explains more than its leftovers.
    exempt = marker_options is None or request.node.get_closest_marker("xfail") is not None
    if exempt or request.session.testsfailed > failed_before:
        check.stop()
        return
    check.check()


@pytest.fixture
def leak_check(request: pytest.FixtureRequest) -> Iterator["LeakCheck"]:
    """Fail this test at teardown if it leaked descriptors, tasks or connections (see conntable.testing)."""
    __tracebackhide__ = True
    yield from leak_guard(request)


@pytest.fixture(autouse=True)
def _conntable_leaks(request: pytest.FixtureRequest) -> None:
    # Autouse fixtures are set up before the test's other fixtures and torn down
    # after them: starting the check here puts what those fixtures open inside it.
    if "leak_check" in request.fixturenames or _requested(request):
        request.getfixturevalue("leak_check")
