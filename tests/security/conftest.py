"""The whole system (every service in one `nameko run`, as `make run` starts it) on an isolated
database and vhost, with a small world in it: an organisation with a group, its staff, an
officer, an auditor, an operator, two parents, an application and the direction it got.

The gateway trusts X-Forwarded-For from 127.0.0.1 here, so each test client poses as its own
address; the rate limits are high (they are tested in tests/integration/test_gateway.py) and the
one-time-code limits are the configured ones.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import string
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from services.applications.domain import make_iin
from services.common.db import DatabaseAccess, get_engine
from services.gateway import accounts
from tests.conftest import destroy_isolated_config, make_isolated_config
from tests.e2e.conftest import start_system
from tests.helpers import wait_for

BIRTH_YEAR = dt.date.today().year - 3
CYRILLIC = "абвгдежзиклмнопрстуфхцчшэюяәіңғүұқөһ"


def cyrillic_name(length: int = 7) -> str:
    return random.choice(CYRILLIC[:28]).upper() + "".join(random.choices(CYRILLIC, k=length - 1))


def new_phone() -> str:
    return "+7705" + "".join(random.choices(string.digits, k=7))


def new_iin(birth: dt.date, sex: str | None = None) -> str:
    while True:
        try:
            return make_iin(birth, sex or random.choice("MF"), random.randint(0, 9999))
        except ValueError:
            continue


class Client:
    """One client: its own address and device; optionally signed in."""

    def __init__(self, system: "SecuritySystem", token: str | None = None, role: str = "public"):
        self.system = system
        self.base = system.base_url
        self.ip = f"100.{random.randint(64, 127)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        self.fingerprint = uuid.uuid4().hex
        self.token = token
        self.role = role
        self.phone: str | None = None

    def request(self, method: str, path: str, *, json_body: Any = None, data: Any = None,
                headers: dict | None = None, token: str | None = ..., **kwargs):
        h = {"X-Forwarded-For": self.ip, "X-Device-Fingerprint": self.fingerprint,
             "User-Agent": "kezek-security-tests/1.0"}
        token = self.token if token is ... else token
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        if json_body is not None:
            data = json.dumps(json_body)
            h.setdefault("Content-Type", "application/json")
        return requests.request(method, self.base + path, data=data, headers=h, timeout=30,
                                **kwargs)

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw):
        return self.request("POST", path, json_body=body, **kw)


@dataclass
class SecuritySystem:
    config: dict
    base_url: str
    log_path: Path
    clients: dict[str, Client] = field(default_factory=dict)
    world: dict[str, Any] = field(default_factory=dict)

    @property
    def sms_outbox(self) -> Path:
        return Path(self.config["KEZEK"]["SMS_OUTBOX"])

    def codes(self, phone: str) -> list[str]:
        if not self.sms_outbox.exists():
            return []
        lines = [json.loads(x) for x in self.sms_outbox.read_text().splitlines() if x.strip()]
        return [x["code"] for x in lines if x["phone"] == phone]

    def request_code(self, client: Client, phone: str) -> str:
        before = len(self.codes(phone))
        r = client.post("/api/v1/auth/otp", {"phone": phone})
        assert r.status_code == 202, r.text
        return wait_for(lambda: len(c := self.codes(phone)) > before and c[-1],
                        message=f"SMS to {phone}")

    def sign_in(self, phone: str, role: str = "applicant") -> Client:
        client = Client(self, role=role)
        code = self.request_code(client, phone)
        r = client.post("/api/v1/auth/token", {"phone": phone, "code": code})
        assert r.status_code == 200, r.text
        assert r.json()["role"] == role
        client.token = r.json()["token"]
        client.phone = phone
        return client

    def add_user(self, role: str, organization_id: int | None = None) -> Client:
        phone = new_phone()
        accounts.add_user(DatabaseAccess(get_engine(self.config["DB_URL"]), "gateway"),
                          role=role, phone=phone, organization_id=organization_id)
        return self.sign_in(phone, role)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def application_body(phone: str, district: str, organizations: list[int], **names) -> dict:
    birth = dt.date(BIRTH_YEAR, random.randint(1, 6), random.randint(1, 28))
    return {
        "applicant": {"iin": names.get("applicant_iin") or new_iin(dt.date(1990, 5, 17)),
                      "full_name": names.get("applicant_name", "Серікбаев Болат Ерланұлы"),
                      "phone": phone},
        "child": {"iin": names.get("child_iin") or new_iin(birth),
                  "full_name": names.get("child_name", "Серікбаев Алихан Болатұлы"),
                  "birth_date": birth.isoformat()},
        "queue_type": "general", "language": "kk", "district": district,
        "preferred_organizations": organizations,
        "desired_start": dt.date(BIRTH_YEAR + 5, 9, 1).isoformat(), "benefit": None,
    }


@pytest.fixture(scope="package")
def system(tmp_path_factory) -> SecuritySystem:
    config = make_isolated_config()
    config["KEZEK"].update({
        "TRUSTED_PROXIES": ["127.0.0.1"],
        "RATE_LIMIT_PER_MINUTE": 100_000,
        "RATE_BURST": 100_000,
        "PUBLIC_FULL_NAMES": False,
    })
    tmp = tmp_path_factory.mktemp("security")
    proc = start_system(config, tmp)
    system = SecuritySystem(config, "http://" + config["WEB_SERVER_ADDRESS"], tmp / "system.log")

    def up():
        if proc.poll() is not None:
            raise AssertionError("system exited:\n" + system.log_text()[-3000:])
        try:
            return requests.get(system.base_url + "/api/v1/districts", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=60, interval=0.3, message="system up")
        build_world(system)
        yield system
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            proc.kill()
        destroy_isolated_config(config)


def build_world(system: SecuritySystem) -> None:
    """Accounts of every role, an organisation with a group, an application and its direction."""
    c, w = system.clients, system.world
    c["officer"] = system.add_user("officer")
    c["auditor"] = system.add_user("auditor")
    c["operator"] = system.add_user("operator")
    w["district"] = f"Sec-{uuid.uuid4().hex[:6]}"
    r = c["officer"].post("/api/v1/organizations", {
        "name": "Балабақша «Қауіпсіз»", "address": "Абай 10", "district": w["district"],
        "ownership": "state", "kind": "kindergarten", "languages": ["kk"],
        "monthly_fee_kzt": 0})
    assert r.status_code == 201, r.text
    w["organization_id"] = r.json()["id"]
    r = c["officer"].post(f"/api/v1/organizations/{w['organization_id']}/groups", {
        "name": "Ортаңғы топ", "group_type": "general", "birth_year": BIRTH_YEAR,
        "language": "kk", "capacity": 30, "enrolled": 0})
    assert r.status_code == 201, r.text
    w["group_id"] = r.json()["id"]
    c["staff"] = system.add_user("staff", w["organization_id"])

    # the parent and the child have names and numbers nobody else has: the personal-data tests
    # look for them in every public answer, page, log line and metric
    w["applicant_name"] = f"{cyrillic_name(9)} {cyrillic_name()} {cyrillic_name(8)}"
    w["child_name"] = f"{w['applicant_name'].split()[0]} {cyrillic_name()} {cyrillic_name(8)}"
    w["applicant_iin"] = new_iin(dt.date(1990, 5, 17))
    w["child_iin"] = None
    c["applicant"] = system.sign_in(new_phone())
    body = application_body(c["applicant"].phone, w["district"], [w["organization_id"]],
                            applicant_name=w["applicant_name"], child_name=w["child_name"],
                            applicant_iin=w["applicant_iin"])
    w["child_iin"] = body["child"]["iin"]
    r = c["applicant"].post("/api/v1/applications", body)
    assert r.status_code == 201, r.text
    w["application_number"] = r.json()["application_number"]
    c["other_applicant"] = system.sign_in(new_phone())

    r = c["staff"].post(
        f"/api/v1/organizations/{w['organization_id']}/groups/{w['group_id']}/releases",
        {"places": 1})
    assert r.status_code == 201, r.text
    (w["place_id"],) = r.json()["place_ids"]

    def directed():
        items = Client(system).get("/api/v1/directions", params={
            "organization_id": w["organization_id"]}).json()["items"]
        return [d for d in items if d["place_id"] == w["place_id"]]

    (direction,) = wait_for(directed, timeout=20, message="the direction issued")
    w["direction_number"] = direction["number"]


@pytest.fixture(scope="package")
def clients(system) -> dict[str, Client]:
    return system.clients


@pytest.fixture(scope="package")
def world(system) -> dict[str, Any]:
    return system.world


def error_code(r) -> str | None:
    try:
        return r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
