"""The audit service: stores every audit record in an append-only, hash-chained log and answers
auditors' queries. Records arrive on the ``kezek.audit`` queue (published ``mandatory`` by the
gateway and through every service's outbox) and are stored by :class:`AuditConsumer`.

The gateway lets only auditors reach these methods; no other service exposes them.

Retention: ``KEZEK.AUDIT_RETENTION_DAYS`` (null = keep forever) is read and reported by
``verify()``, but the service never deletes anything: the log is append-only (triggers refuse
DELETE). Removing records older than the period is an operator's decision, taken outside the
service, and it breaks the chain below the oldest record kept.
"""

from __future__ import annotations

from typing import Any

from nameko.dependency_providers import Config
from nameko.timer import timer

from services.audit import commands, domain
from services.audit.consumer import AuditConsumer
from services.common import metrics as prometheus
from services.common.config import settings
from services.common.db import Database
from services.common.metrics import Metrics
from services.common.rpc import rpc
from services.common.timers import run_exclusively

CHECKPOINT_SECONDS = 60


class AuditService:
    name = "audit"

    db = Database("audit")
    metrics = Metrics()
    consumer = AuditConsumer()
    config = Config()

    @rpc
    def query(self, filters: dict[str, Any] | None = None, page: int = 1,
              page_size: int = 50) -> dict[str, Any]:
        """Audit records, newest first.

        ``query({"actor": "applicant:+77010000000", "from": "2027-01-01"}, 1, 50)`` ->
        ``{"items": [{"id", "seq", "at", "request_id", "actor", "role", "action", "target",
        "outcome", "ip", "forwarded_for", "user_agent", "accept_language", "fingerprint",
        "server_fingerprint", "body_digest", "service", "prev_hash", "hash"}], "total": 1,
        "page": 1, "page_size": 50}``
        """
        return commands.query(self.db, filters, page, page_size, self._tz())

    @rpc
    def devices_of(self, actor: str) -> list[dict[str, Any]]:
        """Devices an account used: ``[{"fingerprint", "first_seen", "last_seen", "records",
        "ips"}]``, most recently used first."""
        return commands.devices_of(self.db, actor)

    @rpc
    def actions_of_device(self, fingerprint: str, page: int = 1,
                          page_size: int = 50) -> dict[str, Any]:
        """Records from one device fingerprint (a page, newest first) plus ``actors``: the
        accounts seen on it."""
        return commands.actions_of_device(self.db, fingerprint, page, page_size)

    @rpc
    def verify(self) -> dict[str, Any]:
        """Check the hash chain and the latest checkpoint.

        ``{"ok": true, "records": 1200, "head": "9f2c...", "retention_days": null}`` or
        ``{"ok": false, "records": 1199, "broken": {"seq": 17, "id": "...",
        "problem": "content changed"}}``
        """
        result = commands.verify(self.db)
        if result["ok"]:
            prometheus.AUDIT_LAST_VERIFIED.set_to_current_time()
        result["retention_days"] = domain.retention_days(
            settings(self.config).get("AUDIT_RETENTION_DAYS"))
        return result

    @timer(interval=CHECKPOINT_SECONDS)
    def take_checkpoint(self) -> None:
        """Record and publish the chain's head (one instance at a time)."""
        run_exclusively(self.db, "checkpoint", lambda: commands.checkpoint(self.db))

    def _tz(self) -> str:
        return settings(self.config).get("TIMEZONE") or "Asia/Almaty"
