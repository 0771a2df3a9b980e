"""collector/openapi.json is a valid OpenAPI document for exactly the routes the query API serves.

(That each real response matches the document's schemas is checked on every request in test_query_api.)
"""

from __future__ import annotations

from aiohttp import web
from openapi_spec_validator import validate

from collector.query_api import SEARCH_PARAMETERS, setup_query_api
from tests.support.openapi_responses import openapi_document


def test_the_document_is_valid_openapi():
    validate(openapi_document())


def test_the_document_describes_exactly_the_routes_served():
    app = web.Application()
    setup_query_api(app, store=None)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
    }
    documented = {(method.upper(), path) for path, item in openapi_document()["paths"].items() for method in item}
    assert served == documented


def test_the_search_parameters_documented_are_the_ones_accepted():
    search = openapi_document()["paths"]["/api/v1/traces"]["get"]
    assert [parameter["name"] for parameter in search["parameters"]] == list(SEARCH_PARAMETERS)
