"""Queue commands: one transaction each, plain values in, plain JSON-able dicts out.

The Nameko entrypoints, the CLI and bulk loaders call these. Event handlers pass
``event=(handler, event_id)``: the inbox row is written in the same transaction as the effect,
and a redelivered event returns ``"duplicate"`` having changed nothing.

Every change to an entry goes through :func:`_change`: revision + 1, a journal row and a
``queue.queue_entry_changed`` snapshot in the outbox, all in the caller's transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any, Iterator

from services.common import contracts
from services.common.ledger import append_at_commit
from services.common.db import DatabaseAccess, Tx, each
from services.common.errors import BadInput, Conflict, Forbidden, NotFound, RuleRefused
from services.queue import domain, storage

DUPLICATE = "duplicate"
SERVICE = "queue"
MAX_CLAIMANTS = 10_000


# -- validation ------------------------------------------------------------------------------------
def _text(data: dict, key: str, field: str | None = None, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise BadInput(f"{key} is required", field or key)
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise BadInput(f"{key} must be a string", field or key)
    return str(value)


def _int(data: dict, key: str, field: str | None = None, required: bool = True) -> int | None:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise BadInput(f"{key} is required", field or key)
        return None
    if isinstance(value, bool):
        raise BadInput(f"{key} must be an integer", field or key)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{key} must be an integer", field or key) from None


def _moment(value: Any, field: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise BadInput(f"{field} must be an ISO 8601 time", field) from None
    if moment.tzinfo is None:
        raise BadInput(f"{field} needs a UTC offset", field)
    return moment


def _number(value: Any, field: str = "application_number") -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise BadInput("application_number must be a non-empty string", field)
    return value.strip()


def validate_entry(entry: Any) -> dict[str, Any]:
    """An entries row from the application_filed data; BadInput names the bad field."""
    if not isinstance(entry, dict):
        raise BadInput("entry must be an object", "entry")
    number = _number(entry.get("application_number"))
    queue_type = _text(entry, "queue_type")
    if queue_type not in domain.QUEUE_TYPES:
        raise BadInput(f"queue_type must be one of {', '.join(domain.QUEUE_TYPES)}",
                       "queue_type")
    district = _text(entry, "district")
    birth_year = _int(entry, "birth_year")
    language = _text(entry, "language")
    if "filed_at" not in entry or entry["filed_at"] in (None, ""):
        raise BadInput("filed_at is required", "filed_at")
    filed_at = _moment(entry["filed_at"], "filed_at")
    orgs = entry.get("preferred_organizations") or []
    if not isinstance(orgs, list):
        raise BadInput("preferred_organizations must be a list", "preferred_organizations")
    preferred: list[int] = []
    for org in orgs:
        if isinstance(org, bool):
            raise BadInput("organisation ids are integers", "preferred_organizations")
        try:
            org_id = int(org)
        except (TypeError, ValueError):
            raise BadInput("organisation ids are integers", "preferred_organizations") from None
        if org_id not in preferred:
            preferred.append(org_id)
    benefit = entry.get("benefit") or None
    claimed_tier, verified, category = "none", False, None
    if benefit is not None:
        if not isinstance(benefit, dict):
            raise BadInput("benefit must be an object or null", "benefit")
        claimed_tier = benefit.get("tier") or "none"
        if claimed_tier not in domain.TIER_RANK:
            raise BadInput("benefit.tier is unknown", "benefit.tier")
        verified = bool(benefit.get("verified"))
        category = benefit.get("category")
    return {
        "application_number": number,
        "queue_name": domain.queue_name(district, queue_type, birth_year),
        "district": district,
        "queue_type": queue_type,
        "group_kind": domain.group_kind(queue_type),
        "birth_year": birth_year,
        "language": language,
        "preferred_organizations": preferred,
        "filed_at": filed_at,
        "benefit_category": category,
        "claimed_tier": claimed_tier,
        "benefit_verified": verified,
        "tier_rank": domain.tier_rank(claimed_tier, verified),
        "status": "queued",
        "stop_entered_at": None,
        "stop_exits_at": None,
        "stop_reason": None,
        "applicant_id": _text(entry, "applicant_id", required=False),
        "applicant_name": _text(entry, "applicant_name", required=False),
        "child_name": _text(entry, "child_name", required=False),
        "current_organization_id": _int(entry, "current_organization_id", required=False),
        "current_group_id": _int(entry, "current_group_id", required=False),
    }


def validate_place(place: Any) -> dict[str, Any]:
    if not isinstance(place, dict):
        raise BadInput("place must be an object", "place")
    return {
        "place_id": _text(place, "place_id", "place.place_id"),
        "organization_id": _int(place, "organization_id", "place.organization_id"),
        "birth_year": _int(place, "birth_year", "place.birth_year"),
        "language": _text(place, "language", "place.language"),
        "group_type": _text(place, "group_type", "place.group_type"),
    }


def validate_actor(actor: Any) -> dict[str, Any]:
    if not isinstance(actor, dict) or not actor.get("id") or not actor.get("role"):
        raise BadInput("actor must name id and role", "actor")
    return actor


# -- results ---------------------------------------------------------------------------------------
def queue_row(entry: dict[str, Any], number: int | None) -> dict[str, Any]:
    """The queue row of api.md ("Queue lookup and queue registry rows"), 05-22."""
    return {
        "queue_name": entry["queue_name"],
        "queue_number": number,
        "applicant_name": entry["applicant_name"],
        "child_name": entry["child_name"],
        "application_number": entry["application_number"],
        "filed_at": domain.iso(entry["filed_at"]),
        "status": entry["status"],
        "queue_type": entry["queue_type"],
        "benefit_tier": domain.effective_tier(entry["claimed_tier"], entry["benefit_verified"]),
        "stop_list": domain.stop_list(entry),
        "provided": entry["status"] == "provided",
        "district": entry["district"],
        "birth_year": entry["birth_year"],
        "language": entry["language"],
        "revision": entry["revision"],
    }


def reserved_row(entry: dict[str, Any], reservation: dict[str, Any]) -> dict[str, Any]:
    """What allocation needs to issue a direction for a reserved entry."""
    return {
        "application_number": entry["application_number"],
        "applicant_id": entry["applicant_id"],
        "applicant_name": entry["applicant_name"],
        "child_name": entry["child_name"],
        "queue_name": entry["queue_name"],
        "queue_type": entry["queue_type"],
        "district": entry["district"],
        "birth_year": entry["birth_year"],
        "language": entry["language"],
        "benefit_tier": domain.effective_tier(entry["claimed_tier"], entry["benefit_verified"]),
        "filed_at": domain.iso(entry["filed_at"]),
        "status": entry["status"],
        "revision": entry["revision"],
        "current_organization_id": entry["current_organization_id"],
        "current_group_id": entry["current_group_id"],
        "place_id": reservation["place_id"],
        "reservation": reservation["kind"],
        "reserved_at": domain.iso(reservation["reserved_at"]),
    }


# -- the one way an entry changes --------------------------------------------------------------------
def _change(tx: Tx, entry: dict[str, Any], kind: str, changes: dict[str, Any],
            request_id: str | None = None, note: dict[str, Any] | None = None) -> dict[str, Any]:
    new = storage.update_entry(tx, entry["application_number"], changes)
    if "queued" in (entry["status"], new["status"]) or entry["tier_rank"] != new["tier_rank"]:
        storage.refresh_candidates(tx, new)
    _record(tx, new, kind, request_id, note)
    return new


def _record(tx: Tx, entry: dict[str, Any], kind: str, request_id: str | None,
            note: dict[str, Any] | None) -> None:
    snap = domain.snapshot(entry)
    tx.publish(contracts.envelope(SERVICE, "queue_entry_changed", snap, request_id))
    row = (f"application:{entry['application_number']}", kind, {**snap, **(note or {})})
    pending = getattr(tx, "pending_journal", None)
    if pending is None:
        tx.journal(*row)
    else:
        pending.append(row)


@contextlib.contextmanager
def _transaction(db: DatabaseAccess) -> Iterator[Tx]:
    """db.transaction() whose journal rows (see _record) are appended to the journal by the
    database when it commits, in the order they were made (``queue.journal_pending``:
    services.common.ledger.append_at_commit_sql).

    The journal's chain trigger holds a lock that every appender in the schema waits for until
    the appending transaction ends: taken inside COMMIT, it is held for no round trip of ours.
    """
    with db.transaction() as tx:
        if tx.shared:  # a batch's transaction (services.common.db.each): written at its end
            if getattr(tx, "pending_journal", None) is None:
                tx.pending_journal = []
                tx.before_commit.append(lambda: append_at_commit(tx, tx.pending_journal))
            yield tx
            return
        tx.pending_journal = []
        yield tx
        rows, tx.pending_journal = tx.pending_journal, []
        append_at_commit(tx, rows)


def _claim(tx: Tx, event: tuple[str, str] | None) -> bool:
    return event is None or tx.claim_event(*event)


def _locked(tx: Tx, number: str) -> dict[str, Any]:
    """The entry, locked; in a batch of direction events, the entries of all its events are
    locked and read in one statement (``tx.batch_numbers``, set by the service;
    Tx.take_prefetched)."""
    entry = tx.take_prefetched("entries", number, getattr(tx, "batch_numbers", None),
                               storage.entries_for_update)
    if entry is None:
        entry = storage.get_entry(tx, number, lock=True)
    if entry is None:
        raise NotFound(f"application {number} is not in the queue", "application_number")
    return entry


def _stop(reason: str, now: dt.datetime, until: dt.datetime | None) -> dict[str, Any]:
    return {"status": "stop_listed", "stop_reason": reason, "stop_entered_at": now,
            "stop_exits_at": until}


_BACK_IN_QUEUE = {"status": "queued", "stop_reason": None, "stop_entered_at": None,
                  "stop_exits_at": None}


# -- enqueue -------------------------------------------------------------------------------------------
def enqueue(db: DatabaseAccess, entry: Any, event: tuple[str, str] | None = None,
            request_id: str | None = None) -> dict[str, Any] | str:
    """Put an application into its queue; idempotent by application number."""
    row = validate_entry(entry)
    with _transaction(db) as tx:
        if not _claim(tx, event):
            return DUPLICATE
        storage.lock_application(tx, row["application_number"])
        created = storage.insert_entry(tx, row)
        if created is None:
            current = storage.get_entry(tx, row["application_number"])
        else:
            storage.refresh_candidates(tx, created)
            _record(tx, created, "entered_queue", request_id, None)
            current = created
            for early in storage.take_early_events(tx, row["application_number"]):
                if early["event_type"] == "application_withdrawn":
                    current = _withdraw(tx, current, request_id)
                elif early["event_type"] == "benefit_verified":
                    current = _verify_benefit(tx, current, early["data"], request_id)
        return {"application_number": current["application_number"],
                "queue_name": current["queue_name"],
                "queue_number": storage.queue_number(tx, current),
                "status": current["status"]}


# -- applications' events -------------------------------------------------------------------------------
def _withdraw(tx: Tx, entry: dict[str, Any], request_id: str | None) -> dict[str, Any]:
    if entry["status"] == "withdrawn":
        return entry
    # an open reservation stays as it is: allocation learns of the withdrawal from its own event
    return _change(tx, entry, "withdrawn", {"status": "withdrawn", "stop_reason": None,
                                            "stop_entered_at": None, "stop_exits_at": None},
                   request_id)


def application_withdrawn(db: DatabaseAccess, data: dict[str, Any],
                          event: tuple[str, str] | None = None,
                          request_id: str | None = None) -> dict[str, Any] | str | None:
    number = _number(data.get("application_number"))
    with _transaction(db) as tx:
        if not _claim(tx, event):
            return DUPLICATE
        storage.lock_application(tx, number)  # an enqueue now cannot miss what we save
        entry = storage.get_entry(tx, number, lock=True)
        if entry is None:
            storage.save_early_event(tx, number, "application_withdrawn", json.dumps(data))
            return None
        return queue_row(_withdraw(tx, entry, request_id), None)


def _benefit_change(entry: dict[str, Any], data: dict[str, Any]
                    ) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
    """(journal kind, changes, note) an officer's benefit decision makes; None: no change."""
    if entry["status"] == "withdrawn":
        return None
    approved = bool(data.get("approved"))
    tier = data.get("tier") or entry["claimed_tier"]
    if approved and tier not in domain.TIER_RANK:
        raise BadInput("benefit tier is unknown", "tier")
    claimed = tier if approved else entry["claimed_tier"]
    changes = {"claimed_tier": claimed, "benefit_verified": approved,
               "tier_rank": domain.tier_rank(claimed, approved),
               "benefit_category": data.get("category") or entry["benefit_category"]}
    if all(entry[k] == v for k, v in changes.items()):
        return None
    kind = "benefit_granted" if approved else "benefit_refused"
    return kind, changes, {"benefit_category": changes["benefit_category"],
                           "note": data.get("note")}


def _verify_benefit(tx: Tx, entry: dict[str, Any], data: dict[str, Any],
                    request_id: str | None) -> dict[str, Any]:
    change = _benefit_change(entry, data)
    if change is None:
        return entry
    kind, changes, note = change
    return _change(tx, entry, kind, changes, request_id, note)


def benefit_verified(db: DatabaseAccess, data: dict[str, Any],
                     event: tuple[str, str] | None = None,
                     request_id: str | None = None) -> dict[str, Any] | str | None:
    """An officer's decision on the benefit claim: approved counts, refused means no tier."""
    number = _number(data.get("application_number"))
    with _transaction(db) as tx:
        if not _claim(tx, event):
            return DUPLICATE
        storage.lock_application(tx, number)  # an enqueue now cannot miss what we save
        entry = storage.get_entry(tx, number, lock=True)
        if entry is None:
            storage.save_early_event(tx, number, "benefit_verified", json.dumps(data))
            return None
        entry = _verify_benefit(tx, entry, data, request_id)
        return queue_row(entry, storage.queue_number(tx, entry))


# -- allocation's events ---------------------------------------------------------------------------------
def direction_event(db: DatabaseAccess, data: dict[str, Any],
                    event: tuple[str, str] | None = None,
                    request_id: str | None = None) -> dict[str, Any] | str | None:
    """direction_issued / direction_changed: the entry follows its direction's status."""
    number = _number(data.get("application_number"))
    status = data.get("status")
    if status not in ("issued", "enrolled", *domain.DIRECTION_STOP_REASONS):
        raise BadInput(f"unknown direction status {status!r}", "status")
    place_id = str(data.get("place_id"))
    with _transaction(db) as tx:
        if not _claim(tx, event):
            return DUPLICATE
        entry = _locked(tx, number)  # a direction always follows a reservation: retry if absent
        if not storage.claim_direction_revision(tx, data):
            return DUPLICATE  # an older snapshot than one already applied
        note = {"direction_number": data.get("number"), "place_id": place_id}
        if status == "issued":
            storage.mark_reservation_issued(tx, place_id, number, str(data.get("number")))
            if entry["status"] == "queued":
                entry = _change(tx, entry, "offered", {"status": "offered"}, request_id, note)
            return _direction_result(tx, entry, event)
        storage.close_reservations_of_direction(tx, place_id, number, status)
        if entry["status"] not in ("queued", "offered"):
            return _direction_result(tx, entry, event)  # withdrawn is final
        if status == "enrolled":
            entry = _change(tx, entry, "provided", {"status": "provided"}, request_id, note)
        else:
            reason = domain.DIRECTION_STOP_REASONS[status]
            entry = _change(tx, entry, "stop_list_entered", _stop(reason, tx.now(), None),
                            request_id, {**note, "reason": reason})
        return _direction_result(tx, entry, event)


def _direction_result(tx: Tx, entry: dict[str, Any], event: tuple[str, str] | None
                      ) -> dict[str, Any]:
    """The entry's queue row; an event handler (``event`` given) throws it away, so its live
    queue number (an index range count) is counted only for a direct call."""
    return queue_row(entry, None if event is not None else storage.queue_number(tx, entry))


# -- reservations -------------------------------------------------------------------------------------------
def reserve_next(db: DatabaseAccess, place: Any,
                 request_id: str | None = None) -> dict[str, Any] | None:
    """Reserve the first eligible child who chose the place's organisation (priority period)."""
    place = validate_place(place)
    kind = place["group_type"]
    with _transaction(db) as tx:
        locked = getattr(tx, "locked_places", None)  # see reserve_next_many
        if locked is not None and place["place_id"] in locked:
            existing = locked.pop(place["place_id"])
        else:
            storage.lock_place(tx, place["place_id"])
            existing = storage.open_reservation(tx, place["place_id"])
        if existing is not None:
            return reserved_row(storage.get_entry(tx, existing["application_number"]), existing)
        if kind not in domain.GROUP_KIND.values():
            return None  # e.g. short_stay: no queue type fits it
        entry = storage.pick_candidate(tx, place, kind)
        if entry is None:
            return None
        return _reserve(tx, entry, place, "priority", request_id)


MAX_PLACES_PER_CALL = 200


def reserve_next_many(db: DatabaseAccess, places: Any,
                      request_id: str | None = None) -> list[dict[str, Any] | None]:
    """reserve_next for each place in turn, all in one transaction (services.common.db.each):
    each place sees the children the places before it reserved. Nothing is reserved if any
    place is refused."""
    if not isinstance(places, list) or not 1 <= len(places) <= MAX_PLACES_PER_CALL:
        raise BadInput(f"places must be a list of 1 to {MAX_PLACES_PER_CALL} places", "places")
    valid = [validate_place(place) for place in places]

    def reserve(access, place):
        tx = getattr(access, "tx", None)  # the batch's shared transaction (each)
        if tx is not None and getattr(tx, "locked_places", None) is None:
            # every place locked, and its open reservation read, in two statements up front
            tx.locked_places = storage.lock_places(tx, [p["place_id"] for p in valid])
        return reserve_next(access, place, request_id)

    # a refused place raises inside the batch's one transaction: nothing of it is kept
    return each(db, valid, reserve)


def reserve_claimant(db: DatabaseAccess, place: Any, application_numbers: Any,
                     request_id: str | None = None) -> dict[str, Any] | None:
    """Reserve the claimant highest in the queue whose child fits the place (vacancy)."""
    place = validate_place(place)
    if not isinstance(application_numbers, list) or len(application_numbers) > MAX_CLAIMANTS:
        raise BadInput("application_numbers must be a list", "application_numbers")
    numbers = [_number(n, "application_numbers") for n in application_numbers]
    kind = place["group_type"]
    with _transaction(db) as tx:
        storage.lock_place(tx, place["place_id"])
        existing = storage.open_reservation(tx, place["place_id"])
        if existing is not None:
            return reserved_row(storage.get_entry(tx, existing["application_number"]), existing)
        if not numbers or kind not in domain.GROUP_KIND.values():
            return None
        entry = storage.pick_claimant(tx, place, kind, numbers)
        if entry is None:
            return None
        return _reserve(tx, entry, place, "claim", request_id)


def _reserve(tx: Tx, entry: dict[str, Any], place: dict[str, Any], kind: str,
             request_id: str | None) -> dict[str, Any]:
    note = {"place_id": place["place_id"], "reservation": kind}
    if entry["status"] != "queued":  # the pickers lock queued entries only
        reservation = storage.insert_reservation(tx, place, entry["application_number"], kind)
        entry = _change(tx, entry, "offered", {"status": "offered"}, request_id, note)
        return reserved_row(entry, reservation)
    # what insert_reservation + _change(... "offered" ...) do, in one round trip
    entry, reservation = storage.reserve_queued_entry(tx, place, entry["application_number"],
                                                      kind)
    _record(tx, entry, "offered", request_id, note)
    return reserved_row(entry, reservation)


def check_fit(db: DatabaseAccess, place: Any, application_number: Any) -> dict[str, Any]:
    """Whether a child may claim the place: {"fits", "reason", "applicant_id"}."""
    place = validate_place(place)
    number = _number(application_number)
    with db.read() as tx:
        entry = storage.get_entry(tx, number)
    if entry is None:
        raise NotFound(f"application {number} is not in the queue", "application_number")
    reason = domain.fit_reason(entry, place, require_preferred=False)
    # applicant_id lets allocation refuse a claim made for somebody else's application
    return {"fits": reason == "ok", "reason": reason, "applicant_id": entry["applicant_id"]}


def release_reservation(db: DatabaseAccess, place_id: Any,
                        request_id: str | None = None) -> dict[str, Any]:
    """Free the entry reserved for a place whose direction could not be issued."""
    place_id = _text({"place_id": place_id}, "place_id")
    with _transaction(db) as tx:
        storage.lock_place(tx, place_id)
        reservation = storage.open_reservation(tx, place_id)
        if reservation is not None:
            entry = _locked(tx, reservation["application_number"])
            # a direction event may have closed it while we waited for the entry
            reservation = storage.open_reservation(tx, place_id)
        if reservation is None:
            return {"place_id": place_id, "application_number": None, "released": False}
        if reservation["direction_number"]:
            raise Conflict("a direction was issued for this place", "place_id")
        storage.close_reservation(tx, reservation["id"], "released", "not_issued")
        if entry["status"] == "offered":
            _change(tx, entry, "reservation_released", {"status": "queued"}, request_id,
                    {"place_id": place_id})
        return {"place_id": place_id, "application_number": entry["application_number"],
                "released": True}


# -- stop-list -----------------------------------------------------------------------------------------
def _future(tx: Tx, until: Any, field: str = "until",
            required: bool = True) -> dt.datetime | None:
    try:
        moment = domain.parse_until(until)
    except (ValueError, TypeError):
        raise BadInput("until must be an ISO date or a time with offset", field) from None
    if moment is None:
        if required:
            raise BadInput("until is required", field)
        return None
    if not tx.execute("SELECT CAST(:u AS timestamptz) > clock_timestamp()", {"u": moment}).scalar():
        raise RuleRefused("until must be in the future", field)
    return moment


def _may_act_for(actor: dict[str, Any], entry: dict[str, Any]) -> None:
    if actor["role"] == "officer":
        return
    if actor["role"] != "applicant" or actor["id"] != entry["applicant_id"]:
        raise Forbidden("only the applicant or an officer may do this", "application_number")


def _officer(actor: dict[str, Any]) -> None:
    if actor["role"] != "officer":
        raise Forbidden("only a department officer may do this", "actor")


def _refuse_final(entry: dict[str, Any]) -> None:
    if entry["status"] == "withdrawn":
        raise Conflict("the application is withdrawn", "application_number")


def postpone(db: DatabaseAccess, application_number: Any, until: Any,
             actor: Any) -> dict[str, Any]:
    """The applicant puts the application on the stop-list until a date of their choice."""
    actor = validate_actor(actor)
    number = _number(application_number)
    with _transaction(db) as tx:
        entry = _locked(tx, number)
        _may_act_for(actor, entry)
        moment = _future(tx, until)
        _refuse_final(entry)
        if not domain.can_postpone(entry["status"]):
            raise Conflict(f"cannot postpone an application that is {entry['status']}",
                           "application_number")
        entry = _change(tx, entry, "stop_list_entered", _stop("postponed", tx.now(), moment),
                        actor.get("request_id"), {"reason": "postponed", "actor": actor["id"]})
        return queue_row(entry, storage.queue_number(tx, entry))


def resume(db: DatabaseAccess, application_number: Any, actor: Any) -> dict[str, Any]:
    """Back to the queue from the stop-list, keeping the original filing moment."""
    actor = validate_actor(actor)
    number = _number(application_number)
    with _transaction(db) as tx:
        entry = _locked(tx, number)
        _may_act_for(actor, entry)
        _refuse_final(entry)
        if not domain.can_resume(entry["status"], entry["stop_reason"]):
            raise Conflict("the application is not on the stop-list for a reason it can leave "
                           "by itself", "application_number")
        entry = _change(tx, entry, "stop_list_left", _BACK_IN_QUEUE, actor.get("request_id"),
                        {"left_because": "resumed", "actor": actor["id"]})
        return queue_row(entry, storage.queue_number(tx, entry))


def stop_list_enter(db: DatabaseAccess, application_number: Any, reason: Any, until: Any,
                    actor: Any) -> dict[str, Any]:
    """An officer puts an application on the stop-list."""
    actor = validate_actor(actor)
    _officer(actor)
    number = _number(application_number)
    if reason not in domain.OFFICER_STOP_REASONS:
        raise BadInput(f"reason must be one of {', '.join(domain.OFFICER_STOP_REASONS)}",
                       "reason")
    with _transaction(db) as tx:
        moment = _future(tx, until, required=False)
        entry = _locked(tx, number)
        _refuse_final(entry)
        if not domain.can_enter_stop_list(entry["status"]):
            raise Conflict(f"cannot stop-list an application that is {entry['status']}",
                           "application_number")
        entry = _change(tx, entry, "stop_list_entered", _stop(reason, tx.now(), moment),
                        actor.get("request_id"), {"reason": reason, "actor": actor["id"]})
        return queue_row(entry, storage.queue_number(tx, entry))


def stop_list_exit(db: DatabaseAccess, application_number: Any, actor: Any) -> dict[str, Any]:
    """An officer takes an application off the stop-list (any reason)."""
    actor = validate_actor(actor)
    _officer(actor)
    number = _number(application_number)
    with _transaction(db) as tx:
        entry = _locked(tx, number)
        _refuse_final(entry)
        if entry["status"] != "stop_listed":
            raise Conflict("the application is not on the stop-list", "application_number")
        entry = _change(tx, entry, "stop_list_left", _BACK_IN_QUEUE, actor.get("request_id"),
                        {"left_because": "officer", "actor": actor["id"]})
        return queue_row(entry, storage.queue_number(tx, entry))


def exit_due(db: DatabaseAccess, batch: int = 200) -> int:
    """Return to the queue every stop-listed entry whose exit moment has come (timer job)."""
    total = 0
    while True:
        with _transaction(db) as tx:
            due = storage.due_exits(tx, batch)
            for entry in due:
                _change(tx, entry, "stop_list_left", _BACK_IN_QUEUE, None,
                        {"left_because": "exit_date", "reason": entry["stop_reason"]})
                tx.audit(contracts.system_audit(
                    SERVICE, "stop_list_exit_on_date",
                    f"application:{entry['application_number']}"))
        total += len(due)
        if len(due) < batch:
            return total


# -- reads ------------------------------------------------------------------------------------------
def lookup(db: DatabaseAccess, application_number: Any) -> dict[str, Any]:
    """The 05-22 queue row with the live queue number."""
    number = _number(application_number)
    with db.read() as tx:
        entry = storage.get_entry(tx, number)
        if entry is None:
            raise NotFound(f"application {number} is not in the queue", "application_number")
        return queue_row(entry, storage.queue_number(tx, entry))


# -- bulk paths: the demo loader and imports --------------------------------------------------------
BULK_BATCH = 1000


def enqueue_bulk(db: DatabaseAccess, entries: list[Any], batch: int = BULK_BATCH,
                 request_id: str | None = None) -> dict[str, Any]:
    """:func:`enqueue` for many applications: one transaction and a few statements per batch.

    Every entry is checked by :func:`validate_entry` and gets what enqueue gives it: the entry
    (revision 1), its candidate rows, the ``entered_queue`` journal row and the
    ``queue_entry_changed`` event; events that came before the application (withdrawal,
    benefit decision) are applied as enqueue applies them. Idempotent by application number,
    like enqueue: a number already in the queue is counted in ``existing`` and left alone, so
    the ``application_filed`` events of the same applications, handled later, change nothing.
    Returns ``{"enqueued": n, "existing": n, "refused": [{"index", "application_number",
    "code", "field", "message"}]}``.
    """
    from services.common.bulk import journal_many, publish_many

    out: dict[str, Any] = {"enqueued": 0, "existing": 0, "refused": []}
    rows = []
    for index, entry in enumerate(entries):
        try:
            rows.append(validate_entry(entry))
        except BadInput as exc:
            number = entry.get("application_number") if isinstance(entry, dict) else None
            out["refused"].append({"index": index, "application_number": number,
                                   **exc.as_dict()})
    for start in range(0, len(rows), max(1, batch)):
        part = list({r["application_number"]: r for r in rows[start:start + batch]}.values())
        with db.transaction() as tx:
            storage.lock_applications(tx, [r["application_number"] for r in part])
            created = storage.insert_entries_bulk(tx, part)
            out["existing"] += len(part) - len(created)
            out["enqueued"] += len(created)
            if not created:
                continue
            storage.insert_candidates_bulk(tx, created)
            snaps = [domain.snapshot(e) for e in created]
            journal_many(tx, [(f"application:{s['application_number']}", "entered_queue", s)
                              for s in snaps])
            publish_many(tx, [contracts.envelope(SERVICE, "queue_entry_changed", s, request_id)
                              for s in snaps])
            early = storage.take_early_events_bulk(
                tx, [e["application_number"] for e in created])
            for entry in created:
                current = entry
                for event in early.get(entry["application_number"], []):
                    if event["event_type"] == "application_withdrawn":
                        current = _withdraw(tx, current, request_id)
                    elif event["event_type"] == "benefit_verified":
                        current = _verify_benefit(tx, current, event["data"], request_id)
    return out


def benefits_verified_bulk(db: DatabaseAccess, decisions: list[dict[str, Any]],
                           batch: int = BULK_BATCH, request_id: str | None = None
                           ) -> dict[str, Any]:
    """:func:`benefit_verified` for many ``benefit_verified`` event data, one transaction and
    a few statements per batch: the same change per entry (revision + 1, candidate rows,
    ``benefit_granted``/``benefit_refused`` journal row, ``queue_entry_changed`` event), or
    none when nothing changes, so the events themselves, handled later, change nothing.
    A decision for an application not yet in the queue is kept for it, as the handler keeps
    it. Returns ``{"changed", "unchanged", "early", "refused": [...]}``."""
    from services.common.bulk import journal_many, publish_many

    out: dict[str, Any] = {"changed": 0, "unchanged": 0, "early": 0, "refused": []}
    for start in range(0, len(decisions), max(1, batch)):
        part = []
        for index, data in enumerate(decisions[start:start + batch], start=start):
            try:
                part.append((_number(data.get("application_number")), data))
            except BadInput as exc:
                out["refused"].append({"index": index, **exc.as_dict()})
        with db.transaction() as tx:
            numbers = [n for n, _ in part]
            storage.lock_applications(tx, numbers)
            entries = storage.entries_for_update(tx, numbers)
            planned: list[tuple[dict[str, Any], str, dict[str, Any], dict[str, Any]]] = []
            repeated = {n for n in numbers if numbers.count(n) > 1} if len(set(numbers)) \
                < len(numbers) else set()
            for number, data in part:
                entry = entries.get(number)
                if entry is None:
                    storage.save_early_event(tx, number, "benefit_verified", json.dumps(data))
                    out["early"] += 1
                    continue
                if number in repeated:  # several decisions on one entry: one by one, in order
                    before = storage.get_entry(tx, number, lock=True)
                    after = _verify_benefit(tx, before, data, request_id)
                    out["changed" if after is not before else "unchanged"] += 1
                    continue
                try:
                    change = _benefit_change(entry, data)
                except BadInput as exc:
                    out["refused"].append({"application_number": number, **exc.as_dict()})
                    continue
                if change is None:
                    out["unchanged"] += 1
                    continue
                planned.append((entry, *change))
            new = storage.update_entries_bulk(tx, [(e["application_number"], c)
                                                   for e, _, c, _ in planned])
            storage.refresh_candidates_bulk(tx, [
                new[e["application_number"]] for e, _, _, _ in planned
                if "queued" in (e["status"], new[e["application_number"]]["status"])
                or e["tier_rank"] != new[e["application_number"]]["tier_rank"]])
            snaps = [(domain.snapshot(new[e["application_number"]]), kind, note)
                     for e, kind, _, note in planned]
            journal_many(tx, [(f"application:{snap['application_number']}", kind,
                               {**snap, **note}) for snap, kind, note in snaps])
            publish_many(tx, [contracts.envelope(SERVICE, "queue_entry_changed", snap,
                                                 request_id) for snap, _, _ in snaps])
            out["changed"] += len(planned)
    return out


# -- snapshot export: kezek registry reconcile ------------------------------------------------------
EXPORT_MAX = 5000


def export_entries(db: DatabaseAccess, after_application_number: Any = None, limit: Any = 1000,
                   application_numbers: Any = None) -> dict[str, Any]:
    """A page of entry snapshots (the ``queue_entry_changed`` data at their current revision)
    in application-number order after ``after_application_number``; or, given
    ``application_numbers``, exactly those entries (unknown ones left out). Returns
    ``{"items": [...], "next": number | None}``: ``next`` is the ``after`` of the next page,
    None on the last one."""
    after = None
    if after_application_number not in (None, ""):
        after = _number(after_application_number, "after_application_number")
    size = _int({"limit": limit}, "limit")
    if not 1 <= size <= EXPORT_MAX:
        raise BadInput(f"limit must be between 1 and {EXPORT_MAX}", "limit")
    numbers = None
    if application_numbers is not None:
        if not isinstance(application_numbers, list) or len(application_numbers) > EXPORT_MAX:
            raise BadInput(f"application_numbers must be a list of at most {EXPORT_MAX}",
                           "application_numbers")
        numbers = [_number(n, "application_numbers") for n in application_numbers]
    with db.read() as tx:
        rows = storage.export_entries(tx, after, size if numbers is None else EXPORT_MAX,
                                      numbers)
    items = [domain.snapshot(r) for r in rows]
    last = numbers is None and len(items) == size
    return {"items": items, "next": items[-1]["application_number"] if last else None}
