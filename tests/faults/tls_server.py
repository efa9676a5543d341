"""A TLS server for the descriptor-limit flood test, run in a child process.

``--mode echo``: a ConnectionManager serving an echo protocol with
``create_server(..., ssl=...)``. ``--mode websockets``:
``conntable.websockets.serve(..., ssl=...)`` with an echo handler. Either
way the manager runs the TLS handshakes, so every connection is counted from
its TCP accept. It prints ``tls server on HOST:PORT`` once listening, logs a
stats line (the echo example's format) every ``--stats-every`` seconds, and
shuts down on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
from typing import Any

from conntable.aio import ConnectionManager, ManagedProtocol

log = logging.getLogger("tls-server")


class Echo(ManagedProtocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def report(mgr: ConnectionManager) -> None:
    stats = mgr.stats()
    log.info(
        "active=%d peak=%d opened=%d rejected=%d tasks=%d fds=%s/%s breaker=%s",
        stats.active, stats.peak, stats.opened_total, stats.rejected_total, stats.tasks_active,
        stats.open_fds, stats.max_fds, "open" if stats.breaker_open else "closed",
    )


async def serve(args: argparse.Namespace) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.cert, args.key)
    if args.mode == "echo":
        mgr = ConnectionManager(idle_timeout=60.0, handshake_timeout=args.handshake_timeout, close_timeout=1.0)
        server: Any = await mgr.create_server(Echo, args.host, 0, ssl=context)
        stop_server = mgr.shutdown
    else:
        from conntable.websockets import serve as ws_serve

        async def echo(ws: Any) -> None:
            async for message in ws:
                await ws.send(message)

        server = await ws_serve(echo, args.host, 0, ssl=context, open_timeout=args.handshake_timeout,
                                close_timeout=1.0, ping_interval=None)
        mgr = server.manager

        async def stop_server() -> None:
            server.close()
            await server.wait_closed()

    host, port = server.sockets[0].getsockname()[:2]
    print(f"tls server on {host}:{port} ({args.loop}, {args.mode})", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def reporter() -> None:
        while True:
            report(mgr)
            await asyncio.sleep(args.stats_every)

    reporting = asyncio.ensure_future(reporter())
    await stop.wait()
    reporting.cancel()
    await stop_server()
    report(mgr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), required=True)
    parser.add_argument("--mode", choices=("echo", "websockets"), required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--handshake-timeout", type=float, default=1.0)
    parser.add_argument("--stats-every", type=float, default=0.1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
