"""Validate real payloads against the documents in contracts/."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"


@cache
def openapi() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CONTRACTS / "openapi.yaml").read_text())
    return doc


@cache
def _registry() -> Registry:
    resources = [
        (p.name, Resource.from_contents(json.loads(p.read_text())))
        for p in (CONTRACTS / "schemas").glob("*.json")
    ]
    registry: Registry = Registry().with_resources(resources)
    return registry.with_resource("openapi.yaml", DRAFT202012.create_resource(openapi()))


def validate_schema(name: str, instance: object) -> None:
    """Validate against ``contracts/schemas/<name>``."""
    validator = Draft202012Validator(
        {"$ref": name}, registry=_registry(), format_checker=FormatChecker()
    )
    validator.validate(instance)


def _operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    for template, item in openapi()["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not in contracts/openapi.yaml")


def validate_response(method: str, path: str, status: int, body: object) -> None:
    """Check that ``status`` is documented for the route and ``body`` matches its schema."""
    template, op = _operation(method, path)
    responses = op["responses"]
    assert str(status) in responses, f"{method} {template} does not document {status}"
    response = responses[str(status)]
    if "$ref" in response:
        response = openapi()["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    content = response.get("content", {}).get("application/json")
    if content is None:
        return
    ref = content["schema"].get("$ref")
    schema = {"$ref": f"openapi.yaml{ref}"} if ref else content["schema"]
    Draft202012Validator(schema, registry=_registry(), format_checker=FormatChecker()).validate(
        body
    )


def documented_routes() -> set[tuple[str, str]]:
    """``(METHOD, /path/{param})`` for every operation in the OpenAPI document."""
    routes = set()
    for template, item in openapi()["paths"].items():
        for method in item:
            if method in {"get", "post", "put", "patch", "delete"}:
                routes.add((method.upper(), template))
    return routes
