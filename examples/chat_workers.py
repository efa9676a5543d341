"""The chat room of ``chat_server.py`` on N worker processes sharing one port, in one command.

    python examples/chat_workers.py --workers 4 --port 8765
    python -m websockets ws://127.0.0.1:8765      # in two or more other terminals: type lines
    kill -USR1 <the parent's pid>                 # one stats line per worker (also every --stats-every s)

What it shows: ``conntable.workers.run`` starting N workers on one port
(SO_REUSEPORT on Linux), each running ``chat_server``'s room with
``conntable.websockets.serve`` on its socket and its own ``ConnectionManager``;
``max_connections`` for the whole server, split over the workers; a worker
that dies is restarted; SIGINT or SIGTERM to the parent closes every client
on every worker with 1001 and exits 0. Every line carries the worker that
said it (``[w2] #5: hello``).

One room across processes: each worker binds a Unix datagram socket in a
directory they share and relays what its room says to the others, which
repeat it to their own clients. That works on one machine; across machines,
use a publish/subscribe system such as Redis, as websockets' FAQ advises.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import socket
import sys
import tempfile
from typing import Callable, Optional

from chat_server import ChatRoom, add_arguments

from conntable import workers
from conntable.websockets import serve

log = logging.getLogger("chat")


class Relay:
    """Datagrams between the workers on this machine: one Unix socket per worker, in a shared directory."""

    def __init__(self, directory: str, hear: Callable[[str], None]) -> None:
        self.directory = directory
        self.name = f"worker-{os.getpid()}.sock"
        self.hear = hear
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(os.path.join(directory, self.name))
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._receive)

    def send(self, text: str) -> None:
        data = text.encode()
        for name in os.listdir(self.directory):
            if name == self.name or not name.endswith(".sock"):
                continue
            path = os.path.join(self.directory, name)
            try:
                self.sock.sendto(data, path)
            except (ConnectionRefusedError, FileNotFoundError):  # a worker that died: its socket is stale
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            except OSError as exc:  # too long, or that worker's queue is full: it misses this line
                log.warning("relay to %s failed: %s", name, exc)

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            self.hear(data.decode())

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, self.name))


class WorkerRoom(ChatRoom):
    """``chat_server``'s room, on one worker: what it says goes to every worker's clients."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.relay: Optional[Relay] = None

    def say(self, text: str) -> None:
        text = f"[{self.tag}] {text}"
        super().say(text)
        if self.relay is not None:
            self.relay.send(text)

    def hear(self, text: str) -> None:
        """A line another worker's room said: for our clients only."""
        ChatRoom.say(self, text)


async def serve_chat(args: argparse.Namespace, worker: workers.Worker) -> None:
    """Each worker's ``main``: the room, on this worker's socket and manager, until told to stop."""
    if args.verbose:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    room = WorkerRoom(f"w{worker.index}")
    room.relay = Relay(args.relay_dir, room.hear)
    try:
        async with serve(room.handler, sock=worker.socket, manager=worker.manager,
                         ping_interval=args.ping_interval, ping_timeout=args.ping_timeout) as server:
            room.server = server
            await worker.serve_forever()
    finally:
        room.relay.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)  # chat_server's; --max-connections is for the whole server, --stats-every for all workers
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per CPU)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve every worker's metrics on 127.0.0.1:PORT/metrics (prometheus extra)")
    return parser.parse_args()


def main() -> int:
    args = parse_args()  # run() logs the workers' comings and goings to stderr
    with tempfile.TemporaryDirectory(prefix="chat-relay-") as relay_dir:
        args.relay_dir = relay_dir
        return workers.run(
            functools.partial(serve_chat, args), workers=args.workers, host=args.host, port=args.port,
            max_connections=args.max_connections, grace=args.close_timeout, loop=args.loop,
            manager_options={"idle_timeout": args.idle_timeout, "close_timeout": args.close_timeout},
            metrics_port=args.metrics_port, stats_interval=args.stats_every,
        )


if __name__ == "__main__":
    sys.exit(main())
