"""What a managed accept costs: server CPU per accepted connection, bare uvloop against the manager.

    python benchmarks/e2e_accept.py --connections 10000 --repeat 5
    python benchmarks/e2e_accept.py --before /path/to/old/tree --repeat 5

Each variant is a fresh uvloop server process running the same plain echo
protocol; a client process opens ``--connections`` connections, 200 at a time
(an accept ramp), and holds them. Variants:

* ``bare``      -- ``loop.create_server(Echo)``;
* ``conntable`` -- ``ConnectionManager().create_server(Echo)`` from this tree;
* ``before``    -- the same from ``--before SRC`` (``SRC/src``, extension
  built in place), so that the change is measured side by side in one run.

Reported per variant (medians over ``--repeat`` interleaved rounds): server CPU
µs per accepted connection over the ramp (user + system, from /proc), the
difference to ``bare``, objects the garbage collector tracks per connection
(``gc.get_objects()`` after a collection, before and after the ramp), the
collector's time over the ramp per connection, and the sweeper's wake-ups per
accepted connection.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from harness import HOST, Children, GcWatch, ask, cpu_seconds, markdown, median, raise_fd_limit, receive

HERE = os.path.dirname(os.path.abspath(__file__))
OWN_SRC = os.path.join(os.path.dirname(HERE), "src")
BATCH = 200


class Echo(asyncio.Protocol):
    held: List[Any] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        Echo.held.append(self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(variant: str, src: Optional[str], clients: Any, results: Any) -> None:
    loop = asyncio.get_running_loop()
    manager = None
    if variant == "bare":
        server = await loop.create_server(Echo, HOST, 0, backlog=4096)
    else:
        from conntable.aio import ConnectionManager

        manager = ConnectionManager(idle_timeout=600.0)
        server = await manager.create_server(Echo, HOST, 0, backlog=4096)
    clients.send(server.sockets[0].getsockname()[1])
    assert await receive(clients) == "warm"  # one connection first: the manager's sweeper and clock start
    while len(Echo.held) < 1:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    sweeper = None if manager is None else manager._sweeper
    wakeups0 = 0 if sweeper is None else getattr(sweeper, "early_wakeups", sweeper.wakeups)
    gc.collect()
    objects0 = len(gc.get_objects())
    watch = GcWatch()
    clients.send("ramp")
    cpu0 = cpu_seconds()
    count = await receive(clients)
    while len(Echo.held) < count + 1:
        await asyncio.sleep(0.001)
    cpu1 = cpu_seconds()
    watch.stop()
    wakeups = 0 if sweeper is None else getattr(sweeper, "early_wakeups", sweeper.wakeups) - wakeups0
    gc.collect()
    objects1 = len(gc.get_objects())
    import conntable

    results.send({
        "variant": variant,
        "tree": "" if variant == "bare" else os.path.dirname(os.path.dirname(conntable.__file__)),
        "us_per_accept": (cpu1 - cpu0) / count * 1e6,
        "tracked_per_conn": (objects1 - objects0) / count,
        "gc_us_per_accept": sum(took for _, took, _ in watch.collections) / count * 1e6,
        "wakeups_per_accept": wakeups / count,
    })
    assert await receive(clients) == "stop"
    if manager is not None:
        await manager.shutdown(grace=1.0)
    else:
        server.close()
        for protocol in Echo.held:
            protocol.transport.abort()


def server_main(variant: str, src: Optional[str], clients: Any, results: Any) -> None:
    if src is not None:
        sys.path.insert(0, src)
    import uvloop

    raise_fd_limit()
    uvloop.run(serve(variant, src, clients, results))


async def drive(count: int, server: Any) -> None:
    loop = asyncio.get_running_loop()
    port = await receive(server)
    held = [await loop.create_connection(asyncio.Protocol, HOST, port)]
    server.send("warm")
    assert await receive(server) == "ramp"
    for start in range(0, count, BATCH):
        held += await asyncio.gather(*(loop.create_connection(asyncio.Protocol, HOST, port)
                                       for _ in range(min(BATCH, count - start))))
    server.send(count)
    assert await receive(server) == "stop"
    for transport, _ in held:
        transport.abort()
    await asyncio.sleep(0.1)


def client_main(count: int, server: Any) -> None:
    import uvloop

    raise_fd_limit()
    uvloop.run(drive(count, server))


def measure(variant: str, src: Optional[str], count: int) -> Dict[str, Any]:
    with Children(grace=30) as children:
        results, results_end = children.pipe(duplex=False)
        server_end, client_end = children.pipe()
        children.start(server_main, variant, src, server_end, results_end, name=f"server-{variant}")
        children.start(client_main, count, client_end, name="clients")
        result: Dict[str, Any] = ask(results, 600, "the server")
        return result


COLUMNS: Dict[str, Tuple[str, str]] = {
    "variant": ("variant", "{}"),
    "us_per_accept": ("server CPU µs/accept", "{:.1f}"),
    "over_bare": ("over bare µs", "{:+.1f}"),
    "tracked_per_conn": ("GC-tracked objects/conn", "{:.2f}"),
    "gc_us_per_accept": ("GC µs/accept", "{:.1f}"),
    "wakeups_per_accept": ("sweeper wake-ups/accept", "{:.3f}"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--before", metavar="SRC", help="an older source tree to run side by side")
    parser.add_argument("--repeat", type=int, default=3, help="rounds, interleaved; the table shows medians")
    args = parser.parse_args()
    variants: List[Tuple[str, Optional[str]]] = [("bare", None), ("conntable", OWN_SRC)]
    if args.before:
        variants.append(("before", os.path.join(os.path.abspath(args.before), "src")))
    print(f"host {os.uname().nodename}, {os.cpu_count()} CPUs; {args.connections} connections accepted in "
          f"batches of {BATCH} and held, uvloop, server and clients in separate processes; "
          f"median of {args.repeat}", flush=True)
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name, _ in variants}
    for round_ in range(1, args.repeat + 1):
        for name, src in variants:
            runs[name].append(measure(name, src, args.connections))
        bare = runs["bare"][-1]["us_per_accept"]
        for name, _ in variants:
            runs[name][-1]["over_bare"] = runs[name][-1]["us_per_accept"] - bare
        print(f"  round {round_}: " + ", ".join(f"{name} {runs[name][-1]['us_per_accept']:.1f} µs"
                                                for name, _ in variants), flush=True)
    print(markdown([median(results) for results in runs.values()], COLUMNS))


if __name__ == "__main__":
    main()
