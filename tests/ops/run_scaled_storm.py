"""A release storm against a running system (``make run-scaled`` or ``make run``): how many
places a second the allocation instances turn into directions.

    PYTHONPATH=. .venv/bin/python tests/ops/run_scaled_storm.py --places 300 \\
        --gateway http://127.0.0.1:8000 --gateway http://127.0.0.1:8001

It uses the system's own configuration (config.yaml: database, broker, SMS outbox file). An
officer registers a new kindergarten with one group (its own district, so nothing else
competes), ``--places`` + 20 children are filed for it through the applications service's RPC
``file_application`` (not timed), the queue is waited for, then the group's staff release the
places through the gateways' HTTP API, ``--per-release`` places a request, all at once, spread
over the gateways. Timed from the first release request until no place is left awaiting
allocation (allocation's database) and until the public directions registry lists them all.
Prints the figures and one ``BENCH {json}`` line.
"""

from __future__ import annotations

import eventlet

eventlet.monkey_patch()

import argparse
import datetime as dt
import json
import random
import sys
import time
import uuid

import requests
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import text

import services  # noqa: F401  (psycopg's eventlet-friendly wait function)
from services.applications.domain import make_iin
from services.common.config import load_config
from services.common.db import get_engine
from tests.system import System

OFFICER = {"id": "officer:storm-bench", "role": "officer", "organization_id": None,
           "request_id": None}


def consumers(amqp_uri: str, queue: str) -> int:
    with Connection(amqp_uri, connect_timeout=5) as conn:
        try:
            return conn.default_channel.queue_declare(queue, passive=True).consumer_count
        except Exception:  # noqa: BLE001
            return 0


def children(count: int, year: int) -> list[tuple[str, str]]:
    """(birth date, IIN) pairs, all distinct: days of one year times serials."""
    base, out, serial = random.randint(0, 5000), [], 0
    days = [dt.date(year, 1, 1) + dt.timedelta(days=d) for d in range(180)]
    while len(out) < count:
        day = days[serial % len(days)]
        try:
            out.append((day.isoformat(), make_iin(day, "F", base + serial // len(days))))
        except ValueError:
            pass
        serial += 1
    return out


def parent_iin(n: int) -> str:
    day = dt.date(1990, 1, 1) + dt.timedelta(days=n % 300)
    for serial in range(100 + n // 300, 10000):
        try:
            return make_iin(day, "M", serial)
        except ValueError:
            continue
    raise AssertionError("no IIN")


def wait(predicate, timeout: float, interval: float = 0.05, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out after {timeout}s waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--places", type=int, default=300)
    parser.add_argument("--per-release", type=int, default=10)
    parser.add_argument("--gateway", action="append", default=[])
    parser.add_argument("--concurrency", type=int, default=4, help="release requests at once")
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    gateways = args.gateway or ["http://127.0.0.1:8000"]
    config = load_config()
    engine = get_engine(config["DB_URL"])
    instances = consumers(config["AMQP_URI"], "rpc-allocation")
    print(f"allocation instances consuming: {instances}; gateways: {', '.join(gateways)}")

    system = System(config, gateways[0], None)
    tag = uuid.uuid4().hex[:6]
    district = f"Storm-{tag}"
    year = dt.date.today().year - 3
    officer_phone = "+7708" + "".join(random.choices("0123456789", k=7))
    staff_phone = "+7709" + "".join(random.choices("0123456789", k=7))
    system.add_user("officer", officer_phone)
    officer = system.sign_in(officer_phone, fingerprint=f"storm-{tag}")["session"]
    r = officer.post(system.url("/api/v1/organizations"), json={
        "name": f"Storm kindergarten {tag}", "address": "Almaty, Dostyk 1", "district": district,
        "ownership": "state", "kind": "kindergarten", "languages": ["kk"],
        "monthly_fee_kzt": 0})
    r.raise_for_status()
    org = r.json()["id"]
    r = officer.post(system.url(f"/api/v1/organizations/{org}/groups"), json={
        "name": "Storm group", "group_type": "general", "birth_year": year, "language": "kk",
        "capacity": args.places + 20, "enrolled": 0})
    r.raise_for_status()
    group = r.json()["id"]
    system.add_user("staff", staff_phone, organization_id=org)
    staff = system.sign_in(staff_phone, fingerprint=f"storm-staff-{tag}")

    # the children, filed as an officer files on a parent's behalf (not timed)
    count = args.places + 20
    started = time.monotonic()
    with ClusterRpcProxy(config, timeout=120) as rpc:
        pending = []
        for n, (birth, iin) in enumerate(children(count, year)):
            phone = f"+7705{n:07d}"
            pending.append(rpc.applications.file_application.call_async({
                "applicant": {"iin": parent_iin(n), "full_name": f"Storm Parent {n}", "phone": phone},
                "child": {"iin": iin, "full_name": f"Storm Child {n}", "birth_date": birth},
                "queue_type": "general", "language": "kk", "district": district,
                "preferred_organizations": [org],
                "desired_start": (dt.date.today() + dt.timedelta(days=60)).isoformat(),
                "benefit": None}, OFFICER))
            if len(pending) >= 50:
                for p in pending:
                    p.result()
                pending = []
        for p in pending:
            p.result()

    def queued() -> bool:
        with engine.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM queue.entries WHERE district = :d AND status = 'queued'"),
                {"d": district}).scalar() == count
    wait(queued, 120, 0.2, "every child in the queue")
    print(f"{count} children filed and queued in {time.monotonic() - started:.1f}s")

    # the storm
    releases = [args.per_release] * (args.places // args.per_release)
    if args.places % args.per_release:
        releases.append(args.places % args.per_release)
    token = staff["token"]
    path = f"/api/v1/organizations/{org}/groups/{group}/releases"

    timeouts = []

    def release(i_places):
        i, places = i_places
        r = requests.post(gateways[i % len(gateways)] + path, json={"places": places},
                          headers={"Authorization": f"Bearer {token}",
                                   "X-Device-Fingerprint": f"storm-staff-{tag}"}, timeout=60)
        if r.status_code == 504:
            # the gateway gave up waiting; the release still happens when allocation gets to it
            timeouts.append(i)
            return []
        if r.status_code != 201:
            raise SystemExit(f"release refused: {r.status_code} {r.text}")
        return r.json()["place_ids"]

    pool = eventlet.GreenPool(args.concurrency)
    t0 = time.monotonic()
    released = [p for ids in pool.imap(release, enumerate(releases)) for p in ids]
    t_released = time.monotonic() - t0

    def allocated() -> bool:
        with engine.connect() as conn:
            total, waiting = conn.execute(text(
                "SELECT count(*), count(*) FILTER (WHERE status = 'priority') "
                "FROM allocation.places WHERE organization_id = :o"), {"o": org}).one()
        return total == args.places and waiting == 0
    wait(allocated, 600, 0.02, "every place allocated")
    t_allocated = time.monotonic() - t0

    def published() -> bool:
        r = requests.get(gateways[0] + "/api/v1/directions",
                         params={"organization_id": org, "page_size": 1}, timeout=30)
        return r.status_code == 200 and r.json()["total"] == args.places
    wait(published, 600, 0.1, "every direction in the public registry")
    t_published = time.monotonic() - t0

    with engine.connect() as conn:
        directed = conn.execute(text(
            "SELECT count(*), count(DISTINCT application_number) FROM allocation.directions "
            "WHERE organization_id = :o"), {"o": org}).one()
    ok = tuple(directed) == (args.places, args.places)
    rate = args.places / t_allocated
    print(f"released {args.places} places in {len(releases)} requests in {t_released:.2f}s"
          + (f" ({len(released)} answered; {len(timeouts)} requests answered 504 by the gateway, "
             "released anyway)"
             if timeouts else ""))
    print(f"all allocated after {t_allocated:.2f}s: {rate:.1f} directions/s "
          f"({instances} allocation instance(s))")
    print(f"all in the public directions registry after {t_published:.2f}s: "
          f"{args.places / t_published:.1f} places/s end to end")
    print(f"directions {directed[0]}, children directed {directed[1]}: "
          f"{'one a place, one a child' if ok else 'MISMATCH'}")
    print("BENCH " + json.dumps({
        "workload": "release_storm_scaled", "figure": f"directions_per_s_{instances}_alloc",
        "value": round(rate, 1), "unit": "directions/s", "note": args.label,
        "extra": {"places": args.places, "allocation_instances": instances,
                  "gateways": len(gateways), "gateway_timeouts": len(timeouts), "released_s": round(t_released, 2),
                  "allocated_s": round(t_allocated, 2), "published_s": round(t_published, 2)}}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
