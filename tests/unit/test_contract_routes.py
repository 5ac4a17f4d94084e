"""One route table, checked against the contract both ways: no route drifts from the document."""

from __future__ import annotations

import re

from flask import Flask

from functions.api.app import create_api
from shared.usecases.gateway import Gateway
from tests.support.contracts import documented_routes


def served_routes(app: Flask) -> set[tuple[str, str]]:
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if method not in {"HEAD", "OPTIONS"}:
                routes.add((method, path))
    return routes


def test_every_served_route_is_documented_and_every_documented_route_is_served(
    gateway: Gateway,
) -> None:
    assert served_routes(create_api(gateway)) == documented_routes()


def test_only_health_is_public(gateway: Gateway) -> None:
    from functions.api.app import PUBLIC_ENDPOINTS
    from tests.support.contracts import openapi

    public = {
        path
        for path, item in openapi()["paths"].items()
        for op in item.values()
        if op.get("security") == []
    }
    assert public == {"/healthz"}
    assert frozenset({"healthz"}) == PUBLIC_ENDPOINTS
