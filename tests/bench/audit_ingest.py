"""Benchmark (not a test): how fast the audit service stores records, next to the broker's floor.

    .venv/bin/python -m tests.bench.audit_ingest [--n 3000] [--batch 100]

1. The floor: raw pika, a persistent message published to a quorum queue and confirmed one at a
   time (what one gateway request pays at least), in messages a second.
2. The audit service: N records published to ``kezek.audit`` with ConfirmingPublisher in batches
   while AuditService runs in this process; records stored a second, from the first publish
   until all N rows are in ``audit.audit_log``.

Prints both and their ratio (the target is >= 0.5: storing, chaining and indexing a record may
cost at most twice what merely publishing it costs). Runs in a database and vhost of its own,
dropped at the end.
"""

import eventlet

eventlet.monkey_patch()  # before pika, kombu and psycopg import socket

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import pika  # noqa: E402
from nameko.runners import ServiceRunner  # noqa: E402
from sqlalchemy import text  # noqa: E402

import services  # noqa: E402,F401  (PSYCOPG_WAIT_FUNC)
from services.audit.service import AuditService  # noqa: E402
from services.common import amqp, contracts  # noqa: E402
from services.common.db import get_engine  # noqa: E402
from tests.conftest import destroy_isolated_config, make_isolated_config  # noqa: E402


def sample_record(request_id: str) -> dict:
    return contracts.audit_record(
        request_id=request_id, actor="applicant:+77010000000", role="applicant",
        action="POST /api/v1/applications", target="application:A-000123", outcome="ok",
        ip="10.0.0.1", forwarded_for="203.0.113.7", accept_language="kk-KZ,kk;q=0.9",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0",
        fingerprint=uuid.uuid4().hex, server_fingerprint=uuid.uuid4().hex,
        body_digest=uuid.uuid4().hex * 2, service="gateway")


def raw_pika_rate(config: dict, n: int) -> float:
    """Persistent publishes to a quorum queue, each confirmed before the next."""
    params = pika.URLParameters(config["AMQP_URI"])
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        queue = "bench.raw." + uuid.uuid4().hex[:8]
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.confirm_delivery()
        body = json.dumps(sample_record("bench-raw"))
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
        started = time.perf_counter()
        for _ in range(n):
            channel.basic_publish("", queue, body, props, mandatory=True)
        elapsed = time.perf_counter() - started
        channel.queue_delete(queue)
    finally:
        connection.close()
    return n / elapsed


def audit_rate(config: dict, n: int, batch: int) -> tuple[float, float]:
    """(records stored a second, seconds until the last publish was confirmed)."""
    engine = get_engine(config["DB_URL"])
    runner = ServiceRunner(config)
    runner.add_service(AuditService)
    runner.start()
    tag = "bench-" + uuid.uuid4().hex
    bodies = [sample_record(tag) for _ in range(n)]
    publisher = amqp.ConfirmingPublisher(config["AMQP_URI"])

    def count() -> int:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM audit.audit_log WHERE request_id = :r"),
                                {"r": tag}).scalar()

    try:
        published_at = None
        started = time.perf_counter()

        def publish_all():
            nonlocal published_at
            for start in range(0, n, batch):
                publisher.publish_batch([(amqp.AUDIT_EXCHANGE, "audit_record", body, {})
                                         for body in bodies[start:start + batch]])
            published_at = time.perf_counter() - started

        sending = eventlet.spawn(publish_all)
        deadline = started + 120
        while count() < n:
            if time.perf_counter() > deadline:
                raise SystemExit(f"only {count()} of {n} records stored after 120 s")
            eventlet.sleep(0.01)
        elapsed = time.perf_counter() - started
        sending.wait()
    finally:
        publisher.close()
        runner.stop()
    return n / elapsed, published_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=100, help="records per confirmed batch")
    args = parser.parse_args()

    config = make_isolated_config()
    try:
        raw = raw_pika_rate(config, args.n)
        stored, publish_seconds = audit_rate(config, args.n, args.batch)
    finally:
        destroy_isolated_config(config)
    print(f"raw pika, persistent + confirm one at a time, quorum queue: {raw:8.0f} msg/s "
          f"(N={args.n})")
    print(f"audit service, published in batches of {args.batch}, stored: {stored:8.0f} "
          f"records/s (N={args.n}; publishing took {publish_seconds:.2f} s)")
    ratio = stored / raw
    print(f"ratio stored / raw publish: {ratio:.2f} (target >= 0.5: "
          f"{'met' if ratio >= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
