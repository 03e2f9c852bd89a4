"""SQL of the allocation schema (tables in migrations/versions/0001_initial.py) and the holiday
file reader.

Every query function takes a :class:`services.common.db.Tx` and works inside the caller's
transaction.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
from pathlib import Path
from typing import Any

from services.allocation.domain import WorkingCalendar
from services.common.db import Tx, lock_key

S = "allocation"
DEFAULT_HOLIDAYS = Path(__file__).with_name("holidays_kz.csv")


def _row(result) -> dict[str, Any] | None:
    row = result.mappings().first()
    return dict(row) if row is not None else None


def _rows(result) -> list[dict[str, Any]]:
    return [dict(r) for r in result.mappings().all()]


# -- calendar --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def load_calendar(path: str | None = None) -> WorkingCalendar:
    """The working-day calendar from a holidays CSV (``date,kind,...``; ``#`` lines are notes)."""
    from services.common.config import ROOT

    file = Path(path) if path else Path(DEFAULT_HOLIDAYS)
    if not file.is_absolute():
        file = ROOT / file
    with open(file, newline="", encoding="utf-8") as fh:
        lines = [line for line in fh if line.strip() and not line.lstrip().startswith("#")]
    return WorkingCalendar.from_rows(csv.DictReader(lines))


# -- inbox -----------------------------------------------------------------------------------
def inbox_has(tx: Tx, handler: str, event_id: str) -> bool:
    return tx.execute(
        f"SELECT 1 FROM {S}.inbox WHERE handler = :h AND event_id = CAST(:e AS uuid)",
        {"h": handler, "e": event_id},
    ).first() is not None


def place_and_inbox(tx: Tx, place_id: str, handler: str,
                    event_id: str) -> tuple[dict[str, Any] | None, bool]:
    """(the place or None, whether the event is in the inbox already): one round trip."""
    row = _row(tx.execute(
        f"SELECT p.*, EXISTS (SELECT 1 FROM {S}.inbox WHERE handler = :h "
        "AND event_id = CAST(:e AS uuid)) AS _handled "
        f"FROM (SELECT 1) one LEFT JOIN {S}.places p ON p.place_id = CAST(:p AS uuid)",
        {"h": handler, "e": event_id, "p": place_id}))
    handled = bool(row.pop("_handled"))
    return (row if row["place_id"] is not None else None), handled


# -- outbox ----------------------------------------------------------------------------------
def insert_outbox(tx: Tx, events: list[tuple[str, str, dict[str, Any]]]) -> int:
    """Outbox rows ``(exchange, routing_key, envelope)`` in this order, in one statement
    (services.common.bulk.outbox_rows, which counts them in ``tx.published``)."""
    from services.common.bulk import outbox_rows

    return outbox_rows(tx, events)


# -- releases --------------------------------------------------------------------------------
def lock_group(tx: Tx, group_id: int) -> None:
    """Serialise releases of one group so two of them cannot both pass the capacity check."""
    tx.execute("SELECT pg_advisory_xact_lock(:k)", {"k": lock_key(f"allocation:group:{group_id}")})


def open_places_now_and_release(tx: Tx, group_id: int, idempotency_key: str | None
                                ) -> tuple[int, dt.datetime, dict[str, Any] | None]:
    """The group's open (not filled) places, the database clock and the release already
    made with this idempotency key (or None), in one round trip (after lock_group)."""
    row = _row(tx.execute(
        f"SELECT (SELECT count(*) FROM {S}.places WHERE group_id = :g AND status <> 'filled')"
        " AS _open, clock_timestamp() AS _now, r.* FROM (SELECT 1) one "
        f"LEFT JOIN {S}.releases r ON r.idempotency_key = CAST(:k AS text)",
        {"g": group_id, "k": idempotency_key}))
    open_places, now = int(row.pop("_open")), row.pop("_now")
    return open_places, now, (row if row["release_id"] is not None else None)


def insert_release_with_places(tx: Tx, release: dict[str, Any], places: list[dict[str, Any]]
                               ) -> list[dict[str, Any]] | None:
    """A release and its places in one statement (set_release_places included): the release
    row (``kind``, ``organization_id``, ``group_id``, ``actor``, ``idempotency_key``,
    ``source_direction``, ``released_at``) and its places (each without ``release_id``),
    which get its id. Returns the place rows in the order given, or None (and writes nothing)
    if the idempotency key or source direction is already used."""
    from services.common.bulk import rows_json

    cols = [c for c in PLACE_INSERT_COLUMNS if c != "release_id"]
    typed = ", ".join(f"{c} {_PLACE_TYPES.get(c, 'text')}" for c in cols)
    actor = release.get("actor") or {}
    rows = tx.execute(
        f"WITH rel AS (INSERT INTO {S}.releases (kind, organization_id, group_id, places, "
        "source_direction, idempotency_key, actor_id, actor_role, released_at, place_ids) "
        "VALUES (:kind, :org, :g, :n, :src, :key, :aid, :role, :at, CAST(:ids AS uuid[])) "
        "ON CONFLICT DO NOTHING RETURNING release_id) "
        f"INSERT INTO {S}.places (release_id, {', '.join(cols)}) "
        f"SELECT rel.release_id, {', '.join('r.' + c for c in cols)} FROM rel, "
        f"ROWS FROM (jsonb_to_recordset(CAST(:rows AS jsonb)) AS ({typed})) "
        f"WITH ORDINALITY AS r({', '.join(cols)}, i) ORDER BY r.i RETURNING *",
        {"kind": release["kind"], "org": release["organization_id"],
         "g": release["group_id"], "n": len(places), "src": release.get("source_direction"),
         "key": release.get("idempotency_key"), "aid": actor.get("id"),
         "role": actor.get("role"), "at": release["released_at"],
         "ids": [str(p["place_id"]) for p in places],
         "rows": rows_json({c: p.get(c) for c in cols} for p in places)},
    ).mappings().all()
    if not rows:
        return None
    by_id = {str(r["place_id"]): dict(r) for r in rows}
    return [by_id[str(p["place_id"])] for p in places]


def insert_release(tx: Tx, kind: str, organization_id: int, group_id: int, places: int,
                   actor: dict[str, Any] | None, idempotency_key: str | None = None,
                   source_direction: str | None = None) -> dict[str, Any] | None:
    """A new release row; None if its idempotency key or source direction is already used."""
    return _row(tx.execute(
        f"INSERT INTO {S}.releases (kind, organization_id, group_id, places, source_direction, "
        "idempotency_key, actor_id, actor_role, released_at) "
        "VALUES (:kind, :org, :g, :n, :src, :key, :aid, :role, clock_timestamp()) "
        "ON CONFLICT DO NOTHING RETURNING *",
        {"kind": kind, "org": organization_id, "g": group_id, "n": places,
         "src": source_direction, "key": idempotency_key,
         "aid": (actor or {}).get("id"), "role": (actor or {}).get("role")},
    ))


def set_release_places(tx: Tx, release_id: int, place_ids: list[str]) -> None:
    tx.execute(
        f"UPDATE {S}.releases SET place_ids = CAST(:ids AS uuid[]) WHERE release_id = :r",
        {"ids": place_ids, "r": release_id},
    )


def release_by_key(tx: Tx, idempotency_key: str) -> dict[str, Any] | None:
    return _row(tx.execute(
        f"SELECT * FROM {S}.releases WHERE idempotency_key = :k", {"k": idempotency_key}))


# -- places ----------------------------------------------------------------------------------
PLACE_INSERT_COLUMNS = (
    "place_id", "release_id", "organization_id", "group_id", "organization_name", "district",
    "ownership", "address", "group_name", "birth_year", "language", "group_type", "status",
    "released_at", "priority_starts_at", "priority_ends_at",
)
_PLACE_TYPES = {"place_id": "uuid", "release_id": "bigint", "organization_id": "bigint",
                "group_id": "bigint", "birth_year": "integer", "released_at": "timestamptz",
                "priority_starts_at": "timestamptz", "priority_ends_at": "timestamptz"}
PLACE_MUTABLE = frozenset({
    "status", "release_id", "released_at", "priority_starts_at", "priority_ends_at",
    "vacancy_opened_at", "direction_number",
})


def get_place(tx: Tx, place_id: str, lock: str | None = None) -> dict[str, Any] | None:
    """``lock``: None, "update", "update_skip" (SKIP LOCKED) or "share"."""
    suffix = {None: "", "update": " FOR UPDATE", "update_skip": " FOR UPDATE SKIP LOCKED",
              "share": " FOR SHARE"}[lock]
    return _row(tx.execute(
        f"SELECT * FROM {S}.places WHERE place_id = CAST(:p AS uuid){suffix}", {"p": place_id}))


def get_places(tx: Tx, place_ids: list[str]) -> list[dict[str, Any]]:
    """The places with these ids (unknown ones left out), in no particular order."""
    return [dict(r) for r in tx.execute(
        f"SELECT * FROM {S}.places WHERE place_id = ANY(CAST(:p AS uuid[]))",
        {"p": place_ids}).mappings()]


def lock_place_to_issue(tx: Tx, place_id: str, application_number: str | None,
                        reserved_at: str | None) -> tuple[dict[str, Any] | None, bool]:
    """get_place(lock="update") and closed_direction_exists in one round trip: (the locked
    place or None, whether this reservation is the stale one of a closed direction)."""
    row = _row(tx.execute(
        f"SELECT p.*, (CAST(:a AS text) IS NOT NULL AND EXISTS ("
        f"SELECT 1 FROM {S}.directions d WHERE d.place_id = p.place_id "
        "AND d.application_number = CAST(:a AS text) AND d.status <> 'issued' "
        "AND (CAST(:r AS timestamptz) IS NULL OR d.issued_at >= CAST(:r AS timestamptz)))) "
        f"AS _stale FROM {S}.places p WHERE p.place_id = CAST(:p AS uuid) FOR UPDATE OF p",
        {"p": place_id, "a": application_number, "r": reserved_at}))
    if row is None:
        return None, False
    return row, bool(row.pop("_stale"))


def lock_places_to_issue(tx: Tx, wanted: list[tuple[str, str | None, str | None]]
                         ) -> dict[str, tuple[dict[str, Any], bool]]:
    """lock_place_to_issue for many ``(place_id, application_number, reserved_at)`` in one
    statement, the rows locked in place-id order (two batches never wait for each other in
    a circle): ``{place_id: (the locked place, stale)}``; unknown places left out."""
    from services.common.bulk import rows_json

    if not wanted:
        return {}
    rows = tx.execute(
        f"SELECT p.*, (v.a IS NOT NULL AND EXISTS (SELECT 1 FROM {S}.directions d "
        "WHERE d.place_id = p.place_id AND d.application_number = v.a "
        "AND d.status <> 'issued' AND (v.r IS NULL OR d.issued_at >= v.r))) AS _stale "
        "FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(p uuid, a text, r timestamptz) "
        f"JOIN {S}.places p ON p.place_id = v.p ORDER BY p.place_id FOR UPDATE OF p",
        {"rows": rows_json({"p": p, "a": a, "r": r} for p, a, r in wanted)},
    ).mappings().all()
    found = {}
    for row in rows:
        row = dict(row)
        stale = bool(row.pop("_stale"))
        found[str(row["place_id"])] = (row, stale)
    return found


def next_directions_for(tx: Tx, application_numbers: list[str]
                        ) -> list[tuple[int, dt.datetime, bool]]:
    """next_direction_for for many applications in one round trip, in the order given."""
    rows = tx.execute(
        f"SELECT nextval('{S}.direction_number_seq'), clock_timestamp(), EXISTS ("
        f"SELECT 1 FROM {S}.directions d WHERE d.application_number = a.n "
        "AND d.status = 'issued') FROM unnest(CAST(:a AS text[])) WITH ORDINALITY AS a(n, i) "
        "ORDER BY a.i", {"a": application_numbers}).all()
    return [(int(r[0]), r[1], bool(r[2])) for r in rows]


def insert_directions(tx: Tx, directions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """insert_direction for many in one statement; the rows in the order given."""
    from services.common.bulk import rows_json

    cols = DIRECTION_INSERT_COLUMNS
    types = {"place_id": "uuid", "organization_id": "bigint", "group_id": "bigint",
             "birth_year": "integer", "current_organization_id": "bigint",
             "current_group_id": "bigint", "issued_at": "timestamptz",
             "expires_at": "timestamptz"}
    typed = ", ".join(f"{c} {types.get(c, 'text')}" for c in cols)
    rows = tx.execute(
        f"INSERT INTO {S}.directions ({', '.join(cols)}) "
        f"SELECT {', '.join('r.' + c for c in cols)} FROM ROWS FROM (jsonb_to_recordset("
        f"CAST(:rows AS jsonb)) AS ({typed})) WITH ORDINALITY AS r({', '.join(cols)}, i) "
        "ORDER BY r.i RETURNING *",
        {"rows": rows_json({c: d.get(c) for c in cols} for d in directions)},
    ).mappings().all()
    by_number = {r["number"]: dict(r) for r in rows}
    return [by_number[d["number"]] for d in directions]


def direct_places(tx: Tx, directed: dict[str, str]) -> dict[str, dict[str, Any]]:
    """update_place(place, {"status": "directed", "direction_number": number}) for many
    ``{place_id: direction number}`` (locked places) in one statement: the new rows."""
    rows = tx.execute(
        f"UPDATE {S}.places p SET status = 'directed', direction_number = v.n, "
        "revision = p.revision + 1, updated_at = clock_timestamp() "
        "FROM unnest(CAST(:p AS uuid[]), CAST(:n AS text[])) AS v(p, n) "
        "WHERE p.place_id = v.p RETURNING p.*",
        {"p": list(directed), "n": list(directed.values())},
    ).mappings().all()
    return {str(r["place_id"]): dict(r) for r in rows}


def update_place(tx: Tx, place_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply ``changes`` to a (locked) place and bump its revision by one."""
    unknown = set(changes) - PLACE_MUTABLE
    if unknown:
        raise ValueError(f"not changeable: {sorted(unknown)}")
    sets = ", ".join(f"{c} = :{c}" for c in changes)
    return _row(tx.execute(
        f"UPDATE {S}.places SET {sets}, revision = revision + 1, updated_at = clock_timestamp() "
        "WHERE place_id = CAST(:_p AS uuid) RETURNING *",
        {**changes, "_p": place_id},
    ))


def due_priority_places(tx: Tx, limit: int) -> list[dict[str, Any]]:
    """Lock places whose priority period has ended without a direction."""
    return _rows(tx.execute(
        f"SELECT * FROM {S}.places WHERE status = 'priority' "
        "AND priority_ends_at <= clock_timestamp() ORDER BY priority_ends_at "
        "LIMIT :n FOR UPDATE SKIP LOCKED",
        {"n": limit},
    ))


# -- directions ------------------------------------------------------------------------------
DIRECTION_INSERT_COLUMNS = (
    "number", "place_id", "application_number", "applicant_id", "type", "status",
    "organization_id", "organization_name", "group_id", "birth_year", "language", "child_name",
    "current_organization_id", "current_group_id", "issued_at", "expires_at",
)
DIRECTION_MUTABLE = frozenset({"status", "closed_at", "reason"})


def next_direction_sequence(tx: Tx) -> tuple[int, dt.datetime]:
    """The next direction sequence number and the database clock, in one round trip."""
    row = tx.execute(f"SELECT nextval('{S}.direction_number_seq'), clock_timestamp()").one()
    return int(row[0]), row[1]


def next_direction_for(tx: Tx, application_number: str) -> tuple[int, dt.datetime, bool]:
    """next_direction_sequence and open_direction_of_application in one round trip: (the next
    direction sequence number, the database clock, whether the application already holds an
    open direction)."""
    row = tx.execute(
        f"SELECT nextval('{S}.direction_number_seq'), clock_timestamp(), EXISTS ("
        f"SELECT 1 FROM {S}.directions WHERE application_number = :a AND status = 'issued')",
        {"a": application_number}).one()
    return int(row[0]), row[1], bool(row[2])


def insert_direction(tx: Tx, direction: dict[str, Any]) -> dict[str, Any]:
    cols = DIRECTION_INSERT_COLUMNS
    return _row(tx.execute(
        f"INSERT INTO {S}.directions ({', '.join(cols)}) "
        f"VALUES ({', '.join(':' + c for c in cols)}) RETURNING *",
        {c: direction.get(c) for c in cols},
    ))


def get_direction(tx: Tx, number: str, lock: bool = False) -> dict[str, Any] | None:
    return _row(tx.execute(
        f"SELECT * FROM {S}.directions WHERE number = :n" + (" FOR UPDATE" if lock else ""),
        {"n": number},
    ))


def update_direction(tx: Tx, number: str, changes: dict[str, Any]) -> dict[str, Any]:
    unknown = set(changes) - DIRECTION_MUTABLE
    if unknown:
        raise ValueError(f"not changeable: {sorted(unknown)}")
    sets = ", ".join(f"{c} = :{c}" for c in changes)
    return _row(tx.execute(
        f"UPDATE {S}.directions SET {sets}, revision = revision + 1 WHERE number = :_n "
        "RETURNING *",
        {**changes, "_n": number},
    ))


def open_direction_of_application(tx: Tx, application_number: str) -> dict[str, Any] | None:
    return _row(tx.execute(
        f"SELECT * FROM {S}.directions WHERE application_number = :a AND status = 'issued'",
        {"a": application_number},
    ))


def closed_direction_exists(tx: Tx, place_id: str, application_number: str,
                            reserved_at: str | None = None) -> bool:
    """Is this reservation the stale one a now-closed direction to this place was issued from?

    A child who came back to the queue may be reserved for the same place again: that newer
    reservation (made after the old direction was issued) is not stale.
    """
    return tx.execute(
        f"SELECT 1 FROM {S}.directions WHERE place_id = CAST(:p AS uuid) "
        "AND application_number = :a AND status <> 'issued' "
        "AND (CAST(:r AS timestamptz) IS NULL OR issued_at >= CAST(:r AS timestamptz)) LIMIT 1",
        {"p": place_id, "a": application_number, "r": reserved_at},
    ).first() is not None


def due_direction_numbers(tx: Tx, limit: int) -> list[str]:
    return list(tx.execute(
        f"SELECT number FROM {S}.directions WHERE status = 'issued' "
        "AND expires_at <= clock_timestamp() ORDER BY expires_at LIMIT :n",
        {"n": limit},
    ).scalars())


# -- claims ----------------------------------------------------------------------------------
def insert_claim(tx: Tx, place_id: str, vacancy_opened_at: dt.datetime, application_number: str,
                 applicant_id: str, outcome: str = "pooled",
                 direction_number: str | None = None) -> dict[str, Any] | None:
    """A claim on one opening of a vacancy; None if this application already claimed it."""
    return _row(tx.execute(
        f"INSERT INTO {S}.claims (place_id, vacancy_opened_at, application_number, applicant_id, "
        "outcome, direction_number) VALUES (CAST(:p AS uuid), :o, :a, :who, :out, :d) "
        "ON CONFLICT DO NOTHING RETURNING *",
        {"p": place_id, "o": vacancy_opened_at, "a": application_number, "who": applicant_id,
         "out": outcome, "d": direction_number},
    ))


def pooled_claims(tx: Tx, place_id: str, vacancy_opened_at: dt.datetime) -> list[dict[str, Any]]:
    return _rows(tx.execute(
        f"SELECT * FROM {S}.claims WHERE place_id = CAST(:p AS uuid) AND vacancy_opened_at = :o "
        "AND outcome = 'pooled' ORDER BY claimed_at, application_number",
        {"p": place_id, "o": vacancy_opened_at},
    ))


def settle_claims(tx: Tx, place_id: str, vacancy_opened_at: dt.datetime, winner: str | None,
                  direction_number: str | None) -> None:
    """Mark the pooled claims of one vacancy opening won (the winner) or lost."""
    tx.execute(
        f"UPDATE {S}.claims SET outcome = CASE WHEN application_number = :w THEN 'won' "
        "ELSE 'lost' END, direction_number = CASE WHEN application_number = :w THEN :d END "
        "WHERE place_id = CAST(:p AS uuid) AND vacancy_opened_at = :o AND outcome = 'pooled'",
        {"p": place_id, "o": vacancy_opened_at, "w": winner, "d": direction_number},
    )


def places_with_due_pools(tx: Tx, pool: dt.timedelta, limit: int) -> list[str]:
    """Vacancies whose claim window has closed with pooled claims still waiting."""
    return [str(p) for p in tx.execute(
        f"SELECT DISTINCT p.place_id FROM {S}.places p JOIN {S}.claims c "
        "ON c.place_id = p.place_id AND c.vacancy_opened_at = p.vacancy_opened_at "
        "WHERE p.status = 'vacancy' AND c.outcome = 'pooled' "
        "AND p.vacancy_opened_at + CAST(:pool AS interval) <= clock_timestamp() LIMIT :n",
        {"pool": pool, "n": limit},
    ).scalars()]



# -- snapshot export (kezek registry reconcile) ----------------------------------------------
def export_places(tx: Tx, after: str | None, limit: int,
                  place_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Places in place-id order after ``after``, or exactly those in ``place_ids``."""
    if place_ids is not None:
        where, params = "place_id = ANY(CAST(:ids AS uuid[]))", {"ids": place_ids}
    elif after is not None:
        where, params = "place_id > CAST(:after AS uuid)", {"after": after}
    else:
        where, params = "true", {}
    return _rows(tx.execute(
        f"SELECT * FROM {S}.places WHERE {where} ORDER BY place_id LIMIT :n",
        {**params, "n": limit}))


def export_directions(tx: Tx, after: str | None, limit: int,
                      numbers: list[str] | None = None) -> list[dict[str, Any]]:
    """Directions in number order after ``after``, or exactly those in ``numbers``."""
    if numbers is not None:
        where, params = "number = ANY(CAST(:nums AS text[]))", {"nums": numbers}
    else:
        where, params = "number > :after", {"after": after or ""}
    return _rows(tx.execute(
        f"SELECT * FROM {S}.directions WHERE {where} ORDER BY number LIMIT :n",
        {**params, "n": limit}))


def export_releases(tx: Tx, after_seq: int, limit: int,
                    place_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """``place_released`` journal rows (seq, data) after ``after_seq`` in journal order, or
    every one of the places in ``place_ids`` (through the journal's stream index)."""
    if place_ids is not None:
        where = "stream = ANY(CAST(:streams AS text[]))"
        params: dict[str, Any] = {"streams": [f"place:{p}" for p in place_ids]}
    else:
        where, params = "seq > :after", {"after": after_seq}
    return _rows(tx.execute(
        f"SELECT seq, data FROM {S}.journal WHERE {where} AND kind = 'place_released' "
        "ORDER BY seq LIMIT :n",
        {**params, "n": limit}))
