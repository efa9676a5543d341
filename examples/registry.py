"""A registry written for a dict, switched to a ConnectionTable by changing only its constructor.

The ``Registry`` below is the kind servers keep: connections by their id (a
``uuid4().hex`` string), and a set of subscribers kept as a mapping keyed by
the connection objects themselves. It was written against ``dict``; giving
it ``conntable.ConnectionTable`` instead (the one line in ``main``) changes
nothing else, and adds what the dict never had: connections idle for 30
seconds come back from ``expire``, found in O(expired), without a scan.

Run it: ``python examples/registry.py``. It runs the same session on both
and prints what each saw; the two columns are the same, then the table
expires the idle connections.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Dict, List, MutableMapping

import conntable


class Connection:
    """A stand-in for a WebSocket: hashable by identity, as websockets' connections are."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.id = uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"<Connection {self.peer}>"


class Registry:
    """Connections by id and subscribers by connection: plain dict code, whatever mapping it is given."""

    def __init__(self, make_mapping: Callable[[], MutableMapping[Any, Any]] = dict) -> None:
        self.by_id: MutableMapping[str, Connection] = make_mapping()
        self.subscribers: MutableMapping[Connection, List[str]] = make_mapping()

    def join(self, conn: Connection, *topics: str) -> None:
        self.by_id[conn.id] = conn
        self.subscribers.setdefault(conn, []).extend(topics)

    def leave(self, conn_id: str) -> None:
        conn = self.by_id.pop(conn_id, None)
        if conn is not None:
            self.subscribers.pop(conn, None)

    def audience(self, topic: str) -> List[str]:
        return sorted(conn.peer for conn, topics in self.subscribers.items() if topic in topics)

    def describe(self, conn_id: str) -> str:
        conn = self.by_id.get(conn_id)
        if conn is None:
            return f"{conn_id[:8]}: gone"
        return f"{conn_id[:8]}: {conn.peer}, topics {self.subscribers.get(conn, [])}"


def session(registry: Registry, people: Dict[str, Connection]) -> List[str]:
    """The same calls, whatever the registry's mappings are; what they answered."""
    ada, bob, cy = people["ada"], people["bob"], people["cy"]
    registry.join(ada, "news", "chat")
    registry.join(bob, "chat")
    registry.join(cy, "news")
    registry.leave(bob.id)
    registry.leave("no-such-id")  # a dict answers None here: so does the table
    return [
        f"{len(registry.by_id)} connections; chat: {registry.audience('chat')}; news: {registry.audience('news')}",
        registry.describe(ada.id),
        registry.describe(bob.id),
        f"{'x' in registry.by_id}, {registry.by_id.get(-1)}, {registry.by_id == {c.id: c for c in (ada, cy)}}",
    ]


def main() -> None:
    people = {name: Connection(name) for name in ("ada", "bob", "cy")}
    with_dict = session(Registry(dict), people)
    table_registry = Registry(lambda: conntable.ConnectionTable(idle_timeout=30.0, now=0.0))  # the only change
    with_table = session(table_registry, people)
    for left, right in zip(with_dict, with_table):
        print(f"dict:  {left}\ntable: {right}")
    assert with_dict == with_table, "the registry behaved differently"

    by_id: Any = table_registry.by_id  # the table's own API, beyond the dict's
    by_id.expire(20.0)
    by_id.touch(people["ada"].id)  # ada sent something at t=20
    idle = [e.value.peer for e in by_id.expire(31.0)]
    print(f"idle for 30 s at t=31: {idle}; still open: {[c.peer for c in by_id.values()]}")


if __name__ == "__main__":
    main()
