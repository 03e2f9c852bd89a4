"""The applications service: applicants, children, applications, preferences, benefit claims,
withdrawal and the parent's event feed.

Entrypoints validate, call one function of :mod:`services.applications.commands` and return its
plain result. Interface: docs/rpc.md, section "applications".
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import eventlet
from nameko.dependency_providers import Config
from nameko.exceptions import deserialize_to_instance
from nameko.rpc import RpcProxy

from services.applications import commands
from services.common import contracts
from services.common.config import settings
from services.common.db import Database, each
from services.common.errors import UpstreamTimeout
from services.common.events import reliable_handler
from services.common.metrics import Metrics
from services.common.rpc import rpc

log = logging.getLogger(__name__)

# A feed text reads fine without the organisation's name, and an application without its live
# queue number: neither waits the full RPC timeout for a service that is down.
NAME_LOOKUP_TIMEOUT_SECONDS = 2.0
QUEUE_LOOKUP_TIMEOUT_SECONDS = 3.0
# organisations' names for the feed, kept a while per process: one registry call per direction
# was an eighth of the registry's work in a release storm, for a name that rarely changes
NAME_CACHE_SECONDS = 300.0
_names: dict[tuple[str, int], tuple[float, str]] = {}


@deserialize_to_instance
class CallTimedOut(UpstreamTimeout):
    """Another service did not answer an RPC call within RPC_TIMEOUT_SECONDS (504 at the
    gateway, UPSTREAM_TIMEOUT)."""


class ApplicationsService:
    name = "applications"

    db = Database("applications")
    metrics = Metrics()
    registry_rpc = RpcProxy("registry")
    queue_rpc = RpcProxy("queue")
    config = Config()

    # -- settings and calls to other services -----------------------------------------------------
    @property
    def _settings(self) -> dict[str, Any]:
        return settings(self.config)

    @property
    def _tz(self) -> str:
        return self._settings.get("TIMEZONE", commands.DEFAULT_TZ)

    @property
    def _rpc_timeout(self) -> float:
        return float(self._settings.get("RPC_TIMEOUT_SECONDS", 10))

    def _call(self, method, *args, timeout: float | None = None):
        """An RPC call that gives up after RPC_TIMEOUT_SECONDS (raises CallTimedOut)."""
        timeout = timeout or self._rpc_timeout
        error = CallTimedOut(f"{method.service_name}.{method.method_name} did not answer "
                             f"within {timeout:g}s")
        with eventlet.Timeout(timeout, error):
            return method(*args)

    def _check_preferences(self, organization_ids: list[int], birth_year: int, language: str,
                           queue_type: str) -> None:
        # the registry's BadInput (field preferred_organizations) reaches the caller as is
        self._call(self.registry_rpc.check_preferences, organization_ids, birth_year, language,
                   queue_type)

    def _enqueue(self, event_data: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self._call(self.queue_rpc.enqueue, event_data)
        except Exception as exc:  # noqa: BLE001 - the application_filed event enqueues it
            log.warning("queue.enqueue failed: %r", exc)
            return None

    def _lookup(self, application_number: str) -> dict[str, Any] | None:
        try:
            return self._call(self.queue_rpc.lookup, application_number,
                              timeout=min(self._rpc_timeout, QUEUE_LOOKUP_TIMEOUT_SECONDS))
        except Exception as exc:  # noqa: BLE001 - the queue number is shown when known
            log.info("queue.lookup %s failed: %r", application_number, exc)
            return None

    def _organization_name(self, organization_id: int) -> str | None:
        """The organisation's name for a feed entry (None if the registry cannot say now); a
        rename reaches new entries within ``ORGANIZATION_NAME_CACHE_SECONDS``."""
        key = (self.config["DB_URL"], organization_id)
        now = time.monotonic()
        cached = _names.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            organization = self._call(
                self.registry_rpc.get_organization, organization_id,
                timeout=min(self._rpc_timeout, NAME_LOOKUP_TIMEOUT_SECONDS))
        except Exception as exc:  # noqa: BLE001 - the feed text reads fine without it
            log.info("registry.get_organization %s failed: %r", organization_id, exc)
            return None
        name = (organization or {}).get("name")
        if name is not None:
            seconds = float(self._settings.get("ORGANIZATION_NAME_CACHE_SECONDS",
                                               NAME_CACHE_SECONDS))
            _names[key] = (now + seconds, name)
        return name

    # -- RPC --------------------------------------------------------------------------------------
    @rpc
    def file_application(self, data: dict, actor: dict, idempotency_key: str | None = None) -> dict:
        """File an application (api.md "New application").

        ``{"applicant": {"iin": "900101301233", "full_name": "...", "phone": "+77011234567"},
        "child": {"iin": "220315600126", "full_name": "...", "birth_date": "2022-03-15"},
        "queue_type": "general", "language": "kk", "district": "Almaty",
        "preferred_organizations": [12, 15], "desired_start": "2027-09-01", "benefit": null}``
        -> ``{"application_number": "A000000042", "queue_name": "Almaty/general/2022",
        "queue_number": 17, "filed_at": "2026-11-25T03:00:00.123456+00:00",
        "status": "queued"}``. ``queue_number`` is null when the queue did not answer in time.
        """
        return commands.file_application(
            self.db, data, actor,
            check_preferences=self._check_preferences,
            idempotency_key=idempotency_key,
            enqueue=self._enqueue,
            max_preferred=int(self._settings.get("MAX_PREFERRED_ORGANIZATIONS", 3)),
            tz=self._tz,
        )

    @rpc
    def my_applications(self, actor: dict) -> list[dict]:
        """The signed-in applicant's applications with their live queue numbers."""
        return commands.my_applications(self.db, actor, lookup=self._lookup)

    @rpc
    def get_application(self, application_number: str, actor: dict) -> dict:
        """One application with ``history``; an applicant may read only their own."""
        return commands.get_application(self.db, application_number, actor, lookup=self._lookup)

    @rpc
    def withdraw(self, application_number: str, actor: dict) -> dict:
        """Withdraw an application for good; Conflict ALREADY_WITHDRAWN the second time."""
        return commands.withdraw(self.db, application_number, actor, tz=self._tz)

    @rpc
    def verify_benefit(self, application_number: str, approved: bool, note: str | None,
                       actor: dict) -> dict:
        """A department officer confirms (``approved: true``) or refuses the benefit claim."""
        return commands.verify_benefit(self.db, application_number, approved, note, actor,
                                       tz=self._tz)

    @rpc
    def feed(self, actor: dict, page: int = 1, page_size: int = 50) -> dict:
        """The actor's event feed, newest first: ``{"items": [{"at", "kind",
        "application_number", "text": {"kk", "ru"}}], "total", "page", "page_size"}``."""
        return commands.feed(self.db, actor, page, page_size)

    @rpc
    def benefit_categories(self) -> list[dict]:
        """``[{"code": "large_families", "tier": "first_priority", "name": {"kk", "ru"}}]``."""
        return commands.benefit_categories(self.db)

    # -- events -----------------------------------------------------------------------------------
    # Batched (services.common.events): the events delivered while a batch is handled go
    # next, together, in one transaction (services.common.db.each), which takes the write
    # lock once for all of them.
    @reliable_handler("queue", "queue_entry_changed", batch=True)
    def on_queue_entry_changed(self, payloads: list[dict]) -> list[str]:
        numbers = contracts.batch_values(payloads, "application_number")

        def apply(db, payload):
            data = contracts.parse(payload, "queue", "queue_entry_changed")
            result = commands.apply_queue_entry(db, payload["event_id"], data, tz=self._tz,
                                                batch_numbers=numbers)
            return "duplicate" if result == "duplicate" else "ok"

        return each(self.db, payloads, apply, claim="applications.on_queue_entry_changed")

    @reliable_handler("allocation", "direction_issued", batch=True)
    def on_direction_issued(self, payloads: list[dict]) -> list[str]:
        return self._on_directions(payloads, "direction_issued")

    @reliable_handler("allocation", "direction_changed", batch=True)
    def on_direction_changed(self, payloads: list[dict]) -> list[str]:
        return self._on_directions(payloads, "direction_changed")

    def _on_directions(self, payloads: list[dict], event_type: str) -> list[str]:
        numbers = contracts.batch_values(payloads, "application_number")
        names = {}
        if len(payloads) > 1:
            # asked before the transaction: never hold the write lock across an RPC
            for payload in payloads:
                data = payload.get("data") if isinstance(payload, dict) else None
                if isinstance(data, dict) and data.get("status") == "issued" \
                        and not data.get("organization_name"):
                    with contextlib.suppress(TypeError, ValueError):
                        organization_id = int(data.get("organization_id"))
                        if organization_id not in names:
                            names[organization_id] = self._organization_name(organization_id)

        def apply(db, payload):
            data = contracts.parse(payload, "allocation", event_type)
            result = commands.apply_direction(
                db, f"applications.on_{event_type}", payload["event_id"], data,
                organization_name=names.get if len(payloads) > 1 else self._organization_name,
                tz=self._tz, batch_numbers=numbers)
            return "duplicate" if result == "duplicate" else "ok"

        return each(self.db, payloads, apply, claim=f"applications.on_{event_type}")
