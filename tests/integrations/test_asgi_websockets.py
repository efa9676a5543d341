"""ConnectionMiddleware on real servers: uvicorn (websockets, wsproto, websockets-sansio) and hypercorn, real clients.

Every test ends with :meth:`AsgiScenario.finish`: registries empty, every
cleanup run exactly once, closed counts adding up to what was opened and
refused, no task left, file descriptors back.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest
from aio_support import HOST, WAIT_TIMEOUT, eventually, reset
from asgi_support import SERVERS, AsgiScenario, quiet_server_logs
from server_fixtures import run_on
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conntable.aio import CloseReason
from conntable.asgi import ConnectionMiddleware, WebSocketClosed, websocket_of


@pytest.fixture(params=SERVERS)
def server_kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def go(coro: Any) -> Any:
    return run_on("asyncio", coro)


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """A plain ASGI WebSocket echo: accept, echo until disconnect."""
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})


async def stubborn(scope: Any, receive: Any, send: Any) -> None:
    """Accepts, and after its first websocket.disconnect waits for ever: must be cancelled."""
    await receive()
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass
    await asyncio.Event().wait()


async def close_of(client: Any) -> Any:
    """Wait until the server closes ``client``; return the close frame it got."""
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(client.recv(), WAIT_TIMEOUT)
    return client.protocol.close_rcvd


def test_echo_registry_and_client_close(loop_kind: str, server_kind: str) -> None:
    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=30.0)
        await s.start(echo)
        a, b = await s.connect(2, path="/chat")
        await a.send("hello")
        assert await asyncio.wait_for(a.recv(), WAIT_TIMEOUT) == "hello"
        records = list(s.mw.websockets.values())
        assert len(records) == 2 and {r.path for r in records} == {"/chat"}
        assert all(r.state == "open" and r.client[0] == HOST for r in records)
        assert {r.client[1] for r in records} == {a.local_address[1], b.local_address[1]}
        assert s.mw.stats().active == 2
        await a.close()
        await b.close()
        await s.settled(2)
        assert set(s.reasons.values()) == {CloseReason.PEER}
        assert all(m["type"] == "websocket.disconnect" for m in s.last_received.values())
        await s.finish()

    run_on(loop_kind, main())


def test_idle_closes_with_1001_and_app_gets_disconnect(server_kind: str) -> None:
    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=0.3, resolution=0.05)
        await s.start(echo)
        busy, idle = await s.connect(2)
        for _ in range(8):  # the busy one keeps talking past the idle timeout
            await busy.send("x")
            await busy.recv()
            await asyncio.sleep(0.1)
        frame = await close_of(idle)
        assert (frame.code, frame.reason) == (1001, "idle timeout")
        await s.settled(1)
        [(conn_id, reason)] = s.reasons.items()
        assert reason is CloseReason.IDLE
        assert s.last_received[conn_id] == {"type": "websocket.disconnect", "code": 1001}
        assert len(s.mw.websockets) == 1  # the busy one is still open
        await s.finish()

    go(main())


def test_app_that_ignores_disconnect_is_cancelled_after_the_close_timeout(server_kind: str) -> None:
    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=0.2, close_timeout=0.3, resolution=0.05)
        await s.start(stubborn)
        [client] = await s.connect(1)
        frame = await close_of(client)
        assert frame.code == 1001
        await s.settled(1)
        assert list(s.reasons.values()) == [CloseReason.IDLE]
        assert s.mw.stats().aborted_total == 1
        await s.finish()

    go(main())


def test_client_gone_app_stuck_is_cancelled(server_kind: str) -> None:
    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=30.0, close_timeout=0.3)
        await s.start(stubborn)
        [client] = await s.connect(1)
        await client.close()
        await s.settled(1)  # within the close timeout, not the idle timeout
        assert list(s.reasons.values()) == [CloseReason.PEER]
        await s.finish()

    go(main())


def test_limit_refused_with_503_and_the_app_never_runs(server_kind: str) -> None:
    async def main() -> None:
        s = AsgiScenario(server_kind, max_websockets=2, retry_after=7)
        await s.start(echo)
        await s.connect(2)
        for _ in range(3):
            with pytest.raises(InvalidStatus) as refused:
                await s.connect(1)
            response = refused.value.response
            assert response.status_code == 503 and response.headers["Retry-After"] == "7"
            assert b"Retry later" in response.body
        assert s.app_calls == 2
        stats = s.mw.stats()
        assert stats.rejected_total == 3 and stats.closed_total["rejected"] == 3
        for client in s.clients:  # room again (the breaker reopens below 90% of the limit: at 1 of 2)
            await client.close()
        await s.settled(2)
        await s.connect(1)
        assert s.app_calls == 3
        await s.finish()

    go(main())


def test_limit_without_the_denial_extension_closes_before_accept(server_kind: str) -> None:
    def strip_extensions(app: Any) -> Any:
        async def stripped(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "websocket":
                scope = {**scope, "extensions": {}}
            await app(scope, receive, send)

        return stripped

    async def main() -> None:
        s = AsgiScenario(server_kind, max_websockets=1)
        await s.start(echo, outer=strip_extensions)
        await s.connect(1)
        with pytest.raises(InvalidStatus) as refused:
            await s.connect(1)
        assert refused.value.response.status_code == 403  # the server's answer to a close before accept
        assert s.app_calls == 1 and s.mw.stats().rejected_total == 1
        await s.finish()

    go(main())


def test_handshake_timeout_refuses_an_app_that_never_accepts(server_kind: str) -> None:
    async def never_accepts(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # websocket.connect
        message = await receive()  # held until the handshake deadline hands it the disconnect
        assert message["type"] == "websocket.disconnect"

    async def main() -> None:
        s = AsgiScenario(server_kind, handshake_timeout=0.3, resolution=0.05)
        await s.start(never_accepts)
        with pytest.raises(InvalidStatus) as refused:
            await s.connect(1)
        assert refused.value.response.status_code == 403
        await s.settled(1)
        assert list(s.reasons.values()) == [CloseReason.HANDSHAKE]
        await s.finish()

    go(main())


def test_lifetime_closes_a_busy_websocket(server_kind: str) -> None:
    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=30.0, max_lifetime=0.4, resolution=0.05)
        await s.start(echo)
        [client] = await s.connect(1)
        with pytest.raises(ConnectionClosed):
            for _ in range(int(WAIT_TIMEOUT / 0.05)):
                await client.send("x")
                await asyncio.wait_for(client.recv(), WAIT_TIMEOUT)
                await asyncio.sleep(0.05)
        assert (client.protocol.close_rcvd.code, client.protocol.close_rcvd.reason) == (1001, "lifetime exceeded")
        await s.settled(1)
        assert list(s.reasons.values()) == [CloseReason.LIFETIME]
        await s.finish()

    go(main())


def test_app_exception_ends_once_with_error(server_kind: str) -> None:
    quiet_server_logs()

    async def explodes(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("the app broke")

    async def main() -> None:
        s = AsgiScenario(server_kind)
        await s.start(explodes)
        [client] = await s.connect(1)
        await client.send("boom")
        await close_of(client)
        await s.settled(1)
        assert list(s.reasons.values()) == [CloseReason.ERROR]
        await s.finish()

    go(main())


def test_client_reset_ends_once(server_kind: str) -> None:
    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=30.0, close_timeout=0.5)
        await s.start(echo)
        [client] = await s.connect(1)
        await eventually(lambda: len(s.mw.websockets) == 1, "registered")
        reset(client.transport.get_extra_info("socket").dup())  # RST from the client's socket
        client.transport.abort()
        await s.settled(1)
        assert list(s.reasons.values())[0] in (CloseReason.PEER, CloseReason.ERROR)
        s.clients.clear()
        await s.finish()

    go(main())


def test_shutdown_closes_every_websocket_with_1001_within_the_grace(server_kind: str) -> None:
    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=30.0, close_timeout=0.5)
        await s.start(echo)
        clients = await s.connect(5)
        summary = await s.mw.shutdown(5.0)
        for client in clients:
            frame = await close_of(client)
            assert (frame.code, frame.reason) == (1001, "server shutdown")
        assert summary.websockets.closed_gracefully == 5 and summary.websockets.aborted == 0
        assert set(s.reasons.values()) == {CloseReason.SHUTDOWN}
        with pytest.raises(InvalidStatus) as refused:  # still listening: refused while shut down
            await s.connect(1)
        assert refused.value.response.status_code == 503
        await s.finish()

    go(main())


def test_shutdown_cancels_apps_that_outlive_the_grace(server_kind: str) -> None:
    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=30.0, close_timeout=0.3)
        await s.start(stubborn)
        await s.connect(3)
        summary = await s.mw.shutdown(0.3)
        assert summary.websockets.aborted == 3
        assert s.mw.stats().active == 0
        assert set(s.reasons.values()) == {CloseReason.SHUTDOWN}
        await s.finish()

    go(main())


def test_hypercorn_shutdown_trigger_closes_with_1001_first() -> None:
    async def main() -> None:
        s = AsgiScenario("hypercorn", idle_timeout=30.0)
        await s.start(echo, shutdown_first=True)
        clients = await s.connect(3)
        stopping = asyncio.ensure_future(s.server.stop())
        for client in clients:
            assert (await close_of(client)).code == 1001
        await stopping
        assert set(s.reasons.values()) == {CloseReason.SHUTDOWN}
        await s.finish()

    go(main())


def test_server_stop_bounds_apps_that_ignore_the_servers_close(server_kind: str) -> None:
    """uvicorn and hypercorn close WebSockets themselves before lifespan.shutdown; stuck apps still end."""
    if server_kind == "hypercorn" and sys.version_info >= (3, 12):
        # hypercorn's shutdown awaits Server.wait_closed() before its graceful_timeout; since CPython
        # 3.12.1 that waits for every connection, so a stuck app holds hypercorn for ever and the
        # middleware never hears of the shutdown. The remedy (the README says so) is hypercorn's
        # shutdown_trigger=middleware.shutdown_trigger(...): test_hypercorn_shutdown_trigger_closes_with_1001_first.
        pytest.skip("hypercorn on CPython 3.12+ cannot stop with a stuck app unless given the middleware's shutdown_trigger")

    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=30.0, close_timeout=0.3)
        await s.start(stubborn)
        await s.connect(2)
        await s.server.stop()  # uvicorn: 1012 and disconnects; hypercorn: cancels after its grace
        await s.settled(2)
        await s.finish()

    go(main())


def test_broadcast_survives_slow_and_dead_clients(server_kind: str) -> None:
    stall = asyncio.Event  # a send on /slow never completes, as to a client that stopped reading

    def slow_sends(app: Any) -> Any:
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "websocket" and scope["path"] == "/slow":
                async def stalled_send(message: Any) -> None:
                    if message["type"] == "websocket.send":
                        await stall().wait()
                    await send(message)

                await app(scope, receive, stalled_send)
                return
            await app(scope, receive, send)

        return wrapped

    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=30.0, close_timeout=0.3)
        await s.start(echo, outer=slow_sends)
        fast = await s.connect(3)
        [slow] = await s.connect(1, path="/slow")
        [dead] = await s.connect(1)
        await eventually(lambda: len(s.mw.websockets) == 5, "5 registered")
        by_path = {ws.path: ws.id for ws in s.mw.websockets.values()}
        dead.transport.abort()  # gone without a close; the server may not know yet
        result = await s.mw.broadcast("news", timeout=0.3)
        assert by_path["/slow"] in result.dropped
        assert result.sent + len(result.dropped) == 5 and result.sent >= 3
        for client in fast:
            assert await asyncio.wait_for(client.recv(), WAIT_TIMEOUT) == "news"
        await s.settled(2)  # the slow one (closed) and the dead one
        again = await s.mw.broadcast(b"more", timeout=1.0)
        assert again.sent == 3 and not again.dropped
        for client in fast:
            assert await asyncio.wait_for(client.recv(), WAIT_TIMEOUT) == b"more"
        s.clients.remove(dead)
        s.clients.remove(slow)
        slow.transport.abort()
        await s.finish()

    go(main())


def test_sends_after_the_close_raise_websocket_closed(server_kind: str) -> None:
    seen: list = []

    async def sends_after_disconnect(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        assert (await receive())["type"] == "websocket.disconnect"
        try:
            await send({"type": "websocket.send", "text": "late"})
        except WebSocketClosed as exc:
            seen.append(exc)

    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=0.2, resolution=0.05)
        await s.start(sends_after_disconnect)
        [client] = await s.connect(1)
        await close_of(client)
        await s.settled(1)
        assert len(seen) == 1 and isinstance(seen[0], OSError)
        await s.finish()

    go(main())


def test_tasks_and_cleanups_of_a_websocket_end_with_it(server_kind: str) -> None:
    spawned: list = []

    async def with_task(scope: Any, receive: Any, send: Any) -> None:
        ws = websocket_of(scope)
        spawned.append(ws.spawn(asyncio.Event().wait()))
        await echo(scope, receive, send)

    async def main() -> None:
        s = AsgiScenario(server_kind, idle_timeout=30.0)
        await s.start(with_task)
        clients = await s.connect(3)
        assert s.mw.stats().tasks_active == 3
        await clients[0].close()
        await s.settled(1)
        await eventually(lambda: spawned[0].done(), "the first task cancelled")
        assert spawned[0].cancelled() and not any(t.done() for t in spawned[1:])
        await s.finish()
        assert all(t.cancelled() for t in spawned)

    go(main())


def test_options_are_checked() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ValueError):
        ConnectionMiddleware(app, idle_timeout=-1)
    with pytest.raises(TypeError):
        ConnectionMiddleware(app, retry_after="5")
    with pytest.raises(ValueError):
        ConnectionMiddleware(app, shutdown_grace=-1)
    with pytest.raises(ValueError):
        ConnectionMiddleware(app, max_websockets=0)
