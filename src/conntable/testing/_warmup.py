"""Open, once per process, what event loops open once per process, before the first snapshot.

libuv (under uvloop) creates a process-wide pipe the first time any loop is
made and keeps it for the life of the process. Without a warm-up, the first
checked test that creates a uvloop loop would be blamed for it. Creating and
closing one loop of each kind before the first snapshot takes those
descriptors out of every comparison.
"""

from __future__ import annotations

import asyncio
import importlib.util

__all__ = ("warm_up",)

_done = False


def warm_up() -> None:
    """Create and close an asyncio loop and, if uvloop is installed, a uvloop loop (once)."""
    global _done
    if _done:
        return
    _done = True
    factories = [asyncio.new_event_loop]
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        factories.append(uvloop.new_event_loop)
    for factory in factories:
        factory().close()
