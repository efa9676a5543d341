"""End-to-end benchmark: the session middleware with each store, under a real uvicorn on 127.0.0.1.

    python benchmarks/e2e_sessions.py --connections 32 --requests 200 --repeat 3

Each request reads the client's session (a cookie), adds one to a counter in
it and answers the counter as JSON: a read and a write of the session per
request, the work a session middleware does. Stores, each behind a fresh
uvicorn process (one worker, the same ``--loop`` and ``--http``):

* ``local``        -- ``conntable.asgi.SessionMiddleware`` on ``conntable.sessions.SessionStore``
                      (in the process: nothing shared);
* ``redis``        -- the same middleware on ``conntable.redis_sessions.RedisSessionStore``
                      (idle and absolute expiry enforced by Redis);
* ``starsessions`` -- starsessions' ``SessionMiddleware`` on its ``RedisStore`` (rolling
                      expiry re-set on every save; no absolute lifetime), if installed.

A redis-server of the benchmark's own runs on 127.0.0.1 and a free port
(the Debian ``redis-server``). The client, in this process, keeps
``--connections`` HTTP/1.1 keep-alive connections, one session each, and
sends ``--requests`` requests on each; it reports requests per second and
the p50 and p99 latency per store. The stores run in turn, in a rotated
order each round, so that their figures are side by side on the same
machine at the same time; medians of ``--repeat`` rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integrations"))
from redis_support import HOST, RedisServer, free_port, ping  # noqa: E402  (the tests' redis-server helper)

STORES = ("local", "redis", "starsessions")
TTL = 1800
ABSOLUTE = 86400


# -- the servers (run with --serve) -----------------------------------------------------------
def conntable_app(kind: str, redis_url: str) -> Any:
    from conntable.asgi import SessionMiddleware, session_of

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        session = session_of(scope)
        if not session:
            result = session.create({"count": 0})
            if asyncio.iscoroutine(result):
                await result
        else:
            session.data["count"] += 1
        await respond(send, json.dumps(session.data).encode())

    async def lifespan(receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await store.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    if kind == "local":
        from conntable.sessions import SessionStore

        store: Any = SessionStore(TTL, absolute_ttl=ABSOLUTE)
    else:
        from conntable.redis_sessions import RedisSessionStore

        store = RedisSessionStore.from_url(redis_url, TTL, absolute_ttl=ABSOLUTE)
    middleware = SessionMiddleware(app, store, header=None, cookie="sid")

    async def outer(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
        else:
            await middleware(scope, receive, send)

    return outer


def starsessions_app(redis_url: str) -> Any:
    import redis.asyncio as aioredis
    from starsessions import SessionAutoloadMiddleware, SessionMiddleware
    from starsessions.stores.redis import RedisStore

    async def app(scope: Any, receive: Any, send: Any) -> None:
        session = scope["session"]
        session["count"] = session.get("count", -1) + 1
        await respond(send, json.dumps(session).encode())

    store = RedisStore(connection=aioredis.Redis.from_url(redis_url))
    return SessionMiddleware(SessionAutoloadMiddleware(app), store=store, lifetime=TTL, rolling=True,
                             cookie_name="sid", cookie_https_only=False)


async def respond(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def serve(kind: str, port: int, redis_url: str, loop: str, http: str) -> None:
    import uvicorn

    app = starsessions_app(redis_url) if kind == "starsessions" else conntable_app(kind, redis_url)
    uvicorn.run(app, host=HOST, port=port, loop=loop, http=http, log_level="warning",
                lifespan="on" if kind != "starsessions" else "off")


# -- the client ---------------------------------------------------------------------------------
async def one_client(port: int, requests: int, latencies: List[float]) -> int:
    """One keep-alive connection, one session: the first request starts it, the others use it."""
    reader, writer = await asyncio.open_connection(HOST, port)
    cookie = b""
    last = -1
    try:
        for number in range(requests + 1):
            started = time.perf_counter()
            writer.write(b"GET /count HTTP/1.1\r\nHost: bench\r\n" + cookie + b"\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"set-cookie" and not cookie:
                    cookie = b"Cookie: " + value.strip().split(b";")[0] + b"\r\n"
            body = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"unexpected answer: {head[:40]!r}")
            if number:
                latencies.append(time.perf_counter() - started)
            last = json.loads(body)["count"]
    finally:
        writer.close()
        await writer.wait_closed()
    return last


async def load(port: int, connections: int, requests: int) -> Dict[str, float]:
    latencies: List[float] = []
    started = time.perf_counter()
    counts = await asyncio.gather(*(one_client(port, requests, latencies) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    if counts != [requests] * connections:  # every request saw and saved its session
        raise RuntimeError(f"the sessions' counters are {sorted(set(counts))}, expected {requests}")
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


def start_server(kind: str, redis_url: str, loop: str, http: str) -> "tuple[subprocess.Popen, int]":
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port), "--redis", redis_url,
                                "--loop", loop, "--http", http])
    give_up = time.monotonic() + 30
    while True:
        try:
            with __import__("socket").create_connection((HOST, port), timeout=0.5):
                return process, port
        except OSError:
            if process.poll() is not None or time.monotonic() > give_up:
                process.kill()
                raise RuntimeError(f"the {kind} server did not start")
            time.sleep(0.05)


def median(values: List[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests", type=int, default=200, help="per connection, per round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--loop", default="uvloop", choices=("asyncio", "uvloop"))
    parser.add_argument("--http", default="h11", choices=("h11", "httptools"))
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.redis, args.loop, args.http)
        return
    stores = [store for store in args.stores.split(",") if store]
    if "starsessions" in stores:
        try:
            import starsessions  # noqa: F401
        except ImportError:
            print("starsessions is not installed (pip install starsessions): its column is left out")
            stores.remove("starsessions")
    results: Dict[str, List[Dict[str, float]]] = {store: [] for store in stores}
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(directory).start()
        try:
            assert ping(server.port)
            for round_number in range(args.repeat):
                order = stores[round_number % len(stores):] + stores[:round_number % len(stores)]
                for store in order:
                    process, port = start_server(store, server.url, args.loop, args.http)
                    try:
                        asyncio.run(load(port, args.connections, 10))  # warm-up
                        results[store].append(asyncio.run(load(port, args.connections, args.requests)))
                    finally:
                        process.terminate()
                        process.wait(timeout=30)
        finally:
            server.kill()
    print(f"{args.connections} connections x {args.requests} requests, {args.repeat} rounds, "
          f"uvicorn --loop {args.loop} --http {args.http}, median of rounds")
    print("| store | requests/s | p50 ms | p99 ms | requests/s vs local |")
    print("|---|---:|---:|---:|---:|")
    base: Optional[float] = median([r["rps"] for r in results["local"]]) if "local" in results else None
    for store in stores:
        rps = median([r["rps"] for r in results[store]])
        p50 = median([r["p50_ms"] for r in results[store]])
        p99 = median([r["p99_ms"] for r in results[store]])
        ratio = f"{rps / base:.2f}" if base else "-"
        print(f"| {store} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
