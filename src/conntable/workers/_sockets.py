"""The listening sockets of a multi-process server: one per worker (SO_REUSEPORT), or one shared by all.

On Linux, every worker binds its own listening socket to the same address
with ``SO_REUSEPORT``: the kernel spreads new connections over the group by
a hash of their addresses, each worker has its own accept queue, and no
worker is woken for a connection another one takes. A worker that dies takes
its socket out of the group, so the others get its share of the new
connections (what was waiting in its own accept queue is reset). The parent
keeps one more socket in the group, bound but never listening, so that the
kernel routes nothing to it: it resolves port 0 once, and it keeps the port
between restarts.

Elsewhere (macOS and the BSDs accept ``SO_REUSEPORT`` but do not balance
with it) the parent binds and listens once, and every worker inherits that
socket and accepts from it.
"""

from __future__ import annotations

import socket
import sys
from typing import Any, Optional

__all__ = ("REUSE_PORT_BALANCES", "bind_socket")

#: Whether SO_REUSEPORT spreads connections over the sockets of a group here (Linux 3.9 and later).
REUSE_PORT_BALANCES = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_socket(host: str, port: int, *, reuse_port: bool, backlog: Optional[int]) -> socket.socket:
    """A TCP socket bound to ``(host, port)``, non-blocking; listening if ``backlog`` is not None."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        if backlog is not None:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_port(sock: Any) -> int:
    return int(sock.getsockname()[1])
