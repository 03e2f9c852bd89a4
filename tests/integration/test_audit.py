"""The audit service on real RabbitMQ and PostgreSQL: every record published to kezek.audit is
stored exactly once (redelivery, duplicates, a restart mid-stream, a lost broker connection),
auditors can filter and page it, invalid messages go to the dead-letter queue, and tampering with
the stored chain is named by verify()."""

import json
import subprocess
import uuid

import eventlet
import pytest
from kombu import Connection
from nameko.runners import ServiceRunner
from nameko.standalone.rpc import ClusterRpcProxy
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.audit import commands
from services.audit.consumer import CHECKPOINT_QUEUE
from services.audit.service import AuditService
from services.common import amqp, contracts
from services.common.db import DatabaseAccess, get_engine
from services.common.errors import BadInput
from tests.conftest import destroy_isolated_config, make_isolated_config
from tests.helpers import random_name, wait_for


def publish(config: dict, bodies: list, batch: int = 200) -> None:
    """Publish audit records (or raw bodies) to kezek.audit with confirms."""
    publisher = amqp.ConfirmingPublisher(config["AMQP_URI"])
    try:
        for start in range(0, len(bodies), batch):
            publisher.publish_batch([(amqp.AUDIT_EXCHANGE, "audit_record", body, {})
                                     for body in bodies[start:start + batch]])
    finally:
        publisher.close()


def records(n: int, **fields) -> list[dict]:
    return [contracts.audit_record(action="GET /api/v1/applications", outcome="ok", **fields)
            for _ in range(n)]


def stored_total() -> float:
    """The service's kezek_audit_records_stored_total counter (this process)."""
    return REGISTRY.get_sample_value("kezek_audit_records_stored_total") or 0.0


def stored(engine, request_id: str) -> tuple[int, int]:
    """(rows, distinct ids) stored with this request id."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT count(*) AS n, count(DISTINCT id) AS ids "
                                "FROM audit.audit_log WHERE request_id = :r"),
                           {"r": request_id}).one()
    return int(row.n), int(row.ids)


def test_each_record_is_stored_once_even_when_published_twice(kezek_config, db_engine,
                                                              start_services, rpc):
    tag = uuid.uuid4().hex
    batch = records(20, request_id=tag, actor="officer:" + tag, role="officer",
                    ip="10.1.2.3", fingerprint="fp-" + tag, user_agent="Firefox")
    sentinel = records(1, request_id=tag, actor="sentinel")
    before = stored_total()
    # the same ids again (a gateway retry, an outbox relay resending after a crash), then a
    # sentinel: the queue is FIFO with one active consumer, so once it is stored the
    # duplicates have been handled
    publish(kezek_config, batch + batch[:5] + sentinel)
    start_services(AuditService)

    wait_for(lambda: stored(db_engine, tag)[0] == 21, timeout=20, message="records stored")
    assert stored(db_engine, tag) == (21, 21)
    assert stored_total() - before >= 21

    with rpc() as cluster:
        page = cluster.audit.query({"request_id": tag, "actor": "officer:" + tag}, 1, 50)
    assert page["total"] == 20
    newest = page["items"][0]
    assert newest["id"] == batch[-1]["id"]
    for field in ("request_id", "actor", "role", "action", "outcome", "ip", "fingerprint",
                  "user_agent"):
        assert newest[field] == batch[-1][field]
    assert len(newest["hash"]) == 64 and len(newest["prev_hash"]) == 64
    assert "+00:00" in newest["at"]


def test_stopping_and_restarting_mid_stream_loses_and_doubles_nothing(kezek_config, db_engine,
                                                                      start_services, rpc):
    tag = uuid.uuid4().hex
    total = 2000
    runner = start_services(AuditService)

    def publisher():
        bodies = records(total, request_id=tag, actor="applicant:+7701" + tag[:7])
        for start in range(0, total, 100):
            publish(kezek_config, bodies[start:start + 100], batch=100)
            eventlet.sleep(0.01)

    sending = eventlet.spawn(publisher)
    wait_for(lambda: stored(db_engine, tag)[0] >= 200, timeout=30, message="first batches")
    runner.stop()  # graceful: stop consuming, store and ack what it holds
    start_services(AuditService)
    sending.wait()

    wait_for(lambda: stored(db_engine, tag)[0] >= total, timeout=60, message="all stored")
    assert stored(db_engine, tag) == (total, total)
    with rpc() as cluster:
        assert cluster.audit.verify()["ok"] is True


def test_auditors_filter_and_page_the_log(kezek_config, db_engine, start_services, rpc):
    tag = uuid.uuid4().hex
    alice, bob = "applicant:" + random_name("alice"), "applicant:" + random_name("bob")
    laptop, phone = "fp-laptop-" + tag, "fp-phone-" + tag
    published = [
        *records(1, request_id=tag, actor=alice, role="applicant", fingerprint=laptop,
                 ip="10.0.0.1", target="application:A-1"),
        *records(1, request_id=tag, actor=alice, role="applicant", fingerprint=laptop,
                 ip="10.0.0.1", target="application:A-2"),
        contracts.audit_record(request_id=tag, actor=alice, role="applicant",
                               fingerprint=laptop, ip="10.0.0.2", action="POST /api/v1/x",
                               outcome="denied", target="application:A-1"),
        *records(2, request_id=tag, actor=alice, role="applicant", fingerprint=phone,
                 ip="10.0.0.3", target="application:A-1"),
        *records(2, request_id=tag, actor=bob, role="officer", fingerprint=laptop,
                 ip="10.0.0.9", target="application:A-9"),
    ]
    publish(kezek_config, published)
    start_services(AuditService)
    wait_for(lambda: stored(db_engine, tag)[0] == 7, timeout=20, message="records stored")

    with rpc() as cluster:
        audit = cluster.audit
        # newest first, paged
        pages = [audit.query({"actor": alice}, page, 2) for page in (1, 2, 3)]
        assert [p["total"] for p in pages] == [5, 5, 5]
        assert [len(p["items"]) for p in pages] == [2, 2, 1]
        ids = [item["id"] for p in pages for item in p["items"]]
        assert ids == [r["id"] for r in reversed(published[:5])]
        assert audit.query({"actor": alice}, 4, 2)["items"] == []

        assert audit.query({"actor": alice, "fingerprint": laptop}, 1, 50)["total"] == 3
        assert audit.query({"actor": alice, "outcome": "denied"}, 1, 50)["items"][0]["id"] == \
            published[2]["id"]
        assert audit.query({"request_id": tag, "role": "officer"}, 1, 50)["total"] == 2
        assert audit.query({"request_id": tag, "action": "POST /api/v1/x"}, 1, 50)["total"] == 1
        assert audit.query({"request_id": tag, "target": "application:A-1"}, 1, 50)["total"] == 4
        assert audit.query({"request_id": tag, "ip": "10.0.0.9"}, 1, 50)["total"] == 2

        # time window: from the third record on, and up to the second
        items = list(reversed(pages[0]["items"] + pages[1]["items"] + pages[2]["items"]))
        after = audit.query({"actor": alice, "from": items[2]["at"]}, 1, 50)
        assert [i["id"] for i in after["items"]] == [r["id"] for r in reversed(published[2:5])]
        before = audit.query({"actor": alice, "to": items[1]["at"]}, 1, 50)
        assert [i["id"] for i in before["items"]] == [r["id"] for r in reversed(published[:2])]

        with pytest.raises(BadInput) as caught:
            audit.query({"actor": alice, "from": "last tuesday"}, 1, 50)
        assert caught.value.field == "from"
        with pytest.raises(BadInput) as caught:
            audit.query({"actr": alice}, 1, 50)
        assert caught.value.field == "actr"
        with pytest.raises(BadInput) as caught:
            audit.query({"actor": alice}, 1, 501)
        assert caught.value.field == "page_size"

        devices = audit.devices_of(alice)
        assert [(d["fingerprint"], d["records"], d["ips"]) for d in devices] == \
            [(phone, 2, 1), (laptop, 3, 2)]
        assert devices[1]["first_seen"] <= devices[1]["last_seen"]
        assert audit.devices_of("applicant:nobody-" + tag) == []

        used = audit.actions_of_device(laptop, 1, 2)
        assert used["total"] == 5 and len(used["items"]) == 2
        assert used["items"][0]["actor"] == bob
        assert sorted(used["actors"]) == sorted([alice, bob])
        with pytest.raises(BadInput) as caught:
            audit.actions_of_device("", 1, 10)
        assert caught.value.field == "fingerprint"


# -- in a database and vhost of their own: these tamper with the chain ---------------------------

@pytest.fixture(scope="module")
def own():
    """An isolated database + vhost with the audit service running."""
    config = make_isolated_config()
    runner = ServiceRunner(config)
    runner.add_service(AuditService)
    try:
        runner.start()
        yield {"config": config, "runner": runner,
               "engine": get_engine(config["DB_URL"])}
    finally:
        runner.stop()
        destroy_isolated_config(config)


def dlq_bodies(amqp_uri: str) -> list[tuple[str, dict]]:
    """Take every message from the (isolated) dead-letter queue."""
    taken = []
    with Connection(amqp_uri) as conn:
        channel = conn.default_channel
        while True:
            message = channel.basic_get(amqp.DLQ)
            if message is None:
                break
            body = message.body.decode() if isinstance(message.body, bytes) else message.body
            taken.append((body, message.headers))
            channel.basic_ack(message.delivery_tag)
    return taken


def test_a_message_that_is_not_a_record_goes_to_the_dead_letter_queue(own):
    tag = uuid.uuid4().hex
    publish(own["config"], [
        "not json " + tag,
        json.dumps({"id": "not-a-uuid", "action": "GET /", "request_id": tag}),
        *records(3, request_id=tag),
    ])
    wait_for(lambda: stored(own["engine"], tag)[0] == 3, timeout=20, message="valid stored")

    dead = wait_for(lambda: [d for d in dlq_bodies(own["config"]["AMQP_URI"]) if tag in d[0]],
                    timeout=10, message="dead-lettered")
    assert len(dead) == 2
    assert {h["x-kezek-queue"] for _, h in dead} == {amqp.AUDIT_QUEUE}
    reasons = sorted(h["x-kezek-reason"] for _, h in dead)
    assert "not JSON" in reasons[0] and "uuid" in reasons[1]


def test_a_list_of_records_in_one_message_is_stored_record_by_record(own):
    """The gateway's group commit: several requests' records in one message. Each is stored
    once, in order; one that is not a record is dead-lettered alone, as a message of its own."""
    tag = uuid.uuid4().hex
    first, last = records(3, request_id=tag), records(2, request_id=tag)
    broken = {"id": "not-a-uuid", "action": "GET /", "request_id": tag}
    publish(own["config"], [first + [broken] + last, first[:1]])  # and the first again
    wait_for(lambda: stored(own["engine"], tag)[0] == 5, timeout=20, message="records stored")
    with own["engine"].connect() as conn:
        ids = conn.execute(text("SELECT id::text FROM audit.audit_log WHERE request_id = :r "
                                "ORDER BY seq"), {"r": tag}).scalars().all()
    assert ids == [r["id"] for r in first + last]
    dead = wait_for(lambda: [d for d in dlq_bodies(own["config"]["AMQP_URI"]) if tag in d[0]],
                    timeout=10, message="dead-lettered")
    assert [json.loads(body) for body, _ in dead] == [broken]
    assert "uuid" in dead[0][1]["x-kezek-reason"]


def consumer_of(own):
    return next(d for d in own["runner"].service_map["audit"].dependencies
                if d.attr_name == "consumer")


def test_records_wait_while_the_database_refuses_them_and_are_stored_after(own):
    tag = uuid.uuid4().hex
    engine = own["engine"]
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE audit.audit_log ADD CONSTRAINT refuse_{tag} "
                          f"CHECK (request_id IS DISTINCT FROM '{tag}') NOT VALID"))
    try:
        publish(own["config"], records(5, request_id=tag))
        wait_for(lambda: f"refuse_{tag}" in (consumer_of(own).last_error or ""), timeout=20,
                 message="the database refused the batch")
        assert stored(engine, tag) == (0, 0)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE audit.audit_log DROP CONSTRAINT refuse_{tag}"))
    wait_for(lambda: stored(engine, tag)[0] == 5, timeout=20, message="stored on retry")
    assert stored(engine, tag) == (5, 5)


def test_a_record_the_database_cannot_hold_is_dead_lettered_and_the_rest_stored(own):
    tag = uuid.uuid4().hex
    engine = own["engine"]
    before, refused, after = (records(1, request_id=tag, role="officer"),
                              records(1, request_id=tag, role="x" * 40),
                              records(1, request_id=tag, role="auditor"))
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit.audit_log ALTER COLUMN role TYPE varchar(20)"))
    try:
        publish(own["config"], before + refused + after)
        wait_for(lambda: stored(engine, tag)[0] == 2, timeout=20, message="valid ones stored")
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit.audit_log ALTER COLUMN role TYPE text"))
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT id::text FROM audit.audit_log WHERE request_id = :r "
                                "ORDER BY seq"), {"r": tag}).scalars().all()
    assert ids == [before[0]["id"], after[0]["id"]]
    dead = wait_for(lambda: [d for d in dlq_bodies(own["config"]["AMQP_URI"]) if tag in d[0]],
                    timeout=10, message="dead-lettered")
    assert [json.loads(body)["id"] for body, _ in dead] == [refused[0]["id"]]
    assert "refused by the database" in dead[0][1]["x-kezek-reason"]


def test_the_consumer_reconnects_when_the_broker_drops_it(own):
    vhost = own["config"]["KEZEK_VHOST"]

    def close_connections() -> int:
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "pid", "vhost"],
            check=True, capture_output=True, text=True, timeout=60).stdout
        pids = [line.split("\t")[0] for line in listed.splitlines()
                if line.endswith("\t" + vhost)]
        for pid in pids:
            subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "test: broker gone"],
                           capture_output=True, timeout=60)
        return len(pids)

    consumer = consumer_of(own)
    wait_for(lambda: consumer.connected, message="consumer connected")
    connections = consumer.connections
    assert close_connections() >= 1
    wait_for(lambda: consumer.connections > connections and consumer.connected, timeout=30,
             message="consumer reconnected")

    tag = uuid.uuid4().hex
    publish(own["config"], records(50, request_id=tag))
    wait_for(lambda: stored(own["engine"], tag)[0] == 50, timeout=30,
             message="stored after reconnecting")
    assert stored(own["engine"], tag) == (50, 50)


def test_verify_names_a_changed_a_deleted_and_a_missing_newest_record(own):
    config, engine = own["config"], own["engine"]
    tag = uuid.uuid4().hex
    publish(config, records(10, request_id=tag, actor="staff:" + tag))
    wait_for(lambda: stored(engine, tag)[0] == 10, timeout=20, message="records stored")
    with engine.connect() as conn:
        mine = conn.execute(text("SELECT seq, id::text AS id, actor FROM audit.audit_log "
                                 "WHERE request_id = :r ORDER BY seq"), {"r": tag}).all()

    def verify() -> dict:
        with ClusterRpcProxy(config, timeout=30) as cluster:
            return cluster.audit.verify()

    healthy = verify()
    assert healthy["ok"] is True and healthy["records"] == mine[-1].seq
    assert healthy["retention_days"] is None

    # a checkpoint is stored and published for outside witnesses
    cp = commands.checkpoint(DatabaseAccess(engine, "audit"))
    assert cp["records"] == mine[-1].seq and cp["head"] == healthy["head"]
    with Connection(config["AMQP_URI"]) as conn:
        message = wait_for(lambda: conn.default_channel.basic_get(CHECKPOINT_QUEUE, no_ack=True),
                           timeout=10, message="checkpoint published")
    assert json.loads(message.body)["data"]["head"] == healthy["head"]

    # the service's own roles cannot change a record
    with pytest.raises(DBAPIError, match="immutable"):
        with engine.begin() as conn:
            conn.execute(text("UPDATE audit.audit_log SET actor = 'x' WHERE seq = :s"),
                         {"s": mine[3].seq})

    def as_superuser(statement: str, seq: int, **params) -> None:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit.audit_log DISABLE TRIGGER audit_log_no_change"))
            conn.execute(text(statement), {"s": seq, **params})
            conn.execute(text("ALTER TABLE audit.audit_log ENABLE TRIGGER audit_log_no_change"))

    as_superuser("UPDATE audit.audit_log SET actor = 'someone else' WHERE seq = :s", mine[3].seq)
    changed = verify()
    assert changed["ok"] is False
    assert changed["broken"] == {"seq": mine[3].seq, "id": mine[3].id,
                                 "problem": "content changed"}

    as_superuser("UPDATE audit.audit_log SET actor = :a WHERE seq = :s", mine[3].seq,
                 a=mine[3].actor)
    assert verify()["ok"] is True

    # the newest record deleted: the chain still links, the checkpoint does not agree
    as_superuser("DELETE FROM audit.audit_log WHERE seq = :s", mine[-1].seq)
    tail = verify()
    assert tail["ok"] is False
    assert tail["broken"]["seq"] == mine[-1].seq
    assert "missing" in tail["broken"]["problem"]

    as_superuser("DELETE FROM audit.audit_log WHERE seq = :s", mine[5].seq)
    gap = verify()
    assert gap["ok"] is False
    assert gap["broken"] == {"seq": mine[6].seq, "id": mine[6].id,
                             "problem": "record(s) before it missing"}
