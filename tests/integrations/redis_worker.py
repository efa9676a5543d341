"""A process sharing sessions through Redis, driven by a test over stdin/stdout (one JSON line each way).

``python redis_worker.py URL IDLE_TTL ABSOLUTE_TTL MAX_SESSIONS RESOLUTION`` (``-`` for None), then
commands ``[op, *args]``; each answer is ``{"ok": result}`` or ``{"error": "ExceptionName"}``.
The cleanups this process attached are counted in ``cleanups`` (token -> runs).
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys

from conntable.redis_sessions import RedisSessionStore
from conntable.sessions import SessionLimitReached


def optional(value: str, kind):
    return None if value == "-" else kind(value)


async def main(url: str, idle: str, absolute: str, maximum: str, resolution: str) -> None:
    cleanups: collections.Counter = collections.Counter()
    store = RedisSessionStore.from_url(
        url, float(idle), absolute_ttl=optional(absolute, float), max_sessions=optional(maximum, int),
        resolution=float(resolution),
    )
    holds = {}
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def create_many(count: int):
        results = await asyncio.gather(*(store.create({"n": i}) for i in range(count)), return_exceptions=True)
        refused = sum(isinstance(result, SessionLimitReached) for result in results)
        other = [type(result).__name__ for result in results if isinstance(result, BaseException)
                 and not isinstance(result, SessionLimitReached)]
        return {"created": [r for r in results if isinstance(r, str)], "refused": refused, "other": other}

    async def hold(token: str):
        holds[token] = await store.hold(token)

    async def release(token: str):
        holds.pop(token).release()

    async def add_cleanup(token: str):
        await store.add_cleanup(token, lambda t: cleanups.__setitem__(t, cleanups[t] + 1))

    async def shutdown():
        await store.shutdown()
        return dict(cleanups)

    ops = {
        "create": store.create, "get": store.get, "save": store.save, "touch": store.touch,
        "delete": store.delete, "exists": store.exists, "count": store.count, "hold": hold,
        "release": release, "add_cleanup": add_cleanup, "create_many": create_many,
        "cleanups": lambda: asyncio.sleep(0, dict(cleanups)), "tracked": lambda: asyncio.sleep(0, len(store)),
        "shutdown": shutdown,
    }
    while True:
        line = await reader.readline()
        if not line:
            break
        op, *args = json.loads(line)
        try:
            answer = {"ok": await ops[op](*args)}
        except Exception as exc:
            answer = {"error": type(exc).__name__}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if op == "shutdown":
            break


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
