"""Sessions shared by every process and machine: a Redis-backed store, expiry enforced by Redis.

::

    import redis.asyncio as redis
    from conntable.redis_sessions import RedisSessionStore

    store = RedisSessionStore(redis.Redis(host="127.0.0.1"), idle_ttl=1800.0, absolute_ttl=86400.0,
                              max_sessions=100_000)
    token = await store.create({"user": "ada"})       # every process sees it at once
    data = await store.get(token)                      # touches; None once expired or deleted
    await store.save(token, {"user": "ada", "n": 1})   # touches too
    await store.add_cleanup(token, lambda token: subscription.cancel())   # local, runs once here
    await store.delete(token)                          # ends it everywhere
    await store.shutdown()                             # ends this process's part only

The operations that reach Redis are coroutines; :class:`RedisSessionStore`
otherwise keeps :class:`~conntable.sessions.SessionStore`'s meaning (idle and
absolute expiry, holds and bindings, ``max_sessions`` refused with
:class:`~conntable.sessions.SessionLimitReached`, ``on_expire`` exactly once).

**Redis is the truth.** Each session is one hash (``d``: the serialised data,
``a``: the absolute deadline in Redis's own clock, ms), and every access is
one Lua script, one round trip, that reads the record, checks the deadline
and sets the key's time to live to ``min(idle_ttl, absolute time left)``. So
a session expires in Redis even if every process is gone, and no access can
stretch it past its absolute deadline (the flaw of stores that re-set the
expiry on every save). A sorted set next to the records (member: token,
score: when the key expires) counts the live sessions for ``max_sessions``,
checked in the creating script itself, so concurrent creations from any
number of processes never exceed it, and nothing is evicted. Both keys share
one hash tag, so the scripts also run on Redis Cluster (in one slot).

**What each process keeps.** A local timer wheel (a
:class:`conntable.ConnectionTable`, keyed by the token itself) holds an
entry for each session this process *tracks*: one it holds (:meth:`~RedisSessionStore.hold`,
:meth:`~RedisSessionStore.bind`, a request in the ASGI middleware), one it
attached cleanups to (:meth:`~RedisSessionStore.add_cleanup`), and, when
``on_expire`` is given, each it created or held, until it ends. One task,
the refresher, sleeps until the wheel's next entry is due and then sends one
pipeline for the whole batch: a held session's TTL is renewed (one refresh
per session per ``idle_ttl / 3``, never one task per session); any other
tracked session is checked without being touched (``PTTL``) and re-armed for
when Redis would expire it. A session found gone (expired in Redis, deleted by
another process, lost in a Redis restart) ends here: its cleanups and
``on_expire`` run once, in this process, at most one TTL (plus
``resolution``) after it ended. No keyspace notification or pub/sub is relied
on (they are lossy): the check is the mechanism.

**Faults.** An operation that cannot reach Redis raises
:class:`~conntable.sessions.SessionStoreUnavailable` (the ASGI middleware
answers 503 with Retry-After) and changes nothing locally. The refresher
retries with exponential backoff (``RETRY_FIRST`` doubling to ``RETRY_MAX``);
after an outage it checks every tracked session at once, so those whose keys
a restart lost end, once, with their cleanups. :meth:`RedisSessionStore.from_url`
builds a client that reconnects with backoff and times out rather than hang.

**Data** goes through a serializer: JSON by default (:class:`JSONSerializer`,
strict, UTF-8), or any object with ``dumps(obj) -> bytes`` and
``loads(bytes) -> obj``. Never pickle: data read from a shared store must not
be able to run code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
from typing import Any, Callable, List, Optional, Protocol, Tuple

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

import conntable
from conntable._common import check_resolution, check_size, check_timeout
from conntable._session_callbacks import Callbacks
from conntable.aio._arguments import grace_seconds, optional_seconds
from conntable.aio._log import EXITS, propagate
from conntable.sessions import (
    TOKEN_BYTES,
    SessionHold,
    SessionLimitReached,
    SessionStoreUnavailable,
)

__all__ = ("RedisSessionStore", "JSONSerializer", "Serializer", "SessionLimitReached", "SessionStoreUnavailable")

logger = logging.getLogger("conntable.redis_sessions")

#: Most tracked sessions refreshed or checked in one pipeline.
BATCH = 500
#: The refresher's first wait after Redis failed it, doubled per failure up to RETRY_MAX.
RETRY_FIRST = 0.05
RETRY_MAX = 2.0
#: A held session's TTL is renewed this many times per idle_ttl.
REFRESHES_PER_TTL = 3

#: Errors that mean "Redis cannot be reached now" (BusyLoadingError, after a restart, is one).
UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, asyncio.TimeoutError)

# Redis's clock in ms; scripts replicate their effects (needed before Redis 7 for TIME).
_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: record, live set. ARGV: token, data, idle ms, absolute ms (0: none), max (0: none).
# Returns {ttl} or {-1, alive} (full) or {-2} (the token exists: never, 2**-256).
_CREATE = _PRELUDE + """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local max = tonumber(ARGV[5])
if max > 0 then
  local alive = redis.call('ZCARD', KEYS[2])
  if alive >= max then return {-1, alive} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {-2} end
local ttl = tonumber(ARGV[3])
local absolute = tonumber(ARGV[4])
local deadline = 0
if absolute > 0 then
  deadline = now + absolute
  if absolute < ttl then ttl = absolute end
end
redis.call('HSET', KEYS[1], 'd', ARGV[2], 'a', deadline)
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
return {ttl}
"""

# KEYS: record, live set. ARGV: mode, token, idle ms, data (mode "save").
# Modes: "get" (touch, return the data), "touch", "save" (replace the data, touch),
# "peek" (no touch: the key's PTTL). Returns false if the session is gone, else {ttl[, data]}.
_ACCESS = _PRELUDE + """
local mode = ARGV[1]
local record = redis.call('HMGET', KEYS[1], 'a', 'd')
if not record[1] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return false
end
if mode == 'peek' then return {redis.call('PTTL', KEYS[1])} end
local ttl = tonumber(ARGV[3])
local deadline = tonumber(record[1])
if deadline > 0 then
  local left = deadline - now
  if left <= 0 then
    redis.call('DEL', KEYS[1])
    redis.call('ZREM', KEYS[2], ARGV[2])
    return false
  end
  if left < ttl then ttl = left end
end
if mode == 'save' then redis.call('HSET', KEYS[1], 'd', ARGV[4]) end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[2])
if mode == 'get' then return {ttl, record[2]} end
return {ttl}
"""

# KEYS: record, live set. ARGV: token. Returns 1 if the session was there.
_DELETE = """
redis.call('ZREM', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""

# KEYS: live set. Returns how many sessions are alive.
_COUNT = _PRELUDE + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""

#: Modules whose loads() may run code: refused as serializers (anyone who can write to Redis could run code here).
_CODE_RUNNING = frozenset({"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve"})

Cleanup = Callable[[str], Any]
OnExpire = Callable[[str, Any], Any]
_MISSING: Any = object()


class Serializer(Protocol):
    def dumps(self, data: Any) -> bytes: ...

    def loads(self, raw: bytes) -> Any: ...


class JSONSerializer:
    """Strict JSON in UTF-8 (no NaN or Infinity): str, int, float, bool, None, lists and str-keyed dicts."""

    def dumps(self, data: Any) -> bytes:
        return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")

    def loads(self, raw: bytes) -> Any:
        return json.loads(raw)


class _Cleanable(Protocol):
    def add_cleanup(self, callback: Callable[[Any], Any]) -> None: ...


class _Tracked:
    """A session this process follows: the value of its token's entry in the store's table."""

    __slots__ = ("token", "data", "holds", "released", "touched", "cleanups", "follow", "ended")

    def __init__(self, token: str, data: Any) -> None:
        self.token = token
        self.data = data
        self.holds = 0
        self.released = False  # the last hold went: the refresher touches it once more
        self.touched = -math.inf  # (loop time) when this process last set its TTL
        self.cleanups: List[Cleanup] = []
        self.follow = False  # on_expire is due for it: tracked until it ends
        self.ended = False


class RedisSessionStore:
    """Sessions in Redis, shared by every process using the same Redis and ``prefix`` (see the module docstring).

    ``client``: a ``redis.asyncio.Redis``; the store does not close it
    (:meth:`from_url` makes one the store owns). ``idle_ttl``,
    ``absolute_ttl``, ``max_sessions`` (for all processes together) and
    ``on_expire(token, data)`` mean what they mean for
    :class:`~conntable.sessions.SessionStore`, except that ``on_expire`` runs
    in this process for the sessions it tracks (created or held here), with
    the data this process last read or wrote. ``serializer``: see
    :class:`JSONSerializer`. ``prefix``: the keys' namespace. ``resolution``:
    the local wheel's, so local ends come up to this much late. Arguments
    are checked as :class:`~conntable.sessions.SessionStore` checks them.

    Redis rounds TTLs to milliseconds; ``idle_ttl`` must be at least 10 ms.
    The store binds to the running event loop on first use; end it with
    :meth:`shutdown` (or ``async with``).
    """

    def __init__(
        self,
        client: Any,
        idle_ttl: float,
        *,
        absolute_ttl: Optional[float] = None,
        max_sessions: Optional[int] = None,
        on_expire: Optional[OnExpire] = None,
        serializer: Optional[Serializer] = None,
        prefix: str = "conntable:sessions",
        resolution: float = 0.5,
    ) -> None:
        self.idle_ttl = check_timeout("idle_ttl", idle_ttl)
        if self.idle_ttl == math.inf or self.idle_ttl < 0.01:
            raise ValueError(f"idle_ttl must be finite and at least 0.01 s, got {idle_ttl!r}")
        self.absolute_ttl = optional_seconds("absolute_ttl", absolute_ttl)
        if self.absolute_ttl is not None and self.absolute_ttl < 0.001:
            raise ValueError(f"absolute_ttl must be at least 0.001 s, got {absolute_ttl!r}")
        self.max_sessions = None if max_sessions is None else check_size("max_sessions", max_sessions, minimum=1)
        self.resolution = check_resolution(resolution)
        if on_expire is not None and not callable(on_expire):
            raise TypeError(f"on_expire must be callable or None, not {type(on_expire).__name__}")
        self.serializer: Serializer = JSONSerializer() if serializer is None else serializer
        if not (callable(getattr(self.serializer, "dumps", None)) and callable(getattr(self.serializer, "loads", None))):
            raise TypeError("serializer must have dumps(data) -> bytes and loads(bytes) -> data")
        if getattr(self.serializer, "__name__", None) in _CODE_RUNNING:
            raise ValueError(
                f"serializer {self.serializer.__name__} runs code from the shared store when it loads: "
                f"use JSON (the default) or another format that only builds data"
            )
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        if not prefix or any(char in prefix for char in "{}"):
            raise ValueError(f"prefix must be a non-empty str without braces, got {prefix!r}")
        for method in ("register_script", "pipeline"):
            if not callable(getattr(client, method, None)):
                raise TypeError(f"client must be a redis.asyncio.Redis, not {type(client).__name__}")
        conntable.ConnectionTable(math.inf, resolution=self.resolution)  # what the table refuses fails here
        self.client = client
        self._owns_client = False
        self._on_expire = on_expire
        self._idle_ms = max(1, round(self.idle_ttl * 1000))
        self._absolute_ms = 0 if self.absolute_ttl is None else max(1, round(self.absolute_ttl * 1000))
        self._period = self.idle_ttl / REFRESHES_PER_TTL
        self._live_key = f"{{{prefix}}}:live"
        self._record_prefix = f"{{{prefix}}}:s:"
        self._create = client.register_script(_CREATE)
        self._access = client.register_script(_ACCESS)
        self._delete = client.register_script(_DELETE)
        self._count = client.register_script(_COUNT)
        self._callbacks = Callbacks(logger, "session cleanup")
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        # Token -> _Tracked for every session this process follows, the one registry: an entry
        # with a deadline is armed (refreshed or checked then); one without (the table's idle
        # timeout is infinite) is in a batch on its way to Redis.
        self._table: Any = None
        self._refresher: Optional["asyncio.Task[None]"] = None
        self._waiter: Optional["asyncio.Future[None]"] = None
        # A session due before this is in an earlier tick than the one the refresher sleeps until:
        # arming it wakes the refresher (-inf while awake, +inf while asleep with nothing armed).
        # Compared in ticks, not exact times: an arrival due in the tick being slept until would
        # otherwise wake it for nothing, once per session.
        self._wake_before = -math.inf
        self._closed = False
        #: Batches the refresher sent, how many failed (Redis unreachable), and how many sessions
        #: they refreshed or checked: tests and metrics read them.
        self.batches = 0
        self.failed_batches = 0
        self.checks = 0
        #: Times arming a session woke the sleeping refresher before its time.
        self.early_wakeups = 0

    @classmethod
    def from_url(cls, url: str, idle_ttl: float, *, timeout: float = 2.0, **kwargs: Any) -> "RedisSessionStore":
        """A store on a client for ``url`` that it owns (closed by :meth:`shutdown`).

        The client reconnects with exponential backoff (3 retries, 10 ms
        doubling to 0.5 s) and gives up on a connection or a reply after
        ``timeout`` seconds, so an unreachable Redis is an exception, not a hang.
        """
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialBackoff

        client = aioredis.Redis.from_url(
            url,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.01), 3),
            retry_on_error=[redis_errors.ConnectionError, redis_errors.TimeoutError],
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        store = cls(client, idle_ttl, **kwargs)  # (a refused argument leaves a client never connected)
        store._owns_client = True
        return store

    # -- the sessions --------------------------------------------------------------------
    async def create(self, data: Any = None) -> str:
        """Start a session holding ``data`` (default: an empty dict); return its token.

        Atomic with the ``max_sessions`` check across every process:
        :class:`~conntable.sessions.SessionLimitReached` when that many are
        alive (nothing is evicted). TypeError/ValueError if the serializer
        refuses ``data``; nothing is written then.
        """
        self._check_open()
        data = {} if data is None else data
        raw = self.serializer.dumps(data)
        while True:
            token = secrets.token_urlsafe(TOKEN_BYTES)
            reply = await self._call(
                self._create,
                [self._record(token), self._live_key],
                [token, raw, self._idle_ms, self._absolute_ms, self.max_sessions or 0],
            )
            if int(reply[0]) == -1:
                raise SessionLimitReached(
                    f"{int(reply[1])} sessions alive, max_sessions is {self.max_sessions}: "
                    f"none was evicted; retry once some end"
                )
            if int(reply[0]) != -2:  # -2: the token exists (2**-256): draw another
                break
        if self._on_expire is not None:
            tracked = self._track(token, data)
            tracked.follow = True
            self._rearm(tracked, reply[0], touched=True)
        return token

    async def get(self, token: str, default: Any = None) -> Any:
        """The session's data (touching it), or ``default`` if there is no such session."""
        reply = await self._touch(token, "get")
        if reply is None:
            return default
        data = self.serializer.loads(reply[1])
        tracked = self._followed(token)
        if tracked is not None:
            tracked.data = data
        return data

    async def load(self, token: str) -> Any:
        """The session's data (touching it); KeyError if there is no such session."""
        data = await self.get(token, _MISSING)
        if data is _MISSING:
            raise KeyError("unknown or expired session")  # never echo the token into logs
        return data

    async def save(self, token: str, data: Any) -> None:
        """Replace the session's data (touching it); KeyError if there is no such session."""
        raw = self.serializer.dumps(data)
        if await self._touch(token, "save", raw) is None:
            raise KeyError("unknown or expired session")
        tracked = self._followed(token)
        if tracked is not None:
            tracked.data = data

    async def touch(self, token: str) -> None:
        """Record use of the session: its idle clock starts again. KeyError if there is none."""
        if await self._touch(token, "touch") is None:
            raise KeyError("unknown or expired session")

    async def exists(self, token: str) -> bool:
        """Whether the session is alive (does not touch it)."""
        self._check_token(token)
        return bool(await self._call(self._access, self._keys(token), ["peek", token, 0]))

    async def delete(self, token: str) -> None:
        """End the session everywhere; this process's cleanups run before this returns.

        KeyError if there is none. The other processes find out at their next
        check of it (at most one TTL later).
        """
        self._check_token(token)
        gone = not await self._call(self._delete, self._keys(token), [token])
        tracked = self._followed(token)
        if tracked is not None:
            self._end(tracked)
        if gone:
            raise KeyError("unknown or expired session")

    async def count(self) -> int:
        """How many sessions are alive in Redis, for every process together."""
        self._check_open()
        return int(await self._call(self._count, [self._live_key], []))

    def __len__(self) -> int:
        """How many sessions this process tracks (:meth:`count` counts them all)."""
        return 0 if self._table is None else len(self._table)

    # -- local resources ---------------------------------------------------------------
    async def open(self, token: str) -> Tuple[Any, SessionHold]:
        """The session's data and a hold on it, in one round trip; KeyError if there is none."""
        reply = await self._touch(token, "get")
        if reply is None:
            raise KeyError("unknown or expired session")
        data = self.serializer.loads(reply[1])
        return data, self._hold(token, data, reply[0])

    async def hold(self, token: str) -> SessionHold:
        """Keep the session from idle-expiring, everywhere, until the hold is released.

        This process renews its TTL every ``idle_ttl / 3`` while any hold is
        on it; the idle clock starts again when the last one goes.
        ``absolute_ttl`` still applies. KeyError if there is no such session.
        """
        reply = await self._touch(token, "touch")
        if reply is None:
            raise KeyError("unknown or expired session")
        tracked = self._followed(token)
        return self._hold(token, None if tracked is None else tracked.data, reply[0])

    async def bind(self, token: str, connection: _Cleanable) -> None:
        """Hold the session for as long as ``connection`` lives (see :meth:`SessionStore.bind`)."""
        hold = await self.hold(token)
        try:
            connection.add_cleanup(lambda _reason: hold.release())
        except BaseException:
            hold.release()
            raise

    async def add_cleanup(self, token: str, callback: Cleanup) -> None:
        """Call ``callback(token)`` once, in this process, when the session ends anywhere.

        Ends: expired or deleted (by any process), lost by Redis, or this
        store shut down. Whatever the callback raises is logged; an ``async``
        one runs as a task :meth:`shutdown` waits for. KeyError if there is
        no such session (then the callback is not kept).
        """
        if not callable(callback):
            raise TypeError(f"callback must be callable, not {type(callback).__name__}")
        self._check_token(token)
        reply = await self._call(self._access, self._keys(token), ["peek", token, 0])
        tracked = self._followed(token)
        if not reply:
            if tracked is not None:
                self._end(tracked)
            raise KeyError("unknown or expired session")
        if tracked is None:
            tracked = self._track(token, None)
        tracked.cleanups.append(callback)
        self._rearm(tracked, reply[0], touched=False)

    # -- the end -------------------------------------------------------------------------
    async def shutdown(self, grace: float = 30.0) -> None:
        """End this process's part: stop the refresher, run every tracked session's cleanups once.

        The sessions stay in Redis for the other processes (and for this one
        after a restart). Waits for ``async`` cleanups as
        :meth:`SessionStore.shutdown` does. Closes the client if the store
        owns it (:meth:`from_url`). Idempotent.
        """
        seconds = grace_seconds("grace", grace)
        self._closed = True
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            await asyncio.wait([refresher])
        for tracked in self._all_followed():
            self._end(tracked)
        await self._callbacks.wait(seconds)
        if self._owns_client:
            self._owns_client = False
            await self.client.aclose()

    async def __aenter__(self) -> "RedisSessionStore":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.shutdown()

    def __repr__(self) -> str:
        return f"<RedisSessionStore tracked={len(self)} idle_ttl={self.idle_ttl!r}>"

    # -- talking to Redis ----------------------------------------------------------------
    def _record(self, token: str) -> str:
        return self._record_prefix + token

    def _keys(self, token: str) -> List[str]:
        return [self._record(token), self._live_key]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this RedisSessionStore was shut down")
        if self._loop is None:
            self._bind()

    def _check_token(self, token: Any) -> None:
        if not isinstance(token, str):
            raise TypeError(f"a session token is a str, not {type(token).__name__}")
        self._check_open()

    async def _call(self, script: Any, keys: List[str], args: List[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except UNREACHABLE as exc:
            raise SessionStoreUnavailable(f"Redis is unreachable: {exc}") from exc

    async def _touch(self, token: str, mode: str, raw: bytes = b"") -> Optional[List[Any]]:
        """One access script; the reply, or None (and the local part ended) if the session is gone."""
        self._check_token(token)
        reply = await self._call(self._access, self._keys(token), [mode, token, self._idle_ms, raw])
        tracked = self._followed(token)
        if tracked is not None:
            if not reply:
                self._end(tracked)
            else:
                self._rearm(tracked, reply[0], touched=True)
        return reply or None

    # -- the local wheel -----------------------------------------------------------------
    def _bind(self) -> None:
        loop = self._loop = self._callbacks.loop = asyncio.get_running_loop()
        self._table = conntable.ConnectionTable(math.inf, resolution=self.resolution, now=loop.time())
        self._refresher = loop.create_task(self._refresh(), name="conntable-session-refresher")

    def _followed(self, token: str) -> Optional[_Tracked]:
        return None if self._table is None else self._table.get(token)

    def _all_followed(self) -> List[_Tracked]:
        return [] if self._table is None else list(self._table.values())

    def _track(self, token: str, data: Any) -> _Tracked:
        tracked = self._followed(token)
        if tracked is None:
            tracked = _Tracked(token, data)
            self._table.add(token, tracked)  # not armed yet: the caller arms it
        return tracked

    def _hold(self, token: str, data: Any, ttl_ms: Any) -> SessionHold:
        tracked = self._track(token, data)
        tracked.holds += 1
        if self._on_expire is not None:
            tracked.follow = True
        self._rearm(tracked, ttl_ms, touched=True)
        return SessionHold(self, tracked)  # type: ignore[arg-type]

    def _release(self, tracked: _Tracked) -> None:
        """The last hold gone: the idle clock starts now, so one more touch (unless one just happened)."""
        if tracked.ended or tracked.holds <= 0:
            return
        tracked.holds -= 1
        if tracked.holds == 0:
            # A request shorter than the resolution was touched by its own start: no second round trip.
            tracked.released = self._loop.time() - tracked.touched >= self.resolution  # type: ignore[union-attr]
            self._rearm(tracked, self._idle_ms, touched=False)

    def _rearm(self, tracked: _Tracked, ttl_ms: Any, *, touched: bool) -> None:
        """What this process does next for a live session whose key expires in ``ttl_ms`` (PTTL or TTL set).

        Held: renew it in ``idle_ttl / 3`` (or when its absolute deadline is
        due). Released and not yet touched since: touch it at once. With
        cleanups or on_expire: check it when Redis would expire it.
        Otherwise this process has nothing to do for it: forget it.
        """
        if tracked.ended:
            return
        if self._closed:  # an operation that was on its way during shutdown: this process is done with it
            self._end(tracked)
            return
        seconds = _pttl(ttl_ms, self.idle_ttl)
        if touched:
            tracked.touched = self._loop.time()  # type: ignore[union-attr]
            if tracked.holds == 0:
                tracked.released = False  # this touch started the idle clock
        if tracked.holds > 0:
            self._arm(tracked, min(self._period, seconds))
        elif tracked.released:
            self._arm(tracked, 0.0)
        elif tracked.cleanups or tracked.follow:
            self._arm(tracked, seconds)
        else:  # it lives on in Redis; nothing here depends on it
            self._forget(tracked)

    def _forget(self, tracked: _Tracked) -> None:
        tracked.ended = True
        if self._table.get(tracked.token) is tracked:
            del self._table[tracked.token]

    def _arm(self, tracked: _Tracked, seconds: float) -> None:
        """Put the session's wheel entry ``seconds`` from now (it is refreshed or checked then)."""
        if tracked.ended or self._closed:
            return
        now = self._loop.time()  # type: ignore[union-attr]
        if now > self._table.now:
            self._table.expire(now, 0)  # moves the clock only
        when = now + max(seconds, 0.0)
        try:
            self._table.set_deadline(tracked.token, when)
        except KeyError:  # taken by a batch and not put back (a MemoryError there): back in now
            self._table.add(tracked.token, tracked, deadline=when)
        if when < self._wake_before and self._waiter is not None and not self._waiter.done():
            self.early_wakeups += 1
            self._waiter.set_result(None)

    async def _refresh(self) -> None:
        """The one refresher: sleep until the wheel's next entry, then one pipeline per batch."""
        loop = self._loop
        assert loop is not None
        retry = RETRY_FIRST
        outage = False
        while True:
            now = loop.time()
            when = self._table.next_expiry()
            if when is None or when > now:
                await self._sleep_until(when)
                continue
            batch = [tracked for _key, tracked, _why in self._table.expire(now, BATCH)]
            try:
                for tracked in batch:  # followed while on the way, with no deadline
                    self._table.add(tracked.token, tracked)
                touches, replies = await self._check(batch)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # Redis unreachable, or anything else: retry, never die
                self.failed_batches += 1
                if not isinstance(exc, UNREACHABLE):
                    logger.error("session refresh failed; retrying in %g s", retry, exc_info=exc)
                    propagate(exc if isinstance(exc, EXITS) else None)
                else:
                    logger.warning("Redis unreachable (%s); retrying session refreshes in %g s", exc, retry)
                for tracked in batch:
                    self._arm(tracked, retry)
                retry = min(2 * retry, RETRY_MAX)
                outage = True
                continue
            self.batches += 1
            self.checks += len(batch)
            retry = RETRY_FIRST
            for tracked, touched, reply in zip(batch, touches, replies):
                self._settle(tracked, touched, reply)
            if outage:  # back after an outage: a restart may have lost keys, check them all now
                outage = False
                for tracked in self._all_followed():
                    self._arm(tracked, 0.0)

    async def _sleep_until(self, when: Optional[float]) -> None:
        loop = self._loop
        assert loop is not None
        waiter = self._waiter = loop.create_future()
        # ``when`` (the table's next_expiry) ends the earliest armed tick: a session due no earlier
        # than one tick before it is in that tick or a later one (the aio Sweeper's rule).
        self._wake_before = math.inf if when is None else when - self.resolution * (1.0 - 1e-5)
        handle = None if when is None else loop.call_at(when, _wake, waiter)
        try:
            await waiter
        finally:
            self._wake_before = -math.inf
            self._waiter = None
            if handle is not None:
                handle.cancel()

    async def _check(self, batch: List[_Tracked]) -> Tuple[List[bool], List[Any]]:
        """One pipeline: held (or just released) sessions are touched, the others only looked at."""
        pipe = self.client.pipeline(transaction=False)
        touches = []
        for tracked in batch:
            touch = tracked.holds > 0 or tracked.released
            touches.append(touch)
            mode = "touch" if touch else "peek"
            await self._access(keys=self._keys(tracked.token), args=[mode, tracked.token, self._idle_ms], client=pipe)
        return touches, await pipe.execute(raise_on_error=False)

    def _settle(self, tracked: _Tracked, touched: bool, reply: Any) -> None:
        if tracked.ended:
            return
        if isinstance(reply, Exception):
            logger.error("session refresh failed in Redis: %s", reply)
            self._arm(tracked, self._period)
        elif not reply:
            self._end(tracked)  # expired, deleted elsewhere, or lost by Redis
        else:
            self._rearm(tracked, reply[0], touched=touched)

    def _end(self, tracked: _Tracked) -> None:
        """The one way out of this process, once per session: forget it, then its cleanups."""
        if tracked.ended:
            return
        self._forget(tracked)
        callbacks: List[Tuple[Callable[..., Any], Tuple[Any, ...]]] = [(c, (tracked.token,)) for c in tracked.cleanups]
        if tracked.follow and self._on_expire is not None:
            callbacks.append((self._on_expire, (tracked.token, tracked.data)))
        tracked.cleanups = []
        for callback, args in callbacks:
            self._callbacks.call(callback, *args)


def _pttl(reply: Any, fallback: float) -> float:
    """Seconds until Redis expires the key, from a TTL in ms (-1, no TTL: checked after ``fallback``)."""
    milliseconds = int(reply)
    return fallback if milliseconds < 0 else milliseconds / 1000


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)
