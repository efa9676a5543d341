"""RedisSessionStore in one process, on a real redis-server: expiry enforced by Redis, holds, cleanups, faults."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import pickle

import pytest
from aio_support import BASE_EXCEPTIONS, EXITS, eventually
from redis_support import RedisServer, free_port
from server_fixtures import run_on

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from conntable.redis_sessions import JSONSerializer, RedisSessionStore
from conntable.sessions import SessionLimitReached, SessionStoreUnavailable

TTL = 0.3
RESOLUTION = 0.05
#: For the held sessions: their refresh every TTL/3 must come in time on a loaded machine.
HELD_TTL = 1.5


class Counts(collections.Counter):
    """A cleanup probe: ``counts[token]`` is how many times the token's cleanup ran."""

    def cleanup(self, token):
        self[token] += 1


async def redis_now_ms(raw) -> int:
    seconds, microseconds = await raw.time()
    return seconds * 1000 + microseconds // 1000


@pytest.fixture
def url(redis_server):
    return redis_server.url


def store_on(url, **kwargs) -> RedisSessionStore:
    kwargs.setdefault("resolution", RESOLUTION)
    return RedisSessionStore.from_url(url, kwargs.pop("idle_ttl", TTL), **kwargs)


def test_idle_expiry_is_redis_own(url, run):
    async def scenario():
        raw = aioredis.Redis.from_url(url)
        async with store_on(url) as store:
            token = await store.create({"user": "ada"})
            key = store._record(token)
            assert 0 < await raw.pttl(key) <= TTL * 1000
            assert await store.get(token) == {"user": "ada"}
            assert len(store) == 0  # nothing tracked here: only Redis can end it
            while await raw.exists(key):  # bounded by the hang guard
                await asyncio.sleep(0.02)
            assert await store.get(token, "gone") == "gone"
            assert not await store.exists(token) and await store.count() == 0
            with pytest.raises(KeyError):
                await store.touch(token)
            with pytest.raises(KeyError):
                await store.load(token)
        await raw.aclose()

    run(scenario())


def test_absolute_deadline_caps_every_touch(url, run):
    async def scenario():
        raw = aioredis.Redis.from_url(url)
        async with store_on(url, absolute_ttl=1.0) as store:
            token = await store.create()
            key = store._record(token)
            deadline = int(await raw.hget(key, "a"))
            capped = touches = 0
            while True:  # touched all the time, it still ends at its absolute deadline
                before = await redis_now_ms(raw)
                try:
                    await store.touch(token)
                except KeyError:
                    break
                touches += 1
                pttl = await raw.pttl(key)
                assert pttl <= min(TTL * 1000, deadline - before)
                capped += pttl < TTL * 1000 - 100
                await asyncio.sleep(0.02)
            assert touches > 0 and capped > 0  # the TTL did follow the absolute time left
            assert not await raw.exists(key) and await redis_now_ms(raw) >= deadline
        await raw.aclose()

    run(scenario())


def test_held_sessions_are_refreshed_in_batches_and_idle_from_release(url, run):
    async def scenario():
        raw = aioredis.Redis.from_url(url)
        async with store_on(url, idle_ttl=HELD_TTL) as store:
            tokens = [await store.create({"n": i}) for i in range(50)]
            holds = [await store.hold(token) for token in tokens]
            loop = asyncio.get_running_loop()
            started, checks = loop.time(), store.checks
            await asyncio.sleep(3 * HELD_TTL)  # three idle TTLs without an access: held, they live
            elapsed = loop.time() - started
            for token in tokens:
                assert 0 < await raw.pttl(store._record(token)) <= HELD_TTL * 1000
            # One refresh per session per period (TTL/3), sent in pipelines by the one refresher.
            assert 50 <= store.checks - checks <= 50 * (elapsed / (HELD_TTL / 3) + 2)
            assert store.batches < store.checks
            assert [task.get_name() for task in asyncio.all_tasks()].count("conntable-session-refresher") == 1
            for hold in holds:
                hold.release()
                hold.release()  # idempotent
            await eventually(lambda: len(store) == 0, "the released sessions are no longer tracked")
            for token in tokens:
                assert await raw.pttl(store._record(token)) > 0
            while await store.count():  # idle from the release: Redis expires them
                await asyncio.sleep(0.05)
        await raw.aclose()

    run(scenario())


def test_cleanups_run_once_when_the_session_ends_any_way(url, run):
    async def scenario():
        counts = Counts()
        expired = []
        async with store_on(url, on_expire=lambda token, data: expired.append((token, data))) as store:
            left, deleted, kept = [await store.create({"n": i}) for i in range(3)]
            for token in (left, deleted, kept):
                await store.add_cleanup(token, counts.cleanup)
                await store.add_cleanup(token, counts.cleanup)  # two cleanups: both run, once each
            await store.delete(deleted)
            assert counts == {deleted: 2}
            with pytest.raises(KeyError):
                await store.delete(deleted)
            with pytest.raises(KeyError):
                await store.add_cleanup(deleted, counts.cleanup)
            while counts[left] == 0:  # left alone: Redis expires it, the local check finds out
                await store.touch(kept)
                await asyncio.sleep(0.02)
            assert counts == {deleted: 2, left: 2}
        assert counts == {deleted: 2, left: 2, kept: 2}  # shutdown ends this process's part
        assert sorted(expired) == sorted([(left, {"n": 0}), (deleted, {"n": 1}), (kept, {"n": 2})])
        # ... and only that: the session lives on in Redis for the other processes.
        async with store_on(url) as other:
            assert await other.get(kept) == {"n": 2}

    run(scenario())


def test_a_cleanup_that_raises_stops_nothing(url, run):
    async def scenario():
        counts = Counts()

        def failing(token):
            raise RuntimeError("cleanup failed")

        async def slow(token):
            await asyncio.sleep(0.05)
            counts[token] += 10

        async with store_on(url) as store:
            token = await store.create()
            await store.add_cleanup(token, failing)
            await store.add_cleanup(token, counts.cleanup)
            await store.add_cleanup(token, slow)
            with pytest.raises(TypeError):
                await store.add_cleanup(token, "not callable")
            await store.delete(token)
            assert counts == {token: 1}
        assert counts == {token: 11}  # shutdown waited for the async one

    run(scenario())


def test_json_by_default_pluggable_and_never_pickle(url, run, tmp_path):
    class Upper:
        def dumps(self, data):
            return json.dumps(data).upper().encode()

        def loads(self, raw):
            return json.loads(raw.lower())

    async def scenario():
        raw = aioredis.Redis.from_url(url)
        async with store_on(url) as store:
            for bad in ({1, 2}, {"x": object()}, math.nan):
                with pytest.raises((TypeError, ValueError)):
                    await store.create(bad)
            assert await store.count() == 0  # nothing was written
            token = await store.create({"é": [1, 2.5, None, True]})
            assert await raw.hget(store._record(token), "d") == JSONSerializer().dumps({"é": [1, 2.5, None, True]})
            assert await store.get(token) == {"é": [1, 2.5, None, True]}
            await store.save(token, ["new"])
            assert await store.load(token) == ["new"]
            with pytest.raises(KeyError):
                await store.save("no-such-session", {})

            # A payload that runs code when unpickled, planted in the shared store: it stays bytes.
            marker = tmp_path / "pwned"
            payload = pickle.dumps(_Exploit(str(marker)))
            await raw.hset(store._record(token), "d", payload)
            with pytest.raises(ValueError):
                await store.get(token)
            assert not marker.exists()
        async with store_on(url, serializer=Upper(), prefix="upper") as store:
            token = await store.create({"a": "b"})
            assert await raw.hget(store._record(token), "d") == b'{"A": "B"}'
            assert await store.get(token) == {"a": "b"}
        await raw.aclose()

    run(scenario())


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_max_sessions_refuses_and_evicts_nothing(url, run):
    async def scenario():
        async with store_on(url, idle_ttl=60.0, max_sessions=3) as store:
            tokens = [await store.create() for _ in range(3)]
            with pytest.raises(SessionLimitReached):
                await store.create()
            assert [await store.exists(token) for token in tokens] == [True] * 3
            await store.delete(tokens[0])
            tokens[0] = await store.create()
            assert await store.count() == 3

    run(scenario())


def test_arguments_are_checked(url):
    client = aioredis.Redis.from_url(url)
    for bad, error in [
        (dict(idle_ttl=0), ValueError), (dict(idle_ttl="1"), TypeError), (dict(idle_ttl=math.inf), ValueError),
        (dict(absolute_ttl=-1), ValueError), (dict(max_sessions=0), ValueError), (dict(max_sessions=1.5), TypeError),
        (dict(on_expire=1), TypeError), (dict(serializer=pickle), ValueError), (dict(serializer=object()), TypeError),
        (dict(prefix="{x}"), ValueError), (dict(prefix=b"x"), TypeError), (dict(resolution=0), ValueError),
    ]:
        arguments = dict(idle_ttl=1.0, **bad) if "idle_ttl" not in bad else bad
        with pytest.raises(error):
            RedisSessionStore(client, **arguments)
    with pytest.raises(TypeError):
        RedisSessionStore(object(), 1.0)


def test_redis_unreachable_at_start(tmp_path, run):
    port = free_port()

    async def scenario():
        async with RedisSessionStore.from_url(f"redis://127.0.0.1:{port}/0", TTL, resolution=RESOLUTION) as store:
            for call in (store.create, lambda: store.get("t"), lambda: store.touch("t"), lambda: store.delete("t"),
                         lambda: store.hold("t"), store.count, lambda: store.add_cleanup("t", print)):
                with pytest.raises(SessionStoreUnavailable):
                    await call()
            assert len(store) == 0
            server = RedisServer(str(tmp_path), port).start()  # Redis comes up: the same store works
            try:
                token = await store.create({"late": True})
                assert await store.get(token) == {"late": True}
            finally:
                server.kill()
            with pytest.raises(SessionStoreUnavailable):
                await store.get(token)

    run(scenario())


def test_redis_killed_and_restarted_mid_run(redis_server, run):
    async def scenario():
        counts = Counts()
        async with store_on(redis_server.url, idle_ttl=HELD_TTL) as store:
            tokens = [await store.create({"n": i}) for i in range(10)]
            for token in tokens:
                await store.add_cleanup(token, counts.cleanup)
            hold = await store.hold(tokens[0])
            redis_server.kill()
            for call in (store.create, lambda: store.get(tokens[1]), lambda: store.delete(tokens[2]),
                         lambda: store.hold(tokens[3]), lambda: store.add_cleanup(tokens[4], counts.cleanup)):
                with pytest.raises(SessionStoreUnavailable):
                    await call()
            assert len(store) == 10 and not counts  # the local state is as it was
            failed = store.failed_batches
            hold.release()  # the refresher tries, fails and backs off
            await eventually(lambda: store.failed_batches > failed, "the refresher met the outage")
            redis_server.start()  # the data is gone (no persistence): every session ends once
            await eventually(lambda: len(counts) == 10, "every lost session ended")
            assert counts == {token: 1 for token in tokens} and len(store) == 0
            token = await store.create()
            assert await store.exists(token)
            assert not store._refresher.done()
        assert counts == {token: 1 for token in tokens}

    run(scenario())


def consistent(store) -> None:
    """The store's one registry, its table, is keyed by the token and holds only live sessions."""
    table = store._table
    assert len(store) == len(table)
    for token, tracked in table.items():
        assert type(token) is str and token == tracked.token
        assert not tracked.ended
        assert tracked.holds >= 0
    assert not [name for name, value in vars(store).items() if isinstance(value, dict)]  # no side registry


def test_random_holds_touches_deletes_and_cleanups_stay_consistent(url, run):
    """Operations racing the refresher's batches (a release while its refresh is on the way, ...)."""
    import random

    async def scenario():
        rng = random.Random(15)
        counts = Counts()
        expired = collections.Counter()
        store = store_on(url, idle_ttl=0.2, resolution=0.01, on_expire=lambda token, data: expired.update([token]))
        tokens = [await store.create({"n": i}) for i in range(30)]
        holds = collections.defaultdict(list)
        gone = set()
        attached = collections.Counter()
        for _ in range(600):  # bounded: 600 operations, each a round trip or none
            token = rng.choice(tokens)
            op = rng.randrange(6)
            try:
                if op == 0:
                    holds[token].append(await store.hold(token))
                elif op == 1 and holds[token]:
                    holds[token].pop(rng.randrange(len(holds[token]))).release()
                elif op == 2:
                    await store.touch(token)
                elif op == 3:
                    await store.add_cleanup(token, counts.cleanup)
                    attached[token] += 1
                elif op == 4 and rng.random() < 0.1:
                    await store.delete(token)
                elif op == 5:
                    await asyncio.sleep(rng.choice([0, 0.001, 0.01, 0.05]))
            except KeyError:
                gone.add(token)
            consistent(store)
        creating = asyncio.ensure_future(store.create({"late": True}))  # on its way during shutdown
        await store.shutdown()
        late = await asyncio.gather(creating, return_exceptions=True)
        consistent(store)
        assert len(store) == 0 and not store._table
        assert set(expired) >= gone and all(runs == 1 for runs in expired.values())
        assert set(tokens) <= set(expired)  # every session created here ended here, once
        if isinstance(late[0], str):
            assert expired[late[0]] == 1
        assert counts == attached  # each attached cleanup ran exactly once

    run(scenario())


@pytest.mark.parametrize("kind", list(BASE_EXCEPTIONS))
def test_every_base_exception_from_a_cleanup_stops_nothing(url, loop_kind, kind, caplog):
    """A cleanup raising anything, from the refresher's check, from delete and from shutdown."""
    exception = BASE_EXCEPTIONS[kind]
    escaped: list = []

    async def scenario():
        counts = Counts()

        def raising(token):
            raise exception("from a cleanup")

        store = store_on(url, idle_ttl=TTL)
        by_refresher, by_delete, by_shutdown, later = [await store.create() for _ in range(4)]
        for token in (by_refresher, by_delete, by_shutdown):
            await store.add_cleanup(token, raising)
            await store.add_cleanup(token, counts.cleanup)
        await store.delete(by_delete)
        while counts[by_refresher] == 0:  # ended by the refresher, which raised nothing out
            await store.touch(by_shutdown)
            await store.touch(later)
            await asyncio.sleep(0.02)
        await store.add_cleanup(later, counts.cleanup)  # the refresher still works after it
        while counts[later] == 0:
            await store.touch(by_shutdown)
            await asyncio.sleep(0.02)
        await store.shutdown()
        assert counts == {by_refresher: 1, by_delete: 1, by_shutdown: 1, later: 1}
        assert len(store) == 0

    with caplog.at_level(logging.ERROR, logger="conntable.redis_sessions"):
        run_on(loop_kind, scenario(), escaped=escaped)
    assert [type(exc) for exc in escaped] == ([exception] * 3 if issubclass(exception, EXITS) else [])
    assert sum("session cleanup failed" in record.getMessage() for record in caplog.records) == 3


def test_a_record_overwritten_by_another_client_fails_alone(url, run, caplog):
    async def scenario():
        raw = aioredis.Redis.from_url(url)
        counts = Counts()
        async with store_on(url) as store:
            broken, fine = await store.create(), await store.create()
            for token in (broken, fine):
                await store.add_cleanup(token, counts.cleanup)
            hold = await store.hold(broken)
            await raw.set(store._record(broken), "not a hash")  # WRONGTYPE for the scripts
            with pytest.raises(redis_errors.ResponseError):
                await store.get(broken)
            failed = caplog.text.count("session refresh failed in Redis")
            while counts[fine] == 0:  # the refresher goes on with the others
                await asyncio.sleep(0.02)
            assert caplog.text.count("session refresh failed in Redis") > failed and not counts[broken]
            hold.release()
        assert counts == {broken: 1, fine: 1}
        await raw.aclose()

    with caplog.at_level(logging.ERROR, logger="conntable.redis_sessions"):
        run(scenario())


def test_sessions_arriving_in_the_armed_tick_do_not_wake_the_refresher(url, run):
    async def scenario():
        async with store_on(url, idle_ttl=HELD_TTL) as store:
            first = await store.hold(await store.create({"n": 0}))
            # The hold woke the refresher, asleep with nothing armed (as it must); it sleeps again
            # until the held session's refresh.
            await eventually(lambda: store._waiter is not None and not store._waiter.done()
                             and math.isfinite(store._wake_before), "the refresher sleeps on the held one")
            woken = store.early_wakeups
            # Each arrival is due a period after its own (later) arrival: never in an earlier
            # tick than the one being slept until, so none needs to wake the refresher. Compared
            # in exact times, every one of them did (the tick's end is later than their due).
            holds = [await store.hold(await store.create({"n": i})) for i in range(1, 40)]
            assert store.early_wakeups == woken
            for hold in [first, *holds]:
                hold.release()
            await eventually(lambda: len(store) == 0, "the released sessions are no longer tracked")

    run(scenario())
