"""Soak run: round after round of connect, idle, expire and abort; the server must come back to baseline.

    python benchmarks/soak.py --rounds 25 --plot soak.png      # --plot docs/soak.png replaces the committed image

One server process (uvloop) runs three ``conntable.websockets`` servers,
each with its own ``ConnectionManager`` (resolution 0.1 s, close_timeout
1 s) and the echo handler of ``e2e_websockets``:

* ``idle``      -- idle_timeout 1 s, no heartbeat: quiet connections expire (1001);
* ``heartbeat`` -- no idle timeout, pings after 0.5 s of quiet, 0.5 s to answer:
  peers that never answer are failed (1011) and aborted;
* ``limited``   -- ``max_connections`` a few, idle_timeout 2 s: the rest get HTTP 503.

One client process opens ``--per-round`` connections of every kind a round
(see ``soak_clients``: idle, unresponsive, reset, graceful, half-open, held,
refused). After each round the server waits until every manager and every
websockets handler is done, collects garbage, hands glibc's free pages back
(``malloc_trim``), and the parent reads its RSS and open descriptors from
``/proc/<pid>``.

Checks after every round (the exit status is 1 if any fails):

* open descriptors: exactly the baseline, measured before round 1;
* connection objects (``conntable.aio.Connection``,
  ``conntable.websockets.ServerConnection``) alive after ``gc.collect()``: none;
* asyncio tasks: as many as after round 1 (which starts the sweepers);
* RSS: at most ``max(4 MiB, 5%)`` above the highest RSS after the
  ``--warmup-rounds`` first rounds (default 3: rounds 2 and 3 still grow the
  allocator's pools by about 2 MiB while Python's traced allocations stay
  flat, ``--tracemalloc`` shows it, and the pools then wander by about
  1 MiB with no object alive). The object and descriptor checks above are
  exact; this one is the backstop for memory the collector cannot see, and
  4 MiB over 25 rounds of 2000 connections is under 90 bytes a connection;
* the server settled (every connection gone) within the round's time bound;
* every connection closed as its kind expects, counted by the clients
  (close codes 1001 and 1000, HTTP 503) and by the managers (idle closes,
  refusals, heartbeat failures);
* nothing logged an error.

Durations are reported, never checked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple

from e2e_websockets import Counters, echo_handler
from harness import (HOST, Children, ErrorCount, ask, exit_status, markdown, open_fds, raise_fd_limit, receive,
                     rss_bytes)
from soak_clients import RoundClients, kind_counts

RESOLUTION = 0.1
CLOSE_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.0
PING_INTERVAL = PING_TIMEOUT = 0.5
#: The limited server's idle timeout: long enough that its held connections outlast the refused attempts.
LIMITED_IDLE_TIMEOUT = 2.0
#: Longest a round may take to settle (every connection gone); generous, for a busy shared machine.
SETTLE_BOUND = 60.0
MIB = 2**20


@dataclass
class SoakConfig:
    """The rounds, and how far the server may be from baseline after one."""

    rounds: int
    per_round: int
    warmup_rounds: int = 3  # the highest RSS after these is the reference (see the module's docstring)
    table: str = "compiled"
    trace: bool = False  # tracemalloc in the server: Python's own allocations per round (slower)
    rss_bytes: int = 4 * MIB
    rss_share: float = 0.05

    def rss_limit(self, reference: int) -> int:
        """Most RSS allowed after a round, given the reference (the warm-up's highest RSS)."""
        return reference + max(self.rss_bytes, int(self.rss_share * reference))


# -- server side ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def soak_servers(per_round: int, table: str) -> AsyncIterator[Dict[str, Any]]:
    """The three servers, listening; each manager shut down on the way out."""
    import conntable
    from conntable.aio import ConnectionManager
    from conntable.websockets import serve

    factory = conntable.PyConnectionTable if table == "python" else conntable.ConnectionTable
    held = kind_counts(per_round)["held"]
    settings: Dict[str, Tuple[Dict[str, Any], Dict[str, Any]]] = {  # name -> (manager's, serve's)
        "idle": (dict(idle_timeout=IDLE_TIMEOUT), dict(ping_interval=None)),
        "heartbeat": (dict(idle_timeout=None), dict(ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)),
        "limited": (dict(idle_timeout=LIMITED_IDLE_TIMEOUT, max_connections=held), dict(ping_interval=None)),
    }
    counters = Counters()
    async with contextlib.AsyncExitStack() as stack:
        servers = {}
        for name, (manager_settings, serve_settings) in settings.items():
            manager = ConnectionManager(resolution=RESOLUTION, close_timeout=CLOSE_TIMEOUT, table_factory=factory,
                                        **manager_settings)
            stack.push_async_callback(manager.shutdown, 1.0)
            servers[name] = await stack.enter_async_context(
                serve(echo_handler(counters), HOST, 0, manager=manager, backlog=4096, **serve_settings))
        yield servers


def busy(servers: Dict[str, Any]) -> int:
    """Connections, handlers and heartbeat entries still there, over all servers."""
    return sum(len(s.manager) + len(s.handler_tasks) + (len(s.heartbeat) if s.heartbeat else 0)
               for s in servers.values())


def live_connection_objects() -> int:
    """Connection records and WebSocket connections still alive (call after gc.collect(): then 0 when all are gone).

    WebSocket connections are counted as websockets' class, so plain websockets servers are covered too
    (conntable's ``ServerConnection`` is a subclass).
    """
    from websockets.asyncio.server import ServerConnection

    from conntable.aio import Connection

    return sum(1 for o in gc.get_objects() if isinstance(o, (Connection, ServerConnection)))


def server_counts(servers: Dict[str, Any], errors: ErrorCount) -> Dict[str, Any]:
    """Cumulative counts; the parent takes differences between rounds."""
    idle, limited = servers["idle"].stats(), servers["limited"].stats()
    return {
        "idle_expired": idle.closed_total["idle"],
        "held_expired": limited.closed_total["idle"],
        "rejected": limited.rejected_total,
        "heartbeat_failures": servers["heartbeat"].heartbeat.failures,
        "errors": errors.count,
        "first_errors": errors.first,
        "tasks": len(asyncio.all_tasks()),
    }


def trim_malloc() -> None:
    """Hand glibc's free pages back to the kernel, so that RSS counts what is live, not what malloc keeps cached.

    Without it the RSS after a round wanders by tens of MiB with the
    allocator's fragmentation while the live objects stay the same (see
    ``--tracemalloc``). Python's own object pools are not affected: what
    they hold still counts.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)


async def serve_soak(per_round: int, table: str, trace: bool, pipe: Any) -> None:
    """Serve; on each "settle", wait until everything is gone, collect garbage and report."""
    if trace:
        tracemalloc.start()
    errors = ErrorCount.install()
    async with soak_servers(per_round, table) as servers:
        pipe.send({name: server.sockets[0].getsockname()[1] for name, server in servers.items()})
        while await receive(pipe) == "settle":
            give_up = time.monotonic() + SETTLE_BOUND
            while busy(servers) and time.monotonic() < give_up:
                await asyncio.sleep(0.05)
            left = busy(servers)
            gc.collect()
            trim_malloc()
            traced = tracemalloc.get_traced_memory()[0] if trace else 0
            pipe.send({"left": left, "live": live_connection_objects(), "traced": traced,
                       **server_counts(servers, errors)})


def server_main(per_round: int, table: str, trace: bool, pipe: Any) -> None:
    import uvloop

    raise_fd_limit()
    uvloop.run(serve_soak(per_round, table, trace, pipe))


# -- client side ------------------------------------------------------------------


async def drive_soak(ports: Dict[str, int], per_round: int, pipe: Any) -> None:
    """Rounds on command: "round" runs one and reports, "cleanup" drops what is left of it."""
    clients: Optional[RoundClients] = None
    while True:
        command = await receive(pipe)
        if command == "round":
            clients = RoundClients(ports, per_round, settle=SETTLE_BOUND)
            pipe.send(await clients.run())
        elif command == "cleanup" and clients is not None:
            clients.cleanup()
            await asyncio.sleep(0.05)  # let the transports finish closing
            pipe.send("clean")
        else:
            return


def client_main(ports: Dict[str, int], per_round: int, pipe: Any) -> None:
    import uvloop

    raise_fd_limit()
    uvloop.run(drive_soak(ports, per_round, pipe))


# -- orchestration ------------------------------------------------------------------


def round_checks(counts: Dict[str, int], seen: Dict[str, Any], delta: Dict[str, int], left: int) -> List[str]:
    """What went wrong in one round, from the clients' and the managers' counts."""
    problems = [str(failure) for failure in seen["failures"][:3]]
    if left:
        problems.append(f"{left} connections, handlers or heartbeat entries still there after {SETTLE_BOUND:g} s")
    expected = [  # (what, seen, wanted)
        ("idle connections closed with 1001 (client)", seen["idle_1001"], counts["idle"]),
        ("idle expirations (manager)", delta["idle_expired"], counts["idle"]),
        ("held connections closed with 1001 (client)", seen["held_1001"], counts["held"]),
        ("held expirations (manager)", delta["held_expired"], counts["held"]),
        ("refusals answered 503 (client)", seen["refused_503"], counts["refused"]),
        ("refusals (manager)", delta["rejected"], counts["refused"]),
        ("graceful closes with 1000 (client)", seen["graceful_1000"], counts["graceful"]),
        ("unanswered pings failed (heartbeat)", delta["heartbeat_failures"], counts["unresponsive"]),
    ]
    problems += [f"{what}: {got}, expected {wanted}" for what, got, wanted in expected if got != wanted]
    return problems


class Baseline:
    """What every round is held to: descriptors before round 1, tasks and RSS once warmed up."""

    def __init__(self, cfg: SoakConfig, fds: int) -> None:
        self.cfg = cfg
        self.fds = fds
        self.tasks: Optional[int] = None  # after round 1, which starts the sweepers
        self.warm_rss = 0  # the highest RSS of the warm-up rounds

    @property
    def rss_limit(self) -> int:
        return self.cfg.rss_limit(self.warm_rss)

    def check(self, round_: int, rss: int, fds: int, after: Dict[str, Any]) -> List[str]:
        problems = []
        if after["live"]:
            problems.append(f"{after['live']} Connection / ServerConnection objects still alive after gc")
        if fds != self.fds:
            problems.append(f"{fds} descriptors open, baseline {self.fds}")
        if self.tasks is None:
            self.tasks = after["tasks"]
        elif after["tasks"] != self.tasks:
            problems.append(f"{after['tasks']} asyncio tasks, {self.tasks} after round 1")
        if round_ <= self.cfg.warmup_rounds:
            self.warm_rss = max(self.warm_rss, rss)
        elif rss > self.rss_limit:
            problems.append(f"RSS {rss / MIB:.1f} MiB, more than {self.rss_limit / MIB:.1f} (the warm-up's "
                            f"{self.warm_rss / MIB:.1f} MiB plus the tolerance)")
        if after["errors"]:
            problems.append(f"the server logged {after['errors']} errors so far, first: {after['first_errors']}")
        return problems


def soak(cfg: SoakConfig) -> Tuple[List[Dict[str, Any]], Baseline, List[str]]:
    """Run the rounds; return a row per round (round 0: before the first), the baseline, and what failed."""
    counts = kind_counts(cfg.per_round)
    rows: List[Dict[str, Any]] = []
    problems: List[str] = []
    with Children(grace=30) as children:
        server_pipe, server_end = children.pipe()
        server = children.start(server_main, cfg.per_round, cfg.table, cfg.trace, server_end, name="soak-server")
        ports = ask(server_pipe, 60, "the server")
        client_pipe, client_end = children.pipe()
        children.start(client_main, ports, cfg.per_round, client_end, name="soak-clients")
        started = time.monotonic()
        server_pipe.send("settle")  # nothing to wait for: the baseline, after a collection
        before = ask(server_pipe, 60, "the server")
        baseline = Baseline(cfg, open_fds(server.pid))
        for round_ in range(0, cfg.rounds + 1):
            if round_:
                started = time.monotonic()
                client_pipe.send("round")
                seen = ask(client_pipe, 2 * SETTLE_BOUND, "the clients")
                server_pipe.send("settle")
                after = ask(server_pipe, 2 * SETTLE_BOUND, "the server")
                client_pipe.send("cleanup")
                ask(client_pipe, 30, "the clients")
            rss, fds = rss_bytes(server.pid), open_fds(server.pid)
            found = []
            if round_:
                delta = {key: after[key] - before[key] for key in after if isinstance(after[key], int)}
                found = round_checks(counts, seen, delta, after["left"]) + baseline.check(round_, rss, fds, after)
                before = after
            problems += [f"round {round_}: {problem}" for problem in found]
            rows.append({"round": round_, "seconds": time.monotonic() - started, "rss": rss, "fds": fds,
                         "tasks": before["tasks"], "live": before["live"], "traced": before["traced"],
                         "ok": "baseline" if not round_ else "warm-up" if round_ <= cfg.warmup_rounds and not found
                         else "NO" if found else "yes"})
            print(f"  round {round_}: RSS {rss / MIB:.1f} MiB, {fds} fds, {rows[-1]['seconds']:.1f} s"
                  f"{'' if not found else ' -- ' + '; '.join(found)}", flush=True)
            if len(problems) > 50:  # a broken server: no point in going on
                break
        client_pipe.send("stop")
        server_pipe.send("stop")
    for row in rows:
        row["rss_mib"], row["traced_kib"] = row["rss"] / MIB, row["traced"] / 1024
        row["delta_kib"] = (row["rss"] - baseline.warm_rss) / 1024
    return rows, baseline, problems


#: Row key -> (column title, format).
COLUMNS: Dict[str, Tuple[str, str]] = {
    "round": ("round", "{}"),
    "seconds": ("s", "{:.1f}"),
    "rss_mib": ("RSS MiB", "{:.1f}"),
    "delta_kib": ("vs warm-up KiB", "{:+.0f}"),
    "fds": ("fds", "{}"),
    "tasks": ("tasks", "{}"),
    "live": ("conn objects alive", "{}"),
    "ok": ("ok", "{}"),
}


def plot(rows: List[Dict[str, Any]], baseline: Baseline, title: str, path: str) -> None:
    """RSS, open descriptors and live connection objects per round, with the tolerance and the baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rounds = [row["round"] for row in rows]
    fig, (rss_ax, fds_ax, live_ax) = plt.subplots(3, 1, sharex=True, figsize=(9, 8))
    rss_ax.plot(rounds, [row["rss_mib"] for row in rows], marker="o", markersize=3, label="server RSS")
    rss_ax.axhline(baseline.rss_limit / MIB, color="red", linestyle="--", linewidth=0.8,
                   label="limit: warm-up + tolerance")
    rss_ax.axhline(baseline.warm_rss / MIB, color="grey", linewidth=0.6, label="warm-up (highest)")
    rss_ax.set_ylabel("RSS MiB")
    fds_ax.plot(rounds, [row["fds"] for row in rows], marker="o", markersize=3, label="server fds")
    fds_ax.axhline(baseline.fds, color="red", linestyle="--", linewidth=0.8, label="baseline (must equal)")
    fds_ax.set_ylabel("open fds")
    live_ax.plot(rounds, [row["live"] for row in rows], marker="o", markersize=3,
                 label="Connection + ServerConnection objects")
    live_ax.axhline(0, color="red", linestyle="--", linewidth=0.8, label="must be 0")
    live_ax.set_ylabel("alive after gc")
    live_ax.set_xlabel("after round (0: before the first; shaded: warm-up)")
    live_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (rss_ax, fds_ax, live_ax):
        ax.axvspan(0.5, baseline.cfg.warmup_rounds + 0.5, color="grey", alpha=0.1)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    rss_ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=25, help="rounds (default 25)")
    parser.add_argument("--per-round", type=int, default=2000, help="connections per round (default 2000)")
    parser.add_argument("--warmup-rounds", type=int, default=3,
                        help="rounds that set the RSS reference (default 3); every other check applies to them")
    parser.add_argument("--table", choices=("compiled", "python"), default="compiled",
                        help="the managers' table: conntable.ConnectionTable or PyConnectionTable")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace Python's allocations in the server (slower): tells objects from allocator pools")
    parser.add_argument("--plot", metavar="PNG", help="draw RSS and descriptors per round")
    args = parser.parse_args(argv)
    if not 1 <= args.warmup_rounds < args.rounds or args.per_round < 20:
        parser.error("--rounds must exceed --warmup-rounds (at least 1), and --per-round be at least 20")
    cfg = SoakConfig(args.rounds, args.per_round, args.warmup_rounds, args.table, args.tracemalloc)
    counts = kind_counts(args.per_round)
    title = (f"{args.rounds} rounds of {sum(counts.values())} WebSocket connections, {args.table} table, uvloop\n"
             f"({', '.join(f'{n} {kind}' for kind, n in counts.items())})")
    print(title.replace("\n", " "), flush=True)
    rows, baseline, problems = soak(cfg)
    columns = dict(COLUMNS, **({"traced_kib": ("traced KiB", "{:.0f}")} if cfg.trace else {}))
    print(markdown(rows, columns))
    print(f"tolerance: fds equal to the baseline ({baseline.fds}) after every round; RSS at most max("
          f"{cfg.rss_bytes / MIB:g} MiB, {cfg.rss_share:.0%}) above the highest of the first {cfg.warmup_rounds} "
          f"rounds ({baseline.warm_rss / MIB:.1f} MiB), i.e. {baseline.rss_limit / MIB:.1f} MiB; no connection "
          f"object alive after gc; as many tasks as after round 1")
    if args.plot:
        plot(rows, baseline, title, args.plot)
        print(f"plot: {args.plot}")
    return exit_status(problems)


if __name__ == "__main__":
    sys.exit(main())
