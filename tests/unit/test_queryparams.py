"""The REST API's one parser for timestamps, page sizes and cursors (aichat_gateway/queryparams.py).

Whatever these accept reaches datetime arithmetic (the earnings window, UTC conversion) and asyncpg,
so every accepted time must lie inside [1970, 2200) UTC, and every cursor field must have the type
and range its query expects; everything else is refused (None here, a 400 at the HTTP edge).
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aichat_gateway import queryparams as qp
from aichat_gateway.queryparams import (
    CURSOR_REFUSED,
    EARLIEST,
    END,
    cursor_int,
    cursor_text,
    cursor_time,
    cursor_uuid,
    decode_cursor,
    encode_cursor,
    parse_timestamp,
)


class Refused(Exception):
    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


# ---- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-10", utc(2024, 3, 10)),
        ("2024-03-10T12:30", utc(2024, 3, 10, 12, 30)),
        ("2024-03-10T12:30:15", utc(2024, 3, 10, 12, 30, 15)),
        ("2024-03-10T12:30:15Z", utc(2024, 3, 10, 12, 30, 15)),
        ("2024-03-10t12:30:15z", utc(2024, 3, 10, 12, 30, 15)),
        ("2024-03-10T12:30:15.5Z", utc(2024, 3, 10, 12, 30, 15, 500_000)),
        ("2024-03-10T12:30:15.123456789Z", utc(2024, 3, 10, 12, 30, 15, 123_456)),
        ("2024-03-10T13:30:15+01:00", utc(2024, 3, 10, 12, 30, 15)),
        ("2024-03-10T07:30:15-0500", utc(2024, 3, 10, 12, 30, 15)),
        ("2024-03-10T12:30:15-00:00", utc(2024, 3, 10, 12, 30, 15)),
        ("1970-01-01T00:00:00Z", EARLIEST),
        ("2199-12-31T23:59:59.999999Z", END - timedelta(microseconds=1)),
        ("2200-01-01T05:00:00+06:00", utc(2199, 12, 31, 23)),
    ],
)
def test_an_iso_8601_date_or_time_in_the_window_is_read_as_aware_utc(text: str, expected: datetime) -> None:
    value = parse_timestamp(text)
    assert value == expected
    assert value is not None and value.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-05",  # the earnings window before it would leave datetime's range
        "0001-01-01T00:00:00+05:00",  # before year 1 in UTC
        "9999-12-31T23:59:59-05:00",  # past datetime.max in UTC
        "9999-12-31",
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:30:00+01:00",  # 1969 in UTC
        "2200-01-01",
        "0000-01-01",
    ],
)
def test_a_time_outside_1970_to_2199_utc_is_refused(text: str) -> None:
    assert parse_timestamp(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "now",
        "NaN",
        "nan",
        "inf",
        "-infinity",
        "infinity",
        "1710072000",  # epoch seconds
        "2024-13-01",
        "2024-02-30",
        "2024-03-10T24:00:00Z",
        "2024-03-10T23:59:60Z",  # leap second
        "2024-03-10T12:00:00+24:00",
        "2024-03-10T12:00:00+05:00:30",
        "2024-03-10T12:00:00 01:00",  # an unencoded + in a query string
        "2024-03-10 12:00:00",
        "2024-03-10T12",
        "2024-3-10",
        "20240310",
        "2024-W10-1",
        "2024-070",
        "+2024-03-10",
        " 2024-03-10",
        "2024-03-10 ",
        "2024-03-10\n",
        "2024-03-10T12:00:00.Z",
        "2024-03-10T12:00:00.1234567890Z",
        "\u0662\u0660\u0662\u0664-\u0660\u0663-\u0661\u0660",  # Arabic-Indic digits: int() reads them, the API does not
        "\uff12\uff10\uff12\uff14-03-10",  # fullwidth digits
        "2024-03-10T12:00:00Z" + "0" * 100,
        "2024-03-10\x00",
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    assert parse_timestamp(text) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_either_refused_or_an_aware_time_in_the_window(text: str) -> None:
    value = parse_timestamp(text)
    assert value is None or (value.tzinfo is UTC and EARLIEST <= value < END)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
)
def test_every_time_python_can_write_is_read_back_exactly_or_refused(moment: datetime, offset_minutes: int) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    value = parse_timestamp(aware.isoformat())
    instant = aware.astimezone(UTC)
    if EARLIEST <= instant < END:
        assert value == instant
    else:
        assert value is None


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2199, 12, 31), timezones=st.just(UTC)))
def test_the_window_arithmetic_of_any_accepted_time_cannot_overflow(moment: datetime) -> None:
    value = parse_timestamp(moment.isoformat())
    assert value is not None
    value - timedelta(days=366)  # what seller earnings subtract; raises OverflowError if it could not
    value + timedelta(days=366)


def test_a_refused_timestamp_parameter_is_the_callers_error_naming_it() -> None:
    with pytest.raises(Refused) as refused:
        qp.timestamp({"until": "0001-01-05"}, "until", Refused)
    assert refused.value.param == "until"
    assert "1970" in refused.value.message


def test_a_refused_timestamp_with_a_space_says_to_encode_the_plus() -> None:
    with pytest.raises(Refused) as refused:
        qp.timestamp({"since": "2024-03-10T12:00:00 01:00"}, "since", Refused)
    assert "%2B" in refused.value.message


def test_an_absent_timestamp_parameter_is_none() -> None:
    assert qp.timestamp({}, "since", Refused) is None


# ---- page sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["0", "-1", "201", "1.5", "1e2", "", " 5", "²", "٣", "x", "9" * 40, "0x10", "+5"])
def test_a_limit_that_is_not_a_whole_number_from_1_to_200_is_refused_naming_limit(raw: str) -> None:
    with pytest.raises(Refused) as refused:
        qp.page_limit({"limit": raw}, Refused)
    assert refused.value.param == "limit"


@pytest.mark.parametrize(("raw", "size"), [("1", 1), ("200", 200), ("007", 7)])
def test_a_limit_from_1_to_200_is_taken(raw: str, size: int) -> None:
    assert qp.page_limit({"limit": raw}, Refused) == size


def test_without_a_limit_a_page_has_50_rows() -> None:
    assert qp.page_limit({}, Refused) == 50


# ---- cursors ------------------------------------------------------------------------------------

PAYOUT = (cursor_time, cursor_uuid)
USAGE = (cursor_time, cursor_text)
ENTRY = (cursor_int(1, 2**63 - 1),)
AT = utc(2030, 1, 16, 12, 0, 0, 123456)


def raw_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_cursor_the_api_wrote_reads_back_to_its_fields() -> None:
    payout_id = str(uuid.uuid4())
    assert decode_cursor(encode_cursor(AT, payout_id), *PAYOUT) == (AT, payout_id)
    assert decode_cursor(encode_cursor(AT, "req_abc.def"), *USAGE) == (AT, "req_abc.def")
    assert decode_cursor(encode_cursor(42), *ENTRY) == (42,)


def test_a_cursor_written_before_times_were_written_with_z_still_reads() -> None:
    payout_id = str(uuid.uuid4())
    assert decode_cursor(encode_cursor(AT.isoformat(), payout_id), *PAYOUT) == (AT, payout_id)


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor("9999-12-31T23:59:59", str(uuid.uuid4())),  # year 9999
        encode_cursor("9999-12-31T23:59:59-05:00", str(uuid.uuid4())),
        encode_cursor("0001-01-01T00:00:00+05:00", str(uuid.uuid4())),
        encode_cursor("not a time", str(uuid.uuid4())),
        encode_cursor(AT, "not-a-uuid"),
        encode_cursor(AT, str(uuid.uuid4()).upper()),  # not the form the API writes
        encode_cursor(AT, uuid.uuid4().hex),
        encode_cursor(AT, "{" + str(uuid.uuid4()) + "}"),
        encode_cursor(AT),
        encode_cursor(AT, str(uuid.uuid4()), "extra"),
        encode_cursor(AT, str(uuid.uuid4())) + "=",
        encode_cursor(AT, str(uuid.uuid4())) + "!",
        encode_cursor(AT, str(uuid.uuid4())).replace("-", "+").replace("_", "/") + "/+",
        raw_cursor(f"{AT.isoformat()}\x1f{uuid.uuid4()}")[:-1],
        "",
        "%%%%",
        "é" * 8,
        "A" * 5000,
        base64.urlsafe_b64encode(b"\xff\xfe\x1f\x00").decode(),
    ],
)
def test_a_payout_cursor_of_any_other_shape_is_refused(cursor: str) -> None:
    assert decode_cursor(cursor, *PAYOUT) is None


@pytest.mark.parametrize(
    "fields",
    [("req\x00-1",), ("",), ("r" * 257,), ("line\nbreak",)],
)
def test_a_usage_cursor_with_a_request_id_postgres_cannot_hold_or_we_never_write_is_refused(
    fields: tuple[str],
) -> None:
    assert decode_cursor(encode_cursor(AT, *fields), *USAGE) is None


@pytest.mark.parametrize("entry", ["0", "-5", "abc", "²", "١٢", str(2**63), "1.0", " 1"])
def test_a_transactions_cursor_outside_the_bigint_ids_is_refused(entry: str) -> None:
    assert decode_cursor(encode_cursor(entry), *ENTRY) is None


def test_a_refused_cursor_parameter_is_the_callers_error_naming_cursor() -> None:
    bad = encode_cursor("9999-12-31T23:59:59", str(uuid.uuid4()))
    with pytest.raises(Refused) as refused:
        qp.cursor({"cursor": bad}, Refused, *PAYOUT)
    assert (refused.value.message, refused.value.param) == (CURSOR_REFUSED, "cursor")


@pytest.mark.parametrize("params", [{}, {"cursor": ""}])
def test_no_cursor_or_an_empty_one_is_the_first_page(params: dict[str, str]) -> None:
    assert qp.cursor(params, Refused, *PAYOUT) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_as_a_cursor_is_refused_or_well_typed_fields(text: str) -> None:
    for kinds in (PAYOUT, USAGE, ENTRY):
        values = decode_cursor(text, *kinds)
        assert values is None or len(values) == len(kinds)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=3))
def test_any_fields_encoded_are_refused_or_well_typed(fields: list[str]) -> None:
    values = decode_cursor(encode_cursor(*fields), *PAYOUT)
    if values is not None:
        at, payout_id = values
        assert EARLIEST <= at < END
        assert str(uuid.UUID(payout_id)) == payout_id


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2199, 12, 31), timezones=st.just(UTC)),
    st.uuids(),
)
def test_every_payout_cursor_the_api_can_write_reads_back_exactly(at: datetime, payout_id: uuid.UUID) -> None:
    assert decode_cursor(encode_cursor(at, str(payout_id)), *PAYOUT) == (at, str(payout_id))
