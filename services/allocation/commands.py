"""Allocation commands: plain functions over a DatabaseAccess and plain values.

Each one does its state change in ONE transaction: current-state tables, a journal row and the
outbox events together. Calls to other services (registry.get_group, queue.reserve_next, ...)
are passed in as callables, so the CLI and the tests can call these without a broker.

Calls to the queue happen outside our transactions where they can (a reservation is idempotent
per place, so a retry after a crash gets the same entry back), and inside one only where a
single winner needs the place row locked (first-come vacancy claims, claim pools).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any, Callable, Iterator, Mapping

from services.allocation import domain, storage
from services.allocation.domain import Rules
from services.common import contracts
from services.common.db import DatabaseAccess, Tx
from services.common.errors import Conflict, Forbidden, NotFound, RuleRefused
from services.common.ledger import append_at_commit

log = logging.getLogger(__name__)

SOURCE = "allocation"
ALLOCATE_HANDLER = "allocation.on_place_released"
# how long to wait for the queue to drop a reservation whose direction we already closed
STALE_RESERVATION_TRIES = 20
STALE_RESERVATION_WAIT_SECONDS = 0.25

Remote = Callable[..., Any]


def _request_id(actor: Mapping[str, Any] | None) -> str | None:
    return (actor or {}).get("request_id")


@contextlib.contextmanager
def _transaction(db: DatabaseAccess) -> Iterator[Tx]:
    """db.transaction() whose outbox events (_publish, _audit) and journal rows (_journal) are
    written at the end, in one statement each, in the order they were made.

    The journal rows go through ``allocation.journal_pending``: the database appends them to
    the journal when the transaction commits (services.common.ledger.append_at_commit_sql).
    The journal's chain trigger holds a lock that every appender in the schema waits for until
    the appending transaction ends; taken inside COMMIT, it is held for no round trip of ours.
    If the block raises, nothing of it is written (the transaction rolls back anyway).
    """
    with db.transaction() as tx:
        if tx.shared:  # a batch's transaction (services.common.db.each): written at its end
            if getattr(tx, "pending_events", None) is None:
                tx.pending_journal, tx.pending_events = [], []
                tx.before_commit.append(lambda: _flush(tx))
            yield tx
            return
        tx.pending_journal = []
        tx.pending_events = []
        yield tx
        _flush(tx)


def _flush(tx: Tx) -> None:
    events, tx.pending_events = tx.pending_events, []
    rows, tx.pending_journal = tx.pending_journal, []
    if events:
        storage.insert_outbox(tx, events)
    # appended to the journal by the database at commit (services.common.ledger)
    append_at_commit(tx, rows)


def _journal(tx: Tx, stream: str, kind: str, data: dict[str, Any]) -> None:
    tx.pending_journal.append((stream, kind, data))


def _outbox(tx: Tx, event: dict[str, Any], exchange: str, routing_key: str) -> None:
    pending = getattr(tx, "pending_events", None)
    if pending is None:
        tx.publish(event, exchange=exchange, routing_key=routing_key)
    else:
        pending.append((exchange, routing_key, event))


def _publish(tx: Tx, event_type: str, data: dict[str, Any], request_id: str | None) -> None:
    """An event of ours into the outbox (as Tx.publish writes it), with the transaction."""
    _outbox(tx, contracts.envelope(SOURCE, event_type, data, request_id), f"{SOURCE}.events",
            event_type)


def _audit(tx: Tx, record: dict[str, Any]) -> None:
    """A system action for the audit log, through the outbox (as Tx.audit writes it)."""
    from services.common.amqp import AUDIT_EXCHANGE

    _outbox(tx, contracts.audit_record(**record), AUDIT_EXCHANGE, "audit_record")


def _release_quietly(release_reservation: Remote | None, place_id: str) -> None:
    """Give back a reservation we could not turn into a direction (best effort: the queue
    also frees it when the place is reserved again)."""
    if release_reservation is None:
        return
    try:
        release_reservation(place_id)
    except Exception:  # noqa: BLE001 - logged; the caller's own error matters more
        log.exception("could not release the queue reservation of place %s", place_id)


# -- releases ------------------------------------------------------------------------------------

def release_places(db: DatabaseAccess, rules: Rules, organization_id: Any, group_id: Any,
                   places: Any, actor: dict[str, Any] | None, get_group: Remote,
                   idempotency_key: str | None = None) -> dict[str, Any]:
    """Release ``places`` places of a group: each starts its priority period now.

    A release repeated with its idempotency key returns the first one's result (the key is
    looked up under the group's lock, in the round trip that counts the open places)."""
    organization_id = domain.parse_id(organization_id, "organization_id")
    group_id = domain.parse_id(group_id, "group_id")
    places = domain.parse_places(places)
    domain.require_releaser(actor, organization_id)
    key = None
    if idempotency_key is not None:
        key = domain.parse_text(idempotency_key, "idempotency_key", 200)
    group = get_group(group_id)
    if not group or int(group.get("organization_id") or 0) != organization_id:
        raise NotFound("this organisation has no such group", field="group_id")
    with _transaction(db) as tx:
        storage.lock_group(tx, group_id)
        open_places, now, done = storage.open_places_now_and_release(tx, group_id, key)
        if done is None:
            free = domain.free_capacity(group.get("capacity") or 0, group.get("enrolled") or 0,
                                        open_places)
            if free < places:
                raise RuleRefused(
                    f"the group has {free} free place(s) to release", field="places",
                    code="NO_FREE_CAPACITY")
            release = {"kind": "staff", "organization_id": organization_id,
                       "group_id": group_id, "actor": actor, "idempotency_key": key}
            made = _new_places(tx, rules, release, group, places, _request_id(actor), now=now)
    if done is None and made is None:
        # the key was taken meanwhile by a release of another group: that one is its release
        with db.read() as tx:
            done = storage.release_by_key(tx, key)
    if done is not None:
        return _release_result(done, organization_id, group_id)
    return {"place_ids": made[1], "release_id": made[0]}


def _release_result(release: dict[str, Any], organization_id: int,
                    group_id: int) -> dict[str, Any]:
    if release["organization_id"] != organization_id or release["group_id"] != group_id:
        raise Conflict("this idempotency key was used for another release",
                       field="idempotency_key", code="IDEMPOTENCY_KEY_REUSED")
    return {"place_ids": [str(p) for p in release["place_ids"]],
            "release_id": release["release_id"]}


def _new_places(tx: Tx, rules: Rules, release: dict[str, Any], group: Mapping[str, Any],
                count: int, request_id: str | None, now: Any = None
                ) -> tuple[int, list[str]] | None:
    """A release (``kind``, ``organization_id``, ``group_id``, ``actor``, and optionally
    ``idempotency_key`` or ``source_direction``) and its ``count`` new places, in one
    statement, each place journalled and published. Returns (release id, place ids), or None
    (nothing written) if the key or source direction was already used."""
    now = now or tx.now()
    starts, ends = rules.priority_period_from(now)
    new = []
    for _ in range(count):
        new.append({
            "place_id": str(uuid.uuid4()),
            "organization_id": release["organization_id"],
            "group_id": release["group_id"],
            "organization_name": group.get("organization_name"),
            "district": group.get("district"),
            "ownership": group.get("ownership"),
            "address": group.get("address"),
            "group_name": group.get("name"),
            "birth_year": int(group["birth_year"]),
            "language": group["language"],
            "group_type": group["group_type"],
            "status": domain.PLACE_PRIORITY,
            "released_at": now,
            "priority_starts_at": starts,
            "priority_ends_at": ends,
        })
    rows = storage.insert_release_with_places(tx, {**release, "released_at": now}, new)
    if rows is None:
        return None
    place_ids = []
    for place in rows:
        snapshot = domain.place_snapshot(place)
        _journal(tx, f"place:{snapshot['place_id']}", "place_released",
                 {**snapshot, "release_kind": release["kind"]})
        _publish(tx, "place_released", snapshot, request_id)
        place_ids.append(snapshot["place_id"])
    return rows[0]["release_id"], place_ids


def _re_release(tx: Tx, rules: Rules, place: dict[str, Any], direction_number: str,
                request_id: str | None) -> dict[str, Any]:
    """A closed direction's place goes back to release: a new priority period, and
    place_released again so it is allocated to the next child."""
    release = storage.insert_release(
        tx, "re_release", place["organization_id"], place["group_id"], 1,
        {"id": "system", "role": "system"}, source_direction=direction_number)
    if release is None:
        raise Conflict("this direction's place was already released again",
                       field="direction_number")
    now = tx.now()
    starts, ends = rules.priority_period_from(now)
    place = storage.update_place(tx, str(place["place_id"]), {
        "status": domain.PLACE_PRIORITY, "release_id": release["release_id"],
        "released_at": now, "priority_starts_at": starts, "priority_ends_at": ends,
        "vacancy_opened_at": None, "direction_number": None,
    })
    snapshot = domain.place_snapshot(place)
    storage.set_release_places(tx, release["release_id"], [snapshot["place_id"]])
    _journal(tx, f"place:{snapshot['place_id']}", "place_released",
             {**snapshot, "release_kind": "re_release", "source_direction": direction_number})
    _publish(tx, "place_released", snapshot, request_id)
    return place


def _transfer_release(tx: Tx, rules: Rules, direction: dict[str, Any], old_group: Mapping[str, Any],
                      request_id: str | None) -> list[str]:
    """The transferred child's old place: one place of the old group, once per direction. No
    capacity check: the child leaving is what frees it."""
    made = _new_places(tx, rules, {
        "kind": "transfer", "organization_id": int(old_group["organization_id"]),
        "group_id": int(old_group["id"]), "actor": {"id": "system", "role": "system"},
        "source_direction": direction["number"]}, old_group, 1, request_id)
    if made is None:
        return []
    place_ids = made[1]
    _audit(tx, contracts.system_audit(SOURCE, "release_transfer_place",
                                      f"place:{place_ids[0]} direction:{direction['number']}",
                                      request_id=request_id))
    return place_ids


# -- issuing directions ----------------------------------------------------------------------------

def _issue(tx: Tx, rules: Rules, place: dict[str, Any], entry: Mapping[str, Any], by_claim: bool,
           request_id: str | None, system: bool) -> dict[str, Any]:
    """Issue a direction for a locked place to a reserved queue entry."""
    number = entry["application_number"]
    sequence, issued_at, held = storage.next_direction_for(tx, number)
    if held:
        # the queue should never reserve a child who holds a direction; refuse loudly
        raise Conflict(f"application {number} already holds an open direction",
                       field="application_number", code="ALREADY_DIRECTED")
    direction = storage.insert_direction(
        tx, _direction_row(rules, place, entry, by_claim, sequence, issued_at))
    place = storage.update_place(tx, str(place["place_id"]), {
        "status": domain.PLACE_DIRECTED, "direction_number": direction["number"]})
    _issued(tx, place, direction, request_id, system)
    return direction


def _direction_row(rules: Rules, place: Mapping[str, Any], entry: Mapping[str, Any],
                   by_claim: bool, sequence: int, issued_at: Any) -> dict[str, Any]:
    """The new direction's row: the place's group, the reserved child, number and dates."""
    return {
        "number": domain.direction_number(sequence),
        "place_id": str(place["place_id"]),
        "application_number": entry["application_number"],
        "applicant_id": entry.get("applicant_id"),
        "type": domain.direction_type(entry, by_claim),
        "status": domain.ISSUED,
        "organization_id": place["organization_id"],
        "organization_name": place.get("organization_name"),
        "group_id": place["group_id"],
        "birth_year": place["birth_year"],
        "language": place["language"],
        "child_name": entry.get("child_name"),
        "current_organization_id": entry.get("current_organization_id"),
        "current_group_id": entry.get("current_group_id"),
        "issued_at": issued_at,
        "expires_at": rules.direction_expiry(issued_at),
    }


def _issued(tx: Tx, place: dict[str, Any], direction: dict[str, Any], request_id: str | None,
            system: bool) -> None:
    """What a direction issued for a place writes besides the two rows: the journal row,
    direction_issued, place_changed and, when the system allocated it, an audit record."""
    snapshot = domain.direction_snapshot(direction)
    _journal(tx, f"direction:{direction['number']}", "direction_issued", snapshot)
    _publish(tx, "direction_issued", snapshot, request_id)
    _publish(tx, "place_changed", domain.place_snapshot(place), request_id)
    if system:
        _audit(tx, contracts.system_audit(
            SOURCE, "allocate", f"place:{place['place_id']} direction:{direction['number']}",
            request_id=request_id))


def _open_vacancy(tx: Tx, place: dict[str, Any], why: str, request_id: str | None) -> None:
    place = storage.update_place(tx, str(place["place_id"]), {
        "status": domain.PLACE_VACANCY, "vacancy_opened_at": tx.now()})
    snapshot = domain.place_snapshot(place)
    _journal(tx, f"place:{snapshot['place_id']}", "vacancy_opened", {**snapshot, "why": why})
    _publish(tx, "place_changed", snapshot, request_id)
    _audit(tx, contracts.system_audit(SOURCE, "open_vacancy", f"place:{snapshot['place_id']}",
                                      request_id=request_id))


def _awaits_allocation(place: Mapping[str, Any] | None, revision: int) -> bool:
    return (place is not None and place["status"] == domain.PLACE_PRIORITY
            and place["revision"] == revision)


def allocate_place(db: DatabaseAccess, rules: Rules, event_id: str, data: Mapping[str, Any],
                   reserve_next: Remote, release_reservation: Remote | None = None,
                   request_id: str | None = None, sleep: Callable[[float], None] = time.sleep,
                   ) -> str:
    """Handle one place_released event: the first eligible child gets a direction, or the place
    becomes a public vacancy. Returns "issued", "vacancy", "stale" or "duplicate".

    Safe to run twice for one event (redelivery) and concurrently on several instances: the
    queue reservation is idempotent per place, and the inbox row, the locked place row and the
    unique indexes on open directions make one winner.
    """
    place_id, revision = str(data["place_id"]), int(data["revision"])
    with db.read() as tx:
        place, handled = storage.place_and_inbox(tx, place_id, ALLOCATE_HANDLER, event_id)
    if handled:
        return "duplicate"
    entry, tries = None, 0
    while _awaits_allocation(place, revision):
        entry = reserve_next(domain.queue_place(place))
        with _transaction(db) as tx:
            place, stale = storage.lock_place_to_issue(
                tx, place_id, entry["application_number"] if entry else None,
                entry.get("reserved_at") if entry else None)
            if _awaits_allocation(place, revision) and not stale:
                if not tx.claim_event(ALLOCATE_HANDLER, event_id):
                    return "duplicate"
                if entry:
                    _issue(tx, rules, place, entry, by_claim=False, request_id=request_id,
                           system=True)
                    return "issued"
                _open_vacancy(tx, place, "nobody eligible in the priority period", request_id)
                return "vacancy"
        if not _awaits_allocation(place, revision):
            break
        # After a decline the place is released again at once, and we may ask the queue before
        # it has seen direction_changed and dropped the old reservation: being idempotent per
        # place, it hands back the child who just declined. Wait for it to catch up.
        tries += 1
        if tries >= STALE_RESERVATION_TRIES:
            raise RuntimeError(f"the queue still reserves place {place_id} for "
                               f"{entry['application_number']}, whose direction is closed")
        sleep(STALE_RESERVATION_WAIT_SECONDS)
    # the place moved on meanwhile (priority period over, or released again): give the
    # reservation back before recording the event as handled, so a failure retries both
    if entry:
        _release_quietly(release_reservation, place_id)
    with db.transaction() as tx:
        tx.claim_event(ALLOCATE_HANDLER, event_id)
    return "stale"


def reserve_ahead(db: DatabaseAccess, events: list[Mapping[str, Any]], reserve_many: Remote,
                  reserve_next: Remote) -> Remote:
    """A ``reserve_next`` for the place_released events of a batch: the places among them
    still awaiting allocation are reserved in the queue up front, in one call of
    ``reserve_many`` (``queue.reserve_next_many``) instead of one call each. A place's first
    call of the returned function takes its entry from there; any later call (a stale
    reservation, see allocate_place) and every place the call left out go to ``reserve_next``.
    If the call fails, every place asks ``reserve_next`` itself, as unbatched."""
    wanted = {str(e["place_id"]): int(e["revision"]) for e in events}
    with db.read() as tx:
        places = [p for p in storage.get_places(tx, list(wanted))
                  if _awaits_allocation(p, wanted[str(p["place_id"])])]
    ahead: dict[str, Any] = {}
    if places:
        try:
            entries = reserve_many([domain.queue_place(p) for p in places])
            ahead = {str(p["place_id"]): entry for p, entry in zip(places, entries)}
        except Exception as exc:  # noqa: BLE001 - each place asks for itself instead
            log.warning("reserving %d places together failed (%r); one by one", len(places), exc)

    def reserve(place: Mapping[str, Any]) -> Any:
        key = str(place["place_id"])
        if key in ahead:
            return ahead.pop(key)
        return reserve_next(place)

    reserve.unused = ahead  # type: ignore[attr-defined]
    return reserve


def release_unused(db: DatabaseAccess, reserve: Remote, release_reservation: Remote) -> None:
    """After a batch: give back the reservations :func:`reserve_ahead` made for places that
    were then not allocated (one moved on between the two reads). A place directed or filled
    used its reservation: the queue keeps one reservation per place."""
    unused = [key for key, entry in getattr(reserve, "unused", {}).items() if entry]
    if not unused:
        return
    with db.read() as tx:
        places = {str(p["place_id"]): p for p in storage.get_places(tx, unused)}
    for key in unused:
        place = places.get(key)
        if place is None or place["status"] not in (domain.PLACE_DIRECTED, domain.PLACE_FILLED):
            _release_quietly(release_reservation, key)


def allocate_batch(db: DatabaseAccess, rules: Rules, payloads: list[Mapping[str, Any]],
                   reserve_many: Remote, reserve_next: Remote,
                   release_reservation: Remote | None = None) -> list[str]:
    """allocate_place for a batch of place_released events, set-based: the places still
    awaiting allocation are reserved in one queue call (:func:`reserve_ahead`), then one
    transaction locks them all, records the events in the inbox and issues every direction
    with one statement each (sequence numbers, directions, places), whatever the batch's
    size. A place nobody eligible chose becomes a vacancy as alone. An event whose place the
    queue could not reserve up front, or reserved for the child of a direction closed since
    (see allocate_place), is handled alone afterwards. Returns each event's outcome, as
    allocate_place's. If anything raises, nothing of the transaction is written (the handler
    then handles each event alone)."""
    from services.common.logs import request_id_var

    events = []  # (event_id, data, request_id, place_id)
    for payload in payloads:
        data = contracts.parse(payload, SOURCE, "place_released")
        events.append((str(payload["event_id"]), data, payload.get("request_id"),
                       str(data["place_id"])))
    reserve = reserve_ahead(db, [data for _, data, _, _ in events], reserve_many, reserve_next)
    ahead: dict[str, Any] = reserve.unused  # type: ignore[attr-defined]
    outcomes: list[str | None] = [None] * len(events)
    alone = []
    with _transaction(db) as tx:
        wanted = {place_id: ahead.get(place_id) for *_, place_id in events}
        locked = storage.lock_places_to_issue(tx, [
            (place_id, entry["application_number"] if entry else None,
             entry.get("reserved_at") if entry else None) for place_id, entry in wanted.items()])
        plan = []
        for index, (_, data, _, place_id) in enumerate(events):
            place, stale = locked.get(place_id, (None, False))
            if not _awaits_allocation(place, int(data["revision"])):
                plan.append((index, "stale"))
            elif stale or place_id not in ahead:
                alone.append(index)
            else:
                plan.append((index, "issued" if ahead[place_id] else "vacancy"))
        tx.claim_events(ALLOCATE_HANDLER, [events[index][0] for index, _ in plan])
        to_issue = []
        for index, outcome in plan:
            event_id, _, request_id, place_id = events[index]
            if not tx.claim_event(ALLOCATE_HANDLER, event_id):
                outcomes[index] = "duplicate"
                continue
            outcomes[index] = outcome
            if outcome == "issued":
                to_issue.append((locked[place_id][0], ahead.pop(place_id), request_id))
            elif outcome == "vacancy":
                _open_vacancy(tx, locked[place_id][0], "nobody eligible in the priority period",
                              request_id)
        if to_issue:
            _issue_many(tx, rules, to_issue)
    for index in alone:
        event_id, data, request_id, _ = events[index]
        request_id_var.set(request_id or None)
        outcomes[index] = allocate_place(db, rules, event_id, data, reserve_next=reserve,
                                         release_reservation=release_reservation,
                                         request_id=request_id)
    release_unused(db, reserve, release_reservation)
    return outcomes  # type: ignore[return-value]


def _issue_many(tx: Tx, rules: Rules,
                issues: list[tuple[dict[str, Any], Mapping[str, Any], str | None]]) -> None:
    """_issue (by the system, not by a claim) for many ``(locked place, reserved entry,
    request_id)``, with one statement each for the sequence numbers, the directions and the
    places."""
    numbers = [entry["application_number"] for _, entry, _ in issues]
    held = {n for n in numbers if numbers.count(n) > 1}
    sequences = storage.next_directions_for(tx, numbers)
    held.update(n for n, (_, _, has) in zip(numbers, sequences) if has)
    if held:
        raise Conflict(f"application {sorted(held)[0]} already holds an open direction",
                       field="application_number", code="ALREADY_DIRECTED")
    directions = storage.insert_directions(tx, [
        _direction_row(rules, place, entry, False, sequence, issued_at)
        for (place, entry, _), (sequence, issued_at, _) in zip(issues, sequences)])
    places = storage.direct_places(tx, {d["place_id"]: d["number"] for d in directions})
    for (_, _, request_id), direction in zip(issues, directions):
        _issued(tx, places[str(direction["place_id"])], direction, request_id, system=True)


def end_priority_periods(db: DatabaseAccess, batch: int = 200) -> int:
    """Timer job: places still in their priority period past its end become vacancies."""
    total = 0
    while True:
        with _transaction(db) as tx:
            due = storage.due_priority_places(tx, batch)
            for place in due:
                _open_vacancy(tx, place, "priority period ended", None)
        total += len(due)
        if len(due) < batch:
            return total


# -- vacancy claims --------------------------------------------------------------------------------

def claim_vacancy(db: DatabaseAccess, rules: Rules, place_id: Any, application_number: Any,
                  actor: dict[str, Any] | None, check_fit: Remote, reserve_claimant: Remote,
                  release_reservation: Remote | None = None) -> dict[str, Any]:
    """An applicant claims a public vacancy for their application.

    Within the claim window after the vacancy opened the claim is pooled (the highest in the
    queue wins when the window closes); after it the first valid claim wins at once.
    """
    applicant_id = domain.require_applicant(actor)
    place_id = domain.parse_place_id(place_id)
    number = domain.parse_text(application_number, "application_number", 64)
    request_id = _request_id(actor)
    with db.read() as tx:
        place = storage.get_place(tx, place_id)
        now = tx.now()
    _require_vacancy(place)
    fits, reason, owner = domain.fit_verdict(check_fit(domain.queue_place(place), number))
    # if the queue tells the owner, refuse a stranger now; the reserved entry's applicant_id
    # is checked again before any direction is issued (below and in resolve_pool)
    if owner is not None and owner != applicant_id:
        raise Forbidden("this application is not yours", field="application_number")
    if not fits:
        raise RuleRefused(f"the child does not fit this place: {reason}",
                          field="application_number", code="DOES_NOT_FIT")

    if rules.in_claim_pool(place["vacancy_opened_at"], now):
        with _transaction(db) as tx:
            # FOR SHARE: claims pool side by side, but not while the pool is being resolved
            place = storage.get_place(tx, place_id, lock="share")
            _require_vacancy(place)
            if rules.in_claim_pool(place["vacancy_opened_at"], tx.now()):
                claim = storage.insert_claim(tx, place_id, place["vacancy_opened_at"], number,
                                             applicant_id)
                if claim is not None:
                    _journal(tx, f"place:{place_id}", "vacancy_claimed", {
                        "place_id": place_id, "application_number": number,
                        "vacancy_opened_at": domain.iso(place["vacancy_opened_at"]),
                        "claimed_at": domain.iso(claim["claimed_at"]), "outcome": "pooled"})
                return {"status": "pooled", "direction": None,
                        "pool_closes_at": domain.iso(rules.pool_closes_at(
                            place["vacancy_opened_at"]))}
        # the window closed meanwhile: first come from here on

    # claims pooled in the window come first, even if their timer has not run yet
    resolve_pool(db, rules, place_id, reserve_claimant, release_reservation,
                 request_id=request_id, wait=True)
    reserved = None
    try:
        with _transaction(db) as tx:
            place = storage.get_place(tx, place_id, lock="update")
            if place is not None and place["status"] == domain.PLACE_DIRECTED:
                mine = storage.get_direction(tx, place["direction_number"])
                if mine is not None and mine["application_number"] == number:
                    return {"status": "issued", "direction": domain.direction_snapshot(mine)}
            _require_vacancy(place)
            # the queue call holds the place row: exactly one first-come winner
            reserved = reserve_claimant(domain.queue_place(place), [number])
            if not reserved:
                raise RuleRefused("the child does not fit this place",
                                  field="application_number", code="DOES_NOT_FIT")
            if (reserved["application_number"] == number and reserved.get("applicant_id")
                    and reserved["applicant_id"] != applicant_id):
                raise Forbidden("this application is not yours", field="application_number")
            direction = _issue(tx, rules, place, reserved, by_claim=True,
                               request_id=request_id, system=False)
            storage.insert_claim(tx, place_id, place["vacancy_opened_at"],
                                 reserved["application_number"],
                                 applicant_id if reserved["application_number"] == number
                                 else (reserved.get("applicant_id") or ""),
                                 outcome="won", direction_number=direction["number"])
    except Exception:
        if reserved:
            _release_quietly(release_reservation, place_id)
        raise
    if reserved["application_number"] != number:
        # the queue held this place for an earlier claimant whose direction was not issued
        raise Conflict("the place was given to another claimant", field="place_id",
                       code="PLACE_TAKEN")
    return {"status": "issued", "direction": domain.direction_snapshot(direction)}


def _require_vacancy(place: Mapping[str, Any] | None) -> None:
    if place is None:
        raise NotFound("no such place", field="place_id")
    if place["status"] != domain.PLACE_VACANCY:
        raise Conflict("the place is not a public vacancy", field="place_id",
                       code="PLACE_NOT_VACANT")


def resolve_pool(db: DatabaseAccess, rules: Rules, place_id: str, reserve_claimant: Remote,
                 release_reservation: Remote | None = None, request_id: str | None = None,
                 wait: bool = False) -> dict[str, Any] | None:
    """Give a vacancy whose claim window has closed to the pooled claimant highest in the queue.

    Returns the direction issued, or None (window still open, no pooled claims, nobody fits,
    or another instance holds the place: ``wait=False`` skips it then).
    """
    reserved = None
    try:
        with _transaction(db) as tx:
            place = storage.get_place(tx, place_id, lock="update" if wait else "update_skip")
            if place is None or place["status"] != domain.PLACE_VACANCY:
                return None
            if rules.in_claim_pool(place["vacancy_opened_at"], tx.now()):
                return None
            claims = storage.pooled_claims(tx, place_id, place["vacancy_opened_at"])
            if not claims:
                return None
            numbers = [c["application_number"] for c in claims]
            owners = {c["application_number"]: c["applicant_id"] for c in claims}
            candidates = list(numbers)
            while candidates:
                reserved = reserve_claimant(domain.queue_place(place), candidates)
                if not reserved or _owned_by(reserved, owners):
                    break
                # a claim made for somebody else's application: drop it and ask again
                if release_reservation is None:
                    raise RuntimeError("resolve_pool needs release_reservation")
                log.warning("claim on place %s for %s was not made by its applicant",
                            place_id, reserved["application_number"])
                release_reservation(place_id)
                candidates.remove(reserved["application_number"])
                reserved = None
            direction = None
            if reserved:
                direction = _issue(tx, rules, place, reserved, by_claim=True,
                                   request_id=request_id, system=True)
            winner = reserved["application_number"] if reserved else None
            storage.settle_claims(tx, place_id, place["vacancy_opened_at"], winner,
                                  direction["number"] if direction else None)
            _journal(tx, f"place:{place_id}", "claim_pool_resolved", {
                "place_id": place_id, "vacancy_opened_at": domain.iso(place["vacancy_opened_at"]),
                "claims": numbers, "winner": winner,
                "direction_number": direction["number"] if direction else None})
            if not direction:
                _audit(tx, contracts.system_audit(SOURCE, "resolve_claims", f"place:{place_id}",
                                                  outcome="no_fit", request_id=request_id))
            return direction
    except Exception:
        if reserved:
            _release_quietly(release_reservation, place_id)
        raise


def _owned_by(reserved: Mapping[str, Any], owners: Mapping[str, str]) -> bool:
    """Was the reserved entry claimed by its own applicant? (An entry the queue had reserved
    for this place before, not among the claims, is taken as it is.)"""
    number = reserved["application_number"]
    if number not in owners or not reserved.get("applicant_id"):
        return True
    return reserved["applicant_id"] == owners[number]


def resolve_due_pools(db: DatabaseAccess, rules: Rules, reserve_claimant: Remote,
                      release_reservation: Remote | None = None, batch: int = 100) -> int:
    """Timer job: resolve every claim pool whose window has closed; returns directions issued."""
    with db.read() as tx:
        due = storage.places_with_due_pools(tx, rules.claim_pool, batch)
    issued = 0
    for place_id in due:
        try:
            if resolve_pool(db, rules, place_id, reserve_claimant, release_reservation):
                issued += 1
        except Exception:  # noqa: BLE001 - one place must not hold up the others
            log.exception("could not resolve the claim pool of place %s", place_id)
    return issued


# -- direction life cycle --------------------------------------------------------------------------

def get_direction(db: DatabaseAccess, number: Any) -> dict[str, Any]:
    number = domain.parse_text(number, "direction_number", 32)
    with db.read() as tx:
        direction = storage.get_direction(tx, number)
    if direction is None:
        raise NotFound("no such direction", field="direction_number")
    return domain.direction_snapshot(direction)


def enroll(db: DatabaseAccess, rules: Rules, number: Any, actor: dict[str, Any] | None,
           get_group: Remote) -> dict[str, Any]:
    """The child arrived: the direction is enrolled and the place filled. A transferred child's
    old place is released at once."""
    number = domain.parse_text(number, "direction_number", 32)
    with db.read() as tx:
        direction = storage.get_direction(tx, number)
    if direction is None:
        raise NotFound("no such direction", field="direction_number")
    domain.require_enroller(actor, direction["organization_id"])
    domain.require_open(direction, "enrol")
    old_group = None
    if direction["type"] == "transfer" and direction["current_group_id"]:
        old_group = get_group(direction["current_group_id"])
        if not old_group:
            raise NotFound("the child's current group was not found", field="direction_number")
    request_id = _request_id(actor)
    with _transaction(db) as tx:
        direction = storage.get_direction(tx, number, lock=True)
        domain.require_open(direction, "enrol")
        direction = storage.update_direction(tx, number, {
            "status": domain.ENROLLED, "closed_at": tx.now(), "reason": None})
        place = storage.update_place(tx, str(direction["place_id"]),
                                     {"status": domain.PLACE_FILLED})
        snapshot = domain.direction_snapshot(direction)
        _journal(tx, f"direction:{number}", "direction_enrolled",
                 {**snapshot, "actor": (actor or {}).get("id")})
        _publish(tx, "direction_changed", snapshot, request_id)
        _publish(tx, "place_changed", domain.place_snapshot(place), request_id)
        if old_group is not None:
            _transfer_release(tx, rules, direction, old_group, request_id)
    return snapshot


def decline(db: DatabaseAccess, rules: Rules, number: Any,
            actor: dict[str, Any] | None) -> dict[str, Any]:
    """The applicant declines the direction: stop-list (by the queue) and a new release."""
    return _close(db, rules, number, domain.DECLINED, "direction declined by the applicant",
                  lambda d: domain.require_direction_holder(actor, d["applicant_id"]),
                  actor, system=False)


def revoke(db: DatabaseAccess, rules: Rules, number: Any, reason: Any,
           actor: dict[str, Any] | None) -> dict[str, Any]:
    """A department officer revokes a direction, giving the reason."""
    domain.require_officer(actor)
    reason = domain.parse_text(reason, "reason", 500)
    return _close(db, rules, number, domain.REVOKED, reason, lambda d: None, actor, system=False)


def expire_due(db: DatabaseAccess, rules: Rules, batch: int = 200) -> int:
    """Timer job: issued directions past their expiry become expired; returns how many."""
    with db.read() as tx:
        numbers = storage.due_direction_numbers(tx, batch)
    expired = 0
    for number in numbers:
        try:
            _close(db, rules, number, domain.EXPIRED, "direction not used before expiry",
                   lambda d: None, None, system=True)
            expired += 1
        except Conflict:
            pass  # enrolled or declined at the same moment
    return expired


def _close(db: DatabaseAccess, rules: Rules, number: Any, status: str, reason: str,
           check: Callable[[dict[str, Any]], None], actor: dict[str, Any] | None,
           system: bool) -> dict[str, Any]:
    """issued -> declined/expired/revoked, and the place goes back to release."""
    number = domain.parse_text(number, "direction_number", 32)
    request_id = _request_id(actor)
    with _transaction(db) as tx:
        direction = storage.get_direction(tx, number, lock=True)
        if direction is None:
            raise NotFound("no such direction", field="direction_number")
        check(direction)
        domain.require_open(direction, {"declined": "decline", "expired": "expire",
                                        "revoked": "revoke"}[status])
        now = tx.now()
        if status == domain.EXPIRED and direction["expires_at"] > now:
            raise Conflict("the direction has not expired", field="direction_number")
        direction = storage.update_direction(tx, number, {
            "status": status, "closed_at": now, "reason": reason})
        snapshot = domain.direction_snapshot(direction)
        _journal(tx, f"direction:{number}", f"direction_{status}",
                 {**snapshot, "actor": (actor or {}).get("id", "system")})
        _publish(tx, "direction_changed", snapshot, request_id)
        place = storage.get_place(tx, str(direction["place_id"]), lock="update")
        _re_release(tx, rules, place, number, request_id)
        if system:
            _audit(tx, contracts.system_audit(SOURCE, "expire", f"direction:{number}",
                                              request_id=request_id))
    return snapshot



# -- snapshot export: kezek registry reconcile -----------------------------------------------------

from services.common.errors import BadInput  # noqa: E402  (only the exports need it)

EXPORT_MAX = 5000


def _export_limit(limit: Any) -> int:
    if isinstance(limit, bool):
        raise BadInput("limit must be a number", field="limit")
    try:
        size = int(limit)
    except (TypeError, ValueError):
        raise BadInput("limit must be a number", field="limit") from None
    if not 1 <= size <= EXPORT_MAX:
        raise BadInput(f"limit must be between 1 and {EXPORT_MAX}", field="limit")
    return size


def _export_keys(keys: Any, field: str, parse: Callable[[Any], str]) -> list[str] | None:
    if keys is None:
        return None
    if not isinstance(keys, list) or len(keys) > EXPORT_MAX:
        raise BadInput(f"{field} must be a list of at most {EXPORT_MAX}", field=field)
    return [parse(k) for k in keys]


def _page(items: list[dict[str, Any]], key: str, size: int, by_keys: bool) -> dict[str, Any]:
    last = not by_keys and len(items) == size
    return {"items": items, "next": items[-1][key] if last else None}


def export_places(db: DatabaseAccess, after_place_id: Any = None, limit: Any = 1000,
                  place_ids: Any = None) -> dict[str, Any]:
    """A page of place snapshots (the ``place_changed`` data at their current revision) in
    place-id order after ``after_place_id``, or exactly the places in ``place_ids``:
    ``{"items": [...], "next": place_id | None}`` (None on the last page)."""
    size = _export_limit(limit)
    after = None if after_place_id in (None, "") else domain.parse_place_id(after_place_id)
    ids = _export_keys(place_ids, "place_ids", domain.parse_place_id)
    with db.read() as tx:
        rows = storage.export_places(tx, after, EXPORT_MAX if ids is not None else size, ids)
    return _page([domain.place_snapshot(r) for r in rows], "place_id", size, ids is not None)


def export_directions(db: DatabaseAccess, after_number: Any = None, limit: Any = 1000,
                      numbers: Any = None) -> dict[str, Any]:
    """A page of direction snapshots (the ``direction_changed`` data at their current
    revision) in number order after ``after_number``, or exactly the directions in
    ``numbers``: ``{"items": [...], "next": number | None}``."""
    size = _export_limit(limit)
    after = None if after_number in (None, "") else domain.parse_text(
        after_number, "after_number", 32)
    nums = _export_keys(numbers, "numbers",
                        lambda n: domain.parse_text(n, "numbers", 32))
    with db.read() as tx:
        rows = storage.export_directions(tx, after, EXPORT_MAX if nums is not None else size,
                                         nums)
    return _page([domain.direction_snapshot(r) for r in rows], "number", size,
                 nums is not None)


def export_releases(db: DatabaseAccess, after_seq: Any = 0, limit: Any = 1000,
                    place_ids: Any = None) -> dict[str, Any]:
    """The release history: every ``place_released`` event as the journal recorded it (the
    event data plus ``release_kind`` and the journal ``seq``), in journal order after
    ``after_seq``, or every release of the places in ``place_ids``:
    ``{"items": [...], "next": seq | None}``."""
    size = _export_limit(limit)
    after = 0 if after_seq in (None, "", 0) else domain.parse_id(after_seq, "after_seq")
    ids = _export_keys(place_ids, "place_ids", domain.parse_place_id)
    with db.read() as tx:
        rows = storage.export_releases(tx, after, EXPORT_MAX if ids is not None else size, ids)
    items = [{**r["data"], "seq": int(r["seq"])} for r in rows]
    return _page(items, "seq", size, ids is not None)
