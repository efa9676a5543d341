"""conntable.asgi: conntable in front of any ASGI application.

* :class:`ConnectionMiddleware` holds every WebSocket (and every in-flight
  HTTP request) of the wrapped app under a connection manager: idle,
  handshake and lifetime timeouts, a WebSocket limit answered with 503 at
  the handshake, cleanups exactly once, a bounded graceful shutdown, a live
  registry, ``broadcast`` and stats (see :mod:`conntable.asgi._middleware`).
* :class:`SessionMiddleware` keeps HTTP sessions in a
  :class:`~conntable.sessions.SessionStore` (see :mod:`conntable.asgi._sessions`).

Plain ASGI: no framework is needed or imported.
"""

from ._middleware import (
    WEBSOCKET_SCOPE_KEY,
    ASGIShutdownSummary,
    BroadcastResult,
    ConnectionMiddleware,
    HTTPRequest,
    websocket_of,
)
from ._sessions import SCOPE_KEY, RequestSession, SessionMiddleware, session_of
from ._websocket import WebSocket, WebSocketClosed

__all__ = (
    "ConnectionMiddleware",
    "WebSocket",
    "WebSocketClosed",
    "HTTPRequest",
    "BroadcastResult",
    "ASGIShutdownSummary",
    "websocket_of",
    "WEBSOCKET_SCOPE_KEY",
    "SessionMiddleware",
    "RequestSession",
    "session_of",
    "SCOPE_KEY",
)
