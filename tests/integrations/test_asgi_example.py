"""examples/fastapi_chat.py for real: uvicorn on 127.0.0.1, real websockets clients, the example's own accounting.

What the example promises: a message reaches everyone (and its sender), a
client that leaves is announced, the WebSocket over ``--max-websockets`` is
refused with HTTP 503 before the endpoint runs, an idle client is closed with
1001, and SIGINT or SIGTERM closes everyone with 1001 before uvicorn stops;
at the exit it prints what the middleware counted (every connection opened,
refused and closed, by reason; none left, no task left), checked here to the
unit.
"""

from __future__ import annotations

import pathlib
import signal
import urllib.request

import pytest

pytest.importorskip("fastapi")  # the test extra brings it (and uvicorn)

from aio_support import HOST  # noqa: E402
from example_support import HANG_GUARD, closed_with, run_example  # noqa: E402
from websockets.exceptions import InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "fastapi_chat.py"


def _base(banner: str) -> str:
    assert banner.startswith(f"chat on http://{HOST}:"), banner
    return banner.split()[2].removeprefix("http://")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_broadcast_limit_leaving_and_shutdown(signum):
    with run_example(EXAMPLE, "--host", HOST, "--port", "0", "--max-websockets", "2",
                     "--idle-timeout", "60", "--log-level", "warning") as chat:
        base = _base(chat.banner)
        with urllib.request.urlopen(f"http://{base}/", timeout=HANG_GUARD) as page:  # the docs' page
            assert page.status == 200 and b"new WebSocket" in page.read()
        with connect(f"ws://{base}/ws/1", open_timeout=HANG_GUARD) as ada, \
                connect(f"ws://{base}/ws/2", open_timeout=HANG_GUARD) as bob:
            with pytest.raises(InvalidStatus) as refused:  # a third: over --max-websockets
                connect(f"ws://{base}/ws/3", open_timeout=HANG_GUARD)
            assert refused.value.response.status_code == 503
            assert refused.value.response.headers["Retry-After"] == "5"
            ada.send("hello")
            assert [ada.recv(HANG_GUARD), ada.recv(HANG_GUARD)] == ["You wrote: hello", "Client #1 says: hello"]
            assert bob.recv(HANG_GUARD) == "Client #1 says: hello"
            bob.close()  # the client leaves: the others are told
            assert ada.recv(HANG_GUARD) == "Client #2 left the chat"
            chat.interrupt(signum)
            assert closed_with(ada) == (1001, "server shutdown")  # conntable's close, not uvicorn's 1012
    assert chat.process.returncode == 0, chat.err
    assert "shutdown: 1 closed with 1001, 0 cancelled after the grace\n" in chat.out, chat.out
    assert ("accounting: opened=2 refused=1 closed: peer=1 rejected=1 shutdown=1; live=0 tasks=0\n"
            in chat.out), chat.out
    assert "client #2 left: peer\n" in chat.err and "client #1 left: shutdown\n" in chat.err, chat.err


def test_an_idle_client_is_closed_with_1001():
    with run_example(EXAMPLE, "--host", HOST, "--port", "0", "--idle-timeout", "1",
                     "--log-level", "warning") as chat:
        base = _base(chat.banner)
        with connect(f"ws://{base}/ws/7", open_timeout=HANG_GUARD) as silent:
            assert closed_with(silent) == (1001, "idle timeout")
        chat.interrupt(signal.SIGTERM)
    assert chat.process.returncode == 0, chat.err
    assert "shutdown: 0 closed with 1001, 0 cancelled after the grace\n" in chat.out, chat.out
    assert "accounting: opened=1 refused=0 closed: idle=1; live=0 tasks=0\n" in chat.out, chat.out
    assert "client #7 left: idle\n" in chat.err, chat.err
