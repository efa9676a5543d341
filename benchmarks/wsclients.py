"""The client side of the WebSocket benchmarks: opening many connections, talking on some, resetting others.

Clients are websockets' own (``websockets.asyncio.client``) with keepalive
off: a client that pinged would be activity the server's idle timeout sees.
Their protocol still answers the server's pings, as any client would.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any, Dict, List, Optional, Tuple

#: Connections opened concurrently: enough to keep the server busy, few enough not to overflow its backlog.
BATCH = 200
MESSAGE = "m" * 64
#: With ``talk(spread=True)``, the bursts a round is cut into.
SLICES = 10


async def connect_all(uri: str, count: int, opened: Optional[List[Any]] = None,
                      **options: Any) -> Tuple[List[Any], List[BaseException]]:
    """Open ``count`` connections, ``BATCH`` at a time; return the clients and the failures.

    ``opened``, if given, gets each client the moment it is open, before its
    batch is done (one slow handshake can hold a batch up for seconds).
    ``options`` go to ``websockets.asyncio.client.connect`` (and from there
    to ``loop.create_connection``, e.g. ``local_addr``).
    """
    from websockets.asyncio.client import connect

    options = {"ping_interval": None, "open_timeout": 60, **options}
    clients: List[Any] = []
    failures: List[BaseException] = []

    async def one() -> Any:
        client = await connect(uri, **options)
        if opened is not None:
            opened.append(client)
        return client

    for start in range(0, count, BATCH):
        batch = await asyncio.gather(*(one() for _ in range(min(BATCH, count - start))), return_exceptions=True)
        for outcome in batch:
            if isinstance(outcome, BaseException):
                failures.append(outcome)
            else:
                clients.append(outcome)
    return clients, failures


async def _drain(client: Any) -> None:
    """Read and drop what the server sends, so that its echoes never fill the client's queue."""
    from websockets.exceptions import ConnectionClosed

    try:
        async for _ in client:
            pass
    except ConnectionClosed:
        pass


async def talk(clients: List[Any], rate: float, message: str = MESSAGE, spread: bool = False) -> None:
    """Every client in ``clients`` sends ``message`` ``rate`` times a second and reads the echoes.

    ``clients`` may change while this runs (new clients join at the next
    round); a client that has closed is skipped. All send in one burst per
    round, or with ``spread`` in ``SLICES`` bursts spread over the round, as
    independent clients would. Runs until cancelled.
    """
    from websockets.exceptions import ConnectionClosed
    from websockets.protocol import State

    readers: Dict[Any, asyncio.Task[None]] = {}  # keyed by the client itself: ids of dead clients get reused
    slices = SLICES if spread else 1
    loop = asyncio.get_running_loop()
    next_slice = loop.time()
    try:
        while True:
            everyone = list(clients)
            for first in range(slices):
                for client in everyone[first::slices]:
                    if client not in readers:
                        readers[client] = asyncio.ensure_future(_drain(client))
                    if client.protocol.state is State.OPEN:
                        try:
                            await client.send(message)
                        except ConnectionClosed:
                            pass
                next_slice += 1.0 / rate / slices
                await asyncio.sleep(max(0.0, next_slice - loop.time()))
    finally:
        for reader in readers.values():
            reader.cancel()


def reset(transport: Any) -> None:
    """Drop a connection abruptly: SO_LINGER 0 makes the close send a TCP RST, no FIN, no close frame."""
    sock = transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
