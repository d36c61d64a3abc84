"""The market pages served by the app: the offers table and its sorting, a model's page, and the
quote form with its errors next to the fields."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette

from tests.support.app import replace_services
from tests.support.browser import PASSWORD
from tests.support.emails import unique_email
from tests.support.market_seed import SeededListing, seller_with_listing_in_app, unique_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture(autouse=True)
def accept_every_key(app: Starlette) -> None:
    """No provider stands behind these listings: only their prices and figures are looked at."""

    async def checker(provider: str, base_url: str, api_key: str) -> None:
        return None

    replace_services(app, key_checker=checker)


async def signed_in(client: httpx.AsyncClient) -> None:
    response = await client.post("/register", data={"email": unique_email("buyer"), "password": PASSWORD})
    assert response.status_code == 303, response.text


async def two_offers(client: httpx.AsyncClient) -> tuple[str, SeededListing, SeededListing]:
    model = unique_model()
    dear = await seller_with_listing_in_app(client, "5", "10", models=(model,))
    cheap = await seller_with_listing_in_app(client, "1", "2", models=(model,))
    return model, cheap, dear


def order_of(html: str, *offer_ids: str) -> list[str]:
    """The given offers in the order the page shows them."""
    return sorted(offer_ids, key=html.index)


async def test_the_market_needs_a_login_and_comes_back_after_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/app/market?model=x")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/app/market%3Fmodel%3Dx"


async def test_the_market_lists_a_models_offers_cheapest_first(client: httpx.AsyncClient) -> None:
    model, cheap, dear = await two_offers(client)
    await signed_in(client)
    page = await client.get("/app/market")
    assert page.status_code == 200
    assert f'href="/app/market/{model}"' in page.text
    assert order_of(page.text, cheap.offer_id, dear.offer_id) == [cheap.offer_id, dear.offer_id]
    assert "$5.00" in page.text and "$10.00" in page.text


async def test_sorting_by_input_price_descending_puts_the_dearest_first(client: httpx.AsyncClient) -> None:
    model, cheap, dear = await two_offers(client)
    await signed_in(client)
    page = await client.get("/app/market", params={"model": model, "sort": "input", "order": "desc"})
    assert order_of(page.text, cheap.offer_id, dear.offer_id) == [dear.offer_id, cheap.offer_id]
    sorted_header = re.search(r'<th scope="col"[^>]*aria-sort="descending"[^>]*>\s*<a[^>]*href="([^"]+)"', page.text)
    assert sorted_header is not None
    # its link sorts the other way, and keeps the model filter
    assert sorted_header.group(1) == f"/app/market?model={model}&amp;sort=input&amp;order=asc"


async def test_the_model_filter_shows_only_that_models_offers(client: httpx.AsyncClient) -> None:
    model, cheap, _ = await two_offers(client)
    other = await seller_with_listing_in_app(client, "1", "1", models=(unique_model(),))
    await signed_in(client)
    page = await client.get("/app/market", params={"model": model})
    assert cheap.offer_id in page.text
    assert other.offer_id not in page.text


async def test_a_model_without_offers_shows_what_to_do_next(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    model = unique_model()
    page = await client.get("/app/market", params={"model": model})
    assert page.status_code == 200
    assert f"No offers for {model}" in page.text
    assert 'href="/app/market"' in page.text


async def test_a_catalog_models_page_shows_its_context_window_and_offers(client: httpx.AsyncClient) -> None:
    seeded = await seller_with_listing_in_app(client, "0.1", "0.2", models=("gpt-4o-mini",))
    await signed_in(client)
    page = await client.get("/app/market/gpt-4o-mini")
    assert page.status_code == 200
    assert "128,000 tokens" in page.text  # the catalog's context length for gpt-4o-mini
    assert "$0.15 / 1M" in page.text  # its list input price
    assert seeded.offer_id in page.text


async def test_a_model_nobody_lists_and_the_catalog_does_not_know_is_not_found(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    assert (await client.get(f"/app/market/{unique_model()}")).status_code == 404


async def test_the_quote_page_prices_the_prompt_at_each_offer(client: httpx.AsyncClient) -> None:
    model, cheap, dear = await two_offers(client)
    await signed_in(client)
    page = await client.post(
        "/app/market/quote",
        data={"csrf_token": client.cookies["aichat_csrf"], "model": model, "prompt": "hi there", "max_tokens": "1000"},
    )
    assert page.status_code == 200
    assert order_of(page.text, cheap.offer_id, dear.offer_id) == [cheap.offer_id, dear.offer_id]
    # 1,000 answer tokens at $2/M and $10/M are the most each can cost, beyond the prompt
    assert re.search(r"\$0\.0020\d*</td>", page.text) and re.search(r"\$0\.010\d*</td>", page.text)
    assert "up to 1,000 answer tokens" in page.text


async def test_a_quote_without_a_prompt_is_refused_next_to_it_and_keeps_the_rest(client: httpx.AsyncClient) -> None:
    model, _, _ = await two_offers(client)
    await signed_in(client)
    page = await client.post(
        "/app/market/quote",
        data={"csrf_token": client.cookies["aichat_csrf"], "model": model, "prompt": " ", "max_tokens": "77"},
    )
    assert page.status_code == 400
    assert '<p class="error" id="f-prompt-error">Type the prompt to price.</p>' in page.text
    assert 'value="77"' in page.text
    assert f'<option value="{model}" selected>' in page.text


async def test_a_quote_above_the_token_cap_is_refused_next_to_max_tokens(client: httpx.AsyncClient) -> None:
    model, _, _ = await two_offers(client)
    await signed_in(client)
    page = await client.post(
        "/app/market/quote",
        data={"csrf_token": client.cookies["aichat_csrf"], "model": model, "prompt": "hi", "max_tokens": "99999999"},
    )
    assert page.status_code == 400
    assert re.search(r'id="f-max_tokens-error">&#39;max_tokens&#39; must be at most \d+', page.text)
    assert "hi</textarea>" in page.text


async def test_a_quote_for_a_model_nobody_sells_is_refused_next_to_the_model(client: httpx.AsyncClient) -> None:
    await signed_in(client)
    model = unique_model()
    page = await client.post(
        "/app/market/quote", data={"csrf_token": client.cookies["aichat_csrf"], "model": model, "prompt": "hi"}
    )
    assert page.status_code == 400
    assert f'id="f-model-error">No active listing serves `{model}` right now.' in page.text


async def test_the_market_names_no_seller_listing_id_or_upstream(client: httpx.AsyncClient) -> None:
    model, cheap, dear = await two_offers(client)
    await signed_in(client)
    for path in ("/app/market", f"/app/market/{model}"):
        text = (await client.get(path, params={"model": model})).text
        assert cheap.offer_id in text
        for secret in (cheap.seller_email, dear.seller_email, cheap.listing_id, dear.listing_id, "127.0.0.1:9"):
            assert secret not in text, (path, secret)
