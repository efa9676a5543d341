"""conntable's own share of a heartbeat ping: the heartbeat's CPU per ping with no I/O at all.

    python benchmarks/heartbeat_cost.py --connections 10000 --before /path/to/old/tree

A ``ConnectionManager`` holds ``--connections`` connections registered as
``Endpoint`` objects that are also ``Pingable``: ``heartbeat_ping`` only
counts, so what is measured is the heartbeat itself (its sweeper's passes,
the per-connection state machine, the look-up of the last activity, the
re-arm), not the socket write or the pong's parse. All are quiet, pinged
every ``--ping-interval`` seconds, ``ping_timeout=None``. Each tree runs in
a fresh uvloop process, rounds interleaved; reported: CPU µs per ping (the
process's user + system time over ``--seconds`` of pinging, divided by the
pings sent). The end-to-end figure, with real WebSockets, is
``e2e_websockets.py``'s "idle CPU µs/ping".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from harness import Children, ask, cpu_seconds, markdown, median

HERE = os.path.dirname(os.path.abspath(__file__))
OWN_SRC = os.path.join(os.path.dirname(HERE), "src")


async def run(count: int, interval: float, seconds: float) -> Dict[str, Any]:
    import conntable
    from conntable.aio import ConnectionManager, Endpoint, Heartbeat

    class Peer(Endpoint):
        __slots__ = ("pings",)

        def __init__(self) -> None:
            self.pings = 0

        def request_close(self, reason: Any) -> None:
            pass

        def abort(self) -> None:
            pass

        def heartbeat_ping(self) -> None:
            self.pings += 1

        def heartbeat_failed(self) -> None:
            pass

        def heartbeat_open(self) -> bool:
            return True

    manager = ConnectionManager(idle_timeout=None, resolution=min(0.5, interval / 4))
    heartbeat = Heartbeat(manager, interval, None)
    peers: List[Any] = []  # held: the manager holds endpoints weakly
    for _ in range(count):
        peer = Peer()
        conn = manager.register(peer)
        manager.established(conn)
        heartbeat.watch(conn.id, peer)
        peers.append(peer)
    await asyncio.sleep(interval * 1.5)  # past the first round of pings
    pings0, cpu0 = heartbeat.pings_sent, cpu_seconds()
    await asyncio.sleep(seconds)
    pings, cpu = heartbeat.pings_sent - pings0, cpu_seconds() - cpu0
    await heartbeat.stop()
    await manager.shutdown(grace=0.0)
    return {"tree": os.path.dirname(os.path.dirname(conntable.__file__)), "pings": pings,
            "us_per_ping": cpu / max(1, pings) * 1e6}


def child(src: str, count: int, interval: float, seconds: float, results: Any) -> None:
    sys.path.insert(0, src)
    import uvloop

    results.send(uvloop.run(run(count, interval, seconds)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--ping-interval", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of pinging measured")
    parser.add_argument("--before", metavar="SRC", help="an older source tree to run side by side")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trees: List[Tuple[str, str]] = [("conntable", OWN_SRC)]
    if args.before:
        trees.append(("before", os.path.join(os.path.abspath(args.before), "src")))
    print(f"host {os.uname().nodename}; {args.connections} quiet connections pinged every "
          f"{args.ping_interval:g} s, no I/O, uvloop; median of {args.repeat}", flush=True)
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name, _ in trees}
    for _ in range(args.repeat):
        for name, src in trees:
            with Children(grace=30) as children:
                results, results_end = children.pipe(duplex=False)
                children.start(child, src, args.connections, args.ping_interval, args.seconds, results_end,
                               name=f"heartbeat-{name}")
                result = ask(results, 120 + 3 * (args.seconds + args.ping_interval), "the heartbeat")
            runs[name].append({"variant": name, **result})
    print(markdown([median(results) for results in runs.values()],
                   {"variant": ("variant", "{}"), "pings": ("pings", "{:,.0f}"),
                    "us_per_ping": ("CPU µs/ping, no I/O", "{:.2f}")}))


if __name__ == "__main__":
    main()
