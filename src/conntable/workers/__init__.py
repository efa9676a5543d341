"""conntable.workers: one server on N worker processes sharing a port, each with its own ConnectionManager.

::

    import sys
    from conntable import workers
    from conntable.websockets import serve

    async def main(worker: workers.Worker) -> None:
        async with serve(handler, sock=worker.socket, manager=worker.manager):
            await worker.serve_forever()      # returns after the graceful shutdown

    if __name__ == "__main__":
        sys.exit(workers.run(main, workers=4, port=8765, max_connections=40_000,
                             manager_options={"idle_timeout": 300.0}, metrics_port=9100))

How it is shaped, and why:

* **One function per worker.** ``main(worker)`` is an async function that
  runs in each worker process: it starts its server(s) on ``worker.socket``
  (already bound and listening) with ``worker.manager`` (the worker's
  :class:`~conntable.aio.ConnectionManager`), then either returns (optionally
  the servers, which are closed at the end) or awaits
  :meth:`Worker.serve_forever`. The same seam serves
  ``manager.create_server(P, sock=worker.socket)``,
  ``conntable.websockets.serve(..., sock=worker.socket, manager=worker.manager)``
  and anything else that takes a listening socket and a manager.
* **One port.** On Linux each worker binds its own socket with
  ``SO_REUSEPORT``: the kernel spreads connections over the workers, with no
  accept contention (websockets' deployment guide, ``reuse_port=True``).
  Elsewhere the parent listens once and every worker inherits that socket.
  ``reuse_port=False`` asks for the inherited socket on Linux too.
* **Spawned, not forked.** Workers start with multiprocessing's ``spawn``:
  each is a fresh interpreter that imports ``main``'s module, so nothing of
  the parent (threads, an event loop, uvloop's state, locks held at fork
  time) leaks into it, and a worker restarted after the metrics thread is
  running is as clean as the first. The cost is an import per start (a few
  hundred ms) and the rules of ``spawn``: ``main`` (and
  ``manager_options``) must be picklable, which means defined at the top
  level of a module, and the script must call ``run`` under ``if __name__ ==
  "__main__":``. The parent itself never creates an event loop.
* **Graceful stop.** SIGTERM or SIGINT to the parent is forwarded to every
  worker, which calls ``manager.shutdown(grace)`` (stop accepting, ask every
  connection to close, 1001 on WebSockets, abort what is left after
  ``grace``); :meth:`Worker.serve_forever` then returns, ``main`` gets
  ``grace`` again (at least ``close_timeout``) to return, time for servers
  the manager does not hold to close their own connections (a ``main`` that
  never called it, one awaiting websockets' own ``serve_forever`` say, is
  cancelled at once instead), and the servers it returned are closed. The
  parent returns 0 when every worker did all of that cleanly; else 1,
  logging which did not and why. A worker still running ``kill_timeout``
  seconds after the signal (default ``2 * grace + 6 * close_timeout + 5``,
  the sum of those bounds) is killed and counted as a failure. SIGTERM or
  SIGINT to one worker only recycles it: it stops gracefully and is
  restarted. Each worker's shutdown line says how many sockets it had open
  before serving and after its shutdown (the listening one aside): a
  connection left behind would show there.
* **Restarts.** A worker that dies is restarted in the same slot (same
  ``index``, same share of ``max_connections``) after an exponential backoff:
  ``restart_backoff`` seconds, doubled at each consecutive failure, at most
  ``restart_backoff_max``, and back to the start once a worker has served
  ``healthy_after`` seconds. Each death and restart is logged with the pids.
  A worker that dies before it ever served stops the whole server (exit 1):
  a configuration that cannot start would otherwise be restarted for ever.
  The other workers and their connections are not touched.
* **Limits.** ``max_connections`` is the whole server's: each worker gets
  ``max_connections // workers``, and the first ``max_connections %
  workers`` workers (by index) one more (:func:`split_limit`). Without it,
  each worker's breaker derives its own limit from its descriptor limit.
  Every other manager argument goes in ``manager_options`` and applies to
  every worker.
* **Metrics.** With ``metrics_port``, the parent serves every worker's
  ``ResourceStats`` on one endpoint (``metrics_host``, 127.0.0.1 by
  default) through prometheus_client's multiprocess mode (see ``_metrics``
  for the documented mechanism and :data:`GAUGE_MODES` for how each gauge
  is aggregated), plus ``conntable_workers`` and
  ``conntable_worker_restarts_total``. Workers copy their stats into it every
  ``metrics_interval`` seconds. Metrics your own code defines in the workers
  with prometheus_client are aggregated on the same endpoint.
* **Summary lines.** SIGUSR1 to the parent (or every ``stats_interval``
  seconds) logs one line per worker, naming its pid, and one for the total.

Logging goes to the ``conntable.workers`` logger; if the program configured
none, ``run`` prints INFO and above to stderr. POSIX only.
"""

import sys

if sys.platform == "win32":  # the stop is a forwarded SIGTERM, the summary a SIGUSR1
    raise ImportError("conntable.workers needs POSIX signals (Linux, macOS, the BSDs)")

from ._metrics import GAUGE_MODES  # noqa: E402
from ._supervisor import run, split_limit  # noqa: E402
from ._worker import Worker  # noqa: E402

__all__ = ("run", "Worker", "split_limit", "GAUGE_MODES")
