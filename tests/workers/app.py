"""The servers the worker tests run: ``python app.py KIND [run() options]``, one parent and its workers.

Every kind names the worker's pid to each client first, so that the tests
can tell which worker holds which connection:

* ``tcp``: ``manager.create_server`` with a plain protocol that sends
  ``pid <pid>\\n`` and echoes lines; ``main`` returns at once.
* ``ws``: ``conntable.websockets.serve`` in an ``async with``, awaiting
  ``worker.serve_forever()``; the handler sends ``pid <pid>`` and echoes.
* ``ws-returned``: the same server, returned by ``main``.
* ``ws-forever``: the same server awaiting websockets' own ``serve_forever``
  (cancelled after the shutdown).
* ``crash-at-start``: ``main`` raises before serving.
* ``crash-while-serving``: a ``tcp`` worker 1 that exits (code 3) ``--crash-after``
  seconds after it started serving, every time it is started (worker 0 serves on).
* ``slow-to-return``: a ``tcp`` worker whose ``main`` awaits something else after ``serve_forever``.
* ``hang-at-stop``: a ``tcp`` worker whose loop blocks once told to stop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

from conntable import workers
from conntable.aio import ManagedProtocol


class PidEcho(ManagedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        transport.write(b"pid %d\n" % os.getpid())

    def data_received(self, data):
        self.transport.write(data)


async def tcp(worker: workers.Worker):
    await worker.manager.create_server(PidEcho, sock=worker.socket)


async def pid_echo(ws):
    await ws.send(f"pid {os.getpid()}")
    async for message in ws:
        await ws.send(message)


def ws_server(worker: workers.Worker):
    from conntable.websockets import serve

    return serve(pid_echo, sock=worker.socket, manager=worker.manager, ping_interval=None)


async def ws(worker: workers.Worker):
    async with ws_server(worker):
        await worker.serve_forever()


async def ws_returned(worker: workers.Worker):
    return await ws_server(worker)


async def ws_forever(worker: workers.Worker):
    async with ws_server(worker) as server:
        await server.serve_forever()


async def crash_at_start(worker: workers.Worker):
    raise RuntimeError("this worker cannot start")


async def crash_while_serving(worker: workers.Worker):
    await tcp(worker)
    if worker.index == 1:
        def crash():
            if not worker.stopping:
                os._exit(3)

        asyncio.get_running_loop().call_later(CRASH_AFTER, crash)


async def slow_to_return(worker: workers.Worker):
    await tcp(worker)
    await worker.serve_forever()
    await asyncio.sleep(3600)  # never returns: the worker must cancel it and call the stop a failure


async def hang_at_stop(worker: workers.Worker):
    await tcp(worker)
    await worker.serve_forever()
    time.sleep(3600)  # blocks the loop: the parent's kill deadline must end it


MAINS = {"tcp": tcp, "ws": ws, "ws-returned": ws_returned, "ws-forever": ws_forever,
         "crash-at-start": crash_at_start, "crash-while-serving": crash_while_serving,
         "slow-to-return": slow_to_return, "hang-at-stop": hang_at_stop}
#: For crash-while-serving: spawned workers import this module, so the setting travels in the environment.
CRASH_AFTER = float(os.environ.get("APP_CRASH_AFTER", "0.05"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=sorted(MAINS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-connections", type=int)
    parser.add_argument("--reuse-port", choices=("yes", "no"), default="yes")
    parser.add_argument("--loop", default="auto")
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--metrics", action="store_true", help="serve metrics on a free port")
    parser.add_argument("--kill-timeout", type=float)
    parser.add_argument("--backoff", type=float, default=0.05)
    parser.add_argument("--healthy-after", type=float, default=60.0)
    args = parser.parse_args()
    return workers.run(
        MAINS[args.kind], workers=args.workers, host="127.0.0.1", port=0, max_connections=args.max_connections,
        reuse_port=args.reuse_port == "yes", loop=args.loop, grace=args.grace,
        manager_options={"idle_timeout": 300.0, "close_timeout": 2.0},
        metrics_port=0 if args.metrics else None, metrics_interval=0.1,
        restart_backoff=args.backoff, restart_backoff_max=1.0, healthy_after=args.healthy_after,
        kill_timeout=args.kill_timeout,
    )


if __name__ == "__main__":
    sys.exit(main())
