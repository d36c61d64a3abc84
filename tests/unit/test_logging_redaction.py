"""Secrets are redacted from log lines by field name and by value, before anything is written."""

from __future__ import annotations

import contextvars
import io
import json

import structlog

from aichat_gateway.config.logging import REDACTED, configure_logging, get_logger, mask, remember_secret

GATEWAY_KEY = "agw-" + "A" * 43
PROVIDER_KEY = "sk-proj-abcdefghijklmnop1234"


def log_line(**fields: object) -> dict[str, object]:
    stream = io.StringIO()
    configure_logging("info", json=True, stream=stream)
    try:
        get_logger("test").info("event_under_test", **fields)
    finally:
        structlog.reset_defaults()
    result: dict[str, object] = json.loads(stream.getvalue().strip().splitlines()[-1])
    return result


def test_fields_named_like_secrets_are_replaced_whole() -> None:
    line = log_line(api_key="anything", password="hunter2", authorization="Bearer x", token="t")
    assert {line[k] for k in ("api_key", "password", "authorization", "token")} == {REDACTED}


def test_secret_values_inside_free_text_are_masked() -> None:
    line = log_line(error=f"upstream said: Incorrect API key provided: {PROVIDER_KEY}")
    assert PROVIDER_KEY not in json.dumps(line)
    assert REDACTED in str(line["error"])


def test_gateway_keys_and_bearer_headers_are_masked_in_nested_values() -> None:
    line = log_line(details={"headers": [f"Bearer {GATEWAY_KEY}"], "note": f"key {GATEWAY_KEY}"})
    assert GATEWAY_KEY not in json.dumps(line)


def test_ordinary_values_are_left_alone() -> None:
    line = log_line(model="gpt-4o-mini", listing="lst_0123456789abcdef", tokens=12)
    assert (line["model"], line["listing"], line["tokens"]) == ("gpt-4o-mini", "lst_0123456789abcdef", 12)


def test_mask_handles_several_secrets_in_one_string() -> None:
    text = mask(f"{GATEWAY_KEY} and {PROVIDER_KEY}")
    assert GATEWAY_KEY not in text and PROVIDER_KEY not in text


def test_keys_of_common_openai_compatible_providers_are_masked_by_their_format() -> None:
    keys = ["gsk_" + "a1B2" * 10, "xai-" + "Q" * 40, "pplx-" + "7" * 40, "AIza" + "S" * 35, "nvapi-" + "k" * 30]
    assert all(key not in mask(f"key {key} rejected") for key in keys)


def test_a_secret_the_request_remembered_is_masked_in_its_log_lines_whatever_its_format() -> None:
    secret = "zq" + "0123456789abcdef" * 2  # no pattern knows it

    def in_a_request() -> dict[str, object]:
        remember_secret(secret)
        return log_line(error=f"upstream said: your key {secret} is invalid", nested={"body": secret})

    line = contextvars.copy_context().run(in_a_request)
    assert secret not in json.dumps(line)


def test_a_secret_remembered_by_one_request_is_not_masked_in_anothers_log_lines() -> None:
    contextvars.copy_context().run(remember_secret, "the-first-requests-key")
    line = log_line(note="the-first-requests-key is just text here")
    assert line["note"] == "the-first-requests-key is just text here"


def test_a_value_too_short_to_be_a_key_is_never_masked_by_its_exact_value() -> None:
    assert mask("a cat sat", exact=("cat",)) == "a cat sat"
