"""``SessionMiddleware``: a :class:`~conntable.sessions.SessionStore` in front of any ASGI app.

::

    store = SessionStore(idle_ttl=1800.0)
    app = SessionMiddleware(app, store)                       # the "session" cookie
    app = SessionMiddleware(app, store, header="Mcp-Session-Id", cookie=None)   # or a header

Per HTTP request, the middleware reads the session id from the cookie (default
``session``) and/or a header (none by default; ``header="Mcp-Session-Id"``
for clients of MCP's older streamable HTTP transport, which carried
protocol-level sessions in it: the 2026-07-28 MCP specification removed
them), and then:

* no id: the app runs; it may start a session with
  ``session_of(scope).create(data)``, and the response carries the new id
  (in the header, and/or as a cookie);
* an id of a live session: the session is touched, held for as long as the
  request runs (a long streaming response keeps it alive), and the app finds
  it at ``session_of(scope)`` (``token``, ``data``, ``delete()``);
* an id that is unknown or expired: ``404 Not Found``, the app does not run
  (MCP: the client must then start a new session). With a cookie, the 404
  also clears it.

A ``create()`` that finds the store full raises
:class:`~conntable.sessions.SessionLimitReached`; unless the app handles it,
the middleware answers ``503`` with ``Retry-After``. A ``create()`` after the
app sent ``http.response.start`` raises RuntimeError: the new id could no
longer reach the client. Other scope types (``websocket``, ``lifespan``) pass
through untouched.

Reading the id: header names are matched without regard to case; several
``Cookie`` fields (HTTP/2 and HTTP/3 split them, RFC 9113 section 8.2.3) are
read as one header joined with ``"; "``; an empty id is no id; the header
wins over the cookie; a header repeated with two different ids is answered
``400`` (a request cannot be in two sessions), and of a cookie repeated in
one request the first is used (the most specific path, RFC 6265 5.4).

Either store: a :class:`~conntable.redis_sessions.RedisSessionStore` (shared
by every worker through Redis) works the same way, with three differences:
``create()`` and ``delete()`` on the request's session are then coroutines
(``await session_of(scope).create(data)``); changes to ``data`` are saved to
Redis before ``http.response.start`` goes out (when its serialised form
changed); and a store that cannot reach Redis
(:class:`~conntable.sessions.SessionStoreUnavailable`) gets ``503`` with
``Retry-After``, whether the middleware or the app met it.

Plain ASGI: no framework is needed or imported. The store is the app's to
shut down (``await store.shutdown()``, e.g. in the lifespan handler).
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, List, MutableMapping, Optional, Tuple

from conntable._common import check_size
from conntable.sessions import SessionLimitReached, SessionStoreUnavailable

from ._responses import respond

__all__ = ("SessionMiddleware", "RequestSession", "session_of", "SCOPE_KEY")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = List[Tuple[bytes, bytes]]

#: Where the middleware puts the request's :class:`RequestSession` in the scope.
SCOPE_KEY = "conntable.session"

#: The characters of an HTTP token (RFC 9110 section 5.6.2): header and cookie names.
_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _token(what: str, name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str or None, not {type(name).__name__}")
    if not name or not set(name) <= _TCHARS:
        raise ValueError(f"{what} must be an HTTP token (letters, digits and !#$%&'*+-.^_`|~), got {name!r}")
    return name


class _Conflict(Exception):
    """The request names two different sessions."""


class RequestSession:
    """The session as one request sees it; ``session_of(scope)`` returns it.

    ``token`` and ``data`` are None until there is a session. ``created``
    and ``deleted`` say what this request did to it.
    """

    __slots__ = ("_store", "token", "data", "created", "deleted", "_response_started", "_remote", "_saved")

    def __init__(self, store: Any, token: Optional[str] = None, data: Any = None) -> None:
        self._store = store
        self.token = token
        self.data = data
        self.created = False
        self.deleted = False
        self._response_started = False
        self._remote = _is_remote(store)  # a store whose operations are coroutines (Redis)
        self._saved = b""  # the data as the remote store has it, serialised

    def __bool__(self) -> bool:
        return self.token is not None

    def create(self, data: Any = None) -> str:
        """Start a session for this client; the response carries its id. Returns the token.

        RuntimeError if the request already has a session (one it deleted
        may be replaced: that rotates the id) or if the response has started
        (its headers are sent: the id could not reach the client);
        :class:`~conntable.sessions.SessionLimitReached` if the store is full.
        """
        if self._response_started:
            raise RuntimeError(
                "the response has started: a session created now could not reach the client "
                "(create it before sending http.response.start)"
            )
        if self.token is not None and not self.deleted:
            raise RuntimeError("this request already has a session")
        if self._remote:
            return self._create_remote({} if data is None else data)  # type: ignore[return-value]
        self.token = self._store.create(data)
        self.data = self._store[self.token]
        self.created, self.deleted = True, False
        return self.token

    def delete(self) -> None:
        """End the session now (``on_expire`` runs); later requests with its id get 404."""
        if self.token is None:
            raise RuntimeError("this request has no session")
        if self._remote:
            return self._delete_remote()  # type: ignore[return-value]
        if self.token in self._store:
            self._store.delete(self.token)
        self.deleted = True

    async def _create_remote(self, data: Any) -> str:
        self.token = await self._store.create(data)
        self.data, self._saved = data, self._store.serializer.dumps(data)
        self.created, self.deleted = True, False
        return self.token

    async def _delete_remote(self) -> None:
        try:
            await self._store.delete(self.token)
        except KeyError:  # ended meanwhile: deleted all the same
            pass
        self.deleted = True

    async def _save_if_changed(self) -> None:
        if self.token is not None and not self.deleted:
            raw = self._store.serializer.dumps(self.data)
            if raw != self._saved:
                await self._store.save(self.token, self.data)
                self._saved = raw


def _is_remote(store: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(store, "create", None))


def session_of(scope: Scope) -> RequestSession:
    """The request's session handle; KeyError if no SessionMiddleware is in front of the app."""
    return scope[SCOPE_KEY]  # type: ignore[no-any-return]


class SessionMiddleware:
    """ASGI middleware that finds, holds, creates and refuses sessions (see the module docstring).

    ``header``: the request and response header carrying the session id
    (None, the default: no header; ``"Mcp-Session-Id"`` for MCP's legacy
    streamable HTTP clients). ``cookie``: the cookie carrying it (default
    ``"session"``; None: no cookie). ``cookie_attributes``: appended to the
    ``Set-Cookie`` of a new session. ``retry_after``: seconds, in the 503
    sent when the store is full or unreachable. ``store``: a
    :class:`~conntable.sessions.SessionStore` or a
    :class:`~conntable.redis_sessions.RedisSessionStore`.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: Any,
        *,
        header: Optional[str] = None,
        cookie: Optional[str] = "session",
        cookie_attributes: str = "Path=/; HttpOnly; SameSite=Lax",
        retry_after: int = 5,
    ) -> None:
        if header is None and cookie is None:
            raise ValueError("SessionMiddleware needs a header or a cookie to carry the session id")
        self.app = app
        self.store = store
        self._header = None if header is None else _token("header", header).lower().encode("ascii")
        self._cookie = None if cookie is None else _token("cookie", cookie)
        if not isinstance(cookie_attributes, str):
            raise TypeError(f"cookie_attributes must be a str, not {type(cookie_attributes).__name__}")
        if any(char in cookie_attributes for char in "\r\n\0"):
            raise ValueError("cookie_attributes must not contain CR, LF or NUL")
        self._cookie_attributes = cookie_attributes
        self._retry_after = str(check_size("retry_after", retry_after, minimum=0)).encode("ascii")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            token = self._token_in(scope.get("headers", ()))
        except _Conflict:
            await self._respond(send, 400, b"Conflicting session ids.\n", [])
            return
        session = RequestSession(self.store, token)
        hold = None
        if token is not None:
            try:
                if session._remote:  # touched and held in one round trip
                    session.data, hold = await self.store.open(token)
                    session._saved = self.store.serializer.dumps(session.data)
                else:
                    session.data = self.store[token]  # touches
            except KeyError:
                await self._respond(send, 404, b"Unknown or expired session.\n", self._forget_cookie())
                return
            except SessionStoreUnavailable:
                await self._unavailable(send, b"Session store unavailable. Retry later.\n")
                return
            if hold is None:
                hold = self.store.hold(token)
        scope = dict(scope)
        scope[SCOPE_KEY] = session
        started = False

        async def send_with_session(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                if session._remote:
                    await session._save_if_changed()  # before the headers go: the next request sees it
                started = session._response_started = True
                extra = self._session_headers(session)
                if extra:
                    message = dict(message)
                    message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_session)
        except SessionLimitReached:
            if started:
                raise
            await self._unavailable(send, b"Too many sessions. Retry later.\n")
        except SessionStoreUnavailable:
            if started:
                raise
            await self._unavailable(send, b"Session store unavailable. Retry later.\n")
        finally:
            if hold is not None:
                hold.release()

    # -- reading and writing the id ------------------------------------------------------
    def _token_in(self, headers: Headers) -> Optional[str]:
        """The session id the request carries: the header first, then the cookie (see the module docstring)."""
        from_header: Optional[str] = None
        cookie_fields: List[str] = []
        for name, value in headers:
            name = bytes(name).lower()
            if name == self._header:
                found = bytes(value).decode("latin-1").strip()
                if found and from_header is not None and found != from_header:
                    raise _Conflict()
                from_header = found or from_header
            elif name == b"cookie" and self._cookie is not None:
                cookie_fields.append(bytes(value).decode("latin-1"))
        if from_header:
            return from_header
        # RFC 9113 8.2.3: several cookie fields are one header, joined with "; ".
        for pair in "; ".join(cookie_fields).split(";"):
            cookie_name, _, cookie_value = pair.strip().partition("=")
            if cookie_name == self._cookie:
                return cookie_value.strip().strip('"') or None
        return None

    def _session_headers(self, session: RequestSession) -> Headers:
        """What the response says about the session: a new id, or a cookie to clear."""
        headers: Headers = []
        if session.created and not session.deleted:
            token = session.token.encode("latin-1")  # type: ignore[union-attr]
            if self._header is not None:
                headers.append((self._header, token))
            if self._cookie is not None:
                headers.append(self._set_cookie(token, self._cookie_attributes))
        elif session.deleted:
            headers.extend(self._forget_cookie())
        return headers

    def _set_cookie(self, value: bytes, attributes: str) -> Tuple[bytes, bytes]:
        assert self._cookie is not None
        return b"set-cookie", b"%s=%s; %s" % (self._cookie.encode("latin-1"), value, attributes.encode("latin-1"))

    def _forget_cookie(self) -> Headers:
        if self._cookie is None:
            return []
        return [self._set_cookie(b"", "Max-Age=0; " + self._cookie_attributes)]

    async def _unavailable(self, send: Send, body: bytes) -> None:
        await self._respond(send, 503, body, [(b"retry-after", self._retry_after)])

    @staticmethod
    async def _respond(send: Send, status: int, body: bytes, headers: Headers) -> None:
        await respond(send, "http.response", status, body, headers)
