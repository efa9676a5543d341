"""Server-side sessions that expire: tokens, data, and one timer wheel for all of them.

::

    store = SessionStore(idle_ttl=1800.0, absolute_ttl=86400.0, max_sessions=100_000,
                         on_expire=lambda token, data: data["subscription"].cancel())
    token = store.create({"user": "ada"})   # in a running event loop
    data = store[token]                     # touches; KeyError once expired or deleted
    store.delete(token)                     # on_expire runs now
    await store.shutdown()                  # on_expire runs for every session left

How it works: each session is an entry of a ``conntable.ConnectionTable``
(idle timeout ``idle_ttl``, deadline ``absolute_ttl`` after creation), keyed
by its token (the table takes any hashable key; a str's hash is cached in
it, so a lookup costs what a dict's does): the table is the only index of
the sessions, with no side dict to keep in step. One sweeper task,
the same class the connection manager uses, sleeps until the table's next
expiry and removes what is due, so expiry costs O(expired) and nothing runs
while nothing is due: no scan, no polling.

A session bound to a live connection (:meth:`SessionStore.bind`) or held by a
request in progress (:meth:`SessionStore.hold`) never idle-expires; its idle
clock starts when the last hold is released. ``absolute_ttl`` still applies.

``on_expire`` runs exactly once per session, and nothing it does stops
expiry: whatever it raises (any BaseException, CancelledError and
GeneratorExit included) is logged, and the session is gone all the same
(never half there: ``token in store`` is False before ``on_expire`` runs).
KeyboardInterrupt and SystemExit still stop the program, from the event loop,
once the session has ended (as in ``conntable.aio``). An ``async def``
``on_expire`` (or one that returns an awaitable) runs as a task of the
store's; :meth:`SessionStore.shutdown` waits for those tasks.

This module uses asyncio only: no web framework, no WebSocket library.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from typing import Any, Callable, List, Optional, Protocol

import conntable
from conntable import Expired
from conntable._common import check_resolution, check_size, check_timeout
from conntable._session_callbacks import CANCEL_TIMEOUT, Callbacks  # (CANCEL_TIMEOUT: shutdown's, re-exported)
from conntable.aio import Sweeper
from conntable.aio._arguments import grace_seconds, optional_seconds

__all__ = ("SessionStore", "SessionHold", "SessionLimitReached", "SessionStoreUnavailable")

logger = logging.getLogger("conntable.sessions")

#: Bytes of randomness per token: 256 bits, 43 URL-safe characters.
TOKEN_BYTES = 32
#: Most sessions expired per sweeper pass (the sweeper adapts below this).
EXPIRE_BATCH = 1000

OnExpire = Callable[[str, Any], Any]


class SessionLimitReached(Exception):
    """:meth:`SessionStore.create` was called with ``max_sessions`` sessions alive. Nothing was evicted."""


class SessionStoreUnavailable(Exception):
    """A store kept elsewhere (:mod:`conntable.redis_sessions`) cannot be reached now; nothing changed."""


class _Cleanable(Protocol):
    def add_cleanup(self, callback: Callable[[Any], Any]) -> None: ...


class _Session:
    """One session: the table holds it under its ``token``; ``ended`` once ``on_expire`` was due."""

    __slots__ = ("token", "data", "holds", "ended")

    def __init__(self, token: str, data: Any) -> None:
        self.token = token
        self.data = data
        self.holds = 0
        self.ended = False


class SessionHold:
    """Keeps one session from idle-expiring until :meth:`release` (also a context manager)."""

    __slots__ = ("_store", "_session")

    def __init__(self, store: "SessionStore", session: _Session) -> None:
        self._store = store
        self._session: Optional[_Session] = session

    def release(self) -> None:
        """Let the session's idle clock run again (once the last hold goes); idempotent."""
        session, self._session = self._session, None
        if session is not None:
            self._store._release(session)

    def __enter__(self) -> "SessionHold":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


class SessionStore:
    """Sessions by unguessable token, expired on a timer wheel; ``on_expire`` runs once per session.

    ``idle_ttl``: a session not used (:meth:`touch`, ``store[token]``,
    :meth:`get`) for this long expires. ``absolute_ttl``: every session
    expires this long after its creation, used or not (None: no limit).
    ``max_sessions``: :meth:`create` raises :class:`SessionLimitReached` when
    this many are alive (None: no limit). ``on_expire(token, data)``: called
    exactly once per session, whether it expires, is deleted, or is still
    there at :meth:`shutdown`; whatever it raises is logged (see the module
    docstring); an ``async def`` one runs as a task that :meth:`shutdown`
    waits for. ``resolution``: expiry happens up to this much after it is due.
    Arguments are checked as the table checks its own: a wrong type raises
    TypeError, a value out of range ValueError, naming the argument.

    The store binds to the running event loop on first use and must be
    used from that loop only; end it with :meth:`shutdown` (or ``async with``).
    """

    def __init__(
        self,
        idle_ttl: float,
        *,
        absolute_ttl: Optional[float] = None,
        max_sessions: Optional[int] = None,
        on_expire: Optional[OnExpire] = None,
        resolution: float = 0.5,
    ) -> None:
        self.idle_ttl = check_timeout("idle_ttl", idle_ttl)
        self.absolute_ttl = optional_seconds("absolute_ttl", absolute_ttl)
        self.max_sessions = None if max_sessions is None else check_size("max_sessions", max_sessions, minimum=1)
        self.resolution = check_resolution(resolution)
        if on_expire is not None and not callable(on_expire):
            raise TypeError(f"on_expire must be callable or None, not {type(on_expire).__name__}")
        self._on_expire = on_expire
        # Checked now, so that what the table refuses fails here rather than at first use.
        conntable.ConnectionTable(self.idle_ttl, resolution=self.resolution)
        self._callbacks = Callbacks(logger, "session on_expire callback")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._table: Any = None  # token -> _Session, made at the first use (on the running loop)
        self._sweeper: Optional[Sweeper] = None
        self._closed = False

    # -- the mapping ---------------------------------------------------------------
    def create(self, data: Any = None) -> str:
        """Start a session holding ``data`` (default: a new dict); return its token.

        The token is 256 random bits from :mod:`secrets`, URL-safe. Raises
        :class:`SessionLimitReached` when ``max_sessions`` are alive and
        RuntimeError after :meth:`shutdown`.
        """
        if self._closed:
            raise RuntimeError("this SessionStore was shut down")
        if self.max_sessions is not None and len(self) >= self.max_sessions:
            raise SessionLimitReached(
                f"{len(self)} sessions alive, max_sessions is {self.max_sessions}: "
                f"none was evicted; retry once some end"
            )
        now = self._now()
        token = secrets.token_urlsafe(TOKEN_BYTES)
        while token in self._table:  # 2**-256: never, but never is cheap to check
            token = secrets.token_urlsafe(TOKEN_BYTES)
        session = _Session(token, {} if data is None else data)
        deadline = None if self.absolute_ttl is None else now + self.absolute_ttl
        self._table.add(token, session, deadline=deadline)
        self._sweeper.wake_if_earlier(self._table.due(token))  # type: ignore[union-attr]
        return token

    def __getitem__(self, token: str) -> Any:
        """The session's data; touches it. KeyError if unknown, expired or deleted."""
        session = self._live(token)
        self._touch(session)
        return session.data

    def get(self, token: str, default: Any = None) -> Any:
        """The session's data (touching it), or ``default`` if there is no such session."""
        session = None if self._table is None else self._table.get(token)
        if session is None:
            return default
        self._touch(session)
        return session.data

    def __contains__(self, token: object) -> bool:
        """Whether the session is alive (does not touch it)."""
        return self._table is not None and token in self._table

    def __len__(self) -> int:
        return 0 if self._table is None else len(self._table)

    def touch(self, token: str) -> None:
        """Record use of the session: its idle clock starts again. KeyError if there is none."""
        self._touch(self._live(token))

    def delete(self, token: str) -> None:
        """End the session now; ``on_expire`` runs before this returns. KeyError if there is none."""
        session = self._live(token)
        del self._table[token]
        self._end(session)

    # -- holding sessions open ---------------------------------------------------------
    def hold(self, token: str) -> SessionHold:
        """Keep the session from idle-expiring until the returned hold is released.

        Holds count: the idle clock starts again (from the release) when the
        last one goes. ``absolute_ttl`` still applies. KeyError if there is no
        such session.
        """
        session = self._live(token)
        session.holds += 1
        if session.holds == 1:
            self._table.set_idle_timeout(session.token, math.inf)
        return SessionHold(self, session)

    def bind(self, token: str, connection: _Cleanable) -> None:
        """Hold the session for as long as ``connection`` lives.

        ``connection`` is anything with ``add_cleanup(callback)`` that calls
        the callback (with a reason) once when it ends: a
        ``conntable.aio.ManagedProtocol``, a ``conntable.websockets``
        connection. KeyError if there is no such session or the connection
        is gone already.
        """
        hold = self.hold(token)
        try:
            connection.add_cleanup(lambda _reason: hold.release())
        except BaseException:
            hold.release()
            raise

    # -- the end -----------------------------------------------------------------------
    async def shutdown(self, grace: float = 30.0) -> None:
        """Stop expiring and end every session left (``on_expire`` for each); idempotent.

        Then wait for the ``async`` ``on_expire`` callbacks still running, up
        to ``grace`` seconds (0: not at all; ``math.inf``: for ever), cancel
        those left and wait up to ``CANCEL_TIMEOUT`` (5 s) for them to finish;
        any still running after that is logged.
        """
        seconds = grace_seconds("grace", grace)
        self._closed = True
        if self._sweeper is not None:
            await self._sweeper.stop()
        if self._table is not None:
            for session in list(self._table.values()):
                if self._table.get(session.token) is session:  # an on_expire may have deleted it meanwhile
                    del self._table[session.token]
                self._end(session)
        await self._callbacks.wait(seconds, CANCEL_TIMEOUT)

    async def __aenter__(self) -> "SessionStore":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        return f"<SessionStore sessions={len(self)} idle_ttl={self.idle_ttl!r}>"

    # -- internals ------------------------------------------------------------------------
    def _live(self, token: str) -> _Session:
        session = None if self._table is None else self._table.get(token)
        if session is None:
            raise KeyError("unknown or expired session")  # never echo the token into logs
        return session

    def _now(self) -> float:
        """The loop's time, with the table's clock moved to it (binding to the loop on first use)."""
        loop = self._loop
        if loop is None:
            loop = self._bind()
        now = loop.time()
        if now > self._table.now:
            self._table.expire(now, 0)  # moves the clock only; the sweeper does the expiring
        return now

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = self._loop = self._callbacks.loop = asyncio.get_running_loop()
        self._table = conntable.ConnectionTable(self.idle_ttl, resolution=self.resolution, now=loop.time())
        self._sweeper = Sweeper(loop, self._table, EXPIRE_BATCH, self._expired)
        self._sweeper.start()
        return loop

    def _touch(self, session: _Session) -> None:
        self._now()
        self._table.touch(session.token)

    def _release(self, session: _Session) -> None:
        if session.ended:
            return
        session.holds -= 1
        if session.holds == 0:
            self._now()
            self._table.set_idle_timeout(session.token, None)
            self._table.touch(session.token)  # the idle clock starts at the release
            self._sweeper.wake_if_earlier(self._table.due(session.token))  # type: ignore[union-attr]

    def _expired(self, expired: List[Expired], _now: float) -> None:
        for _key, session, _why in expired:
            self._end(session)  # contains what on_expire raises: the batch always ends whole

    def _end(self, session: _Session) -> None:
        """The one way out, once per session, after the table let go of it: then ``on_expire``.

        The entry goes first (expiry removed it; delete and shutdown remove
        it before calling this), so the session is never half there whatever
        ``on_expire`` does. (The token is never logged: it is a credential.)
        """
        if session.ended:
            return
        session.ended = True
        if self._on_expire is not None:
            self._callbacks.call(self._on_expire, session.token, session.data)
