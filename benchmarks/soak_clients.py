"""The soak run's clients: one round of connections of every kind, and what each saw.

Kinds, by share of ``per_round`` (see ``MIX``):

* ``idle``         -- open, send nothing; the idle server closes them (1001);
* ``unresponsive`` -- open, then stop reading: they never answer the
  heartbeat server's pings, which fails them (1011) and aborts them
  ``close_timeout`` later;
* ``reset``        -- open, one message and its echo, then a TCP RST (half on
  each of those two servers);
* ``graceful``     -- open, one message and its echo, then a normal close (1000);
* ``half_open``    -- TCP only: half an HTTP request, then a TCP RST (opening
  handshake cut short);
* ``held``, ``refused`` -- the limited server's ``max_connections`` held
  idle (closed 1001), then as many more, which get HTTP 503.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, Dict, List

from harness import HOST
from wsclients import connect_all, reset

#: Share of each round's connections per kind; ``limited`` is split into held and refused.
MIX = {"idle": 0.30, "unresponsive": 0.20, "reset": 0.20, "graceful": 0.10, "half_open": 0.10, "limited": 0.10}
HALF_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"


def kind_counts(per_round: int) -> Dict[str, int]:
    """Connections per kind in a round of ``per_round``."""
    counts = {kind: int(share * per_round) for kind, share in MIX.items()}
    limited = max(2, counts.pop("limited"))
    counts["held"] = counts["refused"] = limited // 2
    return counts


async def _exchange(client: Any) -> None:
    await client.send("hello")
    await client.recv()


async def _half_open(port: int) -> None:
    _reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(HALF_REQUEST)
    await writer.drain()
    reset(writer.transport)


async def _refused(uri: str) -> int:
    """Try to open a connection the breaker must refuse; its HTTP status (101 if it was not refused)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    try:
        client = await connect(uri, ping_interval=None, open_timeout=30)
    except InvalidStatus as refusal:
        return refusal.response.status_code
    client.transport.abort()
    return 101


class RoundClients:
    """The clients of one round; ``unresponsive`` stay open until :meth:`cleanup`."""

    def __init__(self, ports: Dict[str, int], per_round: int, settle: float) -> None:
        self.uri = {name: f"ws://{HOST}:{port}" for name, port in ports.items()}
        self.ports = ports
        self.counts = kind_counts(per_round)
        self.settle = settle  # how long the idle and held ones may take to be closed
        self.unresponsive: List[Any] = []
        self.failures: List[str] = []

    async def run(self) -> Dict[str, Any]:
        """Open every kind; wait until the server closed the idle and held ones; report what was seen."""
        counts = self.counts
        idle = await self._open("idle", counts["idle"])
        held = await self._open("limited", counts["held"])
        statuses = await asyncio.gather(*(_refused(self.uri["limited"]) for _ in range(counts["refused"])),
                                        return_exceptions=True)
        self.unresponsive = await self._open("heartbeat", counts["unresponsive"])
        for client in self.unresponsive:
            client.transport.pause_reading()  # pings sit in the kernel's buffer, unanswered
        half = counts["reset"] // 2
        resets = await self._open("idle", half) + await self._open("heartbeat", counts["reset"] - half)
        graceful = await self._open("heartbeat", counts["graceful"])
        await self._gather("exchange", [_exchange(client) for client in resets + graceful])
        for client in resets:
            reset(client.transport)
        await self._gather("graceful close", [client.close() for client in graceful])
        await self._gather("half-open", [_half_open(self.ports[name]) for name in ("idle", "heartbeat")
                                         for _ in range(counts["half_open"] // 2)])
        try:
            await asyncio.wait_for(asyncio.gather(*(client.wait_closed() for client in idle + held)), self.settle)
        except asyncio.TimeoutError:
            self.failures.append(f"idle connections still open {self.settle:g} s into the round")
        return {
            "idle_1001": sum(1 for c in idle if c.close_code == 1001),
            "held_1001": sum(1 for c in held if c.close_code == 1001),
            "refused_503": sum(1 for status in statuses if status == 503),
            "graceful_1000": sum(1 for c in graceful if c.close_code == 1000),
            "failures": self.failures,
        }

    def cleanup(self) -> None:
        """Close what the server left us: the unresponsive ones (already reset by the server)."""
        for client in self.unresponsive:
            client.transport.abort()

    async def _open(self, server: str, count: int) -> List[Any]:
        clients, failures = await connect_all(self.uri[server], count)
        self.failures += [f"could not open a connection to the {server} server: {failure!r}"
                          for failure in failures[:3]]
        return clients

    async def _gather(self, what: str, steps: List[Coroutine[Any, Any, Any]]) -> None:
        for outcome in await asyncio.gather(*steps, return_exceptions=True):
            if isinstance(outcome, BaseException):
                self.failures.append(f"{what}: {outcome!r}")
