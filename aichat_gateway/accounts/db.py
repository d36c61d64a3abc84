"""What the accounts repositories accept as a database handle.

Repository functions take any of these, so route handlers pass the app's pool, the CLI passes a
single connection, and a caller that needs several statements in one transaction passes the
connection it holds.
"""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
