"""SIGTERM in the middle of a release storm loses no work: the allocation process stops taking
messages, finishes the places it is allocating, publishes what it committed and exits 0; a new
process takes over the rest. Every place ends with exactly one direction, to the children first
in the queue, and nothing is left unsent or dead-lettered."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import time
import uuid

from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import text

from services.common.amqp import DLQ
from services.common.db import get_engine
from tests.conftest import destroy_isolated_config
from tests.helpers import random_name, wait_for
from tests.ops.conftest import Cluster, cluster_config, json_lines

OFFICER = {"id": "officer:+77010000019", "role": "officer", "organization_id": None,
           "request_id": None}
T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
GROUPS, RELEASES_PER_GROUP, PLACES_PER_RELEASE = 3, 5, 10
PLACES = GROUPS * RELEASES_PER_GROUP * PLACES_PER_RELEASE
CHILDREN = PLACES + 20
GRACE_SECONDS = 30  # docker's and Kubernetes' default is 10-30 s; compose gives 60


def dead_letters(amqp_uri: str) -> int:
    with Connection(amqp_uri, connect_timeout=5) as conn:
        return conn.default_channel.queue_declare(DLQ, passive=True).message_count


def test_sigterm_during_a_release_storm_loses_no_work(tmp_path):
    # few workers, so the storm lasts long enough to be interrupted
    config = cluster_config(ALLOCATION_TIMER_SECONDS=1, RPC_TIMEOUT_SECONDS=30)
    config["max_workers"] = 3
    config["LOGGING"]["root"]["level"] = "INFO"
    cluster = Cluster(config, tmp_path)
    engine = get_engine(config["DB_URL"])
    try:
        for service in ("registry", "queue", "allocation"):
            cluster.start(service)
        cluster.wait_ready(["registry", "queue", "allocation"])

        district = random_name("district")
        with ClusterRpcProxy(config, timeout=60) as rpc:
            org = rpc.registry.create_organization({
                "name": random_name("Storm"), "address": "Dostyk 5", "district": district,
                "ownership": "state", "kind": "kindergarten", "languages": ["kk"],
                "monthly_fee_kzt": 0}, OFFICER)["id"]
            groups = [rpc.registry.add_group(org, {
                "name": f"group {g}", "group_type": "general", "birth_year": 2022,
                "language": "kk", "capacity": RELEASES_PER_GROUP * PLACES_PER_RELEASE,
                "enrolled": 0}, OFFICER)["id"] for g in range(GROUPS)]
            tag = uuid.uuid4().hex[:6].upper()
            numbers = [f"GS{tag}-{n:05d}" for n in range(CHILDREN)]  # queue order: filed_at
            replies = [rpc.queue.enqueue.call_async({
                "application_number": number, "applicant_name": f"Applicant {n}",
                "child_name": f"Child {n}", "child_birth_date": "2022-04-01",
                "birth_year": 2022, "queue_type": "general", "language": "kk",
                "district": district, "preferred_organizations": [org],
                "desired_start": "2026-09-01",
                "filed_at": (T0 + dt.timedelta(seconds=n)).isoformat(), "benefit": None,
                "current_organization_id": None, "current_group_id": None,
                "applicant_id": f"applicant:+7703{n:07d}"}) for n, number in enumerate(numbers)]
            assert all(r.result()["status"] == "queued" for r in replies)

            staff = {"id": f"staff:{tag}", "role": "staff", "organization_id": org,
                     "request_id": None}
            releases = [rpc.allocation.release_places.call_async(org, group,
                                                                 PLACES_PER_RELEASE, staff)
                        for _ in range(RELEASES_PER_GROUP) for group in groups]
            place_ids = [p for r in releases for p in r.result()["place_ids"]]
        assert len(set(place_ids)) == PLACES

        def count(sql: str) -> int:
            with engine.connect() as conn:
                return conn.execute(text(sql), {"places": place_ids}).scalar()

        in_places = "place_id = ANY(CAST(:places AS uuid[]))"
        directions = f"SELECT count(*) FROM allocation.directions WHERE {in_places}"

        # the storm is under way: SIGTERM to the only allocation process
        wait_for(lambda: count(directions) >= 5, timeout=30, interval=0.02,
                 message="the first directions")
        first = cluster.procs.pop("allocation")
        first.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        try:
            code = first.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            first.kill()
            raise AssertionError(f"allocation did not exit within {GRACE_SECONDS}s of SIGTERM")
        took = time.monotonic() - stopped_at
        assert code == 0, cluster.log_text("allocation")[-3000:]
        done_by_first = count(directions)
        assert done_by_first < PLACES, "the storm was over before SIGTERM: nothing to test"

        # what the first process committed it also published: its relay finished first
        with engine.connect() as conn:
            unsent = conn.execute(text(
                "SELECT count(*) FROM allocation.outbox WHERE sent_at IS NULL")).scalar()
        assert unsent == 0
        first_lines = json_lines(cluster.logs["allocation"])
        assert not [e for e in first_lines if e["level"] in ("error", "critical")]
        # nothing was cut short: the container had no thread left to kill
        assert not [e for e in first_lines if e["message"].startswith("killing")]
        handled_by_first = [e for e in first_lines if e.get("method") == "on_place_released"]
        assert len(handled_by_first) >= done_by_first > 0

        # a new process takes over what the first left in the queue
        cluster.start("allocation", label="allocation-2")
        wait_for(lambda: count(f"SELECT count(*) FROM allocation.places WHERE {in_places} "
                               "AND status = 'priority'") == 0,
                 timeout=60, interval=0.3, message="every place allocated")

        with engine.connect() as conn:
            rows = conn.execute(text(
                f"SELECT place_id, application_number, status FROM allocation.directions "
                f"WHERE {in_places}"), {"places": place_ids}).all()
            statuses = dict(conn.execute(text(
                f"SELECT status, count(*) FROM allocation.places WHERE {in_places} "
                "GROUP BY status"), {"places": place_ids}).all())
            released_events = conn.execute(text(
                "SELECT payload->>'event_id' FROM allocation.outbox WHERE routing_key = "
                "'place_released' AND payload->'data'->>'place_id' = ANY(:ids)"),
                {"ids": place_ids}).scalars().all()
            handled = conn.execute(text(
                "SELECT CAST(event_id AS text) FROM allocation.inbox "
                "WHERE handler = 'allocation.on_place_released' "
                "AND CAST(event_id AS text) = ANY(:ids)"), {"ids": released_events}).scalars().all()
        assert statuses == {"directed": PLACES}
        assert len(rows) == PLACES and {r.status for r in rows} == {"issued"}
        assert len({r.place_id for r in rows}) == PLACES  # one direction a place
        directed = [r.application_number for r in rows]
        assert len(set(directed)) == PLACES  # one place a child
        assert set(directed) == set(numbers[:PLACES])  # in queue order
        assert sorted(handled) == sorted(released_events)  # every release handled, once

        # the events reached the other services: nothing unsent, nothing dead-lettered
        def settled() -> bool:
            with engine.connect() as conn:
                unsent = sum(conn.execute(text(
                    f"SELECT count(*) FROM {s}.outbox WHERE sent_at IS NULL")).scalar()
                    for s in ("allocation", "queue", "registry"))
            published = rpc.registry.list_directions({"organization_id": org}, 1, 1)["total"]
            return unsent == 0 and published == PLACES

        with ClusterRpcProxy(config, timeout=30) as rpc:
            wait_for(settled, timeout=30, interval=0.3,
                     message="outboxes drained, every direction in the public registry")
        assert dead_letters(config["AMQP_URI"]) == 0
        print(f"first process: {done_by_first} directions, exited {took:.1f}s after SIGTERM")
    finally:
        cluster.stop_all()
        destroy_isolated_config(config)
