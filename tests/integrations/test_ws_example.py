"""examples/chat_server.py runs, relays messages to everyone, and shuts down with 1001 on SIGINT or SIGTERM."""

from __future__ import annotations

import pathlib
import signal

import pytest
from aio_support import HOST
from example_support import HANG_GUARD, close_code, run_example
from websockets.sync.client import connect

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "chat_server.py"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_chat_example(loop_kind, signum):
    with run_example(EXAMPLE, "--host", HOST, "--port", "0", "--loop", loop_kind) as chat:
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
