"""SessionStore: tokens, expiry on the timer wheel, on_expire exactly once, sessions bound to connections."""

from __future__ import annotations

import asyncio
import base64
import collections

import pytest
from aio_support import Scenario, eventually
from ws_support import WsScenario, closed

from conntable.sessions import SessionLimitReached, SessionStore

TTL = 0.3
RESOLUTION = 0.05


class Expiries:
    """An on_expire probe: how many times each token was expired, with which data."""

    def __init__(self) -> None:
        self.count: collections.Counter = collections.Counter()
        self.data: dict = {}

    def __call__(self, token, data):
        self.count[token] += 1
        self.data[token] = data

    def once(self, tokens) -> bool:
        return all(self.count[token] == 1 for token in tokens) and sum(self.count.values()) == len(tokens)


def new_store(expiries: Expiries, **kwargs) -> SessionStore:
    kwargs.setdefault("resolution", RESOLUTION)
    return SessionStore(kwargs.pop("idle_ttl", TTL), on_expire=expiries, **kwargs)


async def no_tasks_left(before) -> None:
    """The store's sweeper is gone once it is shut down."""
    assert asyncio.all_tasks() == before


def test_tokens_are_unguessable():
    async def scenario():
        async with SessionStore(60.0) as store:
            tokens = {store.create() for _ in range(1000)}
            assert len(tokens) == 1000
            for token in list(tokens)[:10]:
                assert len(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))) >= 16
            assert store[next(iter(tokens))] == {}  # default data: a dict of its own

    asyncio.run(scenario())


def test_idle_sessions_expire_once_and_used_ones_stay(run):
    async def scenario():
        before = asyncio.all_tasks()
        expiries = Expiries()
        store = new_store(expiries)
        idle = [store.create({"n": i}) for i in range(20)]
        used = store.create("kept")
        while not expiries.once(idle):  # bounded by run()'s hang guard
            assert store[used] == "kept"  # each use touches
            await asyncio.sleep(TTL / 6)
        assert [expiries.data[token] for token in idle] == [{"n": i} for i in range(20)]
        assert len(store) == 1 and used in store
        for token in idle:
            assert token not in store and store.get(token, "gone") == "gone"
            with pytest.raises(KeyError):
                store[token]
            with pytest.raises(KeyError):
                store.touch(token)
        await eventually(lambda: expiries.count[used] == 1, "the used session expired once left alone")
        await store.shutdown()
        assert sum(expiries.count.values()) == 21
        await no_tasks_left(before)

    run(scenario())


def test_delete_and_shutdown_run_on_expire_once(run):
    async def scenario():
        before = asyncio.all_tasks()
        expiries = Expiries()
        store = new_store(expiries, idle_ttl=60.0)
        tokens = [store.create(i) for i in range(5)]
        store.delete(tokens[0])
        assert expiries.count[tokens[0]] == 1 and len(store) == 4
        with pytest.raises(KeyError):
            store.delete(tokens[0])
        await store.shutdown()
        await store.shutdown()
        assert expiries.once(tokens) and len(store) == 0
        with pytest.raises(RuntimeError):
            store.create()
        await no_tasks_left(before)

    run(scenario())


def test_on_expire_failure_is_logged_and_others_still_run(run, caplog):
    async def scenario():
        expired = []

        def on_expire(token, data):
            expired.append(data)
            if data == 0:
                raise RuntimeError("boom")

        store = SessionStore(TTL, resolution=RESOLUTION, on_expire=on_expire)
        for i in range(3):
            store.create(i)
        await eventually(lambda: len(expired) == 3, "every session expired")
        await store.shutdown()
        assert sorted(expired) == [0, 1, 2]

    run(scenario())
    assert "on_expire callback failed" in caplog.text


def test_max_sessions_raises_and_evicts_nothing(run):
    async def scenario():
        expiries = Expiries()
        async with new_store(expiries, idle_ttl=60.0, max_sessions=3) as store:
            tokens = [store.create() for _ in range(3)]
            with pytest.raises(SessionLimitReached, match="max_sessions is 3"):
                store.create()
            assert len(store) == 3 and not expiries.count
            store.delete(tokens[0])
            store.create()
        assert sum(expiries.count.values()) == 4

    run(scenario())


def test_absolute_ttl_ends_even_used_and_held_sessions(run):
    async def scenario():
        expiries = Expiries()
        async with new_store(expiries, idle_ttl=60.0, absolute_ttl=TTL) as store:
            used, held = store.create(), store.create()
            hold = store.hold(held)
            while len(store):
                store.get(used)
                await asyncio.sleep(TTL / 6)
            assert expiries.once([used, held])
            hold.release()  # after the end: nothing happens

    run(scenario())


def test_a_held_session_does_not_idle_expire(run):
    async def scenario():
        expiries = Expiries()
        async with new_store(expiries) as store:
            held, free = store.create(), store.create()
            with store.hold(held), store.hold(held):  # holds count
                await eventually(lambda: expiries.count[free] == 1, "the free session expired")
                assert held in store
            await eventually(lambda: expiries.count[held] == 1, "the released session expired")
            assert expiries.once([held, free])

    run(scenario())


def test_sessions_bound_to_tcp_connections(run):
    """Bound to a live managed connection, a session survives; its idle clock starts when the last one closes."""

    async def scenario():
        expiries = Expiries()
        store = new_store(expiries)
        sc = Scenario(idle_timeout=60.0)
        port = await sc.serve()
        socks = await sc.connect(port, 2)
        await sc.connected(2)
        bound, free = store.create(), store.create()
        protocols = [sc.mgr.get(conn_id).protocol for conn_id in sc.made]
        for protocol in protocols:
            store.bind(bound, protocol)
        await eventually(lambda: expiries.count[free] == 1, "the unbound session expired")
        socks[0].close()
        await eventually(lambda: sc.ended() == 1, "the first connection ended")
        assert bound in store  # one connection still holds it
        socks[1].close()
        await eventually(lambda: expiries.count[bound] == 1, "expired after the last connection ended")
        assert expiries.once([bound, free])
        late = store.create()
        with pytest.raises(KeyError):
            store.bind(late, protocols[0])  # its connection is gone: nothing to bind to
        await eventually(lambda: expiries.count[late] == 1, "not held by the failed bind")
        await store.shutdown()
        await sc.finish()

    run(scenario())


def test_sessions_bound_to_websocket_connections(run):
    async def scenario():
        expiries = Expiries()
        store = new_store(expiries)
        sc = WsScenario(idle_timeout=60.0)

        async def handler(ws):
            store.bind(await ws.recv(), ws)  # the client names its session in its first message
            await sc.echo(ws)

        await sc.start(handler, ping_interval=None)
        token = store.create()
        client, = await sc.connect(1)
        await client.send(token)
        await client.send("ping")
        assert await client.recv() == "ping"  # the session is bound by now
        other = store.create()
        await eventually(lambda: expiries.count[other] == 1, "an unbound session expired meanwhile")
        assert token in store
        await client.close()
        assert await closed(client) == 1000
        await eventually(lambda: expiries.count[token] == 1, "expired after the WebSocket closed")
        await store.shutdown()
        await sc.finish()

    run(scenario())


def test_bad_arguments():
    for kwargs in ({"idle_ttl": 0}, {"idle_ttl": -1.0}, {"idle_ttl": 1.0, "absolute_ttl": 0},
                   {"idle_ttl": 1.0, "max_sessions": 0}, {"idle_ttl": 1.0, "resolution": 0}):
        with pytest.raises(ValueError):
            SessionStore(**kwargs)
