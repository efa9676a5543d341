"""Several processes sharing sessions through one real redis-server (each a redis_worker.py)."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from aio_support import eventually
from server_fixtures import run_on

HERE = os.path.dirname(os.path.abspath(__file__))
TTL = 0.5
#: Hang guard for one answer from a worker.
ANSWER_TIMEOUT = 30.0


class Worker:
    """One process with its own RedisSessionStore; ``await worker(op, *args)`` runs one command there."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, url: str, idle_ttl=TTL, absolute_ttl=None, max_sessions=None, resolution=0.05) -> "Worker":
        arguments = ["-" if value is None else str(value) for value in (idle_ttl, absolute_ttl, max_sessions, resolution)]
        process = await asyncio.create_subprocess_exec(
            sys.executable, os.path.join(HERE, "redis_worker.py"), url, *arguments,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def __call__(self, op: str, *args):
        self.process.stdin.write(json.dumps([op, *args]).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), ANSWER_TIMEOUT)
        assert line, f"the worker died during {op}"
        answer = json.loads(line)
        if "error" in answer:
            return Raised(answer["error"])
        return answer["ok"]

    async def stop(self) -> dict:
        """Shut the worker's store down; the cleanups it ran, all told."""
        cleanups = await self("shutdown")
        self.process.stdin.close()
        assert await asyncio.wait_for(self.process.wait(), ANSWER_TIMEOUT) == 0
        return cleanups


class Raised(str):
    """The name of the exception a command raised in the worker."""


async def workers(url: str, count: int, **kwargs):
    return await asyncio.gather(*(Worker.start(url, **kwargs) for _ in range(count)))


async def wait_for_cleanups(worker: Worker, expected: dict) -> None:
    seen = {}

    async def poll():
        nonlocal seen
        seen = await worker("cleanups")

    while True:  # bounded by the hang guard of run_on
        await poll()
        if seen == expected:
            return
        assert all(seen.get(token, 0) <= runs for token, runs in expected.items()), seen
        assert set(seen) <= set(expected), seen
        await asyncio.sleep(0.05)


def test_two_processes_share_create_read_touch_delete(redis_server):
    async def scenario():
        a, b = await workers(redis_server.url, 2)
        token = await a("create", {"user": "ada"})
        assert await b("get", token) == {"user": "ada"}
        assert await b("save", token, {"user": "ada", "seen": 1}) is None
        assert await a("get", token) == {"user": "ada", "seen": 1}
        assert await a("add_cleanup", token) is None
        for _ in range(int(3 * TTL / 0.1)):  # kept alive by B's touches alone, for three TTLs
            assert await b("touch", token) is None
            await asyncio.sleep(0.1)
        assert await a("exists", token) is True and await a("cleanups") == {}
        assert await b("delete", token) is None
        await wait_for_cleanups(a, {token: 1})  # A finds out by itself (at most one TTL later)
        assert await a("get", token) is None and await b("touch", token) == "KeyError"
        assert await a.stop() == {token: 1} and await b.stop() == {}

    run_on("asyncio", scenario())


def test_three_processes_cleanups_once_where_attached(redis_server):
    async def scenario():
        a, b, c = await workers(redis_server.url, 3)
        expiring = [await a("create", {"n": i}) for i in range(5)]
        deleted = await b("create")
        held = await c("create")
        for token in expiring:
            assert await b("add_cleanup", token) is None
            assert await c("add_cleanup", token) is None
        assert await c("add_cleanup", deleted) is None
        assert await a("add_cleanup", held) is None
        assert await c("hold", held) is None  # C keeps it alive for everyone, by itself
        assert await a("delete", deleted) is None
        # The five expire in Redis (nobody touches them): B and C each run their cleanups once.
        await wait_for_cleanups(b, {token: 1 for token in expiring})
        await wait_for_cleanups(c, {**{token: 1 for token in expiring}, deleted: 1})
        assert await a("cleanups") == {}
        assert await b("get", held) == {}  # held by C all along, well past its idle TTL
        assert await c("release", held) is None
        await wait_for_cleanups(a, {held: 1})  # released, it idles out; A's cleanup runs there only
        assert await b("count") == 0
        assert await a.stop() == {held: 1}
        assert await b.stop() == {token: 1 for token in expiring}
        assert await c.stop() == {**{token: 1 for token in expiring}, deleted: 1}

    run_on("asyncio", scenario())


def test_max_sessions_holds_under_concurrent_creation(redis_server):
    async def scenario():
        limit = 25
        many = await workers(redis_server.url, 3, idle_ttl=60.0, max_sessions=limit)
        results = await asyncio.gather(*(worker("create_many", 20) for worker in many))
        created = [token for result in results for token in result["created"]]
        assert len(created) == len(set(created)) == limit  # exactly the limit, from all three together
        assert sum(result["refused"] for result in results) == 3 * 20 - limit
        assert all(result["other"] == [] for result in results)
        assert await many[0]("count") == limit
        assert all([await many[1]("exists", token) for token in created])  # nothing evicted
        assert await many[2]("delete", created[0]) is None
        assert isinstance(await many[1]("create"), str) and await many[0]("create") == "SessionLimitReached"
        for worker in many:
            await worker.stop()

    run_on("asyncio", scenario())
