"""Helpers for the WebSocket tests: the asyncio layer's Scenario, served by conntable.websockets.

:class:`WsScenario` is ``aio_support.Scenario`` (its manager, cleanup probe
and final accounting: table empty, each cleanup once, no task left, file
descriptors back) with a WebSocket server in front and real ``websockets``
clients. Time limits are hang guards, never assertions.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, Awaitable, Callable, Dict, List, Optional

from aio_support import HOST, WAIT_TIMEOUT, Scenario
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from conntable.aio import ShutdownSummary
from conntable.websockets import Server, ServerConnection, serve


class TrackedConnection(ServerConnection):
    """Registers the scenario's cleanup probe on every connection, refused ones too."""

    scenario: "WsScenario"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.scenario.track(self.connection.id)
        super().connection_made(transport)  # starts the handler task

    def connection_rejected(self, transport: asyncio.BaseTransport) -> None:
        self.scenario.track(self.connection.id)
        super().connection_rejected(transport)


class WsScenario(Scenario):
    """A conntable.websockets server under test, its clients, and the final accounting."""

    def __init__(self, **manager_kwargs: Any) -> None:
        super().__init__(**manager_kwargs)
        self.connection_class = type("Tracked", (TrackedConnection,), {"scenario": self})
        self.ws_server: Optional[Server] = None
        self.uri = ""
        self.ws_clients: List[ClientConnection] = []
        #: conn id -> the close code the server sent, as its handler saw the connection end.
        self.sent_codes: Dict[int, Optional[int]] = {}

    async def start(self, handler: Optional[Callable[[Any], Awaitable[None]]] = None,
                    own_manager: bool = False, **serve_kwargs: Any) -> Server:
        """Serve on 127.0.0.1 with the scenario's manager, or with one ``serve`` makes (``own_manager``)."""
        if not own_manager:
            serve_kwargs["manager"] = self.mgr
        server = self.ws_server = await serve(
            handler or self.echo, HOST, 0, create_connection=self.connection_class, **serve_kwargs)
        if own_manager:
            self.mgr = server.manager
        scheme = "ws" if serve_kwargs.get("ssl") is None else "wss"
        self.uri = f"{scheme}://{HOST}:{server.sockets[0].getsockname()[1]}"
        return server

    async def echo(self, ws: ServerConnection) -> None:
        """The default handler: echo until the connection ends, then note the close code sent."""
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosed:
            pass
        finally:
            sent = ws.protocol.close_sent
            self.sent_codes[ws.connection.id] = None if sent is None else sent.code

    async def connect(self, count: int = 1, **kwargs: Any) -> List[ClientConnection]:  # type: ignore[override]
        """Open ``count`` real WebSocket clients (silent: no keepalive of their own unless asked)."""
        kwargs.setdefault("ping_interval", None)
        clients = []
        for _ in range(count):
            client = await asyncio.wait_for(connect(self.uri, **kwargs), WAIT_TIMEOUT)
            self.ws_clients.append(client)
            clients.append(client)
        return clients

    async def finish(self, grace: float = 5.0) -> ShutdownSummary:
        """Close the server, then the clients, and check (as Scenario does) that nothing is left."""
        server = self.ws_server
        assert server is not None
        server.close()
        await asyncio.wait_for(server.wait_closed(), WAIT_TIMEOUT)
        for client in self.ws_clients:
            client.transport.abort()
            await asyncio.wait_for(client.wait_closed(), WAIT_TIMEOUT)
        assert not server.handler_tasks, "a handler outlived the server"
        assert server.heartbeat is None or len(server.heartbeat) == 0, "the heartbeat kept a connection"
        return await super().finish(grace)


def reset_client(client: ClientConnection) -> None:
    """Drop a client with a RST (SO_LINGER 0), as a crashed peer or a middlebox would."""
    sock = client.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.transport.abort()


async def closed(client: ClientConnection, timeout: float = WAIT_TIMEOUT) -> Optional[int]:
    """Wait (hang guard) until the client's connection is closed; return the close code it received."""
    await asyncio.wait_for(client.wait_closed(), timeout)
    return client.close_code


def tasks_now() -> int:
    return len(asyncio.all_tasks())


__all__ = ("HOST", "WsScenario", "TrackedConnection", "reset_client", "closed", "tasks_now")
