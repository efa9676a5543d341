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
# Whether stat("/proc/self/fd").st_size is the number of open descriptors
# (Linux 6.2 and later; 0 on older kernels): None until the first count finds out.
_stat_counts: Optional[bool] = None


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

    Where the kernel reports the count as the size of ``/proc/self/fd``, one
    ``stat``: cheap, and it needs no descriptor, so it still works when the
    process has none left. Elsewhere it lists a directory, which costs
    O(open descriptors) and fails at EMFILE: call it occasionally, never once
    per connection.
    """
    global _stat_counts
    if _stat_counts is not False:
        try:
            size = os.stat(_FD_DIRS[0]).st_size
        except OSError:
            size = 0
        if size > 0 and _stat_counts:
            return size
        if _stat_counts is None:
            listed = _list_fds(_FD_DIRS[0])
            if listed is not None:  # decided on a listing (which fails when no descriptor is left)
                # Trusted only if it matches: other systems may put anything in st_size.
                _stat_counts = size == listed > 0
                return listed
    for path in _FD_DIRS:
        count = _list_fds(path)
        if count is not None:
            return count
    return None


def _list_fds(path: str) -> Optional[int]:
    try:
        # The listing includes the descriptor used to read the directory.
        return len(os.listdir(path)) - 1
    except OSError:
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
