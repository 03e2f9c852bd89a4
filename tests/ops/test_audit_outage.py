"""Issue #6: 10,000 requests of mixed kinds through the gateway while the audit service is stopped
and restarted twice (once with SIGTERM, once with SIGKILL); afterwards the audit log holds exactly
10,000 records for them, none twice, the hash chain is intact and nothing was dead-lettered.

Every service is its own ``nameko run`` process (tests/ops/conftest.py). The gateway publishes one
audit record per request to the durable quorum queue ``kezek.audit`` with confirms, so while the
audit service is down the records wait in the queue and no request should notice. The requests
run 16 at a time; the outages are tied to progress (how many requests were answered), not to the
clock, and the request feed waits at a few points for the outage to have happened, so on a slow
machine the same requests still meet the same outages.

Each request carries this run's User-Agent; the gateway answers with the request id it wrote into
the record (X-Request-Id), so "their" records are those with this user agent, and each must carry
one of the request ids we were given, once.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

import eventlet
import requests
import urllib3
from eventlet.event import Event
from kombu import Connection
from sqlalchemy import text

from services.applications.domain import make_iin
from services.common.amqp import AUDIT_QUEUE, DLQ
from services.common.db import DatabaseAccess, get_engine
from tests.conftest import destroy_isolated_config
from tests.helpers import wait_for
from tests.ops.conftest import Cluster, cluster_config, consumers
from tests.system import System

REQUESTS = 10_000
IN_FLIGHT = 16
SERVICES = ("registry", "applications", "queue", "audit", "gateway")
# the outages, by requests answered: SIGTERM at 1,000 and back at 4,000; SIGKILL once the
# restarted service has stored a part of the backlog, back at 8,000
STOP_AT, START_AT, RESTART_AT = 1_000, 4_000, 8_000
# the feed of requests waits here until the step before it has happened
GATE_STOPPED, GATE_STARTED, GATE_KILLED, GATE_RESTARTED = 2_500, 4_500, 6_500, 9_000
NO_LIMITS = {"RATE_LIMIT_PER_MINUTE": 100_000_000, "RATE_BURST": 10_000_000,
             "BLOCK_AFTER_EXCESSES": 10_000_000}


def queue_depth(amqp_uri: str, queue: str) -> int:
    """Ready messages in a queue (unacknowledged deliveries are not counted)."""
    with Connection(amqp_uri, connect_timeout=5) as conn:
        return conn.default_channel.queue_declare(queue, passive=True).message_count


def child_iins(birth: dt.date, n: int) -> list[str]:
    """``n`` distinct valid IINs for children born on ``birth``."""
    out = []
    for serial, sex in itertools.product(range(10_000), "MF"):
        try:
            out.append(make_iin(birth, sex, serial))
        except ValueError:
            continue
        if len(out) == n:
            return out
    raise AssertionError("not enough IINs")


class Mix:
    """The kinds of request, one after another by request number; each says whose token to
    send, what to send and what status to expect.

    Half of them are answered by a service behind the gateway (public registry reads,
    queue-number lookups, applications filed and read by their owner, an officer and staff);
    the other half the gateway answers itself (sign-in codes, refusals: 400, 401, 403, 404,
    405). Each costs the audit log the same one record; the cheap ones keep the run short.
    """

    def __init__(self, org: dict, district: str, birth: dt.date, number: str,
                 filer_phone: str, filer_iin: str):
        self.org, self.district, self.birth, self.number = org, district, birth, number
        self.filer_phone, self.filer_iin = filer_phone, filer_iin
        self.kinds = [
            ("organizations", self.organizations, 200),
            ("organization", self.organization, 200),
            ("queue lookup", self.queue_lookup, 200),
            ("queue lookup, unknown number", self.queue_lookup_unknown, 404),
            ("districts", self.districts, 200),
            ("statistics", self.statistics, 200),
            ("queue registry", self.queue_registry, 200),
            ("organizations, second page", self.organizations_page, 200),
            ("sign-in code", self.sign_in_code, 202),
            ("file application", self.file_application, 201),
            ("application read (owner, officer, staff)", self.application_read, 200),
            ("sign-in code, bad phone", self.sign_in_code_bad, 400),
            ("sign-in code, not JSON", self.sign_in_code_not_json, 400),
            ("organizations, bad page size", self.bad_page_size, 400),
            ("queue lookup, no number", self.queue_lookup_no_number, 400),
            ("own applications, no token", self.no_token, 401),
            ("create organisation, staff", self.create_organization, 403),
            ("stop-list, applicant", self.stop_list_by_applicant, 403),
            ("unknown path", self.unknown_path, 404),
            ("wrong method", self.wrong_method, 405),
        ]
        filings = sum(1 for i in range(REQUESTS)
                      if self.kinds[i % len(self.kinds)][1] == self.file_application)
        self.children = iter(child_iins(birth, filings))

    def __call__(self, i: int):
        """(kind, whose token or None, method, path with query, JSON body or raw bytes or None,
        expected status) of request number ``i``."""
        name, build, expected = self.kinds[i % len(self.kinds)]
        who, method, path, body = build(i)
        return name, who, method, path, body, expected

    @staticmethod
    def get(path: str, who: str | None = None, **query):
        return who, "GET", path + ("?" + urlencode(query) if query else ""), None

    def organizations(self, i):
        return self.get("/api/v1/organizations", district=self.district)

    def organizations_page(self, i):
        return self.get("/api/v1/organizations", page=2, page_size=5)

    def organization(self, i):
        return self.get(f"/api/v1/organizations/{self.org['id']}")

    def queue_lookup(self, i):
        return self.get("/api/v1/queue/lookup", application_number=self.number)

    def queue_lookup_unknown(self, i):
        return self.get("/api/v1/queue/lookup", application_number="A999999999")

    def queue_lookup_no_number(self, i):
        return self.get("/api/v1/queue/lookup")

    def districts(self, i):
        return self.get("/api/v1/districts")

    def statistics(self, i):
        return self.get("/api/v1/statistics", district=self.district)

    def queue_registry(self, i):
        return self.get("/api/v1/queue", district=self.district, page_size=5)

    def sign_in_code(self, i):
        return None, "POST", "/api/v1/auth/otp", {"phone": f"+7708{i:07d}"}

    def sign_in_code_bad(self, i):
        return None, "POST", "/api/v1/auth/otp", {"phone": f"not a phone {i}"}

    def sign_in_code_not_json(self, i):
        return None, "POST", "/api/v1/auth/otp", b'{"phone": '

    def bad_page_size(self, i):
        return self.get("/api/v1/organizations", page_size="many")

    def application_read(self, i):
        # the owner's list and feed, one application as an officer and as the staff of the
        # organisation it names
        turn = (i // len(self.kinds)) % 4
        if turn == 0:
            return self.get("/api/v1/applications", "reader")
        if turn == 1:
            return self.get("/api/v1/me/events", "reader", page_size=5)
        return self.get(f"/api/v1/applications/{self.number}", ("officer", "staff")[turn - 2])

    def no_token(self, i):
        return self.get("/api/v1/applications")

    def file_application(self, i):
        return "filer", "POST", "/api/v1/applications", application_body(
            self.filer_iin, self.filer_phone, next(self.children), self.birth, self.district,
            self.org["id"])

    def create_organization(self, i):
        return "staff", "POST", "/api/v1/organizations", organization_body(self.district)

    def stop_list_by_applicant(self, i):
        return ("filer", "POST", f"/api/v1/applications/{self.number}/stop-list",
                {"reason": "documents_check", "until": None})

    def unknown_path(self, i):
        return self.get(f"/api/v1/no-such-thing/{i}")

    def wrong_method(self, i):
        return None, "DELETE", "/api/v1/districts", None


def application_body(parent_iin, parent_phone, child_iin, birth, district, org_id) -> dict:
    return {
        "applicant": {"iin": parent_iin, "full_name": "Серікбаев Болат Ерланұлы",
                      "phone": parent_phone},
        "child": {"iin": child_iin, "full_name": "Серікбаев Алихан Болатұлы",
                  "birth_date": birth.isoformat()},
        "queue_type": "general", "language": "kk", "district": district,
        "preferred_organizations": [org_id],
        "desired_start": (dt.date.today() + dt.timedelta(days=60)).isoformat(),
        "benefit": None,
    }


def organization_body(district: str) -> dict:
    return {"name": "Балабақша (audit outage)", "address": "Алматы, Абая 1",
            "district": district, "ownership": "state", "kind": "kindergarten",
            "languages": ["kk"], "monthly_fee_kzt": 0}


def set_up_data(system: System) -> tuple[Mix, dict[str, str]]:
    """An organisation with a group, an officer, a staff member, a parent with one filed
    application (visible in the queue registry) who reads their applications and feed, and a
    parent who files the run's applications; returns the mix and each one's token.

    Reading and filing are two parents: listing one's applications asks the queue service
    about each of them, and a parent with hundreds would measure that, not the audit log.
    """
    district = f"Outage-{uuid.uuid4().hex[:6]}"
    birth = dt.date.today().replace(day=1) - dt.timedelta(days=3 * 365)
    officer_phone, staff_phone = "+77090000001", "+77090000002"
    parent_phone, filer_phone = "+77090000003", "+77090000004"
    system.add_user("officer", officer_phone)
    officer = system.sign_in(officer_phone, fingerprint="setup")
    r = officer["session"].post(system.url("/api/v1/organizations"),
                                json=organization_body(district), timeout=30)
    assert r.status_code == 201, r.text
    org = r.json()
    r = officer["session"].post(system.url(f"/api/v1/organizations/{org['id']}/groups"), json={
        "name": "Ортаңғы топ", "group_type": "general", "birth_year": birth.year,
        "language": "kk", "capacity": 25, "enrolled": 10}, timeout=30)
    assert r.status_code == 201, r.text
    system.add_user("staff", staff_phone, organization_id=org["id"])
    staff = system.sign_in(staff_phone, fingerprint="setup")
    parent = system.sign_in(parent_phone, fingerprint="setup")
    filer = system.sign_in(filer_phone, fingerprint="setup")
    parent_iin = make_iin(dt.date(1990, 5, 17), "M", 123)
    # the setup's own child is born a day earlier than the run's children: no IIN in common
    setup_birth = birth - dt.timedelta(days=1)
    r = parent["session"].post(system.url("/api/v1/applications"), json=application_body(
        parent_iin, parent_phone, child_iins(setup_birth, 1)[0], setup_birth, district,
        org["id"]), timeout=30)
    assert r.status_code == 201, r.text
    number = r.json()["application_number"]
    wait_for(lambda: requests.get(system.url("/api/v1/queue/lookup"),
                                  params={"application_number": number},
                                  timeout=10).status_code == 200,
             timeout=60, interval=0.2, message="the setup's application in the queue registry")
    mix = Mix(org, district, birth, number, filer_phone,
              make_iin(dt.date(1991, 6, 18), "F", 321))
    tokens = {"officer": officer["token"], "staff": staff["token"], "reader": parent["token"],
              "filer": filer["token"]}
    return mix, tokens


def run_records(engine, user_agent: str) -> list[tuple[str, str]]:
    """(request id, record id) of every record the gateway stored for this run."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT request_id, id FROM audit.audit_log "
                                 "WHERE user_agent = :ua AND service = 'gateway'"),
                            {"ua": user_agent}).all()
    return [(r.request_id, str(r.id)) for r in rows]


def count_run_records(engine, user_agent: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit.audit_log "
                                     "WHERE user_agent = :ua AND service = 'gateway'"),
                                {"ua": user_agent}).scalar())


def test_audit_log_keeps_every_request_across_two_audit_outages(tmp_path):
    config = cluster_config(**NO_LIMITS)
    cluster = Cluster(config, tmp_path)
    engine = get_engine(config["DB_URL"])
    try:
        for service in SERVICES:
            cluster.start(service)
        cluster.wait_ready(SERVICES, timeout=120)
        system = System(config, cluster.base_url, cluster.logs["gateway"])
        mix, tokens = set_up_data(system)

        user_agent = f"kezek-audit-outage/{uuid.uuid4().hex}"
        answers: dict[int, tuple[str, int, int, str | None]] = {}
        failures: list[str] = []
        # urllib3 rather than requests: the client shares two cores with five services, and
        # requests spends about twice the CPU per call
        host, port = cluster.base_url.removeprefix("http://").split(":")
        http = urllib3.HTTPConnectionPool(host, int(port), maxsize=IN_FLIGHT, block=True,
                                          retries=False, timeout=60)

        def one(i: int) -> None:
            name, who, method, path, body, expected = mix(i)
            headers = {"User-Agent": user_agent, "X-Device-Fingerprint": f"outage-{i % 50}"}
            if who is not None:
                headers["Authorization"] = f"Bearer {tokens[who]}"
            if isinstance(body, dict):
                body = json.dumps(body).encode()
            if body is not None:
                headers["Content-Type"] = "application/json"
            try:
                r = http.request(method, path, body=body, headers=headers)
                answers[i] = (name, expected, r.status, r.headers.get("X-Request-Id"))
            except Exception as exc:  # noqa: BLE001 - reported below: its record is unknowable
                failures.append(f"request {i} ({name}): {exc!r}")

        # -- the outages, tied to progress -------------------------------------------------------
        stopped, started, killed, restarted = Event(), Event(), Event(), Event()
        gates = {GATE_STOPPED: stopped, GATE_STARTED: started, GATE_KILLED: killed,
                 GATE_RESTARTED: restarted}
        outages: list[str] = []

        def answered(n: int):
            return lambda: len(answers) + len(failures) >= n

        def audit_consuming():
            cluster.alive("audit")
            return consumers(config["AMQP_URI"], AUDIT_QUEUE) >= 1

        def controller() -> None:
            try:
                wait_for(answered(STOP_AT), timeout=600, interval=0.05, message="requests")
                code = cluster.stop("audit")
                outages.append(f"SIGTERM at {len(answers)} answered: exit code {code}")
                stopped.send(True)

                wait_for(answered(START_AT), timeout=600, interval=0.05, message="requests")
                cluster.start("audit")
                wait_for(audit_consuming, timeout=120, interval=0.1, message="audit back")
                outages.append(f"started again at {len(answers)} answered, backlog "
                               f"{queue_depth(config['AMQP_URI'], AUDIT_QUEUE)}")
                started.send(True)

                # kill it while it works through the backlog: once it has stored some of it
                before = count_run_records(engine, user_agent)
                wait_for(lambda: count_run_records(engine, user_agent) > before,
                         timeout=120, interval=0.01, message="audit storing the backlog")
                proc = cluster.procs.pop("audit")
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                outages.append(f"SIGKILL at {len(answers)} answered, backlog "
                               f"{queue_depth(config['AMQP_URI'], AUDIT_QUEUE)}")
                killed.send(True)

                wait_for(answered(RESTART_AT), timeout=600, interval=0.05, message="requests")
                cluster.start("audit")
                wait_for(audit_consuming, timeout=120, interval=0.1, message="audit back")
                outages.append(f"started again at {len(answers)} answered")
                restarted.send(True)
            except BaseException as exc:  # noqa: BLE001 - the feed must not wait forever
                for gate in gates.values():
                    if not gate.ready():
                        gate.send_exception(exc)
                raise

        control = eventlet.spawn(controller)
        pool = eventlet.GreenPool(IN_FLIGHT)
        for i in range(REQUESTS):
            if i in gates:
                gates[i].wait()
            pool.spawn_n(one, i)
        pool.waitall()
        http.close()
        control.wait()

        # -- every request answered as its kind is answered, none by "audit unavailable" --------
        assert not failures, failures[:5]
        assert len(answers) == REQUESTS
        wrong = Counter((name, expected, status) for name, expected, status, _ in
                        answers.values() if status != expected)
        assert not wrong, (wrong, cluster.log_text("gateway")[-3000:])
        request_ids = [rid for *_, rid in answers.values()]
        assert None not in request_ids
        assert len(set(request_ids)) == REQUESTS

        # -- the log holds exactly one record for each of them ----------------------------------
        def all_stored():
            cluster.alive("audit")
            return (count_run_records(engine, user_agent) >= REQUESTS
                    and queue_depth(config["AMQP_URI"], AUDIT_QUEUE) == 0)

        try:
            wait_for(all_stored, timeout=180, interval=0.5, message="10,000 records stored")
        except AssertionError:
            pass  # the assertions below say what is missing
        stored = run_records(engine, user_agent)
        by_request = Counter(rid for rid, _ in stored)
        twice = [rid for rid, n in by_request.items() if n > 1]
        assert not twice, f"{len(twice)} request(s) recorded more than once: {twice[:5]}"
        assert len(stored) == REQUESTS, (len(stored), outages)
        assert set(by_request) == set(request_ids)
        assert len({record_id for _, record_id in stored}) == REQUESTS

        # -- the chain is intact (`kezek audit verify`) and nothing was dead-lettered -----------
        from services.audit import commands

        result = commands.verify(DatabaseAccess(engine, "audit"))
        assert result["ok"], result
        cli = subprocess.run([str(Path(sys.executable).parent / "kezek"), "--config",
                              str(cluster.config_path), "audit", "verify"],
                             capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert queue_depth(config["AMQP_URI"], DLQ) == 0
        assert "audit record dead-lettered" not in "".join(
            cluster.log_text(label) for label in cluster.logs)
        print("outages:", "; ".join(outages))
    finally:
        cluster.stop_all()
        Path(config["KEZEK"]["SMS_OUTBOX"]).unlink(missing_ok=True)
        destroy_isolated_config(config)
