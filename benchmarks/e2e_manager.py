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
import multiprocessing
import os
import resource
import statistics
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

HOST = "127.0.0.1"
PROBE_PERIOD = 0.005
MESSAGE = b"m" * 64
REGISTRIES = ("conntable", "pytable", "call_later")


@dataclass
class Config:
    idle: int
    active: int
    rate: float
    steady: float
    warmup: float = 1.0

    @property
    def total(self) -> int:
        return self.idle + self.active

    @property
    def idle_timeout(self) -> float:
        # Long enough that the mass expiry starts after the steady-state window.
        return self.warmup + self.steady + 2.0


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def receive(pipe: Any) -> Any:
    """A blocking pipe read, off the loop (a thread that sleeps in recv costs no CPU)."""
    return await asyncio.get_running_loop().run_in_executor(None, pipe.recv)


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
        self.counters.closed_at.append(time.perf_counter())


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


class LagProbe:
    """Wakes every PROBE_PERIOD and records how late it woke."""

    def __init__(self) -> None:
        self.samples: List[tuple] = []  # (wake time, lag)
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(PROBE_PERIOD)
            woke = time.perf_counter()
            self.samples.append((woke, woke - start - PROBE_PERIOD))

    def worst(self, since: float, until: float) -> float:
        return max((lag for woke, lag in self.samples if since <= woke <= until), default=0.0)

    def stop(self) -> None:
        self._task.cancel()


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
    synced = time.perf_counter()
    probe = LagProbe()

    await asyncio.sleep(cfg.warmup)
    cpu0, messages0, t0 = cpu_seconds(), counters.messages, time.perf_counter()
    await asyncio.sleep(cfg.steady)
    cpu1, messages1, t1 = cpu_seconds(), counters.messages, time.perf_counter()
    rss = rss_bytes()

    # The mass expiry: every idle connection comes due idle_timeout after the sync.
    await asyncio.sleep(max(0.0, synced + cfg.idle_timeout - 0.5 - time.perf_counter()))
    cpu2, t2 = cpu_seconds(), time.perf_counter()
    give_up = t2 + cfg.idle_timeout + 30.0
    while counters.open > cfg.active and time.perf_counter() < give_up:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    cpu3, t3 = cpu_seconds(), time.perf_counter()
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
    ctx = multiprocessing.get_context("spawn")
    server_pipe, server_end = ctx.Pipe()
    client_pipe, client_end = ctx.Pipe()
    server = ctx.Process(target=server_main, args=(name, cfg, server_end), name=f"server-{name}")
    server.start()
    port = server_pipe.recv()
    client = ctx.Process(target=client_main, args=(port, cfg, client_end), name="clients")
    client.start()
    try:
        assert client_pipe.recv() == "connected"
        server_pipe.send("expect")
        assert server_pipe.recv() == "ready"
        client_pipe.send("sync")
        assert client_pipe.recv() == "synced"
        server_pipe.send("synced")
        result: Dict[str, Any] = server_pipe.recv()
        client_pipe.send("stop")
        server_pipe.send("stop")
    finally:
        for process in (client, server):
            process.join(60)
            if process.is_alive():
                process.kill()
    return result


COLUMNS: List[tuple] = [
    ("registry", "registry", str),
    ("steady CPU s/s", "steady_cpu", lambda v: f"{v:.3f}"),
    ("msgs/s", "messages_per_s", lambda v: f"{v:,.0f}"),
    ("steady worst lag ms", "steady_lag_ms", lambda v: f"{v:.1f}"),
    ("mass-expiry worst lag ms", "expiry_lag_ms", lambda v: f"{v:.1f}"),
    ("mass-expiry CPU s/s", "expiry_cpu", lambda v: f"{v:.3f}"),
    ("expiry span s", "expiry_span_s", lambda v: f"{v:.2f}"),
    ("expired", "expired", lambda v: f"{v:.0f}"),
    ("active left", "survivors", lambda v: f"{v:.0f}"),
    ("RSS MB", "rss_mb", lambda v: f"{v:.0f}"),
]


def table(results: List[Dict[str, Any]]) -> str:
    """The results as a markdown table."""
    rows = ["| " + " | ".join(title for title, _key, _fmt in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for result in results:
        rows.append("| " + " | ".join(fmt(result[key]) for _title, key, fmt in COLUMNS) + " |")
    return "\n".join(rows)


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
    print(table([median(results) for results in runs.values()]))


def median(results: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per field, the median over the rounds (text fields from the first)."""
    return {key: statistics.median(r[key] for r in results) if isinstance(value, (int, float)) else value
            for key, value in results[0].items()}


if __name__ == "__main__":
    main()
