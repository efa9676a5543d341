"""Mass expiry end to end: N idle connections coming due together beside M active ones.

    python benchmarks/e2e_expiry.py --layer ws --idle 10000 --active 500
    python benchmarks/e2e_expiry.py --layer ws --layer aio --before /path/to/old/tree --repeat 3

Per variant (a layer, from a source tree), a fresh uvloop server process and a
client process:

* ``ws``  -- ``conntable.websockets.serve`` with an echo handler, real
  ``websockets`` clients (each expiry is a closing handshake: close frame,
  the peer's answer, TCP close);
* ``aio`` -- a ``ConnectionManager`` echo server on the plain protocol, raw
  asyncio clients (each expiry is a ``transport.close()`` and the peer's FIN).

``--before SRC`` runs each layer a second time from an older source tree
(``SRC/src/conntable``, its extension built in place: ``python setup.py
build_ext --inplace`` there), in the same run, rounds interleaved, so that the
two are compared on the same machine at the same time; e.g. a ``git worktree``
of an older commit.

Timeline: all connections open (the accept ramp: the sweeper's wake-ups per
accepted connection are counted over it); then every idle connection sends one
message at the same moment, so that they come due together ``--idle-timeout``
later, while the active ones send ``--rate`` messages a second each, spread
over the second as independent clients would. The server measures the loop's
lag (a 5 ms probe) and every garbage collection (``gc.callbacks``).

Reported per variant: the idle connections closed and those still open at
the end; the time from when the last of them was due (the manager's due time
for it: its recorded activity plus the idle timeout) to the last close; the
loop lag p50, p99 and max over the expiry window (from when the first was due
to the last close) and, for comparison, over a steady-state window before it;
the server's CPU over the expiry (seconds per second, and per close, the
active traffic included); collections in the window (count and longest
pause); sweeper wake-ups per accepted connection in the ramp; the sweeper's
passes. During the ramp every client sends a keep-alive message now and then
(opening 10,000 WebSockets can take longer than the idle timeout).
``--trace FILE`` writes each pause between passes (size, pass time, lag, rate)
and the probe's samples, for trees with the lag-paced sweeper.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from harness import (HOST, Children, GcWatch, LagProbe, ask, cpu_seconds, markdown, median, quantile, raise_fd_limit,
                     receive)

LAYERS = ("ws", "aio")
HERE = os.path.dirname(os.path.abspath(__file__))
OWN_SRC = os.path.join(os.path.dirname(HERE), "src")
IDLE_MESSAGE = b"i"
ACTIVE_MESSAGE = b"a" * 64
#: What every client sends during the ramp, so that none expires before the sync (opening 10,000
#: WebSockets can take longer than the idle timeout); it does not say which kind the client is.
KEEPALIVE = b"k"
#: Seconds past the due time after which a run gives up waiting for the closes.
GIVE_UP = 30.0


@dataclass
class Config:
    idle: int
    active: int
    rate: float
    idle_timeout: float
    trace: Optional[str] = None  # a file for the sweeper's passes (new trees only)


# -- server side ------------------------------------------------------------------


class Counters:
    def __init__(self) -> None:
        self.open_idle = 0
        self.open_active = 0
        self.idle_seen: List[float] = []  # when each idle connection's one message was handled
        self.idle_ids: List[int] = []  # their connection ids, to read when the manager has them due
        self.idle_closed: List[float] = []


def manager_of(layer: str, server: Any) -> Any:
    return server.manager if layer == "ws" else server[1]


async def start(layer: str, cfg: Config, counters: Counters) -> Any:
    """The listening server: (server, manager); for ``ws`` the server is websockets-like and holds its manager."""
    if layer == "ws":
        from websockets.exceptions import ConnectionClosed

        from conntable.websockets import serve

        async def handler(ws: Any) -> None:
            idle = None
            try:
                async for message in ws:
                    if message == KEEPALIVE.decode():
                        continue
                    if idle is None:
                        idle = message == IDLE_MESSAGE.decode()
                        if idle:
                            counters.open_idle += 1
                            counters.idle_seen.append(time.monotonic())
                            counters.idle_ids.append(ws.connection.id)
                        else:
                            counters.open_active += 1
                    if not idle:
                        await ws.send(message)
            except ConnectionClosed:
                pass
            finally:
                if idle:
                    counters.open_idle -= 1
                    counters.idle_closed.append(time.monotonic())
                elif idle is not None:
                    counters.open_active -= 1

        # ping_interval longer than the run: the expiry is measured, not the heartbeat.
        server = await serve(handler, HOST, 0, idle_timeout=cfg.idle_timeout, ping_interval=600.0,
                             backlog=4096, compression=None)
        return server

    from conntable.aio import ConnectionManager

    from conntable.aio import ManagedProtocol

    class Echo(ManagedProtocol):
        idle: Optional[bool] = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            if data == KEEPALIVE:
                return
            if self.idle is None:
                self.idle = data == IDLE_MESSAGE
                if self.idle:
                    counters.open_idle += 1
                    counters.idle_seen.append(time.monotonic())
                    counters.idle_ids.append(self.connection.id)
                else:
                    counters.open_active += 1
            if not self.idle:
                self.transport.write(data)

        def connection_lost(self, exc: Any) -> None:
            if self.idle:
                counters.open_idle -= 1
                counters.idle_closed.append(time.monotonic())
            elif self.idle is not None:
                counters.open_active -= 1

    manager = ConnectionManager(idle_timeout=cfg.idle_timeout)
    server = await manager.create_server(Echo, HOST, 0, backlog=4096)
    return server, manager


async def until(predicate: Any, give_up: float) -> bool:
    deadline = time.monotonic() + give_up
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def sweeper_wakeups(manager: Any) -> int:
    sweeper = manager._sweeper
    if sweeper is None:
        return 0
    # The early ones (the accept path's) where the tree counts them apart, else every wake-up.
    return getattr(sweeper, "early_wakeups", sweeper.wakeups)


def trace_passes(manager: Any) -> Optional[List[Tuple[float, int, float, float, float]]]:
    """Record every pause between passes of the sweeper (a tree without the pacer: None)."""
    sweeper = manager._sweeper
    pacer = getattr(sweeper, "pacer", None)
    if pacer is None:
        return None
    rows: List[Tuple[float, int, float, float, float]] = []
    pause = sweeper._pause

    async def traced(entries: int, took: float) -> None:
        await pause(entries, took)
        rows.append((time.monotonic(), entries, took * 1e3, pacer.lag * 1e3, pacer.rate))

    sweeper._pause = traced
    return rows


async def serve(layer: str, src: str, cfg: Config, clients: Any, results: Any) -> None:
    import conntable

    counters = Counters()
    server = await start(layer, cfg, counters)
    manager = manager_of(layer, server)
    sockets = server.sockets if layer == "ws" else server[0].sockets
    # The ramp: counted from the first accept (the first wakes a sweeper that slept with nothing armed).
    clients.send(sockets[0].getsockname()[1])
    await until(lambda: manager._sweeper is not None, 600.0)
    wakeups0, opened0 = sweeper_wakeups(manager), manager.stats().opened_total
    passes = trace_passes(manager) if cfg.trace else None
    assert await receive(clients) == "opened"
    ramp_wakeups, ramp_accepts = sweeper_wakeups(manager) - wakeups0, manager.stats().opened_total - opened0
    gc.collect()
    clients.send("sync")
    synced = await until(lambda: len(counters.idle_seen) >= cfg.idle and counters.open_active >= cfg.active, 120.0)
    probe, watch = LagProbe(), GcWatch()
    # When the manager has them due: the table's due times (loop time, on its coarse clock), not
    # when the handlers saw the messages (a handler may see its message long after it arrived).
    loop = asyncio.get_running_loop()
    offset = time.monotonic() - loop.time()
    dues = [manager._table.due(conn_id) + offset for conn_id in counters.idle_ids if conn_id in manager._table]
    first_due = min(dues, default=time.monotonic())
    last_due = max(dues, default=time.monotonic())
    steady_from = time.monotonic()
    await asyncio.sleep(max(0.0, first_due - 0.1 - time.monotonic()))
    cpu0, cpu_from = cpu_seconds(), time.monotonic()
    await until(lambda: counters.open_idle == 0, last_due - time.monotonic() + GIVE_UP)
    cpu1, cpu_until = cpu_seconds(), time.monotonic()
    last_close = max(counters.idle_closed, default=time.monotonic())
    await asyncio.sleep(0.5)  # the tail of the follow-up work
    probe.stop()
    watch.stop()
    window = (first_due, last_close)
    lags = probe.lags(*window)
    span = last_close - first_due
    steady = probe.lags(steady_from, min(first_due - 0.2, steady_from + max(span, 1.0)))
    collections = [(at, took, gen) for at, took, gen in watch.collections if first_due <= at <= last_close]
    pacer = getattr(manager._sweeper, "pacer", None)
    if passes is not None:
        with open(f"{cfg.trace}.{layer}.{'new' if src == OWN_SRC else 'before'}", "w") as out:
            out.write("# monotonic s, entries, pass ms, lag ms, rate/s after; then the probe's lags\n")
            for row in passes:
                out.write("pass %.4f %d %.3f %.3f %.0f\n" % row)
            for ran, lag in probe.samples:
                out.write("probe %.4f %.3f\n" % (ran, lag * 1e3))
    results.send({
        "variant": f"{layer} {'new' if src == OWN_SRC else 'before'}",
        "tree": os.path.dirname(os.path.dirname(conntable.__file__)),
        "synced": synced,
        "closed": len(counters.idle_closed),
        "left": counters.open_idle,
        "active_left": counters.open_active,
        "due_to_closed_s": last_close - last_due,
        "span_s": span,
        "lag_p50_ms": quantile(lags, 0.50) * 1e3,
        "lag_p99_ms": quantile(lags, 0.99) * 1e3,
        "lag_max_ms": max(lags, default=0.0) * 1e3,
        "steady_p99_ms": quantile(steady, 0.99) * 1e3,
        "steady_max_ms": max(steady, default=0.0) * 1e3,
        "cpu_busy": (cpu1 - cpu0) / max(1e-9, cpu_until - cpu_from),
        "cpu_us_per_close": (cpu1 - cpu0) / max(1, len(counters.idle_closed)) * 1e6,
        "gc_in_window": len(collections),
        "gc_max_ms": max((took for _, took, _ in collections), default=0.0) * 1e3,
        "gc_gen2": sum(1 for _, _, gen in collections if gen == 2),
        "wakeups_per_accept": ramp_wakeups / max(1, ramp_accepts),
        "passes": 0 if pacer is None else pacer.passes,
        "cuts": 0 if pacer is None else pacer.cuts,
    })
    clients.send("stop")
    assert await receive(clients) == "stopped"
    if layer == "ws":
        server.close()
        await server.wait_closed()
    else:
        await manager.shutdown(grace=1.0)


def server_main(layer: str, src: str, cfg: Config, clients: Any, results: Any) -> None:
    sys.path.insert(0, src)  # before the first import of conntable: this variant's tree
    import logging

    import uvloop

    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    raise_fd_limit()
    uvloop.run(serve(layer, src, cfg, clients, results))


# -- client side ------------------------------------------------------------------


class RawClient(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.open = True

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Any) -> None:
        self.open = False


async def open_raw(port: int, count: int, clients: List[RawClient]) -> None:
    loop = asyncio.get_running_loop()
    for start in range(0, count, 200):
        batch = await asyncio.gather(*(loop.create_connection(RawClient, HOST, port)
                                       for _ in range(min(200, count - start))))
        clients.extend(protocol for _, protocol in batch)


async def keep_alive(layer: str, clients: List[Any], period: float) -> None:
    """Every ``period`` s, KEEPALIVE on every client opened so far (until cancelled, at the sync)."""
    while True:
        await asyncio.sleep(period)
        if layer == "ws":
            await asyncio.gather(*(client.send(KEEPALIVE.decode()) for client in list(clients)),
                                 return_exceptions=True)
        else:
            for client in clients:
                if client.open:
                    client.transport.write(KEEPALIVE)


async def talk_raw(clients: List[RawClient], rate: float, slices: int = 10) -> None:
    """Each client writes ACTIVE_MESSAGE ``rate`` times a second, in ``slices`` bursts spread over the second."""
    loop = asyncio.get_running_loop()
    next_slice = loop.time()
    while True:
        for first in range(slices):
            for client in clients[first::slices]:
                if client.open:
                    client.transport.write(ACTIVE_MESSAGE)
            next_slice += 1.0 / rate / slices
            await asyncio.sleep(max(0.0, next_slice - loop.time()))


async def drive(layer: str, cfg: Config, server: Any) -> None:
    port = await receive(server)
    opened: List[Any] = []
    keeper = asyncio.ensure_future(keep_alive(layer, opened, cfg.idle_timeout / 4))
    if layer == "ws":
        from wsclients import connect_all, talk

        uri = f"ws://{HOST}:{port}"
        idle, failures = await connect_all(uri, cfg.idle, opened, compression=None, close_timeout=30)
        active, more = await connect_all(uri, cfg.active, opened, compression=None, close_timeout=30)
        if failures or more:
            raise (failures + more)[0]
    else:
        await open_raw(port, cfg.idle, opened)
        await open_raw(port, cfg.active, opened)
        idle, active = opened[:cfg.idle], opened[cfg.idle:]
    server.send("opened")
    assert await receive(server) == "sync"
    keeper.cancel()
    if layer == "ws":
        await asyncio.gather(*(client.send(IDLE_MESSAGE.decode()) for client in idle))
        talker = asyncio.ensure_future(talk(active, cfg.rate, ACTIVE_MESSAGE.decode(), spread=True))
    else:
        for client in idle:
            client.transport.write(IDLE_MESSAGE)
        for client in active:
            client.transport.write(ACTIVE_MESSAGE)
        talker = asyncio.ensure_future(talk_raw(active, cfg.rate))
    assert await receive(server) == "stop"
    talker.cancel()
    for client in idle + active:
        client.transport.abort()
    await asyncio.sleep(0.2)
    server.send("stopped")


def client_main(layer: str, cfg: Config, server: Any) -> None:
    import logging

    import uvloop

    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    raise_fd_limit()
    uvloop.run(drive(layer, cfg, server))


# -- orchestration ------------------------------------------------------------------


def measure(layer: str, src: str, cfg: Config) -> Dict[str, Any]:
    with Children(grace=60) as children:
        results, results_end = children.pipe(duplex=False)
        server_end, client_end = children.pipe()
        children.start(server_main, layer, src, cfg, server_end, results_end, name=f"server-{layer}")
        children.start(client_main, layer, cfg, client_end, name="clients")
        return ask(results, 900 + cfg.idle_timeout + GIVE_UP, "the server")  # type: ignore[no-any-return]


COLUMNS: Dict[str, Tuple[str, str]] = {
    "variant": ("variant", "{}"),
    "closed": ("idle closed", "{:.0f}"),
    "left": ("idle left", "{:.0f}"),
    "due_to_closed_s": ("due -> all closed s", "{:.2f}"),
    "lag_p50_ms": ("lag p50 ms", "{:.1f}"),
    "lag_p99_ms": ("lag p99 ms", "{:.1f}"),
    "lag_max_ms": ("lag max ms", "{:.1f}"),
    "steady_p99_ms": ("steady p99 ms", "{:.1f}"),
    "steady_max_ms": ("steady max ms", "{:.1f}"),
    "cpu_busy": ("server CPU s/s", "{:.2f}"),
    "cpu_us_per_close": ("CPU µs/close", "{:.0f}"),
    "gc_in_window": ("GCs in window", "{:.0f}"),
    "gc_max_ms": ("longest GC ms", "{:.1f}"),
    "wakeups_per_accept": ("wake-ups/accept", "{:.3f}"),
    "passes": ("passes", "{:.0f}"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", action="append", choices=LAYERS, help="repeatable; default: both")
    parser.add_argument("--idle", type=int, default=10_000, help="connections that expire together")
    parser.add_argument("--active", type=int, default=500, help="connections that keep talking")
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second per active connection")
    parser.add_argument("--idle-timeout", type=float, default=8.0, help="seconds from the sync to the expiry")
    parser.add_argument("--before", metavar="SRC", help="an older source tree to run side by side")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, interleaved; the table shows medians")
    parser.add_argument("--trace", metavar="FILE", help="write each pass (size, time, lag) and the probe's "
                        "lags to FILE.<layer>.<tree> (trees with the lag-paced sweeper)")
    args = parser.parse_args()
    cfg = Config(idle=args.idle, active=args.active, rate=args.rate, idle_timeout=args.idle_timeout,
                 trace=args.trace)
    trees = [OWN_SRC] + ([os.path.join(os.path.abspath(args.before), "src")] if args.before else [])
    variants = [(layer, src) for layer in args.layer or LAYERS for src in trees]
    print(f"host {os.uname().nodename}, {os.cpu_count()} CPUs; {cfg.idle} idle + {cfg.active} active "
          f"({cfg.rate:g} msgs/s each), idle_timeout {cfg.idle_timeout:g} s, uvloop, server and clients in "
          f"separate processes; trees: {', '.join(trees)}; median of {args.repeat}", flush=True)
    runs: Dict[Tuple[str, str], List[Dict[str, Any]]] = {variant: [] for variant in variants}
    for round_ in range(1, args.repeat + 1):
        for variant in variants:  # interleaved: drift on a shared machine hits every variant alike
            result = measure(*variant, cfg)
            runs[variant].append(result)
            print(f"  round {round_}: {result['variant']} ({result['tree']}): closed {result['closed']}, "
                  f"{result['due_to_closed_s']:.2f} s after due, lag p99 {result['lag_p99_ms']:.1f} "
                  f"max {result['lag_max_ms']:.1f} ms, {result['gc_in_window']} GCs", flush=True)
    print(markdown([median(results) for results in runs.values()], COLUMNS))


if __name__ == "__main__":
    main()
