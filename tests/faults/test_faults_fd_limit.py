"""Out of file descriptors: the breaker opens first, the server keeps serving, then recovers.

The echo example runs in a child process whose RLIMIT_NOFILE is lowered to
256; this process floods it with more connections than that. Every
connection must reach the manager (admitted, or refused with the example's
"busy" line): a connection the loop dropped because accept() failed with
EMFILE would be missing from the server's count and would see a close
without the busy line. uvloop drops such connections silently (libuv's
EMFILE trick), asyncio logs "Too many open files": both are checked.
"""

from __future__ import annotations

import selectors
import signal

import pytest
from faults_support import EchoServer, read_exactly, read_until_close, wait_until

#: The child's descriptor limit, and how many clients flood it.
LIMIT = 256
FLOOD = 400
EMFILE_SIGNS = ("Too many open files", "EMFILE", "out of system resource")


def refused_clients(clients, count):
    """The clients the server answered and closed at once: readable while the admitted ones are silent."""
    with selectors.DefaultSelector() as selector:
        for sock in clients:
            selector.register(sock, selectors.EVENT_READ)

        def readable():
            ready = [key.fileobj for key, _ in selector.select(timeout=0)]
            return ready if len(ready) == count else None

        return wait_until(readable, f"{count} refused clients answered")


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_breaker_opens_before_emfile_and_the_server_recovers(loop_kind):
    args = ("--stats-every", "0.1", "--idle-timeout", "none", "--handshake-timeout", "none")
    with EchoServer(loop_kind, *args, fd_limit=LIMIT) as server:
        clients = server.connect(FLOOD)
        stats = server.wait_for_stats(
            lambda s: s["opened"] + s["rejected"] == FLOOD, "every connection admitted or refused"
        )
        opened, rejected = stats["opened"], stats["rejected"]
        assert stats["breaker"] == "open" and rejected > 0 and stats["max_fds"] == LIMIT

        refused = refused_clients(clients, rejected)
        assert {read_until_close(sock) for sock in refused} == {b"busy, try again later\n"}
        answered = set(refused)
        admitted = [sock for sock in clients if sock not in answered]
        assert len(admitted) == opened

        # The connections it holds are still served.
        for i, sock in enumerate(admitted):
            line = b"%d\n" % i
            sock.sendall(line)
            assert read_exactly(sock, len(line)) == line

        # Clients leave; below the low-water mark it accepts again.
        leaving = admitted[: len(admitted) // 4]
        for sock in refused + leaving:
            sock.close()
        server.wait_for_stats(lambda s: s["active"] == opened - len(leaving), "departures noticed")
        (newcomer,) = server.connect(1)
        newcomer.sendall(b"again\n")
        assert read_exactly(newcomer, 6) == b"again\n"
        after = server.wait_for_stats(lambda s: s["opened"] == opened + 1, "the newcomer counted")
        assert after["breaker"] == "closed" and after["rejected"] == rejected

        for sock in admitted[len(leaving):] + [newcomer]:
            sock.close()
        server.stop(signal.SIGTERM)
        assert server.process.returncode == 0
        log = "".join(server.log)
        assert not [sign for sign in EMFILE_SIGNS if sign in log], log[-3000:]
        assert max(line["fds"] for line in server.stats_lines()) < LIMIT
        assert server.stats_lines()[-1]["max_fds"] == LIMIT
