"""The model catalog: the packaged data loads, prices are exact integers, bad data is refused."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from aichat_gateway.config.catalog import (
    PROVIDERS,
    Catalog,
    CatalogModel,
    load_catalog,
    parse_catalog,
    usd_per_million_to_micro,
)

VALID_ENTRY: dict[str, object] = {
    "id": "test-model",
    "provider": "openai",
    "kind": "chat",
    "input_usd_per_million": "0.15",
    "output_usd_per_million": "0.60",
    "context_length": 128000,
    "max_output_tokens": 16384,
    "tokenizer": "o200k_base",
}


def _document(**overrides: object) -> dict[str, object]:
    entry = copy.deepcopy(VALID_ENTRY)
    entry.update(overrides)
    return {"models": [entry]}


def test_the_packaged_catalog_loads() -> None:
    catalog = load_catalog()
    assert len(catalog.models()) >= 30


def test_every_provider_of_the_issue_is_in_the_packaged_catalog() -> None:
    providers = {model.provider for model in load_catalog().models()}
    assert providers == {"openai", "anthropic", "google", "meta", "mistral", "deepseek"}
    assert providers == PROVIDERS


@pytest.mark.parametrize(
    "model_id",
    [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-3.5-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "claude-3-5-haiku",
        "claude-3-5-sonnet",
        "claude-3-7-sonnet",
        "claude-sonnet-4",
        "claude-opus-4",
        "gemini-1.5-pro",
        "gemini-1.5-flash",
        "gemini-2.0-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "llama-3.1-8b-instruct",
        "llama-3.1-70b-instruct",
        "llama-3.3-70b-instruct",
        "llama-3.1-405b-instruct",
        "mistral-large",
        "mistral-small",
        "codestral",
        "open-mistral-nemo",
        "deepseek-chat",
        "deepseek-reasoner",
    ],
)
def test_every_model_named_in_the_issue_is_in_the_packaged_catalog(model_id: str) -> None:
    assert load_catalog().get(model_id) is not None


def test_packaged_prices_are_exact_integers_in_micro_usd_per_million() -> None:
    model = load_catalog().get("gpt-4o-mini")
    assert model is not None
    assert model.input_micro_per_million == 150_000
    assert model.output_micro_per_million == 600_000
    assert type(model.input_micro_per_million) is int
    assert type(model.output_micro_per_million) is int


def test_every_packaged_price_is_a_non_negative_int() -> None:
    for model in load_catalog().models():
        for price in (model.input_micro_per_million, model.output_micro_per_million):
            assert type(price) is int and price >= 0, model.id


def test_a_price_with_six_decimal_places_is_kept_exactly() -> None:
    assert usd_per_million_to_micro("0.075") == 75_000
    assert usd_per_million_to_micro("1.000001") == 1_000_001


def test_embedding_models_have_a_zero_output_price_and_no_output_tokens() -> None:
    embeddings = [m for m in load_catalog().models() if m.kind == "embedding"]
    assert {m.id for m in embeddings} == {"text-embedding-3-small", "text-embedding-3-large"}
    assert all(m.output_micro_per_million == 0 and m.max_output_tokens == 0 for m in embeddings)


def test_the_packaged_file_stores_prices_as_strings() -> None:
    raw = (Path(__file__).parents[2] / "aichat_gateway" / "config" / "catalog.json").read_text()
    for entry in json.loads(raw)["models"]:
        assert isinstance(entry["input_usd_per_million"], str), entry["id"]
        assert isinstance(entry["output_usd_per_million"], str), entry["id"]


def test_an_unknown_model_gives_none() -> None:
    assert load_catalog().get("no-such-model") is None


def test_a_catalog_read_from_an_explicit_path_is_used(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(_document()))
    catalog = load_catalog(path)
    assert [m.id for m in catalog.models()] == ["test-model"]


def test_a_price_with_a_seventh_decimal_place_is_refused_with_a_message_naming_the_model() -> None:
    with pytest.raises(ValueError, match=re.escape("'test-model'")) as info:
        parse_catalog(_document(input_usd_per_million="0.0000001"))
    assert "input_usd_per_million" in str(info.value)


def test_a_negative_price_is_refused_with_a_message_naming_the_model() -> None:
    with pytest.raises(ValueError, match=r"'test-model'.*negative"):
        parse_catalog(_document(output_usd_per_million="-1.00"))


def test_a_float_price_is_refused_with_a_message_naming_the_model() -> None:
    with pytest.raises(ValueError, match=r"'test-model'.*decimal string"):
        parse_catalog(_document(input_usd_per_million=0.15))


@pytest.mark.parametrize("text", ["", "abc", "1e3", "+1", " 0.15", "0.15 ", "1_000", "NaN", "Infinity", ".5", "5."])
def test_a_price_that_is_not_a_plain_decimal_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="decimal"):
        usd_per_million_to_micro(text)


def test_a_bad_price_in_a_file_is_refused_with_a_message_naming_the_model(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(_document(id="broken-model", input_usd_per_million="cheap")))
    with pytest.raises(ValueError, match="broken-model"):
        load_catalog(path)


def test_an_unknown_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown provider"):
        parse_catalog(_document(provider="acme"))


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="kind"):
        parse_catalog(_document(kind="image"))


def test_a_missing_field_is_refused_with_its_name() -> None:
    document = _document()
    models = document["models"]
    assert isinstance(models, list)
    del models[0]["tokenizer"]
    with pytest.raises(ValueError, match="missing tokenizer"):
        parse_catalog(document)


def test_a_misspelt_field_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown field"):
        parse_catalog(_document(context_lenght=5))


def test_a_boolean_context_length_is_refused() -> None:
    with pytest.raises(ValueError, match="context_length"):
        parse_catalog(_document(context_length=True))


def test_a_max_output_beyond_the_context_length_is_refused() -> None:
    with pytest.raises(ValueError, match="max_output_tokens"):
        parse_catalog(_document(context_length=1000, max_output_tokens=2000))


def test_a_duplicate_model_id_is_refused() -> None:
    document = _document()
    models = document["models"]
    assert isinstance(models, list)
    models.append(copy.deepcopy(models[0]))
    with pytest.raises(ValueError, match="twice"):
        parse_catalog(document)


def test_a_document_without_a_models_list_is_refused() -> None:
    with pytest.raises(ValueError, match="models"):
        parse_catalog({"model": []})


def test_a_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_catalog(path)


def test_the_catalog_cannot_be_changed_after_loading() -> None:
    catalog = load_catalog()
    model = catalog.get("gpt-4o")
    assert model is not None
    with pytest.raises(AttributeError):
        model.input_micro_per_million = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        catalog.entries = ()  # type: ignore[misc]


def test_a_catalog_keeps_file_order() -> None:
    first = CatalogModel("b", "openai", "chat", 1, 2, 10, 5, "cl100k_base")
    second = CatalogModel("a", "meta", "chat", 1, 2, 10, 5, "llama3")
    catalog = Catalog((first, second))
    assert catalog.models() == (first, second)
    assert "a" in catalog and "c" not in catalog
