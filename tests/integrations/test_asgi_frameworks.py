"""ConnectionMiddleware in front of a Starlette and a FastAPI app, and the HTTP requests it tracks.

Real servers (uvicorn, hypercorn), real ``websockets`` and httpx clients; each
test ends with :meth:`AsgiScenario.finish`'s exact accounting.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.

import asyncio
from typing import Any

import httpx
import pytest
from aio_support import WAIT_TIMEOUT, eventually
from asgi_support import SERVERS, AsgiScenario
from server_fixtures import run_on
from websockets.exceptions import ConnectionClosed

from conntable.aio import CloseReason


@pytest.fixture(params=SERVERS)
def server_kind(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def starlette_app(lifespan_events: list) -> Any:
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocketDisconnect

    async def chat(websocket: Any) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text("echo: " + await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    async def hello(request: Any) -> Any:
        return PlainTextResponse("hello")

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        lifespan_events.append("startup")
        yield
        lifespan_events.append("shutdown")

    return Starlette(routes=[Route("/", hello), WebSocketRoute("/ws", chat)], lifespan=lifespan)


def fastapi_app() -> Any:
    from fastapi import FastAPI, WebSocket, WebSocketDisconnect

    api = FastAPI()

    @api.get("/")
    async def root() -> dict:
        return {"ok": True}

    @api.websocket("/ws")
    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text("echo: " + await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    return api


@pytest.mark.parametrize("framework", ["starlette", "fastapi"])
def test_framework_app_websockets_idle_and_http(server_kind: str, framework: str) -> None:
    events: list = []

    async def main() -> None:
        app = starlette_app(events) if framework == "starlette" else fastapi_app()
        s = AsgiScenario(server_kind, idle_timeout=0.4, resolution=0.05)
        await s.start(app, app_lifespan=True)
        talker, silent = await s.connect(2)
        await talker.send("hi")
        assert await asyncio.wait_for(talker.recv(), WAIT_TIMEOUT) == "echo: hi"
        async with httpx.AsyncClient(base_url=s.server.url, timeout=WAIT_TIMEOUT) as http:
            answer = await http.get("/")
            assert answer.status_code == 200
        assert s.mw.http_stats().opened_total == 1 and len(s.mw.requests) == 0
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(silent.recv(), WAIT_TIMEOUT)
        assert silent.protocol.close_rcvd.code == 1001
        await s.settled(2)  # the talker went quiet too
        assert set(s.reasons.values()) == {CloseReason.IDLE}
        await s.finish()
        if framework == "starlette":
            assert events == ["startup", "shutdown"]  # the app's lifespan still runs, after conntable's

    run_on("asyncio", main())


def test_in_flight_http_requests_are_in_the_registry(server_kind: str) -> None:
    release = asyncio.Event

    async def main() -> None:
        gate = release()
        s = AsgiScenario(server_kind)

        async def slow(scope: Any, receive: Any, send: Any) -> None:
            await gate.wait()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

        await s.start(slow)
        async with httpx.AsyncClient(base_url=s.server.url, timeout=WAIT_TIMEOUT) as http:
            request = asyncio.ensure_future(http.get("/slow/path"))
            await eventually(lambda: len(s.mw.requests) == 1, "the request registered")
            [record] = s.mw.requests.values()
            assert (record.method, record.path, record.state) == ("GET", "/slow/path", "running")
            assert s.mw.http_stats().active == 1
            gate.set()
            assert (await request).text == "ok"
        await eventually(lambda: len(s.mw.requests) == 0, "the request gone")
        await s.finish()

    run_on("asyncio", main())


def test_http_timeout_cancels_a_request_that_runs_too_long(server_kind: str) -> None:
    async def main() -> None:
        s = AsgiScenario(server_kind, http_timeout=0.3, resolution=0.05)

        async def forever(scope: Any, receive: Any, send: Any) -> None:
            await asyncio.Event().wait()

        await s.start(forever)
        async with httpx.AsyncClient(base_url=s.server.url, timeout=WAIT_TIMEOUT) as http:
            answer = await http.get("/")
            assert answer.status_code == 500  # the app returned without a response: the server's answer
        stats = s.mw.http_stats()
        assert stats.closed_total["lifetime"] == 1 and stats.active == 0
        await s.finish()

    run_on("asyncio", main())
