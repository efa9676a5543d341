"""How connections open, stay open while active, and end: idle, handshake, lifetime, peer."""

from __future__ import annotations

import asyncio
import gc

from aio_support import HOST, Scenario, Tracked, eventually, read_until_eof, reset

from conntable.aio import CloseReason, Connection, ConnectionState, ManagedBufferedProtocol


def test_idle_connections_are_closed(run):
    async def scenario():
        sc = Scenario(idle_timeout=0.2, resolution=0.02, close_timeout=2.0)
        port = await sc.serve()
        socks = await sc.connect(port, 20, payload=b"ping")
        await sc.connected(20)
        for sock in socks:  # each peer gets its echo, then the server's close
            assert await read_until_eof(sock) == b"ping"
        await eventually(lambda: sc.ended() == 20, "every connection ended")
        assert sc.ended(CloseReason.IDLE) == 20
        summary = await sc.finish()
        assert summary.closed_gracefully == 0 and summary.aborted == 0
        assert sc.mgr.stats().closed_total["idle"] == 20

    run(scenario())


def test_expired_connections_are_not_kept_alive_by_the_sleeping_sweeper(run):
    """Once every connection has ended, no record of one survives a collection.

    (The sweeper used to keep its last expired batch in a local variable while
    it slept, and with it every Connection of that batch.)
    """

    async def scenario():
        # Only this test's connections count: an earlier test's failure report may hold its own.
        gc.collect()
        earlier = {id(o) for o in gc.get_objects() if isinstance(o, Connection)}
        sc = Scenario(idle_timeout=0.2, resolution=0.02, close_timeout=2.0)
        port = await sc.serve()
        await sc.connect(port, 20, payload=b"ping")
        await sc.connected(20)
        await eventually(lambda: sc.ended() == 20 and len(sc.mgr) == 0, "every connection ended")
        await asyncio.sleep(0.05)  # the sweeper is asleep again, nothing left to expire
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, Connection) and id(o) not in earlier]
        assert alive == []
        await sc.finish()

    run(scenario())


def test_silent_peers_hit_the_handshake_timeout(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0, handshake_timeout=0.2, resolution=0.02)
        port = await sc.serve()
        await sc.connect(port, 10)                   # never send a byte
        talkers = await sc.connect(port, 5, b"hi")  # send one, then stay quiet
        await sc.connected(15)
        await eventually(lambda: sc.ended() == 10, "silent peers closed")
        assert sc.ended(CloseReason.HANDSHAKE) == 10
        for sock in talkers:
            assert await asyncio.get_running_loop().sock_recv(sock, 2) == b"hi"
        # The talkers passed the handshake: open, and only the shutdown ends them.
        open_states = [sc.mgr.get(conn_id).state for conn_id in sc.made if conn_id not in sc.reasons]
        assert open_states == [ConnectionState.OPEN] * 5
        summary = await sc.finish()
        assert summary.closed_gracefully == 5
        assert sc.ended(CloseReason.SHUTDOWN) == 5

    run(scenario())


def test_busy_connections_end_at_max_lifetime(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0, max_lifetime=0.3, resolution=0.02)
        port = await sc.serve()
        socks = await sc.connect(port, 8, b"x")
        await sc.connected(8)
        loop = asyncio.get_running_loop()

        async def keep_talking(sock):
            try:
                while True:
                    await loop.sock_sendall(sock, b"x")
                    await asyncio.sleep(0.01)
            except OSError:  # the server closed it: that is what we wait for
                pass

        talkers = [asyncio.ensure_future(keep_talking(sock)) for sock in socks]
        await eventually(lambda: sc.ended() == 8, "lifetime reached")
        assert sc.ended(CloseReason.LIFETIME) == 8
        for task in talkers:
            task.cancel()
        await asyncio.gather(*talkers, return_exceptions=True)
        await sc.finish()

    run(scenario())


def test_activity_and_touch_keep_connections_open(run):
    async def scenario():
        # Margins are wide (a busy peer speaks every 0.05 s against a 0.5 s
        # idle timeout) so that a stalled shared machine cannot fake an expiry.
        sc = Scenario(idle_timeout=0.5, resolution=0.02)

        class Heartbeat(Tracked):
            """Never receives anything, but reports activity through touch()."""

            def connection_made(self, transport):
                super().connection_made(transport)
                self.spawn(self.beat())

            async def beat(self):
                while True:
                    self.touch()
                    await asyncio.sleep(0.05)

        port = await sc.serve()
        silent = await sc.connect(port, 5)
        busy = await sc.connect(port, 5, b"x")
        await sc.connected(10)
        heart_server = await sc.mgr.create_server(lambda: Heartbeat(sc), HOST, 0)
        await sc.connect(heart_server.sockets[0].getsockname()[1], 3)
        await sc.connected(13)
        loop = asyncio.get_running_loop()
        while sc.ended() < 5:  # until the silent ones are gone, the busy ones keep talking
            for sock in busy:
                await loop.sock_sendall(sock, b"x")
            await asyncio.sleep(0.05)
        # Keep going for three more idle periods: nobody else may expire.
        for _ in range(30):
            for sock in busy:
                await loop.sock_sendall(sock, b"x")
            await asyncio.sleep(0.05)
        assert sc.ended() == sc.ended(CloseReason.IDLE) == 5
        assert len(sc.mgr) == 8
        assert [await read_until_eof(sock) for sock in silent] == [b""] * 5
        summary = await sc.finish()
        assert summary.closed_gracefully == 8
        assert summary.tasks_cancelled == 3

    run(scenario())


def test_peer_close_and_peer_reset(run):
    async def scenario():
        sc = Scenario(idle_timeout=60.0)
        port = await sc.serve()
        closers = await sc.connect(port, 10, b"a")
        resetters = await sc.connect(port, 10, b"b")
        await sc.connected(20)
        loop = asyncio.get_running_loop()
        for sock in closers + resetters:  # wait for the echo: the server is reading
            assert await loop.sock_recv(sock, 1) in (b"a", b"b")
        for sock in closers:
            sock.close()
        for sock in resetters:
            reset(sock)
        await eventually(lambda: sc.ended() == 20, "peers gone")
        assert sc.ended(CloseReason.PEER) == 10
        assert sc.ended(CloseReason.ERROR) == 10
        await sc.finish()

    run(scenario())


class BufferedEcho(ManagedBufferedProtocol):
    """A BufferedProtocol: reads into its own buffer, echoes what arrived."""

    def __init__(self, scenario):
        self.scenario = scenario
        self.buffer = bytearray(1024)

    def connection_made(self, transport):
        self.transport = transport
        self.scenario.track(self.connection.id)

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.transport.write(bytes(self.buffer[:nbytes]))


def test_buffered_protocol(run):
    async def scenario():
        sc = Scenario(idle_timeout=0.3, resolution=0.02)
        port = await sc.serve(lambda: BufferedEcho(sc))
        socks = await sc.connect(port, 6, b"buffered")
        await sc.connected(6)
        conn = sc.mgr.get(sc.made[0])
        assert isinstance(conn.protocol, BufferedEcho)
        assert conn.transport.get_protocol().protocol is conn.protocol
        for sock in socks:
            assert await read_until_eof(sock) == b"buffered"
        await eventually(lambda: sc.ended() == 6, "idle")
        assert sc.ended(CloseReason.IDLE) == 6
        await sc.finish()

    run(scenario())


def test_plain_protocol_through_loop_create_server(run):
    async def scenario():
        sc = Scenario(idle_timeout=0.2, resolution=0.02)

        class Plain(asyncio.Protocol):  # knows nothing of the manager
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                self.transport.write(data.upper())

        loop = asyncio.get_running_loop()
        server = await loop.create_server(sc.mgr.protocol_factory(Plain), HOST, 0)
        sc.mgr.add_server(server)
        socks = await sc.connect(server.sockets[0].getsockname()[1], 4, b"abc")
        await eventually(lambda: len(sc.mgr) == 4, "accepted")
        for conn_id in range(1, 5):  # ids count from 1
            sc.track(conn_id)
        assert [await read_until_eof(sock) for sock in socks] == [b"ABC"] * 4
        await eventually(lambda: sc.ended() == 4, "idle")
        assert sc.ended(CloseReason.IDLE) == 4
        assert server.is_serving()
        summary = await sc.finish()
        assert summary.servers_closed == 1 and not server.is_serving()

    run(scenario())


def test_client_connections(run):
    async def scenario():
        finished = []

        async def plain_peer(reader, writer):  # unmanaged, never closes first
            await reader.read()
            writer.close()
            await writer.wait_closed()
            finished.append(writer)

        server = await asyncio.start_server(plain_peer, HOST, 0)  # before the fd count starts
        port = server.sockets[0].getsockname()[1]
        sc = Scenario(idle_timeout=0.2, resolution=0.02)
        for _ in range(5):
            transport, protocol = await sc.mgr.create_connection(lambda: Tracked(sc), HOST, port)
            assert isinstance(protocol, Tracked) and protocol.transport is transport
        await eventually(lambda: sc.ended() == 5, "client connections idle")
        assert sc.ended(CloseReason.IDLE) == 5
        await eventually(lambda: len(finished) == 5, "the peer saw every close")
        await sc.finish()
        server.close()
        await server.wait_closed()

    run(scenario())
