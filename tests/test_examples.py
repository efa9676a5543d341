"""What the examples promise a new user in their docstrings: the chat server's stats line and its
count of refused connections (the echo server and the chat room's messages are tested beside the
layers they show, in tests/aio and tests/integrations)."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import threading

import pytest

websockets_client = pytest.importorskip("websockets.sync.client")  # the test extra brings it
from websockets.exceptions import InvalidStatus  # noqa: E402

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
HANG_GUARD = 30.0


def test_chat_prints_stats_and_counts_every_refusal():
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "chat_server.py"), "--host", "127.0.0.1", "--port", "0",
         "--loop", "asyncio", "--max-connections", "1", "--stats-every", "0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(2 * HANG_GUARD, process.kill)  # readline has no timeout
    watchdog.start()
    try:
        banner = process.stdout.readline()
        assert banner.startswith("chat server on ws://127.0.0.1:"), banner
        with websockets_client.connect(banner.split()[-1], open_timeout=HANG_GUARD) as ada:
            assert ada.recv(HANG_GUARD).startswith("welcome #1")
            with pytest.raises(InvalidStatus) as refused:  # over --max-connections: HTTP 503
                websockets_client.connect(banner.split()[-1], open_timeout=HANG_GUARD)
            assert refused.value.response.status_code == 503
            stats = ""
            for _ in range(1000):  # bounded: a line every 0.1 s, the watchdog behind it
                stats = process.stderr.readline()
                if "rejected=1" in stats or not stats:
                    break
            assert "online=1" in stats and "rejected=1" in stats, stats  # without --verbose
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=HANG_GUARD)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "shutdown: 1 closed gracefully, 0 aborted, 1 refused (0 during the shutdown)" in out, out
