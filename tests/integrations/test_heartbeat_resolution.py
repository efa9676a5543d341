"""Both heartbeat integrations size the manager they make by one rule (``conntable.aio.heartbeat_resolution``).

A ``ping_interval`` (or ``ping_timeout``) below a second gets a manager fine
enough for it, a ValueError never; real servers on 127.0.0.1, closed again.
"""

from __future__ import annotations

import pytest
from aio_support import HOST
from aiohttp import web

import conntable.aiohttp
import conntable.websockets
from conntable.aio import heartbeat_resolution


async def _handler(ws) -> None:
    await ws.wait_closed()


@pytest.mark.parametrize("interval, timeout", [(0.1, 0.1), (20.0, 0.3), (20.0, 20.0), (None, None)])
def test_websockets_and_aiohttp_managers_follow_the_rule(run, interval, timeout):
    async def scenario():
        expected = heartbeat_resolution(interval, timeout, 0.5)
        ws_server = await conntable.websockets.serve(_handler, HOST, 0, ping_interval=interval, ping_timeout=timeout)
        aio_server = await conntable.aiohttp.serve(web.Application(), HOST, 0, ping_interval=interval,
                                                   ping_timeout=timeout)
        try:
            assert ws_server.manager.resolution == pytest.approx(expected)
            assert aio_server.manager.resolution == pytest.approx(expected)
            assert (ws_server.heartbeat is None) == (aio_server.heartbeat is None) == (interval is None)
        finally:
            ws_server.close()
            await ws_server.wait_closed()
            await aio_server.close()

    run(scenario())
