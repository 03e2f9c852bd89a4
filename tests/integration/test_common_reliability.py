"""The reliability rules of architecture.md, proven on real RabbitMQ and PostgreSQL:
outbox survives a crash, inbox drops redeliveries, failing handlers dead-letter, the ledger
refuses changes, and slow queries from concurrent RPC calls do not block each other.
"""

import json
import subprocess
import sys
import uuid

import eventlet
import pytest
import yaml
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.common import amqp, contracts, ledger
from services.common.db import DatabaseAccess
from services.common.events import handler_queue
from tests.helpers import wait_for
from tests.integration import selftest_services as st


@pytest.fixture
def selftest(kezek_config, db_engine):
    st.create_schema(db_engine)
    amqp.declare(kezek_config["AMQP_URI"], [
        handler_queue("selftest_producer", "thing_happened", "selftest_consumer", "on_thing",
                      5, kezek_config),
        handler_queue("selftest_producer", "thing_happened", "selftest_batch_consumer",
                      "on_things", 5, kezek_config)])
    return kezek_config


def publish(config, events) -> None:
    publisher = amqp.ConfirmingPublisher(config["AMQP_URI"])
    try:
        publisher.publish_batch([("selftest_producer.events", "thing_happened", event, {})
                                 for event in events])
    finally:
        publisher.close()


def batched(db_engine, prefix):
    """(tag, event_id, batch_size, txid) of what the batched consumer wrote for tags that
    start with ``prefix``."""
    with db_engine.connect() as conn:
        return conn.execute(text(
            "SELECT tag, event_id::text, batch_size, txid FROM selftest.batched "
            "WHERE tag LIKE :p ORDER BY id"), {"p": prefix + "%"}).all()


def test_a_batched_handler_handles_a_burst_in_shared_transactions_each_event_once(
        selftest, db_engine, start_services):
    prefix = f"burst-{uuid.uuid4().hex[:8]}"
    events = [contracts.envelope("selftest_producer", "thing_happened",
                                 {"tag": f"{prefix}-{i}", "fail": False}) for i in range(300)]
    publish(selftest, events[:150])  # waiting before the consumer starts: batches at once
    start_services(st.BatchConsumer)
    # and five delivered a second time, two of them twice in the same breath
    publish(selftest, events[150:] + events[:5] + events[3:5])
    wait_for(lambda: len(batched(db_engine, prefix)) >= 300, timeout=30,
             message="every event handled")
    eventlet.sleep(0.5)  # the redelivered copies arrive
    rows = batched(db_engine, prefix)
    assert sorted(r.event_id for r in rows) == sorted(e["event_id"] for e in events)
    with db_engine.connect() as conn:
        inbox = conn.execute(text(
            "SELECT count(*) FROM selftest.inbox WHERE handler = "
            "'selftest_batch_consumer.on_things' AND event_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [e["event_id"] for e in events]}).scalar()
    assert inbox == 300
    # several events a batch, each batch one transaction, none bigger than HANDLER_BATCH
    assert max(r.batch_size for r in rows) > 1
    assert max(r.batch_size for r in rows) <= 50
    by_tx: dict[int, list] = {}
    for r in rows:
        by_tx.setdefault(r.txid, []).append(r)
    assert any(len(v) > 1 for v in by_tx.values())
    assert all(len(v) <= v[0].batch_size for v in by_tx.values())


def test_a_failing_event_in_a_batch_is_dead_lettered_alone_and_the_rest_are_handled(
        selftest, db_engine, start_services):
    prefix = f"mixed-{uuid.uuid4().hex[:8]}"
    good = [contracts.envelope("selftest_producer", "thing_happened",
                               {"tag": f"{prefix}-{i}", "fail": False}) for i in range(40)]
    bad = contracts.envelope("selftest_producer", "thing_happened",
                             {"tag": f"{prefix}-bad", "fail": True})
    publish(selftest, good[:20] + [bad] + good[20:])
    start_services(st.BatchConsumer)
    found = wait_for(lambda: dlq_messages(selftest["AMQP_URI"], f"{prefix}-bad"), timeout=30,
                     message="the failing event in the DLQ")
    body, headers = found[0]
    assert json.loads(body)["event_id"] == bad["event_id"]
    assert "cannot handle" in headers["x-kezek-reason"]
    assert headers["x-kezek-queue"] == (
        "evt-selftest_producer-thing_happened--selftest_batch_consumer.on_things")
    wait_for(lambda: len(batched(db_engine, prefix)) >= 40, timeout=20,
             message="the good events handled")
    rows = batched(db_engine, prefix)
    assert sorted(r.event_id for r in rows) == sorted(e["event_id"] for e in good)


def test_a_step_that_swallows_its_own_error_makes_the_batch_run_event_by_event(
        selftest, db_engine, start_services):
    prefix = f"swallow-{uuid.uuid4().hex[:8]}"
    events = [contracts.envelope("selftest_producer", "thing_happened",
                                 {"tag": f"{prefix}-{i}", "fail": False}) for i in range(30)]
    publish(selftest, events)
    start_services(st.BatchConsumer)
    wait_for(lambda: len(batched(db_engine, prefix)) >= 30, timeout=30,
             message="every event handled")
    eventlet.sleep(0.3)
    rows = batched(db_engine, prefix)
    # nothing of the half-done steps was kept; every event was then handled alone
    assert sorted(r.event_id for r in rows) == sorted(e["event_id"] for e in events)
    assert {r.batch_size for r in rows} == {1}
    with db_engine.connect() as conn:
        assert conn.execute(text(
            "SELECT count(*) FROM selftest.batched WHERE tag = 'half-done'")).scalar() == 0


def handled(db_engine, tag):
    with db_engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM selftest.handled WHERE tag = :t"),
                            {"t": tag}).scalar()


def dlq_messages(amqp_uri, match: str) -> list:
    """Remove and return the DLQ messages whose body mentions ``match``."""
    found = []

    def take(body, headers):
        if match in body:
            found.append((body, headers))
            return True
        return False

    amqp.take_dead_letters(amqp_uri, take)
    return found


def test_event_committed_before_a_crash_is_published_after_restart(selftest, tmp_path, db_engine,
                                                                   start_services):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({k: v for k, v in selftest.items() if k != "LOGGING"}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "nameko", "run", "--config", str(config_file),
         "tests.integration.selftest_services:Producer"],
        cwd=str(st.__file__).rsplit("/tests/", 1)[0], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    tag = f"crash-{uuid.uuid4().hex[:8]}"
    try:
        with ClusterRpcProxy(selftest, timeout=15) as cluster:
            wait_for(lambda: _rpc_ready(cluster), timeout=30, message="producer up")
            with pytest.raises(Exception):
                cluster.selftest_producer.make(tag, crash=True)
        assert proc.wait(timeout=20) == 9
    finally:
        if proc.poll() is None:
            proc.kill()
    # the caller has given up on the crashed call; drop the request the broker would redeliver
    with Connection(selftest["AMQP_URI"]) as conn:
        conn.default_channel.queue_purge("rpc-selftest_producer")
    with db_engine.connect() as conn:
        pending = conn.execute(text(
            "SELECT count(*) FROM selftest.outbox WHERE sent_at IS NULL AND payload->'data'->>'tag' = :t"),
            {"t": tag}).scalar()
        committed = conn.execute(text("SELECT count(*) FROM selftest.things WHERE tag = :t"),
                                 {"t": tag}).scalar()
    assert committed == 1 and pending == 1  # state committed, event not yet published

    start_services(st.Consumer)
    start_services(st.Producer)  # the restarted service's relay publishes what was pending
    wait_for(lambda: handled(db_engine, tag) == 1, timeout=15, message="event delivered")


def _rpc_ready(cluster):
    try:
        cluster.selftest_producer.slow(0)
        return True
    except Exception:
        return False


def test_redelivered_event_changes_nothing(selftest, db_engine, start_services):
    start_services(st.Consumer)
    tag = f"dup-{uuid.uuid4().hex[:8]}"
    event = contracts.envelope("selftest_producer", "thing_happened", {"tag": tag, "fail": False})
    publisher = amqp.ConfirmingPublisher(selftest["AMQP_URI"])
    try:
        for _ in range(3):  # the broker delivering the same event three times
            publisher.publish_batch([("selftest_producer.events", "thing_happened", event, {})])
    finally:
        publisher.close()
    wait_for(lambda: handled(db_engine, tag) >= 1, timeout=10)
    with db_engine.connect() as conn:
        seen = conn.execute(text(
            "SELECT count(*) FROM selftest.inbox WHERE event_id = :e"), {"e": event["event_id"]}
        ).scalar()
    eventlet.sleep(0.5)  # let the copies arrive before counting again
    assert handled(db_engine, tag) == 1
    assert seen == 1


def test_handler_that_keeps_failing_dead_letters_its_message(selftest, db_engine, start_services):
    start_services(st.Consumer)
    tag = f"fail-{uuid.uuid4().hex[:8]}"
    event = contracts.envelope("selftest_producer", "thing_happened", {"tag": tag, "fail": True})
    publisher = amqp.ConfirmingPublisher(selftest["AMQP_URI"])
    try:
        publisher.publish_batch([("selftest_producer.events", "thing_happened", event, {})])
    finally:
        publisher.close()
    found = wait_for(lambda: dlq_messages(selftest["AMQP_URI"], tag), timeout=20,
                     message="message in the DLQ")
    body, headers = found[0]
    assert json.loads(body)["event_id"] == event["event_id"]
    assert "cannot handle" in headers["x-kezek-reason"]
    assert headers["x-kezek-queue"] == "evt-selftest_producer-thing_happened--selftest_consumer.on_thing"
    assert handled(db_engine, tag) == 0


def test_poison_message_goes_to_the_dlq_at_once_and_service_keeps_serving(selftest, db_engine,
                                                                          start_services):
    start_services(st.Consumer)
    tag = f"poison-{uuid.uuid4().hex[:8]}"
    bad = contracts.envelope("selftest_producer", "thing_happened", {"tag": tag, "fail": False})
    bad["version"] = 99
    good = contracts.envelope("selftest_producer", "thing_happened", {"tag": tag, "fail": False})
    publisher = amqp.ConfirmingPublisher(selftest["AMQP_URI"])
    try:
        publisher.publish_batch([
            ("selftest_producer.events", "thing_happened", bad, {}),
            ("selftest_producer.events", "thing_happened", "{not json", {}),
            ("selftest_producer.events", "thing_happened", good, {}),
        ])
    finally:
        publisher.close()
    wait_for(lambda: handled(db_engine, tag) == 1, timeout=10, message="good event handled")
    found = wait_for(lambda: dlq_messages(selftest["AMQP_URI"], tag), timeout=10)
    assert "unknown version 99" in found[0][1]["x-kezek-reason"]
    # the undecodable one is dead-lettered too, naming the queue it came from and why
    broken = wait_for(lambda: dlq_messages(selftest["AMQP_URI"], "{not json"), timeout=10)
    assert broken[0][1]["x-kezek-queue"] == (
        "evt-selftest_producer-thing_happened--selftest_consumer.on_thing")
    assert broken[0][1]["x-kezek-reason"].startswith("undecodable message")


def test_ledger_rows_cannot_be_changed_and_chain_verifies(selftest, db_engine):
    db = DatabaseAccess(db_engine, "selftest")
    with db.transaction() as tx:
        first = tx.journal("thing:1", "thing_made", {"n": 1})
        second = tx.journal("thing:1", "thing_corrected", {"n": 2}, corrects=first["seq"])
    assert second["seq"] == first["seq"] + 1 and second["at"] >= first["at"]
    for statement in (
        "UPDATE selftest.journal SET data = '{}' WHERE seq = :s",
        "DELETE FROM selftest.journal WHERE seq = :s",
        "TRUNCATE selftest.journal",
    ):
        with pytest.raises(DBAPIError, match="immutable"):
            with db_engine.begin() as conn:
                conn.execute(text(statement), {"s": first["seq"]})
    with db_engine.begin() as conn:
        result = ledger.verify(conn, "selftest")
    assert result["ok"] is True and result["head"] == second["hash"]


def test_ledger_time_comes_from_the_database_not_the_client(selftest, db_engine):
    with db_engine.begin() as conn:
        row = conn.execute(text(
            "INSERT INTO selftest.journal (seq, at, stream, kind, data, prev_hash, hash) "
            "VALUES (1, '2001-01-01', 's', 'k', '{}', 'x', 'y') RETURNING seq, at, hash")).one()
    assert row.at.year >= 2026 and row.seq > 1 and row.hash != "y"


def test_two_slow_queries_from_concurrent_rpc_calls_overlap(selftest, start_services):
    start_services(st.Producer)
    with ClusterRpcProxy(selftest, timeout=30) as cluster:
        calls = [cluster.selftest_producer.slow.call_async(1.0) for _ in range(2)]
        (s1, e1), (s2, e2) = [c.result() for c in calls]
    # each query took a second; had the eventlet hub been blocked they would run one after another
    assert e1 - s1 >= 1.0 and e2 - s2 >= 1.0
    assert s2 < e1 and s1 < e2


def test_a_clean_stop_publishes_what_was_committed_while_the_relay_slept(selftest, db_engine,
                                                                         start_services):
    """Nameko stops the relay after the last worker: a row committed just before, with the
    relay asleep between polls, still goes out before the process exits."""
    from services.common.outbox import OutboxRelay

    relay = OutboxRelay(db_engine, "selftest", selftest["AMQP_URI"], poll_seconds=600)
    relay.start(lambda fn, identifier=None: eventlet.spawn(fn))
    eventlet.sleep(0.2)  # its first poll found nothing: asleep for ten minutes now
    tag = f"stop-{uuid.uuid4().hex[:8]}"
    with DatabaseAccess(db_engine, "selftest").transaction() as tx:  # no wake-up
        tx.publish(contracts.envelope("selftest_producer", "thing_happened",
                                      {"tag": tag, "fail": False}))
    relay.stop()
    with db_engine.connect() as conn:
        unsent = conn.execute(text(
            "SELECT count(*) FROM selftest.outbox WHERE sent_at IS NULL "
            "AND payload->'data'->>'tag' = :t"), {"t": tag}).scalar()
    assert unsent == 0
    start_services(st.Consumer)
    wait_for(lambda: handled(db_engine, tag) == 1, timeout=15, message="event delivered")


def test_a_one_statement_read_sees_committed_rows_and_a_failed_one_discards_its_connection(
        db_engine):
    db = DatabaseAccess(db_engine, "public")
    rows = db.rows("SELECT CAST(:a AS int) + 1 AS n, '50%' AS share, 'a:b' AS colon, :t AS t",
                   {"a": 41, "t": "x"})
    assert rows == [{"n": 42, "share": "50%", "colon": "a:b", "t": "x"}]
    with pytest.raises(Exception, match="division by zero"):
        db.rows("SELECT 1 / :zero AS n", {"zero": 0})
    # the pool hands out working connections, in their usual transactional mode, afterwards
    with db.transaction() as tx:
        assert tx.execute("SELECT 1").scalar() == 1
        assert tx.conn.connection.driver_connection.autocommit is False
    assert db.rows("SELECT 2 AS n") == [{"n": 2}]


def test_a_batch_writes_its_events_in_order_at_its_end_and_wakes_the_relay_once(selftest,
                                                                                 db_engine):
    from services.common.db import each

    wakes = []
    db = DatabaseAccess(db_engine, st.SCHEMA, on_publish=lambda: wakes.append(1))
    tag = f"order-{uuid.uuid4().hex[:8]}"
    events = [contracts.envelope("selftest_producer", "thing_happened",
                                 {"tag": f"{tag}-{i}", "fail": False}) for i in range(5)]

    def step(access, event):
        with access.transaction() as tx:
            tx.execute(f"INSERT INTO {st.SCHEMA}.things (tag) VALUES (:t)",
                       {"t": event["data"]["tag"]})
            tx.publish(event)
            if event is events[0]:
                tx.audit({"actor": "system", "role": "system", "action": "test",
                          "target": tag, "outcome": "ok"})
            # written at the end of the batch, not yet
            assert tx.conn.execute(text(
                f"SELECT count(*) FROM {st.SCHEMA}.outbox WHERE strpos(payload::text, :t) > 0"),
                {"t": event["event_id"]}).scalar() == 0
        return "ok"

    assert each(db, events, step) == ["ok"] * 5
    with db_engine.connect() as conn:
        rows = conn.execute(text(
            f"SELECT exchange, routing_key, payload FROM {st.SCHEMA}.outbox "
            "WHERE strpos(payload::text, :t) > 0 ORDER BY id"), {"t": tag}).all()
    assert [r.payload.get("event_id") for r in rows if r.routing_key == "thing_happened"] == [
        e["event_id"] for e in events]
    assert [r.routing_key for r in rows] == ["thing_happened", "audit_record"] + [
        "thing_happened"] * 4
    assert wakes == [1]
    # a failing batch writes none of it
    bad = [contracts.envelope("selftest_producer", "thing_happened",
                              {"tag": f"{tag}-late-{i}", "fail": False}) for i in range(3)]

    def fails_last(access, event):
        step(access, event)
        if event is bad[-1]:
            raise RuntimeError("the last one fails")
        return "ok"

    with pytest.raises(RuntimeError):
        each(db, bad, fails_last)
    with db_engine.begin() as conn:
        assert conn.execute(text(
            f"SELECT count(*) FROM {st.SCHEMA}.outbox WHERE strpos(payload::text, :t) > 0"),
            {"t": f"{tag}-late"}).scalar() == 0
        # nobody is to receive these: keep them from a later test's relay
        conn.execute(text(f"UPDATE {st.SCHEMA}.outbox SET sent_at = clock_timestamp() "
                          "WHERE strpos(payload::text, :t) > 0"), {"t": tag})
