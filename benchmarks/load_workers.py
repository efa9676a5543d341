"""Load run across worker processes: real WebSocket connections to N workers sharing one port.

    python benchmarks/load_workers.py --connections 20000 --workers 2 --clients 4 --plot load-workers.png

``load_ws.py``'s run (the same clients, timeline, traffic and reset waves:
read its docstring), served by ``conntable.workers.run`` on ``--workers``
uvloop processes sharing one port through SO_REUSEPORT, in two variants,
each a fresh server (a parent and its workers):

* ``conntable``  -- each worker runs ``conntable.websockets.serve`` on its
  socket with its ``ConnectionManager`` (idle timeout, heartbeat);
* ``websockets`` -- each worker runs plain ``websockets.asyncio.server.serve``
  on its socket: no idle timeout, so the idle connections stay, pinged by
  websockets' keepalive task per connection.

Both ping quiet connections every ``--ping-interval`` s; both close with
websockets' 10 s close timeout; a worker's graceful stop has a 30 s grace.

After the timeline, the clients report what they saw, then the parent gets
SIGTERM while the active connections (and, with websockets, the idle ones)
are still open: every worker must shut down gracefully, every client must
get close code 1001, and the parent must exit 0.

Measured, per worker and in total: connections held over time (each
worker's descriptors above its baseline), CPU seconds per second, RSS per
connection (RSS growth from the baseline to the peak, over the connections
held then), the event loop's lag p50/p99/max in the steady window and the
worst stall no garbage collection overlapped, the longest collection, and
the time to open every connection. CPU, RSS and descriptors are read from
``/proc/<pid>`` by the parent every 0.5 s; lag and GC from inside each
worker.

Checks (exit status 1 if any fails; durations are reported, never checked;
what plain websockets' own shutdown does is reported as a finding, not checked):
``load_ws``'s (every connection opened, no error logged, every active one
open at the end, with conntable every idle one closed with 1001 and counted
``idle``, with websockets every idle one still open); and here, per worker:
its descriptors at the end of the timeline exactly its baseline plus the
connections it holds; no worker died; after SIGTERM the parent exits 0,
every client still connected gets 1001, no connection object is alive in
any worker after ``gc.collect()``, each worker's sockets are back to what
they were before it served, and every close is counted: by reason with
conntable (idle = the idle ones, shutdown = those open at SIGTERM, the rest
= the resets), by close code with websockets.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import functools
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from e2e_websockets import Counters, echo_handler, plain_server
from harness import (HOST, Children, ErrorCount, GcWatch, LagProbe, ask, die_with_parent, exit_status, markdown,
                     median, open_fds, quantile, raise_fd_limit, receive)
from load_ws import (COLUMNS, ClientShare, LoadConfig, Sampler, drive_load, failed_checks, load_arguments, load_config,
                     run_timeline)
from load_ws import summarize as summarize_one
from soak import live_connection_objects

VARIANTS = ("conntable", "websockets")
#: Both servers' close timeout (websockets' default), and the workers' grace: websockets' own close of a
#: worker's connections (those it holds itself) took over 10 s at 5,000 per worker on the busy 2-core machine.
CLOSE_TIMEOUT = 10.0
GRACE = 30.0
#: Ephemeral ports per source address (net.ipv4.ip_local_port_range), for the client-side check.
PORT_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


@dataclass
class WorkersConfig(LoadConfig):
    """``load_ws``'s load, plus the workers."""

    workers: int = 2
    max_connections: Optional[int] = None


# -- a worker (inside the server's worker processes) -----------------------------------


def write_json(folder: str, name: str, data: Any) -> None:
    """Write atomically: the parent polls for these files."""
    path = os.path.join(folder, name)
    with open(path + ".tmp", "w") as out:
        json.dump(data, out)
    os.replace(path + ".tmp", path)


def counting_closes(handler: Any, closes: "collections.Counter[int]", going_away: List[float]) -> Any:
    """``handler``, counting each connection's close code when it ends (1006: no close frame).

    ``going_away`` gets the time of every 1001 (before SIGTERM: the idle expiry), to tell how long it took.
    """
    async def counted(ws: Any) -> None:
        try:
            await handler(ws)
        finally:
            code = ws.close_code or 1006
            closes[code] += 1
            if code == 1001:
                going_away.append(time.monotonic())

    return counted


async def worker_main(variant: str, cfg: WorkersConfig, results: str, worker: Any) -> None:
    """A worker's ``main``: the echo server of its variant on the worker's socket; report on SIGUSR2 and at the end."""
    from load_ws import server_report

    errors = ErrorCount.install()
    counters, closes, going_away = Counters(), collections.Counter(), []  # type: ignore[var-annotated]
    handler = counting_closes(echo_handler(counters), closes, going_away)
    options: Dict[str, Any] = dict(ping_interval=cfg.ping_interval, ping_timeout=20.0,
                                   compression="deflate" if cfg.compression else None)
    late: List[float] = []  # conntable: how late the manager asked each idle connection to close
    if variant == "conntable":
        from conntable.aio import CloseReason
        from conntable.websockets import ServerConnection, serve

        class TimedClose(ServerConnection):
            """Notes how long after its idle deadline each idle connection was asked to close (the loop's clock).

            The price: one ``loop.time()`` per packet received (the manager's own activity record cannot be
            read once it expired the connection: it re-adds it, to hold it while it closes).
            """

            last_data = 0.0

            def data_received(self, data: bytes) -> None:
                self.last_data = self.loop.time()
                super().data_received(data)

            def close_requested(self, transport: Any, reason: Any) -> None:
                if reason is CloseReason.IDLE:
                    late.append(self.loop.time() - self.last_data - cfg.idle_timeout)
                super().close_requested(transport, reason)

        server = serve(handler, sock=worker.socket, manager=worker.manager, create_connection=TimedClose, **options)
    else:
        server = plain_server(handler, counters, host=None, port=None, sock=worker.socket,
                              close_timeout=CLOSE_TIMEOUT, **options)
    async with server:
        probe, collections_ = LagProbe(), GcWatch()

        def report() -> None:
            write_json(results, f"report-{worker.index}.json",
                       {**server_report(variant, server, counters, errors), "lag": probe.samples,
                        "gc": collections_.collections, "going_away": list(going_away),
                        "late": list(late)})

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, report)
        write_json(results, f"ready-{worker.index}.json", {"pid": worker.pid, "port": worker.port})
        await worker.serve_forever()  # until SIGTERM: the manager's graceful shutdown (conntable's connections)
        probe.stop()
        collections_.stop()
    # websockets' server closed its connections on the way out of the ``async with``.
    gc.collect()
    stats = worker.manager.stats()
    write_json(results, f"final-{worker.index}.json",
               {"objects_alive": live_connection_objects(), "closes": dict(closes),
                "closed_total": dict(stats.closed_total), "opened_total": stats.opened_total,
                "errors": errors.count, "first_errors": errors.first})


def serve(variant: str, results: str, cfg: WorkersConfig) -> int:
    """The server's parent process: ``conntable.workers.run`` with the variant's workers."""
    from conntable import workers

    die_with_parent()
    raise_fd_limit()  # inherited by the workers
    idle_timeout = cfg.idle_timeout if variant == "conntable" else None
    return workers.run(
        functools.partial(worker_main, variant, cfg, results), workers=cfg.workers, host=HOST, port=0, backlog=4096,
        loop="uvloop", grace=GRACE, max_connections=cfg.max_connections if variant == "conntable" else None,
        manager_options={"idle_timeout": idle_timeout, "close_timeout": CLOSE_TIMEOUT},
    )


# -- the clients' ending (inside the client processes) -----------------------------------


async def see_shutdown(share: ClientShare, pipe: Any) -> None:
    """After the report: wait for the server's SIGTERM to close everything still open; count the close codes."""
    from websockets.protocol import State

    assert await receive(pipe) == "shutdown"
    still_open = [c for c in share.idle + share.active if c.protocol.state is State.OPEN]
    pipe.send("counted")  # the parent sends SIGTERM once every client process has counted
    waiting = [asyncio.ensure_future(client.wait_closed()) for client in still_open]
    if waiting:
        await asyncio.wait(waiting, timeout=GRACE + 4 * CLOSE_TIMEOUT)
    codes = collections.Counter(c.protocol.close_rcvd.code if c.protocol.close_rcvd else None for c in still_open)
    reset_active = len(share.everyone) - len(share.idle) - len(share.active) - len(share.reset_idle)
    pipe.send({"open_at_shutdown": len(still_open), "shutdown_1001": codes[1001], "reset_active": reset_active})


def client_main(index: int, cfg: WorkersConfig, port: int, pipe: Any) -> None:
    import uvloop

    raise_fd_limit()
    uvloop.run(drive_load(index, cfg, port, pipe, ending=see_shutdown))


# -- orchestration --------------------------------------------------------------------------


def wait_for_files(folder: str, kind: str, count: int, timeout: float, server: Any) -> List[Dict[str, Any]]:
    """The ``kind-<index>.json`` files of every worker, once all are there; fail if the server exits first."""
    deadline = time.monotonic() + timeout
    paths = [os.path.join(folder, f"{kind}-{index}.json") for index in range(count)]
    # A final report is written before its worker exits, or never (a failed check, not a crash): no waiting.
    while kind != "final" and not all(os.path.exists(path) for path in paths):
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}) before every worker wrote {kind}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every worker wrote {kind} within {timeout:g} s")
        time.sleep(0.1)
    out = []
    for path in paths:
        if os.path.exists(path):
            with open(path) as data:
                out.append(json.load(data))
        else:
            out.append({})
    return out


def measure(variant: str, cfg: WorkersConfig) -> Dict[str, Any]:
    """One run of one variant: the server, the clients, the timeline, the stop; raw series and outcomes."""
    results = tempfile.mkdtemp(prefix=f"load-workers-{variant}-")
    log = open(os.path.join(results, "server.log"), "w+")
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", variant, results,
                               json.dumps(dataclasses.asdict(cfg))], stdout=log, stderr=subprocess.STDOUT)
    samplers: List[Sampler] = []
    try:
        ready = wait_for_files(results, "ready", cfg.workers, 120, server)
        port, pids = ready[0]["port"], [r["pid"] for r in ready]
        baselines = [open_fds(pid) for pid in pids]  # listening, before any connection
        samplers = [Sampler(pid) for pid in pids]
        with Children(grace=60) as children:
            timeline = run_timeline(children, cfg, client_main, port, server_alive=lambda: server.poll() is None)
            pipes = timeline.pipes
            for pid in pids:
                os.kill(pid, signal.SIGUSR2)
            reports = wait_for_files(results, "report", cfg.workers, 60, server)
            fds_at_end = [open_fds(pid) for pid in pids]
            for pipe in pipes:  # each counts what is open, then says so: before the server's 1001s can arrive
                pipe.send("shutdown")
            for pipe in pipes:
                assert ask(pipe, 60, "a client process") == "counted"
            stop_sent = time.monotonic()
            server.send_signal(signal.SIGTERM)
            exit_code = server.wait(GRACE + 8 * CLOSE_TIMEOUT + 30)
            stop_s = time.monotonic() - stop_sent
            endings = [ask(pipe, 60, "a client process") for pipe in pipes]
            for pipe in pipes:
                pipe.send("stop")
        finals = wait_for_files(results, "final", cfg.workers, 10, server)
    finally:
        for sampler in samplers:
            sampler.stop()
        if server.poll() is None:
            server.kill()
            server.wait()
        log.seek(0)
        server_log = log.read()
        log.close()
    clients = timeline.totals()
    ending = {key: sum(e[key] for e in endings) for key in endings[0]}
    per_worker = [{"variant": f"{variant}: worker {index}", "pid": pid, "ramp_from": timeline.ramp_from,
                   "start": timeline.start,
                   "samples": sampler.samples, "baseline_fds": baseline, "fds_at_end": fds, **report, **final}
                  for index, (pid, sampler, baseline, fds, report, final)
                  in enumerate(zip(pids, samplers, baselines, fds_at_end, reports, finals))]
    return {"variant": variant, "workers": per_worker, "clients": clients, "ending": ending, "exit_code": exit_code,
            "stop_s": stop_s, "server_log": server_log, "results": results}


def total_run(run: Dict[str, Any]) -> Dict[str, Any]:
    """The workers of a run summed into one run of ``load_ws``'s shape (samples added up, lag and GC merged).

    Its ``variant`` stays the variant's name: ``load_ws.failed_checks`` decides by it.
    """
    workers = run["workers"]
    samples = [(rows[0][0], sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows))
               for rows in zip(*(w["samples"] for w in workers))]

    def add(key: str) -> Any:
        return sum(w[key] for w in workers)

    return {"variant": run["variant"], "ramp_from": workers[0]["ramp_from"],
            "start": workers[0]["start"], "samples": samples, "baseline_fds": add("baseline_fds"),
            "lag": sorted(sample for w in workers for sample in w["lag"]),
            "gc": sorted(tuple(c) for w in workers for c in w["gc"]),
            "held": add("held"), "idle_closed": add("idle_closed"), "pings": add("pings"), "errors": add("errors"),
            "going_away": [at for w in workers for at in w["going_away"]],
            "late": [lateness for w in workers for lateness in w["late"]],
            "first_errors": [e for w in workers for e in w["first_errors"]], **run["clients"]}


def summarize(one: Dict[str, Any], cfg: WorkersConfig) -> Dict[str, Any]:
    """``load_ws``'s figures, plus RSS per connection at the peak."""
    row = summarize_one(one, cfg)
    samples, base = one["samples"], one["baseline_fds"]
    peak = max(samples, key=lambda s: s[3])
    held = peak[3] - base
    row["kib_per_conn"] = (peak[2] - samples[0][2]) / held / 1024 if held > 0 else 0.0
    closes = sorted(one["going_away"])
    row["expiry_s"] = closes[-1] - closes[0] if closes else 0.0
    row["late_p99_ms"] = quantile(one["late"], 0.99) * 1e3
    row["late_max_ms"] = max(one["late"], default=0.0) * 1e3
    return row


def worker_checks(run: Dict[str, Any]) -> Tuple[List[str], List[str]]:
    """What this script checks beyond ``load_ws``'s: (failed checks, findings).

    The run itself must hold for both variants (descriptors, no worker died, no error logged). The stop is
    conntable's claim: for plain websockets, what its own shutdown did is reported as a finding instead.
    """
    variant, during, stop = run["variant"], [], []
    clients, ending, log = run["clients"], run["ending"], run["server_log"]
    if " died " in log:
        during.append("a worker died (see the server log)")
    for index, worker in enumerate(run["workers"]):
        name = f"worker {index}"
        if worker["fds_at_end"] != worker["baseline_fds"] + worker["held"]:
            during.append(f"{name}: {worker['fds_at_end']} descriptors at the end, expected its baseline "
                          f"{worker['baseline_fds']} plus the {worker['held']} connections it holds")
        if worker["errors"]:
            during.append(f"{name}: {worker['errors']} errors logged, first: {worker['first_errors']}")
    if run["exit_code"] != 0:
        stop.append(f"the parent exited {run['exit_code']} {run['stop_s']:.1f} s after SIGTERM (grace {GRACE:g} s)")
    if ending["shutdown_1001"] != ending["open_at_shutdown"]:
        stop.append(f"{ending['open_at_shutdown'] - ending['shutdown_1001']} of {ending['open_at_shutdown']} "
                    f"clients open at SIGTERM got no 1001")
    for line in log.splitlines():
        if " shut down: " in line:
            before, after = line.split("; ")[-1].split(" sockets open before serving (the listening one aside), ")
            if before != after.split()[0]:
                stop.append(f"sockets not back to where they were: {line}")
    finals = [worker for worker in run["workers"] if "objects_alive" in worker]
    for index, worker in enumerate(run["workers"]):
        if "objects_alive" not in worker:
            stop.append(f"worker {index}: no final report (its main did not finish after SIGTERM)")
        elif worker["objects_alive"]:
            stop.append(f"worker {index}: {worker['objects_alive']} connection objects alive after the shutdown")
    if len(finals) == len(run["workers"]):  # every close counted
        resets = clients["idle_reset"] + ending["reset_active"]
        if variant == "conntable":
            closed: "collections.Counter[str]" = collections.Counter()
            for worker in finals:
                closed.update(worker["closed_total"])
            expected = {"idle": clients["idle_closed_1001"], "shutdown": ending["shutdown_1001"],
                        "error or peer": resets, "all": sum(w["opened_total"] for w in finals)}
            counted = {"idle": closed["idle"], "shutdown": closed["shutdown"],
                       "error or peer": closed["error"] + closed["peer"], "all": sum(closed.values())}
        else:
            codes: "collections.Counter[str]" = collections.Counter()
            for worker in finals:
                codes.update(worker["closes"])
            expected = {"1001": ending["shutdown_1001"], "1006 (resets)": resets,
                        "all": clients["idle_expected"] + clients["active"] + resets}
            counted = {"1001": codes["1001"], "1006 (resets)": codes["1006"], "all": sum(codes.values())}
        if counted != expected:
            stop.append(f"closes counted {counted}, expected {expected}")
    problems, findings = (during + stop, []) if variant == "conntable" else (during, stop)
    return [f"{variant}: {p}" for p in problems], [f"{variant}: {f}" for f in findings]


#: Summary key -> (column title, format), for this script's tables.
WORKER_COLUMNS: Dict[str, Tuple[str, str]] = {
    "variant": ("server", "{}"),
    "peak_connections": ("peak conns", "{:,.0f}"),
    "ramp_s": ("open all s", "{:.0f}"),
    "steady_lag_p50_ms": ("steady lag p50", "{:.1f}"),
    "steady_lag_p99_ms": ("p99", "{:.1f}"),
    "steady_lag_max_ms": ("max", "{:.0f}"),
    "steady_lag_max_no_gc_ms": ("max without GC", "{:.0f}"),
    "gc_max_ms": ("longest GC", "{:.0f}"),
    "expiry_lag_max_ms": ("expiry lag max", "{:.0f}"),
    "late_p99_ms": ("idle close late p99", "{:.0f}"),
    "late_max_ms": ("max", "{:.0f}"),
    "expiry_s": ("1001s over s", "{:.1f}"),
    "cpu_steady": ("CPU s/s steady", "{:.3f}"),
    "cpu_after": ("after expiry", "{:.3f}"),
    "rss_peak_mb": ("RSS MB peak", "{:.0f}"),
    "kib_per_conn": ("KiB/conn", "{:.1f}"),
    "idle_closed": ("idle closed", "{:,.0f}"),
    "held": ("held at end", "{:,.0f}"),
    "pings": ("pings sent", "{:,.0f}"),
    "stop_s": ("SIGTERM to exit s", "{:.1f}"),
}
assert set(WORKER_COLUMNS) - {"kib_per_conn", "late_p99_ms", "late_max_ms", "expiry_s", "stop_s"} <= set(COLUMNS)


def check_capacity(parser: argparse.ArgumentParser, cfg: WorkersConfig) -> None:
    """Refuse a run that cannot fit: descriptors per worker and per client process, ports per source address."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    reserve = max(16, hard // 20)  # the breaker's default fd_reserve
    per_worker = -(-cfg.total * 11 // 10 // cfg.workers)  # a worker may get 10% more than its share
    if per_worker > hard - reserve - 64:
        parser.error(f"{cfg.total:,} connections on {cfg.workers} workers: up to {per_worker:,} per worker, over "
                     f"the {hard:,} descriptors a process may have less the breaker's reserve ({reserve:,}): "
                     f"use more --workers")
    per_client = -(-cfg.total // cfg.clients) * 11 // 10  # replacements of the reset active ones included
    with open(PORT_RANGE) as ports:
        low, high = map(int, ports.read().split())
    if per_client > min(hard - 64, high - low + 1):
        parser.error(f"{per_client:,} connections per client process exceed its descriptors ({hard:,}) or the "
                     f"{high - low + 1:,} ephemeral ports of its source address: use more --clients")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:  # the server's parent process, started by measure()
        variant, results, config = argv[1:4]
        return serve(variant, results, WorkersConfig(**json.loads(config)))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    load_arguments(parser, connections=20000, clients=4)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    parser.add_argument("--max-connections", type=int,
                        help="conntable's limit for the whole server, split over the workers (default: each "
                             "worker's breaker from its descriptor limit)")
    parser.add_argument("--variant", action="append", choices=VARIANTS, help="run only these (repeatable)")
    args = parser.parse_args(argv)
    cfg = load_config(parser, args, WorkersConfig, workers=args.workers, max_connections=args.max_connections)
    check_capacity(parser, cfg)
    names = args.variant or list(VARIANTS)
    print(f"{cfg.total:,} WebSocket connections ({cfg.active:,} active at {cfg.rate:g} msg/s, {cfg.idle:,} idle) "
          f"from {cfg.clients} client processes to {cfg.workers} worker processes on one port; idle timeout "
          f"{cfg.idle_timeout:g} s (conntable only), pings every {cfg.ping_interval:g} s, {cfg.waves} waves "
          f"resetting {cfg.wave_share:.0%}, then SIGTERM; uvloop; median of {args.repeat} on a shared machine",
          flush=True)
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in names}
    problems: List[str] = []
    findings: List[str] = []
    for round_ in range(1, args.repeat + 1):
        for name in names:  # interleaved, so that drift on a shared machine hits every variant alike
            run = measure(name, cfg)
            runs[name].append(run)
            failed, found = worker_checks(run)
            problems += failed_checks(total_run(run)) + failed
            findings += found
            print(f"  round {round_}: {name} done; SIGTERM to exit {run['stop_s']:.1f} s, exit code "
                  f"{run['exit_code']}", flush=True)
    rows = []
    for rounds in runs.values():
        rows.append({**median([{**summarize(total_run(run), cfg), "stop_s": run["stop_s"]} for run in rounds]),
                     "variant": f"{rounds[0]['variant']}: all {cfg.workers}"})
        for index in range(cfg.workers):
            rows.append(median([{**summarize(run["workers"][index], cfg), "stop_s": run["stop_s"]}
                                for run in rounds]))
    print(markdown(rows, WORKER_COLUMNS))
    print(f"lag in ms. Windows, in s from all-open: steady = {cfg.warmup:g} to {cfg.idle_timeout - 1:g} "
          f"(talking, resets); expiry = {cfg.idle_timeout - 1:g} to {cfg.idle_timeout + 2:g}; after = "
          f"{cfg.idle_timeout + 2:g} to {cfg.hold:g}. 'all' rows: CPU and RSS summed over the workers, lag over "
          f"every worker's samples. KiB/conn: RSS growth from the baseline to the peak over the connections "
          f"held then. Idle close late: how long after its idle deadline the manager asked a connection to close "
          f"(ms; conntable only). 1001s over: from the first 1001 of the idle expiry completed to the last.")
    for name, rounds in runs.items():
        for run in rounds[:1]:
            shown = [line.split(": ", 1)[1] for line in run["server_log"].splitlines() if " shut down: " in line]
            print(f"{name}, round 1, after SIGTERM:", *shown, sep="\n  ")
    for finding in findings:
        print(f"found: {finding}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"config": vars(args), "runs": runs}, out)
        print(f"raw runs: {args.json}")
    if args.plot:
        from load_plot import plot

        plot({name: total_run(rounds[0]) for name, rounds in runs.items()}, cfg, args.plot)
        print(f"plot: {args.plot}")
    return exit_status(problems)


if __name__ == "__main__":
    sys.exit(main())
