"""The buyer's statement filters and CSV export (GET /api/billing/transactions[.csv]), and the
statement pages built on the same queries (billing/statements.py), on the real app."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from tests.integration.test_billing_api import PASSWORD, USD, Account, charge, credit, register

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture
async def buyer(client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection) -> Account:
    """A buyer with a credit of $10 and one request that cost $0.25."""
    account = await register(client)
    await credit(app, account.id, 10 * USD, reason="welcome")
    await charge(db, account.id, cost_micro=USD // 4, model="gpt-4o")
    return account


def today() -> str:
    return datetime.now(UTC).date().isoformat()


async def test_transactions_filtered_by_kind_show_only_that_kind(client: httpx.AsyncClient, buyer: Account) -> None:
    answer = await client.get("/api/billing/transactions", params={"kind": "credit"}, headers=buyer.auth)
    assert answer.status_code == 200, answer.text
    assert [row["type"] for row in answer.json()["data"]] == ["credit"]


async def test_an_unknown_kind_is_refused_naming_kind(client: httpx.AsyncClient, buyer: Account) -> None:
    answer = await client.get("/api/billing/transactions", params={"kind": "payout"}, headers=buyer.auth)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "kind"


async def test_transactions_before_since_are_left_out(client: httpx.AsyncClient, buyer: Account) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    answer = await client.get("/api/billing/transactions", params={"since": tomorrow}, headers=buyer.auth)
    assert answer.json()["data"] == []
    answer = await client.get("/api/billing/transactions", params={"since": today()}, headers=buyer.auth)
    assert len(answer.json()["data"]) == 2


async def test_the_csv_export_holds_every_filtered_entry_with_the_apis_fields(
    client: httpx.AsyncClient, buyer: Account
) -> None:
    answer = await client.get("/api/billing/transactions.csv", params={"kind": "usage"}, headers=buyer.auth)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(r["type"], r["amount_usd"], r["balance_after_usd"]) for r in rows] == [("usage", "-0.250000", "9.750000")]


async def test_the_csv_export_needs_a_session(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/billing/transactions.csv")
    assert answer.status_code == 401


async def test_another_buyers_entries_never_appear_in_the_csv(client: httpx.AsyncClient, buyer: Account) -> None:
    other = await register(client)
    answer = await client.get("/api/billing/transactions.csv", headers=other.auth)
    assert answer.text.strip().splitlines() == ["id,created_at,type,description,amount_usd,balance_after_usd"]


async def _browser_session(client: httpx.AsyncClient, account: Account) -> None:
    """Log the page client in with the account's e-mail (the pages read the session cookie)."""
    response = await client.post("/login", data={"email": account.email, "password": PASSWORD})
    assert response.status_code == 303, response.text


async def test_the_transactions_page_lists_the_entries_and_links_the_csv_with_its_filters(
    client: httpx.AsyncClient, buyer: Account
) -> None:
    await _browser_session(client, buyer)
    page = await client.get("/app/billing/transactions", params={"kind": "credit", "since": today()})
    assert page.status_code == 200, page.text
    assert "credit: welcome" in page.text and "gpt-4o" not in page.text
    assert f'href="/api/billing/transactions.csv?kind=credit&amp;since={today()}"' in page.text


async def test_a_bad_date_on_the_transactions_page_is_refused_next_to_its_field(
    client: httpx.AsyncClient, buyer: Account
) -> None:
    await _browser_session(client, buyer)
    page = await client.get("/app/billing/transactions", params={"since": "yesterday"})
    assert page.status_code == 400
    assert 'id="f-since-error"' in page.text and 'value="yesterday"' in page.text
    assert "credit: welcome" not in page.text


async def test_the_usage_page_shows_each_request_with_its_tokens_and_cost(
    client: httpx.AsyncClient, buyer: Account
) -> None:
    await _browser_session(client, buyer)
    page = await client.get("/app/billing/usage", params={"model": "gpt-4o"})
    assert page.status_code == 200, page.text
    assert "<td>gpt-4o</td>" in page.text and '<td class="num">0.25</td>' in page.text
