"""SQL of the queue schema (tables in migrations/versions/0001_initial.py).

Every function takes a :class:`services.common.db.Tx` and works inside the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from services.common.db import Tx, lock_key
from services.queue import domain

S = "queue"

ENTRY_COLUMNS = (
    "application_number", "queue_name", "district", "queue_type", "group_kind", "birth_year",
    "language", "preferred_organizations", "filed_at", "benefit_category", "claimed_tier",
    "benefit_verified", "tier_rank", "status", "stop_entered_at", "stop_exits_at", "stop_reason",
    "applicant_id", "applicant_name", "child_name", "current_organization_id",
    "current_group_id", "revision",
)
# columns a change may set (revision and updated_at are set by update_entry itself)
MUTABLE = frozenset({
    "claimed_tier", "benefit_verified", "benefit_category", "tier_rank", "status",
    "stop_entered_at", "stop_exits_at", "stop_reason",
})
_SELECT = ", ".join(f"e.{c}" for c in ENTRY_COLUMNS)
_IN_QUEUE = "('queued', 'offered', 'stop_listed')"


def _row(result) -> dict[str, Any] | None:
    row = result.mappings().first()
    return dict(row) if row is not None else None


# -- entries ---------------------------------------------------------------------------------------
def insert_entry(tx: Tx, entry: dict[str, Any]) -> dict[str, Any] | None:
    """Insert a new entry (revision 1); None if the application number is already there."""
    cols = [c for c in ENTRY_COLUMNS if c != "revision"]
    return _row(tx.execute(
        f"INSERT INTO {S}.entries AS e ({', '.join(cols)}) "
        f"VALUES ({', '.join(':' + c for c in cols)}) "
        f"ON CONFLICT (application_number) DO NOTHING RETURNING {_SELECT}",
        {c: entry.get(c) for c in cols},
    ))


def lock_application(tx: Tx, number: str) -> None:
    """Serialise creating an entry with handling an event that may come before it."""
    tx.execute("SELECT pg_advisory_xact_lock(:k)", {"k": lock_key(f"queue:application:{number}")})


def get_entry(tx: Tx, number: str, lock: bool = False) -> dict[str, Any] | None:
    return _row(tx.execute(
        f"SELECT {_SELECT} FROM {S}.entries e WHERE e.application_number = :n"
        + (" FOR UPDATE" if lock else ""),
        {"n": number},
    ))


def update_entry(tx: Tx, number: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply ``changes`` to a (locked) entry, bump its revision; returns the new row."""
    unknown = set(changes) - MUTABLE
    if unknown:
        raise ValueError(f"not changeable: {sorted(unknown)}")
    sets = ", ".join(f"{c} = :{c}" for c in changes)
    return _row(tx.execute(
        f"UPDATE {S}.entries AS e SET {sets}, revision = e.revision + 1, "
        f"updated_at = clock_timestamp() WHERE e.application_number = :_n RETURNING {_SELECT}",
        {**changes, "_n": number},
    ))


def queue_number(tx: Tx, entry: dict[str, Any]) -> int | None:
    """1 + entries in the same queue before this one (an index range count)."""
    if entry["status"] not in domain.IN_QUEUE:
        return None
    before = tx.execute(
        f"SELECT count(*) FROM {S}.entries WHERE queue_name = :q AND status IN {_IN_QUEUE} "
        "AND (tier_rank, filed_at, application_number) < (:r, :f, :n)",
        {"q": entry["queue_name"], "r": entry["tier_rank"], "f": entry["filed_at"],
         "n": entry["application_number"]},
    ).scalar()
    return int(before) + 1


# -- candidates: queued entries per preferred organisation ------------------------------------------
def refresh_candidates(tx: Tx, entry: dict[str, Any]) -> None:
    """Make the entry's candidate rows match its state (rows only while it is queued)."""
    tx.execute(f"DELETE FROM {S}.candidates WHERE application_number = :n",
               {"n": entry["application_number"]})
    if entry["status"] == "queued" and entry["preferred_organizations"]:
        tx.execute(
            f"INSERT INTO {S}.candidates (application_number, organization_id, birth_year, "
            "language, group_kind, tier_rank, filed_at) "
            "SELECT :n, org, :by, :lang, :kind, :r, :f FROM unnest(CAST(:orgs AS bigint[])) org "
            "ON CONFLICT DO NOTHING",
            {"n": entry["application_number"], "by": entry["birth_year"],
             "lang": entry["language"], "kind": entry["group_kind"], "r": entry["tier_rank"],
             "f": entry["filed_at"], "orgs": list(entry["preferred_organizations"])},
        )


def pick_candidate(tx: Tx, place: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """Lock and return the first queued entry that chose the place's organisation and fits it.

    The candidates index hands rows over in queue order; ``FOR UPDATE OF e SKIP LOCKED`` skips
    an entry another transaction is reserving right now, and an entry that such a transaction
    has already committed as offered fails the re-checked ``e.status = 'queued'``.
    """
    return _row(tx.execute(
        f"SELECT {_SELECT} FROM {S}.candidates c "
        f"JOIN {S}.entries e ON e.application_number = c.application_number "
        "WHERE c.organization_id = :org AND c.birth_year = :by AND c.language = :lang "
        "AND c.group_kind = :kind AND e.status = 'queued' "
        "ORDER BY c.tier_rank, c.filed_at, c.application_number "
        "LIMIT 1 FOR UPDATE OF e SKIP LOCKED",
        {"org": place["organization_id"], "by": place["birth_year"], "lang": place["language"],
         "kind": kind},
    ))


def pick_claimant(tx: Tx, place: dict[str, Any], kind: str,
                  numbers: list[str]) -> dict[str, Any] | None:
    """Lock and return the claimant highest in the queue who fits the place.

    Plain FOR UPDATE (no SKIP LOCKED): the highest claimant must win even if another
    transaction holds that entry for a moment; if it commits the entry as offered, the
    re-checked condition drops it and the next claimant is taken.
    """
    return _row(tx.execute(
        f"SELECT {_SELECT} FROM {S}.entries e "
        "WHERE e.application_number = ANY(:nums) AND e.status = 'queued' "
        "AND e.birth_year = :by AND e.language = :lang AND e.group_kind = :kind "
        "ORDER BY e.tier_rank, e.filed_at, e.application_number LIMIT 1 FOR UPDATE",
        {"nums": numbers, "by": place["birth_year"], "lang": place["language"], "kind": kind},
    ))


def due_exits(tx: Tx, limit: int) -> list[dict[str, Any]]:
    """Lock stop-listed entries whose exit moment has come."""
    rows = tx.execute(
        f"SELECT {_SELECT} FROM {S}.entries e WHERE e.status = 'stop_listed' "
        "AND e.stop_exits_at <= clock_timestamp() ORDER BY e.stop_exits_at "
        "LIMIT :n FOR UPDATE SKIP LOCKED",
        {"n": limit},
    ).mappings().all()
    return [dict(r) for r in rows]


# -- reservations ------------------------------------------------------------------------------------
def lock_place(tx: Tx, place_id: str) -> None:
    """Serialise calls for one place (the unique index is the guarantee; this avoids the
    needless losing reservation a concurrent duplicate call would otherwise make)."""
    tx.execute("SELECT pg_advisory_xact_lock(:k)", {"k": lock_key(f"queue:place:{place_id}")})


def lock_places(tx: Tx, place_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """lock_place for many places in one statement (in key order: two callers never wait for
    each other in a circle), then their open reservations in one more: ``{place_id: the open
    reservation or None}`` (read after the locks, so it sees what their last holder wrote)."""
    keys = sorted({lock_key(f"queue:place:{p}") for p in place_ids})
    tx.execute("SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM "
               "unnest(CAST(:k AS bigint[])) AS k ORDER BY k) ordered", {"k": keys})
    found: dict[str, dict[str, Any] | None] = {p: None for p in place_ids}
    for row in tx.execute(
            f"SELECT * FROM {S}.reservations WHERE place_id = ANY(CAST(:p AS text[])) "
            "AND status = 'open'", {"p": list(found)}).mappings():
        found[row["place_id"]] = dict(row)
    return found


def open_reservation(tx: Tx, place_id: str) -> dict[str, Any] | None:
    return _row(tx.execute(
        f"SELECT * FROM {S}.reservations WHERE place_id = :p AND status = 'open'",
        {"p": place_id},
    ))


def insert_reservation(tx: Tx, place: dict[str, Any], number: str,
                       kind: str) -> dict[str, Any]:
    return _row(tx.execute(
        f"INSERT INTO {S}.reservations (place_id, application_number, kind, organization_id, "
        "birth_year, language, group_type) VALUES (:p, :n, :k, :org, :by, :lang, :gt) "
        "RETURNING *",
        {"p": place["place_id"], "n": number, "k": kind, "org": place["organization_id"],
         "by": place["birth_year"], "lang": place["language"], "gt": place["group_type"]},
    ))


_RESERVATION_COLUMNS = ("id", "place_id", "application_number", "kind", "organization_id",
                        "birth_year", "language", "group_type", "status", "direction_number",
                        "reserved_at", "closed_at", "close_reason")


def reserve_queued_entry(tx: Tx, place: dict[str, Any], number: str,
                         kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """For a locked, queued entry in one statement: insert_reservation, the entry ``offered``
    (update_entry: revision + 1) and its candidate rows gone (refresh_candidates of an entry
    no longer queued). Returns (the new entry row, the reservation)."""
    reservation_cols = ", ".join(f"r.{c} AS _r_{c}" for c in _RESERVATION_COLUMNS)
    row = tx.execute(
        f"""WITH r AS (
                INSERT INTO {S}.reservations (place_id, application_number, kind,
                    organization_id, birth_year, language, group_type)
                VALUES (:p, :n, :k, :org, :by, :lang, :gt) RETURNING *),
            c AS (DELETE FROM {S}.candidates WHERE application_number = :n),
            u AS (UPDATE {S}.entries AS e SET status = 'offered', revision = e.revision + 1,
                      updated_at = clock_timestamp()
                  WHERE e.application_number = :n AND e.status = 'queued'
                  RETURNING {_SELECT})
            SELECT u.*, {reservation_cols} FROM u CROSS JOIN r""",
        {"p": place["place_id"], "n": number, "k": kind, "org": place["organization_id"],
         "by": place["birth_year"], "lang": place["language"], "gt": place["group_type"]},
    ).mappings().one()
    entry = {c: row[c] for c in ENTRY_COLUMNS}
    reservation = {c: row[f"_r_{c}"] for c in _RESERVATION_COLUMNS}
    return entry, reservation


def close_reservation(tx: Tx, reservation_id: int, status: str, reason: str) -> None:
    tx.execute(
        f"UPDATE {S}.reservations SET status = :s, closed_at = clock_timestamp(), "
        "close_reason = :r WHERE id = :id",
        {"s": status, "r": reason, "id": reservation_id},
    )


def mark_reservation_issued(tx: Tx, place_id: str, number: str, direction_number: str) -> None:
    tx.execute(
        f"UPDATE {S}.reservations SET direction_number = :d "
        "WHERE place_id = :p AND application_number = :n AND status = 'open'",
        {"d": direction_number, "p": place_id, "n": number},
    )


def close_reservations_of_direction(tx: Tx, place_id: str, number: str, reason: str) -> None:
    tx.execute(
        f"UPDATE {S}.reservations SET status = 'closed', closed_at = clock_timestamp(), "
        "close_reason = :r WHERE place_id = :p AND application_number = :n AND status = 'open'",
        {"r": reason, "p": place_id, "n": number},
    )


# -- directions: newest revision applied --------------------------------------------------------------
def claim_direction_revision(tx: Tx, direction: dict[str, Any]) -> bool:
    """Record the direction snapshot's revision; False if this one is not newer."""
    row = tx.execute(
        f"INSERT INTO {S}.directions (number, revision, status, place_id, application_number) "
        "VALUES (:num, :rev, :st, :p, :n) ON CONFLICT (number) DO UPDATE SET "
        "revision = EXCLUDED.revision, status = EXCLUDED.status, updated_at = clock_timestamp() "
        f"WHERE {S}.directions.revision < EXCLUDED.revision RETURNING 1",
        {"num": str(direction["number"]), "rev": int(direction["revision"]),
         "st": direction["status"], "p": str(direction["place_id"]),
         "n": direction["application_number"]},
    ).first()
    return row is not None


# -- events that came before their application ---------------------------------------------------------
def save_early_event(tx: Tx, number: str, event_type: str, data_json: str) -> None:
    tx.execute(
        f"INSERT INTO {S}.early_events (application_number, event_type, data) "
        "VALUES (:n, :t, CAST(:d AS jsonb))",
        {"n": number, "t": event_type, "d": data_json},
    )


def take_early_events(tx: Tx, number: str) -> list[dict[str, Any]]:
    rows = tx.execute(
        f"DELETE FROM {S}.early_events WHERE application_number = :n "
        "RETURNING id, event_type, data",
        {"n": number},
    ).mappings().all()
    return sorted((dict(r) for r in rows), key=lambda r: r["id"])


# -- bulk paths (commands.enqueue_bulk, commands.benefits_verified_bulk) ------------------------------
# Rows travel as one JSON array read with jsonb_to_recordset (services.common.bulk.rows_json).
_COLUMN_TYPES = {
    "application_number": "text", "queue_name": "text", "district": "text",
    "queue_type": "text", "group_kind": "text", "birth_year": "integer", "language": "text",
    "preferred_organizations": "bigint[]", "filed_at": "timestamptz",
    "benefit_category": "text", "claimed_tier": "text", "benefit_verified": "boolean",
    "tier_rank": "smallint", "status": "text", "stop_entered_at": "timestamptz",
    "stop_exits_at": "timestamptz", "stop_reason": "text", "applicant_id": "text",
    "applicant_name": "text", "child_name": "text", "current_organization_id": "bigint",
    "current_group_id": "bigint", "revision": "integer",
}


def _recordset(cols: list[str]) -> str:
    types = ", ".join(f"{c} {_COLUMN_TYPES[c]}" for c in cols)
    return (f"ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS ({types})) "
            f"WITH ORDINALITY AS u({', '.join(cols)}, i)")


def _numbers_json(numbers: list[str]) -> str:
    import json

    return json.dumps(list(numbers))


def lock_applications(tx: Tx, numbers: list[str]) -> None:
    """lock_application for many numbers, in one statement and one global order (no deadlock
    between two bulk callers)."""
    import json

    keys = sorted({lock_key(f"queue:application:{n}") for n in numbers})
    if keys:
        tx.execute("SELECT count(pg_advisory_xact_lock(k::bigint)) FROM "
                   "jsonb_array_elements_text(CAST(:k AS jsonb)) WITH ORDINALITY AS t(k, i)",
                   {"k": json.dumps([str(k) for k in keys])})


def insert_entries_bulk(tx: Tx, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """insert_entry for many entries; returns the rows created (numbers already there are
    left as they are), in the order given."""
    from services.common.bulk import rows_json

    if not entries:
        return []
    cols = [c for c in ENTRY_COLUMNS if c != "revision"]
    rows = tx.execute(
        f"INSERT INTO {S}.entries AS e ({', '.join(cols)}) "
        f"SELECT {', '.join('u.' + c for c in cols)} FROM {_recordset(cols)} ORDER BY u.i "
        f"ON CONFLICT (application_number) DO NOTHING RETURNING {_SELECT}",
        {"rows": rows_json({c: e.get(c) for c in cols} for e in entries)},
    ).mappings().all()
    created = {r["application_number"]: dict(r) for r in rows}
    return [created[e["application_number"]] for e in entries
            if e["application_number"] in created]


def entries_for_update(tx: Tx, numbers: list[str]) -> dict[str, dict[str, Any]]:
    """get_entry(lock=True) for many numbers, locked in number order."""
    rows = tx.execute(
        f"SELECT {_SELECT} FROM {S}.entries e WHERE e.application_number IN "
        "(SELECT jsonb_array_elements_text(CAST(:n AS jsonb))) "
        "ORDER BY e.application_number FOR UPDATE",
        {"n": _numbers_json(sorted(set(numbers)))},
    ).mappings().all()
    return {r["application_number"]: dict(r) for r in rows}


def update_entries_bulk(tx: Tx, changes: list[tuple[str, dict[str, Any]]]
                        ) -> dict[str, dict[str, Any]]:
    """update_entry for many (number, changes) with the same changed columns: number -> the
    new row (revision + 1)."""
    from services.common.bulk import rows_json

    if not changes:
        return {}
    cols = sorted(changes[0][1])
    unknown = set(cols) - MUTABLE
    if unknown or any(sorted(c) != cols for _, c in changes):
        raise ValueError(f"not changeable together: {sorted(unknown) or 'different columns'}")
    rows = tx.execute(
        f"UPDATE {S}.entries AS e SET {', '.join(f'{c} = u.{c}' for c in cols)}, "
        "revision = e.revision + 1, updated_at = clock_timestamp() "
        f"FROM {_recordset(['application_number', *cols])} "
        f"WHERE e.application_number = u.application_number RETURNING {_SELECT}",
        {"rows": rows_json({"application_number": n, **c} for n, c in changes)},
    ).mappings().all()
    return {r["application_number"]: dict(r) for r in rows}


def refresh_candidates_bulk(tx: Tx, entries: list[dict[str, Any]]) -> None:
    """refresh_candidates for many entries: their rows match their state afterwards."""
    if not entries:
        return
    tx.execute(
        f"DELETE FROM {S}.candidates WHERE application_number IN "
        "(SELECT jsonb_array_elements_text(CAST(:n AS jsonb)))",
        {"n": _numbers_json([e["application_number"] for e in entries])},
    )
    insert_candidates_bulk(tx, entries)


def insert_candidates_bulk(tx: Tx, entries: list[dict[str, Any]]) -> None:
    """The candidate rows of new entries (rows only for queued ones)."""
    from services.common.bulk import rows_json

    rows = [{"application_number": e["application_number"], "org": int(org),
             "birth_year": e["birth_year"], "language": e["language"],
             "group_kind": e["group_kind"], "tier_rank": e["tier_rank"],
             "filed_at": e["filed_at"]}
            for e in entries if e["status"] == "queued"
            for org in e["preferred_organizations"] or []]
    if not rows:
        return
    tx.execute(
        f"INSERT INTO {S}.candidates (application_number, organization_id, birth_year, "
        "language, group_kind, tier_rank, filed_at) "
        "SELECT r.application_number, r.org, r.birth_year, r.language, r.group_kind, "
        "r.tier_rank, r.filed_at FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS "
        "r(application_number text, org bigint, birth_year integer, language text, "
        "group_kind text, tier_rank smallint, filed_at timestamptz) ON CONFLICT DO NOTHING",
        {"rows": rows_json(rows)},
    )


def take_early_events_bulk(tx: Tx, numbers: list[str]) -> dict[str, list[dict[str, Any]]]:
    """take_early_events for many numbers: number -> its early events, oldest first."""
    if not numbers:
        return {}
    rows = tx.execute(
        f"DELETE FROM {S}.early_events WHERE application_number IN "
        "(SELECT jsonb_array_elements_text(CAST(:n AS jsonb))) "
        "RETURNING id, application_number, event_type, data",
        {"n": _numbers_json(numbers)},
    ).mappings().all()
    out: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r["id"]):
        out.setdefault(r["application_number"], []).append(dict(r))
    return out


# -- snapshot export (kezek registry reconcile) -----------------------------------------------------
def export_entries(tx: Tx, after: str | None, limit: int,
                   numbers: list[str] | None = None) -> list[dict[str, Any]]:
    """Entries in application-number order after ``after``, or exactly those in ``numbers``."""
    if numbers is not None:
        where, params = "e.application_number = ANY(CAST(:nums AS text[]))", {"nums": numbers}
    else:
        where, params = "e.application_number > :after", {"after": after or ""}
    rows = tx.execute(
        f"SELECT {_SELECT} FROM {S}.entries e WHERE {where} "
        "ORDER BY e.application_number LIMIT :n",
        {**params, "n": limit},
    ).mappings().all()
    return [dict(r) for r in rows]
