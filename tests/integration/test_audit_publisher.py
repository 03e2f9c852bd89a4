"""The gateway's audit publisher on real RabbitMQ: concurrent requests' records are confirmed
together (group commit), each request still learns whether its own record got there."""

import json
import socket
import types

import eventlet
import pytest
from kombu import Connection, Consumer

from services.common import amqp, contracts
from services.gateway.audit_publisher import AuditPublisher
from services.gateway.errors import AuditUnavailable
from tests.conftest import destroy_isolated_config, make_isolated_config


@pytest.fixture
def publisher():
    """An AuditPublisher on a vhost of its own, with nothing consuming kezek.audit."""
    config = make_isolated_config()
    extension = AuditPublisher()
    extension.container = types.SimpleNamespace(config=config)  # what setup() reads
    extension.setup()
    try:
        yield extension, config
    finally:
        extension.stop()
        destroy_isolated_config(config)


def take_messages(amqp_uri: str, expected: int) -> list:
    """Consume kezek.audit (a single-active-consumer queue: no basic.get) until ``expected``
    records arrived or nothing more comes."""
    bodies = []

    def on_message(message):
        bodies.append(json.loads(message.body))
        message.ack()

    with Connection(amqp_uri) as conn:
        with Consumer(conn.default_channel, queues=[amqp.audit_queue()], auto_declare=False,
                      on_message=on_message, prefetch_count=500):
            while sum(len(b) if isinstance(b, list) else 1 for b in bodies) < expected:
                try:
                    conn.drain_events(timeout=5)
                except socket.timeout:
                    break
    return bodies


def record(n: int) -> dict:
    return contracts.audit_record(service="gateway", action="GET /api/v1/queue",
                                  outcome="ok", request_id=f"r-{n}")


def test_concurrent_records_travel_together_and_each_is_confirmed(publisher):
    extension, config = publisher
    sent = [record(n) for n in range(30)]
    pool = eventlet.GreenPool()
    for item in sent:
        pool.spawn(extension.publish, item)
    pool.waitall()  # every publish returned: each record was confirmed
    extension.publish(alone := record(99))  # a quiet moment: a record on its own

    messages = take_messages(config["AMQP_URI"], len(sent) + 1)
    got = [r for m in messages for r in (m if isinstance(m, list) else [m])]
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in sent + [alone])
    assert len(messages) < len(sent)  # fewer messages than records: confirmed together
    assert messages[-1] == alone  # not a list of one


def test_every_waiting_request_hears_when_the_broker_refuses(publisher):
    extension, config = publisher
    with Connection(config["AMQP_URI"]) as conn:  # nowhere to route: a mandatory publish fails
        conn.default_channel.queue_unbind(amqp.AUDIT_QUEUE, amqp.AUDIT_EXCHANGE, "audit_record")
    outcomes = []

    def one(n):
        try:
            extension.publish(record(n))
            outcomes.append("confirmed")
        except AuditUnavailable:
            outcomes.append("refused")

    pool = eventlet.GreenPool()
    for n in range(10):
        pool.spawn(one, n)
    pool.waitall()
    assert outcomes == ["refused"] * 10
