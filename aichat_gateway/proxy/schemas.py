"""The quote's body and answer as pydantic models (aichat_gateway/apibody.py reads them).

Only `/api/marketplace/quote` is here: `/v1` bodies are parsed by hand on the hot path
(inbound.py), and their shape is OpenAI's, not described in `/openapi.json`.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from aichat_gateway.apibody import Answer, Body, Usd

MAX_PROMPT_TOKENS = 10_000_000


class QuoteRequest(Body):
    """The model, and either the prompt's size or the messages (and tools) to count it from;
    `max_tokens` defaults to the model's output limit and is at most the gateway's cap."""

    model: Annotated[str, Field(min_length=1)]
    messages: list[dict[str, Any]] | None = None
    tools: list[Any] | None = None
    prompt_tokens: Annotated[int, Field(ge=0, le=MAX_PROMPT_TOKENS)] | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None


class CostRange(Answer):
    min: Usd
    max: Usd


class Quote(Answer):
    model: str
    prompt_tokens: int = Field(ge=0)
    max_tokens: int = Field(ge=0)
    offer_id: str
    input_usd_per_million: Usd
    output_usd_per_million: Usd
    estimated_cost_usd: CostRange
