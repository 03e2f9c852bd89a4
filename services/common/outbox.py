"""The transactional outbox relay.

Services write events into ``<schema>.outbox`` in the same transaction as the state change
(``Tx.publish``). The relay takes unsent rows with ``FOR UPDATE SKIP LOCKED`` (so several
instances share the work without sending a row twice at once), publishes them as one batch with
publisher confirms, and marks them sent in the same transaction that locked them. A crash before
the mark leaves them unsent: they are published again, and the receivers' inboxes drop the copy.
"""

from __future__ import annotations

import logging
import time

import eventlet
from eventlet.event import Event
from sqlalchemy import text
from sqlalchemy.engine import Engine

from services.common import metrics
from services.common.amqp import ConfirmingPublisher, PublishError

log = logging.getLogger(__name__)

# the relay's gauges (unsent rows, age of the oldest) are refreshed at most this often
GAUGE_SECONDS = 1.0


class OutboxRelay:
    def __init__(self, engine: Engine, schema: str, amqp_uri: str, poll_seconds: float = 1.0,
                 batch: int = 500, service: str | None = None):
        self.engine = engine
        self.schema = schema
        self.publisher = ConfirmingPublisher(amqp_uri)
        self.poll_seconds = poll_seconds
        self.batch = batch
        self.service = service or schema
        self._wake = Event()
        self._running = False
        self._gt = None
        self.last_error: str | None = None
        self._gauges_at = 0.0
        # the service's series exist (at 0) before the first batch or failure
        for series in (metrics.OUTBOX_PENDING, metrics.OUTBOX_OLDEST_AGE, metrics.OUTBOX_SENT,
                       metrics.OUTBOX_PUBLISH_FAILURES):
            series.labels(self.service)

    def wake(self) -> None:
        if not self._wake.ready():
            self._wake.send(True)

    def start(self, spawn) -> None:
        self._running = True
        self._gt = spawn(self._run, identifier=f"outbox-relay:{self.schema}")

    def stop(self) -> None:
        self._running = False
        self.wake()
        if self._gt is not None:
            try:
                self._gt.wait()
            except Exception:  # noqa: BLE001 - already logged in the thread
                pass
            self._gt = None
        self.publisher.close()

    def _run(self) -> None:
        backoff = self.poll_seconds
        while self._running:
            try:
                sent = self.relay_once()
                self.last_error = None
                backoff = self.poll_seconds
                if sent >= self.batch:
                    continue  # more waiting: go again at once
            except Exception as exc:  # noqa: BLE001 - broker or database down: retry later
                self.last_error = repr(exc)
                metrics.OUTBOX_PUBLISH_FAILURES.labels(self.service).inc()
                log.warning("outbox relay %s: %s", self.schema, exc)
                backoff = min(backoff * 2, 5.0)
            self._refresh_gauges()
            with eventlet.Timeout(backoff, False):
                self._wake.wait()
            self._wake = Event()
        self._flush_on_stop()

    def _flush_on_stop(self, attempts: int = 3) -> None:
        """On shutdown (Nameko stops dependencies once every worker has finished): publish what
        the last workers committed while the relay slept, so a clean stop leaves nothing unsent.
        A failure here is not lost either: the rows stay unsent for the next instance."""
        for _ in range(attempts):
            try:
                while self.relay_once() >= self.batch:
                    pass
                return
            except Exception as exc:  # noqa: BLE001 - broker or database down at shutdown
                self.last_error = repr(exc)
                log.warning("outbox relay %s at shutdown: %s", self.schema, exc)
                eventlet.sleep(self.poll_seconds)

    def relay_once(self) -> int:
        """Publish one batch of unsent rows; return how many were sent."""
        with self.engine.connect() as conn:
            with conn.begin():
                rows = conn.execute(
                    text(
                        f"SELECT id, exchange, routing_key, payload FROM {self.schema}.outbox "
                        "WHERE sent_at IS NULL ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                    ),
                    {"n": self.batch},
                ).all()
                if not rows:
                    return 0
                messages = [
                    # nameko.* headers become the handler's context data (request id in logs)
                    (r.exchange, r.routing_key, r.payload,
                     {"nameko.event_id": r.payload.get("event_id", ""),
                      "nameko.request_id": r.payload.get("request_id") or ""})
                    for r in rows
                ]
                self.publisher.publish_batch(messages)
                conn.execute(
                    text(
                        f"UPDATE {self.schema}.outbox SET sent_at = clock_timestamp() "
                        "WHERE id = ANY(:ids)"
                    ),
                    {"ids": [r.id for r in rows]},
                )
        metrics.OUTBOX_SENT.labels(self.service).inc(len(rows))
        return len(rows)

    def _refresh_gauges(self) -> None:
        """The pending and oldest-age gauges, at most once per ``GAUGE_SECONDS``: a busy relay
        goes round many times a second, and each refresh is a statement of its own."""
        now = time.monotonic()
        if now - self._gauges_at < GAUGE_SECONDS:
            return
        self._gauges_at = now
        try:
            pending, oldest = self.lag()
            metrics.OUTBOX_PENDING.labels(self.service).set(pending)
            metrics.OUTBOX_OLDEST_AGE.labels(self.service).set(oldest)
        except Exception:  # noqa: BLE001 - gauges are best effort
            pass

    def lag(self) -> tuple[int, float]:
        """(unsent rows, age in seconds of the oldest unsent row)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    f"SELECT count(*) AS n, COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - "
                    f"min(created_at)), 0) AS age FROM {self.schema}.outbox WHERE sent_at IS NULL"
                )
            ).one()
            return int(row.n), float(row.age)


def drain(engine: Engine, schema: str, amqp_uri: str, timeout: float = 30.0) -> int:
    """Publish everything pending (CLI and tests); returns rows sent."""
    relay = OutboxRelay(engine, schema, amqp_uri)
    total, deadline = 0, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            sent = relay.relay_once()
            total += sent
            if not sent:
                return total
    except PublishError:
        raise
    finally:
        relay.publisher.close()
    return total
