"""What a user of each server gains: uvicorn, aiohttp and websockets, each plain and under conntable, in one run.

    python benchmarks/e2e_users.py --connections 5000

Six servers, each in a fresh process, with the same WebSocket echo and the
same keepalive (a ping every ``--ping-interval`` seconds, 20 s timeout); the
clients (real ``websockets`` clients, silent, answering pings) in another
process:

* ``uvicorn``: a plain ASGI app on uvicorn (``ws="auto"``: websockets-sansio
  on uvicorn 0.55), shut down as on SIGTERM (uvicorn closes every WebSocket
  with 1012, then the lifespan);
* ``uvicorn + conntable.asgi``: the same app in ``ConnectionMiddleware``;
  ``middleware.shutdown()`` (1001), then uvicorn stops. uvicorn's own pings
  stay (the middleware has none: the server owns the frames);
* ``aiohttp``: ``AppRunner`` + ``TCPSite``, ``WebSocketResponse(heartbeat=...)``
  (aiohttp's keepalive, a timer per connection) and the shutdown aiohttp's
  documentation gives (a ``WeakSet`` of WebSockets closed with 1001 in
  ``on_shutdown``), then ``runner.cleanup()``;
* ``aiohttp + conntable.aiohttp``: ``conntable.aiohttp.serve`` (one heartbeat
  for all), ``server.close()``;
* ``websockets``: ``websockets.asyncio.server.serve`` (a keepalive task per
  connection), ``server.close()`` + ``wait_closed()``;
* ``websockets + conntable``: ``conntable.websockets.serve``, the same calls.

Timeline per server: all ``--connections`` open; the server counts its tasks,
its timer handles (asyncio's loop only) and its RSS against what it had before
the first connection; everybody stays quiet for ``--quiet`` seconds while the
server measures its CPU (pings included); then the server shuts down, timed
from the call until it returned and until the last client saw its close, and
the clients report the close codes they got. Checked, not just measured:
every connection opened, every client closed (the run fails otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import time
import weakref
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from harness import HOST, Children, ask, cpu_seconds, markdown, median, raise_fd_limit, receive, rss_bytes
from wsclients import connect_all

SERVERS = ("uvicorn", "uvicorn+conntable", "aiohttp", "aiohttp+conntable", "websockets", "websockets+conntable")
LABELS = {
    "uvicorn": "uvicorn", "uvicorn+conntable": "uvicorn + conntable.asgi",
    "aiohttp": "aiohttp", "aiohttp+conntable": "aiohttp + conntable.aiohttp",
    "websockets": "websockets", "websockets+conntable": "websockets + conntable",
}
#: conntable's idle timeout here: long enough never to fire, so that every connection is on the wheel, as in use.
IDLE_TIMEOUT = 3600.0
PING_TIMEOUT = 20.0
SHUTDOWN_BOUND = 300.0


@dataclass
class Config:
    connections: int = 5000
    quiet: float = 10.0
    ping_interval: float = 5.0
    warmup: float = 1.0
    loop: str = "asyncio"
    compression: bool = True


class Counters:
    def __init__(self) -> None:
        self.open = 0


# -- the servers -------------------------------------------------------------------------------


def echo_asgi(counters: Counters) -> Any:
    """A plain ASGI WebSocket echo (lifespans: none of its own; the middleware answers them when it is there)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        counters.open += 1
        try:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
        finally:
            counters.open -= 1

    return app


class Uvicorn:
    def __init__(self, cfg: Config, counters: Counters, conntable: bool) -> None:
        import uvicorn

        from conntable.asgi import ConnectionMiddleware

        app = echo_asgi(counters)
        self.middleware = ConnectionMiddleware(app, idle_timeout=IDLE_TIMEOUT, shutdown_grace=60.0) if conntable else None
        config = uvicorn.Config(self.middleware or app, host=HOST, port=0, ws="auto",
                                lifespan="on" if conntable else "off", log_level="warning", access_log=False,
                                ws_ping_interval=cfg.ping_interval, ws_ping_timeout=PING_TIMEOUT,
                                ws_per_message_deflate=cfg.compression, backlog=4096)
        self.server = uvicorn.Server(config)
        self.task: Optional["asyncio.Task[None]"] = None

    async def start(self) -> int:
        self.task = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.05)
        return self.server.servers[0].sockets[0].getsockname()[1]  # type: ignore[no-any-return]

    async def shutdown(self) -> None:
        if self.middleware is not None:
            await self.middleware.shutdown()
        self.server.should_exit = True  # what uvicorn's SIGTERM handler does
        assert self.task is not None
        await self.task


def aiohttp_app(cfg: Config, counters: Counters, heartbeat: Optional[float]) -> Any:
    import aiohttp
    from aiohttp import web

    websockets_key = web.AppKey("websockets", weakref.WeakSet)

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=heartbeat, compress=cfg.compression)
        await ws.prepare(request)
        request.app[websockets_key].add(ws)
        counters.open += 1
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await ws.send_str(message.data)
        finally:
            counters.open -= 1
            request.app[websockets_key].discard(ws)
        return ws

    app = web.Application()
    app[websockets_key] = weakref.WeakSet()
    app.router.add_get("/", echo)
    if heartbeat is not None:  # plain aiohttp: the graceful shutdown of aiohttp's documentation
        async def on_shutdown(app: web.Application) -> None:
            for ws in set(app[websockets_key]):
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"Server shutdown")

        app.on_shutdown.append(on_shutdown)
    return app


class Aiohttp:
    def __init__(self, cfg: Config, counters: Counters, conntable: bool) -> None:
        self.cfg, self.counters, self.conntable = cfg, counters, conntable
        self.runner: Any = None
        self.server: Any = None

    async def start(self) -> int:
        from aiohttp import web

        if self.conntable:
            import conntable.aiohttp

            app = aiohttp_app(self.cfg, self.counters, heartbeat=None)  # the server's one heartbeat pings
            self.server = await conntable.aiohttp.serve(app, HOST, 0, idle_timeout=IDLE_TIMEOUT, backlog=4096,
                                                        ping_interval=self.cfg.ping_interval, ping_timeout=PING_TIMEOUT)
            return self.server.sockets[0].getsockname()[1]  # type: ignore[no-any-return]
        app = aiohttp_app(self.cfg, self.counters, heartbeat=self.cfg.ping_interval)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, HOST, 0, backlog=4096).start()
        return self.runner.addresses[0][1]  # type: ignore[no-any-return]

    async def shutdown(self) -> None:
        if self.conntable:
            await self.server.close(grace=60.0)
        else:
            await self.runner.cleanup()


class Websockets:
    def __init__(self, cfg: Config, counters: Counters, conntable: bool) -> None:
        self.cfg, self.counters, self.conntable = cfg, counters, conntable
        self.server: Any = None

    async def start(self) -> int:
        from websockets.exceptions import ConnectionClosed

        counters = self.counters

        async def echo(ws: Any) -> None:
            counters.open += 1
            try:
                async for message in ws:
                    await ws.send(message)
            except ConnectionClosed:
                pass
            finally:
                counters.open -= 1

        options: Dict[str, Any] = dict(ping_interval=self.cfg.ping_interval, ping_timeout=PING_TIMEOUT, backlog=4096,
                                       compression="deflate" if self.cfg.compression else None)
        if self.conntable:
            from conntable.websockets import serve

            self.server = await serve(echo, HOST, 0, idle_timeout=IDLE_TIMEOUT, **options)
        else:
            from websockets.asyncio.server import serve as plain_serve

            self.server = await plain_serve(echo, HOST, 0, **options)
        return self.server.sockets[0].getsockname()[1]  # type: ignore[no-any-return]

    async def shutdown(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def make_server(name: str, cfg: Config, counters: Counters) -> Any:
    kind, _, wrapped = name.partition("+")
    return {"uvicorn": Uvicorn, "aiohttp": Aiohttp, "websockets": Websockets}[kind](cfg, counters, bool(wrapped))


def timers() -> Optional[int]:
    """Live timer handles on the loop: asyncio's loop keeps them in a heap (uvloop does not show them).

    Cancelled handles stay in the heap until asyncio purges them: not counted.
    """
    scheduled = getattr(asyncio.get_running_loop(), "_scheduled", None)
    return None if scheduled is None else sum(1 for handle in scheduled if not handle.cancelled())


async def until(predicate: Any, give_up: float) -> bool:
    deadline = time.monotonic() + give_up
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def serve(name: str, cfg: Config, results: Any, clients: Any) -> None:
    """The server's side of one run; ``clients`` is a pipe to the client process, ``results`` to the parent."""
    counters = Counters()
    server = make_server(name, cfg, counters)
    port = await server.start()
    await asyncio.sleep(cfg.warmup)
    gc.collect()
    tasks0, timers0, rss0 = len(asyncio.all_tasks()), timers(), rss_bytes()
    clients.send(port)
    opened = await receive(clients)
    if opened != cfg.connections or not await until(lambda: counters.open >= cfg.connections, 60.0):
        raise AssertionError(f"{name}: {opened} clients connected, the server holds {counters.open}")
    await asyncio.sleep(cfg.warmup)
    gc.collect()
    tasks1, timers1, rss1 = len(asyncio.all_tasks()), timers(), rss_bytes()
    cpu0, t0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(cfg.quiet)
    idle_cpu = (cpu_seconds() - cpu0) / (time.monotonic() - t0)
    clients.send("shutdown")
    started = time.monotonic()
    await asyncio.wait_for(server.shutdown(), SHUTDOWN_BOUND)
    returned = time.monotonic()
    seen = await receive(clients)
    results.send({
        "server": LABELS[name],
        "tasks_per_conn": (tasks1 - tasks0) / cfg.connections,
        "timers_per_conn": None if timers0 is None or timers1 is None else (timers1 - timers0) / cfg.connections,
        "kib_per_conn": (rss1 - rss0) / cfg.connections / 1024,
        "idle_cpu": idle_cpu,
        "shutdown_s": returned - started,
        "last_close_s": seen["last_closed"] - started,
        "codes": seen["codes"],
    })


def server_main(name: str, cfg: Config, results: Any, clients: Any) -> None:
    import logging

    for noisy in ("websockets", "aiohttp", "uvicorn", "conntable"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    raise_fd_limit()
    run(serve(name, cfg, results, clients), cfg.loop)


# -- the clients ----------------------------------------------------------------------------------


async def drive(cfg: Config, server: Any) -> None:
    """Open every connection, stay quiet, and once the server shuts down, note how and when each closed."""
    uri = f"ws://{HOST}:{await receive(server)}/"
    clients, failures = await connect_all(uri, cfg.connections, compression="deflate" if cfg.compression else None)
    server.send(len(clients))
    if failures:
        raise failures[0]
    closed_at: List[float] = []

    async def watch(client: Any) -> None:
        await client.wait_closed()
        closed_at.append(time.monotonic())

    watchers = [asyncio.ensure_future(watch(client)) for client in clients]
    assert await receive(server) == "shutdown"
    done, pending = await asyncio.wait(watchers, timeout=SHUTDOWN_BOUND)
    for client in clients:
        client.transport.abort()
    if pending:
        raise AssertionError(f"{len(pending)} clients were never closed by the server")
    codes = collections.Counter(None if c.protocol.close_rcvd is None else c.protocol.close_rcvd.code for c in clients)
    server.send({"codes": dict(codes), "last_closed": max(closed_at)})


def client_main(cfg: Config, server: Any) -> None:
    raise_fd_limit()
    run(drive(cfg, server), cfg.loop)


def run(coro: Any, loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.run(coro)
    else:
        asyncio.run(coro)


# -- orchestration --------------------------------------------------------------------------------


def measure(name: str, cfg: Config) -> Dict[str, Any]:
    with Children(grace=60) as children:
        results, results_end = children.pipe(duplex=False)
        server_end, client_end = children.pipe()
        children.start(server_main, name, cfg, results_end, server_end, name=f"server-{name}")
        children.start(client_main, cfg, client_end, name="clients")
        return ask(results, 600 + 3 * cfg.quiet + SHUTDOWN_BOUND, f"the {name} server")  # type: ignore[no-any-return]


def codes_text(codes: Dict[Optional[int], int]) -> str:
    return ", ".join(f"{'none' if code is None else code} ×{count}" for code, count in sorted(
        codes.items(), key=lambda item: -item[1]))


COLUMNS: Dict[str, Tuple[str, str]] = {
    "server": ("server", "{}"),
    "tasks_per_conn": ("tasks/conn", "{:.2f}"),
    "timers": ("timer handles/conn", "{}"),
    "kib_per_conn": ("KiB/conn", "{:.1f}"),
    "idle_cpu": ("CPU s/s, all idle", "{:.4f}"),
    "shutdown_s": ("shutdown s", "{:.2f}"),
    "last_close_s": ("last client closed, s", "{:.2f}"),
    "codes_text": ("close codes received", "{}"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=5000, help="idle WebSocket connections per server")
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds of CPU measured while all are idle")
    parser.add_argument("--ping-interval", type=float, default=5.0, help="every server's ping interval")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="asyncio (the default) shows the timer handles; uvloop does not")
    parser.add_argument("--no-compression", action="store_true", help="clients do not offer permessage-deflate")
    parser.add_argument("--server", action="append", choices=SERVERS, help="measure only these (repeatable)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, interleaved; the table shows medians")
    args = parser.parse_args()
    cfg = Config(connections=args.connections, quiet=args.quiet, ping_interval=args.ping_interval, loop=args.loop,
                 compression=not args.no_compression)
    names = args.server or list(SERVERS)
    print(f"{cfg.connections} idle WebSocket connections per server, ping every {cfg.ping_interval:g} s, "
          f"compression {'offered' if cfg.compression else 'off'}, {cfg.loop} loop, server and clients in "
          f"separate processes; median of {args.repeat}", flush=True)
    # Rounds interleave the servers, so that drift on a shared machine hits all alike.
    rounds = [[measure(name, cfg) for name in names] for _ in range(args.repeat)]
    rows = []
    for runs in zip(*rounds):
        row = median([{k: v for k, v in r.items() if k not in ("codes", "timers_per_conn")} for r in runs])
        timer_counts = [r["timers_per_conn"] for r in runs]
        row["timers"] = "-" if None in timer_counts else f"{sorted(timer_counts)[len(timer_counts) // 2]:.2f}"
        row["codes_text"] = codes_text(runs[0]["codes"])
        rows.append(row)
    print(markdown(rows, COLUMNS))


if __name__ == "__main__":
    main()
