"""Plain AMQP pieces shared by the outbox relay, the gateway's audit publisher and the CLI.

Publishing is done with py-amqp (the client kombu and Nameko use, so it cooperates with
eventlet) in publisher-confirm mode: a batch is published without waiting, then we wait until
the broker has confirmed every message. Messages are ``mandatory``: one the broker cannot route
comes back as a return and the batch fails instead of vanishing.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Iterable

import amqp
from kombu import Connection, Exchange, Queue

log = logging.getLogger(__name__)

DLX = "kezek.dlx"  # where RabbitMQ itself dead-letters (delivery limit reached)
DLQ = "kezek.dlq"  # the one dead-letter queue; `kezek dlq list|replay` reads it
AUDIT_EXCHANGE = "kezek.audit"
AUDIT_QUEUE = "kezek.audit"
CHECKPOINT_ROUTING_KEY = "audit_checkpoint"


class PublishError(Exception):
    """The broker did not confirm (nack, return or lost connection)."""


def event_exchange_name(source_service: str) -> str:
    """Nameko's name for a service's events exchange."""
    return f"{source_service}.events"


def handler_queue_arguments(max_attempts: int) -> dict[str, Any]:
    """Arguments every event-handler queue is declared with (they must always match)."""
    return {
        "x-queue-type": "quorum",
        # backstop: a message redelivered this often (crash loops) is dead-lettered by RabbitMQ
        "x-delivery-limit": max_attempts * 4,
        "x-dead-letter-exchange": DLX,
    }


def dead_letter_queue() -> Queue:
    return Queue(
        DLQ,
        exchange=Exchange(DLX, type="fanout", durable=True),
        durable=True,
        queue_arguments={"x-queue-type": "quorum"},
    )


def audit_queue() -> Queue:
    # one writer keeps the hash chain: single active consumer, other instances stand by
    return Queue(
        AUDIT_QUEUE,
        exchange=Exchange(AUDIT_EXCHANGE, type="direct", durable=True),
        routing_key="audit_record",
        durable=True,
        queue_arguments={"x-queue-type": "quorum", "x-single-active-consumer": True},
    )


def declare(amqp_uri: str, entities: Iterable[Queue | Exchange]) -> None:
    """Declare exchanges, queues and bindings (idempotent)."""
    with Connection(amqp_uri) as conn:
        channel = conn.channel()
        for entity in entities:
            entity(channel).declare()
        channel.close()


class ConfirmingPublisher:
    """A connection kept open for publishing batches with confirms."""

    def __init__(self, amqp_uri: str, heartbeat: int = 0):
        self.amqp_uri = amqp_uri
        self.heartbeat = heartbeat
        self._conn: Connection | None = None
        self._channel: amqp.Channel | None = None
        self._acked: set[int] = set()
        self._nacked: set[int] = set()
        self._returned: list[str] = []
        self._next_tag = 1

    # -- connection -----------------------------------------------------------------------------
    def _ensure(self) -> amqp.Channel:
        if self._channel is not None and self._conn is not None and self._conn.connected:
            return self._channel
        self.close()
        conn = Connection(self.amqp_uri, heartbeat=self.heartbeat, connect_timeout=5)
        conn.connect()
        channel = conn.connection.channel()
        channel.confirm_select()
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)
        self._conn, self._channel, self._next_tag = conn, channel, 1
        return channel

    def close(self) -> None:
        try:
            if self._conn is not None:
                self._conn.release()
        except Exception:  # noqa: BLE001 - closing a dead connection
            pass
        self._conn = self._channel = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    def _on_ack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._acked.update(t for t in range(1, tag + 1))
        else:
            self._acked.add(tag)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        if multiple:
            self._nacked.update(t for t in range(1, tag + 1))
        else:
            self._nacked.add(tag)

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        self._returned.append(f"{exchange}/{routing_key}: {exc}")

    # -- publishing ------------------------------------------------------------------------------
    def publish_batch(
        self,
        messages: list[tuple[str, str, Any, dict[str, Any]]],
        timeout: float = 10.0,
        mandatory: bool = True,
    ) -> None:
        """Publish (exchange, routing_key, body, headers) tuples; return once all are confirmed.

        Raises PublishError if any message is nacked, returned unroutable, or unconfirmed in time.
        """
        if not messages:
            return
        try:
            channel = self._ensure()
            self._acked.clear()
            self._nacked.clear()
            self._returned.clear()
            first = self._next_tag
            for exchange, routing_key, body, headers in messages:
                payload = body if isinstance(body, (bytes, str)) else json.dumps(body)
                msg = amqp.Message(
                    payload,
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=2,
                    application_headers=headers or {},
                )
                channel.basic_publish(msg, exchange=exchange, routing_key=routing_key,
                                      mandatory=mandatory)
                self._next_tag += 1
            last = self._next_tag - 1
            deadline = time.monotonic() + timeout
            while not all(t in self._acked or t in self._nacked for t in range(first, last + 1)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PublishError("broker did not confirm in time")
                try:
                    self._conn.drain_events(timeout=min(remaining, 1.0))
                except TimeoutError:
                    continue
        except PublishError:
            self.close()
            raise
        except Exception as exc:  # connection trouble: make the caller retry on a new connection
            self.close()
            raise PublishError(f"publish failed: {exc!r}") from exc
        if self._nacked:
            raise PublishError(f"broker refused {len(self._nacked)} message(s)")
        if self._returned:
            raise PublishError("unroutable: " + "; ".join(self._returned[:3]))


def take_dead_letters(amqp_uri: str, take, limit: int = 100_000) -> int:
    """Look at every message in the DLQ once; ``take(body, headers)`` returns True to remove it.

    Messages not taken are returned to the queue after the pass. Returns how many were taken.
    """
    taken = 0
    with Connection(amqp_uri) as conn:
        channel = conn.connection.channel()
        kept = []
        for _ in range(limit):
            message = channel.basic_get(DLQ, no_ack=False)
            if message is None:
                break
            body = message.body.decode() if isinstance(message.body, bytes) else message.body
            headers = dict(message.properties.get("application_headers") or {})
            if take(body, headers):
                channel.basic_ack(message.delivery_tag)
                taken += 1
            else:
                kept.append(message.delivery_tag)
        for tag in kept:
            channel.basic_reject(tag, requeue=True)
        channel.close()
    return taken
