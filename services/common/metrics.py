"""Prometheus metrics, liveness and readiness: one HTTP port per service.

``metrics = Metrics()`` on a service class serves ``/metrics``, ``/healthz`` and ``/readyz`` on
the port configured under ``KEZEK.METRICS_PORTS.<service>`` (0 turns it off) and counts every
entrypoint call by method and outcome. Names carry the ``kezek_`` prefix and base units; labels
never carry a person's or an organisation's id.
"""

from __future__ import annotations

import json
import logging
import time

import eventlet
from eventlet import wsgi
from nameko.extensions import DependencyProvider
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import text

log = logging.getLogger(__name__)
# every entrypoint call: `LOGGING.loggers: {kezek.calls: {level: WARNING}}` silences it
call_log = logging.getLogger("kezek.calls")

CONSUMED = Counter("kezek_messages_consumed_total", "Event messages handled, by outcome",
                   ["service", "handler", "outcome"])
HANDLING_SECONDS = Histogram("kezek_message_handling_seconds", "Event handling time",
                             ["service", "handler"])
IN_PROGRESS = Gauge("kezek_messages_in_progress", "Event messages being handled", ["service"])
LAST_PROCESSED = Gauge("kezek_last_processed_timestamp_seconds",
                       "When the service last handled an event", ["service"])
OUTBOX_PENDING = Gauge("kezek_outbox_pending", "Outbox rows not yet published", ["service"])
OUTBOX_OLDEST_AGE = Gauge("kezek_outbox_oldest_pending_age_seconds",
                          "Age of the oldest unpublished outbox row", ["service"])
OUTBOX_SENT = Counter("kezek_outbox_published_total", "Outbox rows published", ["service"])
OUTBOX_PUBLISH_FAILURES = Counter("kezek_publish_confirm_failures_total",
                                  "Batches the broker did not confirm", ["service"])
RPC_CALLS = Counter("kezek_rpc_calls_total", "Entrypoint calls by method and outcome",
                    ["service", "method", "outcome"])
RPC_SECONDS = Histogram("kezek_rpc_duration_seconds", "Entrypoint call duration",
                        ["service", "method"])
DLQ_DEPTH = Gauge("kezek_dead_letter_messages", "Messages waiting in the dead-letter queue")
HTTP_REQUESTS = Counter("kezek_http_requests_total", "Gateway requests by route and status",
                        ["route", "status"])
HTTP_SECONDS = Histogram("kezek_http_request_duration_seconds", "Gateway request latency",
                         ["route"])
AUDIT_LAST_VERIFIED = Gauge("kezek_audit_chain_last_verified_timestamp_seconds",
                            "When the audit hash chain was last verified intact")
AUDIT_STORED = Counter("kezek_audit_records_stored_total", "Audit records stored")

_servers: dict[int, object] = {}


class Metrics(DependencyProvider):
    """Serves metrics and health for its service and counts entrypoint calls."""

    def setup(self):
        from services.common.config import settings

        self.service = self.container.service_name
        ports = settings(self.container.config).get("METRICS_PORTS", {}) or {}
        self.port = int(ports.get(self.service, 0) or 0)
        self.lag_bound = float(
            settings(self.container.config).get("OUTBOX_LAG_READY_SECONDS", 60))
        self._starts: dict[int, float] = {}
        # labelled series exist from the start (at 0), so a scrape shows them before any event
        IN_PROGRESS.labels(self.service)

    def start(self):
        if self.port and self.port not in _servers:
            try:
                sock = eventlet.listen(("0.0.0.0", self.port))
            except OSError as exc:
                log.warning("metrics port %s unavailable: %s", self.port, exc)
                return
            _servers[self.port] = sock
            self._server_gt = self.container.spawn_managed_thread(
                lambda: wsgi.server(sock, self._app, log_output=False),
                identifier=f"metrics:{self.port}")

    def stop(self):
        sock = _servers.pop(self.port, None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
        # the server loop does not end when its socket closes; end it here rather than have
        # the container kill it with a warning on every shutdown
        gt, self._server_gt = getattr(self, "_server_gt", None), None
        if gt is not None:
            gt.kill()

    # -- health ----------------------------------------------------------------------------------
    def _database(self):
        for ext in self.container.dependencies:
            if ext.__class__.__name__ == "Database":
                return ext
        return None

    def readiness(self) -> dict:
        checks = {}
        from kombu import Connection

        try:
            with Connection(self.container.config["AMQP_URI"], connect_timeout=2) as conn:
                conn.connect()
            checks["broker"] = True
        except Exception:  # noqa: BLE001
            checks["broker"] = False
        db = self._database()
        if db is not None:
            try:
                with db.engine.connect() as c:
                    c.execute(text("SELECT 1"))
                checks["database"] = True
                if db.relay is not None:
                    _, age = db.relay.lag()
                    checks["outbox_lag_seconds"] = round(age, 3)
                    checks["outbox"] = age < self.lag_bound
            except Exception:  # noqa: BLE001
                checks["database"] = False
        ok = all(v for k, v in checks.items() if isinstance(v, bool))
        return {"ready": ok, "checks": checks}

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            self.refresh_dlq_depth()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest()]
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps({"alive": True, "service": self.service}).encode()]
        if path == "/readyz":
            result = self.readiness()
            status = "200 OK" if result["ready"] else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(result).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    def refresh_dlq_depth(self) -> None:
        """Set kezek_dead_letter_messages from the broker (before each scrape)."""
        from kombu import Connection

        from services.common.amqp import DLQ

        try:
            with Connection(self.container.config["AMQP_URI"], connect_timeout=2) as conn:
                _, count, _ = conn.default_channel.queue_declare(DLQ, passive=True)
            DLQ_DEPTH.set(count)
        except Exception:  # noqa: BLE001 - broker away: readiness reports it
            pass

    # -- entrypoint accounting -----------------------------------------------------------------
    def worker_setup(self, worker_ctx):
        from services.common.logs import request_id_var

        # the request id travels in nameko's context headers (RPC) and event headers (outbox)
        request_id_var.set(worker_ctx.data.get("request_id") or None)
        self._starts[id(worker_ctx)] = time.monotonic()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        method = worker_ctx.entrypoint.method_name
        outcome = "ok" if exc_info is None else type(exc_info[1]).__name__
        RPC_CALLS.labels(self.service, method, outcome).inc()
        started = self._starts.pop(id(worker_ctx), None)
        elapsed = time.monotonic() - started if started is not None else None
        if elapsed is not None:
            RPC_SECONDS.labels(self.service, method).observe(elapsed)
        self._log_call(worker_ctx.entrypoint, method, outcome, result, elapsed)

    def _log_call(self, entrypoint, method: str, outcome: str, result, elapsed) -> None:
        """One line per call or event handled, carrying the request id (see worker_setup).
        The gateway writes its own line per HTTP request; timers only at debug level."""
        from nameko.timer import Timer
        from nameko.web.handlers import HttpRequestHandler

        if isinstance(entrypoint, HttpRequestHandler) or getattr(entrypoint, "batch", False):
            return  # a batched event handler writes a line per message itself
        level = logging.DEBUG if isinstance(entrypoint, Timer) else logging.INFO
        if not call_log.isEnabledFor(level):
            return
        if outcome == "ok" and isinstance(result, str) and len(result) <= 40:
            outcome = result  # an event handler's "duplicate", "stale", "issued"...
        fields = {"service": self.service, "method": method, "outcome": outcome}
        if elapsed is not None:
            fields["duration_ms"] = round(elapsed * 1000, 1)
        call_log.log(level, "%s.%s %s", self.service, method, outcome, extra={"fields": fields})

    def get_dependency(self, worker_ctx):
        return self
