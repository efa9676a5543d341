"""Which connection managers are alive: for leak checks (``conntable.testing``), not for serving.

Every :class:`~conntable.aio.ConnectionManager` registers itself here when it
is built. The set holds weak references only, so registering keeps no manager
alive and costs nothing once a manager is gone. Nothing in the serving path
reads it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, List

if TYPE_CHECKING:
    from ._manager import ConnectionManager

__all__ = ("register", "live_managers", "connection_ids")

_managers: "weakref.WeakSet[ConnectionManager]" = weakref.WeakSet()


def register(manager: "ConnectionManager") -> None:
    """Remember ``manager`` for as long as something else keeps it alive."""
    _managers.add(manager)


def live_managers() -> List["ConnectionManager"]:
    """The managers that still exist (some may be shut down)."""
    return list(_managers)


def connection_ids(manager: "ConnectionManager") -> List[int]:
    """The ids of the connections ``manager`` still holds in its table (open, closing or refused)."""
    return list(manager._table)
