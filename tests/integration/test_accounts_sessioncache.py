"""SessionCache and the sessions repository against real Postgres and Redis: what a session JWT's
`jti` resolves to, caching with an injected clock, ends pushed over pub/sub, outages, pruning."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from aichat_gateway.accounts import sessions
from aichat_gateway.accounts.errors import StoreUnavailable
from aichat_gateway.accounts.sessioncache import SessionCache, announce_user_sessions_ended, session_channel
from aichat_gateway.accounts.tokens import SessionClaims, SessionTokens
from aichat_gateway.config.settings import Settings
from tests.support.emails import unique_email
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingDb:
    """The real pool, counting the session look-ups and the per-request role reads apart."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.session_queries = 0
        self.role_queries = 0

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        self.session_queries += 1
        return await self.pool.fetchrow(*args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        self.role_queries += 1
        return await self.pool.fetchval(*args, **kwargs)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def new_user(db: asyncpg.Connection, role: str = "user") -> str:
    # A placeholder hash: nothing here logs in.
    user_id = await db.fetchval(
        "INSERT INTO users (email, password_hash, role) VALUES ($1, 'unused', $2) RETURNING id",
        unique_email("sesscache"),
        role,
    )
    return str(user_id)


async def new_session(db: asyncpg.Connection, settings: Settings, user_id: str, role: str = "user") -> SessionClaims:
    claims = SessionTokens.from_settings(settings).issue(user_id, role).claims
    await sessions.start(db, claims, user_agent="test", ip="127.0.0.1")
    return claims


async def listening(cache: SessionCache) -> asyncio.Task[None]:
    task = asyncio.create_task(cache.listen())
    await asyncio.wait_for(cache.subscribed.wait(), timeout=5)
    return task


async def stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)


async def gone_within_a_second(cache: SessionCache, claims: SessionClaims) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    while await cache.role_of(claims) is not None:
        assert loop.time() - started < 1.0, "the other process still accepts the ended session"
        await asyncio.sleep(0.01)


async def test_a_live_session_resolves_to_its_users_role(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    admin = await new_user(db, "admin")
    claims = await new_session(db, settings, admin, "admin")
    assert await SessionCache(pool, redis, settings).role_of(claims) == "admin"


async def test_a_signed_token_without_a_session_row_is_not_a_session(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    claims = SessionTokens.from_settings(settings).issue(await new_user(db), "user").claims
    assert await SessionCache(pool, redis, settings).role_of(claims) is None


async def test_a_session_presented_with_another_users_id_is_not_a_session(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    claims = await new_session(db, settings, await new_user(db))
    cache = SessionCache(pool, redis, settings)
    forged = SessionClaims(await new_user(db), "user", claims.issued_at, claims.expires_at, claims.token_id)
    assert await cache.role_of(forged) is None
    assert await cache.role_of(claims) == "user"
    assert await cache.role_of(forged) is None  # from the cache too


async def test_an_ended_session_resolves_to_none(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    claims = await new_session(db, settings, await new_user(db))
    assert await sessions.end_token(db, claims.token_id, time.time())
    assert await SessionCache(pool, redis, settings).role_of(claims) is None


async def test_a_cached_session_is_not_looked_up_again_but_its_role_is_read_every_time(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    user = await new_user(db, "admin")
    claims = await new_session(db, settings, user, "admin")
    counting = CountingDb(pool)
    clock = Clock()
    cache = SessionCache(counting, redis, settings, clock)  # type: ignore[arg-type]
    task = await listening(cache)  # trusted for the whole TTL only while ends can be heard
    try:
        assert await cache.role_of(claims) == "admin"
        assert (counting.session_queries, counting.role_queries) == (1, 0)  # the role came with the session
        clock.now += settings.session_cache_ttl - 0.1
        assert await cache.role_of(claims) == "admin"
        await db.execute("UPDATE users SET role = 'user' WHERE id = $1", uuid.UUID(user))
        assert await cache.role_of(claims) == "user"  # demoted: at once
        await db.execute("DELETE FROM users WHERE id = $1", uuid.UUID(user))
        assert await cache.role_of(claims) is None  # deleted: at once
        assert (counting.session_queries, counting.role_queries) == (1, 3)
    finally:
        await stop(task)


async def test_while_not_hearing_ends_a_cached_session_is_trusted_for_one_second(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    claims = await new_session(db, settings, await new_user(db))
    clock = Clock()
    cache = SessionCache(pool, redis, settings, clock)
    assert await cache.role_of(claims) == "user"
    await sessions.end_token(db, claims.token_id, time.time())  # ended with no announcement
    clock.now += 0.9
    assert await cache.role_of(claims) == "user"
    clock.now += 0.1
    assert await cache.role_of(claims) is None


async def test_a_cached_session_is_looked_up_again_after_the_ttl(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    claims = await new_session(db, settings, await new_user(db))
    clock = Clock()
    cache = SessionCache(pool, redis, settings, clock)
    task = await listening(cache)
    try:
        assert await cache.role_of(claims) == "user"
        await sessions.end_token(db, claims.token_id, time.time())  # ended with no announcement
        clock.now += settings.session_cache_ttl - 0.1
        assert await cache.role_of(claims) == "user"
        clock.now += 0.1
        assert await cache.role_of(claims) is None
    finally:
        await stop(task)


async def test_an_unknown_session_is_remembered_as_unknown_for_two_seconds(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    claims = SessionTokens.from_settings(settings).issue(await new_user(db), "user").claims
    counting = CountingDb(pool)
    clock = Clock()
    cache = SessionCache(counting, redis, settings, clock)  # type: ignore[arg-type]
    for _ in range(5):
        assert await cache.role_of(claims) is None
    assert counting.session_queries == 1
    clock.now += 2.0
    assert await cache.role_of(claims) is None
    assert counting.session_queries == 2


async def test_one_ended_session_reaches_another_process_within_a_second(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    user = await new_user(db)
    claims, other = await new_session(db, settings, user), await new_session(db, settings, user)
    # Frozen clocks: no TTL can expire, so only the pub/sub message can make B forget.
    a, b = SessionCache(pool, redis, settings, Clock()), SessionCache(pool, redis, settings, Clock())
    tasks = [await listening(a), await listening(b)]
    try:
        assert await b.role_of(claims) == "user" and await b.role_of(other) == "user"
        assert await sessions.end_token(db, claims.token_id, time.time())
        await a.announce_ended(claims.token_id)
        assert await a.role_of(claims) is None
        await gone_within_a_second(b, claims)
        assert await b.role_of(other) == "user"
    finally:
        await stop(*tasks)


async def test_ending_a_users_sessions_reaches_another_process_and_kept_sessions_reload(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    user = await new_user(db)
    kept, ended = await new_session(db, settings, user), await new_session(db, settings, user)
    bystander = await new_session(db, settings, await new_user(db))
    b = SessionCache(pool, redis, settings, Clock())
    task = await listening(b)
    try:
        for claims in (kept, ended, bystander):
            assert await b.role_of(claims) == "user"
        await sessions.end_all(db, user, time.time(), keep_token_id=kept.token_id)
        assert await announce_user_sessions_ended(redis, settings, user)  # as the CLI does it
        await gone_within_a_second(b, ended)
        assert await b.role_of(kept) == "user" and await b.role_of(bystander) == "user"
    finally:
        await stop(task)


async def test_a_malformed_message_is_ignored(
    db: asyncpg.Connection, pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    claims = await new_session(db, settings, await new_user(db))
    counting = CountingDb(pool)
    cache = SessionCache(counting, redis, settings, Clock())  # type: ignore[arg-type]
    task = await listening(cache)
    try:
        assert await cache.role_of(claims) == "user"
        for junk in ("", "s:", "x:whatever", "\x00"):
            await redis.publish(session_channel(settings), junk)
        # A real end after the junk: once it is heard, the junk was handled before it.
        await redis.publish(session_channel(settings), "s:" + claims.token_id)
        while counting.session_queries == 1:
            await cache.role_of(claims)
            await asyncio.sleep(0.01)
        assert counting.session_queries == 2
    finally:
        await stop(task)


async def test_with_postgres_down_a_known_session_is_served_and_an_unknown_one_is_unavailable(
    db: asyncpg.Connection, database_url: str, redis: Redis, settings: Settings
) -> None:
    known = await new_session(db, settings, await new_user(db, "admin"), "admin")
    unknown = await new_session(db, settings, await new_user(db))
    proxy = await TcpProxy.for_url(database_url).start()
    pool = await asyncpg.create_pool(proxy.url_through(database_url), min_size=0, max_size=2)
    clock = Clock()
    cache = SessionCache(pool, redis, settings, clock)
    try:
        assert await cache.role_of(known) == "admin"
        proxy.cut()
        assert await cache.role_of(known) == "admin"  # fresh entry; the role read fails: cached role
        clock.now += settings.session_cache_ttl + 1  # expired: it would be checked again, but cannot be
        assert await cache.role_of(known) == "admin"
        with pytest.raises(StoreUnavailable):
            await cache.role_of(unknown)
    finally:
        proxy.restore()
        await pool.close()
        await proxy.close()


# ---- the repository ------------------------------------------------------------------------------


async def test_pruning_deletes_only_sessions_expired_over_a_day_ago(db: asyncpg.Connection, settings: Settings) -> None:
    user = await new_user(db)
    now = time.time()
    clock = Clock()
    tokens = SessionTokens(settings.secret_keys, 3600, clock=clock)
    ids = {}
    for name, issued_at in (("long_gone", now - 3 * 86400), ("just_expired", now - 7200), ("live", now)):
        clock.now = issued_at
        ids[name] = await sessions.start(db, tokens.issue(user, "user").claims)
    await sessions.prune(db, now)
    left = {str(r["id"]) for r in await db.fetch("SELECT id FROM sessions WHERE user_id = $1", uuid.UUID(user))}
    assert left == {ids["just_expired"], ids["live"]}


async def test_pruning_goes_in_bounded_batches(db: asyncpg.Connection, settings: Settings) -> None:
    user = await new_user(db)
    long_ago = time.time() - 3 * 86400
    tokens = SessionTokens(settings.secret_keys, 3600, clock=lambda: long_ago)
    for _ in range(3):
        await sessions.start(db, tokens.issue(user, "user").claims)
    assert await sessions.prune(db, time.time(), batch=2) == 2
    assert await sessions.prune(db, time.time(), batch=2) >= 1


async def test_the_live_list_leaves_out_ended_and_expired_sessions(db: asyncpg.Connection, settings: Settings) -> None:
    user = await new_user(db)
    now = time.time()
    live = await new_session(db, settings, user)
    ended = await new_session(db, settings, user)
    await sessions.end_token(db, ended.token_id, now)
    old = SessionTokens(settings.secret_keys, 60, clock=lambda: now - 120).issue(user, "user").claims
    await sessions.start(db, old)
    assert [s.token_id for s in await sessions.live(db, user, now)] == [live.token_id]


def test_user_agents_and_addresses_are_stored_as_printable_ascii_and_bounded() -> None:
    assert sessions.printable("Mozilla/5.0 (X11)\x00\u202e", 256) == "Mozilla/5.0 (X11)"
    assert sessions.printable("x" * 1000, 256) == "x" * 256
    assert sessions.printable("\x00\x01", 256) is None
    assert sessions.printable(None, 256) is None
