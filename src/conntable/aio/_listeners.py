"""The listening sockets of a manager's servers: how many sockets they accept unseen, and a pause.

asyncio's selector event loop (the default on Unix) accepts up to
``backlog`` connections each time a listening socket is readable, and calls
their ``connection_made`` (where the manager counts them) two loop
iterations later: up to two batches per listening socket are open before the
manager sees the first of them, and a third is accepted in the iteration the
manager sees them. So on that loop the manager keeps descriptors free for two
batches (``CircuitBreaker.accept_burst``), and stops reading its listening
sockets whenever that many are not free: the third batch is never accepted
into EMFILE. uvloop calls ``connection_made`` before it accepts the next
connection, so it needs neither.

asyncio has no public way to pause a server. The loop's own reader callback
for a listening socket is read from its selector (private names, looked up
defensively), then removed and added back with the public ``remove_reader``
and ``add_reader``. Where the lookup fails (another asyncio version, another
loop), nothing is paused: the reserved burst still covers the first two
batches, and asyncio survives an EMFILE by logging it and retrying a second
later.
"""

from __future__ import annotations

from asyncio import selector_events
from typing import Any, Callable, List, Optional, Tuple

__all__ = ("DEFAULT_BACKLOG", "Listeners")

#: ``loop.create_server``'s default ``backlog``.
DEFAULT_BACKLOG = 100
#: Accept batches per listening socket that can be open before the manager sees any of them.
UNSEEN_BATCHES = 2

_Reader = Tuple[Callable[..., Any], Tuple[Any, ...]]


def _accepts_in_batches(loop: Any) -> bool:
    return isinstance(loop, selector_events.BaseSelectorEventLoop)


def _reader(loop: Any, fd: int) -> Optional[_Reader]:
    """The callback and arguments ``loop`` calls when ``fd`` is readable; None if none is found."""
    try:
        handle = loop._selector.get_key(fd).data[0]
        return None if handle is None else (handle._callback, handle._args)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return None  # not reading, closed (fd -1), or not the asyncio we know


class Listeners:
    """The listening sockets, on asyncio's selector loop, of the servers a manager shuts down."""

    def __init__(self) -> None:
        self._sockets: List[Tuple[Any, Any]] = []  # (server, listening socket)
        self._removed: List[Tuple[Any, Any, int, _Reader]] = []  # (server, socket, fd, its reader)
        #: Sockets the loop may accept, across these listening sockets, before the manager sees them.
        self.burst = 0
        #: Whether :meth:`pause` was called last (even if there was nothing to remove).
        self.paused = False

    def add(self, server: Any, backlog: Optional[int] = None) -> bool:
        """Watch ``server``'s listening sockets if its loop accepts in batches; return whether it does.

        ``backlog`` None: the server's own (asyncio's ``Server`` keeps it in a
        private attribute), else the default.
        """
        get_loop = getattr(server, "get_loop", None)
        if get_loop is None or not callable(getattr(server, "is_serving", None)):
            return False  # not an asyncio server: nothing to pause
        if not _accepts_in_batches(get_loop()):
            return False
        if backlog is None:
            backlog = getattr(server, "_backlog", None)
            backlog = backlog if isinstance(backlog, int) and backlog > 0 else DEFAULT_BACKLOG
        sockets = list(getattr(server, "sockets", ()) or ())
        self._sockets.extend((server, sock) for sock in sockets)
        self.burst += UNSEEN_BATCHES * backlog * len(sockets)
        if self.paused:  # a server added while the others are paused waits with them
            self._remove(server, sockets)
        return True

    def pause(self) -> None:
        """Stop reading the listening sockets (what is already accepted still arrives)."""
        self.paused = True
        for server, sock in self._sockets:
            self._remove(server, [sock])

    def resume(self) -> None:
        """Read again the listening sockets :meth:`pause` stopped, unless their server closed meanwhile."""
        self.paused = False
        removed, self._removed = self._removed, []
        for server, sock, fd, (callback, args) in removed:
            # A closed socket's number may already belong to another descriptor.
            if server.is_serving() and sock.fileno() == fd:
                server.get_loop().add_reader(fd, callback, *args)

    def _remove(self, server: Any, sockets: List[Any]) -> None:
        loop = server.get_loop()
        for sock in sockets:
            fd = sock.fileno()
            reader = _reader(loop, fd)
            if reader is not None and loop.remove_reader(fd):
                self._removed.append((server, sock, fd, reader))
