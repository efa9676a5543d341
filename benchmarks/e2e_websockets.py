"""End-to-end WebSocket benchmark: N idle and M active real WebSocket connections.

    python benchmarks/e2e_websockets.py --idle 5000 --active 500

Two servers with the same echo handler, each in a fresh process on uvloop,
the clients (real ``websockets`` clients) in another process:

* ``conntable``  -- ``conntable.websockets.serve``: connections in a
  ConnectionManager, one heartbeat on a timer wheel for all of them;
* ``websockets`` -- ``websockets.asyncio.server.serve``: a keepalive task
  per connection.

Both ping every ``--ping-interval`` seconds (default 5, shorter than
websockets' 20 so that the idle window sees pings) with a 20 s timeout, and
keep websockets' other defaults (compression on; ``--no-compression`` turns
it off on both sides). Timeline: all connections
open; the server counts its tasks and its RSS against what it had before the
first connection; the active connections send ``--rate`` messages a second
each for ``--steady`` seconds (echoed); then everybody goes quiet and the
server measures ``--quiet`` seconds of idle, heartbeats included.

``--before SRC`` adds conntable from an older source tree as a third
server, in the same run (rounds interleaved).

Reported per server: tasks per connection, memory per connection (RSS
growth over the connections, so it includes the kernel-independent Python
and buffer allocations), CPU seconds per second while the active ones talk
and while all are idle, and the pings the server sent while idle.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

from harness import Config as ManagerConfig
from harness import HOST, Children, ask, cpu_seconds, markdown, median, raise_fd_limit, receive, rss_bytes
from wsclients import connect_all, talk

SERVERS = ("conntable", "websockets")


@dataclass
class Config(ManagerConfig):
    """The TCP benchmark's settings (counts, rate, steady window), plus the idle window and the pings."""

    quiet: float = 10.0
    ping_interval: float = 5.0
    compression: bool = True


# -- server side ------------------------------------------------------------------


class Counters:
    def __init__(self) -> None:
        self.open = 0
        self.messages = 0
        self.pings = 0


def echo_handler(counters: Counters) -> Callable[[Any], Any]:
    from websockets.exceptions import ConnectionClosed

    async def handler(ws: Any) -> None:
        counters.open += 1
        try:
            async for message in ws:
                counters.messages += 1
                await ws.send(message)
        except ConnectionClosed:  # the clients abort at the end
            pass
        finally:
            counters.open -= 1

    return handler


def start_server(name: str, cfg: Config, counters: Counters) -> Any:
    """The server (an async context manager) for one variant."""
    handler = echo_handler(counters)
    options: Dict[str, Any] = dict(ping_interval=cfg.ping_interval, ping_timeout=20.0, backlog=4096,
                                   compression="deflate" if cfg.compression else None)
    if name.startswith("conntable"):
        from conntable.websockets import serve

        return serve(handler, HOST, 0, idle_timeout=3600.0, **options)
    return plain_server(handler, counters, **options)


def plain_server(handler: Callable[[Any], Any], counters: Counters, host: Any = HOST, port: Any = 0,
                 **options: Any) -> Any:
    """``websockets.asyncio.server.serve`` (on HOST by default), counting its keepalive pings in ``counters.pings``."""
    from websockets.asyncio.server import ServerConnection, serve as plain_serve

    class CountingPings(ServerConnection):
        """Counts the keepalive task's pings, to compare with the heartbeat's."""

        async def ping(self, data: Any = None) -> Any:
            counters.pings += 1
            return await super().ping(data)

    return plain_serve(handler, host, port, create_connection=CountingPings, **options)


def pings_sent(name: str, server: Any, counters: Counters) -> int:
    return server.heartbeat.pings_sent if name.startswith("conntable") else counters.pings


async def until(predicate: Callable[[], bool], give_up: float) -> None:
    deadline = time.perf_counter() + give_up
    while not predicate() and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)


async def measure_cpu(seconds: float, counters: Counters) -> tuple:
    """CPU seconds per second, and messages per second, over ``seconds``."""
    cpu0, messages0, t0 = cpu_seconds(), counters.messages, time.perf_counter()
    await asyncio.sleep(seconds)
    cpu1, messages1, t1 = cpu_seconds(), counters.messages, time.perf_counter()
    return (cpu1 - cpu0) / (t1 - t0), (messages1 - messages0) / (t1 - t0)


async def serve(name: str, cfg: Config, results: Any, clients: Any) -> None:
    """The server's side of the run; ``clients`` is a pipe to the client process, ``results`` to the parent."""
    counters = Counters()
    async with start_server(name, cfg, counters) as server:
        gc.collect()
        tasks0, rss0 = len(asyncio.all_tasks()), rss_bytes()
        clients.send(server.sockets[0].getsockname()[1])
        await until(lambda: counters.open >= cfg.total, 600.0)
        await asyncio.sleep(cfg.warmup)
        gc.collect()
        tasks1, rss1 = len(asyncio.all_tasks()), rss_bytes()
        clients.send("talk")
        await asyncio.sleep(cfg.warmup)
        steady_cpu, messages_per_s = await measure_cpu(cfg.steady, counters)
        clients.send("quiet")
        assert await receive(clients) == "quiet"
        await asyncio.sleep(cfg.warmup)
        pings0 = pings_sent(name, server, counters)
        idle_cpu, _ = await measure_cpu(cfg.quiet, counters)
        pings = pings_sent(name, server, counters) - pings0
        clients.send("stop")
        results.send({
            "server": name,
            "connections": counters.open,
            "tasks_per_conn": (tasks1 - tasks0) / cfg.total,
            "kib_per_conn": (rss1 - rss0) / cfg.total / 1024,
            "steady_cpu": steady_cpu,
            "messages_per_s": messages_per_s,
            "idle_cpu": idle_cpu,
            "idle_pings_per_s": pings / cfg.quiet,
            "idle_us_per_ping": idle_cpu * cfg.quiet / max(1, pings) * 1e6,
            "rss_mb": rss1 / 2**20,
        })


def server_main(name: str, cfg: Config, results: Any, clients: Any, src: Optional[str] = None) -> None:
    if src is not None:  # before the first import of conntable: that tree's
        sys.path.insert(0, src)
    import logging

    import uvloop

    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    raise_fd_limit()
    uvloop.run(serve(name, cfg, results, clients))


# -- client side ------------------------------------------------------------------


async def drive(cfg: Config, server: Any) -> None:
    """The clients' side of the run; ``server`` is a pipe to the server process."""
    uri = f"ws://{HOST}:{await receive(server)}"
    clients, failures = await connect_all(uri, cfg.total, compression="deflate" if cfg.compression else None)
    if failures:
        raise failures[0]
    assert await receive(server) == "talk"
    talker = asyncio.ensure_future(talk(clients[:cfg.active], cfg.rate))
    assert await receive(server) == "quiet"
    talker.cancel()
    server.send("quiet")
    assert await receive(server) == "stop"
    for client in clients:
        client.transport.abort()
    await asyncio.sleep(0.1)


def client_main(cfg: Config, server: Any) -> None:
    import uvloop

    raise_fd_limit()
    uvloop.run(drive(cfg, server))


# -- orchestration ------------------------------------------------------------------


def measure(name: str, cfg: Config, src: Optional[str] = None) -> Dict[str, Any]:
    """One run: a server process and a client process that pace each other; the server reports."""
    with Children(grace=60) as children:
        results, results_end = children.pipe(duplex=False)
        server_end, client_end = children.pipe()
        children.start(server_main, name, cfg, results_end, server_end, src, name=f"server-{name}")
        children.start(client_main, cfg, client_end, name="clients")
        # Bounded, generously: opening the connections takes most of it.
        bound = 600 + 3 * (cfg.warmup + cfg.steady + cfg.quiet)
        return ask(results, bound, "the server")  # type: ignore[no-any-return]


#: Result key -> (column title, format).
COLUMNS: Dict[str, Tuple[str, str]] = {
    "server": ("server", "{}"),
    "tasks_per_conn": ("tasks/conn", "{:.2f}"),
    "kib_per_conn": ("KiB/conn", "{:.1f}"),
    "steady_cpu": ("CPU s/s, M active", "{:.3f}"),
    "messages_per_s": ("msgs/s", "{:,.0f}"),
    "idle_cpu": ("CPU s/s, all idle", "{:.4f}"),
    "idle_pings_per_s": ("pings/s idle", "{:,.0f}"),
    "idle_us_per_ping": ("idle CPU µs/ping", "{:.0f}"),
    "rss_mb": ("RSS MB", "{:.0f}"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=5000, help="connections that never send")
    parser.add_argument("--active", type=int, default=500, help="connections that send --rate messages/s")
    parser.add_argument("--rate", type=float, default=5.0, help="messages per second per active connection")
    parser.add_argument("--steady", type=float, default=5.0, help="seconds measured while the active ones talk")
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds measured while everyone is idle")
    parser.add_argument("--ping-interval", type=float, default=5.0, help="both servers' ping interval")
    parser.add_argument("--no-compression", action="store_true", help="turn permessage-deflate off on both")
    parser.add_argument("--server", action="append", choices=SERVERS, help="measure only these (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, interleaved; the table shows medians")
    parser.add_argument("--before", metavar="SRC", help="also run conntable from an older source tree "
                        "(SRC/src, extension built in place) as 'conntable-before', side by side")
    args = parser.parse_args()
    cfg = Config(idle=args.idle, active=args.active, rate=args.rate, steady=args.steady, quiet=args.quiet,
                 ping_interval=args.ping_interval, compression=not args.no_compression)
    names = args.server or list(SERVERS)
    sources: Dict[str, Optional[str]] = {name: None for name in names}
    if args.before:
        names.append("conntable-before")
        sources["conntable-before"] = os.path.join(os.path.abspath(args.before), "src")
    print(f"{cfg.idle} idle + {cfg.active} active WebSocket connections, {cfg.rate:g} msgs/s each active, "
          f"ping every {cfg.ping_interval:g} s, compression {'on' if cfg.compression else 'off'}, uvloop; "
          f"server and clients in separate processes; "
          f"median of {args.repeat}", flush=True)
    # Rounds interleave the servers, so that drift on a shared machine hits both alike.
    rounds = [[measure(name, cfg, sources[name]) for name in names] for _ in range(args.repeat)]
    print(markdown([median(list(runs)) for runs in zip(*rounds)], COLUMNS))


if __name__ == "__main__":
    main()
