"""What the examples promise a new user in their docstrings: the chat server's stats line and its
count of refused connections, the registry that switches from a dict to a table by its constructor
alone (the echo server and the chat room's messages are tested beside the layers they show, in
tests/aio and tests/integrations)."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("no_extensions", ["", "1"], ids=["default", "twin"])
def test_a_dict_registry_switches_to_a_table_by_its_constructor(no_extensions):
    env = {**os.environ, "CONNTABLE_NO_EXTENSIONS": no_extensions}
    done = subprocess.run([sys.executable, str(EXAMPLES / "registry.py")], capture_output=True, text=True,
                          timeout=HANG_GUARD, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    dict_lines = [line[len("dict:  "):] for line in lines if line.startswith("dict:  ")]
    table_lines = [line[len("table: "):] for line in lines if line.startswith("table: ")]
    assert dict_lines == table_lines and len(dict_lines) == 4
    assert dict_lines[0] == "2 connections; chat: ['ada']; news: ['ada', 'cy']"
    assert dict_lines[3] == "False, None, True"
    assert lines[-1] == "idle for 30 s at t=31: ['cy']; still open: ['ada']"
