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
import time

import eventlet
from amqp import exceptions as amqp_exceptions
from eventlet.semaphore import Semaphore
from kombu import Queue
from nameko.events import EventHandler, get_event_exchange
from nameko.messaging import QueueConsumer

from services.common import metrics
from services.common.amqp import DLQ, ConfirmingPublisher, handler_queue_arguments
from services.common.config import settings
from services.common.contracts import PoisonMessage

log = logging.getLogger(__name__)

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
    """Kombu acks a message it cannot decode (bad JSON); we dead-letter it instead."""

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
    queue_consumer = DeadLetteringQueueConsumer()

    def __init__(self, source_service, event_type, **kwargs):
        super().__init__(source_service, event_type, **kwargs)

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

    def handle_message(self, body, message):
        message.kezek_started = time.monotonic()
        metrics.IN_PROGRESS.labels(self.container.service_name).inc()
        super().handle_message(body, message)

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
