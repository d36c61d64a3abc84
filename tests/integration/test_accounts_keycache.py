"""KeyCache against real Postgres and Redis: caching with an injected clock, bounds, revocation."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from aichat_gateway.accounts import keys as keys_repo
from aichat_gateway.accounts.errors import StoreUnavailable
from aichat_gateway.accounts.keycache import KeyCache
from aichat_gateway.accounts.keyformat import generate_key
from aichat_gateway.config.settings import Settings
from tests.support.emails import unique_email
from tests.support.tcpproxy import TcpProxy


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingDb:
    """The real pool, with a count of the queries that reached it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.queries = 0

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return await self.pool.fetchrow(*args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.queries += 1
        return await self.pool.execute(*args, **kwargs)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def redis_a(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis_b(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def new_user(db: asyncpg.Connection) -> str:
    # A placeholder hash: these tests never log in, so they skip argon2's cost.
    user_id = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'unused') RETURNING id", unique_email("cache")
    )
    return str(user_id)


async def new_key(db: asyncpg.Connection, name: str = "k") -> tuple[str, keys_repo.CreatedKey]:
    owner = await new_user(db)
    return owner, await keys_repo.create_key(db, owner, name)


async def listening(cache: KeyCache) -> asyncio.Task[None]:
    task = asyncio.create_task(cache.listen_for_revocations())
    await asyncio.wait_for(cache.subscribed.wait(), timeout=5)
    return task


async def stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)


async def test_a_live_key_resolves_to_its_owner_and_name(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    owner, created = await new_key(db, "laptop")
    principal = await KeyCache(pool, redis_a, settings).lookup(created.secret)
    assert principal is not None
    assert (principal.key_id, principal.user_id, principal.name) == (created.key.id, owner, "laptop")


async def test_a_revoked_key_resolves_to_none(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    owner, created = await new_key(db)
    await keys_repo.revoke_key(db, owner, created.key.id)
    assert await KeyCache(pool, redis_a, settings).lookup(created.secret) is None


async def test_a_string_of_the_wrong_shape_is_refused_without_a_query(
    pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    counting = CountingDb(pool)
    cache = KeyCache(counting, redis_a, settings)  # type: ignore[arg-type]
    for garbage in ("", "sk-abc", "agw-short", "agw-' OR 1=1 --" + "x" * 28, "x" * 10_000):
        assert await cache.lookup(garbage) is None
    assert counting.queries == 0


async def test_a_cached_key_is_answered_without_a_query_within_the_ttl(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    _, created = await new_key(db)
    clock, counting = Clock(), CountingDb(pool)
    cache = KeyCache(counting, redis_a, settings, clock)  # type: ignore[arg-type]
    task = await listening(cache)
    try:
        await cache.lookup(created.secret)
        clock.now += settings.key_cache_ttl - 0.1
        assert await cache.lookup(created.secret) is not None
        assert counting.queries == 1
    finally:
        await stop(task)


async def test_a_cached_key_is_checked_again_after_the_ttl(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    _, created = await new_key(db)
    clock = Clock()
    cache = KeyCache(pool, redis_a, settings, clock)
    task = await listening(cache)
    try:
        assert await cache.lookup(created.secret) is not None
        # Revoked behind the cache's back (no announcement): only the TTL can notice.
        await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", uuid.UUID(created.key.id))
        clock.now += settings.key_cache_ttl - 0.1
        assert await cache.lookup(created.secret) is not None
        clock.now += 0.2
        assert await cache.lookup(created.secret) is None
    finally:
        await stop(task)


async def test_without_the_revocation_listener_a_cached_key_is_trusted_for_one_second(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    _, created = await new_key(db)
    clock = Clock()
    cache = KeyCache(pool, redis_a, settings, clock)
    assert await cache.lookup(created.secret) is not None
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", uuid.UUID(created.key.id))
    clock.now += 0.9
    assert await cache.lookup(created.secret) is not None
    clock.now += 0.2
    assert await cache.lookup(created.secret) is None


async def test_an_unknown_key_is_remembered_as_unknown_for_two_seconds(
    pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    clock, counting = Clock(), CountingDb(pool)
    cache = KeyCache(counting, redis_a, settings, clock)  # type: ignore[arg-type]
    unknown = generate_key().secret
    for _ in range(50):
        assert await cache.lookup(unknown) is None
    clock.now += 1.9
    assert await cache.lookup(unknown) is None
    assert counting.queries == 1
    clock.now += 0.2
    assert await cache.lookup(unknown) is None
    assert counting.queries == 2


async def test_the_negative_cache_is_bounded_and_forgets_the_oldest_first(
    pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    counting = CountingDb(pool)
    cache = KeyCache(counting, redis_a, settings, Clock(), max_negative_entries=3)  # type: ignore[arg-type]
    unknown = [generate_key().secret for _ in range(4)]
    for secret in unknown:
        await cache.lookup(secret)
    await cache.lookup(unknown[3])  # still remembered
    assert counting.queries == 4
    await cache.lookup(unknown[0])  # pushed out by the fourth
    assert counting.queries == 5


async def test_concurrent_misses_for_one_key_make_one_query(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    _, created = await new_key(db)
    counting = CountingDb(pool)
    cache = KeyCache(counting, redis_a, settings, Clock())  # type: ignore[arg-type]
    answers = await asyncio.gather(*(cache.lookup(created.secret) for _ in range(20)))
    assert all(a is not None for a in answers) and counting.queries == 1


async def test_a_revocation_on_one_process_reaches_another_within_a_second(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis_a: Redis, redis_b: Redis, settings: Settings
) -> None:
    owner, created = await new_key(db)
    # Frozen clocks: no TTL can expire, so only the pub/sub message can make B forget the key.
    a, b = KeyCache(pool, redis_a, settings, Clock()), KeyCache(pool, redis_b, settings, Clock())
    tasks = [await listening(a), await listening(b)]
    try:
        assert await b.lookup(created.secret) is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        await a.announce_revoked(await keys_repo.revoke_key(db, owner, created.key.id))
        while await b.lookup(created.secret) is not None:
            assert loop.time() - started < 1.0, "process B still accepts the revoked key"
            await asyncio.sleep(0.01)
    finally:
        await stop(*tasks)


async def test_subscribing_clears_entries_cached_while_not_listening(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    _, created = await new_key(db)
    cache = KeyCache(pool, redis_a, settings, Clock())
    assert await cache.lookup(created.secret) is not None
    # A revocation this process never heard about (it was not subscribed).
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", uuid.UUID(created.key.id))
    task = await listening(cache)
    try:
        assert await cache.lookup(created.secret) is None
    finally:
        await stop(task)


async def test_cancelling_the_listener_at_any_moment_stops_it(redis_a: Redis, settings: Settings) -> None:
    for steps in range(25):
        cache = KeyCache(None, redis_a, settings)  # type: ignore[arg-type]
        task = asyncio.create_task(cache.listen_for_revocations())
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=2)
        assert done, f"listener ignored a cancel after {steps} loop steps"
        assert not cache.subscribed.is_set()


async def test_flushing_writes_every_noted_use_in_one_statement(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    created = [(await new_key(db))[1] for _ in range(3)]
    used_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    counting = CountingDb(pool)
    cache = KeyCache(counting, redis_a, settings, wall_clock=used_at.timestamp)  # type: ignore[arg-type]
    for c in created:
        cache.note_used(c.key.id)
    await cache.flush_last_used()
    assert counting.queries == 1
    stored = await db.fetch(
        "SELECT last_used_at FROM api_keys WHERE id = ANY($1::uuid[])", [uuid.UUID(c.key.id) for c in created]
    )
    assert [r["last_used_at"] for r in stored] == [used_at] * 3


async def test_noting_a_use_does_no_io_and_an_empty_flush_makes_no_query(
    pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    counting = CountingDb(pool)
    cache = KeyCache(counting, redis_a, settings)  # type: ignore[arg-type]
    await cache.flush_last_used()
    assert counting.queries == 0


async def test_a_flush_never_moves_last_used_backwards(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis_a: Redis, settings: Settings
) -> None:
    _, created = await new_key(db)
    later, earlier = datetime(2031, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
    await db.execute("UPDATE api_keys SET last_used_at = $2 WHERE id = $1", uuid.UUID(created.key.id), later)
    cache = KeyCache(pool, redis_a, settings, wall_clock=earlier.timestamp)
    cache.note_used(created.key.id)
    await cache.flush_last_used()
    stored = await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", uuid.UUID(created.key.id))
    assert stored == later


async def test_with_postgres_down_a_known_key_is_served_from_its_expired_entry(
    db: asyncpg.Connection, database_url: str, redis_a: Redis, settings: Settings
) -> None:
    _, created = await new_key(db)
    proxy = await TcpProxy.for_url(database_url).start()
    pool = await asyncpg.create_pool(proxy.url_through(database_url), min_size=0, max_size=2)
    clock = Clock()
    cache = KeyCache(pool, redis_a, settings, clock)
    try:
        known = await cache.lookup(created.secret)
        assert known is not None
        proxy.cut()
        clock.now += settings.key_cache_ttl + 1  # expired: it would be checked again, but cannot be
        assert await cache.lookup(created.secret) == known
        _, other = await new_key(db)  # never seen by this cache
        with pytest.raises(StoreUnavailable):
            await cache.lookup(other.secret)
    finally:
        proxy.restore()
        await pool.close()
        await proxy.close()
