"""Checks a real response from the query API against what collector/openapi.json declares for it.

The document's path templates are matched against the request path; the schema for the answer's
status code is then applied with a JSON Schema 2020-12 validator (OpenAPI 3.1 schemas are JSON
Schema), resolving ``#/components/...`` references inside the document.
"""

from __future__ import annotations

import re
import urllib.parse
from functools import cache

import orjson
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from collector.query_api import OPENAPI_PATH

DOCUMENT_URI = "urn:tracemesh:query-openapi"


@cache
def openapi_document() -> dict:
    return orjson.loads(OPENAPI_PATH.read_bytes())


@cache
def _registry() -> Registry:
    return Registry().with_resource(DOCUMENT_URI, Resource.from_contents(openapi_document(), DRAFT202012))


def operation_for(path: str) -> tuple[str, dict]:
    """The path template and GET operation that ``path`` (decoded, without query) belongs to."""
    for template, item in openapi_document()["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return template, item["get"]
    raise AssertionError(f"{path} is not in the OpenAPI document")


def check_response(url: str, status: int, headers: dict, body: object) -> None:
    """Raise when the response to GET ``url`` is not what the document declares."""
    template, operation = operation_for(urllib.parse.urlsplit(url).path)
    assert str(status) in operation["responses"], f"GET {template} answered {status}, not declared in the document"
    response = operation["responses"][str(status)]
    if "$ref" in response:
        pointer = response["$ref"].lstrip("#")
        response = _registry().resolver(DOCUMENT_URI).lookup(DOCUMENT_URI + "#" + pointer).contents
    else:
        pointer = "/paths/" + template.replace("~", "~0").replace("/", "~1") + f"/get/responses/{status}"
    assert headers.get("Content-Type", "").startswith("application/json"), headers
    for header in response.get("headers", {}):
        assert header in headers, f"GET {template} {status} lacks the declared header {header}"
    schema = {"$ref": f"{DOCUMENT_URI}#{pointer}/content/application~1json/schema"}
    Draft202012Validator(schema, registry=_registry()).validate(body)
