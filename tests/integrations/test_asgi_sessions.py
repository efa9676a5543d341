"""SessionMiddleware behind a real uvicorn server on 127.0.0.1, driven by a real HTTP client (httpx)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json

import httpx
import pytest
import uvicorn
from aio_support import HOST, WAIT_TIMEOUT, eventually, open_fds

from conntable.asgi import SessionMiddleware, session_of
from conntable.sessions import SessionStore

TTL = 0.3
RESOLUTION = 0.05
HEADER = "Mcp-Session-Id"


async def respond(send, status, body=b"", headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    """A small MCP-like app: POST /init starts a session, /count uses it, DELETE ends it, /slow streams."""
    session = session_of(scope)
    route = (scope["method"], scope["path"])
    if route == ("POST", "/init"):
        session.create({"count": 0})
        await respond(send, 200, b"started")
    elif route == ("POST", "/late"):  # too late: the headers are gone
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            session.create({"count": 0})
        except RuntimeError as exc:
            await send({"type": "http.response.body", "body": str(exc).encode()})
        else:
            await send({"type": "http.response.body", "body": b"created"})
    elif not session:
        await respond(send, 400, b"no session")
    elif route == ("GET", "/count"):
        session.data["count"] += 1
        await respond(send, 200, json.dumps(session.data).encode())
    elif route == ("DELETE", "/session"):
        session.delete()
        await respond(send, 204)
    elif route == ("POST", "/rotate"):  # a new id for the same client (after a login, say)
        session.delete()
        session.create({"count": 100})
        await respond(send, 200, b"rotated")
    elif route == ("GET", "/slow"):  # a long streaming response: the session is held meanwhile
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(6):
            await asyncio.sleep(TTL / 2)
            await send({"type": "http.response.body", "body": b".", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await respond(send, 404, b"no such route")


@contextlib.asynccontextmanager
async def served(asgi_app):
    """uvicorn in this process and loop, on 127.0.0.1 and a free port; yields the base URL."""
    # log_config=None: uvicorn's dictConfig would close the handlers (and descriptors) pytest set up.
    config = uvicorn.Config(asgi_app, host=HOST, port=0, lifespan="off", log_config=None,
                            http="h11", ws="none")
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    await eventually(lambda: server.started or task.done(), "uvicorn started")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_TIMEOUT)


class Expiries(collections.Counter):
    def __call__(self, token, data):
        self[token] += 1


def session_test(run, check, **middleware_kwargs):
    """Run ``check(client, store, expiries)`` against the app behind the middleware; then account.

    Without ``header``/``cookie`` given, the middleware carries the id in the ``Mcp-Session-Id``
    header, the documented option (the default, the ``session`` cookie, has a test of its own).
    """
    if "header" not in middleware_kwargs and "cookie" not in middleware_kwargs:
        middleware_kwargs.update(header=HEADER, cookie=None)

    async def scenario():
        fds, tasks = open_fds(), asyncio.all_tasks()
        expiries = Expiries()
        store = SessionStore(TTL, resolution=RESOLUTION, max_sessions=3, on_expire=expiries)
        async with served(SessionMiddleware(app, store, **middleware_kwargs)) as url:
            async with httpx.AsyncClient(base_url=url, timeout=WAIT_TIMEOUT) as client:
                await check(client, store, expiries)
        await store.shutdown()
        assert all(count == 1 for count in expiries.values()), "on_expire ran more than once"
        assert len(store) == 0 and asyncio.all_tasks() == tasks
        await eventually(lambda: open_fds() == fds, "file descriptors released")

    run(scenario())


def test_header_sessions(run):
    async def check(client, store, expiries):
        started = await client.post("/init")
        assert started.status_code == 200
        token = started.headers[HEADER]
        assert token in store
        for expected in (1, 2, 3):
            answer = await client.get("/count", headers={HEADER: token})
            assert answer.json() == {"count": expected}
        assert (await client.get("/count", headers={HEADER: "not-a-session"})).status_code == 404
        assert (await client.get("/count")).status_code == 400  # the app decides what no session means
        assert (await client.delete("/session", headers={HEADER: token})).status_code == 204
        assert expiries[token] == 1
        assert (await client.get("/count", headers={HEADER: token})).status_code == 404

    session_test(run, check)


def test_expired_sessions_answer_404_and_requests_keep_them_alive(run):
    async def check(client, store, expiries):
        idle = (await client.post("/init")).headers[HEADER]
        used = (await client.post("/init")).headers[HEADER]
        while not expiries[idle]:  # bounded by run()'s hang guard
            assert (await client.get("/count", headers={HEADER: used})).status_code == 200
            await asyncio.sleep(TTL / 6)
        assert (await client.get("/count", headers={HEADER: idle})).status_code == 404
        # A request in progress holds its session: a stream longer than the TTL does not lose it.
        slow = await client.get("/slow", headers={HEADER: used})
        assert slow.status_code == 200 and slow.content == b"......"
        assert used in store and not expiries[used]
        await eventually(lambda: expiries[used] == 1, "expired once the stream ended")

    session_test(run, check)


def test_full_store_answers_503(run):
    async def check(client, store, expiries):
        for _ in range(3):
            assert (await client.post("/init")).status_code == 200
        full = await client.post("/init")
        assert full.status_code == 503 and full.headers["Retry-After"] == "5"
        assert len(store) == 3 and not expiries

    session_test(run, check)


def test_cookie_sessions(run):
    async def check(client, store, expiries):
        started = await client.post("/init")
        assert HEADER not in started.headers
        assert "HttpOnly" in started.headers["set-cookie"]
        token = client.cookies["sid"]
        assert token in store
        assert (await client.get("/count")).json() == {"count": 1}  # the client sends the cookie back
        assert (await client.delete("/session")).status_code == 204
        assert expiries[token] == 1 and "sid" not in client.cookies  # cleared by the response
        stale = await client.get("/count", headers={"Cookie": f"sid={token}"})
        assert stale.status_code == 404 and stale.headers["set-cookie"].startswith("sid=; Max-Age=0")

    session_test(run, check, header=None, cookie="sid")


def test_split_cookie_fields_are_read_as_one(run):
    """Two Cookie fields (as HTTP/2 sends them, RFC 9113 8.2.3): the session cookie is found in either."""

    async def check(client, store, expiries):
        await client.post("/init")
        token = client.cookies["sid"]
        client.cookies.clear()  # from here on, the cookies are the ones written below
        for fields in ([f"sid={token}", "theme=dark"], ["theme=dark", f"lang=en; sid={token}"]):
            answer = await client.get("/count", headers=[("Cookie", field) for field in fields])
            assert answer.status_code == 200, (fields, answer.text)
        assert (await client.get("/count", headers=[("Cookie", "sid=")])).status_code == 400  # empty: no session
        assert expiries[token] == 0

    session_test(run, check, header=None, cookie="sid")


def test_a_session_created_after_the_response_started_is_refused(run):
    async def check(client, store, expiries):
        late = await client.post("/late")
        assert late.status_code == 200 and b"the response has started" in late.content
        assert HEADER not in late.headers and len(store) == 0  # nothing orphaned

    session_test(run, check)


def test_conflicting_and_empty_session_headers(run):
    async def check(client, store, expiries):
        token = (await client.post("/init")).headers[HEADER]
        other = (await client.post("/init")).headers[HEADER]
        both = await client.get("/count", headers=[(HEADER, token), (HEADER, other)])
        assert both.status_code == 400
        same = await client.get("/count", headers=[(HEADER, token), (HEADER.upper(), token)])
        assert same.json() == {"count": 1}
        assert (await client.get("/count", headers={HEADER: ""})).status_code == 400  # no id: the app's 400

    session_test(run, check)


def test_rotating_the_session_id_in_one_request(run):
    async def check(client, store, expiries):
        old = (await client.post("/init")).headers[HEADER]
        rotated = await client.post("/rotate", headers={HEADER: old})
        new = rotated.headers[HEADER]
        assert rotated.status_code == 200 and new != old
        assert expiries[old] == 1 and new in store
        assert (await client.get("/count", headers={HEADER: new})).json() == {"count": 101}
        assert (await client.get("/count", headers={HEADER: old})).status_code == 404

    session_test(run, check)


def test_header_names_from_a_server_that_does_not_lowercase(run):
    """ASGI servers should lowercase header names; the middleware does not depend on it."""

    async def scenario():
        store = SessionStore(60.0, resolution=RESOLUTION)
        seen = []

        async def inner(scope, receive, send):
            seen.append(session_of(scope).data)
            await respond(send, 200)

        middleware = SessionMiddleware(inner, store, header=HEADER, cookie="sid")
        token = store.create({"n": 1})
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        by_header = [(b"MCP-Session-Id", token.encode())]
        by_split_cookie = [(b"Cookie", b"a=1"), (b"COOKIE", b"sid=" + token.encode())]
        for headers in (by_header, by_split_cookie):
            await middleware({"type": "http", "method": "GET", "path": "/", "headers": headers}, receive, send)
        assert seen == [{"n": 1}, {"n": 1}]
        assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [200, 200]
        await store.shutdown()

    run(scenario())


def test_bad_middleware_arguments():
    store = SessionStore(60.0)
    for kwargs, error in (
        ({"header": "Mcp Session"}, ValueError),
        ({"header": ""}, ValueError),
        ({"header": b"x"}, TypeError),
        ({"cookie": "sid=1"}, ValueError),
        ({"header": None, "cookie": "sid", "cookie_attributes": "Path=/\r\nSet-Cookie: evil=1"}, ValueError),
        ({"retry_after": "5"}, TypeError),
        ({"retry_after": -1}, ValueError),
        ({"retry_after": True}, TypeError),
    ):
        with pytest.raises(error):
            SessionMiddleware(app, store, **kwargs)


def test_the_default_is_the_session_cookie(run):
    async def check(client, store, expiries):
        started = await client.post("/init")
        assert HEADER not in started.headers
        cookie = started.headers["set-cookie"]
        assert cookie.startswith("session=") and "HttpOnly" in cookie
        token = cookie.split(";")[0].split("=", 1)[1]
        assert token in store
        assert (await client.get("/count", headers={"Cookie": f"session={token}"})).status_code == 200
        assert (await client.get("/count", headers={"Cookie": "session=stale"})).status_code == 404

    session_test(run, check, header=None)  # the cookie left to its default


def test_default_arguments_are_the_cookie_and_no_header():
    import inspect

    parameters = inspect.signature(SessionMiddleware).parameters
    assert parameters["cookie"].default == "session" and parameters["header"].default is None
