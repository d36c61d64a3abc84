"""Query parameters of the REST API: timestamps, page sizes and pagination cursors, one parser each
for every package's handlers (billing and marketplace may not import each other, so it lives here).

The parsers are pure: `parse_timestamp`, `whole_number` and `decode_cursor` return None for
anything they do not accept. The readers (`timestamp`, `page_limit`, `cursor`) take a request's
query parameters and raise the caller's own error class, naming the parameter, so each package
answers in its own error tree (as with `httpbody.read_capped`).

Why so strict: whatever passes here reaches datetime arithmetic and asyncpg. A year-1 or
year-9999 time overflows Python's datetime when a window is subtracted from it or it is moved to
UTC, and asyncpg refuses values Postgres cannot hold; either was a 500. Accepted times are
therefore bounded to [1970-01-01, 2200-01-01) UTC, far inside what both accept after any shift
by a window (366 days) or a UTC offset (< 24 h).

Timestamps: `YYYY-MM-DD` (UTC midnight) or `YYYY-MM-DDTHH:MM[:SS[.fraction]]` with `Z` or an
offset `±HH:MM` (none means UTC), ASCII digits only, at most 64 characters. A `+` sent unencoded
in a query string arrives as a space: the error says so.

Cursors are opaque to clients: URL-safe base64 (unpadded) of fields joined by U+001F. They are
not signed; instead every field is type- and range-checked on the way in (`cursor_time`,
`cursor_uuid`, `cursor_text`, `cursor_int`) and the text must be exactly what `encode_cursor`
would have written, so a tampered cursor is a 400, never a failed query. Every query behind a
cursor is scoped to the caller, so a well-formed forged one shows nothing a client could not page
to anyway.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Final, Protocol, TypeVar, overload

EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
END: Final = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive
MAX_TIMESTAMP_CHARS: Final = 64
MAX_CURSOR_CHARS: Final = 1024
MAX_CURSOR_TEXT: Final = 256
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 200
CURSOR_REFUSED: Final = "cursor is not one this API gave out"

_SEPARATOR: Final = "\x1f"
_TIMESTAMP: Final = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"(?:[Tt](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<zone>[Zz]|(?P<sign>[+-])(?P<zone_hours>[0-9]{2}):?(?P<zone_minutes>[0-9]{2}))?)?"
)

T = TypeVar("T")
A = TypeVar("A")
B = TypeVar("B")


class ParamError(Protocol):
    """An error class of the caller's tree, built as `error(message, param=name)`."""

    def __call__(self, message: str, *, param: str | None = ...) -> Exception: ...


# ---- pure parsers ---------------------------------------------------------------------------------


def parse_timestamp(text: str) -> datetime | None:
    """An aware UTC datetime in [EARLIEST, END), or None if `text` is not an accepted date or time."""
    if len(text) > MAX_TIMESTAMP_CHARS:
        return None
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        return None
    part = match.groupdict()
    offset = timedelta(0)
    if part["sign"] is not None:
        offset = timedelta(hours=int(part["zone_hours"]), minutes=int(part["zone_minutes"]))
        if part["sign"] == "-":
            offset = -offset
    try:
        value = datetime(
            int(part["year"]),
            int(part["month"]),
            int(part["day"]),
            int(part["hour"] or 0),
            int(part["minute"] or 0),
            int(part["second"] or 0),
            int((part["fraction"] or "")[:6].ljust(6, "0")),
            tzinfo=timezone(offset),  # refuses offsets of a day or more
        )
        # The year is 0000..9999 here: subtracting the offset could leave datetime's range.
        utc = value.astimezone(UTC)
    except (ValueError, OverflowError):  # month 13, 31 February, 24:00, offset +24:00, ...
        return None
    return utc if EARLIEST <= utc < END else None


def whole_number(text: str, low: int, high: int) -> int | None:
    """ASCII digits only, within [low, high]; None otherwise. str.isdigit() alone lets "²" (int()
    raises) and "١٢" (int() accepts) through, and the length guard keeps int() off huge inputs."""
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(high)):
        return None
    value = int(text)
    return value if low <= value <= high else None


def iso(value: datetime) -> str:
    """A time as the API shows it: UTC, ISO 8601, `Z`."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_cursor(*fields: str | int | datetime | uuid.UUID) -> str:
    """The opaque cursor for a page's last row (times are written in UTC)."""
    text = _SEPARATOR.join(iso(f) if isinstance(f, datetime) else str(f) for f in fields)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def cursor_fields(text: str, arity: int) -> list[str] | None:
    """The raw fields of a cursor `encode_cursor` wrote with `arity` fields, or None."""
    if not 0 < len(text) <= MAX_CURSOR_CHARS or not text.isascii():
        return None
    try:
        decoded = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    fields = decoded.split(_SEPARATOR)
    # Written by us, it encodes back to itself: no stray characters, padding or trailing bits.
    if len(fields) != arity or base64.urlsafe_b64encode(decoded.encode()).decode().rstrip("=") != text:
        return None
    return fields


def cursor_time(field: str) -> datetime | None:
    return parse_timestamp(field)


def cursor_uuid(field: str) -> str | None:
    """A UUID in the canonical form `str(uuid.UUID(...))` writes (the form the API gives out)."""
    try:
        canonical = str(uuid.UUID(field))
    except ValueError:
        return None
    return canonical if canonical == field else None


def cursor_text(field: str) -> str | None:
    """A text key (a request id): 1 to MAX_CURSOR_TEXT printable characters (so no NUL, which
    Postgres text cannot hold)."""
    return field if 0 < len(field) <= MAX_CURSOR_TEXT and field.isprintable() else None


def cursor_int(low: int, high: int) -> Callable[[str], int | None]:
    """A whole-number field within [low, high] (e.g. a bigint id)."""

    def parse(field: str) -> int | None:
        return whole_number(field, low, high)

    return parse


@overload
def decode_cursor(text: str, first: Callable[[str], A | None], /) -> tuple[A] | None: ...


@overload
def decode_cursor(
    text: str, first: Callable[[str], A | None], second: Callable[[str], B | None], /
) -> tuple[A, B] | None: ...


def decode_cursor(text: str, *kinds: Callable[[str], object | None]) -> tuple[object, ...] | None:
    """The cursor's fields, each parsed by its kind; None if the cursor or any field is refused."""
    return _decode(text, kinds)


def _decode(text: str, kinds: tuple[Callable[[str], object | None], ...]) -> tuple[object, ...] | None:
    fields = cursor_fields(text, len(kinds))
    if fields is None:
        return None
    values = tuple(kind(field) for kind, field in zip(kinds, fields, strict=True))
    return None if any(v is None for v in values) else values


# ---- readers: query parameters → values, or the caller's 400 ----------------------------------------


def timestamp(params: Mapping[str, str], name: str, error: ParamError) -> datetime | None:
    """The parameter `name` as an aware UTC datetime; None if absent."""
    raw = params.get(name)
    if raw is None:
        return None
    value = parse_timestamp(raw)
    if value is None:
        hint = " (a + in a query string must be sent as %2B)" if " " in raw else ""
        raise error(
            f"{name} must be an ISO 8601 date (2024-03-10) or time (2024-03-10T12:00:00Z or with an offset "
            f"such as +01:00) between 1970 and 2199{hint}",
            param=name,
        )
    return value


def page_limit(
    params: Mapping[str, str], error: ParamError, *, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE
) -> int:
    """The page size `limit`: a whole number from 1 to `maximum`; `default` if absent."""
    raw = params.get("limit")
    if raw is None:
        return default
    size = whole_number(raw, 1, maximum)
    if size is None:
        raise error(f"limit must be a whole number from 1 to {maximum}", param="limit")
    return size


@overload
def cursor(params: Mapping[str, str], error: ParamError, first: Callable[[str], A | None], /) -> tuple[A] | None: ...


@overload
def cursor(
    params: Mapping[str, str],
    error: ParamError,
    first: Callable[[str], A | None],
    second: Callable[[str], B | None],
    /,
) -> tuple[A, B] | None: ...


def cursor(
    params: Mapping[str, str], error: ParamError, *kinds: Callable[[str], object | None]
) -> tuple[object, ...] | None:
    """The `cursor` parameter's fields; None if absent or empty (the first page)."""
    raw = params.get("cursor")
    if not raw:
        return None
    values = _decode(raw, kinds)
    if values is None:
        raise error(CURSOR_REFUSED, param="cursor")
    return values
