"""End-to-end benchmark: a uvloop echo server holding N idle and M active connections.

    python benchmarks/e2e_manager.py --idle 5000 --active 500

Three ways to time connections out are compared, each in a fresh server
process, with the clients in another process so that only the server is
measured:

* ``conntable``  -- ``conntable.aio.ConnectionManager`` on the compiled table;
* ``pytable``    -- the same manager on ``conntable.PyConnectionTable``;
* ``call_later`` -- the common hand-written registry: a dict of connections
  and one ``loop.call_later`` handle per connection, cancelled and re-armed
  on every packet (what uvicorn and many servers do).

Timeline: every connection is opened; then the client sends one byte on
every idle connection at the same moment (so that they all come due
together) and starts the active traffic (``--rate`` messages per second per
active connection, echoed). After a warm-up second the server measures
``--steady`` seconds of steady state; ``idle_timeout`` later, the idle
connections all expire at once while the active ones keep talking.

Reported per registry: the server's CPU seconds per wall second and the
event loop's worst lag (a 5 ms probe: how late it woke) in the steady state
and during the mass expiry, the messages echoed per second, how long the
mass expiry took from the first close to the last, and the server's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, Dict, List, Optional, Tuple

from harness import (HOST, Children, Config, LagProbe, ask, cpu_seconds, markdown, median, raise_fd_limit,
                     receive, rss_bytes)

MESSAGE = b"m" * 64
REGISTRIES = ("conntable", "pytable", "call_later")


# -- server side ------------------------------------------------------------------


class Counters:
    """What every server variant counts the same way."""

    def __init__(self) -> None:
        self.messages = 0
        self.open = 0
        self.closed_at: List[float] = []


class Echo(asyncio.Protocol):
    """The server's protocol: echo, and count."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.counters.open += 1

    def data_received(self, data: bytes) -> None:
        self.counters.messages += 1
        self.transport.write(data)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.counters.open -= 1
        self.counters.closed_at.append(time.monotonic())


class CallLaterEcho(Echo):
    """The hand-written registry: one timer handle per connection, re-armed on every packet."""

    def __init__(self, counters: Counters, registry: Dict[int, "CallLaterEcho"], idle_timeout: float) -> None:
        super().__init__(counters)
        self.registry = registry
        self.idle_timeout = idle_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.registry[id(self)] = self
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(self.idle_timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        self.timer.cancel()
        self.timer = self.loop.call_later(self.idle_timeout, self.transport.close)
        super().data_received(data)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.timer.cancel()
        del self.registry[id(self)]
        super().connection_lost(exc)


async def start_server(name: str, cfg: Config, counters: Counters) -> tuple:
    """The listening server for one registry variant, and a coroutine function that shuts it down."""
    loop = asyncio.get_running_loop()
    if name == "call_later":
        registry: Dict[int, CallLaterEcho] = {}
        server = await loop.create_server(
            lambda: CallLaterEcho(counters, registry, cfg.idle_timeout), HOST, 0, backlog=4096)

        async def close() -> None:
            server.close()
            for protocol in list(registry.values()):
                protocol.transport.close()
            await asyncio.sleep(0.1)

        return server, close

    import conntable
    from conntable.aio import ConnectionManager

    table_factory = conntable.ConnectionTable if name == "conntable" else conntable.PyConnectionTable
    mgr = ConnectionManager(idle_timeout=cfg.idle_timeout, table_factory=table_factory)
    server = await mgr.create_server(lambda: Echo(counters), HOST, 0, backlog=4096)

    async def shutdown() -> None:
        await mgr.shutdown(grace=1.0)

    return server, shutdown


async def serve(name: str, cfg: Config, pipe: Any) -> None:
    counters = Counters()
    server, shutdown = await start_server(name, cfg, counters)
    pipe.send(server.sockets[0].getsockname()[1])
    assert await receive(pipe) == "expect"
    while counters.open < cfg.total:
        await asyncio.sleep(0.05)
    pipe.send("ready")
    assert await receive(pipe) == "synced"
    synced = time.monotonic()
    probe = LagProbe()

    await asyncio.sleep(cfg.warmup)
    cpu0, messages0, t0 = cpu_seconds(), counters.messages, time.monotonic()
    await asyncio.sleep(cfg.steady)
    cpu1, messages1, t1 = cpu_seconds(), counters.messages, time.monotonic()
    rss = rss_bytes()

    # The mass expiry: every idle connection comes due idle_timeout after the sync.
    await asyncio.sleep(max(0.0, synced + cfg.idle_timeout - 0.5 - time.monotonic()))
    cpu2, t2 = cpu_seconds(), time.monotonic()
    give_up = t2 + cfg.idle_timeout + 30.0
    while counters.open > cfg.active and time.monotonic() < give_up:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    cpu3, t3 = cpu_seconds(), time.monotonic()
    probe.stop()
    closes = [t for t in counters.closed_at if t >= t2]
    first, last = (closes[0], closes[-1]) if closes else (t2, t2)
    pipe.send({
        "registry": name,
        "steady_cpu": (cpu1 - cpu0) / (t1 - t0),
        "messages_per_s": (messages1 - messages0) / (t1 - t0),
        "steady_lag_ms": probe.worst(t0, t1) * 1e3,
        "expiry_cpu": (cpu3 - cpu2) / (t3 - t2),
        "expiry_lag_ms": probe.worst(first, last + 0.5) * 1e3,
        "expiry_span_s": last - first,
        "expired": len(closes),
        "survivors": counters.open,
        "rss_mb": rss / 2**20,
    })
    assert await receive(pipe) == "stop"
    await shutdown()


def server_main(name: str, cfg: Config, pipe: Any) -> None:
    import uvloop

    raise_fd_limit()
    uvloop.run(serve(name, cfg, pipe))


# -- client side ------------------------------------------------------------------


class Client(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.open = False


async def connect_all(port: int, count: int) -> List[Client]:
    loop = asyncio.get_running_loop()
    clients: List[Client] = []
    for start in range(0, count, 200):
        batch = await asyncio.gather(*(
            loop.create_connection(Client, HOST, port) for _ in range(min(200, count - start))))
        clients.extend(protocol for _transport, protocol in batch)
    return clients


async def talk(active: List[Client], rate: float) -> None:
    """Every active connection sends MESSAGE ``rate`` times a second."""
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    next_round = loop.time()
    while True:
        for client in active:
            if client.open:
                client.transport.write(MESSAGE)
        next_round += period
        await asyncio.sleep(max(0.0, next_round - loop.time()))


async def drive(port: int, cfg: Config, pipe: Any) -> None:
    idle = await connect_all(port, cfg.idle)
    active = await connect_all(port, cfg.active)
    pipe.send("connected")
    assert await receive(pipe) == "sync"
    for client in idle:  # all at once: they come due together
        client.transport.write(b"!")
    talker = asyncio.ensure_future(talk(active, cfg.rate))
    pipe.send("synced")
    assert await receive(pipe) == "stop"
    talker.cancel()
    for client in idle + active:
        client.transport.close()
    await asyncio.sleep(0.1)


def client_main(port: int, cfg: Config, pipe: Any) -> None:
    import uvloop

    raise_fd_limit()
    uvloop.run(drive(port, cfg, pipe))


# -- orchestration ------------------------------------------------------------------


def measure(name: str, cfg: Config) -> Dict[str, Any]:
    # Bounds on each wait, generous: opening 15000 connections on a busy 2-core machine takes a while.
    connecting, running = 600.0, cfg.idle_timeout + 120.0
    with Children(grace=60) as children:
        server_pipe, server_end = children.pipe()
        client_pipe, client_end = children.pipe()
        children.start(server_main, name, cfg, server_end, name=f"server-{name}")
        port = ask(server_pipe, 60, "the server")
        children.start(client_main, port, cfg, client_end, name="clients")
        assert ask(client_pipe, connecting, "the clients") == "connected"
        server_pipe.send("expect")
        assert ask(server_pipe, connecting, "the server") == "ready"
        client_pipe.send("sync")
        assert ask(client_pipe, 60, "the clients") == "synced"
        server_pipe.send("synced")
        result: Dict[str, Any] = ask(server_pipe, running, "the server")
        client_pipe.send("stop")
        server_pipe.send("stop")
    return result


#: Result key -> (column title, format).
COLUMNS: Dict[str, Tuple[str, str]] = {
    "registry": ("registry", "{}"),
    "steady_cpu": ("steady CPU s/s", "{:.3f}"),
    "messages_per_s": ("msgs/s", "{:,.0f}"),
    "steady_lag_ms": ("steady worst lag ms", "{:.1f}"),
    "expiry_lag_ms": ("mass-expiry worst lag ms", "{:.1f}"),
    "expiry_cpu": ("mass-expiry CPU s/s", "{:.3f}"),
    "expiry_span_s": ("expiry span s", "{:.2f}"),
    "expired": ("expired", "{:.0f}"),
    "survivors": ("active left", "{:.0f}"),
    "rss_mb": ("RSS MB", "{:.0f}"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=int, default=5000, help="idle connections (all expire together)")
    parser.add_argument("--active", type=int, default=500, help="connections that keep talking")
    parser.add_argument("--rate", type=float, default=20.0, help="messages per second per active connection")
    parser.add_argument("--steady", type=float, default=5.0, help="seconds of steady state measured")
    parser.add_argument("--registry", action="append", choices=REGISTRIES,
                        help="measure only these (repeatable; default: all)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds, interleaving the registries; the table shows medians")
    args = parser.parse_args()
    cfg = Config(idle=args.idle, active=args.active, rate=args.rate, steady=args.steady)
    names = args.registry or list(REGISTRIES)
    print(f"{cfg.idle} idle + {cfg.active} active connections, {cfg.rate:g} msgs/s each active, "
          f"idle_timeout {cfg.idle_timeout:g} s, uvloop; server and clients in separate processes; "
          f"median of {args.repeat}", flush=True)
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in names}
    for round_ in range(1, args.repeat + 1):
        for name in names:  # interleaved, so that drift on a shared machine hits every registry alike
            runs[name].append(measure(name, cfg))
            print(f"  round {round_}: {name} done", flush=True)
    print(markdown([median(results) for results in runs.values()], COLUMNS))


if __name__ == "__main__":
    main()
