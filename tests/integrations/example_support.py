"""Running an example script for real: its process, what it printed, and the clients' view of its closes.

:func:`run_example` starts ``python <script> <args>`` with pipes, reads its
banner (the first line it prints), and kills it at the end if it is still
there; a watchdog kills it if it hangs (``readline`` has no timeout). Time
limits are hang guards, never assertions.
"""

from __future__ import annotations

import contextlib
import pathlib
import signal
import subprocess
import sys
import threading
from typing import Iterator, Tuple, Union

from websockets.sync.client import ClientConnection

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
def run_example(script: Union[str, pathlib.Path], *args: str) -> Iterator[Example]:
    """Run ``script`` with ``args`` under this Python; killed at the exit if it is still running."""
    process = subprocess.Popen([sys.executable, str(script), *args],
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


def closed_with(client: ClientConnection) -> Tuple[int, str]:
    """Read until the server closes the connection; the close code and reason it sent."""
    for _ in range(100):  # bounded: a handful of messages at most
        try:
            client.recv(HANG_GUARD)
        except Exception:
            break
    return client.close_code, client.close_reason


def close_code(client: ClientConnection) -> int:
    """Read until the server closes the connection; the close code it sent."""
    return closed_with(client)[0]
