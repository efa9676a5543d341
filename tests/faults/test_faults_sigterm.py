"""SIGTERM to the echo example with clients connected: exit code 0, and every client sees a close.

Three kinds of client are connected when the signal arrives: idle ones,
ones that just had a line echoed, and one that sent a megabyte and reads
nothing, so the server's writes to it are stuck (backpressure) and its
polite close cannot finish: the grace period runs out and it is aborted.
"""

from __future__ import annotations

import signal
import socket

import pytest
from faults_support import HANG_GUARD, HOST, LOOP_KINDS, EchoServer, read_exactly, read_until_close

IDLE = 10
TALKING = 10
GOODBYE = b"closing: shutdown\n"
#: Bound on what the stalled client sends before the buffers are full (they fill after a few MB).
MAX_FLOOD = 64 << 20


def stalled_client(port):
    """A client that sends until every buffer between it and the server is full, and never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: it sets the window
    sock.settimeout(HANG_GUARD)
    sock.connect((HOST, port))
    sock.setblocking(False)
    chunk = b"x" * 65536
    for _ in range(MAX_FLOOD // len(chunk)):
        try:
            sock.send(chunk)
        except BlockingIOError:  # the server stopped reading: its writes to us are stuck
            return sock
    raise AssertionError(f"{MAX_FLOOD} bytes sent and the buffers are still not full")


@pytest.mark.parametrize("loop_kind", LOOP_KINDS)
def test_sigterm_closes_every_client_and_exits_cleanly(loop_kind):
    with EchoServer(loop_kind, "--grace", "1", "--stats-every", "0.1") as server:
        idle = server.connect(IDLE)
        talking = server.connect(TALKING)
        for i, sock in enumerate(talking):
            line = b"line %d\n" % i
            sock.sendall(line)
            assert read_exactly(sock, len(line)) == line
        stalled = stalled_client(server.port)
        everyone = IDLE + TALKING + 1
        server.wait_for_stats(lambda s: s["active"] == everyone, "every client admitted")

        out = server.stop(signal.SIGTERM)

        assert server.process.returncode == 0, "".join(server.log)[-3000:]
        assert [read_until_close(sock) for sock in idle + talking] == [GOODBYE] * (IDLE + TALKING)
        echoed = read_until_close(stalled)  # ends with a close (EOF or reset), whatever got through
        assert set(echoed) <= set(b"x" + GOODBYE)
        assert f"shutdown: {IDLE + TALKING} closed gracefully, 1 aborted, {everyone} tasks cancelled" in out
        for sock in idle + talking + [stalled]:
            sock.close()
