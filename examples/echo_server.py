"""A TCP echo server on uvloop whose connections are managed by conntable.aio.

    python examples/echo_server.py --port 8888
    nc 127.0.0.1 8888        # type lines: they come back
    python -c "import socket; s = socket.create_connection(('127.0.0.1', 8888)); s.sendall(b'hi\\n'); print(s.recv(100))"

What it shows: idle, handshake and lifetime timeouts; a per-connection task
(the echo itself) that is cancelled when the connection ends; a cleanup
callback that logs why each connection ended; the circuit breaker answering
refused connections; a stats line every few seconds (and Prometheus metrics
with ``--metrics-port`` if prometheus_client is installed); and a graceful
shutdown on SIGINT or SIGTERM that prints its summary.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Optional

from conntable.aio import CloseReason, ConnectionManager, ManagedProtocol

log = logging.getLogger("echo")


class Echo(ManagedProtocol):
    """Queues what it receives; a task of its own writes it back.

    The task stands for real per-connection work (a request handler): the
    manager cancels it when the connection ends, however it ends.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.spawn(self.echo(), name=f"echo-{self.connection.id}")
        self.add_cleanup(self.ended)
        log.debug("connection %d from %s", self.connection.id, self.connection.peer)

    def data_received(self, data: bytes) -> None:
        self.received.put_nowait(data)

    def eof_received(self) -> bool:
        self.received.put_nowait(b"")  # finish echoing, then close
        return True

    # Backpressure: a peer that does not read stops being read.
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    async def echo(self) -> None:
        while data := await self.received.get():
            self.transport.write(data)
        self.transport.close()

    def close_requested(self, transport: asyncio.BaseTransport, reason: CloseReason) -> None:
        transport.write(f"closing: {reason}\n".encode())  # type: ignore[attr-defined]
        transport.close()

    def connection_rejected(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"busy, try again later\n")  # type: ignore[attr-defined]
        transport.close()

    def ended(self, reason: CloseReason) -> None:
        log.debug("connection %d ended: %s", self.connection.id, reason)


async def report(mgr: ConnectionManager, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        stats = mgr.stats()
        log.info(
            "active=%d peak=%d opened=%d rejected=%d tasks=%d fds=%s/%s breaker=%s",
            stats.active, stats.peak, stats.opened_total, stats.rejected_total,
            stats.tasks_active, stats.open_fds, stats.max_fds, "open" if stats.breaker_open else "closed",
        )


def expose_metrics(mgr: ConnectionManager, port: int) -> None:
    from conntable.aio import PrometheusCollector  # says which extra is missing

    from prometheus_client import start_http_server

    PrometheusCollector(mgr)
    start_http_server(port, addr="127.0.0.1")
    log.info("metrics on http://127.0.0.1:%d/metrics", port)


async def serve(args: argparse.Namespace) -> None:
    mgr = ConnectionManager(
        idle_timeout=args.idle_timeout,
        handshake_timeout=args.handshake_timeout,
        max_lifetime=args.max_lifetime,
        max_connections=args.max_connections,
    )
    # The loop's default backlog (100): asyncio's loop accepts up to that many connections at a
    # time before the manager sees them, so the manager keeps twice as many descriptors free.
    server = await mgr.create_server(Echo, args.host, args.port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"echo server on {host}:{port} ({args.loop}); Ctrl-C to stop", flush=True)
    if args.metrics_port:
        expose_metrics(mgr, args.metrics_port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reporter = asyncio.ensure_future(report(mgr, args.stats_every))
    await stop.wait()

    reporter.cancel()
    print("shutting down...", flush=True)
    summary = await mgr.shutdown(grace=args.grace)
    print(
        f"shutdown: {summary.closed_gracefully} closed gracefully, {summary.aborted} aborted, "
        f"{summary.tasks_cancelled} tasks cancelled",
        flush=True,
    )


def optional_seconds(text: str) -> Optional[float]:
    return None if text.lower() in ("none", "0", "") else float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888, help="0 picks a free port")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--idle-timeout", type=optional_seconds, default=60.0)
    parser.add_argument("--handshake-timeout", type=optional_seconds, default=10.0)
    parser.add_argument("--max-lifetime", type=optional_seconds, default=None)
    parser.add_argument("--max-connections", type=int, default=None)
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to wait on shutdown")
    parser.add_argument("--stats-every", type=float, default=10.0)
    parser.add_argument("--metrics-port", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    args = parser.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s")
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            parser.exit(2, "uvloop is not installed: pip install 'conntable[uvloop]', or pass --loop asyncio\n")
        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
