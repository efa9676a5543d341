"""A flood of silent TLS clients against a low descriptor limit: no EMFILE, and real TLS clients are served.

asyncio and uvloop run a TLS server's handshake before ``connection_made``,
so when the loop does the TLS, the manager sees none of these connections:
400 clients that open a TCP connection and never send a ClientHello, against
RLIMIT_NOFILE=256, ran the process out of descriptors. Here the manager runs
the handshakes (``ssl=`` given to the manager, or to
``conntable.websockets.serve``), so each connection is counted from its
accept: the breaker refuses what does not fit, the silent ones are closed by
the handshake timeout, and a legitimate TLS client gets through once they
are gone. The server runs in a child process with the lowered limit (see
``tls_server.py``); certificates are real (``trustme``).
"""

from __future__ import annotations

import pathlib
import signal
import socket
import ssl
import time
from typing import List

import pytest
import trustme
from faults_support import HANG_GUARD, HOST, TLS_SERVER, EchoServer, read_exactly, wait_until

LIMIT = 256
FLOOD = 400
EMFILE_SIGNS = ("Too many open files", "EMFILE", "out of system resource")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory):
    """A CA, and a server certificate for 127.0.0.1 it signed (files for the child, a context for clients)."""
    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    folder: pathlib.Path = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(cert_file), append=True)
    cert.private_key_pem.write_to_path(str(key_file))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return cert_file, key_file, client


def served_over_tls(port: int, client: ssl.SSLContext, mode: str) -> bool:
    """One attempt by a legitimate client: TLS handshake, then an echo (a WebSocket one in websockets mode)."""
    try:
        with socket.create_connection((HOST, port), timeout=HANG_GUARD) as raw:
            with client.wrap_socket(raw, server_hostname=HOST) as tls:
                if mode == "websockets":
                    return websocket_echo(tls)
                tls.sendall(b"hello\n")
                return read_exactly(tls, 6) == b"hello\n"
    except (OSError, ssl.SSLError):  # refused: closed before or during the handshake
        return False


def websocket_echo(tls: ssl.SSLSocket) -> bool:
    """A minimal WebSocket client (RFC 6455) over an established TLS socket: upgrade, one masked text frame."""
    tls.sendall(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = tls.recv(4096)
        if not chunk:
            return False
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        return False
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"hello"))
    tls.sendall(b"\x81\x85" + mask + payload)
    return read_exactly(tls, 7) == b"\x81\x05hello"  # unmasked, from the server


@pytest.mark.parametrize("mode", ["echo", "websockets"])
@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_silent_tls_flood_under_a_low_descriptor_limit(loop_kind, mode, certificates):
    cert_file, key_file, client = certificates
    # Long enough for the whole flood to be open at once, even on a busy machine: the limit is reached.
    args = ("--mode", mode, "--cert", str(cert_file), "--key", str(key_file), "--handshake-timeout", "4.0")
    with EchoServer(loop_kind, *args, fd_limit=LIMIT, script=TLS_SERVER, banner="tls server on") as server:
        silent: List[socket.socket] = server.connect(FLOOD)  # TCP only: never a ClientHello
        try:
            stats = server.wait_for_stats(
                lambda s: s["opened"] + s["rejected"] >= FLOOD, "every silent connection admitted or refused"
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the server's log ends with:\n{''.join(server.log)[-3000:]}") from None
        assert stats["rejected"] > 0 and stats["max_fds"] == LIMIT
        # Once the handshake timeout has closed the silent ones, a real client gets in.
        give_up = time.monotonic() + HANG_GUARD
        while not served_over_tls(server.port, client, mode):
            assert time.monotonic() < give_up, "a legitimate TLS client was never served"
            time.sleep(0.1)
        for sock in silent:
            sock.close()
        server.wait_for_stats(lambda s: s["active"] == 0, "every connection gone")
        server.stop(signal.SIGTERM)
        assert server.process.returncode == 0, "".join(server.log)[-3000:]
        log = "".join(server.log)
        assert not [sign for sign in EMFILE_SIGNS if sign in log], log[-3000:]
        lines = server.stats_lines()
        assert max(line["fds"] for line in lines) < LIMIT
        # Every connection reached the manager: none was dropped at accept (uvloop drops silently at EMFILE).
        assert lines[-1]["opened"] + lines[-1]["rejected"] >= FLOOD + 1
        wait_until(lambda: server.process.poll() is not None, "the child exited")
