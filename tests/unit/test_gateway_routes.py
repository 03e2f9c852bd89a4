"""The route table, the handlers and the OpenAPI document agree; input checks name fields."""

import json

import pytest

from services.common.errors import BadInput
from services.gateway import openapi
from services.gateway.errors import InvalidParameter
from services.gateway.http import ApiRoute, audit_target, parse_json
from services.gateway.routes import BODIES, BY_NAME, PAGE_PARAMS, ROUTES
from services.gateway.service import GatewayService
from services.gateway.validation import parse_param, validate


def handlers():
    found = {}
    for attr in dir(GatewayService):
        for ep in getattr(getattr(GatewayService, attr), "nameko_entrypoints", ()):
            if isinstance(ep, ApiRoute):
                found.setdefault(ep.route.name, []).append(attr)
    return found


def test_every_route_has_exactly_one_handler():
    found = handlers()
    assert sorted(found) == sorted(r.name for r in ROUTES)
    assert all(len(methods) == 1 for methods in found.values())


def test_every_api_md_endpoint_is_served():
    served = {(m, r.path) for r in ROUTES for m in r.method.split(",")}
    for endpoint in [
        ("GET", "/api/v1/organizations"),
        ("GET", "/api/v1/organizations/{id}"),
        ("GET", "/api/v1/queue"),
        ("GET", "/api/v1/queue/lookup"),
        ("GET", "/api/v1/vacancies"),
        ("GET", "/api/v1/releases"),
        ("GET", "/api/v1/directions"),
        ("GET", "/api/v1/statistics"),
        ("GET", "/api/v1/districts"),
        ("GET", "/api/v1/benefit-categories"),
        ("POST", "/api/v1/auth/otp"),
        ("POST", "/api/v1/auth/token"),
        ("POST", "/api/v1/applications"),
        ("GET", "/api/v1/applications"),
        ("GET", "/api/v1/applications/{number}"),
        ("POST", "/api/v1/applications/{number}/withdraw"),
        ("POST", "/api/v1/applications/{number}/postpone"),
        ("POST", "/api/v1/applications/{number}/resume"),
        ("POST", "/api/v1/vacancies/{place_id}/claim"),
        ("POST", "/api/v1/directions/{number}/decline"),
        ("GET", "/api/v1/me/events"),
        ("POST", "/api/v1/organizations/{id}/groups/{group_id}/releases"),
        ("POST", "/api/v1/directions/{number}/enroll"),
        ("POST", "/api/v1/organizations"),
        ("PUT", "/api/v1/organizations/{id}"),
        ("POST", "/api/v1/organizations/{id}/groups"),
        ("POST", "/api/v1/applications/{number}/benefit/verify"),
        ("POST", "/api/v1/applications/{number}/stop-list"),
        ("POST", "/api/v1/applications/{number}/stop-list/exit"),
        ("POST", "/api/v1/directions/{number}/revoke"),
        ("GET", "/api/v1/audit"),
        ("GET", "/api/v1/audit/verify"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/openapi.json"),
    ]:
        assert endpoint in served, endpoint


def test_audit_is_for_auditors_only():
    assert BY_NAME["audit_log"].roles == ("auditor",)
    assert BY_NAME["audit_verify"].roles == ("auditor",)


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_openapi_document_covers_every_route_and_resolves():
    doc = openapi.document()
    assert doc["openapi"].startswith("3.0")
    json.dumps(doc)  # plain JSON
    for r in ROUTES:
        if r.kind in ("page", "static", "fallback"):
            continue
        op = doc["paths"][r.path][r.method.lower()]
        assert str(r.status) in op["responses"]
        names = {p["name"] for p in op["parameters"]}
        assert {p.name for p in r.path_params} <= names
        assert {p.name for p in r.query_params} <= names
        if r.kind == "api":
            assert op["responses"]["400"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
        if r.roles:
            assert "401" in op["responses"] and "403" in op["responses"]
            assert op["security"] == [{"bearerAuth": []}]
        if r.csv:
            assert "text/csv" in op["responses"]["200"]["content"]
        if r.body:
            assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/" + r.body
            )
    for target in _refs(doc):
        name = target.rsplit("/", 1)[1]
        assert name in doc["components"]["schemas"], target


def test_page_size_bounds():
    page_size = PAGE_PARAMS[1]
    assert parse_param(page_size.schema, "500", "page_size") == 500
    for bad in ["501", "0", "-1", "ten", "1.5", ""]:
        with pytest.raises(InvalidParameter) as err:
            parse_param(page_size.schema, bad, "page_size")
        assert err.value.field == "page_size"


@pytest.mark.parametrize("raw,expected", [("true", True), ("0", False), ("FALSE", False)])
def test_boolean_params(raw, expected):
    assert parse_param({"type": "boolean"}, raw, "has_vacancies") is expected


def test_date_params():
    schema = {"type": "string", "format": "date"}
    assert parse_param(schema, "2027-02-28", "from") == "2027-02-28"
    for bad in ["2027-02-30", "27-02-01", "yesterday"]:
        with pytest.raises(InvalidParameter) as err:
            parse_param(schema, bad, "from")
        assert err.value.field == "from"


def test_uuid_path_param():
    schema = {"type": "string", "format": "uuid"}
    assert parse_param(schema, "5f0c6a7e-1b2c-4d3e-8f90-123456789abc", "place_id")
    with pytest.raises(InvalidParameter):
        parse_param(schema, "5f0c6a7e1b2c4d3e8f90123456789abc", "place_id")


def test_body_errors_name_the_nested_field():
    schema = BODIES["NewApplication"]
    good = {
        "applicant": {"iin": "880101300123", "full_name": "A", "phone": "+77011234567"},
        "child": {"iin": "220101500123", "full_name": "B", "birth_date": "2022-01-01"},
        "queue_type": "general",
        "language": "kk",
        "district": "Almaly",
        "preferred_organizations": [1, 2],
        "desired_start": "2027-09-01",
        "benefit": None,
    }
    assert validate(schema, good) is good
    cases = [
        ({**good, "child": {**good["child"], "birth_date": "01.01.2022"}}, "child.birth_date"),
        ({**good, "preferred_organizations": [1, "2"]}, "preferred_organizations[1]"),
        ({**good, "queue_type": "vip"}, "queue_type"),
        ({k: v for k, v in good.items() if k != "district"}, "district"),
        ({**good, "filed_at": "2020-01-01T00:00:00Z"}, "filed_at"),
        ({**good, "preferred_organizations": [True]}, "preferred_organizations[0]"),
    ]
    for body, field in cases:
        with pytest.raises(BadInput) as err:
            validate(schema, body)
        assert err.value.field == field, body
    with pytest.raises(BadInput) as err:
        validate(schema, [1, 2])
    assert err.value.field is None


@pytest.mark.parametrize("raw", [b"{bad", b"\xff\xfe", b"NaN", b"[" * 100000, b'{"a": Infinity}'])
def test_malformed_json_is_invalid_json(raw):
    with pytest.raises(BadInput) as err:
        parse_json(raw)
    assert err.value.code == "INVALID_JSON"


def test_audit_target_is_the_resource_path():
    assert (
        audit_target(BY_NAME["release_places"], {"id": "7", "group_id": "31"})
        == "organizations/7/groups/31"
    )
    assert audit_target(BY_NAME["withdraw"], {"number": "A-1"}) == "applications/A-1"
    assert audit_target(BY_NAME["list_queue"], {}) is None


@pytest.mark.parametrize("value", ["a\x00b", "\ud800"])
def test_text_the_database_cannot_store_is_refused(value):
    with pytest.raises(BadInput) as err:
        validate({"type": "string"}, value, "district")
    assert err.value.field == "district"


def test_request_and_response_schemas_have_distinct_names():
    from services.gateway.routes import SCHEMAS

    assert not set(SCHEMAS) & set(BODIES)
    doc = openapi.document()
    assert doc["components"]["schemas"]["Release"]["properties"]["place_id"]
    assert doc["components"]["schemas"]["ReleaseRequest"]["required"] == ["places"]
