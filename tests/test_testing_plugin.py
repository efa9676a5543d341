"""conntable.testing: the leak check catches real leaks, names them, and stays quiet otherwise.

Real sockets on 127.0.0.1, real tasks, a real manager with a real connection.
The pytest plugin is exercised in a child pytest run (``-p
conntable.testing.plugin`` with entry-point autoloading off, so the run is
the same whether or not the package's entry point is installed).
"""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import re
import subprocess
import sys
import tracemalloc

import pytest

from conntable.aio import ConnectionManager, ManagedProtocol
from conntable.aio._registry import connection_ids, live_managers
from conntable.testing import LeakCheck, LeakError
from conntable.testing._procnet import decode_address, inet_entries, unix_entries

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None  # type: ignore[assignment]

HOST = "127.0.0.1"
ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Hang guard for a child pytest run and for the coroutines here.
HANG_GUARD = 60.0


class Echo(ManagedProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def forever():
    await asyncio.sleep(3600)


# -- the context manager, in this process -----------------------------------------


def test_report_names_the_socket_the_task_and_the_connection():
    async def scenario():
        check = LeakCheck(settle=0.2, label="the leaky block").start()
        mgr = ConnectionManager(idle_timeout=60.0)
        server = await mgr.create_server(Echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port)
        client_port = writer.get_extra_info("sockname")[1]
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"  # the server side is registered by now
        sleeper = asyncio.get_running_loop().create_task(forever(), name="leaky-sleeper")

        with pytest.raises(LeakError) as caught:
            await check.check_async()
        report = str(caught.value)
        assert report.startswith("conntable.testing: resources leaked by the leaky block")
        assert re.search(rf"fd \d+: tcp {HOST}:{port} \(LISTEN\)", report), report
        assert re.search(rf"fd \d+: tcp {HOST}:{client_port} -> {HOST}:{port} \(ESTABLISHED\)", report), report
        assert re.search(rf"fd \d+: tcp {HOST}:{port} -> {HOST}:{client_port} \(ESTABLISHED\)", report), report
        assert "task 'leaky-sleeper': forever() at " in report and ", awaiting sleep()" in report
        assert "task 'conntable-sweeper': Sweeper._run()" in report  # the manager was never shut down
        assert "1 connection still registered" in report
        assert f"connection 1: peer ('{HOST}', {client_port}), open" in report

        # Cleaned up, the same check finds nothing.
        sleeper.cancel()
        writer.close()
        await mgr.shutdown(grace=5.0)
        await check.check_async()

    asyncio.run(asyncio.wait_for(scenario(), HANG_GUARD))


def test_leaks_that_go_away_while_settling_are_not_reported():
    async def scenario():
        async with LeakCheck(settle=5.0):
            loop = asyncio.get_running_loop()
            task = loop.create_task(forever())
            loop.call_later(0.05, task.cancel)  # still pending when the block ends
            server = await asyncio.start_server(lambda r, w: w.close(), HOST, 0)
            reader, writer = await asyncio.open_connection(HOST, server.sockets[0].getsockname()[1])
            writer.close()  # the loop closes the socket on a later iteration
            server.close()

    asyncio.run(asyncio.wait_for(scenario(), HANG_GUARD))


def test_a_leak_inside_a_failing_block_does_not_hide_the_failure():
    left = []
    with pytest.raises(ZeroDivisionError):
        with LeakCheck(settle=0.0):
            left.append(open(os.devnull))
            1 / 0
    left.pop().close()


def test_ignored_descriptors_and_a_clean_block():
    left = []
    with LeakCheck(settle=0.0, ignore_fds=[os.devnull]):
        left.append(open(os.devnull))
    with pytest.raises(LeakError, match=re.escape(f": {os.devnull}")):
        with LeakCheck(settle=0.0):
            left.append(open(os.devnull))
    for f in left:
        f.close()
    with LeakCheck(settle=0.0, tasks=False, connections=False):
        with open(os.devnull):
            pass


RETAINED: list = []


def test_memory_growth_is_reported_by_line():
    was_tracing = tracemalloc.is_tracing()
    with pytest.raises(LeakError) as caught:
        with LeakCheck(memory=True, memory_limit=256 * 1024, fds=False, tasks=False, connections=False, settle=0.0):
            RETAINED.append(bytearray(2 * 1024 * 1024))  # the line the report must name
    line = test_memory_growth_is_reported_by_line.__code__.co_firstlineno + 4
    report = str(caught.value)
    assert "traced memory grew by +2.0 MiB (allowed +256.0 KiB)" in report, report
    assert f"test_testing_plugin.py:{line}: +2.0 MiB" in report, report
    assert tracemalloc.is_tracing() == was_tracing  # stopped again if the check started it
    RETAINED.clear()
    with LeakCheck(memory=True, memory_limit=256 * 1024, fds=False, tasks=False, connections=False, settle=0.0):
        RETAINED.append(bytearray(1024))
    RETAINED.clear()


def test_a_pending_task_on_a_closed_loop_is_reported_by_check_as_by_leaks():
    """The settle's garbage collection must not destroy the evidence: check() and leaks() agree."""
    check = LeakCheck(settle=0.2, fds=False, connections=False).start()
    loop = asyncio.new_event_loop()
    loop.create_task(forever(), name="orphan")  # unreferenced: only a cycle keeps it
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    shown = check.leaks().tasks
    assert len(shown) == 1 and "(its loop is closed: it can never finish)" in shown[0]
    with pytest.raises(LeakError) as caught:
        check.check()
    assert shown[0] in str(caught.value)
    gc.collect()  # now it may go (asyncio logs "Task was destroyed but it is pending!")


def test_a_task_that_finishes_while_settling_is_not_reported():
    async def scenario():
        check = LeakCheck(settle=5.0, fds=False, connections=False).start()
        task = asyncio.get_running_loop().create_task(asyncio.sleep(0.05))
        assert check.leaks().tasks
        await check.check_async()
        assert task.done()

    asyncio.run(asyncio.wait_for(scenario(), HANG_GUARD))


def test_bad_options():
    for kwargs, error in (({"settle": "1"}, TypeError), ({"settle": -1.0}, ValueError),
                          ({"memory_limit": 1.5}, TypeError), ({"memory_limit": -1}, ValueError),
                          ({"memory_limit": True}, TypeError)):
        with pytest.raises(error):
            LeakCheck(**kwargs)
    assert LeakCheck(settle=0).settle == 0.0 and LeakCheck(memory_limit=1 << 33).watch_fds


# -- the pieces ------------------------------------------------------------------


def test_registry_holds_managers_weakly():
    mgr = ConnectionManager()
    assert mgr in live_managers() and connection_ids(mgr) == []
    ref_count_before = len(live_managers())
    del mgr
    gc.collect()
    assert len(live_managers()) == ref_count_before - 1


def test_proc_net_addresses_are_decoded():
    assert decode_address("0100007F:1F90") == "127.0.0.1:8080"
    assert decode_address("00000000000000000000000001000000:0050") == "[::1]:80"
    assert decode_address("0000000000000000FFFF00000100007F:0050") == "127.0.0.1:80"
    tcp = ["   0: 0100007F:1F90 0100007F:A410 01 00000000:00000000 00:00000000 00000000  1000 0 4242 1"]
    assert list(inet_entries("tcp", tcp)) == [(4242, "tcp 127.0.0.1:8080 -> 127.0.0.1:42000 (ESTABLISHED)")]
    udp = ["   1: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000  0 0 77 2"]
    assert list(inet_entries("udp", udp)) == [(77, "udp 127.0.0.1:53")]
    unix = ["0000000000000000: 00000002 00000000 00010000 0001 01 5151 /run/app.sock"]
    assert list(unix_entries(unix)) == [(5151, "unix stream /run/app.sock")]


# -- the pytest plugin, in a child run ------------------------------------------------

CHILD_TESTS = '''
import asyncio
import socket

import pytest

LEFT = []


async def forever():
    await asyncio.sleep(3600)


def test_leaks_a_listening_socket(leak_check):
    LEFT.append(socket.create_server(("127.0.0.1", 0)))


@pytest.mark.conntable_leaks
def test_leaks_a_task():
    loop = asyncio.new_event_loop()
    LEFT.append(loop.create_task(forever(), name="forever-task"))
    loop.run_until_complete(asyncio.sleep(0))
    LEFT.append(loop)


def test_leaks_unchecked():
    LEFT.append(socket.socket())


@pytest.mark.conntable_leaks(False)
def test_leaks_but_exempt():
    LEFT.append(socket.socket())


def test_clean(leak_check):
    with socket.create_server(("127.0.0.1", 0)):
        pass


@pytest.fixture
def closed_at_teardown():
    opened = []
    yield opened
    for sock in opened:
        sock.close()


def test_what_fixtures_close_is_not_a_leak(closed_at_teardown, leak_check):
    # leak_check is asked for second, yet it is judged after the other fixture's teardown.
    closed_at_teardown.append(socket.socket())


def test_fails_and_leaks(leak_check):
    LEFT.append(socket.socket())
    assert False, "its own failure"


def test_leaks_then_xfails_at_run_time(leak_check):
    LEFT.append(socket.socket())
    pytest.xfail("a known bug, found at run time")


def test_leaks_then_skips_at_run_time(leak_check):
    LEFT.append(socket.socket())
    pytest.skip("not on this machine")


@pytest.mark.conntable_leaks
def test_leaks_a_task_on_a_closed_loop():
    loop = asyncio.new_event_loop()
    loop.create_task(forever(), name="orphan-task")  # nothing keeps it: only the garbage collector will
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
'''


def run_child(tmp_path, *args):
    """Run CHILD_TESTS under pytest with the plugin; return (summary counts, output)."""
    (tmp_path / "test_child.py").write_text(CHILD_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nconntable_leaks_settle = 0.1\n")
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conntable.testing.plugin", "-p", "no:cacheprovider",
         "-rfE", "test_child.py", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD,
    )
    out = child.stdout + child.stderr
    summary = [line for line in out.splitlines() if re.match(r"=+ .* in [\d.]+s", line)][-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed)", summary)}
    counts["errors"] = counts.pop("error", 0) + counts.pop("errors", 0)
    return counts, out


def teardown_report(out: str, test: str) -> str:
    """The part of a child run's output that reports the teardown error of ``test``."""
    start = out.index(f"ERROR at teardown of {test} ")
    end = min((i for i in (out.find("ERROR at teardown of", start + 1), out.find("= FAILURES =", start),
                           out.find("short test summary", start)) if i != -1), default=len(out))
    return out[start:end]


def test_plugin_checks_only_what_asks_for_it(tmp_path):
    counts, out = run_child(tmp_path)
    # A teardown error comes on top of the test's own outcome (passed).
    assert counts == {"passed": 7, "failed": 1, "errors": 3, "skipped": 1, "xfailed": 1}, out
    assert "ERROR at teardown of test_leaks_a_listening_socket" in out
    assert re.search(r"fd \d+: tcp 127\.0\.0\.1:\d+ \(LISTEN\)", out), out
    assert "ERROR at teardown of test_leaks_a_task" in out
    forever_task = teardown_report(out, "test_leaks_a_task")
    assert "task 'forever-task': forever() at " in forever_task and "(its loop" not in forever_task
    assert "anon_inode:[eventpoll] (an event loop's epoll, the loop was not closed)" in out
    assert "its own failure" in out
    assert "resources leaked by test_child.py::test_fails_and_leaks" not in out
    assert "test_leaks_unchecked" not in out and "test_leaks_but_exempt" not in out
    # Judged only when it passed: an xfail or a skip decided at run time exempts it as the marker does.
    assert "teardown of test_leaks_then_xfails_at_run_time" not in out
    assert "teardown of test_leaks_then_skips_at_run_time" not in out
    # A pending task on a closed loop, collected by the check's own settling, is still reported.
    assert "ERROR at teardown of test_leaks_a_task_on_a_closed_loop" in out
    orphan = teardown_report(out, "test_leaks_a_task_on_a_closed_loop")
    assert "task 'orphan-task': forever() at " in orphan and "(its loop is closed: it can never finish)" in orphan


def test_plugin_flag_checks_every_test(tmp_path):
    counts, out = run_child(tmp_path, "--conntable-leaks")
    assert counts == {"passed": 7, "failed": 1, "errors": 4, "skipped": 1, "xfailed": 1}, out
    assert "ERROR at teardown of test_leaks_unchecked" in out
    assert "test_leaks_but_exempt" not in out


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
def test_entry_point_is_declared():
    """pip registers the plugin from pyproject.toml: ``pytest11`` must name the plugin module."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert project.get("entry-points", {}).get("pytest11") == {"conntable": "conntable.testing.plugin"}
