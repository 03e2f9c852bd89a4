"""Registry commands: one transaction each, plain values in, plain JSON-able dicts out.

The Nameko service, the CLI and bulk loaders call these with a DatabaseAccess for the
``registry`` schema. Event appliers claim the event in the inbox in the same transaction as the
effect and apply a snapshot only if its revision is newer than the stored one, so a redelivered,
repeated or older event changes nothing.
"""

from __future__ import annotations

from typing import Any, Mapping

from services.common import contracts
from services.common.db import DatabaseAccess, Tx
from services.common.errors import BadInput, NotFound
from services.registry import domain, queries, storage

SOURCE = "registry"
MAX_LOOKUPS = 200  # application numbers in one queue_lookups call


def _request_id(actor: Mapping[str, Any] | None) -> str | None:
    return actor.get("request_id") if isinstance(actor, Mapping) else None


def _actor_id(actor: Mapping[str, Any] | None) -> str | None:
    return actor.get("id") if isinstance(actor, Mapping) else None


def _publish_organization(tx: Tx, organization_id: int, kind: str, actor: Mapping[str, Any],
                          details: Mapping[str, Any]) -> dict[str, Any]:
    """Ledger row and organization_changed event for a master-data change; returns the view."""
    view = queries.organization(tx, organization_id)
    tx.journal(f"organization:{organization_id}", kind,
               {**details, "actor": _actor_id(actor), "role": (actor or {}).get("role"),
                "revision": view["revision"]})
    tx.publish(contracts.envelope(
        SOURCE, "organization_changed",
        {"organization_id": organization_id, "revision": view["revision"], "organization": view},
        request_id=_request_id(actor)))
    return view


# -- master data ---------------------------------------------------------------------------------


def create_organization(db: DatabaseAccess, data: Mapping[str, Any],
                        actor: Mapping[str, Any]) -> dict[str, Any]:
    domain.require_master_data_role(actor)
    org = domain.validate_organization(data)
    with db.transaction() as tx:
        organization_id = storage.insert_organization(tx, org)
        return _publish_organization(tx, organization_id, "organization_created", actor, org)


def update_organization(db: DatabaseAccess, organization_id: Any, data: Mapping[str, Any],
                        actor: Mapping[str, Any]) -> dict[str, Any]:
    domain.require_master_data_role(actor)
    organization_id = domain.parse_id(organization_id, "organization_id")
    changes = domain.validate_organization(data, partial=True)
    with db.transaction() as tx:
        current = storage.lock_organization(tx, organization_id)
        if current is None:
            raise NotFound(f"organisation {organization_id} does not exist",
                           field="organization_id")
        if "languages" in changes:
            orphaned = storage.group_languages(tx, organization_id) - set(changes["languages"])
            if orphaned:
                raise BadInput(f"groups still teach in {', '.join(sorted(orphaned))}",
                               field="languages")
        changes = {k: v for k, v in changes.items() if current[k] != v}
        if not changes:
            return queries.organization(tx, organization_id)
        storage.update_organization(tx, organization_id, changes)
        return _publish_organization(tx, organization_id, "organization_updated", actor, changes)


def add_group(db: DatabaseAccess, organization_id: Any, data: Mapping[str, Any],
              actor: Mapping[str, Any]) -> dict[str, Any]:
    organization_id = domain.parse_id(organization_id, "organization_id")
    domain.require_master_data_role(actor, organization_id, staff_allowed=True)
    with db.transaction() as tx:
        current = storage.lock_organization(tx, organization_id)
        if current is None:
            raise NotFound(f"organisation {organization_id} does not exist",
                           field="organization_id")
        group = domain.validate_group(data, current["languages"])
        group_id = storage.insert_group(tx, organization_id, group)
        _publish_organization(tx, organization_id, "group_added", actor,
                              {**group, "group_id": group_id})
        return queries.group(tx, group_id)


def seed_districts(db: DatabaseAccess, names: list[str]) -> list[dict[str, str]]:
    """Reference districts known before any organisation is in them (CLI, demo loader)."""
    with db.transaction() as tx:
        storage.seed_districts(tx, [domain.clean_district(n) for n in names])
        return queries.districts(tx)


# -- master-data reads ---------------------------------------------------------------------------


def get_organization(db: DatabaseAccess, organization_id: Any) -> dict[str, Any]:
    organization_id = domain.parse_id(organization_id, "organization_id")
    with db.read() as tx:
        view = queries.organization(tx, organization_id)
        if view is None:
            raise NotFound(f"organisation {organization_id} does not exist",
                           field="organization_id")
        view["republished_at"] = domain.iso(queries.republished_at(tx, "organizations"))
        return view


def get_group(db: DatabaseAccess, group_id: Any) -> dict[str, Any]:
    group_id = domain.parse_id(group_id, "group_id")
    with db.read() as tx:
        view = queries.group(tx, group_id)
    if view is None:
        raise NotFound(f"group {group_id} does not exist", field="group_id")
    return view


def check_preferences(db: DatabaseAccess, organization_ids: Any, birth_year: Any, language: Any,
                      queue_type: Any, settings: domain.RegistrySettings) -> None:
    ids, birth_year, language, queue_type = domain.validate_preferences(
        organization_ids, birth_year, language, queue_type, settings.max_preferred)
    if not ids:
        return None
    group_type = domain.fitting_group_type(queue_type)
    with db.read() as tx:
        existing, fitting = queries.fitting_organizations(tx, ids, birth_year, language,
                                                          group_type)
    for organization_id in ids:
        if organization_id not in existing:
            raise BadInput(f"organisation {organization_id} does not exist",
                           field="preferred_organizations")
        if organization_id not in fitting:
            raise BadInput(
                f"organisation {organization_id} has no {group_type} group for children born "
                f"in {birth_year} taught in {language}", field="preferred_organizations")
    return None


def list_districts(db: DatabaseAccess) -> list[dict[str, str]]:
    with db.read() as tx:
        return queries.districts(tx)


# -- public registries ---------------------------------------------------------------------------


def _page(registry: str, filters: Any, page: Any, page_size: Any,
          settings: domain.RegistrySettings) -> tuple[dict[str, Any], int, int]:
    page, page_size = domain.parse_page(page, page_size)
    return domain.parse_filters(registry, filters, settings.tz), page, page_size


def list_organizations(db: DatabaseAccess, filters: Any, page: Any, page_size: Any,
                       settings: domain.RegistrySettings) -> dict[str, Any]:
    f, page, size = _page("organizations", filters, page, page_size, settings)
    with db.read() as tx:
        items, total = queries.list_organizations(tx, f, size, (page - 1) * size)
        at = queries.republished_at(tx, "organizations")
    return domain.page_result(items, total, page, size, domain.ORGANIZATION_COLUMNS, at)


def list_queue(db: DatabaseAccess, filters: Any, page: Any, page_size: Any,
               settings: domain.RegistrySettings) -> dict[str, Any]:
    f, page, size = _page("queue", filters, page, page_size, settings)
    rows, total, at = queries.list_queue(db, f, size, (page - 1) * size)
    return domain.page_result([domain.queue_row(r, settings) for r in rows], total, page, size,
                              domain.QUEUE_COLUMNS, at)


def queue_lookup(db: DatabaseAccess, application_number: Any,
                 settings: domain.RegistrySettings) -> dict[str, Any]:
    outcome = queue_lookups(db, [application_number], settings)[0]
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def queue_lookups(db: DatabaseAccess, application_numbers: Any,
                  settings: domain.RegistrySettings) -> list[dict[str, Any]]:
    """:func:`queue_lookup` of each number, from one statement: ``{"result": row}`` or
    ``{"error": BadInput | NotFound}`` for each, in order."""
    if not isinstance(application_numbers, list):
        raise BadInput("application_numbers must be a list", field="application_numbers")
    if len(application_numbers) > MAX_LOOKUPS:
        raise BadInput(f"at most {MAX_LOOKUPS} application numbers at once",
                       field="application_numbers")
    numbers = [n.strip() if isinstance(n, str) else None for n in application_numbers]
    rows = queries.queue_entries(db, sorted({n for n in numbers if n}))
    outcomes: list[dict[str, Any]] = []
    for number in numbers:
        row = rows.get(number)
        if not number:
            outcomes.append({"error": BadInput("application_number is required",
                                               field="application_number")})
        elif row is None:
            outcomes.append({"error": NotFound(
                f"application {number} is not in the queue registry",
                field="application_number")})
        else:
            out = domain.lookup_row(row, settings)
            out["columns"] = list(domain.LOOKUP_COLUMNS)
            out["republished_at"] = domain.iso(row["model_republished_at"])
            outcomes.append({"result": out})
    return outcomes


def list_vacancies(db: DatabaseAccess, filters: Any, page: Any, page_size: Any,
                   settings: domain.RegistrySettings) -> dict[str, Any]:
    f, page, size = _page("vacancies", filters, page, page_size, settings)
    with db.read() as tx:
        rows, total = queries.list_vacancies(tx, f, size, (page - 1) * size)
        at = queries.republished_at(tx, "vacancies")
    return domain.page_result([domain.vacancy_row(r) for r in rows], total, page, size,
                              domain.VACANCY_COLUMNS, at)


def list_releases(db: DatabaseAccess, filters: Any, page: Any, page_size: Any,
                  settings: domain.RegistrySettings) -> dict[str, Any]:
    f, page, size = _page("releases", filters, page, page_size, settings)
    with db.read() as tx:
        rows, total = queries.list_releases(tx, f, size, (page - 1) * size)
        at = queries.republished_at(tx, "releases")
    return domain.page_result([domain.release_row(r, settings.tz) for r in rows], total, page,
                              size, domain.RELEASE_COLUMNS, at)


def list_directions(db: DatabaseAccess, filters: Any, page: Any, page_size: Any,
                    settings: domain.RegistrySettings) -> dict[str, Any]:
    f, page, size = _page("directions", filters, page, page_size, settings)
    with db.read() as tx:
        rows, total = queries.list_directions(tx, f, size, (page - 1) * size)
        at = queries.republished_at(tx, "directions")
    return domain.page_result([domain.direction_row(r, settings) for r in rows], total, page,
                              size, domain.DIRECTION_COLUMNS, at)


def statistics(db: DatabaseAccess, filters: Any,
               settings: domain.RegistrySettings) -> dict[str, Any]:
    """Anonymised statistics (05-23): only counts, and counts of fewer than 5 children hidden."""
    f = domain.parse_filters("statistics", filters, settings.tz)
    with db.read() as tx:
        sizes = queries.queue_sizes(tx, f)
        flows = queries.fact_counts(tx, f, ("filed", "withdrawn", "provided"), ("day",))
        allocations = queries.fact_counts(
            tx, f, ("direction_issued", "direction_enrolled", "direction_declined",
                    "direction_expired", "direction_revoked"), ("day", "direction_type"))
        org_activity = queries.fact_counts(tx, f, ("place_released", "direction_enrolled"),
                                           ("organization_id",))
        departments = queries.fact_counts(
            tx, f, ("benefit_granted", "stop_listed", "direction_revoked", "master_data_changed"),
            ("day",))
        users = queries.fact_counts(tx, f, ("filed", "withdrawn", "direction_declined"),
                                    ("day",))
        events = queries.events_taken(tx, f, settings.timezone)
        names = queries.organization_names(
            tx, sorted({r["organization_id"] for r in org_activity if r["organization_id"]}))
        at = queries.republished_at(tx, "statistics")
    return domain.build_statistics(f, sizes, flows, allocations, org_activity, departments,
                                   users, events, names, at)


# -- read models fed by events -------------------------------------------------------------------


def apply_queue_entry(db: DatabaseAccess, event_id: str, data: Mapping[str, Any],
                      settings: domain.RegistrySettings,
                      handler: str = "registry.on_queue_entry_changed") -> str:
    """Apply a queue_entry_changed snapshot; 'applied', 'stale' or 'duplicate'."""
    entry = domain.clean_entry(data)
    with db.transaction() as tx:
        if not tx.claim_event(handler, event_id):
            return "duplicate"
        old = storage.lock_entry(tx, entry["application_number"])
        if old is None and not storage.insert_entry(tx, entry):
            # inserted by a concurrent handler since we looked: now it is there to lock
            old = storage.lock_entry(tx, entry["application_number"])
        if old is not None:
            if old["revision"] >= entry["revision"]:
                return "stale"
            storage.update_entry(tx, entry)
        storage.add_facts(tx, _entry_facts(old, entry), settings.timezone)
        return "applied"


def apply_place(db: DatabaseAccess, event_id: str, data: Mapping[str, Any], released: bool,
                settings: domain.RegistrySettings, handler: str) -> str:
    """Apply a place_released (``released``) or place_changed snapshot."""
    place = domain.clean_place(data)
    with db.transaction() as tx:
        if not tx.claim_event(handler, event_id):
            return "duplicate"
        if released:
            # a release is a fact of the protocol even when a newer snapshot overtook it
            if storage.insert_release(tx, place) is not None:
                storage.add_facts(tx, [{
                    "kind": "place_released", "at": place["released_at"],
                    "organization_id": place["organization_id"],
                    "birth_year": place["birth_year"], "language": place["language"]}],
                    settings.timezone)
        else:
            storage.update_release(tx, place)
        old = storage.lock_place(tx, place["place_id"])
        if old is None and not storage.insert_place(tx, place):
            old = storage.lock_place(tx, place["place_id"])
        if old is not None:
            if old["revision"] >= place["revision"]:
                return "stale"
            storage.update_place(tx, place)
        return "applied"


def apply_direction(db: DatabaseAccess, event_id: str, data: Mapping[str, Any],
                    settings: domain.RegistrySettings, handler: str) -> str:
    """Apply a direction_issued / direction_changed snapshot; enrolment fills its group."""
    direction = domain.clean_direction(data)
    with db.transaction() as tx:
        if not tx.claim_event(handler, event_id):
            return "duplicate"
        old = storage.lock_direction(tx, direction["number"])
        if old is None and not storage.insert_direction(tx, direction):
            old = storage.lock_direction(tx, direction["number"])
        if old is not None:
            if old["revision"] >= direction["revision"]:
                return "stale"
            storage.update_direction(tx, direction)
        delta = domain.enrolled_delta(old["status"] if old else None, direction["status"])
        if delta and direction["group_id"] is not None:
            storage.add_enrolled(tx, direction["group_id"], delta)
        storage.add_facts(tx, _direction_facts(old, direction), settings.timezone)
        return "applied"


def _entry_facts(old: Mapping[str, Any] | None, entry: Mapping[str, Any]) -> list[dict]:
    """The statistic facts of a queue entry moving from ``old`` (None: first seen)."""
    dims = {k: entry[k] for k in ("district", "queue_type", "birth_year", "language")}
    return [{"kind": kind, "at": entry["filed_at"] if kind == "filed" else None, **dims}
            for kind in domain.entry_facts(old, entry)]


def _direction_facts(old: Mapping[str, Any] | None,
                     direction: Mapping[str, Any]) -> list[dict]:
    """The statistic facts of a direction moving from ``old`` (None: first seen)."""
    dims = {"organization_id": direction["organization_id"],
            "birth_year": direction["birth_year"], "language": direction["language"],
            "direction_type": direction["type"]}
    return [{"kind": kind, **dims,
             "at": direction["issued_at"] if kind == "direction_issued"
             else direction["closed_at"]}
            for kind in domain.direction_facts(old, direction)]


def apply_organization_changed(db: DatabaseAccess, event_id: str, data: Mapping[str, Any],
                               settings: domain.RegistrySettings,
                               handler: str = "registry.on_organization_changed") -> str:
    """Count a master-data change for the departments' activity statistic (05-23.5)."""
    with db.transaction() as tx:
        if not tx.claim_event(handler, event_id):
            return "duplicate"
        storage.add_facts(tx, [{"kind": "master_data_changed",
                                "organization_id": data["organization_id"]}], settings.timezone)
        return "applied"


# -- the same appliers, a batch of events at a time ------------------------------------------------
# The registry's event handlers are batched (services.common.events): while one batch is
# applied, the events delivered meanwhile wait, and go next together. These apply a batch in one
# transaction with a fixed number of statements (the inbox rows, then one statement per table),
# instead of a few statements per event.


def apply_batch(db: DatabaseAccess, handler: str, events: list[tuple[str, dict[str, Any]]],
                apply_many) -> list[str]:
    """``events``: (event_id, cleaned snapshot) pairs; ``apply_many(tx, snapshots)`` applies
    those not yet handled and returns an outcome for each. One outcome per event, in order:
    'duplicate' for an event the inbox already has."""
    with db.transaction() as tx:
        tx.claim_events(handler, [event_id for event_id, _ in events])
        fresh = [tx.claim_event(handler, event_id) for event_id, _ in events]
        todo = [snapshot for (_, snapshot), new in zip(events, fresh) if new]
        done = iter(apply_many(tx, todo) if todo else [])
    return [next(done) if new else "duplicate" for new in fresh]


def _in_rounds(items: list[dict[str, Any]], key: str, apply_set) -> list[str]:
    """``apply_set(snapshots)`` (an outcome each) over the snapshots of a batch, at most one
    per key at a time: where a batch holds several snapshots of one thing, the second goes in
    a second round, after the first is written, as they would have gone one by one."""
    rounds: list[list[int]] = []
    seen: dict[Any, int] = {}
    for i, item in enumerate(items):
        k = _key(item[key])
        n = seen[k] = seen.get(k, -1) + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
    outcomes: list[str] = [""] * len(items)
    for positions in rounds:
        for i, outcome in zip(positions, apply_set([items[i] for i in positions])):
            outcomes[i] = outcome
    return outcomes


def _key(value: Any) -> Any:
    return value if isinstance(value, (str, int)) else storage._j(value)


def _write_snapshots(tx: Tx, table: str, key: str, snapshots: list[dict[str, Any]],
                     columns: str, lock_one) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Lock the rows of these snapshots (one each at most), insert the new ones and update
    those the snapshot is newer than: (the rows as they were, by key; the keys written)."""
    old = storage.lock_many(tx, table, key, [x[key] for x in snapshots], columns)
    inserted = storage.insert_new(tx, table, key, [x for x in snapshots if x[key] not in old])
    for x in snapshots:  # inserted by a concurrent transaction since we looked: lock it now
        if x[key] not in old and x[key] not in inserted:
            found = lock_one(tx, x[key])
            if found is not None:
                old[x[key]] = found
    updated = storage.update_newer(tx, table, key, [x for x in snapshots if x[key] in old])
    return old, inserted | updated


def apply_queue_entries(tx: Tx, entries: list[dict[str, Any]],
                        settings: domain.RegistrySettings) -> list[str]:
    """apply_queue_entry for the cleaned snapshots of a batch."""
    return _in_rounds(entries, "application_number",
                      lambda newest: _apply_entries(tx, newest, settings))


def _apply_entries(tx: Tx, newest: list[dict[str, Any]],
                   settings: domain.RegistrySettings) -> list[str]:
    old, written = _write_snapshots(tx, "queue_entries", "application_number", newest,
                                    "revision, status, benefit_tier", storage.lock_entry)
    applied = [e["application_number"] in written for e in newest]
    storage.add_facts(tx, [fact for e, ok in zip(newest, applied) if ok
                           for fact in _entry_facts(old.get(e["application_number"]), e)],
                      settings.timezone)
    return ["applied" if ok else "stale" for ok in applied]


def apply_places(tx: Tx, places: list[dict[str, Any]], released: bool,
                 settings: domain.RegistrySettings) -> list[str]:
    """apply_place for the cleaned snapshots of a batch."""
    if released:
        # every release is a fact of the protocol, even one a newer snapshot overtook
        inserted = storage.insert_releases(tx, places)
        storage.add_facts(tx, [{
            "kind": "place_released", "at": p["released_at"],
            "organization_id": p["organization_id"], "birth_year": p["birth_year"],
            "language": p["language"]} for p in places
            if (storage._j(p["place_id"]), p["revision"]) in inserted], settings.timezone)

    def apply_set(newest: list[dict[str, Any]]) -> list[str]:
        if not released:
            storage.update_releases(tx, newest)
        written = storage.upsert_places(tx, newest)
        return ["applied" if storage._j(p["place_id"]) in written else "stale" for p in newest]

    return _in_rounds(places, "place_id", apply_set)


def apply_directions(tx: Tx, directions: list[dict[str, Any]],
                     settings: domain.RegistrySettings) -> list[str]:
    """apply_direction for the cleaned snapshots of a batch."""
    return _in_rounds(directions, "number",
                      lambda newest: _apply_directions(tx, newest, settings))


def _apply_directions(tx: Tx, newest: list[dict[str, Any]],
                      settings: domain.RegistrySettings) -> list[str]:
    old, written = _write_snapshots(tx, "directions", "number", newest, "revision, status",
                                    storage.lock_direction)
    facts, enrolled = [], {}
    for d in newest:
        if d["number"] not in written:
            continue
        before = old.get(d["number"])
        delta = domain.enrolled_delta(before["status"] if before else None, d["status"])
        if delta and d["group_id"] is not None:
            enrolled[d["group_id"]] = enrolled.get(d["group_id"], 0) + delta
        facts += _direction_facts(before, d)
    for group_id, delta in sorted(enrolled.items()):
        if delta:
            storage.add_enrolled(tx, group_id, delta)
    storage.add_facts(tx, facts, settings.timezone)
    return ["applied" if d["number"] in written else "stale" for d in newest]
