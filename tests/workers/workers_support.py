"""Helpers for the worker tests: a server parent run as a real process, its log, and clients that learn pids.

Every time limit here is a hang guard, never an assertion.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Pattern, Tuple

HOST = "127.0.0.1"
APP = pathlib.Path(__file__).resolve().parent / "app.py"
#: Hang guard for one awaited line or condition.
HANG_GUARD = 60.0
#: Most connections opened while looking for every worker (a worker missed by this many is a failure).
MAX_TRIES = 300

SERVING = re.compile(r"serving on 127\.0\.0\.1:(\d+) with (\d+) workers \(pids ([\d, ]+)\)")
METRICS = re.compile(r"metrics of every worker on http://127\.0\.0\.1:(\d+)/metrics")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class ServerProcess:
    """``python app.py KIND ARGS`` (or another ``script``): the parent, its workers, and every line it logged."""

    def __init__(self, *args: str, env: Optional[Dict[str, str]] = None, script: pathlib.Path = APP) -> None:
        self.args = args
        self.lines: List[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0
        self.pids: List[int] = []
        self.every_pid: List[int] = []  # every worker pid seen, for the final check

    def _read(self) -> None:
        for line in self.process.stderr:  # type: ignore[union-attr]
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: "str | Pattern[str]", since: int = 0) -> "re.Match[str]":
        """The first line from index ``since`` on that matches ``pattern``; fail after the hang guard."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + HANG_GUARD
        with self._changed:
            while True:
                for line in self.lines[since:]:
                    match = regex.search(line)
                    if match:
                        return match
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"the server exited ({self.process.returncode}) and never logged "
                                         f"{regex.pattern!r}:\n{self.log_unlocked()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"never logged {regex.pattern!r}:\n{self.log_unlocked()}")
                self._changed.wait(min(left, 0.5))

    def log_unlocked(self) -> str:
        return "\n".join(self.lines)

    def started(self) -> "ServerProcess":
        match = self.wait_for(SERVING)
        self.port = int(match.group(1))
        self.pids = [int(pid) for pid in match.group(3).split(", ")]
        self.every_pid += self.pids
        return self

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.wait_for(METRICS).group(1)}/metrics"

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Signal the parent and wait for it to exit; its exit status."""
        self.send(signum)
        return self.wait()

    def wait(self) -> int:
        self.process.wait(HANG_GUARD)
        self._reader.join(HANG_GUARD)
        return self.process.returncode

    def restarted(self, index: int, since: int = 0) -> int:
        """Wait until worker ``index`` was restarted and serves again; its new pid."""
        pid = int(self.wait_for(rf"worker {index} restarted as pid (\d+)", since).group(1))
        self.wait_for(rf"worker {index} \(pid {pid}\) serving", since)
        self.every_pid.append(pid)
        return pid

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Whatever happened: the parent and every worker it started are gone."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(HANG_GUARD)
        for pid in self.every_pid:  # killed with the parent, or by us now
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.process.stderr.close()  # type: ignore[union-attr]

    def workers_gone(self) -> bool:
        """Whether every worker pid seen has exited (checked for a while: the parent reaps them)."""
        deadline = time.monotonic() + HANG_GUARD
        while any(alive(pid) for pid in self.every_pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


# -- clients -------------------------------------------------------------------------------


class TcpClient:
    """A connection to the ``tcp`` app: the pid of the worker that took it, and an echo."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=HANG_GUARD)
        self.file = self.sock.makefile("rb")
        line = self.file.readline()
        assert line.startswith(b"pid "), line
        self.pid = int(line.split()[1])

    def echo(self, data: bytes = b"ping\n") -> bytes:
        self.sock.sendall(data)
        return self.file.readline()

    def read_to_end(self) -> bytes:
        """What the server sends until it closes (a reset counts as a close)."""
        try:
            return self.file.read()
        except ConnectionResetError:
            return b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class WsClient:
    """A WebSocket connection to one of the ``ws`` apps: the pid of its worker, an echo, the close code."""

    def __init__(self, port: int) -> None:
        from websockets.sync.client import connect

        self.ws = connect(f"ws://{HOST}:{port}", open_timeout=HANG_GUARD, close_timeout=5, legacy=True)
        greeting = self.ws.recv(HANG_GUARD)
        assert greeting.startswith("pid "), greeting
        self.pid = int(greeting.split()[1])

    def echo(self, text: str = "ping") -> str:
        self.ws.send(text)
        return self.ws.recv(HANG_GUARD)

    def close_code(self) -> Optional[int]:
        """Read until the server closes; the code it sent (None: no close frame, the connection just ended)."""
        from websockets.exceptions import ConnectionClosed

        for _ in range(100):  # bounded: nothing is sent to these clients but the greeting and echoes
            try:
                self.ws.recv(HANG_GUARD)
            except ConnectionClosed:
                break
            except TimeoutError:
                raise AssertionError("the server never closed the connection") from None
        received = self.ws.protocol.close_rcvd
        return None if received is None else received.code

    def close(self) -> None:
        self.ws.close()


def cover_workers(connect: Callable[[int], "TcpClient | WsClient"], port: int, pids: List[int],
                  per_worker: int = 1) -> Dict[int, list]:
    """Open connections until every worker in ``pids`` holds ``per_worker``; the clients by pid.

    Connections that land on a worker that has enough already are kept too
    (they belong to that worker's count). Fails after ``MAX_TRIES``.
    """
    clients: Dict[int, list] = {pid: [] for pid in pids}
    for _ in range(MAX_TRIES):
        if all(len(clients[pid]) >= per_worker for pid in pids):
            return clients
        client = connect(port)
        assert client.pid in clients, f"pid {client.pid} answered; the workers are {pids}"
        clients[client.pid].append(client)
    raise AssertionError(f"{MAX_TRIES} connections and some worker never got {per_worker}: "
                         f"{ {pid: len(c) for pid, c in clients.items()} }")


def every_client(clients: Dict[int, list]) -> list:
    return [client for group in clients.values() for client in group]


def shutdown_lines(server: ServerProcess) -> Dict[int, Tuple[int, int, int, int]]:
    """Per worker pid, from its shutdown line: (closed gracefully, aborted, sockets before, sockets after)."""
    found = {}
    pattern = re.compile(r"worker \d+ pid (\d+) shut down: ([\d,]+) connections closed gracefully, ([\d,]+) aborted"
                         r".*; (\d+) sockets open before serving \(the listening one aside\), (\d+) after")
    for line in server.lines:
        match = pattern.search(line)
        if match:
            pid, closed, aborted, before, after = (int(g.replace(",", "")) for g in match.groups())
            found[pid] = (closed, aborted, before, after)
    return found
