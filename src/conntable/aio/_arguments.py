"""Duration arguments of the asyncio layer and the integrations, checked as the table checks its own.

``conntable._common`` has the table's checks (a wrong type is a TypeError, a
value out of range a ValueError, both naming the argument); these add the two
shapes the layers above take: an optional limit (None or ``math.inf``: none)
and a grace period (0: at once).
"""

from __future__ import annotations

import math
from typing import Optional

from conntable._common import check_timeout

__all__ = ("optional_seconds", "grace_seconds")


def optional_seconds(name: str, value: Optional[float]) -> Optional[float]:
    """A positive duration, or None (also for ``math.inf``) for no limit."""
    if value is None:
        return None
    seconds = check_timeout(name, value)
    return None if seconds == math.inf else seconds


def grace_seconds(name: str, value: float) -> float:
    """0 (at once) or a positive duration; ``math.inf`` waits for ever."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return 0.0
    return check_timeout(name, value)
