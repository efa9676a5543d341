"""conntable.asgi: conntable in front of any ASGI application.

``SessionMiddleware`` (see :mod:`conntable.asgi._sessions`) keeps HTTP
sessions in a :class:`~conntable.sessions.SessionStore`.
"""

from ._sessions import SCOPE_KEY, RequestSession, SessionMiddleware, session_of

__all__ = ("SessionMiddleware", "RequestSession", "session_of", "SCOPE_KEY")
