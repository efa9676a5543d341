"""Connections still registered in the live :class:`~conntable.aio.ConnectionManager` objects.

Managers register themselves (weakly) when built, so a snapshot needs no
cooperation from the code under test. Connection ids are never reused by a
manager, so "registered now and not at the start" is exactly the set of
connections that were made during the check and never ended.
"""

from __future__ import annotations

import weakref
from typing import Dict, FrozenSet, List, Mapping

from conntable.aio import ConnectionManager
from conntable.aio._registry import connection_ids, live_managers

__all__ = ("registered_connections", "describe_connections")

ConnectionSnapshot = Mapping[ConnectionManager, FrozenSet[int]]


def registered_connections() -> "weakref.WeakKeyDictionary[ConnectionManager, FrozenSet[int]]":
    """Each live manager and the ids it holds (weakly keyed: a snapshot keeps no manager alive)."""
    snapshot: "weakref.WeakKeyDictionary[ConnectionManager, FrozenSet[int]]" = weakref.WeakKeyDictionary()
    for manager in live_managers():
        snapshot[manager] = frozenset(connection_ids(manager))
    return snapshot


def new_connections(before: ConnectionSnapshot, after: ConnectionSnapshot) -> Dict[ConnectionManager, List[int]]:
    """The ids each manager holds in ``after`` that it did not hold in ``before``."""
    grown = {}
    for manager, ids in after.items():
        new = sorted(ids - before.get(manager, frozenset()))
        if new:
            grown[manager] = new
    return grown


def describe_connections(grown: Mapping[ConnectionManager, List[int]]) -> List[str]:
    """One line per manager, then one per connection: id, peer, state, and why it is closing if it is."""
    lines = []
    for manager, ids in grown.items():
        lines.append(f"{manager!r}:")
        for conn_id in ids:
            conn = manager.get(conn_id)
            if conn is None:  # ended between the snapshot and now
                continue
            text = f"  connection {conn_id}: peer {conn.peer!r}, {conn.state.value}"
            if conn.close_reason is not None:
                text += f" ({conn.close_reason.value})"
            lines.append(text)
    return lines
