"""The parts of conntable.workers that need no process: the limit split, the backoff, argument checks, metric modes.

Bad arguments to ``run`` raise before anything is started: no process, no
socket, no signal handler changed.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import threading

import pytest

import conntable
from conntable import workers
from conntable.aio import ResourceStats
from conntable.testing import LeakCheck
from conntable.workers._backoff import Backoff


async def serve_nothing(worker):  # a valid main: module level, picklable
    return None


@pytest.mark.parametrize("total, count, shares", [
    (7, 3, [3, 2, 2]),
    (100_000, 8, [12_500] * 8),
    (10, 4, [3, 3, 2, 2]),
    (5, 5, [1] * 5),
])
def test_split_limit_gives_the_remainder_to_the_first_workers(total, count, shares):
    assert workers.split_limit(total, count) == shares
    assert sum(shares) == total


def test_backoff_doubles_is_capped_and_starts_again_after_a_healthy_run():
    backoff = Backoff(initial=0.5, maximum=4.0, healthy_after=30.0)
    assert [backoff.failed(served_for=1.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.failed(served_for=30.0) == 0.5  # served long enough: forgiven
    assert backoff.failed(served_for=0.0) == 1.0
    many = Backoff(initial=1.0, maximum=60.0)
    assert [many.failed(0.0) for _ in range(2000)][-1] == 60.0  # no overflow however many failures


@pytest.mark.parametrize("kwargs, error, message", [
    ({"workers": 0}, ValueError, "workers must be between 1"),
    ({"workers": "2"}, TypeError, "workers must be an int"),
    ({"workers": 3, "max_connections": 2}, ValueError, "max_connections must be between 3"),
    ({"manager_options": {"max_connections": 5}}, TypeError, "max_connections is the whole server's"),
    ({"manager_options": {"idle_timeout": -1.0}}, ValueError, "idle_timeout must be positive"),
    ({"manager_options": {"idle_timout": 1.0}}, TypeError, "idle_timout"),
    ({"manager_options": {"table_factory": lambda *a, **k: conntable.PyConnectionTable(*a, **k)}}, TypeError,
     "must be picklable"),
    ({"port": 70000}, ValueError, "port must be an int from 0 to 65535"),
    ({"host": 127}, TypeError, "host must be a str"),
    ({"grace": -1.0}, ValueError, "grace must be positive"),
    ({"loop": "trio"}, ValueError, "loop must be one of auto, uvloop, asyncio"),
    ({"metrics_port": -1}, ValueError, "metrics_port must be an int"),
    ({"metrics_port": 0, "metrics_interval": 0}, ValueError, "metrics_interval must be positive"),
    ({"restart_backoff": 2.0, "restart_backoff_max": 1.0}, ValueError, "must not be below restart_backoff"),
    ({"kill_timeout": 0}, ValueError, "kill_timeout must be positive"),
])
def test_bad_arguments_raise_before_anything_starts(kwargs, error, message):
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    with LeakCheck():
        with pytest.raises(error, match=message):
            workers.run(serve_nothing, **{"workers": 2, "port": 0, **kwargs})
    assert multiprocessing.active_children() == []
    assert {signum: signal.getsignal(signum) for signum in handlers} == handlers


def test_main_must_be_a_picklable_callable():
    with pytest.raises(TypeError, match="main must be an async function"):
        workers.run(42, workers=1, port=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be picklable"):
        workers.run(lambda worker: serve_nothing(worker), workers=1, port=0)


def test_run_refuses_a_running_loop_and_other_threads():
    async def inside_a_loop():
        workers.run(serve_nothing, workers=1, port=0)

    with pytest.raises(RuntimeError, match="not from a running event loop"):
        asyncio.run(inside_a_loop())
    caught = []

    def in_a_thread():
        try:
            workers.run(serve_nothing, workers=1, port=0)
        except RuntimeError as exc:
            caught.append(exc)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert caught and "main thread" in str(caught[0])


def test_every_gauge_has_a_documented_multiprocess_mode():
    stats = ResourceStats(active=1, peak=1, opened_total=1, closed_total={"idle": 0}, rejected_total=0,
                          aborted_total=0, tasks_active=0, breaker_open=False, breaker_trips_total=0,
                          max_connections=10, open_fds=10, max_fds=100, resident_memory_bytes=1)
    gauges = {metric.name for metric in stats.metrics() if metric.kind == "gauge"}
    assert gauges == set(workers.GAUGE_MODES)
    from prometheus_client.metrics import Gauge

    assert set(workers.GAUGE_MODES.values()) <= set(Gauge._MULTIPROC_MODES)
