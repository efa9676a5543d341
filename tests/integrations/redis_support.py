"""A real redis-server for the tests: started on 127.0.0.1, a free port and a temporary directory.

No persistence (``--save ""``, no AOF), so :meth:`RedisServer.restart` is a
restart that lost the data, as after a crash of an in-memory Redis. Never the
default port: a system Redis may be running there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Optional

HOST = "127.0.0.1"
#: Hang guard for the server to answer PING (a loaded machine may be slow).
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]  # type: ignore[no-any-return]


def redis_server_binary() -> str:
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server; .ci/run does it)")
    return binary


def ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; ``url`` for clients; kill and restart on the same port."""

    def __init__(self, directory: str, port: Optional[int] = None) -> None:
        self.directory = directory
        self.port = free_port() if port is None else port
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> "RedisServer":
        assert self.process is None
        self.process = subprocess.Popen(
            [redis_server_binary(), "--bind", HOST, "--port", str(self.port), "--dir", self.directory,
             "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes",
             "--logfile", os.path.join(self.directory, "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        give_up = time.monotonic() + START_TIMEOUT
        while not ping(self.port):
            if self.process.poll() is not None or time.monotonic() > give_up:
                log = open(os.path.join(self.directory, "redis.log")).read()[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
            time.sleep(0.01)
        return self

    def kill(self) -> None:
        """SIGKILL: the data in memory is lost."""
        process, self.process = self.process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    stop = kill

    def restart(self) -> None:
        self.kill()
        self.start()
