"""The flow Kezek exists for, end to end over HTTP against the running services:
a parent files an application naming organisation X, X's staff release a place, and the
direction, the registries, the parent's feed and the audit log all show it."""

import datetime as dt
import random
import uuid

from services.applications.domain import make_iin
from tests.helpers import wait_for


def phone() -> str:
    return "+7707" + "".join(random.choices("0123456789", k=7))


def valid_iin(birth: dt.date, sex: str) -> str:
    for serial in range(random.randint(0, 9000), 10000):
        try:
            return make_iin(birth, sex, serial)
        except ValueError:
            continue
    raise AssertionError("no IIN")


def test_release_allocates_to_the_parent_who_chose_the_organisation(system):
    district = f"E2E-{uuid.uuid4().hex[:6]}"
    birth = dt.date.today().replace(day=1) - dt.timedelta(days=3 * 365)

    officer_phone, staff_phone, auditor_phone, parent_phone = phone(), phone(), phone(), phone()
    system.add_user("officer", officer_phone)
    officer = system.sign_in(officer_phone)["session"]
    r = officer.post(system.url("/api/v1/organizations"), json={
        "name": "Балабақша №1 (e2e)", "address": "Алматы, Абая 1", "district": district,
        "ownership": "state", "kind": "kindergarten", "languages": ["kk"],
        "monthly_fee_kzt": 0})
    assert r.status_code == 201, r.text
    org = r.json()
    r = officer.post(system.url(f"/api/v1/organizations/{org['id']}/groups"), json={
        "name": "Ортаңғы топ", "group_type": "general", "birth_year": birth.year,
        "language": "kk", "capacity": 25, "enrolled": 10})
    assert r.status_code == 201, r.text
    group = r.json()

    system.add_user("staff", staff_phone, organization_id=org["id"])
    system.add_user("auditor", auditor_phone)
    parent_device = f"parent-{uuid.uuid4().hex[:8]}"
    parent = system.sign_in(parent_phone, fingerprint=parent_device)["session"]
    staff = system.sign_in(staff_phone)["session"]
    auditor = system.sign_in(auditor_phone)["session"]

    child_name = "Серікбаев Алихан Болатұлы"
    r = parent.post(system.url("/api/v1/applications"), json={
        "applicant": {"iin": valid_iin(dt.date(1990, 5, 17), "M"), "full_name":
                      "Серікбаев Болат Ерланұлы", "phone": parent_phone},
        "child": {"iin": valid_iin(birth, "M"), "full_name": child_name,
                  "birth_date": birth.isoformat()},
        "queue_type": "general", "language": "kk", "district": district,
        "preferred_organizations": [org["id"]],
        "desired_start": (dt.date.today() + dt.timedelta(days=60)).isoformat(),
        "benefit": None})
    assert r.status_code == 201, r.text
    filed = r.json()
    assert filed["queue_number"] == 1
    number = filed["application_number"]

    r = staff.post(system.url(f"/api/v1/organizations/{org['id']}/groups/{group['id']}/releases"),
                   json={"places": 1})
    assert r.status_code == 201, r.text
    (place_id,) = r.json()["place_ids"]

    def direction_published():
        items = parent.get(system.url("/api/v1/directions"),
                           params={"organization_id": org["id"]}).json()["items"]
        return [d for d in items if str(d["place_id"]) == str(place_id)]

    (direction,) = wait_for(direction_published, timeout=10, message="direction in the protocol")
    assert direction["status"] == "issued"
    assert direction["organization_id"] == org["id"]
    assert direction["child_name"].startswith("Серікбаев")
    assert "application_number" not in direction  # public protocol

    vacancies = parent.get(system.url("/api/v1/vacancies"),
                           params={"organization_id": org["id"]}).json()["items"]
    assert str(place_id) not in [str(v["place_id"]) for v in vacancies]

    def offered_in_feed():
        feed = parent.get(system.url("/api/v1/me/events")).json()["items"]
        return [e for e in feed if e["application_number"] == number and e["kind"] == "offered"]

    (entry,) = wait_for(offered_in_feed, timeout=10, message="feed entry")
    assert direction["number"] in entry["text"]["ru"] or direction["number"] in entry["text"]["kk"]

    def audited():
        rows = auditor.get(system.url("/api/v1/audit"), params={"page_size": 500}).json()["items"]
        parent_filed = [a for a in rows if a["action"] == "POST /api/v1/applications"
                        and a["fingerprint"] == parent_device and a["outcome"].startswith("201")]
        staff_released = [a for a in rows if a["action"].endswith("/releases")
                          and a["role"] == "staff" and a["outcome"].startswith("201")]
        allocated = [a for a in rows if a["actor"] == "system" and a["action"] == "allocate"]
        return parent_filed and staff_released and allocated

    assert wait_for(audited, timeout=10, message="audit records")
