"""examples/chat_server.py runs, relays messages to everyone, and shuts down with 1001 on SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import pathlib
import signal
import subprocess
import sys
import threading
from typing import Iterator

import pytest
from aio_support import HOST
from websockets.sync.client import ClientConnection, connect

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "chat_server.py"
HANG_GUARD = 30.0


class Example:
    """A running example: its process, the first line it printed, and (once it exited) the rest."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.banner = process.stdout.readline()
        self.out = self.err = ""

    def interrupt(self, signum: int = signal.SIGINT) -> None:
        """Send ``signum``, then wait for it to exit (hang guard) and keep what it printed."""
        self.process.send_signal(signum)
        self.out, self.err = self.process.communicate(timeout=HANG_GUARD)


@contextlib.contextmanager
def example(*args: str) -> Iterator[Example]:
    """Run the example; a watchdog kills it if it hangs (``readline`` has no timeout), and so does the exit."""
    process = subprocess.Popen([sys.executable, str(EXAMPLE), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(2 * HANG_GUARD, process.kill)
    watchdog.start()
    try:
        yield Example(process)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()


def close_code(client: ClientConnection) -> int:
    """Read until the server closes the connection; the close code it sent."""
    for _ in range(100):  # bounded: a handful of messages at most
        try:
            client.recv(HANG_GUARD)
        except Exception:
            break
    return client.close_code


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_chat_example(loop_kind, signum):
    with example("--host", HOST, "--port", "0", "--loop", loop_kind) as chat:
        assert chat.banner.startswith(f"chat server on ws://{HOST}:"), chat.banner
        uri = chat.banner.split()[-1]
        with connect(uri, open_timeout=HANG_GUARD) as ada, connect(uri, open_timeout=HANG_GUARD) as bob:
            assert ada.recv(HANG_GUARD).startswith("welcome #1")
            assert ada.recv(HANG_GUARD) == "#1 joined"
            assert bob.recv(HANG_GUARD).startswith("welcome #2")
            assert [ada.recv(HANG_GUARD), bob.recv(HANG_GUARD)] == ["#2 joined"] * 2
            ada.send("hello")
            assert [ada.recv(HANG_GUARD), bob.recv(HANG_GUARD)] == ["#1: hello"] * 2
            chat.interrupt(signum)
            assert [close_code(ada), close_code(bob)] == [1001, 1001]
    assert chat.process.returncode == 0, chat.err
    assert "shutdown: 2 closed gracefully, 0 aborted, 0 refused" in chat.out
