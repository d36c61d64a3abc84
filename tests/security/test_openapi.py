"""`/openapi.json`: served, a valid OpenAPI 3.1 document generated from the running app's /api route
table, describing exactly its routes (a route declared without its metadata fails)."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from schemathesis.core.result import Ok
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from aichat_gateway.server.app import api_routes
from aichat_gateway.server.openapi import openapi_document
from tests.support.attack import Gateway, listing_body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
in_the_modules_loop = pytest.mark.asyncio(loop_scope="module")  # the loop of conftest's app

METHODS = ("get", "put", "post", "delete", "patch")


def live_routes(app: Starlette) -> list[BaseRoute]:
    """The route table of the app's /api mount, as the app serves it."""
    [api] = [route for route in app.routes if isinstance(route, Mount) and route.path == "/api"]
    return list(api.routes)


def served(routes: list[BaseRoute]) -> set[tuple[str, str]]:
    """(method, path) of every route served under /api (HEAD comes with GET, not counted)."""
    found = set()
    for route in routes:
        assert isinstance(route, Route), route
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method.lower(), "/api" + route.path))
    return found


def documented(document: dict[str, object]) -> set[tuple[str, str]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return {(method, path) for path, item in paths.items() for method in item if method in METHODS}


@in_the_modules_loop
async def test_the_document_is_served_as_json(gateway: Gateway) -> None:
    answer = await gateway.client.get("/openapi.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == openapi_document(live_routes(gateway.app))
    assert answer.json()["openapi"] == "3.1.0"


@in_the_modules_loop
async def test_the_document_needs_no_session(gateway: Gateway) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway.app), base_url="http://other.test") as c:
        assert (await c.get("/openapi.json")).status_code == 200


def test_the_document_is_valid_openapi_3_1_and_schemathesis_loads_every_operation() -> None:
    document = openapi_document(api_routes())
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation schemathesis cannot read is an Err
        operations.append(result.ok())
    assert {(o.method.lower(), o.path) for o in operations} == documented(document)


@in_the_modules_loop
async def test_the_document_lists_every_api_route_the_running_app_has_and_no_other(gateway: Gateway) -> None:
    routes = live_routes(gateway.app)
    assert documented(openapi_document(routes)) == served(routes)
    assert len(documented(openapi_document(routes))) >= 35


async def _undocumented(request: object) -> Response:
    return Response(status_code=204)


def test_a_route_declared_without_its_openapi_metadata_is_refused_naming_it() -> None:
    routes = [*api_routes(), Route("/undocumented", _undocumented, methods=["POST"])]
    with pytest.raises(TypeError, match="/undocumented"):
        openapi_document(routes)


def test_every_reference_in_the_document_resolves() -> None:
    document = openapi_document(api_routes())
    components = document["components"]
    refs: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("$ref"), str):
                refs.append(value["$ref"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(document)
    assert refs
    for reference in refs:
        _, section, name = reference.removeprefix("#/").split("/")
        assert name in components[section], reference


def test_every_operation_names_its_errors_in_the_error_shape() -> None:
    document = openapi_document(api_routes())
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses = [int(status) for status in operation["responses"]]
            assert any(status < 300 for status in statuses), (method, path)
            public = operation["security"] == []
            if not public:
                assert {401, 403} <= set(statuses), (method, path)


@in_the_modules_loop
@pytest.mark.parametrize(
    "pricing",
    [
        {"multiplier": "10"},
        {"multiplier": "0.8"},
        {"multiplier": "100"},
        {"input_usd_per_million": "0.15", "output_usd_per_million": "10000"},
    ],
)
async def test_a_listing_is_shown_as_documented(gateway: Gateway, pricing: dict[str, str]) -> None:
    schema = schemathesis.openapi.from_dict(openapi_document(live_routes(gateway.app)))
    seller = await gateway.user("documented")
    created = await gateway.client.post(
        "/api/marketplace/listings", json=listing_body(pricing=pricing), headers=seller.auth
    )
    schema.find_operation_by_id("createListing").validate_response(created)
    shown = await gateway.client.get(f"/api/marketplace/listings/{created.json()['id']}", headers=seller.auth)
    schema.find_operation_by_id("getListing").validate_response(shown)
    if "multiplier" in pricing:
        assert shown.json()["pricing"] == pricing, "a plain decimal, as it was given"
