"""collector/openapi.json is a valid OpenAPI document for exactly the routes the collector's HTTP API
port serves (the app ``run_collector`` serves, built by the same function).

(That real responses match the document's schemas is checked in test_query_api and
test_collector_api_document.)
"""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from collector.app import build_api_app
from collector.control.plane import ControlPlane
from collector.control.registry import Registry
from collector.graph import ServiceGraph
from collector.graph.api import EDGES_PARAMETERS, GRAPH_PARAMETERS
from collector.query_api import SEARCH_PARAMETERS
from tests.support.openapi_responses import openapi_document


def test_the_document_is_valid_openapi():
    validate(openapi_document())


def test_the_document_describes_exactly_the_routes_served():
    # Handlers only use intake, writer and store when a request arrives; listing routes needs none.
    graph = ServiceGraph()
    plane = ControlPlane(graph, Registry())
    app = build_api_app(intake=None, writer=None, store=None, graph=graph, plane=plane, max_request_bytes=1 << 20)
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
    }
    documented = {(method.upper(), path) for path, item in openapi_document()["paths"].items() for method in item}
    assert served == documented


@pytest.mark.parametrize(
    "path, accepted",
    [("/api/v1/traces", SEARCH_PARAMETERS), ("/api/v1/graph", GRAPH_PARAMETERS), ("/api/v1/edges", EDGES_PARAMETERS)],
)
def test_the_query_parameters_documented_are_the_ones_accepted(path, accepted):
    operation = openapi_document()["paths"][path]["get"]
    assert [parameter["name"] for parameter in operation["parameters"]] == list(accepted)
