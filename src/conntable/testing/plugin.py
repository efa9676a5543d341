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

A leak makes the test's teardown fail with the report. Only a test that
passed is judged: one that failed, was skipped or xfailed (by the marker or
by calling ``pytest.skip()`` / ``pytest.xfail()`` while it ran), or is marked
xfail, did not run to its end, and its own outcome explains more than its
leftovers. (Without the plugin registered, :func:`leak_guard` cannot see a
test's outcome and falls back on: not failed, not marked xfail.)

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
#: The report of a test's call phase (set by this plugin's hook, read at the test's teardown).
_CALL_REPORT = pytest.StashKey[pytest.TestReport]()


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_CALL_REPORT] = report


def _judged(request: pytest.FixtureRequest, failed_before: int) -> bool:
    """Whether the test's leftovers are judged: it ran to its end and passed (see the module docstring)."""
    node = request.node
    if node.get_closest_marker("xfail") is not None:
        return False
    report = node.stash.get(_CALL_REPORT, None)
    if report is None:  # leak_guard without the plugin (no hook), or the setup failed (counted as failed)
        return request.session.testsfailed == failed_before
    return bool(report.passed) and not hasattr(report, "wasxfail")


def _settle_seconds(config: pytest.Config) -> float:
    from conntable.aio._arguments import grace_seconds

    value = _ini(config, "conntable_leaks_settle", 1.0)
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise pytest.UsageError(f"conntable_leaks_settle must be a number of seconds, got {value!r}") from None
    try:
        return grace_seconds("conntable_leaks_settle", seconds)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


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
    options.setdefault("settle", _settle_seconds(request.config))
    options.update(marker_options or {})
    check = request.node.stash[_RUNNING] = LeakCheck(label=request.node.nodeid, **options).start()
    failed_before = request.session.testsfailed
    yield check
    del request.node.stash[_RUNNING]
    # Not judged: a test exempted by its marker, and one that did not pass (see the module docstring).
    if marker_options is None or not _judged(request, failed_before):
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
