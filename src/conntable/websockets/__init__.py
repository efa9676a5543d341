"""conntable.websockets: websockets' server with its connections held by a ConnectionManager.

Switching an existing server is one line::

    from websockets.asyncio.server import serve     # before
    from conntable.websockets import serve          # after

    async with serve(handler, "127.0.0.1", 8765) as server:
        await server.serve_forever()

What changes: every connection lives in a :class:`conntable.aio.ConnectionManager`
(idle timeout, connection limit answered with HTTP 503 and ``Retry-After``,
cleanups and spawned tasks per connection, graceful shutdown with code 1001
then abort); one heartbeat on a timer wheel pings all quiet connections and
closes unresponsive ones with 1011, instead of a keepalive task per
connection, so each connection costs one task: its handler. The handler
receives a :class:`ServerConnection`: websockets' class plus ``spawn``,
``add_cleanup`` and the manager's ``connection`` record. With ``ssl=``, the
manager (not the loop) runs the TLS handshake: a TLS connection counts
against ``max_connections`` from its TCP accept.

Requires the ``websockets`` package, 17 or later (the version the tests run;
the ``websockets`` extra).
"""

from __future__ import annotations

try:
    import websockets as _websockets
except ModuleNotFoundError as missing:  # say which extra brings it
    raise ModuleNotFoundError("conntable.websockets needs websockets 17 or later: "
                              "pip install 'conntable[websockets]'", name=missing.name) from missing
if int(_websockets.__version__.split(".")[0]) < 17:
    raise ImportError(f"conntable.websockets needs websockets 17 or later, not {_websockets.__version__}: "
                      "pip install 'conntable[websockets]'")

from conntable.aio import Heartbeat

from ._connection import ServerConnection
from ._server import Server, serve, unix_serve

__all__ = ("serve", "unix_serve", "Server", "ServerConnection", "Heartbeat")
