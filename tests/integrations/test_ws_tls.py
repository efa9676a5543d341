"""conntable.websockets.serve(ssl=...): TLS connections counted from accept, bounded, refused with 503 over TLS.

websockets hands ``ssl`` to the loop, which runs the TLS handshake before
anyone counts the connection: 30 clients that never send a ClientHello were
all held with ``max_connections=5``, and the breaker never opened. Here the
manager runs the handshakes. Real certificates (``trustme``), real
``websockets`` clients over ``wss://``, on both loops, with the exact
accounting of ``WsScenario``.
"""

from __future__ import annotations


import pytest
from aio_support import Scenario, eventually, tls_contexts
from websockets.exceptions import InvalidStatus
from ws_support import WsScenario

from conntable.aio import CloseReason

SILENT = 30
LIMIT = 5


def test_silent_tls_clients_open_the_breaker_and_time_out(run):
    async def scenario():
        server_context, client_context = tls_contexts()
        sc = WsScenario(idle_timeout=60.0, max_connections=LIMIT, resolution=0.02, close_timeout=2.0)
        await sc.start(ssl=server_context, open_timeout=2.0, ping_interval=None)
        port = int(sc.uri.rsplit(":", 1)[1])
        silent = await Scenario.connect(sc, port, SILENT)  # plain TCP sockets, never a ClientHello
        await eventually(lambda: sc.mgr.stats().opened_total + sc.mgr.stats().rejected_total == SILENT,
                         "every silent client counted at its accept")
        for conn_id in range(1, SILENT + 1):  # none reaches websockets: their handshake never completes
            if sc.mgr.get(conn_id) is not None:
                sc.track(conn_id)
        stats = sc.mgr.stats()
        assert stats.breaker_open and stats.opened_total == LIMIT and stats.rejected_total == SILENT - LIMIT
        with pytest.raises(InvalidStatus) as refused:  # a real client meanwhile: 503, over TLS
            await sc.connect(1, ssl=client_context)
        assert refused.value.response.status_code == 503
        await eventually(lambda: len(sc.mgr) == 0, "the silent clients closed (open_timeout, close_timeout)")
        assert sc.ended(CloseReason.HANDSHAKE) == LIMIT
        client, = await sc.connect(1, ssl=client_context)  # served now
        await client.send("hello")
        assert await client.recv() == "hello"
        for sock in silent:
            sock.close()
        await sc.finish()
        assert client.close_code == 1001

    run(scenario())
