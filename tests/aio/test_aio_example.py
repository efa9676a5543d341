"""examples/echo_server.py runs, echoes, and shuts down gracefully on SIGINT."""

from __future__ import annotations

import pathlib
import signal
import socket
import subprocess
import sys
import threading

from aio_support import HOST

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "echo_server.py"
HANG_GUARD = 30.0


def read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        line += chunk
    return line


def test_echo_example(loop_kind):
    server = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--host", HOST, "--port", "0", "--loop", loop_kind],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # readline() has no timeout: a watchdog kills a server that hangs before printing.
    watchdog = threading.Timer(2 * HANG_GUARD, server.kill)
    watchdog.start()
    try:
        banner = server.stdout.readline()
        assert banner.startswith(f"echo server on {HOST}:"), banner + server.stderr.read()
        port = int(banner.split()[3].split(":")[1])
        with socket.create_connection((HOST, port), timeout=HANG_GUARD) as talker, \
                socket.create_connection((HOST, port), timeout=HANG_GUARD) as listener:
            talker.sendall(b"hello\n")
            assert read_line(talker) == b"hello\n"
            listener.sendall(b"x")
            assert listener.recv(1) == b"x"
            server.send_signal(signal.SIGINT)
            assert read_line(talker) == b"closing: shutdown\n"
            assert read_line(listener) == b"closing: shutdown\n"
            out, err = server.communicate(timeout=HANG_GUARD)
    finally:
        watchdog.cancel()
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0, err
    assert "shutdown: 2 closed gracefully, 0 aborted, 2 tasks cancelled" in out
