"""TLS under the manager: counted from accept, handshake under handshake_timeout, the breaker, the reasons.

Real certificates (``trustme``), real TLS clients (asyncio's streams, the
``ssl`` module), on asyncio and uvloop. Connections that never reach the
user's protocol (their handshake never completed) are tracked by id, so the
final accounting (every connection ended once, nothing left) covers them too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import ssl
from typing import Any, List

import pytest
from aio_support import HOST, Scenario, Tracked, eventually, read_until_eof, tls_contexts

from conntable.aio import CloseReason, ConnectionManager, ConnectionState, ManagedBufferedProtocol

RESOLUTION = 0.02


def track_silent(sc: Scenario, ids: range) -> None:
    """Probe the cleanups of connections whose handshake never completes (no connection_made)."""
    for conn_id in ids:
        sc.track(conn_id)


async def tls_client(port: int, **kwargs: Any) -> Any:
    _server, client = tls_contexts()
    return await asyncio.open_connection(HOST, port, ssl=client, **kwargs)


def test_silent_tls_clients_are_held_from_accept_and_closed_by_the_handshake_timeout(run):
    async def scenario():
        server_context, _client = tls_contexts()
        sc = Scenario(idle_timeout=60.0, handshake_timeout=0.3, resolution=RESOLUTION, close_timeout=0.5)
        port = await sc.serve(ssl=server_context)
        silent = await sc.connect(port, 5)  # TCP only: no ClientHello, ever
        await eventually(lambda: len(sc.mgr) == 5, "in the table from the TCP accept")
        assert [sc.mgr.get(i).state for i in range(1, 6)] == [ConnectionState.NEW] * 5
        assert sc.made == []  # the protocol has not seen them: no TLS yet
        track_silent(sc, range(1, 6))
        assert [await read_until_eof(sock) for sock in silent] == [b""] * 5
        await eventually(lambda: sc.ended() == 5, "closed by the handshake timeout")
        assert sc.ended(CloseReason.HANDSHAKE) == 5
        reader, writer = await tls_client(port)  # a real client is served
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        assert sc.mgr.get(6).transport.get_extra_info("ssl_object") is not None
        writer.close()
        await sc.finish()

    run(scenario())


class Busy(Tracked):
    def connection_rejected(self, transport: Any) -> None:
        self.scenario.track(self.connection.id)
        assert transport.get_extra_info("ssl_object") is not None  # answered over TLS
        transport.write(b"busy\n")
        transport.close()


def test_the_breaker_counts_tls_handshakes(run):
    """max_connections=3 and three silent TLS clients: the fourth is refused, before any handshake completed."""

    async def scenario():
        server_context, client_context = tls_contexts()
        sc = Scenario(idle_timeout=60.0, handshake_timeout=5.0, resolution=RESOLUTION, max_connections=3)
        answering = await sc.serve(lambda: Busy(sc), ssl=server_context)
        silent = await sc.connect(answering, 3)
        await eventually(lambda: len(sc.mgr) == 3, "three held in their handshakes")
        track_silent(sc, range(1, 4))
        reader, writer = await tls_client(answering)  # refused, and told so over TLS
        assert await reader.read() == b"busy\n"
        writer.close()
        await eventually(lambda: len(sc.mgr) == 3, "the refused one is gone")
        stats = sc.mgr.stats()
        assert stats.rejected_total == 1 and stats.breaker_open and stats.opened_total == 3
        for sock in silent:
            sock.close()
        await eventually(lambda: len(sc.mgr) == 0, "the silent ones left")
        await sc.finish()

    run(scenario())


def test_a_refusal_nobody_answers_gets_no_handshake(run):
    """A protocol without its own connection_rejected: the refused connection is closed before any TLS work."""

    async def scenario():
        server_context, client_context = tls_contexts()
        mgr = ConnectionManager(idle_timeout=60.0, handshake_timeout=5.0, resolution=RESOLUTION, max_connections=1)
        port = (await mgr.create_server(asyncio.Protocol, HOST, 0, ssl=server_context)).sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(HOST, port, ssl=client_context)  # admitted
        with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
            await asyncio.open_connection(HOST, port, ssl=client_context)  # refused: closed, no TLS
        await eventually(lambda: len(mgr) == 1, "the refused one is gone")
        stats = mgr.stats()
        assert stats.rejected_total == 1 and stats.closed_total["rejected"] == 1 and stats.tasks_active == 0
        writer.close()
        await mgr.shutdown(grace=1.0)
        assert len(mgr) == 0 and sum(mgr.stats().closed_total.values()) == 2

    run(scenario())


class BufferedEcho(ManagedBufferedProtocol):
    def __init__(self, sc: Scenario) -> None:
        self.sc = sc
        self.buffer = bytearray(1000)  # small: the first data must come in several pieces

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.sc.track(self.connection.id)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.transport.write(bytes(self.buffer[:nbytes]))

    def eof_received(self) -> None:
        self.transport.close()


class EofEcho(Tracked):
    def eof_received(self) -> None:
        assert self.transport is not None
        self.transport.close()


@pytest.mark.parametrize("protocol", [EofEcho, BufferedEcho], ids=["stream", "buffered"])
def test_data_sent_with_the_handshake_is_all_delivered(run, protocol):
    """The TLS layer hands over the first data before start_tls returns: none of it may be lost."""

    async def scenario():
        server_context, _client = tls_contexts()
        sc = Scenario(idle_timeout=60.0, handshake_timeout=5.0, resolution=RESOLUTION)
        port = await sc.serve(lambda: protocol(sc), ssl=server_context)
        payload = bytes(range(256)) * 4096  # 1 MiB, written at once
        for _ in range(3):
            reader, writer = await tls_client(port)
            writer.write(payload)
            writer.write_eof() if writer.can_write_eof() else None
            assert await reader.readexactly(len(payload)) == payload
            writer.close()
        await eventually(lambda: sc.ended() == 3, "all three ended")
        await sc.finish()

    run(scenario())


def test_handshake_timeout_covers_tls_and_the_first_byte(run):
    async def scenario():
        server_context, _client = tls_contexts()
        sc = Scenario(idle_timeout=60.0, handshake_timeout=0.3, resolution=RESOLUTION)
        port = await sc.serve(ssl=server_context)
        reader, writer = await tls_client(port)  # completes TLS, then says nothing
        await sc.connected(1)
        assert sc.mgr.get(1).state is ConnectionState.NEW
        assert await reader.read() == b""
        await eventually(lambda: sc.ended() == 1, "closed by the handshake timeout")
        assert sc.reasons[1] is CloseReason.HANDSHAKE
        writer.close()
        await sc.finish()

    run(scenario())


def test_without_handshake_timeout_the_tls_handshake_is_still_bounded(run):
    """ssl_handshake_timeout bounds the TLS handshake (through the table); after it, idle_timeout applies."""

    async def scenario():
        server_context, _client = tls_contexts()
        sc = Scenario(idle_timeout=60.0, resolution=RESOLUTION)
        port = await sc.serve(ssl=server_context, ssl_handshake_timeout=0.3)
        silent = await sc.connect(port, 1)
        await eventually(lambda: len(sc.mgr) == 1, "registered at accept")
        track_silent(sc, range(1, 2))
        reader, writer = await tls_client(port)
        await eventually(lambda: sc.ended() == 1, "the silent one closed")
        assert sc.reasons[1] is CloseReason.HANDSHAKE
        await asyncio.sleep(0.5)
        assert sc.mgr.get(2).state is ConnectionState.OPEN  # no first-byte deadline without handshake_timeout
        writer.close()
        silent[0].close()
        await sc.finish()

    run(scenario())


def test_reasons_for_handshakes_that_fail(run):
    async def scenario():
        server_context, _client = tls_contexts()
        sc = Scenario(idle_timeout=60.0, handshake_timeout=5.0, resolution=RESOLUTION)
        port = await sc.serve(ssl=server_context)
        garbage, leaves, stays = await sc.connect(port, 3)
        await eventually(lambda: len(sc.mgr) == 3, "registered")
        track_silent(sc, range(1, 4))
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(garbage, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # not TLS
        leaves.shutdown(socket.SHUT_WR)  # the client's EOF in the middle of the handshake
        await eventually(lambda: sc.ended() == 2, "the failed handshakes ended")
        assert (sc.reasons[1], sc.reasons[2]) == (CloseReason.ERROR, CloseReason.PEER)
        summary = await sc.finish()  # the third is still in its handshake: shutdown closes it
        assert sc.reasons[3] is CloseReason.SHUTDOWN and summary.closed_gracefully == 1

    run(scenario())


def test_a_server_doing_its_own_tls_is_reported(run, loop_kind, caplog):
    """add_server cannot cover a loop-made TLS server's handshakes: asyncio's shows it, and that is logged."""

    async def scenario():
        server_context, _client = tls_contexts()
        mgr = ConnectionManager()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(mgr.protocol_factory(asyncio.Protocol), HOST, 0, ssl=server_context)
        mgr.add_server(server)
        await mgr.shutdown()

    with caplog.at_level(logging.WARNING, logger="conntable.aio"):
        run(scenario())
    warned = "does its own TLS handshakes" in caplog.text
    assert warned is (loop_kind == "asyncio")  # uvloop's server does not tell


def test_tls_arguments_are_checked_before_serving(run):
    async def scenario():
        server_context, _client = tls_contexts()
        mgr = ConnectionManager()
        for kwargs, error in (
            ({"ssl": True}, TypeError),  # a server needs a context
            ({"ssl_handshake_timeout": 1.0}, ValueError),  # without ssl
            ({"ssl": server_context, "ssl_handshake_timeout": math.inf}, ValueError),
            ({"ssl": server_context, "ssl_handshake_timeout": "5"}, TypeError),
            ({"ssl": server_context, "ssl_shutdown_timeout": 0}, ValueError),
        ):
            with pytest.raises(error):
                mgr.protocol_factory(asyncio.Protocol, **kwargs)
            with pytest.raises(error):
                await mgr.create_server(asyncio.Protocol, HOST, 0, **kwargs)
        await mgr.shutdown()

    run(scenario())


def test_many_tls_clients_at_once(run):
    """A burst of real TLS clients: all served, all accounted for."""

    async def scenario():
        server_context, _client = tls_contexts()
        sc = Scenario(idle_timeout=60.0, handshake_timeout=10.0, resolution=RESOLUTION)
        port = await sc.serve(ssl=server_context)

        async def one(i: int) -> bytes:
            reader, writer = await tls_client(port)
            writer.write(b"%d" % i)
            echoed = await reader.readexactly(len(b"%d" % i))
            writer.close()
            return echoed

        echoed: List[bytes] = await asyncio.gather(*(one(i) for i in range(50)))
        assert echoed == [b"%d" % i for i in range(50)]
        await eventually(lambda: sc.ended() == 50, "all ended")
        await sc.finish()

    run(scenario())
