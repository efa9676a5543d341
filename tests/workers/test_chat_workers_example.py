"""examples/chat_workers.py: one room across worker processes; SIGINT or SIGTERM closes everyone with 1001."""

from __future__ import annotations

import pathlib
import re
import signal

import pytest
from workers_support import HANG_GUARD, HOST, MAX_TRIES, ServerProcess

from conntable.testing import LeakCheck

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "chat_workers.py"
JOINED = re.compile(r"^\[(w\d)\] (#\d+) joined$")


class Chatter:
    """A client of the chat: the worker it landed on and its name there, from the room's own announcement."""

    def __init__(self, port: int) -> None:
        from websockets.sync.client import connect

        self.ws = connect(f"ws://{HOST}:{port}", open_timeout=HANG_GUARD, legacy=True)
        assert self.ws.recv(HANG_GUARD).startswith("welcome #")
        match = JOINED.match(self.ws.recv(HANG_GUARD))
        assert match, "the room announces every newcomer to everyone, the newcomer included"
        self.worker, self.name = match.groups()

    def until(self, line: str) -> None:
        """Read until ``line`` comes (other announcements may come first); fail on a close or after 100 lines."""
        for _ in range(100):
            if self.ws.recv(HANG_GUARD) == line:
                return
        raise AssertionError(f"never received {line!r}")

    def close_code(self) -> int:
        from websockets.exceptions import ConnectionClosed

        for _ in range(100):
            try:
                self.ws.recv(HANG_GUARD)
            except ConnectionClosed:
                break
        return self.ws.protocol.close_rcvd.code


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_room_across_two_workers(signum):
    with LeakCheck(), ServerProcess("--workers", "2", "--port", "0", "--close-timeout", "2",
                                    script=EXAMPLE) as chat:
        chat.started()
        ada = Chatter(chat.port)
        others = []
        for _ in range(MAX_TRIES):  # connect until someone lands on the other worker
            bob = Chatter(chat.port)
            if bob.worker != ada.worker:
                break
            others.append(bob)
        else:
            raise AssertionError("every connection landed on one worker")
        ada.until(f"[{bob.worker}] {bob.name} joined")  # relayed from the other worker

        ada.ws.send("hello")
        said = f"[{ada.worker}] {ada.name}: hello"
        ada.until(said)
        bob.until(said)  # across processes
        bob.ws.send("hi ada")
        ada.until(f"[{bob.worker}] {bob.name}: hi ada")

        assert chat.stop(signum) == 0, chat.log()
        everyone = [ada, bob, *others]
        assert [client.close_code() for client in everyone] == [1001] * len(everyone)
        for client in everyone:
            client.ws.close()
        assert "all 2 workers shut down gracefully" in chat.log()
        assert chat.workers_gone()
