"""Event handling that never drops a message.

Nameko's ``event_handler`` acknowledges a message whose handler raised: the event is gone. Ours:

- declares its queue as a durable quorum queue whose dead-letter exchange is ``kezek.dlx``;
- on success, acks;
- on :class:`PoisonMessage` (malformed, unknown type or version), publishes the message with the
  reason to the dead-letter queue at once, then acks;
- on any other error, waits a little (doubling from 0.25 s up to 5 s) and requeues; once the
  message has been delivered ``HANDLER_MAX_ATTEMPTS`` times it goes to the dead-letter queue
  with the last error, then is acked. Should even that publish fail, the message is rejected and
  RabbitMQ dead-letters it through ``kezek.dlx``;
- an error that says the database, the broker or another service is away for now
  (:func:`is_transient`) is not the message's fault: it may be retried four times as often, so
  that a restart of PostgreSQL or RabbitMQ sends nothing to the dead-letter queue.

Use ``@reliable_handler("allocation", "direction_issued")`` in place of ``event_handler``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import deque

import eventlet
from amqp import exceptions as amqp_exceptions
from eventlet.semaphore import Semaphore
from kombu import Queue
from nameko.events import EventHandler, get_event_exchange
from nameko.exceptions import ContainerBeingKilled
from nameko.messaging import QueueConsumer

from services.common import metrics
from services.common.amqp import DLQ, ConfirmingPublisher, handler_queue_arguments
from services.common.config import settings
from services.common.contracts import PoisonMessage

log = logging.getLogger(__name__)
# the per-call lines of services.common.metrics (Metrics._log_call), written here per message
# of a batch
handled_log = logging.getLogger("kezek.calls")

RETRY_FIRST_WAIT_SECONDS = 0.25
RETRY_MAX_WAIT_SECONDS = 5.0
# exceptions that crossed RPC arrive as RemoteError naming their type
TRANSIENT_REMOTE_TYPES = {"OperationalError", "InterfaceError", "UpstreamTimeout",
                          "CallTimedOut", "UnknownService", "ConnectionError",
                          "RecoverableConnectionError", "TimeoutError"}

_dlq_publishers: dict[str, ConfirmingPublisher] = {}
_dlq_lock = Semaphore()
# kezek_messages_consumed_total{outcome}: "duplicate" when the handler returns that string
OUTCOMES = ("ok", "retried", "dead_lettered", "duplicate")


def is_transient(exc: BaseException) -> bool:
    """Does this error say that something the handler needs is away for now (the database,
    the broker, another service), rather than that the message is wrong?"""
    from amqp.exceptions import RecoverableConnectionError
    from nameko.exceptions import RemoteError, UnknownService
    from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

    from services.common.errors import UpstreamTimeout

    if isinstance(exc, (OperationalError, InterfaceError, UpstreamTimeout, UnknownService,
                        ConnectionError, TimeoutError, RecoverableConnectionError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, RemoteError):
        return exc.exc_type in TRANSIENT_REMOTE_TYPES
    return False


def retry_wait(attempts: int) -> float:
    """Seconds to hold a failed message before it is delivered again."""
    return min(RETRY_FIRST_WAIT_SECONDS * 2 ** max(attempts - 1, 0), RETRY_MAX_WAIT_SECONDS)


def handler_queue_name(source_service: str, event_type: str, service_name: str,
                       method_name: str) -> str:
    return f"evt-{source_service}-{event_type}--{service_name}.{method_name}"


def handler_queue(source_service: str, event_type: str, service_name: str, method_name: str,
                  max_attempts: int, config: dict | None = None) -> Queue:
    return Queue(
        handler_queue_name(source_service, event_type, service_name, method_name),
        exchange=get_event_exchange(source_service, config or {}),
        routing_key=event_type,
        durable=True,
        auto_delete=False,
        queue_arguments=handler_queue_arguments(max_attempts),
    )


def send_to_dlq(amqp_uri: str, body, queue_name: str, reason: str, headers: dict) -> None:
    # one connection per broker, shared by every handler of the process: one publish at a time
    # (two greenthreads reading its socket at once break it, and the reason would be lost)
    with _dlq_lock:
        _send_to_dlq(amqp_uri, body, queue_name, reason, headers)


def _send_to_dlq(amqp_uri: str, body, queue_name: str, reason: str, headers: dict) -> None:
    publisher = _dlq_publishers.get(amqp_uri)
    if publisher is None:
        publisher = _dlq_publishers[amqp_uri] = ConfirmingPublisher(amqp_uri)
    dl_headers = {k: v for k, v in (headers or {}).items() if not k.startswith("x-")}
    dl_headers.update({
        "x-kezek-queue": queue_name,
        "x-kezek-reason": reason[:1000],
        "x-kezek-dead-at": time.time(),
    })
    payload = body if isinstance(body, (str, bytes)) else json.dumps(body)
    # to the queue by name through the default exchange
    publisher.publish_batch([("", DLQ, payload, dl_headers)])


class DeadLetteringQueueConsumer(QueueConsumer):
    """Kombu acks a message it cannot decode (bad JSON); we dead-letter it instead.

    Each event queue may have ``HANDLER_BATCH`` messages on their way (Nameko's default is
    ``max_workers``), so that a batched handler's batches can grow past ``max_workers`` under
    load. An unbatched handler still runs at most ``max_workers`` of them at once; the others
    wait, delivered."""

    @property
    def prefetch_count(self):
        batch = int(settings(self.container.config).get("HANDLER_BATCH", 50))
        return max(self.container.max_workers, batch)

    def _queue_of(self, message) -> str | None:
        tag = message.delivery_info.get("consumer_tag")
        for provider, consumer in list(self._consumers.items()):
            if tag in getattr(consumer, "_active_tags", {}).values():
                return provider.queue.name
        return None

    def on_decode_error(self, message, exc):
        queue = self._queue_of(message)
        reason = f"undecodable message: {exc}"
        log.error("%s on %s; dead-lettering it", reason,
                  queue or message.delivery_info.get("routing_key"))
        try:
            if queue is None:
                raise LookupError("no queue for this consumer tag")
            send_to_dlq(self.container.config["AMQP_URI"], message.body, queue, reason,
                        message.headers)
        except Exception:  # noqa: BLE001 - RabbitMQ dead-letters it, naming the queue in x-death
            log.exception("could not publish the undecodable message to the DLQ; rejecting it")
            settle(lambda m: m.reject(requeue=False), message)
            return
        settle(lambda m: m.ack(), message)


BROKER_GONE = (OSError, amqp_exceptions.ConnectionError, amqp_exceptions.ChannelError,
               amqp_exceptions.RecoverableConnectionError)


def settle(action, message) -> None:
    """Ack or requeue a message; if the broker connection went away meanwhile (RabbitMQ
    restarting), the broker has already put the message back for redelivery, and the inbox drops
    the copy of work that was done. Raising here would kill the whole service container
    (Nameko treats an error in a worker's completion as fatal), so log and go on: the consumer
    reconnects by itself."""
    try:
        action(message)
    except BROKER_GONE as exc:
        log.warning("the broker connection went away before a message was settled (%r); it "
                    "will be delivered again", exc)


class ReliableEventHandler(EventHandler):
    """``@reliable_handler(source, event_type)``: the method takes one event payload.

    ``@reliable_handler(source, event_type, batch=True)``: the method takes a list of payloads
    and returns one outcome per payload, in order (see :func:`services.common.db.each`). While
    a batch is being handled, the messages delivered meanwhile wait and go next, together (at
    most ``HANDLER_BATCH`` of them, default 50); a lone message goes at once, so a quiet
    service adds no delay and a busy one pays a worker, a transaction and its commit once per
    batch instead of once per event. If a batch of several fails, each of its messages is
    handled again alone, so one bad message is retried or dead-lettered by itself, exactly as
    an unbatched handler's would be.
    """

    queue_consumer = DeadLetteringQueueConsumer()

    def __init__(self, source_service, event_type, batch=False, **kwargs):
        super().__init__(source_service, event_type, **kwargs)
        self.batch = bool(batch)
        self._waiting: deque = deque()
        self._batching = False

    @property
    def max_attempts(self) -> int:
        return int(settings(self.container.config).get("HANDLER_MAX_ATTEMPTS", 5))

    def setup(self):
        self.queue = handler_queue(
            self.source_service, self.event_type, self.container.service_name,
            self.method_name, self.max_attempts, self.container.config,
        )
        # skip EventHandler.setup (it would rebuild the queue without our arguments)
        self.queue_consumer.register_provider(self)
        # every outcome's series at 0 from the start: rate() and alerts see the first one
        service = self.container.service_name
        for outcome in OUTCOMES:
            metrics.CONSUMED.labels(service, self.method_name, outcome)
        metrics.HANDLING_SECONDS.labels(service, self.method_name)
        metrics.IN_PROGRESS.labels(service)

    def stop(self):
        """Nothing more is delivered; a batched handler then handles what was delivered
        before returning, as Nameko waits for an unbatched handler's workers, so that a clean
        stop commits it (and the outbox relay, stopped after the entrypoints, publishes it)
        instead of leaving it to be delivered again."""
        super().stop()
        while self._batching or self._waiting:
            eventlet.sleep(0.01)

    @property
    def batch_size(self) -> int:
        return max(1, int(settings(self.container.config).get("HANDLER_BATCH", 50)))

    def handle_message(self, body, message):
        message.kezek_started = time.monotonic()
        metrics.IN_PROGRESS.labels(self.container.service_name).inc()
        if not self.batch:
            super().handle_message(body, message)
            return
        self._waiting.append((body, message))
        if not self._batching:
            self._batching = True
            self.container.spawn_managed_thread(
                self._handle_waiting, identifier=f"{self.method_name}.batches")

    def _handle_waiting(self) -> None:
        """One batch at a time: whatever was delivered while the last one was handled."""
        try:
            while self._waiting:
                take = min(len(self._waiting), self.batch_size)
                batch = [self._waiting.popleft() for _ in range(take)]
                try:
                    failed = self._run_batch(batch)
                except Exception:  # noqa: BLE001 - never leave its messages unsettled
                    log.exception("could not run a batch of %s; requeueing it",
                                  self.method_name)
                    for _, message in batch:
                        metrics.IN_PROGRESS.labels(self.container.service_name).dec()
                        settle(self.queue_consumer.requeue_message, message)
                    continue
                if failed is not None and len(batch) > 1:
                    log.warning("a batch of %d %s messages failed (%r); handling each alone",
                                len(batch), self.method_name, failed[1])
                    for item in batch:
                        self._run_batch([item])
        finally:
            self._batching = False

    def _run_batch(self, batch: list) -> tuple | None:
        """Handle ``batch`` in one worker and settle its messages (all of them when it
        succeeds; a lone message's failure too). The exc_info of a failed batch of several,
        whose messages are then still unsettled; None otherwise."""
        from eventlet.event import Event

        from services.common.logs import request_id_var

        done = Event()
        bodies = [body for body, _ in batch]
        first = batch[0][1]

        def handle_result(worker_ctx, result=None, exc_info=None):
            done.send((result, exc_info))
            return result, exc_info

        try:
            self.container.spawn_worker(self, (bodies,), {},
                                        context_data=self.unpack_message_headers(first),
                                        handle_result=handle_result)
        except ContainerBeingKilled:
            for _, message in batch:
                metrics.IN_PROGRESS.labels(self.container.service_name).dec()
                settle(self.queue_consumer.requeue_message, message)
            return None
        result, exc_info = done.wait()
        if exc_info is None and (not isinstance(result, (list, tuple))
                                 or len(result) != len(batch)):
            try:
                raise RuntimeError(f"{self.method_name} returned {result!r} for a batch of "
                                   f"{len(batch)}")
            except RuntimeError:
                exc_info = sys.exc_info()
        if exc_info is not None:
            if len(batch) > 1:
                return exc_info
            # held (retry_wait) in a thread of its own: the next batch need not wait for it
            eventlet.spawn_n(self.handle_message_processed, first, None, exc_info)
            return None
        for (body, message), outcome in zip(batch, result):
            request_id_var.set(body.get("request_id") if isinstance(body, dict) else None)
            self._log_handled(outcome, message, len(batch))
            self.handle_message_processed(message, outcome, None)
        return None

    def _log_handled(self, outcome, message, batch_size: int) -> None:
        """The line an unbatched handler's worker writes (Metrics._log_call), per message."""
        if not handled_log.isEnabledFor(logging.INFO):
            return
        service = self.container.service_name
        text = outcome if isinstance(outcome, str) and len(outcome) <= 40 else "ok"
        elapsed = time.monotonic() - getattr(message, "kezek_started", time.monotonic())
        handled_log.info("%s.%s %s", service, self.method_name, text, extra={"fields": {
            "service": service, "method": self.method_name, "outcome": text,
            "duration_ms": round(elapsed * 1000, 1), "batch": batch_size}})

    def handle_message_processed(self, message, result=None, exc_info=None):
        service = self.container.service_name
        metrics.IN_PROGRESS.labels(service).dec()
        handler = f"{self.method_name}"
        metrics.HANDLING_SECONDS.labels(service, handler).observe(
            time.monotonic() - getattr(message, "kezek_started", time.monotonic()))
        if exc_info is None:
            metrics.CONSUMED.labels(service, handler, result if result == "duplicate" else "ok").inc()
            metrics.LAST_PROCESSED.labels(service).set_to_current_time()
            settle(self.queue_consumer.ack_message, message)
            return
        exc = exc_info[1]
        attempts = int(message.headers.get("x-delivery-count", 0) or 0) + 1
        poison = isinstance(exc, PoisonMessage)
        # transient: up to just below the queue's x-delivery-limit, past which RabbitMQ would
        # dead-letter the message itself, without our reason
        limit = self.max_attempts * 4 - 1 if is_transient(exc) else self.max_attempts
        if not poison and attempts < limit:
            log.warning("handler %s.%s failed (attempt %d): %r", service, handler, attempts, exc)
            metrics.CONSUMED.labels(service, handler, "retried").inc()
            # holding the message a while spreads the attempts over a restart of what failed
            eventlet.sleep(retry_wait(attempts))
            settle(self.queue_consumer.requeue_message, message)
            return
        reason = f"{type(exc).__name__}: {exc}"
        log.error("dead-lettering a message of %s after %d attempt(s): %s",
                  self.queue.name, attempts, reason)
        try:
            send_to_dlq(self.container.config["AMQP_URI"], message.body, self.queue.name,
                        reason, message.headers)
        except Exception:  # noqa: BLE001 - let RabbitMQ dead-letter it instead
            log.exception("could not publish to the DLQ; rejecting to kezek.dlx")
            if message.channel.connection:
                settle(lambda m: m.reject(requeue=False), message)
            metrics.CONSUMED.labels(service, handler, "dead_lettered").inc()
            return
        metrics.CONSUMED.labels(service, handler, "dead_lettered").inc()
        settle(self.queue_consumer.ack_message, message)


reliable_handler = ReliableEventHandler.decorator
