"""SessionMiddleware on a RedisSessionStore: two uvicorn "workers" sharing sessions, 503 when Redis is gone."""

from __future__ import annotations

import asyncio
import json

import httpx
from test_asgi_sessions import app as local_store_app
from test_asgi_sessions import respond, served

from conntable.asgi import SessionMiddleware, session_of
from conntable.redis_sessions import RedisSessionStore

TTL = 0.5
HEADER = "Mcp-Session-Id"  # the header form of SessionMiddleware, as MCP clients send it


async def app(scope, receive, send):
    """The same small app as test_asgi_sessions', on a store whose create and delete are coroutines."""
    session = session_of(scope)
    route = (scope["method"], scope["path"])
    if route == ("POST", "/init"):
        await session.create({"count": 0})
        await respond(send, 200, b"started")
    elif not session:
        await respond(send, 400, b"no session")
    elif route == ("GET", "/count"):
        session.data["count"] += 1  # saved by the middleware before the response starts
        await respond(send, 200, json.dumps(session.data).encode())
    elif route == ("DELETE", "/session"):
        await session.delete()
        await respond(send, 204)
    else:  # /slow streams for longer than this TTL (the request holds the session), or 404
        await local_store_app(scope, receive, send)


def stores(url, count, **kwargs):
    return [RedisSessionStore.from_url(url, TTL, resolution=0.05, **kwargs) for _ in range(count)]


def test_two_workers_share_sessions_through_redis(redis_server, run):
    async def scenario():
        first, second = stores(redis_server.url, 2)
        first_mw = SessionMiddleware(app, first, header=HEADER, cookie=None)
        second_mw = SessionMiddleware(app, second, header=HEADER, cookie=None)
        async with served(first_mw) as a, served(second_mw) as b:
            async with httpx.AsyncClient() as client:
                started = await client.post(a + "/init")
                assert started.status_code == 200
                sid = {HEADER: started.headers[HEADER]}
                assert (await client.get(b + "/count", headers=sid)).json() == {"count": 1}
                assert (await client.get(a + "/count", headers=sid)).json() == {"count": 2}
                assert (await client.get(b + "/count", headers=sid)).json() == {"count": 3}
                slow = await client.get(a + "/slow", headers=sid)  # held by A past its idle TTL (0.9 s)
                assert slow.status_code == 200 and slow.text == "......"
                assert (await client.get(b + "/count", headers=sid)).json() == {"count": 4}
                assert (await client.delete(b + "/session", headers=sid)).status_code == 204
                assert (await client.get(a + "/count", headers=sid)).status_code == 404
                idle = {HEADER: (await client.post(b + "/init")).headers[HEADER]}
                await asyncio.sleep(3 * TTL)  # not used: Redis expires it, both workers answer 404
                assert (await client.get(a + "/count", headers=idle)).status_code == 404
                assert (await client.get(b + "/count", headers=idle)).status_code == 404
        await first.shutdown()
        await second.shutdown()

    run(scenario())


def test_redis_gone_answers_503_with_retry_after(redis_server, run):
    async def scenario():
        (store,) = stores(redis_server.url, 1, max_sessions=1)
        async with served(SessionMiddleware(app, store, header=HEADER, cookie=None, retry_after=7)) as base:
            async with httpx.AsyncClient() as client:
                sid = {HEADER: (await client.post(base + "/init")).headers[HEADER]}
                full = await client.post(base + "/init")
                assert full.status_code == 503 and full.headers["retry-after"] == "7"
                redis_server.kill()
                for response in (await client.get(base + "/count", headers=sid), await client.post(base + "/init")):
                    assert response.status_code == 503 and response.headers["retry-after"] == "7"
                    assert "unavailable" in response.text
                redis_server.start()  # back, without the data: the old session is unknown
                assert (await client.get(base + "/count", headers=sid)).status_code == 404
                fresh = await client.post(base + "/init")
                assert fresh.status_code == 200
                assert (await client.get(base + "/count", headers={HEADER: fresh.headers[HEADER]})).json() == {"count": 1}
        await store.shutdown()

    run(scenario())
