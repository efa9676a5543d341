"""A WebSocket chat room served by conntable.websockets: every message goes to everyone.

    python examples/chat_server.py --port 8765
    python -m websockets ws://127.0.0.1:8765      # in two or more other terminals: type lines

What it shows: ``conntable.websockets.serve`` used exactly like websockets'
``serve``; ``broadcast`` to ``server.connections``; a cleanup per connection
that tells the room who left and why (``peer``, ``idle``, ``shutdown``, ...);
an idle timeout, one heartbeat for all connections and a connection limit
answered with HTTP 503; a stats line on stderr every ``--stats-every``
seconds; and on SIGINT or SIGTERM a graceful shutdown (close code 1001 to
everyone, abort after the close timeout) that prints its summary, with every
connection refused since the start. ``--verbose`` logs every message too.

Needs the ``websockets`` extra (and ``uvloop`` for the default loop):
``pip install 'conntable[websockets,uvloop]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from conntable.aio import CloseReason
from conntable.websockets import Server, ServerConnection, serve  # says which extra is missing

from websockets.asyncio.server import broadcast  # noqa: E402  (websockets is there by now)

log = logging.getLogger("chat")


class ChatRoom:
    """The room: greets, relays and says goodbye."""

    def __init__(self) -> None:
        self.server: Server  # set once serving

    async def handler(self, ws: ServerConnection) -> None:
        name = f"#{ws.connection.id}"
        ws.add_cleanup(lambda reason: self.left(name, reason))
        await ws.send(f"welcome {name}: {len(self.server.connections)} here; type to talk")
        self.say(f"{name} joined")
        async for message in ws:  # ends when the connection closes, for whatever reason
            self.say(f"{name}: {message}")

    def left(self, name: str, reason: CloseReason) -> None:
        self.say(f"{name} left ({reason})")

    def say(self, text: str) -> None:
        log.debug("%s", text)
        broadcast(self.server.connections, text)


async def report(server: Server, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        stats = server.stats()
        log.info("online=%d peak=%d opened=%d rejected=%d fds=%s/%s breaker=%s",
                 stats.active, stats.peak, stats.opened_total, stats.rejected_total,
                 stats.open_fds, stats.max_fds, "open" if stats.breaker_open else "closed")


async def main(args: argparse.Namespace) -> None:
    room = ChatRoom()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(
        room.handler, args.host, args.port,
        idle_timeout=args.idle_timeout,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        max_connections=args.max_connections,
        close_timeout=args.close_timeout,
    ) as server:
        room.server = server
        host, port = server.sockets[0].getsockname()[:2]
        print(f"chat server on ws://{host}:{port}", flush=True)
        reporter = asyncio.ensure_future(report(server, args.stats_every))
        await stop.wait()
        reporter.cancel()
        print("shutting down", flush=True)
    summary = server.shutdown_summary
    refused = server.stats().rejected_total  # since the start; summary.rejected: during the shutdown
    print(f"shutdown: {summary.closed_gracefully} closed gracefully, {summary.aborted} aborted, "
          f"{refused} refused ({summary.rejected} during the shutdown)", flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The room's options (``chat_workers.py`` takes them too)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0: any free port (printed)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--idle-timeout", type=float, default=300.0,
                        help="close a connection whose peer sent nothing, not even a pong, for this long")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    parser.add_argument("--max-connections", type=int, default=None,
                        help="answer HTTP 503 beyond this many (default: from the file-descriptor limit)")
    parser.add_argument("--close-timeout", type=float, default=5.0)
    parser.add_argument("--stats-every", type=float, default=10.0, help="seconds between stats lines")
    parser.add_argument("--verbose", action="store_true", help="log every message as well")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    logging.basicConfig(level=logging.DEBUG if arguments.verbose else logging.INFO,
                        format="%(asctime)s %(message)s")
    if arguments.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise SystemExit("uvloop is not installed: pip install 'conntable[uvloop]', "
                             "or pass --loop asyncio") from None
        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
