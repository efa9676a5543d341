"""Cheap reads of the process's resources: file descriptors and resident memory.

Linux exposes both through ``/proc/self``; elsewhere ``/dev/fd`` may list the
open descriptors, and the resident set size falls back to ``getrusage``'s peak.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

# A limit reported as "unlimited" is treated as this many descriptors: large
# enough never to bind, finite so that arithmetic on it stays plain ints.
UNLIMITED_FDS = 1 << 20

_FD_DIRS = ("/proc/self/fd", "/dev/fd")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def fd_limit() -> Optional[int]:
    """The soft RLIMIT_NOFILE, or None where the platform has no such limit."""
    if resource is None:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > UNLIMITED_FDS:
        return UNLIMITED_FDS
    return soft


def count_open_fds() -> Optional[int]:
    """How many file descriptors the process has open, or None if it cannot tell.

    Lists a directory, which costs O(open descriptors): call it occasionally,
    never once per connection.
    """
    for path in _FD_DIRS:
        try:
            # The listing includes the descriptor used to read the directory.
            return len(os.listdir(path)) - 1
        except OSError:
            continue
    return None


def rss_bytes() -> int:
    """Resident set size in bytes (the peak where the current size is unknown)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        pass
    if resource is None:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
