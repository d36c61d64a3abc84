"""The gateway's Redis connection pool: redis-py's, minus what it costs on every command.

redis-py 8's `ConnectionPool.get_connection` and `release` take an asyncio lock, inspect their
arguments for deprecations, record OpenTelemetry connection counts and dispatch a "released"
event on every command. The gateway uses none of that (no OpenTelemetry hooks, no credential
provider to re-authenticate), and at two Redis round trips per request it showed in profiles
(docs/performance.md). What remains is the pool's contract: a connection is
checked out connected and with nothing unread (else reconnected), given back, and reused LIFO.

No lock is needed: checking out and giving back do not await between reading and changing the
pool's lists, and one event loop owns the pool.

`multiplex=True` also gives the pool a `Multiplexer` (redismux.py): `Batch`es then share one
connection instead of checking one out each; redis-py's own commands still use the pool.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection

from aichat_gateway.redismux import Multiplexer


class LeanConnectionPool(ConnectionPool):
    def __init__(self, *args: Any, multiplex: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.multiplexer: Multiplexer | None = None
        if multiplex:
            template: AbstractConnection = self.make_connection()  # type: ignore[no-untyped-call]
            self.multiplexer = Multiplexer(template) if Multiplexer.supports(template) else None

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> AbstractConnection:
        connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: AbstractConnection) -> None:
        self._in_use_connections.remove(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        self._available_connections.append(connection)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        if self.multiplexer is not None:
            self.multiplexer.close()
        await super().disconnect(inuse_connections)
