"""Personal data stays private: the public registries show people only as "Surname I.P." (with
PUBLIC_FULL_NAMES off), never an IIN or a phone; the services' logs hold no IIN, phone or full
name; metric labels carry no ids, IINs or phones."""

from __future__ import annotations

import json
import re

from prometheus_client.parser import text_string_to_metric_families

from services.gateway.routes import ROUTES
from tests.helpers import wait_for
from tests.security.conftest import Client, application_body, new_phone


def secrets_of(world: dict, clients: dict) -> dict[str, str]:
    """What must never be public: name -> text."""
    out = {"applicant IIN": world["applicant_iin"], "child IIN": world["child_iin"]}
    for who in ("applicant", "other_applicant", "staff", "officer", "auditor", "operator"):
        phone = clients[who].phone
        out[f"{who} phone"] = phone
        out[f"{who} phone without +"] = phone[1:]
        out[f"{who} phone, local part"] = phone[2:]
    for who in ("applicant_name", "child_name"):
        words = world[who].split()
        out[f"{who} in full"] = world[who]
        # the surname is shown; the given name and patronymic only as initials
        out[f"{who}: given name"] = words[1]
        out[f"{who}: patronymic"] = words[2]
    return out


def readable(r) -> str:
    """The answer as a person would read it (JSON with its escapes undone)."""
    if r.headers.get("Content-Type", "").startswith("application/json"):
        return json.dumps(r.json(), ensure_ascii=False)
    return r.text


def leaks(body: str, secrets: dict[str, str]) -> list[str]:
    return [what for what, value in secrets.items() if value and value in body]


def masked(full_name: str) -> str:
    words = full_name.split()
    return words[0] + " " + "".join(w[0] + "." for w in words[1:])


def test_public_registries_show_only_masked_names(system, clients, world):
    secrets = secrets_of(world, clients)
    public = Client(system)
    number, org = world["application_number"], world["organization_id"]
    wait_for(lambda: public.get("/api/v1/queue/lookup",
                                params={"application_number": number}).ok,
             message="the application in the queue registry")
    by_district = {"district": world["district"]}
    answers = []
    for route in ROUTES:
        if route.roles is not None or route.kind not in ("api", "page") or route.method != "GET":
            continue
        path = route.path.replace("{id}", str(org))
        params = dict(by_district) if any(p.name == "district" for p in route.query) else {}
        if route.path.endswith("/queue/lookup"):
            params = {"application_number": number}
        answers.append((path, params, public.get(path, params=params)))
        if route.csv:
            answers.append((path + " (csv)", params,
                            public.get(path, params={**params, "format": "csv"})))
    seen = []
    for path, params, r in answers:
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        body = readable(r)
        assert not leaks(body, secrets), (path, leaks(body, secrets))
        seen.append(body)
    # and the people are there, masked, where the registries name them
    shown = "\n".join(seen)
    assert masked(world["child_name"]) in shown
    assert masked(world["applicant_name"]) in shown


def test_logs_hold_no_iin_phone_or_full_name(system, clients, world):
    """After a run of everyday and failing requests carrying personal data."""
    parent = clients["applicant"]
    body = application_body(parent.phone, world["district"], [world["organization_id"]],
                            applicant_name=world["applicant_name"],
                            child_name=world["child_name"], applicant_iin=world["applicant_iin"],
                            child_iin=world["child_iin"])
    body["child"]["birth_date"] = "2001-01-01"  # does not match the IIN
    assert parent.post("/api/v1/applications", body).status_code in (400, 422)
    body["child"]["iin"] = world["child_iin"][:-1] + str((int(world["child_iin"][-1]) + 1) % 10)
    assert parent.post("/api/v1/applications", body).status_code in (400, 422)
    stranger = system.sign_in(new_phone())
    assert stranger.get(f"/api/v1/applications/{world['application_number']}").status_code in (
        403, 404)
    assert Client(system).post("/api/v1/auth/token", {"phone": parent.phone,
                                                      "code": "000000"}).status_code == 401
    parent.get("/api/v1/applications")
    parent.get("/api/v1/me/events")
    clients["staff"].get(f"/api/v1/applications/{world['application_number']}")

    secrets = secrets_of(world, clients)
    secrets["stranger phone"] = stranger.phone
    log = system.log_text()
    assert log.strip(), "no log captured"
    bad = [(what, line[:300]) for line in log.splitlines()
           for what in leaks(_unescaped(line), secrets)]
    assert not bad, bad


def _unescaped(line: str) -> str:
    """A JSON log line with its \\u escapes undone (names are Cyrillic)."""
    try:
        return json.dumps(json.loads(line), ensure_ascii=False)
    except ValueError:
        return line


ID_LIKE = [
    re.compile(r"\d{4,}"),  # ids, IINs, phones, numbers of applications and directions
    re.compile(r"\+\d"),
    re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-"),  # uuids: places, requests, events
    re.compile(r"@"),
]


def test_metric_labels_carry_no_ids_or_personal_data(system, clients, world):
    secrets = secrets_of(world, clients)
    templates = {r.label for r in ROUTES}
    r = Client(system).get("/metrics")
    assert r.status_code == 200
    labelled = 0
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            for name, value in sample.labels.items():
                if name in ("le", "quantile"):
                    continue
                labelled += 1
                assert not leaks(value, secrets), (sample.name, name, value)
                if name == "route":
                    assert value in templates, (sample.name, value)
                elif name == "status":
                    assert re.fullmatch(r"[1-5]\d\d", value), (sample.name, value)
                else:
                    assert not any(p.search(value) for p in ID_LIKE), (sample.name, name, value)
    assert labelled > 0
    # the routes requested with concrete ids are counted under their templates
    assert 'route="/api/v1/organizations/{id}"' in r.text
    assert f"/api/v1/organizations/{world['organization_id']}\"" not in r.text
