"""Oversized bodies and pages are refused (413, 400) before anything is done with them; nothing
too big or too deep gets a 500."""

from __future__ import annotations

import json

import pytest

from services.gateway.http import DEFAULT_MAX_BODY_BYTES
from services.gateway.routes import MAX_PAGE_SIZE, ROUTES
from tests.security.conftest import Client, error_code

BODY_ROUTES = [r for r in ROUTES if r.body]
PAGED_ROUTES = [r for r in ROUTES if r.paged]


def client_for(route, system, clients) -> Client:
    if not route.roles:
        return Client(system)
    return clients[route.roles[0]]


def path_of(route, world) -> str:
    return (route.path.replace("{id}", str(world["organization_id"]))
            .replace("{group_id}", str(world["group_id"]))
            .replace("{number}", world["application_number"])
            .replace("{place_id}", world["place_id"]))


def oversized() -> bytes:
    filler = "x" * (DEFAULT_MAX_BODY_BYTES + 1024)
    return json.dumps({"name": filler}).encode()


@pytest.mark.parametrize("route", BODY_ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_an_oversized_body_is_413(route, system, clients, world):
    client = client_for(route, system, clients)
    r = client.request(route.method, path_of(route, world), data=oversized(),
                       headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and error_code(r) == "PAYLOAD_TOO_LARGE", r.text


def test_an_oversized_body_without_a_length_is_413_too(system, clients):
    """Sent in chunks, so the gateway cannot go by Content-Length. (The WSGI server does not
    mark chunked input as terminated, so the gateway reads no chunked body at all: 400.)"""
    body = oversized()

    def chunks():
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    r = clients["officer"].request("POST", "/api/v1/organizations", data=chunks(),
                                   headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 411, 413), r.text
    assert r.status_code != 400 or error_code(r) in ("INVALID_JSON", "INVALID_INPUT"), r.text


def test_an_oversized_body_is_refused_before_sign_in_is_checked(system):
    r = Client(system).request("POST", "/api/v1/applications", data=oversized(),
                               headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text


@pytest.mark.parametrize("route", PAGED_ROUTES, ids=lambda r: f"{r.method} {r.path}")
def test_pages_larger_than_the_maximum_are_400(route, system, clients, world):
    client = client_for(route, system, clients)
    path = path_of(route, world)
    for size in (MAX_PAGE_SIZE + 1, 10**9, -1, 0):
        r = client.get(path, params={"page_size": size})
        assert r.status_code == 400 and r.json()["error"]["field"] == "page_size", (size, r.text)
    for page in (0, -5, 10**12):
        r = client.get(path, params={"page": page})
        assert r.status_code == 400 and r.json()["error"]["field"] == "page", (page, r.text)
    r = client.get(path, params={"page_size": MAX_PAGE_SIZE})
    assert r.status_code == 200, r.text
    assert r.json()["page_size"] == MAX_PAGE_SIZE


def test_json_nested_too_deep_is_400(system, clients):
    deep = b"[" * 100_000 + b"]" * 100_000
    assert len(deep) > DEFAULT_MAX_BODY_BYTES  # refused by size...
    r = clients["officer"].request("POST", "/api/v1/organizations", data=deep[:60_000])
    assert r.status_code == 400 and error_code(r) == "INVALID_JSON", r.text  # ...or by depth
    nested = b'{"name": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"
    r = clients["officer"].request("POST", "/api/v1/organizations", data=nested)
    assert r.status_code == 400, r.text


def test_long_lists_and_strings_in_a_body_are_400_naming_the_field(system, clients, world):
    applicant = clients["applicant"]
    r = applicant.post("/api/v1/applications", {
        "applicant": {"iin": "900101301233", "full_name": "А" * 1000, "phone": "+77050000000"},
        "child": {"iin": "220101500000", "full_name": "Б", "birth_date": "2022-01-01"},
        "queue_type": "general", "language": "kk", "district": world["district"],
        "preferred_organizations": list(range(1, 2001)), "desired_start": "2027-09-01"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] in ("applicant.full_name", "preferred_organizations")


def test_a_very_long_query_or_header_is_refused_not_crashed_on(system):
    r = Client(system).get("/api/v1/organizations", params={"district": "x" * 20_000})
    assert r.status_code in (400, 414, 431), r.status_code
    r = Client(system).get("/api/v1/organizations", params={"district": "x" * 5000})
    assert r.status_code == 400 and r.json()["error"]["field"] == "district", r.text
    r = Client(system).get("/api/v1/organizations",
                           headers={"X-Device-Fingerprint": "f" * 6000})
    assert r.status_code == 200, r.status_code
    r = Client(system).get("/api/v1/organizations", headers={"X-Junk": "j" * 20_000})
    assert r.status_code in (400, 431), r.status_code
