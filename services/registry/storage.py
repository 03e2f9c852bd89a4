"""Registry SQL that writes: master data and the read models fed by events.

Every function takes a services.common.db.Tx and runs a fixed number of statements (no loops of
round trips). Ids minted by other services (place ids, release ids) are stored as jsonb so they
are returned exactly as they arrived.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from services.common.db import Tx

S = "registry"


def _j(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


# -- master data ---------------------------------------------------------------------------------


def insert_organization(tx: Tx, org: Mapping[str, Any]) -> int:
    row = tx.execute(
        f"""INSERT INTO {S}.organizations
               (name, address, district, ownership, kind, languages, monthly_fee_kzt)
            VALUES (:name, :address, :district, :ownership, :kind, :languages, :monthly_fee_kzt)
            RETURNING id""",
        dict(org),
    ).one()
    tx.execute(f"INSERT INTO {S}.districts (name) VALUES (:d) ON CONFLICT DO NOTHING",
               {"d": org["district"]})
    return int(row.id)


def lock_organization(tx: Tx, organization_id: int) -> dict[str, Any] | None:
    row = tx.execute(
        f"SELECT * FROM {S}.organizations WHERE id = :id FOR UPDATE", {"id": organization_id}
    ).mappings().first()
    return dict(row) if row else None


def update_organization(tx: Tx, organization_id: int, changes: Mapping[str, Any]) -> None:
    sets = ", ".join(f"{k} = :{k}" for k in changes)
    tx.execute(
        f"""UPDATE {S}.organizations SET {sets}, revision = revision + 1,
                   updated_at = clock_timestamp() WHERE id = :id""",
        {**changes, "id": organization_id},
    )
    if "district" in changes:
        tx.execute(f"INSERT INTO {S}.districts (name) VALUES (:d) ON CONFLICT DO NOTHING",
                   {"d": changes["district"]})


def group_languages(tx: Tx, organization_id: int) -> set[str]:
    rows = tx.execute(f"SELECT DISTINCT language FROM {S}.groups WHERE organization_id = :o",
                      {"o": organization_id}).scalars()
    return set(rows)


def insert_group(tx: Tx, organization_id: int, group: Mapping[str, Any]) -> int:
    row = tx.execute(
        f"""WITH g AS (
                INSERT INTO {S}.groups
                    (organization_id, name, group_type, birth_year, language, capacity, enrolled)
                VALUES (:o, :name, :group_type, :birth_year, :language, :capacity, :enrolled)
                RETURNING id
            ), o AS (
                UPDATE {S}.organizations SET revision = revision + 1,
                       updated_at = clock_timestamp() WHERE id = :o
            )
            SELECT id FROM g""",
        {**group, "o": organization_id},
    ).one()
    return int(row.id)


def seed_districts(tx: Tx, names: Iterable[str]) -> None:
    names = [n for n in names if n]
    if names:
        tx.execute(
            f"INSERT INTO {S}.districts (name) SELECT unnest(CAST(:n AS text[])) "
            "ON CONFLICT DO NOTHING", {"n": names})


# -- queue entries -------------------------------------------------------------------------------


def lock_entry(tx: Tx, application_number: str) -> dict[str, Any] | None:
    row = tx.execute(
        f"""SELECT revision, status, benefit_tier FROM {S}.queue_entries
            WHERE application_number = :a FOR UPDATE""",
        {"a": application_number},
    ).mappings().first()
    return dict(row) if row else None


_ENTRY_COLUMNS = """application_number, revision, queue_name, district, queue_type,
    birth_year, language, status, benefit_tier, filed_at, stop_list, applicant_name,
    child_name, preferred_organizations"""

_ENTRY_VALUES = """(:application_number, :revision, :queue_name, :district, :queue_type,
    :birth_year, :language, :status, :benefit_tier, CAST(:filed_at AS timestamptz),
    CAST(:stop_list AS jsonb), :applicant_name, :child_name,
    CAST(:preferred_organizations AS bigint[]), clock_timestamp())"""


def _entry_params(e: Mapping[str, Any]) -> dict[str, Any]:
    return {**e, "stop_list": _j(e["stop_list"])}


def insert_entry(tx: Tx, e: Mapping[str, Any]) -> bool:
    """Insert a first-seen entry; False if another transaction inserted it meanwhile."""
    row = tx.execute(
        f"""INSERT INTO {S}.queue_entries ({_ENTRY_COLUMNS}, republished_at)
            VALUES {_ENTRY_VALUES}
            ON CONFLICT (application_number) DO NOTHING RETURNING 1""",
        _entry_params(e),
    ).first()
    return row is not None


def insert_entries(tx: Tx, entries: list[Mapping[str, Any]]) -> int:
    """insert_entry for many in one statement; the number inserted (entries another
    transaction inserted meanwhile are left as they are)."""
    if not entries:
        return 0
    rows = [{**e, "filed_at": str(e["filed_at"])} for e in entries]
    return tx.execute(
        f"""INSERT INTO {S}.queue_entries ({_ENTRY_COLUMNS}, republished_at)
            SELECT {_ENTRY_COLUMNS}, clock_timestamp()
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS r(
                application_number text, revision int, queue_name text, district text,
                queue_type text, birth_year int, language text, status text,
                benefit_tier text, filed_at timestamptz, stop_list jsonb,
                applicant_name text, child_name text, preferred_organizations bigint[])
            ON CONFLICT (application_number) DO NOTHING""",
        {"rows": _j(rows)},
    ).rowcount


def update_entry(tx: Tx, e: Mapping[str, Any]) -> None:
    tx.execute(
        f"""UPDATE {S}.queue_entries SET revision = :revision, queue_name = :queue_name,
                district = :district, queue_type = :queue_type, birth_year = :birth_year,
                language = :language, status = :status, benefit_tier = :benefit_tier,
                filed_at = CAST(:filed_at AS timestamptz), stop_list = CAST(:stop_list AS jsonb),
                applicant_name = :applicant_name, child_name = :child_name,
                preferred_organizations = CAST(:preferred_organizations AS bigint[]),
                republished_at = clock_timestamp()
            WHERE application_number = :application_number""",
        _entry_params(e),
    )


# -- places and the release protocol -------------------------------------------------------------


def lock_place(tx: Tx, place_id: Any) -> dict[str, Any] | None:
    row = tx.execute(
        f"SELECT revision, status FROM {S}.places WHERE place_id = CAST(:p AS jsonb) FOR UPDATE",
        {"p": _j(place_id)},
    ).mappings().first()
    return dict(row) if row else None


def _place_params(p: Mapping[str, Any]) -> dict[str, Any]:
    return {**p, "place_id": _j(p["place_id"]), "release_id": _j(p["release_id"])}


_PLACE_COLUMNS = """place_id, revision, status, organization_id, group_id, release_id, birth_year,
    language, group_type, released_at, priority_starts_at, priority_ends_at, vacancy_opened_at,
    direction_number, republished_at"""
_PLACE_VALUES = """(CAST(:place_id AS jsonb), :revision, :status, :organization_id, :group_id,
    CAST(:release_id AS jsonb), :birth_year, :language, :group_type,
    CAST(:released_at AS timestamptz), CAST(:priority_starts_at AS timestamptz),
    CAST(:priority_ends_at AS timestamptz), CAST(:vacancy_opened_at AS timestamptz),
    :direction_number, clock_timestamp())"""


def insert_place(tx: Tx, p: Mapping[str, Any]) -> bool:
    row = tx.execute(
        f"""INSERT INTO {S}.places ({_PLACE_COLUMNS}) VALUES {_PLACE_VALUES}
            ON CONFLICT (place_id) DO NOTHING RETURNING 1""",
        _place_params(p),
    ).first()
    return row is not None


def update_place(tx: Tx, p: Mapping[str, Any]) -> None:
    tx.execute(
        f"""UPDATE {S}.places SET revision = :revision, status = :status,
                organization_id = :organization_id, group_id = :group_id,
                release_id = CAST(:release_id AS jsonb), birth_year = :birth_year,
                language = :language, group_type = :group_type,
                released_at = CAST(:released_at AS timestamptz),
                priority_starts_at = CAST(:priority_starts_at AS timestamptz),
                priority_ends_at = CAST(:priority_ends_at AS timestamptz),
                vacancy_opened_at = CAST(:vacancy_opened_at AS timestamptz),
                direction_number = :direction_number, republished_at = clock_timestamp()
            WHERE place_id = CAST(:place_id AS jsonb)""",
        _place_params(p),
    )


def insert_release(tx: Tx, p: Mapping[str, Any]) -> dict[str, Any] | None:
    """One protocol row per place_released event, with the organisation and group as they are
    now (a protocol records the release as it happened). None if this release is known."""
    row = tx.execute(
        f"""INSERT INTO {S}.releases (place_id, release_revision, revision, release_id,
                organization_id, organization_name, ownership, address, district, group_id,
                group_name, group_type, birth_year, language, released_at, priority_starts_at,
                priority_ends_at, republished_at)
            SELECT CAST(:place_id AS jsonb), :revision, :revision, CAST(:release_id AS jsonb),
                   :organization_id, o.name, o.ownership, o.address, o.district, :group_id,
                   g.name, COALESCE(:group_type, g.group_type),
                   COALESCE(:birth_year, g.birth_year), COALESCE(:language, g.language),
                   CAST(:released_at AS timestamptz), CAST(:priority_starts_at AS timestamptz),
                   CAST(:priority_ends_at AS timestamptz), clock_timestamp()
            FROM (SELECT 1) one
            LEFT JOIN {S}.organizations o ON o.id = :organization_id
            LEFT JOIN {S}.groups g ON g.id = :group_id
            ON CONFLICT (place_id, release_revision) DO NOTHING
            RETURNING district""",
        _place_params(p),
    ).mappings().first()
    return dict(row) if row else None


def update_release(tx: Tx, p: Mapping[str, Any]) -> None:
    """A later snapshot of the same release (same release id and moment) may move its priority
    period; an older or repeated one changes nothing."""
    tx.execute(
        f"""UPDATE {S}.releases r SET revision = :revision,
                priority_starts_at = CAST(:priority_starts_at AS timestamptz),
                priority_ends_at = CAST(:priority_ends_at AS timestamptz),
                republished_at = clock_timestamp()
            WHERE r.id = (SELECT id FROM {S}.releases WHERE place_id = CAST(:place_id AS jsonb)
                            AND release_revision <= :revision
                          ORDER BY release_revision DESC LIMIT 1)
              AND r.revision < :revision
              AND r.release_id IS NOT DISTINCT FROM CAST(:release_id AS jsonb)
              AND r.released_at IS NOT DISTINCT FROM CAST(:released_at AS timestamptz)
              AND (r.priority_starts_at IS DISTINCT FROM CAST(:priority_starts_at AS timestamptz)
                   OR r.priority_ends_at IS DISTINCT FROM CAST(:priority_ends_at AS timestamptz))
        """,
        _place_params(p),
    )


# -- directions ----------------------------------------------------------------------------------


def lock_direction(tx: Tx, number: str) -> dict[str, Any] | None:
    row = tx.execute(
        f"SELECT revision, status FROM {S}.directions WHERE number = :n FOR UPDATE", {"n": number}
    ).mappings().first()
    return dict(row) if row else None


_DIRECTION_VALUES = """(:number, :revision, :status, :type, CAST(:place_id AS jsonb),
    :organization_id, :group_id, :application_number, :child_name, :birth_year, :language,
    CAST(:issued_at AS timestamptz), CAST(:expires_at AS timestamptz),
    CAST(:closed_at AS timestamptz), :reason, clock_timestamp())"""


def insert_direction(tx: Tx, d: Mapping[str, Any]) -> bool:
    row = tx.execute(
        f"""INSERT INTO {S}.directions (number, revision, status, type, place_id,
                organization_id, group_id, application_number, child_name, birth_year, language,
                issued_at, expires_at, closed_at, reason, republished_at)
            VALUES {_DIRECTION_VALUES}
            ON CONFLICT (number) DO NOTHING RETURNING 1""",
        {**d, "place_id": _j(d["place_id"])},
    ).first()
    return row is not None


def update_direction(tx: Tx, d: Mapping[str, Any]) -> None:
    tx.execute(
        f"""UPDATE {S}.directions SET revision = :revision, status = :status, type = :type,
                place_id = CAST(:place_id AS jsonb), organization_id = :organization_id,
                group_id = :group_id, application_number = :application_number,
                child_name = :child_name, birth_year = :birth_year, language = :language,
                issued_at = CAST(:issued_at AS timestamptz),
                expires_at = CAST(:expires_at AS timestamptz),
                closed_at = CAST(:closed_at AS timestamptz), reason = :reason,
                republished_at = clock_timestamp()
            WHERE number = :number""",
        {**d, "place_id": _j(d["place_id"])},
    )


def add_enrolled(tx: Tx, group_id: int, delta: int) -> None:
    tx.execute(
        f"""UPDATE {S}.groups SET enrolled = GREATEST(enrolled + :d, 0),
                updated_at = clock_timestamp() WHERE id = :g""",
        {"g": group_id, "d": delta},
    )


# -- statistic facts -----------------------------------------------------------------------------


def add_facts(tx: Tx, facts: list[Mapping[str, Any]], timezone: str) -> None:
    """Insert anonymised facts in one statement. ``at`` None means now (database clock);
    a fact without organisation district takes the organisation's."""
    if not facts:
        return
    tx.execute(
        f"""INSERT INTO {S}.stat_facts (kind, at, day, district, queue_type, birth_year,
                language, organization_id, direction_type)
            SELECT x.kind, t.at, (t.at AT TIME ZONE :tz)::date,
                   COALESCE(x.district, o.district), x.queue_type, x.birth_year, x.language,
                   x.organization_id, x.direction_type
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(kind text, at timestamptz,
                 district text, queue_type text, birth_year integer, language text,
                 organization_id bigint, direction_type text)
            CROSS JOIN LATERAL (SELECT COALESCE(x.at, clock_timestamp()) AS at) t
            LEFT JOIN {S}.organizations o ON o.id = x.organization_id""",
        {"rows": json.dumps(list(facts), default=str), "tz": timezone},
    )


# -- read models, a batch of events at a time (commands.apply_batch) ------------------------------
# Each function takes the snapshots of a batch, at most one per key, and runs a fixed number
# of statements whatever their number.

_ENTRY_RECORD = """application_number text, revision int, queue_name text, district text,
    queue_type text, birth_year int, language text, status text, benefit_tier text,
    filed_at timestamptz, stop_list jsonb, applicant_name text, child_name text,
    preferred_organizations bigint[]"""
_PLACE_RECORD = """place_id jsonb, revision int, status text, organization_id bigint,
    group_id bigint, release_id jsonb, birth_year int, language text, group_type text,
    released_at timestamptz, priority_starts_at timestamptz, priority_ends_at timestamptz,
    vacancy_opened_at timestamptz, direction_number text"""
_DIRECTION_RECORD = """number text, revision int, status text, type text, place_id jsonb,
    organization_id bigint, group_id bigint, application_number text, child_name text,
    birth_year int, language text, issued_at timestamptz, expires_at timestamptz,
    closed_at timestamptz, reason text"""
_DIRECTION_COLUMNS = """number, revision, status, type, place_id, organization_id, group_id,
    application_number, child_name, birth_year, language, issued_at, expires_at, closed_at,
    reason"""


def _set_all(columns: str, key: str) -> str:
    """``col = x.col, ...`` for every column but the key."""
    names = [c.strip() for c in columns.replace("\n", " ").split(",")]
    return ", ".join(f"{c} = x.{c}" for c in names if c and c != key)


def lock_many(tx: Tx, table: str, key: str, keys: list[Any],
              columns: str = "revision, status") -> dict[Any, dict[str, Any]]:
    """lock_entry / lock_direction for many keys in one statement: {key: row} of the rows
    that exist, locked FOR UPDATE (in key order, so two batches cannot deadlock on them)."""
    if not keys:
        return {}
    rows = tx.execute(
        f"SELECT {key} AS _key, {columns} FROM {S}.{table} WHERE {key} = ANY(:k) "
        f"ORDER BY {key} FOR UPDATE",
        {"k": keys},
    ).mappings().all()
    return {r["_key"]: {k: v for k, v in r.items() if k != "_key"} for r in rows}


def insert_new(tx: Tx, table: str, key: str, rows: list[Mapping[str, Any]]) -> set[str]:
    """insert_entry / insert_direction for many (``table`` ``queue_entries`` or
    ``directions``) in one statement: the keys inserted (a row that a concurrent transaction
    inserted meanwhile is left out)."""
    if not rows:
        return set()
    columns, record = _SNAPSHOT_TABLES[table]
    return set(tx.execute(
        f"""INSERT INTO {S}.{table} ({columns}, republished_at)
            SELECT {columns}, clock_timestamp()
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({record})
            ON CONFLICT ({key}) DO NOTHING RETURNING {key}""",
        {"rows": _j(list(rows))},
    ).scalars().all())


def update_newer(tx: Tx, table: str, key: str, rows: list[Mapping[str, Any]]) -> set[str]:
    """update_entry / update_direction for many (locked) rows in one statement, each only
    where the snapshot is newer: the keys updated."""
    if not rows:
        return set()
    columns, record = _SNAPSHOT_TABLES[table]
    return set(tx.execute(
        f"""UPDATE {S}.{table} t SET {_set_all(columns, key)},
                republished_at = clock_timestamp()
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({record})
            WHERE t.{key} = x.{key} AND t.revision < x.revision
            RETURNING t.{key}""",
        {"rows": _j(list(rows))},
    ).scalars().all())


def insert_releases(tx: Tx, places: list[Mapping[str, Any]]) -> set[tuple[Any, int]]:
    """insert_release for many in one statement: the (place_id, revision) pairs inserted."""
    if not places:
        return set()
    rows = tx.execute(
        f"""INSERT INTO {S}.releases (place_id, release_revision, revision, release_id,
                organization_id, organization_name, ownership, address, district, group_id,
                group_name, group_type, birth_year, language, released_at, priority_starts_at,
                priority_ends_at, republished_at)
            SELECT x.place_id, x.revision, x.revision, x.release_id, x.organization_id, o.name,
                   o.ownership, o.address, o.district, x.group_id, g.name,
                   COALESCE(x.group_type, g.group_type), COALESCE(x.birth_year, g.birth_year),
                   COALESCE(x.language, g.language), x.released_at, x.priority_starts_at,
                   x.priority_ends_at, clock_timestamp()
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({_PLACE_RECORD})
            LEFT JOIN {S}.organizations o ON o.id = x.organization_id
            LEFT JOIN {S}.groups g ON g.id = x.group_id
            ON CONFLICT (place_id, release_revision) DO NOTHING
            RETURNING place_id, release_revision""",
        {"rows": _j(list(places))},
    ).all()
    return {(_j(r[0]), int(r[1])) for r in rows}


def update_releases(tx: Tx, places: list[Mapping[str, Any]]) -> None:
    """update_release for many places (one snapshot each) in one statement."""
    if not places:
        return
    tx.execute(
        f"""UPDATE {S}.releases r SET revision = x.revision,
                priority_starts_at = x.priority_starts_at,
                priority_ends_at = x.priority_ends_at, republished_at = clock_timestamp()
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({_PLACE_RECORD})
            WHERE r.id = (SELECT id FROM {S}.releases WHERE place_id = x.place_id
                            AND release_revision <= x.revision
                          ORDER BY release_revision DESC LIMIT 1)
              AND r.revision < x.revision
              AND r.release_id IS NOT DISTINCT FROM x.release_id
              AND r.released_at IS NOT DISTINCT FROM x.released_at
              AND (r.priority_starts_at IS DISTINCT FROM x.priority_starts_at
                   OR r.priority_ends_at IS DISTINCT FROM x.priority_ends_at)""",
        {"rows": _j(list(places))},
    )


def upsert_places(tx: Tx, places: list[Mapping[str, Any]]) -> set[str]:
    """insert_place, or update_place where the snapshot is newer, for many places in one
    statement (the place row is locked by it either way): the place ids (as JSON) written."""
    if not places:
        return set()
    rows = tx.execute(
        f"""INSERT INTO {S}.places ({_PLACE_COLUMNS})
            SELECT place_id, revision, status, organization_id, group_id, release_id,
                   birth_year, language, group_type, released_at, priority_starts_at,
                   priority_ends_at, vacancy_opened_at, direction_number, clock_timestamp()
            FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x({_PLACE_RECORD})
            ORDER BY x.place_id
            ON CONFLICT (place_id) DO UPDATE SET
                {_set_all(_PLACE_COLUMNS, 'place_id').replace('x.', 'EXCLUDED.')}
            WHERE {S}.places.revision < EXCLUDED.revision
            RETURNING place_id""",
        {"rows": _j(list(places))},
    ).scalars().all()
    return {_j(r) for r in rows}


_SNAPSHOT_TABLES = {"queue_entries": (_ENTRY_COLUMNS, _ENTRY_RECORD),
                    "directions": (_DIRECTION_COLUMNS, _DIRECTION_RECORD)}
