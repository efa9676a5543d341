"""Helpers for the fault tests: loops, the echo example in a child process, blocking clients.

Time limits here are hang guards, never assertions.
"""

from __future__ import annotations

import pathlib
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from server_fixtures import run_on

HOST = "127.0.0.1"
#: Hang guard for one test, one child process, or one awaited condition.
HANG_GUARD = 30.0
EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "echo_server.py"
TLS_SERVER = pathlib.Path(__file__).resolve().parent / "tls_server.py"
LOOP_KINDS = ("asyncio", "uvloop")


def run(kind: str, coro: Any) -> Any:
    """Run ``coro`` on a fresh loop of ``kind`` under the hang guard."""
    return run_on(kind, coro, HANG_GUARD)


def wait_until(predicate: Callable[[], Any], what: str) -> Any:
    """Poll ``predicate`` (blocking) until it returns something true; fail after the hang guard."""
    give_up = time.monotonic() + HANG_GUARD
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > give_up:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def read_until_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (EOF) or resets the connection."""
    sock.settimeout(HANG_GUARD)
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(HANG_GUARD)
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


STATS_LINE = re.compile(
    r"active=(?P<active>\d+) peak=(?P<peak>\d+) opened=(?P<opened>\d+) rejected=(?P<rejected>\d+) "
    r"tasks=(?P<tasks>\d+) fds=(?P<fds>\d+)/(?P<max_fds>\d+) breaker=(?P<breaker>\w+)"
)


class EchoServer:
    """``examples/echo_server.py`` in a child process, with its log collected as it is written.

    ``fd_limit`` lowers the child's RLIMIT_NOFILE before it starts. Use as a
    context manager: the child is killed on the way out if it is still running.
    ``script`` and ``banner`` run another server of the same shape (it prints
    ``<banner> HOST:PORT ...`` once listening, and the same stats lines).
    """

    def __init__(self, loop_kind: str, *args: str, fd_limit: Optional[int] = None,
                 script: pathlib.Path = EXAMPLE, banner: str = "echo server on") -> None:
        def lower_fd_limit() -> None:
            if fd_limit is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        port_args = ["--port", "0"] if script == EXAMPLE else []
        self.process = subprocess.Popen(
            [sys.executable, str(script), "--host", HOST, *port_args, "--loop", loop_kind, *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=lower_fd_limit,
        )
        self.log: List[str] = []
        self._reader = threading.Thread(target=self._collect_log, daemon=True)
        self._reader.start()
        # readline() has no timeout: a watchdog kills a child that hangs before its banner.
        watchdog = threading.Timer(HANG_GUARD, self.process.kill)
        watchdog.start()
        try:
            self.banner = self.process.stdout.readline()  # type: ignore[union-attr]
        finally:
            watchdog.cancel()
        assert self.banner.startswith(f"{banner} {HOST}:"), self.banner + "".join(self.log)
        self.port = int(self.banner[len(banner):].split()[0].rsplit(":", 1)[1])

    def _collect_log(self) -> None:
        for line in self.process.stderr:  # type: ignore[union-attr]
            self.log.append(line)

    def __enter__(self) -> "EchoServer":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(HANG_GUARD)
        self._reader.join(HANG_GUARD)
        self.process.stdout.close()  # type: ignore[union-attr]
        self.process.stderr.close()  # type: ignore[union-attr]

    def connect(self, count: int) -> List[socket.socket]:
        return [socket.create_connection((HOST, self.port), timeout=HANG_GUARD) for _ in range(count)]

    def stats_lines(self) -> List[Dict[str, Any]]:
        """Every stats line logged so far, parsed (numbers as ints)."""
        found = []
        for line in list(self.log):
            match = STATS_LINE.search(line)
            if match:
                found.append({k: v if k == "breaker" else int(v) for k, v in match.groupdict().items()})
        return found

    def wait_for_stats(self, predicate: Callable[[Dict[str, Any]], bool], what: str) -> Dict[str, Any]:
        """The first stats line, from now on, for which ``predicate`` holds."""
        seen = len(self.stats_lines())

        def matching() -> Optional[Dict[str, Any]]:
            fresh = self.stats_lines()[seen:]
            return next((stats for stats in fresh if predicate(stats)), None)

        return wait_until(matching, what)  # type: ignore[no-any-return]

    def stop(self, signum: int) -> str:
        """Send ``signum``; return the rest of the child's stdout once it has exited.

        Its output is a few lines, far less than a pipe holds, so waiting
        before reading cannot block it.
        """
        self.process.send_signal(signum)
        self.process.wait(HANG_GUARD)
        self._reader.join(HANG_GUARD)
        return self.process.stdout.read()  # type: ignore[union-attr, no-any-return]
