"""Memory growth between two points, by source line, with tracemalloc.

Off by default: tracing slows allocation several times and the numbers need a
threshold to mean anything (caches, interned strings and free lists grow on
their own). The check starts tracemalloc if it is not running and stops it
again at the end if it started it.
"""

from __future__ import annotations

import os
import tracemalloc
from typing import List, Optional, Tuple

__all__ = ("MemoryTrace", "format_size")

# Allocations that are the measurement's own, or the import system's.
_IGNORED_FILES = (
    tracemalloc.__file__,
    "<frozen importlib._bootstrap>",
    "<frozen importlib._bootstrap_external>",
    "<unknown>",
    os.path.join(os.path.dirname(__file__), "*"),
)


def format_size(size: int) -> str:
    """``+1536`` -> ``+1.5 KiB``."""
    if abs(size) < 1024:
        return f"{size:+d} B"
    if abs(size) < 1024 * 1024:
        return f"{size / 1024:+.1f} KiB"
    return f"{size / (1024 * 1024):+.1f} MiB"


class MemoryTrace:
    """Traced memory at the start; growth by line at the end."""

    def __init__(self, limit: int, top: int = 10, frames: int = 1) -> None:
        self.limit = limit
        self.top = top
        self._frames = frames
        self._started_here = False
        self._before: Optional[tracemalloc.Snapshot] = None

    def start(self) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(self._frames)
            self._started_here = True
        self._before = self._snapshot()

    def stop(self) -> None:
        if self._started_here:
            tracemalloc.stop()
            self._started_here = False

    @staticmethod
    def _snapshot() -> tracemalloc.Snapshot:
        filters = [tracemalloc.Filter(False, pattern) for pattern in _IGNORED_FILES]
        return tracemalloc.take_snapshot().filter_traces(filters)

    def growth(self) -> Tuple[int, List[str]]:
        """Net growth in bytes, and the lines that grew most, if it is over the limit (else no lines)."""
        if self._before is None or not tracemalloc.is_tracing():
            return 0, []
        diff = self._snapshot().compare_to(self._before, "lineno")
        total = sum(stat.size_diff for stat in diff)
        if total <= self.limit:
            return total, []
        lines = [
            f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}: "
            f"{format_size(stat.size_diff)} in {stat.count_diff:+d} blocks"
            for stat in diff[: self.top]
            if stat.size_diff > 0
        ]
        return total, lines
