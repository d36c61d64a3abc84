"""Receipts: every `/v1` answer says what it cost (`usage.cost`, in USD, as OpenRouter does).

Answers are relayed as the provider's bytes, so the cost is spliced into the top-level `usage`
object rather than by re-encoding the whole answer: find the last `"usage"` key whose value is an
object and insert `"cost":<decimal>` as its first member. Inside JSON strings every quote is
escaped, so the unescaped `"usage"` followed by `:` and `{` can only be a key.
"""

from __future__ import annotations

_KEY = b'"usage"'
_SPACE = b" \t\r\n"


def add_cost(document: bytes, cost_usd: str) -> bytes:
    """The JSON document with `"cost": <cost_usd>` in its usage object; unchanged if it has none."""
    end = len(document)
    while (at := document.rfind(_KEY, 0, end)) >= 0:
        i = _skip_space(document, at + len(_KEY))
        if i < len(document) and document[i : i + 1] == b":":
            i = _skip_space(document, i + 1)
            if document[i : i + 1] == b"{":
                rest = _skip_space(document, i + 1)
                separator = b"" if document[rest : rest + 1] == b"}" else b","
                member = b'"cost":' + cost_usd.encode() + separator
                return document[: i + 1] + member + document[i + 1 :]
        end = at
    return document


def _skip_space(document: bytes, i: int) -> int:
    while i < len(document) and document[i] in _SPACE:
        i += 1
    return i
