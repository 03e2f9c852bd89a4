"""A small piece of real work through the gateway: an officer registers a kindergarten with a
group, a parent files an application naming it, its staff release places; the first place
becomes the child's direction, the rest vacancies."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from tests.helpers import wait_for
from tests.system import System, valid_iin
from tests.system import random_phone as phone


@dataclass
class Work:
    organization_id: int
    group_id: int
    application_number: str
    place_ids: list[str]
    direction_number: str
    request_ids: dict[str, str] = field(default_factory=dict)  # step -> X-Request-Id
    sessions: dict = field(default_factory=dict)


def release_flow(system: System, places: int = 2) -> Work:
    district = f"OPS-{uuid.uuid4().hex[:6]}"
    birth = dt.date.today().replace(day=1) - dt.timedelta(days=3 * 365)
    officer_phone, staff_phone, auditor_phone, parent_phone = phone(), phone(), phone(), phone()
    request_ids: dict[str, str] = {}

    system.add_user("officer", officer_phone)
    officer = system.sign_in(officer_phone)["session"]
    r = officer.post(system.url("/api/v1/organizations"), json={
        "name": f"Ops kindergarten {district}", "address": "Almaty, Abay 1",
        "district": district, "ownership": "state", "kind": "kindergarten",
        "languages": ["kk"], "monthly_fee_kzt": 0})
    assert r.status_code == 201, r.text
    org = r.json()
    r = officer.post(system.url(f"/api/v1/organizations/{org['id']}/groups"), json={
        "name": "Ortangy", "group_type": "general", "birth_year": birth.year, "language": "kk",
        "capacity": 25, "enrolled": 10})
    assert r.status_code == 201, r.text
    group = r.json()

    system.add_user("staff", staff_phone, organization_id=org["id"])
    system.add_user("auditor", auditor_phone)
    parent = system.sign_in(parent_phone, fingerprint=f"ops-{uuid.uuid4().hex[:8]}")["session"]
    staff = system.sign_in(staff_phone)["session"]
    auditor = system.sign_in(auditor_phone)["session"]

    r = parent.post(system.url("/api/v1/applications"), json={
        "applicant": {"iin": valid_iin(dt.date(1990, 5, 17), "M"),
                      "full_name": "Serikbayev Bolat Erlanuly", "phone": parent_phone},
        "child": {"iin": valid_iin(birth, "M"), "full_name": "Serikbayev Alikhan Bolatuly",
                  "birth_date": birth.isoformat()},
        "queue_type": "general", "language": "kk", "district": district,
        "preferred_organizations": [org["id"]],
        "desired_start": (dt.date.today() + dt.timedelta(days=60)).isoformat(),
        "benefit": None})
    assert r.status_code == 201, r.text
    request_ids["file_application"] = r.headers["X-Request-Id"]
    number = r.json()["application_number"]

    def queued():
        r = parent.get(system.url("/api/v1/queue/lookup"), params={"application_number": number})
        return r.status_code == 200 and r.json().get("status") == "queued"

    # the place must find the child in the queue (the queue learns of it by an event)
    wait_for(queued, timeout=15, interval=0.2, message="application in the queue registry")

    r = staff.post(system.url(f"/api/v1/organizations/{org['id']}/groups/{group['id']}/releases"),
                   json={"places": places})
    assert r.status_code == 201, r.text
    request_ids["release_places"] = r.headers["X-Request-Id"]
    place_ids = r.json()["place_ids"]

    def directed():
        items = parent.get(system.url("/api/v1/directions"),
                           params={"organization_id": org["id"]}).json()["items"]
        return items

    (direction,) = wait_for(directed, timeout=15, interval=0.2, message="direction issued")
    return Work(org["id"], group["id"], number, place_ids, direction["number"], request_ids,
                {"officer": officer, "staff": staff, "parent": parent, "auditor": auditor})
