"""Login rate limiting in Redis, per e-mail and per client IP (fixed windows).

Each attempt is counted *before* the password is checked (one pipeline: INCR, EXPIRE NX, TTL per
key), so a burst of parallel guesses cannot slip past the limit while argon2 is busy; a
successful login takes its own count back, so only failures accumulate. EXPIRE NX runs on every
attempt, which also repairs a counter that ever lost its TTL. The two keys sit in different hash
slots on purpose and the pipeline is not a transaction, so this works on Redis Cluster too.

The per-e-mail key is the hash of the address's canonical form (`users.canonical_email`, the same
one the account look-up compares), so every spelling that can reach an account counts against
that account, and a string that is not an address is refused (InvalidInput) before it is counted.
Hashing keeps addresses out of Redis and bounds the key's length.
The per-IP window is wider than the per-e-mail one because many people can share one address.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from aichat_gateway.accounts.errors import TooManyAttempts
from aichat_gateway.accounts.users import canonical_email


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    seconds: int


@dataclass(frozen=True, slots=True)
class Counted:
    count: int
    ttl: int  # seconds left in the window, as Redis reports it (-1/-2 if none)


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """Handed back to `succeeded()` so it undoes exactly the counts this attempt added."""

    keys: tuple[tuple[str, int], ...]  # (redis key, window seconds)


def retry_after(counts: list[tuple[Counted, Window]]) -> int | None:
    """Pure decision: None if the attempt may proceed, else seconds until the longest block ends."""
    waits = [
        counted.ttl if counted.ttl > 0 else window.seconds for counted, window in counts if counted.count > window.limit
    ]
    return max(1, max(waits)) if waits else None


class LoginLimiter:
    def __init__(
        self,
        redis: Redis,
        redis_prefix: str,
        *,
        per_email: Window = Window(10, 15 * 60),
        per_ip: Window = Window(100, 15 * 60),
    ) -> None:
        self._redis = redis
        self._prefix = f"{redis_prefix}:login"
        self._per_email = per_email
        self._per_ip = per_ip

    def email_key(self, email: str) -> str:
        digest = hashlib.sha256(canonical_email(email).encode()).hexdigest()[:32]
        return f"{self._prefix}:email:{digest}"

    def ip_key(self, ip: str) -> str:
        return f"{self._prefix}:ip:{ip}"

    async def attempt(self, email: str, ip: str | None) -> LoginAttempt:
        """Count one attempt; TooManyAttempts (with retry_after) if a window is already full."""
        plan: list[tuple[str, Window]] = [(self.email_key(email), self._per_email)]
        if ip:
            plan.append((self.ip_key(ip), self._per_ip))
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, window in plan:
                pipe.incr(key)
                pipe.expire(key, window.seconds, nx=True)
                pipe.ttl(key)
            results = await pipe.execute()
        counts = [
            (Counted(count=int(results[3 * i]), ttl=int(results[3 * i + 2])), window)
            for i, (_, window) in enumerate(plan)
        ]
        wait = retry_after(counts)
        if wait is not None:
            raise TooManyAttempts("too many login attempts; try again later", retry_after=wait)
        return LoginAttempt(keys=tuple((key, window.seconds) for key, window in plan))

    async def succeeded(self, attempt: LoginAttempt) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, seconds in attempt.keys:
                pipe.decr(key)
                # If the window ended meanwhile, DECR made a fresh key: give it a TTL too.
                pipe.expire(key, seconds, nx=True)
            await pipe.execute()
