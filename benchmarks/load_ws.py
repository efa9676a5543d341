"""Load run: as many real WebSocket connections as the descriptor limit allows, against one uvloop server.

    python benchmarks/load_ws.py --plot load-ws.png      # --plot docs/load-ws.png replaces the committed image

One server process (uvloop, the echo handler of ``e2e_websockets``), in
three variants, each in a fresh process:

* ``conntable``  -- ``conntable.websockets.serve`` with a ``ConnectionManager``
  on the compiled table;
* ``pytable``    -- the same with ``table_factory=conntable.PyConnectionTable``;
* ``websockets`` -- plain ``websockets.asyncio.server.serve``: no idle timeout.

``--clients`` client processes (websockets' own client, keepalive off) open
``--connections`` between them, each process from its own source address
(127.0.0.2, .3, ...) so that no address runs short of ephemeral ports.
Timeline, in seconds from the moment all are open (``t = 0``):

* before 0, the ramp: connections open ``BATCH`` at a time; every
  connection pings the server every ``idle_timeout / 3`` seconds meanwhile,
  so that none goes idle before the others are open;
* at 0, every idle connection pings once (they all come due together) and
  the ``--active-share`` start sending ``--rate`` messages a second each,
  echoed, in ten bursts a second;
* ``--waves`` times during the next ``--steady`` seconds, each client
  process resets ``--wave-share`` of its idle and of its active connections
  (TCP RST: SO_LINGER 0, no close frame) and replaces the active ones;
* at ``idle_timeout`` (``warmup + steady + 2`` s), conntable closes the idle
  connections (close code 1001); websockets keeps them, pinging each every
  ``--ping-interval`` (both servers ping quiet connections at that interval:
  websockets' default, longer than the idle timeout so that idleness is
  seen before a ping is answered);
* ``--drain`` seconds later the run ends.

Measured: the server's event-loop lag (a callback every 5 ms noting how late
it ran) and the garbage collector's pauses, from inside; its CPU, RSS and
open descriptors every 0.5 s, from outside (``/proc/<pid>``, so that
measuring costs the server nothing). The table splits the run into windows:
opening (the ramp and the burst at 0), steady, the mass expiry, and after it.
Checks (the exit status is 1 if any fails): every connection opened; no
error logged by the server; every active connection still open at the end;
with conntable, every idle connection that was not reset closed with 1001
and counted ``idle`` by the manager; with websockets, all of them still
open. Durations are reported, never checked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, List, Optional, Tuple

from e2e_websockets import Counters, echo_handler, plain_server
from harness import (HOST, Children, Config, ErrorCount, GcWatch, LagProbe, ask, cpu_seconds, exit_status, markdown,
                     median, open_fds, quantile, raise_fd_limit, receive, rss_bytes)
from wsclients import connect_all, reset, talk

VARIANTS = ("conntable", "pytable", "websockets")
#: How often the parent samples the server's CPU, RSS and descriptors.
SAMPLE_PERIOD = 0.5


@dataclass
class LoadConfig(Config):
    """``Config``'s counts, rate and windows, plus the clients, the reset waves and the servers' settings."""

    warmup: float = 2.0  # the idle connections' pings at t = 0 are a burst: keep it out of the steady window
    clients: int = 3
    waves: int = 3
    wave_share: float = 0.05
    drain: float = 20.0
    ping_interval: float = 20.0
    compression: bool = False

    @property
    def hold(self) -> float:
        """Seconds from all-open to the end of the run."""
        return self.idle_timeout + self.drain

    @property
    def wave_times(self) -> List[float]:
        """When the reset waves hit, spread over the steady window (all before the idle connections expire)."""
        return [self.warmup + self.steady * (j + 1) / (self.waves + 1) for j in range(self.waves)]

    def share(self, index: int) -> Tuple[int, int]:
        """The idle and active connections of client process ``index``."""
        def part(total: int) -> int:
            return total // self.clients + (1 if index < total % self.clients else 0)

        return part(self.idle), part(self.active)


# -- server side ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def load_server(variant: str, cfg: LoadConfig, counters: Counters) -> AsyncIterator[Any]:
    """The listening server of one variant."""
    handler = echo_handler(counters)
    options: Dict[str, Any] = dict(ping_interval=cfg.ping_interval, ping_timeout=20.0, backlog=4096,
                                   compression="deflate" if cfg.compression else None)
    if variant == "websockets":
        async with plain_server(handler, counters, **options) as server:
            yield server
        return
    import conntable
    from conntable.aio import ConnectionManager
    from conntable.websockets import serve

    # Both conntable variants get a manager made here, so that only the table differs.
    table = conntable.PyConnectionTable if variant == "pytable" else conntable.ConnectionTable
    manager = ConnectionManager(cfg.idle_timeout, close_timeout=10.0, table_factory=table)
    try:
        async with serve(handler, HOST, 0, manager=manager, **options) as server:
            yield server
    finally:
        await manager.shutdown(grace=1.0)


def server_report(variant: str, server: Any, counters: Counters, errors: ErrorCount) -> Dict[str, Any]:
    if variant == "websockets":
        held, idle_closed, pings = len(server.connections), 0, counters.pings
    else:
        stats = server.stats()
        held, idle_closed, pings = stats.active, stats.closed_total["idle"], server.heartbeat.pings_sent
    return {"held": held, "idle_closed": idle_closed, "pings": pings, "messages": counters.messages,
            "errors": errors.count, "first_errors": errors.first}


async def serve_load(variant: str, cfg: LoadConfig, pipe: Any) -> None:
    """The server's side: serve, probe the loop, and report when asked."""
    errors = ErrorCount.install()
    counters = Counters()
    async with load_server(variant, cfg, counters) as server:
        probe, collections = LagProbe(), GcWatch()
        pipe.send(server.sockets[0].getsockname()[1])
        assert await receive(pipe) == "report"
        probe.stop()
        collections.stop()
        pipe.send({**server_report(variant, server, counters, errors), "lag": probe.samples,
                   "gc": collections.collections})
        assert await receive(pipe) == "stop"


def server_main(variant: str, cfg: LoadConfig, pipe: Any) -> None:
    import uvloop

    raise_fd_limit()
    uvloop.run(serve_load(variant, cfg, pipe))


# -- client side ------------------------------------------------------------------


async def ping_all(clients: List[Any]) -> None:
    """One ping on every open client: activity the server sees, and nothing queued on our side."""
    from websockets.exceptions import ConnectionClosed
    from websockets.protocol import State

    for client in list(clients):
        if client.protocol.state is State.OPEN:
            try:
                await client.ping()
            except ConnectionClosed:
                pass


async def keep_alive(clients: List[Any], period: float) -> None:
    """During the ramp: ping each connection soon after it opens, then every ``period`` seconds (until cancelled).

    It wakes five times a period and pings only what is due. Pinging everything once a period left a
    connection that opened just after a round unpinged for a period plus a round, and on a busy machine a
    round took seconds: the server's idle timeout closed some before their first ping.
    """
    from websockets.exceptions import ConnectionClosed
    from websockets.protocol import State

    pinged: Dict[Any, float] = {}  # keyed by the client itself
    while True:
        await asyncio.sleep(period / 5)
        due = time.monotonic() - period
        for client in list(clients):
            if pinged.get(client, -math.inf) <= due and client.protocol.state is State.OPEN:
                try:
                    await client.ping()
                except ConnectionClosed:
                    pass
                pinged[client] = time.monotonic()


class ClientShare:
    """One client process's connections and what it did to them."""

    def __init__(self, index: int, cfg: LoadConfig, port: int) -> None:
        self.cfg = cfg
        self.uri = f"ws://{HOST}:{port}"
        self.options = dict(local_addr=(f"127.0.0.{2 + index}", 0), open_timeout=120,
                            compression="deflate" if cfg.compression else None)
        self.idle_count, self.active_count = cfg.share(index)
        self.everyone: List[Any] = []  # every connection opened, for the ramp's keepalive and the final abort
        self.idle: List[Any] = []
        self.active: List[Any] = []
        self.reset_idle: List[Any] = []
        self.failures = 0
        self.failure_kinds: Dict[str, int] = {}  # "TimeoutError: ..." -> how many, for the report
        self.random = random.Random(index)

    async def open(self, count: int, into: List[Any]) -> None:
        """Open ``count`` connections into ``into``; each joins the ramp's keepalive the moment it is open.

        On a busy machine, connections that joined only when their chunk of 1000 was done, or their batch
        of 200, expired before the keepalive knew them.
        """
        clients, failures = await connect_all(self.uri, count, opened=self.everyone, **self.options)
        self.failures += len(failures)
        for failure in failures:
            kind = f"{type(failure).__name__}: {str(failure)[:80]}"
            self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + 1
        into += clients


    async def wave(self) -> None:
        """Reset a share of the idle connections, and a share of the active ones, which are replaced."""
        from websockets.protocol import State

        gone = [client for client in self.idle + self.active if client.protocol.state is not State.OPEN]
        if gone:  # nothing may have closed them yet: say so, rather than fail to reset a closed socket
            reasons = sorted({f"{client.close_code} {client.close_reason!r}" for client in gone})
            raise RuntimeError(f"{len(gone)} connections were closed before a reset wave (by the server: "
                               f"{', '.join(reasons)}); the ramp's keepalive did not reach them in time?")
        share = self.cfg.wave_share
        for client in self.random.sample(self.idle, round(share * len(self.idle))):
            self.idle.remove(client)
            self.reset_idle.append(client)
            reset(client.transport)
        doomed = self.random.sample(self.active, round(share * len(self.active)))
        for client in doomed:
            self.active.remove(client)  # before the reset: talk() must not write to it
            reset(client.transport)
        await self.open(len(doomed), self.active)

    def outcome(self) -> Dict[str, Any]:
        from websockets.protocol import State

        def count(clients: List[Any], state: State, code: Optional[int] = None) -> int:
            return sum(1 for c in clients if c.protocol.state is state and (code is None or c.close_code == code))

        return {
            "failures": self.failures,
            "failure_kinds": self.failure_kinds,
            "idle_reset": len(self.reset_idle),
            "idle_expected": len(self.idle),
            "idle_closed_1001": count(self.idle, State.CLOSED, 1001),
            "idle_open": count(self.idle, State.OPEN),
            "active": len(self.active),
            "active_open": count(self.active, State.OPEN),
        }


async def drive_load(index: int, cfg: LoadConfig, port: int, pipe: Any,
                     ending: Optional[Callable[[ClientShare, Any], Awaitable[None]]] = None) -> None:
    """A client process's side: open, sync, talk and reset on schedule, report, (``ending``), abort everything."""
    share = ClientShare(index, cfg, port)
    # Until every process is done opening, nothing may go idle: the timeline starts when all are open.
    keeper = asyncio.ensure_future(keep_alive(share.everyone, cfg.idle_timeout / 3))
    await share.open(share.idle_count, share.idle)
    await share.open(share.active_count, share.active)
    pipe.send("open")
    start = await receive(pipe)  # t = 0, on the machine's monotonic clock
    keeper.cancel()
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    await ping_all(share.idle)
    talker = asyncio.ensure_future(talk(share.active, cfg.rate, spread=True))
    for at in cfg.wave_times:
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        await share.wave()
    assert await receive(pipe) == "report"
    talker.cancel()
    pipe.send(share.outcome())
    if ending is not None:
        await ending(share, pipe)
    assert await receive(pipe) == "stop"
    for client in share.everyone:
        client.transport.abort()
    await asyncio.sleep(0.1)


def client_main(index: int, cfg: LoadConfig, port: int, pipe: Any) -> None:
    import uvloop

    raise_fd_limit()
    uvloop.run(drive_load(index, cfg, port, pipe))


# -- orchestration ------------------------------------------------------------------


class Sampler:
    """A thread of the parent that reads a process's CPU, RSS and descriptors every SAMPLE_PERIOD."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: List[Tuple[float, float, int, int]] = []  # (when, CPU seconds, RSS bytes, fds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_PERIOD):
            try:
                self.samples.append((time.monotonic(), cpu_seconds(self.pid), rss_bytes(self.pid), open_fds(self.pid)))
            except (FileNotFoundError, ProcessLookupError):  # the server is gone
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Timeline:
    """The client side of a run: their pipes, when the ramp began, t = 0, and each process's outcome."""

    pipes: List[Any]
    ramp_from: float
    start: float
    outcomes: List[Dict[str, Any]]

    def totals(self) -> Dict[str, Any]:
        total: Dict[str, Any] = {}
        for outcome in self.outcomes:
            for key, value in outcome.items():
                if isinstance(value, dict):  # counts by kind: merged
                    merged = total.setdefault(key, {})
                    for kind, count in value.items():
                        merged[kind] = merged.get(kind, 0) + count
                else:
                    total[key] = total.get(key, 0) + value
        return total


def run_timeline(children: Children, cfg: LoadConfig, client_target: Callable[..., None], port: int,
                 server_alive: Callable[[], bool] = lambda: True) -> Timeline:
    """Start the client processes, wait until all are open, run the timeline, collect their outcomes.

    ``client_target(index, cfg, port, pipe)`` runs ``drive_load``. A child that dies (or a server for
    which ``server_alive`` says so) ends the run early.
    """
    ramp_from = time.monotonic()
    pipes = []
    for index in range(cfg.clients):
        pipe, end = children.pipe()
        children.start(client_target, index, cfg, port, end, name=f"clients-{index}")
        pipes.append(pipe)
    for pipe in pipes:  # bounded generously: a busy 2-core machine opens a few hundred a second
        assert ask(pipe, 60 + cfg.total / 50, "a client process") == "open"
    start = time.monotonic() + 0.2
    for pipe in pipes:
        pipe.send(start)
    while time.monotonic() < start + cfg.hold:
        time.sleep(0.2)
        if not server_alive() or not all(process.is_alive() for process in children.processes):
            raise RuntimeError("the server or a client process died during the run")
    outcomes = []
    for pipe in pipes:
        pipe.send("report")
        outcomes.append(ask(pipe, 60, "a client process"))
    return Timeline(pipes, ramp_from, start, outcomes)


def measure(variant: str, cfg: LoadConfig) -> Dict[str, Any]:
    """One run of one variant: the server, the clients, the timeline; the raw series and the outcomes."""
    with Children(grace=30) as children:
        server_pipe, server_end = children.pipe()
        server = children.start(server_main, variant, cfg, server_end, name=f"server-{variant}")
        port = ask(server_pipe, 60, "the server")
        baseline_fds = open_fds(server.pid)  # listening, before any connection
        sampler = Sampler(server.pid)
        try:
            timeline = run_timeline(children, cfg, client_main, port)
            server_pipe.send("report")
            report = ask(server_pipe, 60, "the server")
        finally:
            sampler.stop()
        for pipe in timeline.pipes:
            pipe.send("stop")
        server_pipe.send("stop")
    return {"variant": variant, "ramp_from": timeline.ramp_from, "start": timeline.start, "samples": sampler.samples,
            "baseline_fds": baseline_fds, **report, **timeline.totals()}


def summarize(run: Dict[str, Any], cfg: LoadConfig) -> Dict[str, Any]:
    """The table's figures from one run's raw series."""
    start, end = run["start"], run["start"] + cfg.hold
    samples = run["samples"]

    def cpu_rate(since: float, until: float) -> float:
        window = [s for s in samples if since <= s[0] <= until]
        if len(window) < 2:
            return 0.0
        return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])

    expiry = start + cfg.idle_timeout
    # Windows: opening (the ramp, and the idle connections' pings at t = 0); steady (talking and reset
    # waves, everyone held); the mass expiry (conntable closes the idle ones); after it, to the end.
    steady = lags(run, start + cfg.warmup, expiry - 1.0)
    after = lags(run, expiry + 2.0, end)
    return {
        "variant": run["variant"],
        "peak_connections": max(s[3] for s in samples) - run["baseline_fds"],
        "ramp_s": start - run["ramp_from"],
        "opening_lag_max_ms": max(lags(run, 0.0, start + cfg.warmup), default=0.0),
        "steady_lag_p50_ms": quantile(steady, 0.50),
        "steady_lag_p99_ms": quantile(steady, 0.99),
        "steady_lag_max_ms": max(steady, default=0.0),
        "steady_lag_max_no_gc_ms": max(lags(run, start + cfg.warmup, expiry - 1.0, outside_gc=True), default=0.0),
        "expiry_lag_max_ms": max(lags(run, expiry - 1.0, expiry + 2.0), default=0.0),
        "after_lag_p99_ms": quantile(after, 0.99),
        "cpu_steady": cpu_rate(start + cfg.warmup, expiry - 1.0),
        "cpu_after": cpu_rate(expiry + 2.0, end),
        "gc_max_ms": max((seconds for _at, seconds, _gen in run["gc"]), default=0.0) * 1e3,
        "full_gcs": sum(1 for _at, _seconds, generation in run["gc"] if generation == 2),
        "rss_peak_mb": max(s[2] for s in samples) / 2**20,
        "rss_end_mb": samples[-1][2] / 2**20,
        "held": run["held"],
        "idle_closed": run["idle_closed"],
        "pings": run["pings"],
    }


def lags(run: Dict[str, Any], since: float, until: float, outside_gc: bool = False) -> List[float]:
    """The lag samples of a run between two times, in milliseconds; optionally only stalls no GC overlapped."""
    samples = [(at, lag) for at, lag in run["lag"] if since <= at <= until]
    if outside_gc:
        # A sample's stall spans [at - lag, at]; collections under 0.5 ms cannot explain a visible lag.
        pauses = [(began, began + seconds) for began, seconds, _gen in run["gc"] if seconds > 0.0005]
        samples = [(at, lag) for at, lag in samples
                   if not any(began < at and ended > at - lag for began, ended in pauses)]
    return [lag * 1e3 for _at, lag in samples]


def failed_checks(run: Dict[str, Any]) -> List[str]:
    """What went wrong in one run (empty: every check passed)."""
    variant, problems = run["variant"], []
    if run["failures"]:
        kinds = sorted(run.get("failure_kinds", {}).items(), key=lambda item: -item[1])
        said = "; ".join(f"{count} x {kind}" for kind, count in kinds[:3])
        problems.append(f"{run['failures']} connections could not be opened" + (f" ({said})" if said else ""))
    if run["errors"]:
        problems.append(f"the server logged {run['errors']} errors, first: {run['first_errors']}")
    if run["active_open"] != run["active"]:
        problems.append(f"{run['active'] - run['active_open']} of {run['active']} active connections were closed")
    expected = run["idle_expected"]
    if variant == "websockets":
        if run["idle_open"] != expected:
            problems.append(f"{run['idle_open']} idle connections open at the end, expected {expected}")
    else:
        if run["idle_closed_1001"] != expected:
            problems.append(f"{run['idle_closed_1001']} idle connections got close code 1001, expected {expected}")
        if run["idle_closed"] != expected:
            problems.append(f"the manager counted {run['idle_closed']} idle closes, expected {expected}")
        if run["held"] != run["active"]:
            problems.append(f"the manager holds {run['held']} connections at the end, expected {run['active']}")
    return [f"{variant}: {problem}" for problem in problems]


#: Summary key -> (column title, format).
COLUMNS: Dict[str, Tuple[str, str]] = {
    "variant": ("server", "{}"),
    "peak_connections": ("peak conns", "{:,.0f}"),
    "ramp_s": ("ramp s", "{:.0f}"),
    "opening_lag_max_ms": ("opening: lag max", "{:.0f}"),
    "steady_lag_p50_ms": ("steady: lag p50", "{:.1f}"),
    "steady_lag_p99_ms": ("p99", "{:.1f}"),
    "steady_lag_max_ms": ("max", "{:.0f}"),
    "steady_lag_max_no_gc_ms": ("max without GC", "{:.0f}"),
    "cpu_steady": ("CPU s/s", "{:.3f}"),
    "expiry_lag_max_ms": ("expiry: lag max", "{:.0f}"),
    "after_lag_p99_ms": ("after: lag p99", "{:.1f}"),
    "cpu_after": ("CPU s/s", "{:.3f}"),
    "gc_max_ms": ("longest GC ms", "{:.0f}"),
    "full_gcs": ("full GCs", "{:.0f}"),
    "rss_peak_mb": ("RSS MB peak", "{:.0f}"),
    "rss_end_mb": ("end", "{:.0f}"),
    "idle_closed": ("idle closed", "{:,.0f}"),
    "held": ("held at end", "{:,.0f}"),
    "pings": ("pings sent", "{:,.0f}"),
}


def load_arguments(parser: argparse.ArgumentParser, connections: int = 15000, clients: int = 3) -> None:
    """The options of the load's shape (counts, traffic, timeline); ``load_workers.py`` takes them too."""
    parser.add_argument("--connections", type=int, default=connections,
                        help=f"connections in all (default {connections})")
    parser.add_argument("--active-share", type=float, default=0.1, help="share of them that keep sending")
    parser.add_argument("--rate", type=float, default=1.0, help="messages per second per active connection")
    parser.add_argument("--clients", type=int, default=clients,
                        help="client processes (each from its own 127.0.0.x)")
    parser.add_argument("--steady", type=float, default=12.0,
                        help="seconds of talking and reset waves before the idle ones expire")
    parser.add_argument("--waves", type=int, default=3, help="waves of resets during --steady")
    parser.add_argument("--wave-share", type=float, default=0.05, help="share of connections reset per wave")
    parser.add_argument("--drain", type=float, default=20.0,
                        help="seconds measured after the idle timeout (default: one ping interval)")
    parser.add_argument("--ping-interval", type=float, default=20.0,
                        help="both servers' keepalive (must exceed the idle timeout, warmup + steady + 2)")
    parser.add_argument("--compression", action="store_true", help="permessage-deflate on (default off)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, interleaved; the table shows medians")
    parser.add_argument("--plot", metavar="PNG", help="draw lag, CPU and RSS over time (the first round)")
    parser.add_argument("--json", metavar="PATH", help="save every run's raw series (lag, GC, samples)")


def load_config(parser: argparse.ArgumentParser, args: argparse.Namespace, config: type = LoadConfig,
                **more: Any) -> Any:
    """The parsed options as a ``LoadConfig`` (or the subclass ``config``, given ``more`` fields); checked."""
    active = round(args.connections * args.active_share)
    cfg = config(idle=args.connections - active, active=active, rate=args.rate, steady=args.steady,
                 clients=args.clients, waves=args.waves, wave_share=args.wave_share, drain=args.drain,
                 ping_interval=args.ping_interval, compression=args.compression, **more)
    if cfg.ping_interval <= cfg.idle_timeout:
        parser.error(f"--ping-interval must exceed the idle timeout ({cfg.idle_timeout:g} s): "
                     f"a ping answered resets idleness")
    if not 0 < cfg.clients <= 250:
        parser.error("--clients: 1 to 250 (one source address 127.0.0.x each)")
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    load_arguments(parser)
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="run only these (repeatable)")
    args = parser.parse_args(argv)
    cfg = load_config(parser, args)
    names = args.variant or list(VARIANTS)
    print(f"{cfg.total} WebSocket connections ({cfg.active} active at {cfg.rate:g} msg/s, {cfg.idle} idle) from "
          f"{cfg.clients} client processes; idle timeout {cfg.idle_timeout:g} s (conntable only), pings every "
          f"{cfg.ping_interval:g} s, {cfg.waves} waves resetting {cfg.wave_share:.0%}; uvloop; "
          f"median of {args.repeat} on a shared machine", flush=True)
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in names}
    problems: List[str] = []
    for round_ in range(1, args.repeat + 1):
        for name in names:  # interleaved, so that drift on a shared machine hits every variant alike
            run = measure(name, cfg)
            runs[name].append(run)
            problems += failed_checks(run)
            print(f"  round {round_}: {name} done", flush=True)
    print(markdown([median([summarize(run, cfg) for run in rounds]) for rounds in runs.values()], COLUMNS))
    print(f"lag in ms. Windows, in s from all-open: opening = before {cfg.warmup:g} (the ramp, then every idle "
          f"connection pings at 0); steady = {cfg.warmup:g} to {cfg.idle_timeout - 1:g} (talking, resets); "
          f"expiry = {cfg.idle_timeout - 1:g} to {cfg.idle_timeout + 2:g}; after = {cfg.idle_timeout + 2:g} "
          f"to {cfg.hold:g}. GC: the garbage collector's pauses over the whole run (they are loop lag too); "
          f"max without GC: the worst stall that no collection overlapped.")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"config": vars(args), "runs": runs}, out)
        print(f"raw runs: {args.json}")
    if args.plot:
        from load_plot import plot

        plot({name: rounds[0] for name, rounds in runs.items()}, cfg, args.plot)
        print(f"plot: {args.plot}")
    return exit_status(problems)


if __name__ == "__main__":
    sys.exit(main())
