"""Every query parameter of every GET operation in /openapi.json (dates, cursors, page sizes and the
rest), fed extreme and malformed values through the HTTP API: the answer is 200 or 400, never a
500, and every 400 is an OpenAI-shaped error whose `param` names a parameter that was sent.

Issue 12 found 500s here: `until=0001-01-05` and `until=9999-12-31T23:59:59-05:00` on seller
earnings (datetime overflow), and a payout cursor carrying year 9999 (asyncpg refusing it). Each
parameter is sent a fixed list of edges (those values and their neighbours, in every place a time
goes), then hypothesis' random times, cursors, numbers and texts, weighted towards the edges. The
examples are bounded so the whole file takes a few seconds.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from aichat_gateway.billing.credits import grant_credit
from aichat_gateway.queryparams import encode_cursor
from aichat_gateway.server.app import api_routes
from aichat_gateway.server.openapi import openapi_document
from tests.support.attack import Account, Gateway, assert_error
from tests.support.earnings import earn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
in_the_modules_loop = pytest.mark.asyncio(loop_scope="module")  # the loop of conftest's app


def query_parameters() -> list[tuple[str, str]]:
    """(path, parameter) of every query parameter of the documented GET operations without path ids."""
    found = []
    for path, item in openapi_document(api_routes())["paths"].items():
        operation = item.get("get")
        if operation is None or "{" in path:
            continue
        found += [(path, p["name"]) for p in operation.get("parameters", []) if p["in"] == "query"]
    return sorted(found)


PARAMETERS = query_parameters()
BY_PATH: dict[str, list[str]] = {}
for _path, _name in PARAMETERS:
    BY_PATH.setdefault(_path, []).append(_name)

# ---- values -------------------------------------------------------------------------------------
# Edges get most of the draws: the 500s sat at the ends of datetime's range, shifted by an offset.

EDGE_MOMENTS = st.sampled_from(
    [
        datetime(1, 1, 1),
        datetime(1, 1, 5),
        datetime(1969, 12, 31, 23, 59, 59),
        datetime(1970, 1, 1),
        datetime(2199, 12, 31, 23, 59, 59, 999999),
        datetime(2200, 1, 1),
        datetime(9999, 12, 31),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
    ]
)
MOMENTS = st.one_of(
    EDGE_MOMENTS, EDGE_MOMENTS, st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))
)
OFFSETS = st.one_of(
    st.sampled_from([-(24 * 60 - 1), -5 * 60, -1, 1, 5 * 60, 24 * 60 - 1]),
    st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
).map(lambda minutes: timezone(timedelta(minutes=minutes)))
ZONES = st.one_of(st.none(), st.just(UTC), OFFSETS, OFFSETS, OFFSETS, OFFSETS)


@st.composite
def times(draw: st.DrawFn, edges_only: bool = False) -> str:
    """A moment anywhere in datetime's range, written in one of the ways clients write times."""
    aware = draw(EDGE_MOMENTS if edges_only else MOMENTS).replace(tzinfo=draw(ZONES))
    form = draw(st.sampled_from(["iso", "iso", "iso", "z", "minutes", "date", "space", "compact"]))
    if form == "date":
        return aware.date().isoformat()
    if form == "z":
        return aware.isoformat().replace("+00:00", "Z")
    if form == "minutes":
        return aware.isoformat(timespec="minutes")
    if form == "space":  # an unencoded + (or a space separator)
        return aware.isoformat(sep=" ").replace("+", " ")
    if form == "compact":
        return aware.strftime("%Y%m%dT%H%M%S")
    return aware.isoformat()


@st.composite
def past_the_ends(draw: st.DrawFn) -> str:
    """A moment at one end of datetime's range with an offset that moves it past that end in UTC
    (what `until=9999-12-31T23:59:59-05:00` did)."""
    minutes = draw(st.integers(min_value=1, max_value=24 * 60 - 1))
    inside = timedelta(minutes=draw(st.integers(min_value=0, max_value=minutes - 1)))
    if draw(st.booleans()):
        return (datetime.min + inside).replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat()
    return (datetime.max - inside).replace(tzinfo=timezone(-timedelta(minutes=minutes))).isoformat()


TIMES = st.one_of(past_the_ends(), times(edges_only=True), times())
# The same edges, fixed: every parameter is sent each of them (below), whatever hypothesis draws.
EDGE_TIMES = [
    "0001-01-01",
    "0001-01-05",
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "1970-01-01T00:30:00+01:00",
    "2199-12-31T23:59:59.999999Z",
    "2200-01-01",
    "9999-12-31",
    "9999-12-31T23:59:59",
    "9999-12-31T23:59:59-05:00",
    "9999-12-31T23:59:59.999999-00:01",
]
EDGE_IDS = ["00000000-0000-0000-0000-000000000000", "not-a-uuid", "0" * 32, "req-1", "", "\x00", "r" * 300, "-1"]
ODD_VALUES = [
    "",
    " ",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "infinity",
    "-infinity",
    "now",
    "epoch",
    "today",
    "null",
    "None",
    "0",
    "-1",
    "1e309",
    "1710072000",
    "2024-02-30",
    "2024-03-10T24:00:00Z",
    "2024-03-10T23:59:60Z",
    "0000-00-00",
    "0000-01-01",
    "+275760-09-13",
    "-0001-01-01",
    "99999-01-01",
    "2024-W10-1",
    "2024-070",
    "\u0662\u0660\u0662\u0664-\u0660\u0663-\u0661\u0660",
    "\uff12\uff10\uff12\uff14-03-10",
    "\u00b2",
    "\u0663",
    "0x10",
    "1.5",
    "\x00",
    "2024-03-10\x00",
    "2024-03-10T12:00:00" + "0" * 4000,
    "9" * 400,
]
ODD = st.sampled_from(ODD_VALUES)
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)  # httpx cannot send lone surrogates
NUMBERS = st.one_of(
    st.sampled_from([0, -1, 1, 200, 201, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1]).map(str),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.floats(allow_nan=True).map(str),
)
UUIDS = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: "{" + str(u) + "}"),
)
IDS = st.one_of(UUIDS, st.text(st.characters(blacklist_categories=["Cs"]), max_size=300), ODD)
FIELDS = st.one_of(TIMES, UUIDS, NUMBERS, TEXT, ODD)
# The fields of each list's cursor, as the API writes them; a cursor of that shape with extreme
# fields gets past the shape check and reaches the parsing (and, before issue 12, asyncpg).
SHAPES: dict[str, tuple[st.SearchStrategy[str], ...]] = {
    "/api/billing/transactions": (NUMBERS,),
    "/api/billing/usage": (TIMES, IDS),
    "/api/seller/payouts": (TIMES, UUIDS),
}


@st.composite
def cursors(draw: st.DrawFn, path: str) -> str:
    """This list's cursor shape with extreme fields (mostly), any fields, and base64 that is almost one."""
    shape = SHAPES.get(path)
    if shape is not None and draw(st.integers(0, 3)) > 0:
        fields = [draw(kind) for kind in shape]
    else:
        fields = draw(st.lists(FIELDS, min_size=1, max_size=3))
    encoded = encode_cursor(*fields)
    tamper = draw(st.sampled_from(["none"] * 5 + ["pad", "stray", "truncate", "standard"]))
    if tamper == "pad":
        return encoded + "=" * draw(st.integers(1, 3))
    if tamper == "stray":
        return encoded + draw(st.sampled_from(["!", "*", ".", " ", "\u00e9", "\x00"]))
    if tamper == "truncate":
        return encoded[: draw(st.integers(0, max(0, len(encoded) - 1)))]
    if tamper == "standard":
        return base64.b64encode("\x1f".join(fields).encode()).decode()
    return encoded


def values(path: str, name: str) -> st.SearchStrategy[str]:
    """Mostly values of the parameter's own kind, some of every other kind."""
    anything = st.one_of(TIMES, cursors(path), NUMBERS, UUIDS, ODD, TEXT)
    own = {"since": TIMES, "until": TIMES, "cursor": cursors(path), "limit": NUMBERS}.get(name)
    return anything if own is None else st.one_of(own, own, own, own, own, ODD, anything)


# ---- the caller, with something on every list ---------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def caller(app: Starlette, client: httpx.AsyncClient, password_hash: str) -> Account:
    """A buyer and seller with ledger entries, earnings and payouts, so the lists have rows to page;
    an admin, so the admin-only lists' parameters are reached too (anyone else gets 403 first)."""
    account = await Gateway(app, client, password_hash).user("params", role="admin")
    for _ in range(2):
        await grant_credit(
            app.state.services.db,
            user_id=account.id,
            amount_micro=5_000_000,
            reason="query parameter attack",
            granted_by=None,
            idempotency_key=None,
            on_balance_change=app.state.services.hot.credit,
        )
    async with app.state.services.db.acquire() as conn:
        # Long past the earnings holding period, so it can be paid out.
        await earn(conn, account.id, 100_000_000, at=datetime.now(UTC) - timedelta(days=365))
    for _ in range(2):
        made = await client.post("/api/seller/payouts", json={"amount_usd": "10.00"}, headers=account.auth)
        assert made.status_code == 201, made.text
    return account


def assert_answered(response: httpx.Response, sent: set[str]) -> None:
    """200, or a 400 in OpenAI's shape naming one of the parameters sent."""
    where = f"GET {response.request.url}"
    assert response.status_code in (200, 400), f"{where}: {response.status_code} {response.text[:300]}"
    if response.status_code == 400:
        error = assert_error(response, 400)
        assert error["type"] == "invalid_request_error", error
        assert error["param"] in sent, f"{where}: {error}"
    elif response.headers["content-type"].startswith("text/csv"):
        assert response.text.count("\n") >= 1, where  # at least the header row
    else:
        assert isinstance(response.json(), dict), where


# ---- tests ---------------------------------------------------------------------------------------


def test_every_date_cursor_and_page_size_parameter_is_fuzzed() -> None:
    assert {
        ("/api/billing/transactions", "cursor"),
        ("/api/billing/transactions", "limit"),
        ("/api/billing/usage", "since"),
        ("/api/billing/usage", "until"),
        ("/api/billing/usage", "cursor"),
        ("/api/billing/usage", "limit"),
        ("/api/seller/earnings", "since"),
        ("/api/seller/earnings", "until"),
        ("/api/seller/payouts", "cursor"),
        ("/api/seller/payouts", "limit"),
    } <= set(PARAMETERS)


def edge_values(path: str, name: str) -> list[str]:
    """The fixed edges for one parameter: every time edge in every place a time goes, every odd
    value, and (for cursors) this list's cursor shape around the edges."""
    found = [*EDGE_TIMES, *ODD_VALUES, "1", "200", "201", str(2**63), str(-(2**63))]
    if name == "cursor":
        found += [encode_cursor(t, i) for t in EDGE_TIMES for i in EDGE_IDS[:3]]
        found += [encode_cursor("2030-01-16T12:00:00Z", i) for i in EDGE_IDS]
        found += [encode_cursor(n) for n in ("0", "-1", "1", str(2**63 - 1), str(2**63), "1.5", "\u00b2")]
    return found


@in_the_modules_loop
@pytest.mark.parametrize(("path", "name"), PARAMETERS)
async def test_every_edge_value_of_a_query_parameter_is_answered_200_or_400_naming_it(
    client: httpx.AsyncClient, caller: Account, path: str, name: str
) -> None:
    for value in edge_values(path, name):
        assert_answered(await client.get(path, params={name: value}, headers=caller.auth), {name})


@in_the_modules_loop
@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/seller/earnings", {"until": "0001-01-05"}),
        ("/api/seller/earnings", {"until": "9999-12-31T23:59:59-05:00"}),
        ("/api/seller/payouts", {"cursor": encode_cursor("9999-12-31T23:59:59-05:00", EDGE_IDS[0])}),
        ("/api/seller/payouts", {"cursor": encode_cursor("9999-12-31T23:59:59", EDGE_IDS[0])}),
        ("/api/seller/payouts", {"cursor": encode_cursor("2030-01-16T12:00:00Z", "not-a-uuid")}),
        ("/api/billing/usage", {"cursor": encode_cursor("9999-12-31T23:59:59", "req-1")}),
    ],
)
async def test_the_values_that_once_answered_500_or_slipped_through_are_refused_naming_their_parameter(
    client: httpx.AsyncClient, caller: Account, path: str, query: dict[str, str]
) -> None:
    [name] = query
    assert_error(await client.get(path, params=query, headers=caller.auth), 400, name)


@in_the_modules_loop
@pytest.mark.parametrize(("path", "name"), PARAMETERS)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_any_value_of_a_query_parameter_is_answered_200_or_400_naming_it(
    client: httpx.AsyncClient, caller: Account, path: str, name: str, data: st.DataObject
) -> None:
    value = data.draw(values(path, name), label=name)
    assert_answered(await client.get(path, params={name: value}, headers=caller.auth), {name})


@in_the_modules_loop
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=st.sampled_from(sorted(BY_PATH)), data=st.data())
async def test_any_values_of_several_parameters_together_are_answered_200_or_400_naming_one(
    client: httpx.AsyncClient, caller: Account, path: str, data: st.DataObject
) -> None:
    names = data.draw(st.lists(st.sampled_from(BY_PATH[path]), min_size=1, unique=True))
    query = {name: data.draw(values(path, name), label=name) for name in names}
    assert_answered(await client.get(path, params=query, headers=caller.auth), set(query))


@in_the_modules_loop
async def test_every_page_of_every_list_walks_with_the_cursors_the_api_gives_out(
    client: httpx.AsyncClient, caller: Account
) -> None:
    for path in ("/api/billing/transactions", "/api/seller/payouts"):
        query = {"limit": "1"}
        pages = 0
        while True:
            answer = await client.get(path, params=query, headers=caller.auth)
            assert answer.status_code == 200, answer.text
            pages += 1
            if answer.json()["next_cursor"] is None:
                break
            query["cursor"] = answer.json()["next_cursor"]
            assert pages < 10
        assert pages >= 2, path
