"""The batching consumer of the audit queue.

One insert + commit per record would cap the log at about 2,000 records a second on this machine
(architecture.md), below what the gateway produces. So this extension runs its own kombu consumer
greenthread (the way nameko's QueueConsumer does) instead of a worker per message:

- it consumes ``kezek.audit`` with a prefetch of a few hundred and collects messages for up to
  ``AUDIT_BATCH_SECONDS`` (50 ms) or ``AUDIT_BATCH_SIZE`` (200) messages;
- stores the batch with ONE multi-row ``INSERT ... ON CONFLICT (id) DO NOTHING`` in one
  transaction (a redelivered record is skipped), commits, and only then acks with one
  ``basic.ack(multiple=True)`` of the last delivery tag;
- a message that is not a valid record goes to the dead-letter queue and is acked with the batch;
- if the database (or the DLQ) is unavailable it keeps the messages unacked and retries with a
  backoff while still reading the socket (heartbeats); the prefetch bounds what piles up;
- if the broker goes away the unacked batch is dropped (the broker redelivers it; the unique id
  makes the second insert a no-op) and it reconnects with a backoff;
- on stop it cancels its consumer, stores and acks what it holds, then closes.

The queue has ``x-single-active-consumer``: with several instances one writes the chain and the
others stand by, so records are chained in queue order.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from typing import Any

import eventlet
from eventlet.event import Event
from kombu import Connection, Consumer, Queue
from nameko.events import get_event_exchange
from nameko.extensions import DependencyProvider
from sqlalchemy.exc import DataError

from services.audit import commands, domain
from services.common import metrics
from services.common.amqp import AUDIT_QUEUE, CHECKPOINT_ROUTING_KEY, audit_queue, declare
from services.common.config import settings
from services.common.db import DatabaseAccess, engine_for
from services.common.events import send_to_dlq

log = logging.getLogger(__name__)

CHECKPOINT_QUEUE = "kezek.audit.checkpoints"


def checkpoint_queue(config: dict | None = None) -> Queue:
    """Where published checkpoints wait for an outside witness.

    Outbox publishes are ``mandatory``: a checkpoint with no bound queue would come back and
    block the audit outbox, so the audit service declares this queue itself. Capped: a witness
    needs the recent checkpoints, not years of them.
    """
    return Queue(
        CHECKPOINT_QUEUE,
        exchange=get_event_exchange("audit", config or {}),
        routing_key=CHECKPOINT_ROUTING_KEY,
        durable=True,
        queue_arguments={"x-queue-type": "quorum", "x-max-length": 10000},
    )


class AuditConsumer(DependencyProvider):
    """``consumer = AuditConsumer()`` on the audit service: stores every audit record."""

    def __init__(self, batch_size: int = 200, batch_seconds: float = 0.05,
                 prefetch: int = 500):
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.prefetch = prefetch
        self._gt = None
        self._running = False
        self._stopped = Event()
        self._ready = Event()
        self._pending: list[Any] = []
        self._first_at = 0.0
        self._retry_at = 0.0
        self._retry_backoff = 0.0
        self.connected = False
        self.connections = 0  # successful (re)connections, for health and tests
        self.last_error: str | None = None

    def setup(self) -> None:
        config = self.container.config
        s = settings(config)
        self.amqp_uri = config["AMQP_URI"]
        self.heartbeat = int(config.get("HEARTBEAT", 60))
        self.batch_size = int(s.get("AUDIT_BATCH_SIZE", self.batch_size))
        self.batch_seconds = float(s.get("AUDIT_BATCH_SECONDS", self.batch_seconds))
        self.prefetch = max(int(s.get("AUDIT_PREFETCH", self.prefetch)), self.batch_size)
        self.db = DatabaseAccess(engine_for(config), "audit")
        # before the outbox relay (started after every setup) publishes a checkpoint
        declare(self.amqp_uri, [audit_queue(), checkpoint_queue(config)])

    def start(self) -> None:
        self._running = True
        self._stopped, self._ready = Event(), Event()
        self._gt = self.container.spawn_managed_thread(self._run, identifier="audit-consumer")
        # like nameko's QueueConsumer: be consuming when start() returns, if the broker is up
        with eventlet.Timeout(10, False):
            self._ready.wait()

    def stop(self) -> None:
        self._running = False
        if not self._stopped.ready():
            self._stopped.send(True)  # wakes a reconnect backoff
        if self._gt is not None:
            self._gt.wait()
            self._gt = None

    def kill(self) -> None:
        # unacked messages go back to the queue; nothing is acked that was not stored
        self._running = False
        if self._gt is not None:
            self._gt.kill()
            self._gt = None
        self._pending = []

    def get_dependency(self, worker_ctx) -> "AuditConsumer":
        return self

    # -- the consumer greenthread ----------------------------------------------------------------
    def _run(self) -> None:
        backoff = 0.5
        while self._running:
            try:
                self._consume()
                backoff = 0.5
            except Exception as exc:  # noqa: BLE001 - broker gone: the broker keeps the messages
                self.connected = False
                self.last_error = repr(exc)
                self._pending = []
                if not self._running:
                    break
                log.warning("audit consumer: %r; reconnecting in %.1fs", exc, backoff)
                with eventlet.Timeout(backoff, False):
                    self._stopped.wait()
                backoff = min(backoff * 2, 10.0)

    def _consume(self) -> None:
        with Connection(self.amqp_uri, heartbeat=self.heartbeat, connect_timeout=5) as conn:
            conn.connect()
            channel = conn.channel()
            channel.basic_qos(0, self.prefetch, False)
            consumer = Consumer(channel, queues=[audit_queue()], on_message=self._on_message,
                                auto_declare=False)
            consumer.consume()
            self.connected, self.last_error = True, None
            self.connections += 1
            if not self._ready.ready():
                self._ready.send(True)
            last_beat = time.monotonic()
            while self._running:
                try:
                    conn.drain_events(timeout=self._wait_seconds())
                except socket.timeout:
                    pass
                now = time.monotonic()
                if self._flush_due(now):
                    self._flush(channel)
                if now - last_beat >= 1.0:
                    conn.heartbeat_check()
                    last_beat = now
            # stopping: take no more, store and ack what we hold (messages delivered while the
            # cancel was on its way are in _pending too)
            consumer.cancel()
            if self._pending:
                self._flush(channel, final=True)
            self.connected = False

    def _store(self, records: list[tuple[Any, dict, dict]], bad: list[tuple[Any, dict, str]]
               ) -> int:
        """Store the batch in one transaction; returns how many records were new."""
        try:
            return commands.store_batch(self.db, [record for _, _, record in records])
        except DataError:
            # a record PostgreSQL refuses must not block the queue behind it: store one by
            # one, in order, and dead-letter what is refused
            stored = 0
            for body, headers, record in records:
                try:
                    stored += commands.store_batch(self.db, [record])
                except DataError as exc:
                    bad.append((body, headers, f"refused by the database: {exc.orig}"))
            return stored

    def _on_message(self, message) -> None:
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append(message)

    def _wait_seconds(self) -> float:
        if not self._pending:
            return 1.0
        due = max(self._first_at + self.batch_seconds, self._retry_at)
        return min(max(due - time.monotonic(), 0.001), 1.0)

    def _flush_due(self, now: float) -> bool:
        if not self._pending or now < self._retry_at:
            return False
        return len(self._pending) >= self.batch_size or now >= self._first_at + self.batch_seconds

    def _flush(self, channel, final: bool = False) -> None:
        batch = self._pending
        # (body, headers, record) to store; (body, headers, reason) to dead-letter
        records: list[tuple[Any, dict, dict]] = []
        bad: list[tuple[Any, dict, str]] = []
        for message in batch:
            headers = dict(message.headers or {})
            try:
                value = domain.decode(message.body)
            except domain.InvalidRecord as exc:
                bad.append((message.body, headers, str(exc)))
                continue
            if not isinstance(value, list):
                try:
                    records.append((message.body, headers, domain.normalize_record(value)))
                except domain.InvalidRecord as exc:
                    bad.append((message.body, headers, str(exc)))
                continue
            # the gateway's group commit: the records of several requests in one message,
            # each stored (or dead-lettered alone, as a message of its own) like any other
            if not value:
                bad.append((message.body, headers, "an empty list of audit records"))
            for item in value:
                own = {**headers, "kezek.event_id": str(item.get("id") or "")
                       } if isinstance(item, dict) else headers
                try:
                    records.append((json.dumps(item), own, domain.normalize_record(item)))
                except domain.InvalidRecord as exc:
                    bad.append((json.dumps(item), own, str(exc)))
        invalid = len(bad)
        try:
            stored = self._store(records, bad)
            for body, headers, reason in bad:
                log.error("audit record dead-lettered: %s", reason)
                send_to_dlq(self.amqp_uri, body, AUDIT_QUEUE, reason, headers)
        except Exception as exc:  # noqa: BLE001 - database or DLQ down: keep them unacked
            self.last_error = repr(exc)
            if final:
                log.error("audit consumer stopping with %d unstored record(s) left in the "
                          "queue: %r", len(batch), exc)
                self._pending = []
                return
            self._retry_backoff = min(max(self._retry_backoff * 2, 0.2), 5.0)
            self._retry_at = time.monotonic() + self._retry_backoff
            log.warning("audit batch of %d not stored (%r); retrying in %.1fs", len(batch), exc,
                        self._retry_backoff)
            return
        # committed: now, and only now, the broker may forget them
        channel.basic_ack(batch[-1].delivery_tag, multiple=True)
        self._pending = []
        self._first_at = 0.0
        self._retry_at = self._retry_backoff = 0.0
        metrics.AUDIT_STORED.inc(stored)
        metrics.CONSUMED.labels("audit", "store", "ok").inc(stored)
        duplicates = len(records) - (len(bad) - invalid) - stored
        if duplicates:
            metrics.CONSUMED.labels("audit", "store", "duplicate").inc(duplicates)
        if bad:
            metrics.CONSUMED.labels("audit", "store", "dead_lettered").inc(len(bad))
        metrics.LAST_PROCESSED.labels("audit").set_to_current_time()
