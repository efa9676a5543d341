"""Workers that die, cannot start, or will not stop: restarts with a backoff, and an exit status that says so."""

from __future__ import annotations

import re
import signal

import pytest
from workers_support import ServerProcess, TcpClient

from conntable.testing import LeakCheck

DIED = re.compile(r"worker 1 \(pid (\d+)\) died \(exit code 3\) after serving ([\d.]+) s; "
                  r"restarting it in ([\d.]+) s \(restart (\d+)\)")


def client_of(server: ServerProcess, pid: int) -> TcpClient:
    """A connection held by the worker ``pid`` (others are closed); fails after a bounded number of tries."""
    for _ in range(300):
        client = TcpClient(server.port)
        if client.pid == pid:
            return client
        client.close()
    raise AssertionError(f"300 connections and none reached worker {pid}")


def restart_delays(server: ServerProcess, restarts: int) -> list:
    server.wait_for(rf"worker 1 restarted as pid \d+ \(restart {restarts}\)")
    found = [DIED.search(line) for line in server.lines]
    return [float(match.group(3)) for match in found if match][:restarts]


def test_a_worker_that_keeps_dying_is_restarted_with_a_growing_backoff():
    with LeakCheck(), ServerProcess("crash-while-serving", "--workers", "2", "--backoff", "0.05") as server:
        steady = int(server.wait_for(r"worker 0 \(pid (\d+)\) serving").group(1))
        server.port = int(server.wait_for(r"serving on 127\.0\.0\.1:(\d+)").group(1))
        client = client_of(server, steady)

        # Doubling from 0.05 s, capped at restart_backoff_max (1 s in app.py); never reset (healthy_after 60 s).
        assert restart_delays(server, 6) == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0], server.log()
        assert client.echo(b"still here\n") == b"still here\n"  # worker 0 was never touched
        assert "worker 0 (pid" not in "".join(line for line in server.lines if "died" in line)

        assert server.stop(signal.SIGTERM) == 0, server.log()
        assert client.read_to_end() == b""
        client.close()
        for match in map(DIED.search, server.lines):
            if match:
                server.every_pid.append(int(match.group(1)))
        assert server.workers_gone()


def test_the_backoff_starts_again_after_a_healthy_run():
    with LeakCheck(), ServerProcess("crash-while-serving", "--workers", "2", "--backoff", "0.05",
                                    "--healthy-after", "0.2", env={"APP_CRASH_AFTER": "0.4"}) as server:
        served = restart_delays(server, 3)
        assert served == [0.05, 0.05, 0.05], server.log()
        assert server.stop(signal.SIGTERM) == 0, server.log()


def test_a_worker_that_cannot_start_stops_the_server():
    with LeakCheck(), ServerProcess("crash-at-start", "--workers", "2") as server:
        assert server.wait() == 1
        log = server.log()
        assert "RuntimeError: this worker cannot start" in log
        assert re.search(r"worker \d \(pid \d+\) ended before it served \(exit code 1\); not restarting", log), log
        assert "restarted as" not in log
        assert "did not shut down gracefully" in log


@pytest.mark.parametrize("kind, option, failure", [
    ("hang-at-stop", ["--kill-timeout", "2"],  # its loop blocks: the parent kills it at its deadline
     "worker {index} (pid {pid}) was still running 2 s after the stop: killed"),
    ("slow-to-return", ["--grace", "1"],  # main awaits on after serve_forever: cancelled after its grace (2 s)
     "worker {index} (pid {pid}): main did not return within 2 s of the shutdown: cancelled"),
], ids=["loop-blocked", "main-overruns"])
def test_a_worker_that_does_not_stop_in_time_makes_the_exit_status_1(kind, option, failure):
    with LeakCheck(), ServerProcess(kind, "--workers", "2", *option) as server:
        server.started()
        assert server.stop(signal.SIGTERM) == 1
        log = server.log()
        for index, pid in enumerate(server.pids):
            assert failure.format(index=index, pid=pid) in log, log
        assert "2 of 2 workers did not shut down gracefully" in log
        assert server.workers_gone()
