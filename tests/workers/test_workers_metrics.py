"""One metrics endpoint for every worker (prometheus_client's multiprocess mode), scraped with a real HTTP client."""

from __future__ import annotations

import glob
import os
import signal
import tempfile
import time
from typing import Callable, Dict, Tuple

import httpx
from prometheus_client.parser import text_string_to_metric_families
from workers_support import HANG_GUARD, ServerProcess, WsClient, cover_workers, every_client

from conntable.testing import LeakCheck

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=HANG_GUARD)
    response.raise_for_status()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def scrape_until(url: str, condition: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``condition`` holds (workers copy their stats every 0.1 s in app.py); fail after the guard."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        samples = scrape(url)
        if condition(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"never scraped {what}: {samples}")
        time.sleep(0.05)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), -1.0)


def fd_pids(samples: Samples) -> set:
    return {int(dict(labels)["pid"]) for name, labels in samples if name == "conntable_open_fds"}


def test_the_endpoint_aggregates_every_worker_and_forgets_dead_ones():
    leftovers = set(glob.glob(os.path.join(tempfile.gettempdir(), "conntable-metrics-*")))
    with LeakCheck(), ServerProcess("ws", "--workers", "3", "--max-connections", "300", "--metrics") as server:
        server.started()
        url = server.metrics_url
        clients = cover_workers(WsClient, server.port, server.pids, per_worker=2)
        total = len(every_client(clients))

        samples = scrape_until(url, lambda s: value(s, "conntable_connections_active") == total, f"{total} active")
        assert value(samples, "conntable_connections_opened_total") == total  # summed over the workers
        assert value(samples, "conntable_max_connections") == 300  # the shares add up to the whole
        assert value(samples, "conntable_workers") == 3
        assert value(samples, "conntable_worker_restarts_total") == 0
        assert fd_pids(samples) == set(server.pids)  # liveall: one sample per worker

        closing = server.pids[0]
        for client in clients[closing][:2]:
            client.close()
        samples = scrape_until(url, lambda s: value(s, "conntable_connections_closed_total", reason="peer") == 2,
                               "2 closed by their peer")
        assert value(samples, "conntable_connections_active") == total - 2

        victim = server.pids[2]
        mark = len(server.lines)
        os.kill(victim, signal.SIGKILL)
        replacement = server.restarted(2, mark)
        alive = {*server.pids[:2], replacement}
        lost = len(clients[victim])
        samples = scrape_until(url, lambda s: fd_pids(s) == alive and value(s, "conntable_workers") == 3,
                               "the dead worker's gauges gone, its replacement's there")
        assert value(samples, "conntable_connections_active") == total - 2 - lost  # livesum: the dead one is out
        assert value(samples, "conntable_connections_opened_total") == total  # counters keep the dead one's
        assert value(samples, "conntable_worker_restarts_total") == 1

        assert server.stop(signal.SIGTERM) == 0, server.log()
        for client in every_client(clients):
            client.close()
        assert server.workers_gone()
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "conntable-metrics-*"))) == leftovers
