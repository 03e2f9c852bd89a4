"""The gateway over real HTTP, with the services behind it on real RabbitMQ and PostgreSQL.

One gateway (plus every other service whose service.py imports) runs for the module. Each test
poses as its own client: the gateway trusts X-Forwarded-For from 127.0.0.1 here, so a random
address per test keeps rate limits and audit queries apart. Sign-in reads the code from the
development SMS outbox file, as a developer would.
"""

import copy
import datetime as dt
import importlib
import json
import random
import uuid

import eventlet
import pytest
import requests
from kombu import Connection, Exchange, Queue
from sqlalchemy import text

from services.common.amqp import AUDIT_EXCHANGE, AUDIT_QUEUE
from services.common.db import DatabaseAccess, get_engine
from services.gateway import accounts
from services.gateway.routes import ROUTES
from services.gateway.service import GatewayService
from tests.conftest import free_port
from tests.helpers import random_name, wait_for

OTHER_SERVICES = [
    ("services.registry.service", "RegistryService"),
    ("services.applications.service", "ApplicationsService"),
    ("services.queue.service", "QueueService"),
    ("services.allocation.service", "AllocationService"),
    ("services.audit.service", "AuditService"),
]
BURST = 20
BLOCK_AFTER = 4
LISTED_NETWORK = "203.0.113.0/24"
TODAY = dt.date.today()
BIRTH_DATE = dt.date(TODAY.year - 3, 5, 17)


def importable(module: str, name: str):
    return getattr(importlib.import_module(module), name)  # an import error fails the tests


@pytest.fixture(scope="module")
def gw(kezek_config, tmp_path_factory):
    """The running gateway: base URL, config, which services run."""
    from nameko.runners import ServiceRunner

    config = copy.deepcopy(kezek_config)
    listed = tmp_path_factory.mktemp("gateway") / "anonymizers.txt"
    listed.write_text(f"# test list\n{LISTED_NETWORK}\n")
    config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{free_port()}"
    config["KEZEK"].update(
        {
            "TRUSTED_PROXIES": ["127.0.0.1"],
            "ANONYMIZER_LIST": str(listed),
            "RATE_LIMIT_PER_MINUTE": 60,
            "RATE_BURST": BURST,
            "BLOCK_AFTER_EXCESSES": BLOCK_AFTER,
            "BLOCK_SECONDS": 300,
            "RPC_TIMEOUT_SECONDS": 10,
        }
    )
    classes = [GatewayService] + [c for c in (importable(m, n) for m, n in OTHER_SERVICES) if c]
    runner = ServiceRunner(config)
    for cls in classes:
        runner.add_service(cls)
    runner.start()
    base = f"http://{config['WEB_SERVER_ADDRESS']}"
    wait_for(lambda: _alive(base), message="gateway listening")
    yield {"base": base, "config": config, "running": {c.name for c in classes}, "runner": runner}
    runner.kill()


def _alive(base):
    try:
        return requests.get(base + "/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


class Client:
    """One simulated client: its own address (and device fingerprint)."""

    def __init__(self, gw, token=None):
        self.base = gw["base"]
        self.config = gw["config"]
        self.ip = f"100.{random.randint(64, 127)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        self.fingerprint = uuid.uuid4().hex
        self.token = token
        self.request_ids = []

    def request(
        self, method, path, *, json_body=None, data=None, headers=None, token=None, **kwargs
    ):
        h = {
            "X-Forwarded-For": self.ip,
            "X-Device-Fingerprint": self.fingerprint,
            "User-Agent": "kezek-tests/1.0",
            "Accept-Language": "kk-KZ",
        }
        token = token or self.token
        if token:
            h["Authorization"] = f"Bearer {token}"
        h.update(headers or {})
        if json_body is not None:
            data = json.dumps(json_body)
            h.setdefault("Content-Type", "application/json")
        r = requests.request(method, self.base + path, data=data, headers=h, timeout=30, **kwargs)
        self.request_ids.append(r.headers.get("X-Request-Id"))
        return r

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, json_body=body, **kw)


def phone() -> str:
    return "+7701" + "".join(random.choices("0123456789", k=7))


def last_code(config, number) -> str:
    def find():
        try:
            with open(config["KEZEK"]["SMS_OUTBOX"]) as fh:
                lines = [json.loads(x) for x in fh if x.strip()]
        except FileNotFoundError:
            return None
        mine = [x for x in lines if x["phone"] == number]
        return mine[-1]["code"] if mine else None

    return wait_for(find, message=f"SMS to {number}")


def sign_in(client, number) -> dict:
    r = client.post("/api/v1/auth/otp", {"phone": number})
    assert r.status_code == 202, r.text
    r = client.post(
        "/api/v1/auth/token", {"phone": number, "code": last_code(client.config, number)}
    )
    assert r.status_code == 200, r.text
    return r.json()


def gateway_db(gw) -> DatabaseAccess:
    return DatabaseAccess(get_engine(gw["config"]["DB_URL"]), "gateway")


def staff_client(gw, role, organization_id=None) -> Client:
    number = phone()
    accounts.add_user(gateway_db(gw), role, number, organization_id)
    client = Client(gw)
    client.token = sign_in(client, number)["token"]
    return client


def applicant_client(gw) -> Client:
    client = Client(gw)
    client.phone = phone()
    client.token = sign_in(client, client.phone)["token"]
    return client


def assert_error(r, status, code=None, field=...):
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    if code:
        assert body["error"]["code"] == code, body
    if field is not ...:
        assert body["error"]["field"] == field, body
    return body["error"]


def needs(gw, *services):
    missing = [s for s in services if s not in gw["running"]]
    assert not missing, f"services that did not import: {missing}"  # a failure, never a skip


# -- sign-in --------------------------------------------------------------------------------------
def test_sign_in_with_the_code_from_the_sms_outbox(gw):
    client = Client(gw)
    number = phone()
    r = client.post("/api/v1/auth/otp", {"phone": number})
    assert r.status_code == 202
    code = last_code(gw["config"], number)
    assert len(code) == 6 and code.isdigit()
    # the code is kept hashed: it is nowhere in the gateway's table
    with get_engine(gw["config"]["DB_URL"]).connect() as conn:
        stored = (
            conn.execute(
                text("SELECT code_hash FROM gateway.otp_codes WHERE phone = :p"), {"p": number}
            )
            .scalars()
            .all()
        )
    assert stored and code not in "".join(stored)

    r = client.post("/api/v1/auth/token", {"phone": number, "code": code})
    assert r.status_code == 200, r.text
    token = r.json()
    assert token["role"] == "applicant"
    assert dt.datetime.fromisoformat(token["expires_at"]) > dt.datetime.now(dt.timezone.utc)
    assert r.headers["Cache-Control"] == "no-store"

    needs(gw, "applications")
    r = client.get("/api/v1/applications", token=token["token"])
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []


def test_a_used_code_is_refused_the_second_time(gw):
    client, number = Client(gw), phone()
    client.post("/api/v1/auth/otp", {"phone": number})
    code = last_code(gw["config"], number)
    assert client.post("/api/v1/auth/token", {"phone": number, "code": code}).status_code == 200
    r = client.post("/api/v1/auth/token", {"phone": number, "code": code})
    assert_error(r, 401, "OTP_USED", "code")


def test_an_expired_code_is_refused(gw):
    client, number = Client(gw), phone()
    client.post("/api/v1/auth/otp", {"phone": number})
    code = last_code(gw["config"], number)
    with get_engine(gw["config"]["DB_URL"]).begin() as conn:
        conn.execute(
            text(
                "UPDATE gateway.otp_codes SET expires_at = clock_timestamp() "
                "- interval '1 second' WHERE phone = :p"
            ),
            {"p": number},
        )
    r = client.post("/api/v1/auth/token", {"phone": number, "code": code})
    assert_error(r, 401, "OTP_EXPIRED", "code")


def test_wrong_guesses_use_up_the_code(gw):
    client, number = Client(gw), phone()
    client.post("/api/v1/auth/otp", {"phone": number})
    code = last_code(gw["config"], number)
    wrong = f"{(int(code) + 1) % 1000000:06d}"
    attempts = int(gw["config"]["KEZEK"]["OTP_MAX_ATTEMPTS"])
    for _ in range(attempts):
        assert_error(client.post("/api/v1/auth/token", {"phone": number, "code": wrong}), 401)
    r = client.post("/api/v1/auth/token", {"phone": number, "code": code})
    assert_error(r, 401, "OTP_ATTEMPTS_EXCEEDED")


def test_a_new_code_replaces_the_previous_one(gw):
    client, number = Client(gw), phone()
    client.post("/api/v1/auth/otp", {"phone": number})
    first = last_code(gw["config"], number)
    client.post("/api/v1/auth/otp", {"phone": number})
    second = wait_for(lambda: (c := last_code(gw["config"], number)) != first and c)
    assert_error(client.post("/api/v1/auth/token", {"phone": number, "code": first}), 401)
    assert client.post("/api/v1/auth/token", {"phone": number, "code": second}).status_code == 200


def test_staff_sign_in_to_the_account_an_operator_made(gw):
    number = phone()
    accounts.add_user(gateway_db(gw), "auditor", number)
    client = Client(gw)
    assert sign_in(client, number)["role"] == "auditor"


def test_a_bad_phone_is_a_400_naming_it(gw):
    assert_error(Client(gw).post("/api/v1/auth/otp", {"phone": "12"}), 400, field="phone")


# -- who may do what ------------------------------------------------------------------------------
SAMPLE_PATH = {
    "id": "1",
    "group_id": "1",
    "number": "A-000001",
    "place_id": "5f0c6a7e-1b2c-4d3e-8f90-123456789abc",
}


def concrete(path):
    for name, value in SAMPLE_PATH.items():
        path = path.replace("{" + name + "}", value)
    return path


# api.md: everything but the public registries, reference data and sign-in needs a token
SIGNED_IN = [
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
]


def test_every_signed_in_endpoint_answers_401_without_a_token(gw):
    client = Client(gw)
    for method, path in SIGNED_IN:
        r = client.request(method, concrete(path), json_body={})
        assert_error(r, 401, "NOT_SIGNED_IN")
    # and the table agrees: no other route wants a token
    assert {(r.method, r.path) for r in ROUTES if r.roles} == set(SIGNED_IN)


def test_a_forged_or_expired_token_is_a_401(gw):
    client = applicant_client(gw)
    version, payload, signature = client.token.split(".")
    forged = f"{version}.{payload}.{signature[:-2]}AA"
    assert_error(client.get("/api/v1/me/events", token=forged), 401, "INVALID_TOKEN")
    from services.gateway import auth

    expired = auth.issue_token(
        gw["config"]["KEZEK"]["TOKEN_SECRET"],
        {"id": 1, "role": "applicant", "phone": client.phone},
        -10,
    )
    assert_error(client.get("/api/v1/me/events", token=expired["token"]), 401, "TOKEN_EXPIRED")


def test_wrong_roles_are_refused_with_403(gw):
    applicant = applicant_client(gw)
    staff = staff_client(gw, "staff", organization_id=1)
    officer = staff_client(gw, "officer")
    auditor = staff_client(gw, "auditor")
    refused = [
        (applicant, "GET", "/api/v1/audit", None),
        (applicant, "GET", "/api/v1/audit/verify", None),
        (officer, "GET", "/api/v1/audit", None),
        (staff, "POST", "/api/v1/directions/D000000001/revoke", {"reason": "x"}),
        (staff, "POST", "/api/v1/applications/A-1/benefit/verify", {"approved": True}),
        (staff, "POST", "/api/v1/organizations", {}),
        (applicant, "POST", "/api/v1/organizations/1/groups/1/releases", {"places": 1}),
        (applicant, "POST", "/api/v1/directions/D000000001/enroll", None),
        (officer, "GET", "/api/v1/me/events", None),
        (auditor, "POST", "/api/v1/applications", {}),
    ]
    for client, method, path, body in refused:
        r = client.request(method, path, json_body=body)
        assert_error(r, 403, "ROLE_REFUSED")


def test_staff_act_only_for_their_own_organisation(gw):
    staff = staff_client(gw, "staff", organization_id=1)
    r = staff.post("/api/v1/organizations/2/groups/5/releases", {"places": 1})
    assert_error(r, 403, "NOT_OWN_ORGANIZATION", "id")


# -- input ----------------------------------------------------------------------------------------
def test_malformed_json_is_a_400_with_the_error_shape(gw):
    client = Client(gw)
    r = client.request(
        "POST", "/api/v1/auth/otp", data=b'{"phone": ', headers={"Content-Type": "application/json"}
    )
    assert_error(r, 400, "INVALID_JSON", None)
    applicant = applicant_client(gw)
    r = applicant.request("POST", "/api/v1/applications", data=b"\xff\xfe not json")
    assert_error(r, 400, "INVALID_JSON")


def test_query_parameters_of_the_wrong_type_are_named(gw):
    client = Client(gw)
    assert_error(
        client.get("/api/v1/organizations?page_size=abc"), 400, "INVALID_PARAMETER", "page_size"
    )
    assert_error(client.get("/api/v1/organizations?page_size=501"), 400, field="page_size")
    assert_error(
        client.get("/api/v1/organizations?has_vacancies=maybe"), 400, field="has_vacancies"
    )
    assert_error(client.get("/api/v1/releases?from=yesterday"), 400, field="from")
    assert_error(client.get("/api/v1/queue/lookup"), 400, field="application_number")
    assert_error(client.get("/api/v1/organizations/seven"), 400, field="id")


def test_a_body_field_of_the_wrong_type_is_named(gw):
    staff = staff_client(gw, "staff", organization_id=3)
    r = staff.post("/api/v1/organizations/3/groups/4/releases", {"places": "two"})
    assert_error(r, 400, field="places")


def test_a_too_large_body_is_a_413(gw):
    r = Client(gw).request("POST", "/api/v1/auth/otp", data=b"{" + b" " * 70000 + b"}")
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")


def test_unknown_paths_and_methods(gw):
    client = Client(gw)
    assert_error(client.get("/api/v1/nothing-here"), 404)
    r = client.request("DELETE", "/api/v1/organizations")
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["Allow"] and "POST" in r.headers["Allow"]


# -- abuse ----------------------------------------------------------------------------------------
def test_a_burst_is_limited_then_blocked(gw):
    client = Client(gw)
    statuses = [client.get("/api/v1/openapi.json").status_code for _ in range(BURST)]
    assert statuses == [200] * BURST
    r = client.get("/api/v1/openapi.json")
    assert_error(r, 429, "RATE_LIMITED")
    assert int(r.headers["Retry-After"]) >= 1
    for _ in range(BLOCK_AFTER - 2):
        assert_error(client.get("/api/v1/openapi.json"), 429, "RATE_LIMITED")
    r = client.get("/api/v1/openapi.json")
    assert_error(r, 429, "TEMPORARILY_BLOCKED")
    assert int(r.headers["Retry-After"]) == 300
    # another client is not affected
    assert Client(gw).get("/api/v1/openapi.json").status_code == 200


def test_requests_from_a_listed_network_are_refused(gw):
    client = Client(gw)
    client.ip = "203.0.113.77"
    assert_error(client.get("/api/v1/organizations"), 403, "ANONYMIZER_REFUSED")
    r = client.get(
        "/api/v1/organizations", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )
    assert r.status_code == 403
    assert r.headers["Content-Type"].startswith("text/html")
    assert "VPN" in r.text and "ANONYMIZER_REFUSED" in r.text


# -- audit ----------------------------------------------------------------------------------------
def audit_rows(gw, auditor, **filters):
    r = auditor.get("/api/v1/audit", params={**filters, "page_size": 500})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_every_request_is_audited(gw):
    needs(gw, "audit")
    client = Client(gw)
    client.get("/api/v1/organizations")  # public read
    client.get("/api/v1/organizations?page_size=x")  # bad input
    client.get("/api/v1/me/events")  # not signed in
    client.get("/api/v1/no/such/path")  # unmatched
    client.post("/api/v1/auth/otp", {"phone": "+77015550000"})  # sign-in
    client.request("POST", "/api/v1/auth/otp", data=b"{oops")  # malformed
    listed = Client(gw)
    listed.ip = "203.0.113.5"
    listed.fingerprint = client.fingerprint
    listed.get("/api/v1/queue")  # refused network
    auditor = staff_client(gw, "auditor")

    rows = wait_for(
        lambda: (
            (r := audit_rows(gw, auditor, fingerprint=client.fingerprint)) and len(r) >= 7 and r
        ),
        message="audit records",
    )
    by_request = {row["request_id"]: row for row in rows}
    assert set(client.request_ids + listed.request_ids) <= set(by_request)
    first = by_request[client.request_ids[0]]
    assert first["action"] == "GET /api/v1/organizations"
    assert first["outcome"] == "200"
    assert first["actor"] == "anonymous" and first["role"] == "public"
    assert first["ip"] == client.ip and first["forwarded_for"] == client.ip
    assert first["user_agent"] == "kezek-tests/1.0"
    assert len(first["server_fingerprint"]) == 64
    assert by_request[client.request_ids[1]]["outcome"] == "400 INVALID_PARAMETER"
    assert by_request[client.request_ids[2]]["outcome"] == "401 NOT_SIGNED_IN"
    assert by_request[client.request_ids[3]]["action"] == "GET (unmatched)"
    otp = by_request[client.request_ids[4]]
    assert otp["outcome"] == "202" and otp["target"] == "phone:+77015550000"
    assert by_request[client.request_ids[5]]["outcome"] == "400 INVALID_JSON"
    assert by_request[listed.request_ids[0]]["outcome"] == "403 ANONYMIZER_REFUSED"
    assert by_request[listed.request_ids[0]]["ip"] == "203.0.113.5"
    # the body is never stored, only its digest
    assert "+77015550000" not in json.dumps({k: v for k, v in otp.items() if k not in ("target",)})


def test_signed_in_actions_are_audited_with_actor_and_target(gw):
    needs(gw, "audit")
    staff = staff_client(gw, "staff", organization_id=1)
    r = staff.post("/api/v1/organizations/2/groups/5/releases", {"places": 1})
    assert r.status_code == 403
    auditor = staff_client(gw, "auditor")
    row = wait_for(
        lambda: audit_rows(gw, auditor, request_id=r.headers["X-Request-Id"]),
        message="audit record",
    )[0]
    assert row["actor"].startswith("staff:") and row["role"] == "staff"
    assert row["action"] == "POST /api/v1/organizations/{id}/groups/{group_id}/releases"
    assert row["target"] == "organizations/2/groups/5"
    assert row["outcome"] == "403 NOT_OWN_ORGANIZATION"


def test_the_audit_log_exports_as_csv(gw):
    needs(gw, "audit")
    auditor = staff_client(gw, "auditor")
    r = auditor.get("/api/v1/audit?format=csv&page_size=5")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/csv")
    header = r.text.splitlines()[0].split(",")
    assert header[:8] == ["id", "at", "request_id", "actor", "role", "action", "target", "outcome"]
    r = auditor.get("/api/v1/audit/verify")
    assert r.status_code == 200 and r.json()["ok"] is True


def test_no_answer_leaves_unrecorded_when_the_audit_queue_is_gone(gw):
    """Unbinding the audit queue makes the mandatory publish come back unroutable."""
    exchange = Exchange(AUDIT_EXCHANGE, type="direct", durable=True)
    queue = Queue(
        AUDIT_QUEUE,
        exchange=exchange,
        routing_key="audit_record",
        durable=True,
        queue_arguments={"x-queue-type": "quorum", "x-single-active-consumer": True},
    )
    with Connection(gw["config"]["AMQP_URI"]) as conn:
        channel = conn.channel()
        channel.queue_unbind(AUDIT_QUEUE, AUDIT_EXCHANGE, "audit_record")
        try:
            r = Client(gw).get("/api/v1/organizations")
            assert_error(r, 503, "AUDIT_UNAVAILABLE")
        finally:
            queue(channel).bind_to(exchange, "audit_record")
            channel.close()
    assert Client(gw).get("/api/v1/organizations").status_code == 200


# -- operations, document, CSV --------------------------------------------------------------------
def test_health_readiness_and_metrics(gw):
    client = Client(gw)
    assert client.get("/healthz").json()["alive"] is True
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    client.get("/api/v1/districts")
    metrics = client.get("/metrics").text
    assert 'kezek_http_requests_total{route="/api/v1/districts",status="200"}' in metrics
    assert 'kezek_http_request_duration_seconds_count{route="/api/v1/districts"}' in metrics
    assert client.get("/").headers["Content-Type"].startswith("text/html")


def test_the_openapi_document_is_served(gw):
    r = Client(gw).get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.0")
    assert "/api/v1/applications/{number}/withdraw" in doc["paths"]
    assert "Error" in doc["components"]["schemas"]


def test_registries_export_csv_with_a_stable_header(gw):
    needs(gw, "registry")
    client = Client(gw)
    district = random_name("nowhere")
    by_param = client.get(f"/api/v1/organizations?district={district}&format=csv")
    by_accept = client.get(
        f"/api/v1/organizations?district={district}", headers={"Accept": "text/csv"}
    )
    for r in (by_param, by_accept):
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/csv")
    assert by_param.text == by_accept.text
    assert by_param.text.splitlines()[0].startswith("id,name,address,district")
    assert by_param.text.count("\n") == 1  # header only: nothing in that district


def test_reference_languages_are_served_by_the_gateway_and_audited(gw):
    needs(gw, "audit")
    client = Client(gw)
    r = client.get("/api/v1/languages")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [item["code"] for item in body["items"]] == ["kk", "ru"]
    assert body["items"][0]["name"] == {"kk": "Қазақ тілі", "ru": "Казахский"}
    assert (body["total"], body["page"]) == (2, 1)
    csv = client.get("/api/v1/languages?format=csv")
    assert csv.text.splitlines()[0] == "code,name.kk,name.ru"
    auditor = staff_client(gw, "auditor")
    rows = wait_for(lambda: (r := audit_rows(gw, auditor, fingerprint=client.fingerprint))
                    and len(r) >= 2 and r, message="audit records")
    assert {row["action"] for row in rows} == {"GET /api/v1/languages"}


def test_the_public_queue_registry_is_kept_a_moment_and_says_so(gw):
    needs(gw, "registry", "audit")
    seconds = float(gw["config"]["KEZEK"]["PUBLIC_CACHE_SECONDS"])
    assert seconds > 0
    client = Client(gw)
    path = f"/api/v1/queue?district={random_name('district')}&page_size=7"
    first, second = client.get(path), client.get(path)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    for r in (first, second):
        assert r.headers["Cache-Control"] == f"public, max-age={seconds:g}"
        assert 0 <= int(r.headers["Age"]) <= seconds
    # the same page kept as JSON still exports as CSV
    csv = client.get(path + "&format=csv")
    assert csv.status_code == 200 and csv.headers["Content-Type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("queue_name,queue_number,application_number")
    assert csv.headers["X-Total-Count"] == str(first.json()["total"])
    # each answer is still its own audited request
    auditor = staff_client(gw, "auditor")
    rows = wait_for(lambda: (r := audit_rows(gw, auditor, fingerprint=client.fingerprint))
                    and len(r) >= 2 and r, message="audit records")
    assert set(client.request_ids) <= {row["request_id"] for row in rows}
    # never a per-child answer, never a signed-in one
    lookup = client.get("/api/v1/queue/lookup?application_number=A999999999")
    assert "Age" not in lookup.headers and "public" not in lookup.headers.get(
        "Cache-Control", "")
    signed_in = applicant_client(gw).get(path)
    assert signed_in.status_code == 200 and signed_in.headers["Cache-Control"] == "no-store"


# -- forwarding to the services -------------------------------------------------------------------
def new_organization(officer, district, **changes):
    body = {
        "name": random_name("Балапан"),
        "address": "Абай 1",
        "district": district,
        "ownership": "state",
        "kind": "kindergarten",
        "languages": ["kk", "ru"],
        "monthly_fee_kzt": 0,
        **changes,
    }
    return officer.post(
        "/api/v1/organizations", body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )


def test_idempotency_key_gives_the_same_result_once(gw):
    needs(gw, "registry")
    officer = staff_client(gw, "officer")
    district = random_name("district")
    key = uuid.uuid4().hex
    body = {
        "name": random_name("Айгөлек"),
        "address": "Абай 2",
        "district": district,
        "ownership": "private",
        "kind": "nursery",
        "languages": ["ru"],
        "monthly_fee_kzt": 50000,
    }
    first = officer.post("/api/v1/organizations", body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    again = officer.post("/api/v1/organizations", body, headers={"Idempotency-Key": key})
    assert again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    listed = Client(gw).get(f"/api/v1/organizations?district={district}").json()
    assert listed["total"] == 1
    other = officer.post(
        "/api/v1/organizations", {**body, "name": "x"}, headers={"Idempotency-Key": key}
    )
    assert_error(other, 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")


def test_an_applicant_files_and_sees_an_application(gw):
    needs(gw, "registry", "applications", "queue")
    from services.applications.domain import make_iin

    officer = staff_client(gw, "officer")
    district = random_name("district")
    org = new_organization(officer, district)
    assert org.status_code == 201, org.text
    org_id = org.json()["id"]
    group = officer.post(
        f"/api/v1/organizations/{org_id}/groups",
        {
            "name": "Ортаңғы топ",
            "group_type": "general",
            "birth_year": BIRTH_DATE.year,
            "language": "kk",
            "capacity": 25,
        },
    )
    assert group.status_code == 201, group.text

    applicant = applicant_client(gw)
    iin = None
    while iin is None:
        try:
            iin = make_iin(BIRTH_DATE, random.choice("MF"), random.randint(0, 9999))
        except ValueError:
            pass
    application = {
        "applicant": {
            "iin": "900101301233",
            "full_name": "Әлия Серікқызы",
            "phone": applicant.phone,
        },
        "child": {
            "iin": iin,
            "full_name": "Айгерім Серікқызы",
            "birth_date": BIRTH_DATE.isoformat(),
        },
        "queue_type": "general",
        "language": "kk",
        "district": district,
        "preferred_organizations": [org_id],
        "desired_start": dt.date(TODAY.year + 1, 9, 1).isoformat(),
        "benefit": None,
    }
    r = applicant.post("/api/v1/applications", application)
    assert r.status_code == 201, r.text
    filed = r.json()
    assert filed["queue_name"].startswith(district)
    number = filed["application_number"]

    mine = applicant.get("/api/v1/applications").json()
    assert [a["application_number"] for a in mine["items"]] == [number]
    assert applicant.get(f"/api/v1/applications/{number}").status_code == 200
    # somebody else's application is not theirs to read
    assert_error(applicant_client(gw).get(f"/api/v1/applications/{number}"), 403)

    row = wait_for(
        lambda: (
            (r := Client(gw).get(f"/api/v1/queue/lookup?application_number={number}")).status_code
            == 200
            and r.json()
        ),
        message="queue lookup",
    )
    assert row["application_number"] == number

    # lookups made at once go to the registry together; each still gets its own answer
    unknown = [f"A-{uuid.uuid4().hex[:10]}" for _ in range(8)]
    asked = [number, *unknown[:4], number, number, *unknown[4:], number]
    pool = eventlet.GreenPool(len(asked))
    answers = list(pool.imap(
        lambda n: Client(gw).get(f"/api/v1/queue/lookup?application_number={n}"), asked))
    for n, r in zip(asked, answers):
        if n == number:
            assert r.status_code == 200, r.text
            same = {k: v for k, v in r.json().items() if k != "republished_at"}
            assert same == {k: v for k, v in row.items() if k != "republished_at"}
        else:
            assert_error(r, 404, "NOT_FOUND", field="application_number")
            assert n in r.json()["error"]["message"]

    # a domain error from a service keeps its code and field
    r = applicant.post(
        "/api/v1/applications",
        {**application, "child": {**application["child"], "iin": "123456789012"}},
    )
    assert r.status_code in (400, 422)
    assert r.json()["error"]["field"] == "child.iin"


def test_a_missing_organisation_is_a_404(gw):
    needs(gw, "registry")
    assert_error(Client(gw).get("/api/v1/organizations/999999999"), 404)


def test_a_service_that_does_not_answer_in_time_is_a_504(gw):
    """A second gateway whose deadline has passed before any service could answer."""
    from nameko.runners import ServiceRunner

    config = copy.deepcopy(gw["config"])
    config["WEB_SERVER_ADDRESS"] = f"127.0.0.1:{free_port()}"
    config["KEZEK"]["RPC_TIMEOUT_SECONDS"] = 0
    runner = ServiceRunner(config)
    runner.add_service(GatewayService)
    runner.start()
    try:
        base = f"http://{config['WEB_SERVER_ADDRESS']}"
        wait_for(lambda: _alive(base), message="second gateway listening")
        client = Client({"base": base, "config": config})
        assert_error(client.get("/api/v1/districts"), 504, "UPSTREAM_TIMEOUT")
        # sign-in needs no other service: it still works
        assert client.post("/api/v1/auth/otp", {"phone": phone()}).status_code == 202
    finally:
        runner.kill()


def test_spent_codes_and_old_idempotency_keys_are_purged(gw):
    from nameko.testing.services import entrypoint_hook

    number, old_key, new_key = phone(), uuid.uuid4().hex, uuid.uuid4().hex
    engine = get_engine(gw["config"]["DB_URL"])
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO gateway.otp_codes (phone, code_hash, created_at, expires_at) "
                "VALUES (:p, 'x', now() - interval '3 hours', now() - interval '3 hours')"
            ),
            {"p": number},
        )
        for key, age in ((old_key, "25 hours"), (new_key, "1 hour")):
            conn.execute(
                text(
                    "INSERT INTO gateway.idempotency_keys "
                    "(scope, key, request_hash, state, created_at) "
                    f"VALUES ('t', :k, 'h', 'done', now() - interval '{age}')"
                ),
                {"k": key},
            )
    container = next(c for c in gw["runner"].containers if c.service_name == "gateway")
    with entrypoint_hook(container, "purge_expired") as purge:
        purge()
    with engine.connect() as conn:
        codes = conn.execute(
            text("SELECT count(*) FROM gateway.otp_codes WHERE phone = :p"), {"p": number}
        ).scalar()
        keys = conn.execute(text("SELECT key FROM gateway.idempotency_keys WHERE scope = 't'"))
        assert codes == 0
        assert {k for (k,) in keys} == {new_key}
