"""One winner under load: three allocation instances and two queue instances, each its own
`nameko run` process, allocate 500 places released at once among 1,000 eligible children.

The guarantees come from the database (inbox rows, locked place rows, unique indexes on open
directions and open reservations, SKIP LOCKED candidate picking), so the outcome must be exact:
500 directions, to the 500 children first in the queue, one per place and one per child, and
every place_released event handled exactly once.
"""

import copy
import datetime as dt
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import text

from tests.helpers import random_name, wait_for

ROOT = Path(__file__).resolve().parents[2]
NAMEKO = str(Path(sys.executable).with_name("nameko"))
OFFICER = {"id": "officer:+77010000009", "role": "officer", "organization_id": None,
           "request_id": None}
T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
GROUPS, RELEASES_PER_GROUP, PLACES_PER_RELEASE, CHILDREN = 5, 10, 10, 1000
PLACES = GROUPS * RELEASES_PER_GROUP * PLACES_PER_RELEASE


def consumers(amqp_uri: str, queue: str) -> int:
    with Connection(amqp_uri) as conn:
        try:
            return conn.default_channel.queue_declare(queue, passive=True).consumer_count
        except Exception:  # noqa: BLE001 - not declared yet: nobody consumes it
            return 0


@pytest.fixture
def processes(kezek_config, tmp_path):
    """Start ``nameko run`` processes: ``processes("services.queue.service:QueueService", 2)``."""
    cfg = copy.deepcopy(kezek_config)
    cfg["max_workers"] = 6
    cfg["KEZEK"].update({"ALLOCATION_TIMER_SECONDS": 1, "RPC_TIMEOUT_SECONDS": 30})
    cfg["LOGGING"]["root"]["level"] = "WARNING"
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started: list[subprocess.Popen] = []

    def start(service: str, count: int) -> None:
        for i in range(count):
            log = open(tmp_path / f"{service.rsplit(':', 1)[1]}-{i}.log", "w")
            started.append(subprocess.Popen(
                [NAMEKO, "run", "--config", str(cfg_path), service],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_500_places_released_at_once_get_500_directions_one_per_child(
        kezek_config, processes, db_engine):
    amqp = kezek_config["AMQP_URI"]
    processes("services.allocation.service:AllocationService", 3)
    processes("services.queue.service:QueueService", 2)
    processes("services.registry.service:RegistryService", 1)
    wait_for(lambda: consumers(amqp, "rpc-allocation") == 3
             and consumers(amqp, "rpc-queue") == 2 and consumers(amqp, "rpc-registry") == 1,
             timeout=90, interval=0.2, message="six service processes up")

    tag = uuid.uuid4().hex[:6].upper()
    district = random_name("district")
    with ClusterRpcProxy(kezek_config, timeout=60) as rpc:
        org = rpc.registry.create_organization({
            "name": random_name("Race"), "address": "Dostyk 5", "district": district,
            "ownership": "state", "kind": "kindergarten", "languages": ["kk"],
            "monthly_fee_kzt": 0}, OFFICER)["id"]
        groups = [rpc.registry.add_group(org, {
            "name": f"group {g}", "group_type": "general", "birth_year": 2022, "language": "kk",
            "capacity": RELEASES_PER_GROUP * PLACES_PER_RELEASE, "enrolled": 0}, OFFICER)["id"]
            for g in range(GROUPS)]
        numbers = [f"RC{tag}-{n:05d}" for n in range(CHILDREN)]  # queue order: filed_at
        replies = [rpc.queue.enqueue.call_async({
            "application_number": number, "applicant_name": f"Applicant {n}",
            "child_name": f"Child {n}", "child_birth_date": "2022-04-01", "birth_year": 2022,
            "queue_type": "general", "language": "kk", "district": district,
            "preferred_organizations": [org], "desired_start": "2026-09-01",
            "filed_at": (T0 + dt.timedelta(seconds=n)).isoformat(), "benefit": None,
            "current_organization_id": None, "current_group_id": None,
            "applicant_id": f"applicant:+7702{n:07d}"}) for n, number in enumerate(numbers)]
        assert all(r.result()["status"] == "queued" for r in replies)

        staff = {"id": f"staff:{tag}", "role": "staff", "organization_id": org,
                 "request_id": None}
        releases = [rpc.allocation.release_places.call_async(org, group, PLACES_PER_RELEASE,
                                                             staff)
                    for _ in range(RELEASES_PER_GROUP) for group in groups]
        place_ids = [p for r in releases for p in r.result()["place_ids"]]
    assert len(set(place_ids)) == PLACES

    def count(sql: str, **params) -> int:
        with db_engine.connect() as conn:
            return conn.execute(text(sql), {"places": place_ids, **params}).scalar()

    in_places = "place_id = ANY(CAST(:places AS uuid[]))"
    wait_for(lambda: count(f"SELECT count(*) FROM allocation.places WHERE {in_places} "
                           "AND status = 'priority'") == 0,
             timeout=180, interval=0.5, message="every place allocated")

    with db_engine.connect() as conn:
        directions = conn.execute(text(
            f"SELECT number, place_id, application_number, status FROM allocation.directions "
            f"WHERE {in_places}"), {"places": place_ids}).all()
        statuses = dict(conn.execute(text(
            f"SELECT status, count(*) FROM allocation.places WHERE {in_places} GROUP BY status"),
            {"places": place_ids}).all())
        released_events = conn.execute(text(
            "SELECT payload->>'event_id' FROM allocation.outbox WHERE routing_key = "
            "'place_released' AND payload->'data'->>'place_id' = ANY(:ids)"),
            {"ids": place_ids}).scalars().all()
        handled = conn.execute(text(
            "SELECT CAST(event_id AS text) FROM allocation.inbox "
            "WHERE handler = 'allocation.on_place_released' "
            "AND CAST(event_id AS text) = ANY(:ids)"), {"ids": released_events}).scalars().all()
        issued_journal = conn.execute(text(
            "SELECT count(*) FROM allocation.journal WHERE kind = 'direction_issued' "
            "AND data->>'place_id' = ANY(:ids)"), {"ids": place_ids}).scalar()

    assert statuses == {"directed": PLACES}
    assert len(directions) == PLACES
    assert {d.status for d in directions} == {"issued"}
    assert len({d.place_id for d in directions}) == PLACES  # no place with two directions
    directed = [d.application_number for d in directions]
    assert len(set(directed)) == PLACES  # no child with two
    assert set(directed) == set(numbers[:PLACES])  # the 500 first in the queue
    assert len(released_events) == PLACES
    assert sorted(handled) == sorted(released_events)  # each event handled, once
    assert issued_journal == PLACES

    # the queue agrees: exactly those 500 children are offered a place
    def offered() -> int:
        with db_engine.connect() as conn:
            return conn.execute(text(
                "SELECT count(*) FROM queue.entries WHERE application_number = ANY(:n) "
                "AND status = 'offered'"), {"n": numbers}).scalar()
    wait_for(lambda: offered() == PLACES, timeout=20, message="500 children offered")
    with db_engine.connect() as conn:
        reserved = conn.execute(text(
            "SELECT count(DISTINCT application_number), count(*) FROM queue.reservations "
            "WHERE application_number = ANY(:n) AND status = 'open'"), {"n": numbers}).one()
    assert tuple(reserved) == (PLACES, PLACES)
