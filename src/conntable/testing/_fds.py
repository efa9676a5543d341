"""The process's open file descriptors, and what each one is.

A snapshot maps each descriptor number to an identity string: the target of
its ``/proc/self/fd`` link (``socket:[1234]``, ``pipe:[99]``,
``anon_inode:[eventpoll]``, a path). Comparing identities, not just numbers,
catches a descriptor that was closed and whose number was reused by a leaked
one. Where there is no ``/proc`` (macOS lists ``/dev/fd`` without links), the
identity is the descriptor's device and inode from ``fstat``.
"""

from __future__ import annotations

import os
import stat
from typing import Dict, Iterable, List

from ._procnet import socket_descriptions

__all__ = ("open_fds", "describe_fds")

FdSnapshot = Dict[int, str]

_FD_DIRS = ("/proc/self/fd", "/dev/fd")

# Hints for the anonymous descriptors people meet in asyncio code.
_ANON_HINTS = {
    "anon_inode:[eventpoll]": "an event loop's epoll, the loop was not closed",
    "anon_inode:[eventfd]": "an eventfd, e.g. a libuv loop or a thread pool",
    "anon_inode:[timerfd]": "a timerfd",
}


def _identity(directory: str, fd: int) -> str:
    try:
        return os.readlink(f"{directory}/{fd}")
    except OSError:
        pass
    try:  # no link to read: name it by what fstat says
        info = os.fstat(fd)
    except OSError:
        return ""  # gone meanwhile (the listing's own descriptor)
    kind = "socket" if stat.S_ISSOCK(info.st_mode) else "pipe" if stat.S_ISFIFO(info.st_mode) else "file"
    return f"{kind}:[dev {info.st_dev} inode {info.st_ino}]"


def open_fds() -> FdSnapshot:
    """Every open descriptor and its identity; empty where the platform cannot list them."""
    for directory in _FD_DIRS:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        snapshot = {}
        for name in names:
            fd = int(name)
            identity = _identity(directory, fd)
            if identity:
                snapshot[fd] = identity
        return snapshot
    return {}


def describe_fds(snapshot: FdSnapshot, fds: Iterable[int]) -> List[str]:
    """One readable line per descriptor: ``fd 7: tcp 127.0.0.1:4100 -> 127.0.0.1:8888 (ESTABLISHED)``."""
    wanted = sorted(fds)
    sockets: Dict[int, str] = {}
    if any(snapshot[fd].startswith("socket:[") for fd in wanted):
        sockets = socket_descriptions()  # the whole namespace's tables: read once, only if needed
    lines = []
    for fd in wanted:
        identity = snapshot[fd]
        text = identity
        if identity.startswith("socket:[") and identity[8:-1].isdigit():
            text = sockets.get(int(identity[8:-1]), f"socket (inode {identity[8:-1]})")
        elif identity in _ANON_HINTS:
            text = f"{identity} ({_ANON_HINTS[identity]})"
        lines.append(f"fd {fd}: {text}")
    return lines
