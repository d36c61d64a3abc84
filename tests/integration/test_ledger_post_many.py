"""ledger.post_many: many transfers in three round trips, with exactly `post`'s results."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.errors import LedgerError
from aichat_gateway.billing.ledger import AccountKind, Transfer, account_id, post, post_many
from tests.support.scratch import migrated_database
from tests.support.settlekit import new_user

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_database("postmany") as url:
        yield url


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def accounts(conn: asyncpg.Connection) -> tuple[int, int, int, int]:
    """(clearing, buyer, seller, platform) with fresh owners."""
    return (
        await account_id(conn, AccountKind.STRIPE_CLEARING),
        await account_id(conn, AccountKind.BUYER, await new_user(conn)),
        await account_id(conn, AccountKind.SELLER, await new_user(conn)),
        await account_id(conn, AccountKind.PLATFORM),
    )


def key() -> str:
    return f"test:{uuid.uuid4()}"


async def entries_of(conn: asyncpg.Connection, transfer: int) -> list[tuple[int, int, int]]:
    rows = await conn.fetch(
        "SELECT account_id, amount_micro, balance_after_micro FROM ledger_entries WHERE transfer_id = $1 ORDER BY id",
        transfer,
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def test_many_transfers_land_as_if_posted_one_by_one(conn: asyncpg.Connection) -> None:
    clearing, buyer, seller, platform = await accounts(conn)
    _, buyer2, seller2, _ = await accounts(conn)
    batch = [
        Transfer(key(), "topup", [(clearing, -10_000), (buyer, 10_000)]),
        Transfer(key(), "usage", [(buyer, -1_000), (seller, 900), (platform, 100)]),
        Transfer(key(), "usage", [(buyer, -500), (seller2, 450), (platform, 50)]),
        Transfer(key(), "topup", [(clearing, -700), (buyer2, 700)]),
        Transfer(key(), "usage", [(buyer2, -300), (seller, 300)]),
    ]
    balance_before = dict(await conn.fetch("SELECT id, balance_micro FROM ledger_accounts"))

    async with conn.transaction():
        ids = await post_many(conn, batch)

    posted = [i for i in ids if i is not None]
    assert len(posted) == len(batch) and posted == sorted(posted)
    after = dict(await conn.fetch("SELECT id, balance_micro FROM ledger_accounts"))
    assert after[buyer] == 8_500 and after[buyer2] == 400
    assert after[seller] == 1_200 and after[seller2] == 450
    assert after[platform] == balance_before[platform] + 150
    assert after[clearing] == balance_before[clearing] - 10_700
    assert ids[1] is not None and await entries_of(conn, ids[1]) == [
        (buyer, -1_000, 9_000),
        (seller, 900, 900),
        (platform, 100, balance_before[platform] + 100),
    ]
    assert await audit(conn) == []


async def test_a_key_posted_before_comes_back_none_and_the_rest_post(conn: asyncpg.Connection) -> None:
    clearing, buyer, _, _ = await accounts(conn)
    used = key()
    async with conn.transaction():
        first = await post(conn, idempotency_key=used, kind="topup", legs=[(clearing, -5), (buyer, 5)])

    async with conn.transaction():
        ids = await post_many(
            conn,
            [
                Transfer(used, "topup", [(clearing, -99), (buyer, 99)]),
                Transfer(key(), "topup", [(clearing, -7), (buyer, 7)]),
            ],
        )

    assert first is not None and ids[0] is None and ids[1] is not None
    assert await conn.fetchval("SELECT balance_micro FROM ledger_accounts WHERE id = $1", buyer) == 12
    assert await audit(conn) == []


async def test_every_key_used_before_posts_nothing(conn: asyncpg.Connection) -> None:
    clearing, buyer, _, _ = await accounts(conn)
    transfers = [Transfer(key(), "topup", [(clearing, -3), (buyer, 3)])]
    async with conn.transaction():
        await post_many(conn, transfers)
    async with conn.transaction():
        assert await post_many(conn, transfers) == [None]
    assert await conn.fetchval("SELECT balance_micro FROM ledger_accounts WHERE id = $1", buyer) == 3


async def test_the_same_key_twice_in_one_call_is_refused(conn: asyncpg.Connection) -> None:
    clearing, buyer, _, _ = await accounts(conn)
    same = key()
    transfer = Transfer(same, "topup", [(clearing, -1), (buyer, 1)])
    async with conn.transaction():
        with pytest.raises(LedgerError, match="distinct"):
            await post_many(conn, [transfer, transfer])


async def test_one_broken_transfer_refuses_the_call_before_anything_is_written(conn: asyncpg.Connection) -> None:
    clearing, buyer, _, _ = await accounts(conn)
    before = await conn.fetchval("SELECT count(*) FROM transfers")
    async with conn.transaction():
        with pytest.raises(LedgerError, match="sum"):
            await post_many(
                conn,
                [
                    Transfer(key(), "topup", [(clearing, -1), (buyer, 1)]),
                    Transfer(key(), "topup", [(clearing, -1), (buyer, 2)]),
                ],
            )
    assert await conn.fetchval("SELECT count(*) FROM transfers") == before


async def test_post_many_outside_a_transaction_is_refused(conn: asyncpg.Connection) -> None:
    clearing, buyer, _, _ = await accounts(conn)
    with pytest.raises(LedgerError, match="transaction"):
        await post_many(conn, [Transfer(key(), "topup", [(clearing, -1), (buyer, 1)])])


async def test_nothing_to_post_is_nothing(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        assert await post_many(conn, []) == []
