"""The past a simulated workload starts from: who was added, and who was active, when.

Times are integer milliseconds, so that the instants a workload is built
around (a due time just inside a pass, a tick boundary) stay exact; they
become seconds only when replayed. Replaying moves the subject's clock to
each instant in order (``advance``), then adds and touches what happened
then, so that conntable's wheel, the heap and the timer handles are where a
server running through that history would have left them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Sequence, Tuple

from .traffic import VALUE


def ms(seconds: float) -> int:
    return round(seconds * 1000)


class History:
    def __init__(self) -> None:
        self._at: Dict[int, Tuple[List[int], List[int]]] = defaultdict(lambda: ([], []))

    def add(self, when_ms: int, key: int) -> None:
        self._at[when_ms][0].append(key)

    def touch(self, when_ms: int, key: int) -> None:
        self._at[when_ms][1].append(key)

    def spread(self, keys: Sequence[int], start_ms: int, stop_ms: int, *, touch: bool = False,
               grid_ms: int = 10) -> None:
        """Add (or touch) ``keys`` evenly over ``[start_ms, stop_ms]``, on a ``grid_ms`` grid."""
        record = self.touch if touch else self.add
        steps = max((stop_ms - start_ms) // grid_ms, 0)
        count = max(len(keys) - 1, 1)
        for i, key in enumerate(keys):
            record(start_ms + grid_ms * (i * steps // count), key)

    def instants(self) -> List[int]:
        """Every instant at which something happened, in order."""
        return sorted(self._at)

    def play(self, subject: Any, when_ms: int) -> None:
        """Add and touch what happened at ``when_ms`` (the clock is the caller's business)."""
        events = self._at.get(when_ms)
        if events is None:
            return
        add, touch = subject.add, subject.touch
        for key in events[0]:
            add(key, VALUE)
        for key in events[1]:
            touch(key)

    def replay(self, subject: Any) -> None:
        """Play every instant in order, moving the subject's clock to each first."""
        for when_ms in self.instants():
            subject.advance(when_ms / 1000)
            self.play(subject, when_ms)

    def last_touches(self) -> Dict[int, int]:
        """Each touched key's last touch, in milliseconds."""
        last: Dict[int, int] = {}
        for when_ms in self.instants():
            last.update(dict.fromkeys(self._at[when_ms][1], when_ms))
        return last
