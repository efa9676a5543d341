"""conntable.websockets.serve: websockets' server, each connection in the manager, one task each."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from aio_support import WAIT_TIMEOUT, eventually
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve as plain_serve
from websockets.exceptions import InvalidStatus
from ws_support import HOST, WsScenario, closed, tasks_now

from conntable.aio import CloseReason


def test_tasks_per_connection_is_one(run):
    """The handler task and nothing else: no keepalive task, no timer task, with the heartbeat on."""

    async def scenario():
        sc = WsScenario(idle_timeout=60.0)
        server = await sc.start(ping_interval=5.0)
        first, = await sc.connect(1)  # binds the manager and starts the heartbeat's sweeper
        await first.send("hello")
        assert await first.recv() == "hello"
        before = tasks_now()
        more = await sc.connect(20)
        await eventually(lambda: len(server.heartbeat) == 21, "every connection on the heartbeat")
        assert tasks_now() - before == 20
        assert len(sc.mgr) == 21 and sc.mgr.stats().tasks_active == 0
        for client in more:
            await client.send(b"\x00" * 10)
            assert await client.recv() == b"\x00" * 10
        await sc.finish()

    run(scenario())


def test_plain_websockets_runs_two_tasks_per_connection(run):
    """The baseline the test above improves on: websockets' keepalive is a task per connection."""

    async def scenario():
        async def handler(ws):
            await ws.wait_closed()

        async with plain_serve(handler, HOST, 0) as server:
            uri = f"ws://{HOST}:{server.sockets[0].getsockname()[1]}"
            before = tasks_now()
            clients = [await connect(uri, ping_interval=None) for _ in range(10)]
            await eventually(lambda: tasks_now() - before == 20, "handler and keepalive tasks")
            for client in clients:
                await client.close()

    run(scenario())


def test_every_frame_is_activity(run):
    """A client that keeps sending outlives idle_timeout; a silent one is closed with 1001."""

    async def scenario():
        sc = WsScenario(idle_timeout=1.0, resolution=0.1, close_timeout=2.0)
        await sc.start(ping_interval=None)
        chatty, silent = await sc.connect(2)

        async def chat():
            for _ in range(400):  # bounded: far more rounds than the silent client's expiry takes
                await chatty.send("x")
                await chatty.recv()
                await asyncio.sleep(0.05)

        talker = asyncio.ensure_future(chat())
        assert await closed(silent) == 1001
        assert not talker.done()
        talker.cancel()
        await asyncio.wait([talker])
        assert sc.ended(CloseReason.IDLE) == 1 and len(sc.mgr) == 1
        await sc.finish()
        assert sorted(sc.sent_codes.values()) == [1001, 1001]  # idle, then shutdown

    run(scenario())


def test_handler_return_runs_cleanups_and_cancels_spawned_tasks(run):
    async def scenario():
        sc = WsScenario(idle_timeout=60.0)

        async def handler(ws):
            sc.spawn(ws.connection.id, asyncio.sleep(3600))
            await ws.recv()  # one message, then the handler returns and websockets closes with 1000

        await sc.start(handler)
        clients = await sc.connect(3)
        for client in clients:
            await client.send("bye")
        assert [await closed(client) for client in clients] == [1000] * 3
        await eventually(lambda: sc.ended() == 3, "cleanups after the handlers returned")
        # Cancelled when their connection ended; a cancelled task is done only once it has run
        # its cancellation, a loop turn or so later (3.12 and later schedule it differently): wait for it.
        assert len(sc.spawned) == 3
        await asyncio.wait(sc.spawned, timeout=WAIT_TIMEOUT)  # a hang guard, not a timing assertion
        assert all(task.cancelled() for task in sc.spawned)
        assert dict(sc.cleanups) == {conn_id: 1 for conn_id in sc.made}
        await sc.finish()

    run(scenario())


def test_websockets_options_pass_through(run):
    """process_request, subprotocols and select_subprotocol behave as in websockets."""

    async def scenario():
        sc = WsScenario(idle_timeout=60.0)
        chosen = []

        def process_request(ws, request):
            if request.path == "/forbidden":
                return ws.respond(403, "no\n")
            return None

        def select_subprotocol(ws, offered):
            chosen.append(type(ws))
            return "chat" if "chat" in offered else None

        await sc.start(process_request=process_request, select_subprotocol=select_subprotocol,
                       subprotocols=["chat"], compression=None)
        client, = await sc.connect(1, subprotocols=["chat"])
        assert client.subprotocol == "chat" and chosen == [sc.connection_class]
        uri = sc.uri
        sc.uri = uri + "/forbidden"
        with pytest.raises(InvalidStatus) as refused:
            await sc.connect(1)
        assert refused.value.response.status_code == 403
        sc.uri = uri
        await eventually(lambda: len(sc.mgr) == 1, "the refused handshake's connection gone")
        await sc.finish()

    run(scenario())


def test_importing_does_not_shadow_the_websockets_library():
    code = (
        "import conntable.websockets, websockets, websockets.asyncio.server as s; "
        "assert 'conntable' not in websockets.__file__, websockets.__file__; "
        "assert conntable.websockets.ServerConnection.__mro__[1] is s.ServerConnection"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
