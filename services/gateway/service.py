"""The gateway: the JSON API (api.md) over the services' RPC methods (docs/rpc.md).

It holds no business rules. Each handler below gets a checked :class:`~services.gateway.http.Call`
(signed in, role checked, input typed; see http.py for the pipeline and audit) and makes the one
RPC call the route stands for. Routes, roles and schemas are in routes.py; errors map to HTTP
in errors.py only.
"""

from __future__ import annotations

import logging
from typing import Any

from nameko.timer import timer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.wrappers import Response

from services.common.db import Database
from services.common.metrics import Metrics
from services.common.timers import run_exclusively
from services.gateway import auth, http, openapi, pages, storage, web
from services.gateway.cache import PublicCacheProvider
from services.gateway.http import Call, JsonPage, route
from services.gateway.routes import LANGUAGE
from services.gateway.sms import Sms
from services.gateway.upstream import Coalesced, Upstream

log = logging.getLogger(__name__)

HOUR = 3600.0
# languages of instruction (the LANGUAGE enum of the route table) with the pages' names for them
LANGUAGES = tuple(
    {"code": code, "name": {lang: pages.label(f"language.{code}", lang) for lang in ("kk", "ru")}}
    for code in LANGUAGE["enum"]
)


def page_of_list(items: list[Any], page: int = 1, page_size: int | None = None) -> dict:
    """A plain list as an api.md page."""
    items = list(items or [])
    size = page_size or max(len(items), 1)
    start = (page - 1) * size
    return {
        "items": items[start : start + size],
        "total": len(items),
        "page": page,
        "page_size": size,
    }


# web.WebPages is used through its module: `nameko run` takes every class with entrypoints at a
# service module's top level for a service
class GatewayService(web.WebPages):
    """The JSON API below; the web pages' entrypoints come from web.WebPages."""

    name = "gateway"

    db = Database("gateway", relay=False)
    metrics = Metrics()
    cache = PublicCacheProvider()
    sms = Sms()
    registry = Upstream("registry")
    queue_lookups = Coalesced("registry", "queue_lookups")
    applications = Upstream("applications")
    queue = Upstream("queue")
    allocation = Upstream("allocation")
    audit = Upstream("audit")

    # -- public registries ------------------------------------------------------------------------
    @route("list_organizations")
    def list_organizations(self, call: Call) -> dict:
        """``GET /api/v1/organizations?district=Almaly&language=kk`` -> page of organisations."""
        return self.registry.list_organizations(call.filters, call.page, call.page_size)

    @route("get_organization")
    def get_organization(self, call: Call) -> dict:
        """``GET /api/v1/organizations/7`` -> the organisation with ``groups``."""
        return self.registry.get_organization(call.path["id"])

    @route("list_queue")
    def list_queue(self, call: Call) -> dict:
        """``GET /api/v1/queue?district=Almaly&birth_year=2022`` -> page of queue rows (kept
        ``PUBLIC_CACHE_SECONDS`` by this process: the same for everyone, see cache.py)."""
        filters, page, size = call.filters, call.page, call.page_size
        key = ("list_queue", tuple(sorted(filters.items())), page, size)
        return call.cached(
            self.cache.get(key, lambda: JsonPage(self.registry.list_queue(filters, page, size)))
        )

    @route("queue_lookup")
    def queue_lookup(self, call: Call) -> dict:
        """``GET /api/v1/queue/lookup?application_number=A-000123`` -> one queue row."""
        number = call.query["application_number"]
        call.audit_target = f"applications/{number}"
        return self.queue_lookups(number)  # with the lookups of concurrent requests

    @route("list_vacancies")
    def list_vacancies(self, call: Call) -> dict:
        """``GET /api/v1/vacancies`` -> page of vacant places."""
        return self.registry.list_vacancies(call.filters, call.page, call.page_size)

    @route("list_releases")
    def list_releases(self, call: Call) -> dict:
        """``GET /api/v1/releases?from=2027-01-01&to=2027-01-31`` -> place-release protocol."""
        return self.registry.list_releases(call.filters, call.page, call.page_size)

    @route("list_directions")
    def list_directions(self, call: Call) -> dict:
        """``GET /api/v1/directions?from=2027-01-01`` -> issued-directions protocol."""
        return self.registry.list_directions(call.filters, call.page, call.page_size)

    @route("statistics")
    def statistics(self, call: Call) -> dict:
        """``GET /api/v1/statistics?district=Almaly`` -> anonymised statistics."""
        return self.registry.statistics(call.filters)

    @route("list_districts")
    def list_districts(self, call: Call) -> dict:
        """``GET /api/v1/districts`` -> ``{"items": [{"name": "Almaly"}], ...}``."""
        return page_of_list(self.registry.list_districts())

    @route("benefit_categories")
    def benefit_categories(self, call: Call) -> dict:
        """``GET /api/v1/benefit-categories`` -> ``{"items": [{"code", "tier", "name"}], ...}``."""
        return page_of_list(self.applications.benefit_categories())

    @route("languages")
    def languages(self, call: Call) -> dict:
        """``GET /api/v1/languages`` -> ``{"items": [{"code": "kk", "name": {"kk", "ru"}}]}``
        (the gateway's own reference data: no service call)."""
        return page_of_list([dict(item) for item in LANGUAGES])

    # -- sign-in ----------------------------------------------------------------------------------
    @route("request_code")
    def request_code(self, call: Call) -> dict:
        """``POST /api/v1/auth/otp {"phone": "+77011234567"}`` -> 202 ``{"status": "sent"}``."""
        phone = auth.normalize_phone(call.body["phone"])
        call.audit_target = f"phone:{phone}"
        s = call.settings
        sent = auth.request_code(
            self.db,
            self.sms,
            phone,
            secret=str(s["TOKEN_SECRET"]),
            ttl_seconds=float(s.get("OTP_TTL_SECONDS", 300)),
            max_per_hour=int(s.get("OTP_MAX_PER_HOUR", 10)),
        )
        return {"status": "sent", "expires_at": sent["expires_at"]}

    @route("issue_token")
    def issue_token(self, call: Call) -> dict:
        """``POST /api/v1/auth/token {"phone", "code"}`` -> ``{"token", "role", "expires_at"}``."""
        phone = auth.normalize_phone(call.body["phone"])
        call.audit_target = f"phone:{phone}"
        s = call.settings
        account = auth.exchange_code(
            self.db,
            phone,
            call.body["code"],
            secret=str(s["TOKEN_SECRET"]),
            max_attempts=int(s.get("OTP_MAX_ATTEMPTS", 5)),
        )
        token = auth.issue_token(
            str(s["TOKEN_SECRET"]), account, float(s.get("TOKEN_TTL_SECONDS", 43200))
        )
        call.audit_actor = auth.actor_id(
            {"role": account["role"], "sub": account["id"], "phone": account["phone"]}
        )
        return token

    # -- applicant --------------------------------------------------------------------------------
    @route("file_application")
    def file_application(self, call: Call) -> dict:
        """``POST /api/v1/applications`` (api.md "New application") -> 201
        ``{"application_number", "queue_name", "queue_number", "filed_at", "status"}``."""
        result = self.applications.file_application(
            call.body, call.actor, idempotency_key=call.scoped_idempotency_key
        )
        if isinstance(result, dict) and result.get("application_number"):
            call.audit_target = f"applications/{result['application_number']}"
        return result

    @route("my_applications")
    def my_applications(self, call: Call) -> dict:
        """``GET /api/v1/applications`` -> page of the applicant's own applications."""
        return page_of_list(
            self.applications.my_applications(call.actor), call.page, call.page_size
        )

    @route("get_application")
    def get_application(self, call: Call) -> dict:
        """``GET /api/v1/applications/A-000123`` -> the application with ``history``."""
        return self.applications.get_application(call.path["number"], call.actor)

    @route("withdraw")
    def withdraw(self, call: Call) -> dict:
        """``POST /api/v1/applications/A-000123/withdraw`` -> the application (withdrawn)."""
        return self.applications.withdraw(call.path["number"], call.actor)

    @route("postpone")
    def postpone(self, call: Call) -> dict:
        """``POST /api/v1/applications/A-000123/postpone {"until": "2027-08-01"}``."""
        return self.queue.postpone(call.path["number"], call.body["until"], call.actor)

    @route("resume")
    def resume(self, call: Call) -> dict:
        """``POST /api/v1/applications/A-000123/resume`` -> the queue row."""
        return self.queue.resume(call.path["number"], call.actor)

    @route("claim_vacancy")
    def claim_vacancy(self, call: Call) -> dict:
        """``POST /api/v1/vacancies/<place_id>/claim {"application_number"}`` ->
        ``{"status": "pooled"|"issued", "direction"}``."""
        return self.allocation.claim_vacancy(
            call.path["place_id"], call.body["application_number"], call.actor
        )

    @route("decline")
    def decline(self, call: Call) -> dict:
        """``POST /api/v1/directions/D000000042/decline`` -> the direction (declined)."""
        return self.allocation.decline(call.path["number"], call.actor)

    @route("my_events")
    def my_events(self, call: Call) -> dict:
        """``GET /api/v1/me/events`` -> page of feed entries ``{"at", "kind", "text"}``."""
        return self.applications.feed(call.actor, call.page, call.page_size)

    # -- organisation staff -----------------------------------------------------------------------
    @route("release_places")
    def release_places(self, call: Call) -> dict:
        """``POST /api/v1/organizations/7/groups/31/releases {"places": 2}`` -> 201
        ``{"place_ids": [...]}``."""
        return self.allocation.release_places(
            call.path["id"],
            call.path["group_id"],
            call.body["places"],
            call.actor,
            idempotency_key=call.scoped_idempotency_key,
        )

    @route("enroll")
    def enroll(self, call: Call) -> dict:
        """``POST /api/v1/directions/D000000042/enroll`` -> the direction (enrolled)."""
        return self.allocation.enroll(call.path["number"], call.actor)

    # -- department officer -----------------------------------------------------------------------
    @route("create_organization")
    def create_organization(self, call: Call) -> dict:
        """``POST /api/v1/organizations {"name", "address", "district", "ownership", "kind",
        "languages", "monthly_fee_kzt"}`` -> 201 organisation."""
        result = self.registry.create_organization(call.body, call.actor)
        if isinstance(result, dict) and result.get("id") is not None:
            call.audit_target = f"organizations/{result['id']}"
        return result

    @route("update_organization")
    def update_organization(self, call: Call) -> dict:
        """``PUT /api/v1/organizations/7 {...}`` -> the organisation."""
        return self.registry.update_organization(call.path["id"], call.body, call.actor)

    @route("add_group")
    def add_group(self, call: Call) -> dict:
        """``POST /api/v1/organizations/7/groups {"name", "group_type", "birth_year",
        "language", "capacity"}`` -> 201 group."""
        return self.registry.add_group(call.path["id"], call.body, call.actor)

    @route("verify_benefit")
    def verify_benefit(self, call: Call) -> dict:
        """``POST /api/v1/applications/A-000123/benefit/verify {"approved": true, "note"}``."""
        return self.applications.verify_benefit(
            call.path["number"], call.body["approved"], call.body.get("note"), call.actor
        )

    @route("stop_list_enter")
    def stop_list_enter(self, call: Call) -> dict:
        """``POST /api/v1/applications/A-000123/stop-list {"reason": "documents_check",
        "until": null}`` -> the queue row."""
        return self.queue.stop_list_enter(
            call.path["number"], call.body["reason"], call.body.get("until"), call.actor
        )

    @route("stop_list_exit")
    def stop_list_exit(self, call: Call) -> dict:
        """``POST /api/v1/applications/A-000123/stop-list/exit`` -> the queue row."""
        return self.queue.stop_list_exit(call.path["number"], call.actor)

    @route("revoke")
    def revoke(self, call: Call) -> dict:
        """``POST /api/v1/directions/D000000042/revoke {"reason": "..."}`` -> the direction."""
        return self.allocation.revoke(call.path["number"], call.body["reason"], call.actor)

    # -- auditor ----------------------------------------------------------------------------------
    @route("audit_log")
    def audit_log(self, call: Call) -> dict:
        """``GET /api/v1/audit?actor=applicant:+77011234567&from=2027-01-01`` -> page of
        records (CSV with ?format=csv)."""
        return self.audit.query(call.filters, call.page, call.page_size)

    @route("audit_verify")
    def audit_verify(self, call: Call) -> dict:
        """``GET /api/v1/audit/verify`` -> ``{"ok": true, "records": N, "head": "..."}``."""
        return self.audit.verify()

    # -- document, operations, pages ------------------------------------------------------------
    @route("openapi")
    def openapi(self, call: Call) -> Response:
        """``GET /api/v1/openapi.json`` -> this API's OpenAPI 3 document."""
        return Response(openapi.document_json(), content_type=http.JSON_TYPE)

    @route("healthz")
    def healthz(self, call: Call) -> dict:
        """``GET /healthz`` -> ``{"alive": true}``."""
        return {"alive": True, "service": self.name}

    @route("readyz")
    def readyz(self, call: Call) -> Response:
        """``GET /readyz`` -> 200 when broker and database answer, else 503."""
        result = self.metrics.readiness()
        return http.json_response(result, 200 if result["ready"] else 503)

    @route("metrics")
    def prometheus(self, call: Call) -> Response:
        """``GET /metrics`` -> Prometheus text format."""
        self.metrics.refresh_dlq_depth()
        return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    @route("not_found")
    def not_found(self, call: Call, path: str | None = None) -> None:
        """Any other path: 404 (or 405 when the path exists for another method)."""
        http.not_found(call)

    # -- housekeeping ---------------------------------------------------------------------------
    @timer(interval=HOUR)
    def purge_expired(self) -> None:
        """Forget spent sign-in codes and old idempotency keys (one instance at a time)."""
        db = self.db

        def purge() -> None:
            with db.transaction() as tx:
                codes = storage.delete_old_codes(tx, 2 * HOUR)
                keys = storage.delete_old_idempotency_keys(tx, 24 * HOUR)
            if codes or keys:
                log.info("purged %d sign-in codes and %d idempotency keys", codes, keys)

        run_exclusively(db, "purge_expired", purge)
