"""Every route of the gateway with every role: allowed, or refused with 401 (not signed in) or 403
(another role). The expectation is written out here from the design (api.md sections, with the
extensions domain.md and docs/rpc.md name), not read from routes.py: a route whose roles change
in the code without the documents changing fails here."""

from __future__ import annotations

import pytest

from services.gateway.routes import ROUTES
from tests.security.conftest import Client, error_code

ROLES = ("public", "applicant", "staff", "officer", "auditor", "operator")
PUBLIC = frozenset(ROLES)

EXPECTED: dict[tuple[str, str], frozenset[str]] = {
    # api.md "Public, no sign-in" (and "Sign-in"): everybody, signed in or not
    **{("GET", p): PUBLIC for p in (
        "/api/v1/organizations", "/api/v1/organizations/{id}", "/api/v1/queue",
        "/api/v1/queue/lookup", "/api/v1/vacancies", "/api/v1/releases", "/api/v1/directions",
        "/api/v1/statistics", "/api/v1/districts", "/api/v1/benefit-categories",
        "/api/v1/languages", "/api/v1/openapi.json")},
    ("POST", "/api/v1/auth/otp"): PUBLIC,
    ("POST", "/api/v1/auth/token"): PUBLIC,
    # api.md "Applicant"
    # docs/rpc.md: "an officer ... may file on an applicant's behalf" (paper forms)
    ("POST", "/api/v1/applications"): frozenset({"applicant", "officer"}),
    ("GET", "/api/v1/applications"): frozenset({"applicant"}),
    # docs/rpc.md: "staff, officers and the system read any"
    ("GET", "/api/v1/applications/{number}"): frozenset({"applicant", "staff", "officer"}),
    # docs/rpc.md: an officer may withdraw on the applicant's behalf
    ("POST", "/api/v1/applications/{number}/withdraw"): frozenset({"applicant", "officer"}),
    ("POST", "/api/v1/applications/{number}/postpone"): frozenset({"applicant"}),
    ("POST", "/api/v1/applications/{number}/resume"): frozenset({"applicant"}),
    ("POST", "/api/v1/vacancies/{place_id}/claim"): frozenset({"applicant"}),
    ("POST", "/api/v1/directions/{number}/decline"): frozenset({"applicant"}),
    ("GET", "/api/v1/me/events"): frozenset({"applicant"}),
    # api.md "Organisation staff"
    ("POST", "/api/v1/organizations/{id}/groups/{group_id}/releases"): frozenset({"staff"}),
    ("POST", "/api/v1/directions/{number}/enroll"): frozenset({"staff"}),
    # api.md "Department officer"; domain.md: staff keep their own organisation's groups
    ("POST", "/api/v1/organizations"): frozenset({"officer"}),
    ("PUT", "/api/v1/organizations/{id}"): frozenset({"officer"}),
    ("POST", "/api/v1/organizations/{id}/groups"): frozenset({"officer", "staff"}),
    ("POST", "/api/v1/applications/{number}/benefit/verify"): frozenset({"officer"}),
    ("POST", "/api/v1/applications/{number}/stop-list"): frozenset({"officer"}),
    ("POST", "/api/v1/applications/{number}/stop-list/exit"): frozenset({"officer"}),
    ("POST", "/api/v1/directions/{number}/revoke"): frozenset({"officer"}),
    # api.md "Auditor" (domain.md: "Nobody else can")
    ("GET", "/api/v1/audit"): frozenset({"auditor"}),
    ("GET", "/api/v1/audit/verify"): frozenset({"auditor"}),
    # api.md "Operations"
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
}
# api.md: "the web pages at /": public shells; what a signed-in page shows comes from the API
# above, with its roles
PAGES_ARE_PUBLIC = True

# nothing is changed by this test: ids of things that do not exist for the routes that would
# change something, and request bodies that do not validate
MISSING = {"application": "A999999990", "direction": "D999999990",
           "place": "5f0c6a7e-1b2c-4d3e-8f90-123456789abc"}


def concrete(route, world) -> str:
    path = route.path
    number = MISSING["direction"] if "/directions/" in path else MISSING["application"]
    if route.method == "GET" and "/applications/" in path:
        number = world["application_number"]
    values = {"id": str(world["organization_id"]), "group_id": str(world["group_id"]),
              "number": number, "place_id": MISSING["place"], "asset": "kezek.css"}
    for name, value in values.items():
        path = path.replace("{" + name + "}", value)
    return path


def expected_roles(route) -> frozenset[str]:
    if route.kind in ("page", "static"):
        return PUBLIC if PAGES_ARE_PUBLIC else frozenset()
    return EXPECTED[(route.method, route.path)]


def test_the_expectation_covers_every_route():
    api = {(r.method, r.path) for r in ROUTES if r.kind in ("api", "ops")}
    assert api == set(EXPECTED), (api - set(EXPECTED), set(EXPECTED) - api)


def test_every_route_with_every_role(system, clients, world):
    as_role = {"public": Client(system), **{role: clients[role] for role in ROLES[1:]}}
    wrong = []
    for route in ROUTES:
        if route.kind == "fallback":
            continue
        allowed = expected_roles(route)
        path = concrete(route, world)
        params = {"application_number": MISSING["application"]} if (
            route.path == "/api/v1/queue/lookup") else None
        for role in ROLES:
            r = as_role[role].request(route.method, path, params=params,
                                      json_body={} if route.body else None)
            code = error_code(r)
            if role in allowed:
                ok = r.status_code < 500 and r.status_code != 401 and code != "ROLE_REFUSED"
            elif role == "public":
                ok = r.status_code == 401 and code == "NOT_SIGNED_IN"
            else:
                ok = r.status_code == 403 and code == "ROLE_REFUSED"
            if not ok:
                wrong.append((route.method, route.path, role, r.status_code, code))
    assert not wrong, "\n".join(map(str, wrong))


def test_an_unknown_path_is_404_for_everyone(system, clients):
    for client in [Client(system), *clients.values()]:
        r = client.get("/api/v1/admin")
        assert r.status_code == 404, r.text


@pytest.mark.parametrize("route_name, path_of", [
    ("release_places", "/api/v1/organizations/{other}/groups/{group}/releases"),
    ("add_group", "/api/v1/organizations/{other}/groups"),
])
def test_staff_act_for_their_own_organisation_only(system, clients, world, route_name, path_of):
    """Role right, organisation wrong: staff of one organisation are strangers to another."""
    r = clients["officer"].post("/api/v1/organizations", {
        "name": "Басқа балабақша", "address": "Абай 11", "district": world["district"],
        "ownership": "state", "kind": "kindergarten", "languages": ["kk"]})
    assert r.status_code == 201, r.text
    other = r.json()["id"]
    path = path_of.format(other=other, group=world["group_id"])
    body = {"places": 1} if route_name == "release_places" else {
        "name": "Топ", "group_type": "general", "birth_year": 2022, "language": "kk",
        "capacity": 10}
    r = clients["staff"].post(path, body)
    assert r.status_code == 403, r.text
    assert error_code(r) == "NOT_OWN_ORGANIZATION"


def test_an_applicant_reads_and_changes_only_their_own_application(clients, world):
    number = world["application_number"]
    other = clients["other_applicant"]
    for method, path, body in (
        ("GET", f"/api/v1/applications/{number}", None),
        ("POST", f"/api/v1/applications/{number}/withdraw", None),
        ("POST", f"/api/v1/applications/{number}/postpone", {"until": "2099-01-01"}),
        ("POST", f"/api/v1/applications/{number}/resume", None),
        ("POST", f"/api/v1/directions/{world['direction_number']}/decline", None),
    ):
        r = other.request(method, path, json_body=body)
        assert r.status_code in (403, 404), (path, r.status_code, r.text)
    # and it is still as it was
    r = clients["applicant"].get(f"/api/v1/applications/{number}")
    assert r.status_code == 200 and r.json()["status"] == "offered", r.text
    assert number not in other.get("/api/v1/applications").text
