"""The OpenAPI 3.0 document of the gateway, built from the route table (routes.py)."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from typing import Any

from services.gateway.routes import BODIES, ROUTES, SCHEMAS, Param, Route, ref

ERROR_RESPONSES: dict[int, str] = {
    400: "Bad input: malformed JSON, a parameter or field of the wrong type (names the field)",
    401: "Not signed in, or the token is forged or expired",
    403: "The role may not do this, or the request came through an anonymising network",
    404: "Not found",
    405: "Method not allowed on this path",
    409: "The thing is not in a state that allows this (e.g. already withdrawn)",
    413: "The request body is too large",
    422: "A rule refuses it (e.g. IIN check digit), or the Idempotency-Key was used for a "
    "different request",
    429: "Too many requests (Retry-After says when to try again) or temporarily blocked",
    502: "A service failed to answer",
    503: "A service, or the audit log, is unavailable; nothing was recorded as done",
    504: "A service did not answer in time",
}


def _param(p: Param, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": p.name,
        "in": where,
        "required": p.required,
        "schema": copy.deepcopy(p.schema),
    }
    if p.description:
        out["description"] = p.description
    return out


def _error(description: str, html: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": ref("Error")}}
    if html:
        content["text/html"] = {"schema": {"type": "string"}}
    return {"description": description, "content": content}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": [_param(p, "path") for p in route.path_params]
        + [_param(p, "query") for p in route.query_params],
    }
    if route.description:
        op["description"] = route.description
    if route.roles:
        op["security"] = [{"bearerAuth": []}]
        op["description"] = (
            op.get("description", "") + f" Roles: {', '.join(route.roles)}."
        ).strip()
    if route.mutating:
        op["parameters"].append(
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "pattern": "^[\\x21-\\x7e]+$",
                },
                "description": "the same key gives the same result once (stored 24 h)",
            }
        )
    if route.body:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(route.body)}},
        }
    if route.kind == "ops" and route.content_type != "application/json":
        success = {
            "description": "OK",
            "content": {route.content_type: {"schema": {"type": "string"}}},
        }
    else:
        content: dict[str, Any] = {
            "application/json": {"schema": copy.deepcopy(route.response or {"type": "object"})}
        }
        if route.csv:
            content["text/csv"] = {"schema": {"type": "string"}}
        success = {
            "description": "OK",
            "content": content,
            "headers": {
                "X-Request-Id": {
                    "schema": {"type": "string"},
                    "description": "id of the audit record",
                }
            },
        }
    responses: dict[str, Any] = {str(route.status): success}
    if route.kind == "ops":
        if route.name == "readyz":
            responses["503"] = {
                "description": "Not ready",
                "content": {"application/json": {"schema": copy.deepcopy(route.response)}},
            }
        op["responses"] = responses
        return op
    for status, description in ERROR_RESPONSES.items():
        entry = _error(description, html=(status == 403))
        if status == 429:
            entry["headers"] = {
                "Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}
            }
        if status == 405:
            entry["headers"] = {"Allow": {"schema": {"type": "string"}}}
        responses[str(status)] = entry
    op["responses"] = responses
    return op


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in ROUTES:
        if route.kind in ("page", "static", "fallback"):
            continue
        item = paths.setdefault(route.path, {})
        for method in route.method.split(","):
            item[method.lower()] = _operation(route)
    clash = set(SCHEMAS) & set(BODIES)
    if clash:
        raise ValueError(f"schema names used twice: {sorted(clash)}")
    schemas = {**copy.deepcopy(SCHEMAS), **copy.deepcopy(BODIES)}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Kezek gateway API",
            "version": "1.0.0",
            "description": (
                "Electronic kindergarten queue: public registries, sign-in with a one-time "
                "code, applications, places and directions, the audit log. Errors are "
                '{"error": {"code", "message", "field"}}; lists are {"items", "total", "page", '
                '"page_size"}. Every request is audited; its X-Request-Id names the record.'
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": t} for t in dict.fromkeys(r.tag for r in ROUTES)],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the token of POST /api/v1/auth/token",
                },
            },
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())


@lru_cache(maxsize=1)
def document_json() -> bytes:
    """The document as served: built and encoded once per process."""
    return json.dumps(_document(), ensure_ascii=False).encode()
