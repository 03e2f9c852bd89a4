"""Application commands: plain functions over a DatabaseAccess, one transaction each.

The Nameko service, the CLI and the demo loader call these same functions. Anything that
needs another service (the registry's preference check, the queue's enqueue, an organisation's
name) comes in as a callable, so callers without a broker can pass their own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from typing import Any, Callable

from sqlalchemy.exc import IntegrityError

from services.applications import domain, feed_texts, storage
from services.common import contracts
from services.common.db import DatabaseAccess
from services.common.errors import (BadInput, Conflict, DomainError, Forbidden, NotFound,
                                    RuleRefused)

log = logging.getLogger(__name__)

SOURCE = "applications"
DEFAULT_TZ = "Asia/Almaty"
MAX_PAGE_SIZE = 500
ACTIVE_INDEX = "applications_one_active_per_child"

CheckPreferences = Callable[[list[int], int, str, str], None]
Enqueue = Callable[[dict[str, Any]], "dict[str, Any] | None"]
Lookup = Callable[[str], "dict[str, Any] | None"]


def _request_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > 200:
        raise BadInput("the idempotency key must be a non-empty string of at most 200 "
                       "characters", field="idempotency_key")
    return key


def _replayed(stored, request_hash: str) -> dict[str, Any]:
    if stored.request_hash != request_hash:
        raise Conflict("this idempotency key was used for a different request",
                       field="idempotency_key", code="IDEMPOTENCY_KEY_REUSED")
    return dict(stored.result)


def _duplicate(number: str) -> Conflict:
    return Conflict(f"the child already has an active application {number} in this queue type",
                    field="child.iin", code="DUPLICATE_APPLICATION")


def file_application(db: DatabaseAccess, data: Any, actor: dict[str, Any], *,
                     check_preferences: CheckPreferences | None,
                     idempotency_key: str | None = None,
                     enqueue: Enqueue | None = None,
                     max_preferred: int = 3, tz: str = DEFAULT_TZ) -> dict[str, Any]:
    """File a new application (api.md "New application").

    Validates, asks ``check_preferences(ids, birth_year, language, queue_type)`` (raises
    BadInput), then in one transaction stores the application, its journal row, the
    ``application_filed`` event and the parent's feed entry. After the commit it calls
    ``enqueue(event data)`` for the queue number; if that is missing or fails the number is
    None (the queue enqueues from the event anyway). Returns ``{"application_number",
    "queue_name", "queue_number", "filed_at", "status"}``.
    """
    actor = domain.check_actor(actor)
    request_hash = _request_hash(data)
    if idempotency_key is not None:
        idempotency_key = _check_key(idempotency_key)
        with db.read() as tx:
            stored = storage.idempotency_get(tx, actor["id"], idempotency_key)
        if stored is not None and stored.result is not None:
            return _with_queue_number(db, _replayed(stored, request_hash), enqueue)

    with db.read() as tx:
        today = storage.local_today(tx, tz)
        tiers = {c["code"]: c["tier"] for c in storage.benefit_categories(tx)}
    cmd = domain.validate_new_application(data, today=today, categories=tiers,
                                          max_preferred=max_preferred)
    applicant_id = domain.applicant_id_for(actor, cmd.applicant_phone)
    if check_preferences is not None:
        check_preferences(list(cmd.preferred_organizations), cmd.birth_year, cmd.language,
                          cmd.queue_type)

    try:
        with db.transaction() as tx:
            if idempotency_key is not None and not storage.idempotency_claim(
                    tx, actor["id"], idempotency_key, request_hash):
                # a concurrent request with the same key committed first
                stored = storage.idempotency_get(tx, actor["id"], idempotency_key)
                result = _replayed(stored, request_hash)
            else:
                result = _file(tx, cmd, applicant_id, actor, tz)
                if idempotency_key is not None:
                    storage.idempotency_store(tx, actor["id"], idempotency_key, result)
    except IntegrityError as exc:
        # the partial unique index caught a duplicate the check did not see
        if ACTIVE_INDEX not in str(exc.orig):
            raise
        with db.read() as tx:
            number = storage.active_application(tx, cmd.child_iin, cmd.queue_type)
        raise _duplicate(number or "(being filed)") from None
    return _with_queue_number(db, result, enqueue)


def _file(tx, cmd: domain.NewApplication, applicant_id: str, actor: dict[str, Any],
          tz: str) -> dict[str, Any]:
    storage.lock_writes(tx)
    existing = storage.active_application(tx, cmd.child_iin, cmd.queue_type)
    if existing is not None:
        raise _duplicate(existing)
    storage.upsert_applicant(tx, applicant_id, cmd)
    storage.upsert_child(tx, cmd)
    number, filed_at = storage.next_number(tx)
    storage.insert_application(tx, number, applicant_id, cmd, filed_at)
    row = storage.get_application(tx, number)
    event = storage.filed_event_data(row)
    tx.journal(storage.stream(number), "application_filed",
               {**event, "benefit_document": cmd.benefit_document,
                "child_iin": cmd.child_iin, "applicant_iin": cmd.applicant_iin,
                "applicant_phone": cmd.applicant_phone, "filed_by": actor["id"]})
    tx.publish(contracts.envelope(SOURCE, "application_filed", event, actor.get("request_id")))
    storage.add_feed(tx, applicant_id, number, "filed",
                     feed_texts.render("filed", tz, number=number, queue_name=cmd.queue_name))
    return {"application_number": number, "queue_name": cmd.queue_name, "queue_number": None,
            "filed_at": storage.iso(filed_at), "status": "queued"}


def _with_queue_number(db: DatabaseAccess, result: dict[str, Any],
                       enqueue: Enqueue | None) -> dict[str, Any]:
    """Ask the queue (idempotent by number) for the queue number; None if it cannot answer."""
    result = dict(result)
    if enqueue is None:
        return result
    with db.read() as tx:
        row = storage.get_application(tx, result["application_number"])
    try:
        answer = enqueue(storage.filed_event_data(row))
    except Exception as exc:  # noqa: BLE001 - the event path enqueues it anyway
        log.warning("enqueue of %s failed: %r", result["application_number"], exc)
        answer = None
    if answer:
        result["queue_number"] = answer.get("queue_number")
        result["queue_name"] = answer.get("queue_name") or result["queue_name"]
    return result


# -- reading --------------------------------------------------------------------------------------

def _with_live_number(app: dict[str, Any], lookup: Lookup | None) -> dict[str, Any]:
    if lookup is not None and app["status"] in ("queued", "offered", "stop_listed"):
        try:
            row = lookup(app["application_number"])
        except Exception as exc:  # noqa: BLE001 - the queue number is shown when known
            log.warning("queue lookup of %s failed: %r", app["application_number"], exc)
            row = None
        if row:
            app["queue_number"] = row.get("queue_number")
    return app


def my_applications(db: DatabaseAccess, actor: dict[str, Any],
                    lookup: Lookup | None = None) -> list[dict[str, Any]]:
    """The actor's own applications, oldest first, with live queue numbers when known."""
    actor = domain.check_actor(actor)
    with db.read() as tx:
        rows = storage.applications_of(tx, actor["id"])
    return [_with_live_number(storage.application_dict(r), lookup) for r in rows]


def _load(tx, number: Any, for_update: bool = False):
    if not isinstance(number, str) or not number:
        raise BadInput("an application number is required", field="application_number")
    row = storage.get_application(tx, number, for_update=for_update)
    if row is None:
        raise NotFound(f"no application {number}", field="application_number",
                       code="APPLICATION_NOT_FOUND")
    return row


def get_application(db: DatabaseAccess, number: str, actor: dict[str, Any],
                    lookup: Lookup | None = None) -> dict[str, Any]:
    """One application with its history (journal rows); applicants see only their own."""
    actor = domain.check_actor(actor)
    with db.read() as tx:
        row = _load(tx, number)
        domain.check_can_read(actor, row["applicant_id"])
        app = storage.application_dict(row)
        app["history"] = storage.history(tx, number)
    return _with_live_number(app, lookup)


def benefit_categories(db: DatabaseAccess) -> list[dict[str, Any]]:
    with db.read() as tx:
        return storage.benefit_categories(tx)


def feed(db: DatabaseAccess, actor: dict[str, Any], page: Any = 1,
         page_size: Any = 50) -> dict[str, Any]:
    """The actor's feed entries, newest first."""
    actor = domain.check_actor(actor)
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise BadInput("page starts at 1", field="page")
    if (isinstance(page_size, bool) or not isinstance(page_size, int)
            or not 1 <= page_size <= MAX_PAGE_SIZE):
        raise BadInput(f"page_size must be 1..{MAX_PAGE_SIZE}", field="page_size")
    with db.read() as tx:
        return storage.feed_page(tx, actor["id"], page, page_size)


# -- changes by people ----------------------------------------------------------------------------

def withdraw(db: DatabaseAccess, number: str, actor: dict[str, Any],
             tz: str = DEFAULT_TZ) -> dict[str, Any]:
    """Withdraw an application (final). Conflict ALREADY_WITHDRAWN the second time."""
    actor = domain.check_actor(actor)
    with db.transaction() as tx:
        storage.lock_writes(tx)
        row = _load(tx, number, for_update=True)
        domain.check_can_withdraw(actor, row["applicant_id"], row["status"])
        at = storage.set_status(tx, number, "withdrawn")
        tx.journal(storage.stream(number), "application_withdrawn",
                   {"application_number": number, "previous_status": row["status"],
                    "withdrawn_at": storage.iso(at), "by": actor["id"], "role": actor["role"]})
        tx.publish(contracts.envelope(SOURCE, "application_withdrawn",
                                      {"application_number": number,
                                       "withdrawn_at": storage.iso(at)},
                                      actor.get("request_id")))
        storage.add_feed(tx, row["applicant_id"], number, "withdrawn",
                         feed_texts.render("withdrawn", tz, number=number))
        return storage.application_dict(storage.get_application(tx, number))


def verify_benefit(db: DatabaseAccess, number: str, approved: Any, note: Any,
                   actor: dict[str, Any], tz: str = DEFAULT_TZ) -> dict[str, Any]:
    """An officer confirms or refuses the benefit claim; only a confirmed one gives a tier."""
    actor = domain.check_actor(actor)
    if not isinstance(approved, bool):
        raise BadInput("approved must be true or false", field="approved")
    if note is not None and not isinstance(note, str):
        raise BadInput("note must be a string", field="note")
    note = " ".join(note.split())[:1000] if note else None
    with db.transaction() as tx:
        storage.lock_writes(tx)
        row = _load(tx, number, for_update=True)
        domain.check_can_verify(actor, row["status"], row["benefit_status"])
        tier = row["category_tier"] if approved else None
        at = storage.verify_claim(tx, number, approved, tier, note, actor["id"])
        data = {"application_number": number, "approved": approved, "tier": tier,
                "category": row["benefit_category"], "note": note}
        tx.journal(storage.stream(number), "benefit_verified",
                   {**data, "verified_at": storage.iso(at), "by": actor["id"]})
        tx.publish(contracts.envelope(SOURCE, "benefit_verified", data,
                                      actor.get("request_id")))
        kind = "benefit_verified" if approved else "benefit_refused"
        storage.add_feed(tx, row["applicant_id"], number, kind, feed_texts.render(
            kind, tz, number=number, category_kk=row["category_kk"],
            category_ru=row["category_ru"], note=note))
        return storage.application_dict(storage.get_application(tx, number))


# -- changes reported by other services -----------------------------------------------------------

def _change_status(tx, row, new: str, event_id: str, source: str, tz: str,
                   extra: dict[str, Any] | None = None) -> None:
    number = row["number"]
    storage.set_status(tx, number, new)
    tx.journal(storage.stream(number), "status_changed",
               {"application_number": number, "from": row["status"], "to": new,
                "source": source, "event_id": event_id, **(extra or {})})
    kind = domain.feed_kind_for_status(row["status"], new)
    if kind is not None:
        params = {"number": number}
        if kind == "stop_listed":
            stop = (extra or {}).get("stop_list") or {}
            params.update(reason=stop.get("reason"), exits_at=stop.get("exits_at"))
        storage.feed_later(tx, row["applicant_id"], number, kind,
                           feed_texts.render(kind, tz, **params), event_id)


def apply_queue_entry(db: DatabaseAccess, event_id: str, data: dict[str, Any],
                      tz: str = DEFAULT_TZ, batch_numbers: list[str] | None = None) -> str:
    """queue.queue_entry_changed: keep the status and stop-list; write the feed entry.
    ``batch_numbers``: the applications of the batch this event came in, read together
    (storage.application_to_change).

    Returns "applied", "duplicate" (redelivered), "stale" (older revision) or "unknown"."""
    with db.transaction() as tx:
        if not tx.claim_event("applications.on_queue_entry_changed", event_id):
            return "duplicate"
        storage.lock_writes(tx)
        row = storage.application_to_change(tx, data["application_number"], batch_numbers)
        if row is None:
            log.warning("queue_entry_changed for unknown application %s",
                        data["application_number"])
            return "unknown"
        revision = int(data["revision"])
        if row["entry_revision"] is not None and revision <= row["entry_revision"]:
            return "stale"
        stop_list = data.get("stop_list")
        storage.set_entry_snapshot(tx, row["number"], revision, data.get("queue_name"),
                                   stop_list)
        new = domain.next_status(row["status"], data["status"])
        if new is not None:
            _change_status(tx, row, new, event_id, "queue", tz,
                           {"revision": revision, "stop_list": stop_list})
        elif stop_list != row["stop_list"]:
            tx.journal(storage.stream(row["number"]), "stop_list_changed",
                       {"application_number": row["number"], "stop_list": stop_list,
                        "revision": revision, "event_id": event_id})
        return "applied"


def apply_direction(db: DatabaseAccess, handler: str, event_id: str, data: dict[str, Any],
                    organization_name: Callable[[int], "str | None"] | None = None,
                    tz: str = DEFAULT_TZ, batch_numbers: list[str] | None = None) -> str:
    """allocation.direction_issued / direction_changed: keep the direction, the status it
    implies (issued -> offered, enrolled -> provided) and the feed entry (``batch_numbers``
    as for apply_queue_entry)."""
    # allocation copies the organisation's name into the direction when the place is
    # released; the registry is asked only for a direction that came without one
    name = data.get("organization_name") or None
    if name is None and organization_name is not None and data["status"] == "issued" \
            and data.get("organization_id") is not None:
        # before the transaction: never hold the write lock across an RPC
        try:
            name = organization_name(int(data["organization_id"]))
        except Exception as exc:  # noqa: BLE001 - the text reads fine without the name
            log.warning("organisation name lookup failed: %r", exc)
    with db.transaction() as tx:
        if not tx.claim_event(handler, event_id):
            return "duplicate"
        storage.lock_writes(tx)
        row = storage.application_to_change(tx, data["application_number"], batch_numbers)
        if row is None:
            log.warning("%s for unknown application %s", handler, data["application_number"])
            return "unknown"
        known = storage.get_direction(tx, str(data["number"]))
        if known is not None and int(data["revision"]) <= known["revision"]:
            return "stale"
        storage.upsert_direction(tx, data)
        number = row["number"]
        tx.journal(storage.stream(number), "direction_changed",
                   {"application_number": number, "direction_number": str(data["number"]),
                    "status": data["status"], "revision": int(data["revision"]),
                    "expires_at": data.get("expires_at"), "event_id": event_id})
        newly_issued = data["status"] == "issued" and (known is None
                                                         or known["status"] != "issued")
        if newly_issued and row["status"] not in domain.FINAL_STATUSES:
            storage.feed_later(tx, row["applicant_id"], number, "offered", feed_texts.render(
                "offered", tz, number=number, direction=data["number"],
                expires_at=data.get("expires_at"), organization_name=name), event_id)
            # the queue reports "offered" too; this only avoids showing "queued" meanwhile
            if row["status"] == "queued":
                _change_status(tx, row, "offered", event_id, "allocation", tz,
                               {"direction_number": str(data["number"])})
        elif data["status"] == "enrolled":
            if domain.next_status(row["status"], "provided") is not None:
                _change_status(tx, row, "provided", event_id, "allocation", tz,
                               {"direction_number": str(data["number"])})
        return "applied"


# -- bulk paths: the demo loader and imports ------------------------------------------------------
#
# Each request goes through exactly the checks of file_application (domain.check_actor,
# domain.validate_new_application, domain.applicant_id_for, the caller's preference check, one
# active application per child and queue type) and each stored application gets the same rows:
# applicant, child, application, preferences, benefit claim, journal row, application_filed
# event and feed entry. Only the round trips differ: one multi-row statement per table per batch
# of ``batch`` applications, one transaction per batch. A request a rule refuses is reported in
# ``refused`` with the error's code, field and message and stored nowhere; the others go on.

BULK_BATCH = 1000
IMPORT_ROLES = ("system", "operator")
IMPORT_KIND = "application_imported"


def _refusal(index: int, ref: Any, exc: DomainError) -> dict[str, Any]:
    return {"index": index, "ref": ref, **exc.as_dict()}


def _prepare(tx_today, tiers: dict[str, str], data: Any, actor: dict[str, Any],
             check_preferences: CheckPreferences | None, max_preferred: int):
    """Validate one request as file_application does; returns (cmd, applicant_id)."""
    actor = domain.check_actor(actor)
    cmd = domain.validate_new_application(data, today=tx_today, categories=tiers,
                                          max_preferred=max_preferred)
    applicant_id = domain.applicant_id_for(actor, cmd.applicant_phone)
    if check_preferences is not None:
        check_preferences(list(cmd.preferred_organizations), cmd.birth_year, cmd.language,
                          cmd.queue_type)
    return cmd, applicant_id


def file_applications_bulk(db: DatabaseAccess, requests: list[Any],
                           actor_for: Callable[[Any], dict[str, Any]], *,
                           check_preferences: CheckPreferences | None,
                           batch: int = BULK_BATCH, max_preferred: int = 3,
                           tz: str = DEFAULT_TZ) -> dict[str, Any]:
    """File many applications as file_application would, each filed now (database clock).

    ``actor_for(request)`` gives the actor filing each request. Returns ``{"filed": [result,
    ...], "events": [application_filed data, ...], "refused": [{"index", "ref", "code",
    "field", "message"}, ...]}``; a result is file_application's, with ``index`` added.
    """
    items = []
    for index, data in enumerate(requests):
        try:
            actor = actor_for(data)
        except DomainError as exc:
            items.append({"index": index, "ref": None, "error": exc})
            continue
        items.append({"index": index, "ref": None, "data": data, "actor": actor})
    return _bulk(db, items, check_preferences=check_preferences, batch=batch,
                 max_preferred=max_preferred, tz=tz, source=None)


def import_applications_bulk(db: DatabaseAccess, records: list[Any], actor: dict[str, Any], *,
                             source: str, check_preferences: CheckPreferences | None,
                             batch: int = BULK_BATCH, max_preferred: int = 3,
                             tz: str = DEFAULT_TZ) -> dict[str, Any]:
    """Import applications from the portal that kept the queue before, keeping their order.

    ``records`` are ``{"ref": "<id in the source system>", "filed_at": "<ISO time with offset
    recorded by the source system>", "application": <api.md New application>}``. Each
    application is checked exactly as a filing; in addition the moment must have an offset,
    lie after the child's birth and not after now, and ``(source, ref)`` makes the import
    idempotent: a record imported before is reported in ``skipped``, not stored twice.

    The application keeps the source's moment in ``filed_at`` (the queue orders by it) and is
    marked imported: ``imported_at`` is the database clock of the import, set by the database,
    and the journal row is ``application_imported`` at the database clock (nothing in the
    ledger is back-dated). Only the system or an operator imports (the CLI and the demo
    loader); no RPC method or HTTP route leads here, and file_application keeps refusing a
    client-sent ``filed_at``. Numbers are given in the order of the records: pass them sorted
    by ``filed_at`` so that number order stays filing order.

    Returns ``{"filed": [...], "events": [...], "refused": [...], "skipped": [{"index",
    "ref", "application_number"}]}`` (see file_applications_bulk).
    """
    actor = domain.check_actor(actor)
    if actor["role"] not in IMPORT_ROLES:
        raise Forbidden("only the system or an operator imports applications", field="actor")
    if not isinstance(source, str) or not source.strip() or len(source) > 100:
        raise BadInput("the import source must be a name of at most 100 characters",
                       field="source")
    items = []
    for index, record in enumerate(records):
        ref = record.get("ref") if isinstance(record, dict) else None
        try:
            if not isinstance(record, dict):
                raise BadInput("an import record must be an object", field="record")
            unknown = set(record) - {"ref", "filed_at", "application"}
            if unknown:
                raise BadInput(f"unknown field {sorted(unknown)[0]!r}",
                               field=sorted(unknown)[0], code="UNKNOWN_FIELD")
            if not isinstance(ref, str) or not ref.strip() or len(ref) > 200:
                raise BadInput("ref must be the source system's id (at most 200 characters)",
                               field="ref")
            moment = _source_moment(record.get("filed_at"))
        except DomainError as exc:
            items.append({"index": index, "ref": ref, "error": exc})
            continue
        items.append({"index": index, "ref": ref, "data": record.get("application"),
                      "actor": actor, "moment": moment})
    return _bulk(db, items, check_preferences=check_preferences, batch=batch,
                 max_preferred=max_preferred, tz=tz, source=source.strip())


def _source_moment(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise BadInput("filed_at must be an ISO 8601 time with offset", field="filed_at")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadInput("filed_at must be an ISO 8601 time with offset",
                       field="filed_at") from None
    if moment.tzinfo is None:
        raise BadInput("filed_at needs a UTC offset", field="filed_at")
    return moment


def _bulk(db: DatabaseAccess, items: list[dict[str, Any]], *,
          check_preferences: CheckPreferences | None, batch: int, max_preferred: int, tz: str,
          source: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"filed": [], "events": [], "refused": [], "skipped": []}
    with db.read() as tx:
        today = storage.local_today(tx, tz)
        now = tx.now()
        tiers = {c["code"]: c["tier"] for c in storage.benefit_categories(tx)}
    for start in range(0, len(items), max(1, batch)):
        ready = []
        for item in items[start:start + batch]:
            if "error" in item:
                out["refused"].append(_refusal(item["index"], item["ref"], item["error"]))
                continue
            try:
                cmd, applicant_id = _prepare(today, tiers, item["data"], item["actor"],
                                             check_preferences, max_preferred)
                if source is not None:
                    _check_source_moment(item["moment"], cmd, now, tz)
            except DomainError as exc:
                out["refused"].append(_refusal(item["index"], item["ref"], exc))
                continue
            ready.append({**item, "cmd": cmd, "applicant_id": applicant_id})
        if ready:
            _store_batch(db, ready, source, tiers, tz, out)
    out["refused"].sort(key=lambda r: r["index"])
    return out


def _check_source_moment(moment: dt.datetime, cmd: domain.NewApplication, now: dt.datetime,
                         tz: str) -> None:
    from zoneinfo import ZoneInfo

    if moment > now:
        raise RuleRefused("an imported filing moment cannot be in the future", field="filed_at",
                          code="FILED_AT_IN_FUTURE")
    if moment.astimezone(ZoneInfo(tz)).date() < cmd.child_birth_date:
        raise RuleRefused("an application cannot be filed before the child was born",
                          field="filed_at", code="FILED_BEFORE_BIRTH")


def _store_batch(db: DatabaseAccess, ready: list[dict[str, Any]], source: str | None,
                 tiers: dict[str, str], tz: str, out: dict[str, Any]) -> None:
    from services.common.bulk import journal_many, publish_many

    with db.transaction() as tx:
        storage.lock_writes(tx)  # the same lock order as every other writer
        active = storage.active_applications_bulk(
            tx, sorted({(r["cmd"].child_iin, r["cmd"].queue_type) for r in ready}))
        done = storage.imported_refs(tx, source, [r["ref"] for r in ready]) if source else {}
        rows = []
        for r in ready:
            cmd = r["cmd"]
            if source is not None and r["ref"] in done:
                out["skipped"].append({"index": r["index"], "ref": r["ref"],
                                       "application_number": done[r["ref"]]})
                continue
            key = (cmd.child_iin, cmd.queue_type)
            if key in active:
                out["refused"].append(_refusal(r["index"], r["ref"], _duplicate(active[key])))
                continue
            active[key] = "(earlier in this batch)"
            if source is not None:
                done[r["ref"]] = "(earlier in this batch)"
            rows.append(r)
        if not rows:
            return
        numbers = storage.next_numbers(tx, len(rows))
        for r, (number, clock) in zip(rows, numbers):
            r["number"] = number
            r["filed_at"] = clock if source is None else r["moment"]
            r["import_source"] = source
            r["import_ref"] = r["ref"] if source is not None else None
        storage.upsert_applicants_bulk(tx, [
            (r["applicant_id"], r["cmd"].applicant_iin, r["cmd"].applicant_name,
             r["cmd"].applicant_phone) for r in rows])
        storage.upsert_children_bulk(tx, [
            (r["cmd"].child_iin, r["cmd"].child_name, r["cmd"].child_birth_date) for r in rows])
        storage.insert_applications_bulk(tx, rows)
        imported_at = (storage.imported_at_of(tx, [r["number"] for r in rows])
                       if source is not None else {})
        journal, events, feed = [], [], []
        for r in rows:
            cmd, number = r["cmd"], r["number"]
            tier = tiers.get(cmd.benefit_category) if cmd.benefit_category else None
            event = storage.event_data_of(number, r["applicant_id"], cmd, r["filed_at"], tier)
            entry = {**event, "benefit_document": cmd.benefit_document,
                     "child_iin": cmd.child_iin, "applicant_iin": cmd.applicant_iin,
                     "applicant_phone": cmd.applicant_phone, "filed_by": r["actor"]["id"]}
            if source is None:
                journal.append((storage.stream(number), "application_filed", entry))
            else:
                journal.append((storage.stream(number), IMPORT_KIND, {
                    **entry, "imported": True, "import_source": source,
                    "import_ref": r["ref"], "imported_at": storage.iso(imported_at[number])}))
            events.append(contracts.envelope(SOURCE, "application_filed", event,
                                             r["actor"].get("request_id")))
            feed.append((r["applicant_id"], number, "filed", feed_texts.render(
                "filed", tz, number=number, queue_name=cmd.queue_name)))
            out["events"].append(event)
            out["filed"].append({"index": r["index"], "ref": r["ref"],
                                 "application_number": number, "queue_name": cmd.queue_name,
                                 "queue_number": None, "filed_at": event["filed_at"],
                                 "status": "queued"})
        journal_many(tx, journal)
        publish_many(tx, events)
        storage.add_feed_bulk(tx, feed)
        if source is not None:
            # one audit record per imported batch; each application has its journal row
            tx.audit({"actor": rows[0]["actor"]["id"], "role": rows[0]["actor"]["role"],
                      "action": "import_applications",
                      "target": f"applications:{rows[0]['number']}..{rows[-1]['number']}",
                      "outcome": f"ok: {len(rows)} imported from {source}",
                      "request_id": rows[0]["actor"].get("request_id"), "service": SOURCE})


def verify_benefits_bulk(db: DatabaseAccess, decisions: list[Any], actor: dict[str, Any],
                         batch: int = BULK_BATCH, tz: str = DEFAULT_TZ) -> dict[str, Any]:
    """verify_benefit for many ``{"application_number", "approved", "note"}`` decisions.

    The same checks and rows per application as verify_benefit (claim, journal row,
    ``benefit_verified`` event, feed entry), in one transaction and a few statements per
    batch. A decision a rule refuses is reported in ``refused`` and changes nothing. Returns
    ``{"verified": [benefit_verified data, ...], "refused": [{"index", "application_number",
    "code", "field", "message"}]}``.
    """
    from services.common.bulk import journal_many, publish_many

    actor = domain.check_actor(actor)
    out: dict[str, Any] = {"verified": [], "refused": []}
    for start in range(0, len(decisions), max(1, batch)):
        part = list(enumerate(decisions[start:start + batch], start=start))
        with db.transaction() as tx:
            storage.lock_writes(tx)
            numbers = [d.get("application_number") for _, d in part if isinstance(d, dict)]
            rows = storage.applications_for_update(
                tx, [n for n in numbers if isinstance(n, str) and n])
            accepted, seen = [], set()
            for index, decision in part:
                number = decision.get("application_number") if isinstance(decision, dict) \
                    else None
                try:
                    if not isinstance(decision, dict):
                        raise BadInput("a decision must be an object", field="decision")
                    approved, note = decision.get("approved"), decision.get("note")
                    if not isinstance(approved, bool):
                        raise BadInput("approved must be true or false", field="approved")
                    if note is not None and not isinstance(note, str):
                        raise BadInput("note must be a string", field="note")
                    note = " ".join(note.split())[:1000] if note else None
                    if not isinstance(number, str) or not number:
                        raise BadInput("an application number is required",
                                       field="application_number")
                    row = rows.get(number)
                    if row is None:
                        raise NotFound(f"no application {number}", field="application_number",
                                       code="APPLICATION_NOT_FOUND")
                    # a second decision on one claim in a batch finds it decided, as one by one
                    domain.check_can_verify(actor, row["status"],
                                            "approved" if number in seen
                                            else row["benefit_status"])
                except DomainError as exc:
                    out["refused"].append({"index": index, "application_number": number,
                                           **exc.as_dict()})
                    continue
                seen.add(number)
                accepted.append({"number": number, "approved": approved, "note": note,
                                 "tier": row["category_tier"] if approved else None,
                                 "row": row})
            at = storage.verify_claims_bulk(tx, accepted, actor["id"])
            journal, events, feed = [], [], []
            for d in accepted:
                number, row = d["number"], d["row"]
                data = {"application_number": number, "approved": d["approved"],
                        "tier": d["tier"], "category": row["benefit_category"],
                        "note": d["note"]}
                journal.append((storage.stream(number), "benefit_verified",
                                {**data, "verified_at": storage.iso(at[number]),
                                 "by": actor["id"]}))
                events.append(contracts.envelope(SOURCE, "benefit_verified", data,
                                                 actor.get("request_id")))
                kind = "benefit_verified" if d["approved"] else "benefit_refused"
                feed.append((row["applicant_id"], number, kind, feed_texts.render(
                    kind, tz, number=number, category_kk=row["category_kk"],
                    category_ru=row["category_ru"], note=d["note"])))
                out["verified"].append(data)
            journal_many(tx, journal)
            publish_many(tx, events)
            storage.add_feed_bulk(tx, feed)
    return out
