"""conntable.aiohttp: an ``aiohttp.web`` application with its connections held by a ConnectionManager.

The switch, where an app is served with ``AppRunner`` and ``TCPSite``::

    server = await conntable.aiohttp.serve(app, "127.0.0.1", 8080, idle_timeout=60, max_connections=10_000)
    ...
    await server.close(grace=10)   # every WebSocket closed with 1001, bounded; then the app's cleanup

Idle and handshake timeouts, a connection limit answered with HTTP 503 and
``Retry-After`` before any handler runs, one heartbeat on a timer wheel for
every ``WebSocketResponse`` (keep aiohttp's ``heartbeat=None``), a bounded
graceful shutdown. Requires aiohttp (the ``aiohttp`` extra). See ``_server``.
"""

from __future__ import annotations

try:
    import aiohttp as _aiohttp  # noqa: F401
except ModuleNotFoundError as missing:  # say which extra brings it
    raise ModuleNotFoundError("conntable.aiohttp needs aiohttp: pip install 'conntable[aiohttp]'",
                              name=missing.name) from missing

from ._server import Server, serve

__all__ = ("serve", "Server")
