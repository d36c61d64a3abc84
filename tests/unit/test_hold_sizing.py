"""Holds bound non-text prompt parts by the catalog's per-part allowances, not by their bytes."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from aichat_gateway.config.catalog import PartAllowance, load_catalog, parse_catalog
from aichat_gateway.marketplace.pricing import Price, cost_micro
from aichat_gateway.proxy.charging import beyond_hold, charge, prompt_tokens_bound

CATALOG = load_catalog()
NO_CEILING = PartAllowance(image=1000, audio=200, file=50_000)


def image(url: str = "https://example.com/cat.png") -> dict[str, object]:
    return {"type": "image_url", "image_url": {"url": url}}


def body_bytes(messages: list[dict[str, object]]) -> int:
    return len(orjson.dumps({"model": "m", "messages": messages}))


def test_a_plain_text_prompt_is_bounded_by_the_bodys_bytes() -> None:
    messages = [{"role": "user", "content": "hello there"}]
    assert prompt_tokens_bound(messages, 57, NO_CEILING) == 57


def test_text_parts_add_nothing_beyond_their_bytes() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "you"}]}]
    assert prompt_tokens_bound(messages, 80, NO_CEILING) == 80


def test_the_attack_of_2000_small_image_parts_is_held_for_2000_images() -> None:
    """34 KB of body, 170,010 tokens billed: the bytes alone bounded it at ~34,000."""
    messages = [{"role": "user", "content": [image() for _ in range(2000)]}]
    size = body_bytes(messages)
    bound = prompt_tokens_bound(messages, size, NO_CEILING)
    assert bound == size + 2000 * 1000
    assert bound > 170_010


@pytest.mark.parametrize(
    ("part", "allowance"),
    [
        ({"type": "image_url", "image_url": {"url": "u"}}, 1000),
        ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, 200),
        ({"type": "file", "file": {"file_id": "file-abc"}}, 50_000),
        ({"type": "video_url", "video_url": {"url": "u"}}, 50_000),  # unknown kinds count as a file
        ({"no_type": True}, 50_000),
        ("not an object", 50_000),
    ],
)
def test_each_non_text_part_adds_its_kinds_allowance(part: object, allowance: int) -> None:
    messages = [{"role": "user", "content": [part]}]
    assert prompt_tokens_bound(messages, 100, NO_CEILING) == 100 + allowance


def test_parts_in_every_message_count_not_just_the_last() -> None:
    messages = [
        {"role": "user", "content": [image()]},
        {"role": "assistant", "content": "I see a cat"},
        {"role": "user", "content": [image(), image()]},
    ]
    assert prompt_tokens_bound(messages, 300, NO_CEILING) == 300 + 3 * 1000


def test_no_prompt_is_held_above_the_models_context_length() -> None:
    allowance = CATALOG.part_allowance("gpt-4o")
    messages = [{"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}] * 3}]
    assert prompt_tokens_bound(messages, 4 * 1024 * 1024, allowance) == 128_000


def test_gpt_4o_minis_images_cost_far_more_than_gpt_4os_and_the_catalog_says_so() -> None:
    assert CATALOG.part_allowance("gpt-4o-mini").image == 48_169
    assert CATALOG.part_allowance("gpt-4o").image == 1_445


def test_a_model_outside_the_catalog_gets_the_generous_allowances_and_no_ceiling() -> None:
    other = CATALOG.part_allowance("someone/custom-model")
    assert other.prompt_ceiling is None
    assert other.image >= 48_169 and other.file >= 1_000_000


def test_a_catalog_allowance_that_is_not_a_positive_integer_refuses_to_load() -> None:
    entry = {
        "id": "m",
        "provider": "openai",
        "kind": "chat",
        "input_usd_per_million": "1",
        "output_usd_per_million": "1",
        "context_length": 1000,
        "max_output_tokens": 10,
        "tokenizer": "o200k_base",
        "input_part_tokens": {"image": 0},
    }
    with pytest.raises(ValueError, match="image"):
        parse_catalog({"models": [entry]})
    with pytest.raises(ValueError, match="part kind"):
        parse_catalog({"models": [{**entry, "input_part_tokens": {"video": 5}}]})


PRICE = Price(input_micro_per_million=1_000_000, output_micro_per_million=2_000_000)


def test_an_answer_within_the_hold_is_charged_in_full_and_nothing_is_beyond_it() -> None:
    assert charge(PRICE, 100, 50, held_micro=1_000) == 200
    assert beyond_hold(PRICE, 100, 50, held_micro=1_000) == 0


def test_an_answer_over_the_hold_charges_the_buyer_the_hold_and_the_rest_is_beyond_it() -> None:
    full = cost_micro(PRICE, 170_010, 10)
    assert charge(PRICE, 170_010, 10, held_micro=34_080) == 34_080
    assert beyond_hold(PRICE, 170_010, 10, held_micro=34_080) == full - 34_080
    assert Decimal(full) == 170_010 + 20
