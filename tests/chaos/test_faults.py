"""The fault test (issue 9): the system as separate processes (queue and allocation twice each,
two gateways), a stream of applications and a storm of place releases over HTTP, and meanwhile
service processes killed with SIGKILL at random and started again. Once the storm is over and
the system has settled, nothing a client was told succeeded may be missing, and nothing may be
there twice.

Size and faults come from the environment (`make chaos` sets the long version):

- ``KEZEK_CHAOS_SECONDS`` (default 20): how long the storm lasts;
- ``KEZEK_CHAOS_KILL_EVERY`` (default 2.5): mean seconds between two kills;
- ``KEZEK_CHAOS_INFRA=1``: also restart RabbitMQ once and PostgreSQL once during the storm.

The short version in `make test` kills service processes only. RabbitMQ and PostgreSQL are
shared by everything on the machine, and restarting them would break any other test run going on
at the same time (other developers' suites); `make chaos` does it, and in CI it runs on its own.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import text

from services.common import ledger
from services.common.db import DatabaseAccess, get_engine
from services.gateway import accounts
from tests.chaos import harness
from tests.chaos.harness import Client, Cluster, log
from tests.conftest import destroy_isolated_config, make_isolated_config

STORM_SECONDS = float(os.environ.get("KEZEK_CHAOS_SECONDS", "20"))
KILL_EVERY = float(os.environ.get("KEZEK_CHAOS_KILL_EVERY", "2.5"))
INFRA = os.environ.get("KEZEK_CHAOS_INFRA") == "1"
ORGANIZATIONS = 6
PARENTS = 8
FILERS = 3
RELEASERS = 2
BIRTH_YEAR = dt.date.today().year - 3


@pytest.fixture
def cluster(tmp_path, request):
    config = make_isolated_config()
    # nine processes share PostgreSQL's 100 connections with whatever else runs on the machine
    config.update({"DB_POOL_SIZE": 3, "DB_MAX_OVERFLOW": 5})
    config["KEZEK"].update({
        # every client is 127.0.0.1 here: the abuse limits are tested elsewhere
        "RATE_LIMIT_PER_MINUTE": 1_000_000,
        "RATE_BURST": 1_000_000,
        "RPC_TIMEOUT_SECONDS": 5,
        "ALLOCATION_TIMER_SECONDS": 1,
        "OUTBOX_POLL_SECONDS": 0.2,
    })
    cluster = Cluster(config, tmp_path)
    try:
        cluster.start_all()
        yield cluster
    finally:
        cluster.stop_all()
        failed = getattr(getattr(request.node, "kezek_call", None), "failed", True)
        if failed:
            kept = harness.ROOT / "test-artifacts" / "chaos" / config["KEZEK_TEST_TAG"]
            shutil.copytree(tmp_path, kept, ignore=shutil.ignore_patterns("*.yaml"))
            log(f"the failed run's service logs are in {kept}")
        destroy_isolated_config(config)


def test_nothing_is_lost_or_doubled_while_processes_die(cluster):
    config = cluster.config
    engine = get_engine(config["DB_URL"])
    base = cluster.gateways[0]
    started = time.monotonic()

    # -- the region: organisations with one big group each, their staff, parents ---------------
    officer_phone = harness.new_phone()
    accounts.add_user(DatabaseAccess(engine, "gateway"), "officer", officer_phone)
    officer = Client(cluster.gateways, harness.sign_in(config, base, officer_phone))
    district = f"Chaos-{random.randint(0, 10**6)}"
    organizations = []
    for n in range(ORGANIZATIONS):
        org = officer.call("setup", "POST", "/api/v1/organizations", {
            "name": f"Балабақша №{n + 1}", "address": f"Абай {n + 1}", "district": district,
            "ownership": "state", "kind": "kindergarten", "languages": ["kk"],
            "monthly_fee_kzt": 0})
        assert org.status == 201, org.body
        group = officer.call("setup", "POST", f"/api/v1/organizations/{org.body['id']}/groups", {
            "name": "Ортаңғы топ", "group_type": "general", "birth_year": BIRTH_YEAR,
            "language": "kk", "capacity": 1000, "enrolled": 0})
        assert group.status == 201, group.body
        staff_phone = harness.new_phone()
        accounts.add_user(DatabaseAccess(engine, "gateway"), "staff", staff_phone,
                          org.body["id"])
        staff = Client(cluster.gateways, harness.sign_in(config, base, staff_phone))
        organizations.append((org.body["id"], group.body["id"], staff))
    parents = []
    for _ in range(PARENTS):
        phone = harness.new_phone()
        parents.append((phone, Client(cluster.gateways, harness.sign_in(config, base, phone))))
    children = harness.Children(BIRTH_YEAR)
    log(f"region ready in {time.monotonic() - started:.1f}s: {ORGANIZATIONS} organisations, "
        f"{PARENTS} parents")

    # -- the storm ----------------------------------------------------------------------------
    outcomes: list[harness.Outcome] = []
    stop = threading.Event()
    infra_restarts: list[str] = []
    crashed: list[str] = []

    def file_applications():
        while not stop.is_set():
            phone, parent = random.choice(parents)
            iin, birth = children.next()
            preferred = random.sample([o[0] for o in organizations], random.randint(1, 2))
            outcomes.append(parent.call("file", "POST", "/api/v1/applications", {
                "applicant": {"iin": "900101301233", "full_name": "Серікбаев Болат Ерланұлы",
                              "phone": phone},
                "child": {"iin": iin, "full_name": "Серікбаев Алихан Болатұлы",
                          "birth_date": birth.isoformat()},
                "queue_type": "general", "language": "kk", "district": district,
                "preferred_organizations": preferred,
                "desired_start": dt.date(BIRTH_YEAR + 5, 9, 1).isoformat(),
                "benefit": None}))
            time.sleep(random.uniform(0.05, 0.3))

    def release_places():
        while not stop.is_set():
            org_id, group_id, staff = random.choice(organizations)
            outcomes.append(staff.call(
                "release", "POST", f"/api/v1/organizations/{org_id}/groups/{group_id}/releases",
                {"places": random.randint(1, 2)}))
            time.sleep(random.uniform(0.2, 0.6))

    def wreak_havoc():
        infra_at = {"rabbitmq": STORM_SECONDS / 3, "postgresql": 2 * STORM_SECONDS / 3}
        storm_started = time.monotonic()
        while not stop.is_set():
            if stop.wait(random.uniform(0.5, 1.5) * KILL_EVERY):
                break
            # a process that ended by itself is started again, as a restart policy would
            crashed.extend(cluster.restart_dead())
            victim = random.choice([i for i in cluster.instances if i.alive()])
            cluster.kill(victim)
            stop.wait(random.uniform(0.2, 2.0))
            cluster.start(victim)
            elapsed = time.monotonic() - storm_started
            for what, at in list(infra_at.items()):
                if INFRA and elapsed >= at:
                    del infra_at[what]
                    took = (harness.restart_rabbitmq() if what == "rabbitmq"
                            else harness.restart_postgresql())
                    infra_restarts.append(f"{what} restarted in {took:.1f}s")
                    log(infra_restarts[-1])

    workers = ([threading.Thread(target=file_applications) for _ in range(FILERS)]
               + [threading.Thread(target=release_places) for _ in range(RELEASERS)])
    havoc = threading.Thread(target=wreak_havoc)
    for t in workers + [havoc]:
        t.start()
    time.sleep(STORM_SECONDS)
    stop.set()
    havoc.join()
    for t in workers:
        t.join()
    crashed.extend(cluster.restart_dead())
    log(f"storm over after {STORM_SECONDS:.0f}s: {cluster.kills} processes killed, "
        f"{len(outcomes)} requests answered")

    # -- settle -----------------------------------------------------------------------------------
    took = harness.wait_until_settled(engine, config["KEZEK_VHOST"], timeout=180)
    log(f"settled in {took:.1f}s")

    # no service process may end by itself (nameko kills a service whose reply cannot be sent)
    assert not crashed, f"processes that exited by themselves: {crashed}"

    # -- what the clients were told -------------------------------------------------------------
    filed = [o for o in outcomes if o.kind == "file" and o.ok]
    released = [o for o in outcomes if o.kind == "release" and o.ok]
    refused = Counter((o.kind, o.status, _code(o)) for o in outcomes if not o.ok)
    # a client that never got an answer in 90 s of retries: the system was not serving
    assert not [o for o in outcomes if o.status is None or o.status >= 500], refused
    # nothing else may be refused: every application and release here is valid
    assert not refused, refused
    assert filed and released
    numbers = [o.body["application_number"] for o in filed]
    place_ids = [p for o in released for p in o.body["place_ids"]]
    assert len(set(numbers)) == len(numbers), "two answers named the same application"
    assert len(set(place_ids)) == len(place_ids), "two answers named the same place"

    with engine.connect() as conn:
        def column(sql, **params):
            return [r[0] for r in conn.execute(text(sql), params)]

        # -- every success is in the current state, in the ledger, in the audit log ----------
        stored = set(column("SELECT number FROM applications.applications"))
        assert set(numbers) <= stored, set(numbers) - stored
        journal = Counter(column(
            "SELECT stream FROM applications.journal WHERE kind = 'application_filed'"))
        assert {f"application:{n}" for n in numbers} <= set(journal)
        queued = set(column("SELECT application_number FROM queue.entries"))
        assert stored <= queued, stored - queued
        places = set(column("SELECT place_id::text FROM allocation.places"))
        assert set(place_ids) <= places, set(place_ids) - places
        released_journal = Counter(column(
            "SELECT data->>'place_id' FROM allocation.journal WHERE kind = 'place_released' "
            "AND data->>'release_kind' = 'staff'"))
        assert set(place_ids) <= set(released_journal)

        answered = {o.request_ids[-1]: o for o in filed + released}
        # the gateway's record of the request (system actions it caused share its request id)
        audited = dict(conn.execute(text(
            "SELECT request_id, outcome FROM audit.audit_log "
            "WHERE request_id = ANY(:ids) AND role <> 'system'"),
            {"ids": list(answered)}).all())
        missing = set(answered) - set(audited)
        assert not missing, f"{len(missing)} answered requests are not in the audit log"
        assert all(audited[r].startswith("20") for r in answered), audited

        # -- nothing twice ---------------------------------------------------------------------
        assert max(journal.values()) == 1, "an application was filed twice in the ledger"
        assert max(released_journal.values()) == 1, "a place was released twice in the ledger"
        # one application per child (each child was filed once, with one Idempotency-Key)
        per_child = Counter(column("SELECT child_iin FROM applications.applications"))
        assert max(per_child.values()) == 1
        # at most one open direction per place and per child
        open_directions = conn.execute(text(
            "SELECT d.place_id::text, d.application_number, a.child_iin "
            "FROM allocation.directions d "
            "JOIN applications.applications a ON a.number = d.application_number "
            "WHERE d.status = 'issued'")).all()
        assert open_directions, "no place was allocated: the storm proved nothing"
        for index, what in ((0, "place"), (2, "child")):
            doubled = [k for k, n in Counter(r[index] for r in open_directions).items() if n > 1]
            assert not doubled, f"{what}s with two open directions: {doubled}"

        # -- the services agree with each other ---------------------------------------------
        issued = {(r[0], r[1]) for r in open_directions}
        reserved = set(conn.execute(text(
            "SELECT place_id, application_number FROM queue.reservations "
            "WHERE status = 'open'")).all())
        assert reserved == issued, (reserved - issued, issued - reserved)
        offered = set(column("SELECT application_number FROM queue.entries "
                             "WHERE status = 'offered'"))
        assert offered == {r[1] for r in open_directions}
        offered_here = set(column("SELECT number FROM applications.applications "
                                  "WHERE status = 'offered'"))
        assert offered_here == offered
        # every released place was allocated or opened as a vacancy, none is stuck
        statuses = Counter(column("SELECT status FROM allocation.places"))
        assert set(statuses) <= {"directed", "vacancy"}, statuses
        assert statuses["directed"] == len(open_directions)

    # -- the ledgers' hash chains ----------------------------------------------------------------
    for schema in harness.SCHEMAS:
        with engine.begin() as conn:
            chain = ledger.verify(conn, schema)
        assert chain["ok"], (schema, chain)
    from services.audit import commands as audit_commands

    chain = audit_commands.verify(DatabaseAccess(engine, "audit"))
    assert chain["ok"], chain

    # -- the dead-letter queue is empty, the registries match their sources ------------------
    dlq = kezek(cluster, "dlq", "list")
    assert dlq.returncode == 0, dlq.stderr
    assert dlq.stdout.strip().endswith("0 dead-lettered message(s)"), dlq.stdout
    reconcile = kezek(cluster, "registry", "reconcile", "--settle", "5")
    assert reconcile.returncode == 0, reconcile.stdout + reconcile.stderr
    assert "0 differences" in reconcile.stdout, reconcile.stdout

    requests_made = officer.requests + sum(c.requests for _, c in parents) + sum(
        o[2].requests for o in organizations)
    log(f"{cluster.kills} processes killed (SIGKILL) and restarted"
        + (f"; {', '.join(infra_restarts)}" if infra_restarts else ""))
    log(f"{requests_made} HTTP requests made; {len(filed)} applications filed, "
        f"{len(released)} releases ({len(place_ids)} places), "
        f"{len(open_directions)} directions issued, {statuses['vacancy']} vacancies")
    log(f"nothing lost, nothing doubled: every answered request is in the ledger and the "
        f"audit log, no place or child has two open directions, the dead-letter queue is "
        f"empty, the registries match their sources, every hash chain verifies "
        f"({time.monotonic() - started:.0f}s in all)")
    if INFRA:
        assert len(infra_restarts) == 2, infra_restarts


def _code(outcome) -> str | None:
    body = outcome.body
    return body.get("error", {}).get("code") if isinstance(body, dict) else None


def kezek(cluster: Cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "--config", str(cluster.config_file), *args],
        cwd=str(harness.ROOT), capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(harness.ROOT)})
