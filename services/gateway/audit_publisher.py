"""One audit record per request, confirmed before the response leaves (05-29).

Records go to exchange ``kezek.audit`` with routing key ``audit_record``, ``mandatory`` and with
publisher confirms. If the broker does not confirm, the request answers 503 AUDIT_UNAVAILABLE
instead of going unrecorded. The records of concurrent requests travel together, one message
and one confirm for all of them (AuditPublisher).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Mapping

import eventlet
from eventlet.queue import LightQueue
from nameko.extensions import SharedExtension

from services.common import contracts
from services.common.amqp import AUDIT_EXCHANGE, ConfirmingPublisher, PublishError
from services.common.coalesce import Coalescer
from services.common.config import settings
from services.gateway.errors import AuditUnavailable

log = logging.getLogger(__name__)

ROUTING_KEY = "audit_record"
# headers a browser sends the same way on every request: together they identify a device roughly
STABLE_HEADERS = ("user-agent", "accept-language", "accept-encoding", "accept")


def server_fingerprint(headers: Mapping[str, str]) -> str:
    """sha256 of the stable request headers (and every sec-ch-ua* client hint), names sorted."""
    lowered = {k.lower(): v for k, v in headers.items()}
    names = list(STABLE_HEADERS) + sorted(k for k in lowered if k.startswith("sec-ch-ua"))
    text = "\n".join(f"{name}:{lowered.get(name, '')}" for name in names)
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


def body_digest(body: bytes) -> str | None:
    return hashlib.sha256(body).hexdigest() if body else None


def build_record(**fields: Any) -> dict[str, Any]:
    """A contracts.audit_record with service 'gateway' (unknown fields are refused)."""
    fields.setdefault("service", "gateway")
    return contracts.audit_record(**fields)


class AuditPublisher(SharedExtension):
    """Confirmed publishing to the audit exchange, the records of concurrent requests together.

    Each request waits for the broker's confirm of its own record. While a batch is on its way,
    the records of other requests queue up and go next as ONE message, a JSON list, with one
    confirm (group commit): one record alone is published as it is, so a quiet gateway adds no
    delay, and a busy one sends a few hundred records a second in a few dozen messages. One
    message in the quorum queue costs the broker about ten times one record in a list
    (docs/performance.md). ``AUDIT_PUBLISHERS`` batches may be in flight at once (each on its
    own connection), ``AUDIT_PUBLISH_BATCH`` records at most in one message.
    """

    def __init__(self, pool_size: int = 1, batch_size: int = 100):
        super().__init__()
        self.pool_size = pool_size
        self.batch_size = batch_size

    def setup(self) -> None:
        s = settings(self.container.config)
        self.amqp_uri = self.container.config["AMQP_URI"]
        self.timeout = float(s.get("AUDIT_CONFIRM_TIMEOUT_SECONDS", 5))
        self.size = max(int(s.get("AUDIT_PUBLISHERS", self.pool_size)), 1)
        self.batch_size = max(int(s.get("AUDIT_PUBLISH_BATCH", self.batch_size)), 1)
        self._idle: LightQueue = LightQueue()
        for _ in range(self.size):
            self._idle.put(ConfirmingPublisher(self.amqp_uri))
        self._batches = Coalescer(self._handle, self.size, self.batch_size)

    def stop(self) -> None:
        while not self._idle.empty():
            self._idle.get_nowait().close()

    kill = stop

    def _borrow(self) -> ConfirmingPublisher:
        try:
            return self._idle.get(timeout=self.timeout)
        except eventlet.queue.Empty:
            raise AuditUnavailable("the audit log is busy; try again") from None

    def ensure_ready(self) -> None:
        """Fail fast (AUDIT_UNAVAILABLE) when the broker cannot be reached, before a change is
        made that could then not be recorded."""
        publisher = self._borrow()
        try:
            if not publisher.connected:
                publisher._ensure()
        except Exception as exc:  # noqa: BLE001 - any connection failure means not ready
            publisher.close()
            log.warning("audit broker unreachable: %r", exc)
            raise AuditUnavailable("the audit log cannot be reached; nothing was changed") from exc
        finally:
            self._idle.put(publisher)

    def publish(self, record: dict[str, Any]) -> None:
        """Publish one record and wait for the broker's confirm; AuditUnavailable if it does not
        come (nack, unroutable, timeout or connection lost)."""
        self._batches.submit(record)

    def _handle(self, records: list[dict[str, Any]]) -> list[AuditUnavailable | None]:
        try:
            error = self._send(records)
        except Exception as exc:  # noqa: BLE001 - whoever waits must hear of it
            log.exception("audit batch of %d not published", len(records))
            error = AuditUnavailable("the audit log is unavailable; try again later")
            error.__cause__ = exc
        return [error] * len(records)

    def _send(self, records: list[dict[str, Any]]) -> AuditUnavailable | None:
        """One message (a record, or a list of them) confirmed; the error for its waiters."""
        if len(records) == 1:
            body: Any = records[0]
            headers = {"kezek.event_id": records[0]["id"],
                       "kezek.request_id": records[0].get("request_id") or ""}
        else:
            body, headers = records, {"kezek.records": len(records)}
        message = (AUDIT_EXCHANGE, ROUTING_KEY, body, headers)
        try:
            publisher = self._borrow()
        except AuditUnavailable as exc:
            return exc
        try:
            # a second try on a fresh connection: an idle connection may have been dropped by
            # the network. Should the first copy have arrived after all, the audit service
            # keeps one record per id.
            for attempt in (1, 2):
                try:
                    publisher.publish_batch([message], timeout=self.timeout, mandatory=True)
                    return None
                except PublishError as exc:
                    if attempt == 2:
                        log.error("%d audit record(s) not confirmed (first %s): %s",
                                  len(records), records[0]["id"], exc)
                        error = AuditUnavailable("the audit log is unavailable; try again later")
                        error.__cause__ = exc
                        return error
                    log.warning("%d audit record(s) (first %s): %s; retrying", len(records),
                                records[0]["id"], exc)
        finally:
            self._idle.put(publisher)
        return None
