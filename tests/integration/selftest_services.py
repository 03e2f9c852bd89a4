"""Two tiny services built only from services.common, to test the reliability machinery itself:
``selftest_producer`` commits state + outbox events; ``selftest_consumer`` handles them through the
inbox and can be told to fail. Their tables live in the ``selftest`` schema of the test database.
"""

import os

from nameko.rpc import rpc
from sqlalchemy import text

from services.common import contracts
from services.common.db import Database, each
from services.common.events import reliable_handler
from services.common.ledger import base_sql

SCHEMA = "selftest"
contracts.CONTRACTS[("selftest_producer", "thing_happened")] = contracts.Contract(
    "selftest_producer", "thing_happened", 1, frozenset({"tag", "fail"}))


def create_schema(engine) -> None:
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"),
                        {"s": SCHEMA}).first():
            return
        conn.execute(text(base_sql(SCHEMA)))
        conn.exec_driver_sql(
            f"CREATE TABLE {SCHEMA}.things (id bigserial PRIMARY KEY, tag text NOT NULL)")
        conn.exec_driver_sql(
            f"CREATE TABLE {SCHEMA}.handled (id bigserial PRIMARY KEY, tag text NOT NULL, "
            "event_id uuid NOT NULL)")
        # what the batched consumer did: one row per event, with the size of its batch and the
        # transaction that wrote it
        conn.exec_driver_sql(
            f"CREATE TABLE {SCHEMA}.batched (id bigserial PRIMARY KEY, tag text NOT NULL, "
            "event_id uuid NOT NULL, batch_size int NOT NULL, "
            "txid bigint NOT NULL DEFAULT txid_current())")


class Producer:
    name = "selftest_producer"
    db = Database(SCHEMA)

    @rpc
    def make(self, tag: str, fail: bool = False, crash: bool = False) -> str:
        """Commit a thing and its event; with crash=True die right after the commit."""
        event = contracts.envelope("selftest_producer", "thing_happened",
                                   {"tag": tag, "fail": fail})
        with self.db.transaction() as tx:
            tx.execute(f"INSERT INTO {SCHEMA}.things (tag) VALUES (:t)", {"t": tag})
            tx.publish(event)
            if crash:
                tx.conn.commit()
                os._exit(9)  # the process dies between commit and publish
        return event["event_id"]

    @rpc
    def slow(self, seconds: float) -> list[float]:
        """A slow query; returns the database clock at its start and end (epoch seconds)."""
        with self.db.read() as tx:
            start = tx.execute("SELECT extract(epoch FROM clock_timestamp())").scalar()
            tx.execute("SELECT pg_sleep(:s)", {"s": seconds})
            end = tx.execute("SELECT extract(epoch FROM clock_timestamp())").scalar()
        return [float(start), float(end)]


class Consumer:
    name = "selftest_consumer"
    db = Database(SCHEMA, relay=False)

    @reliable_handler("selftest_producer", "thing_happened")
    def on_thing(self, payload):
        data = contracts.parse(payload, "selftest_producer", "thing_happened")
        if data["fail"]:
            raise RuntimeError(f"cannot handle {data['tag']}")
        with self.db.transaction() as tx:
            if not tx.claim_event("selftest_consumer.on_thing", payload["event_id"]):
                return "duplicate"
            tx.execute(f"INSERT INTO {SCHEMA}.handled (tag, event_id) VALUES (:t, :e)",
                       {"t": data["tag"], "e": payload["event_id"]})
        return "ok"


class BatchConsumer:
    """The same events, handled in batches (``batch=True``). A ``fail`` event raises; a tag
    starting with ``swallow`` makes its step raise inside a transaction and catch the error
    itself (the batch must then be redone event by event, each in its own transaction)."""

    name = "selftest_batch_consumer"
    db = Database(SCHEMA, relay=False)

    @reliable_handler("selftest_producer", "thing_happened", batch=True)
    def on_things(self, payloads):
        def step(db, payload):
            data = contracts.parse(payload, "selftest_producer", "thing_happened")
            if data["fail"]:
                raise RuntimeError(f"cannot handle {data['tag']}")
            if data["tag"].startswith("swallow") and len(payloads) > 1:
                try:
                    with db.transaction() as tx:
                        tx.execute(f"INSERT INTO {SCHEMA}.batched (tag, event_id, batch_size) "
                                   "VALUES ('half-done', :e, 0)", {"e": payload["event_id"]})
                        raise ValueError("changed my mind")
                except ValueError:
                    pass
            with db.transaction() as tx:
                if not tx.claim_event("selftest_batch_consumer.on_things", payload["event_id"]):
                    return "duplicate"
                tx.execute(f"INSERT INTO {SCHEMA}.batched (tag, event_id, batch_size) "
                           "VALUES (:t, :e, :n)",
                           {"t": data["tag"], "e": payload["event_id"], "n": len(payloads)})
            return "ok"

        # the inbox rows of a batch in one statement; claim_event answers from them
        return each(self.db, payloads, step, claim="selftest_batch_consumer.on_things")
