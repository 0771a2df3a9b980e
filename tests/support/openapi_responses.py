"""Checks real requests and responses of the collector's HTTP API port against collector/openapi.json.

The document's path templates are matched against the request path; the schema declared for the
answer's status code and media type (or the request body's) is then applied with a JSON Schema
2020-12 validator (OpenAPI 3.1 schemas are JSON Schema), resolving ``#/components/...`` references
inside the document.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
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


def _pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def _lookup(pointer: str) -> dict:
    return _registry().resolver(DOCUMENT_URI).lookup(DOCUMENT_URI + "#" + pointer).contents


def _validate(pointer: str, instance: object) -> None:
    Draft202012Validator({"$ref": f"{DOCUMENT_URI}#{pointer}"}, registry=_registry()).validate(instance)


def operation_for(method: str, path: str) -> tuple[str, dict]:
    """The path template and operation that ``method`` on ``path`` (decoded, without query) belongs to."""
    for template, item in openapi_document()["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def check_request_body(url: str, body: object, method: str = "POST") -> None:
    """Raise when ``body`` (decoded JSON) is not what the document declares for ``method url``."""
    template, _ = operation_for(method, urllib.parse.urlsplit(url).path)
    _validate(_pointer("paths", template, method.lower(), "requestBody", "content", "application/json", "schema"), body)


def check_response(url: str, status: int, headers: dict, body: object, method: str = "GET") -> None:
    """Raise when the response to ``method url`` is not what the document declares.

    ``body`` is the decoded JSON of a JSON answer, else its text (``""`` when empty).
    """
    template, operation = operation_for(method, urllib.parse.urlsplit(url).path)
    name = f"{method} {template}"
    assert str(status) in operation["responses"], f"{name} answered {status}, not declared in the document"
    pointer = _pointer("paths", template, method.lower(), "responses", str(status))
    response = _lookup(pointer)
    if "$ref" in response:
        pointer = response["$ref"].lstrip("#")
        response = _lookup(pointer)
    for header in response.get("headers", {}):
        assert header in headers, f"{name} {status} lacks the declared header {header}"
    if "content" not in response:
        assert body == "", f"{name} {status} declares no body but has {body!r}"
        return
    media_type = headers.get("Content-Type", "").partition(";")[0].strip()
    assert media_type in response["content"], f"{name} {status} answered {media_type!r}, not declared"
    _validate(pointer + _pointer("content", media_type, "schema"), body)


def checked_call(url: str, method: str = "GET", body: bytes | None = None, content_type: str = "application/json"):
    """Send a request and check its answer against the document; HTTP errors are answers here.

    Returns the status, the headers and the body: decoded JSON for a JSON answer, else its text.
    """
    headers = {} if body is None else {"Content-Type": content_type}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            status, headers, raw = reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    is_json = headers.get("Content-Type", "").startswith("application/json")
    decoded = orjson.loads(raw) if is_json else raw.decode()
    check_response(url, status, headers, decoded, method)
    return status, headers, decoded
