"""What the accounts repositories accept as a database handle.

Repository functions take any of these, so route handlers pass the app's pool, the CLI passes a
single connection, and a caller that needs several statements in one transaction passes the
connection it holds (or uses `transaction`, which works on either).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy


@asynccontextmanager
async def transaction(db: Executor) -> AsyncIterator[asyncpg.Connection | PoolConnectionProxy]:
    """One transaction on `db`: a connection of the pool, or the connection itself (nested: a savepoint)."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db
